//! What a soak run records, and the report made from it: plain data and synchronous functions, so the
//! tests below reach every decision (which interval a sample falls in, what counts as an error, how RSS
//! growth is computed) without starting a deployment.

use std::{collections::BTreeMap, time::Duration};

use quench_api::edge::VerifyResponse;
use quench_core::Reason;
use serde::Serialize;
use serde_json::{Value, json};

use crate::bench::report::summary;

/// Why an operation of the soak failed. A revoked key answered `valid` is not among them: that is a
/// [`Violation`], counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A create or revoke call to the manager failed (connection, HTTP status or unreadable answer).
    ManagerCall,
    /// An edge's `/v1/verify` could not be reached or timed out.
    EdgeTransport,
    /// An edge answered `/v1/verify` with an HTTP error status.
    EdgeStatus,
    /// An edge's answer was not a verify response.
    EdgeUnreadable,
    /// A live key was refused, or a revoked key was refused for another reason than `revoked`.
    WrongAnswer,
    /// A revoke call with `wait=all` returned without every edge confirming it.
    Unconfirmed,
}

/// An edge answered `valid` for a key whose revocation every edge had confirmed (`wait=all`) before
/// the verify call started.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Violation {
    pub key_id: String,
    pub edge: String,
    /// From the revoke call returning to the start of the verify call that was answered `valid`.
    pub ms_after_confirmation: f64,
}

/// What one verify answer means for the soak.
#[derive(Debug, PartialEq)]
pub enum Judged {
    Right,
    /// An error of kind [`ErrorKind::WrongAnswer`], saying what was wrong.
    Wrong(String),
    Violation,
}

/// Judges an edge's answer for a key that is live, or `revoked` (every edge confirmed its revocation
/// before the call started).
pub fn judge(answer: &VerifyResponse, revoked: bool) -> Judged {
    match (revoked, answer.valid, answer.reason) {
        (false, true, _) | (true, false, Some(Reason::Revoked)) => Judged::Right,
        (true, true, _) => Judged::Violation,
        (false, false, reason) => Judged::Wrong(format!("a live key was refused ({reason:?})")),
        (true, false, reason) => Judged::Wrong(format!(
            "a revoked key was refused as {reason:?}, not as revoked"
        )),
    }
}

/// The samples and errors of one stretch of time.
#[derive(Debug, Default)]
struct Bucket {
    verify_ms: Vec<f64>,
    revoke_ms: Vec<f64>,
    errors: BTreeMap<ErrorKind, u64>,
}

impl Bucket {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// Everything a soak run saw, by interval. Times are offsets from the start of the load; the first
/// `warmup` of it is kept apart (its errors count, its latencies do not).
#[derive(Debug)]
pub struct Recorder {
    warmup: Duration,
    interval: Duration,
    warm: Bucket,
    intervals: Vec<Bucket>,
    violations: Vec<Violation>,
    /// The first message of each kind of error, so the report says what went wrong.
    first_errors: BTreeMap<ErrorKind, String>,
}

impl Recorder {
    /// A recorder for `duration` after `warmup`, cut into intervals of `interval` (the last one may be
    /// shorter).
    pub fn new(warmup: Duration, duration: Duration, interval: Duration) -> Self {
        let interval = interval.max(Duration::from_millis(1));
        let count = duration.as_micros().div_ceil(interval.as_micros()).max(1);
        Self {
            warmup,
            interval,
            warm: Bucket::default(),
            intervals: (0..count).map(|_| Bucket::default()).collect(),
            violations: Vec::new(),
            first_errors: BTreeMap::new(),
        }
    }

    /// The bucket for something that happened `at` after the load started; anything after the end
    /// (operations finishing while the load stops) goes to the last interval.
    fn bucket(&mut self, at: Duration) -> &mut Bucket {
        let Some(measured) = at.checked_sub(self.warmup) else {
            return &mut self.warm;
        };
        let last = self.intervals.len() - 1;
        let index = usize::try_from(measured.as_micros() / self.interval.as_micros())
            .map_or(last, |i| i.min(last));
        &mut self.intervals[index]
    }

