//! `quench bench soak` end to end, short: the report is complete and the run is clean (the long run's
//! figures are in BENCHMARKS.md).

mod support;

use serde_json::Value;

#[test]
fn a_short_soak_reports_every_interval_and_process_with_no_errors_or_violations() {
    if support::nats_server_binary().is_none() {
        assert!(!support::in_ci(), "nats-server is required in CI");
        return;
    }
    let out = std::process::Command::new(support::QUENCH)
        .args(["bench", "soak", "--duration", "5", "--interval", "1"])
        .args(["--warmup", "1", "--edges", "2", "--verify-rate", "60"])
        .args(["--revoke-rate", "2", "--keys", "10", "--json"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["errors"]["total"], 0, "{report}");
    assert_eq!(report["violations"]["count"], 0, "{report}");
    assert!(report["verify"]["n"].as_u64().is_some_and(|n| n > 0));
    assert!(
        report["revoke_to_every_edge"]["n"]
            .as_u64()
            .is_some_and(|n| n > 0)
    );
    let intervals = report["intervals"].as_array().expect("intervals");
    assert_eq!(intervals.len(), 5, "{report}");
    for interval in intervals {
        assert!(
            interval["verify"]["n"].as_u64().is_some_and(|n| n > 0),
            "{interval}"
        );
        assert!(
            interval["verify"]["p99_ms"]
                .as_f64()
                .is_some_and(|ms| ms > 0.0)
        );
    }
    let memory = report["memory"].as_array().expect("memory");
    let names: Vec<&str> = memory
        .iter()
        .filter_map(|m| m["process"].as_str())
        .collect();
    assert_eq!(names, ["manager", "edge-0", "edge-1"]);
    for process in memory {
        for field in ["start_kb", "end_kb"] {
            assert!(
                process[field].as_u64().is_some_and(|kb| kb > 0),
                "{process}"
            );
        }
        assert!(process["growth_pct"].is_f64(), "{process}");
    }
    assert_eq!(
        stderr.matches("] verify n=").count(),
        5,
        "a progress line per interval: {stderr}"
    );
}
