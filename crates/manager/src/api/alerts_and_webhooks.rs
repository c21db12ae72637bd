//! Usage alerts (edges report them, people read them), the usage policy edges fetch, and webhooks.

use std::sync::Arc;

use axum::{Json, extract::State, http::StatusCode};
use quench_api::{
    alerts::{AlertList, AlertOutcomes, AlertQuery, AlertReport, AlertView},
    web::{ApiError, JsonBody, PathParam, QueryParams},
    webhooks::{
        CreateWebhookRequest, CreatedWebhook, DeliveryList, DeliveryQuery, DeliveryView, MAX_URL,
        WEBHOOK_URL_PATTERN, WebhookList, WebhookView,
    },
};
use quench_core::{KeyId, Owner, Timestamp, hash::hex, scope::Scope, webhook};
use quench_store::{AlertFilter, AlertRecord, DeliveryRecord, WebhookRecord};

use super::{
    model::{self, ErrorResponse},
    store_error,
};
use crate::{
    Manager,
    alerts::AlertError,
    auth::Principal,
    webhooks::{
        confined_error,
        target::{self, TargetError, WebhookUrl},
    },
};

#[utoipa::path(
    get, path = "/v1/usage-policy", tag = "admin",
    responses(
        (status = 200, description = "The usage rules every edge applies (window_seconds, usual_windows, max_tracked_keys, rules)", body = Object),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn usage_policy(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
) -> Result<Json<quench_core::usage::UsagePolicy>, ApiError> {
    principal.require(Scope::Edge)?;
    Ok(Json(manager.config.usage_policy.clone()))
}

#[utoipa::path(
    post, path = "/v1/alerts", tag = "admin",
    request_body = AlertReport,
    responses(
        (status = 200, description = "Recorded (each alert id once); keys revoked where the rule says so", body = AlertOutcomes),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn report(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    JsonBody(report): JsonBody<AlertReport>,
) -> Result<Json<AlertOutcomes>, ApiError> {
    principal.require(Scope::Edge)?;
    if principal.owner.is_some() {
        // An alert can revoke any owner's key, by policy.
        return Err(ApiError::forbidden(
            "reporting usage alerts is for unconfined edge tokens",
        ));
    }
    match manager
        .receive_alerts(&report, principal.source.clone())
        .await
    {
        Ok(results) => Ok(Json(AlertOutcomes { results })),
        Err(AlertError::Invalid(why)) => Err(ApiError::invalid(why)),
        Err(AlertError::Store(e)) => Err(store_error(e)),
    }
}

fn alert_view(record: AlertRecord) -> AlertView {
    let a = record.alert;
    AlertView {
        seq: record.seq,
        id: a.id,
        key_id: a.key_id.to_string(),
        owner: a.owner.map(|o| o.to_string()),
        rule: a.rule,
        kind: a.kind,
        action: a.action.as_str().to_owned(),
        edge: a.edge,
        raised_at: a.raised_at.to_string(),
        received_at: a.received_at.to_string(),
        details: serde_json::from_str(&a.details).unwrap_or(serde_json::Value::Null),
    }
}

fn owner_param(text: Option<&str>) -> Result<Option<Owner>, ApiError> {
    text.map(|o| Owner::parse(o).map_err(|e| ApiError::invalid(format!("owner: {e}"))))
        .transpose()
}

#[utoipa::path(
    get, path = "/v1/alerts", tag = "keys",
    params(AlertQuery),
    responses(
        (status = 200, description = "Usage alerts, newest first", body = AlertList),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(query): QueryParams<AlertQuery>,
) -> Result<Json<AlertList>, ApiError> {
    principal.require(Scope::KeysRead)?;
    let limit = model::page_limit(query.limit)?;
    let filter = AlertFilter {
        key_id: query
            .key_id
            .as_deref()
            .map(|k| KeyId::parse(k).map_err(|e| ApiError::invalid(format!("key_id: {e}"))))
            .transpose()?,
        owner: principal.confine(owner_param(query.owner.as_deref())?)?,
    };
    let before = model::page_cursor(query.cursor.as_deref())?;
    let records = manager
        .store
        .alerts(&filter, before, limit)
        .await
        .map_err(store_error)?;
    let next_cursor = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.seq.to_string()))
        .flatten();
    Ok(Json(AlertList {
        alerts: records.into_iter().map(alert_view).collect(),
        next_cursor,
    }))
}

fn webhook_view(hook: &WebhookRecord) -> WebhookView {
    WebhookView {
        id: hook.id.clone(),
        url: target::redacted(&hook.url),
        events: hook.events.clone(),
        owner: hook.owner.as_ref().map(|o| o.to_string()),
        created_at: hook.created_at.to_string(),
    }
}

fn webhook_url_shape() -> &'static regex::Regex {
    static SHAPE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    SHAPE.get_or_init(|| regex::Regex::new(WEBHOOK_URL_PATTERN).expect("the pattern compiles"))
}

/// A webhook URL: within the documented length, past the address guard (first, so that a refused address
/// is named as such whatever its spelling), then of the documented shape.
fn webhook_url(manager: &Manager, text: &str) -> Result<WebhookUrl, ApiError> {
    if text.chars().count() > MAX_URL {
        return Err(ApiError::invalid(format!(
            "url: at most {MAX_URL} characters"
        )));
    }
    let url = WebhookUrl::parse(text, &manager.config.webhooks.guard).map_err(|e| match e {
        TargetError::Refused(refused) => {
            tracing::info!(address = %refused.address, "webhook target refused by the address guard");
            ApiError::invalid(TargetError::Refused(refused).to_string())
        }
        other => ApiError::invalid(other.to_string()),
    })?;
    if !webhook_url_shape().is_match(text) {
        return Err(ApiError::invalid(
            "url: an http:// or https:// URL with a host name or IPv4 address, without a fragment",
        ));
    }
    Ok(url)
}

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(ApiError::internal)?;
    Ok(hex(&buf))
}

