//! A 1-D convolutional network over the trailing window of every sensor.
//!
//! Gradient-boosted trees see a window only through hand-made summaries
//! (mean, slope, …); a convolutional network learns its own filters over the
//! standardised window itself (after Li, Ding & Sun 2018, "Remaining useful
//! life estimation in prognostics using deep convolution neural networks").
//! The two err differently, so their average beats either alone.
//!
//! Architecture: `layers` convolutions of `filters` channels (kernel
//! `kernel`, tanh), one convolution to a single channel (kernel 3, tanh),
//! flattened, joined by the window's last cycle as it is (`last_cycle`),
//! dropout, a dense tanh layer of `hidden` units and a linear output,
//! RUL / cap. A window that reaches before the first cycle repeats the
//! first cycle.
//!
//! The convolutions are valid-padded by default: every position of every
//! layer then depends on its cycles only, so the windows ending at every
//! cycle of a history share them, and predicting them all convolves the
//! history once and runs only the dense layer per window (some 50× fewer
//! multiply-adds than window by window). Same padding (zeros beyond the
//! window's edges, format-2 artifacts) is kept for the models fitted with it.
//!
//! Training: mean squared error, Adam with a cosine-decayed learning rate,
//! mini-batches shuffled by a seeded generator. `nets` networks from
//! consecutive seeds are trained on the available cores and averaged; each is
//! deterministic given its seed, so the result does not depend on the number
//! of cores. (The matrix kernels are chosen for the CPU at run time, so
//! another CPU may round the last bits differently.)

use crate::stats::SeededNormal;
use nalgebra::{DMatrix, DMatrixView};
use serde::{Deserialize, Serialize};

/// Settings of a [`Network`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// Trailing cycles the network sees.
    #[serde(default = "default_window")]
    pub window: usize,
    /// Channels of each hidden convolution.
    #[serde(default = "default_filters")]
    pub filters: usize,
    /// Kernel length of the hidden convolutions, in cycles.
    #[serde(default = "default_kernel")]
    pub kernel: usize,
    /// Number of hidden convolutions.
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// Units of the dense layer.
    #[serde(default = "default_hidden")]
    pub hidden: usize,
    /// Dropout rate on the flattened convolution output while training.
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Passes over the training windows.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Windows per mini-batch.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Adam's initial learning rate (decayed to zero along a cosine).
    #[serde(default = "default_learning_rate")]
    pub learning_rate: f64,
    /// Networks from consecutive seeds, averaged.
    #[serde(default = "default_nets")]
    pub nets: usize,
    /// Seed of the first network's initial weights and shuffling.
    #[serde(default)]
    pub seed: u64,
    /// How the convolutions treat the window's edges (see [`Padding`]).
    #[serde(default)]
    pub padding: Padding,
    /// The dense layer also sees the window's last cycle (its channels as
    /// they are) beside the convolutions' output.
    #[serde(default = "default_last_cycle")]
    pub last_cycle: bool,
}

fn default_last_cycle() -> bool {
    true
}

/// How a convolution treats the window's edges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Padding {
    /// Only positions whose whole kernel lies inside: each convolution
    /// shortens its input by `kernel − 1`. A position's value then depends
    /// on its cycles alone, not on where the window ends, so overlapping
    /// windows share it and predicting every cycle of a history convolves
    /// the history once.
    #[default]
    Valid,
    /// Zero-padded to keep the window's length (format-2 artifacts).
    Same,
}

fn default_window() -> usize {
    50
}
fn default_filters() -> usize {
    10
}
fn default_kernel() -> usize {
    10
}
fn default_layers() -> usize {
    4
}
fn default_hidden() -> usize {
    100
}
fn default_dropout() -> f64 {
    0.3
}
fn default_epochs() -> usize {
    20
}
fn default_batch() -> usize {
    256
}
fn default_learning_rate() -> f64 {
    0.002
}
fn default_nets() -> usize {
    2
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            window: default_window(),
            filters: default_filters(),
            kernel: default_kernel(),
            layers: default_layers(),
            hidden: default_hidden(),
            dropout: default_dropout(),
            epochs: default_epochs(),
            batch: default_batch(),
            learning_rate: default_learning_rate(),
            nets: default_nets(),
            seed: 0,
            padding: Padding::default(),
            last_cycle: default_last_cycle(),
        }
    }
}