    pub fn verify(&mut self, at: Duration, ms: f64) {
        self.bucket(at).verify_ms.push(ms);
    }

    /// One revocation, from the start of its revoke call until the last edge refused the key.
    pub fn revoke(&mut self, at: Duration, ms: f64) {
        self.bucket(at).revoke_ms.push(ms);
    }

    pub fn error(&mut self, at: Duration, kind: ErrorKind, message: String) {
        *self.bucket(at).errors.entry(kind).or_default() += 1;
        self.first_errors.entry(kind).or_insert(message);
    }

    pub fn violation(&mut self, violation: Violation) {
        self.violations.push(violation);
    }

    pub fn violations(&self) -> usize {
        self.violations.len()
    }

    /// Errors so far, warm-up included.
    pub fn errors(&self) -> u64 {
        self.warm.error_count() + self.intervals.iter().map(Bucket::error_count).sum::<u64>()
    }

    /// Interval `index` as the report shows it.
    pub fn interval(&self, index: usize) -> Value {
        let Some(bucket) = self.intervals.get(index) else {
            return Value::Null;
        };
        let start = self.interval.as_secs_f64() * index as f64;
        json!({
            "start_s": (start * 1000.0).round() / 1000.0,
            "verify": summary(&mut bucket.verify_ms.clone()),
            "revoke_to_every_edge": summary(&mut bucket.revoke_ms.clone()),
            "errors": bucket.error_count(),
        })
    }

    /// The whole run: errors by kind (warm-up included), violations, and the latencies overall and
    /// per interval (warm-up excluded).
    pub fn report(&self) -> Value {
        let mut by_kind: BTreeMap<ErrorKind, u64> = self.warm.errors.clone();
        for bucket in &self.intervals {
            for (kind, count) in &bucket.errors {
                *by_kind.entry(*kind).or_default() += count;
            }
        }
        let mut verify: Vec<f64> = self
            .intervals
            .iter()
            .flat_map(|b| b.verify_ms.clone())
            .collect();
        let mut revoke: Vec<f64> = self
            .intervals
            .iter()
            .flat_map(|b| b.revoke_ms.clone())
            .collect();
        json!({
            "errors": {
                "total": self.errors(),
                "during_warmup": self.warm.error_count(),
                "by_kind": by_kind,
                "first_message": self.first_errors,
            },
            "violations": {"count": self.violations.len(), "list": self.violations},
            "verify": summary(&mut verify),
            "revoke_to_every_edge": summary(&mut revoke),
            "intervals": (0..self.intervals.len()).map(|i| self.interval(i)).collect::<Vec<_>>(),
        })
    }
}

/// Resident memory of one process of the deployment, after the warm-up and at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub process: String,
    pub pid: u32,
    pub start_kb: Option<u64>,
    pub end_kb: Option<u64>,
}

impl Memory {
    /// The growth from start to end in percent, when both were read.
    pub fn growth_pct(&self) -> Option<f64> {
        let (start, end) = (self.start_kb?, self.end_kb?);
        if start == 0 {
            return None;
        }
        let pct = (end as f64 - start as f64) / start as f64 * 100.0;
        Some((pct * 100.0).round() / 100.0)
    }

    pub fn report(&self) -> Value {
        let mut value = json!(self);
        value["growth_pct"] = json!(self.growth_pct());
        value
    }
}

/// `VmRSS` from the text of `/proc/<pid>/status`, in kB.
pub fn vm_rss_kb(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let value = line.trim_start_matches("VmRSS:").trim();
    value.strip_suffix("kB")?.trim().parse().ok()
}

