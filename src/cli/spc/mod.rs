//! `usan spc`: a control chart, its run-rule violations and the process
//! capability of one column of a CSV file, as text or JSON.
//!
//! Reading the file: the first line is the header; the delimiter is the
//! first of `,`, `;` or tab found in it. Empty cells are missing
//! measurements and are left out (their count is reported); any other cell
//! that is not a number is an error naming its line, never a silent zero.
//!
//! Subgroups (X̄–R, X̄–S): `--subgroup N` cuts consecutive rows into groups
//! of N; `--subgroup-column C` starts a new group whenever C changes.
//! Attribute charts read counts from `--column`: for p, np and u the sample
//! sizes come from `--subgroup N` (one size) or `--subgroup-column C` (a
//! size per row); a c chart counts per row.

pub mod report;

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use usan_core::spc::capability::{Capability, Spec, capability};
use usan_core::spc::chart::{Chart, ChartData, ChartKind, ChartSettings, chart};
use usan_core::spc::hotelling::{HotellingSettings, hotelling};
use usan_core::spc::rules::RuleSet;

/// `usan spc` as typed on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The CSV file (header on the first line; `,`, `;` or tab).
    pub file: std::path::PathBuf,
    /// The measured (or counted) column; for `--chart t2`, several: `a,b,c`.
    #[arg(long)]
    pub column: String,
    /// Subgroup size (X̄ charts) or constant sample size (p, np, u).
    #[arg(long)]
    pub subgroup: Option<usize>,
    /// Column whose changes start a new subgroup (X̄ charts) or that holds each sample's size (p, np, u).
    #[arg(long)]
    pub subgroup_column: Option<String>,
    /// The chart.
    #[arg(long, value_enum, default_value = "imr")]
    pub chart: SpcChart,
    /// EWMA weight of the newest value.
    #[arg(long, default_value_t = 0.2)]
    pub lambda: f64,
    /// EWMA limit width in σ.
    #[arg(long, default_value_t = 3.0)]
    pub width: f64,
    /// CUSUM slack in σ.
    #[arg(long, default_value_t = 0.5)]
    pub k: f64,
    /// CUSUM decision interval in σ.
    #[arg(long, default_value_t = 5.0)]
    pub h: f64,
    /// T² false-alarm probability per point (0.0027 matches 3σ).
    #[arg(long, default_value_t = 0.0027)]
    pub alpha: f64,
    /// Specification limits `LSL,USL` (either may be empty) for capability.
    #[arg(long, allow_hyphen_values = true)]
    pub spec: Option<String>,
    /// Target for Cpm (default: the middle of the specification).
    #[arg(long, allow_hyphen_values = true)]
    pub target: Option<f64>,
    /// Run rules: Western Electric or Nelson.
    #[arg(long, value_enum, default_value = "nelson")]
    pub rules: SpcRules,
    /// Establish the limits from the first N points (Phase I), then judge the rest against them.
    #[arg(long)]
    pub baseline: Option<usize>,
    /// Re-establish the limits without out-of-control baseline points (recorded in the output).
    #[arg(long)]
    pub exclude: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also write a self-contained HTML report (charts, violations, capability, histogram).
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
}

/// Run `usan spc`.
///
/// # Errors
/// As [`chart_file`], and when `--spec` is not `LSL,USL`.
pub fn run(args: Args) -> anyhow::Result<()> {
    chart_file(&args.into_args()?)
}

/// `--chart`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SpcChart {
    /// Hotelling T² over several columns (`--column a,b,c`).
    T2,
    /// Subgroup means and ranges.
    XbarR,
    /// Subgroup means and standard deviations.
    XbarS,
    /// Individuals and moving ranges.
    Imr,
    /// Proportion defective.
    P,
    /// Number defective.
    Np,
    /// Defects per unit.
    C,
    /// Defects per unit, varying sizes.
    U,
    /// EWMA of individuals.
    Ewma,
    /// Tabular CUSUM of individuals.
    Cusum,
}

/// `--rules`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SpcRules {
    /// Western Electric.
    We,
    /// Nelson.
    Nelson,
}

