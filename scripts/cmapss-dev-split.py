#!/usr/bin/env python3
"""Make C-MAPSS development splits from the training files alone.

    scripts/cmapss-dev-split.py CMAPSS_DIR OUT_DIR [--subsets FD001,FD002,FD003,FD004] [--seed 0] [--fold 0]

For each subset, every fifth training unit (5, 10, ...; with --fold K the
units whose number is K mod 5, so folds 0..4 hold out every unit once) is held out and cut
the way NASA cut the test set: at a point leaving a true RUL drawn uniformly
from 5..150 cycles (at most the unit's life minus 15, so every test prefix
has at least 15 cycles). Writes OUT_DIR/train_FD00x.txt (the other units),
OUT_DIR/test_FD00x.txt (the cut units, renumbered 1..N) and
OUT_DIR/RUL_FD00x.txt (their true RUL), so that `usan eval cmapss` and the
peers in ../shared/bench run unchanged on subsets whose official test set
is not at hand. Standard library only; the same seed gives the same split.
"""
import argparse
import os
import random


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--subsets", default="FD001,FD002,FD003,FD004")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fold", type=int, default=0, choices=range(5))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for subset in a.subsets.split(","):
        rng = random.Random(f"{a.seed}-{subset}" if a.fold == 0 else f"{a.seed}-{subset}-{a.fold}")
        units = {}
        with open(os.path.join(a.data, f"train_{subset}.txt")) as fh:
            for line in fh:
                if line.strip():
                    units.setdefault(int(line.split()[0]), []).append(line.rstrip("\n"))
        train, test, truth = [], [], []
        for unit in sorted(units):
            rows = units[unit]
            if unit % 5 != a.fold:
                train.extend(rows)
                continue
            rul = rng.randint(5, max(5, min(150, len(rows) - 15)))
            number = len(truth) + 1
            for row in rows[: len(rows) - rul]:
                cells = row.split()
                cells[0] = str(number)
                test.append(" ".join(cells))
            truth.append(rul)
        for name, lines in (("train", train), ("test", test), ("RUL", [str(t) for t in truth])):
            with open(os.path.join(a.out, f"{name}_{subset}.txt"), "w") as fh:
                fh.write("\n".join(lines) + "\n")
        print(f"{subset}: {len(units) - len(truth)} training units, {len(truth)} held-out test units")


if __name__ == "__main__":
    main()
