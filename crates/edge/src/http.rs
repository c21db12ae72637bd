//! The edge API: verify, forward-auth, health, metrics, and the OpenAPI document describing them.

use std::sync::Arc;

use std::net::{IpAddr, SocketAddr};

use axum::{
    Extension, Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use quench_core::{Reason, Timestamp, Verdict};
use serde::Deserialize;
use utoipa::OpenApi;

pub use quench_api::edge::{Health, IpAddress, RefusalReason, VerifyRequest, VerifyResponse};
use quench_api::{
    contract::{ErrorResponse, StandardAnswers},
    web::{self, ApiError, JsonBody, QueryParams},
};

use crate::{Busy, Replica};

pub const KEY_ID_HEADER: &str = "x-quench-key-id";
pub const OWNER_HEADER: &str = "x-quench-owner";
pub const SCOPES_HEADER: &str = "x-quench-scopes";
pub const REASON_HEADER: &str = "x-quench-reason";

pub fn router(replica: Arc<Replica>) -> Router {
    let routes = Router::new()
        .route("/v1/verify", post(verify))
        .route("/auth", any(forward_auth))
        .route("/auth/{*path}", any(forward_auth))
        .route("/healthz", get(health))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .with_state(replica);
    web::finish(routes)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Quench edge API",
        description = "Answers \"is this key valid?\" from an in-memory replica the manager keeps fresh.",
        license(name = "Apache-2.0")
    ),
    paths(verify, forward_auth, forward_auth_below, health, metrics, openapi),
    modifiers(&KeySchemes, &StandardAnswers),
    tags((name = "verify", description = "Is this key valid?"), (name = "system", description = "Health, metrics and this document"))
)]
pub struct EdgeApiDoc;

/// How `/auth` takes the key: `X-API-Key`, or `Authorization: Bearer`.
struct KeySchemes;

impl utoipa::Modify for KeySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every verdict is a 200: the question was answered. Only a malformed *request* is an error, and a 503
/// `busy` when the key needs a slow hash and the slow-hash pool is full (nothing was decided).
#[utoipa::path(
    post, path = "/v1/verify", tag = "verify",
    request_body = VerifyRequest,
    responses(
        (status = 200, description = "The verdict: `valid`, or why not", body = VerifyResponse),
        (status = 422, description = "A field is missing, unknown or of the wrong type, or `client_ip` is not an IP address", body = ErrorResponse),
        (status = 503, description = "`busy`: the key needs a slow hash and the slow-hash pool is full; retry after `Retry-After` seconds", body = VerifyResponse),
    )
)]
async fn verify(
    State(replica): State<Arc<Replica>>,
    JsonBody(request): JsonBody<VerifyRequest>,
) -> Result<Json<VerifyResponse>, Response> {
    let client = match request.client_ip.as_deref() {
        None => None,
        Some(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
            ApiError::invalid("client_ip must be an IPv4 or IPv6 address").into_response()
        })?),
    };
    let now = Timestamp::now();
    let verdict = replica
        .verify_pooled(
            &request.key,
            request.api.as_deref(),
            request.scope.as_deref(),
            now,
        )
        .await
        .map_err(|Busy| {
            busy(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                Busy.to_string(),
            ))
        })?;
    if let Verdict::Valid { key_id, .. } = &verdict {
        replica.usage().record(*key_id, client, now);
    }
    Ok(Json(VerifyResponse::from(&verdict)))
}

#[derive(Debug, Deserialize, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct AuthQuery {
    /// The API being called (else the `X-Quench-Api` header).
    #[param(nullable = false)]
    api: Option<String>,
    /// A scope the call needs (else the `X-Quench-Scope` header).
    #[param(nullable = false)]
    scope: Option<String>,
}

pub(crate) fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The key from `X-API-Key`, or from `Authorization: Bearer`.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    header_text(headers, "x-api-key").or_else(|| {
        let value = header_text(headers, header::AUTHORIZATION.as_str())?;
        let (scheme, token) = value.split_once(' ')?;
        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
    })
}