impl Args {
    /// The typed settings.
    ///
    /// # Errors
    /// When `--spec` is not `LSL,USL`.
    pub fn into_args(self) -> anyhow::Result<SpcArgs> {
        let chart = match self.chart {
            SpcChart::T2 => None,
            SpcChart::XbarR => Some(ChartKind::XbarR),
            SpcChart::XbarS => Some(ChartKind::XbarS),
            SpcChart::Imr => Some(ChartKind::Imr),
            SpcChart::P => Some(ChartKind::P),
            SpcChart::Np => Some(ChartKind::Np),
            SpcChart::C => Some(ChartKind::C),
            SpcChart::U => Some(ChartKind::U),
            SpcChart::Ewma => Some(ChartKind::Ewma { lambda: self.lambda, width: self.width }),
            SpcChart::Cusum => Some(ChartKind::Cusum { k: self.k, h: self.h }),
        };
        let rules = match self.rules {
            SpcRules::We => RuleSet::We,
            SpcRules::Nelson => RuleSet::Nelson,
        };
        Ok(SpcArgs {
            spec: self.spec.as_deref().map(parse_spec).transpose()?,
            file: self.file,
            column: self.column,
            subgroup: self.subgroup,
            subgroup_column: self.subgroup_column,
            chart,
            alpha: self.alpha,
            target: self.target,
            rules,
            baseline: self.baseline,
            exclude: self.exclude,
            json: self.json,
            report: self.report,
        })
    }
}

/// What `usan spc` was asked for, typed.
#[derive(Debug, Clone)]
pub struct SpcArgs {
    /// The CSV file.
    pub file: std::path::PathBuf,
    /// The measured (or counted) column.
    pub column: String,
    /// Constant subgroup (or sample) size.
    pub subgroup: Option<usize>,
    /// Column that defines subgroups (or holds sample sizes for p, np, u).
    pub subgroup_column: Option<String>,
    /// The chart (with its settings for EWMA and CUSUM); None: Hotelling T²
    /// over the comma-separated columns of `column`.
    pub chart: Option<ChartKind>,
    /// False-alarm probability per point of a T² chart.
    pub alpha: f64,
    /// Specification limits, either side optional.
    pub spec: Option<(Option<f64>, Option<f64>)>,
    /// Target for Cpm (default: the middle of the limits).
    pub target: Option<f64>,
    /// Run rules.
    pub rules: RuleSet,
    /// Points that establish the limits (all when absent).
    pub baseline: Option<usize>,
    /// Exclude out-of-control baseline points and re-establish the limits.
    pub exclude: bool,
    /// Print JSON instead of text.
    pub json: bool,
    /// Also write a self-contained HTML report here.
    pub report: Option<std::path::PathBuf>,
}

/// Parses `LSL,USL` where either side may be empty (`,10.5`).
///
/// # Errors
/// When a side is not a number or there is no comma.
pub fn parse_spec(text: &str) -> anyhow::Result<(Option<f64>, Option<f64>)> {
    let (lower, upper) =
        text.split_once(',').with_context(|| format!("--spec takes LSL,USL (either may be empty), got {text:?}"))?;
    let side = |s: &str, name: &str| -> anyhow::Result<Option<f64>> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(None);
        }
        let v: f64 = s.parse().with_context(|| format!("--spec: {name} {s:?} is not a number"))?;
        anyhow::ensure!(v.is_finite(), "--spec: {name} must be finite");
        Ok(Some(v))
    };
    Ok((side(lower, "LSL")?, side(upper, "USL")?))
}

/// Columns of a CSV, with the rows they came from.
struct Column {
    /// (1-based line, values) of every row whose cells are all present.
    rows: Vec<(usize, Vec<f64>)>,
    /// The grouping column's cell per kept row.
    groups: Vec<String>,
    /// Rows left out because a cell was empty.
    missing: usize,
}

fn read_columns(path: &Path, columns: &[&str], group_column: Option<&str>) -> anyhow::Result<Column> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let Some((_, header)) = lines.next() else { bail!("{} is empty", path.display()) };
    let delimiter = [',', ';', '\t'].into_iter().find(|d| header.contains(*d)).unwrap_or(',');
    let names: Vec<&str> = header.split(delimiter).map(|n| n.trim().trim_matches('"')).collect();
    let find = |name: &str| {
        names
            .iter()
            .position(|n| *n == name)
            .with_context(|| format!("{}: no column {name:?} (the header has {})", path.display(), names.join(", ")))
    };
    let at: Vec<usize> = columns.iter().map(|c| find(c)).collect::<anyhow::Result<_>>()?;
    let group_at = group_column.map(find).transpose()?;
    let mut out = Column { rows: Vec::new(), groups: Vec::new(), missing: 0 };
    for (i, line) in lines {
        let cells: Vec<&str> = line.split(delimiter).map(|c| c.trim().trim_matches('"')).collect();
        if cells.len() != names.len() {
            bail!(
                "{} line {}: {} cells where the header has {} (delimiter {delimiter:?})",
                path.display(),
                i + 1,
                cells.len(),
                names.len()
            );
        }
        if at.iter().any(|&a| cells[a].is_empty()) {
            out.missing += 1;
            continue;
        }
        let values =
            at.iter()
                .zip(columns)
                .map(|(&a, name)| {
                    let cell = cells[a];
                    cell.parse::<f64>().ok().filter(|v| v.is_finite()).with_context(|| {
                        format!("{} line {}: {name} = {cell:?} is not a number", path.display(), i + 1)
                    })
                })
                .collect::<anyhow::Result<Vec<f64>>>()?;
        out.rows.push((i + 1, values));
        out.groups.push(group_at.map_or_else(String::new, |g| cells[g].to_string()));
    }
    Ok(out)
}

