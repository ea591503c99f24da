//! usan: industrial AI engine. The command line.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use usan::{batch, bench, config, demo, eval, serve};

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
    Demo {
        /// Address of the HTTP API.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stop after this long (e.g. `30s`); runs until Ctrl-C when absent.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Keep the demo's store in this file instead of a temporary one.
        #[arg(long)]
        store: Option<PathBuf>,
        /// Replay speed: source seconds per wall second (36000 plays 10 engine cycles a second).
        #[arg(long, default_value_t = 36000.0)]
        speed: f64,
    },
    /// Run the engine and the API on a configuration file.
    Serve {
        /// Configuration file (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Address of the HTTP API (overrides `[server] listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Stop after this long (e.g. `10m`); runs until Ctrl-C or SIGTERM when absent.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Stop once every replay source has reached its end and everything is stored.
        #[arg(long)]
        exit_when_done: bool,
    },
    /// Validate a configuration file and report every error at once.
    Check {
        /// Configuration file (TOML).
        config: PathBuf,
    },
    /// Fit a configuration's detectors on a history CSV and write model
    /// artifacts (`usan fit rul` trains a remaining-useful-life model instead).
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Fit {
        #[command(subcommand)]
        model: Option<FitModel>,
        /// Configuration file (TOML).
        #[arg(long, required = true)]
        config: Option<PathBuf>,
        /// The CSV, read with the settings of the config's file source.
        #[arg(long, required = true)]
        data: Option<PathBuf>,
        /// Which file source of the config describes the CSV (when there are several).
        #[arg(long)]
        source: Option<String>,
        /// Folder for the artifacts, `<out>/<asset>/<detector>.json`.
        #[arg(long, required = true)]
        out: Option<PathBuf>,
        /// Fit on each asset's first N rows only (all rows when absent).
        #[arg(long)]
        rows: Option<usize>,
    },
    /// Run the detectors on a public benchmark and write the scorers' prediction files.
    Eval {
        /// Which benchmark.
        #[arg(value_enum)]
        benchmark: Benchmark,
        /// The benchmark's data folder.
        data: PathBuf,
        /// Folder for the prediction files (for `cmapss`: the `unit,rul` CSV file;
        /// for `secom`, optional: `secom_predictions.csv` is written there).
        #[arg(long)]
        out: Option<PathBuf>,
        /// TOML file overriding the default settings.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// C-MAPSS subset: FD001, FD002, FD003 or FD004.
        #[arg(long)]
        subset: Option<String>,
    },
    /// A control chart of one CSV column: limits, run-rule violations and
    /// process capability (statistical process control).
    Spc(usan::spc::SpcCommand),
    /// Make an API token: prints the token and the line for `[auth] tokens`.
    Token {
        /// Who acts with it (recorded in alarm histories).
        #[arg(long)]
        name: String,
        /// viewer, operator or admin.
        #[arg(long, value_parser = parse_role)]
        role: usan::auth::Role,
    },
    /// Look at an OPC UA server: `usan opcua browse ENDPOINT` prints its
    /// address space (with `--asset`, as `nodes` lines for a source).
    Opcua {
        #[command(subcommand)]
        what: OpcuaCommand,
    },
    /// Measure the hot paths on this machine (see BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// Score a CSV with fitted models and write one finding per row and detector.
    Score {
        #[command(flatten)]
        history: HistoryArgs,
        /// Folder of fitted artifacts written by `usan fit`.
        #[arg(long)]
        models: PathBuf,
        /// Output CSV.
        #[arg(long)]
        out: PathBuf,
    },
}

/// A CSV read the way one of a configuration's file sources reads it.
#[derive(clap::Args)]
struct HistoryArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// The CSV, read with the settings of the config's file source.
    #[arg(long)]
    data: PathBuf,
    /// Which file source of the config describes the CSV (when there are several).
    #[arg(long)]
    source: Option<String>,
}

#[derive(Subcommand)]
enum OpcuaCommand {
    /// Print the objects and variables below a node, with node ids and data types.
    Browse(usan::source::opcua::browse::BrowseCommand),
}

