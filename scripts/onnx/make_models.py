"""Train one model of every family usan must run, export each to ONNX and
record onnxruntime's outputs as goldens.

    python3 -m venv .venv-onnx && .venv-onnx/bin/pip install -r scripts/onnx/requirements.txt
    .venv-onnx/bin/python scripts/onnx/make_models.py OUT_DIR

Each model lands in OUT_DIR/<name>/ as `model.onnx` with
`golden/inputs.csv` and `golden/outputs.csv`, in the formats of
`usan model run` (a header; inputs by position; outputs named `<output>`,
`<output>.<j>` or, for a ZipMap, `<output>.<class>`). The tests
(`tests/it/onnx.rs`) run usan on the inputs and compare. The training data
are the real samples under tests/data (licenses beside them). Golden inputs
are held-out rows plus rows with missing values (NaN), so that each
operator's missing-value rule is checked against onnxruntime's.
"""
import csv
import warnings
import math
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import helper

# skl2onnx 1.20 hands `nodes_missing_value_tracks_true` to onnx as a mix of
# numpy integers and booleans, which protobuf 7 refuses: give it ints.
_make_attribute = helper.make_attribute


def _make_attribute_with_int_flags(key, value, *args, **kwargs):
    if isinstance(value, list) and any(isinstance(v, (bool, np.bool_)) for v in value):
        value = [int(v) for v in value]
    return _make_attribute(key, value, *args, **kwargs)


helper.make_attribute = _make_attribute_with_int_flags

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
SEED = 0


def read_csv(path, label=None, drop=()):
    with open(path) as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    keep = [j for j, h in enumerate(header) if h != label and h not in drop]
    x = np.array([[float(r[j]) if r[j] != "" else np.nan for j in keep] for r in body], dtype=np.float32)
    y = None
    if label is not None:
        y = [r[header.index(label)] for r in body]
    return x, y, [header[j] for j in keep]


def steel():
    x, y, names = read_csv(DATA / "steel_plates" / "steel_plates_sample.csv", label="fault")
    return x, np.array(y), names


def secom():
    x, y, names = read_csv(DATA / "secom" / "secom_sample.csv", label="pass_fail")
    return x, np.array([int(v) for v in y]), names


def cmapss():
    with open(ROOT / "examples" / "data" / "cmapss_fd001_demo.csv") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    last = {}
    for r in body:
        last[r[0]] = max(last.get(r[0], 0), int(r[1]))
    keep = [j for j, h in enumerate(header) if h.startswith("s") and h not in ("setting3",)]
    x = np.array([[float(r[j]) for j in keep] for r in body], dtype=np.float32)
    rul = np.array([min(last[r[0]] - int(r[1]), 125) for r in body], dtype=np.float32)
    return x, rul, [header[j] for j in keep]


def tep():
    x, _, names = read_csv(DATA / "tep" / "tep_normal_then_idv1.csv", drop=("sample", "part"))
    return x, None, names


def split(x, y, n_test=64):
    """Rows for training and golden rows (held out, then 8 with NaN cells)."""
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    golden = x[test].copy()
    holes = golden[:8].copy()
    for i in range(len(holes)):
        cols = rng.choice(x.shape[1], size=1 + i % 3, replace=False)
        holes[i, cols] = np.nan
    golden = np.vstack([golden, holes]).astype(np.float32)
    ytrain = None if y is None else y[train]
    return x[train], ytrain, golden


def fill_nan(x):
    """Training rows without NaN, for the models that cannot learn from them."""
    means = np.nanmean(x, axis=0)
    means = np.where(np.isnan(means), 0.0, means)
    return np.where(np.isnan(x), means, x).astype(np.float32)


def fmt(v):
    if isinstance(v, (str, bytes)):
        return v.decode() if isinstance(v, bytes) else v
    if isinstance(v, (np.integer, int)) and not isinstance(v, bool):
        return str(int(v))
    f = float(v)
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return repr(f)


def columns(name, value):
    """One output's CSV header and per-row cells, as `usan model run` writes them."""
    if isinstance(value, list):  # ZipMap: a list of {class: probability}
        keys = list(value[0].keys()) if value else []
        return [f"{name}.{k}" for k in keys], [[fmt(row[k]) for k in keys] for row in value]
    value = np.asarray(value)
    if value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1):
        return [name], [[fmt(v)] for v in value.reshape(len(value))]
    flat = value.reshape(len(value), -1)
    return [f"{name}.{j}" for j in range(flat.shape[1])], [[fmt(v) for v in row] for row in flat]


