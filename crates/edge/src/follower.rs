//! Keeping the replica fresh: bootstrap, follow, repair, acknowledge.
//!
//! The follower subscribes to the bus *before* taking the snapshot, so nothing published in between is
//! missed; anything that arrives twice is a duplicate by sequence number and ignored. Events are applied
//! strictly in order. When a sequence number is skipped or the bus reports lost deliveries, the follower
//! fetches what it lacks from the manager's log ([`Upstream::events_after`]) before applying anything
//! newer; when a heartbeat shows the manager's log ahead, it first gives the bus a moment
//! ([`BUS_GRACE`]) to deliver the events the heartbeat overtook, and asks the log only if they do not come.
//!
//! Freshness is earned, not assumed, and only from proof that is new. The replica counts as current at a
//! moment only when a signed answer shows the manager's log head as of that moment and the replica has
//! applied up to it: a heartbeat (current as of the time the manager signed into it, never later), or a
//! page of the log or a snapshot read with a nonce this edge chose for that very request (current as of
//! the earlier of the edge's clock when it asked and the manager's signed time). A recorded answer
//! replayed by someone on the path carries another nonce, or an old signed time, and buys nothing; a
//! delayed one counts from when it was asked for, so delay only ages it. A bus that delivers heartbeats
//! while events go missing cannot keep a lagging edge looking fresh either: its head is ahead of the
//! replica. When no heartbeat has refreshed the replica for half of `max_staleness`, the follower asks
//! the manager's log itself, so a lost bus alone does not make a reachable manager's edges stale.
//!
//! Nothing goes backwards. The highest head the manager has signed to this edge is remembered, and a
//! snapshot older than it (or than what is applied) is refused; events only ever move the replica forward.
//!
//! Nothing is believed unsigned. Every batch of events, heartbeat, page and snapshot must carry a
//! signature by a trusted manager key; anything else is dropped and counted. The edge authenticates its
//! acknowledgements with an HMAC key derived from its own signing key (kept across restarts, see
//! `EdgeConfig::ack_key`) and registers both, the MAC key with a signature proving it belongs to the
//! signing key, so a forged acknowledgement cannot make a revocation look enforced. A MAC costs the
//! manager about a microsecond where a signature cost tens (`quench_core::sign::ack`).

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use quench_bus::{
    Ack, Bus, BusError, Delivery, EdgeRegistration, Freshness, OpenError, SignedAck,
    SignedHeartbeat, SignedPage,
};
use quench_core::{
    Change, Event, Seq, Timestamp,
    keyset::{Applied, ApplyError},
    record::Snapshot,
    sign::{Nonce, Signer, Trust, ack::AckKey},
};
use tokio_util::sync::CancellationToken;

use crate::Replica;

/// How an edge reads the manager's state directly: a snapshot to start from, the log to repair gaps and
/// to prove itself current, and where it registers the key its acknowledgements are signed with.
/// Everything it returns is signed, and what counts as freshness is bound to the caller's nonce.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// The manager's streamed snapshot, verified against `trust` and checked to answer `nonce` (see
    /// `quench_bus::snapshot`).
    async fn snapshot(
        &self,
        trust: &Trust,
        nonce: &Nonce,
    ) -> Result<(Snapshot, Freshness), UpstreamError>;
    /// The copy of an earlier snapshot this edge keeps on its own disk, if it has one and it is signed
    /// by a key in `trust` (whatever else is wrong with it is logged, and the copy dropped). It proves
    /// nothing about now: the follower starts from it, applies the log after it, and counts as current
    /// only once the manager answers a request of its own.
    async fn stored_snapshot(&self, _trust: &Trust) -> Option<Snapshot> {
        None
    }
    /// A signed page of the log after `after`, carrying `nonce`; the follower verifies it.
    async fn events_after(
        &self,
        after: Seq,
        limit: u32,
        nonce: &Nonce,
    ) -> Result<SignedPage, UpstreamError>;
    async fn register(&self, edge: &EdgeRegistration) -> Result<(), UpstreamError>;
    /// The usage rules this edge applies.
    async fn usage_policy(&self) -> Result<quench_core::usage::UsagePolicy, UpstreamError>;
    /// Delivers usage alerts; the manager records each alert id once.
    async fn report_alerts(
        &self,
        report: &quench_api::alerts::AlertReport,
    ) -> Result<(), UpstreamError>;
}

