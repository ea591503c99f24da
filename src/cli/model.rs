//! `usan model`: look at and run models exported from Python as ONNX.
//!
//! - `usan model check MODEL [--json]`: one line per input and output
//!   (`input NAME TYPE SHAPE`, `output NAME TYPE SHAPE`, dynamic dimensions
//!   as `?`), after building the model and, for a package, running its
//!   goldens; non-zero exit naming each unsupported operator and its node.
//! - `usan model run MODEL --input X.csv --output Y.csv`: the model on
//!   every row of X (formats in `usan_onnx::table`).
//! - `usan model export FITTED.json --out DIR`: usan's own fitted PCA or
//!   isolation forest as a package any ONNX runtime runs with usan's scores.
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
    /// Write usan's own fitted model (`usan fit`'s `<asset>/<detector>.json`,
    /// a PCA or an isolation forest) as a package that onnxruntime runs
    /// with usan's scores.
    Export {
        /// The fitted model (JSON).
        model: PathBuf,
        /// The package folder to write (created; files in it are replaced).
        #[arg(long)]
        out: PathBuf,
        /// The package's name (default: the model file's stem).
        #[arg(long)]
        name: Option<String>,
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
        Command::Export { model, out, name } => export(&model, &out, name.as_deref()),
    }
}

/// Golden rows per exported package: most near the baseline, the last
/// quarter four standard deviations out, so both limits are exercised.
const EXPORT_GOLDEN_ROWS: usize = 64;

/// What an exported package holds besides its signals and name.
struct Exported {
    /// The ONNX graph.
    bytes: Vec<u8>,
    /// `golden/inputs.csv` and `golden/outputs.csv`: usan's own scores.
    inputs: String,
    outputs: String,
    /// The manifest's `[outputs]` table.
    outputs_table: &'static str,
    /// What the model is, for the manifest's notes and the summary line.
    description: String,
    /// The alarm level when the fitted model carries none (`None`: set on
    /// each asset's baseline scores in the pipeline).
    default_level: Option<f64>,
}

