//! Manager counters, exposed in the Prometheus text format.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

/// Each counter's name and help text, in the order [`ManagerMetrics::counters`] lists them.
const COUNTERS: [(&str, &str); 10] = [
    ("quench_keys_created_total", "Keys issued."),
    ("quench_keys_revoked_total", "Keys revoked (each key once)."),
    ("quench_keys_rotated_total", "Keys rotated."),
    (
        "quench_leaks_revoked_total",
        "Keys revoked because a leak was reported.",
    ),
    (
        "quench_anomalies_revoked_total",
        "Keys revoked automatically by a usage rule.",
    ),
    ("quench_tokens_created_total", "Manager tokens issued."),
    (
        "quench_auth_failures_total",
        "Requests refused for a missing or invalid token.",
    ),
    (
        "quench_revocation_waits_complete_total",
        "wait=all calls every live edge confirmed in time.",
    ),
    (
        "quench_revocation_waits_timed_out_total",
        "wait=all calls that timed out.",
    ),
    (
        "quench_acks_refused_total",
        "Edge acknowledgements not counted: unregistered or wrong key, invalid names, replayed, or stamped too far from this manager's clock.",
    ),
];

#[derive(Debug, Default)]
pub struct ManagerMetrics {
    pub keys_created: AtomicU64,
    pub keys_revoked: AtomicU64,
    pub keys_rotated: AtomicU64,
    pub leaks_revoked: AtomicU64,
    pub anomalies_revoked: AtomicU64,
    pub tokens_created: AtomicU64,
    pub auth_failures: AtomicU64,
    pub waits_complete: AtomicU64,
    pub waits_timed_out: AtomicU64,
    pub acks_refused: AtomicU64,
}

impl ManagerMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        for ((name, help), counter) in COUNTERS.iter().zip(self.counters()) {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }

    /// The counters in the order of [`COUNTERS`].
    fn counters(&self) -> [&AtomicU64; COUNTERS.len()] {
        [
            &self.keys_created,
            &self.keys_revoked,
            &self.keys_rotated,
            &self.leaks_revoked,
            &self.anomalies_revoked,
            &self.tokens_created,
            &self.auth_failures,
            &self.waits_complete,
            &self.waits_timed_out,
            &self.acks_refused,
        ]
    }
}
