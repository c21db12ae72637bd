//! In-process verify against its floor, measured in the same run and at the same key-set size.
//!
//! * `verify/N`: `Replica::verify` on a presented key text (parse, checksum, one lookup, salted SHA-256,
//!   constant-time compare, staleness rules, metrics), with a replica holding N keys.
//! * `verify+usage/N`: the same plus recording the use for usage monitoring (default policy, one client
//!   address per key), as the HTTP API does for every valid key.
//! * `floor/N`: the least any design could do for the same question: SHA-256 of the presented key text and
//!   one lookup in a map of the same type and size (`KeyMap<[u8; 32]>`) keyed by the key id, comparing the
//!   stored digest. The key id is worked out once, outside the timed loop, so the floor does no parsing.
//!
//! Every key is a real one (`ApiKey::generate`, `Verifier::create(HashAlg::Sha256, ..)`). Both benches cycle
//! through the same sample of presented keys, spread evenly over the generated keys (whose ids are
//! uniformly random, so the sample lands at random places in the map).
//!
//! Environment:
//! * `QUENCH_BENCH_SIZES`: comma-separated key counts, default `10000,1000000,10000000`.
//! * `QUENCH_BENCH_SAMPLE`: how many distinct keys are presented, default 1024. A small sample stays in the
//!   CPU caches; a large one (e.g. 1048576) shows the cost of cache misses on a large key set.
//!
//! Run: `cargo bench -p quench-edge --bench verify`

use std::{
    hint::black_box,
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput};
use quench_core::{
    ApiKey, EdgeKey, HashAlg, Owner, Prefix, Seq, Timestamp, Verifier,
    keyset::{BuildKeyIdHasher, KeyMap},
    usage::UsagePolicy,
};
use quench_edge::{EdgeConfig, Replica};
use sha2::{Digest, Sha256};

const DEFAULT_SIZES: &str = "10000,1000000,10000000";
const DEFAULT_SAMPLE: usize = 1024;

struct Fixture {
    replica: Arc<Replica>,
    floor: KeyMap<[u8; 32]>,
    /// Presented key texts, all valid.
    sample: Vec<String>,
    /// The key id of each sample key, for the floor.
    sample_ids: Vec<u64>,
    now: Timestamp,
}

fn sizes() -> Vec<usize> {
    let text = std::env::var("QUENCH_BENCH_SIZES").unwrap_or_else(|_| DEFAULT_SIZES.to_owned());
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("QUENCH_BENCH_SIZES: {s:?} is not a count"))
        })
        .collect()
}

fn sample_len() -> usize {
    std::env::var("QUENCH_BENCH_SAMPLE")
        .ok()
        .map(|s| s.parse().expect("QUENCH_BENCH_SAMPLE is a count"))
        .unwrap_or(DEFAULT_SAMPLE)
}

fn build(n: usize, wanted_sample: usize) -> Fixture {
    let started = Instant::now();
    let replica = Replica::new(EdgeConfig::default());
    // Same map type and the same growth as the replica's key set (which starts at capacity 0).
    let floor: KeyMap<[u8; 32]> = papaya::HashMap::builder()
        .capacity(0)
        .hasher(BuildKeyIdHasher)
        .build();
    let owner = Owner::parse("bench-owner").expect("a valid owner");
    let stride = (n / wanted_sample.clamp(1, n.max(1))).max(1);
    let mut sample = Vec::with_capacity(wanted_sample);
    let mut sample_ids = Vec::with_capacity(wanted_sample);
    {
        let floor = floor.pin();
        // A generator: the key set is filled straight from it, no input vector is materialised.
        let keys = (0..n).map(|i| {
            let key = ApiKey::generate(Prefix::default()).expect("OS random");
            let verifier = Verifier::create(HashAlg::Sha256, key.secret()).expect("OS random");
            let text = key.expose();
            let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            floor.insert(key.id().as_u64(), digest);
            if i % stride == 0 && sample.len() < wanted_sample {
                sample_ids.push(key.id().as_u64());
                sample.push(text);
            }
            EdgeKey {
                id: key.id(),
                prefix: key.prefix(),
                owner: owner.clone(),
                apis: Vec::new(),
                scopes: Vec::new(),
                expires_at: None,
                revoked: false,
                verifier,
            }
        });
        assert!(replica.keys().install_snapshot(Seq::new(1), keys));
    }
    let now = Timestamp::now();
    replica.mark_ready();
    replica.heard_manager(now);
    assert_eq!(replica.keys().len(), n, "random key ids collided");
    assert_eq!(floor.len(), n);

    // Outside the timed loops: every presented key is valid, so neither bench measures a refusal path.
    for (text, id) in sample.iter().zip(&sample_ids) {
        let verdict = replica.verify(text, None, None, now);
        assert!(
            verdict.is_valid(),
            "sample key refused: {:?}",
            verdict.reason()
        );
        let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        assert_eq!(floor.pin().get(id), Some(&digest));
    }
    let mut wrong = sample[0].clone().into_bytes();
    wrong[10] = if wrong[10] == b'A' { b'B' } else { b'A' };
    let wrong = String::from_utf8(wrong).expect("ascii");
    assert!(!replica.verify(&wrong, None, None, now).is_valid());
    eprintln!(
        "setup: {n} keys, {} presented, built in {:.1?}",
        sample.len(),
        started.elapsed()
    );
    Fixture {
        replica,
        floor,
        sample,
        sample_ids,
        now,
    }
}

fn bench(c: &mut Criterion) {
    let wanted_sample = sample_len();
    let mut group = c.benchmark_group("edge_verify");
    group.throughput(Throughput::Elements(1));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for n in sizes() {
        group.sample_size(if n >= 1_000_000 { 30 } else { 100 });
        let fixture = build(n, wanted_sample);
        let len = fixture.sample.len();

        group.bench_function(BenchmarkId::new("verify", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let text = fixture.sample[i].as_str();
                i = if i + 1 == len { 0 } else { i + 1 };
                black_box(
                    fixture
                        .replica
                        .verify(black_box(text), None, None, fixture.now),
                )
            });
        });

        // The same, with usage monitoring on (the default policy) and each key's one client address:
        // what an edge serving the HTTP API does per valid request on top of `verify`.
        fixture.replica.usage().set_policy(UsagePolicy::default());
        let addresses: Vec<IpAddr> = (0..len)
            .map(|i| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]))
            .collect();
        group.bench_function(BenchmarkId::new("verify+usage", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let text = fixture.sample[i].as_str();
                let address = addresses[i];
                i = if i + 1 == len { 0 } else { i + 1 };
                let verdict = fixture
                    .replica
                    .verify(black_box(text), None, None, fixture.now);
                if let quench_core::Verdict::Valid { key_id, .. } = &verdict {
                    fixture
                        .replica
                        .usage()
                        .record(*key_id, Some(address), fixture.now);
                }
                black_box(verdict)
            });
        });
        fixture.replica.usage().set_policy(UsagePolicy::disabled());

        group.bench_function(BenchmarkId::new("floor", n), |b| {
            let mut i = 0;
            b.iter(|| {
                let text = fixture.sample[i].as_str();
                let id = fixture.sample_ids[i];
                i = if i + 1 == len { 0 } else { i + 1 };
                let digest: [u8; 32] = Sha256::digest(black_box(text).as_bytes()).into();
                let map = fixture.floor.pin();
                black_box(
                    map.get(&black_box(id))
                        .is_some_and(|stored| *stored == digest),
                )
            });
        });

        // Free this size's key sets before building the next.
        drop(fixture);
    }
    group.finish();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench(&mut criterion);
    criterion.final_summary();
}