def write_model(out, name, onx, golden, exporter):
    folder = out / name
    (folder / "golden").mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(onx.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    feed = golden.astype(np.float64) if inp.type == "tensor(double)" else golden
    results = session.run(None, {inp.name: feed})
    flat = golden.reshape(len(golden), -1)  # [N, T, F] rows: T x F values each
    with open(folder / "golden" / "inputs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([f"x{j}" for j in range(flat.shape[1])])
        w.writerows([[fmt(v) for v in row] for row in flat])
    header, cells = [], [[] for _ in range(len(golden))]
    for meta, value in zip(session.get_outputs(), results):
        h, rows = columns(meta.name, value)
        header += h
        for i, row in enumerate(rows):
            cells[i] += row
    with open(folder / "golden" / "outputs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(cells)
    (folder / "exporter.txt").write_text(exporter + "\n")
    print(f"{name}: {len(golden)} rows, outputs {header[:4]}{'...' if len(header) > 4 else ''}")


def write_manifest(out, name, role, signals, outputs, threshold=""):
    """A usan-model.toml for a family the pipeline tests run (tests/it/onnx.rs)."""
    listed = ", ".join(f'"{s}"' for s in signals)
    text = (f'format = 1\nname = "{name}"\nrole = "{role}"\nsignals = [{listed}]\n\n[outputs]\n{outputs}\n'
            f'{threshold}\n[provenance]\nexporter = "{(out / name / "exporter.txt").read_text().strip()}"\n')
    (out / name / "usan-model.toml").write_text(text)


def sklearn_models(out):
    from skl2onnx import to_onnx
    from sklearn.decomposition import PCA
    from sklearn.ensemble import (
        ExtraTreesClassifier, ExtraTreesRegressor, GradientBoostingClassifier,
        GradientBoostingRegressor, HistGradientBoostingClassifier, HistGradientBoostingRegressor,
        IsolationForest, RandomForestClassifier, RandomForestRegressor,
    )
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler
    import sklearn
    import skl2onnx

    exporter = f"skl2onnx {skl2onnx.__version__}, scikit-learn {sklearn.__version__}"
    xs, ys, _ = steel()
    xs_train, ys_train, gs = split(xs, ys)
    binary = np.where(ys_train == "K_Scatch", 1, 0)
    xc, yc, _ = cmapss()
    xc_train, yc_train, gc = split(xc, yc)
    xt, _, _ = tep()
    xt_train, _, gt = split(xt[:800], None)
    xm, ym, _ = secom()
    xm_train, ym_train, gm = split(xm, ym)
    xm_filled = fill_nan(xm_train)

    def save(name, model, x_train, golden, options=None):
        onx = to_onnx(model, x_train[:1], target_opset={"": 17, "ai.onnx.ml": 3}, options=options)
        write_model(out, name, onx, golden, exporter)

    def zipmap_off(model):
        return {id(model): {"zipmap": False}}

    m = make_pipeline(StandardScaler(), LinearRegression()).fit(xc_train, yc_train)
    save("skl_scaler_linear_regression", m, xc_train, gc)
    m = make_pipeline(MinMaxScaler(), Ridge(alpha=1.0)).fit(xc_train, yc_train)
    save("skl_minmax_ridge", m, xc_train, gc)
    m = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(),
                      LogisticRegression(max_iter=2000)).fit(xm_train, ym_train)
    save("skl_imputer_scaler_logistic_binary", m, xm_train, gm)
    m = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000)).fit(xs_train, ys_train)
    save("skl_logistic_multiclass", m, xs_train, gs)
    save("skl_logistic_multiclass_nozipmap", m, xs_train, gs, options=zipmap_off(m))
    m = make_pipeline(StandardScaler(), PCA(n_components=8, random_state=SEED)).fit(xt_train)
    save("skl_scaler_pca", m, xt_train, gt)
    m = RandomForestRegressor(n_estimators=30, max_depth=8, random_state=SEED).fit(xc_train, yc_train)
    save("skl_random_forest_regressor", m, xc_train, gc)
    # As a live RUL model: one frame (cycle) per row, RUL capped at 125 cycles.
    write_manifest(out, "skl_random_forest_regressor", "rul", cmapss()[2], 'rul = "variable"')
    m = RandomForestClassifier(n_estimators=30, max_depth=8, random_state=SEED).fit(xs_train, ys_train)
    save("skl_random_forest_classifier", m, xs_train, gs)
    save("skl_random_forest_classifier_nozipmap", m, xs_train, gs, options=zipmap_off(m))
    m = ExtraTreesRegressor(n_estimators=30, max_depth=8, random_state=SEED).fit(xc_train, yc_train)
    save("skl_extra_trees_regressor", m, xc_train, gc)
    m = ExtraTreesClassifier(n_estimators=30, max_depth=8, random_state=SEED).fit(xs_train, binary)
    save("skl_extra_trees_classifier_binary", m, xs_train, gs)
    m = GradientBoostingRegressor(n_estimators=40, max_depth=3, random_state=SEED).fit(xc_train, yc_train)
    save("skl_gradient_boosting_regressor", m, xc_train, gc)
    m = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=SEED).fit(xs_train, binary)
    save("skl_gradient_boosting_classifier_binary", m, xs_train, gs)
    m = GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=SEED).fit(xs_train, ys_train)
    save("skl_gradient_boosting_classifier_multiclass", m, xs_train, gs, options=zipmap_off(m))
    m = HistGradientBoostingRegressor(max_iter=40, random_state=SEED).fit(xm_train, xm_filled[:, 0])
    save("skl_hist_gradient_boosting_regressor_nan", m, xm_train, gm)
    m = HistGradientBoostingClassifier(max_iter=40, random_state=SEED).fit(xm_train, ym_train)
    save("skl_hist_gradient_boosting_classifier_nan", m, xm_train, gm)
    # As a live quality classifier: -1 is a passing wafer.
    write_manifest(out, "skl_hist_gradient_boosting_classifier_nan", "classifier", secom()[2],
                   'label = "output_label"\nprobabilities = "output_probability"\nnormal = ["-1"]')
    m = HistGradientBoostingClassifier(max_iter=20, random_state=SEED).fit(xs_train, ys_train)
    save("skl_hist_gradient_boosting_classifier_multiclass", m, xs_train, gs)
    m = IsolationForest(n_estimators=50, random_state=SEED).fit(xt_train)
    save("skl_isolation_forest", m, xt_train, gt)
    # As a live detector: `scores` is decision_function (higher is normal).
    write_manifest(out, "skl_isolation_forest", "detector", tep()[2],
                   'score = "scores"\nscore_higher_is = "normal"', "[threshold]\nquantile = 0.99\n")
    from sklearn.svm import SVR, OneClassSVM, LinearSVR
    m = make_pipeline(StandardScaler(), SVR(kernel="rbf", C=10.0)).fit(xc_train, yc_train)
    save("skl_scaler_svr_rbf", m, xc_train, gc)
    m = make_pipeline(StandardScaler(), SVR(kernel="poly", degree=3, C=1.0)).fit(xc_train[:400], yc_train[:400])
    save("skl_scaler_svr_poly", m, xc_train, gc)
    m = make_pipeline(StandardScaler(), LinearSVR(C=1.0, max_iter=5000, random_state=SEED)).fit(xc_train, yc_train)
    save("skl_scaler_linear_svr", m, xc_train, gc)
    m = make_pipeline(StandardScaler(), OneClassSVM(kernel="rbf", nu=0.05)).fit(xt_train)
    # Its label is Cast(Sign(score)) to int64: for a row with a gap that is
    # a cast of NaN, which onnxruntime on x86 gives as the smallest int64
    # (the processor's conversion) and usan as 0; complete rows only.
    save("skl_scaler_one_class_svm", m, xt_train, gt[:-8])
    from sklearn.svm import SVC, NuSVC
    # scikit-learn 1.9 deprecates SVC(probability=True); plants' models use it.
    warnings.filterwarnings("ignore", message=".*probability.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*prob[AB]_.*", category=FutureWarning)
    # SVMClassifier: one-vs-one votes, libsvm's pairwise probabilities,
    # each kernel; binary and multi-class, integer and text labels.
    m = make_pipeline(StandardScaler(), SVC(kernel="rbf", C=10.0, probability=True,
                                            random_state=SEED)).fit(xs_train, ys_train)
    save("skl_scaler_svc_rbf_probability_multiclass", m, xs_train, gs)
    m = make_pipeline(StandardScaler(), SVC(kernel="poly", degree=2, C=1.0)).fit(xs_train, ys_train)
    save("skl_scaler_svc_poly_multiclass", m, xs_train, gs, options=zipmap_off(m))
    m = make_pipeline(StandardScaler(), SVC(kernel="linear", C=0.5)).fit(xs_train, binary)
    save("skl_scaler_svc_linear_binary", m, xs_train, gs, options=zipmap_off(m))
    m = make_pipeline(StandardScaler(), SVC(kernel="sigmoid", C=1.0, probability=True,
                                            random_state=SEED)).fit(xs_train, binary)
    save("skl_scaler_svc_sigmoid_probability_binary", m, xs_train, gs, options=zipmap_off(m))
    m = make_pipeline(StandardScaler(), NuSVC(kernel="rbf", nu=0.02)).fit(xs_train, ys_train)
    save("skl_scaler_nusvc_rbf_multiclass", m, xs_train, gs, options=zipmap_off(m))
    # A plant's categorical column given as numbers (steel type, plate
    # thickness): OneHotEncoder per column; plates thicker than any seen in
    # training (over 100) encode as zeros.
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import OneHotEncoder
    names = steel()[2]
    categorical = [names.index("TypeOfSteel_A300"), names.index("Steel_Plate_Thickness")]
    numeric = [j for j in range(xs_train.shape[1]) if j not in categorical]
    columns = ColumnTransformer([("numeric", StandardScaler(), numeric),
                                 ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical)])
    thin = xs_train[:, categorical[1]] <= 100
    m = make_pipeline(columns, LogisticRegression(max_iter=3000)).fit(xs_train[thin], ys_train[thin])
    save("skl_column_transformer_one_hot_logistic", m, xs_train, gs)
    m = make_pipeline(StandardScaler(), MLPRegressor(hidden_layer_sizes=(16, 8), max_iter=300,
                                                      random_state=SEED)).fit(xc_train, yc_train)
    save("skl_mlp_regressor", m, xc_train, gc)
    m = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), max_iter=300,
                                                       random_state=SEED)).fit(xs_train, ys_train)
    save("skl_mlp_classifier", m, xs_train, gs)


