//! An edge in the manager's process reads the manager directly, through the same signed interface a
//! remote edge uses over HTTP.

use std::sync::Arc;

use async_trait::async_trait;
use quench_bus::{EdgeRegistration, EventBatch, SignedSnapshot};
use quench_core::Seq;
use quench_edge::{Upstream, UpstreamError};

use crate::Manager;

pub struct ManagerUpstream(pub Arc<Manager>);

#[async_trait]
impl Upstream for ManagerUpstream {
    async fn snapshot(&self) -> Result<SignedSnapshot, UpstreamError> {
        self.0
            .signed_snapshot()
            .await
            .map_err(|e| UpstreamError(e.to_string()))
    }

    async fn events_after(&self, after: Seq, limit: u32) -> Result<EventBatch, UpstreamError> {
        self.0
            .signed_events_after(after, limit)
            .await
            .map_err(|e| UpstreamError(e.to_string()))
    }

    async fn register(&self, edge: &EdgeRegistration) -> Result<(), UpstreamError> {
        self.0
            .edge_keys
            .register(edge)
            .await
            .map_err(|e| UpstreamError(e.to_string()))
    }
}
