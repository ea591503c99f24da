//! A 1-D convolution over `[N, C, L]` with constant weights (and the
//! activation that alone reads it): what a `Conv` with rank-3 weights
//! becomes once [`crate::rewrite::fuse_dense_layers`] has found it.
//!
//! Plant models convolve short windows of a few signals over time (a
//! `Conv1d` over 20 cycles of 15 sensors). tract lays such a window out
//! value by value through its general patcher and pads its matrix tiles;
//! perf put a third of the network's time there. Here a block of rows is
//! laid out the other way round, one run of the window per input channel
//! and tap (for a stride of 1, a plain copy of the row's channel), so that
//! the whole block is one sgemm `W · columns`, whose result rows are the
//! output's channels: each lands as one contiguous run with its bias and
//! activation applied on the way.

use super::elementwise::Activation;
use super::{Attrs, Built, Kernel, OutShape, OutSpec, native};
use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;
use tract_onnx::tract_hir::tract_ndarray::{ArrayView2, ArrayViewMut2, ShapeBuilder, linalg::general_mat_mul};

/// The operator the rewrite emits, in usan's own domain.
pub(crate) const OP_TYPE: &str = "UsanConv1d";

/// Rows laid out and multiplied at a time: their columns stay in cache.
const BLOCK_ROWS: usize = 64;

/// How the ends of the window are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Padding {
    /// These many zeros before and after (`auto_pad = NOTSET`, or `VALID` with none).
    Explicit { begin: usize, end: usize },
    /// `ceil(L / stride)` outputs, the extra zero at the end (`SAME_UPPER`) or the beginning (`SAME_LOWER`).
    Same { upper: bool },
}

/// Where the windows lie: what the output length and the layout need.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Windows {
    pub kernel: usize,
    pub stride: usize,
    pub dilation: usize,
    pub padding: Padding,
}

impl Windows {
    /// Input positions one window covers, first to last tap.
    fn span(self) -> usize {
        self.dilation * (self.kernel - 1) + 1
    }

    /// The output length for an input of `length`, and the zeros padded
    /// before it; `None` when the window does not fit once.
    pub(crate) fn along(self, length: usize) -> Option<(usize, usize)> {
        match self.padding {
            Padding::Explicit { begin, end } => {
                let padded = length + begin + end;
                (padded >= self.span()).then(|| ((padded - self.span()) / self.stride + 1, begin))
            }
            Padding::Same { upper } => {
                let out = length.div_ceil(self.stride);
                let total = ((out.max(1) - 1) * self.stride + self.span()).saturating_sub(length);
                let begin = if upper { total / 2 } else { total - total / 2 };
                Some((out, begin))
            }
        }
    }

    /// The output length for a symbolic input length (the inference rules).
    pub(crate) fn along_dim(self, length: &TDim) -> TDim {
        if let Ok(length) = length.to_usize() {
            return self.along(length).map_or(0, |(out, _)| out).to_dim();
        }
        match self.padding {
            Padding::Explicit { begin, end } => {
                (length.clone() + (begin + end) as i64 - self.span() as i64) / self.stride as u64 + 1
            }
            Padding::Same { .. } => length.clone().div_ceil(self.stride as u64),
        }
    }
}

#[derive(Debug)]
struct Conv1d {
    /// `[out_channels, in_channels / group, kernel]`, row-major.
    weights: Vec<f32>,
    out_channels: usize,
    /// Input channels per group.
    group_inputs: usize,
    group: usize,
    windows: Windows,
    bias: Option<Vec<f32>>,
    activation: Option<Activation>,
}