def boosting_models(out):
    import lightgbm
    import onnxmltools
    import xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType

    xs, ys, _ = steel()
    xs_train, ys_train, gs = split(xs, ys)
    classes = sorted(set(ys_train))
    ys_index = np.array([classes.index(v) for v in ys_train])
    binary = np.where(ys_train == "K_Scatch", 1, 0)
    xc, yc, _ = cmapss()
    xc_train, yc_train, gc = split(xc, yc)
    xm, ym, _ = secom()
    xm_train, ym_train, gm = split(xm, ym)
    ym01 = np.where(ym_train > 0, 1, 0)

    def lgbm(name, model, x_train, golden):
        types = [("input", FloatTensorType([None, x_train.shape[1]]))]
        onx = onnxmltools.convert_lightgbm(model, initial_types=types, target_opset=15,
                                           zipmap=False)
        write_model(out, name, onx, golden, f"onnxmltools {onnxmltools.__version__}, lightgbm {lightgbm.__version__}")

    def xgb(name, model, x_train, golden):
        types = [("input", FloatTensorType([None, x_train.shape[1]]))]
        onx = onnxmltools.convert_xgboost(model, initial_types=types, target_opset=15)
        write_model(out, name, onx, golden, f"onnxmltools {onnxmltools.__version__}, xgboost {xgboost.__version__}")

    params = dict(n_estimators=40, num_leaves=15, random_state=SEED, verbose=-1)
    lgbm("lgbm_regressor", lightgbm.LGBMRegressor(**params).fit(xc_train, yc_train), xc_train, gc)
    lgbm("lgbm_classifier_binary_nan", lightgbm.LGBMClassifier(**params).fit(xm_train, ym01), xm_train, gm)
    lgbm("lgbm_classifier_multiclass", lightgbm.LGBMClassifier(**params).fit(xs_train, ys_index), xs_train, gs)
    params = dict(n_estimators=40, max_depth=4, random_state=SEED, n_jobs=1)
    xgb("xgb_regressor", xgboost.XGBRegressor(**params).fit(xc_train, yc_train), xc_train, gc)
    xgb("xgb_classifier_binary_nan", xgboost.XGBClassifier(**params).fit(xm_train, ym01), xm_train, gm)
    xgb("xgb_classifier_multiclass", xgboost.XGBClassifier(**params).fit(xs_train, ys_index), xs_train, gs)
    xgb("xgb_classifier_binary", xgboost.XGBClassifier(**params).fit(xs_train, binary), xs_train, gs)


