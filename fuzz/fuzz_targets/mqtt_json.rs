//! Fuzz target: see `usan::fuzzing::mqtt_json`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::mqtt_json(data));
