//! Watching how each key is used, and telling the manager when it looks stolen.
//!
//! Every valid verification is counted against its key with the client's address ([`UsageMonitor::record`]):
//! a map lookup, a short lock on the key's own entry and a few additions, off the path of any other key.
//! The rules come from the manager's usage policy (fetched at start and every [`POLICY_REFRESH`]); when one
//! fires, an alert is queued and [`report`] sends it to the manager, which records it, notifies, and
//! revokes the key if the rule says so. Alerts carry an id the edge makes, so a report retried after a lost
//! answer is recorded once.
//!
//! Memory is bounded twice: at most `max_tracked_keys` keys are watched (about 300 bytes each; keys past
//! that are counted as untracked), and the queue of unsent alerts holds at most [`MAX_QUEUED`] (the oldest
//! are dropped and counted). Keys idle for twice the usual-rate horizon are forgotten.

use std::{
    collections::{BTreeMap, VecDeque},
    hash::BuildHasher,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use quench_api::alerts::{AlertReport, UsageAlert};
use quench_core::{
    KeyId, Timestamp,
    keyset::{BuildKeyIdHasher, KeyMap},
    usage::{KeyUsage, UsagePolicy},
};
use tokio_util::sync::CancellationToken;

use crate::{Replica, Upstream};

/// Most alerts waiting to be sent; past it the oldest are dropped.
pub const MAX_QUEUED: usize = 10_000;
/// Most alerts in one report.
const REPORT_BATCH: usize = 100;
/// How often an edge re-reads the manager's usage policy.
pub const POLICY_REFRESH: Duration = Duration::from_secs(30);

pub struct UsageMonitor {
    policy: ArcSwap<UsagePolicy>,
    /// By key id; ids are uniformly random, so they hash as themselves.
    keys: KeyMap<Mutex<KeyUsage>>,
    /// Keyed at random per process, so nobody can pick addresses that collide in the sketches.
    hasher: std::collections::hash_map::RandomState,
    queue: Mutex<VecDeque<UsageAlert>>,
    queued: tokio::sync::Notify,
    raised: Mutex<BTreeMap<String, u64>>,
    pub(crate) dropped: AtomicU64,
    pub(crate) untracked: AtomicU64,
}

impl std::fmt::Debug for UsageMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsageMonitor")
            .field("tracked", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Default for UsageMonitor {
    /// Watching nothing until a policy with rules is set.
    fn default() -> Self {
        Self::new(UsagePolicy::disabled())
    }
}

impl UsageMonitor {
    pub fn new(policy: UsagePolicy) -> Self {
        Self {
            policy: ArcSwap::from_pointee(policy),
            // Blocking resizes: a table that stops growing is never left half-copied, which would
            // make every later lookup look in two tables.
            keys: papaya::HashMap::builder()
                .hasher(BuildKeyIdHasher)
                .resize_mode(papaya::ResizeMode::Blocking)
                .build(),
            hasher: std::collections::hash_map::RandomState::new(),
            queue: Mutex::new(VecDeque::new()),
            queued: tokio::sync::Notify::new(),
            raised: Mutex::new(BTreeMap::new()),
            dropped: AtomicU64::new(0),
            untracked: AtomicU64::new(0),
        }
    }

    pub fn policy(&self) -> Arc<UsagePolicy> {
        self.policy.load_full()
    }

    /// Replaces the policy. A changed one starts every key afresh: windows and rule positions may differ.
    pub fn set_policy(&self, policy: UsagePolicy) {
        if *self.policy.load_full() == policy {
            return;
        }
        tracing::info!(
            rules = policy.rules.len(),
            window_seconds = policy.window_seconds,
            "usage policy updated"
        );
        self.policy.store(Arc::new(policy));
        self.keys.pin().clear();
    }

    pub fn tracked(&self) -> usize {
        self.keys.len()
    }

    /// Counts one valid use of `key` by `client` at `now`, queueing an alert for every rule it breaks.
    pub fn record(&self, key: KeyId, client: Option<IpAddr>, now: Timestamp) {
        let policy = self.policy.load();
        if !policy.is_enabled() {
            return;
        }
        let now_ms = now.as_millis();
        let address = client.map(|ip| self.hasher.hash_one(ip));
        let keys = self.keys.pin();
        let entry = match keys.get(&key.as_u64()) {
            Some(entry) => entry,
            None if keys.len() >= policy.max_tracked_keys => {
                self.untracked.fetch_add(1, Ordering::Relaxed);
                return;
            }
            None => {
                keys.get_or_insert_with(key.as_u64(), || Mutex::new(KeyUsage::new(now_ms, &policy)))
            }
        };
        let fired = {
            let Ok(mut usage) = entry.lock() else { return };
            usage.record(now_ms, address, &policy)
        };
        let Some((mask, measures)) = fired else {
            return;
        };
        for (i, rule) in policy.rules.iter().enumerate() {
            if mask & (1 << i) == 0 {
                continue;
            }
            tracing::warn!(key_id = %key, rule = %rule.name, requests = measures.requests,
                distinct_addresses = measures.distinct_addresses, "usage alert");
            self.raise(UsageAlert {
                id: alert_id(),
                key_id: key,
                rule: rule.name.clone(),
                kind: rule.condition.kind().into(),
                raised_at: now,
                window_seconds: policy.window_seconds,
                measures,
            });
        }
    }

    fn raise(&self, alert: UsageAlert) {
        if let Ok(mut raised) = self.raised.lock() {
            *raised.entry(alert.rule.clone()).or_default() += 1;
        }
        if let Ok(mut queue) = self.queue.lock() {
            if queue.len() >= MAX_QUEUED {
                queue.pop_front();
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(alert);
        }
        self.queued.notify_one();
    }

    /// Alerts raised since start, per rule.
    pub fn raised(&self) -> BTreeMap<String, u64> {
        self.raised.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn take(&self, most: usize) -> Vec<UsageAlert> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let n = most.min(queue.len());
        queue.drain(..n).collect()
    }

    /// Puts back alerts a failed report did not deliver, ahead of newer ones.
    fn put_back(&self, alerts: Vec<UsageAlert>) {
        let Ok(mut queue) = self.queue.lock() else {
            return;
        };
        for alert in alerts.into_iter().rev() {
            if queue.len() >= MAX_QUEUED {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            queue.push_front(alert);
        }
    }

    pub fn queued(&self) -> usize {
        self.queue.lock().map(|q| q.len()).unwrap_or(0)
    }

    /// Forgets keys idle for twice the usual-rate horizon: by then their usual rate has all but faded.
    pub fn sweep(&self, now: Timestamp) {
        let policy = self.policy.load();
        let horizon = policy
            .window_millis()
            .saturating_mul(i64::from(policy.usual_windows))
            .saturating_mul(2);
        let cutoff = now.as_millis().saturating_sub(horizon);
        self.keys.pin().retain(|_, usage| {
            usage
                .lock()
                .map(|u| u.last_seen() >= cutoff)
                .unwrap_or(false)
        });
    }

    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP quench_edge_usage_alerts_total Usage alerts this edge raised, by rule.\n# TYPE quench_edge_usage_alerts_total counter"
        );
        for (rule, count) in self.raised() {
            let _ = writeln!(
                out,
                "quench_edge_usage_alerts_total{{rule=\"{rule}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP quench_edge_usage_rules Usage rules in effect (from the manager's policy).\n# TYPE quench_edge_usage_rules gauge\nquench_edge_usage_rules {}",
            self.policy.load().rules.len()
        );
        let _ = writeln!(
            out,
            "# HELP quench_edge_usage_tracked_keys Keys whose usage the edge is watching.\n# TYPE quench_edge_usage_tracked_keys gauge\nquench_edge_usage_tracked_keys {}",
            self.tracked()
        );
        let _ = writeln!(
            out,
            "# HELP quench_edge_usage_untracked_total Uses not watched because max_tracked_keys was reached.\n# TYPE quench_edge_usage_untracked_total counter\nquench_edge_usage_untracked_total {}",
            self.untracked.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP quench_edge_usage_alerts_queued Alerts waiting to reach the manager.\n# TYPE quench_edge_usage_alerts_queued gauge\nquench_edge_usage_alerts_queued {}",
            self.queued()
        );
        let _ = writeln!(
            out,
            "# HELP quench_edge_usage_alerts_dropped_total Alerts dropped because the queue was full.\n# TYPE quench_edge_usage_alerts_dropped_total counter\nquench_edge_usage_alerts_dropped_total {}",
            self.dropped.load(Ordering::Relaxed)
        );
    }
}

fn alert_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        // Uniqueness only guards against double counting; a clock-based id still serves.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        bytes = nanos.to_le_bytes();
    }
    quench_core::hash::hex(&bytes)
}

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keeps the edge's usage policy current and delivers its alerts to the manager, until `cancel`.
pub async fn report(replica: Arc<Replica>, upstream: Arc<dyn Upstream>, cancel: CancellationToken) {
    let monitor = replica.usage();
    let mut policy_due = tokio::time::Instant::now();
    let mut sweep_due = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut backoff = Duration::from_millis(200);
    loop {
        let now = tokio::time::Instant::now();
        if now >= policy_due {
            policy_due = match upstream.usage_policy().await {
                Ok(policy) => {
                    monitor.set_policy(policy);
                    now + POLICY_REFRESH
                }
                Err(error) => {
                    tracing::debug!(%error, "cannot read the usage policy yet");
                    now + Duration::from_secs(2)
                }
            };
        }
        if now >= sweep_due {
            monitor.sweep(Timestamp::now());
            sweep_due = now + Duration::from_secs(u64::from(monitor.policy().window_seconds));
        }
        let alerts = monitor.take(REPORT_BATCH);
        if alerts.is_empty() {
            tokio::select! {
                () = cancel.cancelled() => return,
                () = monitor.queued.notified() => {}
                () = tokio::time::sleep_until(policy_due.min(sweep_due)) => {}
            }
            continue;
        }
        let sent = AlertReport {
            edge: replica.config().id.clone(),
            region: replica.config().region.clone(),
            alerts,
        };
        match upstream.report_alerts(&sent).await {
            Ok(()) => backoff = Duration::from_millis(200),
            Err(error) => {
                tracing::warn!(%error, alerts = sent.alerts.len(), retry_in = ?backoff,
                    "reporting usage alerts failed; retrying");
                monitor.put_back(sent.alerts);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use quench_core::usage::{Action, Condition, Measures, UsageRule};

    use super::*;

    fn policy(more_than: u64) -> UsagePolicy {
        UsagePolicy {
            rules: vec![UsageRule {
                name: "spread".into(),
                condition: Condition::DistinctAddresses { more_than },
                action: Action::Alert,
            }],
            max_tracked_keys: 2,
            ..UsagePolicy::default()
        }
    }

    #[test]
    fn raises_one_alert_per_rule_and_window() {
        let monitor = UsageMonitor::new(policy(5));
        let key = KeyId::generate().expect("id");
        let now = Timestamp::now();
        for i in 0..50u8 {
            monitor.record(key, Some(IpAddr::from([10, 0, 0, i])), now);
        }
        let alerts = monitor.take(10);
        assert_eq!(alerts.len(), 1);
        assert_eq!(alerts[0].key_id, key);
        assert_eq!(alerts[0].rule, "spread");
        assert_eq!(alerts[0].id.len(), 32);
        assert!(alerts[0].measures.distinct_addresses > 5.0);
        assert_eq!(monitor.raised().get("spread"), Some(&1));
    }

    #[test]
    fn tracks_at_most_the_configured_keys() {
        let monitor = UsageMonitor::new(policy(5));
        let now = Timestamp::now();
        for _ in 0..5 {
            monitor.record(KeyId::generate().expect("id"), None, now);
        }
        assert_eq!(monitor.tracked(), 2);
        assert_eq!(monitor.untracked.load(Ordering::Relaxed), 3);
        // Idle keys are forgotten by a sweep far enough ahead.
        monitor.sweep(Timestamp::from_millis(
            now.as_millis() + 1_000 * 60 * 60 * 24,
        ));
        assert_eq!(monitor.tracked(), 0);
    }

    #[test]
    fn a_disabled_policy_watches_nothing() {
        let monitor = UsageMonitor::default();
        monitor.record(KeyId::generate().expect("id"), None, Timestamp::now());
        assert_eq!(monitor.tracked(), 0);
    }

    #[test]
    fn the_queue_is_bounded_and_failed_reports_go_back_first() {
        let monitor = UsageMonitor::new(policy(5));
        let key = KeyId::generate().expect("id");
        let alert = |n: u32| UsageAlert {
            id: format!("{n:032x}"),
            key_id: key,
            rule: "spread".into(),
            kind: "distinct_addresses".into(),
            raised_at: Timestamp::now(),
            window_seconds: 60,
            measures: Measures {
                requests: 1.0,
                distinct_addresses: 1.0,
                usual: 0.0,
                history_windows: 0,
            },
        };
        for n in 0..(MAX_QUEUED as u32 + 3) {
            monitor.raise(alert(n));
        }
        assert_eq!(monitor.queued(), MAX_QUEUED);
        assert_eq!(monitor.dropped.load(Ordering::Relaxed), 3);
        let first = monitor.take(2);
        assert_eq!(first[0].id, format!("{:032x}", 3));
        monitor.put_back(first.clone());
        assert_eq!(monitor.take(1)[0], first[0]);
    }
}
