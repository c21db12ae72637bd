//! The manager and edge HTTP calls the propagation and soak benchmarks make, with the API's own request and
//! response types.

use std::time::{Duration, Instant};

use anyhow::bail;
use quench_api::{
    edge::Health,
    keys::{
        BulkRevocation, BulkRevokeRequest, Confirmation, CreateKeyRequest, CreatedKey, Revocation,
        RevokeRequest,
    },
    leaks::{LeakOutcome, LeakReport, LeakResults, LeakedKey},
    system::EdgeList,
    tokens::{CreateTokenRequest, CreatedToken},
};
use serde::{Serialize, de::DeserializeOwned};

#[derive(Clone)]
pub(super) struct Api {
    pub http: reqwest::Client,
    pub base: String,
    pub token: String,
}

/// A revocation as the benchmark times it: the manager's confirmation, and when the manager says the
/// change committed (µs, its `Server-Timing` header).
pub(super) struct Timed<T> {
    pub body: T,
    pub committed_us: Option<i64>,
}

impl Api {
    async fn post<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        body: &Req,
    ) -> anyhow::Result<Resp> {
        Ok(self.post_as(&self.token, path, body).await?.body)
    }

    async fn post_as<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
        body: &Req,
    ) -> anyhow::Result<Timed<Resp>> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let committed_us = committed_at(response.headers());
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {text}");
        }
        let body = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!("{path}: an answer the benchmark cannot read ({e}): {text}")
        })?;
        Ok(Timed { body, committed_us })
    }

    /// A new manager token with `scopes`.
    pub async fn token(&self, scopes: &[&str]) -> anyhow::Result<String> {
        let request = CreateTokenRequest {
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            owner: None,
        };
        let created: CreatedToken = self.post("/v1/tokens", &request).await?;
        Ok(created.token)
    }

    /// Waits (up to a minute) until `count` edges are live.
    pub async fn wait_live(&self, count: usize) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(60);
        loop {
            let listed: EdgeList = self.get(&format!("{}/v1/edges", self.base)).await?;
            let live = listed.edges.iter().filter(|e| e.live).count();
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
            keys.push(self.create_key("bench").await?);
        }
        Ok(keys)
    }

    /// Issues one key of `owner`, waiting for every edge: its id and plaintext.
    pub async fn create_key(&self, owner: &str) -> anyhow::Result<(String, String)> {
        let request = CreateKeyRequest {
            owner: Some(owner.into()),
            ..CreateKeyRequest::default()
        };
        let created: CreatedKey = self.post("/v1/keys?wait=all", &request).await?;
        Ok((created.view.id, created.key))
    }

    /// Revokes key `id`, waiting for every edge: how every edge confirmed it.
    pub async fn revoke(&self, id: &str) -> anyhow::Result<Timed<Option<Confirmation>>> {
        let request = RevokeRequest {
            reason: "bench".into(),
        };
        let path = format!("/v1/keys/{id}/revoke?wait=all&timeout_ms=10000");
        let timed: Timed<Revocation> = self.post_as(&self.token, &path, &request).await?;
        Ok(Timed {
            body: timed.body.propagation,
            committed_us: timed.committed_us,
        })
    }

    /// Reports `key` as leaked with the `reporter` token, waiting for every edge.
    pub async fn report_leak(
        &self,
        reporter: &str,
        key: &str,
    ) -> anyhow::Result<Timed<Option<Confirmation>>> {
        let report = LeakReport {
            keys: vec![LeakedKey {
                key: key.to_owned(),
                source: Some("quench bench".into()),
                url: None,
            }],
        };
        let path = "/v1/leaks?wait=all&timeout_ms=10000";
        let timed: Timed<LeakResults> = self.post_as(reporter, path, &report).await?;
        let outcome = timed.body.results.first().map(|r| r.outcome);
        if outcome != Some(LeakOutcome::Revoked) {
            bail!("the leak report did not revoke the key: {outcome:?}");
        }
        Ok(Timed {
            body: timed.body.propagation,
            committed_us: None,
        })
    }

    /// Revokes every key of `owner` in one call, waiting (up to a minute) for every edge.
    pub async fn revoke_owner(&self, owner: &str) -> anyhow::Result<Timed<BulkRevocation>> {
        let request = BulkRevokeRequest {
            owner: Some(owner.to_owned()),
            api: None,
            ids: None,
            reason: "bench bulk".into(),
        };
        let path = "/v1/revocations?wait=all&timeout_ms=60000";
        self.post_as(&self.token, path, &request).await
    }

    /// When each edge applied `seq` (µs, its `applied_at_us`); an error if one has moved past it.
    pub async fn applied_at(&self, edges: &[String], seq: u64) -> anyhow::Result<Vec<i64>> {
        let mut applied = Vec::with_capacity(edges.len());
        for (i, edge) in edges.iter().enumerate() {
            let health = self.health(edge).await?;
            if health.applied_seq != seq {
                bail!(
                    "edge {i} moved past the revocation before it was read: applied {}, wanted {seq}",
                    health.applied_seq
                );
            }
            applied.push(health.applied_at_us);
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
        while self.health(edge).await?.applied_seq < seq {
            if Instant::now() > end {
                bail!("not applied after {patience:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// An edge's `/healthz` (the same body when it answers 503 for staleness).
    pub async fn health(&self, edge: &str) -> anyhow::Result<Health> {
        self.get(&format!("{edge}/healthz")).await
    }

    async fn get<T: DeserializeOwned>(&self, url: &str) -> anyhow::Result<T> {
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

/// When the manager committed the change, from `Server-Timing: committed;desc="<µs>"`.
fn committed_at(headers: &reqwest::header::HeaderMap) -> Option<i64> {
    headers
        .get("server-timing")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split("committed;desc=\"").nth(1))
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse::<i64>().ok())
}
