//! Golden vectors: a PCA model fitted on the Tennessee Eastman training
//! samples, and its scores on ten faulty samples, are committed. A change
//! that makes a stored model score differently fails here, and must come
//! with a new model format version (`FittedModel::FORMAT`).
//!
//! Regenerate after an intended change: `USAN_BLESS=1 cargo test --test golden`.

mod common;

use common::repo;
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
