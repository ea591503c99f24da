//! The commands of the `usan` binary, one module per subcommand. Each has
//! its `Args` (what clap parses, with the help text) and a `run` that does
//! the work; `main` only parses and dispatches.

pub mod bench;
pub mod check;
pub mod demo;
pub mod eval;
pub mod export;
pub mod fit;
#[cfg(feature = "onnx")]
pub mod model;
pub mod opcua;
pub mod score;
pub mod serve;
pub mod spc;
pub mod token;

/// The Tokio runtime of the commands that serve or connect.
///
/// # Errors
/// When the operating system refuses the runtime's threads.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}
