//! The `event` fuzz target: what it reads and checks is in `checks/src/event.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| quench_fuzz_checks::event::run(data));
