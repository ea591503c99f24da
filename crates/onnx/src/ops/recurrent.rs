//! Recurrent layers, `LSTM` and `GRU`, run over the whole sequence in one
//! operator.
//!
//! tract expands an LSTM into a `Scan` whose body is a small graph run once
//! per time step, its matrix products picked for unknown sizes; onnxruntime
//! runs the sequence in one kernel. Here each step is two sgemm calls over
//! the batch (`x_t · Wᵀ` and `h · Rᵀ`, accumulated into a buffer already
//! holding the biases) and one pass over the gates, row by row, while they
//! are in cache. Weights are the node's inputs, read where they lie (no
//! packing of our own: sgemm packs its panels on each call).
//!
//! The operator follows the ONNX specification rather than tract's subset:
//! forward, reverse and bidirectional directions, both layouts, peepholes,
//! `clip`, `input_forget`, per-row `sequence_lens` (a row's steps past its
//! length leave its state alone and output zeros), an initial state, and
//! every activation the specification lists. A missing value (NaN) in a
//! row's window makes that row's state NaN from that step on, as exact
//! arithmetic does (the sigmoid and tanh here keep NaN; tract's clamp it
//! into a finite number).

use super::elementwise::Activation;
use super::{Attrs, Built};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder, linalg::general_mat_mul};

/// The cell a layer repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cell {
    /// Gates i, o, f, c (ONNX order); `input_forget` couples f to 1 − i.
    Lstm { input_forget: bool },
    /// Gates z, r, h; `linear_before_reset` applies r after the recurrent product.
    Gru { linear_before_reset: bool },
}

impl Cell {
    fn name(self) -> &'static str {
        match self {
            Self::Lstm { .. } => "LSTM",
            Self::Gru { .. } => "GRU",
        }
    }

    /// Gate blocks in `W` and `R` (and half the blocks of `B`).
    fn gates(self) -> usize {
        match self {
            Self::Lstm { .. } => 4,
            Self::Gru { .. } => 3,
        }
    }

    /// Activation functions per direction (f, g, h for an LSTM; f, g for a GRU).
    fn functions(self) -> usize {
        match self {
            Self::Lstm { .. } => 3,
            Self::Gru { .. } => 2,
        }
    }
}

/// The activation functions ONNX allows in recurrent layers.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Function {
    Sigmoid,
    Tanh,
    Relu,
    Affine { alpha: f32, beta: f32 },
    LeakyRelu { alpha: f32 },
    ThresholdedRelu { alpha: f32 },
    ScaledTanh { alpha: f32, beta: f32 },
    HardSigmoid { alpha: f32, beta: f32 },
    Elu { alpha: f32 },
    Softsign,
    Softplus,
}

impl Function {
    /// The function `name` names, drawing its parameters from `alphas` and
    /// `betas` in order (the specification's defaults when they run out).
    fn parse(
        name: &str,
        alphas: &mut impl Iterator<Item = f32>,
        betas: &mut impl Iterator<Item = f32>,
    ) -> TractResult<Self> {
        let mut alpha = |default: f32| alphas.next().unwrap_or(default);
        Ok(match name.to_ascii_lowercase().as_str() {
            "sigmoid" => Self::Sigmoid,
            "tanh" => Self::Tanh,
            "relu" => Self::Relu,
            "affine" => Self::Affine { alpha: alpha(1.0), beta: betas.next().unwrap_or(0.0) },
            "leakyrelu" => Self::LeakyRelu { alpha: alpha(0.01) },
            "thresholdedrelu" => Self::ThresholdedRelu { alpha: alpha(1.0) },
            "scaledtanh" => Self::ScaledTanh { alpha: alpha(1.0), beta: betas.next().unwrap_or(1.0) },
            "hardsigmoid" => Self::HardSigmoid { alpha: alpha(0.2), beta: betas.next().unwrap_or(0.5) },
            "elu" => Self::Elu { alpha: alpha(1.0) },
            "softsign" => Self::Softsign,
            "softplus" => Self::Softplus,
            _ => bail!("recurrent activation {name} is not one ONNX defines"),
        })
    }

    fn apply(self, v: f32) -> f32 {
        match self {
            Self::Sigmoid => Activation::Sigmoid.f32(v),
            Self::Tanh => Activation::Tanh.f32(v),
            Self::Relu => Activation::Relu.f32(v),
            Self::Affine { alpha, beta } => alpha * v + beta,
            Self::LeakyRelu { alpha } => {
                if v < 0.0 {
                    alpha * v
                } else {
                    v
                }
            }
            Self::ThresholdedRelu { alpha } => {
                if v > alpha || v.is_nan() {
                    v
                } else {
                    0.0
                }
            }
            Self::ScaledTanh { alpha, beta } => alpha * Activation::Tanh.f32(beta * v),
            Self::HardSigmoid { alpha, beta } => (alpha * v + beta).clamp(0.0, 1.0),
            Self::Elu { alpha } => {
                if v < 0.0 {
                    alpha * (v.exp() - 1.0)
                } else {
                    v
                }
            }
            Self::Softsign => v / (1.0 + v.abs()),
            Self::Softplus => (1.0 + v.exp()).ln(),
        }
    }

    /// Applies the function to every value of `values`, after clipping them
    /// to `[-clip, clip]` when the layer clips.
    fn apply_all(self, values: &mut [f32], clip: Option<f32>) {
        if let Some(clip) = clip {
            values.iter_mut().for_each(|v| *v = v.clamp(-clip, clip));
        }
        match self {
            Self::Sigmoid => usan_core::activation::sigmoid(values),
            Self::Tanh => usan_core::activation::tanh(values),
            other => values.iter_mut().for_each(|v| *v = other.apply(*v)),
        }
    }
}

