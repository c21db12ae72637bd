//! Quench's manager: the admin API over the store, who may do what, and tracking how far every change has
//! reached.
//!
//! A mutation runs as: authorise -> one store transaction (change + event + audit) -> publish the event on
//! the bus -> optionally wait until every live edge has acknowledged applying it. The store's log is the
//! truth; the bus only makes it fast, so a failed publish is logged and healed by the edges themselves
//! (every heartbeat carries the log's head).

pub mod alerts;
pub mod api;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod edges;
pub mod github;
pub mod metrics;
pub mod propagation;
pub mod rollback;
pub mod webhooks;

use std::sync::{Arc, OnceLock, atomic::AtomicU64};

use futures::StreamExt;
use quench_bus::{Bus, EventBatch, Freshness, Heartbeat, SignedHeartbeat, SignedPage};
use quench_core::{
    Event, Timestamp,
    sign::{Nonce, Trust},
};
use quench_store::Store;
use tokio_util::sync::CancellationToken;

pub use config::{Fault, Issuer, IssuerError, ManagerConfig};
pub use propagation::Propagation;

/// Most events in one signed bus message: keeps a bulk revocation's messages far below NATS's 1 MB
/// default payload limit while signing (and verifying) once per few hundred events.
pub const BATCH_EVENTS: usize = 500;

/// Keys per chunk of a streamed snapshot.
pub const SNAPSHOT_PAGE: u32 = 2_000;

/// How old an unpublished event must be before the outbox publishes it: long enough for the manager that
/// committed it to have published it itself.
pub const OUTBOX_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything a request handler needs.
pub struct Manager {
    pub store: Arc<dyn Store>,
    pub bus: Arc<dyn Bus>,
    pub config: ManagerConfig,
    pub propagation: Arc<Propagation>,
    pub metrics: metrics::ManagerMetrics,
    pub auth: auth::Authenticator,
    pub edge_keys: edges::EdgeKeys,
    pub notifications: webhooks::Notifications,
    pub alert_metrics: alerts::AlertMetrics,
    /// Set when the store's log turned out shorter than what the bus or an edge has seen ([`rollback`]).
    log_behind: OnceLock<rollback::LogBehind>,
    /// The highest log head read so far, so acknowledgements at or below it need no store read.
    known_head: AtomicU64,
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
            notifications: webhooks::Notifications::new(&config.webhooks),
            alert_metrics: alerts::AlertMetrics::default(),
            store,
            bus,
            config,
            metrics: metrics::ManagerMetrics::default(),
            auth,
            log_behind: OnceLock::new(),
            known_head: AtomicU64::new(0),
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
        if self.config.fault == Some(config::Fault::CrashBeforePublish) {
            tracing::error!("fault injection: crashing between commit and publish");
            std::process::abort();
        }
        for chunk in events.chunks(BATCH_EVENTS) {
            let (Some(first), Some(last)) = (chunk.first(), chunk.last()) else {
                continue;
            };
            // Committed, so the store holds it: acknowledgements up to here need no read of the head.
            self.note_head(last.seq);
            let batch = EventBatch::seal_events(&self.config.signer, chunk);
            match self.bus.publish(&batch).await {
                Ok(()) => {
                    // Off the request's path: the mark only spares the outbox sweep some work.
                    let store = self.store.clone();
                    let (first, last) = (first.seq, last.seq);
                    tokio::spawn(async move {
                        if let Err(error) = store.mark_published(first, last).await {
                            tracing::debug!(%error, "recording a publish failed; the outbox will publish again");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, seq = %last.seq, "publishing failed; the outbox publishes it again");
                }
            }
        }
    }

    /// The transactional outbox: publishes every event committed at least `OUTBOX_GRACE` ago that is not
    /// known to be published (a manager crashed between commit and publish, or the bus was down), then
    /// advances the mark. Any manager does it for all: publishing twice is harmless.
    pub async fn sweep_outbox(&self) -> Result<u64, quench_store::StoreError> {
        let mut published = 0;
        loop {
            let through = self.store.published_through().await?;
            let cutoff = Timestamp::now().as_millis() - OUTBOX_GRACE.as_millis() as i64;
            let events: Vec<Event> = self
                .store
                .events_after(through, BATCH_EVENTS as u32)
                .await?
                .into_iter()
                .take_while(|e| e.at.as_millis() <= cutoff)
                .collect();
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                return Ok(published);
            };
            let batch = EventBatch::seal_events(&self.config.signer, &events);
            if let Err(error) = self.bus.publish(&batch).await {
                tracing::warn!(%error, "the outbox could not publish; it will try again");
                return Ok(published);
            }
            self.store.mark_published(first.seq, last.seq).await?;
            published += events.len() as u64;
            tracing::info!(first = %first.seq, last = %last.seq, "the outbox published events");
        }
    }

