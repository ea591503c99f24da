"""Cut the small real samples that the ONNX model families are trained on.

Run once from the repository root (it reads ../shared/data); the samples are
committed under tests/data with their licenses, so CI does not need this.

    python3 scripts/onnx/make_samples.py
"""
import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data"


def steel_plates(out: Path) -> None:
    names = (SHARED / "steel_plates" / "Faults27x7_var").read_text().split()
    features, classes = names[:27], names[27:]
    rows = []
    for line in (SHARED / "steel_plates" / "Faults.NNA").read_text().splitlines():
        values = line.strip().strip('"').split()
        if len(values) != 34:
            continue
        fault = classes[[int(float(v)) for v in values[27:]].index(1)]
        rows.append(values[:27] + [fault])
    random.Random(7).shuffle(rows)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "steel_plates_sample.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(features + ["fault"])
        w.writerows(rows[:600])


def secom(out: Path) -> None:
    with open(SHARED / "secom" / "uci-secom.csv") as f:
        table = list(csv.reader(f))
    header, body = table[0], table[1:]
    # 24 measurements that vary and miss values now and then (not mostly).
    chosen = []
    for j in range(1, len(header) - 1):
        column = [r[j] for r in body]
        missing = sum(1 for v in column if v in ("", "NaN", "nan"))
        present = {v for v in column if v not in ("", "NaN", "nan")}
        if 0 < missing < len(body) // 10 and len(present) > 50:
            chosen.append(j)
        if len(chosen) == 24:
            break
    rows = [[r[j] if r[j] not in ("", "nan", "NaN") else "" for j in chosen] + [r[-1]] for r in body]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "secom_sample.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["m" + header[j] for j in chosen] + ["pass_fail"])
        w.writerows(rows[:800])


if __name__ == "__main__":
    steel_plates(ROOT / "tests" / "data" / "steel_plates")
    secom(ROOT / "tests" / "data" / "secom")