/// Which directions a layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Forward,
    Reverse,
    Bidirectional,
}

impl Direction {
    fn count(self) -> usize {
        if self == Self::Bidirectional { 2 } else { 1 }
    }

    /// Whether direction `d` (0 or 1) walks the sequence from its end.
    fn reversed(self, d: usize) -> bool {
        self == Self::Reverse || (self == Self::Bidirectional && d == 1)
    }
}

/// An `LSTM` or `GRU` node: its attributes, and where its optional inputs
/// and outputs sit among those the node names.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Recurrent {
    cell: Cell,
    hidden: usize,
    direction: Direction,
    batch_first: bool,
    clip: Option<f32>,
    /// `cell.functions()` per direction.
    functions: Vec<Function>,
    bias: Option<usize>,
    sequence_lens: Option<usize>,
    initial_h: Option<usize>,
    initial_c: Option<usize>,
    peepholes: Option<usize>,
    y: Option<usize>,
    y_h: Option<usize>,
    y_c: Option<usize>,
}

pub(super) fn lstm(_: &ParsingContext, node: &NodeProto) -> Built {
    let input_forget = Attrs::of(node).int("input_forget", 0) != 0;
    Ok((expand(Recurrent::from_node(node, Cell::Lstm { input_forget })?), vec![]))
}

pub(super) fn gru(_: &ParsingContext, node: &NodeProto) -> Built {
    let linear_before_reset = Attrs::of(node).int("linear_before_reset", 0) != 0;
    Ok((expand(Recurrent::from_node(node, Cell::Gru { linear_before_reset })?), vec![]))
}

/// The position among the named (non-empty) entries of each of `names`' slots.
fn slots(names: &[String]) -> Vec<Option<usize>> {
    let mut next = 0;
    names
        .iter()
        .map(|name| {
            (!name.is_empty()).then(|| {
                next += 1;
                next - 1
            })
        })
        .collect()
}

impl Recurrent {
    fn from_node(node: &NodeProto, cell: Cell) -> TractResult<Self> {
        let a = Attrs::of(node);
        let name = cell.name();
        let hidden = a.int("hidden_size", 0);
        ensure!(hidden > 0, "{name} needs a positive hidden_size, not {hidden}");
        let direction = match a.string("direction", "forward")?.as_str() {
            "forward" => Direction::Forward,
            "reverse" => Direction::Reverse,
            "bidirectional" => Direction::Bidirectional,
            other => bail!("{name} direction {other} is not forward, reverse or bidirectional"),
        };
        let per_direction = cell.functions();
        let names = a.strings("activations")?;
        let defaults: &[&str] = match cell {
            Cell::Lstm { .. } => &["Sigmoid", "Tanh", "Tanh"],
            Cell::Gru { .. } => &["Sigmoid", "Tanh"],
        };
        let names: Vec<String> = if names.is_empty() {
            (0..direction.count()).flat_map(|_| defaults.iter().map(|s| (*s).to_string())).collect()
        } else if names.len() == per_direction && direction == Direction::Bidirectional {
            names.iter().chain(&names).cloned().collect()
        } else {
            names
        };
        ensure!(
            names.len() == per_direction * direction.count(),
            "{name} lists {} activations; {} directions take {}",
            names.len(),
            direction.count(),
            per_direction * direction.count()
        );
        let (mut alphas, mut betas) =
            (a.floats("activation_alpha").iter().copied(), a.floats("activation_beta").iter().copied());
        let functions =
            names.iter().map(|n| Function::parse(n, &mut alphas, &mut betas)).collect::<TractResult<Vec<_>>>()?;
        let clip = a.has("clip").then(|| a.float("clip", 0.0));
        if let Some(clip) = clip {
            ensure!(clip > 0.0, "{name} clip must be positive, not {clip}");
        }
        let inputs = slots(&node.input);
        let outputs = slots(&node.output);
        ensure!(inputs.len() >= 3 && inputs[..3].iter().all(Option::is_some), "{name} needs inputs X, W and R");
        let input = |i: usize| inputs.get(i).copied().flatten();
        let output = |i: usize| outputs.get(i).copied().flatten();
        let is_lstm = matches!(cell, Cell::Lstm { .. });
        Ok(Self {
            cell,
            hidden: usize::try_from(hidden)?,
            direction,
            batch_first: a.int("layout", 0) == 1,
            clip,
            functions,
            bias: input(3),
            sequence_lens: input(4),
            initial_h: input(5),
            initial_c: if is_lstm { input(6) } else { None },
            peepholes: if is_lstm { input(7) } else { None },
            y: output(0),
            y_h: output(1),
            y_c: if is_lstm { output(2) } else { None },
        })
    }

    fn input_count(&self) -> usize {
        3 + [self.bias, self.sequence_lens, self.initial_h, self.initial_c, self.peepholes]
            .iter()
            .filter(|s| s.is_some())
            .count()
    }

    fn output_count(&self) -> usize {
        [self.y, self.y_h, self.y_c].iter().filter(|s| s.is_some()).count()
    }

