//! Run rules: patterns on a control chart that are unlikely under a stable
//! process even when every point is inside the limits.
//!
//! Rules read standardised points `z = (x − centre) / σ`, where the chart's
//! limits are `centre ± 3σ` (a chart with asymmetric limits standardises each
//! side by its own σ). "Beyond kσ" is strictly beyond (`|z| > k`); "within
//! 1σ" is strictly within (`|z| < 1`); a point exactly on the centre line
//! is on neither side and breaks a run. A rule flags the point that
//! completes its pattern, and every later point that continues it; each
//! [`Violation`] lists the points that make the pattern.
//!
//! | rule | Western Electric | Nelson |
//! |---|---|---|
//! | one point beyond 3σ | `we1` | `nelson1` |
//! | 2 of 3 in a row beyond 2σ on one side (the last among them) | `we2` | `nelson5` |
//! | 4 of 5 in a row beyond 1σ on one side (the last among them) | `we3` | `nelson6` |
//! | 8 (WE) / 9 (Nelson) in a row on one side | `we4` | `nelson2` |
//! | 6 in a row steadily increasing or decreasing | — | `nelson3` |
//! | 14 in a row alternating up and down | — | `nelson4` |
//! | 15 in a row within 1σ | — | `nelson7` |
//! | 8 in a row beyond 1σ, on both sides | — | `nelson8` |

use serde::{Deserialize, Serialize};

/// One run rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Western Electric 1: one point beyond 3σ.
    We1,
    /// Western Electric 2: 2 of 3 in a row beyond 2σ on one side.
    We2,
    /// Western Electric 3: 4 of 5 in a row beyond 1σ on one side.
    We3,
    /// Western Electric 4: 8 in a row on one side.
    We4,
    /// Nelson 1: one point beyond 3σ.
    Nelson1,
    /// Nelson 2: 9 in a row on one side.
    Nelson2,
    /// Nelson 3: 6 in a row steadily increasing or decreasing.
    Nelson3,
    /// Nelson 4: 14 in a row alternating up and down.
    Nelson4,
    /// Nelson 5: 2 of 3 in a row beyond 2σ on one side.
    Nelson5,
    /// Nelson 6: 4 of 5 in a row beyond 1σ on one side.
    Nelson6,
    /// Nelson 7: 15 in a row within 1σ.
    Nelson7,
    /// Nelson 8: 8 in a row beyond 1σ, with points on both sides.
    Nelson8,
}

/// A named set of rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleSet {
    /// The four Western Electric rules.
    We,
    /// The eight Nelson rules.
    Nelson,
}

impl RuleSet {
    /// The rules of the set.
    #[must_use]
    pub fn rules(self) -> &'static [Rule] {
        match self {
            RuleSet::We => &[Rule::We1, Rule::We2, Rule::We3, Rule::We4],
            RuleSet::Nelson => &[
                Rule::Nelson1,
                Rule::Nelson2,
                Rule::Nelson3,
                Rule::Nelson4,
                Rule::Nelson5,
                Rule::Nelson6,
                Rule::Nelson7,
                Rule::Nelson8,
            ],
        }
    }

    /// The set's "one point beyond the limits" rule (the only rule applied
    /// to range, standard deviation, EWMA and CUSUM charts).
    #[must_use]
    pub fn limits_rule(self) -> Rule {
        match self {
            RuleSet::We => Rule::We1,
            RuleSet::Nelson => Rule::Nelson1,
        }
    }
}

/// What a rule looks for.
enum Pattern {
    /// `k` of the last `m` (fewer at the start) beyond `sigmas` on one
    /// side, the newest among them.
    Beyond { k: usize, m: usize, sigmas: f64 },
    /// `length` in a row on one side.
    SameSide { length: usize },
    /// `length` in a row each higher (or each lower) than the one before.
    Trend { length: usize },
    /// `length` in a row alternating up and down.
    Alternating { length: usize },
    /// `length` in a row within 1σ.
    Hugging { length: usize },
    /// `length` in a row beyond 1σ, on both sides.
    Mixture { length: usize },
}

