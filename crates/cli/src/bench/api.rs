//! The manager and edge HTTP calls the propagation benchmark makes.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

pub(super) struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

impl Api {
    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        Ok(self.post_timed(path, body).await?.0)
    }

    /// The body, and when the manager says the change committed (its `Server-Timing` header).
    pub async fn post_timed(
        &self,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(Value, Option<i64>)> {
        self.post_as(&self.token, path, body).await
    }

    pub async fn post_as(
        &self,
        token: &str,
        path: &str,
        body: Value,
    ) -> anyhow::Result<(Value, Option<i64>)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let committed = response
            .headers()
            .get("server-timing")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split("committed;desc=\"").nth(1))
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse::<i64>().ok());
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {body}");
        }
        Ok((body, committed))
    }

    /// A new manager token with `scopes`.
    pub async fn token(&self, scopes: &[&str]) -> anyhow::Result<String> {
        let created = self.post("/v1/tokens", json!({ "scopes": scopes })).await?;
        Ok(created["token"].as_str().context("token")?.to_owned())
    }

    /// Waits (up to a minute) until `count` edges are live.
    pub async fn wait_live(&self, count: usize) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let listed = self.get(&format!("{}/v1/edges", self.base)).await?;
            let live = listed["edges"]
                .as_array()
                .map_or(0, |e| e.iter().filter(|e| e["live"] == true).count());
            if live >= count {
                return Ok(());
            }
            if Instant::now() > end {
                bail!("only {live} of {count} edges came up");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Issues `total` keys one by one (each waiting for every edge): their ids and plaintexts.
    pub async fn issue_keys(&self, total: usize) -> anyhow::Result<Vec<(String, String)>> {
        eprintln!("issuing {total} keys ...");
        let mut keys = Vec::with_capacity(total);
        for _ in 0..total {
            let created = self
                .post("/v1/keys?wait=all", json!({"owner": "bench"}))
                .await?;
            keys.push((
                created["id"].as_str().context("id")?.to_owned(),
                created["key"].as_str().context("key")?.to_owned(),
            ));
        }
        Ok(keys)
    }

    /// Revokes key `id`, waiting for every edge.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<(Value, Option<i64>)> {
        self.post_timed(
            &format!("/v1/keys/{id}/revoke?wait=all&timeout_ms=10000"),
            json!({"reason": "bench"}),
        )
        .await
    }

    /// Reports `key` as leaked with the `reporter` token, waiting for every edge.
    pub async fn report_leak(
        &self,
        reporter: &str,
        key: &str,
    ) -> anyhow::Result<(Value, Option<i64>)> {
        let report = json!({"keys": [{"key": key, "source": "quench bench"}]});
        let (body, _) = self
            .post_as(reporter, "/v1/leaks?wait=all&timeout_ms=10000", report)
            .await?;
        if body["results"][0]["outcome"] != "revoked" {
            bail!("the leak report did not revoke the key: {body}");
        }
        Ok((body, None))
    }

    /// When each edge applied `seq` (µs, its `applied_at_us`); an error if one has moved past it.
    pub async fn applied_at(&self, edges: &[String], seq: u64) -> anyhow::Result<Vec<i64>> {
        let mut applied = Vec::with_capacity(edges.len());
        for (i, edge) in edges.iter().enumerate() {
            let health = self.get(&format!("{edge}/healthz")).await?;
            if health["applied_seq"].as_u64() != Some(seq) {
                bail!("edge {i} moved past the revocation before it was read: {health}");
            }
            applied.push(health["applied_at_us"].as_i64().unwrap_or(0));
        }
        Ok(applied)
    }

    /// Waits until `edge` has applied `seq`, for at most `patience`.
    pub async fn wait_applied(
        &self,
        edge: &str,
        seq: u64,
        patience: Duration,
    ) -> anyhow::Result<()> {
        let end = Instant::now() + patience;
        while self.get(&format!("{edge}/healthz")).await?["applied_seq"].as_u64() < Some(seq) {
            if Instant::now() > end {
                bail!("not applied after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    pub async fn get(&self, url: &str) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(url)
            .bearer_auth(&self.token)
            .send()
            .await?
            .json()
            .await?)
    }
}
