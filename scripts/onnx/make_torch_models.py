"""Train small PyTorch networks on the shipped samples, export each with both
of PyTorch's ONNX exporters (TorchScript and dynamo), and record
onnxruntime's outputs as goldens, like make_models.py does.

    python3 -m venv .venv-torch && .venv-torch/bin/pip install -r scripts/onnx/requirements-torch.txt
    .venv-torch/bin/python scripts/onnx/make_torch_models.py tests/data/onnx/torch

The networks cover the layers plant models use: Linear (Gemm/MatMul),
BatchNorm, LayerNorm, ReLU/Tanh, Conv1d, LSTM and GRU, on `[N, F]` rows and
`[N, T, F]` windows (given to usan as T x F values per row).
"""
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_models import SEED, cmapss, split, tep, write_model  # noqa: E402

torch.manual_seed(SEED)
WINDOW = 20


class Autoencoder(nn.Module):
    """Reconstructs the 52 TEP signals through a bottleneck (Gemm, BatchNorm, LayerNorm)."""

    def __init__(self, width):
        super().__init__()
        self.encode = nn.Sequential(nn.Linear(width, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 8), nn.Tanh())
        self.decode = nn.Sequential(nn.Linear(8, 24), nn.LayerNorm(24), nn.ReLU(), nn.Linear(24, width))

    def forward(self, x):
        return self.decode(self.encode(x))


class Recurrent(nn.Module):
    """Remaining useful life from a window of C-MAPSS cycles (LSTM or GRU)."""

    def __init__(self, width, cell):
        super().__init__()
        self.rnn = cell(width, 16, batch_first=True)
        self.head = nn.Linear(16, 1)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1, :])


class Convolutional(nn.Module):
    """Remaining useful life from a window, by 1-D convolutions over time."""

    def __init__(self, width):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(width, 16, kernel_size=5, padding=2), nn.BatchNorm1d(16), nn.ReLU(),
            nn.Conv1d(16, 8, kernel_size=3), nn.ReLU(),
        )
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        h = self.conv(x.transpose(1, 2))
        return self.head(h.mean(dim=2))


def fit(model, x, y, epochs=60):
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(xt), yt)
        loss.backward()
        optimizer.step()
    return model.eval()


def windows(x, rul, units):
    """Windows of WINDOW consecutive cycles of one engine, labelled with the last cycle's RUL."""
    xs, ys = [], []
    for u in np.unique(units):
        rows = np.where(units == u)[0]
        for end in range(WINDOW, len(rows) + 1, 3):
            xs.append(x[rows[end - WINDOW:end]])
            ys.append([rul[rows[end - 1]]])
    return np.array(xs, dtype=np.float32), np.array(ys, dtype=np.float32)


def export(model, example, name, out, dynamo):
    path = out / f"{name}.tmp.onnx"
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(model, (example,), dynamo=True, dynamic_shapes=({0: batch},))
        program.save(str(path))
    else:
        torch.onnx.export(model, (example,), str(path), dynamo=False, input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, opset_version=17)
    onx = onnx.load(str(path), load_external_data=True)
    path.unlink()
    for extra in out.glob(f"{name}.tmp.onnx.data"):
        extra.unlink()
    return onx


def main(out):
    out.mkdir(parents=True, exist_ok=True)
    exporter = f"torch {torch.__version__}"
    xt, _, _ = tep()
    mean, std = xt[:500].mean(axis=0), xt[:500].std(axis=0) + 1e-6
    xt = ((xt - mean) / std).astype(np.float32)
    xt_train, _, gt = split(xt[:800], None)
    ae = fit(Autoencoder(xt.shape[1]), fill(xt_train), fill(xt_train))

    xc, rul, _ = cmapss()
    units = np.loadtxt(Path(__file__).resolve().parents[2] / "examples" / "data" / "cmapss_fd001_demo.csv",
                       delimiter=",", skiprows=1, usecols=0)
    keep = xc.std(axis=0) > 1e-3
    xc = xc[:, keep]
    xc = ((xc - xc.mean(axis=0)) / (xc.std(axis=0) + 1e-6)).astype(np.float32)
    xw, yw = windows(xc, rul, units)
    order = np.random.default_rng(SEED).permutation(len(xw))
    golden_w = xw[order[:48]].copy()
    golden_w[:4, 3, 1] = np.nan  # a missing value inside a window: NaN through every layer
    train_w, train_y = xw[order[48:]], yw[order[48:]] / 125.0
    lstm = fit(Recurrent(xc.shape[1], nn.LSTM), train_w, train_y, epochs=40)
    gru = fit(Recurrent(xc.shape[1], nn.GRU), train_w, train_y, epochs=40)
    conv = fit(Convolutional(xc.shape[1]), train_w, train_y, epochs=40)

    for dynamo in (False, True):
        tag = "dynamo" if dynamo else "torchscript"
        write_model(out, f"torch_{tag}_autoencoder", export(ae, torch.tensor(gt[:2]), "ae", out, dynamo), gt, f"{exporter} ({tag})")
        for name, net in (("lstm", lstm), ("gru", gru), ("conv1d", conv)):
            onx = export(net, torch.tensor(golden_w[:2]), name, out, dynamo)
            # A recurrent layer's gates absorb a NaN into a finite number that
            # depends on the runtime's kernels; usan gives NaN for such a window
            # (tests/it/onnx.rs checks that), so its goldens hold complete windows.
            rows = golden_w[4:] if name in ("lstm", "gru") else golden_w
            write_model(out, f"torch_{tag}_{name}", onx, rows, f"{exporter} ({tag})")


def fill(x):
    return np.where(np.isnan(x), 0.0, x).astype(np.float32)


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "tests/data/onnx/torch"))
