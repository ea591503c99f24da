//! Context memory: a streaming univariate detector that adapts to each
//! series without tuning, and whose scores mean the same on every series.
//!
//! One threshold watches many series at once (a plant's tags, NAB's 58
//! files), so a score must not depend on a series' scale, noise or rhythm.
//! Two stages give that, after the contextual anomaly detectors of the
//! Numenta benchmark (CAD OSE's memory of which value patterns follow which)
//! and Numenta's anomaly likelihood (Ahmad et al. 2017, the tail
//! probability of recent prediction errors under their own history):
//!
//! 1. **Surprise.** Each value becomes a symbol: its level and its step's.
//!    `levels` equal-width levels span the range of the last `window`
//!    values, `levels` more lie below it and `levels` above it (a value far
//!    out of range is in the outermost); a step (the change from the
//!    previous value) is levelled the same way against recent steps. The
//!    range is relative, so the symbols do not depend on units or scale;
//!    it is recomputed every `window / 8` values, so a value that leaves it
//!    stays out of range until the window has taken it in. The memory holds
//!    the patterns seen: a symbol after its `o` predecessors, for every `o`
//!    from 0 to `order`; the surprise of a value is how many of its
//!    `order + 1` patterns the memory has never seen. Memory is bounded:
//!    two generations of `memory` patterns, and when the newer is full the
//!    older is forgotten, so a series that changes for good becomes normal
//!    again.
//! 2. **Likelihood.** The sum of the last `recent` surprises (a run) is
//!    judged against the same sums over the `history` values before: the
//!    score is `−log10` of the chance of a run this strong, the share of
//!    past runs that reached it, or, for a run stronger than every past one,
//!    the normal tail probability under their mean and spread (Numenta's
//!    likelihood; alone it under-counts the heavy tails of surprise runs).
//!    So 3 means "fewer than 1 in 1,000 of this series' own recent runs
//!    were as surprising". A noisy series is always a little surprised and
//!    must be much more surprised to score; a regular one scores at its
//!    first break.
//!
//! Alone, on the Numenta benchmark's 18 shipped series, it scores well
//! below kNN-CAD at about 1,000 times its speed; fused beside it (`usan
//! eval nab`'s default) it adds 1.5 to 5 points, in-sample and held out
//! (BENCHMARKS.md, "Held-out figures").
//!
//! Causal: a value is scored against what came before it, then learned.
//! Each signal of a row is a separate series; the row scores its largest
//! signal's score and each signal's score is its contribution. Missing
//! values are skipped. The score is 0 until a signal has `warm_up` values.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, max_of, refuse_invalid};
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Settings of [`ContextMemory`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextMemoryConfig {
    /// Recent values (and steps) whose range levels a value (and its step).
    #[serde(default = "default_window")]
    pub window: usize,
    /// Equal-width levels across the recent range (as many again below it
    /// and above it).
    #[serde(default = "default_levels")]
    pub levels: usize,
    /// Longest context: predecessors a remembered pattern includes.
    #[serde(default = "default_order")]
    pub order: usize,
    /// Patterns remembered per generation (two generations are kept).
    #[serde(default = "default_memory")]
    pub memory: usize,
    /// Surprises summed into one (the run judged).
    #[serde(default = "default_recent")]
    pub recent: usize,
    /// Past sums of `recent` surprises the newest sum is judged against.
    #[serde(default = "default_history")]
    pub history: usize,
    /// Values a signal needs before it scores above 0.
    #[serde(default = "default_warm_up")]
    pub warm_up: usize,
}

fn default_window() -> usize {
    1000
}
fn default_levels() -> usize {
    4
}
fn default_order() -> usize {
    3
}
fn default_memory() -> usize {
    4096
}
fn default_recent() -> usize {
    10
}
fn default_history() -> usize {
    2000
}
fn default_warm_up() -> usize {
    300
}

impl Default for ContextMemoryConfig {
    fn default() -> Self {
        ContextMemoryConfig {
            window: default_window(),
            levels: default_levels(),
            order: default_order(),
            memory: default_memory(),
            recent: default_recent(),
            history: default_history(),
            warm_up: default_warm_up(),
        }
    }
}

/// Each check: `(name, value, lowest, highest)`.
fn out_of_range(checks: &[(&str, usize, usize, usize)]) -> Vec<String> {
    checks
        .iter()
        .filter(|(_, value, low, high)| value < low || value > high)
        .map(|(name, value, low, high)| format!("context_memory.{name} must be between {low} and {high}, got {value}"))
        .collect()
}

impl ContextMemoryConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = out_of_range(&[
            ("window", self.window, 8, 100_000),
            ("levels", self.levels, 2, 64),
            ("order", self.order, 0, 32),
            ("memory", self.memory, 16, 1 << 22),
            ("recent", self.recent, 1, 10_000),
            ("history", self.history, 2, 1_000_000),
            ("warm_up", self.warm_up, 0, 1_000_000),
        ]);
        if self.recent > self.history {
            problems.push(format!(
                "context_memory.recent must be at most history ({}), got {}",
                self.history, self.recent
            ));
        }
        problems
    }

    /// Bits of one generation's table: 32 slots per pattern, so a pattern
    /// never seen is taken for a seen one at most 1 time in 32.
    fn table_words(&self) -> usize {
        (self.memory.next_power_of_two() * 32) / 64
    }

    /// Values between two recomputations of the rank levels.
    fn refresh_every(&self) -> usize {
        (self.window / 8).max(1)
    }
}