impl NetworkConfig {
    /// Every problem with the settings, as messages.
    #[must_use]
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut between = |name: &str, value: usize, low: usize, high: usize| {
            if !(low..=high).contains(&value) {
                problems.push(format!("rul.network.{name} must be between {low} and {high}, got {value}"));
            }
        };
        between("window", self.window, 2, 1000);
        between("filters", self.filters, 1, 256);
        between("kernel", self.kernel, 1, 64);
        between("layers", self.layers, 1, 16);
        between("hidden", self.hidden, 1, 4096);
        between("epochs", self.epochs, 1, 10_000);
        between("batch", self.batch, 1, 65_536);
        between("nets", self.nets, 1, 64);
        if self.padding == Padding::Valid && self.window <= self.layers * self.kernel.saturating_sub(1) + 2 {
            problems.push(format!(
                "rul.network.window must exceed layers × (kernel − 1) + 2 = {} with valid padding, got {}",
                self.layers * self.kernel.saturating_sub(1) + 2,
                self.window
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            problems.push(format!("rul.network.dropout must be in [0, 1), got {}", self.dropout));
        }
        if !(self.learning_rate > 0.0 && self.learning_rate <= 1.0) {
            problems.push(format!("rul.network.learning_rate must be in (0, 1], got {}", self.learning_rate));
        }
        problems
    }
}

/// Where one weight matrix or bias lives in a network's flat parameters
/// (column-major, `rows × cols`).
#[derive(Debug, Clone, Copy)]
struct Tensor {
    offset: usize,
    rows: usize,
    cols: usize,
}

impl Tensor {
    fn range(self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.rows * self.cols
    }
}

/// A convolution: weights `(kernel · inputs) × outputs`, one bias per output.
#[derive(Debug, Clone, Copy)]
struct Conv {
    weights: Tensor,
    bias: Tensor,
    kernel: usize,
    /// Positions of its input per window.
    length: usize,
}

/// Where every layer's parameters are; derived from the settings and the
/// number of input channels, so only the flat parameters are stored.
#[derive(Debug, Clone)]
struct Layout {
    padding: Padding,
    /// Positions of the last convolution's output per window (the dense layer's inputs).
    flat: usize,
    /// Input channels of the window's last cycle the dense layer also sees (0 or all).
    last_cycle: usize,
    convs: Vec<Conv>,
    dense: (Tensor, Tensor),
    output: (Tensor, Tensor),
    len: usize,
}

impl Layout {
    fn new(config: &NetworkConfig, channels: usize) -> Layout {
        let mut len = 0;
        let mut tensor = |rows: usize, cols: usize| {
            let t = Tensor { offset: len, rows, cols };
            len += rows * cols;
            t
        };
        let mut convs = Vec::with_capacity(config.layers + 1);
        let (mut inputs, mut length) = (channels, config.window);
        for layer in 0..=config.layers {
            let (kernel, outputs) = if layer < config.layers { (config.kernel, config.filters) } else { (3, 1) };
            convs.push(Conv { weights: tensor(kernel * inputs, outputs), bias: tensor(1, outputs), kernel, length });
            inputs = outputs;
            length = output_length(length, kernel, config.padding);
        }
        let last_cycle = if config.last_cycle { channels } else { 0 };
        let dense = (tensor(length + last_cycle, config.hidden), tensor(1, config.hidden));
        let output = (tensor(config.hidden, 1), tensor(1, 1));
        Layout { padding: config.padding, flat: length, last_cycle, convs, dense, output, len }
    }

    /// Glorot-uniform weights, zero biases.
    fn initial(&self, seed: u64) -> Vec<f32> {
        let mut random = SeededNormal::new(seed);
        let mut params = vec![0.0f32; self.len];
        let mut glorot = |t: Tensor, fan_in: usize, fan_out: usize| {
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
            for p in &mut params[t.range()] {
                *p = ((random.uniform() * 2.0 - 1.0) * limit) as f32;
            }
        };
        for conv in &self.convs {
            glorot(conv.weights, conv.weights.rows, conv.weights.cols * conv.kernel);
        }
        glorot(self.dense.0, self.dense.0.rows, self.dense.0.cols);
        glorot(self.output.0, self.output.0.rows, 1);
        params
    }
}

fn view(params: &[f32], t: Tensor) -> DMatrixView<'_, f32> {
    DMatrixView::from_slice(&params[t.range()], t.rows, t.cols)
}

// Transposes are copied: nalgebra's small-matrix product mis-indexes
// strided (transposed) views, so none are made.
fn view_transposed(params: &[f32], t: Tensor) -> DMatrix<f32> {
    view(params, t).transpose()
}

/// tanh by a [7/6] Padé approximant, clamped at |x| = 4.97 (within 1e-4
/// of tanh everywhere, 1e-8 for |x| < 2): vectorisable and the same on
/// every platform. Training and prediction use the same function.
#[inline]
fn tanh(x: f32) -> f32 {
    let x = x.clamp(-4.97, 4.97);
    let x2 = x * x;
    let p = x * (135_135.0 + x2 * (17_325.0 + x2 * (378.0 + x2)));
    let q = 135_135.0 + x2 * (62_370.0 + x2 * (3_150.0 + x2 * 28.0));
    (p / q).clamp(-1.0, 1.0)
}

/// Reused buffers: every training step needs matrices of the same sizes,
/// and fresh allocations that large cost page faults.
#[derive(Default)]
struct Scratch {
    free: Vec<Vec<f32>>,
}

impl Scratch {
    fn zeros(&mut self, rows: usize, cols: usize) -> DMatrix<f32> {
        let mut buffer = self.free.pop().unwrap_or_default();
        buffer.clear();
        buffer.resize(rows * cols, 0.0);
        DMatrix::from_vec(rows, cols, buffer)
    }

    fn recycle(&mut self, m: DMatrix<f32>) {
        self.free.push(m.data.into());
    }