def to_tree_ensemble_v5(onx, aggregate=1):
    """The model with its TreeEnsembleRegressor rewritten as the opset-5
    `TreeEnsemble` (no exporter emits it yet; onnxruntime runs both)."""
    from onnx import TensorProto, numpy_helper

    graph = onx.graph
    old = next(n for n in graph.node if n.op_type == "TreeEnsembleRegressor")
    a = {x.name: helper.get_attribute_value(x) for x in old.attribute}
    modes = [m.decode() if isinstance(m, bytes) else m for m in a["nodes_modes"]]
    key = list(zip(a["nodes_treeids"], a["nodes_nodeids"]))
    branch_index, leaf_index = {}, {}
    for k, mode in zip(key, modes):
        (leaf_index if mode == "LEAF" else branch_index)[k] = len(leaf_index if mode == "LEAF" else branch_index)
    code = {"BRANCH_LEQ": 0, "BRANCH_LT": 1, "BRANCH_GTE": 2, "BRANCH_GT": 3, "BRANCH_EQ": 4, "BRANCH_NEQ": 5}
    feats, splits, mds, tid, tleaf, fid, fleaf, miss = [], [], [], [], [], [], [], []
    missing = a.get("nodes_missing_value_tracks_true", [0] * len(key))
    roots = {}
    for i, (k, mode) in enumerate(zip(key, modes)):
        if mode == "LEAF":
            continue
        roots.setdefault(k[0], branch_index[k])
        feats.append(a["nodes_featureids"][i])
        splits.append(a["nodes_values"][i])
        mds.append(code[mode])
        miss.append(int(missing[i]))
        for ids, leafs, child in ((tid, tleaf, a["nodes_truenodeids"][i]), (fid, fleaf, a["nodes_falsenodeids"][i])):
            ck = (k[0], child)
            if ck in leaf_index:
                ids.append(leaf_index[ck]); leafs.append(1)
            else:
                ids.append(branch_index[ck]); leafs.append(0)
    weights = [0.0] * len(leaf_index)
    targets = [0] * len(leaf_index)
    for t, nd, target, w in zip(a["target_treeids"], a["target_nodeids"], a["target_ids"], a["target_weights"]):
        weights[leaf_index[(t, nd)]] += w
        targets[leaf_index[(t, nd)]] = target
    base = list(a.get("base_values", []))
    attrs = dict(
        n_targets=a["n_targets"], aggregate_function=aggregate, post_transform=0,
        tree_roots=[roots[t] for t in sorted(roots)],
        nodes_featureids=feats, nodes_splits=numpy_helper.from_array(np.array(splits, dtype=np.float32)),
        nodes_modes=numpy_helper.from_array(np.array(mds, dtype=np.uint8)),
        nodes_truenodeids=tid, nodes_trueleafs=tleaf, nodes_falsenodeids=fid, nodes_falseleafs=fleaf,
        nodes_missing_value_tracks_true=miss,
        leaf_targetids=targets, leaf_weights=numpy_helper.from_array(np.array(weights, dtype=np.float32)),
    )
    out_name = old.output[0]
    nodes = []
    if base:
        mid = out_name + "_trees"
        nodes.append(helper.make_node("TreeEnsemble", [old.input[0]], [mid], domain="ai.onnx.ml", **attrs))
        nodes.append(helper.make_node("Add", [mid, "base_values"], [out_name]))
        graph.initializer.append(numpy_helper.from_array(np.array(base, dtype=np.float32), "base_values"))
    else:
        nodes.append(helper.make_node("TreeEnsemble", [old.input[0]], [out_name], domain="ai.onnx.ml", **attrs))
    at = list(graph.node).index(old)
    del graph.node[at]
    for n in reversed(nodes):
        graph.node.insert(at, n)
    for op in onx.opset_import:
        if op.domain == "ai.onnx.ml":
            op.version = 5
        if op.domain == "" and op.version < 21:
            op.version = 21
    onx.ir_version = 10
    return onx


