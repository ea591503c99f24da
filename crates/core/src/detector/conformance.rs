//! The conformance suite every detector passes: add a detector's configs to
//! [`every_detector`] and it is held to the same contract.

use super::*;

/// Four correlated signals around different levels and scales.
fn normal_rows(n: usize, seed: u64) -> Vec<Vec<f64>> {
    let mut g = crate::stats::SeededNormal::new(seed);
    (0..n)
        .map(|_| {
            let common = g.normal();
            vec![
                50.0 + 2.0 * common + 0.3 * g.normal(),
                10.0 - common + 0.3 * g.normal(),
                1.0 + 0.1 * g.normal(),
                300.0 + 5.0 * common + 1.0 * g.normal(),
            ]
        })
        .collect()
}

/// Every registered kind's example settings (the registry's one list).
fn every_detector() -> Vec<DetectorConfig> {
    DetectorConfig::examples()
}

#[test]
fn every_kind_has_examples_and_its_name_is_its_configuration_type() {
    let examples = every_detector();
    for kind in kinds() {
        let of_kind: Vec<&DetectorConfig> = examples.iter().filter(|c| c.kind() == kind.name).collect();
        assert!(!of_kind.is_empty(), "{} has no examples", kind.name);
        for config in of_kind {
            let json = serde_json::to_value(config).unwrap();
            assert_eq!(json["type"], kind.name, "the serde tag of {config:?}");
            let built = config.build().unwrap();
            assert_eq!(built.kind(), kind.name);
            assert_eq!(serde_json::to_value(&built).unwrap()["type"], kind.name);
        }
        assert!(kind.default_threshold.validate().is_empty(), "{}: {:?}", kind.name, kind.default_threshold);
    }
}

fn fitted(config: &DetectorConfig, rows: &[Vec<f64>]) -> AnyDetector {
    let mut detector = config.build().unwrap();
    detector.learn(rows).unwrap();
    detector
}

#[test]
fn deterministic_for_the_same_data() {
    let train = normal_rows(300, 7);
    let test = normal_rows(100, 8);
    for config in every_detector() {
        let (mut a, mut b) = (fitted(&config, &train), fitted(&config, &train));
        for row in &test {
            assert_eq!(a.score(row).unwrap(), b.score(row).unwrap(), "{config:?}");
        }
    }
}

#[test]
fn empty_and_missing_input_are_errors_or_handled() {
    let train = normal_rows(300, 1);
    for config in every_detector() {
        let mut fresh = config.build().unwrap();
        assert!(matches!(fresh.learn(&[]), Err(DetectorError::NotEnoughData { .. })), "{config:?}");
        assert!(matches!(fresh.learn(&[vec![]]), Err(DetectorError::NotEnoughData { .. })), "{config:?}");
        let ragged = vec![vec![1.0, 2.0], vec![1.0]];
        assert!(matches!(fresh.learn(&ragged), Err(DetectorError::DimensionMismatch { .. })), "{config:?}");

        let mut with_gaps = train.clone();
        for (i, row) in with_gaps.iter_mut().enumerate() {
            row[i % 4] = f64::NAN;
            if i % 3 == 0 {
                row[(i + 1) % 4] = f64::NAN;
            }
        }
        let mut all_gaps = config.build().unwrap();
        // Rows all have gaps: a detector may refuse (PCA needs complete rows) but never panics.
        let _ = all_gaps.learn(&with_gaps);

        let mut detector = fitted(&config, &train);
        assert_eq!(detector.score(&[f64::NAN; 4]), Err(DetectorError::NoData), "{config:?}");
        assert!(matches!(detector.score(&[1.0; 3]), Err(DetectorError::DimensionMismatch { .. })), "{config:?}");
        let partial = detector.score(&[50.0, f64::NAN, 1.0, f64::INFINITY]).unwrap();
        assert!(partial.value.is_finite() && partial.value >= 0.0, "{config:?}: {partial:?}");
        assert_eq!(partial.contributions.len(), 4);
        assert_eq!(partial.contributions[1], 0.0, "a missing signal contributes nothing");
    }
}

#[test]
fn serde_round_trip_scores_identically() {
    let train = normal_rows(300, 3);
    let test = normal_rows(50, 4);
    let names: Vec<String> = (0..4).map(|i| format!("s{i}")).collect();
    for config in every_detector() {
        let config_json = serde_json::to_string(&config).unwrap();
        assert_eq!(serde_json::from_str::<DetectorConfig>(&config_json).unwrap(), config);

        let original = fitted(&config, &train);
        let artifact = serde_json::to_string(&FittedModel::new(names.clone(), original.clone())).unwrap();
        let loaded: FittedModel = serde_json::from_str(&artifact).unwrap();
        loaded.check_format().unwrap();
        let (mut a, mut b) = (original, loaded.detector);
        for row in &test {
            let (sa, sb) = (a.score(row).unwrap(), b.score(row).unwrap());
            assert_eq!(sa.value.to_bits(), sb.value.to_bits(), "{config:?}");
            assert_eq!(sa, sb);
        }
    }
}

