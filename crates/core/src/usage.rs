//! Usage anomalies: what an edge watches per key, in bounded memory, and the rules that turn it into alerts.
//!
//! Per key an edge keeps two adjacent windows of `window_seconds` (the current one and the one before it):
//! a request count and a HyperLogLog sketch of client addresses for each, plus the key's *usual* requests
//! per window (an exponentially weighted average over completed windows). Measures are over a *sliding*
//! window of the same length, estimated the usual way: everything in the current window plus the previous
//! window's share that still overlaps the sliding one (`1 - elapsed fraction`). For addresses the share is
//! of the addresses seen only in the previous window (the union's estimate minus the current one's).
//!
//! A sketch has 128 one-byte registers (standard error about 9 %; small counts are estimated by linear
//! counting and are close to exact), so a tracked key costs about 300 bytes whatever its traffic.
//!
//! A rule fires at most once per key per window; [`UsagePolicy`] says what happens then (an alert, or an
//! alert and a revocation, decided by the manager).

use serde::{Deserialize, Serialize};

/// Registers per sketch: 2^7.
const REGISTERS: usize = 128;
const INDEX_BITS: u32 = 7;

/// A HyperLogLog cardinality sketch over 64-bit hashes.
#[derive(Clone, PartialEq, Eq)]
pub struct Sketch([u8; REGISTERS]);

impl Default for Sketch {
    fn default() -> Self {
        Self([0; REGISTERS])
    }
}

impl std::fmt::Debug for Sketch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sketch(~{:.0})", self.estimate())
    }
}

impl Sketch {
    /// Adds a (well-mixed) hash; `true` when a register changed, i.e. the estimate may have moved.
    pub fn insert(&mut self, hash: u64) -> bool {
        let index = (hash >> (64 - INDEX_BITS)) as usize;
        // The remaining 57 bits, with a stop bit so the rank is at most 58.
        let rest = (hash << INDEX_BITS) | (1 << (INDEX_BITS - 1));
        let rank = (rest.leading_zeros() + 1) as u8;
        if rank > self.0[index] {
            self.0[index] = rank;
            true
        } else {
            false
        }
    }

    pub fn clear(&mut self) {
        self.0 = [0; REGISTERS];
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&r| r == 0)
    }

    /// The estimated number of distinct hashes inserted into `self` or `other`.
    pub fn union_estimate(&self, other: &Sketch) -> f64 {
        estimate(self.0.iter().zip(other.0.iter()).map(|(a, b)| *a.max(b)))
    }

    pub fn estimate(&self) -> f64 {
        estimate(self.0.iter().copied())
    }
}

fn estimate(registers: impl Iterator<Item = u8>) -> f64 {
    let m = REGISTERS as f64;
    let mut sum = 0.0;
    let mut zeros = 0u32;
    for r in registers {
        sum += f64::powi(2.0, -i32::from(r));
        zeros += u32::from(r == 0);
    }
    let alpha = 0.7213 / (1.0 + 1.079 / m);
    let raw = alpha * m * m / sum;
    if raw <= 2.5 * m && zeros > 0 {
        // Linear counting: far more accurate while many registers are still empty.
        m * (m / f64::from(zeros)).ln()
    } else {
        raw
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("usage policy: {0}")]
    Invalid(String),
    #[error("usage policy is not valid JSON: {0}")]
    Json(String),
}

/// The usage rules every edge applies, and the windows they apply over. Held by the manager (its
/// `--usage-policy` file, or [`UsagePolicy::default`]) and fetched by every edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsagePolicy {
    /// Length of the sliding window every rule measures over.
    #[serde(default = "default_window")]
    pub window_seconds: u32,
    /// How many windows a key's usual rate averages over (the weight of a new window is 1/this).
    #[serde(default = "default_usual_windows")]
    pub usual_windows: u32,
    /// Most keys an edge tracks at once; past it, keys not yet tracked are not watched until idle ones
    /// are dropped. Bounds the monitor's memory at about 300 bytes a key.
    #[serde(default = "default_max_tracked")]
    pub max_tracked_keys: usize,
    #[serde(default)]
    pub rules: Vec<UsageRule>,
}

fn default_window() -> u32 {
    60
}
fn default_usual_windows() -> u32 {
    60
}
fn default_max_tracked() -> usize {
    100_000
}

