//! Fuzz target: see `usan::fuzzing::journal_entry`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::journal_entry(data));
