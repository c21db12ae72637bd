//! Manager counters, exposed in the Prometheus text format.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

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
        for (name, help, counter) in [
            (
                "quench_keys_created_total",
                "Keys issued.",
                &self.keys_created,
            ),
            (
                "quench_keys_revoked_total",
                "Keys revoked (each key once).",
                &self.keys_revoked,
            ),
            (
                "quench_keys_rotated_total",
                "Keys rotated.",
                &self.keys_rotated,
            ),
            (
                "quench_leaks_revoked_total",
                "Keys revoked because a leak was reported.",
                &self.leaks_revoked,
            ),
            (
                "quench_anomalies_revoked_total",
                "Keys revoked automatically by a usage rule.",
                &self.anomalies_revoked,
            ),
            (
                "quench_tokens_created_total",
                "Manager tokens issued.",
                &self.tokens_created,
            ),
            (
                "quench_auth_failures_total",
                "Requests refused for a missing or invalid token.",
                &self.auth_failures,
            ),
            (
                "quench_revocation_waits_complete_total",
                "wait=all calls every live edge confirmed in time.",
                &self.waits_complete,
            ),
            (
                "quench_revocation_waits_timed_out_total",
                "wait=all calls that timed out.",
                &self.waits_timed_out,
            ),
            (
                "quench_acks_refused_total",
                "Edge acknowledgements not counted: unregistered or wrong key, invalid names, replayed, or stamped too far from this manager's clock.",
                &self.acks_refused,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.load(Ordering::Relaxed)
            );
        }
    }
}
