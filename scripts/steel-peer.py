#!/usr/bin/env python3
"""LightGBM and a random forest next to `usan eval steel`: stratified 10-fold
cross-validation of the 7 steel-plate defect classes (sklearn's folds, seed 0);
accuracy and macro F1.

    .venv-bench/bin/python scripts/steel-peer.py ../shared/data/steel_plates
"""
import sys
import time

import lightgbm as lgb
import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

rows = [line.strip().strip('"').split() for line in open(f"{sys.argv[1]}/Faults.NNA") if line.strip()]
data = np.array(rows, dtype=float)
x, y = data[:, :27], data[:, 27:].argmax(axis=1)
for name, make in [
    ("LightGBM", lambda: lgb.LGBMClassifier(n_estimators=300, learning_rate=0.05, num_leaves=15,
                                            min_child_samples=5, verbose=-1, random_state=0)),
    ("random forest", lambda: RandomForestClassifier(n_estimators=300, n_jobs=1, random_state=0)),
]:
    start = time.time()
    predicted = np.zeros(len(y), dtype=int)
    for train, test in StratifiedKFold(10, shuffle=True, random_state=0).split(x, y):
        predicted[test] = make().fit(x[train], y[train]).predict(x[test])
    print(f"{name}: accuracy {100 * accuracy_score(y, predicted):.2f} %, "
          f"macro F1 {f1_score(y, predicted, average='macro'):.3f}; wall time {time.time() - start:.2f} s")
