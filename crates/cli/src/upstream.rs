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

impl ManagerUpstream {
    /// The embedded edge is refused what a remote one would be (see `quench_manager::rollback`).
    fn refuse_when_log_behind(&self) -> Result<(), UpstreamError> {
        match self.0.log_behind() {
            Some(found) => Err(UpstreamError::manager(found.clone())),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl Upstream for ManagerUpstream {
    async fn snapshot(
        &self,
        trust: &Trust,
        nonce: &Nonce,
    ) -> Result<(Snapshot, Freshness), UpstreamError> {
        self.refuse_when_log_behind()?;
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
        self.refuse_when_log_behind()?;
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
