//! The `api` fuzz target: what it reads and checks is in `checks/src/api.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::api::run(data));
