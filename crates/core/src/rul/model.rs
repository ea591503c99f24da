//! The fitted model: fitting (features, learners, out-of-fold errors for
//! the interval), its artifact and formats, and estimates with intervals.

use super::features::{Features, Prepared};
use super::learners::{Learners, Parts, best_network_weight, half};
use super::{Learner, NetworkConfig, RulConfig, RulError, RulEstimate, UnitHistory};
use crate::stats::quantile;
use crate::trees::gbdt::GbdtError;
use serde::{Deserialize, Serialize};

/// Bands of predicted RUL with their own error quantiles (the error of a
/// prediction near failure is smaller than one far from it).
const BAND_WIDTH: f64 = 25.0;

/// A fitted RUL model: features, learners and the interval's error quantiles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RulModel {
    /// Artifact format version; see [`RulModel::FORMAT`].
    pub format: u32,
    /// The settings it was fitted with.
    pub config: RulConfig,
    /// Sensor names in the order histories give them.
    pub sensor_names: Vec<String>,
    /// Operating-setting names in the order histories give them.
    #[serde(default)]
    pub setting_names: Vec<String>,
    features: Features,
    #[serde(flatten)]
    learners: Learners,
    /// Per band of predicted RUL: the 0 %, 1 %, …, 100 % quantiles of
    /// true − predicted RUL out of fold (empty without interval folds).
    errors: Vec<Vec<f64>>,
}

impl RulModel {
    /// Current artifact format: 2 added the network, 3 its valid padding,
    /// 4 the health index (older formats still load and predict the same: a
    /// format-2 network keeps the same padding it was trained with, a model
    /// before format 4 has no health index).
    pub const FORMAT: u32 = 4;

    /// Whether an artifact of `format` can be read.
    #[must_use]
    pub fn readable(format: u32) -> bool {
        (1..=Self::FORMAT).contains(&format)
    }

    /// Reads a stored model (JSON) of any readable format.
    ///
    /// # Errors
    /// [`RulError::BadArtifact`] when the text is not a RUL model or its
    /// format is newer than this build reads.
    pub fn from_json(text: &str) -> Result<RulModel, RulError> {
        let mut json: serde_json::Value =
            serde_json::from_str(text).map_err(|e| RulError::BadArtifact(format!("not a RUL model: {e}")))?;
        let format = json.get("format").and_then(serde_json::Value::as_u64).unwrap_or(0);
        if !u32::try_from(format).is_ok_and(Self::readable) {
            return Err(RulError::BadArtifact(format!(
                "a RUL model of format {format}; this build reads formats 1 to {}",
                Self::FORMAT
            )));
        }
        if format < 3 {
            // Before format 3 every network was same-padded; the field did not exist.
            for pointer in ["/config/network", "/network/config"] {
                if let Some(network) = json.pointer_mut(pointer).and_then(serde_json::Value::as_object_mut) {
                    network.entry("padding").or_insert_with(|| "same".into());
                    network.entry("last_cycle").or_insert_with(|| false.into());
                }
            }
        }
        if format < 4
            && let Some(config) = json.pointer_mut("/config").and_then(serde_json::Value::as_object_mut)
        {
            // Fitted before the setting existed: without a health index.
            config.entry("health_index").or_insert_with(|| false.into());
        }
        serde_json::from_value(json).map_err(|e| RulError::BadArtifact(format!("not a RUL model: {e}")))
    }

