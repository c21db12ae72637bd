//! Leak intake: keys found where they should not be are revoked at once.
//!
//! A report must carry the whole key: the manager revokes only when the presented secret matches, so a
//! reporter proves the leak and nobody can revoke keys by guessing ids. A key that does not verify is
//! answered `unknown`, exactly like an id that does not exist. Leaked manager tokens (`qt_`) are revoked the
//! same way: the scanner finds them too, and a leaked admin token is worse than a leaked key.

use std::sync::Arc;

use axum::{Json, extract::State};
pub use quench_api::leaks::{
    GithubFeedback, GithubReport, GithubToken, LeakOutcome, LeakReport, LeakResult, LeakResults,
    LeakedKey, MAX_LEAKS,
};
use quench_api::web::{ApiError, JsonBody, QueryParams};
use quench_core::{KeyRecord, key::PresentedKey, record::REASON_MAX, scope::Scope};

use super::{
    Wait,
    model::{ErrorResponse, WaitQuery},
    store_error,
};
use crate::{Manager, auth::Principal, metrics::ManagerMetrics};

fn clean(text: Option<&str>) -> String {
    text.unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

/// argon2id and bcrypt checks of leak reports running at once: half the cores, at least one, so reports
/// of slow-hash keys (each check tens of milliseconds) cannot take every core from the manager's API.
fn slow_checks() -> &'static tokio::sync::Semaphore {
    static SLOW: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOW.get_or_init(|| {
        let permits = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        tokio::sync::Semaphore::new(permits)
    })
}

/// Does the reported secret match the stored key? Slow hashes run off the async workers, a bounded
/// number at once.
async fn proves(record: &KeyRecord, text: &str) -> bool {
    let verifier = record.verifier.clone();
    let text = text.to_owned();
    let _permit = match verifier.alg() {
        quench_core::HashAlg::Sha256 => None,
        _ => slow_checks().acquire().await.ok(),
    };
    tokio::task::spawn_blocking(move || {
        PresentedKey::parse(&text).is_ok_and(|key| verifier.matches(key.secret()))
    })
    .await
    .unwrap_or(false)
}

/// Revokes one reported key if the report proves it; the event's sequence when this call revoked it.
pub(crate) async fn handle(
    manager: &Manager,
    actor: &quench_store::Actor,
    leaked: &LeakedKey,
) -> Result<(LeakResult, Option<quench_core::Seq>), ApiError> {
    let answer = |key_id, outcome| Ok((LeakResult { key_id, outcome }, None));
    let text = leaked.key.trim();
    let Ok(key) = PresentedKey::parse(text) else {
        return answer(None, LeakOutcome::NotQuenchKey);
    };
    let key_id = Some(key.id().to_string());
    if key.prefix().as_str() == crate::auth::TOKEN_PREFIX {
        let outcome = leaked_token(manager, actor, &key).await?;
        return answer(key_id, outcome);
    }
    let record = manager.store.key(key.id()).await.map_err(store_error)?;
    let record = match record {
        Some(record) if record.prefix == key.prefix() && proves(&record, text).await => record,
        _ => return answer(key_id, LeakOutcome::Unknown),
    };
    if record.revoked.is_some() {
        return answer(key_id, LeakOutcome::AlreadyRevoked);
    }
    let seq = revoke_leaked(manager, actor, &record, &leak_reason(leaked)).await?;
    let outcome = match seq {
        Some(_) => LeakOutcome::Revoked,
        // Revoked by someone else between the read and the write.
        None => LeakOutcome::AlreadyRevoked,
    };
    Ok((LeakResult { key_id, outcome }, seq))
}

/// The revocation reason of a leak report: who reported it where, within [`REASON_MAX`] characters.
fn leak_reason(leaked: &LeakedKey) -> String {
    format!(
        "leaked: reported by {} at {}",
        clean(leaked.source.as_deref()),
        clean(leaked.url.as_deref())
    )
    .chars()
    .take(REASON_MAX)
    .collect()
}