    fn transpose(&mut self, m: &DMatrix<f32>) -> DMatrix<f32> {
        let (rows, cols) = m.shape();
        let mut t = self.zeros(cols, rows);
        let out = t.as_mut_slice();
        for (c, column) in m.as_slice().chunks_exact(rows.max(1)).enumerate() {
            for (r, v) in column.iter().enumerate() {
                out[r * cols + c] = *v;
            }
        }
        t
    }
}

/// `grad = aᵀ · b` for a tall `a` (computed as `(bᵀ · a)ᵀ` so that the
/// large operand is never transposed).
fn gradient_product(a: &DMatrix<f32>, b: &DMatrix<f32>, grad: &mut [f32], scratch: &mut Scratch) {
    let b_t = scratch.transpose(b);
    let mut product = scratch.zeros(b.ncols(), a.ncols());
    product.gemm(1.0, &b_t, a, 0.0);
    let (rows, cols) = (a.ncols(), b.ncols());
    for (r, column) in product.as_slice().chunks_exact(cols.max(1)).enumerate() {
        for (c, v) in column.iter().enumerate() {
            grad[c * rows + r] = *v;
        }
    }
    scratch.recycle(b_t);
    scratch.recycle(product);
}

/// Positions a convolution of `kernel` leaves of `length` (at least 0).
fn output_length(length: usize, kernel: usize, padding: Padding) -> usize {
    match padding {
        Padding::Same => length,
        Padding::Valid => (length + 1).saturating_sub(kernel),
    }
}

/// The input of a convolution (samples of `length` positions stacked as
/// rows `sample · length + t`), unrolled so that the convolution is one
/// matrix product: output row `sample · out + t`, column `j · channels + c`
/// holds channel `c` at input position `t + j` (valid) or `t + j − pad`
/// (same; zero beyond the window).
fn unroll(x: &DMatrix<f32>, length: usize, kernel: usize, padding: Padding, scratch: &mut Scratch) -> DMatrix<f32> {
    let (rows, channels) = x.shape();
    let samples = rows / length.max(1);
    let out_length = output_length(length, kernel, padding);
    let out_rows = samples * out_length;
    let mut unrolled = scratch.zeros(out_rows, kernel * channels);
    let source = x.as_slice();
    let target = unrolled.as_mut_slice();
    for tap in taps(length, kernel, padding) {
        for c in 0..channels {
            let column = &source[c * rows..(c + 1) * rows];
            let out = &mut target[(tap.j * channels + c) * out_rows..(tap.j * channels + c + 1) * out_rows];
            for sample in 0..samples {
                let (to, from) = (sample * out_length, sample * length + tap.source);
                out[to + tap.low..to + tap.high].copy_from_slice(&column[from..from + tap.high - tap.low]);
            }
        }
    }
    unrolled
}

/// Kernel tap `j` of a convolution: output positions `low..high` read
/// input positions `source..source + high − low`.
struct Tap {
    j: usize,
    low: usize,
    high: usize,
    source: usize,
}

/// The taps of a kernel over an input of `length` positions whose reach
/// stays (partly) inside it.
fn taps(length: usize, kernel: usize, padding: Padding) -> impl Iterator<Item = Tap> {
    let out_length = output_length(length, kernel, padding);
    (0..kernel).filter_map(move |j| match padding {
        Padding::Valid => (out_length > 0).then_some(Tap { j, low: 0, high: out_length, source: j }),
        Padding::Same => {
            let pad = (kernel - 1) / 2;
            let low = pad.saturating_sub(j);
            let high = (length + pad).saturating_sub(j).min(length);
            (low < high).then(|| Tap { j, low, high, source: low + j - pad })
        }
    })
}

/// The adjoint of [`unroll`]: sums each unrolled column's gradient back
/// onto its channel (inputs of `length` positions per sample).
fn roll_back(
    d_unrolled: &DMatrix<f32>,
    channels: usize,
    length: usize,
    kernel: usize,
    padding: Padding,
    scratch: &mut Scratch,
) -> DMatrix<f32> {
    let out_rows = d_unrolled.nrows();
    let out_length = output_length(length, kernel, padding);
    let samples = out_rows / out_length.max(1);
    let rows = samples * length;
    let mut dx = scratch.zeros(rows, channels);
    let source = d_unrolled.as_slice();
    let target = dx.as_mut_slice();
    for tap in taps(length, kernel, padding) {
        for c in 0..channels {
            let column = &source[(tap.j * channels + c) * out_rows..(tap.j * channels + c + 1) * out_rows];
            let out = &mut target[c * rows..(c + 1) * rows];
            for sample in 0..samples {
                let (from, to) = (sample * out_length, sample * length + tap.source);
                let out = &mut out[to..to + tap.high - tap.low];
                for (o, g) in out.iter_mut().zip(&column[from + tap.low..from + tap.high]) {
                    *o += g;
                }
            }
        }
    }
    dx
}

/// Adds each column's bias and applies tanh.
fn bias_tanh(z: &mut DMatrix<f32>, bias: &[f32]) {
    let rows = z.nrows();
    for (column, b) in z.as_mut_slice().chunks_exact_mut(rows).zip(bias) {
        for v in column {
            *v = tanh(*v + b);
        }
    }
}

