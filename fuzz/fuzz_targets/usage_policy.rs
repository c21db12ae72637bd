//! The `usage_policy` fuzz target: what it reads and checks is in `checks/src/usage_policy.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::usage_policy::run(data));
