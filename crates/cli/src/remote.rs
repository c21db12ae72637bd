//! A remote edge reads the manager over HTTP: its signed snapshot and log pages, its signing keys, and
//! where to register the edge's own key. The edge authenticates with an `edge`-scope token.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use quench_api::{ErrorResponse, alerts::AlertReport, system::SigningKeys};
use quench_bus::{EdgeRegistration, Freshness, Sealed, SignedPage, SnapshotReader};
use quench_core::{
    Seq,
    record::Snapshot,
    sign::{Nonce, PublicKey, Signature, Trust},
    usage::UsagePolicy,
};
use quench_edge::{Upstream, UpstreamError};

/// A manager URL an edge may follow: `https://`, or `http://` to this host. Plain HTTP to another host
/// is refused unless the operator says `--insecure-http`: the edge's token and every key's verifier
/// would cross the network in the clear, and whoever is on the path could withhold answers.
#[derive(Debug, Clone)]
pub struct ManagerUrl {
    url: reqwest::Url,
}

impl ManagerUrl {
    /// True for `http://` to a host other than this one (allowed only with `--insecure-http`).
    pub fn plain_remote(&self) -> bool {
        self.url.scheme() == "http" && !is_loopback(&self.url)
    }

    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }
}

impl std::fmt::Display for ManagerUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.url.as_str())
    }
}

/// Parses `--manager`. Refuses other schemes, credentials, queries and fragments in the URL, and plain
/// HTTP to another host unless `insecure_http`.
pub fn manager_url(text: &str, insecure_http: bool) -> anyhow::Result<ManagerUrl> {
    let url = reqwest::Url::parse(text.trim())
        .map_err(|e| anyhow::anyhow!("--manager: not a URL ({e}); expected https://host:port"))?;
    match url.scheme() {
        "https" | "http" => {}
        other => anyhow::bail!("--manager: scheme {other}: is not http or https"),
    }
    if url.host().is_none() {
        anyhow::bail!("--manager: the URL has no host");
    }
    if !url.username().is_empty() || url.password().is_some() {
        anyhow::bail!(
            "--manager: credentials do not belong in the URL; give the token with --token"
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        anyhow::bail!("--manager: the URL must not carry a query or fragment");
    }
    let manager = ManagerUrl { url };
    if manager.plain_remote() && !insecure_http {
        anyhow::bail!(
            "--manager {}: plain http:// to another host is refused. Anyone on the path could read the \
             edge's token and every key's verifier. Use https:// (see docs/operations.md), or pass \
             --insecure-http with --trust-key on a network you trust",
            manager.url.host_str().unwrap_or_default()
        );
    }
    Ok(manager)
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => {
            let name = host.to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
    }
}

pub struct HttpUpstream {
    base: String,
    token: String,
    http: reqwest::Client,
}

fn failed(error: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(error.into())
}

fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> UpstreamError {
    UpstreamError::Invalid(error.into())
}

impl HttpUpstream {
    pub fn new(base: &str, token: String) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("quench-edge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, UpstreamError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status {
                request: format!("GET {path}"),
                status: response.status().as_u16(),
                message: None,
            });
        }
        Ok(response)
    }

    async fn signed<const P: u8>(&self, path: &str) -> Result<Sealed<P>, UpstreamError> {
        let response = self.get(path).await?;
        let signature = response
            .headers()
            .get("quench-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| UpstreamError::Unsigned { path: path.into() })?;
        let signature = Signature::decode(signature).map_err(invalid)?;
        let body = response.bytes().await.map_err(failed)?;
        Ok(Sealed::from_parts(body.to_vec(), signature))
    }

    async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        what: &str,
    ) -> Result<(), UpstreamError> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .map_err(failed)?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status().as_u16();
        let body = response.json::<ErrorResponse>().await.ok();
        Err(UpstreamError::Status {
            request: what.into(),
            status,
            message: body.as_ref().map(error_message),
        })
    }

    /// The manager keys to trust, as the manager lists them. Fetch them over TLS, or pin them with
    /// `--trust-key`: whoever answers this call decides what the edge believes.
    pub async fn trust(&self) -> anyhow::Result<Trust> {
        let listed: SigningKeys = self
            .get("/v1/signing-keys")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .json()
            .await
            .context("reading the manager's signing keys")?;
        let keys = listed
            .keys
            .iter()
            .map(|k| PublicKey::parse(&k.public_key))
            .collect::<Result<Vec<_>, _>>()
            .context("the manager listed an invalid signing key")?;
        if keys.is_empty() {
            anyhow::bail!("the manager listed no signing keys");
        }
        Ok(Trust::new(keys))
    }
}

#[async_trait]
impl Upstream for HttpUpstream {
    /// Streams the snapshot: lines are hashed and parsed as they arrive, nothing is believed until the
    /// signed end line verifies.
    async fn snapshot(
        &self,
        trust: &Trust,
        nonce: &Nonce,
    ) -> Result<(Snapshot, Freshness), UpstreamError> {
        let mut body = self
            .get(&format!("/v1/snapshot?nonce={nonce}"))
            .await?
            .bytes_stream();
        let mut reader = SnapshotReader::new();
        while let Some(chunk) = body.next().await {
            reader.feed(&chunk.map_err(failed)?).map_err(invalid)?;
        }
        reader.finish(trust, nonce).map_err(invalid)
    }

    async fn events_after(
        &self,
        after: Seq,
        limit: u32,
        nonce: &Nonce,
    ) -> Result<SignedPage, UpstreamError> {
        self.signed(&format!(
            "/v1/events?after={after}&limit={limit}&nonce={nonce}"
        ))
        .await
    }

    async fn register(&self, edge: &EdgeRegistration) -> Result<(), UpstreamError> {
        self.post("/v1/edges", edge, "registering the edge").await
    }

    async fn usage_policy(&self) -> Result<UsagePolicy, UpstreamError> {
        let text = self
            .get("/v1/usage-policy")
            .await?
            .text()
            .await
            .map_err(failed)?;
        UsagePolicy::from_json(&text).map_err(invalid)
    }

    async fn report_alerts(&self, report: &AlertReport) -> Result<(), UpstreamError> {
        self.post("/v1/alerts", report, "reporting usage alerts")
            .await
    }
}

/// The message of a manager's JSON error, shortened and without control characters, fit for a log line.
fn error_message(body: &ErrorResponse) -> String {
    body.error
        .message
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::manager_url;

    #[test]
    fn plain_http_is_for_this_host_only() {
        for ok in [
            "http://127.0.0.1:7600",
            "http://127.9.8.7:1",
            "http://[::1]:7600/",
            "http://localhost:7600",
            "https://manager.example:7600",
            "https://10.1.2.3",
        ] {
            assert!(manager_url(ok, false).is_ok(), "{ok}");
        }
        for refused in [
            "http://10.1.2.3:7600",
            "http://manager.example",
            "http://[::ffff:10.0.0.1]",
            "http://127.0.0.1.nip.io",
        ] {
            let error = manager_url(refused, false).expect_err(refused).to_string();
            assert!(error.contains("--insecure-http"), "{error}");
            let allowed = manager_url(refused, true).expect("allowed when asked");
            assert!(allowed.plain_remote());
        }
        for bad in [
            "ftp://127.0.0.1",
            "127.0.0.1:7600",
            "https://user:pw@manager.example",
            "https://manager.example/?token=x",
            "https://manager.example/#x",
            "",
        ] {
            assert!(manager_url(bad, true).is_err(), "{bad}");
        }
    }
}
