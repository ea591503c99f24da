//! Models exported from Python run in usan with onnxruntime's outputs.
//!
//! `scripts/onnx/make_models.py` (pinned in `scripts/onnx/requirements.txt`,
//! run by `.ci/run` into `target/onnx-models`, or wherever
//! `USAN_ONNX_MODELS` points) trains every family on the real samples under
//! `tests/data` and records onnxruntime's outputs on held-out rows and rows
//! with missing values. Here `usan model check` and `usan model run` must
//! reproduce them within rtol 1e-4 / atol 1e-5 (labels exactly), and every
//! bad file or input must be one clear line on stderr, never a panic.

use crate::harness::{repo, required, usan};
use std::path::{Path, PathBuf};

/// Every family the script exports; a missing one fails (a converter that
/// stopped working must not shrink the test silently).
const FAMILIES: &[&str] = &[
    "skl_scaler_linear_regression",
    "skl_minmax_ridge",
    "skl_imputer_scaler_logistic_binary",
    "skl_logistic_multiclass",
    "skl_logistic_multiclass_nozipmap",
    "skl_scaler_pca",
    "skl_random_forest_regressor",
    "skl_random_forest_classifier",
    "skl_random_forest_classifier_nozipmap",
    "skl_extra_trees_regressor",
    "skl_extra_trees_classifier_binary",
    "skl_gradient_boosting_regressor",
    "skl_gradient_boosting_classifier_binary",
    "skl_gradient_boosting_classifier_multiclass",
    "skl_hist_gradient_boosting_regressor_nan",
    "skl_hist_gradient_boosting_classifier_nan",
    "skl_hist_gradient_boosting_classifier_multiclass",
    "skl_isolation_forest",
    "skl_scaler_svr_rbf",
    "skl_scaler_svr_poly",
    "skl_scaler_linear_svr",
    "skl_scaler_one_class_svm",
    "skl_scaler_svc_rbf_probability_multiclass",
    "skl_scaler_svc_poly_multiclass",
    "skl_scaler_svc_linear_binary",
    "skl_scaler_svc_sigmoid_probability_binary",
    "skl_scaler_nusvc_rbf_multiclass",
    "skl_column_transformer_one_hot_logistic",
    "skl_mlp_regressor",
    "skl_mlp_classifier",
    "lgbm_regressor",
    "lgbm_classifier_binary_nan",
    "lgbm_classifier_multiclass",
    "xgb_regressor",
    "xgb_classifier_binary_nan",
    "xgb_classifier_multiclass",
    "xgb_classifier_binary",
    "onnx_tree_ensemble_v5_forest_average",
    "onnx_tree_ensemble_v5_boosting_sum",
    "onnx_tree_ensemble_v5_every_mode",
    "onnx_feature_vectorizer_linear",
    "onnx_lstm_bidirectional_peepholes",
    "onnx_lstm_reverse_clip_input_forget",
    "onnx_lstm_sequence_lens_activations",
    "onnx_gru_bidirectional_sequence_lens",
    "onnx_gru_reverse_reset_before_product",
    "onnx_conv1d_strides_dilations_pads",
    "onnx_conv1d_same_padding_groups",
];

/// The exported models, or `None` (skipped outside CI) when not generated.
fn models() -> Option<PathBuf> {
    let dir =
        std::env::var_os("USAN_ONNX_MODELS").map_or_else(|| repo().join("target").join("onnx-models"), PathBuf::from);
    required(dir.join("bad").is_dir(), "the exported ONNX models (scripts/onnx/make_models.py target/onnx-models)")
        .then_some(dir)
}

