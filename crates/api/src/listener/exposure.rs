//! What a listener serves when operations endpoints are split off.
//!
//! An edge on a public network answers anyone who can reach it; its `/metrics` (key counts, applied
//! sequence, traffic per outcome) and detailed `/healthz` (edge id, region, staleness) tell an attacker
//! more than a load balancer needs. With an operations listener, the public one keeps only a minimal
//! `/healthz` (the status and its HTTP code, which load balancers read) and answers `/metrics` with the
//! same 404 as any unknown path; the operations listener serves just those two, in full.
//!
//! This wraps any API router from the outside, so the edge and the manager share it and their handlers do
//! not know which listener they serve.

use axum::{
    Json, Router,
    extract::{Request, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::any,
};
use serde::Deserialize;
use tower::ServiceExt;

use crate::web;

const HEALTH: &str = "/healthz";
const METRICS: &str = "/metrics";
/// The largest health answer read back when trimming it.
const HEALTH_LIMIT: usize = 64 * 1024;

/// Which part of an API a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Everything, as when there is no operations listener.
    Full,
    /// Everything but `/metrics`, with `/healthz` reduced to `{"status"}`.
    Public,
    /// Only `/metrics` and the detailed `/healthz`.
    Ops,
}

/// `router` restricted to what `exposure` allows.
pub fn expose(router: Router, exposure: Exposure) -> Router {
    match exposure {
        Exposure::Full => router,
        Exposure::Public => Router::new()
            .route(HEALTH, any(minimal_health))
            .route(METRICS, any(web::no_route))
            .with_state(router.clone())
            .fallback_service(router),
        Exposure::Ops => Router::new()
            .route(HEALTH, any(forward))
            .route(METRICS, any(forward))
            .with_state(router)
            .fallback(web::no_route),
    }
}

#[derive(Debug, Deserialize)]
struct Status {
    status: String,
}

/// The full router's answer.
async fn forward(State(full): State<Router>, request: Request) -> Response {
    let Ok(response) = full.oneshot(request).await;
    response
}

/// The full router's `/healthz`, keeping its HTTP status and only its `status` field.
async fn minimal_health(State(full): State<Router>, request: Request) -> Response {
    let Ok(response) = full.oneshot(request).await;
    let code = response.status();
    if code == StatusCode::METHOD_NOT_ALLOWED {
        return response;
    }
    let body = axum::body::to_bytes(response.into_body(), HEALTH_LIMIT)
        .await
        .unwrap_or_default();
    let status = serde_json::from_slice::<Status>(&body)
        .map(|s| s.status)
        .unwrap_or_else(|_| "unavailable".to_owned());
    let mut trimmed = Json(serde_json::json!({ "status": status })).into_response();
    *trimmed.status_mut() = code;
    trimmed
}
