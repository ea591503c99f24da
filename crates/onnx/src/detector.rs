//! A package as a detector: what turns a model's outputs into usan's
//! scores. The manifest says which signals feed the model, what to do to
//! them first (centre, scale, fill gaps), how many frames make a row, and
//! which output is the score or the reconstruction; [`Scorer`] applies all
//! of it to an asset's frames, many frames per model call, and gives each
//! scored frame its value and per-signal contributions the way usan's own
//! PCA does (squared residuals that sum to the score).
//!
//! One [`Scorer`] serves every asset that runs the package; each asset
//! keeps its own [`Stream`] (the held values and the window of frames).

use crate::manifest::{Direction, Manifest, Missing, Role};
use crate::{Model, OnnxError, OutputValues};
use std::collections::VecDeque;

/// How the model's outputs make a score.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Outputs {
    /// Index of the score output, and whether to negate it.
    score: Option<(usize, bool)>,
    /// Index of the per-signal reconstruction output.
    reconstruction: Option<usize>,
    /// A classifier's outputs.
    classify: Option<Classify>,
}

/// A classifier's label output and, when it has one, its probability
/// output with, per column, whether the class is a good one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Classify {
    label: usize,
    probabilities: Option<(usize, Vec<bool>)>,
    normal: Vec<String>,
}

/// A detector or RUL model with its manifest, ready to score frames (for a
/// RUL model the "score" is the remaining life, without contributions).
#[derive(Clone, Debug)]
pub struct Scorer {
    model: Model,
    manifest: Manifest,
    outputs: Outputs,
}

/// One asset's state between batches: the last value of each signal (for
/// `missing = "hold"`) and the latest frames (for windowed models).
#[derive(Clone, Debug, Default)]
pub struct Stream {
    held: Vec<f64>,
    window: VecDeque<Vec<f64>>,
}

/// A scored frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// Higher is more anomalous.
    pub value: f64,
    /// Per manifest signal, its share of the score (squared residuals for
    /// reconstruction models; empty for a model that gives only a score).
    pub contributions: Vec<f64>,
    /// A classifier's predicted class.
    pub label: Option<String>,
}

