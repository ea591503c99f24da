//! The CSV formats of `usan model run` and of a package's golden vectors.
//!
//! Inputs: a header row (skipped: columns are taken by position), then one
//! row per model row with the input's values in order (`T × F` of them for a
//! `[N, T, F]` input, row-major); an empty cell or `NaN` (any case) is a
//! missing value. Outputs: a header (`<output>` for one value per row,
//! `<output>.<j>` for `[N, k]`, `<output>.<class>` for a ZipMap) and the
//! rows in input order; floats are written as the shortest text that reads
//! back to the same `f64` (an `f32` output widened: up to 17 significant
//! digits), labels as they are.

use crate::{OnnxError, Output, OutputValues};
use std::io::{Read, Write};

/// Rows read from an input CSV: their count and their values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    /// How many rows.
    pub count: usize,
    /// `count × width` values.
    pub values: Vec<f64>,
}

fn parse_cell(cell: &str, single: bool) -> Option<f64> {
    let cell = cell.trim();
    if cell.is_empty() || cell.eq_ignore_ascii_case("nan") {
        return Some(f64::NAN);
    }
    if single { cell.parse::<f32>().ok().map(f64::from) } else { cell.parse::<f64>().ok() }
}

/// Reads input rows of `width` values each. `single` parses each value as
/// an `f32` directly (what a float model is fed), not via `f64`.
///
/// # Errors
/// A row with another number of columns (naming expected and found), or a
/// cell that is not a number.
pub fn read_rows(source: impl Read, width: usize, single: bool) -> Result<Rows, OnnxError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(source);
    let mut values = Vec::new();
    let mut count = 0;
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| OnnxError::Input(format!("input CSV: {e}")))?;
        let line = i + 2;
        if record.len() != width {
            return Err(OnnxError::Input(format!(
                "input CSV line {line} has {} columns; the model takes {width} values per row",
                record.len()
            )));
        }
        for (j, cell) in record.iter().enumerate() {
            let v = parse_cell(cell, single).ok_or_else(|| {
                OnnxError::Input(format!("input CSV line {line} column {}: {cell:?} is not a number", j + 1))
            })?;
            values.push(v);
        }
        count += 1;
    }
    Ok(Rows { count, values })
}

/// A float as the output CSV writes it.
pub fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".to_string() } else { "-inf".to_string() }
    } else {
        format!("{v:?}")
    }
}

/// The output CSV's cells for row `r` of `output`.
fn cells(output: &Output, r: usize) -> Vec<String> {
    let k = output.columns.len();
    let range = r * k..(r + 1) * k;
    match &output.values {
        OutputValues::Float(v) => v[range].iter().map(|&x| float_text(x)).collect(),
        OutputValues::Int(v) => v[range].iter().map(ToString::to_string).collect(),
        OutputValues::Text(v) => v[range].to_vec(),
    }
}

/// Writes the outputs of `rows` rows as CSV.
///
/// # Errors
/// When writing fails.
pub fn write_outputs(sink: impl Write, outputs: &[Output], rows: usize) -> std::io::Result<()> {
    let mut writer = csv::Writer::from_writer(sink);
    let header: Vec<String> = outputs.iter().flat_map(Output::header).collect();
    writer.write_record(&header)?;
    for r in 0..rows {
        let row: Vec<String> = outputs.iter().flat_map(|o| cells(o, r)).collect();
        writer.write_record(&row)?;
    }
    writer.flush()
}

/// The tolerances a model's outputs must meet against its goldens.
pub const RTOL: f64 = 1e-4;
/// See [`RTOL`].
pub const ATOL: f64 = 1e-5;

/// The worst difference between outputs and goldens.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Output column (`<output>` or `<output>.<j>`).
    pub column: String,
    /// Row, from 1.
    pub row: usize,
    /// The golden value.
    pub expected: String,
    /// usan's value.
    pub got: String,
    /// How far over the tolerance (`|a - b| / (atol + rtol |b|)`; infinite for labels).
    pub excess: f64,
}

/// How outputs compare with goldens.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// Rows compared.
    pub rows: usize,
    /// Values compared.
    pub values: usize,
    /// The largest `|a - b| / (atol + rtol |b|)` over the floats (≤ 1 passes).
    pub worst_ratio: f64,
    /// The worst value outside the tolerance, if any.
    pub mismatch: Option<Mismatch>,
}