    /// The output shapes, from the input `[T, N, F]` (`[N, T, F]` batch first).
    fn output_shapes<D: Clone + From<usize>>(&self, x: &[D]) -> Vec<(usize, TVec<D>)> {
        let (seq, batch) = if self.batch_first { (x[1].clone(), x[0].clone()) } else { (x[0].clone(), x[1].clone()) };
        let (dirs, hidden) = (D::from(self.direction.count()), D::from(self.hidden));
        let state: TVec<D> = if self.batch_first {
            tvec![batch.clone(), dirs.clone(), hidden.clone()]
        } else {
            tvec![dirs.clone(), batch.clone(), hidden.clone()]
        };
        let y: TVec<D> =
            if self.batch_first { tvec![batch, seq, dirs, hidden] } else { tvec![seq, dirs, batch, hidden] };
        let mut shapes = vec![];
        if let Some(slot) = self.y {
            shapes.push((slot, y));
        }
        for slot in [self.y_h, self.y_c].into_iter().flatten() {
            shapes.push((slot, state.clone()));
        }
        shapes.sort_by_key(|(slot, _)| *slot);
        shapes
    }
}

impl Expansion for Recurrent {
    fn name(&self) -> StaticName {
        self.cell.name().into()
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(self.output_count())
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, self.input_count())?;
        check_output_arity(outputs, self.output_count())?;
        s.equals(&inputs[0].rank, 3)?;
        s.equals(&inputs[1].rank, 3)?;
        s.equals(&inputs[2].rank, 3)?;
        for output in outputs {
            s.equals(&output.datum_type, &inputs[0].datum_type)?;
        }
        let this = self.clone();
        s.given(&inputs[0].shape, move |s, shape| {
            for (slot, dims) in this.output_shapes(&shape) {
                s.equals(&outputs[slot].shape, dims)?;
            }
            Ok(())
        })
    }

    fn wire(&self, prefix: &str, model: &mut TypedModel, inputs: &[OutletId]) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, RecurrentOp(self.clone()), inputs)
    }
}

/// The layer in tract's typed model and plan.
#[derive(Clone, Debug, PartialEq)]
struct RecurrentOp(Recurrent);

impl Eq for RecurrentOp {}

impl Op for RecurrentOp {
    fn name(&self) -> StaticName {
        self.0.cell.name().into()
    }

    op_as_typed_op!();
}

impl TypedOp for RecurrentOp {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let x = inputs.first().context("no input")?;
        ensure!(
            x.rank() == 3,
            "{} takes a [sequence, batch, features] input, not rank {}",
            self.0.cell.name(),
            x.rank()
        );
        let shape: TVec<TDim> = x.shape.iter().cloned().collect();
        Ok(self.0.output_shapes(&shape).into_iter().map(|(_, dims)| x.datum_type.fact(dims)).collect())
    }

    as_op!();
}

impl EvalOp for RecurrentOp {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let refs: Vec<&Tensor> = inputs.iter().map(|v| &**v).collect();
        Ok(self.0.run(&refs)?.into_iter().map(IntoTValue::into_tvalue).collect())
    }
}

/// An input's values as `f32`, checked against the shape the layer needs.
fn floats<'t>(tensor: &'t Tensor, what: &str, want: &[usize]) -> TractResult<&'t [f32]> {
    ensure!(tensor.datum_type() == f32::datum_type(), "{what} must be float, not {:?}", tensor.datum_type());
    ensure!(tensor.shape() == want, "{what} has shape {:?}; the layer needs {want:?}", tensor.shape());
    tensor.try_as_plain_ram()?.as_slice::<f32>()
}

thread_local! {
    /// Each thread's room for a layer's gates (every step's at once): kept
    /// between batches, so that a batch neither zeroes nor faults in pages.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What one direction reads, sliced out of the node's inputs.
struct Weights<'a> {
    /// `[gates · hidden, features]`.
    w: &'a [f32],
    /// `[gates · hidden, hidden]`.
    r: &'a [f32],
    /// `x·Wᵀ`'s bias plus, where the cell adds it there too, `h·Rᵀ`'s.
    input_bias: Vec<f32>,
    /// `h·Rᵀ`'s bias, where the cell keeps it apart (a GRU's).
    recurrent_bias: Vec<f32>,
    /// `[i, o, f]` peepholes (LSTM).
    peepholes: Option<&'a [f32]>,
    functions: &'a [Function],
}

/// The sizes of one evaluation.
#[derive(Clone, Copy)]
struct Dims {
    seq: usize,
    batch: usize,
    features: usize,
    hidden: usize,
    dirs: usize,
    batch_first: bool,
}

impl Dims {
    /// Which row of the input (taken as `[seq · batch, features]`) holds row `n`'s step `t`.
    fn row(self, t: usize, n: usize) -> usize {
        if self.batch_first { n * self.seq + t } else { t * self.batch + n }
    }

    /// Where row `n`'s hidden values of step `t`, direction `d` start in `Y`.
    fn y_at(self, t: usize, d: usize, n: usize) -> usize {
        if self.batch_first {
            ((n * self.seq + t) * self.dirs + d) * self.hidden
        } else {
            ((t * self.dirs + d) * self.batch + n) * self.hidden
        }
    }

    /// Where row `n`'s state of direction `d` starts in `Y_h`, `Y_c` and the initial states.
    fn state_at(self, d: usize, n: usize) -> usize {
        if self.batch_first { (n * self.dirs + d) * self.hidden } else { (d * self.batch + n) * self.hidden }
    }

    fn state_shape(self) -> [usize; 3] {
        if self.batch_first { [self.batch, self.dirs, self.hidden] } else { [self.dirs, self.batch, self.hidden] }
    }
}

