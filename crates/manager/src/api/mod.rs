//! The manager's HTTP API. Routes, the OpenAPI document generated from the handlers, and the helpers
//! every mutation shares (store errors to HTTP, waiting for the edges).

pub mod alerts_and_webhooks;
mod keys;
pub mod leaks;
pub mod model;
mod system;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    routing::{delete, get, post},
};
use quench_api::{
    contract::StandardAnswers,
    web::{self, ApiError},
};
use quench_core::Seq;
use quench_store::StoreError;
use utoipa::OpenApi;

use crate::{Manager, metrics::ManagerMetrics, propagation::Confirmation};
use model::WaitQuery;

pub fn router(manager: Arc<Manager>) -> Router {
    let routes = Router::new()
        .route("/v1/keys", post(keys::create).get(keys::list))
        .route("/v1/keys/{id}", get(keys::show))
        .route("/v1/keys/{id}/revoke", post(keys::revoke))
        .route("/v1/keys/{id}/rotate", post(keys::rotate))
        .route(
            "/v1/revocations",
            post(keys::bulk_revoke).layer(DefaultBodyLimit::max(model::BULK_BODY_LIMIT)),
        )
        .route("/v1/leaks", post(leaks::report))
        .route(
            "/v1/integrations/github/secret-scanning",
            post(leaks::github),
        )
        .route(
            "/v1/alerts",
            get(alerts_and_webhooks::list).post(alerts_and_webhooks::report),
        )
        .route("/v1/usage-policy", get(alerts_and_webhooks::usage_policy))
        .route(
            "/v1/webhooks",
            get(alerts_and_webhooks::list_webhooks).post(alerts_and_webhooks::create_webhook),
        )
        .route(
            "/v1/webhooks/{id}",
            delete(alerts_and_webhooks::delete_webhook),
        )
        .route(
            "/v1/webhooks/{id}/deliveries",
            get(alerts_and_webhooks::deliveries),
        )
        .route("/v1/tokens", post(system::create_token))
        .route("/v1/tokens/{id}/revoke", post(system::revoke_token))
        .route("/v1/events", get(system::events))
        .route("/v1/edges", get(system::edges).post(system::register_edge))
        .route("/v1/edges/{id}/rotate", post(system::rotate_edge))
        .route("/v1/snapshot", get(system::snapshot))
        .route("/v1/signing-keys", get(system::signing_keys))
        .route("/v1/audit", get(system::audit))
        .route("/healthz", get(system::health))
        .route("/metrics", get(system::metrics))
        .route("/openapi.json", get(system::openapi))
        .route_layer(axum::middleware::from_fn_with_state(
            manager.clone(),
            refuse_when_log_behind,
        ))
        .with_state(manager);
    web::finish(routes)
}

/// A manager whose store is behind what edges or the bus have seen answers nothing but health and
/// metrics ([`crate::rollback`]): its snapshots, pages and writes would contradict the log edges hold.
async fn refuse_when_log_behind(
    axum::extract::State(manager): axum::extract::State<Arc<Manager>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    let open = matches!(
        request.uri().path(),
        "/healthz" | "/metrics" | "/openapi.json"
    );
    match manager.log_behind() {
        Some(found) if !open => ApiError::unavailable(found.to_string()).into_response(),
        _ => next.run(request).await,
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Quench manager API",
        description = "Issue, list, rotate and revoke API keys; every change reaches every edge within milliseconds.",
        license(name = "Apache-2.0")
    ),
    paths(
        keys::create, keys::list, keys::show, keys::revoke, keys::rotate, keys::bulk_revoke, leaks::report, leaks::github,
        alerts_and_webhooks::list, alerts_and_webhooks::report, alerts_and_webhooks::usage_policy, alerts_and_webhooks::create_webhook, alerts_and_webhooks::list_webhooks,
        alerts_and_webhooks::delete_webhook, alerts_and_webhooks::deliveries,
        system::create_token, system::revoke_token, system::events, system::snapshot, system::edges, system::register_edge, system::rotate_edge,
        system::signing_keys, system::audit, system::health,
        system::metrics, system::openapi,
    ),
    components(schemas(
        quench_api::contract::Name, quench_api::contract::KeyIdText, quench_api::contract::Cursor,
        model::KeyStatusName, model::WaitMode,
    )),
    modifiers(&BearerAuth, &StandardAnswers, &StoreAnswers),
    tags((name = "keys", description = "Key lifecycle"), (name = "admin", description = "Tokens, log, edges, audit, usage policy, webhooks"), (name = "system", description = "Health and metrics"))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// `issuer` in a create request takes only the prefixes this manager is configured with: the document
/// a manager serves lists them, so it describes exactly what that manager accepts.
pub fn name_issuers(
    document: &mut utoipa::openapi::OpenApi,
    prefixes: impl Iterator<Item = String>,
) {
    use utoipa::openapi::{RefOr, schema::Schema};
    let Some(components) = document.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(request))) = components.schemas.get_mut("CreateKeyRequest")
    else {
        return;
    };
    if let Some(RefOr::T(Schema::Object(issuer))) = request.properties.get_mut("issuer") {
        let mut allowed: Vec<serde_json::Value> = prefixes.map(serde_json::Value::from).collect();
        allowed.push(serde_json::Value::Null);
        issuer.enum_values = Some(allowed);
    }
}

