//! Fuzz target: see `usan::fuzzing::sparkplug_b`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::sparkplug_b(data));