/// The resident memory of process `pid` now, in kB (None once it is gone).
pub fn rss_kb(pid: u32) -> Option<u64> {
    vm_rss_kb(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn samples_fall_into_warmup_their_interval_or_the_last_one() {
        let mut recorder = Recorder::new(2 * S, 3 * S, S);
        recorder.verify(S, 100.0);
        recorder.verify(2 * S, 1.0);
        recorder.verify(Duration::from_millis(3_500), 2.0);
        recorder.revoke(Duration::from_millis(4_999), 3.0);
        recorder.verify(9 * S, 4.0);
        let report = recorder.report();
        assert_eq!(report["verify"]["n"], 3, "the warm-up sample is left out");
        assert_eq!(report["verify"]["max_ms"], 4.0);
        let intervals = report["intervals"].as_array().expect("intervals");
        assert_eq!(intervals.len(), 3);
        assert_eq!(intervals[0]["verify"]["max_ms"], 1.0);
        assert_eq!(intervals[1]["verify"]["max_ms"], 2.0);
        assert_eq!(
            intervals[2]["verify"]["n"], 1,
            "a late sample joins the last interval"
        );
        assert_eq!(intervals[2]["revoke_to_every_edge"]["max_ms"], 3.0);
        assert_eq!(intervals[2]["start_s"], 2.0);
    }

    #[test]
    fn errors_count_by_kind_warmup_included_and_keep_their_first_message() {
        let mut recorder = Recorder::new(S, Duration::from_millis(2_500), S);
        recorder.error(Duration::ZERO, ErrorKind::EdgeStatus, "503 busy".into());
        recorder.error(2 * S, ErrorKind::EdgeStatus, "500".into());
        recorder.error(2 * S, ErrorKind::Unconfirmed, "not complete".into());
        assert_eq!(recorder.errors(), 3);
        let report = recorder.report();
        assert_eq!(report["errors"]["total"], 3);
        assert_eq!(report["errors"]["during_warmup"], 1);
        assert_eq!(report["errors"]["by_kind"]["edge_status"], 2);
        assert_eq!(report["errors"]["first_message"]["edge_status"], "503 busy");
        assert_eq!(report["intervals"].as_array().map(Vec::len), Some(3));
        assert_eq!(report["intervals"][1]["errors"], 2);
        assert_eq!(report["violations"]["count"], 0);
    }

    #[test]
    fn violations_are_listed_apart_from_errors() {
        let mut recorder = Recorder::new(S, S, S);
        recorder.violation(Violation {
            key_id: "k1".into(),
            edge: "http://127.0.0.1:1".into(),
            ms_after_confirmation: 4.5,
        });
        let report = recorder.report();
        assert_eq!(recorder.violations(), 1);
        assert_eq!(report["errors"]["total"], 0);
        assert_eq!(report["violations"]["list"][0]["key_id"], "k1");
    }

    #[test]
    fn live_keys_must_be_valid_and_revoked_ones_refused_as_revoked() {
        let answer = |valid, reason| VerifyResponse {
            valid,
            reason,
            key_id: None,
            owner: None,
            scopes: None,
        };
        assert_eq!(judge(&answer(true, None), false), Judged::Right);
        assert_eq!(
            judge(&answer(false, Some(Reason::Revoked)), true),
            Judged::Right
        );
        assert_eq!(judge(&answer(true, None), true), Judged::Violation);
        for (reason, revoked) in [
            (Reason::Stale, false),
            (Reason::Revoked, false),
            (Reason::Stale, true),
        ] {
            assert!(matches!(
                judge(&answer(false, Some(reason)), revoked),
                Judged::Wrong(_)
            ));
        }
    }

    #[test]
    fn rss_is_read_from_proc_status_and_its_growth_is_in_percent() {
        let status = "Name:\tquench\nVmPeak:\t  9000 kB\nVmRSS:\t   20480 kB\nThreads:\t4\n";
        assert_eq!(vm_rss_kb(status), Some(20_480));
        assert_eq!(vm_rss_kb("Name:\tquench\n"), None);
        assert_eq!(vm_rss_kb("VmRSS:\tlots\n"), None);
        let memory = |start, end| Memory {
            process: "edge-0".into(),
            pid: 1,
            start_kb: start,
            end_kb: end,
        };
        assert_eq!(memory(Some(1000), Some(1032)).growth_pct(), Some(3.2));
        assert_eq!(memory(Some(1000), Some(990)).growth_pct(), Some(-1.0));
        assert_eq!(memory(Some(1000), None).growth_pct(), None);
        assert_eq!(memory(Some(0), Some(5)).growth_pct(), None);
        assert!(rss_kb(std::process::id()).is_some_and(|kb| kb > 0));
    }
}
