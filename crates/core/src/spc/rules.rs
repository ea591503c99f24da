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
use std::collections::VecDeque;

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

/// Longest pattern any rule needs.
const MEMORY: usize = 15;

/// Checks rules point by point (streaming); keeps the last 15 points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleChecker {
    rules: Vec<Rule>,
    /// Recent (index, z), oldest first.
    recent: VecDeque<(usize, f64)>,
}

impl RuleChecker {
    /// A checker of `rules`.
    #[must_use]
    pub fn new(rules: &[Rule]) -> Self {
        RuleChecker { rules: rules.to_vec(), recent: VecDeque::with_capacity(MEMORY) }
    }

    /// The rules checked.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Forget every point (after limits are re-established).
    pub fn reset(&mut self) {
        self.recent.clear();
    }

    /// Take point `index` with standardised value `z`; the rules it breaks.
    /// A non-finite `z` (a point that could not be computed) breaks every
    /// pattern and breaks no rule.
    pub fn update(&mut self, index: usize, z: f64) -> Vec<Violation> {
        if !z.is_finite() {
            self.recent.clear();
            return Vec::new();
        }
        if self.recent.len() == MEMORY {
            self.recent.pop_front();
        }
        self.recent.push_back((index, z));
        self.rules.iter().filter_map(|rule| self.check(*rule)).collect()
    }

    /// The last `length` points, oldest first, if there are that many.
    fn last(&self, length: usize) -> Option<Vec<(usize, f64)>> {
        (self.recent.len() >= length).then(|| self.recent.iter().skip(self.recent.len() - length).copied().collect())
    }

    fn check(&self, rule: Rule) -> Option<Violation> {
        let violation = |points: Vec<usize>| {
            let index = *points.last()?;
            Some(Violation { rule, index, points })
        };
        let indices = |window: &[(usize, f64)]| window.iter().map(|(i, _)| *i).collect::<Vec<_>>();
        match rule.pattern() {
            Pattern::Beyond { k, m, sigmas } => {
                // At the start of a chart, k in a row already are k of m.
                let window = self.last(m.min(self.recent.len()).max(k))?;
                let newest = window.last()?.1;
                let side = if newest > sigmas {
                    1.0
                } else if newest < -sigmas {
                    -1.0
                } else {
                    return None;
                };
                let beyond: Vec<usize> = window.iter().filter(|(_, z)| side * z > sigmas).map(|(i, _)| *i).collect();
                (beyond.len() >= k).then(|| violation(beyond))?
            }
            Pattern::SameSide { length } => {
                let window = self.last(length)?;
                let all_above = window.iter().all(|(_, z)| *z > 0.0);
                let all_below = window.iter().all(|(_, z)| *z < 0.0);
                (all_above || all_below).then(|| violation(indices(&window)))?
            }
            Pattern::Trend { length } => {
                let window = self.last(length)?;
                let rising = window.windows(2).all(|w| w[1].1 > w[0].1);
                let falling = window.windows(2).all(|w| w[1].1 < w[0].1);
                (rising || falling).then(|| violation(indices(&window)))?
            }
            Pattern::Alternating { length } => {
                let window = self.last(length)?;
                let steps: Vec<f64> = window.windows(2).map(|w| w[1].1 - w[0].1).collect();
                let alternating =
                    steps.iter().all(|s| *s != 0.0) && steps.windows(2).all(|s| (s[0] > 0.0) != (s[1] > 0.0));
                alternating.then(|| violation(indices(&window)))?
            }
            Pattern::Hugging { length } => {
                let window = self.last(length)?;
                window.iter().all(|(_, z)| z.abs() < 1.0).then(|| violation(indices(&window)))?
            }
            Pattern::Mixture { length } => {
                let window = self.last(length)?;
                let outside = window.iter().all(|(_, z)| z.abs() > 1.0);
                let both_sides = window.iter().any(|(_, z)| *z > 0.0) && window.iter().any(|(_, z)| *z < 0.0);
                (outside && both_sides).then(|| violation(indices(&window)))?
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
