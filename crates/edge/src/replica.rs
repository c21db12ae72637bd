//! The replica and the rules for answering from it.
//!
//! The key set says what it knows; the replica adds what it knows about itself. Before its first
//! bootstrap has caught up it answers nothing but `stale`. After that, if it has not heard the manager for
//! longer than `max_staleness`, it stops answering `valid` (fail closed) unless the operator chose
//! fail-open. Refusals are always safe to give, so `revoked`, `unknown` and the like are still answered
//! from a stale replica.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use quench_core::{KeySet, Reason, Seq, Timestamp, Verdict, key::PresentedKey};

use crate::metrics::EdgeMetrics;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StalePolicy {
    /// Refuse keys once the replica is stale: bounds the revocation window even under partition.
    #[default]
    FailClosed,
    /// Keep accepting keys the replica holds as valid; availability over the revocation bound.
    FailOpen,
}

#[derive(Debug, Clone)]
pub struct EdgeConfig {
    pub id: String,
    pub region: String,
    pub max_staleness: Duration,
    pub stale_policy: StalePolicy,
    /// The key this edge signs its acknowledgements with; the manager accepts one key per edge id, so
    /// an edge that keeps its id keeps this (see [`crate::key_file`]). `None`: a new key for this run,
    /// right only for an id that is never used again.
    pub ack_key: Option<Arc<quench_core::sign::Signer>>,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            id: "edge-1".into(),
            region: "local".into(),
            max_staleness: Duration::from_secs(10),
            stale_policy: StalePolicy::FailClosed,
            ack_key: None,
        }
    }
}

#[derive(Debug)]
pub struct Replica {
    keys: KeySet,
    config: EdgeConfig,
    ready: AtomicBool,
    /// When this edge last heard from the manager, in Unix milliseconds.
    last_contact: AtomicI64,
    /// The highest log head the manager has signed to this edge: no snapshot older than it is installed.
    seen_head: AtomicU64,
    /// When the last event was applied, in Unix microseconds (what propagation is measured against).
    applied_at_us: AtomicI64,
    metrics: EdgeMetrics,
    usage: crate::usage::UsageMonitor,
}

impl Replica {
    pub fn new(config: EdgeConfig) -> Arc<Self> {
        Arc::new(Self {
            keys: KeySet::default(),
            config,
            ready: AtomicBool::new(false),
            last_contact: AtomicI64::new(0),
            seen_head: AtomicU64::new(0),
            applied_at_us: AtomicI64::new(0),
            metrics: EdgeMetrics::default(),
            usage: crate::usage::UsageMonitor::default(),
        })
    }

    pub fn config(&self) -> &EdgeConfig {
        &self.config
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Per-key usage watching; record valid uses through it (the HTTP API does).
    pub fn usage(&self) -> &crate::usage::UsageMonitor {
        &self.usage
    }

    pub fn metrics(&self) -> &EdgeMetrics {
        &self.metrics
    }

    pub fn applied(&self) -> Seq {
        self.keys.applied()
    }

    pub(crate) fn record_applied_now(&self) {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        self.applied_at_us.store(micros, Ordering::Release);
    }

    /// When the last event was applied, in Unix microseconds (0 before the first).
    pub fn applied_at_us(&self) -> i64 {
        self.applied_at_us.load(Ordering::Acquire)
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Marks the replica as having caught up with its first bootstrap, so it may answer `valid`. The
    /// follower calls this; it is public for embedders that fill the key set themselves, and for benchmarks.
    pub fn mark_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Records that the replica was known to be current at `at` (freshness only moves forward). The
    /// follower calls this only with proof that is new (a nonce-bound page or snapshot, or a heartbeat's
    /// signed time); it is public for embedders that feed the replica themselves, and for benchmarks.
    pub fn heard_manager(&self, at: Timestamp) {
        self.last_contact
            .fetch_max(at.as_millis(), Ordering::AcqRel);
    }

    /// Records a log head the manager signed (heads only move forward).
    pub fn saw_head(&self, head: Seq) {
        self.seen_head.fetch_max(head.get(), Ordering::AcqRel);
    }

    /// The highest log head the manager has signed to this edge.
    pub fn seen_head(&self) -> Seq {
        Seq::new(self.seen_head.load(Ordering::Acquire))
    }

    /// Milliseconds since the manager was last heard, or `None` if it never was.
    pub fn staleness(&self, now: Timestamp) -> Option<Duration> {
        let last = self.last_contact.load(Ordering::Acquire);
        (last > 0).then(|| {
            Duration::from_millis(now.millis_since(Timestamp::from_millis(last)).max(0) as u64)
        })
    }

    pub fn is_stale(&self, now: Timestamp) -> bool {
        !self.is_ready()
            || self
                .staleness(now)
                .is_none_or(|s| s > self.config.max_staleness)
    }

    /// Answers for a presented key text. Never awaits, never allocates on the valid path.
    pub fn verify(
        &self,
        presented: &str,
        api: Option<&str>,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Verdict {
        let verdict = match PresentedKey::parse(presented) {
            Err(_) => Verdict::Invalid {
                reason: Reason::Malformed,
                key_id: None,
            },
            Ok(_) if !self.is_ready() => stale(),
            Ok(key) => {
                let verdict = self.keys.verify(&key, api, scope, now);
                if verdict.is_valid()
                    && self.config.stale_policy == StalePolicy::FailClosed
                    && self.is_stale(now)
                {
                    stale()
                } else {
                    verdict
                }
            }
        };
        self.metrics.count_verdict(&verdict);
        verdict
    }
}

fn stale() -> Verdict {
    Verdict::Invalid {
        reason: Reason::Stale,
        key_id: None,
    }
}
