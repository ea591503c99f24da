#!/usr/bin/env python3
"""Python peers next to `usan eval secom`, under the same protocol: stratified
10-fold cross-validation, squared loss on 0/1, a lot flagged when its score
is at least the training folds' failure rate, balanced error rate and AUC.
(sklearn's fold assignment; usan deals its own folds.)

    .venv-bench/bin/python scripts/secom-peer.py ../shared/data/secom [--model lgbm|blend] [SEED ...]

`lgbm` (default): one LightGBM model with usan's boosted-tree settings.
`blend`: usan's default method rebuilt from the peers: five such LightGBM
models averaged (seeds 0–4), and scikit-learn's ExtraTreesRegressor (300
trees, a tenth of the features per split, 8 rows per leaf, missing values
filled with the training median), weighted 0.3 / 0.7.
With several seeds (fold assignments) it prints one line per seed and the mean.
"""
import sys
import time

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.ensemble import ExtraTreesRegressor
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold


def boosted(x_train, y_train, x_test, seed):
    model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.03, num_leaves=7, min_child_samples=20,
                              subsample=0.8, subsample_freq=1, colsample_bytree=0.3, verbose=-1, random_state=seed)
    model.fit(x_train, y_train)
    return model.predict(x_test)


def blend(x_train, y_train, x_test):
    gbm = np.mean([boosted(x_train, y_train, x_test, s) for s in range(5)], axis=0)
    median = np.nanmedian(x_train, axis=0)
    median = np.where(np.isnan(median), 0.0, median)
    fill = lambda a: np.where(np.isnan(a), median, a)  # noqa: E731
    forest = ExtraTreesRegressor(n_estimators=300, max_features=0.1, min_samples_leaf=8, n_jobs=1, random_state=0)
    forest.fit(fill(x_train), y_train)
    return 0.3 * gbm + 0.7 * forest.predict(fill(x_test))


start = time.time()
frame = pd.read_csv(f"{sys.argv[1]}/uci-secom.csv")
y = (frame["Pass/Fail"].values == 1).astype(int)
x = frame.drop(columns=["Time", "Pass/Fail"]).values
args = sys.argv[2:]
method = "lgbm"
if args[:1] == ["--model"]:
    method, args = args[1], args[2:]
if method not in ("lgbm", "blend"):
    raise SystemExit(f"unknown model {method}: lgbm or blend")
seeds = [int(a) for a in args] or [0]
name = {"lgbm": "LightGBM", "blend": "LightGBM x5 + ExtraTrees (0.3 / 0.7)"}[method]
rates = []
for seed in seeds:
    scores = np.zeros(len(y))
    flagged = np.zeros(len(y), dtype=bool)
    for train, test in StratifiedKFold(10, shuffle=True, random_state=seed).split(x, y):
        if method == "lgbm":
            scores[test] = boosted(x[train], y[train], x[test], 0)
        else:
            scores[test] = blend(x[train], y[train], x[test])
        flagged[test] = scores[test] >= y[train].mean()
    miss = ((~flagged) & (y == 1)).sum() / (y == 1).sum()
    false_alarm = (flagged & (y == 0)).sum() / (y == 0).sum()
    rates.append(100 * (miss + false_alarm) / 2)
    print(f"{name}, seed {seed}: balanced error rate {rates[-1]:.2f} % (missed fails {100 * miss:.2f} %, "
          f"false alarms {100 * false_alarm:.2f} %), AUC {roc_auc_score(y, scores):.3f}", flush=True)
print(f"mean balanced error rate over {len(seeds)} seed(s) {np.mean(rates):.2f} %; wall time {time.time() - start:.2f} s")
