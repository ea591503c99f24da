//! Fuzz target: see `usan::fuzzing::detector_model`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::detector_model(data));
