//! The bus carries events and heartbeats from the manager to every edge, and acknowledgements back.
//!
//! The bus is a fast path, not the source of truth: an edge that misses anything (a lagging subscriber, a
//! reconnect, a gap in sequence numbers) repairs from the manager's event log, and a heartbeat carries the
//! log's head so even a silent loss is noticed within a heartbeat. So a bus only has to be fast and
//! mostly reliable; ordering and completeness are restored at the edge.
//!
//! Backends: [`InProcessBus`] for everything in one process (the embedded default); NATS JetStream for a
//! real deployment. One conformance suite (`tests/conformance`) runs against each.

mod in_process;

use async_trait::async_trait;
use futures::stream::BoxStream;
use quench_core::{Event, Seq, Timestamp};
use serde::{Deserialize, Serialize};

pub use in_process::InProcessBus;

/// The manager is alive, and its log ends at `head`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub manager: String,
    pub head: Seq,
    pub at: Timestamp,
}

/// An edge reports what it has applied; it doubles as the edge's liveness signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub edge: String,
    pub region: String,
    pub applied: Seq,
    pub at: Timestamp,
}

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Event(Event),
    Heartbeat(Heartbeat),
    /// The subscriber fell behind and `n` deliveries were lost: repair from the log.
    Lost(u64),
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    #[error("bus error: {0}")]
    Transport(String),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    async fn publish(&self, event: &Event) -> Result<(), BusError>;

    async fn heartbeat(&self, heartbeat: &Heartbeat) -> Result<(), BusError>;

    /// Events and heartbeats published from now on.
    async fn subscribe(&self) -> Result<BoxStream<'static, Delivery>, BusError>;

    async fn ack(&self, ack: &Ack) -> Result<(), BusError>;

    /// Acknowledgements from every edge, from now on.
    async fn acks(&self) -> Result<BoxStream<'static, Ack>, BusError>;
}