    /// What the manager can prove right now: its time, then the log's head (read after the time is
    /// stamped, so every change committed before `at` is at or below `head`).
    pub async fn freshness(&self) -> Result<Freshness, quench_store::StoreError> {
        let at = Timestamp::now();
        let head = self.store.head().await?;
        Ok(Freshness { head, at })
    }

    /// The snapshot in its streamed, signed form, a page of keys per chunk (see `quench_bus::snapshot`),
    /// bound to the requester's `nonce`.
    pub fn snapshot_stream(
        self: &Arc<Self>,
        nonce: Option<Nonce>,
    ) -> impl futures::Stream<Item = Result<Vec<u8>, quench_store::StoreError>> + Send + 'static
    {
        let start = SnapshotPaging {
            manager: self.clone(),
            nonce,
            writer: None,
            through: quench_core::Seq::ZERO,
            after: 0,
            done: false,
        };
        futures::stream::unfold(start, |mut paging| async move {
            let chunk = paging.next_chunk().await?;
            Some((chunk, paging))
        })
    }

    /// A signed page of the log after `after`, with the manager's time and head, bound to the
    /// requester's `nonce`.
    pub async fn signed_page(
        &self,
        after: quench_core::Seq,
        limit: u32,
        nonce: Option<&Nonce>,
    ) -> Result<SignedPage, quench_store::StoreError> {
        let fresh = self.freshness().await?;
        let events = self.store.events_after(after, limit).await?;
        Ok(SignedPage::seal_page(
            &self.config.signer,
            &events,
            fresh,
            nonce,
        ))
    }

