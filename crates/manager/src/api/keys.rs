//! Key lifecycle: create, list, show, revoke, rotate, bulk revoke.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use quench_api::{
    contract::KeyIdText,
    web::{ApiError, JsonBody, PathParam, QueryParams},
};
use quench_core::{
    ApiKey, KeyRecord, Label, Owner, Timestamp, Verifier, record::KeyStatus, scope::Scope,
};
use quench_store::{Conflict, KeyFilter, Selector, StoreError};

use super::{
    Wait,
    model::{
        self, BulkRevocation, BulkRevokeRequest, BulkRevokeShape, CreateKeyRequest, CreatedKey,
        ErrorResponse, KeyList, KeyView, ListQuery, NewKey, Revocation, RevokeRequest,
        RotateRequest, Rotation, WaitQuery,
    },
    store_error,
};
use crate::{Manager, auth::Principal, metrics::ManagerMetrics};

/// A `Server-Timing` header on revocations: how long the commit took, and when (Unix microseconds) it
/// ended, so a client can tell the store's share of a revocation's latency from the bus's.
pub struct ServerTiming {
    started: std::time::Instant,
    commit: Option<(std::time::Duration, i64)>,
}

impl ServerTiming {
    fn start() -> Self {
        Self {
            started: std::time::Instant::now(),
            commit: None,
        }
    }

    fn committed(mut self) -> Self {
        let now_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        self.commit = Some((self.started.elapsed(), now_us));
        self
    }
}

impl axum::response::IntoResponseParts for ServerTiming {
    type Error = std::convert::Infallible;

    fn into_response_parts(
        self,
        mut parts: axum::response::ResponseParts,
    ) -> Result<axum::response::ResponseParts, Self::Error> {
        if let Some((took, at_us)) = self.commit {
            let value = format!(
                "commit;dur={:.3}, committed;desc=\"{at_us}\"",
                took.as_secs_f64() * 1000.0
            );
            if let Ok(value) = axum::http::HeaderValue::from_str(&value) {
                parts.headers_mut().insert("server-timing", value);
            }
        }
        Ok(parts)
    }
}

/// Draws ids until one is unused: a collision among 62^10 ids is rare but must not fail a request.
const CREATE_ATTEMPTS: usize = 4;

async fn make_verifier(alg: quench_core::HashAlg, key: &ApiKey) -> Result<Verifier, ApiError> {
    // argon2id and bcrypt take tens of milliseconds: keep them off the async workers.
    let secret = ApiKey::parse(&key.expose()).map_err(ApiError::internal)?;
    tokio::task::spawn_blocking(move || Verifier::create(alg, secret.secret()))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Issues a key for `new` (owner already settled) and stores it.
async fn issue(
    manager: &Manager,
    principal: &Principal,
    new: NewKey,
    owner: Owner,
    rotation: Option<(&KeyRecord, Timestamp)>,
) -> Result<(ApiKey, KeyRecord), ApiError> {
    let issuer = manager
        .config
        .issuer(new.issuer.as_deref())
        .ok_or_else(|| ApiError::invalid("issuer: not configured on this manager"))?;
    for _ in 0..CREATE_ATTEMPTS {
        let key = ApiKey::generate(issuer.prefix).map_err(ApiError::internal)?;
        let actor = principal.actor();
        let record = KeyRecord {
            id: key.id(),
            prefix: issuer.prefix,
            owner: owner.clone(),
            name: new.name.clone(),
            apis: new.apis.clone(),
            scopes: new.scopes.clone(),
            metadata: new.metadata.clone(),
            created_at: actor.at,
            expires_at: new.expires_at,
            revoked: None,
            rotated_from: rotation.map(|(old, _)| old.id),
            replaced_by: None,
            verifier: make_verifier(issuer.hash, &key).await?,
        };
        let stored = match rotation {
            None => manager
                .store
                .create_key(&record, &actor)
                .await
                .map(|e| vec![e]),
            Some((old, grace_end)) => manager
                .store
                .rotate_key(old.id, &record, grace_end, &actor)
                .await
                .map(|r| r.events),
        };
        match stored {
            Err(StoreError::Conflict(Conflict::KeyId(_))) => continue,
            Err(e) => return Err(store_error(e)),
            Ok(events) => {
                manager.publish(&events).await;
                return Ok((key, record));
            }
        }
    }
    Err(ApiError::internal("could not draw an unused key id"))
}

#[utoipa::path(
    post, path = "/v1/keys", tag = "keys",
    params(WaitQuery),
    request_body = CreateKeyRequest,
    responses(
        (status = 201, description = "The new key; its plaintext is shown only here", body = CreatedKey),
        (status = 400, description = "Not JSON", body = ErrorResponse),
        (status = 401, description = "No valid token", body = ErrorResponse),
        (status = 403, description = "Lacks keys:write, or another owner", body = ErrorResponse),
        (status = 413, description = "Body too large", body = ErrorResponse),
        (status = 422, description = "Invalid field", body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(wait): QueryParams<WaitQuery>,
    JsonBody(request): JsonBody<CreateKeyRequest>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    principal.require(Scope::KeysWrite)?;
    let wait = Wait::parse(&wait, manager.config.default_wait_timeout)?;
    let now = Timestamp::now();
    let new = model::new_key(request, now)?;
    let owner = match (&new.owner, &principal.owner) {
        (Some(owner), _) => owner.clone(),
        (None, Some(mine)) => mine.clone(),
        (None, None) => return Err(ApiError::invalid("owner: required")),
    };
    principal.may_touch(&owner)?;
    let (key, record) = issue(&manager, &principal, new, owner, None).await?;
    ManagerMetrics::add(&manager.metrics.keys_created, 1);
    let propagation = manager.confirm(None, wait).await;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key: key.expose(),
            view: model::key_view(&record, now),
            propagation,
        }),
    ))
}