/// Per column: the sum of the gradient (a bias's gradient).
fn column_sums(d: &DMatrix<f32>, into: &mut [f32]) {
    let rows = d.nrows();
    for (column, g) in d.as_slice().chunks_exact(rows).zip(into) {
        *g = column.iter().sum();
    }
}

/// What one forward pass keeps for the backward pass.
struct Pass {
    /// Each convolution's unrolled input.
    unrolled: Vec<DMatrix<f32>>,
    /// Each convolution's output (after tanh).
    conv_out: Vec<DMatrix<f32>>,
    /// Last convolution flattened to `samples × flat` and the last cycle beside it, after dropout.
    flat: DMatrix<f32>,
    /// Dense layer output (after tanh).
    hidden: DMatrix<f32>,
    /// Network output, one per sample.
    output: Vec<f32>,
}

impl Pass {
    fn recycle(self, scratch: &mut Scratch) {
        for m in self.unrolled.into_iter().chain(self.conv_out).chain([self.flat, self.hidden]) {
            scratch.recycle(m);
        }
    }
}

/// The convolutions over samples of `length` positions each (stacked as
/// rows `sample · length + t`): each layer's unrolled input and output.
fn convolve(
    layout: &Layout,
    params: &[f32],
    input: &DMatrix<f32>,
    mut length: usize,
    scratch: &mut Scratch,
) -> (Vec<DMatrix<f32>>, Vec<DMatrix<f32>>) {
    let mut unrolled = Vec::with_capacity(layout.convs.len());
    let mut conv_out: Vec<DMatrix<f32>> = Vec::with_capacity(layout.convs.len());
    for conv in &layout.convs {
        let x = conv_out.last().unwrap_or(input);
        let u = unroll(x, length, conv.kernel, layout.padding, scratch);
        let mut z = scratch.zeros(u.nrows(), conv.weights.cols);
        z.gemm(1.0, &u, &view(params, conv.weights), 0.0);
        bias_tanh(&mut z, &params[conv.bias.range()]);
        unrolled.push(u);
        conv_out.push(z);
        length = output_length(length, conv.kernel, layout.padding);
    }
    (unrolled, conv_out)
}

/// The dense layer's input, one row per sample: `flat` positions of the
/// last convolution's output `last` from each sample's first, then (with
/// `last_cycle`) the channels of its last cycle, a row of `input`.
fn flatten(
    layout: &Layout,
    last: &[f32],
    input: &DMatrix<f32>,
    starts: &[(usize, usize)],
    scratch: &mut Scratch,
) -> DMatrix<f32> {
    let samples = starts.len();
    let mut flat = scratch.zeros(samples, layout.flat + layout.last_cycle);
    let (convolved, cycle) = flat.as_mut_slice().split_at_mut(samples * layout.flat);
    for (t, column) in convolved.chunks_exact_mut(samples.max(1)).enumerate() {
        for (v, &(position, _)) in column.iter_mut().zip(starts) {
            *v = last[position + t];
        }
    }
    let rows = input.nrows();
    for (c, column) in cycle.chunks_exact_mut(samples.max(1)).enumerate() {
        for (v, &(_, row)) in column.iter_mut().zip(starts) {
            *v = input[c * rows + row];
        }
    }
    flat
}

/// The dense layer and the output on the flattened last convolution
/// (`samples × flat`); the hidden layer's activations and the outputs.
fn head(layout: &Layout, params: &[f32], flat: &DMatrix<f32>, scratch: &mut Scratch) -> (DMatrix<f32>, Vec<f32>) {
    let samples = flat.nrows();
    let mut hidden = scratch.zeros(samples, layout.dense.0.cols);
    hidden.gemm(1.0, flat, &view(params, layout.dense.0), 0.0);
    bias_tanh(&mut hidden, &params[layout.dense.1.range()]);
    let weights = &params[layout.output.0.range()];
    let bias = params[layout.output.1.offset];
    let output =
        (0..samples).map(|s| bias + hidden.row(s).iter().zip(weights).map(|(h, w)| h * w).sum::<f32>()).collect();
    (hidden, output)
}

/// The network on windows (rows `sample · window + t` of `input`), with
/// `keep` as the dropout mask while training.
fn forward(layout: &Layout, params: &[f32], input: &DMatrix<f32>, keep: Option<&[f32]>, scratch: &mut Scratch) -> Pass {
    let window = layout.convs.first().map_or(1, |c| c.length);
    let samples = input.nrows() / window;
    let (unrolled, conv_out) = convolve(layout, params, input, window, scratch);
    let last = conv_out.last().map_or(&[][..], |m| m.as_slice());
    let starts: Vec<(usize, usize)> = (0..samples).map(|s| (s * layout.flat, s * window + window - 1)).collect();
    let mut flat = flatten(layout, last, input, &starts, scratch);
    if let Some(keep) = keep {
        for (v, k) in flat.as_mut_slice().iter_mut().zip(keep) {
            *v *= k;
        }
    }
    let (hidden, output) = head(layout, params, &flat, scratch);
    Pass { unrolled, conv_out, flat, hidden, output }
}

