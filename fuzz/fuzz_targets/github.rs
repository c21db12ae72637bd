//! The `github` fuzz target: what it reads and checks is in `checks/src/github.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::github::run(data));
