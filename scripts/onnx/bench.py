"""onnxruntime on the same rows as `usan bench onnx`: ROWS rows scored in
batches of BATCH, with one intra-op thread and with onnxruntime's default;
rows/s and peak memory. The rows are the pool `usan bench onnx` draws from
each package's golden inputs (src/cli/bench/onnx.rs, `drawn_row`): up to
65,536 distinct rows (and 2^21 values), cycled through in whole batches.

    .venv-onnx/bin/python scripts/onnx/bench.py ROWS BATCH PACKAGE...
"""
import csv
import resource
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def rows_of(package):
    with open(Path(package) / "golden" / "inputs.csv") as f:
        body = list(csv.reader(f))[1:]
    return np.array([[float(v) if v not in ("", "NaN") else np.nan for v in r] for r in body], dtype=np.float32)


POOL = 65_536
POOL_VALUES = 1 << 21


def mix(z):
    """splitmix64 on an array of uint64, as `mix` in src/cli/bench/onnx.rs."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def pool(golden, rows, batch):
    """Whole batches of distinct rows: value j of row i is column j of golden
    row mix(i * width + j) mod len(golden)."""
    width = golden.shape[1]
    n = max(-(-min(rows, POOL, POOL_VALUES // width) // batch), 1) * batch
    index = np.arange(n * width, dtype=np.uint64)
    picked = (mix(index) % np.uint64(len(golden))).astype(np.int64).reshape(n, width)
    return golden[picked, np.arange(width)]


def main():
    ort.set_default_logger_severity(3)  # a ZipMap-less label's declared [1] shape is warned about on every run
    rows, batch = int(sys.argv[1]), int(sys.argv[2])
    print(f"{'model':<48} {'rows':>9} {'batch':>7} {'ort 1 thread':>13} {'ort default':>12} {'peak MiB':>9}")
    for package in sys.argv[3:]:
        golden = rows_of(package)
        rates = []
        for threads in (1, 0):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(Path(package) / "model.onnx"), options, providers=["CPUExecutionProvider"])
            inp = session.get_inputs()[0]
            shape = [batch] + [d for d in inp.shape[1:]] if all(isinstance(d, int) for d in inp.shape[1:]) else [batch, -1]
            data = pool(golden, rows, batch)
            batches = len(data) // batch
            data = data.reshape([len(data)] + shape[1:])
            if inp.type == "tensor(double)":
                data = data.astype(np.float64)
            session.run(None, {inp.name: data[: min(batch, len(golden))]})
            start, done = time.perf_counter(), 0
            while done < rows:
                n = min(batch, rows - done)
                first = (done // batch) % batches * batch
                session.run(None, {inp.name: data[first : first + n]})
                done += n
            rates.append(done / (time.perf_counter() - start))
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{Path(package).name:<48} {rows:>9} {batch:>7} {rates[0]:>13.0f} {rates[1]:>12.0f} {peak:>9.1f}")


if __name__ == "__main__":
    main()
