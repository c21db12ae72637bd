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
pub mod nats;
pub mod snapshot;
mod wire;

use async_trait::async_trait;
use futures::stream::BoxStream;

pub use in_process::InProcessBus;
pub use nats::{NatsAccess, NatsBus, Role, StreamPlacement};
pub use snapshot::{SnapshotReader, SnapshotWriter};
pub use wire::{
    Ack, EdgeRegistration, EventBatch, Freshness, Heartbeat, OpenError, Page, Sealed, SignedAck,
    SignedHeartbeat, SignedPage, Unreadable,
};

/// What a subscriber receives. Nothing here is trusted until opened with the manager's key.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Events(EventBatch),
    Heartbeat(SignedHeartbeat),
    /// The subscriber fell behind and `n` deliveries were lost (0: unknown how many): repair from the log.
    Lost(u64),
    /// A message that could not even be read as signed (no or malformed signature): count and drop it.
    Invalid(Unreadable),
}

/// Why a bus operation failed. Callers match on the variant (the CLI explains refused credentials and failed
/// TLS differently from an unreachable server); the source carries NATS's own error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    #[error("the bus is closed")]
    Closed,
    /// No NATS server answered within the connection attempts (it may never have started).
    #[error("cannot reach NATS at {servers}: {source}")]
    Unreachable {
        servers: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server answered with something the client could not parse: not a NATS server, or a broken one.
    #[error("bus error: {0}")]
    Protocol(#[source] async_nats::ConnectError),
    /// NATS turned the credentials away (none given, wrong ones, or an nkey it does not know).
    #[error("NATS refused the credentials: {0}")]
    Unauthorized(#[source] async_nats::ConnectError),
    /// The TLS handshake failed: an untrusted or mismatched certificate, or TLS on one side only.
    #[error("NATS TLS failed: {0}")]
    Tls(#[source] async_nats::ConnectError),
    /// An edge found no stream for its deployment: only a manager creates it.
    #[error("bus error: the deployment's stream {stream}: {source} (a manager makes it)")]
    StreamMissing {
        stream: String,
        #[source]
        source: async_nats::jetstream::context::GetStreamError,
    },
    /// A NATS operation on a connected client failed.
    #[error("bus error: {operation}: {source}")]
    Nats {
        operation: nats::Operation,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The manager asked for more than one copy of the stream from NATS servers that are not a JetStream
    /// cluster: retrying cannot help.
    #[error(
        "bus error: {replicas} copies of the stream need a NATS JetStream cluster; these servers are not one (use --stream-replicas 1): {source}"
    )]
    NotClustered {
        replicas: usize,
        #[source]
        source: async_nats::jetstream::context::CreateStreamError,
    },
    /// An acknowledgement to send names no edge, so it has no subject to go to.
    #[error("bus error: an acknowledgement without an edge")]
    AckWithoutEdge,
    #[error("bus error: deployment {0:?}: use 1 to 32 of a-z, 0-9, _ and -")]
    InvalidDeployment(String),
    #[error("NATS settings: {0}")]
    Settings(#[from] nats::AccessError),
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// The last batch of events the bus holds, if it keeps any past delivery (a stream does; the
    /// in-process bus does not). A manager reads it at start: a store whose log ends before it was
    /// restored from an older backup.
    async fn last_events(&self) -> Result<Option<EventBatch>, BusError> {
        Ok(None)
    }

    /// Publishes a batch of consecutive events, in sequence order.
    async fn publish(&self, batch: &EventBatch) -> Result<(), BusError>;

    async fn heartbeat(&self, heartbeat: &SignedHeartbeat) -> Result<(), BusError>;

    /// Events and heartbeats published from now on.
    async fn subscribe(&self) -> Result<BoxStream<'static, Delivery>, BusError>;

    async fn ack(&self, ack: &SignedAck) -> Result<(), BusError>;

    /// Acknowledgements from every edge, from now on.
    async fn acks(&self) -> Result<BoxStream<'static, SignedAck>, BusError>;
}