/// Levels of one stream (values or steps): its last `window` members and
/// their range, recomputed every `window / 8` members (at every member while
/// the window fills).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Levels {
    recent: VecDeque<f64>,
    low: f64,
    high: f64,
    since_refresh: usize,
}

impl Levels {
    /// The level of `x`: `levels` equal-width levels span the recent range,
    /// `levels` more lie below it and `levels` above it (farther out counts
    /// as the outermost), so `0..3·levels`.
    fn level(&self, x: f64, levels: usize) -> u32 {
        let count = levels as f64;
        let span = (self.high - self.low).max(1e-12 * self.high.abs().max(self.low.abs()).max(1.0));
        let at = ((x - self.low) / span * count).floor().clamp(-count, 2.0 * count - 1.0);
        // In 0..3·levels ≤ 192 by the clamp.
        (at + count) as u32
    }

    fn push(&mut self, x: f64, config: &ContextMemoryConfig) {
        if self.recent.len() == config.window {
            self.recent.pop_front();
        }
        self.recent.push_back(x);
        self.since_refresh += 1;
        let every = config.refresh_every();
        if self.since_refresh >= every || self.recent.len() < every {
            (self.low, self.high) = self.recent.iter().fold((x, x), |(l, h), v| (l.min(*v), h.max(*v)));
            self.since_refresh = 0;
        }
    }
}

/// What one signal's series has taught the detector.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredTrack")]
struct Track {
    values: Levels,
    steps: Levels,
    last: Option<f64>,
    /// The last `order` symbols, oldest first.
    symbols: VecDeque<u32>,
    /// Patterns of the newer generation (a bit per hashed pattern).
    newer: Vec<u64>,
    /// Patterns of the older generation.
    older: Vec<u64>,
    /// Patterns added to the newer generation.
    stored: usize,
    /// The last `recent` surprises, oldest first.
    surprises: VecDeque<u8>,
    /// The last `history` sums of `recent` surprises, oldest first.
    sums: VecDeque<u32>,
    /// Values seen.
    seen: u64,
    #[serde(skip)]
    recent_sum: u32,
    #[serde(skip)]
    sum: u64,
    #[serde(skip)]
    sum_squares: u128,
    /// How many of `sums` hold each value.
    #[serde(skip)]
    counts: Vec<u32>,
}