/// `out = a · bᵀ` (`accumulate`: `out += a · bᵀ`), where `a` is
/// `[rows, k]` with rows `a_stride` apart, `b` is `[cols, k]` row-major and
/// `out`'s rows lie `out_stride` apart: sgemm, reading each where it lies.
#[allow(clippy::too_many_arguments)]
fn multiply(
    a: &[f32],
    (rows, k, a_stride): (usize, usize, usize),
    b: &[f32],
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) -> TractResult<()> {
    let cols = b.len() / k.max(1);
    if rows == 0 || cols == 0 {
        return Ok(());
    }
    let a = ArrayView2::from_shape((rows, k).strides((a_stride, 1)), a)?;
    let b = ArrayView2::from_shape((cols, k), b)?;
    let mut out = ArrayViewMut2::from_shape((rows, cols).strides((out_stride, 1)), out)?;
    general_mat_mul(1.0, &a, &b.t(), if accumulate { 1.0 } else { 0.0 }, &mut out);
    Ok(())
}

impl Recurrent {
    /// Runs the layer on the node's inputs, in the node's order.
    fn run(&self, inputs: &[&Tensor]) -> TractResult<TVec<Tensor>> {
        let name = self.cell.name();
        ensure!(inputs.len() == self.input_count(), "{name} got {} inputs", inputs.len());
        let x = inputs[0];
        let &[a, b, features] = x.shape() else { bail!("{name} takes a rank-3 input, not {:?}", x.shape()) };
        let (seq, batch) = if self.batch_first { (b, a) } else { (a, b) };
        let (dirs, hidden, gates) = (self.direction.count(), self.hidden, self.cell.gates());
        let dims = Dims { seq, batch, features, hidden, dirs, batch_first: self.batch_first };
        let x = floats(x, "X", &[a, b, features])?;
        let w = floats(inputs[1], "W", &[dirs, gates * hidden, features])?;
        let r = floats(inputs[2], "R", &[dirs, gates * hidden, hidden])?;
        let bias = self.bias.map(|i| floats(inputs[i], "B", &[dirs, 2 * gates * hidden])).transpose()?;
        let lengths: Option<Vec<usize>> = match self.sequence_lens {
            Some(i) => {
                let lens = inputs[i].cast_to::<i64>()?;
                let lens = lens.try_as_plain_ram()?.as_slice::<i64>()?.to_vec();
                ensure!(lens.len() == batch, "sequence_lens has {} entries for a batch of {batch}", lens.len());
                let lens = lens
                    .into_iter()
                    .map(|l| usize::try_from(l).ok().filter(|&l| l <= seq))
                    .collect::<Option<Vec<usize>>>()
                    .with_context(|| format!("sequence_lens must lie between 0 and the sequence length {seq}"))?;
                // Lengths that all cover the sequence change nothing.
                lens.iter().any(|&l| l < seq).then_some(lens)
            }
            None => None,
        };
        let state_shape = dims.state_shape();
        let initial_h = self.initial_h.map(|i| floats(inputs[i], "initial_h", &state_shape)).transpose()?;
        let initial_c = self.initial_c.map(|i| floats(inputs[i], "initial_c", &state_shape)).transpose()?;
        let peepholes = self.peepholes.map(|i| floats(inputs[i], "P", &[dirs, 3 * hidden])).transpose()?;

        let y_shape: [usize; 4] =
            if self.batch_first { [batch, seq, dirs, hidden] } else { [seq, dirs, batch, hidden] };
        // Y is written in place: a tract tensor made from a `Vec` would be a copy.
        let mut y_tensor = Tensor::zero::<f32>(if self.y.is_some() { &y_shape } else { &[0] })?;
        let mut y_ram = y_tensor.try_as_plain_ram_mut()?;
        let y = y_ram.as_slice_mut::<f32>()?;
        let mut y_h = vec![0f32; dirs * batch * hidden];
        let mut y_c = vec![0f32; dirs * batch * hidden];
        let per = self.cell.functions();
        for d in 0..dirs {
            let block = gates * hidden;
            let (wb, rb) = match bias {
                Some(b) => {
                    let b = &b[d * 2 * block..(d + 1) * 2 * block];
                    (b[..block].to_vec(), b[block..].to_vec())
                }
                None => (vec![0.0; block], vec![0.0; block]),
            };
            let (input_bias, recurrent_bias) = match self.cell {
                Cell::Lstm { .. } => (wb.iter().zip(&rb).map(|(a, b)| a + b).collect(), vec![]),
                Cell::Gru { .. } => (wb, rb),
            };
            let weights = Weights {
                w: &w[d * block * features..(d + 1) * block * features],
                r: &r[d * block * hidden..(d + 1) * block * hidden],
                input_bias,
                recurrent_bias,
                peepholes: peepholes.map(|p| &p[d * 3 * hidden..(d + 1) * 3 * hidden]),
                functions: &self.functions[d * per..(d + 1) * per],
            };
            // The state, row-major [batch, hidden].
            let mut h = vec![0f32; batch * hidden];
            let mut c = vec![0f32; batch * hidden];
            for n in 0..batch {
                let at = dims.state_at(d, n);
                if let Some(h0) = initial_h {
                    h[n * hidden..(n + 1) * hidden].copy_from_slice(&h0[at..at + hidden]);
                }
                if let Some(c0) = initial_c {
                    c[n * hidden..(n + 1) * hidden].copy_from_slice(&c0[at..at + hidden]);
                }
            }
            self.run_direction(dims, d, x, &weights, lengths.as_deref(), &mut h, &mut c, y)?;
            for n in 0..batch {
                let at = dims.state_at(d, n);
                y_h[at..at + hidden].copy_from_slice(&h[n * hidden..(n + 1) * hidden]);
                y_c[at..at + hidden].copy_from_slice(&c[n * hidden..(n + 1) * hidden]);
            }
        }
        let mut outputs: Vec<(usize, Tensor)> = vec![];
        if let Some(slot) = self.y {
            outputs.push((slot, y_tensor));
        }
        if let Some(slot) = self.y_h {
            outputs.push((slot, super::make(&state_shape, y_h)?));
        }
        if let Some(slot) = self.y_c {
            outputs.push((slot, super::make(&state_shape, y_c)?));
        }
        outputs.sort_by_key(|(slot, _)| *slot);
        Ok(outputs.into_iter().map(|(_, t)| t).collect())
    }

