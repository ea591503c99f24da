//! Control charts: limits established from a baseline (Phase I, optionally
//! excluding out-of-control points and recording which), then every point
//! judged against those fixed limits (Phase II) with the run rules.
//!
//! | chart | input | centre and limits |
//! |---|---|---|
//! | X̄–R | subgroups of one size n (2–25) | X̄̄ ± A2·R̄; R̄ between D3·R̄ and D4·R̄; σ = R̄/d2 |
//! | X̄–S | subgroups of one size n (2–25) | X̄̄ ± A3·s̄; s̄ between B3·s̄ and B4·s̄; σ = s̄/c4 |
//! | I–MR | individual values | x̄ ± 3·MR̄/d2(2); MR̄ up to D4(2)·MR̄ |
//! | p | defectives and sample sizes | p̄ ± 3√(p̄(1−p̄)/nᵢ), within 0..1 |
//! | np | defectives, one sample size | n·p̄ ± 3√(n·p̄(1−p̄)) |
//! | c | defects per unit of one size | c̄ ± 3√c̄ |
//! | u | defects and sizes | ū ± 3√(ū/nᵢ) |
//! | EWMA | individual values | μ ± L·σ·√(λ/(2−λ)·(1−(1−λ)^{2i})), σ = MR̄/d2(2) |
//! | CUSUM (tabular) | individual values | C⁺, C⁻ with slack k·σ, signal above h·σ |
//!
//! The run rules read the first series of X̄, I, p, np, c and u charts;
//! range, standard deviation, EWMA and CUSUM series are judged by their
//! limits only. Lower limits below zero are clamped to zero for series that
//! cannot be negative.

use super::constants::{ChartConstants, chart_constants};
use super::rules::{Rule, RuleChecker, RuleSet, Violation};
use serde::{Deserialize, Serialize};

/// What can be wrong with a chart's data or settings.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpcError {
    /// Too few points or subgroups for the chart.
    #[error("{chart}: needs at least {needed} {what}, got {got}")]
    TooFew {
        /// The chart.
        chart: &'static str,
        /// What is counted.
        what: &'static str,
        /// How many it needs.
        needed: usize,
        /// How many it got.
        got: usize,
    },
    /// A value or setting that the chart cannot use.
    #[error("{0}")]
    Invalid(String),
}

/// Which chart, with its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ChartKind {
    /// Subgroup means and ranges.
    XbarR,
    /// Subgroup means and standard deviations.
    XbarS,
    /// Individuals and moving ranges.
    Imr,
    /// Proportion defective.
    P,
    /// Number defective (constant sample size).
    Np,
    /// Defects per inspection unit (constant unit).
    C,
    /// Defects per unit (varying sizes).
    U,
    /// Exponentially weighted moving average of individuals.
    Ewma {
        /// Weight of the newest value, 0 < λ ≤ 1.
        lambda: f64,
        /// Limit width in σ of the EWMA.
        width: f64,
    },
    /// Tabular CUSUM of individuals.
    Cusum {
        /// Slack, in σ (half the shift to detect).
        k: f64,
        /// Decision interval, in σ.
        h: f64,
    },
}

impl ChartKind {
    /// The chart's short name.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            ChartKind::XbarR => "xbar-r",
            ChartKind::XbarS => "xbar-s",
            ChartKind::Imr => "imr",
            ChartKind::P => "p",
            ChartKind::Np => "np",
            ChartKind::C => "c",
            ChartKind::U => "u",
            ChartKind::Ewma { .. } => "ewma",
            ChartKind::Cusum { .. } => "cusum",
        }
    }

    /// Whether the chart reads subgroups (otherwise individual values or counts).
    #[must_use]
    pub fn takes_subgroups(self) -> bool {
        matches!(self, ChartKind::XbarR | ChartKind::XbarS)
    }

    /// Whether the chart reads counts with sample sizes.
    #[must_use]
    pub fn takes_counts(self) -> bool {
        matches!(self, ChartKind::P | ChartKind::Np | ChartKind::C | ChartKind::U)
    }
}

/// A chart's data.
#[derive(Debug, Clone, PartialEq)]
pub enum ChartData {
    /// Subgroups of measurements (X̄–R, X̄–S).
    Subgroups(Vec<Vec<f64>>),
    /// Individual measurements (I–MR, EWMA, CUSUM).
    Individuals(Vec<f64>),
    /// Counts (defectives or defects) with the size of each sample (p, np, c, u).
    Counts {
        /// Defectives (p, np) or defects (c, u) per sample.
        counts: Vec<f64>,
        /// Items (p, np) or inspection units (c, u) per sample.
        sizes: Vec<f64>,
    },
}

/// One plotted point with the limits it is judged against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChartPoint {
    /// The plotted statistic.
    pub value: f64,
    /// Centre line.
    pub centre: f64,
    /// Lower control limit.
    pub lower: f64,
    /// Upper control limit.
    pub upper: f64,
}

