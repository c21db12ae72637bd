//! Who is calling, and what they may do.
//!
//! Manager tokens have the key format with the `qt` prefix (so the scanner finds leaked ones too) and
//! are stored as SHA-256 verifiers like keys. A token carries scopes and, optionally, an owner it is
//! confined to. A missing or invalid token is 401; a valid one without the scope, or touching another
//! owner's keys, is 403.
//!
//! Confinement and the `edge` scope exclude each other. What an edge reads (the snapshot, the event
//! log) is every owner's keys, and what it writes (its registration, usage alerts) speaks for the whole
//! deployment, so a confined token is refused on every edge endpoint whatever its scopes say, and
//! cannot be issued with `edge` at all. A confined `admin` token remains useful, and means every power
//! over its own owner's keys and tokens: it is `admin` minus `edge` (see [`Principal::require`]).
//!
//! The bootstrap token is either given (`QUENCH_BOOTSTRAP_TOKEN`, held only as a hash in memory) or
//! generated on first start as an ordinary `admin` token.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{header, request::Parts},
};
use quench_api::web::ApiError;
use quench_core::{
    ApiKey, HashAlg, Owner, Prefix, Timestamp, Verifier,
    hash::sha256,
    scope::{Scope, Scopes},
};
use quench_store::{Actor, Store, StoreError, TokenRecord};
use subtle::ConstantTimeEq;

use crate::{Manager, config::BootstrapToken, metrics::ManagerMetrics};

pub const TOKEN_PREFIX: &str = "qt";
/// The shortest bootstrap token accepted from configuration.
pub const MIN_BOOTSTRAP_LEN: usize = 32;

#[derive(Debug, Clone)]
pub struct Principal {
    /// The token id, or `bootstrap` for a configured bootstrap token.
    pub id: String,
    pub scopes: Scopes,
    pub owner: Option<Owner>,
    pub source: Option<String>,
}

impl Principal {
    /// Refuses a token without `scope`; for `edge`, also a token confined to an owner.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if !self.scopes.allows(scope) {
            return Err(ApiError::forbidden(format!(
                "this token lacks the {scope} scope"
            )));
        }
        match &self.owner {
            Some(owner) if scope == Scope::Edge => Err(ApiError::forbidden(format!(
                "edge endpoints serve every owner's keys; this token is confined to owner {owner}"
            ))),
            _ => Ok(()),
        }
    }

    /// Refuses any token confined to an owner: for what concerns the whole deployment.
    pub fn require_unconfined(&self, what: &str) -> Result<(), ApiError> {
        match &self.owner {
            Some(owner) => Err(ApiError::forbidden(format!(
                "{what} is for unconfined tokens; this one is confined to owner {owner}"
            ))),
            None => Ok(()),
        }
    }

    /// Refuses when the token is confined to another owner.
    pub fn may_touch(&self, owner: &Owner) -> Result<(), ApiError> {
        match &self.owner {
            Some(mine) if mine != owner => Err(ApiError::forbidden(format!(
                "this token is confined to owner {mine}"
            ))),
            _ => Ok(()),
        }
    }

    /// The owner a read or subscription is for: the token's own if it is confined (asking for another
    /// is refused), else whatever was asked (`None`: every owner).
    pub fn confine(&self, asked: Option<Owner>) -> Result<Option<Owner>, ApiError> {
        match &self.owner {
            Some(mine) => {
                if let Some(asked) = &asked {
                    self.may_touch(asked)?;
                }
                Ok(Some(mine.clone()))
            }
            None => Ok(asked),
        }
    }

    pub fn actor(&self) -> Actor {
        Actor {
            principal: self.id.clone(),
            source: self.source.clone(),
            at: Timestamp::now(),
        }
    }
}

pub struct Authenticator {
    store: Arc<dyn Store>,
    bootstrap: Option<[u8; 32]>,
}

impl Authenticator {
    pub fn new(store: Arc<dyn Store>, bootstrap: Option<BootstrapToken>) -> Self {
        Self {
            store,
            bootstrap: bootstrap.map(|t| sha256(t.0.as_bytes())),
        }
    }

    pub async fn authenticate(
        &self,
        presented: &str,
        source: Option<String>,
    ) -> Result<Principal, ApiError> {
        let is_bootstrap = self
            .bootstrap
            .as_ref()
            .is_some_and(|expected| bool::from(sha256(presented.as_bytes()).ct_eq(expected)));
        if is_bootstrap {
            return Ok(Principal {
                id: "bootstrap".into(),
                scopes: Scopes::new(vec![Scope::Admin]),
                owner: None,
                source,
            });
        }
        let invalid = || ApiError::unauthorized("the token is not valid");
        let token = ApiKey::parse(presented).map_err(|_| invalid())?;
        if token.prefix().as_str() != TOKEN_PREFIX {
            return Err(invalid());
        }
        let record = self
            .store
            .token(token.id())
            .await
            .map_err(crate::api::store_error)?
            .ok_or_else(invalid)?;
        if !record.verifier.matches(token.secret().as_bytes()) {
            return Err(invalid());
        }
        Ok(Principal {
            id: format!("token:{}", record.id),
            scopes: record.scopes,
            owner: record.owner,
            source,
        })
    }
}

impl FromRequestParts<Arc<Manager>> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        manager: &Arc<Manager>,
    ) -> Result<Self, ApiError> {
        let source = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let token = header
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let result = match token {
            None => Err(ApiError::unauthorized(
                "send a token as Authorization: Bearer <token>",
            )),
            Some(token) => manager.auth.authenticate(token, source).await,
        };
        if result.is_err() {
            ManagerMetrics::add(&manager.metrics.auth_failures, 1);
        }
        result
    }
}

/// Issues a token: returns its plaintext (shown once) and what was stored.
pub async fn issue_token(
    store: &dyn Store,
    scopes: Scopes,
    owner: Option<Owner>,
    actor: &Actor,
) -> Result<(String, TokenRecord), StoreError> {
    let prefix = Prefix::parse(TOKEN_PREFIX).map_err(|e| StoreError::corrupt("token prefix", e))?;
    loop {
        let token = ApiKey::generate(prefix).map_err(|e| StoreError::corrupt("token", e))?;
        let record = TokenRecord {
            id: token.id(),
            verifier: Verifier::create(HashAlg::Sha256, token.secret())
                .map_err(|e| StoreError::corrupt("token verifier", e))?,
            scopes: scopes.clone(),
            owner: owner.clone(),
            created_at: actor.at,
            created_by: actor.principal.clone(),
        };
        match store.create_token(&record, actor).await {
            // A random id collided with an existing one: draw again.
            Err(StoreError::Conflict(_)) => continue,
            Err(e) => return Err(e),
            Ok(()) => return Ok((token.expose(), record)),
        }
    }
}
