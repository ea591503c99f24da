//! # usan-onnx: the ecosystem's models, run inside usan
//!
//! A plant's data scientists train in Python (scikit-learn, LightGBM,
//! XGBoost, PyTorch) and export ONNX. This crate reads such a file, tells
//! what it takes and gives ([`inspect`]), and runs it on rows of plant data
//! ([`Model::run`]) with the outputs onnxruntime would give: tract executes
//! the graph, and the `ops` module adds the `ai.onnx.ml` operators tract lacks or
//! evaluates differently. Nothing is downloaded at build or run time.
//!
//! Hostile or damaged files are errors, never panics: the protobuf is read
//! with bounds, each operator checks its attributes, and what tract itself
//! might still panic on is caught and reported as an error.

mod detector;
pub mod examples;
pub mod export;
pub mod manifest;
mod model;
mod ops;
mod package;
mod proto;
mod rewrite;
mod signature;
pub mod table;

pub use detector::{Prepared, Scored, Scorer, Stream};
pub use model::{Inspection, Model, Output, OutputValues, Unsupported, inspect};
pub use package::Package;
pub use signature::{Dim, ElemType, Port, Signature, ValueType};

/// Why a model cannot be read, built or run.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not an ONNX model (truncated, another format, empty).
    #[error("not an ONNX model: {0}")]
    NotOnnx(String),
    /// Operators usan cannot run, each with its node.
    #[error("unsupported operator{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    Unsupported(Vec<Unsupported>),
    /// The graph is ONNX but cannot be built (bad attributes, shapes).
    #[error("cannot build the model: {0}")]
    Build(String),
    /// The rows given do not fit the model's input.
    #[error("{0}")]
    Input(String),
    /// The package's `usan-model.toml` does not fit its model (every problem).
    #[error("usan-model.toml: {}", .0.join("; "))]
    Manifest(Vec<String>),
    /// The model's outputs differ from its golden vectors.
    #[error(
        "outputs differ from the goldens: {} row {} is {} where onnxruntime gave {} (rtol {} / atol {})",
        .0.column, .0.row, .0.got, .0.expected, table::RTOL, table::ATOL
    )]
    Golden(table::Mismatch),
    /// Running the model failed.
    #[error("cannot run the model: {0}")]
    Run(String),
}