/// One series of a chart (a chart has one or two).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChartSeries {
    /// What is plotted: "xbar", "r", "s", "i", "mr", "p", "np", "c", "u", "ewma", "cusum+", "cusum-".
    pub name: String,
    /// The points, one per subgroup or value (the first moving range is at index 1).
    pub points: Vec<ChartPoint>,
    /// The rules broken, in point order.
    pub violations: Vec<Violation>,
    /// Per point, each characteristic's share of the statistic (T² charts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contributions: Vec<Vec<f64>>,
}

/// A chart: its series, the process estimates behind its limits and what
/// Phase I left out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Chart {
    /// The chart's short name.
    pub kind: String,
    /// Process centre the limits were set from.
    pub centre: f64,
    /// Within-subgroup (short-term) σ of the process, where the chart has one.
    pub sigma: Option<f64>,
    /// Points (subgroup or value indices) the limits were established from.
    pub baseline: usize,
    /// Baseline points excluded as out of control while establishing the limits, in the order excluded.
    pub excluded: Vec<usize>,
    /// The series.
    pub series: Vec<ChartSeries>,
}

/// How a chart is established and judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChartSettings {
    /// The chart.
    pub kind: ChartKind,
    /// Run rules for the first series.
    pub rules: RuleSet,
    /// Points (from the start) the limits come from; None: all (pure Phase I).
    pub baseline: Option<usize>,
    /// Re-establish the limits without baseline points beyond them until none are.
    pub exclude_out_of_control: bool,
}

/// Limits of one series as a function of the point: (centre, lower, upper).
type LimitsAt<'a> = Box<dyn Fn(usize) -> (f64, f64, f64) + 'a>;

/// Establish a chart's limits and judge every point.
///
/// # Errors
/// [`SpcError`] when the data do not suit the chart (too few points,
/// subgroup sizes that differ or are outside 2–25, counts beyond their
/// sizes, non-finite values) or the settings are out of range.
pub fn chart(settings: &ChartSettings, data: &ChartData) -> Result<Chart, SpcError> {
    let kind = settings.kind;
    let points = check(kind, data)?;
    let baseline = settings.baseline.unwrap_or(points).min(points);
    let mut excluded: Vec<usize> = Vec::new();
    loop {
        let kept: Vec<usize> = (0..baseline).filter(|i| !excluded.contains(i)).collect();
        let estimate = estimate(kind, data, &kept)?;
        let series = plot(kind, data, &estimate);
        // An individual far out also makes the two moving ranges around it
        // large: only the I series decides what is excluded (its moving
        // ranges go with it).
        let deciding = if kind == ChartKind::Imr { &series[..1] } else { &series[..] };
        let beyond: Vec<usize> = kept
            .iter()
            .copied()
            .filter(|&i| {
                deciding.iter().any(|s| s.points.get(i).is_some_and(|p| p.value > p.upper || p.value < p.lower))
            })
            .collect();
        if settings.exclude_out_of_control && !beyond.is_empty() && kind.shewhart() {
            excluded.extend(beyond);
            continue;
        }
        let series = judge(series, settings.rules, kind);
        return Ok(Chart {
            kind: kind.name().to_string(),
            centre: estimate.centre,
            sigma: estimate.sigma,
            baseline,
            excluded,
            series,
        });
    }
}

impl ChartKind {
    /// Shewhart charts (limits from the points themselves) can exclude points and re-estimate.
    fn shewhart(self) -> bool {
        !matches!(self, ChartKind::Ewma { .. } | ChartKind::Cusum { .. })
    }
}

/// What a chart's limits are built from.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// Process centre (X̄̄, x̄, p̄, c̄, ū; n·p̄ for np).
    centre: f64,
    /// Short-term σ (variables charts).
    sigma: Option<f64>,
    /// Mean dispersion statistic (R̄, s̄, MR̄) for the second series.
    dispersion: f64,
    /// Subgroup size and its constants (X̄–R, X̄–S).
    constants: Option<ChartConstants>,
}

fn too_few(chart: &'static str, what: &'static str, needed: usize, got: usize) -> SpcError {
    SpcError::TooFew { chart, what, needed, got }
}

