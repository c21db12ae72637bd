//! The `snapshot` fuzz target: what it reads and checks is in `checks/src/snapshot.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::snapshot::run(data));