    /// Walks one direction through the sequence, updating `h` and `c` and
    /// writing each step's `h` into `y` (when the node outputs it).
    #[allow(clippy::too_many_arguments)]
    fn run_direction(
        &self,
        dims: Dims,
        d: usize,
        x: &[f32],
        weights: &Weights<'_>,
        lengths: Option<&[usize]>,
        h: &mut [f32],
        c: &mut [f32],
        y: &mut [f32],
    ) -> TractResult<()> {
        let Dims { seq, batch, hidden, .. } = dims;
        let block = self.cell.gates() * hidden;
        SCRATCH.with_borrow_mut(|scratch| {
            // Grown, never shrunk: a batch of the same size next time reuses it.
            if scratch.len() < seq * batch * block {
                scratch.resize(seq * batch * block, 0.0);
            }
            self.walk(dims, d, x, weights, lengths, h, c, y, &mut scratch[..seq * batch * block])
        })
    }

    /// [`Self::run_direction`] with room for every step's gates.
    #[allow(clippy::too_many_arguments)]
    fn walk(
        &self,
        dims: Dims,
        d: usize,
        x: &[f32],
        weights: &Weights<'_>,
        lengths: Option<&[usize]>,
        h: &mut [f32],
        c: &mut [f32],
        y: &mut [f32],
        gates: &mut [f32],
    ) -> TractResult<()> {
        let Dims { seq, batch, features, hidden, .. } = dims;
        let block = self.cell.gates() * hidden;
        // x · Wᵀ for every step in one product, rows in the input's order.
        multiply(x, (seq * batch, features, features), weights.w, gates, block, false)?;
        // Between one row's gates and the next row's at the same step.
        let stride = if dims.batch_first { seq * block } else { block };
        // A GRU's recurrent products, kept apart from the input's.
        let mut recurrent = vec![0f32; if matches!(self.cell, Cell::Gru { .. }) { batch * block } else { 0 }];
        // The state before a step, for rows whose sequence has ended.
        let (mut h_before, mut c_before) = (vec![], vec![]);
        for step in 0..seq {
            let t = if self.direction.reversed(d) { seq - 1 - step } else { step };
            if batch == 0 {
                break;
            }
            if lengths.is_some() {
                h_before.clone_from(&h.to_vec());
                c_before.clone_from(&c.to_vec());
            }
            let first = dims.row(t, 0) * block;
            let step_gates = &mut gates[first..first + (batch - 1) * stride + block];
            match self.cell {
                Cell::Lstm { input_forget } => {
                    multiply(h, (batch, hidden, hidden), weights.r, step_gates, stride, true)?;
                    self.lstm_cells(step_gates, stride, weights, input_forget, h, c);
                }
                Cell::Gru { linear_before_reset } => {
                    self.gru_cells(step_gates, stride, &mut recurrent, weights, linear_before_reset, h)?;
                }
            }
            if let Some(lengths) = lengths {
                for (n, &len) in lengths.iter().enumerate() {
                    if t >= len {
                        let span = n * hidden..(n + 1) * hidden;
                        h[span.clone()].copy_from_slice(&h_before[span.clone()]);
                        c[span.clone()].copy_from_slice(&c_before[span]);
                    }
                }
            }
            if !y.is_empty() {
                for n in 0..batch {
                    let at = dims.y_at(t, d, n);
                    let out = &mut y[at..at + hidden];
                    if lengths.is_some_and(|l| t >= l[n]) {
                        out.fill(0.0);
                    } else {
                        out.copy_from_slice(&h[n * hidden..(n + 1) * hidden]);
                    }
                }
            }
        }
        Ok(())
    }