/// A track as stored, before [`Track`] accepts it (its sums are recounted).
#[derive(Deserialize)]
struct StoredTrack {
    values: Levels,
    steps: Levels,
    last: Option<f64>,
    symbols: VecDeque<u32>,
    newer: Vec<u64>,
    older: Vec<u64>,
    stored: usize,
    surprises: VecDeque<u8>,
    sums: VecDeque<u32>,
    seen: u64,
}

impl TryFrom<StoredTrack> for Track {
    type Error = String;

    fn try_from(stored: StoredTrack) -> Result<Self, String> {
        if stored.newer.len() != stored.older.len() || !stored.newer.len().is_power_of_two() {
            return Err("a stored context_memory table is not two generations of a power-of-two size".into());
        }
        let finite = |l: &Levels| l.recent.iter().chain([&l.low, &l.high]).all(|v| v.is_finite());
        if !finite(&stored.values) || !finite(&stored.steps) {
            return Err("a stored context_memory track holds a value that is not a number".into());
        }
        let mut track = Track {
            values: stored.values,
            steps: stored.steps,
            last: stored.last,
            symbols: stored.symbols,
            newer: stored.newer,
            older: stored.older,
            stored: stored.stored,
            surprises: VecDeque::new(),
            sums: VecDeque::new(),
            seen: stored.seen,
            recent_sum: 0,
            sum: 0,
            sum_squares: 0,
            counts: Vec::new(),
        };
        track.recount(stored.surprises, stored.sums);
        Ok(track)
    }
}

