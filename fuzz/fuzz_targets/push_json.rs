//! Fuzz target: see `usan::fuzzing::push_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::push_json(data));
