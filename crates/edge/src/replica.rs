//! The replica and the rules for answering from it.
//!
//! The key set says what it knows; the replica adds what it knows about itself. Before its first
//! bootstrap has caught up it answers nothing but `stale`. After that, if it has not heard the manager for
//! longer than `max_staleness`, it stops answering `valid` (fail closed) unless the operator chose
//! fail-open. Refusals are always safe to give, so `revoked`, `unknown` and the like are still answered
//! from a stale replica.
//!
//! A presented key is trimmed of surrounding ASCII whitespace (space, tab, CR, LF, FF) before it is
//! parsed, whichever way it arrived; whitespace inside it makes it malformed.
//!
//! Two ways to ask. [`Replica::verify`] is synchronous and answers everything, paying an argon2id or
//! bcrypt hash on the calling thread when a slow-hashed key's secret is not yet confirmed here (throttled
//! per key id). [`Replica::verify_pooled`] is what the HTTP API uses: every answer that needs no slow hash
//! comes back without awaiting, the rest run in the bounded pool of [`crate::slow`] or are refused as
//! [`Busy`].

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
    time::Duration,
};

use quench_core::{Check, KeySet, Reason, Seq, SlowCheck, Timestamp, Verdict, key::PresentedKey};

use crate::{
    metrics::EdgeMetrics,
    slow::{Busy, SlowHashConfig, SlowHashes, SlowTicket},
};

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
    /// The bounded pool and per-key-id throttle for argon2id and bcrypt checks.
    pub slow_hash: SlowHashConfig,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            id: "edge-1".into(),
            region: "local".into(),
            max_staleness: Duration::from_secs(10),
            stale_policy: StalePolicy::FailClosed,
            ack_key: None,
            slow_hash: SlowHashConfig::default(),
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
    slow: Arc<SlowHashes>,
}

impl Replica {
    pub fn new(config: EdgeConfig) -> Arc<Self> {
        Arc::new(Self {
            slow: SlowHashes::new(config.slow_hash.clone()),
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

    /// The slow-hash pool and throttle, for its metrics.
    pub fn slow_hashes(&self) -> &SlowHashes {
        &self.slow
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

    /// Answers for a presented key text. Never awaits and never allocates on the valid path; for an
    /// argon2id or bcrypt key whose secret this edge has not confirmed yet, runs that slow hash (tens of
    /// milliseconds) on the calling thread, within the key id's failure budget. Embedders on an async
    /// runtime should prefer [`Replica::verify_pooled`].
    pub fn verify(
        &self,
        presented: &str,
        api: Option<&str>,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Verdict {
        let verdict = match self.look(presented, api, scope, now) {
            Look::Answer(verdict) => verdict,
            Look::Slow(key, check) => {
                let matched = self.slow.admit(check, now).is_some_and(SlowTicket::run);
                if matched {
                    self.after_match(&key, api, scope, now)
                } else {
                    unknown()
                }
            }
        };
        self.metrics.count_verdict(&verdict);
        verdict
    }

    /// Like [`Replica::verify`], but a slow hash runs in the edge's bounded pool, one at a time per key
    /// id; everything else is answered before the first await. `Err(Busy)` when the pool and its queue
    /// are full: nothing was decided, the caller may retry.
    pub async fn verify_pooled(
        &self,
        presented: &str,
        api: Option<&str>,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Result<Verdict, Busy> {
        let key = match self.look(presented, api, scope, now) {
            Look::Answer(verdict) => {
                self.metrics.count_verdict(&verdict);
                return Ok(verdict);
            }
            Look::Slow(key, _) => key,
        };
        let verdict = self.verify_slow(&key, api, scope).await?;
        self.metrics.count_verdict(&verdict);
        Ok(verdict)
    }

    async fn verify_slow(
        &self,
        key: &PresentedKey<'_>,
        api: Option<&str>,
        scope: Option<&str>,
    ) -> Result<Verdict, Busy> {
        let claim = self.slow.claim(key.id());
        let _turn = claim.turn().await;
        // Whoever held the turn may have confirmed this very secret: look again before hashing.
        let now = Timestamp::now();
        let check = match self.keys.check(key, api, scope, now) {
            Check::Done(verdict) => return Ok(self.judge_staleness(verdict, now)),
            Check::Slow(check) => check,
        };
        let Some(ticket) = self.slow.admit(check, now) else {
            return Ok(unknown());
        };
        if self.slow.run_pooled(ticket).await? {
            Ok(self.after_match(key, api, scope, Timestamp::now()))
        } else {
            Ok(unknown())
        }
    }

    /// Everything up to a slow hash: parse, readiness, the key set's answer, staleness.
    fn look<'a>(
        &self,
        presented: &'a str,
        api: Option<&str>,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Look<'a> {
        let key = match PresentedKey::parse(presented.trim_ascii()) {
            Err(_) => {
                return Look::Answer(Verdict::Invalid {
                    reason: Reason::Malformed,
                    key_id: None,
                });
            }
            Ok(_) if !self.is_ready() => return Look::Answer(stale()),
            Ok(key) => key,
        };
        match self.keys.check(&key, api, scope, now) {
            Check::Done(verdict) => Look::Answer(self.judge_staleness(verdict, now)),
            Check::Slow(check) => Look::Slow(key, check),
        }
    }

    /// The answer once a slow hash has confirmed the secret (the key set now answers at once).
    fn after_match(
        &self,
        key: &PresentedKey<'_>,
        api: Option<&str>,
        scope: Option<&str>,
        now: Timestamp,
    ) -> Verdict {
        match self.keys.check(key, api, scope, now) {
            Check::Done(verdict) => self.judge_staleness(verdict, now),
            // The key's verifier changed while hashing: nothing to vouch for.
            Check::Slow(_) => unknown(),
        }
    }

    /// A valid answer from a stale replica becomes `stale` unless the operator chose fail-open.
    fn judge_staleness(&self, verdict: Verdict, now: Timestamp) -> Verdict {
        if verdict.is_valid()
            && self.config.stale_policy == StalePolicy::FailClosed
            && self.is_stale(now)
        {
            stale()
        } else {
            verdict
        }
    }
}

enum Look<'a> {
    Answer(Verdict),
    Slow(PresentedKey<'a>, SlowCheck),
}

fn unknown() -> Verdict {
    Verdict::Invalid {
        reason: Reason::Unknown,
        key_id: None,
    }
}

fn stale() -> Verdict {
    Verdict::Invalid {
        reason: Reason::Stale,
        key_id: None,
    }
}