/// Gradient of the mean squared error of `pass` against `targets` into
/// `grad` (overwritten).
fn backward(
    layout: &Layout,
    params: &[f32],
    pass: &Pass,
    targets: &[f32],
    keep: &[f32],
    grad: &mut [f32],
    scratch: &mut Scratch,
) {
    let flat_len = layout.flat;
    let samples = targets.len();
    let scale = 2.0 / samples as f32;
    let d_output: Vec<f32> = pass.output.iter().zip(targets).map(|(o, t)| scale * (o - t)).collect();

    let (w_out, b_out) = layout.output;
    let hidden_units = w_out.rows;
    for h in 0..hidden_units {
        grad[w_out.offset + h] = pass.hidden.column(h).iter().zip(&d_output).map(|(a, d)| a * d).sum();
    }
    grad[b_out.offset] = d_output.iter().sum();
    let w = &params[w_out.range()];
    let mut d_hidden = scratch.zeros(samples, hidden_units);
    for (column, w) in d_hidden.as_mut_slice().chunks_exact_mut(samples.max(1)).zip(w) {
        for (v, d) in column.iter_mut().zip(&d_output) {
            *v = d * w;
        }
    }
    for (d, a) in d_hidden.as_mut_slice().iter_mut().zip(pass.hidden.as_slice()) {
        *d *= 1.0 - a * a;
    }
    let (w_dense, b_dense) = layout.dense;
    gradient_product(&pass.flat, &d_hidden, &mut grad[w_dense.range()], scratch);
    column_sums(&d_hidden, &mut grad[b_dense.range()]);
    let mut d_flat = scratch.zeros(samples, flat_len + layout.last_cycle);
    d_flat.gemm(1.0, &d_hidden, &view_transposed(params, w_dense), 0.0);
    for (d, k) in d_flat.as_mut_slice().iter_mut().zip(keep) {
        *d *= k;
    }
    let mut d_y = scratch.zeros(samples * flat_len, 1);
    // The last cycle's columns are inputs: no gradient goes further.
    for (t, column) in d_flat.as_slice().chunks_exact(samples.max(1)).take(flat_len).enumerate() {
        for (s, v) in column.iter().enumerate() {
            d_y[s * flat_len + t] = *v;
        }
    }
    scratch.recycle(d_hidden);
    scratch.recycle(d_flat);
    for (l, conv) in layout.convs.iter().enumerate().rev() {
        let y = &pass.conv_out[l];
        for (d, a) in d_y.as_mut_slice().iter_mut().zip(y.as_slice()) {
            *d *= 1.0 - a * a;
        }
        let u = &pass.unrolled[l];
        gradient_product(u, &d_y, &mut grad[conv.weights.range()], scratch);
        column_sums(&d_y, &mut grad[conv.bias.range()]);
        if l > 0 {
            let mut d_u = scratch.zeros(u.nrows(), u.ncols());
            d_u.gemm(1.0, &d_y, &view_transposed(params, conv.weights), 0.0);
            let d_x =
                roll_back(&d_u, conv.weights.rows / conv.kernel, conv.length, conv.kernel, layout.padding, scratch);
            scratch.recycle(d_u);
            scratch.recycle(std::mem::replace(&mut d_y, d_x));
        }
    }
    scratch.recycle(d_y);
}

/// Standardised sensor sequences with their targets (RUL / cap), one per unit.
pub(crate) struct Sequences<'a> {
    /// Per unit, per cycle: the channels.
    pub inputs: &'a [Vec<Vec<f32>>],
    /// Per unit, per cycle: the target.
    pub targets: &'a [Vec<f32>],
}

/// The windows ending at `ends` (sequence, cycle) as rows `sample · window + t`.
fn windows(ends: &[(&[Vec<f32>], usize)], window: usize, channels: usize, scratch: &mut Scratch) -> DMatrix<f32> {
    let rows = ends.len() * window;
    let mut x = scratch.zeros(rows, channels);
    let data = x.as_mut_slice();
    for (s, &(sequence, end)) in ends.iter().enumerate() {
        for t in 0..window {
            let cycle = (end + 1 + t).saturating_sub(window);
            for (c, v) in sequence[cycle].iter().enumerate() {
                data[c * rows + s * window + t] = *v;
            }
        }
    }
    x
}

/// The cycles that windows ending at `ends` (all in `first..`) cover, as
/// one sample: position `p` holds cycle `first + p + 1 − window` (the first
/// cycle repeated before the history starts), as in [`windows`].
fn stretch(
    sequence: &[Vec<f32>],
    first: usize,
    ends: &[usize],
    window: usize,
    channels: usize,
    scratch: &mut Scratch,
) -> DMatrix<f32> {
    let last = ends.iter().copied().max().unwrap_or(first);
    let rows = last - first + window;
    let mut x = scratch.zeros(rows, channels);
    let data = x.as_mut_slice();
    for p in 0..rows {
        let cycle = (first + p + 1).saturating_sub(window);
        for (c, v) in sequence[cycle].iter().enumerate() {
            data[c * rows + p] = *v;
        }
    }
    x
}

