//! What the propagation benchmark measured: the samples, their summary, and the result it prints.

use serde_json::{Value, json};

use super::PropagationArgs;

/// p50, p99 and max of a sample, in milliseconds.
pub(super) fn summary(samples: &mut [f64]) -> Value {
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let index = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(index).copied().unwrap_or(f64::NAN)
    };
    let round = |v: f64| (v * 1000.0).round() / 1000.0;
    json!({"n": samples.len(), "p50_ms": round(at(0.5)), "p99_ms": round(at(0.99)), "max_ms": round(at(1.0))})
}

/// What the timed revocations measured, in milliseconds.
#[derive(Debug, Default)]
pub(super) struct Samples {
    /// From the start of each revoke call to each edge applying it, per edge.
    per_edge: Vec<Vec<f64>>,
    /// ... to the last edge applying it.
    last_edge: Vec<f64>,
    /// From the commit to the last edge (when the manager reported its commit time).
    last_after_commit: Vec<f64>,
    /// From the start of the call to the commit.
    commits: Vec<f64>,
    /// The whole revoke call, `wait=all` included.
    call: Vec<f64>,
}

impl Samples {
    pub fn new(edges: usize) -> Self {
        Self {
            per_edge: vec![Vec::new(); edges],
            ..Self::default()
        }
    }

    /// Records one revocation that started at `started` (µs), committed at `committed` (µs, if known),
    /// took `call_ms`, and that edge `i` applied at `applied_at_us[i]`.
    pub fn record(
        &mut self,
        started: i64,
        committed: Option<i64>,
        call_ms: f64,
        applied_at_us: &[i64],
    ) {
        let ms = |us: i64| (us - started) as f64 / 1000.0;
        let mut slowest = 0.0f64;
        for (samples, &at) in self.per_edge.iter_mut().zip(applied_at_us) {
            samples.push(ms(at));
            slowest = slowest.max(ms(at));
        }
        self.last_edge.push(slowest);
        if let Some(committed) = committed {
            self.last_after_commit.push(slowest - ms(committed));
            self.commits.push(ms(committed));
        }
        self.call.push(call_ms);
    }

    /// The result document `--json` prints.
    pub fn report(mut self, args: &PropagationArgs, bulk: Option<Value>) -> Value {
        let mut all: Vec<f64> = self.per_edge.iter().flatten().copied().collect();
        let edges_json: Vec<Value> = self
            .per_edge
            .iter_mut()
            .enumerate()
            .map(|(i, samples)| json!({"edge": format!("bench-e{i}"), "applied": summary(samples)}))
            .collect();
        json!({
            "revoked_by": if args.leaks { "leak report" } else { "revoke call" },
            "edges": args.edges,
            "revocations": args.revocations,
            "all_edges": summary(&mut all),
            "last_edge": summary(&mut self.last_edge),
            "call_start_to_commit": summary(&mut self.commits),
            "commit_to_last_edge": summary(&mut self.last_after_commit),
            "revoke_call_with_wait_all": summary(&mut self.call),
            "per_edge": edges_json,
            "bulk": bulk,
        })
    }
}

pub(super) fn print_table(result: &Value) {
    let row = |name: &str, s: &Value| {
        println!(
            "{name:<28} {:>6} {:>10} {:>10} {:>10}",
            s["n"], s["p50_ms"], s["p99_ms"], s["max_ms"]
        );
    };
    println!(
        "propagation: {} edge(s), {} revocation(s); ms from the start of the revoke call",
        result["edges"], result["revocations"]
    );
    println!(
        "{:<28} {:>6} {:>10} {:>10} {:>10}",
        "", "n", "p50", "p99", "max"
    );
    row("every edge applied", &result["all_edges"]);
    row("last edge applied", &result["last_edge"]);
    row("  of which: until commit", &result["call_start_to_commit"]);
    row(
        "  of which: commit to last edge",
        &result["commit_to_last_edge"],
    );
    row(
        "revoke call (wait=all)",
        &result["revoke_call_with_wait_all"],
    );
    for edge in result["per_edge"].as_array().into_iter().flatten() {
        row(
            &format!("  {}", edge["edge"].as_str().unwrap_or("")),
            &edge["applied"],
        );
    }
    if !result["bulk"].is_null() {
        let bulk = &result["bulk"];
        println!(
            "bulk: {} keys revoked in one call; committed after {} ms; call {} ms; every edge enforcing after {} ms",
            bulk["revoked"], bulk["commit_ms"], bulk["call_ms"], bulk["last_edge_enforced_ms"]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::PropagationArgs;

    fn args(leaks: bool) -> PropagationArgs {
        PropagationArgs {
            edges: 2,
            revocations: 2,
            bulk: 0,
            leaks,
            nats: None,
            json: true,
        }
    }

    #[test]
    fn samples_time_each_edge_the_last_edge_and_the_commit_from_the_call_start() {
        let mut samples = Samples::new(2);
        // Started at 1 s; committed 2 ms later; the edges applied 5 ms and 9 ms after the start.
        samples.record(1_000_000, Some(1_002_000), 12.5, &[1_005_000, 1_009_000]);
        samples.record(2_000_000, None, 7.0, &[2_003_000, 2_001_000]);
        assert_eq!(samples.per_edge, [vec![5.0, 3.0], vec![9.0, 1.0]]);
        assert_eq!(samples.last_edge, [9.0, 3.0]);
        assert_eq!(
            samples.commits,
            [2.0],
            "only where the manager reported its commit"
        );
        assert_eq!(samples.last_after_commit, [7.0]);
        assert_eq!(samples.call, [12.5, 7.0]);

        let report = samples.report(&args(true), None);
        assert_eq!(report["revoked_by"], "leak report");
        assert_eq!(report["all_edges"]["n"], 4);
        assert_eq!(report["all_edges"]["max_ms"], 9.0);
        assert_eq!(report["last_edge"]["p50_ms"], 9.0);
        assert_eq!(report["per_edge"][1]["edge"], "bench-e1");
        assert_eq!(report["per_edge"][1]["applied"]["max_ms"], 9.0);
        assert!(report["bulk"].is_null());
    }

    #[test]
    fn a_summary_rounds_to_microseconds_and_survives_no_samples() {
        let mut samples = vec![3.000_4, 1.0, 2.0];
        let s = summary(&mut samples);
        assert_eq!(
            (s["n"].clone(), s["p50_ms"].clone()),
            (json!(3), json!(2.0))
        );
        assert_eq!(s["max_ms"], 3.0);
        assert_eq!(summary(&mut [])["n"], 0);
        assert_eq!(
            Samples::new(0).report(&args(false), None)["revoked_by"],
            "revoke call"
        );
    }
}
