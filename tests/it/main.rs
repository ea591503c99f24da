//! usan's integration tests: one binary (one link of the whole crate) that
//! drives the real `usan` executable the way people and peers use it.
//!
//! - [`harness`]: start `usan` on a configuration, talk to its API, wait on
//!   conditions with deadlines; peers (Python, Chromium) and brokers;
//! - [`scenario`]: a plant in a few lines: configuration text in, samples
//!   pushed, findings and alarms waited for;
//! - one module per area: the engine, connectivity (MQTT, OPC UA, Modbus),
//!   the dashboard, the demo, benchmarks (`eval`), golden models, RUL, SPC,
//!   and the code's shape (`architecture`).
//!
//! `cargo test --test it` runs them; `cargo test --test it mqtt::` one area.

#![allow(clippy::unwrap_used)] // a test that cannot unwrap fails, as it should

mod harness;
mod rust_opcua;
mod scenario;

mod architecture;
mod crash;
mod dashboard;
mod demo;
mod engine;
mod eval;
mod faults;
mod golden;
mod hostile;
mod manual;
mod modbus;
mod mqtt;
mod onnx;
mod opcua;
mod rul;
mod spc;