/// Validates the data; the number of points the chart will have.
fn check(kind: ChartKind, data: &ChartData) -> Result<usize, SpcError> {
    let name = kind.name();
    match (kind, data) {
        (ChartKind::XbarR | ChartKind::XbarS, ChartData::Subgroups(groups)) => {
            let size = groups.first().map_or(0, Vec::len);
            if let Some((i, g)) = groups.iter().enumerate().find(|(_, g)| g.len() != size) {
                return Err(SpcError::Invalid(format!(
                    "{name}: subgroup sizes vary (subgroup 0 has {size} values, subgroup {i} has {}); \
                     X̄ charts here need one size",
                    g.len()
                )));
            }
            if chart_constants(size).is_none() {
                return Err(SpcError::Invalid(format!("{name}: subgroups must have 2 to 25 values, got {size}")));
            }
            if groups.iter().flatten().any(|v| !v.is_finite()) {
                return Err(SpcError::Invalid(format!("{name}: every value must be a finite number")));
            }
            if groups.len() < 2 {
                return Err(too_few(name, "subgroups", 2, groups.len()));
            }
            Ok(groups.len())
        }
        (ChartKind::Imr | ChartKind::Ewma { .. } | ChartKind::Cusum { .. }, ChartData::Individuals(values)) => {
            if values.iter().any(|v| !v.is_finite()) {
                return Err(SpcError::Invalid(format!("{name}: every value must be a finite number")));
            }
            if let ChartKind::Ewma { lambda, width } = kind
                && !(lambda > 0.0 && lambda <= 1.0 && width > 0.0)
            {
                return Err(SpcError::Invalid(format!(
                    "ewma: needs 0 < lambda ≤ 1 and width > 0, got {lambda}, {width}"
                )));
            }
            if let ChartKind::Cusum { k, h } = kind
                && !(k >= 0.0 && h > 0.0)
            {
                return Err(SpcError::Invalid(format!("cusum: needs k ≥ 0 and h > 0, got {k}, {h}")));
            }
            if values.len() < 3 {
                return Err(too_few(name, "values", 3, values.len()));
            }
            Ok(values.len())
        }
        (ChartKind::P | ChartKind::Np | ChartKind::C | ChartKind::U, ChartData::Counts { counts, sizes }) => {
            if counts.len() != sizes.len() {
                return Err(SpcError::Invalid(format!(
                    "{name}: {} counts but {} sample sizes",
                    counts.len(),
                    sizes.len()
                )));
            }
            if counts.iter().any(|c| !(c.is_finite() && *c >= 0.0)) {
                return Err(SpcError::Invalid(format!("{name}: counts must be numbers of at least 0")));
            }
            if sizes.iter().any(|n| !(n.is_finite() && *n > 0.0)) {
                return Err(SpcError::Invalid(format!("{name}: sample sizes must be above 0")));
            }
            if matches!(kind, ChartKind::P | ChartKind::Np) && counts.iter().zip(sizes).any(|(c, n)| c > n) {
                return Err(SpcError::Invalid(format!("{name}: a sample has more defectives than items")));
            }
            if matches!(kind, ChartKind::Np | ChartKind::C) && sizes.iter().any(|n| *n != sizes[0]) {
                return Err(SpcError::Invalid(format!(
                    "{name}: sample sizes vary; use the {} chart",
                    if kind == ChartKind::Np { "p" } else { "u" }
                )));
            }
            if counts.len() < 2 {
                return Err(too_few(name, "samples", 2, counts.len()));
            }
            Ok(counts.len())
        }
        _ => Err(SpcError::Invalid(format!(
            "{name}: takes {}",
            if kind.takes_subgroups() {
                "subgroups"
            } else if kind.takes_counts() {
                "counts with sample sizes"
            } else {
                "individual values"
            }
        ))),
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    sum / n.max(1) as f64
}

fn range(group: &[f64]) -> f64 {
    group.iter().copied().fold(f64::NEG_INFINITY, f64::max) - group.iter().copied().fold(f64::INFINITY, f64::min)
}

/// Sample standard deviation (n − 1).
pub(crate) fn sample_sd(values: &[f64]) -> f64 {
    let m = mean(values.iter().copied());
    (values.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / (values.len().max(2) - 1) as f64).sqrt()
}

/// Moving ranges |xᵢ − xᵢ₋₁| for i ≥ 1 among `kept` consecutive pairs.
fn moving_ranges(values: &[f64], kept: &[usize]) -> Vec<f64> {
    kept.windows(2).filter(|w| w[1] == w[0] + 1).map(|w| (values[w[1]] - values[w[0]]).abs()).collect()
}

/// The estimate of a chart from its `kept` baseline points.
fn estimate(kind: ChartKind, data: &ChartData, kept: &[usize]) -> Result<Estimate, SpcError> {
    let name = kind.name();
    let estimate = match (kind, data) {
        (ChartKind::XbarR | ChartKind::XbarS, ChartData::Subgroups(groups)) => {
            if kept.len() < 2 {
                return Err(too_few(name, "baseline subgroups", 2, kept.len()));
            }
            let constants = chart_constants(groups[0].len());
            let c = constants.ok_or_else(|| SpcError::Invalid(format!("{name}: no constants")))?;
            let centre = mean(kept.iter().map(|&i| mean(groups[i].iter().copied())));
            let (dispersion, sigma) = if kind == ChartKind::XbarR {
                let r_bar = mean(kept.iter().map(|&i| range(&groups[i])));
                (r_bar, r_bar / c.d2)
            } else {
                let s_bar = mean(kept.iter().map(|&i| sample_sd(&groups[i])));
                (s_bar, s_bar / c.c4)
            };
            Estimate { centre, sigma: Some(sigma), dispersion, constants }
        }
        (_, ChartData::Individuals(values)) => {
            let ranges = moving_ranges(values, kept);
            if ranges.is_empty() {
                return Err(too_few(name, "consecutive baseline values", 2, kept.len()));
            }
            let mr_bar = mean(ranges.iter().copied());
            let d2 = chart_constants(2).map_or(2.0 / std::f64::consts::PI.sqrt(), |c| c.d2);
            Estimate {
                centre: mean(kept.iter().map(|&i| values[i])),
                sigma: Some(mr_bar / d2),
                dispersion: mr_bar,
                constants: chart_constants(2),
            }
        }
        (_, ChartData::Counts { counts, sizes }) => {
            if kept.is_empty() {
                return Err(too_few(name, "baseline samples", 1, 0));
            }
            let total: f64 = kept.iter().map(|&i| counts[i]).sum();
            let items: f64 = kept.iter().map(|&i| sizes[i]).sum();
            let centre = match kind {
                ChartKind::P | ChartKind::U => total / items,
                ChartKind::Np => total / items * sizes[0],
                _ => total / kept.len() as f64,
            };
            Estimate { centre, sigma: None, dispersion: 0.0, constants: None }
        }
        _ => return Err(SpcError::Invalid(format!("{name}: wrong data for the chart"))),
    };
    Ok(estimate)
}

fn series(name: &str, values: &[f64], limits: &LimitsAt<'_>, first: usize) -> ChartSeries {
    let points = values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let (centre, lower, upper) = if i < first { (f64::NAN, f64::NAN, f64::NAN) } else { limits(i) };
            ChartPoint { value: *value, centre, lower, upper }
        })
        .collect();
    ChartSeries { name: name.to_string(), points, violations: Vec::new(), contributions: Vec::new() }
}