    /// One LSTM step for every row, from `x·Wᵀ + h·Rᵀ` in `gates` (`[i, o,
    /// f, c]` per row, rows `stride` apart), before the biases.
    fn lstm_cells(
        &self,
        gates: &mut [f32],
        stride: usize,
        weights: &Weights<'_>,
        input_forget: bool,
        h: &mut [f32],
        c: &mut [f32],
    ) {
        let hidden = self.hidden;
        let [f, g, act_h] = [weights.functions[0], weights.functions[1], weights.functions[2]];
        let fast = weights.peepholes.is_none() && !input_forget;
        for (n, (h, c)) in h.chunks_exact_mut(hidden).zip(c.chunks_exact_mut(hidden)).enumerate() {
            let row = &mut gates[n * stride..n * stride + 4 * hidden];
            row.iter_mut().zip(&weights.input_bias).for_each(|(v, b)| *v += b);
            if fast {
                // i, o and f lie side by side: one pass.
                f.apply_all(&mut row[..3 * hidden], self.clip);
            }
            let (i, rest) = row.split_at_mut(hidden);
            let (o, rest) = rest.split_at_mut(hidden);
            let (fg, cand) = rest.split_at_mut(hidden);
            if !fast {
                if let Some(p) = weights.peepholes {
                    i.iter_mut().zip(&p[..hidden]).zip(&*c).for_each(|((v, p), c)| *v += p * c);
                    fg.iter_mut().zip(&p[2 * hidden..]).zip(&*c).for_each(|((v, p), c)| *v += p * c);
                }
                f.apply_all(i, self.clip);
                if input_forget {
                    fg.iter_mut().zip(&*i).for_each(|(v, i)| *v = 1.0 - i);
                } else {
                    f.apply_all(fg, self.clip);
                }
            }
            g.apply_all(cand, self.clip);
            for j in 0..hidden {
                c[j] = fg[j] * c[j] + i[j] * cand[j];
            }
            if !fast {
                // The output gate's peephole reads the new cell state.
                if let Some(p) = weights.peepholes {
                    o.iter_mut().zip(&p[hidden..2 * hidden]).zip(&*c).for_each(|((v, p), c)| *v += p * c);
                }
                f.apply_all(o, self.clip);
            }
            // h = o ⊙ h(c), h(c) computed in the candidate's room.
            cand.copy_from_slice(c);
            act_h.apply_all(cand, self.clip);
            for j in 0..hidden {
                h[j] = o[j] * cand[j];
            }
        }
    }