/// Builds the rewrite's node (attributes `weights`, `shape` = `[M, C/group,
/// K]`, `group`, `stride`, `dilation`, `pads` = `[begin, end]` or `auto_pad`
/// `SAME_UPPER`/`SAME_LOWER`, optional `bias` and `activation`).
pub(super) fn conv1d(_: &ParsingContext, node: &NodeProto) -> Built {
    let a = Attrs::of(node);
    let &[out_channels, group_inputs, kernel] = a.ints("shape") else { bail!("{OP_TYPE} needs a shape [M, C, K]") };
    let [out_channels, group_inputs, kernel] = [out_channels, group_inputs, kernel].map(usize::try_from);
    let (out_channels, group_inputs, kernel) = (out_channels?, group_inputs?, kernel?);
    let weights = a.floats("weights").to_vec();
    ensure!(
        out_channels > 0 && group_inputs > 0 && kernel > 0 && weights.len() == out_channels * group_inputs * kernel,
        "{OP_TYPE} has {} weights for shape [{out_channels}, {group_inputs}, {kernel}]",
        weights.len()
    );
    let group = usize::try_from(a.int("group", 1))?;
    ensure!(group > 0 && out_channels % group == 0, "{OP_TYPE}: {out_channels} outputs in {group} groups");
    let [stride, dilation] = [a.int("stride", 1), a.int("dilation", 1)].map(usize::try_from);
    let (stride, dilation) = (stride?, dilation?);
    ensure!(stride > 0 && dilation > 0, "{OP_TYPE} needs a positive stride and dilation");
    let padding = match a.string("auto_pad", "NOTSET")?.as_str() {
        "SAME_UPPER" => Padding::Same { upper: true },
        "SAME_LOWER" => Padding::Same { upper: false },
        _ => match a.ints("pads") {
            [] => Padding::Explicit { begin: 0, end: 0 },
            &[begin, end] => Padding::Explicit { begin: usize::try_from(begin)?, end: usize::try_from(end)? },
            other => bail!("{OP_TYPE} pads {other:?} are not [begin, end]"),
        },
    };
    let bias = a.has("bias").then(|| a.floats("bias").to_vec());
    if let Some(bias) = &bias {
        ensure!(bias.len() == out_channels, "{OP_TYPE} has {} biases for {out_channels} outputs", bias.len());
    }
    let activation = Activation::attribute(&a, OP_TYPE)?;
    let windows = Windows { kernel, stride, dilation, padding };
    native(Conv1d { weights, out_channels, group_inputs, group, windows, bias, activation })
}

impl Kernel for Conv1d {
    fn name(&self) -> &'static str {
        OP_TYPE
    }

    fn outputs(&self) -> Vec<OutSpec> {
        vec![OutSpec {
            datum: Some(f32::datum_type()),
            shape: OutShape::Windows { channels: self.out_channels, windows: self.windows },
        }]
    }

    fn eval(&self, input: &Tensor) -> TractResult<TVec<Tensor>> {
        ensure!(input.datum_type() == f32::datum_type(), "{OP_TYPE} takes float, not {:?}", input.datum_type());
        let &[rows, channels, length] = input.shape() else {
            bail!("{OP_TYPE} takes [N, C, L], not {:?}", input.shape())
        };
        let inputs = self.group_inputs * self.group;
        ensure!(channels == inputs, "the convolution takes {inputs} channels, the input has {channels}");
        let (out_length, begin) = self
            .windows
            .along(length)
            .with_context(|| format!("a window of {} does not fit {length} values", self.windows.span()))?;
        let x = input.try_as_plain_ram()?;
        let x = x.as_slice::<f32>()?;
        let mut tensor = Tensor::zero::<f32>(&[rows, self.out_channels, out_length])?;
        let mut ram = tensor.try_as_plain_ram_mut()?;
        let out = ram.as_slice_mut::<f32>()?;
        if rows == 0 || out_length == 0 {
            return Ok(tvec![tensor]);
        }
        if self.windows.stride == 1 {
            self.shifted(x, [rows, channels, length], out_length, begin, out)?;
        } else {
            self.laid_out(x, [rows, channels, length], out_length, begin, out)?;
        }
        Ok(tvec![tensor])
    }
}

impl Conv1d {
    /// Stride 1: each block of rows is copied once, channel by channel, into
    /// zero-padded lines `[C, rows · (L + pads)]`; tap k's product reads
    /// those lines shifted by `k · dilation`, so the block is `kernel`
    /// sgemm calls over views, no value copied per tap. Each row also gets
    /// outputs for the positions past its last window (read across into
    /// the next row's padding); they are computed and dropped.
    fn shifted(
        &self,
        x: &[f32],
        [rows, channels, length]: [usize; 3],
        out_length: usize,
        begin: usize,
        out: &mut [f32],
    ) -> TractResult<()> {
        let Windows { kernel, dilation, .. } = self.windows;
        let span = self.windows.span();
        // Each row's line: its padded values, at least one window and every output long.
        let line = (length + begin).max(out_length + span - 1);
        let group_outputs = self.out_channels / self.group;
        let block_rows = BLOCK_ROWS.min(rows);
        let width = block_rows * line + span;
        let mut lines = vec![0f32; channels * width];
        let mut product = vec![0f32; group_outputs * block_rows * line];
        for first in (0..rows).step_by(BLOCK_ROWS) {
            let block = BLOCK_ROWS.min(rows - first);
            for c in 0..channels {
                for n in 0..block {
                    let from = ((first + n) * channels + c) * length;
                    let at = c * width + n * line + begin;
                    lines[at..at + length].copy_from_slice(&x[from..from + length]);
                }
            }
            let columns = block * line;
            for g in 0..self.group {
                let mut p =
                    ArrayViewMut2::from_shape((group_outputs, columns), &mut product[..group_outputs * columns])?;
                for k in 0..kernel {
                    // W[:, :, k] of this group: [outputs, inputs] with rows C·K apart, columns K apart.
                    let w = &self.weights[g * group_outputs * self.group_inputs * kernel + k..];
                    let w = ArrayView2::from_shape(
                        (group_outputs, self.group_inputs).strides((self.group_inputs * kernel, kernel)),
                        w,
                    )?;
                    let from = g * self.group_inputs * width + k * dilation;
                    let shifted =
                        ArrayView2::from_shape((self.group_inputs, columns).strides((width, 1)), &lines[from..])?;
                    general_mat_mul(1.0, &w, &shifted, if k == 0 { 0.0 } else { 1.0 }, &mut p);
                }
                self.write(&product, columns, line, g, first, block, out_length, out);
            }
        }
        Ok(())
    }