def tree_ensemble_models(out):
    """The opset-5 TreeEnsemble: forests rewritten to it, and a hand-made
    ensemble with every comparison, set membership and missing values."""
    from onnx import TensorProto, numpy_helper
    from skl2onnx import to_onnx
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    xc, yc, _ = cmapss()
    xc_train, yc_train, gc = split(xc, yc)
    m = RandomForestRegressor(n_estimators=20, max_depth=6, random_state=SEED).fit(xc_train, yc_train)
    onx = to_onnx(m, xc_train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    write_model(out, "onnx_tree_ensemble_v5_forest_average", to_tree_ensemble_v5(onx, aggregate=0), gc, "usan make_models.py (rewritten from skl2onnx)")
    m = GradientBoostingRegressor(n_estimators=30, max_depth=3, random_state=SEED).fit(xc_train, yc_train)
    onx = to_onnx(m, xc_train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    write_model(out, "onnx_tree_ensemble_v5_boosting_sum", to_tree_ensemble_v5(onx), gc, "usan make_models.py (rewritten from skl2onnx)")

    # Two trees over 3 features and 2 targets, softmax; every node mode.
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 2])
    f32 = lambda v: numpy_helper.from_array(np.array(v, dtype=np.float32))
    node = helper.make_node(
        "TreeEnsemble", ["X"], ["Y"], domain="ai.onnx.ml", n_targets=2, aggregate_function=1, post_transform=1,
        tree_roots=[0, 4],
        #                 0     1     2     3     4     5     6
        nodes_featureids=[0,    1,    2,    1,    2,    0,    1],
        nodes_splits=f32([0.5,  1.0,  0.0,  -1.0, 2.0,  0.25, 3.0]),
        nodes_modes=numpy_helper.from_array(np.array([0, 6, 2, 5, 3, 1, 4], dtype=np.uint8)),
        nodes_truenodeids=[1, 0, 1, 2, 5, 3, 4],
        nodes_trueleafs=[0, 1, 1, 1, 0, 1, 1],
        nodes_falsenodeids=[2, 3, 3, 4, 6, 5, 6],
        nodes_falseleafs=[0, 0, 1, 1, 0, 1, 1],
        nodes_missing_value_tracks_true=[1, 0, 0, 1, 0, 1, 0],
        membership_values=f32([1.0, 2.0, 7.0]),
        leaf_targetids=[0, 1, 0, 1, 0, 1, 1],
        leaf_weights=f32([1.5, -0.5, 2.0, 0.25, -1.0, 3.0, 0.75]),
    )
    graph = helper.make_graph([node], "tree_ensemble_modes", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid("ai.onnx.ml", 5)])
    model.ir_version = 10
    rng = np.random.default_rng(SEED)
    golden = rng.choice(np.array([-2, -1, 0, 0.25, 0.5, 1, 2, 3, 7, np.nan], dtype=np.float32), size=(60, 3))
    write_model(out, "onnx_tree_ensemble_v5_every_mode", model, golden, "usan make_models.py (by hand)")


