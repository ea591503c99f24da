//! A learned reconstruction model: a small dense autoencoder trained in
//! Rust on the CPU.
//!
//! Signals are standardised with the baseline's mean and spread, squeezed
//! through `hidden` layers (tanh; the narrowest is the code) and rebuilt by a
//! linear output layer, trained with Adam on the mean squared error over
//! shuffled mini-batches. Training is deterministic for a given `seed`. The
//! last `validation` share of the baseline is held out: it picks the epoch
//! with the lowest error (early stopping) and sets each signal's residual
//! spread. The score is the root mean square of the residuals in those
//! spreads (≈ 1 on normal frames); each signal's squared residual is its
//! contribution. The normalisation is part of the model, so a fitted
//! artifact scores the same anywhere. Missing values are replaced by the
//! baseline mean on the way in and have no residual.

use super::{Detector, DetectorError, DetectorKind, Score, check_row, check_rows, column_mean_scale, complete_rows, refuse_invalid};
use crate::stats::SeededNormal;
use crate::threshold::ThresholdConfig;
use serde::{Deserialize, Serialize};

/// Settings of [`Autoencoder`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoencoderConfig {
    /// Widths of the hidden layers, e.g. `[16, 4, 16]`; empty picks
    /// `[2p, max(2, p/2), 2p]` for `p` signals.
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Passes over the training rows.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Adam step size.
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Rows per gradient step.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Share of the baseline (its end) held out for early stopping and spreads.
    #[serde(default = "default_validation")]
    pub validation: f64,
    /// Seed of the initial weights and the shuffles.
    #[serde(default)]
    pub seed: u64,
}

fn default_epochs() -> usize {
    100
}
fn default_learning_rate() -> f64 {
    3e-3
}
fn default_batch() -> usize {
    32
}
fn default_validation() -> f64 {
    0.2
}

impl Default for AutoencoderConfig {
    fn default() -> Self {
        AutoencoderConfig {
            hidden: Vec::new(),
            epochs: default_epochs(),
            learning_rate: default_learning_rate(),
            batch: default_batch(),
            validation: default_validation(),
            seed: 0,
        }
    }
}

impl AutoencoderConfig {
    pub(crate) fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.hidden.iter().any(|w| *w == 0 || *w > 4096) {
            problems.push(format!("autoencoder.hidden widths must be between 1 and 4096, got {:?}", self.hidden));
        }
        if self.epochs == 0 || self.epochs > 100_000 {
            problems.push(format!("autoencoder.epochs must be between 1 and 100000, got {}", self.epochs));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate < 1.0) {
            problems.push(format!("autoencoder.learning_rate must be in (0, 1), got {}", self.learning_rate));
        }
        if self.batch == 0 {
            problems.push("autoencoder.batch must be at least 1".into());
        }
        if !(self.validation > 0.0 && self.validation < 0.9) {
            problems.push(format!("autoencoder.validation must be in (0, 0.9), got {}", self.validation));
        }
        problems
    }
}

/// One dense layer: `out = act(W·in + b)`, `W` row-major `outputs × inputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Layer {
    inputs: usize,
    outputs: usize,
    weights: Vec<f64>,
    bias: Vec<f64>,
    tanh: bool,
}

impl Layer {
    fn forward(&self, input: &[f64], output: &mut Vec<f64>) {
        output.clear();
        output.extend(self.weights.chunks_exact(self.inputs).zip(&self.bias).map(|(row, b)| {
            let sum = b + row.iter().zip(input).map(|(w, x)| w * x).sum::<f64>();
            if self.tanh { sum.tanh() } else { sum }
        }));
    }
}

/// What the autoencoder learned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoencoderModel {
    /// Baseline mean of each signal.
    pub mean: Vec<f64>,
    /// Baseline spread of each signal (1 for constants).
    pub scale: Vec<f64>,
    layers: Vec<Layer>,
    /// Residual spread of each signal on the held-out rows.
    pub residual_scale: Vec<f64>,
    /// Epoch kept (lowest held-out error).
    pub best_epoch: usize,
}

impl AutoencoderModel {
    fn reconstruct(&self, input: &[f64]) -> Vec<f64> {
        let mut current = input.to_vec();
        let mut next = Vec::new();
        for layer in &self.layers {
            layer.forward(&current, &mut next);
            std::mem::swap(&mut current, &mut next);
        }
        current
    }