pub fn store_error(error: StoreError) -> ApiError {
    match error {
        StoreError::NotFound => ApiError::not_found("no such key"),
        StoreError::Conflict(what) => ApiError::conflict(what.to_string()),
        lost if lost.is_unavailable() => {
            tracing::warn!(error = %lost, "the store cannot be reached");
            ApiError::unavailable("the store cannot be reached; try again")
        }
        other => ApiError::internal(other),
    }
}

/// Every operation that reads or writes the store (all that take a token, which is looked up there, and
/// GitHub's reports) answers 503 while the database cannot be reached.
struct StoreAnswers;

impl utoipa::Modify for StoreAnswers {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                let secured = operation.security.as_ref().is_some_and(|s| !s.is_empty());
                let github = operation.operation_id.as_deref() == Some("github");
                if secured || github {
                    quench_api::contract::add_answer(
                        operation,
                        "503",
                        "The store cannot be reached; try again",
                    );
                }
            }
        }
    }
}

/// How a mutation waits for the edges.
#[derive(Debug, Clone, Copy)]
pub enum Wait {
    None,
    All(Duration),
}

impl Wait {
    pub fn parse(query: &WaitQuery, default_timeout: Duration) -> Result<Self, ApiError> {
        let timeout = match query.timeout_ms {
            None => default_timeout,
            Some(ms) if ms <= model::MAX_WAIT_MS => Duration::from_millis(ms),
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "timeout_ms: at most {}",
                    model::MAX_WAIT_MS
                )));
            }
        };
        match query.wait.as_deref() {
            None | Some("all") => Ok(Self::All(timeout)),
            Some("none") => Ok(Self::None),
            Some(other) => Err(ApiError::invalid(format!(
                "wait: `all` or `none`, not {other:?}"
            ))),
        }
    }
}

impl Manager {
    /// Waits, if asked, until every live edge has applied `seq`.
    pub async fn confirm(&self, seq: Option<Seq>, wait: Wait) -> Option<Confirmation> {
        let Wait::All(timeout) = wait else {
            return None;
        };
        let seq = match seq {
            Some(seq) => seq,
            None => self.store.head().await.ok()?,
        };
        let confirmation = self.propagation.wait_for(seq, timeout).await;
        let counter = if confirmation.complete {
            &self.metrics.waits_complete
        } else {
            &self.metrics.waits_timed_out
        };
        ManagerMetrics::add(counter, 1);
        Some(confirmation)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

    use super::*;

    #[test]
    fn an_unreachable_store_is_a_503_and_other_faults_a_500() {
        let lost = StoreError::Database(std::io::Error::other("connection refused").into());
        assert_eq!(store_error(lost).status, StatusCode::SERVICE_UNAVAILABLE);
        let corrupt = StoreError::corrupt("verifier", "a verifier that does not parse");
        assert_eq!(
            store_error(corrupt).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            store_error(
                quench_store::Conflict::KeyRevoked(quench_core::KeyId::from_u64(7).expect("id"))
                    .into()
            )
            .status,
            StatusCode::CONFLICT
        );
    }
}