    /// Starts the background work: heartbeats out, acknowledgements in, webhooks out. All stop on
    /// `cancel`.
    /// Refuses to start on a store whose log is behind the bus's ([`rollback`]).
    pub async fn start(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> Result<(), rollback::StartError> {
        self.check_log_against_bus().await?;
        let acks = self.bus.acks().await?;
        tokio::spawn(self.clone().track(acks, cancel.clone()));
        tokio::spawn(webhooks::run(self.clone(), cancel.clone()));
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
            let Some(ack) = self.edge_keys.open(&sealed).await else {
                metrics::ManagerMetrics::add(&self.metrics.acks_refused, 1);
                continue;
            };
            self.check_log_against_ack(ack.edge.as_str(), ack.applied)
                .await;
            if let Err(why) = self.propagation.record(&ack, Timestamp::now()) {
                metrics::ManagerMetrics::add(&self.metrics.acks_refused, 1);
                tracing::warn!(edge = %ack.edge, at = %ack.at, %why, "ignored an acknowledgement");
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
            // A heartbeat vouches for the log's head: none from a store that is behind.
            if self.log_behind().is_some() {
                continue;
            }
            let beat = match stamped_heartbeat(&self.config.id, self.store.head()).await {
                Ok(beat) => beat,
                Err(error) => {
                    tracing::warn!(%error, "reading the log head for a heartbeat failed");
                    continue;
                }
            };
            self.note_head(beat.head);
            let beat = SignedHeartbeat::seal_heartbeat(&self.config.signer, &beat);
            if let Err(error) = self.bus.heartbeat(&beat).await {
                tracing::warn!(%error, "sending a heartbeat failed");
            }
            if let Err(error) = self.sweep_outbox().await {
                tracing::warn!(%error, "the outbox sweep failed");
            }
        }
    }
}

/// A heartbeat for the head `read` yields, stamped *before* the read starts. The head read afterwards holds
/// every change committed by the stamp, so the heartbeat never vouches for a moment later than the read
/// it rests on. Stamped after the read, an answer from the store that the network held back (a manager
/// cut off from its database, its query already answered) would lend an old head a new time, and keep an
/// edge that lacks a newer revocation fresh past `max_staleness` after it (found by reading the fault
/// campaign's checker against the manager, docs/chaos.md).
async fn stamped_heartbeat<E>(
    manager: &str,
    read: impl std::future::Future<Output = Result<quench_core::Seq, E>>,
) -> Result<Heartbeat, E> {
    let at = Timestamp::now();
    let head = read.await?;
    Ok(Heartbeat {
        manager: manager.to_owned(),
        head,
        at,
    })
}

/// Where a streamed snapshot is: the header first (which fixes the log head it is taken at), then a
/// page of keys per chunk, then the signed end.
struct SnapshotPaging {
    manager: Arc<Manager>,
    nonce: Option<Nonce>,
    /// `None` until the header is written.
    writer: Option<quench_bus::SnapshotWriter>,
    through: quench_core::Seq,
    /// The last key row sent.
    after: u64,
    done: bool,
}

impl SnapshotPaging {
    /// The next chunk, or `None` after the end (or after an error, which ends the stream).
    async fn next_chunk(&mut self) -> Option<Result<Vec<u8>, quench_store::StoreError>> {
        if self.done {
            return None;
        }
        let chunk = if self.writer.is_none() {
            self.header().await
        } else {
            self.keys().await
        };
        if chunk.is_err() {
            self.done = true;
        }
        Some(chunk)
    }

    async fn header(&mut self) -> Result<Vec<u8>, quench_store::StoreError> {
        let fresh = self.manager.freshness().await?;
        let (writer, header) = quench_bus::SnapshotWriter::start(
            self.manager.config.signer.clone(),
            fresh,
            self.nonce.take(),
        );
        self.writer = Some(writer);
        self.through = fresh.head;
        Ok(header)
    }

    async fn keys(&mut self) -> Result<Vec<u8>, quench_store::StoreError> {
        let page = self
            .manager
            .store
            .snapshot_page(self.through, self.after, SNAPSHOT_PAGE)
            .await?;
        let Some((last, _)) = page.last() else {
            self.done = true;
            let end = self.writer.take().map(quench_bus::SnapshotWriter::finish);
            return Ok(end.unwrap_or_default());
        };
        self.after = *last;
        let keys: Vec<quench_core::EdgeKey> = page.into_iter().map(|(_, key)| key).collect();
        Ok(self
            .writer
            .as_mut()
            .map(|writer| writer.keys(&keys))
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quench_core::{Seq, Timestamp};

    use super::stamped_heartbeat;

    /// A head whose answer arrives late (held back on the way from the store) is stamped with the time
    /// the read began, not the time the answer arrived.
    #[tokio::test]
    async fn a_heartbeat_is_stamped_before_its_head_is_read() {
        let before = Timestamp::now();
        let late_answer = async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, std::convert::Infallible>(Seq::new(5))
        };
        let Ok(beat) = stamped_heartbeat("m", late_answer).await;
        let after = Timestamp::now();
        assert_eq!(beat.head, Seq::new(5));
        assert!(beat.at >= before, "{beat:?}");
        assert!(
            after.millis_since(beat.at) >= 300,
            "stamped {} ms before the answer arrived, not before the read began",
            after.millis_since(beat.at)
        );
    }
}