/// Forward-auth for nginx `auth_request`, Traefik ForwardAuth, Envoy ext_authz (HTTP) and Caddy
/// `forward_auth`. The API and scope to check come from the `api`/`scope` query parameters or the
/// `X-Quench-Api`/`X-Quench-Scope` headers. Answers 200 with the key's id and owner in headers, 401
/// for an invalid key, 403 for one out of scope, 503 when the edge cannot vouch for anything (`stale`)
/// or the key needs a slow hash and the slow-hash pool is full (`busy`, with `Retry-After`).
#[utoipa::path(
    method(get, post, put, delete, patch, head, options, trace), path = "/auth", tag = "verify",
    params(AuthQuery, AuthHeaders),
    responses(
        (status = 200, description = "The key is valid", headers(
            ("X-Quench-Key-Id" = String, description = "The key's id"),
            ("X-Quench-Owner" = String, description = "The key's owner"),
            ("X-Quench-Scopes" = String, description = "The key's scopes, space-separated"),
        )),
        (status = 401, description = "No key, or not a valid one", headers(
            ("WWW-Authenticate" = String), ("X-Quench-Reason" = String, description = "`missing`, `malformed`, `unknown`, `revoked` or `expired`"),
        )),
        (status = 403, description = "The key is valid but not for this API or scope", headers(("X-Quench-Reason" = String))),
        (status = 503, description = "The edge is stale or starting (`stale`), or the slow-hash pool is full (`busy`, with `Retry-After`): nothing is vouched for", headers(("X-Quench-Reason" = String))),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
async fn forward_auth(
    State(replica): State<Arc<Replica>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    QueryParams(query): QueryParams<AuthQuery>,
    headers: HeaderMap,
) -> Response {
    let api = query
        .api
        .as_deref()
        .or_else(|| header_text(&headers, "x-quench-api"));
    let scope = query
        .scope
        .as_deref()
        .or_else(|| header_text(&headers, "x-quench-scope"));
    let Some(key) = presented_key(&headers) else {
        return refusal(StatusCode::UNAUTHORIZED, "missing");
    };
    let now = Timestamp::now();
    let Ok(verdict) = replica.verify_pooled(key, api, scope, now).await else {
        return busy(refusal(StatusCode::SERVICE_UNAVAILABLE, "busy"));
    };
    match verdict {
        Verdict::Valid { key_id, profile } => {
            let client = client_address(&headers, peer.map(|p| p.0.0));
            replica.usage().record(key_id, client, now);
            let mut response = StatusCode::OK.into_response();
            let headers = response.headers_mut();
            insert(headers, KEY_ID_HEADER, &key_id.to_string());
            insert(headers, OWNER_HEADER, profile.owner.as_str());
            let scopes: Vec<&str> = profile.scopes.iter().map(|s| s.as_str()).collect();
            insert(headers, SCOPES_HEADER, &scopes.join(" "));
            response
        }
        Verdict::Invalid { reason, .. } => {
            let status = match reason {
                Reason::Forbidden => StatusCode::FORBIDDEN,
                Reason::Stale => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            refusal(status, reason.as_str())
        }
    }
}

/// A `busy` answer: the client may retry in a second.
fn busy(response: impl IntoResponse) -> Response {
    let mut response = response.into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The headers `/auth` reads besides the key.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
struct AuthHeaders {
    /// The API being called, when the `api` query parameter is absent.
    #[param(rename = "X-Quench-Api", nullable = false)]
    api: Option<String>,
    /// A scope the call needs, when the `scope` query parameter is absent.
    #[param(rename = "X-Quench-Scope", nullable = false)]
    scope: Option<String>,
}

/// `/auth` under any path, for Envoy's ext_authz path prefix: the same as `/auth`.
#[utoipa::path(
    method(get, post, put, delete, patch, head, options, trace), path = "/auth/{path}", tag = "verify",
    params(("path" = String, Path, description = "Any path; ignored"), AuthQuery, AuthHeaders),
    responses(
        (status = 200, description = "The key is valid", headers(
            ("X-Quench-Key-Id" = String), ("X-Quench-Owner" = String), ("X-Quench-Scopes" = String),
        )),
        (status = 401, description = "No key, or not a valid one", headers(("WWW-Authenticate" = String), ("X-Quench-Reason" = String))),
        (status = 403, description = "The key is valid but not for this API or scope", headers(("X-Quench-Reason" = String))),
        (status = 503, description = "The edge is stale or starting: it vouches for nothing", headers(("X-Quench-Reason" = String))),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
#[allow(dead_code)]
fn forward_auth_below() {}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(HeaderName::from_static(name), value);
    }
}

fn refusal(status: StatusCode, reason: &'static str) -> Response {
    let mut response = status.into_response();
    insert(response.headers_mut(), REASON_HEADER, reason);
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"quench\""),
        );
    }
    response
}

