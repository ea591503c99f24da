//! Fuzz target: see `usan::fuzzing::rul_model`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::rul_model(data));
