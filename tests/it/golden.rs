//! Golden vectors: a PCA model fitted on the Tennessee Eastman training
//! samples, and its scores on ten faulty samples, are committed; so are the
//! demo's RUL model (trees) and a small ensemble (trees and network), with
//! their estimates on the demo engines. A change that
//! makes a stored model score differently fails here, and must come with a
//! new model format version (`FittedModel::FORMAT`, `RulModel::FORMAT`).
//!
//! Regenerate after an intended change: `USAN_BLESS=1 cargo test --test golden`.

use crate::harness::repo;
use usan_core::detector::{Detector, DetectorConfig, FittedModel, PcaConfig};

fn tep_rows() -> (Vec<String>, Vec<Vec<f64>>) {
    let text = std::fs::read_to_string(repo().join("tests/data/tep/tep_normal_then_idv1.csv")).unwrap();
    let mut lines = text.lines();
    let names: Vec<String> = lines.next().unwrap().split(',').skip(2).map(str::to_string).collect();
    let rows = lines.map(|l| l.split(',').skip(2).map(|v| v.parse().unwrap()).collect()).collect();
    (names, rows)
}

#[test]
fn a_stored_pca_model_scores_exactly_as_when_it_was_fitted() {
    let (names, rows) = tep_rows();
    let model_path = repo().join("tests/golden/pca_tep_model.json");
    let scores_path = repo().join("tests/golden/pca_tep_scores.json");
    let probe = &rows[800..810];

    if std::env::var_os("USAN_BLESS").is_some() {
        let mut detector = DetectorConfig::Pca(PcaConfig { alpha: 0.999, ..PcaConfig::default() }).build().unwrap();
        detector.learn(&rows[..500]).unwrap();
        let model = FittedModel::new(names.clone(), detector.clone());
        let scores: Vec<_> = probe.iter().map(|r| detector.score(r).unwrap()).collect();
        std::fs::write(&model_path, serde_json::to_string_pretty(&model).unwrap()).unwrap();
        std::fs::write(&scores_path, serde_json::to_string_pretty(&scores).unwrap()).unwrap();
    }

    let model: FittedModel = serde_json::from_str(&std::fs::read_to_string(&model_path).unwrap()).unwrap();
    model.check_format().unwrap();
    assert_eq!(model.signals, names);
    let golden: Vec<usan_core::Score> = serde_json::from_str(&std::fs::read_to_string(&scores_path).unwrap()).unwrap();
    let mut detector = model.detector;
    for (row, want) in probe.iter().zip(&golden) {
        let got = detector.score(row).unwrap();
        assert_eq!(got.value.to_bits(), want.value.to_bits(), "score drifted: {} vs {}", got.value, want.value);
        assert_eq!(&got, want);
    }
    assert!(golden.iter().all(|s| s.value > 1.0), "the golden rows are faulty and over the limit");

    // Refitting today gives the same model as the committed one.
    let mut refit = DetectorConfig::Pca(PcaConfig { alpha: 0.999, ..PcaConfig::default() }).build().unwrap();
    refit.learn(&rows[..500]).unwrap();
    for (row, want) in probe.iter().zip(&golden) {
        let got = refit.score(row).unwrap();
        assert!((got.value - want.value).abs() <= 1e-9 * want.value.abs(), "{} vs {}", got.value, want.value);
    }
}

/// The demo engines' histories, by unit, from the shipped C-MAPSS sample.
fn demo_engines() -> Vec<usan_core::rul::UnitHistory> {
    let text = std::fs::read_to_string(repo().join("examples/data/cmapss_fd001_demo.csv")).unwrap();
    let mut units: std::collections::BTreeMap<u32, usan_core::rul::UnitHistory> = std::collections::BTreeMap::new();
    for line in text.lines().skip(1) {
        let cells: Vec<f64> = line.split(',').map(|c| c.parse().unwrap()).collect();
        let unit = units.entry(cells[0] as u32).or_insert_with(|| usan_core::rul::UnitHistory {
            unit: format!("{}", cells[0]),
            cycles: vec![],
            settings: vec![],
            sensors: vec![],
        });
        unit.cycles.push(cells[1]);
        unit.settings.push(cells[2..5].to_vec());
        unit.sensors.push(cells[5..].to_vec());
    }
    units.into_values().collect()
}

/// Each demo engine seen for 30, 60 and 100 cycles and to its end.
fn estimates_at_cuts(model: &usan_core::rul::RulModel) -> Vec<usan_core::rul::RulEstimate> {
    demo_engines()
        .iter()
        .flat_map(|engine| {
            let n = engine.cycles.len();
            [30, 60, 100, n].map(|cut| {
                let prefix = usan_core::rul::UnitHistory {
                    unit: engine.unit.clone(),
                    cycles: engine.cycles[..cut].to_vec(),
                    settings: engine.settings[..cut].to_vec(),
                    sensors: engine.sensors[..cut].to_vec(),
                };
                model.predict(&prefix).unwrap()
            })
        })
        .collect()
}

