//! Edge counters, exposed in the Prometheus text format.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use quench_core::{Reason, Verdict};

const REASONS: [Reason; 6] = [
    Reason::Malformed,
    Reason::Unknown,
    Reason::Revoked,
    Reason::Expired,
    Reason::Forbidden,
    Reason::Stale,
];

#[derive(Debug, Default)]
pub struct EdgeMetrics {
    valid: AtomicU64,
    invalid: [AtomicU64; 6],
    pub events_applied: AtomicU64,
    pub events_duplicate: AtomicU64,
    pub gaps_repaired: AtomicU64,
    pub bootstraps: AtomicU64,
    pub upstream_errors: AtomicU64,
    /// Messages dropped for a missing or invalid signature.
    pub rejected: AtomicU64,
}

impl EdgeMetrics {
    pub fn count_verdict(&self, verdict: &Verdict) {
        let counter = match verdict.reason() {
            None => &self.valid,
            Some(reason) => &self.invalid[REASONS.iter().position(|r| *r == reason).unwrap_or(0)],
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn verdicts(&self, reason: Option<Reason>) -> u64 {
        match reason {
            None => self.valid.load(Ordering::Relaxed),
            Some(reason) => REASONS
                .iter()
                .position(|r| *r == reason)
                .map_or(0, |i| self.invalid[i].load(Ordering::Relaxed)),
        }
    }

    pub fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP quench_edge_verifications_total Keys checked, by result."
        );
        let _ = writeln!(out, "# TYPE quench_edge_verifications_total counter");
        let _ = writeln!(
            out,
            "quench_edge_verifications_total{{result=\"valid\"}} {}",
            self.valid.load(Ordering::Relaxed)
        );
        for (reason, count) in REASONS.iter().zip(&self.invalid) {
            let _ = writeln!(
                out,
                "quench_edge_verifications_total{{result=\"{}\"}} {}",
                reason.as_str(),
                count.load(Ordering::Relaxed)
            );
        }
        for (name, help, counter) in [
            (
                "quench_edge_events_applied_total",
                "Events applied to the replica.",
                &self.events_applied,
            ),
            (
                "quench_edge_events_duplicate_total",
                "Events received again and ignored.",
                &self.events_duplicate,
            ),
            (
                "quench_edge_gaps_repaired_total",
                "Times missing events were fetched from the manager's log.",
                &self.gaps_repaired,
            ),
            (
                "quench_edge_bootstraps_total",
                "Snapshots installed.",
                &self.bootstraps,
            ),
            (
                "quench_edge_rejected_messages_total",
                "Bus messages dropped for a missing or invalid signature.",
                &self.rejected,
            ),
            (
                "quench_edge_upstream_errors_total",
                "Failed calls to the manager.",
                &self.upstream_errors,
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
