"""Train a scikit-learn model on plant data, export it as a usan model
package, and check it with onnxruntime: the data team's half of the round
trip (docs/models.md). From the repository's root:

    python3 -m venv .venv-example
    .venv-example/bin/pip install -r examples/onnx/requirements.txt
    .venv-example/bin/python examples/onnx/train.py
    cargo run --release -- model check examples/onnx/tep-autoencoder
    cargo run --release -- serve --config examples/onnx/tep.toml --exit-when-done

The model is an autoencoder (a small neural network that reproduces its 52
inputs through 16 hidden units) trained on the Tennessee Eastman Process's
normal operation (tests/data/tep/, license beside it). usan scores each
frame by how badly the model reproduces it, and names the signals it
reproduces worst: the explanation comes with the alarm.

The package (`--out`, default examples/onnx/tep-autoencoder/) holds:
  model.onnx          the exported network
  usan-model.toml     the signals in order, their centring and scaling
                      (done here in numpy, so not in the graph), what the
                      output means, the alarm threshold, provenance
  golden/inputs.csv   held-out rows as the model takes them, and
  golden/outputs.csv  onnxruntime's outputs on them: usan refuses the model
                      if its own outputs differ
"""
import argparse
import csv
import hashlib
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import numpy_helper
import skl2onnx
import sklearn
from skl2onnx import to_onnx
from sklearn.neural_network import MLPRegressor

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "tep" / "tep_normal_then_idv1.csv"


def fmt(v):
    """At least 9 significant digits (float32 round-trips), NaN as `NaN`."""
    v = float(v)
    return "NaN" if math.isnan(v) else repr(v)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA, help="CSV with a `part` column; `train` rows are normal")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "tep-autoencoder")
    args = parser.parse_args()

    with open(args.data) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    signals = [h for h in header if h not in ("sample", "part")]
    columns = [header.index(s) for s in signals]
    normal = np.array([[float(r[j]) for j in columns] for r in body if r[header.index("part")] == "train"])

    # Centre and scale on the normal rows; usan applies the same before the graph.
    center, scale = normal.mean(axis=0), normal.std(axis=0)
    scale[scale == 0] = 1.0
    x = ((normal - center) / scale).astype(np.float32)
    train, held_out = x[:400], x[400:]

    model = MLPRegressor(hidden_layer_sizes=(16,), activation="tanh", max_iter=3000, random_state=0)
    model.fit(train, train)

    onx = to_onnx(model, train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    # skl2onnx 1.20 reshapes every MLPRegressor's output to one column;
    # a multi-output one (this autoencoder: 52) needs its real width back.
    width = len(signals)
    for init in onx.graph.initializer:
        if init.name == "shape_tensor":
            init.CopyFrom(numpy_helper.from_array(np.array([-1, width], dtype=np.int64), init.name))
    onx.graph.output[0].type.tensor_type.shape.dim[1].dim_value = width
    out = args.out
    (out / "golden").mkdir(parents=True, exist_ok=True)
    (out / "model.onnx").write_bytes(onx.SerializeToString())

    # Goldens: the held-out normal rows, and two with a missing value
    # (a network gives NaN for them; usan then gives the frame no score).
    golden = np.vstack([held_out, held_out[:2]]).astype(np.float32)
    golden[-2, 3] = np.nan
    golden[-1, [0, 40]] = np.nan
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(out / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inp, outp = session.get_inputs()[0], session.get_outputs()[0]
    (reconstruction,) = session.run(None, {inp.name: golden})
    # The exported graph must give what the Python model gives.
    expected = model.predict(held_out)
    assert np.allclose(reconstruction[: len(held_out)], expected, rtol=1e-4, atol=1e-4), "export differs"
    with open(out / "golden" / "inputs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(signals)
        w.writerows([[fmt(v) for v in row] for row in golden])
    with open(out / "golden" / "outputs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"{outp.name}.{j}" for j in range(reconstruction.shape[1])])
        w.writerows([[fmt(v) for v in row] for row in reconstruction])

    sha = hashlib.sha256(args.data.read_bytes()).hexdigest()
    listed = lambda values: ", ".join(repr(float(v)) for v in values)  # noqa: E731
    manifest = f"""# Written by examples/onnx/train.py: what this model means to usan.
format = 1
name = "tep-autoencoder"
role = "detector"
signals = [{", ".join(f'"{s}"' for s in signals)}]

[preprocessing]
center = [{listed(center)}]
scale = [{listed(scale)}]
missing = "hold"

[outputs]
reconstruction = "{outp.name}"

[threshold]
quantile = 0.99

[provenance]
exporter = "skl2onnx {skl2onnx.__version__}"
versions = {{ scikit-learn = "{sklearn.__version__}", numpy = "{np.__version__}", onnxruntime = "{ort.__version__}" }}
training_data_sha256 = "{sha}"
notes = "MLPRegressor(16, tanh) reproducing 52 standardised TEP signals; trained on rows 1-400 of the normal part"
"""
    (out / "usan-model.toml").write_text(manifest)
    errors = np.nansum((golden - reconstruction) ** 2, axis=1)
    print(f"{out}: {len(golden)} golden rows; reconstruction error of held-out rows: "
          f"median {np.median(errors[:-2]):.2f}, 99th percentile {np.quantile(errors[:-2], 0.99):.2f}")


if __name__ == "__main__":
    main()
