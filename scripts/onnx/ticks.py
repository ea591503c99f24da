"""A plant whose assets each report one frame at a time, for measuring
package detectors in the pipeline (BENCHMARKS.md, "In the pipeline").

Writes DIR/ticks.csv (ASSETS assets x TICKS one-second ticks of the 52 TEP
signals around a golden row of PACKAGE) and DIR/ticks.toml (a paced file
replay, one worker, PACKAGE as a detector on every asset, a level no score
reaches), then:

    /usr/bin/time usan serve --config DIR/ticks.toml --exit-when-done --listen 127.0.0.1:0

The replay sends one row per asset per tick, so each asset's batch is one
frame, as from MQTT, OPC UA or pushes.

    python3 scripts/onnx/ticks.py DIR PACKAGE [ASSETS] [TICKS] [SPEED]
"""
import random
import sys
from pathlib import Path


def main(out, package, assets=200, ticks=100, speed=20.0):
    out.mkdir(parents=True, exist_ok=True)
    names = [f"xmeas_{i}" for i in range(1, 42)] + [f"xmv_{i}" for i in range(1, 12)]
    golden = (package / "golden" / "inputs.csv").read_text().splitlines()[1].split(",")
    base = [float(v) if v.strip().lower() not in ("", "nan") else 0.0 for v in golden]
    rng = random.Random(1)
    with open(out / "ticks.csv", "w") as f:
        f.write("t,asset," + ",".join(names) + "\n")
        for t in range(ticks):
            for a in range(assets):
                f.write(f"{t},a{a}," + ",".join(f"{v * (1 + rng.gauss(0, 0.01)):.5g}" for v in base) + "\n")
    signals = ", ".join(f'"{n}"' for n in names)
    config = f"""[store]
type = "sqlite"
path = "{out.resolve()}/ticks.db"

[pipeline]
workers = 1

[[sources]]
type = "file"
name = "ticks"
path = "{out.resolve()}/ticks.csv"
asset_column = "asset"
time_column = "t"
time_unit_s = 1.0
time_origin = "2026-01-01T00:00:00Z"
speed = {float(speed)}

[[detectors]]
name = "package"
algorithm = {{ type = "onnx", package = "{package.resolve()}" }}
threshold = {{ value = 1e300 }}
"""
    for a in range(assets):
        config += f'\n[[assets]]\nid = "a{a}"\nsignals = [{signals}]\ndetectors = ["package"]\n'
    (out / "ticks.toml").write_text(config)
    print(f"{out}/ticks.toml: {assets} assets x {ticks} ticks at {speed}x ({assets * speed:.0f} frames/s)")


if __name__ == "__main__":
    args = sys.argv[1:]
    if len(args) < 2:
        sys.exit(__doc__)
    main(Path(args[0]), Path(args[1]), *(int(a) for a in args[2:4]), *(float(a) for a in args[4:5]))