/// Consecutive rows cut into subgroups: of `--subgroup N`, or wherever
/// `--subgroup-column` changes.
fn cut<T: Clone>(args: &SpcArgs, rows: &[T], groups: &[String]) -> anyhow::Result<Vec<Vec<T>>> {
    match (args.subgroup, &args.subgroup_column) {
        (Some(n), None) => {
            anyhow::ensure!(n >= 1, "--subgroup must be at least 1");
            let cut: Vec<Vec<T>> = rows.chunks(n).map(<[T]>::to_vec).collect();
            if let Some(last) = cut.last().filter(|g| g.len() != n) {
                bail!(
                    "{} values do not divide into subgroups of {n}: the last subgroup has {} (subgroup sizes must not vary)",
                    rows.len(),
                    last.len()
                );
            }
            Ok(cut)
        }
        (None, Some(_)) => {
            let mut cut: Vec<Vec<T>> = Vec::new();
            let mut current: Option<&str> = None;
            for (g, row) in groups.iter().zip(rows) {
                if current != Some(g.as_str()) {
                    cut.push(Vec::new());
                    current = Some(g);
                }
                if let Some(last) = cut.last_mut() {
                    last.push(row.clone());
                }
            }
            Ok(cut)
        }
        (Some(_), Some(_)) => bail!("give --subgroup or --subgroup-column, not both"),
        (None, None) => bail!(
            "the {} chart needs subgroups: --subgroup N or --subgroup-column C",
            args.chart.map_or("t2", ChartKind::name)
        ),
    }
}

/// Runs a Hotelling T² chart over the comma-separated `--column` list.
fn run_t2(args: &SpcArgs, alpha: f64) -> anyhow::Result<()> {
    let names: Vec<&str> = args.column.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
    anyhow::ensure!(names.len() >= 2, "the t2 chart needs two or more columns: --column a,b,...");
    if args.spec.is_some() {
        bail!("--spec applies to one measurement, not to a T² chart");
    }
    if args.exclude {
        bail!("--exclude is not supported for T² charts yet: give --baseline N over in-control points");
    }
    let table = read_columns(&args.file, &names, args.subgroup_column.as_deref())?;
    let vectors: Vec<Vec<f64>> = table.rows.iter().map(|(_, v)| v.clone()).collect();
    let subgroups = if args.subgroup.is_none() && args.subgroup_column.is_none() {
        vectors.into_iter().map(|v| vec![v]).collect()
    } else {
        cut(args, &vectors, &table.groups)?
    };
    let settings = HotellingSettings { alpha, baseline: args.baseline, limits_rule: args.rules.limits_rule() };
    let result =
        hotelling(&subgroups, &settings).with_context(|| format!("{}: {}", args.file.display(), args.column))?;
    output(args, &result, None, table.missing, &[])
}

