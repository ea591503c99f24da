//! Fuzz target: see `usan::fuzzing::spool_records`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::spool_records(data));
