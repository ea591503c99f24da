//! Fuzz target: see `usan::fuzzing::csv_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::csv_file(data));