/// Every point of the chart with the estimate's limits.
fn plot(kind: ChartKind, data: &ChartData, e: &Estimate) -> Vec<ChartSeries> {
    let sigma = e.sigma.unwrap_or(0.0);
    match (kind, data) {
        (ChartKind::XbarR | ChartKind::XbarS, ChartData::Subgroups(groups)) => {
            let Some(c) = e.constants else { return Vec::new() };
            let means: Vec<f64> = groups.iter().map(|g| mean(g.iter().copied())).collect();
            let (a, low, high, name, spread): (f64, f64, f64, &str, Vec<f64>) = if kind == ChartKind::XbarR {
                (c.a2, c.d3_factor, c.d4_factor, "r", groups.iter().map(|g| range(g)).collect())
            } else {
                (c.a3, c.b3, c.b4, "s", groups.iter().map(|g| sample_sd(g)).collect())
            };
            let half = a * e.dispersion;
            let d = e.dispersion;
            vec![
                series(
                    "xbar",
                    &means,
                    &(Box::new(move |_| (e.centre, e.centre - half, e.centre + half)) as LimitsAt),
                    0,
                ),
                series(name, &spread, &(Box::new(move |_| (d, low * d, high * d)) as LimitsAt), 0),
            ]
        }
        (ChartKind::Imr, ChartData::Individuals(values)) => {
            let mr: Vec<f64> =
                std::iter::once(f64::NAN).chain(values.windows(2).map(|w| (w[1] - w[0]).abs())).collect();
            let d4 = e.constants.map_or(3.267, |c| c.d4_factor);
            let (centre, mr_bar) = (e.centre, e.dispersion);
            vec![
                series(
                    "i",
                    values,
                    &(Box::new(move |_| (centre, centre - 3.0 * sigma, centre + 3.0 * sigma)) as LimitsAt),
                    0,
                ),
                series("mr", &mr, &(Box::new(move |_| (mr_bar, 0.0, d4 * mr_bar)) as LimitsAt), 1),
            ]
        }
        (ChartKind::Ewma { lambda, width }, ChartData::Individuals(values)) => {
            let mut level = e.centre;
            let smoothed: Vec<f64> = values
                .iter()
                .map(|x| {
                    level = lambda * x + (1.0 - lambda) * level;
                    level
                })
                .collect();
            let centre = e.centre;
            let limits = move |i: usize| {
                let spread =
                    width * sigma * (lambda / (2.0 - lambda) * (1.0 - (1.0 - lambda).powi(2 * (i as i32 + 1)))).sqrt();
                (centre, centre - spread, centre + spread)
            };
            vec![series("ewma", &smoothed, &(Box::new(limits) as LimitsAt), 0)]
        }
        (ChartKind::Cusum { k, h }, ChartData::Individuals(values)) => {
            let (mut high, mut low) = (0.0f64, 0.0f64);
            let (mut upper, mut lower) = (Vec::new(), Vec::new());
            for x in values {
                high = (high + x - (e.centre + k * sigma)).max(0.0);
                low = (low + (e.centre - k * sigma) - x).max(0.0);
                upper.push(high);
                lower.push(low);
            }
            let limit = h * sigma;
            vec![
                series("cusum+", &upper, &(Box::new(move |_| (0.0, 0.0, limit)) as LimitsAt), 0),
                series("cusum-", &lower, &(Box::new(move |_| (0.0, 0.0, limit)) as LimitsAt), 0),
            ]
        }
        (_, ChartData::Counts { counts, sizes }) => {
            let centre = e.centre;
            let (name, values, limits): (&str, Vec<f64>, LimitsAt) = match kind {
                ChartKind::P => (
                    "p",
                    counts.iter().zip(sizes).map(|(c, n)| c / n).collect(),
                    Box::new(move |i| {
                        let spread = 3.0 * (centre * (1.0 - centre) / sizes[i]).sqrt();
                        (centre, (centre - spread).max(0.0), (centre + spread).min(1.0))
                    }),
                ),
                ChartKind::Np => (
                    "np",
                    counts.clone(),
                    Box::new(move |i| {
                        let spread = 3.0 * (centre * (1.0 - centre / sizes[i])).sqrt();
                        (centre, (centre - spread).max(0.0), centre + spread)
                    }),
                ),
                ChartKind::C => (
                    "c",
                    counts.clone(),
                    Box::new(move |_| (centre, (centre - 3.0 * centre.sqrt()).max(0.0), centre + 3.0 * centre.sqrt())),
                ),
                _ => (
                    "u",
                    counts.iter().zip(sizes).map(|(c, n)| c / n).collect(),
                    Box::new(move |i| {
                        let spread = 3.0 * (centre / sizes[i]).sqrt();
                        (centre, (centre - spread).max(0.0), centre + spread)
                    }),
                ),
            };
            vec![series(name, &values, &limits, 0)]
        }
        _ => Vec::new(),
    }
}