/// Golden-ratio increment of splitmix64.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finaliser: every input bit moves every output bit.
fn mix(mut h: u64) -> u64 {
    h = (h ^ (h >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

impl Track {
    fn new(config: &ContextMemoryConfig) -> Self {
        let words = config.table_words();
        Track {
            values: Levels::default(),
            steps: Levels::default(),
            last: None,
            symbols: VecDeque::with_capacity(config.order + 1),
            newer: vec![0; words],
            older: vec![0; words],
            stored: 0,
            surprises: VecDeque::with_capacity(config.recent + 1),
            sums: VecDeque::with_capacity(config.history + 1),
            seen: 0,
            recent_sum: 0,
            sum: 0,
            sum_squares: 0,
            counts: Vec::new(),
        }
    }

    /// Rebuilds the running sums from the stored surprises and their sums.
    fn recount(&mut self, surprises: VecDeque<u8>, sums: VecDeque<u32>) {
        self.recent_sum = surprises.iter().map(|s| u32::from(*s)).sum();
        self.surprises = surprises;
        self.sum = sums.iter().map(|s| u64::from(*s)).sum();
        self.sum_squares = sums.iter().map(|s| u128::from(*s).pow(2)).sum();
        self.counts.clear();
        for s in &sums {
            self.count(*s, 1);
        }
        self.sums = sums;
    }

    /// Whether the pattern hashed to `h` was seen; it is remembered now.
    fn seen_then_remember(&mut self, h: u64, config: &ContextMemoryConfig) -> bool {
        let slots = self.newer.len() * 64;
        // The top bits index the table: `slots` is a power of two.
        let slot = (h >> (64 - slots.trailing_zeros())) as usize;
        let (word, bit) = (slot / 64, 1u64 << (slot % 64));
        let seen = (self.newer[word] | self.older[word]) & bit != 0;
        if self.newer[word] & bit == 0 {
            self.newer[word] |= bit;
            self.stored += 1;
            if self.stored >= config.memory {
                std::mem::swap(&mut self.newer, &mut self.older);
                self.newer.iter_mut().for_each(|w| *w = 0);
                self.stored = 0;
            }
        }
        seen
    }

    /// Learns `x` and returns its score against everything before it.
    fn step(&mut self, x: f64, config: &ContextMemoryConfig) -> f64 {
        let step = self.last.map_or(0.0, |last| x - last);
        let symbol = self.values.level(x, config.levels) * 3 * config.levels as u32 + self.steps.level(step, config.levels);
        let mut h = mix(u64::from(symbol).wrapping_add(GOLDEN));
        let mut surprise = u8::from(!self.seen_then_remember(h, config));
        for o in 0..self.symbols.len() {
            let previous = self.symbols[self.symbols.len() - 1 - o];
            h = mix(h ^ (u64::from(previous) + 1).wrapping_mul(GOLDEN).wrapping_add(o as u64));
            surprise += u8::from(!self.seen_then_remember(h, config));
        }
        // Orders the short past cannot fill yet count as surprising
        // (`order` ≤ 32 by validation).
        surprise += (config.order - self.symbols.len()) as u8;
        self.symbols.push_back(symbol);
        if self.symbols.len() > config.order {
            self.symbols.pop_front();
        }
        self.values.push(x, config);
        if self.last.is_some() {
            self.steps.push(step, config);
        }
        self.last = Some(x);
        self.seen += 1;
        self.likelihood(surprise, config)
    }

    fn likelihood(&mut self, surprise: u8, config: &ContextMemoryConfig) -> f64 {
        self.surprises.push_back(surprise);
        self.recent_sum += u32::from(surprise);
        if self.surprises.len() > config.recent
            && let Some(leaving) = self.surprises.pop_front()
        {
            self.recent_sum -= u32::from(leaving);
        }
        let score = if self.seen <= config.warm_up as u64 || self.sums.len() < config.recent.max(2) {
            0.0
        } else {
            let n = self.sums.len() as f64;
            let mean = self.sum as f64 / n;
            // n·Σs² − (Σs)² is exact in integers: no cancellation.
            let spread = (self.sum_squares * self.sums.len() as u128).saturating_sub(u128::from(self.sum).pow(2));
            let std = ((spread as f64).sqrt() / n).max(SPREAD_FLOOR * config.recent as f64);
            let normal = minus_log10_normal_tail((f64::from(self.recent_sum) - mean) / std);
            // Surprise runs have heavier tails than a normal: a run the
            // history has reached is no rarer than the history says.
            let reached: u32 = self.counts.get(self.recent_sum as usize..).map_or(0, |c| c.iter().sum());
            if reached == 0 { normal } else { normal.min(-(f64::from(reached) / (n + 1.0)).log10()) }
        };
        if self.surprises.len() == config.recent {
            self.push_sum(self.recent_sum, config.history);
        }
        score
    }

    fn push_sum(&mut self, recent_sum: u32, history: usize) {
        self.sums.push_back(recent_sum);
        self.count(recent_sum, 1);
        self.sum += u64::from(recent_sum);
        self.sum_squares += u128::from(recent_sum).pow(2);
        if self.sums.len() > history
            && let Some(oldest) = self.sums.pop_front()
        {
            self.sum -= u64::from(oldest);
            self.sum_squares -= u128::from(oldest).pow(2);
            self.count(oldest, -1);
        }
    }

    /// Counts a sum into (or out of) the histogram of sums.
    fn count(&mut self, sum: u32, by: i32) {
        let at = sum as usize;
        if self.counts.len() <= at {
            self.counts.resize(at + 1, 0);
        }
        self.counts[at] = self.counts[at].saturating_add_signed(by);
    }
}

/// Smallest spread of surprises the likelihood assumes: a series the memory
/// predicts perfectly has none, and one new pattern must not score as
/// impossible.
const SPREAD_FLOOR: f64 = 0.1;

/// `−log10 P(Z > z)` for a standard normal `Z`, finite for every finite `z`.
fn minus_log10_normal_tail(z: f64) -> f64 {
    if z < 8.0 {
        let tail = 0.5 * statrs::function::erf::erfc(z / std::f64::consts::SQRT_2);
        -tail.log10()
    } else {
        // The asymptotic series P(Z > z) = φ(z)/z · (1 − 1/z² + 3/z⁴ − …),
        // within 1e-4 of the tail beyond 8, where erfc loses digits.
        let (z2, z4) = (z * z, z * z * z * z);
        let ln_tail = -0.5 * z2 - (z * (2.0 * std::f64::consts::PI).sqrt()).ln() + (1.0 - 1.0 / z2 + 3.0 / z4).ln();
        -ln_tail / std::f64::consts::LN_10
    }
}

/// Context memory detector; see the module documentation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredContextMemory")]
pub struct ContextMemory {
    config: ContextMemoryConfig,
    tracks: Vec<Track>,
}

/// A detector as stored, before [`ContextMemory`] accepts it.
#[derive(Deserialize)]
struct StoredContextMemory {
    config: ContextMemoryConfig,
    tracks: Vec<Track>,
}

impl TryFrom<StoredContextMemory> for ContextMemory {
    type Error = String;

    fn try_from(stored: StoredContextMemory) -> Result<Self, String> {
        let config = stored.config;
        refuse_invalid(config.validate()).map_err(|e| e.to_string())?;
        for track in &stored.tracks {
            if track.newer.len() != config.table_words()
                || track.symbols.len() > config.order
                || track.surprises.len() > config.recent
                || track.sums.len() > config.history
                || track.values.recent.len() > config.window
                || track.steps.recent.len() > config.window
                || track.surprises.iter().any(|s| usize::from(*s) > config.order + 1)
                || track.sums.iter().any(|s| *s as usize > (config.order + 1) * config.recent)
            {
                return Err("a stored context_memory track does not fit its settings".into());
            }
        }
        Ok(ContextMemory { config, tracks: stored.tracks })
    }
}

impl ContextMemory {
    /// An empty detector; it learns while scoring or from `learn`.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: ContextMemoryConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(ContextMemory { config, tracks: Vec::new() })
    }

    fn step(&mut self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(self.tracks.iter_mut())
            .map(|(x, track)| if x.is_finite() { track.step(*x, &self.config) } else { 0.0 })
            .collect()
    }
}

impl Detector for ContextMemory {
    /// Forgets everything, then learns the rows in order.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, 1)?;
        self.tracks = vec![Track::new(&self.config); width];
        for row in rows {
            self.step(row);
        }
        Ok(())
    }

    /// Scores a row against the past (the largest signal's score), then
    /// learns it.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        if self.tracks.is_empty() {
            self.tracks = vec![Track::new(&self.config); row.len()];
        }
        check_row(row, self.tracks.len())?;
        Ok(max_of(self.step(row)))
    }
}