    /// Fit on run-to-failure histories (each ends at its failure).
    ///
    /// # Errors
    /// [`RulError::BadSettings`] for invalid settings; [`RulError::BadData`]
    /// when there are no histories, widths differ, cycles do not increase or
    /// no sensor varies; [`RulError::Trees`] when the trees cannot be fitted.
    pub fn fit(config: &RulConfig, sensor_names: &[String], units: &[UnitHistory]) -> Result<RulModel, RulError> {
        let problems = config.validate();
        if !problems.is_empty() {
            return Err(RulError::BadSettings(problems.join("; ")));
        }
        check_histories(units)?;
        let features = Features::fit(units, config)?;
        let prepared: Vec<Prepared> = units.iter().map(|u| features.prepare(u, 0, config.learner)).collect();
        let targets: Vec<Vec<f64>> = units
            .iter()
            .map(|u| {
                let failure = u.cycles[u.cycles.len() - 1];
                u.cycles.iter().map(|c| (failure - c).min(config.cap)).collect()
            })
            .collect();
        // The model and the interval's fold models are independent fits, so
        // they run on all cores; each is deterministic, so the result is too.
        let folds =
            if config.interval_folds >= 2 && units.len() >= config.interval_folds { config.interval_folds } else { 0 };
        let fit_fold = |fold: usize| -> Result<(Parts, Vec<f64>), GbdtError> {
            // Unit u belongs to fold u mod folds.
            let (fit_histories, fit_targets): (Vec<&Prepared>, Vec<&Vec<f64>>) =
                prepared.iter().zip(&targets).enumerate().filter(|(u, _)| u % folds != fold).map(|(_, p)| p).unzip();
            // One network per fold model: half the cost of the interval, whose
            // errors are then those of a slightly weaker ensemble (a little wide).
            let fold_config =
                RulConfig { network: NetworkConfig { nets: 1, ..config.network.clone() }, ..config.clone() };
            let learners = Learners::fit(&fold_config, &fit_histories, &fit_targets)?;
            let (mut parts, mut truth) = (Parts::default(), Vec::new());
            for (_, (history, unit_truth)) in
                prepared.iter().zip(&targets).enumerate().filter(|(u, _)| u % folds == fold)
            {
                let unit_parts = learners.parts(history, config.cap);
                parts.trees.extend(unit_parts.trees);
                parts.network.extend(unit_parts.network);
                truth.extend(unit_truth);
            }
            Ok((parts, truth))
        };
        let (learners, fold_results) = std::thread::scope(|scope| {
            let workers = crate::parallel::cores().max(1);
            let handles: Vec<_> = (0..folds)
                .map(|fold| {
                    let fit_fold = &fit_fold;
                    (workers > 1).then(|| scope.spawn(move || fit_fold(fold)))
                })
                .collect();
            let learners =
                Learners::fit(config, &prepared.iter().collect::<Vec<_>>(), &targets.iter().collect::<Vec<_>>());
            let results: Vec<Result<(Parts, Vec<f64>), GbdtError>> = handles
                .into_iter()
                .enumerate()
                .map(|(fold, handle)| match handle {
                    Some(h) => h.join().unwrap_or_else(|_| Err(GbdtError::BadData("a fold's fit panicked".into()))),
                    None => fit_fold(fold),
                })
                .collect();
            (learners, results)
        });
        let mut learners = learners?;
        let (mut out_of_fold, mut truth) = (Parts::default(), Vec::new());
        for result in fold_results {
            let (parts, fold_truth) = result?;
            out_of_fold.trees.extend(parts.trees);
            out_of_fold.network.extend(parts.network);
            truth.extend(fold_truth);
        }
        learners.network_weight = match config.network_weight {
            Some(weight) => weight,
            None if config.learner == Learner::Ensemble && folds > 0 => {
                best_network_weight(&out_of_fold, &truth, config.cap)
            }
            None => half(),
        };
        let pairs: Vec<(f64, f64)> =
            out_of_fold.combine(learners.network_weight, config.cap).into_iter().zip(truth).collect();
        let errors = if folds == 0 { Vec::new() } else { error_bands(&pairs, config.cap) };
        Ok(RulModel {
            format: Self::FORMAT,
            config: config.clone(),
            sensor_names: sensor_names.to_vec(),
            setting_names: Vec::new(),
            features,
            learners,
            errors,
        })
    }

    /// Estimates after every cycle of `history` (each uses that cycle and the ones before).
    ///
    /// # Errors
    /// [`RulError::BadHistory`] when the history is empty or its widths differ from the model's.
    pub fn predict_all(&self, history: &UnitHistory) -> Result<Vec<RulEstimate>, RulError> {
        self.check_history(history)?;
        let prepared = self.features.prepare(history, 0, self.config.learner);
        Ok(self.learners.estimate(&prepared, self.config.cap).into_iter().map(|raw| self.estimate(raw)).collect())
    }

