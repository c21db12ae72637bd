//! A manager's configuration, read and checked before the process writes or binds anything, so a bad
//! setting is reported as such (every one at once) even when a port is taken or the database is down.
//! Only [`ManagerSettings::into_config`] writes: the signing key file and the first admin token.

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use quench_core::{sign::PublicKey, usage::UsagePolicy};
use quench_manager::{
    Fault, Issuer, ManagerConfig, bootstrap,
    config::BootstrapToken,
    github::GithubKeys,
    webhooks::{
        WebhookSettings,
        guard::{AddressGuard, Cidr},
    },
};
use quench_store::Store;

use crate::node::{ManagerArgs, TestFault};

/// Every bad setting found while checking a process's configuration, so one start reports them all.
#[derive(Debug, Default)]
pub struct Problems(Vec<anyhow::Error>);

impl Problems {
    /// The value of `result`, or `None` with its error kept for [`Problems::into_error`].
    pub fn take<T>(&mut self, result: anyhow::Result<T>) -> Option<T> {
        result.map_err(|error| self.0.push(error)).ok()
    }

    /// One error naming every problem (the single one as it is, keeping its causes).
    pub fn into_error(mut self) -> anyhow::Error {
        match self.0.len() {
            0 => anyhow::anyhow!("invalid configuration"),
            1 => self.0.remove(0),
            _ => {
                let all: Vec<String> = self.0.iter().map(|e| format!("{e:#}")).collect();
                anyhow::anyhow!("{}", all.join("\n  "))
            }
        }
    }
}

/// Where the manager's event-signing key comes from.
#[derive(Debug)]
enum SigningKeySource {
    /// `QUENCH_SIGNING_KEY`, already parsed.
    Seed(Box<quench_core::sign::Signer>),
    /// A key file, made on first start.
    File(PathBuf),
}

/// A manager's configuration, checked from its options, the environment and the files they name before
/// the process writes or binds anything; [`ManagerSettings::into_config`] does the writing.
#[derive(Debug)]
pub struct ManagerSettings {
    issuers: Vec<Issuer>,
    also_trusted: Vec<PublicKey>,
    bootstrap_token: Option<BootstrapToken>,
    signing_key: SigningKeySource,
    github_keys: Option<GithubKeys>,
    usage_policy: UsagePolicy,
    webhooks: WebhookSettings,
    fault: Option<Fault>,
}

impl ManagerSettings {
    /// Reads and checks everything; writes nothing. Every bad setting is reported at once.
    pub async fn check(args: &ManagerArgs) -> anyhow::Result<Self> {
        let mut problems = Problems::default();
        let issuers = problems.take(issuers(&args.issuers));
        let also_trusted = problems.take(also_trusted(&args.also_trust));
        let guard = problems.take(webhook_guard(&args.webhook_allow));
        let bootstrap_token = problems.take(bootstrap_token(env_value("QUENCH_BOOTSTRAP_TOKEN")));
        let signing_key = problems.take(signing_key_source(env_value("QUENCH_SIGNING_KEY"), args));
        let github_keys = problems.take(github_keys(args.github_public_keys.as_deref()).await);
        let usage_policy = problems.take(usage_policy(args.usage_policy.as_deref()));
        let (
            Some(issuers),
            Some(also_trusted),
            Some(guard),
            Some(bootstrap_token),
            Some(signing_key),
            Some(github_keys),
            Some(usage_policy),
        ) = (
            issuers,
            also_trusted,
            guard,
            bootstrap_token,
            signing_key,
            github_keys,
            usage_policy,
        )
        else {
            return Err(problems.into_error());
        };
        let webhooks = WebhookSettings {
            guard,
            give_up_after: Duration::from_secs(args.webhook_give_up),
            first_retry: Duration::from_secs(args.webhook_first_retry),
            ..WebhookSettings::default()
        };
        Ok(Self {
            issuers,
            also_trusted,
            bootstrap_token,
            signing_key,
            github_keys,
            usage_policy,
            webhooks,
            fault: args.fault.map(TestFault::fault),
        })
    }

    /// The manager's configuration, making what a first start makes: the signing key file, and the
    /// first admin token (printed once) in a store without one.
    pub async fn into_config(
        self,
        store: &dyn Store,
        data_dir: &std::path::Path,
        id: String,
    ) -> anyhow::Result<ManagerConfig> {
        let signer = match self.signing_key {
            SigningKeySource::Seed(signer) => *signer,
            SigningKeySource::File(path) => bootstrap::signing_key(&path)?,
        };
        if self.bootstrap_token.is_none()
            && let Some(token) = bootstrap::first_token(store, data_dir).await?
        {
            println!(
                "Bootstrap admin token (shown once, also saved to {}):",
                bootstrap::token_path(data_dir).display()
            );
            println!("  {token}");
        }
        Ok(ManagerConfig {
            id,
            github_keys: self.github_keys,
            usage_policy: self.usage_policy,
            webhooks: self.webhooks,
            issuers: self.issuers,
            bootstrap_token: self.bootstrap_token,
            signer: Arc::new(signer),
            also_trusted: self.also_trusted,
            fault: self.fault,
            ..ManagerConfig::default()
        })
    }
}

