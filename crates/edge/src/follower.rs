//! Keeping the replica fresh: bootstrap, follow, repair, acknowledge.
//!
//! The follower subscribes to the bus *before* taking the snapshot, so nothing published in between is
//! missed; anything that arrives twice is a duplicate by sequence number and ignored. Events are applied
//! strictly in order. When a sequence number is skipped, the bus reports lost deliveries, or a heartbeat
//! shows the manager's log is ahead, the follower fetches what it lacks from the manager's log
//! ([`Upstream::events_after`]) before applying anything newer.
//!
//! Freshness is earned, not assumed: the replica counts as having heard the manager only when it knows it
//! is caught up as of that moment (a heartbeat whose head it has reached, or a read of the log that came
//! back empty). A bus that delivers heartbeats while events go missing therefore cannot keep a lagging
//! edge looking fresh.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use quench_bus::{Ack, Bus, BusError, Delivery, Heartbeat};
use quench_core::{
    Event, Seq, Timestamp,
    keyset::{Applied, ApplyError},
    record::Snapshot,
};
use tokio_util::sync::CancellationToken;

use crate::Replica;

/// How an edge reads the manager's state directly: a snapshot to start from, and the log to repair gaps.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    async fn snapshot(&self) -> Result<Snapshot, UpstreamError>;
    async fn events_after(&self, after: Seq, limit: u32) -> Result<Vec<Event>, UpstreamError>;
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("manager: {0}")]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the manager's log has a hole: expected {expected}, got {got}")]
    BrokenLog { expected: Seq, got: Seq },
}

const PAGE: u32 = 1_000;
const ACK_INTERVAL: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `cancel` fires, reconnecting with backoff after any failure.
pub async fn follow(
    replica: Arc<Replica>,
    bus: Arc<dyn Bus>,
    upstream: Arc<dyn Upstream>,
    cancel: CancellationToken,
) {
    let mut backoff = Duration::from_millis(50);
    let follower = Follower {
        replica,
        bus,
        upstream,
    };
    while !cancel.is_cancelled() {
        match follower.run(&cancel).await {
            Ok(()) => return,
            Err(error) => {
                follower
                    .replica
                    .metrics()
                    .upstream_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(%error, retry_in = ?backoff, "edge lost the manager; retrying");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

struct Follower {
    replica: Arc<Replica>,
    bus: Arc<dyn Bus>,
    upstream: Arc<dyn Upstream>,
}

impl Follower {
    async fn run(&self, cancel: &CancellationToken) -> Result<(), FollowError> {
        let mut deliveries = self.bus.subscribe().await?;
        if !self.replica.is_ready() {
            self.bootstrap().await?;
        }
        self.catch_up().await?;
        self.replica.mark_ready();
        self.ack().await?;
        let mut tick = tokio::time::interval(ACK_INTERVAL);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                _ = tick.tick() => self.ack().await?,
                delivery = deliveries.next() => {
                    let Some(delivery) = delivery else {
                        return Err(BusError::Closed.into());
                    };
                    self.handle(delivery).await?;
                    // Apply whatever else is already waiting, then acknowledge once.
                    for _ in 0..1024 {
                        match deliveries.next().now_or_never() {
                            Some(Some(more)) => self.handle(more).await?,
                            Some(None) => return Err(BusError::Closed.into()),
                            None => break,
                        }
                    }
                    self.ack().await?;
                }
            }
        }
    }

    async fn bootstrap(&self) -> Result<(), FollowError> {
        let snapshot = self.upstream.snapshot().await?;
        let seq = snapshot.seq;
        let count = snapshot.keys.len();
        self.replica.keys().install_snapshot(seq, snapshot.keys);
        self.replica
            .metrics()
            .bootstraps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%seq, keys = count, edge = %self.replica.config().id, "edge bootstrapped from a snapshot");
        Ok(())
    }

    /// Applies the manager's log from what is applied to its end.
    async fn catch_up(&self) -> Result<(), FollowError> {
        let mut repaired = false;
        loop {
            let asked_at = Timestamp::now();
            let events = self
                .upstream
                .events_after(self.replica.applied(), PAGE)
                .await?;
            if events.is_empty() {
                self.replica.heard_manager(asked_at);
                if repaired {
                    self.replica
                        .metrics()
                        .gaps_repaired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(());
            }
            for event in &events {
                if let Err(ApplyError::Gap { expected, got }) = self.apply(event) {
                    return Err(FollowError::BrokenLog { expected, got });
                }
            }
            repaired = true;
        }
    }

    fn apply(&self, event: &Event) -> Result<(), ApplyError> {
        let metrics = self.replica.metrics();
        let counter = match self.replica.keys().apply(event)? {
            Applied::Changed => &metrics.events_applied,
            Applied::Duplicate => &metrics.events_duplicate,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn handle(&self, delivery: Delivery) -> Result<(), FollowError> {
        match delivery {
            Delivery::Event(event) => {
                if self.apply(&event).is_err() {
                    self.catch_up().await?;
                    // The log now covers it; applying again is a duplicate or fills the last step.
                    let _ = self.apply(&event);
                }
            }
            Delivery::Heartbeat(Heartbeat { head, .. }) => {
                let heard_at = Timestamp::now();
                if self.replica.applied() < head {
                    self.catch_up().await?;
                }
                if self.replica.applied() >= head {
                    self.replica.heard_manager(heard_at);
                }
            }
            Delivery::Lost(count) => {
                tracing::warn!(count, "edge missed deliveries; repairing from the log");
                self.catch_up().await?;
            }
        }
        Ok(())
    }

    async fn ack(&self) -> Result<(), FollowError> {
        let config = self.replica.config();
        let ack = Ack {
            edge: config.id.clone(),
            region: config.region.clone(),
            applied: self.replica.applied(),
            at: Timestamp::now(),
        };
        self.bus.ack(&ack).await?;
        Ok(())
    }
}