#[utoipa::path(
    get, path = "/healthz", tag = "system",
    responses(
        (status = 200, description = "The edge is fresh and answering", body = Health),
        (status = 503, description = "The edge is `starting` or `stale`: route around it", body = Health),
    )
)]
async fn health(State(replica): State<Arc<Replica>>) -> (StatusCode, Json<Health>) {
    let now = Timestamp::now();
    let (status, code) = if !replica.is_ready() {
        ("starting", StatusCode::SERVICE_UNAVAILABLE)
    } else if replica.is_stale(now) {
        ("stale", StatusCode::SERVICE_UNAVAILABLE)
    } else {
        ("ok", StatusCode::OK)
    };
    let config = replica.config();
    let body = Health {
        status: status.into(),
        edge: config.id.clone(),
        region: config.region.clone(),
        applied_seq: replica.applied().get(),
        head_seq: replica.seen_head().get(),
        applied_at_us: replica.applied_at_us(),
        staleness_ms: replica.staleness(now).map(|d| d.as_millis() as u64),
        max_staleness_ms: config.max_staleness.as_millis() as u64,
        keys: replica.keys().len(),
    };
    (code, Json(body))
}

#[utoipa::path(
    get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
async fn metrics(State(replica): State<Arc<Replica>>) -> impl IntoResponse {
    let mut out = String::new();
    render_metrics(&replica, &mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

pub fn render_metrics(replica: &Replica, out: &mut String) {
    use std::fmt::Write;
    replica.metrics().render(out);
    replica.slow_hashes().render(out);
    replica.usage().render(out);
    let now = Timestamp::now();
    let _ = writeln!(
        out,
        "# HELP quench_edge_applied_seq Last event sequence applied.\n# TYPE quench_edge_applied_seq gauge\nquench_edge_applied_seq {}",
        replica.applied().get()
    );
    let _ = writeln!(
        out,
        "# HELP quench_edge_keys Keys held by the replica, revoked ones included.\n# TYPE quench_edge_keys gauge\nquench_edge_keys {}",
        replica.keys().len()
    );
    let _ = writeln!(
        out,
        "# HELP quench_edge_staleness_seconds Time since the edge last knew it was current.\n# TYPE quench_edge_staleness_seconds gauge\nquench_edge_staleness_seconds {}",
        replica.staleness(now).map_or(-1.0, |d| d.as_secs_f64())
    );
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(EdgeApiDoc::openapi())
}

/// The client's address for forward-auth: `X-Real-IP`, else the last `X-Forwarded-For` entry (the one
/// the nearest proxy added), else the connection's peer. Proxies must overwrite, not pass on, whatever
/// the client sent in `X-Real-IP` (see docs/operations.md).
pub fn client_address(
    headers: &axum::http::HeaderMap,
    peer: Option<std::net::SocketAddr>,
) -> Option<IpAddr> {
    let header = |name: &str| crate::http::header_text(headers, name);
    header("x-real-ip")
        .and_then(|v| v.parse().ok())
        .or_else(|| {
            header("x-forwarded-for")
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        })
        .or_else(|| peer.map(|p| p.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_address_prefers_the_proxy_headers() {
        let mut headers = axum::http::HeaderMap::new();
        let peer: std::net::SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        assert_eq!(client_address(&headers, Some(peer)), Some(peer.ip()));
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4".parse().expect("header"),
        );
        assert_eq!(
            client_address(&headers, Some(peer)),
            "198.51.100.4".parse().ok()
        );
        headers.insert("x-real-ip", "2001:db8::7".parse().expect("header"));
        assert_eq!(
            client_address(&headers, Some(peer)),
            "2001:db8::7".parse().ok()
        );
        headers.insert("x-real-ip", "not an address".parse().expect("header"));
        assert_eq!(client_address(&headers, None), "198.51.100.4".parse().ok());
    }
}
