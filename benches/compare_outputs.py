"""Compare a cell-eval output folder with a vcell one: DE tables and results/agg CSVs.

usage: python compare_outputs.py CELLEVAL_DIR VCELL_DIR
Exits non-zero when a value differs beyond the spec's tolerances (design/cell-eval.md §8): DE means and LFC exact
(f32 means compared as f32), p/fdr 1e-12 relative, results/agg 1e-6 absolute for mae-like columns, exact otherwise.
"""
import sys
import numpy as np
import pandas as pd

ce, vc = sys.argv[1], sys.argv[2]
bad = 0


def close(a, b, rtol, atol=0.0):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    same_nan = np.isnan(a) & np.isnan(b)
    same_inf = np.isinf(a) & np.isinf(b) & (np.sign(a) == np.sign(b))
    ok = same_nan | same_inf | (np.abs(a - b) <= atol + rtol * np.abs(b))
    return ok


for name in ["real_de.csv", "pred_de.csv"]:
    try:
        a = pd.read_csv(f"{ce}/{name}")
        b = pd.read_csv(f"{vc}/{name}")
    except FileNotFoundError:
        continue
    if list(a.columns) != list(b.columns) or len(a) != len(b):
        print(f"{name}: layout differs: {list(a.columns)} {len(a)} vs {list(b.columns)} {len(b)}")
        bad += 1
        continue
    if not (a.target.equals(b.target) and a.feature.equals(b.feature)):
        print(f"{name}: row order differs")
        bad += 1
    for col in ["target_mean", "ref_mean"]:
        n = (~close(a[col].astype(np.float32), b[col].astype(np.float32), 0.0)).sum()
        print(f"{name} {col}: {n} mismatches")
        bad += n > 0
    for col, rtol in [("log2_fold_change", 0.0), ("statistic", 0.0), ("p_value", 1e-12), ("fdr", 1e-12)]:
        n = (~close(a[col], b[col], rtol)).sum()
        print(f"{name} {col}: {n} mismatches (rtol {rtol})")
        bad += n > 0

for name in ["results.csv", "agg_results.csv"]:
    a = pd.read_csv(f"{ce}/{name}")
    b = pd.read_csv(f"{vc}/{name}")
    key = a.columns[0]
    if list(a.columns) != list(b.columns):
        print(f"{name}: columns differ {list(a.columns)} vs {list(b.columns)}")
        bad += 1
        continue
    for col in a.columns[1:]:
        if col in ("pearson_edistance", "clustering_agreement"):
            continue  # not reproducible (Leiden / cell sampling), see design/cell-eval.md §8
        tol = 1e-6 if col in ("mae", "mse", "mae_delta", "mse_delta", "pearson_delta") else 1e-12
        diff = ~close(a[col], b[col], tol, tol)
        print(f"{name} {col}: {diff.sum()} mismatches, max |diff| {np.nanmax(np.abs(a[col] - b[col])):.3g}")
        bad += diff.sum() > 0
sys.exit(1 if bad else 0)