def vectorizer_models(out):
    """FeatureVectorizer (as onnxmltools writes for Spark's VectorAssembler):
    a scaled part, the raw part cut short and an imputed part padded with
    zeros, side by side, then a linear regression over them; and int64
    values (the inputs of one node share a type) cast to float."""
    from onnx import TensorProto, numpy_helper

    xs, _, _ = steel()
    xs_train, _, gs = split(xs, None)
    width = xs.shape[1]
    mean = np.nanmean(xs_train, axis=0)
    std = np.nanstd(xs_train, axis=0) + 1e-6
    rng = np.random.default_rng(SEED)
    total = width + 2 + (width + 3)
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, width])
    v = helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, total])
    w = helper.make_tensor_value_info("integers", TensorProto.FLOAT, [None, width])
    y = helper.make_tensor_value_info("variable", TensorProto.FLOAT, [None, 1])
    nodes = [
        helper.make_node("Scaler", ["X"], ["scaled"], domain="ai.onnx.ml",
                         offset=mean.astype(float).tolist(), scale=(1.0 / std).astype(float).tolist()),
        helper.make_node("Imputer", ["X"], ["filled"], domain="ai.onnx.ml",
                         imputed_value_floats=mean.astype(float).tolist(), replaced_value_float=float("nan")),
        helper.make_node("Cast", ["filled"], ["as_int"], to=TensorProto.INT64),
        helper.make_node("FeatureVectorizer", ["scaled", "X", "filled"], ["features"], domain="ai.onnx.ml",
                         inputdimensions=[width, 2, width + 3]),
        helper.make_node("FeatureVectorizer", ["as_int"], ["integers"], domain="ai.onnx.ml", inputdimensions=[width]),
        helper.make_node("LinearRegressor", ["features"], ["variable"], domain="ai.onnx.ml",
                         coefficients=(rng.normal(size=total) / np.r_[np.ones(width), 1e3 * np.ones(2), 1e3 * np.ones(width + 3)]).tolist(),
                         intercepts=[0.5]),
    ]
    graph = helper.make_graph(nodes, "feature_vectorizer", [x], [v, w, y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    model.ir_version = 8
    write_model(out, "onnx_feature_vectorizer_linear", model, gs, "usan make_models.py (by hand)")


def recurrent_models(out):
    """LSTM and GRU nodes with the options exporters rarely write but the
    specification has (reverse and bidirectional directions, peepholes,
    clip, input_forget, per-row sequence_lens, other activations,
    linear_before_reset off), weights drawn at random, on C-MAPSS windows."""
    from onnx import TensorProto, numpy_helper

    xc, _, _ = cmapss()
    xc = xc[:, xc.std(axis=0) > 1e-3]
    xc = ((xc - xc.mean(axis=0)) / (xc.std(axis=0) + 1e-6)).astype(np.float32)
    seq, width, hidden = 12, xc.shape[1], 8
    starts = np.random.default_rng(SEED).choice(len(xc) - seq, size=40, replace=False)
    windows = np.stack([xc[s:s + seq] for s in starts])
    rng = np.random.default_rng(SEED + 1)
    const = lambda name, shape, scale=0.4: numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    def model(name, op, attrs, dirs, with_lens=False, golden=windows):
        gates = 4 if op == "LSTM" else 3
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, seq, width])
        inits = [const("W", [dirs, gates * hidden, width]), const("R", [dirs, gates * hidden, hidden]),
                 const("B", [dirs, 2 * gates * hidden], 0.2)]
        nodes = [helper.make_node("Transpose", ["x"], ["x_tnf"], perm=[1, 0, 2])]
        lens = ""
        if with_lens:
            # A length per row from its data: 1 + floor(4 |x[n, 0, 0]|), at most seq.
            inits += [numpy_helper.from_array(np.array([0], dtype=np.int64), "zero"),
                      numpy_helper.from_array(np.array(4.0, dtype=np.float32), "four"),
                      numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
                      numpy_helper.from_array(np.array(float(seq), dtype=np.float32), "last")]
            nodes += [helper.make_node("Gather", ["x", "zero"], ["first_step"], axis=1),
                      helper.make_node("Gather", ["first_step", "zero"], ["first_value"], axis=2),
                      helper.make_node("Flatten", ["first_value"], ["column"], axis=0),
                      helper.make_node("Abs", ["column"], ["size"]),
                      helper.make_node("Mul", ["size", "four"], ["scaled"]),
                      helper.make_node("Floor", ["scaled"], ["floored"]),
                      helper.make_node("Add", ["floored", "one"], ["plus_one"]),
                      helper.make_node("Min", ["plus_one", "last"], ["bounded"]),
                      helper.make_node("Squeeze", ["bounded", "zero"], ["lens_f"]),
                      helper.make_node("Cast", ["lens_f"], ["lens"], to=TensorProto.INT32)]
            lens = "lens"
        ins = ["x_tnf", "W", "R", "B", lens]
        outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
        if op == "LSTM" and attrs.pop("peepholes", False):
            inits.append(const("P", [dirs, 3 * hidden]))
            ins += ["", "", "P"]
        nodes.append(helper.make_node(op, ins, [o + "_raw" for o in outs], hidden_size=hidden, **attrs))
        # Batch first, so that each output's rows are the input's.
        nodes.append(helper.make_node("Transpose", ["Y_raw"], ["Y"], perm=[2, 0, 1, 3]))
        for o in outs[1:]:
            nodes.append(helper.make_node("Transpose", [o + "_raw"], [o], perm=[1, 0, 2]))
        outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, seq, dirs, hidden])]
        outputs += [helper.make_tensor_value_info(o, TensorProto.FLOAT, [None, dirs, hidden]) for o in outs[1:]]
        graph = helper.make_graph(nodes, name, [x], outputs, initializer=inits)
        onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        write_model(out, name, onx, golden, "usan make_models.py (by hand)")

    model("onnx_lstm_bidirectional_peepholes", "LSTM", {"direction": "bidirectional", "peepholes": True}, 2)
    model("onnx_lstm_reverse_clip_input_forget", "LSTM", {"direction": "reverse", "clip": 1.5, "input_forget": 1}, 1)
    model("onnx_lstm_sequence_lens_activations", "LSTM",
          {"activations": ["HardSigmoid", "Tanh", "Softsign"], "activation_alpha": [0.25], "activation_beta": [0.45]}, 1,
          with_lens=True)
    model("onnx_gru_bidirectional_sequence_lens", "GRU", {"direction": "bidirectional", "linear_before_reset": 1}, 2,
          with_lens=True)
    model("onnx_gru_reverse_reset_before_product", "GRU", {"direction": "reverse"}, 1)