impl Rule {
    /// The rule's short name, as in settings and JSON (`"we1"`, `"nelson8"`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Rule::We1 => "we1",
            Rule::We2 => "we2",
            Rule::We3 => "we3",
            Rule::We4 => "we4",
            Rule::Nelson1 => "nelson1",
            Rule::Nelson2 => "nelson2",
            Rule::Nelson3 => "nelson3",
            Rule::Nelson4 => "nelson4",
            Rule::Nelson5 => "nelson5",
            Rule::Nelson6 => "nelson6",
            Rule::Nelson7 => "nelson7",
            Rule::Nelson8 => "nelson8",
        }
    }

    /// What the rule means, for people reading a report.
    #[must_use]
    pub fn description(self) -> &'static str {
        match self {
            Rule::We1 | Rule::Nelson1 => "one point beyond 3σ",
            Rule::We2 | Rule::Nelson5 => "2 of 3 in a row beyond 2σ on one side",
            Rule::We3 | Rule::Nelson6 => "4 of 5 in a row beyond 1σ on one side",
            Rule::We4 => "8 in a row on one side of the centre line",
            Rule::Nelson2 => "9 in a row on one side of the centre line",
            Rule::Nelson3 => "6 in a row steadily increasing or decreasing",
            Rule::Nelson4 => "14 in a row alternating up and down",
            Rule::Nelson7 => "15 in a row within 1σ",
            Rule::Nelson8 => "8 in a row beyond 1σ on both sides",
        }
    }

    fn pattern(self) -> Pattern {
        match self {
            Rule::We1 | Rule::Nelson1 => Pattern::Beyond { k: 1, m: 1, sigmas: 3.0 },
            Rule::We2 | Rule::Nelson5 => Pattern::Beyond { k: 2, m: 3, sigmas: 2.0 },
            Rule::We3 | Rule::Nelson6 => Pattern::Beyond { k: 4, m: 5, sigmas: 1.0 },
            Rule::We4 => Pattern::SameSide { length: 8 },
            Rule::Nelson2 => Pattern::SameSide { length: 9 },
            Rule::Nelson3 => Pattern::Trend { length: 6 },
            Rule::Nelson4 => Pattern::Alternating { length: 14 },
            Rule::Nelson7 => Pattern::Hugging { length: 15 },
            Rule::Nelson8 => Pattern::Mixture { length: 8 },
        }
    }
}

/// A rule broken at a point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    /// The rule.
    pub rule: Rule,
    /// The point (0-based index) that completed the pattern.
    pub index: usize,
    /// Every point of the pattern, oldest first.
    pub points: Vec<usize>,
}

/// Points remembered: the longest pattern (15), rounded up to a power of two.
const MEMORY: usize = 16;

/// Checks rules point by point (streaming). Each rule is a counter or a bit
/// mask updated in O(1), so a chart with every rule costs a few
/// nanoseconds per point; the points of a violation are read back from the
/// last 16 only when a rule fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleChecker {
    rules: Vec<Rule>,
    /// The last 16 points' indices, by position `seen % 16`.
    indices: [usize; MEMORY],
    /// Points since the last reset.
    seen: usize,
    /// The previous point's z.
    previous: Option<f64>,
    /// Bit i: the point i steps back is above / below the centre line.
    above: u32,
    below: u32,
    /// Bit i: beyond +2σ / −2σ, beyond +1σ / −1σ.
    above2: u32,
    below2: u32,
    above1: u32,
    below1: u32,
    /// Points in the current run of steady increase / decrease.
    rising: usize,
    falling: usize,
    /// Points in the current up-down alternation, and the last step's sign.
    alternating: usize,
    last_step: i8,
    /// Points in the current run within 1σ / beyond 1σ.
    hugging: usize,
    outside: usize,
}

/// The `n` newest bits.
fn newest(bits: u32, n: usize) -> u32 {
    if n >= 32 { bits } else { bits & ((1u32 << n) - 1) }
}

impl RuleChecker {
    /// A checker of `rules`.
    #[must_use]
    pub fn new(rules: &[Rule]) -> Self {
        RuleChecker {
            rules: rules.to_vec(),
            indices: [0; MEMORY],
            seen: 0,
            previous: None,
            above: 0,
            below: 0,
            above2: 0,
            below2: 0,
            above1: 0,
            below1: 0,
            rising: 0,
            falling: 0,
            alternating: 0,
            last_step: 0,
            hugging: 0,
            outside: 0,
        }
    }

    /// The rules checked.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Forget every point (after limits are re-established).
    pub fn reset(&mut self) {
        *self = RuleChecker::new(&std::mem::take(&mut self.rules));
    }

