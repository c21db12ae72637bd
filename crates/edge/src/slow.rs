//! Slow hashes at the edge: argon2id and bcrypt checks run off the async workers, in a bounded pool, one
//! at a time per key id, and at most `failures` times per key id per window.
//!
//! Why: such a check costs tens of milliseconds of CPU. Run on an async worker, a few clients presenting
//! a real key id with wrong secrets stall every other request scheduled on that worker. Here:
//! * a check runs on tokio's blocking threads, at most `workers` at once, with at most `queue` more
//!   waiting for a worker; one beyond that is refused at once as `busy` (HTTP 503 with `Retry-After`),
//!   never queued without bound. Refusing is safe: `busy` is not a verdict, the client may retry;
//! * checks of one key id take turns, and a request that waited for its turn looks at the key set again
//!   first, so a burst of first uses of one key pays one hash, and one key id never holds more than one
//!   worker;
//! * after `failures` checks of one key id within `window` that did not match, further checks of that
//!   id are refused (`unknown`, counted as `throttled`) without hashing until the window has passed.
//!
//! SHA-256 keys, unknown ids and slow keys whose secret this edge has already confirmed never come here:
//! the key set answers them synchronously. The trade-off: a key id under attack whose secret this edge
//! has not yet confirmed is refused to its owner too until the window passes, as is every slow key while
//! the pool is full. That bounds what an attacker can make the edge spend, which matters more.

use std::{
    collections::HashMap,
    fmt::Write,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use quench_core::{KeyId, SlowCheck, Timestamp};
use tokio::sync::Semaphore;

/// How much slow hashing an edge does, and for whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowHashConfig {
    /// Slow hashes run at once (threads of tokio's blocking pool).
    pub workers: usize,
    /// Slow hashes that may wait for a worker; more are refused as `busy`.
    pub queue: usize,
    /// Failed slow checks of one key id within `window` before further checks are refused.
    pub failures: u32,
    pub window: Duration,
}

impl SlowHashConfig {
    /// Half the cores (at least one): the other half keeps answering SHA-256 and confirmed keys
    /// however busy the slow hashes are.
    pub fn default_workers() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }
}

impl Default for SlowHashConfig {
    fn default() -> Self {
        Self {
            workers: Self::default_workers(),
            queue: 32,
            failures: 5,
            window: Duration::from_secs(60),
        }
    }
}

/// Too many slow hashes are running or waiting; nothing was decided about the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many slow key checks in progress; retry shortly")]
pub struct Busy;

/// Counters of slow checks, for `/metrics` and tests.
#[derive(Debug, Default)]
pub struct SlowHashMetrics {
    /// Slow hashes actually computed.
    pub hashes: AtomicU64,
    pub matched: AtomicU64,
    pub failed: AtomicU64,
    /// Refused without hashing: the key id's failure budget was spent.
    pub throttled: AtomicU64,
    /// Refused without hashing: the pool and its queue were full.
    pub busy: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Failed-check budgets per key id: plain bookkeeping over the caller's clock.
#[derive(Debug)]
struct FailureBudget {
    limit: u32,
    window_ms: i64,
    ids: HashMap<u64, Spent>,
    /// Expired windows are swept when the map reaches this size.
    sweep_at: usize,
}

#[derive(Debug)]
struct Spent {
    since: i64,
    /// Checks taken in this window (running ones included) that have not matched.
    count: u32,
    warned: bool,
}

const SWEEP_MIN: usize = 1024;

impl FailureBudget {
    fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window_ms: i64::try_from(window.as_millis()).unwrap_or(i64::MAX),
            ids: HashMap::new(),
            sweep_at: SWEEP_MIN,
        }
    }

    /// Takes one check for `id`, or returns `None` with whether this is the first refusal of the window.
    fn take(&mut self, id: u64, now: i64) -> Result<(), bool> {
        self.sweep(now);
        let window_ms = self.window_ms;
        let spent = self.ids.entry(id).or_insert(Spent {
            since: now,
            count: 0,
            warned: false,
        });
        if now.saturating_sub(spent.since) >= window_ms {
            *spent = Spent {
                since: now,
                count: 0,
                warned: false,
            };
        }
        if spent.count >= self.limit {
            let first = !spent.warned;
            spent.warned = true;
            return Err(first);
        }
        spent.count += 1;
        Ok(())
    }

    /// A taken check was not run after all.
    fn give_back(&mut self, id: u64) {
        if let Some(spent) = self.ids.get_mut(&id) {
            spent.count = spent.count.saturating_sub(1);
        }
    }

    /// The secret matched: this edge will not hash for this key again.
    fn forget(&mut self, id: u64) {
        self.ids.remove(&id);
    }

    fn sweep(&mut self, now: i64) {
        if self.ids.len() < self.sweep_at {
            return;
        }
        let window_ms = self.window_ms;
        self.ids
            .retain(|_, spent| now.saturating_sub(spent.since) < window_ms);
        self.sweep_at = (self.ids.len() * 2).max(SWEEP_MIN);
    }
}

