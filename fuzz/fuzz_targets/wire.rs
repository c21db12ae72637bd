//! The `wire` fuzz target: what it reads and checks is in `checks/src/wire.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::wire::run(data));