    /// Any stride: the block's windows laid out `[C/group · K, rows · L']`,
    /// one sgemm per group.
    fn laid_out(
        &self,
        x: &[f32],
        [rows, channels, length]: [usize; 3],
        out_length: usize,
        begin: usize,
        out: &mut [f32],
    ) -> TractResult<()> {
        let Windows { kernel, stride, dilation, .. } = self.windows;
        let taps = self.group_inputs * kernel;
        let group_outputs = self.out_channels / self.group;
        let mut columns = vec![0f32; taps * BLOCK_ROWS.min(rows) * out_length];
        let mut product = vec![0f32; group_outputs * BLOCK_ROWS.min(rows) * out_length];
        for first in (0..rows).step_by(BLOCK_ROWS) {
            let block = BLOCK_ROWS.min(rows - first);
            let width = block * out_length;
            for g in 0..self.group {
                // columns[(c, k), (n, t)] = x[n, c, t·stride + k·dilation − begin], zero outside.
                for c in 0..self.group_inputs {
                    for k in 0..kernel {
                        let line = &mut columns[(c * kernel + k) * width..(c * kernel + k + 1) * width];
                        for n in 0..block {
                            let from = ((first + n) * channels + g * self.group_inputs + c) * length;
                            let source = &x[from..from + length];
                            let run = &mut line[n * out_length..(n + 1) * out_length];
                            // Output t reads position t·stride + offset − begin: inside the row for t in lo..hi.
                            let offset = k * dilation;
                            let hi = (length + begin).saturating_sub(offset).div_ceil(stride).min(out_length);
                            let lo = begin.saturating_sub(offset).div_ceil(stride).min(hi);
                            run[..lo].fill(0.0);
                            run[hi..].fill(0.0);
                            if stride == 1 {
                                let at = lo + offset - begin;
                                run[lo..hi].copy_from_slice(&source[at..at + hi - lo]);
                            } else {
                                for (t, v) in run[lo..hi].iter_mut().enumerate() {
                                    *v = source[(lo + t) * stride + offset - begin];
                                }
                            }
                        }
                    }
                }
                let w = &self.weights[g * group_outputs * taps..(g + 1) * group_outputs * taps];
                let w = ArrayView2::from_shape((group_outputs, taps), w)?;
                let cols = ArrayView2::from_shape((taps, width), &columns[..taps * width])?;
                let mut p = ArrayViewMut2::from_shape((group_outputs, width), &mut product[..group_outputs * width])?;
                general_mat_mul(1.0, &w, &cols, 0.0, &mut p);
                self.write(&product, width, out_length, g, first, block, out_length, out);
            }
        }
        Ok(())
    }