#[derive(Subcommand)]
enum FitModel {
    /// Train a remaining-useful-life model from run-to-failure history
    /// (the TOML file names the history, its columns and the output).
    Rul {
        /// Training specification (TOML).
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Benchmark {
    /// Tennessee Eastman Process (d00.dat, dXX_te.dat or dXX.dat).
    Tep,
    /// Skoltech Anomaly Benchmark (<group>/<name>.csv).
    Skab,
    /// Numenta Anomaly Benchmark (data/<category>/<file>.csv, labels/combined_windows.json).
    Nab,
    /// NASA C-MAPSS turbofans, remaining useful life (train_FD00x.txt, test_FD00x.txt).
    Cmapss,
    /// SECOM semiconductor yield, pass/fail (uci-secom.csv), by stratified cross-validation.
    Secom,
    /// Steel-plate defect classes (Faults.NNA), by stratified cross-validation.
    Steel,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Streaming I–MR chart updates per second with every Nelson rule.
    Spc {
        /// Values to chart.
        #[arg(long, default_value_t = 10_000_000)]
        values: usize,
    },
    /// Scoring throughput of each detector (same data as the Python peers).
    Detectors {
        /// Rows to score.
        #[arg(long, default_value_t = 100_000)]
        rows: usize,
        /// Signal counts, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "8,52")]
        dims: Vec<usize>,
        /// Only these detector types (their config `type`, comma-separated).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// Batch rows: best of this many runs of `score_values`.
        #[arg(long, default_value_t = 1)]
        repeat: usize,
    },
    /// A CSV replayed at full speed through detectors into the store.
    Pipeline {
        /// Assets.
        #[arg(long, default_value_t = 10)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Rows per asset.
        #[arg(long, default_value_t = 20_000)]
        rows: usize,
        /// Detector: none, robust_z, ewma or pca.
        #[arg(long, default_value = "robust_z")]
        detector: String,
    },
    /// JSON batches published to an MQTT broker and ingested by an MQTT source.
    Mqtt {
        /// The broker, host:port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Assets.
        #[arg(long, default_value_t = 10)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Messages to publish.
        #[arg(long, default_value_t = 2_000)]
        messages: usize,
        /// Rows (timestamps) per message.
        #[arg(long, default_value_t = 50)]
        rows: usize,
        /// QoS of publisher and subscription (0 or 1).
        #[arg(long, default_value_t = 1)]
        qos: u8,
    },
    /// Latency from an MQTT publish to the finding coming back through the MQTT sink.
    MqttLatency {
        /// The broker, host:port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        broker: String,
        /// Signals per message (one row per message).
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Samples per second.
        #[arg(long, default_value_t = 10_000)]
        rate: usize,
        /// How long, in seconds.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// The store's commit period (`200ms`, `5s`).
        #[arg(long, default_value = "200ms")]
        flush_interval: String,
    },
    /// Live remaining-useful-life estimates per second: the demo's engines
    /// replayed cycle by cycle through the demo's RUL model.
    Rul {
        /// Times the ten engines are replayed.
        #[arg(long, default_value_t = 20)]
        repeat: usize,
        /// Another RUL model over the same 3 settings and 21 sensors (e.g. an
        /// ensemble from `usan fit rul` on C-MAPSS FD001).
        #[arg(long)]
        model: Option<PathBuf>,
    },
    /// A generated plant fed at a fixed rate; prints resident memory over time.
    Soak {
        /// Assets.
        #[arg(long, default_value_t = 1000)]
        assets: usize,
        /// Signals per asset.
        #[arg(long, default_value_t = 20)]
        signals: usize,
        /// Samples per second.
        #[arg(long, default_value_t = 20_000)]
        rate: usize,
        /// How long.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
        duration: Duration,
        /// Detector: none, robust_z, ewma or pca.
        #[arg(long, default_value = "pca")]
        detector: String,
    },
}

/// usan's own news at info; other crates' warnings, except the OPC UA
/// client's, which usan reports itself (lost sessions, refused certificates).
const DEFAULT_LOG_FILTER: &str = "warn,usan=info,opcua_client=off,opcua_crypto=off";

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    // Batch scoring's worker threads, started once here rather than on the first batch.
    usan_core::parallel::start();
    let result = match cli.command {
        Command::Check { config } => check(&config),
        Command::Fit { model: Some(FitModel::Rul { config }), .. } => usan::rul_fit::run(&config),
        Command::Fit { model: None, config: Some(config), data: Some(data), source, out: Some(out), rows } => {
            batch::fit(&config, &data, source.as_deref(), &out, rows)
        }
        Command::Fit { .. } => {
            Err(anyhow::anyhow!("usan fit needs --config, --data and --out (or `usan fit rul --config FILE`)"))
        }
        Command::Score { history: h, models, out } => {
            batch::score(&h.config, &h.data, h.source.as_deref(), &models, &out)
        }
        Command::Serve { config, listen, duration, exit_when_done } => runtime().and_then(|rt| {
            rt.block_on(async {
                let mut config = config::Config::load(&config)?;
                if let Some(listen) = listen {
                    config.server.listen = listen;
                }
                serve::serve(config, serve::ServeOptions { duration, exit_when_done, live_view: false }).await
            })
        }),
        Command::Eval { benchmark, data, out, settings, subset } => eval::EvalSettings::load(settings.as_deref())
            .and_then(|s| {
                let needs_out = || out.clone().ok_or_else(|| anyhow::anyhow!("this benchmark needs --out"));
                match benchmark {
                    Benchmark::Secom => eval::secom::run(&data, out.as_deref(), &s.secom),
                    Benchmark::Steel => eval::steel::run(&data, &s.steel),
                    Benchmark::Tep => eval::tep::run(&data, &needs_out()?, &s),
                    Benchmark::Skab => eval::skab::run(&data, &needs_out()?, &s),
                    Benchmark::Nab => eval::nab::run(&data, &needs_out()?, &s),
                    Benchmark::Cmapss => match subset.as_deref() {
                        Some(subset) if valid_subset(subset) => eval::cmapss::run(&data, subset, &needs_out()?, &s),
                        Some(other) => {
                            Err(anyhow::anyhow!("--subset must be FD001, FD002, FD003 or FD004, got {other:?}"))
                        }
                        None => Err(anyhow::anyhow!("usan eval cmapss needs --subset FD001|FD002|FD003|FD004")),
                    },
                }
            }),
        Command::Token { name, role } => usan::auth::print_new_token(&name, role),
        Command::Opcua { what: OpcuaCommand::Browse(browse) } => runtime().and_then(|rt| rt.block_on(browse.run())),
        Command::Spc(command) => command.into_args().and_then(|args| usan::spc::run(&args)),
        Command::Bench { what } => match what {
            BenchCommand::Spc { values } => bench::spc(values),
            BenchCommand::Detectors { rows, dims, only, repeat } => bench::detectors(rows, &dims, &only, repeat),
            BenchCommand::Pipeline { assets, signals, rows, detector } => {
                runtime().and_then(|rt| rt.block_on(bench::pipeline(assets, signals, rows, &detector)))
            }
            BenchCommand::Mqtt { broker, assets, signals, messages, rows, qos } => {
                runtime().and_then(|rt| rt.block_on(bench::mqtt::ingest(&broker, assets, signals, messages, rows, qos)))
            }
            BenchCommand::MqttLatency { broker, signals, rate, seconds, flush_interval } => runtime()
                .and_then(|rt| rt.block_on(bench::mqtt::latency(&broker, signals, rate, seconds, &flush_interval))),
            BenchCommand::Rul { repeat, model } => bench::rul(repeat, model.as_deref()),
            BenchCommand::Soak { assets, signals, rate, duration, detector } => {
                runtime().and_then(|rt| rt.block_on(bench::soak(assets, signals, rate, duration, &detector)))
            }
        },
        Command::Demo { listen, duration, store, speed } => {
            runtime().and_then(|rt| rt.block_on(demo::run(&listen, duration, store, speed)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_role(text: &str) -> Result<usan::auth::Role, String> {
    match text {
        "viewer" => Ok(usan::auth::Role::Viewer),
        "operator" => Ok(usan::auth::Role::Operator),
        "admin" => Ok(usan::auth::Role::Admin),
        other => Err(format!("`{other}`: viewer, operator or admin")),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    let config = config::Config::load(path)?;
    let plant = config.plant();
    let mut problems = Vec::new();
    for source in &config.sources {
        if let Err(e) = source.build(&plant) {
            problems.push(format!("{e:#}"));
        }
    }
    if let Err(e) = usan::pipeline::rul::prepare(&config.rul, &plant) {
        problems.push(format!("{e:#}"));
    }
    if !problems.is_empty() {
        anyhow::bail!("{} part(s) cannot start:\n  {}", problems.len(), problems.join("\n  "));
    }
    let signals: usize = plant.assets.iter().map(|a| a.signals.len()).sum();
    println!(
        "{}: ok ({} assets, {} signals, {} detectors, {} RUL models, {} sources, {} sinks)",
        path.display(),
        plant.assets.len(),
        signals,
        plant.detectors.len(),
        config.rul.len(),
        config.sources.len(),
        config.sinks.len()
    );
    Ok(())
}

/// The C-MAPSS subsets `usan eval cmapss` knows.
fn valid_subset(subset: &str) -> bool {
    matches!(subset, "FD001" | "FD002" | "FD003" | "FD004")
}