/// Outputs of one network for windows ending at `ends` over their
/// [`stretch`]: the convolutions run once over the stretch (with valid
/// padding a position's value does not depend on the window), then each
/// window's `flat` positions go through the dense layer.
fn stretch_outputs(
    layout: &Layout,
    params: &[f32],
    input: &DMatrix<f32>,
    first: usize,
    ends: &[usize],
    scratch: &mut Scratch,
) -> Vec<f32> {
    let (unrolled, conv_out) = convolve(layout, params, input, input.nrows(), scratch);
    let last = conv_out.last().map_or(&[][..], |m| m.as_slice());
    let window = layout.convs.first().map_or(1, |c| c.length);
    let starts: Vec<(usize, usize)> = ends.iter().map(|e| (e - first, e - first + window - 1)).collect();
    let flat = flatten(layout, last, input, &starts, scratch);
    let (hidden, output) = head(layout, params, &flat, scratch);
    for m in unrolled.into_iter().chain(conv_out).chain([flat, hidden]) {
        scratch.recycle(m);
    }
    output
}

/// A fitted network ensemble.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    /// The settings it was fitted with.
    pub config: NetworkConfig,
    /// Input channels (kept sensors).
    pub channels: usize,
    /// Each network's flat parameters.
    nets: Vec<Vec<f32>>,
}