    fn standardise(&self, row: &[f64]) -> Vec<f64> {
        row.iter()
            .zip(self.mean.iter().zip(&self.scale))
            .map(|(v, (m, s))| if v.is_finite() { (v - m) / s } else { 0.0 })
            .collect()
    }

    fn mean_error(&self, rows: &[Vec<f64>]) -> f64 {
        let total: f64 =
            rows.iter().map(|r| self.reconstruct(r).iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum::<f64>()).sum();
        total / rows.len().max(1) as f64
    }
}

/// Autoencoder detector. A stored model is checked when it is read (layers
/// that chain from the width back to it, weights of their shapes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StoredAutoencoder")]
pub struct Autoencoder {
    config: AutoencoderConfig,
    model: Option<AutoencoderModel>,
}

/// An autoencoder as stored, before `Autoencoder` accepts it.
#[derive(Deserialize)]
struct StoredAutoencoder {
    config: AutoencoderConfig,
    model: Option<AutoencoderModel>,
}

impl TryFrom<StoredAutoencoder> for Autoencoder {
    type Error = String;

    fn try_from(stored: StoredAutoencoder) -> Result<Self, String> {
        refuse_invalid(stored.config.validate()).map_err(|e| e.to_string())?;
        if let Some(model) = &stored.model {
            let width = model.mean.len();
            super::stored_lengths(&[
                ("scale", model.scale.len(), width),
                ("residual_scale", model.residual_scale.len(), width),
            ])?;
            if width == 0 || model.layers.is_empty() {
                return Err("a fitted autoencoder without signals or layers".into());
            }
            let mut inputs = width;
            for (i, layer) in model.layers.iter().enumerate() {
                if layer.inputs != inputs || layer.outputs == 0 {
                    return Err(format!("layer {i} takes {} inputs, not {inputs}", layer.inputs));
                }
                super::stored_lengths(&[
                    ("weights", layer.weights.len(), layer.inputs.saturating_mul(layer.outputs)),
                    ("bias", layer.bias.len(), layer.outputs),
                ])
                .map_err(|e| format!("layer {i}: {e}"))?;
                inputs = layer.outputs;
            }
            if inputs != width {
                return Err(format!("the last layer gives {inputs} values, not {width}"));
            }
        }
        Ok(Autoencoder { config: stored.config, model: stored.model })
    }
}

impl Autoencoder {
    /// Fewest complete baseline rows accepted.
    pub const MIN_ROWS: usize = 20;

    /// An untrained autoencoder.
    ///
    /// # Errors
    /// [`DetectorError::InvalidSetting`] with every problem in the settings.
    pub fn new(config: AutoencoderConfig) -> Result<Self, DetectorError> {
        refuse_invalid(config.validate())?;
        Ok(Autoencoder { config, model: None })
    }

    fn train(&self, model: &mut AutoencoderModel, train: &[Vec<f64>], validation: &[Vec<f64>], rng: &mut SeededNormal) {
        let lr = self.config.learning_rate;
        let (beta1, beta2, eps): (f64, f64, f64) = (0.9, 0.999, 1e-8);
        let sizes: Vec<(usize, usize)> = model.layers.iter().map(|l| (l.weights.len(), l.bias.len())).collect();
        let zeros = || sizes.iter().map(|(w, b)| (vec![0.0; *w], vec![0.0; *b])).collect::<Vec<_>>();
        let (mut first, mut second) = (zeros(), zeros());
        let mut step = 0i32;
        let mut best = (model.mean_error(validation), model.layers.clone(), 0usize);
        let mut order: Vec<usize> = (0..train.len()).collect();
        for epoch in 1..=self.config.epochs {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i + 1));
            }
            for batch in order.chunks(self.config.batch) {
                let mut gradients = zeros();
                for &i in batch {
                    backpropagate(&model.layers, &train[i], &mut gradients);
                }
                step += 1;
                let scale = 1.0 / batch.len() as f64;
                let (c1, c2) = (1.0 - beta1.powi(step), 1.0 - beta2.powi(step));
                for (((layer, grads), m), v) in model.layers.iter_mut().zip(&gradients).zip(&mut first).zip(&mut second)
                {
                    let params = layer.weights.iter_mut().chain(layer.bias.iter_mut());
                    let g = grads.0.iter().chain(&grads.1);
                    let m = m.0.iter_mut().chain(m.1.iter_mut());
                    let v = v.0.iter_mut().chain(v.1.iter_mut());
                    for (((p, g), m), v) in params.zip(g).zip(m).zip(v) {
                        let g = g * scale;
                        *m = beta1 * *m + (1.0 - beta1) * g;
                        *v = beta2 * *v + (1.0 - beta2) * g * g;
                        *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                    }
                }
            }
            let error = model.mean_error(validation);
            if error < best.0 {
                best = (error, model.layers.clone(), epoch);
            }
        }
        model.layers = best.1;
        model.best_epoch = best.2;
    }
}

