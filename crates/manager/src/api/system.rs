//! Tokens, the event log, edges, the audit trail, health, metrics and the API's own description.

use std::sync::Arc;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use quench_api::{
    tokens::TokenRevocation,
    web::{ApiError, JsonBody, PathParam, QueryParams},
};
use quench_core::{
    Owner, Seq, Timestamp,
    scope::{Scope, Scopes},
};
use utoipa::OpenApi;

use super::{
    ApiDoc,
    model::{
        self, AuditPage, AuditQuery, AuditRecord, CreateTokenRequest, CreatedToken, EdgeList,
        EdgeRegistrationRequest, EdgeRotation, EdgeRotationRequest, ErrorResponse, EventPage,
        EventsQuery, Health, SigningKey, SigningKeys, SnapshotQuery,
    },
    store_error,
};
use crate::{
    Manager,
    auth::{self, Principal},
    edges::{RegisterError, Registration},
    metrics::ManagerMetrics,
};

#[utoipa::path(
    post, path = "/v1/tokens", tag = "admin",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The new token; its plaintext is shown only here", body = CreatedToken),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    JsonBody(request): JsonBody<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    principal.require(Scope::Admin)?;
    if request.scopes.is_empty() {
        return Err(ApiError::invalid("scopes: at least one"));
    }
    let scopes = request
        .scopes
        .iter()
        .map(|s| Scope::parse(s).map_err(|e| ApiError::invalid(format!("scopes: {e}"))))
        .collect::<Result<Vec<_>, _>>()
        .map(Scopes::new)?;
    let owner = request
        .owner
        .as_deref()
        .map(|o| Owner::parse(o).map_err(|e| ApiError::invalid(format!("owner: {e}"))))
        .transpose()?;
    let asked_for_owner = owner.is_some();
    // A token confined to an owner can only hand out tokens confined the same way.
    let owner = principal.confine(owner)?;
    if owner.is_some() && scopes.iter().any(|s| s == Scope::Edge) {
        let why = "scopes: edge reads every owner's keys and cannot be given to a token confined to an owner";
        return Err(if asked_for_owner {
            ApiError::invalid(why)
        } else {
            ApiError::forbidden(why)
        });
    }
    let (token, record) = auth::issue_token(&*manager.store, scopes, owner, &principal.actor())
        .await
        .map_err(store_error)?;
    ManagerMetrics::add(&manager.metrics.tokens_created, 1);
    tracing::info!(token = %record.id, principal = %principal.id, "token issued");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            id: record.id.to_string(),
            token,
            scopes: record
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            owner: record.owner.map(|o| o.to_string()),
            created_at: record.created_at.to_string(),
        }),
    ))
}

/// The header carrying the manager's signature over a response body.
pub const SIGNATURE_HEADER: &str = "quench-signature";

fn signed_json(
    body: Vec<u8>,
    signature: &quench_core::sign::Signature,
) -> axum::response::Response {
    (
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (
                header::HeaderName::from_static(SIGNATURE_HEADER),
                signature.encode(),
            ),
        ],
        body,
    )
        .into_response()
}

#[utoipa::path(
    post, path = "/v1/tokens/{id}/revoke", tag = "admin",
    params(("id" = quench_api::contract::KeyIdText, Path, description = "Token id")),
    responses(
        (status = 200, description = "The token no longer authenticates (idempotent)", body = TokenRevocation),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    PathParam(id): PathParam<String>,
) -> Result<Json<TokenRevocation>, ApiError> {
    principal.require(Scope::Admin)?;
    if principal.owner.is_some() {
        return Err(ApiError::forbidden(
            "revoking tokens is for unconfined admin tokens",
        ));
    }
    let token_id = model::given_id(&id, "token").map_err(ApiError::not_found)?;
    let revoked = match manager
        .store
        .revoke_token(token_id, &principal.actor())
        .await
    {
        Ok(revoked) => revoked,
        Err(quench_store::StoreError::NotFound) => {
            return Err(ApiError::not_found(format!("no token {token_id}")));
        }
        Err(e) => return Err(store_error(e)),
    };
    if revoked {
        tracing::info!(token = %token_id, principal = %principal.id, "token revoked");
    }
    Ok(Json(TokenRevocation {
        id: token_id.to_string(),
        already_revoked: !revoked,
    }))
}