/// The chart, violations and capability `args` ask for, printed (and the report written).
///
/// # Errors
/// Unreadable files, missing columns, non-numeric cells, data that do not
/// suit the chart, reversed or missing specification limits.
pub fn chart_file(args: &SpcArgs) -> anyhow::Result<()> {
    let Some(kind) = args.chart else { return run_t2(args, args.alpha) };
    let column = read_columns(&args.file, &[args.column.as_str()], args.subgroup_column.as_deref())?;
    let values: Vec<f64> = column.rows.iter().map(|(_, v)| v[0]).collect();
    let data = if kind.takes_subgroups() {
        anyhow::ensure!(
            args.subgroup != Some(1),
            "--subgroup must be at least 2 for an X̄ chart (use --chart imr for individuals)"
        );
        ChartData::Subgroups(cut(args, &values, &column.groups)?)
    } else if kind.takes_counts() {
        let sizes = match (kind, args.subgroup, &args.subgroup_column) {
            (ChartKind::C, _, _) => vec![1.0; values.len()],
            (_, Some(n), None) => vec![n as f64; values.len()],
            (_, None, Some(name)) => column
                .groups
                .iter()
                .zip(&column.rows)
                .map(|(g, (line, _))| {
                    g.parse::<f64>().ok().filter(|n| n.is_finite()).with_context(|| {
                        format!("{} line {line}: sample size {name} = {g:?} is not a number", args.file.display())
                    })
                })
                .collect::<anyhow::Result<_>>()?,
            _ => bail!("the {} chart needs sample sizes: --subgroup N or --subgroup-column C", kind.name()),
        };
        ChartData::Counts { counts: values.clone(), sizes }
    } else {
        if args.subgroup.is_some() || args.subgroup_column.is_some() {
            bail!("the {} chart plots individual values: drop --subgroup / --subgroup-column", kind.name());
        }
        ChartData::Individuals(values.clone())
    };
    let settings =
        ChartSettings { kind, rules: args.rules, baseline: args.baseline, exclude_out_of_control: args.exclude };
    let result = chart(&settings, &data).with_context(|| format!("{}: {}", args.file.display(), args.column))?;
    let capability = match args.spec {
        None => None,
        Some(_) if kind.takes_counts() => bail!("--spec applies to measurements, not to a {} chart", kind.name()),
        Some((lower, upper)) => {
            let sigma = result.sigma.context("the chart has no within-subgroup σ")?;
            let spec = Spec { lower, upper, target: args.target };
            Some(capability(&values, sigma, &spec, 0.95).context("process capability")?)
        }
    };
    let individual = if kind.takes_counts() { &[][..] } else { &values[..] };
    output(args, &result, capability.as_ref(), column.missing, individual)?;
    Ok(())
}

/// Writes the report (when asked) and prints the chart as text or JSON.
fn output(
    args: &SpcArgs,
    result: &Chart,
    capability: Option<&Capability>,
    missing: usize,
    values: &[f64],
) -> anyhow::Result<()> {
    if let Some(path) = &args.report {
        let title = format!("{} of {} in {}", result.kind, args.column, args.file.display());
        let settings = format!(
            "{} chart, {} rules{}{}",
            result.kind,
            rules_name(args.rules),
            args.baseline.map_or_else(String::new, |n| format!(", limits from the first {n} points")),
            if args.exclude { ", out-of-control baseline points excluded" } else { "" }
        );
        let html = report::render(&report::ReportInput {
            title: &title,
            settings: &settings,
            chart: result,
            capability,
            spec: args.spec,
            values,
        });
        std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let printed = if args.json {
        serde_json::to_string_pretty(&to_json(args, result, capability, missing))? + "\n"
    } else {
        text(args, result, capability, missing)
    };
    // A reader that stops early (`| head`) is not an error.
    match std::io::stdout().lock().write_all(printed.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::from(e).context("writing the output"))
        }
        _ => Ok(()),
    }?;
    Ok(())
}

fn rules_name(rules: RuleSet) -> &'static str {
    match rules {
        RuleSet::We => "we",
        RuleSet::Nelson => "nelson",
    }
}

/// The chart as JSON: limits once when constant, per point where they vary.
fn to_json(args: &SpcArgs, c: &Chart, capability: Option<&Capability>, missing: usize) -> Value {
    let series: Vec<Value> = c
        .series
        .iter()
        .map(|s| {
            let defined: Vec<_> = s.points.iter().filter(|p| !p.centre.is_nan()).collect();
            let constant = defined.windows(2).all(|w| w[0].lower == w[1].lower && w[0].upper == w[1].upper);
            let number = |v: f64| if v.is_finite() { json!(v) } else { Value::Null };
            let mut out = json!({
                "name": s.name,
                "values": s.points.iter().map(|p| number(p.value)).collect::<Vec<_>>(),
            });
            if !s.contributions.is_empty() {
                out["contributions"] = json!(s.contributions);
            }
            if let (true, Some(first)) = (constant, defined.first()) {
                out["centre"] = json!(first.centre);
                out["lower"] = json!(first.lower);
                out["upper"] = json!(first.upper);
            } else {
                out["limits"] = s
                    .points
                    .iter()
                    .map(|p| json!({"centre": number(p.centre), "lower": number(p.lower), "upper": number(p.upper)}))
                    .collect();
            }
            out
        })
        .collect();
    let violations: Vec<Value> = c
        .series
        .iter()
        .flat_map(|s| {
            s.violations.iter().map(move |v| {
                json!({"rule": v.rule.name(), "index": v.index, "series": s.name, "points": v.points,
                       "description": report::meaning(&c.kind, v.rule)})
            })
        })
        .collect();
    json!({
        "file": args.file.display().to_string(),
        "column": args.column,
        "chart": c.kind,
        "rules": rules_name(args.rules),
        "points": c.series.first().map_or(0, |s| s.points.len()),
        "missing_values_skipped": missing,
        "baseline": c.baseline,
        "excluded": c.excluded,
        "centre": c.centre,
        "sigma": c.sigma,
        "series": series,
        "violations": violations,
        "capability": capability,
    })
}