/// `usan model run MODEL --input INPUT --output OUTPUT`.
fn model_run(model: &Path, input: &Path, output: &Path) -> std::process::Output {
    let [model, input, output] = [model, input, output].map(|p| p.to_str().unwrap());
    usan(&["model", "run", model, "--input", input, "--output", output])
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn rows_in(csv: &Path) -> usize {
    std::fs::read_to_string(csv).unwrap().lines().count() - 1
}

/// PyTorch networks, exported by both exporters and committed (PyTorch is
/// too big to install in CI): `scripts/onnx/make_torch_models.py`.
const NETWORKS: &[&str] = &[
    "torch_torchscript_autoencoder",
    "torch_torchscript_lstm",
    "torch_torchscript_gru",
    "torch_torchscript_conv1d",
    "torch_dynamo_autoencoder",
    "torch_dynamo_lstm",
    "torch_dynamo_gru",
    "torch_dynamo_conv1d",
];

fn networks() -> PathBuf {
    repo().join("tests").join("data").join("onnx").join("torch")
}

/// `usan model check` then `usan model run` on a package's golden inputs
/// (once, and repeated past 2,048 rows), compared with onnxruntime's
/// outputs; the problem, if any.
fn differs_from_onnxruntime(dir: &Path, scratch: &Path) -> Option<String> {
    let check = usan(&["model", "check", dir.to_str().unwrap()]);
    let lines = String::from_utf8_lossy(&check.stdout).into_owned();
    if !check.status.success() || !lines.lines().all(|l| l.starts_with("input ") || l.starts_with("output ")) {
        return Some(format!("check: {}{lines}", stderr(&check)));
    }
    let inputs = dir.join("golden").join("inputs.csv");
    let output = scratch.join("outputs.csv");
    let run = model_run(dir, &inputs, &output);
    if !run.status.success() {
        return Some(format!("run: {}", stderr(&run)));
    }
    assert_eq!(rows_in(&output), rows_in(&inputs), "{}: one output row per input row", dir.display());
    // usan's CSV against onnxruntime's, cell by cell.
    let text = std::fs::read_to_string(&output).unwrap();
    let golden = std::fs::read_to_string(dir.join("golden").join("outputs.csv")).unwrap();
    if let Some(problem) = compare_csv(&text, &golden) {
        return Some(problem);
    }
    // The same rows repeated past two of the 1,024-row chunks usan runs at
    // a time and a remainder: each row still gets its own outputs.
    let repeat = |csv: &str, times: usize| {
        let mut lines = csv.lines();
        let header = lines.next().unwrap_or_default().to_string();
        let rows: Vec<&str> = lines.collect();
        std::iter::once(header).chain((0..times).flat_map(|_| rows.iter().map(|r| r.to_string()))).collect::<Vec<_>>()
    };
    let times = 2_125_usize.div_ceil(rows_in(&inputs));
    let many = scratch.join("many.csv");
    std::fs::write(&many, repeat(&std::fs::read_to_string(&inputs).unwrap(), times).join("\n") + "\n").unwrap();
    let run = model_run(dir, &many, &output);
    if !run.status.success() {
        return Some(format!("run on {} rows: {}", times * rows_in(&inputs), stderr(&run)));
    }
    let text = std::fs::read_to_string(&output).unwrap();
    compare_csv(&text, &(repeat(&golden, times).join("\n") + "\n"))
        .map(|p| format!("{} rows: {p}", times * rows_in(&inputs)))
}

fn all_match(root: &Path, families: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let failures: Vec<String> = families
        .iter()
        .filter_map(|family| differs_from_onnxruntime(&root.join(family), tmp.path()).map(|p| format!("{family}: {p}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} families differ from onnxruntime:\n{}",
        failures.len(),
        families.len(),
        failures.join("\n")
    );
}

#[test]
fn every_exported_family_matches_onnxruntime() {
    let Some(models) = models() else { return };
    all_match(&models, FAMILIES);
}

#[test]
fn pytorch_networks_from_both_exporters_match_onnxruntime() {
    all_match(&networks(), NETWORKS);
}

#[test]
fn a_recurrent_network_gives_nan_for_a_window_with_a_missing_value() {
    let tmp = tempfile::tempdir().unwrap();
    let lstm = networks().join("torch_dynamo_lstm");
    let golden = std::fs::read_to_string(lstm.join("golden").join("inputs.csv")).unwrap();
    let mut lines: Vec<String> = golden.lines().take(3).map(str::to_string).collect();
    let mut cells: Vec<&str> = lines[2].split(',').collect();
    cells[7] = "";
    lines[2] = cells.join(",");
    let inputs = tmp.path().join("gap.csv");
    std::fs::write(&inputs, lines.join("\n") + "\n").unwrap();
    let output = tmp.path().join("out.csv");
    let run = model_run(&lstm, &inputs, &output);
    assert!(run.status.success(), "{}", stderr(&run));
    let out = std::fs::read_to_string(&output).unwrap();
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(rows[0].parse::<f64>().unwrap().is_finite(), "a complete window is scored: {out}");
    assert_eq!(rows[1], "NaN", "a window with a gap is not: {out}");
}

/// The first cell outside rtol 1e-4 / atol 1e-5 (text exactly), if any.
fn compare_csv(ours: &str, golden: &str) -> Option<String> {
    let (ours, golden): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), golden.lines().collect());
    if ours.first() != golden.first() {
        return Some(format!("header {:?} where onnxruntime has {:?}", ours.first(), golden.first()));
    }
    if ours.len() != golden.len() {
        return Some(format!("{} lines where onnxruntime has {}", ours.len(), golden.len()));
    }
    for (r, (a, b)) in ours.iter().zip(&golden).enumerate().skip(1) {
        for (j, (x, y)) in a.split(',').zip(b.split(',')).enumerate() {
            let same = match (x.parse::<f64>(), y.parse::<f64>()) {
                (Ok(x), Ok(y)) => (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-5 + 1e-4 * y.abs(),
                _ => x == y,
            };
            if !same {
                return Some(format!("line {} column {}: {x} where onnxruntime gave {y}", r + 1, j + 1));
            }
        }
    }
    None
}

/// `usan ARGS` fails with one line on stderr and no panic; returns that line.
fn refused(args: &[&str]) -> String {
    let out = usan(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "{args:?} succeeded: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line on stderr, got: {err}");
    err
}

#[test]
fn bad_models_and_inputs_are_one_clear_line_never_a_panic() {
    let Some(models) = models() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = |name: &str| tmp.path().join(name).to_str().unwrap().to_string();
    let forest = models.join("skl_random_forest_classifier");
    let bytes = std::fs::read(forest.join("model.onnx")).unwrap();
    std::fs::write(path("truncated.onnx"), &bytes[..bytes.len() / 2]).unwrap();
    std::fs::write(path("empty.onnx"), b"").unwrap();
    std::fs::write(path("text.onnx"), b"name,value\npump,1\n").unwrap();
    for (file, says) in [
        ("truncated.onnx", "not an ONNX model"),
        ("empty.onnx", "not an ONNX model"),
        ("text.onnx", "not an ONNX model"),
    ] {
        let err = refused(&["model", "check", &path(file)]);
        assert!(err.contains(says), "{file}: {err}");
        let err = refused(&["model", "run", &path(file), "--input", "x.csv", "--output", &path("y.csv")]);
        assert!(err.contains(says), "{file}: {err}");
    }

    let unknown = models.join("bad").join("unknown_operator.onnx");
    let err = refused(&["model", "check", unknown.to_str().unwrap()]);
    assert!(
        err.contains("com.example:Mystery (node mystery_node)") && err.contains("ai.onnx:FancyNewOp (node fancy_node)"),
        "{err}"
    );
    let json = usan(&["model", "check", unknown.to_str().unwrap(), "--json"]);
    assert!(!json.status.success());
    let object: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(object["unsupported"][0]["node"], "mystery_node", "{object}");
    assert_eq!(object["inputs"][0]["shape"], serde_json::json!(["?", 3]), "{object}");

    // Rows of 3 values for a model of 27: expected and found are named.
    std::fs::write(path("narrow.csv"), "a,b,c\n1,2,3\n").unwrap();
    let err = refused(&[
        "model",
        "run",
        forest.to_str().unwrap(),
        "--input",
        &path("narrow.csv"),
        "--output",
        &path("y.csv"),
    ]);
    assert!(err.contains("has 3 columns; the model takes 27 values per row"), "{err}");

    // A package whose goldens this model does not reproduce is refused, naming the worst value.
    let package = tmp.path().join("tampered");
    std::fs::create_dir_all(package.join("golden")).unwrap();
    std::fs::copy(forest.join("model.onnx"), package.join("model.onnx")).unwrap();
    std::fs::copy(forest.join("golden").join("inputs.csv"), package.join("golden").join("inputs.csv")).unwrap();
    let golden = std::fs::read_to_string(forest.join("golden").join("outputs.csv")).unwrap();
    let mut lines: Vec<String> = golden.lines().map(str::to_string).collect();
    let mut cells: Vec<String> = lines[3].split(',').map(str::to_string).collect();
    cells[2] = "0.5".into();
    lines[3] = cells.join(",");
    std::fs::write(package.join("golden").join("outputs.csv"), lines.join("\n") + "\n").unwrap();
    let err = refused(&["model", "check", package.to_str().unwrap()]);
    assert!(err.contains("outputs differ from the goldens: output_probability.Dirtiness row 3"), "{err}");
    refused(&["model", "run", package.to_str().unwrap(), "--input", &path("narrow.csv"), "--output", &path("y.csv")]);

    // A manifest that does not fit its model: every problem, on one line.
    let described = tmp.path().join("described");
    std::fs::create_dir_all(&described).unwrap();
    std::fs::copy(forest.join("model.onnx"), described.join("model.onnx")).unwrap();
    let manifest = "format = 1\nname = \"plates\"\nrole = \"classifier\"\nsignals = [\"a\", \"b\"]\n[outputs]\nlabel = \"fault\"\n";
    std::fs::write(described.join("usan-model.toml"), manifest).unwrap();
    let err = refused(&["model", "check", described.to_str().unwrap()]);
    assert!(err.contains("usan-model.toml: 2 signals × window 1 = 2 values per row, but the model takes 27"), "{err}");
    assert!(err.contains("outputs.label names fault, which the model does not have"), "{err}");
    let fixed: Vec<String> = (0..27).map(|i| format!("\"s{i}\"")).collect();
    let manifest = manifest.replace("\"a\", \"b\"", &fixed.join(", ")).replace("\"fault\"", "\"output_label\"");
    std::fs::write(described.join("usan-model.toml"), manifest).unwrap();
    let ok = usan(&["model", "check", described.to_str().unwrap()]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    std::fs::write(described.join("usan-model.toml"), "format = 1\nname = 3\n").unwrap();
    let err = refused(&["model", "check", described.to_str().unwrap()]);
    assert!(err.contains("usan-model.toml"), "{err}");
}

#[test]
fn check_prints_each_input_and_output_with_dynamic_dimensions_as_a_question_mark() {
    let Some(models) = models() else { return };
    let out =
        usan(&["model", "check", models.join("skl_random_forest_classifier").join("model.onnx").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "input X tensor(float) [?,27]\n\
         output output_label tensor(string) [?]\n\
         output output_probability seq(map(string,tensor(float))) [?]\n"
    );
}

/// The package `examples/onnx/train.py` made: a scikit-learn autoencoder of
/// the 52 TEP signals, with goldens and a manifest.
fn example_package() -> PathBuf {
    repo().join("examples/onnx/tep-autoencoder")
}

/// Copy a package folder (model, manifest, goldens) to `to`.
fn copy_package(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("golden")).unwrap();
    for file in ["model.onnx", "usan-model.toml", "golden/inputs.csv", "golden/outputs.csv"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
}

const TEP_ORIGIN_MS: i64 = 1_767_225_600_000;
const SAMPLE_MS: i64 = 180_000;

fn sample_of(ts: &serde_json::Value) -> i64 {
    (ts.as_i64().unwrap() - TEP_ORIGIN_MS) / SAMPLE_MS
}

fn tep_signals() -> String {
    (1..=41)
        .map(|i| format!("\"xmeas_{i}\""))
        .chain((1..=11).map(|i| format!("\"xmv_{i}\"")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `[[sources]]` table replaying the TEP sample into asset `reactor`.
fn tep_source() -> String {
    format!(
        "[[sources]]\ntype = \"file\"\nname = \"tep\"\npath = \"{}/tests/data/tep/tep_normal_then_idv1.csv\"\n\
         asset = \"reactor\"\ntime_column = \"sample\"\ntime_unit_s = 180.0\n\
         time_origin = \"2026-01-01T00:00:00Z\"\nspeed = \"max\"\n",
        repo().display()
    )
}

/// The `[[sources]]` table replaying the C-MAPSS demo, one asset
/// `engine-<unit>` per engine, a cycle an hour.
fn cmapss_source() -> String {
    format!(
        "[[sources]]\ntype = \"file\"\nname = \"cmapss\"\npath = \"{}/examples/data/cmapss_fd001_demo.csv\"\n\
         asset_column = \"unit\"\nasset_template = \"engine-{{}}\"\ntime_column = \"cycle\"\ntime_unit_s = 3600.0\n\
         time_origin = \"2026-01-01T00:00:00Z\"\nspeed = \"max\"\n",
        repo().display()
    )
}

/// A plant's store (`DIR/DB`), one worker and the TEP replay: the head of
/// a configuration.
fn tep_plant(dir: &Path, db: &str) -> String {
    format!(
        "\n[store]\ntype = \"sqlite\"\npath = \"{}/{db}\"\nflush_interval = \"100ms\"\n\n[pipeline]\nworkers = 1\n\n{}",
        dir.display(),
        tep_source()
    )
}

/// A plant running the example package on the TEP replay, beside a copy of
/// it whose goldens were altered (`bad`), on the reactor and on an asset
/// that lacks most of the signals (`small`).
fn package_config(dir: &Path, bad: &Path) -> PathBuf {
    let text = format!(
        r#"{head}
[[detectors]]
name = "autoencoder"
algorithm = {{ type = "onnx", package = "{package}" }}
threshold = {{ k = 4, n = 5 }}

[[detectors]]
name = "altered"
algorithm = {{ type = "onnx", package = "{bad}" }}

[[assets]]
id = "reactor"
signals = [{signals}]
detectors = ["autoencoder", "altered"]

[[assets]]
id = "small"
signals = ["xmeas_1"]
detectors = ["autoencoder"]
"#,
        head = tep_plant(dir, "onnx.db"),
        package = example_package().display(),
        bad = bad.display(),
        signals = tep_signals()
    );
    crate::harness::write_config(dir, "onnx.toml", &text)
}

#[test]
fn a_package_scores_live_frames_names_signals_and_a_bad_one_is_refused_alone() {
    use crate::harness::Server;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("altered");
    copy_package(&example_package(), &bad);
    let golden = bad.join("golden/outputs.csv");
    let text = std::fs::read_to_string(&golden).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut cells: Vec<String> = lines[1].split(',').map(str::to_string).collect();
    cells[0] = format!("{}", cells[0].parse::<f64>().unwrap() + 0.5);
    lines[1] = cells.join(",");
    std::fs::write(&golden, lines.join("\n") + "\n").unwrap();
    let config = package_config(dir.path(), &bad);

    // `usan check` names both problems and fails; `usan serve` runs the rest.
    let out = usan(&["check", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("detector altered") && err.contains("variable.0 row 1"), "{err}");
    assert!(err.contains("asset small does not have") && err.contains("xmeas_2"), "{err}");

    let server = Server::serve(&config, &[]);
    server.wait_until("all 1000 frames are scored", Duration::from_secs(120), |s| {
        s.get("/api/v1/assets/reactor")["frames"].as_u64().unwrap() >= 1000
    });
    server.wait_until("and stored with their findings and alarms", Duration::from_secs(30), |s| {
        s.get_raw("/metrics").1.contains("usan_frames_stored_total 1000")
    });
    let reactor = server.get("/api/v1/assets/reactor");
    let [good, altered] = [&reactor["detectors"][0], &reactor["detectors"][1]];
    assert_eq!(good["status"], "monitoring", "{good}");
    let model = &good["model"];
    assert_eq!(model["name"], "tep-autoencoder", "{good}");
    assert!(model["producer"].as_str().unwrap().starts_with("skl2onnx"), "{model}");
    assert!(model["exporter"].as_str().unwrap().starts_with("skl2onnx"), "{model}");
    assert_eq!(model["golden_rows"], 102, "{model}");
    assert_eq!(model["training_data_sha256"].as_str().unwrap().len(), 64, "{model}");
    assert!(good["threshold"].as_f64().unwrap() > 0.0, "the manifest's quantile of the golden scores: {good}");
    let why = altered["status"].as_str().unwrap();
    assert!(why.starts_with("failed:") && why.contains("goldens"), "{why}");
    let small = server.get("/api/v1/assets/small");
    assert!(small["detectors"][0]["status"].as_str().unwrap().contains("xmeas_2"), "{small}");

    // The fault (from sample 801) is caught within 20 samples and explained
    // by signals, as a PCA finding is; normal operation stays nearly quiet
    // (measured: 3 anomalous frames of 300, in the one alarm that the
    // fault then raises again).
    let alarms = server.get("/api/v1/alarms?state=all");
    let alarm = alarms
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["detector"] == "autoencoder")
        .unwrap_or_else(|| panic!("no alarm: {alarms:#}"));
    assert!(sample_of(&alarm["last_seen_at"]) >= 990, "{alarm}");
    assert!(!alarm["top_signals"].as_array().unwrap().is_empty(), "{alarm}");
    let findings = server.get("/api/v1/findings?asset=reactor&limit=10000");
    let anomalous: Vec<&serde_json::Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["detector"] == "autoencoder" && f["anomalous"] == true)
        .collect();
    let in_fault: Vec<i64> = anomalous.iter().map(|f| sample_of(&f["ts"])).filter(|&s| s >= 801).collect();
    assert!(in_fault.len() >= 190, "{} of 200 faulty frames", in_fault.len());
    assert!(in_fault.iter().min().is_some_and(|&first| first <= 820), "{in_fault:?}");
    assert!(anomalous.len() - in_fault.len() <= 6, "{} anomalous normal frames", anomalous.len() - in_fault.len());
    for finding in &anomalous {
        let contributions = finding["contributions"].as_array().unwrap();
        assert_eq!(contributions.len(), 5, "the five signals reproduced worst: {finding}");
        let total: f64 = contributions.iter().map(|c| c["value"].as_f64().unwrap()).sum();
        assert!(total <= finding["score"].as_f64().unwrap() * (1.0 + 1e-9), "{finding}");
    }
    assert!(server.terminate().success());
}

#[test]
fn the_example_script_makes_the_committed_package_and_usan_accepts_it() {
    let Some(models) = models() else { return };
    let made = models.join("example-tep-autoencoder");
    assert!(made.join("model.onnx").is_file(), "`.ci/run` runs examples/onnx/train.py --out {}", made.display());
    let committed = example_package();
    for package in [&made, &committed] {
        let out = usan(&["model", "check", package.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", package.display(), stderr(&out));
        let lines = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(lines, "input X tensor(float) [?,52]\noutput variable tensor(float) [?,52]\n");
    }
    // The same data, the same pinned versions: the same manifest and goldens' inputs.
    for file in ["usan-model.toml", "golden/inputs.csv"] {
        let [a, b] = [&made, &committed].map(|p| std::fs::read_to_string(p.join(file)).unwrap());
        assert!(a == b, "{file} differs between the script's output and the committed package");
    }
}

#[test]
fn an_isolation_forest_score_and_a_forest_rul_model_run_live() {
    use crate::harness::Server;
    use std::time::Duration;
    let Some(models) = models() else { return };
    let dir = tempfile::tempdir().unwrap();
    let cmapss: Vec<String> = ["setting1", "setting2"]
        .iter()
        .map(|s| format!("\"{s}\""))
        .chain((1..=21).map(|i| format!("\"s{i}\"")))
        .collect();
    let engines: Vec<String> = [8, 24, 39].iter().map(|u| format!("engine-{u}")).collect();
    let mut text = format!(
        r#"
[store]
type = "sqlite"
path = "{dir}/live.db"
flush_interval = "100ms"

{tep_source}

{cmapss_source}
[[detectors]]
name = "forest"
algorithm = {{ type = "onnx", package = "{models}/skl_isolation_forest" }}

[[rul]]
name = "life"
model = "{models}/skl_random_forest_regressor"
alarm = {{ below = 30 }}

[[assets]]
id = "reactor"
signals = [{tep}]
detectors = ["forest"]
"#,
        dir = dir.path().display(),
        tep_source = tep_source(),
        cmapss_source = cmapss_source(),
        models = models.display(),
        tep = tep_signals()
    );
    for engine in &engines {
        text += &format!("\n[[assets]]\nid = \"{engine}\"\nsignals = [{}]\ndetectors = []\n", cmapss.join(", "));
    }
    let config = crate::harness::write_config(dir.path(), "live.toml", &text);
    let out = usan(&["check", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));

    let server = Server::serve(&config, &[]);
    server.wait_until("the replays are scored", Duration::from_secs(120), |s| {
        s.get("/api/v1/assets/reactor")["frames"].as_u64().unwrap() >= 1000
            && engines.iter().all(|e| s.get(&format!("/api/v1/assets/{e}"))["frames"].as_u64().unwrap() >= 128)
    });
    server.wait_until("and stored", Duration::from_secs(30), |s| {
        s.get_raw("/metrics").1.contains("usan_frames_stored_total")
            && crate::harness::metric_of(s, "usan_frames_stored_total") >= 1000.0 + 147.0 + 128.0 + 137.0
    });

    // IsolationForest's decision_function, negated: the fault scores higher.
    let reactor = server.get("/api/v1/assets/reactor");
    let forest = &reactor["detectors"][0];
    assert_eq!(forest["status"], "monitoring", "{forest}");
    assert_eq!(forest["model"]["name"], "skl_isolation_forest", "{forest}");
    let findings = server.get("/api/v1/findings?asset=reactor&limit=10000");
    let anomalous: Vec<i64> =
        findings.as_array().unwrap().iter().filter(|f| f["anomalous"] == true).map(|f| sample_of(&f["ts"])).collect();
    let in_fault = anomalous.iter().filter(|&&s| s >= 801).count();
    assert!(in_fault >= 100, "{in_fault} of 200 faulty frames flagged");
    assert!(in_fault * 4 >= anomalous.len() * 3, "most flags are in the fault: {anomalous:?}");

    // The forest's RUL falls as each engine runs to failure and its alarm
    // rule (estimate within 30 cycles) holds at the end.
    for engine in &engines {
        let asset = server.get(&format!("/api/v1/assets/{engine}"));
        let life = &asset["rul"][0];
        assert_eq!(life["model"]["name"], "skl_random_forest_regressor", "{life}");
        assert!(life["lower"].is_null() && life["coverage"] == 0.0, "a package gives no interval: {life}");
        let rul = life["rul"].as_f64().unwrap();
        assert!(rul < 40.0, "{engine} ends with RUL {rul}");
        assert_eq!(life["alarming"], true, "{life}");
    }
    assert!(server.terminate().success());
}

#[test]
fn a_quality_classifier_flags_the_parts_it_predicts_bad_with_the_scores_of_model_run() {
    use crate::harness::Server;
    use std::time::Duration;
    let Some(models) = models() else { return };
    let package = models.join("skl_hist_gradient_boosting_classifier_nan");
    let dir = tempfile::tempdir().unwrap();
    let data = repo().join("tests/data/secom/secom_sample.csv");
    let header = std::fs::read_to_string(&data).unwrap().lines().next().unwrap().to_string();
    let signals: Vec<String> = header.split(',').filter(|c| *c != "pass_fail").map(|c| format!("\"{c}\"")).collect();
    let text = format!(
        r#"
[store]
type = "sqlite"
path = "{dir}/fab.db"
flush_interval = "100ms"

[[sources]]
type = "file"
name = "secom"
path = "{data}"
asset = "fab"
period = "1s"
speed = "max"

[[detectors]]
name = "quality"
algorithm = {{ type = "onnx", package = "{package}" }}

[[assets]]
id = "fab"
signals = [{signals}]
"#,
        dir = dir.path().display(),
        data = data.display(),
        package = package.display(),
        signals = signals.join(", ")
    );
    let config = crate::harness::write_config(dir.path(), "fab.toml", &text);
    let server = Server::serve(&config, &[]);
    server.wait_until("every wafer is judged and stored", Duration::from_secs(120), |s| {
        crate::harness::metric_of(s, "usan_frames_stored_total") >= 800.0
    });
    let fab = server.get("/api/v1/assets/fab");
    let quality = &fab["detectors"][0];
    assert_eq!(quality["model"]["role"], "classifier", "{quality}");
    assert_eq!(quality["threshold"], 0.5, "{quality}");
    assert!(["-1", "1"].contains(&quality["label"].as_str().unwrap()), "{quality}");
    assert!(server.terminate().success());

    // The stored score of each wafer is the model's probability of a fail,
    // as `usan model run` gives it; a finding for each one above 0.5.
    let input = dir.path().join("x.csv");
    let body: Vec<String> =
        std::fs::read_to_string(&data).unwrap().lines().map(|l| l.rsplit_once(',').unwrap().0.to_string()).collect();
    std::fs::write(&input, body.join("\n") + "\n").unwrap();
    let output = dir.path().join("y.csv");
    let out = model_run(&package, &input, &output);
    assert!(out.status.success(), "{}", stderr(&out));
    let fail: Vec<f64> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    let db = crate::harness::open_store(&dir.path().join("fab.db"));
    let mut stmt = db.prepare("SELECT ts, score, anomalous FROM findings ORDER BY ts").unwrap();
    let findings: Vec<(i64, f64, bool)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    let expected: Vec<usize> = (0..fail.len()).filter(|&i| fail[i] > 0.5).collect();
    assert!(!expected.is_empty() && expected.len() < 400, "{} predicted fails", expected.len());
    let scores: Vec<f64> = findings.iter().map(|f| f.1).collect();
    let wanted: Vec<f64> = expected.iter().map(|&i| fail[i]).collect();
    assert_eq!(
        findings.len(),
        expected.len(),
        "one finding per predicted fail: {scores:?} vs {wanted:?} at {expected:?}"
    );
    let first_ts = findings.iter().map(|f| f.0).min().unwrap() - expected[0] as i64 * 1000;
    for ((ts, score, anomalous), &row) in findings.iter().zip(&expected) {
        assert_eq!((ts - first_ts) / 1000, row as i64, "the finding of wafer {row}");
        assert!((score - fail[row]).abs() <= 1e-6, "wafer {row}: {score} vs {}", fail[row]);
        assert!(anomalous, "each predicted fail is judged alone (k = n = 1)");
    }
}

#[test]
fn a_fitted_pca_exports_as_a_package_onnxruntime_scores_like_usan() {
    let dir = tempfile::tempdir().unwrap();
    let (fitted, package) = (dir.path().join("fitted"), dir.path().join("pca-package"));
    let out = usan(&[
        "fit",
        "--config",
        repo().join("examples/tep.toml").to_str().unwrap(),
        "--data",
        repo().join("tests/data/tep/tep_normal_then_idv1.csv").to_str().unwrap(),
        "--out",
        fitted.to_str().unwrap(),
        "--rows",
        "500",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let model = fitted.join("reactor/pca.json");
    let out = usan(&["model", "export", model.to_str().unwrap(), "--out", package.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = usan(&["model", "check", package.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "input frames tensor(double) [?,52]\noutput score tensor(double) [?,1]\noutput t2 tensor(double) [?,1]\noutput spe tensor(double) [?,1]\n"
    );

    // onnxruntime gives usan's own scores (the goldens) on the golden rows.
    let Some(python) = crate::harness::onnx_python("onnxruntime, numpy") else { return };
    let script = r#"
import csv, sys
import numpy as np
import onnxruntime as ort
folder = sys.argv[1]
rows = np.loadtxt(f"{folder}/golden/inputs.csv", delimiter=",", skiprows=1, ndmin=2)
expected = np.loadtxt(f"{folder}/golden/outputs.csv", delimiter=",", skiprows=1, ndmin=2)
session = ort.InferenceSession(f"{folder}/model.onnx", providers=["CPUExecutionProvider"])
got = np.hstack(session.run(None, {"frames": rows}))
expected = expected.reshape(got.shape)
worst = np.max(np.abs(got - expected) / (1e-12 + np.abs(expected)))
print(f"{len(rows)} rows, worst relative difference {worst:.3g}")
sys.exit(0 if worst < 1e-9 else 1)
"#;
    // An isolation forest fitted by usan: onnxruntime gives its scores too
    // (the path sums go through the ensemble's float output: 1e-6).
    let forest_config = crate::harness::write_config(
        dir.path(),
        "forest.toml",
        &std::fs::read_to_string(repo().join("examples/tep.toml"))
            .unwrap()
            .replace("path = \"../tests/", &format!("path = \"{}/tests/", repo().display()))
            .replace(
                "algorithm = { type = \"pca\", variance = 0.9, alpha = 0.999 }",
                "algorithm = { type = \"isolation_forest\", trees = 40, seed = 3 }",
            ),
    );
    let forest_fitted = dir.path().join("forest-fitted");
    let out = usan(&[
        "fit",
        "--config",
        forest_config.to_str().unwrap(),
        "--data",
        repo().join("tests/data/tep/tep_normal_then_idv1.csv").to_str().unwrap(),
        "--out",
        forest_fitted.to_str().unwrap(),
        "--rows",
        "500",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let forest_package = dir.path().join("forest-package");
    let out = usan(&[
        "model",
        "export",
        forest_fitted.join("reactor/pca.json").to_str().unwrap(),
        "--out",
        forest_package.to_str().unwrap(),
        "--name",
        "reactor-forest",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("isolation forest, 40 trees"), "{out:?}");
    let out = usan(&["model", "check", forest_package.to_str().unwrap()]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "input frames tensor(double) [?,52]\noutput score tensor(double) [?,1]\n"
    );
    let script = script.replace("worst < 1e-9", "worst < float(sys.argv[2])");
    for (package, tolerance) in [(&package, "1e-9"), (&forest_package, "1e-6")] {
        let out = std::process::Command::new(&python)
            .args(["-c", &script, package.to_str().unwrap(), tolerance])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    }

    // What cannot be exported says why.
    let mut text = std::fs::read_to_string(&model).unwrap();
    text = text.replace("\"type\": \"pca\"", "\"type\": \"pcb\"");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, text).unwrap();
    let err = refused(&["model", "export", bad.to_str().unwrap(), "--out", dir.path().join("x").to_str().unwrap()]);
    assert!(err.contains("not a usan model"), "{err}");
}

/// A windowed network shared by ten engines of one replay, on one worker:
/// however their frames are scored together (one model call for what is
/// queued across assets), each engine's stored score is the model's on
/// that engine's own last 20 frames, as `usan model run` gives it.
#[test]
fn a_windowed_package_shared_by_many_assets_scores_each_as_alone() {
    use crate::harness::Server;
    use std::collections::BTreeMap;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let signals =
        ["setting1", "s2", "s3", "s4", "s7", "s8", "s9", "s11", "s12", "s13", "s14", "s15", "s17", "s20", "s21"];
    let csv = repo().join("examples/data/cmapss_fd001_demo.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let columns: Vec<usize> = signals.iter().map(|s| header.iter().position(|h| h == s).unwrap()).collect();
    let mut engines: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let row = columns.iter().map(|&c| cells[c].parse::<f64>().unwrap()).collect();
        engines.entry(format!("engine-{}", cells[0])).or_default().push(row);
    }
    let all: Vec<&Vec<f64>> = engines.values().flatten().collect();
    let mean: Vec<f64> = (0..signals.len()).map(|j| all.iter().map(|r| r[j]).sum::<f64>() / all.len() as f64).collect();
    let scale: Vec<f64> = (0..signals.len())
        .map(|j| (all.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / all.len() as f64).sqrt() + 1e-6)
        .collect();

    let package = dir.path().join("lstm");
    std::fs::create_dir_all(&package).unwrap();
    std::fs::copy(networks().join("torch_dynamo_lstm/model.onnx"), package.join("model.onnx")).unwrap();
    let quoted = |names: &[&str]| names.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    let numbers = |v: &[f64]| v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
    std::fs::write(
        package.join("usan-model.toml"),
        format!(
            "format = 1\nname = \"cmapss-lstm\"\nrole = \"detector\"\nsignals = [{}]\nwindow = 20\n\
             [preprocessing]\ncenter = [{}]\nscale = [{}]\n[outputs]\nscore = \"linear\"\n",
            quoted(&signals),
            numbers(&mean),
            numbers(&scale)
        ),
    )
    .unwrap();
    let mut config = format!(
        r#"
[store]
type = "sqlite"
path = "{dir}/many.db"
flush_interval = "100ms"

[pipeline]
workers = 1

{cmapss_source}
[[detectors]]
name = "lstm"
algorithm = {{ type = "onnx", package = "{package}" }}
threshold = {{ value = 1e300 }}
"#,
        dir = dir.path().display(),
        cmapss_source = cmapss_source(),
        package = package.display(),
    );
    for engine in engines.keys() {
        config +=
            &format!("\n[[assets]]\nid = \"{engine}\"\nsignals = [{}]\ndetectors = [\"lstm\"]\n", quoted(&signals));
    }
    let config = crate::harness::write_config(dir.path(), "many.toml", &config);
    let frames = all.len();
    let server = Server::serve(&config, &[]);
    server.wait_until("every frame is stored", Duration::from_secs(120), |s| {
        crate::harness::metric_of(s, "usan_frames_stored_total") >= frames as f64
    });
    assert!(server.terminate().success());
    let out = dir.path().join("export");
    let export = usan(&["export", "--config", config.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert!(export.status.success(), "{}", stderr(&export));

    for (engine, rows) in &engines {
        // The model's input: each frame's last 20 standardised frames.
        let standard: Vec<Vec<f64>> =
            rows.iter().map(|r| r.iter().enumerate().map(|(j, v)| (v - mean[j]) / scale[j]).collect()).collect();
        let mut inputs = (0..20 * signals.len()).map(|i| format!("x{i}")).collect::<Vec<_>>().join(",") + "\n";
        for end in 20..=standard.len() {
            inputs += &standard[end - 20..end].iter().flatten().map(|v| format!("{v:?}")).collect::<Vec<_>>().join(",");
            inputs += "\n";
        }
        let input = dir.path().join(format!("{engine}-windows.csv"));
        std::fs::write(&input, inputs).unwrap();
        let output = dir.path().join(format!("{engine}-scores.csv"));
        let run = model_run(&package.join("model.onnx"), &input, &output);
        assert!(run.status.success(), "{}", stderr(&run));
        let expected: Vec<f64> =
            std::fs::read_to_string(&output).unwrap().lines().skip(1).map(|l| l.parse().unwrap()).collect();

        let stored = std::fs::read_to_string(out.join(format!("{engine}.csv"))).unwrap();
        let mut stored = stored.lines();
        let head: Vec<&str> = stored.next().unwrap().split(',').collect();
        let at = head.iter().position(|h| *h == "@score/lstm").unwrap_or_else(|| panic!("{head:?}"));
        let scores: Vec<&str> = stored.map(|l| l.split(',').nth(at).unwrap()).collect();
        assert_eq!(scores.len(), rows.len(), "{engine}: every frame stored");
        assert!(scores[..19].iter().all(|s| s.is_empty() || s.eq_ignore_ascii_case("nan")), "{engine}: {scores:?}");
        for (i, (got, want)) in scores[19..].iter().zip(&expected).enumerate() {
            let got: f64 = got.parse().unwrap_or_else(|_| panic!("{engine} frame {}: {got:?}", i + 20));
            assert!((got - want).abs() <= 1e-5 + 1e-4 * want.abs(), "{engine} frame {}: {got} vs {want}", i + 20);
        }
    }
}

#[test]
fn a_level_learned_on_the_baseline_is_taken_up_after_a_restart_until_the_basis_changes() {
    use crate::harness::Server;
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let config_with = |baseline: usize| {
        let text = format!(
            r#"{head}
[[detectors]]
name = "autoencoder"
algorithm = {{ type = "onnx", package = "{package}" }}
threshold = {{ quantile = 0.99 }}
baseline_frames = {baseline}

[[assets]]
id = "reactor"
signals = [{signals}]
detectors = ["autoencoder"]
"#,
            head = tep_plant(dir.path(), "levels.db"),
            package = example_package().display(),
            signals = tep_signals()
        );
        crate::harness::write_config(dir.path(), "levels.toml", &text)
    };
    let detector = |s: &Server| s.get("/api/v1/assets/reactor")["detectors"][0].clone();

    // The first run learns its level on the first 300 frames' scores.
    let server = Server::serve(&config_with(300), &[]);
    server.wait_until("all 1000 frames are scored and stored", Duration::from_secs(120), |s| {
        crate::harness::metric_of(s, "usan_frames_stored_total") >= 1000.0
    });
    let learned = detector(&server);
    assert_eq!(learned["status"], "monitoring", "{learned}");
    let level = learned["threshold"].as_f64().unwrap();
    assert!(server.terminate().success());

    // Restarted on the same store (the replay resumes after its last
    // frame: nothing new arrives), it monitors at once at that level.
    let server = Server::serve(&config_with(300), &[]);
    server.wait_until("the detector is up", Duration::from_secs(30), |s| {
        s.get_raw("/api/v1/assets/reactor").0 == 200 && detector(s)["status"].is_string()
    });
    let resumed = detector(&server);
    assert_eq!(resumed["status"], "monitoring", "{resumed}");
    let again = resumed["threshold"].as_f64().unwrap();
    assert!((again - level).abs() <= 1e-12 * level.abs(), "{again} after a restart, {level} learned");
    assert!(server.terminate().success());

    // Learned on another baseline, the level is not taken up: it learns anew.
    let server = Server::serve(&config_with(200), &[]);
    server.wait_until("the detector is up", Duration::from_secs(30), |s| {
        s.get_raw("/api/v1/assets/reactor").0 == 200 && detector(s)["status"].is_string()
    });
    let relearning = detector(&server);
    assert_eq!(relearning["status"], "learning", "{relearning}");
    assert_eq!(relearning["baseline_needed"], 200, "{relearning}");
    assert!(server.terminate().success());
}
