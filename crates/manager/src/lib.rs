//! Quench's manager: the admin API over the store, who may do what, and tracking how far every change has
//! reached.
//!
//! A mutation runs as: authorise -> one store transaction (change + event + audit) -> publish the event on
//! the bus -> optionally wait until every live edge has acknowledged applying it. The store's log is the
//! truth; the bus only makes it fast, so a failed publish is logged and healed by the edges themselves
//! (every heartbeat carries the log's head).

pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod edges;
pub mod embedded;
pub mod metrics;
pub mod propagation;
pub mod upstream;

use std::sync::Arc;

use futures::StreamExt;
use quench_bus::{Bus, EventBatch, Heartbeat, SignedHeartbeat};
use quench_core::{Event, Timestamp, sign::Trust};
use quench_store::Store;
use tokio_util::sync::CancellationToken;

pub use config::{Issuer, ManagerConfig};
pub use propagation::Propagation;

/// Most events in one signed bus message: keeps a bulk revocation's messages far below NATS's 1 MB
/// default payload limit while signing (and verifying) once per few hundred events.
pub const BATCH_EVENTS: usize = 500;

/// Everything a request handler needs.
pub struct Manager {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub config: ManagerConfig,
    pub propagation: Arc<Propagation>,
    pub metrics: metrics::ManagerMetrics,
    pub auth: auth::Authenticator,
    pub edge_keys: edges::EdgeKeys,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("id", &self.config.id)
            .finish()
    }
}

impl Manager {
    pub fn new(store: Arc<dyn Store>, bus: Arc<dyn Bus>, config: ManagerConfig) -> Arc<Self> {
        let auth = auth::Authenticator::new(store.clone(), config.bootstrap_token.clone());
        Arc::new(Self {
            propagation: Arc::new(Propagation::new(config.edge_liveness)),
            edge_keys: edges::EdgeKeys::new(store.clone()),
            store,
            bus,
            config,
            metrics: metrics::ManagerMetrics::default(),
            auth,
        })
    }

    /// The manager keys edges should trust: the signing key and any others configured for a rotation.
    pub fn trust(&self) -> Trust {
        let mut keys = vec![self.config.signer.public()];
        keys.extend(self.config.also_trusted.iter().cloned());
        Trust::new(keys)
    }

    /// Publishes committed events as one signed batch. A failure is not the caller's: the events are
    /// durable in the log and edges fetch them from there.
    pub async fn publish(&self, events: &[Event]) {
        for chunk in events.chunks(BATCH_EVENTS) {
            let batch = EventBatch::seal_events(&self.config.signer, chunk);
            if let Err(error) = self.bus.publish(&batch).await {
                let last = chunk.last().map(|e| e.seq).unwrap_or_default();
                tracing::warn!(%error, seq = %last, "publishing failed; edges will repair from the log");
            }
        }
    }

    pub async fn signed_snapshot(
        &self,
    ) -> Result<quench_bus::SignedSnapshot, quench_store::StoreError> {
        let snapshot = self.store.snapshot().await?;
        Ok(quench_bus::SignedSnapshot::seal_snapshot(
            &self.config.signer,
            &snapshot,
        ))
    }

    pub async fn signed_events_after(
        &self,
        after: quench_core::Seq,
        limit: u32,
    ) -> Result<EventBatch, quench_store::StoreError> {
        let events = self.store.events_after(after, limit).await?;
        Ok(EventBatch::seal_events(&self.config.signer, &events))
    }

    /// Starts the background work: heartbeats out, acknowledgements in. Both stop on `cancel`.
    pub async fn start(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> Result<(), quench_bus::BusError> {
        let acks = self.bus.acks().await?;
        tokio::spawn(self.clone().track(acks, cancel.clone()));
        tokio::spawn(self.clone().heartbeats(cancel));
        Ok(())
    }

    async fn track(
        self: Arc<Self>,
        mut acks: futures::stream::BoxStream<'static, quench_bus::SignedAck>,
        cancel: CancellationToken,
    ) {
        loop {
            let sealed = tokio::select! {
                () = cancel.cancelled() => return,
                sealed = acks.next() => sealed,
            };
            let Some(sealed) = sealed else {
                tracing::warn!("the acknowledgement stream ended");
                return;
            };
            if let Some(ack) = self.edge_keys.open(&sealed).await {
                self.propagation.record(&ack);
            }
        }
    }

    async fn heartbeats(self: Arc<Self>, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.heartbeat_interval);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let head = match self.store.head().await {
                Ok(head) => head,
                Err(error) => {
                    tracing::warn!(%error, "reading the log head for a heartbeat failed");
                    continue;
                }
            };
            let beat = Heartbeat {
                manager: self.config.id.clone(),
                head,
                at: Timestamp::now(),
            };
            let beat = SignedHeartbeat::seal_heartbeat(&self.config.signer, &beat);
            if let Err(error) = self.bus.heartbeat(&beat).await {
                tracing::warn!(%error, "sending a heartbeat failed");
            }
        }
    }
}
