//! Memory per key of the edge's key set, against a plain reference map, each measured in a fresh process.
//!
//! The workspace forbids `unsafe_code`, so a counting global allocator (which needs `unsafe impl
//! GlobalAlloc`) is out; instead each measurement runs in its own child process (this binary, re-executed)
//! and reads the resident set size from `/proc/self/status` before and after building:
//!
//! * `keyset`: a `Replica`'s `KeySet` after `install_snapshot` of N real keys (`ApiKey::generate`,
//!   `Verifier::create(HashAlg::Sha256, ..)`), fed by a generator so no input vector is ever materialised.
//! * `reference`: a `std::collections::HashMap<u64, [u8; 64]>` of N entries: a key id and the 64 bytes a
//!   salted SHA-256 verifier needs at least (32-byte salt, 32-byte digest), nothing else.
//!
//! Environment: `QUENCH_BENCH_KEYS` (default 10000000); `QUENCH_BENCH_JSON=1` adds one JSON line.
//!
//! Run: `cargo bench -p quench-edge --bench memory`

use std::{
    collections::HashMap,
    hint::black_box,
    process::{Command, Stdio},
    time::Instant,
};

use quench_core::{ApiKey, EdgeKey, HashAlg, Owner, Prefix, Seq, Verifier};
use quench_edge::{EdgeConfig, Replica};

const CHILD: &str = "--quench-memory-child";
const DEFAULT_KEYS: usize = 10_000_000;

/// Resident and peak resident set size of this process, in bytes.
fn rss() -> (usize, usize) {
    let status =
        std::fs::read_to_string("/proc/self/status").expect("/proc/self/status (Linux only)");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<usize>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A cheap deterministic generator, for the reference map's contents only.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

struct Measured {
    bytes: usize,
    peak: usize,
    seconds: f64,
}

/// Runs in the child: builds one structure of `n` keys and prints `RESULT <bytes> <peak bytes> <seconds>`.
fn child(what: &str, n: usize) {
    let (before, _) = rss();
    let started = Instant::now();
    let (after, peak_after) = match what {
        "keyset" => {
            let replica = Replica::new(EdgeConfig::default());
            let owner = Owner::parse("bench-owner").expect("a valid owner");
            let keys = (0..n).map(|_| {
                let key = ApiKey::generate(Prefix::default()).expect("OS random");
                EdgeKey {
                    id: key.id(),
                    prefix: key.prefix(),
                    owner: owner.clone(),
                    apis: Vec::new(),
                    scopes: Vec::new(),
                    expires_at: None,
                    revoked: false,
                    verifier: Verifier::create(HashAlg::Sha256, key.secret()).expect("OS random"),
                }
            });
            assert!(replica.keys().install_snapshot(Seq::new(1), keys));
            assert_eq!(replica.keys().len(), n, "random key ids collided");
            drop(owner);
            let measured = rss();
            black_box(&replica);
            measured
        }
        "reference" => {
            let mut state = 0x5eed;
            let mut map: HashMap<u64, [u8; 64]> = HashMap::new();
            for _ in 0..n {
                let mut value = [0u8; 64];
                for chunk in value.chunks_exact_mut(8) {
                    chunk.copy_from_slice(&splitmix(&mut state).to_le_bytes());
                }
                map.insert(splitmix(&mut state), value);
            }
            assert_eq!(map.len(), n, "random ids collided");
            let measured = rss();
            black_box(&map);
            measured
        }
        other => panic!("unknown measurement {other:?}"),
    };
    println!(
        "RESULT {} {} {:.3}",
        after.saturating_sub(before),
        peak_after.saturating_sub(before),
        started.elapsed().as_secs_f64()
    );
}

fn measure(what: &str, n: usize) -> Measured {
    let exe = std::env::current_exe().expect("this benchmark's own path");
    let output = Command::new(exe)
        .args([CHILD, what, &n.to_string()])
        .stderr(Stdio::inherit())
        .output()
        .expect("re-run this benchmark as a child");
    assert!(
        output.status.success(),
        "the {what} child failed: {}",
        output.status
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("the {what} child printed no result: {stdout}"));
    let mut fields = line.split_whitespace();
    let mut next = || fields.next().expect("three fields");
    Measured {
        bytes: next().parse().expect("bytes"),
        peak: next().parse().expect("peak bytes"),
        seconds: next().parse().expect("seconds"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == CHILD) {
        let what = args.get(at + 1).expect("what to measure");
        let n = args
            .get(at + 2)
            .and_then(|n| n.parse().ok())
            .expect("a key count");
        child(what, n);
        return;
    }
    // `cargo bench` passes `--bench` and maybe a filter; a plain main ignores them.
    let n: usize = std::env::var("QUENCH_BENCH_KEYS")
        .ok()
        .map(|s| {
            s.replace('_', "")
                .parse()
                .expect("QUENCH_BENCH_KEYS is a count")
        })
        .unwrap_or(DEFAULT_KEYS);
    assert!(n > 0, "QUENCH_BENCH_KEYS must be positive");

    let keyset = measure("keyset", n);
    let reference = measure("reference", n);

    let per_key = |bytes: usize| bytes as f64 / n as f64;
    println!("memory per key, {n} keys (resident set growth, each in a fresh process)");
    println!(
        "{:<40} {:>14} {:>10} {:>14} {:>9}",
        "structure", "bytes", "B/key", "peak B/key", "build s"
    );
    for (name, m) in [
        ("KeySet after install_snapshot", &keyset),
        ("HashMap<u64, [u8; 64]> (reference)", &reference),
    ] {
        println!(
            "{:<40} {:>14} {:>10.1} {:>14.1} {:>9.1}",
            name,
            m.bytes,
            per_key(m.bytes),
            per_key(m.peak),
            m.seconds
        );
    }
    println!("target: <= 64 B/key");
    if std::env::var("QUENCH_BENCH_JSON").is_ok_and(|v| v == "1") {
        println!(
            "{{\"bench\":\"memory\",\"keys\":{n},\"keyset_bytes\":{},\"keyset_bytes_per_key\":{:.2},\
             \"keyset_peak_bytes_per_key\":{:.2},\"reference_bytes\":{},\"reference_bytes_per_key\":{:.2},\
             \"reference_peak_bytes_per_key\":{:.2}}}",
            keyset.bytes,
            per_key(keyset.bytes),
            per_key(keyset.peak),
            reference.bytes,
            per_key(reference.bytes),
            per_key(reference.peak)
        );
    }
}
