//! `usan model`: look at and run models exported from Python as ONNX.
//!
//! - `usan model check MODEL [--json]`: one line per input and output
//!   (`input NAME TYPE SHAPE`, `output NAME TYPE SHAPE`, dynamic dimensions
//!   as `?`), after building the model and, for a package, running its
//!   goldens; non-zero exit naming each unsupported operator and its node.
//! - `usan model run MODEL --input X.csv --output Y.csv`: the model on
//!   every row of X (formats in `usan_onnx::table`).
//!
//! MODEL is an `.onnx` file or a package folder (`model.onnx` + `golden/`).

use anyhow::Context;
use serde_json::json;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use usan_onnx::{OnnxError, Package, Port, Signature, ValueType, table};

/// `usan model` as typed on the command line.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a model's inputs and outputs; fail naming what usan cannot run.
    Check {
        /// An `.onnx` file or a package folder.
        model: PathBuf,
        /// One JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Run a model on the rows of a CSV file and write its outputs as CSV.
    Run {
        /// An `.onnx` file or a package folder.
        model: PathBuf,
        /// Input rows: a header, then the input's values by position.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the outputs (a header, one row per input row).
        #[arg(long)]
        output: PathBuf,
    },
}

/// Run `usan model`.
///
/// # Errors
/// A file that is not a model usan can run, bad input rows, or goldens the
/// model does not reproduce.
pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Check { model, json } => check(&model, json),
        Command::Run { model, input, output } => run_model(&model, &input, &output),
    }
}

fn port_json(p: &Port) -> serde_json::Value {
    let shape = p.value.dims().map(|dims| {
        dims.iter()
            .map(|d| match d {
                usan_onnx::Dim::Fixed(n) => json!(n),
                usan_onnx::Dim::Dynamic(_) => json!("?"),
            })
            .collect::<Vec<_>>()
    });
    let shape = match (&p.value, shape) {
        (_, Some(dims)) => json!(dims),
        (ValueType::Sequence(_), None) => json!(["?"]),
        _ => serde_json::Value::Null,
    };
    json!({"name": p.name, "type": p.value.to_string(), "shape": shape})
}

fn signature_json(s: &Signature) -> serde_json::Map<String, serde_json::Value> {
    let mut object = serde_json::Map::new();
    object.insert("inputs".into(), s.inputs.iter().map(port_json).collect());
    object.insert("outputs".into(), s.outputs.iter().map(port_json).collect());
    object
}

fn check(path: &std::path::Path, json: bool) -> anyhow::Result<()> {
    let package = Package::open(path)?;
    let bytes = std::fs::read(&package.model).with_context(|| format!("cannot read {}", package.model.display()))?;
    let inspection = usan_onnx::inspect(&bytes).with_context(|| package.model.display().to_string())?;
    if !inspection.unsupported.is_empty() {
        if json {
            let mut object = signature_json(&inspection.signature);
            let unsupported = inspection
                .unsupported
                .iter()
                .map(|u| json!({"domain": u.domain, "op_type": u.op_type, "node": u.node}))
                .collect();
            object.insert("unsupported".into(), unsupported);
            println!("{}", serde_json::Value::Object(object));
        }
        return Err(OnnxError::Unsupported(inspection.unsupported))
            .with_context(|| package.model.display().to_string());
    }
    let (_, goldens) = package.load().with_context(|| path.display().to_string())?;
    if json {
        let mut object = signature_json(&inspection.signature);
        object.insert("producer".into(), json!(inspection.producer));
        if let Some(c) = &goldens {
            object.insert("golden".into(), json!({"rows": c.rows, "values": c.values, "worst_ratio": c.worst_ratio}));
        }
        println!("{}", serde_json::Value::Object(object));
    } else {
        for line in inspection.signature.lines() {
            println!("{line}");
        }
        if let Some(c) = goldens {
            eprintln!(
                "goldens: {} rows, {} values within rtol {} / atol {} (worst at {:.3} of the tolerance)",
                c.rows,
                c.values,
                table::RTOL,
                table::ATOL,
                c.worst_ratio
            );
        }
    }
    Ok(())
}

fn run_model(path: &std::path::Path, input: &std::path::Path, output: &std::path::Path) -> anyhow::Result<()> {
    let (model, _) = Package::open(path)?.load().with_context(|| path.display().to_string())?;
    let file = File::open(input).with_context(|| format!("cannot read {}", input.display()))?;
    let rows = table::read_rows(BufReader::new(file), model.input_width(), model.takes_f32())
        .with_context(|| input.display().to_string())?;
    let results = model.run(rows.count, &rows.values)?;
    let file = File::create(output).with_context(|| format!("cannot write {}", output.display()))?;
    table::write_outputs(BufWriter::new(file), &results, rows.count)
        .with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}