/// A point standardised by its own side's σ (limits are centre ± 3σ; a
/// side clamped onto zero is judged only by the other).
fn standardised(point: &ChartPoint) -> f64 {
    let up = (point.upper - point.centre) / 3.0;
    let down = (point.centre - point.lower) / 3.0;
    let gap = point.value - point.centre;
    if gap >= 0.0 {
        if up > 0.0 { gap / up } else { 0.0 }
    } else if down > 0.0 {
        gap / down
    } else {
        0.0
    }
}

/// Apply the rules: all of the set to the first series of Shewhart charts,
/// the limits rule to every other series.
fn judge(mut all: Vec<ChartSeries>, rules: RuleSet, kind: ChartKind) -> Vec<ChartSeries> {
    for (s, series) in all.iter_mut().enumerate() {
        let checked: &[Rule] = if s == 0 && kind.shewhart() { rules.rules() } else { &[] };
        let limits_rule = rules.limits_rule();
        let mut checker = RuleChecker::new(checked);
        for (i, point) in series.points.iter().enumerate() {
            if point.centre.is_nan() {
                checker.reset();
                continue;
            }
            if checked.is_empty() {
                if point.value > point.upper || point.value < point.lower {
                    series.violations.push(Violation { rule: limits_rule, index: i, points: vec![i] });
                }
                continue;
            }
            // Rule 1 is "beyond the limits" exactly, even where a clamped limit moved off centre ± 3σ.
            let mut found = checker.update(i, standardised(point));
            let beyond = point.value > point.upper || point.value < point.lower;
            found.retain(|v| v.rule != limits_rule);
            if beyond {
                found.insert(0, Violation { rule: limits_rule, index: i, points: vec![i] });
            }
            series.violations.extend(found);
        }
    }
    all
}

/// An I–MR chart on a stream: fixed limits from a baseline, each new value
/// judged by the run rules on the I chart and by its limit on the MR chart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImrMonitor {
    /// Centre of the I chart.
    pub centre: f64,
    /// Short-term σ (MR̄ / d2).
    pub sigma: f64,
    /// Upper limit of the MR chart (D4·MR̄).
    pub mr_upper: f64,
    limits_rule: Rule,
    checker: RuleChecker,
    previous: Option<f64>,
    index: usize,
}

/// What one value did to an [`ImrMonitor`].
#[derive(Debug, Clone, PartialEq)]
pub struct ImrUpdate {
    /// The value's standardised distance from the centre, (x − centre)/σ.
    pub z: f64,
    /// Its moving range (None for the first value or after a gap).
    pub moving_range: Option<f64>,
    /// Rules broken on the I chart, then the MR chart's limit (as the set's rule 1).
    pub violations: Vec<Violation>,
}

impl ImrMonitor {
    /// Limits from `baseline` (Phase I, with out-of-control values excluded
    /// when `exclude_out_of_control`), then monitoring from index 0.
    ///
    /// # Errors
    /// As [`chart`] for an I–MR chart of the baseline; also when the
    /// baseline shows no variation.
    pub fn from_baseline(baseline: &[f64], rules: RuleSet, exclude_out_of_control: bool) -> Result<Self, SpcError> {
        let settings = ChartSettings { kind: ChartKind::Imr, rules, baseline: None, exclude_out_of_control };
        let established = chart(&settings, &ChartData::Individuals(baseline.to_vec()))?;
        let sigma = established.sigma.unwrap_or(0.0);
        if sigma <= 0.0 {
            return Err(SpcError::Invalid("imr: the baseline shows no variation (MR̄ = 0)".into()));
        }
        let d2 = chart_constants(2).map_or(1.128, |c| c.d2);
        let d4 = chart_constants(2).map_or(3.267, |c| c.d4_factor);
        Ok(ImrMonitor {
            centre: established.centre,
            sigma,
            mr_upper: d4 * sigma * d2,
            limits_rule: rules.limits_rule(),
            checker: RuleChecker::new(rules.rules()),
            previous: None,
            index: 0,
        })
    }

