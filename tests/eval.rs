//! `usan eval`: the benchmark protocols on the small samples shipped in
//! `tests/data`, laid out as the full benchmarks are.

mod common;

use common::*;

/// The TEP sample, cut into the benchmark's files: d00.dat (transposed, as
/// upstream), d00_te.dat and a fault run d01.dat.
fn tep_folder(dir: &std::path::Path) {
    let text = std::fs::read_to_string(repo().join("tests/data/tep/tep_normal_then_idv1.csv")).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().skip(1).map(|l| l.split(',').skip(2).collect()).collect();
    let write = |name: &str, rows: &[Vec<&str>]| {
        let body: String = rows.iter().map(|r| format!("  {}\n", r.join("  "))).collect();
        std::fs::write(dir.join(name), body).unwrap();
    };
    let transposed: Vec<Vec<&str>> = (0..52).map(|j| rows[..500].iter().map(|r| r[j]).collect()).collect();
    write("d00.dat", &transposed);
    write("d00_te.dat", &rows[500..800]);
    write("d01.dat", &rows[800..1000]);
}

#[test]
fn eval_tep_writes_the_scorer_layout_and_separates_fault_from_normal() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    tep_folder(data.path());
    let result = usan(&["eval", "tep", data.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&result.stderr));
    assert!(stdout.contains("development mode"), "{stdout}");
    assert!(stdout.contains("[tep.algorithm]"), "prints its settings: {stdout}");
    assert!(stdout.contains("wall time"), "{stdout}");

    let alarms = |name: &str| -> Vec<u8> {
        let text = std::fs::read_to_string(out.path().join(name)).unwrap();
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("sample,alarm,t2,spe"));
        lines
            .enumerate()
            .map(|(i, l)| {
                let cells: Vec<&str> = l.split(',').collect();
                assert_eq!(cells[0], (i + 1).to_string());
                cells[1].parse().unwrap()
            })
            .collect()
    };
    let normal = alarms("d00_te.csv");
    let fault = alarms("d01.csv");
    assert_eq!((normal.len(), fault.len()), (300, 200));
    let rate = |a: &[u8]| a.iter().map(|x| f64::from(*x)).sum::<f64>() / a.len() as f64;
    assert!(rate(&normal) <= 0.05, "false-alarm rate {}", rate(&normal));
    assert!(rate(&fault[20..]) >= 0.95, "IDV1 detection rate {}", rate(&fault[20..]));
}

#[test]
fn eval_tep_refuses_bad_files_and_settings_clearly() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    tep_folder(data.path());
    std::fs::write(data.path().join("d02.dat"), "1 2 3\n4 5 x\n").unwrap();
    let result = usan(&["eval", "tep", data.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(stderr.contains("d02.dat: line 2"), "{stderr}");

    std::fs::remove_file(data.path().join("d02.dat")).unwrap();
    let settings = data.path().join("settings.toml");
    std::fs::write(&settings, "[tep.algorithm]\ntype = \"pca\"\nsmoothing = 5\n[tep.threshold]\nvalue = 1.0\n")
        .unwrap();
    let result = usan(&[
        "eval",
        "tep",
        data.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
        "--settings",
        settings.to_str().unwrap(),
    ]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("needs limits = \"empirical\""));

    let empty = tempfile::tempdir().unwrap();
    let result = usan(&["eval", "tep", empty.path().to_str().unwrap(), "--out", out.path().to_str().unwrap()]);
    assert!(!result.status.success());
    assert!(String::from_utf8_lossy(&result.stderr).contains("d00.dat"));
}
