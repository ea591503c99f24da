#!/usr/bin/env python3
"""Canonical variate analysis in NumPy: the peer of usan's `cva` detector.

The method as Russell, Chiang and Braatz (2000) monitor with it, in the
form usan's crates/core/src/detector/cva.rs uses (past vector = the frame
and its predecessors, future = the next frames, both standardised; ridge as
a share of the mean eigenvalue), written the way a data scientist would:
whole matrices, NumPy's eigensolvers. It exists to check usan's canonical
correlations and statistics against an independent reading, and to measure
usan's speed against the method's Python form.

Usage:
    python3 scripts/cva-peer.py golden CSV           # the golden values of cva.rs's test
    python3 scripts/cva-peer.py speed [--rows N] [--dims D]

`golden` reads tests/data/tep/tep_normal_then_idv1.csv (52 signals after
`sample,part`), fits on its first 500 rows (past 2, future 2, ridge 0, one
state per signal) and prints the five strongest canonical correlations and
the states' and residual T² of rows 511..515, each row after its
predecessor. `speed` fits on 2,000 standard-normal rows and scores N rows
one at a time (a stream), printing rows/s and values/s.
"""

import argparse
import sys
import time

import numpy as np


def inverse_square_root(s, ridge):
    w, v = np.linalg.eigh(s)
    w = np.maximum(w, 0.0)
    mean = w.mean()
    lift = ridge * mean + 1e-9 * max(mean, 1e-300)
    return (v / np.sqrt(w + lift)) @ v.T


def fit(x, past, future, ridge, states=None):
    mean = x.mean(axis=0)
    scale = x.std(axis=0, ddof=1)
    z = (x - mean) / scale
    n, m = z.shape
    starts = range(past - 1, n - future)
    p = np.array([np.concatenate([z[t - l] for l in range(past)]) for t in starts])
    f = np.array([np.concatenate([z[t + 1 + l] for l in range(future)]) for t in starts])
    d = max(len(p) - 1, 1)
    ipp = inverse_square_root(p.T @ p / d, ridge)
    iff = inverse_square_root(f.T @ f / d, ridge)
    h = ipp @ (p.T @ f / d) @ iff
    w, u = np.linalg.eigh(h @ h.T)
    order = np.argsort(-w, kind="stable")
    correlations = np.sqrt(np.clip(w[order], 0.0, None)).clip(max=1.0)
    transform = u[:, order].T @ ipp
    return dict(mean=mean, scale=scale, past=past, transform=transform,
                correlations=correlations, states=min(states or m, past * m))


def statistics(model, frames):
    """States' and residual T² of the newest frame of `frames` (oldest first)."""
    z = (np.asarray(frames) - model["mean"]) / model["scale"]
    vector = np.concatenate([z[-1 - l] for l in range(model["past"])])
    c = model["transform"] @ vector
    k = model["states"]
    return float(c[:k] @ c[:k]), float(c[k:] @ c[k:])


def golden(path):
    rows = np.loadtxt(path, delimiter=",", skiprows=1, usecols=range(2, 54))
    model = fit(rows[:500], past=2, future=2, ridge=0.0)
    print("correlations", " ".join(f"{c:.12f}" for c in model["correlations"][:5]))
    for t in range(510, 515):
        states, residual = statistics(model, rows[t - 1:t + 1])
        print(f"row {t + 1}: states {states:.10f} residual {residual:.10f}")


def speed(rows, dims):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000 + rows, dims))
    model = fit(x[:2000], past=2, future=2, ridge=0.01)
    data = x[2000:]
    start = time.perf_counter()
    checksum = 0.0
    for t in range(1, rows):
        s, r = statistics(model, data[t - 1:t + 1])
        checksum += s + r
    seconds = time.perf_counter() - start
    print(f"numpy CVA, one row at a time: {rows - 1} rows of {dims} in {seconds:.3f} s: "
          f"{(rows - 1) / seconds:,.0f} rows/s, {(rows - 1) * dims / seconds:,.0f} values/s (checksum {checksum:.3f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("golden")
    g.add_argument("csv")
    s = sub.add_parser("speed")
    s.add_argument("--rows", type=int, default=100_000)
    s.add_argument("--dims", type=int, default=8)
    args = parser.parse_args(argv)
    if args.command == "golden":
        golden(args.csv)
    else:
        speed(args.rows, args.dims)


if __name__ == "__main__":
    sys.exit(main())