    /// Judge the next value; a non-finite value is a gap that breaks every pattern.
    pub fn update(&mut self, x: f64) -> ImrUpdate {
        let index = self.index;
        self.index += 1;
        if !x.is_finite() {
            self.checker.reset();
            self.previous = None;
            return ImrUpdate { z: f64::NAN, moving_range: None, violations: Vec::new() };
        }
        let z = (x - self.centre) / self.sigma;
        let mut violations = self.checker.update(index, z);
        let moving_range = self.previous.map(|p| (x - p).abs());
        if moving_range.is_some_and(|mr| mr > self.mr_upper) {
            violations.push(Violation { rule: self.limits_rule, index, points: vec![index - 1, index] });
        }
        self.previous = Some(x);
        ImrUpdate { z, moving_range, violations }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(kind: ChartKind) -> ChartSettings {
        ChartSettings { kind, rules: RuleSet::Nelson, baseline: None, exclude_out_of_control: false }
    }

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance
    }

    #[test]
    fn xbar_r_matches_a_hand_computed_example() {
        // Five subgroups of 3. Means 2, 5, 3, 4, 6 → X̄̄ = 4; ranges 2, 2, 4, 2, 0 → R̄ = 2.
        // n = 3: A2 = 1.023, D3 = 0, D4 = 2.574 (table) → X̄ limits 4 ± 2.046, R limits 0..5.148.
        let groups = vec![
            vec![1.0, 2.0, 3.0],
            vec![4.0, 5.0, 6.0],
            vec![1.0, 3.0, 5.0],
            vec![3.0, 4.0, 5.0],
            vec![6.0, 6.0, 6.0],
        ];
        let c = chart(&settings(ChartKind::XbarR), &ChartData::Subgroups(groups)).unwrap();
        let xbar = &c.series[0].points[0];
        assert!(close(xbar.centre, 4.0, 1e-12));
        assert!(close(xbar.upper, 6.046, 1e-3) && close(xbar.lower, 1.954, 1e-3), "{xbar:?}");
        let r = &c.series[1].points[0];
        assert!(close(r.centre, 2.0, 1e-12) && r.lower == 0.0 && close(r.upper, 5.148, 2e-3), "{r:?}");
        assert!(close(c.sigma.unwrap(), 2.0 / 1.693, 1e-3));
        assert!(c.series.iter().all(|s| s.violations.is_empty()), "{c:?}");
    }

    #[test]
    fn imr_matches_a_hand_computed_example() {
        // Values 10, 12, 11, 13, 14: x̄ = 12; moving ranges 2, 1, 2, 1 → MR̄ = 1.5.
        // I limits 12 ± E2·1.5 with E2 = 3/d2(2) = 3/1.128379 = 2.658681 (tables: 2.66); MR upper 3.267·1.5 = 4.90.
        let c = chart(&settings(ChartKind::Imr), &ChartData::Individuals(vec![10.0, 12.0, 11.0, 13.0, 14.0])).unwrap();
        let i = &c.series[0].points[2];
        assert!(close(i.upper, 12.0 + 2.658681 * 1.5, 1e-5) && close(i.lower, 12.0 - 2.658681 * 1.5, 1e-5), "{i:?}");
        let mr = &c.series[1].points;
        assert!(mr[0].centre.is_nan(), "no moving range at the first value");
        assert!(close(mr[1].value, 2.0, 1e-12) && close(mr[1].upper, 3.267 * 1.5, 2e-3));
    }

    #[test]
    fn xbar_s_uses_c4() {
        // Subgroups of 4 with SDs known: {0, 2, 4, 6} (s = 2.582) and {1, 3, 5, 7}.
        let groups = vec![vec![0.0, 2.0, 4.0, 6.0], vec![1.0, 3.0, 5.0, 7.0], vec![2.0, 4.0, 6.0, 8.0]];
        let c = chart(&settings(ChartKind::XbarS), &ChartData::Subgroups(groups)).unwrap();
        let s_bar = (20.0f64 / 3.0).sqrt();
        assert!(close(c.series[1].points[0].centre, s_bar, 1e-12));
        // n = 4: A3 = 1.628, B4 = 2.266, c4 = 0.9213.
        assert!(close(c.series[0].points[0].upper, 4.0 + 1.628 * s_bar, 2e-3));
        assert!(close(c.series[1].points[0].upper, 2.266 * s_bar, 2e-3));
        assert!(close(c.sigma.unwrap(), s_bar / 0.9213, 1e-3));
    }

    #[test]
    fn attribute_charts_match_their_formulas() {
        // p: 4 samples, 100 items each except one of 50; 10 defectives in all (p̄ = 10/350).
        let counts = vec![2.0, 3.0, 1.0, 4.0];
        let sizes = vec![100.0, 100.0, 50.0, 100.0];
        let p = chart(&settings(ChartKind::P), &ChartData::Counts { counts: counts.clone(), sizes: sizes.clone() })
            .unwrap();
        let p_bar: f64 = 10.0 / 350.0;
        let pts = &p.series[0].points;
        assert!(close(pts[0].upper, p_bar + 3.0 * (p_bar * (1.0 - p_bar) / 100.0).sqrt(), 1e-12));
        assert!(close(pts[2].upper, p_bar + 3.0 * (p_bar * (1.0 - p_bar) / 50.0).sqrt(), 1e-12), "limits vary with n");
        assert_eq!(pts[0].lower, 0.0, "a negative lower limit is clamped");
        // c: c̄ = 2.5, limits 2.5 ± 3√2.5 = 0 (clamped) .. 7.243.
        let c =
            chart(&settings(ChartKind::C), &ChartData::Counts { counts: counts.clone(), sizes: vec![1.0; 4] }).unwrap();
        assert!(close(c.series[0].points[0].upper, 2.5 + 3.0 * 2.5f64.sqrt(), 1e-12));
        // np needs one sample size; u takes any.
        let np = chart(&settings(ChartKind::Np), &ChartData::Counts { counts: counts.clone(), sizes: sizes.clone() });
        assert!(matches!(np, Err(SpcError::Invalid(m)) if m.contains("use the p chart")));
        let u = chart(&settings(ChartKind::U), &ChartData::Counts { counts, sizes }).unwrap();
        assert!(close(u.centre, 10.0 / 350.0, 1e-12));
    }