    /// Take point `index` with standardised value `z`; the rules it breaks
    /// (an empty vector, which does not allocate, when none).
    /// A non-finite `z` (a point that could not be computed) breaks every
    /// pattern and breaks no rule.
    pub fn update(&mut self, index: usize, z: f64) -> Vec<Violation> {
        if !z.is_finite() {
            self.reset();
            return Vec::new();
        }
        self.indices[self.seen % MEMORY] = index;
        self.seen += 1;
        let push = |bits: u32, on: bool| (bits << 1) | u32::from(on);
        self.above = push(self.above, z > 0.0);
        self.below = push(self.below, z < 0.0);
        self.above2 = push(self.above2, z > 2.0);
        self.below2 = push(self.below2, z < -2.0);
        self.above1 = push(self.above1, z > 1.0);
        self.below1 = push(self.below1, z < -1.0);
        self.hugging = if z.abs() < 1.0 { self.hugging + 1 } else { 0 };
        self.outside = if z.abs() > 1.0 { self.outside + 1 } else { 0 };
        match self.previous {
            Some(previous) => {
                let step: i8 = if z > previous {
                    1
                } else if z < previous {
                    -1
                } else {
                    0
                };
                self.rising = if step > 0 { self.rising + 1 } else { 1 };
                self.falling = if step < 0 { self.falling + 1 } else { 1 };
                self.alternating = match (step, self.last_step) {
                    (0, _) => 1,
                    (s, last) if last != 0 && s != last => self.alternating + 1,
                    _ => 2,
                };
                self.last_step = step;
            }
            None => (self.rising, self.falling, self.alternating) = (1, 1, 1),
        }
        self.previous = Some(z);
        let mut found = Vec::new();
        for &rule in &self.rules {
            if let Some(points) = self.check(rule) {
                found.push(Violation { rule, index, points });
            }
        }
        found
    }

    /// Indices of the last `n` points, oldest first.
    fn last(&self, n: usize) -> Vec<usize> {
        (self.seen - n..self.seen).map(|k| self.indices[k % MEMORY]).collect()
    }

    /// Indices of the points among the last `n` whose bit is set, oldest first.
    fn marked(&self, bits: u32, n: usize) -> Vec<usize> {
        (0..n)
            .rev()
            .filter(|back| bits & (1 << back) != 0)
            .map(|back| self.indices[(self.seen - 1 - back) % MEMORY])
            .collect()
    }

    /// The points of `rule`'s pattern if the newest point completes it.
    fn check(&self, rule: Rule) -> Option<Vec<usize>> {
        match rule.pattern() {
            Pattern::Beyond { k, m, sigmas } => {
                // At the start of a chart, k in a row already are k of m.
                let window = m.min(self.seen);
                let (up, down) = if sigmas >= 3.0 {
                    return (self.previous?.abs() > sigmas).then(|| self.last(1));
                } else if sigmas >= 2.0 {
                    (self.above2, self.below2)
                } else {
                    (self.above1, self.below1)
                };
                let side = if up & 1 == 1 {
                    newest(up, window)
                } else if down & 1 == 1 {
                    newest(down, window)
                } else {
                    return None;
                };
                (side.count_ones() as usize >= k).then(|| self.marked(side, window))
            }
            Pattern::SameSide { length } => {
                let run = |bits: u32| newest(bits, length).count_ones() as usize == length;
                (self.seen >= length && (run(self.above) || run(self.below))).then(|| self.last(length))
            }
            Pattern::Trend { length } => (self.rising >= length || self.falling >= length).then(|| self.last(length)),
            Pattern::Alternating { length } => (self.alternating >= length).then(|| self.last(length)),
            Pattern::Hugging { length } => (self.hugging >= length).then(|| self.last(length)),
            Pattern::Mixture { length } => {
                let both = newest(self.above1, length) != 0 && newest(self.below1, length) != 0;
                (self.outside >= length && both).then(|| self.last(length))
            }
        }
    }
}