    /// The estimate after the last cycle of `history` (the learners run on that cycle only).
    ///
    /// # Errors
    /// See [`RulModel::predict_all`].
    pub fn predict(&self, history: &UnitHistory) -> Result<RulEstimate, RulError> {
        self.check_history(history)?;
        let prepared = self.features.prepare(history, history.cycles.len() - 1, self.config.learner);
        let last = self.learners.estimate(&prepared, self.config.cap);
        let raw = last.last().ok_or_else(|| RulError::BadHistory(format!("unit {}: no cycles", history.unit)))?;
        Ok(self.estimate(*raw))
    }

    fn check_history(&self, history: &UnitHistory) -> Result<(), RulError> {
        if history.cycles.is_empty() {
            return Err(RulError::BadHistory(format!("unit {}: no cycles", history.unit)));
        }
        let sensors = self.features.scale.first().map_or(0, Vec::len);
        if history.sensors.iter().any(|x| x.len() != sensors) {
            return Err(RulError::BadHistory(format!(
                "unit {}: the model expects {sensors} sensors per cycle",
                history.unit
            )));
        }
        if self.learners.network.as_ref().is_some_and(|n| !n.parameters_valid()) {
            return Err(RulError::BadHistory("the model's network does not match its settings".into()));
        }
        check_histories(std::slice::from_ref(history))
    }

    fn estimate(&self, raw: f64) -> RulEstimate {
        let rul = raw.clamp(0.0, self.config.cap);
        let (low, high) = ((1.0 - self.config.coverage) / 2.0, (1.0 + self.config.coverage) / 2.0);
        match self.band(rul) {
            Some(table) => RulEstimate {
                rul,
                lower: (rul + table_quantile(table, low)).max(0.0),
                upper: rul + table_quantile(table, high),
            },
            None => RulEstimate { rul, lower: f64::NAN, upper: f64::NAN },
        }
    }

    fn band(&self, rul: f64) -> Option<&Vec<f64>> {
        self.errors.get(((rul / BAND_WIDTH) as usize).min(self.errors.len().saturating_sub(1)))
    }

    /// How likely the true RUL behind an estimate of `rul` cycles is at most
    /// `horizon` cycles, from the out-of-fold errors; NaN without interval
    /// folds. (Above the cap the model cannot tell: an estimate at the cap
    /// means "at least the cap".)
    #[must_use]
    pub fn probability_below(&self, rul: f64, horizon: f64) -> f64 {
        let Some(table) = self.band(rul) else { return f64::NAN };
        let x = horizon - rul;
        let last = table.len() - 1;
        if x < table[0] {
            return 0.0;
        }
        if x >= table[last] {
            return 1.0;
        }
        let i = table.partition_point(|q| *q <= x).clamp(1, last);
        let (a, b) = (table[i - 1], table[i]);
        let within = if b > a { (x - a) / (b - a) } else { 1.0 };
        ((i - 1) as f64 + within) / last as f64
    }

    /// Feature names with their share of the trees' total split gain,
    /// largest first (empty when the model has no trees).
    #[must_use]
    pub fn importances(&self) -> Vec<(String, f64)> {
        let Some(trees) = &self.learners.trees else { return Vec::new() };
        let mut named: Vec<(String, f64)> =
            self.features.names(&self.sensor_names).into_iter().zip(trees.importances()).collect();
        named.sort_by(|a, b| b.1.total_cmp(&a.1));
        named
    }

    /// The network's share of an ensemble's estimate (chosen on the
    /// out-of-fold estimates; ½ without interval folds); `None` unless the
    /// model has both learners.
    #[must_use]
    pub fn network_weight(&self) -> Option<f64> {
        (self.learners.trees.is_some() && self.learners.network.is_some()).then_some(self.learners.network_weight)
    }

    /// Number of operating regimes found.
    #[must_use]
    pub fn regimes(&self) -> usize {
        self.features.regimes.count()
    }

    /// Names of the sensors the model uses (the others were flat).
    #[must_use]
    pub fn kept_sensors(&self) -> Vec<String> {
        self.features.kept.iter().map(|&j| self.sensor_names.get(j).cloned().unwrap_or_default()).collect()
    }
}

