//! What the propagation benchmark measured: the samples, their summary, and the result it prints.

use serde_json::{Value, json};

use super::{PropagationArgs, regions::Region};

/// How far above its one-way latency (the physical floor) a region's p99 may be: the target.
pub(super) const REGION_TARGET_OVER_FLOOR_MS: f64 = 5.0;

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
    /// With `--regions`: each region, and per revocation the time to its last edge applying it.
    regions: Vec<(Region, Vec<f64>)>,
}

impl Samples {
    pub fn new(edges: usize, regions: Vec<Region>) -> Self {
        Self {
            per_edge: vec![Vec::new(); edges],
            regions: regions.into_iter().map(|r| (r, Vec::new())).collect(),
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
        for (region, samples) in &mut self.regions {
            let last = applied_at_us
                .get(region.edges.clone())
                .into_iter()
                .flatten();
            samples.push(last.map(|&at| ms(at)).fold(0.0, f64::max));
        }
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
            .map(|(i, samples)| json!({"edge": edge_id(&self.regions, i), "applied": summary(samples)}))
            .collect();
        json!({
            "revoked_by": if args.leaks { "leak report" } else { "revoke call" },
            "edges": self.per_edge.len(),
            "revocations": args.revocations,
            "all_edges": summary(&mut all),
            "last_edge": summary(&mut self.last_edge),
            "call_start_to_commit": summary(&mut self.commits),
            "commit_to_last_edge": summary(&mut self.last_after_commit),
            "revoke_call_with_wait_all": summary(&mut self.call),
            "per_edge": edges_json,
            "regions": self.regions.iter_mut().map(|(r, s)| region_report(r, s)).collect::<Vec<_>>(),
            "bulk": bulk,
        })
    }
}

/// The id the benchmark gave edge `i`: `bench-e<i>`, or `bench-<region>-e<j>` with `--regions`.
fn edge_id(regions: &[(Region, Vec<f64>)], i: usize) -> String {
    match regions.iter().find(|(r, _)| r.edges.contains(&i)) {
        Some((region, _)) => format!("bench-{}-e{}", region.name, i - region.edges.start),
        None => format!("bench-e{i}"),
    }
}

/// A region's figures next to its one-way latency (the floor) and whether its p99 meets the target.
fn region_report(region: &Region, samples: &mut [f64]) -> Value {
    let last_edge = summary(samples);
    let target = region.latency_ms as f64 + REGION_TARGET_OVER_FLOOR_MS;
    let met = last_edge["p99_ms"]
        .as_f64()
        .is_some_and(|p99| p99 <= target);
    json!({
        "region": region.name,
        "one_way_latency_ms": region.latency_ms,
        "edges": region.edges.len(),
        "last_edge": last_edge,
        "target_p99_ms": target,
        "target_met": met,
    })
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
    print_regions(result, row);
    if !result["bulk"].is_null() {
        let bulk = &result["bulk"];
        println!(
            "bulk: {} keys revoked in one call; committed after {} ms; call {} ms; every edge enforcing after {} ms",
            bulk["revoked"], bulk["commit_ms"], bulk["call_ms"], bulk["last_edge_enforced_ms"]
        );
    }
}

fn print_regions(result: &Value, row: impl Fn(&str, &Value)) {
    for region in result["regions"].as_array().into_iter().flatten() {
        row(
            &format!(
                "region {} ({} ms one-way)",
                region["region"].as_str().unwrap_or(""),
                region["one_way_latency_ms"]
            ),
            &region["last_edge"],
        );
        let met = if region["target_met"] == true {
            "met"
        } else {
            "NOT met"
        };
        println!(
            "  target p99 <= {} ms (one-way + {REGION_TARGET_OVER_FLOOR_MS}): {met}",
            region["target_p99_ms"]
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
            regions: Vec::new(),
            json: true,
        }
    }

    #[test]
    fn samples_time_each_edge_the_last_edge_and_the_commit_from_the_call_start() {
        let mut samples = Samples::new(2, Vec::new());
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
    fn each_region_is_timed_to_its_own_last_edge_and_judged_against_its_latency() {
        let region = |name: &str, latency_ms, edges| Region {
            name: name.into(),
            latency_ms,
            edges,
        };
        let mut samples = Samples::new(3, vec![region("r0", 40, 0..1), region("r1", 80, 1..3)]);
        // r0's edge applied after 44 ms; r1's edges after 70 and 90 ms.
        samples.record(1_000_000, None, 95.0, &[1_044_000, 1_070_000, 1_090_000]);
        let report = samples.report(&args(false), None);
        let regions = report["regions"].as_array().expect("regions");
        assert_eq!(regions[0]["last_edge"]["max_ms"], 44.0);
        assert_eq!(regions[0]["target_p99_ms"], 45.0);
        assert_eq!(regions[0]["target_met"], true);
        assert_eq!(regions[1]["edges"], 2);
        assert_eq!(regions[1]["last_edge"]["p50_ms"], 90.0);
        assert_eq!(regions[1]["target_met"], false, "90 ms is over 80 + 5");
        assert_eq!(report["last_edge"]["max_ms"], 90.0);
        assert_eq!(report["edges"], 3);
        assert_eq!(report["per_edge"][2]["edge"], "bench-r1-e1");
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
            Samples::new(0, Vec::new()).report(&args(false), None)["revoked_by"],
            "revoke call"
        );
    }
}
