//! A remote edge reads the manager over HTTP: its signed snapshot and log pages, its signing keys, and
//! where to register the edge's own key. The edge authenticates with an `edge`-scope token.

use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use futures::StreamExt;
use quench_bus::{EdgeRegistration, EventBatch, Sealed, SnapshotReader};
use quench_core::{
    Seq,
    record::Snapshot,
    sign::{PublicKey, Signature, Trust},
    usage::UsagePolicy,
};
use quench_edge::{Upstream, UpstreamError, usage::AlertReport};

pub struct HttpUpstream {
    base: String,
    token: String,
    http: reqwest::Client,
}

fn failed(error: impl std::fmt::Display) -> UpstreamError {
    UpstreamError(error.to_string())
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
            return Err(UpstreamError(format!(
                "GET {path}: HTTP {}",
                response.status().as_u16()
            )));
        }
        Ok(response)
    }

    async fn signed<const P: u8>(&self, path: &str) -> Result<Sealed<P>, UpstreamError> {
        let response = self.get(path).await?;
        let signature = response
            .headers()
            .get("quench-signature")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| UpstreamError(format!("GET {path}: no signature")))?;
        let signature = Signature::decode(signature).map_err(failed)?;
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
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        Err(UpstreamError(format!(
            "{what}: HTTP {status}{}",
            error_message(&body)
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )))
    }

    /// The manager keys to trust, as the manager lists them. Fetch them over TLS, or pin them with
    /// `--trust-key`: whoever answers this call decides what the edge believes.
    pub async fn trust(&self) -> anyhow::Result<Trust> {
        let body: serde_json::Value = self
            .get("/v1/signing-keys")
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .json()
            .await
            .context("reading the manager's signing keys")?;
        let keys = body["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| k["public_key"].as_str())
            .map(PublicKey::parse)
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
    async fn snapshot(&self, trust: &Trust) -> Result<Snapshot, UpstreamError> {
        let mut body = self.get("/v1/snapshot").await?.bytes_stream();
        let mut reader = SnapshotReader::new();
        while let Some(chunk) = body.next().await {
            reader.feed(&chunk.map_err(failed)?).map_err(failed)?;
        }
        reader.finish(trust).map_err(failed)
    }

    async fn events_after(&self, after: Seq, limit: u32) -> Result<EventBatch, UpstreamError> {
        self.signed(&format!("/v1/events?after={after}&limit={limit}"))
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
        UsagePolicy::from_json(&text).map_err(failed)
    }

    async fn report_alerts(&self, report: &AlertReport) -> Result<(), UpstreamError> {
        self.post("/v1/alerts", report, "reporting usage alerts")
            .await
    }
}

/// The message of a manager's JSON error, shortened and without control characters, fit for a log line.
fn error_message(body: &serde_json::Value) -> Option<String> {
    let message = body["error"]["message"].as_str()?;
    Some(
        message
            .chars()
            .filter(|c| !c.is_control())
            .take(300)
            .collect(),
    )
}