    /// One GRU step for every row, from `x·Wᵀ` in `gates` (`[z, r, h]` per
    /// row, rows `stride` apart, before the biases); `recurrent` is room for
    /// the `h·Rᵀ` products.
    fn gru_cells(
        &self,
        gates: &mut [f32],
        stride: usize,
        recurrent: &mut [f32],
        weights: &Weights<'_>,
        linear_before_reset: bool,
        h: &mut [f32],
    ) -> TractResult<()> {
        let hidden = self.hidden;
        let block = 3 * hidden;
        let batch = h.len() / hidden.max(1);
        let [f, g] = [weights.functions[0], weights.functions[1]];
        let (input_bias, recurrent_bias) = (&weights.input_bias, &weights.recurrent_bias);
        // With linear_before_reset every recurrent product now; else z's and
        // r's, and h's once r is known.
        let products = if linear_before_reset { block } else { 2 * hidden };
        multiply(h, (batch, hidden, hidden), &weights.r[..products * hidden], recurrent, block, false)?;
        for n in 0..batch {
            let row = &mut gates[n * stride..n * stride + 2 * hidden];
            let rec = &recurrent[n * block..n * block + 2 * hidden];
            for j in 0..2 * hidden {
                row[j] += input_bias[j] + rec[j] + recurrent_bias[j];
            }
            f.apply_all(row, self.clip);
        }
        if !linear_before_reset {
            // (r ⊙ h) · Rhᵀ into the recurrent buffer's h part.
            let rh: Vec<f32> = (0..batch)
                .flat_map(|n| {
                    let r = &gates[n * stride + hidden..n * stride + 2 * hidden];
                    r.iter().zip(&h[n * hidden..(n + 1) * hidden]).map(|(r, h)| r * h)
                })
                .collect();
            multiply(
                &rh,
                (batch, hidden, hidden),
                &weights.r[2 * hidden * hidden..],
                &mut recurrent[2 * hidden..],
                block,
                false,
            )?;
        }
        for (n, h) in h.chunks_exact_mut(hidden).enumerate() {
            let row = &mut gates[n * stride..n * stride + block];
            let (zr, cand) = row.split_at_mut(2 * hidden);
            let (z, r) = zr.split_at(hidden);
            let rec_h = &recurrent[n * block + 2 * hidden..(n + 1) * block];
            let (wb, rb) = (&input_bias[2 * hidden..], &recurrent_bias[2 * hidden..]);
            for j in 0..hidden {
                let recurrent_part = rec_h[j] + rb[j];
                cand[j] += wb[j] + if linear_before_reset { r[j] * recurrent_part } else { recurrent_part };
            }
            g.apply_all(cand, self.clip);
            for j in 0..hidden {
                h[j] = (1.0 - z[j]) * cand[j] + z[j] * h[j];
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::make;

    fn layer(cell: Cell, direction: Direction, batch_first: bool) -> Recurrent {
        let per = cell.functions();
        let defaults = [Function::Sigmoid, Function::Tanh, Function::Tanh];
        Recurrent {
            cell,
            hidden: 1,
            direction,
            batch_first,
            clip: None,
            functions: (0..direction.count()).flat_map(|_| defaults[..per].iter().copied()).collect(),
            bias: Some(3),
            sequence_lens: None,
            initial_h: None,
            initial_c: None,
            peepholes: None,
            y: Some(0),
            y_h: Some(1),
            y_c: if matches!(cell, Cell::Lstm { .. }) { Some(2) } else { None },
        }
    }

    fn sigmoid(v: f64) -> f64 {
        1.0 / (1.0 + (-v).exp())
    }

    fn values(t: &Tensor) -> Vec<f32> {
        t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    /// One hidden unit over one feature: W, R and B per gate, the sequence of one row.
    fn run(layer: &Recurrent, w: &[f32], r: &[f32], b: &[f32], xs: &[f32]) -> TVec<Tensor> {
        let gates = layer.cell.gates();
        let x = make(&[xs.len(), 1, 1], xs.to_vec()).unwrap();
        let w = make(&[1, gates, 1], w.to_vec()).unwrap();
        let r = make(&[1, gates, 1], r.to_vec()).unwrap();
        let b = make(&[1, 2 * gates], b.to_vec()).unwrap();
        layer.run(&[&x, &w, &r, &b]).unwrap()
    }

    /// The specification's equations in `f64`, step by step.
    fn lstm_reference(w: &[f32], r: &[f32], b: &[f32], xs: &[f32]) -> Vec<(f64, f64)> {
        lstm_from(w, r, b, xs, (0.0, 0.0))
    }

    fn lstm_from(w: &[f32], r: &[f32], b: &[f32], xs: &[f32], (mut h, mut c): (f64, f64)) -> Vec<(f64, f64)> {
        let [w, r, b] = [w, r, b].map(|v| v.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>());
        xs.iter()
            .map(|&x| {
                let pre = |g: usize| w[g] * f64::from(x) + r[g] * h + b[g] + b[4 + g];
                let (i, o, f, g) = (sigmoid(pre(0)), sigmoid(pre(1)), sigmoid(pre(2)), pre(3).tanh());
                c = f * c + i * g;
                h = o * c.tanh();
                (h, c)
            })
            .collect()
    }

    #[test]
    fn an_lstm_follows_the_specifications_equations_step_by_step() {
        let (w, r, b) = ([0.5, -0.3, 0.8, 1.1], [0.2, 0.4, -0.6, 0.7], [0.1, 0.0, 0.2, -0.1, 0.05, 0.0, 0.0, 0.3]);
        let xs = [1.0, -2.0, 0.5];
        let out = run(&layer(Cell::Lstm { input_forget: false }, Direction::Forward, false), &w, &r, &b, &xs);
        let want = lstm_reference(&w, &r, &b, &xs);
        let y = values(&out[0]);
        for (step, (h, _)) in want.iter().enumerate() {
            assert!((f64::from(y[step]) - h).abs() < 2e-6, "step {step}: {} vs {h}", y[step]);
        }
        let (h, c) = want[2];
        assert!((f64::from(values(&out[1])[0]) - h).abs() < 2e-6 && (f64::from(values(&out[2])[0]) - c).abs() < 2e-6);
    }

    #[test]
    fn reverse_reads_the_sequence_from_its_end_and_bidirectional_runs_both() {
        let (w, r, b) = ([0.5, -0.3, 0.8, 1.1], [0.2, 0.4, -0.6, 0.7], [0.0; 8]);
        let xs = [1.0, -2.0, 0.5];
        let backwards: Vec<f32> = xs.iter().rev().copied().collect();
        let reversed = run(&layer(Cell::Lstm { input_forget: false }, Direction::Reverse, false), &w, &r, &b, &xs);
        let want = lstm_reference(&w, &r, &b, &backwards);
        // Y at step t holds the state after reading steps T-1 down to t.
        let y = values(&reversed[0]);
        for t in 0..3 {
            assert!((f64::from(y[t]) - want[2 - t].0).abs() < 2e-6, "step {t}");
        }
        let both = layer(Cell::Lstm { input_forget: false }, Direction::Bidirectional, false);
        let ww: Vec<f32> = w.iter().chain(&w).copied().collect();
        let rr: Vec<f32> = r.iter().chain(&r).copied().collect();
        let x = make(&[3, 1, 1], xs.to_vec()).unwrap();
        let out = both
            .run(&[
                &x,
                &make(&[2, 4, 1], ww).unwrap(),
                &make(&[2, 4, 1], rr).unwrap(),
                &make(&[2, 8], vec![0f32; 16]).unwrap(),
            ])
            .unwrap();
        assert_eq!(out[0].shape(), [3, 2, 1, 1]);
        let y = values(&out[0]);
        let forward = lstm_reference(&w, &r, &b, &xs);
        for t in 0..3 {
            assert!((f64::from(y[2 * t]) - forward[t].0).abs() < 2e-6, "forward, step {t}");
            assert!((f64::from(y[2 * t + 1]) - want[2 - t].0).abs() < 2e-6, "backward, step {t}");
        }
    }

    #[test]
    fn a_gru_follows_the_specifications_equations_with_either_reset() {
        let (w, r, b) = ([0.5f32, -0.3, 0.8], [0.2f32, 0.4, -0.6], [0.1f32, 0.0, 0.2, -0.1, 0.05, 0.3]);
        let xs = [1.0f32, -2.0, 0.5];
        for linear_before_reset in [false, true] {
            let out = run(&layer(Cell::Gru { linear_before_reset }, Direction::Forward, false), &w, &r, &b, &xs);
            let y = values(&out[0]);
            let [w, r, b] = [&w[..], &r[..], &b[..]].map(|v| v.iter().map(|&v| f64::from(v)).collect::<Vec<f64>>());
            let mut h = 0.0f64;
            for (step, &x) in xs.iter().enumerate() {
                let x = f64::from(x);
                let z = sigmoid(w[0] * x + r[0] * h + b[0] + b[3]);
                let reset = sigmoid(w[1] * x + r[1] * h + b[1] + b[4]);
                let candidate = if linear_before_reset {
                    (w[2] * x + b[2] + reset * (r[2] * h + b[5])).tanh()
                } else {
                    (w[2] * x + b[2] + r[2] * (reset * h) + b[5]).tanh()
                };
                h = (1.0 - z) * candidate + z * h;
                assert!(
                    (f64::from(y[step]) - h).abs() < 2e-6,
                    "linear_before_reset {linear_before_reset}, step {step}"
                );
            }
        }
    }

    #[test]
    fn a_missing_value_makes_its_row_nan_from_its_step_on_and_leaves_other_rows_alone() {
        let lstm = layer(Cell::Lstm { input_forget: false }, Direction::Forward, true);
        // Two rows of three steps, batch first; row 1 misses its second value.
        let x = make(&[2, 3, 1], vec![1.0f32, -2.0, 0.5, 1.0, f32::NAN, 0.5]).unwrap();
        let w = make(&[1, 4, 1], vec![0.5f32, -0.3, 0.8, 1.1]).unwrap();
        let r = make(&[1, 4, 1], vec![0.2f32, 0.4, -0.6, 0.7]).unwrap();
        let b = make(&[1, 8], vec![0f32; 8]).unwrap();
        let out = lstm.run(&[&x, &w, &r, &b]).unwrap();
        assert_eq!(out[0].shape(), [2, 3, 1, 1]);
        let y = values(&out[0]);
        assert!(y[..4].iter().all(|v| v.is_finite()), "{y:?}");
        assert!(y[4].is_nan() && y[5].is_nan(), "{y:?}");
        assert_eq!(y[3], y[0], "the rows' first steps are alike");
    }

    #[test]
    fn a_row_past_its_length_keeps_its_state_and_outputs_zeros() {
        let mut lstm = layer(Cell::Lstm { input_forget: false }, Direction::Forward, false);
        lstm.sequence_lens = Some(4);
        // Three steps of two rows, sequence first: lengths 3 and 1.
        let x = make(&[3, 2, 1], vec![1.0f32, 1.0, -2.0, -2.0, 0.5, 0.5]).unwrap();
        let w = make(&[1, 4, 1], vec![0.5f32, -0.3, 0.8, 1.1]).unwrap();
        let r = make(&[1, 4, 1], vec![0.2f32, 0.4, -0.6, 0.7]).unwrap();
        let b = make(&[1, 8], vec![0f32; 8]).unwrap();
        let lens = make(&[2], vec![3i32, 1]).unwrap();
        let out = lstm.run(&[&x, &w, &r, &b, &lens]).unwrap();
        let (y, y_h) = (values(&out[0]), values(&out[1]));
        assert_eq!([y[3], y[5]], [0.0, 0.0], "steps past row 1's length: {y:?}");
        assert_eq!(y_h[1], y[1], "row 1's final state is its first step's");
        assert_eq!(y_h[0], y[4], "row 0 ran to the end");
        assert!(lstm.run(&[&x, &w, &r, &b, &make(&[2], vec![4i32, 1]).unwrap()]).is_err(), "a length past T");
    }

    #[test]
    fn an_initial_state_is_where_the_walk_starts() {
        let mut lstm = layer(Cell::Lstm { input_forget: false }, Direction::Forward, false);
        (lstm.initial_h, lstm.initial_c) = (Some(4), Some(5));
        let (w, r, b) = ([0.5f32, -0.3, 0.8, 1.1], [0.2f32, 0.4, -0.6, 0.7], [0f32; 8]);
        let xs = [1.0f32, -2.0];
        let tensors = [
            make(&[2, 1, 1], xs.to_vec()).unwrap(),
            make(&[1, 4, 1], w.to_vec()).unwrap(),
            make(&[1, 4, 1], r.to_vec()).unwrap(),
            make(&[1, 8], b.to_vec()).unwrap(),
            make(&[1, 1, 1], vec![0.3f32]).unwrap(),
            make(&[1, 1, 1], vec![-0.7f32]).unwrap(),
        ];
        let out = lstm.run(&tensors.iter().collect::<Vec<_>>()).unwrap();
        let want = lstm_from(&w, &r, &b, &xs, (0.3f32.into(), (-0.7f32).into()));
        let y = values(&out[0]);
        for (step, (h, _)) in want.iter().enumerate() {
            assert!((f64::from(y[step]) - h).abs() < 2e-6, "step {step}: {} vs {h}", y[step]);
        }
    }

    #[test]
    fn weights_of_the_wrong_shape_are_an_error_naming_them() {
        let lstm = layer(Cell::Lstm { input_forget: false }, Direction::Forward, false);
        let x = make(&[3, 1, 2], vec![0f32; 6]).unwrap();
        let w = make(&[1, 4, 1], vec![0f32; 4]).unwrap();
        let r = make(&[1, 4, 1], vec![0f32; 4]).unwrap();
        let b = make(&[1, 8], vec![0f32; 8]).unwrap();
        let err = lstm.run(&[&x, &w, &r, &b]).unwrap_err().to_string();
        assert!(err.contains("W has shape [1, 4, 1]; the layer needs [1, 4, 2]"), "{err}");
    }

    #[test]
    fn usans_sigmoid_and_tanh_are_tracts_bit_for_bit() {
        use tract_linalg::generic::{sigmoid::ssigmoid, tanh::stanh};
        for i in -20_000..=20_000 {
            let x = i as f32 * 0.001;
            assert_eq!(usan_core::activation::sigmoid_one(x).to_bits(), ssigmoid(x).to_bits(), "sigmoid({x})");
            assert_eq!(usan_core::activation::tanh_one(x).to_bits(), stanh(x).to_bits(), "tanh({x})");
        }
    }
}
