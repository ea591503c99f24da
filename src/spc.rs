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

use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::path::Path;
use usan_core::spc::capability::{Capability, Spec, capability};
use usan_core::spc::chart::{Chart, ChartData, ChartKind, ChartSettings, chart};
use usan_core::spc::rules::RuleSet;

/// What `usan spc` was asked for.
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
    /// The chart (with its settings for EWMA and CUSUM).
    pub chart: ChartKind,
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

/// One column of a CSV, with the rows it came from.
struct Column {
    /// (1-based line, value) of every non-empty cell.
    values: Vec<(usize, f64)>,
    /// (1-based line, text) of the grouping column, aligned with `values`.
    groups: Vec<String>,
    missing: usize,
}

fn read_column(path: &Path, column: &str, group_column: Option<&str>) -> anyhow::Result<Column> {
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
    let at = find(column)?;
    let group_at = group_column.map(find).transpose()?;
    let mut out = Column { values: Vec::new(), groups: Vec::new(), missing: 0 };
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
        let cell = cells[at];
        if cell.is_empty() {
            out.missing += 1;
            continue;
        }
        let value: f64 = cell
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .with_context(|| format!("{} line {}: {column} = {cell:?} is not a number", path.display(), i + 1))?;
        out.values.push((i + 1, value));
        out.groups.push(group_at.map_or_else(String::new, |g| cells[g].to_string()));
    }
    Ok(out)
}

/// Runs `usan spc`.
///
/// # Errors
/// Unreadable files, missing columns, non-numeric cells, data that do not
/// suit the chart, reversed or missing specification limits.
pub fn run(args: &SpcArgs) -> anyhow::Result<()> {
    let column = read_column(&args.file, &args.column, args.subgroup_column.as_deref())?;
    let values: Vec<f64> = column.values.iter().map(|(_, v)| *v).collect();
    let kind = args.chart;
    let data = if kind.takes_subgroups() {
        ChartData::Subgroups(subgroups(args, &column)?)
    } else if kind.takes_counts() {
        let sizes = match (kind, args.subgroup, &args.subgroup_column) {
            (ChartKind::C, _, _) => vec![1.0; values.len()],
            (_, Some(n), None) => vec![n as f64; values.len()],
            (_, None, Some(name)) => column
                .groups
                .iter()
                .zip(&column.values)
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
    if let Some(path) = &args.report {
        let title = format!("{} of {} in {}", result.kind, args.column, args.file.display());
        let settings = format!(
            "{} chart, {} rules{}{}",
            result.kind,
            rules_name(args.rules),
            args.baseline.map_or_else(String::new, |n| format!(", limits from the first {n} points")),
            if args.exclude { ", out-of-control baseline points excluded" } else { "" }
        );
        let individual = if kind.takes_counts() { &[][..] } else { &values[..] };
        let html = crate::spc_report::render(&crate::spc_report::ReportInput {
            title: &title,
            settings: &settings,
            chart: &result,
            capability: capability.as_ref(),
            spec: args.spec,
            values: individual,
        });
        std::fs::write(path, html).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(args, &result, capability.as_ref(), column.missing))?);
    } else {
        print_text(args, &result, capability.as_ref(), column.missing);
    }
    Ok(())
}

fn subgroups(args: &SpcArgs, column: &Column) -> anyhow::Result<Vec<Vec<f64>>> {
    match (args.subgroup, &args.subgroup_column) {
        (Some(n), None) => {
            anyhow::ensure!(n >= 2, "--subgroup must be at least 2 for an X̄ chart (use --chart imr for individuals)");
            let groups: Vec<Vec<f64>> = column.values.chunks(n).map(|c| c.iter().map(|(_, v)| *v).collect()).collect();
            if let Some(last) = groups.last().filter(|g| g.len() != n) {
                bail!(
                    "{} values do not divide into subgroups of {n}: the last subgroup has {} (subgroup sizes must not vary)",
                    column.values.len(),
                    last.len()
                );
            }
            Ok(groups)
        }
        (None, Some(_)) => {
            let mut groups: Vec<Vec<f64>> = Vec::new();
            let mut current: Option<&str> = None;
            for (g, (_, v)) in column.groups.iter().zip(&column.values) {
                if current != Some(g.as_str()) {
                    groups.push(Vec::new());
                    current = Some(g);
                }
                if let Some(last) = groups.last_mut() {
                    last.push(*v);
                }
            }
            Ok(groups)
        }
        (Some(_), Some(_)) => bail!("give --subgroup or --subgroup-column, not both"),
        (None, None) => bail!("the {} chart needs subgroups: --subgroup N or --subgroup-column C", args.chart.name()),
    }
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
                       "description": v.rule.description()})
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

fn print_text(args: &SpcArgs, c: &Chart, capability: Option<&Capability>, missing: usize) {
    let points = c.series.first().map_or(0, |s| s.points.len());
    println!("{} chart of {} in {}: {points} points", c.kind, args.column, args.file.display());
    if missing > 0 {
        println!("{missing} empty cells skipped");
    }
    let sigma = c.sigma.map_or_else(String::new, |s| format!(", short-term σ {s:.6}"));
    println!("limits from the first {} points{sigma}", c.baseline);
    if !c.excluded.is_empty() {
        println!("excluded from the limits as out of control: points {:?}", c.excluded);
    }
    for s in &c.series {
        let defined: Vec<_> = s.points.iter().filter(|p| !p.centre.is_nan()).collect();
        let constant = defined.windows(2).all(|w| w[0].lower == w[1].lower && w[0].upper == w[1].upper);
        match (constant, defined.first()) {
            (true, Some(p)) => {
                println!("  {:<7} centre {:.6}  LCL {:.6}  UCL {:.6}", s.name, p.centre, p.lower, p.upper);
            }
            (_, Some(p)) => println!("  {:<7} centre {:.6}  limits vary with the sample size", s.name, p.centre),
            _ => {}
        }
    }
    let violations: Vec<_> = c.series.iter().flat_map(|s| s.violations.iter().map(move |v| (s, v))).collect();
    println!("{} violations ({} rules):", violations.len(), rules_name(args.rules));
    for (s, v) in &violations {
        println!("  point {:>5} {:<7} {:<8} {}", v.index, s.name, v.rule.name(), v.rule.description());
    }
    if let Some(cap) = capability {
        println!(
            "capability (n {}, mean {:.6}, σ within {:.6}, σ overall {:.6}):",
            cap.n, cap.mean, cap.sigma_within, cap.sigma_overall
        );
        let show = |name: &str, index: Option<usan_core::spc::capability::Index>| {
            if let Some(i) = index {
                println!(
                    "  {name:<4} {:.3}  ({:.0} % interval {:.3} .. {:.3})",
                    i.value,
                    cap.confidence * 100.0,
                    i.lower,
                    i.upper
                );
            }
        };
        show("Cp", cap.cp);
        show("Cpk", Some(cap.cpk));
        show("Pp", cap.pp);
        show("Ppk", Some(cap.ppk));
        show("Cpm", cap.cpm);
        println!(
            "  expected out of spec: {:.1} ppm within, {:.1} ppm overall; observed {:.1} ppm",
            cap.ppm_within, cap.ppm_overall, cap.ppm_observed
        );
        println!("  normality: Anderson–Darling A² {:.4}, p {:.4}", cap.normality.statistic, cap.normality.p_value);
        for w in &cap.warnings {
            println!("  warning: {w}");
        }
    }
}