/// Most rules a policy may hold (a key's "already fired this window" set is one 32-bit mask).
pub const MAX_RULES: usize = 32;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RuleDocument", into = "RuleDocument")]
pub struct UsageRule {
    /// `[a-z0-9_-]`, at most 64 characters: appears in alerts, metrics and webhooks.
    pub name: String,
    pub condition: Condition,
    pub action: Action,
}

/// A rule as written: one flat object, so a misspelt field is an error rather than silently ignored
/// (serde cannot refuse unknown fields through a flattened enum).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDocument {
    name: String,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    more_than: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    min_history_windows: Option<u32>,
    #[serde(default)]
    action: Action,
}

impl TryFrom<RuleDocument> for UsageRule {
    type Error = String;

    fn try_from(doc: RuleDocument) -> Result<Self, String> {
        let name = doc.name;
        let need = |field: &str| format!("rule {name:?} ({}) needs {field}", doc.kind);
        let stray = |fields: &[(&str, bool)]| {
            fields
                .iter()
                .find(|(_, present)| *present)
                .map(|(field, _)| format!("rule {name:?} ({}) takes no {field}", doc.kind))
        };
        let condition = match doc.kind.as_str() {
            "distinct_addresses" | "requests" => {
                if let Some(e) = stray(&[
                    ("factor", doc.factor.is_some()),
                    ("min_requests", doc.min_requests.is_some()),
                    ("min_history_windows", doc.min_history_windows.is_some()),
                ]) {
                    return Err(e);
                }
                let more_than = doc.more_than.ok_or_else(|| need("more_than"))?;
                if doc.kind == "requests" {
                    Condition::Requests { more_than }
                } else {
                    Condition::DistinctAddresses { more_than }
                }
            }
            "above_usual" => {
                if let Some(e) = stray(&[("more_than", doc.more_than.is_some())]) {
                    return Err(e);
                }
                Condition::AboveUsual {
                    factor: doc.factor.ok_or_else(|| need("factor"))?,
                    min_requests: doc.min_requests.ok_or_else(|| need("min_requests"))?,
                    min_history_windows: doc.min_history_windows.unwrap_or(DEFAULT_MIN_HISTORY),
                }
            }
            other => {
                return Err(format!(
                    "rule {name:?}: unknown kind {other:?}; use distinct_addresses, requests or above_usual"
                ));
            }
        };
        Ok(Self {
            name,
            condition,
            action: doc.action,
        })
    }
}

impl From<UsageRule> for RuleDocument {
    fn from(rule: UsageRule) -> Self {
        let mut doc = RuleDocument {
            name: rule.name,
            kind: rule.condition.kind().into(),
            more_than: None,
            factor: None,
            min_requests: None,
            min_history_windows: None,
            action: rule.action,
        };
        match rule.condition {
            Condition::DistinctAddresses { more_than } | Condition::Requests { more_than } => {
                doc.more_than = Some(more_than);
            }
            Condition::AboveUsual {
                factor,
                min_requests,
                min_history_windows,
            } => {
                doc.factor = Some(factor);
                doc.min_requests = Some(min_requests);
                doc.min_history_windows = Some(min_history_windows);
            }
        }
        doc
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// More than this many distinct client addresses used the key in the window.
    DistinctAddresses { more_than: u64 },
    /// More than this many requests in the window.
    Requests { more_than: u64 },
    /// Requests in the window above `factor` times the key's usual, once the key has been watched for
    /// `min_history_windows` windows and only at `min_requests` or more (so a quiet key's tenth request
    /// is not an anomaly).
    AboveUsual {
        factor: f64,
        min_requests: u64,
        min_history_windows: u32,
    },
}

const DEFAULT_MIN_HISTORY: u32 = 10;

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::DistinctAddresses { .. } => "distinct_addresses",
            Self::Requests { .. } => "requests",
            Self::AboveUsual { .. } => "above_usual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Record an alert and notify.
    #[default]
    Alert,
    /// Also revoke the key at once (reason `anomaly`).
    Revoke,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Revoke => "revoke",
        }
    }
}