/// Check a whole chart's standardised points at once.
#[must_use]
pub fn check_all(rules: &[Rule], z: &[f64]) -> Vec<Violation> {
    let mut checker = RuleChecker::new(rules);
    z.iter().enumerate().flat_map(|(i, z)| checker.update(i, *z)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Indices where `rule` fires on `z`.
    fn fired(rule: Rule, z: &[f64]) -> Vec<usize> {
        check_all(&[rule], z).into_iter().map(|v| v.index).collect()
    }

    /// `n` copies of `z`.
    fn run(n: usize, z: f64) -> Vec<f64> {
        vec![z; n]
    }

    fn cat(parts: &[Vec<f64>]) -> Vec<f64> {
        parts.concat()
    }

    /// A sequence alternating ±`amplitude` around `level`, `n` long, starting up.
    fn zigzag(n: usize, level: f64, amplitude: f64) -> Vec<f64> {
        (0..n).map(|i| level + if i % 2 == 0 { amplitude } else { -amplitude }).collect()
    }

    #[test]
    fn each_rule_fires_exactly_where_its_pattern_completes_and_not_one_short() {
        // (rule, sequence that triggers it, first flagged index, sequence that just fails).
        let rising = |n: usize| (0..n).map(|i| -1.5 + 0.5 * i as f64).collect::<Vec<_>>();
        let cases: Vec<(Rule, Vec<f64>, usize, Vec<f64>)> = vec![
            (Rule::We1, cat(&[run(4, 0.5), vec![3.01]]), 4, cat(&[run(4, 0.5), vec![3.0]])),
            (Rule::Nelson1, cat(&[run(2, 0.0), vec![-3.2]]), 2, cat(&[run(2, 0.0), vec![-2.99]])),
            (Rule::We2, vec![0.1, 2.1, 0.3, 2.5], 3, vec![0.1, 2.1, 0.3, 0.2, 2.5]),
            (Rule::Nelson5, vec![0.0, -2.2, -2.4], 2, vec![0.0, -2.2, 2.4]),
            (Rule::We3, vec![0.0, 1.2, 1.5, 0.2, 1.1, 1.3], 5, vec![0.0, 1.2, 1.5, 0.2, 1.0, 1.3]),
            (Rule::Nelson6, vec![-1.2, -1.5, -1.1, -1.3], 3, vec![-1.2, -1.5, -1.1, 1.3]),
            (Rule::We4, cat(&[vec![-0.5], run(8, 0.2)]), 8, cat(&[vec![-0.5], run(7, 0.2), vec![0.0]])),
            (Rule::Nelson2, cat(&[vec![0.5], run(9, -0.2)]), 9, cat(&[vec![0.5], run(8, -0.2)])),
            (Rule::Nelson3, rising(6), 5, cat(&[rising(5), vec![0.5]])),
            (Rule::Nelson4, zigzag(14, 0.0, 0.5), 13, cat(&[zigzag(13, 0.0, 0.5), vec![0.5]])),
            (Rule::Nelson7, run(15, 0.9), 14, cat(&[run(14, 0.9), vec![1.0]])),
            (Rule::Nelson8, zigzag(8, 0.0, 1.5), 7, cat(&[zigzag(7, 0.0, 1.5), vec![0.9]])),
        ];
        for (rule, triggers, at, just_fails) in cases {
            let flagged = fired(rule, &triggers);
            assert_eq!(flagged.first(), Some(&at), "{rule:?} on {triggers:?}: {flagged:?}");
            assert!(flagged.iter().all(|i| *i >= at), "{rule:?} fired early: {flagged:?}");
            assert_eq!(fired(rule, &just_fails), Vec::<usize>::new(), "{rule:?} on {just_fails:?}");
        }
    }

    #[test]
    fn violations_name_their_points_and_continue_with_the_pattern() {
        let z = cat(&[vec![-0.5], run(10, 0.4)]);
        let violations = check_all(&[Rule::Nelson2], &z);
        assert_eq!(violations.iter().map(|v| v.index).collect::<Vec<_>>(), vec![9, 10]);
        assert_eq!(violations[0].points, (1..=9).collect::<Vec<_>>());
        let two_of_three = check_all(&[Rule::We2], &[2.5, 0.0, 2.2]);
        assert_eq!(two_of_three[0].points, vec![0, 2]);
    }

    #[test]
    fn nelson8_needs_both_sides_and_the_centre_breaks_runs() {
        assert!(fired(Rule::Nelson8, &run(8, 1.5)).is_empty(), "all on one side is rule 2/6, not 8");
        assert!(fired(Rule::We4, &cat(&[run(4, 0.5), vec![0.0], run(4, 0.5)])).is_empty());
    }

    #[test]
    fn a_missing_point_breaks_patterns() {
        let z = cat(&[run(5, 0.3), vec![f64::NAN], run(5, 0.3)]);
        assert!(fired(Rule::We4, &z).is_empty());
    }

    #[test]
    fn rule_sets_and_names() {
        assert_eq!(RuleSet::We.rules().len(), 4);
        assert_eq!(RuleSet::Nelson.rules().len(), 8);
        assert_eq!(Rule::Nelson8.name(), "nelson8");
        assert_eq!(serde_json::to_string(&Rule::We3).unwrap(), "\"we3\"");
    }
}