/// The bounded pool, the per-id turns and the failure budgets an edge shares between requests.
#[derive(Debug)]
pub struct SlowHashes {
    config: SlowHashConfig,
    budget: Mutex<FailureBudget>,
    turns: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    /// Running or waiting: `workers + queue` permits.
    admitted: Arc<Semaphore>,
    /// Running: `workers` permits.
    running: Arc<Semaphore>,
    metrics: SlowHashMetrics,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update under these locks is a single map operation: a panic cannot leave one half-done.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl SlowHashes {
    pub fn new(config: SlowHashConfig) -> Arc<Self> {
        let workers = config.workers.max(1);
        Arc::new(Self {
            budget: Mutex::new(FailureBudget::new(config.failures, config.window)),
            turns: Mutex::new(HashMap::new()),
            admitted: Arc::new(Semaphore::new(workers.saturating_add(config.queue))),
            running: Arc::new(Semaphore::new(workers)),
            metrics: SlowHashMetrics::default(),
            config,
        })
    }

    pub fn config(&self) -> &SlowHashConfig {
        &self.config
    }

    pub fn metrics(&self) -> &SlowHashMetrics {
        &self.metrics
    }

    /// Admits `check` if its key id's failure budget allows; `None` means refused (`throttled`).
    pub(crate) fn admit(self: &Arc<Self>, check: SlowCheck, now: Timestamp) -> Option<SlowTicket> {
        let id = check.key_id();
        match lock(&self.budget).take(id.as_u64(), now.as_millis()) {
            Ok(()) => Some(SlowTicket {
                check,
                hashes: Arc::clone(self),
                settled: false,
            }),
            Err(first_refusal) => {
                bump(&self.metrics.throttled);
                if first_refusal {
                    tracing::warn!(
                        key = %id,
                        failures = self.config.failures,
                        window_s = self.config.window.as_secs(),
                        "too many failed checks of a slow-hashed key; refusing further checks of it until the window passes"
                    );
                }
                None
            }
        }
    }

    /// Waits for `id`'s turn: checks of one key id run one after another.
    pub(crate) fn claim(&self, id: KeyId) -> TurnClaim<'_> {
        let lock = Arc::clone(lock(&self.turns).entry(id.as_u64()).or_default());
        TurnClaim {
            hashes: self,
            id: id.as_u64(),
            lock,
        }
    }