#[utoipa::path(
    get, path = "/v1/keys", tag = "keys",
    params(ListQuery),
    responses(
        (status = 200, description = "Keys, newest first", body = KeyList),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<KeyList>, ApiError> {
    principal.require(Scope::KeysRead)?;
    let limit = model::page_limit(query.limit)?;
    let mut filter = KeyFilter {
        owner: query
            .owner
            .as_deref()
            .map(|o| Owner::parse(o).map_err(|e| ApiError::invalid(format!("owner: {e}"))))
            .transpose()?,
        status: query
            .status
            .as_deref()
            .map(|s| {
                KeyStatus::parse(s)
                    .ok_or_else(|| ApiError::invalid("status: active, revoked or expired"))
            })
            .transpose()?,
        api: query
            .api
            .as_deref()
            .map(|a| Label::parse(a).map_err(|e| ApiError::invalid(format!("api: {e}"))))
            .transpose()?,
    };
    filter.owner = principal.confine(filter.owner.take())?;
    let cursor = model::page_cursor(query.cursor.as_deref())?;
    let now = Timestamp::now();
    let rows = manager
        .store
        .list_keys(&filter, cursor, limit, now)
        .await
        .map_err(store_error)?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|(c, _)| c.to_string()))
        .flatten();
    Ok(Json(KeyList {
        keys: rows.iter().map(|(_, k)| model::key_view(k, now)).collect(),
        next_cursor,
    }))
}

async fn load(manager: &Manager, principal: &Principal, id: &str) -> Result<KeyRecord, ApiError> {
    let id = model::key_id(id)?;
    let record = manager
        .store
        .key(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("no key {id}")))?;
    principal.may_touch(&record.owner)?;
    Ok(record)
}