/// Compares `outputs` (of `rows` rows) with a golden CSV in the output
/// format: floats within [`ATOL`] + [`RTOL`] × |golden| (NaN equals NaN),
/// labels exactly.
///
/// # Errors
/// A golden file whose header or row count differs from the outputs'.
pub fn compare(outputs: &[Output], rows: usize, golden: impl Read) -> Result<Comparison, OnnxError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(golden);
    let header: Vec<String> = outputs.iter().flat_map(Output::header).collect();
    let golden_header: Vec<String> = reader
        .headers()
        .map_err(|e| OnnxError::Input(format!("golden outputs: {e}")))?
        .iter()
        .map(str::to_string)
        .collect();
    if header != golden_header {
        return Err(OnnxError::Input(format!(
            "golden outputs have columns [{}] but the model gives [{}]",
            golden_header.join(","),
            header.join(",")
        )));
    }
    let mut comparison = Comparison { rows: 0, values: 0, worst_ratio: 0.0, mismatch: None };
    for (r, record) in reader.records().enumerate() {
        let record = record.map_err(|e| OnnxError::Input(format!("golden outputs: {e}")))?;
        if r >= rows {
            return Err(OnnxError::Input(format!("golden outputs have more rows than the {rows} inputs")));
        }
        let ours: Vec<String> = outputs.iter().flat_map(|o| cells(o, r)).collect();
        let kinds: Vec<bool> = outputs
            .iter()
            .flat_map(|o| std::iter::repeat_n(matches!(o.values, OutputValues::Float(_)), o.columns.len()))
            .collect();
        for (j, expected) in record.iter().enumerate() {
            let got = &ours[j];
            let excess = if kinds[j] {
                let (a, b) = (parse_cell(got, false).unwrap_or(f64::NAN), parse_cell(expected, false));
                match b {
                    Some(b) if a.is_nan() && b.is_nan() => 0.0,
                    Some(b) if a == b => 0.0,
                    Some(b) => {
                        let ratio = (a - b).abs() / (ATOL + RTOL * b.abs());
                        if ratio.is_nan() { f64::INFINITY } else { ratio }
                    }
                    None => f64::INFINITY,
                }
            } else if got == expected {
                0.0
            } else {
                f64::INFINITY
            };
            comparison.values += 1;
            if kinds[j] && excess.is_finite() {
                comparison.worst_ratio = comparison.worst_ratio.max(excess);
            }
            if excess > 1.0 && comparison.mismatch.as_ref().is_none_or(|m| excess > m.excess) {
                comparison.mismatch = Some(Mismatch {
                    column: header[j].clone(),
                    row: r + 1,
                    expected: expected.to_string(),
                    got: got.clone(),
                    excess,
                });
            }
        }
        comparison.rows += 1;
    }
    if comparison.rows != rows {
        return Err(OnnxError::Input(format!("golden outputs have {} rows for {rows} inputs", comparison.rows)));
    }
    Ok(comparison)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(name: &str, columns: &[&str], values: OutputValues) -> Output {
        Output { name: name.into(), columns: columns.iter().map(|c| c.to_string()).collect(), values }
    }

    #[test]
    fn inputs_are_read_by_position_with_missing_values() {
        let csv = "a,b\n1.5,\n nan ,NaN\n2,3\n";
        let rows = read_rows(csv.as_bytes(), 2, true).expect("rows");
        assert_eq!(rows.count, 3);
        assert_eq!(rows.values[0], 1.5);
        assert!(rows.values[1].is_nan() && rows.values[2].is_nan() && rows.values[3].is_nan());
        let err = read_rows("a,b\n1,2,3\n".as_bytes(), 2, true).expect_err("3 columns");
        assert_eq!(err.to_string(), "input CSV line 2 has 3 columns; the model takes 2 values per row");
        let err = read_rows("a\nx\n".as_bytes(), 1, true).expect_err("not a number");
        assert!(err.to_string().contains("\"x\" is not a number"), "{err}");
    }

    #[test]
    fn outputs_are_written_one_column_per_element() {
        let outputs = [
            output("label", &[""], OutputValues::Text(vec!["pump".into(), "fan".into()])),
            output("p", &["0", "1"], OutputValues::Float(vec![0.25, 0.75, f64::from(0.1f32), f64::NAN])),
        ];
        let mut out = Vec::new();
        write_outputs(&mut out, &outputs, 2).expect("write");
        assert_eq!(
            String::from_utf8(out).expect("utf8"),
            "label,p.0,p.1\npump,0.25,0.75\nfan,0.10000000149011612,NaN\n"
        );
    }

    #[test]
    fn goldens_pass_within_tolerance_and_name_the_worst_miss() {
        let outputs = [
            output("y", &[""], OutputValues::Float(vec![1.0, 100.0, f64::NAN])),
            output("label", &[""], OutputValues::Int(vec![1, 0, 1])),
        ];
        let pass = compare(&outputs, 3, "y,label\n1.00001,1\n100.005,0\nNaN,1\n".as_bytes()).expect("compare");
        assert!(pass.mismatch.is_none(), "{pass:?}");
        assert!(pass.worst_ratio <= 1.0 && pass.worst_ratio > 0.0);
        let fail = compare(&outputs, 3, "y,label\n1.1,1\n100,1\nNaN,1\n".as_bytes()).expect("compare");
        let worst = fail.mismatch.expect("a mismatch");
        assert_eq!((worst.column.as_str(), worst.row), ("label", 2), "a wrong label is worse than any float");
        let err = compare(&outputs, 3, "y\n1\n".as_bytes()).expect_err("other columns");
        assert!(err.to_string().contains("golden outputs have columns [y]"), "{err}");
    }
}