/// Any error a source of errors can be boxed into: the transports behind [`Upstream`] differ (HTTP, the
/// manager's own store in one process), and the follower only retries, so it keeps them as sources.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why the manager gave no usable answer. The follower treats every variant alike (it backs off and
/// retries); they differ in what an operator reads in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The manager could not be reached, or the connection broke mid-answer.
    #[error("{0}")]
    Unreachable(#[source] BoxError),
    /// The manager answered `request` (`GET /v1/...`, or what was being done) with an HTTP error status.
    #[error("{request}: HTTP {status}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        request: String,
        status: u16,
        /// The message of the manager's JSON error, if it sent one.
        message: Option<String>,
    },
    /// An answer that must be signed came without a signature.
    #[error("GET {path}: no signature")]
    Unsigned { path: String },
    /// The answer could not be read: a malformed signature, snapshot or policy.
    #[error("{0}")]
    Invalid(#[source] BoxError),
    /// The manager in this process could not answer (its store failed, or it turned the request down).
    #[error("{0}")]
    Manager(#[source] BoxError),
}

impl UpstreamError {
    /// A failure of the manager in this process, for `map_err`.
    pub fn manager(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Manager(Box::new(error))
    }
}

#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("manager: {0}")]
    Upstream(#[from] UpstreamError),
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("the manager's log has a hole: expected {expected}, got {got}")]
    BrokenLog { expected: Seq, got: Seq },
    #[error("the manager's answer is not validly signed: {0}")]
    Unsigned(#[from] OpenError),
    #[error("refused a snapshot at {snapshot}: this edge has already seen the log at {seen}")]
    Rollback { snapshot: Seq, seen: Seq },
    #[error("the manager's log head is {head} but it sent nothing after {applied}")]
    BehindHead { applied: Seq, head: Seq },
    #[error("cannot make the edge's signing key: {0}")]
    Key(#[from] quench_core::key::RandomError),
}

const PAGE: u32 = 1_000;
/// Heartbeats stamped further ahead of this edge's clock are not believed.
const MAX_CLOCK_AHEAD_MS: i64 = 5_000;
const ACK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a heartbeat showing the log ahead of the replica waits for the bus to deliver what is
/// missing before the follower asks the manager's log. Heartbeats and events travel separately, so a
/// heartbeat sent just after a commit can overtake the event it counts; asking at once would cost a round
/// trip to the manager (over a region's slow link), during which the event, already queued, waits.
/// Waiting costs no safety: the replica counts as current only once it has applied up to the head.
const BUS_GRACE: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Runs until `cancel` fires, reconnecting with backoff after any failure. Also keeps the usage
/// policy current and reports usage alerts ([`crate::usage::report`]) for as long.
pub async fn follow(
    replica: Arc<Replica>,
    bus: Arc<dyn Bus>,
    upstream: Arc<dyn Upstream>,
    trust: Trust,
    cancel: CancellationToken,
) {
    let reporter = tokio::spawn(crate::usage::report(
        replica.clone(),
        upstream.clone(),
        cancel.child_token(),
    ));
    let _stop_reporter = StopOnDrop(reporter);
    let mut backoff = Duration::from_millis(50);
    let ack_key = match replica.config().ack_key.clone() {
        Some(key) => key,
        None => match Signer::generate() {
            Ok(key) => Arc::new(key),
            Err(error) => {
                tracing::error!(%error, "the edge cannot make its signing key; it will not follow");
                return;
            }
        },
    };
    tracing::info!(edge = %replica.config().id, public_key = %ack_key.public().to_hex(), "acknowledgements speak for this key");
    let ack_mac = AckKey::of(&ack_key);
    let follower = Follower {
        replica,
        bus,
        upstream,
        trust,
        ack_key,
        ack_mac,
        repair_due: std::sync::Mutex::new(None),
        stored_tried: std::sync::atomic::AtomicBool::new(false),
        stored: std::sync::Mutex::new(None),
        stored_loaded: std::sync::atomic::AtomicBool::new(false),
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

/// Sleeps until `due`; never returns for `None` (the branch using it is disabled then).
async fn sleep_until(due: Option<tokio::time::Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Stops the usage reporter when `follow` returns or is dropped.
struct StopOnDrop(tokio::task::JoinHandle<()>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Follower {
    replica: Arc<Replica>,
    bus: Arc<dyn Bus>,
    upstream: Arc<dyn Upstream>,
    trust: Trust,
    ack_key: Arc<Signer>,
    /// The MAC key derived from `ack_key`, registered with its proof: what acknowledgements carry.
    ack_mac: AckKey,
    /// When a heartbeat's head the bus has not yet delivered up to must be fetched from the manager.
    repair_due: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Whether the stored snapshot was read: once per process, so a manager that cannot be reached
    /// does not make the edge load it again and again.
    stored_tried: std::sync::atomic::AtomicBool,
    /// The stored snapshot, read and verified, until the manager's log shows it is a snapshot of that
    /// log (see [`Follower::same_log`]).
    stored: std::sync::Mutex<Option<Snapshot>>,
    /// Whether the replica was loaded from the stored snapshot (and still waits for its catch-up).
    stored_loaded: std::sync::atomic::AtomicBool,
}

impl Follower {
    async fn run(&self, cancel: &CancellationToken) -> Result<(), FollowError> {
        let mut registered = self.register().await;
        let mut deliveries = self.bus.subscribe().await?;
        if !self.replica.is_ready() {
            self.bootstrap().await?;
        }
        if let Err(error) = self.catch_up().await {
            // A stored copy the manager's log cannot be applied after (a hole, a log that ends before
            // the copy): the next start reads a snapshot from the manager instead of retrying it.
            if matches!(
                error,
                FollowError::BrokenLog { .. }
                    | FollowError::BehindHead { .. }
                    | FollowError::Rollback { .. }
            ) && self
                .stored_loaded
                .swap(false, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(%error, "the manager's log cannot be applied after the stored snapshot; reading a new snapshot");
            }
            return Err(error);
        }
        self.stored_loaded
            .store(false, std::sync::atomic::Ordering::Relaxed);
        self.replica.mark_ready();
        self.ack().await?;
        let mut tick = tokio::time::interval(ACK_INTERVAL);
        let mut poll = tokio::time::interval(self.poll_interval());
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let repair_due = self.repair_due();
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = sleep_until(repair_due), if repair_due.is_some() => {
                    self.set_repair_due(None);
                    if self.replica.applied() < self.replica.seen_head() {
                        self.repair().await;
                    }
                }
                _ = tick.tick() => {
                    if !registered {
                        registered = self.register().await;
                    }
                    self.ack().await?;
                }
                _ = poll.tick() => {
                    // Bounded, so a manager that answers slowly (or a path that holds answers back)
                    // cannot keep the follower from the bus for long; what was applied stays applied.
                    let bound = self.replica.config().max_staleness * 2;
                    if self.needs_proof()
                        && tokio::time::timeout(bound, self.repair()).await.is_err()
                    {
                        self.count_upstream_error();
                        tracing::warn!(?bound, "the manager's log did not answer in time; following the bus meanwhile");
                    }
                }
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

    fn repair_due(&self) -> Option<tokio::time::Instant> {
        self.repair_due.lock().ok().and_then(|due| *due)
    }

    fn set_repair_due(&self, due: Option<tokio::time::Instant>) {
        if let Ok(mut slot) = self.repair_due.lock() {
            *slot = due;
        }
    }

    /// Registers the acknowledgement key; until it succeeds, managers ignore this edge's
    /// acknowledgements, but the edge follows the bus all the same.
    async fn register(&self) -> bool {
        let config = self.replica.config();
        let registration = EdgeRegistration::of(&config.id, &config.region, &self.ack_key);
        match self.upstream.register(&registration).await {
            Ok(()) => true,
            Err(error) => {
                self.count_upstream_error();
                tracing::warn!(%error, public_key = %registration.public_key, "registering with the manager failed; will retry");
                false
            }
        }
    }

    /// How often to check whether the bus has kept the replica fresh: a quarter of `max_staleness`,
    /// between 50 ms and 1 s.
    fn poll_interval(&self) -> Duration {
        (self.replica.config().max_staleness / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// True when no proof has refreshed the replica for half of `max_staleness`.
    fn needs_proof(&self) -> bool {
        let half = self.replica.config().max_staleness / 2;
        self.replica
            .staleness(Timestamp::now())
            .is_none_or(|staleness| staleness >= half)
    }

    fn count_upstream_error(&self) {
        self.replica
            .metrics()
            .upstream_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Repairs from the log while following the bus. If the manager cannot be reached, keeps following:
    /// the bus may carry what is missing (the outbox republishes it), and until the replica reaches a
    /// heartbeat's head it does not count as fresh.
    async fn repair(&self) {
        if let Err(error) = self.catch_up().await {
            self.count_upstream_error();
            tracing::warn!(%error, "repairing from the manager's log failed; following the bus meanwhile");
        }
    }

    /// Installs the snapshot this edge stored on its disk (once per process), or else one read with a
    /// fresh nonce, unless it is older than what this edge has seen. From a stored one the edge is not
    /// current: `run` goes on to catch up from the manager's log, which proves it.
    async fn bootstrap(&self) -> Result<(), FollowError> {
        if self
            .stored_loaded
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // Loaded from disk, and the manager did not answer the catch-up yet: try that again rather
            // than a whole snapshot.
            return Ok(());
        }
        if !self
            .stored_tried
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            let stored = self.upstream.stored_snapshot(&self.trust).await;
            if let Some(stored) = &stored {
                tracing::info!(seq = %stored.seq, keys = stored.keys.len(), "read the snapshot stored on its disk; checking it against the manager's log");
            }
            *self.stored_slot() = stored;
        }
        let stored = self.stored_slot().take();
        if let Some(stored) = stored {
            match self.same_log(&stored).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(seq = %stored.seq, "the stored snapshot is of another log (signed by a trusted key, but the manager's log does not begin with its first key); reading a new one");
                    return self.download().await;
                }
                Err(error) => {
                    // Checked when the manager answers.
                    *self.stored_slot() = Some(stored);
                    return Err(error);
                }
            }
            let seq = stored.seq;
            let count = stored.keys.len();
            let seen = self.replica.seen_head().max(self.replica.applied());
            if seq >= seen && self.replica.keys().install_snapshot(seq, stored.keys) {
                self.stored_loaded
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                self.replica
                    .metrics()
                    .bootstraps
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(%seq, keys = count, edge = %self.replica.config().id, "edge loaded the snapshot stored on its disk; catching up from the manager's log");
                return Ok(());
            }
            tracing::warn!(%seq, %seen, "the stored snapshot is older than what this edge has seen; reading a new one");
        }
        self.download().await
    }

    fn stored_slot(&self) -> std::sync::MutexGuard<'_, Option<Snapshot>> {
        self.stored.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `stored` is a snapshot of the log this manager keeps, not of another log signed by the
    /// same key under the same deployment name (a database started afresh, or test deployments sharing a
    /// key). Every log begins with the creation of a key, and keys are never deleted, so a snapshot of a
    /// log past its first event holds that key with the same verifier; a snapshot of another log does not
    /// (key ids are random). The first event is read like any page: signed, answering a nonce of this
    /// edge's own.
    async fn same_log(&self, stored: &Snapshot) -> Result<bool, FollowError> {
        if stored.seq == Seq::ZERO {
            return Ok(true);
        }
        let nonce = Nonce::random()?;
        let page = self
            .upstream
            .events_after(Seq::ZERO, 1, &nonce)
            .await?
            .open(&self.trust, &nonce)
            .inspect_err(|_| self.count_rejected())?;
        Ok(match page.events.first() {
            Some(Event {
                seq,
                change: Change::KeyCreated { key },
                ..
            }) if *seq == Seq::new(1) => stored
                .keys
                .iter()
                .any(|k| k.id == key.id && k.verifier == key.verifier),
            _ => false,
        })
    }

    /// Installs a snapshot read from the manager with a fresh nonce, unless it is older than what this
    /// edge has seen.
    async fn download(&self) -> Result<(), FollowError> {
        let nonce = Nonce::random()?;
        let asked_at = Timestamp::now();
        let (snapshot, fresh) = self.upstream.snapshot(&self.trust, &nonce).await?;
        let seq = snapshot.seq;
        let count = snapshot.keys.len();
        let seen = self.replica.seen_head().max(self.replica.applied());
        if seq < seen || !self.replica.keys().install_snapshot(seq, snapshot.keys) {
            return Err(FollowError::Rollback {
                snapshot: seq,
                seen,
            });
        }
        self.proved(fresh, asked_at);
        self.replica
            .metrics()
            .bootstraps
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(%seq, keys = count, edge = %self.replica.config().id, "edge bootstrapped from a snapshot");
        Ok(())
    }

    /// Applies the manager's log from what is applied to the head it signs, each page asked for with a
    /// fresh nonce; reaching the head proves the replica current.
    async fn catch_up(&self) -> Result<(), FollowError> {
        let mut repaired = false;
        loop {
            let nonce = Nonce::random()?;
            let asked_at = Timestamp::now();
            let applied = self.replica.applied();
            let page = self
                .upstream
                .events_after(applied, PAGE, &nonce)
                .await?
                .open(&self.trust, &nonce)
                .inspect_err(|_| self.count_rejected())?;
            if self
                .stored_loaded
                .load(std::sync::atomic::Ordering::Relaxed)
                && page.fresh.head < applied
            {
                // The copy on disk is ahead of the manager's log (a store restored from an older
                // backup): it is not this log's state, and nothing here is current.
                return Err(FollowError::Rollback {
                    snapshot: page.fresh.head,
                    seen: applied,
                });
            }
            self.replica.saw_head(page.fresh.head);
            for event in &page.events {
                if let Err(ApplyError::Gap { expected, got }) = self.apply(event) {
                    return Err(FollowError::BrokenLog { expected, got });
                }
            }
            if self.proved(page.fresh, asked_at) {
                if repaired || !page.events.is_empty() {
                    self.replica
                        .metrics()
                        .gaps_repaired
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                return Ok(());
            }
            if page.events.is_empty() {
                return Err(FollowError::BehindHead {
                    applied,
                    head: page.fresh.head,
                });
            }
            repaired = true;
        }
    }

    /// Counts the replica current as of `fresh` (no later than `asked_at`, when the nonce that proves
    /// the answer new was chosen) if it has applied up to the head shown; says whether it had.
    fn proved(&self, fresh: Freshness, asked_at: Timestamp) -> bool {
        self.replica.saw_head(fresh.head);
        let current = self.replica.applied() >= fresh.head;
        if current {
            self.replica.heard_manager(fresh.at.min(asked_at));
        }
        current
    }

    fn count_rejected(&self) {
        self.replica
            .metrics()
            .rejected
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn apply(&self, event: &Event) -> Result<(), ApplyError> {
        let metrics = self.replica.metrics();
        let counter = match self.replica.keys().apply(event)? {
            Applied::Changed => {
                self.replica.record_applied_now();
                &metrics.events_applied
            }
            Applied::Duplicate => &metrics.events_duplicate,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    async fn handle(&self, delivery: Delivery) -> Result<(), FollowError> {
        match delivery {
            Delivery::Events(batch) => {
                let Some(events) = self.opened(batch.open(&self.trust)) else {
                    return Ok(());
                };
                for event in &events {
                    if self.apply(event).is_err() {
                        self.repair().await;
                        // The log now covers it; applying again is a duplicate or fills the last step.
                        let _ = self.apply(event);
                    }
                }
            }
            Delivery::Heartbeat(beat) => self.heartbeat(&beat).await?,
            Delivery::Lost(count) => {
                tracing::warn!(count, "edge missed deliveries; repairing from the log");
                self.repair().await;
            }
            Delivery::Invalid(why) => {
                let _ = self.opened::<()>(Err(OpenError::Unreadable(why)));
            }
        }
        Ok(())
    }

    /// A verified message, or `None` after counting and logging a rejected one.
    fn opened<T>(&self, result: Result<T, OpenError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.count_rejected();
                tracing::warn!(%error, "dropped a message from the bus that is not validly signed");
                None
            }
        }
    }

    async fn heartbeat(&self, beat: &SignedHeartbeat) -> Result<(), FollowError> {
        let Some(beat) = self.opened(beat.open(&self.trust)) else {
            return Ok(());
        };
        let now = Timestamp::now();
        if beat.at.millis_since(now) > MAX_CLOCK_AHEAD_MS {
            tracing::warn!(at = %beat.at, "ignored a heartbeat stamped in the future; check clocks");
            return Ok(());
        }
        self.replica.saw_head(beat.head);
        if self.replica.applied() < beat.head && self.repair_due().is_none() {
            self.set_repair_due(Some(tokio::time::Instant::now() + BUS_GRACE));
        }
        // Fresh as of when the manager sent it, never later: a replayed heartbeat buys nothing.
        let fresh = Freshness {
            head: beat.head,
            at: beat.at,
        };
        self.proved(fresh, now);
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
        self.bus
            .ack(&SignedAck::mac_ack(self.ack_key.id(), &self.ack_mac, &ack))
            .await?;
        Ok(())
    }
}
