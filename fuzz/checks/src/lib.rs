//! The properties every fuzz target checks, one module per target, each with `run(&[u8])`: it feeds the
//! bytes to the real Quench parser and panics if a property fails.
//!
//! The libFuzzer binaries in `fuzz/fuzz_targets/` are one line each around these functions. The main
//! workspace runs the same functions over the committed corpus (`fuzz/corpus/`) on stable Rust, as an
//! ordinary test (`crates/cli/tests/fuzz_corpus.rs`), so every input that ever mattered stays a
//! regression test without a nightly build. See docs/fuzzing.md.

pub mod api;
pub mod common;
pub mod event;
pub mod github;
pub mod key;
pub mod scan;
pub mod snapshot;
pub mod usage_policy;
pub mod wire;

/// One input through one target's checks.
pub type Check = fn(&[u8]);

/// Every target by name, as `cargo fuzz list` and `fuzz/corpus/<name>/` name it.
pub const TARGETS: &[(&str, Check)] = &[
    ("api", api::run),
    ("event", event::run),
    ("github", github::run),
    ("key", key::run),
    ("scan", scan::run),
    ("snapshot", snapshot::run),
    ("usage_policy", usage_policy::run),
    ("wire", wire::run),
];