impl Default for UsagePolicy {
    /// Alerts only, nothing revoked automatically: a key used from more than 50 addresses in a minute,
    /// or at more than ten times its usual rate (and at least 600 requests a minute).
    fn default() -> Self {
        Self {
            window_seconds: default_window(),
            usual_windows: default_usual_windows(),
            max_tracked_keys: default_max_tracked(),
            rules: vec![
                UsageRule {
                    name: "many-addresses".into(),
                    condition: Condition::DistinctAddresses { more_than: 50 },
                    action: Action::Alert,
                },
                UsageRule {
                    name: "rate-spike".into(),
                    condition: Condition::AboveUsual {
                        factor: 10.0,
                        min_requests: 600,
                        min_history_windows: DEFAULT_MIN_HISTORY,
                    },
                    action: Action::Alert,
                },
            ],
        }
    }
}

impl UsagePolicy {
    /// Parses and checks a policy document.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let policy: Self =
            serde_json::from_str(text).map_err(|e| PolicyError::Json(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// No rules at all: nothing is watched.
    pub fn disabled() -> Self {
        Self {
            rules: Vec::new(),
            ..Self::default()
        }
    }

    pub fn is_enabled(&self) -> bool {
        !self.rules.is_empty() && self.max_tracked_keys > 0
    }

    pub fn rule(&self, name: &str) -> Option<&UsageRule> {
        self.rules.iter().find(|r| r.name == name)
    }

    pub fn window_millis(&self) -> i64 {
        i64::from(self.window_seconds) * 1000
    }

    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |m: String| Err(PolicyError::Invalid(m));
        if !(1..=86_400).contains(&self.window_seconds) {
            return bad("window_seconds must be between 1 and 86400".into());
        }
        if !(1..=100_000).contains(&self.usual_windows) {
            return bad("usual_windows must be between 1 and 100000".into());
        }
        if self.max_tracked_keys > 100_000_000 {
            return bad("max_tracked_keys must be at most 100000000".into());
        }
        if self.rules.len() > MAX_RULES {
            return bad(format!("at most {MAX_RULES} rules"));
        }
        for (i, rule) in self.rules.iter().enumerate() {
            let name_ok = !rule.name.is_empty()
                && rule.name.len() <= 64
                && rule.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return bad(format!(
                    "rule name {:?} must be 1 to 64 of a-z, 0-9, - and _",
                    rule.name
                ));
            }
            if self.rules[..i].iter().any(|r| r.name == rule.name) {
                return bad(format!("two rules are named {:?}", rule.name));
            }
            if let Condition::AboveUsual { factor, .. } = rule.condition
                && !(factor.is_finite() && factor > 1.0)
            {
                return bad(format!("rule {:?}: factor must be above 1", rule.name));
            }
        }
        Ok(())
    }
}

/// What a key's traffic looked like when a rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measures {
    /// Requests in the sliding window (estimated).
    pub requests: f64,
    /// Distinct client addresses in the sliding window (estimated).
    pub distinct_addresses: f64,
    /// The key's usual requests per window.
    pub usual: f64,
    /// Completed windows the key has been watched for.
    #[serde(deserialize_with = "crate::whole::u32")]
    pub history_windows: u32,
}

/// One key's recent traffic, as an edge tracks it.
#[derive(Debug, Clone)]
pub struct KeyUsage {
    /// Start of the current window, in milliseconds since the epoch (a multiple of the window length).
    window_start: i64,
    current: u32,
    previous: u32,
    current_addresses: Sketch,
    previous_addresses: Sketch,
    /// Cached estimates, refreshed when a sketch changes: `|current|` and `|current ∪ previous|`.
    current_distinct: f32,
    union_distinct: f32,
    usual: f32,
    history: u32,
    /// Rules (by index) that fired in the current window.
    fired: u32,
    last_seen: i64,
}

impl KeyUsage {
    pub fn new(now_ms: i64, policy: &UsagePolicy) -> Self {
        let window = policy.window_millis();
        Self {
            window_start: now_ms - now_ms.rem_euclid(window),
            current: 0,
            previous: 0,
            current_addresses: Sketch::default(),
            previous_addresses: Sketch::default(),
            current_distinct: 0.0,
            union_distinct: 0.0,
            usual: 0.0,
            history: 0,
            fired: 0,
            last_seen: now_ms,
        }
    }

    pub fn last_seen(&self) -> i64 {
        self.last_seen
    }

