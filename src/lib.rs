//! usan: the engine behind the `usan` binary.
//!
//! The algorithms live in `usan-core`; this crate is everything with IO:
//! configuration ([`config`]), the runtime ([`pipeline`]), [`source`]s,
//! [`sink`]s, the [`store`], the HTTP [`api`], and the commands the binary
//! runs ([`serve`], [`batch`], [`demo`]).

#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod batch;
pub mod bench;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod eval;
pub mod metrics;
pub mod mqtt;
pub mod pipeline;
pub mod rul_fit;
pub mod serve;
pub mod sink;
pub mod source;
pub mod spc;
pub mod spc_report;
pub mod store;
