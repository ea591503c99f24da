//! Fuzz target: see `usan::fuzzing::onnx_model`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| usan::fuzzing::onnx_model(data));