impl Scorer {
    /// A detector or RUL model from a model and its manifest.
    ///
    /// # Errors
    /// [`OnnxError::Manifest`] when the manifest is a classifier's or does
    /// not fit the model.
    pub fn new(model: Model, manifest: Manifest) -> Result<Self, OnnxError> {
        let mut problems = manifest.problems(model.inspection(), model.input_width());
        let ports = &model.inspection().signature.outputs;
        let index = |name: &Option<String>| name.as_ref().and_then(|n| ports.iter().position(|p| &p.name == n));
        let o = &manifest.outputs;
        let outputs = match manifest.role {
            // A remaining life is the value, as it is.
            Role::Rul => Outputs { score: index(&o.rul).map(|i| (i, false)), reconstruction: None, classify: None },
            Role::Detector => Outputs {
                score: index(&o.score).map(|i| (i, o.score_higher_is == Direction::Normal)),
                reconstruction: index(&o.reconstruction),
                classify: None,
            },
            Role::Classifier => {
                if o.normal.is_empty() {
                    problems.push("a classifier in the pipeline needs outputs.normal: its good classes".into());
                }
                let probabilities = o.probabilities.as_ref().and_then(|name| {
                    let i = index(&o.probabilities)?;
                    let columns = model.inspection().zipmap_classes.get(name).cloned().unwrap_or(o.classes.clone());
                    let width = match ports[i].value.dims() {
                        Some([_, crate::Dim::Fixed(w)]) => Some(*w as usize),
                        _ => None,
                    };
                    if columns.is_empty() || width.is_some_and(|w| w != columns.len()) {
                        problems.push(format!(
                            "outputs.probabilities {name} has {} columns; outputs.classes names {}",
                            width.map_or("unknown".to_string(), |w| w.to_string()),
                            o.classes.len()
                        ));
                    }
                    for class in &o.normal {
                        if !columns.contains(class) {
                            problems.push(format!("outputs.normal names class {class}, not one of the model's"));
                        }
                    }
                    Some((i, columns.iter().map(|c| o.normal.contains(c)).collect()))
                });
                let classify = index(&o.label).map(|label| Classify { label, probabilities, normal: o.normal.clone() });
                Outputs { score: None, reconstruction: None, classify }
            }
        };
        if !problems.is_empty() {
            return Err(OnnxError::Manifest(problems));
        }
        Ok(Self { model, manifest, outputs })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The signals it reads, in order.
    pub fn signals(&self) -> &[String] {
        &self.manifest.signals
    }

    /// Scores of model rows as the graph takes them (preprocessing done):
    /// the package's golden inputs, for a threshold set on them.
    ///
    /// # Errors
    /// A value count that is not a whole number of rows, or a run failure.
    pub fn score_model_rows(&self, rows: usize, values: &[f64]) -> Result<Vec<Option<Scored>>, OnnxError> {
        let outputs = self.model.run(rows, values)?;
        let width = self.model.input_width();
        let signals = self.manifest.signals.len();
        let float = |i: usize| match outputs.get(i).map(|o| &o.values) {
            Some(OutputValues::Float(v)) => Ok(v.as_slice()),
            _ => Err(OnnxError::Run(format!("output {i} is not a float tensor"))),
        };
        if let Some(classify) = &self.outputs.classify {
            return classified(classify, &outputs, rows);
        }
        let score = self.outputs.score.map(|(i, negate)| float(i).map(|v| (v, negate))).transpose()?;
        let reconstruction = self.outputs.reconstruction.map(float).transpose()?;
        let mut scored = Vec::with_capacity(rows);
        for r in 0..rows {
            // The frame a reconstruction is of: the row's last `signals` values.
            let frame = &values[(r + 1) * width - signals..(r + 1) * width];
            let contributions = reconstruction.map(|rec| {
                rec[r * signals..(r + 1) * signals]
                    .iter()
                    .zip(frame)
                    .map(|(y, x)| if (x - y).is_nan() { f64::NAN } else { (x - y) * (x - y) })
                    .collect::<Vec<f64>>()
            });
            let residual = contributions.as_ref().map(|c| {
                let usable: Vec<f64> = c.iter().copied().filter(|v| !v.is_nan()).collect();
                (!usable.is_empty()).then(|| usable.iter().sum::<f64>())
            });
            let value = match (score, residual) {
                (Some((v, negate)), _) => Some(if negate { -v[r] } else { v[r] }),
                (None, Some(residual)) => residual,
                (None, None) => None,
            };
            let Some(value) = value.filter(|v| !v.is_nan()) else {
                scored.push(None);
                continue;
            };
            let contributions = match (contributions, residual.flatten()) {
                // A score output explained by the reconstruction: shares of it.
                (Some(c), Some(total)) if score.is_some() && total > 0.0 => {
                    c.iter().map(|v| if v.is_nan() { 0.0 } else { v / total * value.max(0.0) }).collect()
                }
                (Some(c), _) => c.iter().map(|v| if v.is_nan() { 0.0 } else { *v }).collect(),
                (None, _) => Vec::new(),
            };
            scored.push(Some(Scored { value, contributions, label: None }));
        }
        Ok(scored)
    }

    /// Scores an asset's frames in order, in one model call: each frame
    /// holds the manifest's signals in its order (NaN when missing).
    /// A frame gets `None` while the window fills, when `missing = "skip"`
    /// (or `"hold"` before a value was seen) leaves it out, or when the
    /// model gives no usable score.
    ///
    /// # Errors
    /// A frame of another width, or a run failure.
    pub fn score(&self, stream: &mut Stream, frames: &[Vec<f64>]) -> Result<Vec<Option<Scored>>, OnnxError> {
        let prepared = self.prepare(stream, frames)?;
        let mut scored = self.score_prepared(std::slice::from_ref(&prepared))?;
        Ok(scored.pop().unwrap_or_default())
    }

    /// The model rows of an asset's frames (see [`score`](Self::score)),
    /// advancing its stream: many assets' rows then go into one model call
    /// ([`score_prepared`](Self::score_prepared)). Prepare an asset's
    /// batches in their order.
    ///
    /// # Errors
    /// A frame of another width.
    pub fn prepare(&self, stream: &mut Stream, frames: &[Vec<f64>]) -> Result<Prepared, OnnxError> {
        let p = &self.manifest.preprocessing;
        let signals = self.manifest.signals.len();
        let window = self.manifest.window.max(1);
        let mut prepared = Prepared::default();
        prepared.row_of.reserve(frames.len());
        for frame in frames {
            if frame.len() != signals {
                return Err(OnnxError::Input(format!("frame has {} values, the model reads {signals}", frame.len())));
            }
            let mut x: Vec<f64> = frame
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let centred = v - p.center.get(j).copied().unwrap_or(0.0);
                    centred / p.scale.get(j).copied().unwrap_or(1.0)
                })
                .collect();
            let usable = match p.missing {
                Missing::Pass => true,
                Missing::Skip => !x.iter().any(|v| v.is_nan()),
                Missing::Hold => {
                    stream.held.resize(signals, f64::NAN);
                    for (v, held) in x.iter_mut().zip(stream.held.iter_mut()) {
                        if v.is_nan() {
                            *v = *held;
                        } else {
                            *held = *v;
                        }
                    }
                    !x.iter().any(|v| v.is_nan())
                }
            };
            if !usable {
                prepared.row_of.push(None);
                continue;
            }
            if stream.window.len() == window {
                stream.window.pop_front();
            }
            stream.window.push_back(x);
            if stream.window.len() < window {
                prepared.row_of.push(None);
                continue;
            }
            for f in &stream.window {
                prepared.values.extend_from_slice(f);
            }
            prepared.row_of.push(Some(prepared.rows));
            prepared.rows += 1;
        }
        Ok(prepared)
    }

    /// Scores prepared batches (of one asset or many) in one model call:
    /// per batch, each frame's score as [`score`](Self::score) gives it.
    ///
    /// # Errors
    /// A run failure (it fails every batch of the call).
    pub fn score_prepared(&self, batches: &[Prepared]) -> Result<Vec<Vec<Option<Scored>>>, OnnxError> {
        let rows: usize = batches.iter().map(|b| b.rows).sum();
        if rows == 0 {
            return Ok(batches.iter().map(|b| vec![None; b.row_of.len()]).collect());
        }
        let mut scored = if let [only] = batches {
            self.score_model_rows(only.rows, &only.values)?
        } else {
            let mut values = Vec::with_capacity(rows * self.model.input_width());
            for b in batches {
                values.extend_from_slice(&b.values);
            }
            self.score_model_rows(rows, &values)?
        };
        let mut first = 0;
        Ok(batches
            .iter()
            .map(|b| {
                let out = b.row_of.iter().map(|r| r.and_then(|r| scored[first + r].take())).collect();
                first += b.rows;
                out
            })
            .collect())
    }
}

