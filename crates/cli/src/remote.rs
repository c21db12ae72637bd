//! A remote edge reads the manager over HTTP: its signed snapshot and log pages, its signing keys, and
//! where to register the edge's own key. The edge authenticates with an `edge`-scope token.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

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

/// Parses `--manager`: one URL or several, comma-separated (the managers of one deployment, tried in
/// turn). Each is checked as [`manager_url`] checks one.
pub fn manager_urls(text: &str, insecure_http: bool) -> anyhow::Result<Vec<ManagerUrl>> {
    let urls = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| manager_url(part, insecure_http))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if urls.is_empty() {
        anyhow::bail!("--manager: no URL given; expected https://host:port");
    }
    Ok(urls)
}

/// Parses one `--manager` URL. Refuses other schemes, credentials, queries and fragments in the URL, and plain
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

/// The managers an edge reads, over HTTP. With several, a request goes to the one that last answered and
/// moves on to the next when that one cannot be reached or answers 502, 503 or 504 (it is restarting, or
/// its database is down); every answer is still checked against the deployment's signing keys, so which
/// manager answers does not matter to what the edge believes.
pub struct HttpUpstream {
    bases: Vec<String>,
    /// Index into `bases` of the manager that answered last.
    current: AtomicUsize,
    token: String,
    http: reqwest::Client,
    /// Where the edge keeps a copy of the last snapshot it read, to start from on its next start.
    snapshot_file: Option<PathBuf>,
}

fn failed(error: reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(error.into())
}

fn invalid(error: impl std::error::Error + Send + Sync + 'static) -> UpstreamError {
    UpstreamError::Invalid(error.into())
}

/// Whether another manager may answer what this one did not: it was never reached, or said it cannot
/// serve now. A request that reached a manager and timed out is tried elsewhere only when repeating it
/// is harmless (`repeatable`).
fn try_another(outcome: &Result<reqwest::Response, reqwest::Error>, repeatable: bool) -> bool {
    match outcome {
        Ok(response) => matches!(response.status().as_u16(), 502..=504),
        Err(error) => error.is_connect() || (repeatable && error.is_timeout()),
    }
}

impl HttpUpstream {
    pub fn new(managers: &[ManagerUrl], token: String) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("quench-edge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(120))
            .build()
            .context("building the HTTP client")?;
        anyhow::ensure!(!managers.is_empty(), "--manager: no URL given");
        Ok(Self {
            bases: managers
                .iter()
                .map(|m| m.as_str().trim_end_matches('/').to_owned())
                .collect(),
            current: AtomicUsize::new(0),
            token,
            http,
            snapshot_file: None,
        })
    }

    /// Keeps a copy of each snapshot read at `path` (see [`crate::stored_snapshot`]).
    pub fn with_snapshot_file(mut self, path: PathBuf) -> Self {
        self.snapshot_file = Some(path);
        self
    }

    /// Sends the request `build` makes for a manager's base URL, to each manager in turn from the one
    /// that answered last, until one answers (see [`try_another`]).
    async fn send(
        &self,
        build: impl Fn(&str) -> reqwest::RequestBuilder,
        repeatable: bool,
    ) -> Result<reqwest::Response, UpstreamError> {
        let first = self.current.load(Ordering::Relaxed);
        let count = self.bases.len();
        let mut tried = 0;
        loop {
            let at = (first + tried) % count;
            let outcome = build(&self.bases[at]).bearer_auth(&self.token).send().await;
            tried += 1;
            if tried < count && try_another(&outcome, repeatable) {
                tracing::warn!(
                    manager = %self.bases[at],
                    next = %self.bases[(at + 1) % count],
                    "the manager did not answer; trying the next"
                );
                continue;
            }
            let response = outcome.map_err(failed)?;
            self.current.store(at, Ordering::Relaxed);
            return Ok(response);
        }
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response, UpstreamError> {
        let response = self
            .send(|base| self.http.get(format!("{base}{path}")), true)
            .await?;
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
            .send(
                |base| self.http.post(format!("{base}{path}")).json(body),
                false,
            )
            .await?;
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
        let mut copy = match &self.snapshot_file {
            Some(path) => crate::stored_snapshot::Copy::create(path).await,
            None => None,
        };
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(failed)?;
            reader.feed(&chunk).map_err(invalid)?;
            if let Some(writing) = &mut copy
                && !writing.write(&chunk).await
            {
                copy = None;
            }
        }
        let answer = reader.finish(trust, nonce).map_err(invalid)?;
        if let Some(writing) = copy {
            writing.keep().await;
        }
        Ok(answer)
    }

    async fn stored_snapshot(&self, trust: &Trust) -> Option<Snapshot> {
        crate::stored_snapshot::load(self.snapshot_file.as_deref()?, trust).await
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
    use super::{manager_url, manager_urls};

    #[test]
    fn several_managers_are_each_checked() {
        let two =
            manager_urls("https://m1.example:7600, https://m2.example:7600", false).expect("two");
        assert_eq!(two.len(), 2);
        assert_eq!(two[1].as_str(), "https://m2.example:7600/");
        for bad in [
            "",
            " , ",
            "https://m1.example,ftp://m2.example",
            "https://m1.example,http://m2.example",
        ] {
            assert!(manager_urls(bad, false).is_err(), "{bad:?}");
        }
    }

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