impl Network {
    /// Trains `config.nets` networks on every window of `data`.
    pub(crate) fn fit(config: &NetworkConfig, data: &Sequences<'_>) -> Network {
        let channels = data.inputs.iter().flatten().next().map_or(0, Vec::len);
        let layout = Layout::new(config, channels);
        let workers = crate::parallel::cores().clamp(1, config.nets);
        let nets = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|worker| {
                    let layout = &layout;
                    scope.spawn(move || {
                        (worker..config.nets)
                            .step_by(workers)
                            .map(|n| (n, train(config, layout, data, config.seed.wrapping_add(n as u64))))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            let mut nets: Vec<(usize, Vec<f32>)> = handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect();
            nets.sort_by_key(|(n, _)| *n);
            nets.into_iter().map(|(_, p)| p).collect::<Vec<_>>()
        });
        Network { config: config.clone(), channels, nets }
    }

    /// The averaged output (RUL / cap) for windows ending at each of `ends`
    /// (cycle indices) of one standardised sequence, on the calling thread.
    pub(crate) fn predict(&self, sequence: &[Vec<f32>], ends: &[usize]) -> Vec<f64> {
        let layout = Layout::new(&self.config, self.channels);
        let mut sums = Vec::with_capacity(ends.len());
        let mut scratch = Scratch::default();
        let mut rest = ends;
        while let Some(&first) = rest.first() {
            // Same padding: 1,024 windows at a time. Valid padding: the run
            // of ends within 1,024 cycles of the first, convolved as one stretch.
            let take = match layout.padding {
                Padding::Same => rest.len().min(1024),
                Padding::Valid => rest.iter().position(|&e| e < first || e >= first + 1024).unwrap_or(rest.len()),
            };
            let (chunk, after) = rest.split_at(take);
            let mut chunk_sums = vec![0.0f64; chunk.len()];
            let input = match layout.padding {
                Padding::Same => {
                    let windows_of: Vec<(&[Vec<f32>], usize)> = chunk.iter().map(|&e| (sequence, e)).collect();
                    windows(&windows_of, self.config.window, self.channels, &mut scratch)
                }
                Padding::Valid => stretch(sequence, first, chunk, self.config.window, self.channels, &mut scratch),
            };
            for params in &self.nets {
                let outputs = match layout.padding {
                    Padding::Same => {
                        let pass = forward(&layout, params, &input, None, &mut scratch);
                        let outputs = pass.output.clone();
                        pass.recycle(&mut scratch);
                        outputs
                    }
                    Padding::Valid => stretch_outputs(&layout, params, &input, first, chunk, &mut scratch),
                };
                for (sum, o) in chunk_sums.iter_mut().zip(outputs) {
                    *sum += f64::from(o);
                }
            }
            scratch.recycle(input);
            sums.extend(chunk_sums);
            rest = after;
        }
        let nets = self.nets.len().max(1) as f64;
        sums.into_iter().map(|s| s / nets).collect()
    }

    /// Whether the network fits histories of `channels` kept sensors.
    pub(crate) fn parameters_valid(&self) -> bool {
        let len = Layout::new(&self.config, self.channels).len;
        self.nets.iter().all(|p| p.len() == len)
    }
}

/// One network trained from `seed`.
fn train(config: &NetworkConfig, layout: &Layout, data: &Sequences<'_>, seed: u64) -> Vec<f32> {
    let mut params = layout.initial(seed);
    let mut random = SeededNormal::new(seed ^ 0x005e_ed0f_d00d);
    let mut samples: Vec<(usize, usize)> =
        data.inputs.iter().enumerate().flat_map(|(u, s)| (0..s.len()).map(move |c| (u, c))).collect();
    let channels = data.inputs.iter().flatten().next().map_or(0, Vec::len);
    let batches_per_epoch = samples.len().div_ceil(config.batch);
    let total_steps = (config.epochs * batches_per_epoch).max(1);
    let (beta1, beta2, epsilon) = (0.9f32, 0.999f32, 1e-7f32);
    let mut m = vec![0.0f32; layout.len];
    let mut v = vec![0.0f32; layout.len];
    let mut grad = vec![0.0f32; layout.len];
    let keep_scale = (1.0 / (1.0 - config.dropout)) as f32;
    let mut step = 0usize;
    let mut scratch = Scratch::default();
    for _ in 0..config.epochs {
        for i in (1..samples.len()).rev() {
            samples.swap(i, random.below(i + 1));
        }
        for batch in samples.chunks(config.batch) {
            let ends: Vec<(&[Vec<f32>], usize)> = batch.iter().map(|&(u, c)| (&data.inputs[u][..], c)).collect();
            let x = windows(&ends, config.window, channels, &mut scratch);
            let keep: Vec<f32> = (0..batch.len() * (layout.flat + layout.last_cycle))
                .map(|_| if random.uniform() < config.dropout { 0.0 } else { keep_scale })
                .collect();
            let targets: Vec<f32> = batch.iter().map(|&(u, c)| data.targets[u][c]).collect();
            let pass = forward(layout, &params, &x, Some(&keep), &mut scratch);
            backward(layout, &params, &pass, &targets, &keep, &mut grad, &mut scratch);
            pass.recycle(&mut scratch);
            scratch.recycle(x);
            step += 1;
            let progress = step as f64 / total_steps as f64;
            let rate = (config.learning_rate * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())) as f32;
            let correction1 = 1.0 - beta1.powi(step.min(100_000) as i32);
            let correction2 = 1.0 - beta2.powi(step.min(100_000) as i32);
            let step_size = rate * correction2.sqrt() / correction1;
            for (((p, g), m), v) in params.iter_mut().zip(&grad).zip(&mut m).zip(&mut v) {
                *m = beta1 * *m + (1.0 - beta1) * g;
                *v = beta2 * *v + (1.0 - beta2) * g * g;
                *p -= step_size * *m / (v.sqrt() + epsilon);
            }
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> NetworkConfig {
        NetworkConfig {
            window: 12,
            filters: 3,
            kernel: 4,
            layers: 2,
            hidden: 6,
            dropout: 0.0,
            ..NetworkConfig::default()
        }
    }

    #[test]
    fn tanh_matches_the_standard_library() {
        for i in -800..=800 {
            let x = i as f32 / 100.0;
            assert!((tanh(x) - x.tanh()).abs() < 1e-4, "{x}: {} vs {}", tanh(x), x.tanh());
        }
    }

    #[test]
    fn unroll_and_roll_back_are_adjoint() {
        // <unroll(x), u> == <x, roll_back(u)> for any x and u.
        let mut g = SeededNormal::new(3);
        for padding in [Padding::Same, Padding::Valid] {
            for kernel in [1, 2, 3, 4, 5] {
                let out = 3 * output_length(5, kernel, padding);
                let x = DMatrix::<f32>::from_fn(3 * 5, 2, |_, _| g.normal() as f32);
                let u = DMatrix::<f32>::from_fn(out, 2 * kernel, |_, _| g.normal() as f32);
                let scratch = &mut Scratch::default();
                let left: f32 = unroll(&x, 5, kernel, padding, scratch).component_mul(&u).sum();
                let right: f32 = x.component_mul(&roll_back(&u, 2, 5, kernel, padding, scratch)).sum();
                assert!((left - right).abs() < 1e-4, "{padding:?}, kernel {kernel}: {left} vs {right}");
            }
        }
        // Same padding: a kernel of 3 at t reads t − 1, t, t + 1.
        let x = DMatrix::<f32>::from_fn(4, 1, |r, _| r as f32 + 1.0);
        let u = unroll(&x, 4, 3, Padding::Same, &mut Scratch::default());
        assert_eq!(u.column(0).as_slice(), &[0.0, 1.0, 2.0, 3.0]);
        assert_eq!(u.column(1).as_slice(), &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(u.column(2).as_slice(), &[2.0, 3.0, 4.0, 0.0]);
        // Valid: t reads t, t + 1, t + 2, and two positions are left; per sample.
        let x = DMatrix::<f32>::from_fn(8, 1, |r, _| r as f32 + 1.0);
        let u = unroll(&x, 4, 3, Padding::Valid, &mut Scratch::default());
        assert_eq!(u.column(0).as_slice(), &[1.0, 2.0, 5.0, 6.0]);
        assert_eq!(u.column(2).as_slice(), &[3.0, 4.0, 7.0, 8.0]);
    }

    #[test]
    fn valid_padding_needs_a_window_longer_than_the_convolutions_reach() {
        // Four convolutions of kernel 10 and the final one of kernel 3 reach 38 cycles.
        for (window, padding, ok) in
            [(38, Padding::Valid, false), (39, Padding::Valid, true), (38, Padding::Same, true)]
        {
            let config = NetworkConfig { window, padding, ..NetworkConfig::default() };
            assert_eq!(config.validate().is_empty(), ok, "window {window}, {padding:?}: {:?}", config.validate());
            if ok {
                assert!(Layout::new(&config, 5).flat >= 1);
            }
        }
    }

    #[test]
    fn one_convolution_of_the_history_equals_window_by_window() {
        // Valid padding: predicting every cycle convolves the history once;
        // each window must come out as if it had gone through alone.
        let config = NetworkConfig { nets: 2, ..tiny() };
        let channels = 3;
        let layout = Layout::new(&config, channels);
        let network = Network { config: config.clone(), channels, nets: vec![layout.initial(1), layout.initial(2)] };
        let mut g = SeededNormal::new(8);
        let sequence: Vec<Vec<f32>> = (0..1500).map(|_| (0..channels).map(|_| g.normal() as f32).collect()).collect();
        // In order, one cycle (before a full window), out of order, far apart.
        for ends in [(0..1500).collect::<Vec<usize>>(), vec![2], vec![40, 3, 1499, 700, 701]] {
            let together = network.predict(&sequence, &ends);
            for (&end, value) in ends.iter().zip(together) {
                let x = windows(&[(&sequence[..], end)], config.window, channels, &mut Scratch::default());
                let alone: f64 = network
                    .nets
                    .iter()
                    .map(|p| f64::from(forward(&layout, p, &x, None, &mut Scratch::default()).output[0]))
                    .sum::<f64>()
                    / 2.0;
                assert!((alone - value).abs() < 1e-5, "window ending at {end}: {alone} vs {value}");
            }
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        for padding in [Padding::Valid, Padding::Same] {
            let config = NetworkConfig { padding, ..tiny() };
            let layout = Layout::new(&config, 3);
            let params = layout.initial(11);
            let mut g = SeededNormal::new(5);
            let samples = 7;
            let x = DMatrix::<f32>::from_fn(samples * config.window, 3, |_, _| g.normal() as f32);
            let targets: Vec<f32> = (0..samples).map(|_| g.uniform() as f32).collect();
            let keep = vec![1.0f32; samples * (layout.flat + layout.last_cycle)];
            let loss = |p: &[f32]| -> f64 {
                let pass = forward(&layout, p, &x, None, &mut Scratch::default());
                pass.output.iter().zip(&targets).map(|(o, t)| f64::from((o - t) * (o - t))).sum::<f64>()
                    / samples as f64
            };
            let mut grad = vec![0.0f32; layout.len];
            let scratch = &mut Scratch::default();
            let pass = forward(&layout, &params, &x, Some(&keep), scratch);
            backward(&layout, &params, &pass, &targets, &keep, &mut grad, scratch);
            let mut checked = 0;
            for i in (0..layout.len).step_by(3) {
                let h = 1e-2f32;
                let (mut up, mut down) = (params.clone(), params.clone());
                up[i] += h;
                down[i] -= h;
                let numeric = (loss(&up) - loss(&down)) / (2.0 * f64::from(h));
                let analytic = f64::from(grad[i]);
                assert!(
                    (numeric - analytic).abs() <= 2e-3 + 0.02 * numeric.abs().max(analytic.abs()),
                    "parameter {i}: numeric {numeric} vs analytic {analytic}"
                );
                checked += 1;
            }
            assert!(checked > 40);
        }
    }

    #[test]
    fn learns_a_trend_deterministically() {
        // Target: how far the sequence has risen, readable only from the window's shape.
        let mut g = SeededNormal::new(9);
        let (mut inputs, mut targets) = (Vec::new(), Vec::new());
        for _ in 0..30 {
            let life = 40 + g.below(40);
            let seq: Vec<Vec<f32>> = (0..life)
                .map(|c| {
                    let left = (life - c) as f64;
                    vec![(2.0 * (-left / 15.0).exp() + 0.05 * g.normal()) as f32, g.normal() as f32]
                })
                .collect();
            targets.push((0..life).map(|c| (((life - c) as f32) / 40.0).min(1.0)).collect::<Vec<f32>>());
            inputs.push(seq);
        }
        let config = NetworkConfig { epochs: 40, batch: 64, nets: 2, ..tiny() };
        let data = Sequences { inputs: &inputs, targets: &targets };
        let network = Network::fit(&config, &data);
        assert!(network.parameters_valid());
        let again = Network::fit(&config, &data);
        assert_eq!(network, again, "same seed, same network");
        let mut squared = 0.0;
        let mut count = 0.0;
        let mut baseline = 0.0;
        let mean: f64 =
            targets.iter().flatten().map(|t| f64::from(*t)).sum::<f64>() / targets.iter().flatten().count() as f64;
        for (seq, target) in inputs.iter().zip(&targets) {
            let ends: Vec<usize> = (0..seq.len()).collect();
            for (p, t) in network.predict(seq, &ends).iter().zip(target) {
                squared += (p - f64::from(*t)).powi(2);
                baseline += (mean - f64::from(*t)).powi(2);
                count += 1.0;
            }
        }
        let (rmse, spread) = ((squared / count).sqrt(), (baseline / count).sqrt());
        assert!(rmse < 0.5 * spread, "RMSE {rmse} vs the mean's {spread}");
        let json = serde_json::to_string(&network).unwrap();
        let back: Network = serde_json::from_str(&json).unwrap();
        assert_eq!(back, network);
    }
}