/// Revokes a proven leaked key and publishes the revocation: its sequence, or `None` when it was
/// already revoked.
async fn revoke_leaked(
    manager: &Manager,
    actor: &quench_store::Actor,
    record: &quench_core::KeyRecord,
    reason: &str,
) -> Result<Option<quench_core::Seq>, ApiError> {
    let revoked = manager
        .store
        .revoke_key(record.id, reason, actor)
        .await
        .map_err(store_error)?;
    let Some(event) = &revoked.event else {
        return Ok(None);
    };
    manager.publish(std::slice::from_ref(event)).await;
    ManagerMetrics::add(&manager.metrics.keys_revoked, 1);
    ManagerMetrics::add(&manager.metrics.leaks_revoked, 1);
    tracing::warn!(key = %record.id, principal = %actor.principal, "leaked key revoked");
    Ok(Some(event.seq))
}

/// A leaked manager token (`qt_`) is revoked like a key: only when the whole token proves it. A token
/// already revoked, or the configured bootstrap token (which is not stored), answers `unknown`.
async fn leaked_token(
    manager: &Manager,
    actor: &quench_store::Actor,
    key: &PresentedKey<'_>,
) -> Result<LeakOutcome, ApiError> {
    let token = manager.store.token(key.id()).await.map_err(store_error)?;
    let Some(token) = token.filter(|t| t.verifier.matches(key.secret())) else {
        return Ok(LeakOutcome::Unknown);
    };
    match manager.store.revoke_token(token.id, actor).await {
        Ok(true) => {
            ManagerMetrics::add(&manager.metrics.leaks_revoked, 1);
            tracing::warn!(token = %token.id, principal = %actor.principal, "leaked manager token revoked");
            Ok(LeakOutcome::Revoked)
        }
        Ok(false) => Ok(LeakOutcome::AlreadyRevoked),
        Err(quench_store::StoreError::NotFound) => Ok(LeakOutcome::Unknown),
        Err(e) => Err(store_error(e)),
    }
}

#[utoipa::path(
    post, path = "/v1/leaks", tag = "keys",
    params(WaitQuery),
    request_body = LeakReport,
    responses(
        (status = 200, description = "What became of each reported key; revoked ones with reason `leaked`", body = LeakResults),
        (status = 401, body = ErrorResponse), (status = 403, body = ErrorResponse), (status = 422, body = ErrorResponse),
    ),
    security(("bearer" = []))
)]
pub async fn report(
    State(manager): State<Arc<Manager>>,
    principal: Principal,
    QueryParams(wait): QueryParams<WaitQuery>,
    JsonBody(report): JsonBody<LeakReport>,
) -> Result<Json<LeakResults>, ApiError> {
    principal.require(Scope::LeaksReport)?;
    let wait = Wait::parse(&wait, manager.config.default_wait_timeout)?;
    if report.keys.is_empty() || report.keys.len() > MAX_LEAKS {
        return Err(ApiError::invalid(format!(
            "keys: between 1 and {MAX_LEAKS}"
        )));
    }
    let mut results = Vec::with_capacity(report.keys.len());
    let mut last_seq = None;
    let actor = principal.actor();
    for leaked in &report.keys {
        let (result, seq) = handle(&manager, &actor, leaked).await?;
        last_seq = seq.or(last_seq);
        results.push(result);
    }
    let propagation = match last_seq {
        Some(seq) => manager.confirm(Some(seq), wait).await,
        None => None,
    };
    Ok(Json(LeakResults {
        results,
        propagation,
    }))
}

/// Reads the body GitHub sends (once its signature has verified): a JSON array of at most
/// [`MAX_LEAKS`] tokens. Pure, so the fuzz target runs exactly what the endpoint runs.
pub fn github_payload(body: &[u8]) -> Result<Vec<GithubToken>, ApiError> {
    let tokens: Vec<GithubToken> = quench_api::web::parse_json(body)?;
    if tokens.len() > MAX_LEAKS {
        return Err(ApiError::invalid(format!("at most {MAX_LEAKS} tokens")));
    }
    Ok(tokens)
}