/// A deterministic uniform value in (0, 1) (the goldens must not change
/// between runs of the same export).
fn golden_uniform() -> impl FnMut() -> f64 {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    move || {
        state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

/// `usan model export`: a fitted PCA or isolation forest as a package
/// (graph, goldens from usan's own scores, manifest), checked by loading it
/// back.
fn export(path: &std::path::Path, out: &std::path::Path, name: Option<&str>) -> anyhow::Result<()> {
    use usan_core::detector::{AnyDetector, FittedModel};
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let fitted: FittedModel =
        serde_json::from_str(&text).with_context(|| format!("{} is not a usan model", path.display()))?;
    fitted.check_format()?;
    let exported = match &fitted.detector {
        AnyDetector::Pca(pca) => export_pca(path, &fitted, pca)?,
        AnyDetector::IsolationForest(forest) => export_forest(path, &fitted, forest)?,
        other => anyhow::bail!(
            "{}: a {} model; usan model export writes PCA and isolation forest models (others are not exportable yet)",
            path.display(),
            other.kind()
        ),
    };
    let name = name.map_or_else(
        || path.file_stem().map_or_else(|| "model".to_string(), |s| s.to_string_lossy().into_owned()),
        str::to_string,
    );
    let quoted: Vec<String> = fitted.signals.iter().map(|s| format!("{s:?}")).collect();
    let threshold = match fitted.threshold.filter(|t| t.is_finite()).or(exported.default_level) {
        Some(level) => format!("[threshold]\nvalue = {level:?}"),
        None => "# No [threshold]: the pipeline sets it on each asset's baseline scores.".to_string(),
    };
    let version = env!("CARGO_PKG_VERSION");
    let manifest = format!(
        "# Written by `usan model export` from {source}.\nformat = 1\nname = {name:?}\nrole = \"detector\"\nsignals = [{signals}]\n\n\
         [preprocessing]\nmissing = \"skip\"   # a gap gives the graph's score NaN\n\n\
         [outputs]\n{outputs}\n\n\
         {threshold}\n\n\
         [provenance]\nexporter = \"usan {version} model export\"\nnotes = {notes:?}\n",
        source = path.display(),
        signals = quoted.join(", "),
        outputs = exported.outputs_table,
        notes = exported.description,
    );
    std::fs::create_dir_all(out.join("golden")).with_context(|| format!("cannot create {}", out.display()))?;
    for (file, content) in [
        ("model.onnx", exported.bytes),
        ("golden/inputs.csv", exported.inputs.into_bytes()),
        ("golden/outputs.csv", exported.outputs.into_bytes()),
        ("usan-model.toml", manifest.into_bytes()),
    ] {
        let at = out.join(file);
        std::fs::write(&at, content).with_context(|| format!("cannot write {}", at.display()))?;
    }
    // The package must load as any other: its graph gives usan's scores.
    let (_, comparison) = Package::open(out)?.load().with_context(|| format!("{} does not check", out.display()))?;
    let rows = comparison.map_or(0, |c| c.rows);
    println!("{}: {}, {rows} golden rows checked", out.display(), exported.description);
    Ok(())
}

/// A static PCA: score, T² and SPE.
fn export_pca(
    path: &std::path::Path,
    fitted: &usan_core::detector::FittedModel,
    pca: &usan_core::detector::Pca,
) -> anyhow::Result<Exported> {
    use std::fmt::Write as _;
    use usan_core::detector::Detector;
    let Some(model) = pca.model() else { anyhow::bail!("{}: the PCA has not been fitted", path.display()) };
    let config = pca.config();
    if config.lags > 0 || config.smoothing > 1 || !model.differenced.is_empty() {
        anyhow::bail!(
            "{}: a dynamic, smoothed or differenced PCA (lags {}, smoothing {}, {} differenced signals) has state; only a static PCA exports",
            path.display(),
            config.lags,
            config.smoothing,
            model.differenced.len()
        );
    }
    let signals = fitted.signals.len();
    let graph = usan_onnx::export::PcaGraph {
        signals,
        used: &model.used,
        mean: &model.mean,
        scale: &model.scale,
        loadings: &model.loadings,
        components: model.components,
        eigenvalues: &model.eigenvalues,
        t2_limit: model.t2_limit,
        spe_limit: model.spe_limit,
    };
    let bytes = graph.to_onnx(env!("CARGO_PKG_VERSION")).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;

    // Goldens: deterministic rows around the baseline, scored by usan's PCA.
    let mut uniform = golden_uniform();
    let mut detector = fitted.detector.clone();
    let mut inputs = String::new();
    let mut outputs = String::from("score,t2,spe\n");
    let _ = writeln!(inputs, "{}", fitted.signals.join(","));
    for r in 0..EXPORT_GOLDEN_ROWS {
        let spread = if r < EXPORT_GOLDEN_ROWS * 3 / 4 { 1.0 } else { 4.0 };
        let mut row = vec![0.0; signals];
        for (k, &j) in model.used.iter().enumerate() {
            // Box–Muller: a standard normal value.
            let g = (-2.0 * uniform().ln()).sqrt() * (std::f64::consts::TAU * uniform()).cos();
            row[j] = model.mean[k] + model.scale[k] * g * spread;
        }
        let score = detector.score(&row)?;
        let cells: Vec<String> = row.iter().map(|v| table::float_text(*v)).collect();
        let _ = writeln!(inputs, "{}", cells.join(","));
        let (t2, spe) = (score.t2.unwrap_or(f64::NAN), score.spe.unwrap_or(f64::NAN));
        let _ = writeln!(
            outputs,
            "{},{},{}",
            table::float_text(score.value),
            table::float_text(t2),
            table::float_text(spe)
        );
    }
    Ok(Exported {
        bytes,
        inputs,
        outputs,
        outputs_table: "score = \"score\"     # max(T² / limit, SPE / limit), as usan's PCA",
        description: format!(
            "PCA, {} components of {} signals; T2 limit {:?}, SPE limit {:?}",
            model.components,
            model.used.len(),
            model.t2_limit,
            model.spe_limit
        ),
        // Both statistics are over their limits at 1.
        default_level: Some(1.0),
    })
}

/// An isolation forest: its score, 2^(−mean path / c(ψ)).
fn export_forest(
    path: &std::path::Path,
    fitted: &usan_core::detector::FittedModel,
    forest: &usan_core::detector::IsolationForest,
) -> anyhow::Result<Exported> {
    use std::fmt::Write as _;
    use usan_core::detector::Detector;
    use usan_onnx::export::{ForestGraph, ForestNode};
    let Some(view) = forest.view() else { anyhow::bail!("{}: the forest has not been fitted", path.display()) };
    let signals = fitted.signals.len();
    if view.width != signals {
        anyhow::bail!("{}: a forest of {} signals for {signals} named signals", path.display(), view.width);
    }
    let nodes: Vec<ForestNode> = view
        .nodes
        .iter()
        .map(|n| match n.split {
            Some((signal, value, left, right)) => ForestNode::Split { signal, value, left, right },
            None => ForestNode::Leaf { path: n.path },
        })
        .collect();
    let graph = ForestGraph { signals, nodes: &nodes, roots: &view.roots, normaliser: view.normaliser };
    let bytes = graph.to_onnx(env!("CARGO_PKG_VERSION")).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;

    // Goldens: rows spread over (and a little beyond) the range the splits
    // cover on each signal, scored by usan's forest.
    let mut range = vec![(f64::INFINITY, f64::NEG_INFINITY); signals];
    for n in &view.nodes {
        if let Some((signal, value, ..)) = n.split {
            range[signal] = (range[signal].0.min(value), range[signal].1.max(value));
        }
    }
    let mut uniform = golden_uniform();
    let mut detector = fitted.detector.clone();
    let mut inputs = String::new();
    let mut outputs = String::from("score\n");
    let _ = writeln!(inputs, "{}", fitted.signals.join(","));
    for _ in 0..EXPORT_GOLDEN_ROWS {
        let row: Vec<f64> = range
            .iter()
            .map(|&(lo, hi)| {
                let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 0.0) };
                let pad = 0.25 * (hi - lo);
                lo - pad + uniform() * (hi - lo + 2.0 * pad)
            })
            .collect();
        let score = detector.score(&row)?;
        let cells: Vec<String> = row.iter().map(|v| table::float_text(*v)).collect();
        let _ = writeln!(inputs, "{}", cells.join(","));
        let _ = writeln!(outputs, "{}", table::float_text(score.value));
    }
    Ok(Exported {
        bytes,
        inputs,
        outputs,
        outputs_table: "score = \"score\"     # 2^(-mean path / c(psi)), as usan's isolation forest",
        description: format!(
            "isolation forest, {} trees of {} nodes over {signals} signals",
            view.roots.len(),
            view.nodes.len()
        ),
        default_level: None,
    })
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
    usan_core::allocator::keep_freed_memory_for_reuse();
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
