//! The manager's settings.

use std::{sync::Arc, time::Duration};

use quench_core::{
    HashAlg, KeyError, Prefix,
    sign::{PublicKey, Signer},
    usage::UsagePolicy,
};

/// An issuer: a key prefix and how its keys' secrets are hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Issuer {
    pub prefix: Prefix,
    pub hash: HashAlg,
}

impl Default for Issuer {
    fn default() -> Self {
        Self {
            prefix: Prefix::default(),
            hash: HashAlg::Sha256,
        }
    }
}

/// Why an `--issuer` is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssuerError {
    #[error("unknown hash {0:?}; use sha256, argon2id or bcrypt")]
    UnknownHash(String),
    #[error("issuer prefix {prefix:?}: {source}")]
    Prefix {
        prefix: String,
        #[source]
        source: KeyError,
    },
}

impl Issuer {
    /// `PREFIX` or `PREFIX:ALG`, as given on the command line.
    pub fn parse(text: &str) -> Result<Self, IssuerError> {
        let (prefix, hash) = match text.split_once(':') {
            Some((p, h)) => (
                p,
                HashAlg::parse(h).ok_or_else(|| IssuerError::UnknownHash(h.to_owned()))?,
            ),
            None => (text, HashAlg::Sha256),
        };
        let prefix = Prefix::parse(prefix).map_err(|source| IssuerError::Prefix {
            prefix: prefix.to_owned(),
            source,
        })?;
        Ok(Self { prefix, hash })
    }
}

/// A bootstrap token given by configuration; it does not print.
#[derive(Clone)]
pub struct BootstrapToken(pub String);

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapToken(<redacted>)")
    }
}

#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub id: String,
    /// The first is the default for new keys.
    pub issuers: Vec<Issuer>,
    pub heartbeat_interval: Duration,
    /// An edge not heard from for this long is no longer waited for.
    pub edge_liveness: Duration,
    pub default_wait_timeout: Duration,
    pub bootstrap_token: Option<BootstrapToken>,
    /// Signs every event batch, heartbeat and snapshot. Managers sharing a database share this key.
    pub signer: Arc<Signer>,
    /// Other manager keys edges should accept (the next or previous key during a rotation).
    pub also_trusted: Vec<PublicKey>,
    /// GitHub's secret-scanning public keys; without them the partner endpoint answers 404.
    pub github_keys: Option<crate::github::GithubKeys>,
    /// The usage rules every edge applies, and what each does when it fires.
    pub usage_policy: UsagePolicy,
    pub webhooks: crate::webhooks::WebhookSettings,
    /// For tests only: a fault to inject on purpose. `None` in every real deployment.
    pub fault: Option<Fault>,
}

/// A fault the manager injects on purpose, so tests can check what survives a crash at a chosen moment.
/// The CLI sets it only from a flag its help does not show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// Abort the process right after a change commits, before it is published on the bus.
    CrashBeforePublish,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            id: "manager-1".into(),
            issuers: vec![Issuer::default()],
            heartbeat_interval: Duration::from_secs(1),
            edge_liveness: Duration::from_secs(5),
            default_wait_timeout: Duration::from_secs(2),
            bootstrap_token: None,
            signer: Arc::new(Signer::generate().expect("the OS random number generator works")),
            also_trusted: Vec::new(),
            github_keys: None,
            usage_policy: UsagePolicy::default(),
            webhooks: crate::webhooks::WebhookSettings::default(),
            fault: None,
        }
    }
}

impl ManagerConfig {
    pub fn issuer(&self, prefix: Option<&str>) -> Option<Issuer> {
        match prefix {
            None => self.issuers.first().copied(),
            Some(p) => self
                .issuers
                .iter()
                .find(|i| i.prefix.as_str() == p)
                .copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issuer_is_a_prefix_and_an_optional_hash() {
        let issuer = Issuer::parse("qs:argon2id").expect("valid");
        assert_eq!(issuer.prefix.as_str(), "qs");
        assert_eq!(issuer.hash, HashAlg::Argon2id);
        assert_eq!(Issuer::parse("qk").expect("valid").hash, HashAlg::Sha256);
    }

    #[test]
    fn a_bad_issuer_says_which_part_is_wrong() {
        assert_eq!(
            Issuer::parse("qk:md5"),
            Err(IssuerError::UnknownHash("md5".into()))
        );
        assert!(matches!(
            Issuer::parse("BAD!"),
            Err(IssuerError::Prefix { prefix, .. }) if prefix == "BAD!"
        ));
    }
}