def convolution_models(out):
    """1-D convolutions (`Conv` with rank-3 weights) of every geometry: strides,
    dilations, explicit and SAME padding, groups, with and without bias and a
    Relu after, on C-MAPSS windows."""
    from onnx import TensorProto, numpy_helper

    xc, _, _ = cmapss()
    xc = xc[:, xc.std(axis=0) > 1e-3][:, :12]
    xc = ((xc - xc.mean(axis=0)) / (xc.std(axis=0) + 1e-6)).astype(np.float32)
    seq, width = 16, xc.shape[1]
    starts = np.random.default_rng(SEED + 2).choice(len(xc) - seq, size=40, replace=False)
    windows = np.stack([xc[s:s + seq] for s in starts])
    windows[:3, 5, 2] = np.nan  # a missing value spoils only the windows over it
    rng = np.random.default_rng(SEED + 3)

    def model(name, layers):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, seq, width])
        nodes, inits, value, channels = [helper.make_node("Transpose", ["x"], ["x_ncl"], perm=[0, 2, 1])], [], "x_ncl", width
        for i, (outputs, kernel, group, bias, relu, attrs) in enumerate(layers):
            w = numpy_helper.from_array((rng.standard_normal([outputs, channels // group, kernel]) * 0.3).astype(np.float32), f"w{i}")
            inits.append(w)
            ins = [value, f"w{i}"]
            if bias:
                inits.append(numpy_helper.from_array((rng.standard_normal([outputs]) * 0.2).astype(np.float32), f"b{i}"))
                ins.append(f"b{i}")
            nodes.append(helper.make_node("Conv", ins, [f"conv{i}"], group=group, kernel_shape=[kernel], **attrs))
            value, channels = f"conv{i}", outputs
            if relu:
                nodes.append(helper.make_node("Relu", [value], [f"relu{i}"]))
                value = f"relu{i}"
        nodes.append(helper.make_node("Identity", [value], ["y"]))
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph(nodes, name, [x], [y], initializer=inits)
        onx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        write_model(out, name, onx, windows, "usan make_models.py (by hand)")

    model("onnx_conv1d_strides_dilations_pads", [
        (8, 5, 1, True, True, {"pads": [2, 1], "strides": [2]}),
        (6, 3, 2, True, False, {"dilations": [2], "pads": [1, 1]}),
        (4, 2, 1, False, True, {"strides": [3]}),
    ])
    model("onnx_conv1d_same_padding_groups", [
        (12, 4, 12, True, True, {"auto_pad": "SAME_UPPER"}),
        (6, 3, 3, True, True, {"auto_pad": "SAME_LOWER", "strides": [2]}),
        (5, 3, 1, False, False, {"auto_pad": "VALID", "dilations": [3]}),
    ])


def bad_models(out):
    """Files usan must refuse with a clear error: operators it cannot run."""
    from onnx import TensorProto

    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, 3])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [None, 3])
    z = helper.make_tensor_value_info("Z", TensorProto.FLOAT, [None, 3])
    nodes = [
        helper.make_node("Mystery", ["X"], ["Y"], name="mystery_node", domain="com.example"),
        helper.make_node("Relu", ["Y"], ["Z"], name="relu_node"),
        helper.make_node("FancyNewOp", ["Z"], ["W"], name="fancy_node"),
    ]
    w = helper.make_tensor_value_info("W", TensorProto.FLOAT, [None, 3])
    graph = helper.make_graph(nodes, "unknown_operators", [x], [w], value_info=[y, z])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)])
    (out / "bad").mkdir(parents=True, exist_ok=True)
    (out / "bad" / "unknown_operator.onnx").write_bytes(model.SerializeToString())
    print("bad/unknown_operator.onnx")


if __name__ == "__main__":
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/onnx-models")
    out.mkdir(parents=True, exist_ok=True)
    families = sys.argv[2:] or ["sklearn", "boosting", "tree_ensemble", "vectorizer", "recurrent", "convolution", "bad"]
    if "sklearn" in families:
        sklearn_models(out)
    if "boosting" in families:
        boosting_models(out)
    if "tree_ensemble" in families:
        tree_ensemble_models(out)
    if "vectorizer" in families:
        vectorizer_models(out)
    if "recurrent" in families:
        recurrent_models(out)
    if "convolution" in families:
        convolution_models(out)
    if "bad" in families:
        bad_models(out)
