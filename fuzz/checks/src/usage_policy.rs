//! The usage policy document (`--usage-policy`, and what every edge fetches from its manager), and the
//! per-key monitor run under whatever policy parsed.
//!
//! The input is a policy's JSON, then optionally a zero byte and a trace of requests (time steps and
//! client addresses). Properties: a policy that parses validates, and re-serialises to a document that
//! parses to the same policy; under it, the monitor's measures are finite and never negative, only rules
//! the policy has fire, and no rule fires twice for a key in one window.

use quench_core::usage::{KeyUsage, UsagePolicy};

/// A plausible now (November 2023), so a trace's times stay in the range an edge's clock gives.
const START_MS: i64 = 1_700_000_000_000;

/// Runs one input; panics if a property fails.
pub fn run(data: &[u8]) {
    let (document, trace) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(document) else {
        return;
    };
    let Ok(policy) = UsagePolicy::from_json(text) else {
        return;
    };
    assert_eq!(policy.validate(), Ok(()));
    let json = serde_json::to_string(&policy).expect("a policy serialises");
    assert_eq!(
        UsagePolicy::from_json(&json).as_ref(),
        Ok(&policy),
        "{json}"
    );
    monitor(&policy, trace);
}

fn monitor(policy: &UsagePolicy, trace: &[u8]) {
    let window = policy.window_millis();
    let all_rules = if policy.rules.len() >= 32 {
        u32::MAX
    } else {
        (1u32 << policy.rules.len()) - 1
    };
    let mut now = START_MS;
    let mut usage = KeyUsage::new(now, policy);
    let mut fired_in = (now.div_euclid(window), 0u32);
    for step in trace.chunks_exact(4) {
        // Up to about 4.6 hours between two requests, in 1 ms steps at the small end.
        let gap = u32::from_le_bytes([step[0], step[1], step[2] & 0x0f, 0]);
        now += (i64::from(gap) * 16) >> (step[2] >> 4);
        let address =
            (step[3] != 0).then(|| u64::from(step[3]).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let fired = usage.record(now, address, policy);
        let measures = usage.measures(now, policy);
        for value in [
            measures.requests,
            measures.distinct_addresses,
            measures.usual,
        ] {
            assert!(value.is_finite() && value >= 0.0, "{measures:?}");
        }
        let index = now.div_euclid(window);
        if index != fired_in.0 {
            fired_in = (index, 0);
        }
        if let Some((mask, seen)) = fired {
            assert_eq!(
                mask & !all_rules,
                0,
                "a rule the policy does not have fired"
            );
            assert_eq!(mask & fired_in.1, 0, "a rule fired twice in one window");
            fired_in.1 |= mask;
            for value in [seen.requests, seen.distinct_addresses, seen.usual] {
                assert!(value.is_finite() && value >= 0.0, "{seen:?}");
            }
        }
    }
}