/// An environment variable's value, unless unset or empty.
fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn issuers(texts: &[String]) -> anyhow::Result<Vec<Issuer>> {
    texts
        .iter()
        .map(|i| Issuer::parse(i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--issuer: {e}"))
}

fn also_trusted(texts: &[String]) -> anyhow::Result<Vec<PublicKey>> {
    texts
        .iter()
        .map(|k| PublicKey::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--also-trust: {e}"))
}

fn bootstrap_token(value: Option<String>) -> anyhow::Result<Option<BootstrapToken>> {
    Ok(value.map(bootstrap::configured).transpose()?)
}

/// `QUENCH_SIGNING_KEY` when set, else `--signing-key-file`, else `<data-dir>/signing.key`.
fn signing_key_source(
    seed: Option<String>,
    args: &ManagerArgs,
) -> anyhow::Result<SigningKeySource> {
    match seed {
        Some(seed) => quench_core::sign::Signer::from_seed_hex(&seed)
            .map(|signer| SigningKeySource::Seed(Box::new(signer)))
            .map_err(|e| anyhow::anyhow!("QUENCH_SIGNING_KEY: {e}")),
        None => Ok(SigningKeySource::File(
            args.signing_key_file
                .clone()
                .unwrap_or_else(|| args.data_dir.join("signing.key")),
        )),
    }
}

async fn github_keys(location: Option<&str>) -> anyhow::Result<Option<GithubKeys>> {
    let Some(location) = location else {
        return Ok(None);
    };
    GithubKeys::load(location)
        .await
        .map(Some)
        .map_err(|e| anyhow::anyhow!("--github-public-keys: {e}"))
}

fn usage_policy(path: Option<&std::path::Path>) -> anyhow::Result<UsagePolicy> {
    let Some(path) = path else {
        return Ok(UsagePolicy::default());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--usage-policy: reading {}", path.display()))?;
    UsagePolicy::from_json(&text)
        .map_err(|e| anyhow::anyhow!("--usage-policy {}: {e}", path.display()))
}

/// The address guard from `--webhook-allow`, every bad range reported at once.
fn webhook_guard(ranges: &[String]) -> anyhow::Result<AddressGuard> {
    let (good, bad): (Vec<_>, Vec<_>) = ranges
        .iter()
        .map(|r| Cidr::parse(r).map_err(|e| format!("{r:?}: {e}")))
        .partition(Result::is_ok);
    if !bad.is_empty() {
        let bad: Vec<String> = bad.into_iter().filter_map(Result::err).collect();
        bail!("--webhook-allow: {}", bad.join("; "));
    }
    let allow: Vec<Cidr> = good.into_iter().filter_map(Result::ok).collect();
    if !allow.is_empty() {
        let shown: Vec<String> = allow.iter().map(Cidr::to_string).collect();
        tracing::info!(ranges = %shown.join(","), "webhooks may reach these non-public ranges");
    }
    Ok(AddressGuard::new(allow))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_keep_a_single_error_whole_and_list_several() {
        let mut problems = Problems::default();
        assert_eq!(problems.take(Ok::<_, anyhow::Error>(1)), Some(1));
        let inner = anyhow::anyhow!("inner cause").context("--issuer: bad");
        assert_eq!(problems.take::<()>(Err(inner)), None);
        let one = problems.into_error();
        assert_eq!(format!("{one:#}"), "--issuer: bad: inner cause");

        let mut problems = Problems::default();
        problems.take::<()>(Err(anyhow::anyhow!("--issuer: bad")));
        problems.take::<()>(Err(anyhow::anyhow!("--also-trust: bad")));
        let text = problems.into_error().to_string();
        assert!(
            text.contains("--issuer: bad") && text.contains("--also-trust: bad"),
            "{text}"
        );
    }

    #[test]
    fn each_option_names_itself_when_bad() {
        assert_eq!(
            issuers(&["qk".into(), "qs:argon2id".into()])
                .expect("valid")
                .len(),
            2
        );
        let bad = issuers(&["qk:md5".into()]).expect_err("unknown hash");
        assert!(
            bad.to_string().starts_with("--issuer: unknown hash"),
            "{bad}"
        );
        let bad = also_trusted(&["zz".into()]).expect_err("not a key");
        assert!(bad.to_string().starts_with("--also-trust"), "{bad}");
        let bad = bootstrap_token(Some("short".into())).expect_err("too short");
        assert!(!bad.to_string().is_empty());
        assert!(bootstrap_token(None).expect("none").is_none());
        let bad = usage_policy(Some(std::path::Path::new("/nonexistent/policy.json")))
            .expect_err("missing file");
        assert!(format!("{bad:#}").contains("--usage-policy"), "{bad:#}");
        assert!(webhook_guard(&["10.0.0.0/8".into()]).is_ok());
        let bad = webhook_guard(&["10.1.2.3/8".into(), "fd00::/129".into()]).expect_err("bad");
        assert!(bad.to_string().contains("fd00::/129"), "{bad}");
    }
}