    #[test]
    fn phase_one_excludes_out_of_control_subgroups_and_says_which() {
        let mut values: Vec<f64> = (0..30).map(|i| 10.0 + if i % 2 == 0 { 0.5 } else { -0.5 }).collect();
        values[12] = 30.0; // far out: moves x̄ and inflates MR̄ unless excluded
        let data = ChartData::Individuals(values);
        let plain = chart(&settings(ChartKind::Imr), &data).unwrap();
        let cleaned =
            chart(&ChartSettings { exclude_out_of_control: true, ..settings(ChartKind::Imr) }, &data).unwrap();
        assert_eq!(cleaned.excluded, vec![12]);
        assert!(cleaned.sigma.unwrap() < plain.sigma.unwrap() / 2.0, "{cleaned:?}");
        // 14 values of 10.5 and 15 of 9.5 remain.
        assert!(close(cleaned.centre, 10.0 - 0.5 / 29.0, 1e-9), "{}", cleaned.centre);
        // The excluded point is still plotted and still violates.
        assert!(cleaned.series[0].violations.iter().any(|v| v.index == 12 && v.rule == Rule::Nelson1));
    }

    #[test]
    fn phase_two_monitors_against_the_baseline_limits() {
        let mut g = crate::stats::SeededNormal::new(3);
        let mut values: Vec<f64> = (0..60).map(|_| 5.0 + 0.1 * g.normal()).collect();
        for v in &mut values[40..] {
            *v += 0.25; // a 2.5σ shift after the baseline
        }
        let c =
            chart(&ChartSettings { baseline: Some(40), ..settings(ChartKind::Imr) }, &ChartData::Individuals(values))
                .unwrap();
        assert_eq!(c.baseline, 40);
        assert!((c.centre - 5.0).abs() < 0.05, "limits come from the baseline only: {}", c.centre);
        let first = c.series[0].violations.iter().map(|v| v.index).min().unwrap();
        assert!((40..50).contains(&first), "the shift is caught soon after it starts: {first}");
    }

    #[test]
    fn ewma_and_cusum_catch_a_small_shift_a_shewhart_chart_misses() {
        let mut g = crate::stats::SeededNormal::new(8);
        let mut values: Vec<f64> = (0..200).map(|_| g.normal()).collect();
        for v in &mut values[100..] {
            *v += 1.0; // 1σ shift
        }
        let at = |kind| {
            let c = chart(
                &ChartSettings { baseline: Some(100), ..settings(kind) },
                &ChartData::Individuals(values.clone()),
            )
            .unwrap();
            c.series.iter().flat_map(|s| s.violations.iter().map(|v| v.index)).filter(|i| *i >= 100).min()
        };
        let ewma = at(ChartKind::Ewma { lambda: 0.2, width: 3.0 }).unwrap();
        let cusum = at(ChartKind::Cusum { k: 0.5, h: 5.0 }).unwrap();
        assert!(ewma < 130 && cusum < 130, "EWMA at {ewma}, CUSUM at {cusum}");
    }

    #[test]
    fn a_streaming_monitor_judges_like_the_chart() {
        let mut g = crate::stats::SeededNormal::new(21);
        let mut values: Vec<f64> = (0..300).map(|_| 20.0 + g.normal()).collect();
        values[250] = 26.0;
        for v in &mut values[270..280] {
            *v += 1.5;
        }
        let whole = chart(
            &ChartSettings { baseline: Some(200), ..settings(ChartKind::Imr) },
            &ChartData::Individuals(values.clone()),
        )
        .unwrap();
        let mut monitor = ImrMonitor::from_baseline(&values[..200], RuleSet::Nelson, false).unwrap();
        let streamed: Vec<(Rule, usize)> =
            values.iter().flat_map(|v| monitor.update(*v).violations).map(|v| (v.rule, v.index)).collect();
        let mut charted: Vec<(Rule, usize)> =
            whole.series.iter().flat_map(|s| s.violations.iter().map(|v| (v.rule, v.index))).collect();
        let mut streamed_sorted = streamed.clone();
        streamed_sorted.sort_unstable();
        charted.sort_unstable();
        assert_eq!(streamed_sorted, charted);
        assert!(streamed.contains(&(Rule::Nelson1, 250)), "{streamed:?}");
    }

