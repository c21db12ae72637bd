//! What a soak run prints: a progress line on stderr per interval, and the report (JSON or a table).

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Load, SoakArgs, record::Memory, rss_kb, settings};

/// Prints one progress line per interval, from `measured` until `until`.
pub(super) async fn progress_until(
    load: &Load,
    pids: &[(String, u32)],
    measured: Instant,
    interval: std::time::Duration,
    until: Instant,
) {
    for index in 0.. {
        let end = (measured + interval * (index + 1)).min(until);
        tokio::time::sleep_until(end).await;
        let (summary, violations, errors) =
            load.record(|r| (r.interval(index as usize), r.violations(), r.errors()));
        let rss: Vec<String> = pids
            .iter()
            .map(|(name, pid)| format!("{name} {}", rss_kb(*pid).unwrap_or(0)))
            .collect();
        eprintln!(
            "[{:>5.0} s] verify {}; revoke to every edge {}; errors {} ({errors} in all); violations {violations}; RSS kB: {}",
            (end - measured).as_secs_f64(),
            brief(&summary["verify"]),
            brief(&summary["revoke_to_every_edge"]),
            summary["errors"],
            rss.join(", "),
        );
        if end >= until {
            return;
        }
    }
}

/// `n=…, p50/p99/max …` of a latency summary.
fn brief(summary: &Value) -> String {
    format!(
        "n={} p50/p99/max {}/{}/{} ms",
        summary["n"], summary["p50_ms"], summary["p99_ms"], summary["max_ms"]
    )
}

/// The report `--json` prints: the settings, what the recorder saw, the rates reached and the memory.
pub(super) fn report(args: &SoakArgs, load: &Load, memory: &[Memory]) -> Value {
    let mut report = settings(args);
    let recorded = load.record(|r| r.report());
    if let (Some(report), Some(recorded)) = (report.as_object_mut(), recorded.as_object()) {
        report.extend(recorded.clone());
    }
    let per_s = |n: &Value| n.as_f64().unwrap_or(0.0) / args.duration as f64;
    report["achieved_verify_per_s"] = json!(per_s(&report["verify"]["n"]));
    report["achieved_revoke_per_s"] = json!(per_s(&report["revoke_to_every_edge"]["n"]));
    report["memory"] = memory.iter().map(Memory::report).collect();
    let growth = memory
        .iter()
        .filter_map(Memory::growth_pct)
        .reduce(f64::max);
    report["max_rss_growth_pct"] = json!(growth);
    let clean = report["errors"]["total"] == 0 && report["violations"]["count"] == 0;
    report["ok"] = json!(clean);
    report
}

pub(super) fn print_report(report: &Value) {
    println!(
        "soak: {} s after {} s of warm-up, {} edge(s); verify {}/s asked, {:.1}/s done; revoke {}/s asked, {:.2}/s done",
        report["duration_s"],
        report["warmup_s"],
        report["edges"],
        report["verify_rate"],
        report["achieved_verify_per_s"].as_f64().unwrap_or(0.0),
        report["revoke_rate"],
        report["achieved_revoke_per_s"].as_f64().unwrap_or(0.0),
    );
    print_errors(report);
    print_intervals(report);
    print_memory(report);
}

fn print_errors(report: &Value) {
    let errors = &report["errors"];
    println!(
        "errors: {} ({} during warm-up) by kind {}",
        errors["total"], errors["during_warmup"], errors["by_kind"]
    );
    for (kind, message) in errors["first_message"].as_object().into_iter().flatten() {
        println!("  first {kind}: {}", message.as_str().unwrap_or(""));
    }
    println!("violations: {}", report["violations"]["count"]);
    for violation in report["violations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        println!("  {violation}");
    }
}

/// Latency percentiles and errors per interval, and overall.
fn print_intervals(report: &Value) {
    println!(
        "{:<10} {:>8} {:>9} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>7}",
        "from (s)", "verify", "p50", "p99", "max", "revoke", "p50", "p99", "max", "errors"
    );
    let row = |from: &str, verify: &Value, revoke: &Value, errors: &Value| {
        // A JSON value ignores width and alignment: each cell is made a string first.
        let [vn, v50, v99, vmax, rn, r50, r99, rmax] = [
            &verify["n"],
            &verify["p50_ms"],
            &verify["p99_ms"],
            &verify["max_ms"],
            &revoke["n"],
            &revoke["p50_ms"],
            &revoke["p99_ms"],
            &revoke["max_ms"],
        ]
        .map(Value::to_string);
        println!(
            "{from:<10} {vn:>8} {v50:>9} {v99:>9} {vmax:>9} {rn:>7} {r50:>9} {r99:>9} {rmax:>9} {:>7}",
            errors.to_string()
        );
    };
    for interval in report["intervals"].as_array().into_iter().flatten() {
        let from = interval["start_s"].to_string();
        let revoke = &interval["revoke_to_every_edge"];
        row(&from, &interval["verify"], revoke, &interval["errors"]);
    }
    let revoke = &report["revoke_to_every_edge"];
    row(
        "overall",
        &report["verify"],
        revoke,
        &report["errors"]["total"],
    );
}

fn print_memory(report: &Value) {
    println!("resident memory (kB, after the warm-up and at the end):");
    for memory in report["memory"].as_array().into_iter().flatten() {
        println!(
            "  {:<10} pid {:<8} {:>9} -> {:>9}  growth {} %",
            memory["process"].as_str().unwrap_or(""),
            memory["pid"].to_string(),
            memory["start_kb"].to_string(),
            memory["end_kb"].to_string(),
            memory["growth_pct"]
        );
    }
}