impl Detector for Autoencoder {
    /// Train on the complete baseline rows.
    ///
    /// # Errors
    /// See [`super::Detector::learn`].
    fn learn(&mut self, rows: &[Vec<f64>]) -> Result<(), DetectorError> {
        let width = check_rows(rows, Self::MIN_ROWS)?;
        let complete = complete_rows(rows, Self::MIN_ROWS)?;
        let (mean, scale) = column_mean_scale(&complete, width);
        let mut rng = SeededNormal::new(self.config.seed);
        let hidden = if self.config.hidden.is_empty() {
            vec![2 * width, (width / 2).max(2), 2 * width]
        } else {
            self.config.hidden.clone()
        };
        let mut widths = vec![width];
        widths.extend(&hidden);
        widths.push(width);
        let layers: Vec<Layer> = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let limit = (6.0 / (w[0] + w[1]) as f64).sqrt();
                Layer {
                    inputs: w[0],
                    outputs: w[1],
                    weights: (0..w[0] * w[1]).map(|_| (2.0 * rng.uniform() - 1.0) * limit).collect(),
                    bias: vec![0.0; w[1]],
                    tanh: i + 2 < widths.len(),
                }
            })
            .collect();
        let mut model = AutoencoderModel { mean, scale, layers, residual_scale: vec![1.0; width], best_epoch: 0 };
        let standard: Vec<Vec<f64>> = complete.iter().map(|r| model.standardise(r)).collect();
        let held = ((standard.len() as f64 * self.config.validation) as usize).clamp(1, standard.len() - 1);
        let (train, validation) = standard.split_at(standard.len() - held);
        self.train(&mut model, train, validation, &mut rng);
        for j in 0..width {
            let rms = (validation
                .iter()
                .map(|r| {
                    let e = r[j] - model.reconstruct(r)[j];
                    e * e
                })
                .sum::<f64>()
                / validation.len() as f64)
                .sqrt();
            model.residual_scale[j] = rms.max(1e-3);
        }
        self.model = Some(model);
        Ok(())
    }

    /// Score one row.
    ///
    /// # Errors
    /// See [`super::Detector::score`].
    fn score(&mut self, row: &[f64]) -> Result<Score, DetectorError> {
        let model = self.model.as_ref().ok_or(DetectorError::NotFitted)?;
        check_row(row, model.mean.len())?;
        let input = model.standardise(row);
        let output = model.reconstruct(&input);
        let mut contributions = vec![0.0; row.len()];
        let (mut sum, mut present) = (0.0, 0usize);
        for j in 0..row.len() {
            if row[j].is_finite() {
                let units = (input[j] - output[j]) / model.residual_scale[j];
                contributions[j] = units * units;
                sum += units * units;
                present += 1;
            }
        }
        let value = (sum / present.max(1) as f64).sqrt();
        if sum > 0.0 {
            contributions.iter_mut().for_each(|c| *c *= value / sum);
        }
        Ok(Score { value, contributions, t2: None, spe: None, statistics: Vec::new() })
    }
}

impl DetectorKind for Autoencoder {
    type Config = AutoencoderConfig;
    const NAME: &'static str = "autoencoder";
    const SUMMARY: &'static str = "A dense autoencoder trained on the baseline; scores its reconstruction error.";

    fn validate(config: &AutoencoderConfig) -> Vec<String> {
        config.validate()
    }

    fn build(config: &AutoencoderConfig) -> Result<Self, DetectorError> {
        Self::new(config.clone())
    }

    fn min_baseline_rows(_config: &AutoencoderConfig) -> usize {
        Self::MIN_ROWS
    }

    fn default_threshold(_config: &AutoencoderConfig) -> ThresholdConfig {
        // Scores are residual RMS in held-out spreads (≈ 1 when normal).
        ThresholdConfig::fixed(4.0)
    }