    #[test]
    fn np_ewma_and_cusum_match_hand_computed_examples() {
        // np: 4 samples of 50, defectives 2, 4, 3, 3 → p̄ = 12/200 = 0.06, n·p̄ = 3,
        // limits 3 ± 3√(50·0.06·0.94) = 3 ± 3√2.82 = 3 ± 3·1.679286 = 0 (clamped) .. 8.037857.
        let np = chart(
            &settings(ChartKind::Np),
            &ChartData::Counts { counts: vec![2.0, 4.0, 3.0, 3.0], sizes: vec![50.0; 4] },
        )
        .unwrap();
        let p = &np.series[0].points[0];
        assert!(close(p.centre, 3.0, 1e-12) && close(p.upper, 8.037_857, 1e-6) && p.lower == 0.0, "{p:?}");

        // EWMA, λ = 0.5, L = 3, values 10, 12, 11, 13: x̄ = 11.5, MR̄ = (2 + 1 + 2)/3 = 5/3,
        // σ = MR̄/d2(2) = 1.477...; z: 10.75, 11.375, 11.1875, 12.09375.
        // Half-widths 3σ√(λ/(2−λ)(1−(1−λ)^{2i})) = 3σ√(1/3·(1 − 0.25^i)): i=1 → 3σ·0.5, i=2 → 3σ·√(0.3125).
        let ewma = chart(
            &settings(ChartKind::Ewma { lambda: 0.5, width: 3.0 }),
            &ChartData::Individuals(vec![10.0, 12.0, 11.0, 13.0]),
        )
        .unwrap();
        let sigma = (5.0 / 3.0) / (2.0 / std::f64::consts::PI.sqrt());
        let pts = &ewma.series[0].points;
        let expected = [10.75, 11.375, 11.1875, 12.093_75];
        for (p, z) in pts.iter().zip(expected) {
            assert!(close(p.value, z, 1e-12), "{p:?} vs {z}");
        }
        // d2(2) is integrated numerically (within 1e-7 of 2/√π), hence 1e-6.
        assert!(close(pts[0].upper - 11.5, 3.0 * sigma * 0.5, 1e-6));
        assert!(close(pts[1].upper - 11.5, 3.0 * sigma * 0.3125f64.sqrt(), 1e-6));

        // CUSUM, k = 0.5, h = 4 (in σ), values 0, 2, 1, 3, 0 with the same σ as
        // MR̄ = (2 + 1 + 2 + 3)/4 = 2 → σ = 2/d2(2) = 1.772454; μ = 1.2; K = 0.886227.
        // C⁺: max(0, x − 2.086227 + C⁺): 0, 0, 0, 0.913773, 0. C⁻: max(0, 0.313773 − x + C⁻): 0.313773, 0, 0, 0, 0.313773.
        let cusum = chart(
            &settings(ChartKind::Cusum { k: 0.5, h: 4.0 }),
            &ChartData::Individuals(vec![0.0, 2.0, 1.0, 3.0, 0.0]),
        )
        .unwrap();
        let high: Vec<f64> = cusum.series[0].points.iter().map(|p| p.value).collect();
        let low: Vec<f64> = cusum.series[1].points.iter().map(|p| p.value).collect();
        let sigma = 2.0 / (2.0 / std::f64::consts::PI.sqrt());
        let k = 0.5 * sigma;
        assert!(close(high[3], 3.0 - (1.2 + k), 1e-6) && high[..3].iter().all(|v| *v == 0.0), "{high:?}");
        assert!(close(low[0], 1.2 - k, 1e-6) && close(low[4], 1.2 - k, 1e-6) && low[1] == 0.0, "{low:?}");
        assert!(close(cusum.series[0].points[0].upper, 4.0 * sigma, 1e-6));
    }

    #[test]
    fn bad_data_is_a_clear_error() {
        let uneven = ChartData::Subgroups(vec![vec![1.0, 2.0], vec![1.0, 2.0, 3.0]]);
        assert!(matches!(chart(&settings(ChartKind::XbarR), &uneven), Err(SpcError::Invalid(m)) if m.contains("vary")));
        let too_big = ChartData::Subgroups(vec![vec![1.0; 26], vec![2.0; 26]]);
        assert!(matches!(chart(&settings(ChartKind::XbarR), &too_big), Err(SpcError::Invalid(_))));
        let few = ChartData::Individuals(vec![1.0, 2.0]);
        assert!(matches!(chart(&settings(ChartKind::Imr), &few), Err(SpcError::TooFew { needed: 3, .. })));
        let nan = ChartData::Individuals(vec![1.0, f64::NAN, 2.0, 3.0]);
        assert!(matches!(chart(&settings(ChartKind::Imr), &nan), Err(SpcError::Invalid(_))));
        let more_than_items = ChartData::Counts { counts: vec![5.0, 1.0], sizes: vec![4.0, 4.0] };
        assert!(matches!(chart(&settings(ChartKind::P), &more_than_items), Err(SpcError::Invalid(_))));
        let wrong = ChartData::Individuals(vec![1.0, 2.0, 3.0]);
        assert!(matches!(chart(&settings(ChartKind::P), &wrong), Err(SpcError::Invalid(m)) if m.contains("counts")));
    }
}
