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
pub mod embedded;
pub mod metrics;
pub mod propagation;
pub mod upstream;

use std::sync::Arc;

use quench_bus::{Bus, Heartbeat};
use quench_core::{Event, Timestamp};
use quench_store::Store;
use tokio_util::sync::CancellationToken;

pub use config::{Issuer, ManagerConfig};
pub use propagation::Propagation;

/// Everything a request handler needs.
pub struct Manager {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub config: ManagerConfig,
    pub propagation: Arc<Propagation>,
    pub metrics: metrics::ManagerMetrics,
    pub auth: auth::Authenticator,
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
            store,
            bus,
            config,
            metrics: metrics::ManagerMetrics::default(),
            auth,
        })
    }

    /// Publishes committed events. A failure is not the caller's: the event is durable in the log and
    /// edges fetch it from there.
    pub async fn publish(&self, events: &[Event]) {
        for event in events {
            if let Err(error) = self.bus.publish(event).await {
                tracing::warn!(%error, seq = %event.seq, "publishing failed; edges will repair from the log");
            }
        }
    }

    /// Starts the background work: heartbeats out, acknowledgements in. Both stop on `cancel`.
    pub async fn start(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> Result<(), quench_bus::BusError> {
        let acks = self.bus.acks().await?;
        tokio::spawn(self.propagation.clone().track(acks, cancel.clone()));
        tokio::spawn(self.clone().heartbeats(cancel));
        Ok(())
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
            if let Err(error) = self.bus.heartbeat(&beat).await {
                tracing::warn!(%error, "sending a heartbeat failed");
            }
        }
    }
}