fn check_histories(units: &[UnitHistory]) -> Result<(), RulError> {
    let Some(first) = units.first() else {
        return Err(RulError::BadData("no unit histories".into()));
    };
    let settings = first.settings.first().map_or(0, Vec::len);
    let sensors = first.sensors.first().map_or(0, Vec::len);
    for u in units {
        if u.cycles.is_empty() {
            return Err(RulError::BadData(format!("unit {}: no cycles", u.unit)));
        }
        if u.settings.len() != u.cycles.len() || u.sensors.len() != u.cycles.len() {
            return Err(RulError::BadData(format!("unit {}: cycles, settings and sensors differ in length", u.unit)));
        }
        if u.settings.iter().any(|s| s.len() != settings) || u.sensors.iter().any(|s| s.len() != sensors) {
            return Err(RulError::BadData(format!("unit {}: settings or sensors differ in width", u.unit)));
        }
        if let Some(w) = u.cycles.windows(2).find(|w| w[1].partial_cmp(&w[0]) != Some(std::cmp::Ordering::Greater)) {
            return Err(RulError::BadData(format!(
                "unit {}: cycles must increase, but {} is followed by {}",
                u.unit, w[0], w[1]
            )));
        }
    }
    Ok(())
}

/// Per band of predicted RUL, the 0 %, 1 %, …, 100 % quantiles of the
/// (prediction, truth) pairs' errors; a band with few pairs borrows from all.
fn error_bands(pairs: &[(f64, f64)], cap: f64) -> Vec<Vec<f64>> {
    let table = |errors: &[f64]| -> Vec<f64> {
        (0..=100).map(|p| quantile(errors, f64::from(p) / 100.0).unwrap_or(0.0)).collect()
    };
    let all: Vec<f64> = pairs.iter().map(|(p, t)| t - p).collect();
    let overall = table(&all);
    let bands = (cap / BAND_WIDTH).ceil().max(1.0) as usize;
    (0..bands)
        .map(|b| {
            let errors: Vec<f64> = pairs
                .iter()
                .filter(|(p, _)| ((p / BAND_WIDTH) as usize).min(bands - 1) == b)
                .map(|(p, t)| t - p)
                .collect();
            if errors.len() < 50 { overall.clone() } else { table(&errors) }
        })
        .collect()
}

