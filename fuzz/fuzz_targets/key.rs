//! The `key` fuzz target: what it reads and checks is in `checks/src/key.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::key::run(data));