#[test]
fn the_shipped_rul_model_estimates_exactly_as_when_it_was_fitted() {
    let model_path = repo().join("examples/models/fd001_demo.rul.json");
    let estimates_path = repo().join("tests/golden/rul_demo_estimates.json");
    let model = usan_core::rul::RulModel::from_json(&std::fs::read_to_string(model_path).unwrap()).unwrap();
    assert!(usan_core::rul::RulModel::readable(model.format), "format {}", model.format);
    let estimates = estimates_at_cuts(&model);
    if std::env::var_os("USAN_BLESS").is_some() {
        std::fs::write(&estimates_path, serde_json::to_string_pretty(&estimates).unwrap()).unwrap();
    }
    let golden: Vec<usan_core::rul::RulEstimate> =
        serde_json::from_str(&std::fs::read_to_string(&estimates_path).unwrap()).unwrap();
    assert_eq!(estimates.len(), golden.len());
    for (got, want) in estimates.iter().zip(&golden) {
        assert_eq!(got.rul.to_bits(), want.rul.to_bits(), "estimate drifted: {got:?} vs {want:?}");
        assert_eq!(got, want);
    }
    // Sanity of the golden values themselves: estimates fall as the engines wear.
    for engine in golden.chunks(4) {
        assert!(engine[3].rul < engine[0].rul, "{engine:?}");
        assert!(engine[3].rul < 20.0, "at its end an engine has little left: {engine:?}");
    }
}

/// Estimates of a stored model, compared with its golden estimates to
/// 0.01 cycles: the network's matrix products run on kernels chosen for
/// the CPU, which may round the last bits of f32 differently.
fn assert_estimates_as_stored(model: &usan_core::rul::RulModel, estimates_path: &std::path::Path) {
    assert!(model.network_weight().is_some(), "the stored model has both learners");
    let golden: Vec<usan_core::rul::RulEstimate> =
        serde_json::from_str(&std::fs::read_to_string(estimates_path).unwrap()).unwrap();
    let estimates = estimates_at_cuts(model);
    assert_eq!(estimates.len(), golden.len());
    for (got, want) in estimates.iter().zip(&golden) {
        for (g, w) in [(got.rul, want.rul), (got.lower, want.lower), (got.upper, want.upper)] {
            assert!((g - w).abs() < 0.01, "estimate drifted: {got:?} vs {want:?}");
        }
    }
    for engine in golden.chunks(4) {
        assert!(engine[3].rul < engine[0].rul, "estimates fall as the engines wear: {engine:?}");
    }
}

/// A stored ensemble (trees and a small network, fitted on the demo
/// engines) estimates as when it was fitted.
#[test]
fn a_stored_ensemble_estimates_as_when_it_was_fitted() {
    use usan_core::rul::{Learner, NetworkConfig, RulConfig, RulModel};
    let model_path = repo().join("tests/golden/rul_ensemble_model.json");
    let estimates_path = repo().join("tests/golden/rul_ensemble_estimates.json");
    if std::env::var_os("USAN_BLESS").is_some() {
        let config = RulConfig {
            learner: Learner::Ensemble,
            interval_folds: 2,
            trees: usan_core::trees::gbdt::GbdtConfig { trees: 40, learning_rate: 0.2, ..Default::default() },
            network: NetworkConfig {
                window: 20,
                filters: 4,
                kernel: 5,
                layers: 2,
                hidden: 12,
                epochs: 8,
                ..Default::default()
            },
            ..RulConfig::default()
        };
        let names: Vec<String> = (1..=21).map(|s| format!("s{s}")).collect();
        let model = RulModel::fit(&config, &names, &demo_engines()).unwrap();
        std::fs::write(&model_path, serde_json::to_string(&model).unwrap()).unwrap();
        std::fs::write(&estimates_path, serde_json::to_string_pretty(&estimates_at_cuts(&model)).unwrap()).unwrap();
    }
    let model = RulModel::from_json(&std::fs::read_to_string(model_path).unwrap()).unwrap();
    assert_eq!(model.format, RulModel::FORMAT);
    assert_estimates_as_stored(&model, &estimates_path);
}

/// Ensembles stored in older formats still load and estimate as when they
/// were fitted: format 2 (a same-padded network, from before the `padding`
/// setting) and format 3 (before the health index).
#[test]
fn older_ensembles_estimate_as_when_they_were_fitted() {
    use usan_core::rul::RulModel;
    for (format, missing) in [(2, "padding"), (3, "health")] {
        let text = std::fs::read_to_string(repo().join(format!("tests/golden/rul_ensemble_format{format}_model.json")))
            .unwrap();
        assert!(!text.contains(missing), "format {format} was written before `{missing}` existed");
        let model = RulModel::from_json(&text).unwrap();
        assert_eq!(model.format, format);
        let estimates = repo().join(format!("tests/golden/rul_ensemble_format{format}_estimates.json"));
        assert_estimates_as_stored(&model, &estimates);
        // A format this build does not know is refused with a reason.
        let newer = text.replacen(&format!("\"format\":{format}"), "\"format\":99", 1);
        let error = RulModel::from_json(&newer).unwrap_err().to_string();
        assert!(error.contains("format 99"), "{error}");
    }
}
