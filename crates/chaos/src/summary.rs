//! What the campaign prints while it runs and when it ends, and the files it leaves.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    check::Violation,
    history::{Change, History, Outcome},
    settings::Args,
};

/// Prints the clients' progress every ten seconds until `duration` has passed.
pub async fn progress(history: &Mutex<History>, duration: Duration) {
    let began = Instant::now();
    let mut last = 0;
    while began.elapsed() < duration {
        let left = duration.saturating_sub(began.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(10))).await;
        if let Ok(history) = history.lock() {
            let done = history.verifications.len();
            eprintln!(
                "quench-chaos: {:>4} s: {done} verifications ({}/s lately), {} changes, {} faults healed",
                began.elapsed().as_secs(),
                (done - last) / 10,
                history.operations.len(),
                history.faults.len()
            );
            last = done;
        }
    }
}

fn kind(change: &Change) -> &'static str {
    match change {
        Change::Create { .. } => "create",
        Change::Revoke { wait_all: true, .. } => "revoke wait=all",
        Change::Revoke { .. } => "revoke",
        Change::BulkIds { .. } => "bulk revoke by ids",
        Change::BulkOwner { .. } => "bulk revoke by owner",
        Change::Rotate { .. } => "rotate",
        Change::Leak { .. } => "leak report",
    }
}

fn outcome(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Refused(_) => "refused",
        Outcome::Indeterminate(_) => "indeterminate",
    }
}

pub struct Report<'a> {
    pub seed: u64,
    pub args: &'a Args,
    pub dir: &'a Path,
    pub history: &'a History,
    pub violations: &'a [Violation],
    pub converged: bool,
    pub keep_history: bool,
}

/// Counts by name, in name order.
fn tally<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, usize> {
    names.fold(BTreeMap::new(), |mut by, name| {
        *by.entry(name).or_default() += 1;
        by
    })
}

pub fn report(report: &Report<'_>) -> anyhow::Result<()> {
    let h = report.history;
    let mut operations: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for op in &h.operations {
        *operations
            .entry(kind(&op.change))
            .or_default()
            .entry(outcome(&op.outcome))
            .or_default() += 1;
    }
    let answers = tally(h.verifications.iter().map(|v| match v.answer {
        crate::history::Answer::Valid => "valid",
        crate::history::Answer::Revoked => "revoked",
        crate::history::Answer::Expired => "expired",
        crate::history::Answer::Stale => "stale",
        crate::history::Answer::Unknown => "unknown",
        crate::history::Answer::Refused => "refused otherwise",
        crate::history::Answer::Nothing => "no answer",
    }));
    let faults = tally(
        h.faults
            .iter()
            .map(|f| f.fault.split(' ').next().unwrap_or_default()),
    );
    let span = h.verifications.iter().map(|v| v.end).max().unwrap_or(0)
        - h.verifications.iter().map(|v| v.start).min().unwrap_or(0);
    println!("quench-chaos summary (seed {})", report.seed);
    println!(
        "  keys created: {}; edges: {}",
        h.keys.len(),
        h.edges.join(", ")
    );
    println!("  changes by kind:");
    for (kind, outcomes) in &operations {
        println!("    {kind:<22} {outcomes:?}");
    }
    println!(
        "  verifications: {} in {:.0} s ({:.0}/s): {answers:?}",
        h.verifications.len(),
        span as f64 / 1e6,
        h.verifications.len() as f64 / (span.max(1) as f64 / 1e6)
    );
    println!("  faults by kind: {faults:?}");
    println!(
        "  converged after healing: {}",
        if report.converged { "yes" } else { "NO" }
    );
    println!("  violations: {}", report.violations.len());
    for v in report.violations {
        println!("    property {}: {}", v.property, v.message);
    }
    let failed = !report.violations.is_empty() || !report.converged;
    let summary = json!({
        "seed": report.seed,
        "duration_s": report.args.duration.as_secs(),
        "keys": h.keys.len(),
        "operations": operations,
        "verifications": h.verifications.len(),
        "answers": answers,
        "faults": faults,
        "converged": report.converged,
        "violations": report.violations.iter().map(|v| json!({"property": v.property, "message": v.message})).collect::<Vec<_>>(),
    });
    std::fs::write(
        report.dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)?,
    )?;
    if failed || report.keep_history {
        let path = report.dir.join("history.jsonl");
        h.write(&path)?;
        println!("  history: {}", path.display());
    }
    println!("  logs: {}", report.dir.join("logs").display());
    if failed {
        println!(
            "  FAILED: replay with scripts/chaos --seed {} --duration {}s (the fault schedule and the clients' choices follow the seed; process timing does not)",
            report.seed,
            report.args.duration.as_secs()
        );
    }
    Ok(())
}