impl DetectorKind for ContextMemory {
    type Config = ContextMemoryConfig;
    const NAME: &'static str = "context_memory";
    const SUMMARY: &'static str =
        "Remembers which value patterns follow which; scores the likelihood of recent surprises (streaming).";

    fn validate(config: &ContextMemoryConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &ContextMemoryConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &ContextMemoryConfig) -> usize {
        0
    }

    fn default_threshold(_config: &ContextMemoryConfig) -> ThresholdConfig {
        // Decades of rarity: 3 is a run of surprises that fewer than 1 in
        // 1,000 of the series' own recent runs reached.
        ThresholdConfig::fixed(3.0)
    }

    fn examples() -> Vec<ContextMemoryConfig> {
        vec![
            ContextMemoryConfig::default(),
            ContextMemoryConfig {
                window: 64,
                levels: 6,
                order: 2,
                memory: 256,
                recent: 3,
                history: 200,
                warm_up: 20,
            },
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;

    /// A fault: the value at an index, made faulty.
    type Fault = fn(usize, f64) -> f64;
    /// A change that spoils a stored detector.
    type Spoil = fn(&mut serde_json::Value);

    fn scores(config: &ContextMemoryConfig, values: &[f64]) -> Vec<f64> {
        let mut detector = ContextMemory::new(config.clone()).unwrap();
        values.iter().map(|v| detector.score(&[*v]).unwrap().value).collect()
    }

    fn max_after(scores: &[f64], from: usize) -> f64 {
        scores[from..].iter().copied().fold(0.0, f64::max)
    }

    /// A daily-like cycle of 96 steps with a little noise.
    fn cycle(n: usize, seed: u64) -> Vec<f64> {
        let mut noise = SeededNormal::new(seed);
        (0..n).map(|i| 50.0 + 20.0 * (i as f64 / 96.0 * std::f64::consts::TAU).sin() + 0.5 * noise.normal()).collect()
    }

    #[test]
    fn breaks_of_a_learned_pattern_score_high_and_its_repeats_do_not() {
        let config = ContextMemoryConfig::default();
        let normal = scores(&config, &cycle(4000, 1));
        let calm = max_after(&normal, 2000);
        assert!(calm < 5.0, "the learned cycle, its second half: {calm}");
        // Each fault, from value 3000 on, in a copy of the same series.
        let faults: [(&str, Fault); 3] = [
            ("level shift", |_, x| x + 60.0),
            ("spikes", |i, x| if i % 7 == 0 { x + 80.0 } else { x }),
            ("doubled amplitude", |_, x| 50.0 + 2.0 * (x - 50.0)),
        ];
        for (name, fault) in faults {
            let mut values = cycle(4000, 1);
            for (i, v) in values.iter_mut().enumerate().skip(3000) {
                *v = fault(i, *v);
            }
            let s = scores(&config, &values);
            let within = s[3000..3200].iter().copied().fold(0.0, f64::max);
            assert!(within > 5.0, "{name}: {within} (calm {calm})");
            assert_eq!(s[..3000], normal[..3000], "{name}: causal, the past scores as before");
        }
    }

    #[test]
    fn scores_do_not_depend_on_units() {
        let config = ContextMemoryConfig::default();
        let mut values = cycle(3000, 2);
        values[2500..2550].iter_mut().for_each(|v| *v += 40.0);
        let kelvin: Vec<f64> = values.iter().map(|v| v * 1000.0 + 273.15).collect();
        let (a, b) = (scores(&config, &values), scores(&config, &kelvin));
        let differ = a.iter().zip(&b).filter(|(x, y)| (*x - *y).abs() > 1e-9).count();
        // Rounding can move a value that sits on a level's edge: rarely.
        assert!(differ < 30, "{differ} of {} scores differ", a.len());
        assert!(max_after(&a, 2500) > 5.0 && max_after(&b, 2500) > 5.0);
    }

    #[test]
    fn pure_noise_stays_quiet_and_warm_up_scores_zero() {
        let mut noise = SeededNormal::new(3);
        let values: Vec<f64> = (0..20_000).map(|_| noise.normal()).collect();
        let config = ContextMemoryConfig::default();
        let s = scores(&config, &values);
        assert!(s[..config.warm_up].iter().all(|v| *v == 0.0));
        let loud = s.iter().filter(|v| **v > 5.0).count();
        assert!(loud < 20, "{loud} of 20,000 noise values over 5");
        let over_default = s.iter().filter(|v| **v > 3.0).count();
        assert!(over_default < 40, "{over_default} of 20,000 noise values over 3");
    }

    #[test]
    fn memory_forgets_so_a_new_normal_becomes_normal() {
        let config = ContextMemoryConfig { memory: 512, ..ContextMemoryConfig::default() };
        let mut values = cycle(3000, 4);
        values.extend(cycle(6000, 5).iter().map(|v| v * 3.0 + 100.0));
        let s = scores(&config, &values);
        assert!(max_after(&s[..3200], 3000) > 5.0, "the change is seen");
        assert!(max_after(&s, 7000) < 5.0, "and learned: {}", max_after(&s, 7000));
    }

    #[test]
    fn a_stored_detector_that_does_not_fit_its_settings_is_refused() {
        let mut detector = ContextMemory::new(ContextMemoryConfig::default()).unwrap();
        for v in cycle(500, 6) {
            detector.score(&[v]).unwrap();
        }
        let good = serde_json::to_value(&detector).unwrap();
        assert!(serde_json::from_value::<ContextMemory>(good.clone()).is_ok());
        let cases: [(&str, Spoil); 5] = [
            ("a table of another size", |v| v["tracks"][0]["newer"].as_array_mut().unwrap().truncate(8)),
            ("generations of different sizes", |v| v["tracks"][0]["older"].as_array_mut().unwrap().push(0.into())),
            ("a surprise beyond the order", |v| v["tracks"][0]["surprises"][0] = 200.into()),
            ("a sum beyond its most", |v| v["tracks"][0]["sums"][0] = 100_000.into()),
            ("invalid settings", |v| v["config"]["levels"] = 1.into()),
        ];
        for (name, spoil) in cases {
            let mut bad = good.clone();
            spoil(&mut bad);
            assert!(serde_json::from_value::<ContextMemory>(bad).is_err(), "{name}");
        }
    }

    #[test]
    fn every_setting_out_of_range_is_reported() {
        let config = ContextMemoryConfig {
            window: 1,
            levels: 1,
            order: 99,
            memory: 1,
            recent: 0,
            history: 1,
            warm_up: 2_000_000,
        };
        assert_eq!(config.validate().len(), 7, "{:?}", config.validate());
        let config = ContextMemoryConfig { recent: 50, history: 20, ..ContextMemoryConfig::default() };
        assert_eq!(config.validate().len(), 1);
    }

    #[test]
    fn scores_match_the_python_reading_of_the_method() {
        // scripts/context-memory-peer.py, an independent plain-Python
        // implementation, scored this series (a cycle, deterministic noise,
        // a level shift at 3000) to these values.
        let values: Vec<f64> = (0..4000u64)
            .map(|i| {
                let noise = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) as f64 / 2f64.powi(64) - 0.5;
                let shift = if i >= 3000 { 30.0 } else { 0.0 };
                50.0 + 20.0 * (i as f64 / 96.0 * std::f64::consts::TAU).sin() + 2.0 * noise + shift
            })
            .collect();
        let s = scores(&ContextMemoryConfig::default(), &values);
        let python = [
            (300, 0.001_489_862_462_511_008_4),
            (301, 0.013_549_280_307_071_785),
            (1000, 0.000_438_017_668_903_313_3),
            (2999, 0.000_217_092_972_230_205_93),
            (3005, 93.092_857_961_074_6),
            (3006, 99.380_116_602_917_64),
            (3007, 94.763_249_915_341_89),
            (3999, 0.365_544_177_179_299),
        ];
        for (i, expected) in python {
            assert!((s[i] - expected).abs() <= 1e-9 * expected.max(1.0), "value {i}: {} vs Python's {expected}", s[i]);
        }
        assert!(s[..300].iter().all(|v| *v == 0.0), "warm-up");
    }

    #[test]
    fn the_tail_is_finite_and_grows_with_z() {
        let zs = [-40.0, -3.0, 0.0, 1.0, 5.0, 7.99, 8.01, 30.0, 1e6];
        let values: Vec<f64> = zs.iter().map(|z| minus_log10_normal_tail(*z)).collect();
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
        assert!(values.iter().all(|v| v.is_finite() && *v >= 0.0), "{values:?}");
        assert!((values[2] - 0.5f64.log10().abs()).abs() < 1e-12);
        // P(Z > 5) = 2.87e-7.
        assert!((values[4] - 6.542).abs() < 1e-3, "{}", values[4]);
        assert!((values[6] - values[5] - 0.0705).abs() < 1e-3, "the two formulas meet at 8: {values:?}");
        // ln P(Z > 30) = −454.321 (Mills' ratio, its error ~1e-3 there).
        assert!((values[7] - 454.321 / std::f64::consts::LN_10).abs() < 1e-3, "{}", values[7]);
    }
}