    /// Counts one request at `now_ms` from a client whose address hashes to `address` (if known) and
    /// returns the rules (as a bit mask of indexes into `policy.rules`) that fire because of it, with the
    /// measures they saw. A rule that already fired this window does not fire again.
    pub fn record(
        &mut self,
        now_ms: i64,
        address: Option<u64>,
        policy: &UsagePolicy,
    ) -> Option<(u32, Measures)> {
        self.roll(now_ms, policy);
        self.last_seen = self.last_seen.max(now_ms);
        self.current = self.current.saturating_add(1);
        if let Some(hash) = address
            && self.current_addresses.insert(hash)
        {
            self.current_distinct = self.current_addresses.estimate() as f32;
            self.union_distinct = self
                .current_addresses
                .union_estimate(&self.previous_addresses) as f32;
        }
        let measures = self.measures(now_ms, policy);
        let mut fires = 0u32;
        for (i, rule) in policy.rules.iter().enumerate().take(MAX_RULES) {
            let bit = 1u32 << i;
            if self.fired & bit == 0 && breaks(rule.condition, &measures) {
                fires |= bit;
            }
        }
        self.fired |= fires;
        (fires != 0).then_some((fires, measures))
    }

    /// The sliding window's measures at `now_ms` (which must not precede the current window).
    pub fn measures(&self, now_ms: i64, policy: &UsagePolicy) -> Measures {
        let window = policy.window_millis();
        let passed = (now_ms - self.window_start).div_euclid(window);
        let elapsed = (now_ms - self.window_start).rem_euclid(window) as f64 / window as f64;
        let carried = 1.0 - elapsed;
        let current_distinct = f64::from(self.current_distinct);
        let only_previous = (f64::from(self.union_distinct) - current_distinct).max(0.0);
        let (requests, distinct_addresses) = match passed {
            // Not rolled yet: what is current now is the previous window of the sliding one.
            1 => (
                f64::from(self.current) * carried,
                current_distinct * carried,
            ),
            p if p >= 2 => (0.0, 0.0),
            _ => (
                f64::from(self.current) + f64::from(self.previous) * carried,
                current_distinct + only_previous * carried,
            ),
        };
        Measures {
            requests,
            distinct_addresses,
            usual: f64::from(self.usual),
            history_windows: self.history,
        }
    }

    /// Moves the windows forward to the one holding `now_ms`, folding completed windows into the usual.
    fn roll(&mut self, now_ms: i64, policy: &UsagePolicy) {
        let window = policy.window_millis();
        if now_ms < self.window_start + window {
            return;
        }
        let passed = (now_ms - self.window_start) / window;
        let weight = 1.0 / policy.usual_windows as f32;
        // The window that just ended, then any empty ones after it.
        self.usual += weight * (self.current as f32 - self.usual);
        let empty = (passed - 1).min(i64::from(policy.usual_windows) * 8) as i32;
        self.usual *= (1.0 - weight).powi(empty);
        self.history = self
            .history
            .saturating_add(u32::try_from(passed).unwrap_or(u32::MAX));
        if passed == 1 {
            self.previous = self.current;
            std::mem::swap(&mut self.previous_addresses, &mut self.current_addresses);
            self.union_distinct = self.current_distinct;
        } else {
            self.previous = 0;
            self.previous_addresses.clear();
            self.union_distinct = 0.0;
        }
        self.current = 0;
        self.current_addresses.clear();
        self.current_distinct = 0.0;
        self.fired = 0;
        self.window_start += passed * window;
    }
}