    /// Moves group `g`'s products (`[outputs, rows · line]`, each row's
    /// outputs first in its line) into `out` with the bias and activation.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        product: &[f32],
        columns: usize,
        line: usize,
        g: usize,
        first: usize,
        block: usize,
        out_length: usize,
        out: &mut [f32],
    ) {
        let group_outputs = self.out_channels / self.group;
        for o in 0..group_outputs {
            let channel = g * group_outputs + o;
            let bias = self.bias.as_ref().map_or(0.0, |b| b[channel]);
            for n in 0..block {
                let from = &product[o * columns + n * line..o * columns + n * line + out_length];
                let at = ((first + n) * self.out_channels + channel) * out_length;
                let to = &mut out[at..at + out_length];
                match self.activation {
                    Some(activation) => to.iter_mut().zip(from).for_each(|(v, p)| *v = activation.f32(p + bias)),
                    None => to.iter_mut().zip(from).for_each(|(v, p)| *v = p + bias),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::make;

    fn conv(weights: &[f32], shape: [usize; 3], group: usize, windows: Windows) -> Conv1d {
        Conv1d {
            weights: weights.to_vec(),
            out_channels: shape[0],
            group_inputs: shape[1],
            group,
            windows,
            bias: None,
            activation: None,
        }
    }

    fn run(conv: &Conv1d, shape: &[usize], x: &[f32]) -> (Vec<usize>, Vec<f32>) {
        let out = conv.eval(&make(shape, x.to_vec()).unwrap()).unwrap().remove(0);
        (out.shape().to_vec(), out.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().to_vec())
    }

    /// The definition, one output at a time.
    fn reference(conv: &Conv1d, shape: [usize; 3], x: &[f32]) -> Vec<f32> {
        let [rows, channels, length] = shape;
        let (out_length, begin) = conv.windows.along(length).unwrap();
        let (outputs, per) = (conv.out_channels, conv.out_channels / conv.group);
        let mut out = vec![];
        for n in 0..rows {
            for o in 0..outputs {
                let g = o / per;
                for t in 0..out_length {
                    let mut sum = conv.bias.as_ref().map_or(0.0, |b| b[o]);
                    for c in 0..conv.group_inputs {
                        for k in 0..conv.windows.kernel {
                            let at = (t * conv.windows.stride + k * conv.windows.dilation) as i64 - begin as i64;
                            if at >= 0 && (at as usize) < length {
                                let w = conv.weights[(o * conv.group_inputs + c) * conv.windows.kernel + k];
                                sum += w * x[(n * channels + g * conv.group_inputs + c) * length + at as usize];
                            }
                        }
                    }
                    out.push(conv.activation.map_or(sum, |a| a.f32(sum)));
                }
            }
        }
        out
    }

    #[test]
    fn every_geometry_gives_the_definitions_values() {
        let explicit = |begin, end| Padding::Explicit { begin, end };
        // (out, in per group, group, kernel, stride, dilation, padding, length)
        let cases = [
            (3, 2, 1, 3, 1, 1, explicit(0, 0), 9),
            (4, 3, 1, 5, 1, 1, explicit(2, 2), 20),
            (2, 2, 1, 3, 2, 1, explicit(1, 0), 10),
            (2, 1, 2, 2, 1, 3, explicit(0, 1), 8),
            (6, 1, 3, 3, 2, 2, Padding::Same { upper: true }, 11),
            (2, 2, 1, 4, 3, 1, Padding::Same { upper: false }, 7),
        ];
        for (case, &(out, per, group, kernel, stride, dilation, padding, length)) in cases.iter().enumerate() {
            let weights: Vec<f32> = (0..out * per * kernel).map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.1).collect();
            let mut layer = conv(&weights, [out, per, kernel], group, Windows { kernel, stride, dilation, padding });
            layer.bias = Some((0..out).map(|o| o as f32 * 0.5 - 1.0).collect());
            layer.activation = (case % 2 == 1).then_some(Activation::Relu);
            let shape = [BLOCK_ROWS + 3, per * group, length];
            let x: Vec<f32> = (0..shape.iter().product()).map(|i: usize| ((i * 13 % 17) as f32 - 8.0) * 0.25).collect();
            let (got_shape, got) = run(&layer, &shape, &x);
            let want = reference(&layer, shape, &x);
            assert_eq!(got_shape[..2], [shape[0], out], "case {case}");
            assert_eq!(got.len(), want.len(), "case {case}");
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "case {case}, value {i}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn a_missing_value_spoils_only_the_windows_that_cover_it() {
        let layer = conv(
            &[1.0, 1.0],
            [1, 1, 2],
            1,
            Windows { kernel: 2, stride: 1, dilation: 1, padding: Padding::Explicit { begin: 0, end: 0 } },
        );
        let (_, got) = run(&layer, &[1, 1, 4], &[1.0, f32::NAN, 2.0, 3.0]);
        assert!(got[0].is_nan() && got[1].is_nan(), "{got:?}");
        assert_eq!(got[2], 5.0);
    }

    #[test]
    fn a_window_longer_than_the_padded_input_or_the_wrong_channels_is_an_error() {
        let layer = conv(
            &[1.0; 4],
            [1, 1, 4],
            1,
            Windows { kernel: 4, stride: 1, dilation: 1, padding: Padding::Explicit { begin: 0, end: 0 } },
        );
        let err = layer.eval(&make(&[1, 1, 3], vec![0f32; 3]).unwrap()).unwrap_err().to_string();
        assert!(err.contains("a window of 4 does not fit 3 values"), "{err}");
        let err = layer.eval(&make(&[1, 2, 5], vec![0f32; 10]).unwrap()).unwrap_err().to_string();
        assert!(err.contains("takes 1 channels, the input has 2"), "{err}");
    }
}