/// One asset's frames made into model rows ([`Scorer::prepare`]).
#[derive(Clone, Debug, Default)]
pub struct Prepared {
    /// The model rows, row-major.
    values: Vec<f64>,
    /// The number of model rows.
    rows: usize,
    /// For each frame, the model row that scores it.
    row_of: Vec<Option<usize>>,
}

impl Prepared {
    /// How many frames it holds.
    pub fn frames(&self) -> usize {
        self.row_of.len()
    }

    /// How many model rows it holds (frames that are scored).
    pub fn rows(&self) -> usize {
        self.rows
    }
}

/// A classifier's rows: the probability of not being a good class (from
/// the probabilities when the model gives them, else 0 or 1 from the label)
/// and the label.
fn classified(classify: &Classify, outputs: &[crate::Output], rows: usize) -> Result<Vec<Option<Scored>>, OnnxError> {
    let labels: Vec<String> = match outputs.get(classify.label).map(|o| &o.values) {
        Some(OutputValues::Text(v)) => v.clone(),
        Some(OutputValues::Int(v)) => v.iter().map(ToString::to_string).collect(),
        Some(OutputValues::Float(v)) => v.iter().map(|f| format!("{f}")).collect(),
        None => return Err(OnnxError::Run("the label output is missing".into())),
    };
    let probabilities = match classify.probabilities.as_ref() {
        Some((i, normal)) => match outputs.get(*i).map(|o| &o.values) {
            Some(OutputValues::Float(v)) if v.len() == rows * normal.len() => Some((v, normal)),
            _ => return Err(OnnxError::Run("the probabilities output does not fit its classes".into())),
        },
        None => None,
    };
    Ok((0..rows)
        .map(|r| {
            let label = labels.get(r).cloned();
            let value = match probabilities {
                Some((v, normal)) => {
                    let row = &v[r * normal.len()..(r + 1) * normal.len()];
                    1.0 - row.iter().zip(normal).filter(|(_, good)| **good).map(|(p, _)| p).sum::<f64>()
                }
                None => f64::from(u8::from(!label.as_ref().is_some_and(|l| classify.normal.contains(l)))),
            };
            (!value.is_nan()).then_some(Scored { value, contributions: Vec::new(), label })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::half_reconstruction;

    fn scorer(width: usize, extra: &str) -> Result<Scorer, OnnxError> {
        let model = Model::load(&half_reconstruction(width), None).expect("builds");
        let manifest = Manifest::parse(&format!(
            "format = 1\nname = \"half\"\nrole = \"detector\"\nsignals = [\"a\", \"b\", \"c\"]\n{extra}"
        ))
        .expect("parses");
        Scorer::new(model, manifest)
    }

    fn values(scored: Vec<Option<Scored>>) -> Vec<Option<f64>> {
        scored.into_iter().map(|s| s.map(|s| s.value)).collect()
    }

    const NAN: f64 = f64::NAN;

    #[test]
    fn scores_and_contributions_from_each_kind_of_output() {
        // Centred and scaled before the graph: (3, 2, 1) becomes (1, 0, -1);
        // the model halves it, so each residual² is x² / 4; its score is Σ x².
        let pre = "[preprocessing]\ncenter = [1, 2, 3]\nscale = [2, 2, 2]\n[outputs]\n";
        let cases = [
            ("reconstruction = \"y\"", 0.5, vec![0.25, 0.0, 0.25]),
            ("score = \"s\"", 2.0, vec![]),
            ("score = \"s\"\nreconstruction = \"y\"", 2.0, vec![1.0, 0.0, 1.0]),
            ("score = \"s\"\nscore_higher_is = \"normal\"", -2.0, vec![]),
        ];
        for (outputs, value, contributions) in cases {
            let s = scorer(3, &format!("{pre}{outputs}")).expect("fits");
            let got = s.score(&mut Stream::default(), &[vec![3.0, 2.0, 1.0]]).expect("runs");
            assert_eq!(got, vec![Some(Scored { value, contributions, label: None })], "{outputs}");
        }
    }

    #[test]
    fn missing_values_follow_the_manifest() {
        let frames = [vec![NAN, NAN, NAN], vec![1.0, NAN, 3.0], vec![1.0, 2.0, 3.0], vec![1.0, NAN, 3.0]];
        let cases = [
            // The model's NaN residual is left out of the score.
            ("pass", vec![None, Some(2.5), Some(3.5), Some(2.5)]),
            ("skip", vec![None, None, Some(3.5), None]),
            // Nothing to hold before b was first seen, then its last value.
            ("hold", vec![None, None, Some(3.5), Some(3.5)]),
        ];
        for (missing, expected) in cases {
            let s = scorer(3, &format!("[outputs]\nreconstruction = \"y\"\n[preprocessing]\nmissing = \"{missing}\""))
                .expect("fits");
            let got = values(s.score(&mut Stream::default(), &frames).expect("runs"));
            assert_eq!(got, expected, "missing = {missing}");
        }
    }

    #[test]
    fn a_window_fills_across_batches() {
        let s = scorer(6, "window = 2\n[outputs]\nscore = \"s\"").expect("fits");
        let mut stream = Stream::default();
        assert_eq!(values(s.score(&mut stream, &[vec![1.0, 0.0, 0.0]]).expect("runs")), vec![None]);
        let got = values(s.score(&mut stream, &[vec![0.0, 2.0, 0.0], vec![0.0, 0.0, 3.0]]).expect("runs"));
        assert_eq!(got, vec![Some(5.0), Some(13.0)]);
    }

    #[test]
    fn batches_of_many_streams_in_one_call_score_as_each_alone() {
        let s = scorer(6, "window = 2\n[preprocessing]\nmissing = \"skip\"\n[outputs]\nscore = \"s\"").expect("fits");
        let batches: [&[Vec<f64>]; 3] = [
            &[vec![1.0, 0.0, 0.0], vec![0.0, 2.0, 0.0], vec![0.0, 0.0, 3.0]],
            &[vec![NAN, 1.0, 1.0]],
            &[vec![2.0, 0.0, 0.0], vec![0.0, 0.0, 1.0], vec![1.0, NAN, 0.0], vec![1.0, 1.0, 1.0]],
        ];
        let alone: Vec<Vec<Option<f64>>> =
            batches.iter().map(|frames| values(s.score(&mut Stream::default(), frames).expect("runs"))).collect();
        let prepared: Vec<Prepared> =
            batches.iter().map(|frames| s.prepare(&mut Stream::default(), frames).expect("prepares")).collect();
        assert_eq!(prepared.iter().map(|p| (p.frames(), p.rows())).collect::<Vec<_>>(), [(3, 2), (1, 0), (4, 2)]);
        let together: Vec<Vec<Option<f64>>> =
            s.score_prepared(&prepared).expect("runs").into_iter().map(values).collect();
        assert_eq!(together, alone);
        assert_eq!(alone[0], [None, Some(5.0), Some(13.0)]);
        assert_eq!(alone[2], [None, Some(5.0), None, Some(4.0)]);
    }

    #[test]
    fn a_manifest_that_is_not_a_detectors_is_refused() {
        let cases = [
            ("window = 2\n[outputs]\nreconstruction = \"y\"", 6, "6 values per row for 3 signals"),
            ("[outputs]\nrul = \"s\"", 3, "a detector model needs outputs.score or outputs.reconstruction"),
        ];
        for (extra, width, expected) in cases {
            let err = scorer(width, extra).expect_err(extra).to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        let err = scorer(3, "[outputs]\nscore = \"s\"").map(|_| ()).and_then(|()| {
            let model = Model::load(&half_reconstruction(3), None).expect("builds");
            let text =
                "format = 1\nname = \"r\"\nrole = \"classifier\"\nsignals = [\"a\", \"b\", \"c\"]\n[outputs]\nlabel = \"s\"";
            Scorer::new(model, Manifest::parse(text).expect("parses")).map(|_| ())
        });
        assert!(err.expect_err("a classifier without good classes").to_string().contains("outputs.normal"));
    }

    #[test]
    fn a_rul_model_gives_its_output_as_the_value() {
        let model = Model::load(&half_reconstruction(3), None).expect("builds");
        let text = "format = 1\nname = \"r\"\nrole = \"rul\"\nsignals = [\"a\", \"b\", \"c\"]\n[outputs]\nrul = \"s\"";
        let s = Scorer::new(model, Manifest::parse(text).expect("parses")).expect("fits");
        let got = s.score(&mut Stream::default(), &[vec![1.0, 2.0, 3.0]]).expect("runs");
        assert_eq!(got, vec![Some(Scored { value: 14.0, contributions: vec![], label: None })]);
    }

    #[test]
    fn a_classifier_scores_the_probability_of_a_bad_class_and_gives_its_label() {
        let bytes =
            crate::examples::examples().into_iter().find(|(n, _)| *n == "tree_classifier_zipmap").expect("example").1;
        let model = Model::load(&bytes, None).expect("builds");
        let rows = [vec![0.0, 1.0, 2.0], vec![1.0, f64::NAN, -3.0]];
        let outputs = model.run(2, &rows.concat()).expect("runs");
        let OutputValues::Float(p) = &outputs[1].values else { panic!("probabilities") };
        let text = "format = 1\nname = \"c\"\nrole = \"classifier\"\nsignals = [\"a\", \"b\", \"c\"]\n\
                    [outputs]\nlabel = \"label\"\nprobabilities = \"probabilities\"\nnormal = [\"3\"]";
        let s = Scorer::new(model, Manifest::parse(text).expect("parses")).expect("fits");
        let got = s.score(&mut Stream::default(), &rows).expect("runs");
        let OutputValues::Int(labels) = &outputs[0].values else { panic!("labels") };
        for (r, scored) in got.into_iter().enumerate() {
            let scored = scored.expect("scored");
            assert!((scored.value - p[r * 2 + 1]).abs() < 1e-12, "row {r}: {} vs P(9) {}", scored.value, p[r * 2 + 1]);
            assert_eq!(scored.label, Some(labels[r].to_string()));
        }
        let err = Scorer::new(
            Model::load(&bytes, None).expect("builds"),
            Manifest::parse(&text.replace("[\"3\"]", "[\"4\"]")).expect("parses"),
        )
        .expect_err("class 4 is not the model's");
        assert!(err.to_string().contains("outputs.normal names class 4"), "{err}");
    }
}