#[utoipa::path(
    get, path = "/v1/keys/{id}", tag = "keys",
    params(("id" = KeyIdText, Path, description = "Key id")),
    responses(
        (status = 200, body = KeyView),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn show(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    PathParam(id): PathParam<String>,
) -> Result<Json<KeyView>, ApiError> {
    principal.require(Scope::KeysRead)?;
    let record = load(&manager, &principal, &id).await?;
    Ok(Json(model::key_view(&record, Timestamp::now())))
}

#[utoipa::path(
    post, path = "/v1/keys/{id}/revoke", tag = "keys",
    params(("id" = KeyIdText, Path, description = "Key id"), WaitQuery),
    request_body = RevokeRequest,
    responses(
        (status = 200, description = "Revoked (or already was); with wait=all, each edge's confirmation", body = Revocation),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn revoke(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    PathParam(id): PathParam<String>,
    QueryParams(wait): QueryParams<WaitQuery>,
    JsonBody(request): JsonBody<RevokeRequest>,
) -> Result<(ServerTiming, Json<Revocation>), ApiError> {
    principal.require(Scope::KeysRevoke)?;
    let wait = Wait::parse(&wait, manager.config.default_wait_timeout)?;
    let reason = model::reason(&request.reason)?;
    let record = load(&manager, &principal, &id).await?;
    let timing = ServerTiming::start();
    let revoked = manager
        .store
        .revoke_key(record.id, &reason, &principal.actor())
        .await
        .map_err(store_error)?;
    let timing = timing.committed();
    let seq = revoked.event.as_ref().map(|e| e.seq);
    if let Some(event) = &revoked.event {
        ManagerMetrics::add(&manager.metrics.keys_revoked, 1);
        tracing::info!(key = %record.id, principal = %principal.id, "key revoked");
        manager.publish(std::slice::from_ref(event)).await;
    }
    let propagation = manager.confirm(seq, wait).await;
    Ok((
        timing,
        Json(Revocation {
            key: model::key_view(&revoked.record, Timestamp::now()),
            already_revoked: revoked.event.is_none(),
            propagation,
        }),
    ))
}

#[utoipa::path(
    post, path = "/v1/keys/{id}/rotate", tag = "keys",
    params(("id" = KeyIdText, Path, description = "Key id"), WaitQuery),
    request_body = RotateRequest,
    responses(
        (status = 201, description = "The successor key; the old one expires after the grace period", body = Rotation),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
        (status = 409, description = "The key is revoked", body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn rotate(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    PathParam(id): PathParam<String>,
    QueryParams(wait): QueryParams<WaitQuery>,
    JsonBody(request): JsonBody<RotateRequest>,
) -> Result<(StatusCode, Json<Rotation>), ApiError> {
    principal.require(Scope::KeysWrite)?;
    let wait = Wait::parse(&wait, manager.config.default_wait_timeout)?;
    if request.grace_seconds > model::MAX_SECONDS {
        return Err(ApiError::invalid(format!(
            "grace_seconds: at most {}",
            model::MAX_SECONDS
        )));
    }
    let now = Timestamp::now();
    let expires_at = model::expiry(request.expires_at.as_deref(), request.expires_in, now)?;
    let old = load(&manager, &principal, &id).await?;
    if old.revoked.is_some() {
        return Err(ApiError::conflict(format!(
            "key {} is revoked; issue a new key instead",
            old.id
        )));
    }
    let new = NewKey {
        owner: Some(old.owner.clone()),
        name: old.name.clone(),
        apis: old.apis.clone(),
        scopes: old.scopes.clone(),
        expires_at,
        metadata: old.metadata.clone(),
        issuer: Some(old.prefix.to_string()),
    };
    let grace_end = now
        .plus_seconds(request.grace_seconds)
        .ok_or_else(|| ApiError::invalid("grace_seconds: too far in the future"))?;
    let rotation = Some((&old, grace_end));
    let (key, record) = issue(&manager, &principal, new, old.owner.clone(), rotation).await?;
    ManagerMetrics::add(&manager.metrics.keys_rotated, 1);
    let previous = manager
        .store
        .key(old.id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::internal("rotated key vanished"))?;
    let propagation = manager.confirm(None, wait).await;
    Ok((
        StatusCode::CREATED,
        Json(Rotation {
            new: CreatedKey {
                key: key.expose(),
                view: model::key_view(&record, now),
                propagation,
            },
            previous: model::key_view(&previous, now),
        }),
    ))
}

#[utoipa::path(
    post, path = "/v1/revocations", tag = "keys",
    params(WaitQuery),
    request_body = BulkRevokeShape,
    responses(
        (status = 200, description = "Every matching key revoked in one transaction", body = BulkRevocation),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn bulk_revoke(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(wait): QueryParams<WaitQuery>,
    JsonBody(request): JsonBody<BulkRevokeRequest, { model::BULK_BODY_LIMIT }>,
) -> Result<(ServerTiming, Json<BulkRevocation>), ApiError> {
    principal.require(Scope::KeysRevoke)?;
    let wait = Wait::parse(&wait, manager.config.default_wait_timeout)?;
    let reason = model::reason(&request.reason)?;
    let selector = match (request.owner, request.api, request.ids) {
        (Some(owner), None, None) => {
            let owner =
                Owner::parse(&owner).map_err(|e| ApiError::invalid(format!("owner: {e}")))?;
            principal.may_touch(&owner)?;
            Selector::Owner(owner)
        }
        (None, Some(api), None) => {
            Selector::Api(Label::parse(&api).map_err(|e| ApiError::invalid(format!("api: {e}")))?)
        }
        (None, None, Some(ids)) => {
            if ids.is_empty() || ids.len() > model::MAX_BULK_IDS {
                return Err(ApiError::invalid(format!(
                    "ids: between 1 and {} ids",
                    model::MAX_BULK_IDS
                )));
            }
            let parsed = ids
                .iter()
                .enumerate()
                .map(|(i, id)| {
                    model::given_id(id, "key")
                        .map_err(|message| ApiError::invalid(format!("ids[{i}]: {message}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Selector::Ids(parsed)
        }
        _ => return Err(ApiError::invalid("give exactly one of owner, api, ids")),
    };
    let timing = ServerTiming::start();
    let outcome = manager
        .store
        .revoke_many(
            &selector,
            principal.owner.as_ref(),
            &reason,
            &principal.actor(),
        )
        .await
        .map_err(store_error)?;
    let timing = timing.committed();
    ManagerMetrics::add(&manager.metrics.keys_revoked, outcome.revoked.len() as u64);
    if !outcome.revoked.is_empty() {
        tracing::info!(count = outcome.revoked.len(), principal = %principal.id, "keys revoked in bulk");
        manager.publish(&outcome.events).await;
    }
    let propagation = manager.confirm(outcome.last_seq(), wait).await;
    Ok((
        timing,
        Json(BulkRevocation {
            revoked: outcome.revoked.iter().map(ToString::to_string).collect(),
            already_revoked: outcome.already_revoked,
            propagation,
        }),
    ))
}