#[test]
fn detects_an_obvious_injected_fault_and_blames_the_right_signal() {
    let train = normal_rows(400, 11);
    let test = normal_rows(200, 12);
    for config in every_detector() {
        let mut detector = fitted(&config, &train);
        let mut normal: Vec<f64> = test.iter().map(|r| detector.score(r).unwrap().value).collect();
        normal.sort_by(f64::total_cmp);
        let bar = if config.saturates_outside_range() {
            normal[normal.len() * 3 / 4]
        } else {
            normal[normal.len() * 99 / 100]
        };
        // A stuck-high quiet signal (30 sigma) and a large step on another (8 sigma):
        // far outside the baseline in more than one direction, so obvious to
        // every method, tree ensembles included. A flatline detector sees
        // values, not their spread: for it the two signals freeze there.
        let mut faulty = normal_rows(1, 13).remove(0);
        faulty[2] += 3.0;
        faulty[0] += 16.0;
        if matches!(config, DetectorConfig::Flatline(_)) {
            for mut row in normal_rows(30, 14) {
                (row[0], row[2]) = (faulty[0], faulty[2]);
                detector.score(&row).unwrap();
            }
        }
        // Context memory judges runs of `recent` values: the fault lasts one.
        if let DetectorConfig::ContextMemory(c) = &config {
            for mut row in normal_rows(c.recent - 1, 15) {
                row[2] += 3.0;
                row[0] += 16.0;
                detector.score(&row).unwrap();
            }
        }
        let score = detector.score(&faulty).unwrap();
        assert!(score.value > bar, "{config:?}: fault {} vs normal scores' bar {bar}", score.value);
        let blamed = score.contributions.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        assert!(blamed == 2 || blamed == 0, "{config:?} blames signal {blamed}: {score:?}");
        let innocent = score.contributions[1].max(score.contributions[3]);
        assert!(score.contributions[blamed] > innocent, "{config:?}: {score:?}");
        assert!(score.value.is_finite() && normal[0] >= 0.0);
    }
}

#[test]
fn batch_scores_equal_row_by_row_scores() {
    let train = normal_rows(300, 21);
    let mut test = normal_rows(120, 22);
    test[7][2] = f64::NAN;
    for config in every_detector() {
        let (mut a, mut b) = (fitted(&config, &train), fitted(&config, &train));
        let batch = a.score_values(&test).unwrap();
        for (row, value) in test.iter().zip(&batch) {
            let single = b.score(row).unwrap().value;
            assert!((single - value).abs() <= 1e-9 * single.abs().max(1.0), "{config:?}: {single} vs {value}");
        }
        let complete: Vec<Vec<f64>> = test.iter().filter(|r| r.iter().all(|v| v.is_finite())).cloned().collect();
        let (mut c, mut d) = (fitted(&config, &train), fitted(&config, &train));
        let batch = c.score_values(&complete).unwrap();
        for (row, value) in complete.iter().zip(&batch) {
            let single = d.score(row).unwrap().value;
            assert!((single - value).abs() <= 1e-9 * single.abs().max(1.0), "{config:?}: {single} vs {value}");
        }
    }
}

#[test]
fn a_batch_long_enough_to_cut_over_cores_scores_as_row_by_row() {
    // Enough rows for several blocks per core, gaps in the first, a middle
    // and the last block; smoothing carries across the cuts.
    let train = normal_rows(300, 23);
    let mut test = normal_rows(9_000, 24);
    for (i, signal) in [(5, 1), (4_700, 3), (8_998, 0)] {
        test[i][signal] = f64::NAN;
    }
    for config in every_detector() {
        let (mut a, mut b) = (fitted(&config, &train), fitted(&config, &train));
        let batch = a.score_values(&test).unwrap();
        assert_eq!(batch.len(), test.len());
        for (i, (row, value)) in test.iter().zip(&batch).enumerate() {
            let single = b.score(row).unwrap().value;
            assert!((single - value).abs() <= 1e-9 * single.abs().max(1.0), "{config:?} row {i}: {single} vs {value}");
        }
    }
}

#[test]
fn unsupported_model_format_is_refused() {
    let model = FittedModel {
        format: 99,
        signals: vec![],
        detector: DetectorConfig::Ewma(EwmaConfig::default()).build().unwrap(),
        threshold: None,
    };
    assert!(matches!(model.check_format(), Err(DetectorError::UnsupportedFormat { found: 99, .. })));
}

#[test]
fn invalid_settings_are_all_reported() {
    let config = DetectorConfig::Pca(PcaConfig {
        components: Some(0),
        variance: 2.0,
        alpha: 1.5,
        smoothing: 5,
        ..PcaConfig::default()
    });
    assert_eq!(config.validate().len(), 4, "{:?}", config.validate());
    assert!(config.build().is_err());
    let config = DetectorConfig::RobustZ(RobustZConfig { window: 2, min_samples: 1 });
    assert_eq!(config.validate().len(), 2);
}