fn text(args: &SpcArgs, c: &Chart, capability: Option<&Capability>, missing: usize) -> String {
    let mut out = String::new();
    let points = c.series.first().map_or(0, |s| s.points.len());
    let _ = writeln!(out, "{} chart of {} in {}: {points} points", c.kind, args.column, args.file.display());
    if missing > 0 {
        let _ = writeln!(out, "{missing} empty cells skipped");
    }
    let sigma = c.sigma.map_or_else(String::new, |s| format!(", short-term σ {s:.6}"));
    let _ = writeln!(out, "limits from the first {} points{sigma}", c.baseline);
    if !c.excluded.is_empty() {
        let _ = writeln!(out, "excluded from the limits as out of control: points {:?}", c.excluded);
    }
    for s in &c.series {
        let defined: Vec<_> = s.points.iter().filter(|p| !p.centre.is_nan()).collect();
        let constant = defined.windows(2).all(|w| w[0].lower == w[1].lower && w[0].upper == w[1].upper);
        match (constant, defined.first()) {
            (true, Some(p)) => {
                let _ = writeln!(out, "  {:<7} centre {:.6}  LCL {:.6}  UCL {:.6}", s.name, p.centre, p.lower, p.upper);
            }
            (_, Some(p)) => {
                let _ = writeln!(
                    out,
                    "  {:<7} centre {:.6}  limits vary from point to point (see --json)",
                    s.name, p.centre
                );
            }
            _ => {}
        }
    }
    let violations: Vec<_> = c.series.iter().flat_map(|s| s.violations.iter().map(move |v| (s, v))).collect();
    let _ = writeln!(out, "{} violations ({} rules):", violations.len(), rules_name(args.rules));
    let names: Vec<&str> = args.column.split(',').map(str::trim).collect();
    for (s, v) in &violations {
        let _ = writeln!(
            out,
            "  point {:>5} {:<7} {:<8} {}",
            v.index,
            s.name,
            v.rule.name(),
            report::meaning(&c.kind, v.rule)
        );
        // A T² point: which characteristics pushed it out, largest share first.
        if let Some(parts) = s.contributions.get(v.index) {
            let total: f64 = parts.iter().map(|p| p.max(0.0)).sum();
            let mut shares: Vec<(&str, f64)> =
                names.iter().copied().zip(parts.iter().map(|p| 100.0 * p.max(0.0) / total.max(1e-300))).collect();
            shares.sort_by(|a, b| b.1.total_cmp(&a.1));
            let shown: Vec<String> = shares.iter().map(|(n, p)| format!("{n} {p:.0} %")).collect();
            let _ = writeln!(out, "        contributions: {}", shown.join(", "));
        }
    }
    if let Some(cap) = capability {
        let _ = writeln!(
            out,
            "capability (n {}, mean {:.6}, σ within {:.6}, σ overall {:.6}):",
            cap.n, cap.mean, cap.sigma_within, cap.sigma_overall
        );
        for (name, i) in cap.indices() {
            let _ = writeln!(
                out,
                "  {name:<4} {:.3}  ({:.0} % interval {:.3} .. {:.3})",
                i.value,
                cap.confidence * 100.0,
                i.lower,
                i.upper
            );
        }
        let _ = writeln!(
            out,
            "  expected out of spec: {:.1} ppm within, {:.1} ppm overall; observed {:.1} ppm",
            cap.ppm_within, cap.ppm_overall, cap.ppm_observed
        );
        let _ = writeln!(
            out,
            "  normality: Anderson–Darling A² {:.4}, p {:.4}",
            cap.normality.statistic, cap.normality.p_value
        );
        for w in &cap.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
    }
    out
}
