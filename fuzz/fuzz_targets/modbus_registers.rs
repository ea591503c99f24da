//! Fuzz target: see `usan::fuzzing::modbus_registers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::modbus_registers(data));