#[utoipa::path(
    get, path = "/v1/events", tag = "admin",
    params(EventsQuery),
    responses(
        (status = 200, description = "A page of the event log (scope edge), signed in the Quench-Signature header", body = EventPage),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn events(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(query): QueryParams<EventsQuery>,
) -> Result<axum::response::Response, ApiError> {
    principal.require(Scope::Edge)?;
    let limit = model::page_limit(query.limit)?;
    if query.after.is_some_and(|after| after > model::MAX_SEQ) {
        return Err(ApiError::invalid(format!(
            "after: at most {}",
            model::MAX_SEQ
        )));
    }
    let nonce = model::nonce(query.nonce.as_deref())?;
    let page = manager
        .signed_page(Seq::new(query.after.unwrap_or(0)), limit, nonce.as_ref())
        .await
        .map_err(store_error)?;
    Ok(signed_json(page.body().to_vec(), page.signature()))
}

#[utoipa::path(
    get, path = "/v1/snapshot", tag = "admin",
    params(SnapshotQuery),
    responses(
        (status = 200, description = "Every key as edges need it (scope edge), streamed as JSON lines: a `{\"seq\", \"at\", \"nonce\"}` header, one line per key, and a signed `{\"end\"}` line", content_type = "application/x-ndjson"),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn snapshot(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(query): QueryParams<SnapshotQuery>,
) -> Result<axum::response::Response, ApiError> {
    use futures::StreamExt;
    principal.require(Scope::Edge)?;
    let nonce = model::nonce(query.nonce.as_deref())?;
    let chunks = manager.snapshot_stream(nonce).map(|chunk| {
        chunk.map_err(|error| {
            tracing::error!(%error, "a snapshot stream failed; the edge will retry");
            std::io::Error::other("snapshot aborted")
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(chunks),
    )
        .into_response())
}

#[utoipa::path(
    post, path = "/v1/edges", tag = "admin",
    request_body = EdgeRegistrationRequest,
    responses(
        (status = 204, description = "Registered: acknowledgements signed with this key, or MAC'd with the proven ack_key, are accepted (scope edge, unconfined; the same key again is accepted)"),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
        (status = 409, description = "The id is registered with another key; only POST /v1/edges/{id}/rotate replaces it", body = ErrorResponse),
        (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn register_edge(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    JsonBody(request): JsonBody<EdgeRegistrationRequest>,
) -> Result<StatusCode, ApiError> {
    principal.require(Scope::Edge)?;
    let registration = Registration::parse(&quench_bus::EdgeRegistration {
        id: request.id,
        region: request.region,
        public_key: request.public_key,
        ack_key: request.ack_key,
        ack_key_proof: request.ack_key_proof,
    })
    .map_err(register_error)?;
    manager
        .edge_keys
        .register(&registration)
        .await
        .map_err(register_error)?;
    tracing::info!(edge = %registration.id, region = %registration.region, key = %registration.key.id(), "edge registered");
    Ok(StatusCode::NO_CONTENT)
}

fn register_error(error: RegisterError) -> ApiError {
    match error {
        RegisterError::Invalid(why) => ApiError::invalid(why),
        RegisterError::Taken(_) => ApiError::conflict(error.to_string()),
        RegisterError::Unknown(_) => ApiError::not_found(error.to_string()),
        RegisterError::Store(e) => store_error(e),
    }
}

#[utoipa::path(
    post, path = "/v1/edges/{id}/rotate", tag = "admin",
    params(("id" = String, Path, description = "Edge id")),
    request_body = EdgeRotationRequest,
    responses(
        (status = 200, description = "The edge's acknowledgements now count only with this key (unconfined admin; audited as edge.rotate)", body = EdgeRotation),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn rotate_edge(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    axum::extract::Path(id): axum::extract::Path<String>,
    JsonBody(request): JsonBody<EdgeRotationRequest>,
) -> Result<Json<EdgeRotation>, ApiError> {
    principal.require(Scope::Admin)?;
    principal.require_unconfined("replacing an edge's key")?;
    let edge = quench_core::EdgeId::parse(&id)
        .map_err(|_| ApiError::not_found(format!("no edge {id:?} is registered")))?;
    let key = quench_core::sign::PublicKey::parse(&request.public_key)
        .map_err(|e| ApiError::invalid(format!("public_key: {e}")))?;
    let old = manager
        .edge_keys
        .rotate(&edge, &key, &principal.actor())
        .await
        .map_err(register_error)?;
    let replaced = old.public_key.id().to_string();
    tracing::info!(%edge, key = %key.id(), replaced, principal = %principal.id, "edge key rotated");
    Ok(Json(EdgeRotation {
        id: edge.to_string(),
        region: old.region.to_string(),
        key_id: key.id().to_string(),
        replaced_key_id: replaced,
    }))
}

#[utoipa::path(
    get, path = "/v1/signing-keys", tag = "admin",
    responses(
        (status = 200, description = "The manager keys edges should trust (scope edge or keys:read)", body = SigningKeys),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn signing_keys(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
) -> Result<Json<SigningKeys>, ApiError> {
    if principal.require(Scope::Edge).is_err() {
        principal.require(Scope::KeysRead)?;
    }
    let current = manager.config.signer.id().to_string();
    let keys = manager
        .trust()
        .keys()
        .iter()
        .map(|k| SigningKey {
            id: k.id().to_string(),
            public_key: k.to_hex(),
            current: k.id().as_str() == current,
        })
        .collect();
    Ok(Json(SigningKeys { keys }))
}

#[utoipa::path(
    get, path = "/v1/edges", tag = "admin",
    responses(
        (status = 200, description = "Every edge that has reported, with its progress", body = EdgeList),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn edges(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
) -> Result<Json<EdgeList>, ApiError> {
    principal.require(Scope::KeysRead)?;
    let head = manager.store.head().await.map_err(store_error)?;
    Ok(Json(EdgeList {
        head_seq: head.get(),
        edges: manager.propagation.view(head),
    }))
}

#[utoipa::path(
    get, path = "/v1/audit", tag = "admin",
    params(AuditQuery),
    responses(
        (status = 200, description = "Audit records, newest first (scope admin)", body = AuditPage),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn audit(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(query): QueryParams<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    principal.require(Scope::Admin)?;
    if principal.owner.is_some() {
        return Err(ApiError::forbidden(
            "the audit log is for unconfined admin tokens",
        ));
    }
    let limit = model::page_limit(query.limit)?;
    let key = query.key_id.as_deref().map(model::key_id).transpose()?;
    let records = manager
        .store
        .audit_log(key, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(AuditPage {
        records: records
            .into_iter()
            .map(|a| AuditRecord {
                at: a.at.to_string(),
                principal: a.principal,
                action: a.action,
                key_id: a.key_id.map(|k| k.to_string()),
                reason: a.reason,
                source: a.source,
            })
            .collect(),
    }))
}

#[utoipa::path(
    get, path = "/healthz", tag = "system",
    responses((status = 200, body = Health), (status = 503, description = "The store is unreachable", body = ErrorResponse))
)]
pub async fn health(State(manager): State<Arc<Manager>>) -> Result<Json<Health>, ApiError> {
    let head = manager
        .store
        .head()
        .await
        .map_err(|e| ApiError::unavailable(format!("store: {e}")))?;
    Ok(Json(Health {
        status: "ok".into(),
        head_seq: head.get(),
        live_edges: manager.propagation.live_count(),
    }))
}

#[utoipa::path(
    get, path = "/metrics", tag = "system",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain"))
)]
pub async fn metrics(State(manager): State<Arc<Manager>>) -> impl IntoResponse {
    use std::fmt::Write;
    let mut out = String::new();
    manager.metrics.render(&mut out);
    manager.alert_metrics.render(&mut out);
    let notifications = &manager.notifications;
    for (name, help, counter) in [
        (
            "quench_webhook_deliveries_total",
            "Webhook deliveries answered with a 2xx.",
            &notifications.delivered,
        ),
        (
            "quench_webhook_retries_total",
            "Webhook attempts that failed and will be retried.",
            &notifications.retried,
        ),
        (
            "quench_webhook_given_up_total",
            "Webhook deliveries given up after the retry period.",
            &notifications.given_up,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            counter.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
    let pending = manager.store.pending_deliveries().await.unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP quench_webhook_pending Webhook deliveries not yet delivered or given up.\n# TYPE quench_webhook_pending gauge\nquench_webhook_pending {pending}"
    );
    let head = manager.store.head().await.map(|s| s.get()).unwrap_or(0);
    let _ = writeln!(
        out,
        "# HELP quench_log_head_seq Last event sequence committed.\n# TYPE quench_log_head_seq gauge\nquench_log_head_seq {head}"
    );
    let _ = writeln!(
        out,
        "# HELP quench_live_edges Edges heard from recently.\n# TYPE quench_live_edges gauge\nquench_live_edges {}",
        manager.propagation.live_count()
    );
    let now = Timestamp::now();
    let _ = writeln!(
        out,
        "# HELP quench_edge_lag_events Events an edge has yet to apply.\n# TYPE quench_edge_lag_events gauge"
    );
    for edge in manager.propagation.view(Seq::new(head)) {
        let _ = writeln!(
            out,
            "quench_edge_lag_events{{edge=\"{}\",region=\"{}\"}} {}",
            edge.id, edge.region, edge.lag
        );
    }
    let _ = now;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

#[utoipa::path(
    get, path = "/openapi.json", tag = "system",
    responses((status = 200, description = "This document", content_type = "application/json"))
)]
pub async fn openapi(State(manager): State<Arc<Manager>>) -> impl IntoResponse {
    let mut document = ApiDoc::openapi();
    let prefixes = manager.config.issuers.iter().map(|i| i.prefix.to_string());
    super::name_issuers(&mut document, prefixes);
    Json(document)
}
