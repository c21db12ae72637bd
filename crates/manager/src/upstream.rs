//! An edge in the manager's process reads the store directly.

use std::sync::Arc;

use async_trait::async_trait;
use quench_core::{Event, Seq, record::Snapshot};
use quench_edge::{Upstream, UpstreamError};
use quench_store::Store;

pub struct StoreUpstream(pub Arc<dyn Store>);

#[async_trait]
impl Upstream for StoreUpstream {
    async fn snapshot(&self) -> Result<Snapshot, UpstreamError> {
        self.0
            .snapshot()
            .await
            .map_err(|e| UpstreamError(e.to_string()))
    }

    async fn events_after(&self, after: Seq, limit: u32) -> Result<Vec<Event>, UpstreamError> {
        self.0
            .events_after(after, limit)
            .await
            .map_err(|e| UpstreamError(e.to_string()))
    }
}