    fn examples() -> Vec<AutoencoderConfig> {
        vec![AutoencoderConfig::default(), AutoencoderConfig { epochs: 30, seed: 3, ..AutoencoderConfig::default() }]
    }
}

/// Add the squared-error gradient of one row to `gradients` (weights, biases per layer).
fn backpropagate(layers: &[Layer], input: &[f64], gradients: &mut [(Vec<f64>, Vec<f64>)]) {
    let mut activations: Vec<Vec<f64>> = vec![input.to_vec()];
    for layer in layers {
        let mut out = Vec::new();
        layer.forward(activations.last().map_or(input, Vec::as_slice), &mut out);
        activations.push(out);
    }
    let output = activations.last().map_or(&[][..], Vec::as_slice);
    let mut delta: Vec<f64> = output.iter().zip(input).map(|(o, x)| 2.0 * (o - x)).collect();
    for (l, layer) in layers.iter().enumerate().rev() {
        if layer.tanh {
            for (d, a) in delta.iter_mut().zip(&activations[l + 1]) {
                *d *= 1.0 - a * a;
            }
        }
        let below = &activations[l];
        let (weight_grad, bias_grad) = &mut gradients[l];
        for (o, d) in delta.iter().enumerate() {
            bias_grad[o] += d;
            for (g, x) in weight_grad[o * layer.inputs..(o + 1) * layer.inputs].iter_mut().zip(below) {
                *g += d * x;
            }
        }
        if l > 0 {
            let mut previous = vec![0.0; layer.inputs];
            for (o, d) in delta.iter().enumerate() {
                for (p, w) in previous.iter_mut().zip(&layer.weights[o * layer.inputs..(o + 1) * layer.inputs]) {
                    *p += d * w;
                }
            }
            delta = previous;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finite-difference check of the gradient on a tiny network.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = SeededNormal::new(1);
        let layer = |inputs: usize, outputs: usize, tanh: bool, rng: &mut SeededNormal| Layer {
            inputs,
            outputs,
            weights: (0..inputs * outputs).map(|_| rng.normal() * 0.5).collect(),
            bias: (0..outputs).map(|_| rng.normal() * 0.1).collect(),
            tanh,
        };
        let layers = vec![layer(3, 2, true, &mut rng), layer(2, 3, false, &mut rng)];
        let input = vec![0.3, -0.7, 1.1];
        let loss = |layers: &[Layer]| {
            let model = AutoencoderModel {
                mean: vec![],
                scale: vec![],
                layers: layers.to_vec(),
                residual_scale: vec![],
                best_epoch: 0,
            };
            model.reconstruct(&input).iter().zip(&input).map(|(o, x)| (o - x) * (o - x)).sum::<f64>()
        };
        let mut gradients: Vec<(Vec<f64>, Vec<f64>)> =
            layers.iter().map(|l| (vec![0.0; l.weights.len()], vec![0.0; l.bias.len()])).collect();
        backpropagate(&layers, &input, &mut gradients);
        for l in 0..layers.len() {
            for w in 0..layers[l].weights.len() {
                let mut plus = layers.clone();
                plus[l].weights[w] += 1e-6;
                let mut minus = layers.clone();
                minus[l].weights[w] -= 1e-6;
                let numeric = (loss(&plus) - loss(&minus)) / 2e-6;
                assert!(
                    (numeric - gradients[l].0[w]).abs() < 1e-5,
                    "layer {l} weight {w}: {numeric} vs {}",
                    gradients[l].0[w]
                );
            }
        }
    }

    #[test]
    fn learns_a_low_dimensional_relation() {
        let mut g = SeededNormal::new(2);
        let rows: Vec<Vec<f64>> = (0..500)
            .map(|_| {
                let c = g.normal();
                vec![c, 2.0 * c + 0.05 * g.normal(), -c + 0.05 * g.normal(), 0.5 * c * c + 0.05 * g.normal()]
            })
            .collect();
        let mut ae = Autoencoder::new(AutoencoderConfig { epochs: 60, ..AutoencoderConfig::default() }).unwrap();
        ae.learn(&rows).unwrap();
        let normal = ae.score(&[1.0, 2.0, -1.0, 0.5]).unwrap().value;
        let broken = ae.score(&[1.0, -2.0, -1.0, 0.5]).unwrap();
        assert!(normal < 3.0, "{normal}");
        assert!(broken.value > 3.0 * normal, "{} vs {normal}", broken.value);
    }
}
