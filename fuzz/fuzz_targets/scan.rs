//! The `scan` fuzz target: what it reads and checks is in `checks/src/scan.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::scan::run(data));