    /// Runs `ticket` on a blocking thread once a worker is free, or refuses at once if the pool and its
    /// queue are full.
    pub(crate) async fn run_pooled(&self, ticket: SlowTicket) -> Result<bool, Busy> {
        let Ok(admitted) = Arc::clone(&self.admitted).try_acquire_owned() else {
            bump(&self.metrics.busy);
            return Err(Busy);
        };
        let running = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|_| Busy)?;
        let outcome = tokio::task::spawn_blocking(move || {
            let _permits = (admitted, running);
            ticket.run()
        })
        .await;
        // A panicking hash vouches for nothing.
        Ok(outcome.unwrap_or(false))
    }

    pub fn render(&self, out: &mut String) {
        let m = &self.metrics;
        let _ = writeln!(
            out,
            "# HELP quench_edge_slow_hashes_total argon2id/bcrypt hashes computed to check a presented secret.\n# TYPE quench_edge_slow_hashes_total counter\nquench_edge_slow_hashes_total {}",
            m.hashes.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP quench_edge_slow_checks_total Checks of keys needing a slow hash, by outcome.\n# TYPE quench_edge_slow_checks_total counter"
        );
        for (result, counter) in [
            ("matched", &m.matched),
            ("failed", &m.failed),
            ("throttled", &m.throttled),
            ("busy", &m.busy),
        ] {
            let _ = writeln!(
                out,
                "quench_edge_slow_checks_total{{result=\"{result}\"}} {}",
                counter.load(Ordering::Relaxed)
            );
        }
        let capacity = self.config.workers.max(1).saturating_add(self.config.queue);
        let _ = writeln!(
            out,
            "# HELP quench_edge_slow_hashes_in_flight Slow hashes running or waiting for a worker.\n# TYPE quench_edge_slow_hashes_in_flight gauge\nquench_edge_slow_hashes_in_flight {}",
            capacity.saturating_sub(self.admitted.available_permits())
        );
    }
}

/// A slow check its key id's budget allowed. Run it, or drop it to give the check back.
pub(crate) struct SlowTicket {
    check: SlowCheck,
    hashes: Arc<SlowHashes>,
    settled: bool,
}

impl SlowTicket {
    /// Runs the slow hash on this thread and settles the budget. Returns whether the secret matched.
    pub(crate) fn run(mut self) -> bool {
        let metrics = &self.hashes.metrics;
        bump(&metrics.hashes);
        let matched = self.check.run();
        self.settled = true;
        let id = self.check.key_id().as_u64();
        if matched {
            bump(&metrics.matched);
            lock(&self.hashes.budget).forget(id);
        } else {
            bump(&metrics.failed);
        }
        matched
    }
}

impl Drop for SlowTicket {
    fn drop(&mut self) {
        if !self.settled {
            lock(&self.hashes.budget).give_back(self.check.key_id().as_u64());
        }
    }
}

/// A place in one key id's line of slow checks; the line is removed when its last claim goes.
pub(crate) struct TurnClaim<'a> {
    hashes: &'a SlowHashes,
    id: u64,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl TurnClaim<'_> {
    pub(crate) async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

impl Drop for TurnClaim<'_> {
    fn drop(&mut self) {
        let mut turns = lock(&self.hashes.turns);
        // The map's reference and this one: no other request is in line for this id.
        if Arc::strong_count(&self.lock) == 2 {
            turns.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_refuses_after_its_limit_until_the_window_passes() {
        let mut budget = FailureBudget::new(2, Duration::from_secs(10));
        assert_eq!(budget.take(7, 0), Ok(()));
        assert_eq!(budget.take(7, 1), Ok(()));
        assert_eq!(budget.take(7, 2), Err(true));
        assert_eq!(budget.take(7, 3), Err(false));
        // Other ids have their own budget.
        assert_eq!(budget.take(8, 3), Ok(()));
        assert_eq!(budget.take(7, 10_000), Ok(()));
    }

    #[test]
    fn checks_not_run_are_given_back_and_a_match_clears_the_budget() {
        let mut budget = FailureBudget::new(1, Duration::from_secs(10));
        assert_eq!(budget.take(7, 0), Ok(()));
        budget.give_back(7);
        assert_eq!(budget.take(7, 0), Ok(()));
        assert_eq!(budget.take(7, 0), Err(true));
        budget.forget(7);
        assert_eq!(budget.take(7, 0), Ok(()));
    }

    #[test]
    fn expired_windows_are_swept() {
        let mut budget = FailureBudget::new(1, Duration::from_secs(1));
        for id in 0..SWEEP_MIN as u64 {
            assert_eq!(budget.take(id, 0), Ok(()));
        }
        assert_eq!(budget.take(u64::MAX, 5_000), Ok(()));
        assert_eq!(budget.ids.len(), 1);
    }
}