fn breaks(condition: Condition, m: &Measures) -> bool {
    match condition {
        Condition::DistinctAddresses { more_than } => m.distinct_addresses > more_than as f64,
        Condition::Requests { more_than } => m.requests > more_than as f64,
        Condition::AboveUsual {
            factor,
            min_requests,
            min_history_windows,
        } => {
            m.history_windows >= min_history_windows
                && m.requests >= min_requests as f64
                && m.requests > factor * m.usual
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(i: u64) -> u64 {
        // SplitMix64: a good spread for test inputs.
        let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn sketch_estimates_within_its_error() {
        for n in [1u64, 10, 50, 200, 1_000, 10_000, 100_000] {
            let mut sketch = Sketch::default();
            for i in 0..n {
                sketch.insert(mix(i));
            }
            let estimate = sketch.estimate();
            let error = (estimate - n as f64).abs() / n as f64;
            // Three standard errors (1.04 / sqrt(128) = 9.2 %).
            assert!(error < 0.28, "n = {n}: estimate {estimate}");
        }
    }

    #[test]
    fn small_counts_are_nearly_exact() {
        let mut sketch = Sketch::default();
        for i in 0..20 {
            sketch.insert(mix(i));
        }
        assert!((sketch.estimate() - 20.0).abs() < 2.5, "{sketch:?}");
    }

    #[test]
    fn duplicates_do_not_count() {
        let mut sketch = Sketch::default();
        for _ in 0..1_000 {
            sketch.insert(mix(7));
        }
        assert!((sketch.estimate() - 1.0).abs() < 0.1);
        assert!(!sketch.insert(mix(7)));
    }

    #[test]
    fn union_counts_both() {
        let (mut a, mut b) = (Sketch::default(), Sketch::default());
        for i in 0..30 {
            a.insert(mix(i));
            b.insert(mix(i + 15));
        }
        let union = a.union_estimate(&b);
        assert!((union - 45.0).abs() < 6.0, "{union}");
    }

    fn policy(rules: Vec<UsageRule>) -> UsagePolicy {
        let policy = UsagePolicy {
            window_seconds: 60,
            usual_windows: 10,
            max_tracked_keys: 1000,
            rules,
        };
        policy.validate().expect("valid");
        policy
    }

    fn rule(name: &str, condition: Condition) -> UsageRule {
        UsageRule {
            name: name.into(),
            condition,
            action: Action::Alert,
        }
    }

    /// A window boundary (a multiple of 60 s).
    const T0: i64 = 1_800_000_000_000;

    #[test]
    fn distinct_addresses_fire_once_per_window() {
        let policy = policy(vec![rule(
            "spread",
            Condition::DistinctAddresses { more_than: 20 },
        )]);
        let mut usage = KeyUsage::new(T0, &policy);
        let mut fired_at = Vec::new();
        for i in 0..100u64 {
            if let Some((mask, m)) = usage.record(T0 + i as i64, Some(mix(i)), &policy) {
                assert_eq!(mask, 1);
                assert!(m.distinct_addresses > 20.0);
                fired_at.push(i);
            }
        }
        assert_eq!(fired_at.len(), 1, "{fired_at:?}");
        assert!((18..=24).contains(&fired_at[0]), "{fired_at:?}");
    }

    #[test]
    fn one_address_many_requests_is_not_spread() {
        let policy = policy(vec![rule(
            "spread",
            Condition::DistinctAddresses { more_than: 3 },
        )]);
        let mut usage = KeyUsage::new(T0, &policy);
        for i in 0..10_000 {
            assert!(usage.record(T0 + i, Some(mix(1)), &policy).is_none());
        }
    }

    #[test]
    fn the_previous_window_fades_out_of_the_sliding_one() {
        let policy = policy(vec![rule("busy", Condition::Requests { more_than: 150 })]);
        let mut usage = KeyUsage::new(T0, &policy);
        for i in 0..100 {
            assert!(usage.record(T0 + 59_000 + i, None, &policy).is_none());
        }
        // Just after the boundary the previous 100 still count almost fully.
        let m = usage.measures(T0 + 60_000, &policy);
        assert!((m.requests - 100.0).abs() < 0.01, "{m:?}");
        // Half-way through the next window they count half.
        let m = usage.measures(T0 + 90_000, &policy);
        assert!((m.requests - 50.0).abs() < 0.01, "{m:?}");
        // 60 more at the start of the next window: 100 + 60 > 150 fires.
        let fired = (0..60).filter_map(|i| usage.record(T0 + 60_001 + i, None, &policy));
        assert_eq!(fired.count(), 1);
        // Two windows later nothing remains.
        let m = {
            usage.record(T0 + 180_000, None, &policy);
            usage.measures(T0 + 180_000, &policy)
        };
        assert_eq!(m.requests, 1.0);
    }

    #[test]
    fn above_usual_needs_history_and_volume() {
        let policy = policy(vec![rule(
            "spike",
            Condition::AboveUsual {
                factor: 5.0,
                min_requests: 100,
                min_history_windows: 5,
            },
        )]);
        let mut usage = KeyUsage::new(T0, &policy);
        // A burst on a brand-new key: no history yet, no alert.
        for i in 0..500 {
            assert!(usage.record(T0 + i, None, &policy).is_none());
        }
        // Twenty quiet windows of 30 requests settle the usual near 30.
        let mut t = T0 + 60_000;
        for _ in 0..20 {
            for i in 0..30 {
                assert!(usage.record(t + i * 100, None, &policy).is_none());
            }
            t += 60_000;
        }
        let m = usage.measures(t, &policy);
        assert!((25.0..40.0).contains(&m.usual), "{m:?}");
        // Ten times usual fires, once.
        let fires: Vec<_> = (0..400)
            .filter_map(|i| usage.record(t + 30_000 + i, None, &policy))
            .collect();
        assert_eq!(fires.len(), 1);
        let (_, m) = fires[0];
        assert!(m.requests > 5.0 * m.usual && m.requests >= 100.0, "{m:?}");
    }

    #[test]
    fn usual_decays_over_idle_windows() {
        let policy = policy(vec![]);
        let mut usage = KeyUsage::new(T0, &policy);
        for i in 0..1000 {
            usage.record(T0 + i, None, &policy);
        }
        usage.record(T0 + 60_000, None, &policy);
        let busy = usage.measures(T0 + 60_000, &policy).usual;
        assert!((busy - 100.0).abs() < 1.0, "{busy}");
        usage.record(T0 + 60_000 * 50, None, &policy);
        let later = usage.measures(T0 + 60_000 * 50, &policy).usual;
        assert!(later < busy * 0.01, "{later}");
    }

    #[test]
    fn several_rules_fire_independently() {
        let policy = policy(vec![
            rule("a", Condition::Requests { more_than: 5 }),
            rule("b", Condition::Requests { more_than: 10 }),
        ]);
        let mut usage = KeyUsage::new(T0, &policy);
        let masks: Vec<u32> = (0..20)
            .filter_map(|i| usage.record(T0 + i, None, &policy).map(|(m, _)| m))
            .collect();
        assert_eq!(masks, vec![0b01, 0b10]);
    }

    #[test]
    fn policies_are_checked() {
        let ok = r#"{"window_seconds": 30, "rules": [
            {"name": "spread", "kind": "distinct_addresses", "more_than": 20, "action": "revoke"},
            {"name": "spike", "kind": "above_usual", "factor": 8, "min_requests": 100}]}"#;
        let policy = UsagePolicy::from_json(ok).expect("valid policy");
        assert_eq!(policy.rules[0].action, Action::Revoke);
        assert_eq!(policy.rules[1].action, Action::Alert);
        assert_eq!(policy.max_tracked_keys, 100_000);
        for bad in [
            r#"{"rules": [{"name": "Bad Name", "kind": "requests", "more_than": 1}]}"#,
            r#"{"rules": [{"name": "a", "kind": "requests", "more_than": 1},
                          {"name": "a", "kind": "requests", "more_than": 2}]}"#,
            r#"{"rules": [{"name": "a", "kind": "above_usual", "factor": 0.5, "min_requests": 1}]}"#,
            r#"{"rules": [{"name": "a", "kind": "teleport"}]}"#,
            r#"{"window_seconds": 0}"#,
            r#"{"windows": 5}"#,
            "not json",
        ] {
            assert!(UsagePolicy::from_json(bad).is_err(), "{bad}");
        }
        let default = UsagePolicy::default();
        default.validate().expect("the default is valid");
        let text = serde_json::to_string(&default).expect("serialises");
        assert_eq!(UsagePolicy::from_json(&text), Ok(default), "{text}");
    }

    /// Found by the `usage_policy` fuzz target: a factor written with many digits
    /// ("1.5000000090000000000000") was read one unit in the last place away from the nearest double,
    /// while the text it re-serialised to was read exactly, so the policy a manager held and the one
    /// its edges read from it differed. JSON numbers are now read correctly rounded (serde_json's
    /// `float_roundtrip`).
    #[test]
    fn a_policy_survives_its_own_json_exactly() {
        for factor in [
            "1.5000000090000000000000",
            "1.500000009",
            "1.0000000000000002",
            "7.999999999999999",
            "1.2345678901234567",
        ] {
            let text = format!(
                r#"{{"rules": [{{"name": "spike", "kind": "above_usual", "factor": {factor}, "min_requests": 2}}]}}"#
            );
            let policy = UsagePolicy::from_json(&text).expect("a valid policy");
            let Condition::AboveUsual { factor: read, .. } = policy.rules[0].condition else {
                panic!("an above_usual rule");
            };
            assert_eq!(read, factor.parse::<f64>().expect("a number"), "{factor}");
            let again = serde_json::to_string(&policy).expect("serialises");
            assert_eq!(UsagePolicy::from_json(&again), Ok(policy), "{again}");
        }
    }
}