/// The `level` quantile of a 0 %…100 % quantile table, by linear interpolation.
fn table_quantile(table: &[f64], level: f64) -> f64 {
    let position = level.clamp(0.0, 1.0) * (table.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    table[below] + (table[above] - table[below]) * (position - below as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::SeededNormal;
    use crate::trees::gbdt::GbdtConfig;

    /// Units that degrade exponentially towards failure in two regimes: s0
    /// wears, s1 is noise, s2 is flat, s3 depends on the regime only.
    pub(crate) fn fleet(units: usize, seed: u64) -> Vec<UnitHistory> {
        let mut g = SeededNormal::new(seed);
        (0..units)
            .map(|u| {
                let life = 120 + g.below(120);
                let (mut cycles, mut settings, mut sensors) = (Vec::new(), Vec::new(), Vec::new());
                for c in 1..=life {
                    let regime = g.below(2) as f64;
                    let wear = (0.03 * (c as f64 - life as f64)).exp();
                    cycles.push(c as f64);
                    settings.push(vec![regime * 20.0, 0.5]);
                    sensors.push(vec![
                        100.0 + 30.0 * regime + 5.0 * wear + 0.3 * g.normal(),
                        g.normal(),
                        7.0,
                        50.0 * regime + 0.1 * g.normal(),
                    ]);
                }
                UnitHistory { unit: format!("u{u}"), cycles, settings, sensors }
            })
            .collect()
    }

    fn names() -> Vec<String> {
        ["wear", "noise", "flat", "regime_only"].map(String::from).to_vec()
    }

    fn small() -> RulConfig {
        RulConfig {
            learner: Learner::Trees,
            trees: GbdtConfig { trees: 150, learning_rate: 0.08, ..GbdtConfig::default() },
            ..RulConfig::default()
        }
    }

    #[test]
    fn the_health_index_leans_on_the_wearing_sensor() {
        let train = fleet(40, 3);
        let with = RulModel::fit(&small(), &names(), &train).unwrap();
        let without = RulModel::fit(&RulConfig { health_index: false, ..small() }, &names(), &train).unwrap();
        let has_index = |m: &RulModel| m.importances().iter().any(|(name, _)| name.starts_with("health."));
        assert!(has_index(&with) && !has_index(&without));
        // Intercept, then one weight per kept sensor: wear, noise, regime_only.
        assert_eq!(with.kept_sensors(), ["wear", "noise", "regime_only"]);
        let health = &with.features.health;
        assert_eq!(health.len(), 4);
        assert!(health[1] < 0.0 && health[1].abs() > 10.0 * health[2].abs(), "{health:?}");
        assert!(without.features.health.is_empty());
    }

    #[test]
    fn learns_wear_across_regimes_with_calibrated_intervals() {
        let train = fleet(60, 1);
        let model = RulModel::fit(&small(), &names(), &train).unwrap();
        assert_eq!(model.regimes(), 2);
        assert!(!model.kept_sensors().contains(&"flat".to_string()), "{:?}", model.kept_sensors());
        // The health index is a line through the sensors; of the sensors themselves, wear leads.
        let importances = model.importances();
        let top_sensor = importances.iter().find(|(name, _)| !name.starts_with("health") && name != "cycle");
        assert!(top_sensor.is_some_and(|(name, _)| name.starts_with("wear")), "{:?}", &importances[..4]);
        // Truncate test units at random points, as C-MAPSS's test set does.
        let mut g = SeededNormal::new(7);
        let (mut squared, mut covered, test) = (0.0, 0, fleet(80, 2));
        for unit in &test {
            let cut = 20 + g.below(unit.cycles.len() - 20);
            let truth = (unit.cycles.len() - cut) as f64;
            let prefix = UnitHistory {
                unit: unit.unit.clone(),
                cycles: unit.cycles[..cut].to_vec(),
                settings: unit.settings[..cut].to_vec(),
                sensors: unit.sensors[..cut].to_vec(),
            };
            let estimate = model.predict(&prefix).unwrap();
            let capped = truth.min(125.0);
            squared += (estimate.rul - capped).powi(2);
            covered += usize::from(estimate.lower <= capped && capped <= estimate.upper);
        }
        let rmse = (squared / test.len() as f64).sqrt();
        assert!(rmse < 20.0, "RMSE {rmse}");
        let coverage = covered as f64 / test.len() as f64;
        assert!((0.75..=1.0).contains(&coverage), "90 % intervals cover {coverage}");
        // The probability of failing within a horizon grows with the horizon
        // and is about 5 % at the interval's lower end, 95 % at its upper end.
        let estimate = model.predict(&test[0]).unwrap();
        let p = |h: f64| model.probability_below(estimate.rul, h);
        assert!(p(estimate.lower - 1.0) <= 0.05 + 1e-9 && p(estimate.upper + 1.0) >= 0.95 - 1e-9, "{estimate:?}");
        assert!((p(estimate.upper) - 0.95).abs() < 0.02, "{}", p(estimate.upper));
        assert!(p(10.0) <= p(20.0) && p(20.0) <= p(40.0));
    }

    #[test]
    fn short_histories_and_bad_input() {
        let train = fleet(20, 3);
        let config = RulConfig { interval_folds: 0, ..small() };
        let model = RulModel::fit(&config, &names(), &train).unwrap();
        let one = UnitHistory {
            unit: "new".into(),
            cycles: vec![1.0],
            settings: vec![vec![0.0, 0.5]],
            sensors: vec![vec![100.0, 0.0, 7.0, 0.0]],
        };
        let estimate = model.predict(&one).unwrap();
        assert!(estimate.rul > 60.0, "a new unit has long to live: {estimate:?}");
        assert!(estimate.lower.is_nan(), "no interval without folds");
        let mut backwards = train[0].clone();
        backwards.cycles.swap(3, 4);
        assert!(matches!(model.predict(&backwards), Err(RulError::BadData(m)) if m.contains("increase")));
        let mut narrow = one.clone();
        narrow.sensors[0].pop();
        assert!(matches!(model.predict(&narrow), Err(RulError::BadHistory(_))));
        assert!(matches!(RulModel::fit(&config, &names(), &[]), Err(RulError::BadData(_))));
        let bad = RulConfig { window: 0, coverage: 1.5, ..config.clone() };
        assert!(
            matches!(RulModel::fit(&bad, &names(), &train), Err(RulError::BadSettings(m)) if m.contains("window") && m.contains("coverage"))
        );
        // Missing values carry the previous value forward.
        let mut gappy = train[1].clone();
        gappy.sensors[10][0] = f64::NAN;
        assert!(model.predict(&gappy).unwrap().rul.is_finite());
    }

    #[test]
    fn every_learner_learns_wear_and_round_trips() {
        let train = fleet(30, 5);
        let test = fleet(20, 6);
        let network = NetworkConfig {
            window: 12,
            filters: 6,
            kernel: 4,
            layers: 2,
            hidden: 16,
            epochs: 15,
            ..Default::default()
        };
        let mut rmse = Vec::new();
        for learner in [Learner::Trees, Learner::Network, Learner::Ensemble] {
            let config = RulConfig { learner, network: network.clone(), interval_folds: 2, ..small() };
            let model = RulModel::fit(&config, &names(), &train).unwrap();
            assert_eq!(model.importances().is_empty(), learner == Learner::Network, "{learner:?}");
            let (mut squared, mut count) = (0.0, 0.0);
            for unit in &test {
                let all = model.predict_all(unit).unwrap();
                let life = unit.cycles.len();
                for (i, estimate) in all.iter().enumerate() {
                    squared += (estimate.rul - ((life - 1 - i) as f64).min(125.0)).powi(2);
                    count += 1.0;
                    assert!(
                        estimate.lower <= estimate.rul && estimate.rul <= estimate.upper,
                        "{learner:?} {estimate:?}"
                    );
                }
                // The last cycle alone gives the same estimate (up to the
                // rounding of a different matrix-product path).
                let last = model.predict(unit).unwrap();
                assert!((last.rul - all[life - 1].rul).abs() < 1e-3, "{learner:?}: {last:?} vs {:?}", all[life - 1]);
            }
            rmse.push((squared / count).sqrt());
            let back: RulModel = serde_json::from_str(&serde_json::to_string(&model).unwrap()).unwrap();
            assert_eq!(back, model, "{learner:?}");
            assert_eq!(back.predict_all(&test[0]).unwrap(), model.predict_all(&test[0]).unwrap());
            if learner != Learner::Trees {
                assert_eq!(RulModel::fit(&config, &names(), &train).unwrap(), model, "{learner:?} is deterministic");
            }
        }
        // Always-the-cap would score about 45 here.
        assert!(rmse.iter().all(|r| *r < 20.0), "trees, network, ensemble: {rmse:?}");
    }

    #[test]
    fn a_format_1_artifact_still_loads() {
        let train = fleet(10, 8);
        let model = RulModel::fit(&RulConfig { interval_folds: 2, ..small() }, &names(), &train).unwrap();
        let mut json: serde_json::Value = serde_json::to_value(&model).unwrap();
        json["format"] = 1.into();
        json["config"].as_object_mut().unwrap().retain(|k, _| k != "learner" && k != "network");
        let old = RulModel::from_json(&json.to_string()).unwrap();
        assert!(RulModel::readable(old.format) && !RulModel::readable(RulModel::FORMAT + 1));
        assert!(old.predict_all(&train[0]).unwrap() == model.predict_all(&train[0]).unwrap(), "estimates differ");
    }

    #[test]
    fn the_artifact_round_trips_and_predicts_the_same() {
        let train = fleet(15, 4);
        let model = RulModel::fit(&RulConfig { interval_folds: 2, ..small() }, &names(), &train).unwrap();
        let json = serde_json::to_string(&model).unwrap();
        let back: RulModel = serde_json::from_str(&json).unwrap();
        assert_eq!(back.format, RulModel::FORMAT);
        let all = model.predict_all(&train[0]).unwrap();
        assert_eq!(back.predict_all(&train[0]).unwrap(), all);
        assert_eq!(model.predict(&train[0]).unwrap(), *all.last().unwrap(), "the last cycle alone gives the same");
    }
}