#[utoipa::path(
    post, path = "/v1/webhooks", tag = "admin",
    request_body = CreateWebhookRequest,
    responses(
        (status = 201, description = "Subscribed; the secret is shown once", body = CreatedWebhook),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn create_webhook(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    JsonBody(request): JsonBody<CreateWebhookRequest>,
) -> Result<(StatusCode, Json<CreatedWebhook>), ApiError> {
    principal.require(Scope::KeysWrite)?;
    let url = webhook_url(&manager, &request.url)?;
    let mut events = match request.events {
        None => webhook::WebhookEvent::ALL
            .map(|e| e.as_str().to_owned())
            .to_vec(),
        Some(events) => events,
    };
    events.sort();
    events.dedup();
    if events.is_empty() {
        return Err(ApiError::invalid("events: at least one"));
    }
    if let Some(unknown) = events
        .iter()
        .find(|e| webhook::WebhookEvent::parse(e).is_none())
    {
        let known: Vec<&str> = webhook::WebhookEvent::ALL
            .map(webhook::WebhookEvent::as_str)
            .to_vec();
        return Err(ApiError::invalid(format!(
            "events: unknown {unknown:?}; use {}",
            known.join(", ")
        )));
    }
    let owner = principal.confine(owner_param(request.owner.as_deref())?)?;
    let store = &manager.store;
    let hook = WebhookRecord {
        id: format!("wh_{}", random_hex(8)?),
        url: url.as_str().to_owned(),
        secret: format!("whsec_{}", random_hex(32)?),
        events,
        owner,
        created_at: Timestamp::now(),
        created_by: principal.id.clone(),
        from_seq: store.head().await.map_err(store_error)?,
        from_alert: store.last_alert_seq().await.map_err(store_error)?,
    };
    store.create_webhook(&hook).await.map_err(store_error)?;
    tracing::info!(webhook = %hook.id, principal = %principal.id, "webhook created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedWebhook {
            webhook: webhook_view(&hook),
            secret: hook.secret.clone(),
        }),
    ))
}

async fn visible_webhooks(
    manager: &Manager,
    principal: &Principal,
) -> Result<Vec<WebhookRecord>, ApiError> {
    let hooks = manager.store.webhooks().await.map_err(store_error)?;
    Ok(hooks
        .into_iter()
        .filter(|h| principal.owner.is_none() || h.owner == principal.owner)
        .collect())
}

#[utoipa::path(
    get, path = "/v1/webhooks", tag = "admin",
    responses(
        (status = 200, description = "Webhooks (never their secrets)", body = WebhookList),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn list_webhooks(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
) -> Result<Json<WebhookList>, ApiError> {
    principal.require(Scope::KeysRead)?;
    let hooks = visible_webhooks(&manager, &principal).await?;
    Ok(Json(WebhookList {
        webhooks: hooks.iter().map(webhook_view).collect(),
    }))
}

#[utoipa::path(
    delete, path = "/v1/webhooks/{id}", tag = "admin",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted (or already was); its pending deliveries are abandoned"),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn delete_webhook(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    PathParam(id): PathParam<String>,
) -> Result<StatusCode, ApiError> {
    principal.require(Scope::KeysWrite)?;
    if principal.owner.is_some()
        && !visible_webhooks(&manager, &principal)
            .await?
            .iter()
            .any(|h| h.id == id)
    {
        return Err(ApiError::not_found("no such webhook"));
    }
    match manager.store.delete_webhook(&id, Timestamp::now()).await {
        Ok(_) => {
            tracing::info!(webhook = %id, principal = %principal.id, "webhook deleted");
            Ok(StatusCode::NO_CONTENT)
        }
        Err(quench_store::StoreError::NotFound) => Err(ApiError::not_found("no such webhook")),
        Err(e) => Err(store_error(e)),
    }
}

fn delivery_view(d: DeliveryRecord, confined: bool) -> DeliveryView {
    let status = if d.delivered_at.is_some() {
        "delivered"
    } else if d.failed_at.is_some() {
        "failed"
    } else {
        "pending"
    };
    DeliveryView {
        id: d.id.to_string(),
        event_type: d.delivery.event_type,
        status: status.into(),
        attempts: d.attempts,
        created_at: d.delivery.created_at.to_string(),
        next_attempt_at: (status == "pending").then(|| d.next_attempt_at.to_string()),
        delivered_at: d.delivered_at.map(|t| t.to_string()),
        failed_at: d.failed_at.map(|t| t.to_string()),
        last_error: d.last_error.map(|e| match confined {
            true => confined_error(&e).to_owned(),
            false => e,
        }),
    }
}

#[utoipa::path(
    get, path = "/v1/webhooks/{id}/deliveries", tag = "admin",
    params(("id" = String, Path, description = "Webhook id"), DeliveryQuery),
    responses(
        (status = 200, description = "The webhook's deliveries, newest first", body = DeliveryList),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 404, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn deliveries(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    PathParam(id): PathParam<String>,
    QueryParams(query): QueryParams<DeliveryQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    principal.require(Scope::KeysRead)?;
    let limit = model::page_limit(query.limit)?;
    if !visible_webhooks(&manager, &principal)
        .await?
        .iter()
        .any(|h| h.id == id)
    {
        return Err(ApiError::not_found("no such webhook"));
    }
    let deliveries = manager
        .store
        .deliveries(&id, limit)
        .await
        .map_err(store_error)?;
    Ok(Json(DeliveryList {
        deliveries: deliveries
            .into_iter()
            .map(|d| delivery_view(d, principal.owner.is_some()))
            .collect(),
    }))
}