#[utoipa::path(
    post, path = "/v1/integrations/github/secret-scanning", tag = "keys",
    params(
        ("Github-Public-Key-Identifier" = String, Header, description = "Which of GitHub's public keys signed the body"),
        ("Github-Public-Key-Signature" = String, Header, description = "Base64 DER ECDSA P-256 (SHA-256) signature over the raw body"),
    ),
    request_body = GithubReport,
    responses(
        (status = 200, description = "GitHub's feedback format; every matching key is revoked", body = Vec<GithubFeedback>),
        (status = 401, description = "Missing or invalid GitHub signature: nothing is read or revoked", body = ErrorResponse),
        (status = 404, description = "No GitHub public keys are configured", body = ErrorResponse),
        (status = 413, body = ErrorResponse), (status = 422, body = ErrorResponse),
    )
)]
pub async fn github(
    State(manager): State<Arc<Manager>>,
    request: axum::extract::Request,
) -> Result<Json<Vec<GithubFeedback>>, ApiError> {
    use crate::github::{KEY_ID_HEADER, SIGNATURE_HEADER};
    let Some(keys) = &manager.config.github_keys else {
        return Err(ApiError::not_found(
            "the GitHub secret-scanning endpoint is not configured (--github-public-keys)",
        ));
    };
    let (parts, body) = request.into_parts();
    let connect = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0);
    let body = axum::body::to_bytes(body, quench_api::web::BODY_LIMIT)
        .await
        .map_err(|_| quench_api::web::too_large(quench_api::web::BODY_LIMIT))?;
    let headers = parts.headers;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Err(error) = keys.verify(header(KEY_ID_HEADER), header(SIGNATURE_HEADER), &body) {
        ManagerMetrics::add(&manager.metrics.auth_failures, 1);
        return Err(ApiError::unauthorized(error.to_string()));
    }
    quench_api::web::require_json(&headers)?;
    let tokens = github_payload(&body)?;
    let actor = quench_store::Actor {
        principal: "github-secret-scanning".into(),
        source: connect.map(|addr| addr.ip().to_string()),
        at: quench_core::Timestamp::now(),
    };
    let mut feedback = Vec::with_capacity(tokens.len());
    let mut last_seq = None;
    for token in tokens {
        let leaked = LeakedKey {
            key: token.token.clone(),
            source: Some(format!(
                "github {}",
                token.source.as_deref().unwrap_or("content")
            )),
            url: token.url.clone(),
        };
        let (result, seq) = handle(&manager, &actor, &leaked).await?;
        last_seq = seq.or(last_seq);
        let label = match result.outcome {
            LeakOutcome::Revoked | LeakOutcome::AlreadyRevoked => "true_positive",
            LeakOutcome::Unknown | LeakOutcome::NotQuenchKey => "false_positive",
        };
        feedback.push(GithubFeedback {
            token_hash: quench_core::hash::hex(&quench_core::hash::sha256(token.token.as_bytes())),
            token_type: token.token_type,
            label: label.into(),
        });
    }
    if last_seq.is_some() {
        let timeout = manager.config.default_wait_timeout;
        manager.confirm(last_seq, Wait::All(timeout)).await;
    }
    Ok(Json(feedback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leak_reason_names_the_reporter_and_place_without_control_characters_and_within_bounds() {
        let leaked = |source: Option<&str>, url: Option<&str>| LeakedKey {
            key: String::new(),
            source: source.map(str::to_owned),
            url: url.map(str::to_owned),
        };
        assert_eq!(
            leak_reason(&leaked(Some("scanner"), Some("https://paste.example/1"))),
            "leaked: reported by scanner at https://paste.example/1"
        );
        assert_eq!(leak_reason(&leaked(None, None)), "leaked: reported by  at ");
        assert_eq!(
            leak_reason(&leaked(Some("a\nb\u{1b}[31m"), None)),
            "leaked: reported by ab[31m at "
        );
        let long = "x".repeat(1_000);
        let reason = leak_reason(&leaked(Some(&long), Some(&long)));
        assert!(reason.chars().count() <= REASON_MAX, "{}", reason.len());
    }
}
