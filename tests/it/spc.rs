//! `usan spc`: control charts of a CSV column, as a quality engineer runs them.

use crate::harness::*;
use serde_json::Value;

fn spc_json(file: &std::path::Path, args: &[&str]) -> Value {
    let mut all = vec!["spc", file.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    let out = usan(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn spc_error(file: &std::path::Path, args: &[&str]) -> String {
    let mut all = vec!["spc", file.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = usan(&all);
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn xbar_r_by_subgroup_column_matches_hand_computed_limits() {
    let dir = tempfile::tempdir().unwrap();
    // Subgroups of 3 (batches a..e): means 2, 5, 3, 4, 6 → X̄̄ = 4; ranges 2, 2, 4, 2, 0 → R̄ = 2.
    // n = 3: A2 = 1.023, D4 = 2.574 → X̄ 4 ± 2.046; R 0 .. 5.148 (published table values).
    let rows =
        ["a,1", "a,2", "a,3", "b,4", "b,5", "b,6", "c,1", "c,3", "c,5", "d,3", "d,4", "d,5", "e,6", "e,6", "e,6"];
    let file = write_config(dir.path(), "parts.csv", &format!("batch;width\n{}\n", rows.join("\n").replace(',', ";")));
    let json = spc_json(&file, &["--column", "width", "--chart", "xbar-r", "--subgroup-column", "batch"]);
    assert_eq!(json["chart"], "xbar-r");
    assert_eq!(json["points"], 5);
    let xbar = &json["series"][0];
    assert_eq!(xbar["name"], "xbar");
    assert!((xbar["centre"].as_f64().unwrap() - 4.0).abs() < 1e-12);
    assert!((xbar["upper"].as_f64().unwrap() - 6.046).abs() < 1e-3, "{xbar}");
    assert!((json["series"][1]["upper"].as_f64().unwrap() - 5.148).abs() < 2e-3);
    assert_eq!(json["violations"], Value::Array(vec![]));
}

#[test]
fn violations_are_listed_with_rule_and_zero_based_index() {
    let dir = tempfile::tempdir().unwrap();
    // 30 values alternating 10 ± 0.1, then one at 11 (index 30): far beyond 3σ (σ = MR̄/d2 ≈ 0.18).
    let mut text = String::from("x\n");
    for i in 0..30 {
        text += &format!("{}\n", if i % 2 == 0 { 10.1 } else { 9.9 });
    }
    text += "11\n";
    let file = write_config(dir.path(), "x.csv", &text);
    let json = spc_json(&file, &["--column", "x", "--rules", "we"]);
    let violations = json["violations"].as_array().unwrap();
    assert!(violations.iter().any(|v| v["rule"] == "we1" && v["index"] == 30 && v["series"] == "i"), "{violations:?}");
    assert!(violations.iter().all(|v| v["rule"].as_str().unwrap().starts_with("we")));
    // 14 alternating values: Nelson 4 fires at index 13.
    let nelson = spc_json(&file, &["--column", "x", "--rules", "nelson"]);
    let alternating: Vec<u64> = nelson["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["rule"] == "nelson4")
        .map(|v| v["index"].as_u64().unwrap())
        .collect();
    assert_eq!(alternating.first(), Some(&13));
}

#[test]
fn p_chart_limits_vary_per_point_and_capability_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "p.csv", "defective,inspected\n2,100\n3,100\n1,50\n4,100\n2,80\n");
    let json = spc_json(&file, &["--column", "defective", "--chart", "p", "--subgroup-column", "inspected"]);
    let limits = json["series"][0]["limits"].as_array().unwrap();
    assert_eq!(limits.len(), 5);
    assert_ne!(limits[0]["upper"], limits[2]["upper"], "a smaller sample has wider limits");

    let mut text = String::from("d\n");
    let mut g = usan_core::stats::SeededNormal::new(4);
    for _ in 0..50 {
        text += &format!("{:.4}\n", 10.0 + 0.1 * g.normal());
    }
    let file = write_config(dir.path(), "d.csv", &text);
    let json = spc_json(&file, &["--column", "d", "--spec", "9.5,10.5"]);
    let capability = &json["capability"];
    for index in ["cp", "cpk", "pp", "ppk", "cpm"] {
        let i = &capability[index];
        assert!(i["lower"].as_f64().unwrap() < i["value"].as_f64().unwrap(), "{index}: {i}");
    }
    assert!(capability["normality"]["p_value"].as_f64().unwrap() > 0.05, "normal data: {capability}");
    let one_sided = spc_json(&file, &["--column", "d", "--spec", ",10.5"]);
    assert!(one_sided["capability"]["cp"].is_null());
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_config(dir.path(), "bad.csv", "x,y\n1,2\n2,oops\n3,4\n");
    assert!(spc_error(&file, &["--column", "y"]).contains("line 3: y = \"oops\" is not a number"));
    assert!(spc_error(&file, &["--column", "z"]).contains("no column \"z\""));
    let file = write_config(dir.path(), "ok.csv", "x\n1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n");
    assert!(spc_error(&file, &["--column", "x", "--spec", "9,1"]).contains("reversed"));
    assert!(spc_error(&file, &["--column", "x", "--chart", "xbar-r", "--subgroup", "3"]).contains("must not vary"));
    assert!(spc_error(&file, &["--column", "x", "--chart", "xbar-r"]).contains("needs subgroups"));
    let few = write_config(dir.path(), "few.csv", "x\n1\n2\n");
    assert!(spc_error(&few, &["--column", "x"]).contains("at least 3 values"));
    let groups = write_config(dir.path(), "g.csv", "g,x\na,1\na,2\nb,3\nb,4\nb,5\n");
    let message = spc_error(&groups, &["--column", "x", "--chart", "xbar-s", "--subgroup-column", "g"]);
    assert!(message.contains("subgroup sizes vary"), "{message}");
    // Empty cells are missing measurements: skipped and counted, not zeros.
    let gaps = write_config(dir.path(), "gaps.csv", "x,y\n1,0\n,0\n2,0\n3,0\n");
    let json = spc_json(&gaps, &["--column", "x"]);
    assert_eq!(json["missing_values_skipped"], 1);
    assert_eq!(json["points"], 3);
}

#[test]
fn the_report_is_one_self_contained_page_with_charts_violations_and_capability() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("when,<b>width</b>\n");
    let mut g = usan_core::stats::SeededNormal::new(6);
    for i in 0..60 {
        let shift = if i == 45 { 1.0 } else { 0.0 };
        text += &format!("{i},{:.4}\n", 10.0 + 0.1 * g.normal() + shift);
    }
    let file = write_config(dir.path(), "w.csv", &text);
    let report = dir.path().join("report.html");
    let out = usan(&[
        "spc",
        file.to_str().unwrap(),
        "--column",
        "<b>width</b>",
        "--spec",
        "9.5,10.5",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    assert_eq!(html.matches("<svg").count(), 3, "I chart, MR chart, histogram");
    assert!(html.contains("&lt;b&gt;width&lt;/b&gt;") && !html.contains("<b>width</b>"), "names are escaped");
    assert!(
        !html.contains("<script") && !html.contains("http://") && !html.contains("https://"),
        "no script, no network"
    );
    assert!(html.contains("nelson1") && html.contains("<td>45</td>"), "the shifted point is listed");
    for index in ["Cpk", "Ppk", "Cpm", "Anderson"] {
        assert!(html.contains(index), "{index}");
    }
    assert!(html.contains("LSL 9.5000") && html.contains("USL 10.5000"));

    // It renders in headless Chromium with the network refused, without errors.
    let Some(python) = browser() else { return };
    let artifacts = artifacts("spc-report");
    let rendered = run_browser(&python, &["report", report.to_str().unwrap(), artifacts.to_str().unwrap()]);
    assert_eq!(rendered["errors"], serde_json::json!([]), "{rendered}");
    assert_eq!(rendered["requests"], serde_json::json!([]), "the report asked the network: {rendered}");
    let svgs = rendered["svgs"].as_array().unwrap();
    assert_eq!(svgs.len(), 3, "{rendered}");
    for svg in svgs {
        assert!(svg["width"].as_f64().unwrap() > 200.0 && svg["height"].as_f64().unwrap() > 100.0, "{svg}");
        assert!(svg["marks"].as_u64().unwrap() >= 4, "a chart: its data and limit lines or bars: {svg}");
    }
    assert!(rendered["title"].as_str().unwrap().contains("width"), "{rendered}");
    assert!(artifacts.join("spc-report.png").exists());
}

#[test]
fn hotelling_t2_flags_a_broken_correlation_and_names_the_characteristics() {
    let dir = tempfile::tempdir().unwrap();
    let mut g = usan_core::stats::SeededNormal::new(12);
    let mut text = String::from("temp,pressure,flow\n");
    for i in 0..120 {
        let common = g.normal();
        let (mut t, mut p) = (50.0 + common + 0.2 * g.normal(), 5.0 + 0.5 * common + 0.1 * g.normal());
        if i == 100 {
            // Each within 1.5σ of its mean, but temperature up while pressure is down.
            (t, p) = (51.5, 4.3);
        }
        text += &format!("{t:.3},{p:.3},{:.3}\n", 20.0 + g.normal());
    }
    let file = write_config(dir.path(), "t2.csv", &text);
    let json = spc_json(&file, &["--column", "temp,pressure,flow", "--chart", "t2", "--baseline", "90"]);
    assert_eq!(json["chart"], "t2");
    let violations = json["violations"].as_array().unwrap();
    assert_eq!(
        violations.iter().map(|v| v["index"].as_u64().unwrap()).collect::<Vec<_>>(),
        vec![100],
        "{violations:?}"
    );
    let parts: Vec<f64> =
        json["series"][0]["contributions"][100].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert!(parts[0] > parts[2] && parts[1] > parts[2], "temperature and pressure, not flow: {parts:?}");
    let limits = json["series"][0]["limits"].as_array().unwrap();
    assert!(limits[100]["upper"].as_f64() > limits[0]["upper"].as_f64(), "Phase II limit above Phase I's");
    assert!(spc_error(&file, &["--column", "temp", "--chart", "t2"]).contains("two or more columns"));
}
