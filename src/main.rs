//! usan: industrial AI engine. The command line: parse, then hand over to
//! the subcommand's module in [`usan::cli`].

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use usan::cli;

/// usan (우산): connects to plant data, learns each asset's normal
/// behaviour, detects and explains faults, raises alarms.
#[derive(Parser)]
#[command(name = "usan", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Monitor a demo plant of NASA C-MAPSS turbofan engines (no services needed).
    Demo(cli::demo::Args),
    /// Run the engine and the API on a configuration file.
    Serve(cli::serve::Args),
    /// Validate a configuration file and report every error at once.
    Check(cli::check::Args),
    /// Fit a configuration's detectors on a history CSV and write model
    /// artifacts (`usan fit rul` trains a remaining-useful-life model instead).
    Fit(cli::fit::Args),
    /// Run the detectors on a public benchmark and write the scorers' prediction files.
    Eval(cli::eval::Args),
    /// A control chart of one CSV column: limits, run-rule violations and
    /// process capability (statistical process control).
    Spc(cli::spc::Args),
    /// Make an API token: prints the token and the line for `[auth] tokens`.
    Token(cli::token::Args),
    /// Look at an OPC UA server: `usan opcua browse ENDPOINT` prints its
    /// address space (with `--asset`, as `nodes` lines for a source).
    Opcua(cli::opcua::Args),
    /// Measure the hot paths on this machine (see BENCHMARKS.md).
    Bench(cli::bench::Args),
    /// Score a CSV with fitted models and write one finding per row and detector.
    Score(cli::score::Args),
    /// Write the store's history (frames, scores, alarms and maintenance as
    /// labels) to CSV files for training in Python.
    Export(cli::export::Args),
    /// Models exported from Python as ONNX: `usan model check MODEL` prints
    /// its inputs and outputs, `usan model run MODEL --input X.csv --output Y.csv`
    /// runs it, `usan model export FITTED.json --out DIR` writes usan's PCA as one.
    #[cfg(feature = "onnx")]
    Model(cli::model::Args),
}

/// usan's own news at info; other crates' warnings, except the OPC UA
/// client's, which usan reports itself (lost sessions, refused certificates),
/// and tract's (an operator set newer than it was tested on is not news:
/// the goldens say whether a model runs right).
const DEFAULT_LOG_FILTER: &str =
    "warn,usan=info,opcua_client=off,opcua_crypto=off,tract_onnx=error,tract_hir=error,tract_core=error";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    let command = Cli::parse().command;
    // Batch scoring's worker threads, started once here rather than on the first batch.
    usan_core::parallel::start();
    let result = match command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Serve(args) => cli::serve::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Fit(args) => cli::fit::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Spc(args) => cli::spc::run(args),
        Command::Token(args) => cli::token::run(args),
        Command::Opcua(args) => cli::opcua::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Score(args) => cli::score::run(args),
        Command::Export(args) => cli::export::run(args),
        #[cfg(feature = "onnx")]
        Command::Model(args) => cli::model::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
