//! An edge in the manager's process reads the manager directly, through the same signed interface a
//! remote edge uses over HTTP.

use std::sync::Arc;

use async_trait::async_trait;
use futures::StreamExt;
use quench_api::alerts::AlertReport;
use quench_bus::{EdgeRegistration, Freshness, SignedPage, SnapshotReader};
use quench_core::{
    Seq,
    record::Snapshot,
    sign::{Nonce, Trust},
    usage::UsagePolicy,
};
use quench_edge::{Upstream, UpstreamError};
use quench_manager::Manager;

pub struct ManagerUpstream(pub Arc<Manager>);

#[async_trait]
impl Upstream for ManagerUpstream {
    async fn snapshot(
        &self,
        trust: &Trust,
        nonce: &Nonce,
    ) -> Result<(Snapshot, Freshness), UpstreamError> {
        let mut reader = SnapshotReader::new();
        let mut chunks = std::pin::pin!(self.0.snapshot_stream(Some(nonce.clone())));
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(UpstreamError::manager)?;
            reader.feed(&chunk).map_err(UpstreamError::manager)?;
        }
        reader.finish(trust, nonce).map_err(UpstreamError::manager)
    }

    async fn events_after(
        &self,
        after: Seq,
        limit: u32,
        nonce: &Nonce,
    ) -> Result<SignedPage, UpstreamError> {
        self.0
            .signed_page(after, limit, Some(nonce))
            .await
            .map_err(UpstreamError::manager)
    }

    async fn register(&self, edge: &EdgeRegistration) -> Result<(), UpstreamError> {
        let registration =
            quench_manager::edges::Registration::parse(edge).map_err(UpstreamError::manager)?;
        self.0
            .edge_keys
            .register(&registration)
            .await
            .map_err(UpstreamError::manager)
    }

    async fn usage_policy(&self) -> Result<UsagePolicy, UpstreamError> {
        Ok(self.0.config.usage_policy.clone())
    }

    async fn report_alerts(&self, report: &AlertReport) -> Result<(), UpstreamError> {
        self.0
            .receive_alerts(report, None)
            .await
            .map(|_| ())
            .map_err(UpstreamError::manager)
    }
}
