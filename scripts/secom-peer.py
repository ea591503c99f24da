#!/usr/bin/env python3
"""LightGBM next to `usan eval secom`, under the same protocol: stratified
10-fold cross-validation, squared loss on 0/1, a lot flagged when its score
is at least the training folds' failure rate, balanced error rate and AUC.
(sklearn's fold assignment, seed 0; usan deals its own folds.)

    .venv-bench/bin/python scripts/secom-peer.py ../shared/data/secom [SEED ...]

With several seeds (fold assignments) it prints one line per seed and the mean.
"""
import sys
import time

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

start = time.time()
frame = pd.read_csv(f"{sys.argv[1]}/uci-secom.csv")
y = (frame["Pass/Fail"].values == 1).astype(int)
x = frame.drop(columns=["Time", "Pass/Fail"]).values
seeds = [int(a) for a in sys.argv[2:]] or [0]
rates = []
for seed in seeds:
    scores = np.zeros(len(y))
    flagged = np.zeros(len(y), dtype=bool)
    for train, test in StratifiedKFold(10, shuffle=True, random_state=seed).split(x, y):
        model = lgb.LGBMRegressor(n_estimators=200, learning_rate=0.03, num_leaves=7, min_child_samples=20,
                                  subsample=0.8, subsample_freq=1, colsample_bytree=0.3, verbose=-1, random_state=0)
        model.fit(x[train], y[train])
        scores[test] = model.predict(x[test])
        flagged[test] = scores[test] >= y[train].mean()
    miss = ((~flagged) & (y == 1)).sum() / (y == 1).sum()
    false_alarm = (flagged & (y == 0)).sum() / (y == 0).sum()
    rates.append(100 * (miss + false_alarm) / 2)
    print(f"LightGBM, seed {seed}: balanced error rate {rates[-1]:.2f} % (missed fails {100 * miss:.2f} %, "
          f"false alarms {100 * false_alarm:.2f} %), AUC {roc_auc_score(y, scores):.3f}")
print(f"mean balanced error rate over {len(seeds)} seed(s) {np.mean(rates):.2f} %; wall time {time.time() - start:.2f} s")
