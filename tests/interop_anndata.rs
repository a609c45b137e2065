#![allow(clippy::unwrap_used)]
//! Interop with Python anndata (the venv made by `scripts/setup.sh`): files vcell writes must read in
//! `anndata.read_h5ad` with the same values, and files anndata writes must read in vcell.

mod support;

use std::path::Path;
use std::process::Command;

use ndarray::Array2;
use serde_json::Value;
use support::*;
use vcell::data::anndata::{Column, MatrixEncoding, StoredDtype, XMatrix};
use vcell::data::h5ad::{read_h5ad, write_h5ad, H5adReader, H5adWriter};

/// Runs `script` with the venv's python and `args`, returning its stdout parsed as JSON.
fn run_python(script: &str, args: &[&Path]) -> Value {
    let out = Command::new(python()).arg("-c").arg(script).args(args).env("PYTHONWARNINGS", "ignore").output().unwrap();
    assert!(out.status.success(), "python failed:\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

const READ_VCELL_FILES: &str = r#"
import sys, json, math
import numpy as np, scipy.sparse as sp, anndata as ad
a = ad.read_h5ad(sys.argv[1])
d = ad.read_h5ad(sys.argv[2])
st = ad.read_h5ad(sys.argv[3])
assert sp.issparse(st.X) and st.X.format == "csr"
assert (st.X != a.X).nnz == 0 and list(st.obs_names) == list(a.obs_names)
assert list(st.obs["target_gene"].cat.codes) == list(a.obs["target_gene"].cat.codes)
assert np.array_equal(st.obsm["X_emb"], a.obsm["X_emb"])
assert sp.issparse(a.X) and a.X.format == "csr", type(a.X)
assert a.X.dtype == np.float32
assert isinstance(d.X, np.ndarray) and d.X.dtype == np.float32
tg = a.obs["target_gene"]
assert str(tg.dtype) == "category"
def floats(xs):
    return [None if math.isnan(x) else x for x in xs]
print(json.dumps({
    "shape": list(a.shape),
    "x": a.X.toarray().tolist(),
    "obs_names": list(a.obs_names),
    "var_names": list(a.var_names),
    "categories": list(tg.cat.categories),
    "codes": tg.cat.codes.tolist(),
    "ordered": bool(tg.cat.ordered),
    "label": a.obs["label"].astype(str).tolist(),
    "count": [int(v) for v in a.obs["count"]],
    "count_dtype": str(a.obs["count"].dtype),
    "score": floats(a.obs["score"].tolist()),
    "flag": [bool(v) for v in a.obs["flag"]],
    "flag_dtype": str(a.obs["flag"].dtype),
    "hv": [bool(v) for v in a.var["highly_variable"]],
    "obsm_keys": sorted(a.obsm.keys()),
    "emb": np.asarray(a.obsm["X_emb"]).tolist(),
    "dense_shape": list(d.shape),
    "dense": d.X.tolist(),
}))
"#;

#[test]
fn anndata_reads_what_vcell_writes() {
    let dir = tempfile::tempdir().unwrap();
    let a = sample_anndata();
    let sparse = dir.path().join("sparse.h5ad");
    write_h5ad(&sparse, &a).unwrap();
    let mut d = sample_anndata();
    let dense = Array2::from_shape_fn((6, 4), |(i, j)| (i as f32) * 0.5 - j as f32);
    d.x = XMatrix::Dense(dense.clone());
    let dense_path = dir.path().join("dense.h5ad");
    write_h5ad(&dense_path, &d).unwrap();

    // the streaming writer's chunked, resized datasets must read the same
    let streamed = dir.path().join("streamed.h5ad");
    let XMatrix::Sparse(x) = &a.x else { unreachable!() };
    let mut w = H5adWriter::create(&streamed, &a.var).unwrap();
    w.append_rows(&x.slice_outer(0..4).to_owned()).unwrap();
    w.append_rows(&x.slice_outer(4..6).to_owned()).unwrap();
    w.finish(&a.obs, &a.obsm).unwrap();

    let v = run_python(READ_VCELL_FILES, &[&sparse, &dense_path, &streamed]);
    assert_eq!(v["shape"], serde_json::json!([6, 4]));
    let XMatrix::Sparse(x) = &a.x else { unreachable!() };
    let x_dense = x.to_dense();
    for (i, row) in v["x"].as_array().unwrap().iter().enumerate() {
        for (j, val) in row.as_array().unwrap().iter().enumerate() {
            assert_eq!(val.as_f64().unwrap() as f32, x_dense[[i, j]]);
        }
    }
    assert_eq!(v["obs_names"], serde_json::json!(a.obs.index));
    assert_eq!(v["var_names"], serde_json::json!(a.var.index));
    let Some(Column::Categorical(c)) = a.obs.column("target_gene") else { unreachable!() };
    assert_eq!(v["categories"], serde_json::json!(c.categories));
    assert_eq!(v["codes"], serde_json::json!(c.codes));
    assert_eq!(v["ordered"], serde_json::json!(false));
    assert_eq!(v["label"], serde_json::json!(["a", "ü", "日本", "", "e f", "Ω"]));
    assert_eq!(v["count"], serde_json::json!([1, -2, 3, 400_000_000_000i64, 5, 0]));
    assert_eq!(v["count_dtype"], "int64");
    assert_eq!(v["score"], serde_json::json!([0.5, null, -1.25, 1e300, 0.0, 3.0]));
    assert_eq!(v["flag"], serde_json::json!([true, false, true, true, false, false]));
    assert_eq!(v["flag_dtype"], "bool");
    assert_eq!(v["hv"], serde_json::json!([true, false, true, false]));
    assert_eq!(v["obsm_keys"], serde_json::json!(["X_emb"]));
    let emb: Vec<Vec<f32>> = serde_json::from_value(v["emb"].clone()).unwrap();
    for (i, row) in emb.iter().enumerate() {
        for (k, &e) in row.iter().enumerate() {
            assert_eq!(e, a.obsm[0].1[[i, k]]);
        }
    }
    assert_eq!(v["dense_shape"], serde_json::json!([6, 4]));
    let got: Vec<Vec<f32>> = serde_json::from_value(v["dense"].clone()).unwrap();
    for (i, row) in got.iter().enumerate() {
        for (j, &e) in row.iter().enumerate() {
            assert_eq!(e, dense[[i, j]]);
        }
    }
}

/// Writes several files with anndata and prints what vcell should find in them.
const WRITE_ANNDATA_FILES: &str = r#"
import sys, json, os
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad, h5py
out = sys.argv[1]
rng = np.random.default_rng(0)
n, m = 300, 7
X = sp.random(n, m, density=0.3, format="csr", random_state=1, dtype=np.float64)
X.data = np.round(X.data * 100)
many = [f"P{i:03d}" for i in range(200)]
labels = pd.Categorical([many[i % 200] if i % 17 else None for i in range(n)], categories=many)
obs = pd.DataFrame({
    "pert": labels,
    "flag": np.arange(n) % 3 == 0,
    "small_int": (np.arange(n) % 5).astype(np.int16),
    "u32": np.arange(n, dtype=np.uint32),
    "f": np.where(np.arange(n) % 7 == 0, np.nan, np.arange(n) / 4.0),
    "s": [f"cell-{i}-é" for i in range(n)],
    "nint": pd.array([None if i % 11 == 0 else i for i in range(n)], dtype="Int64"),
    "nint_full": pd.array(list(range(n)), dtype="Int64"),
    "nbool": pd.array([None if i % 13 == 0 else bool(i % 2) for i in range(n)], dtype="boolean"),
}, index=[f"c{i}" for i in range(n)])
var = pd.DataFrame(index=[f"G{j}" for j in range(m)])
a = ad.AnnData(X=X, obs=obs, var=var)
a.obsm["X_pca"] = rng.normal(size=(n, 3))
a.layers["counts"] = X.astype(np.int32)
a.write_h5ad(os.path.join(out, "csr.h5ad"))
ad.AnnData(X=sp.csc_matrix(X), obs=obs[["pert"]], var=var).write_h5ad(os.path.join(out, "csc.h5ad"))
ad.AnnData(X=X.toarray().astype(np.float16), obs=obs[["pert"]], var=var).write_h5ad(os.path.join(out, "dense16.h5ad"))
# int64 indptr/indices and fixed-length ASCII var names, patched in with h5py
p = os.path.join(out, "wide.h5ad")
a.write_h5ad(p)
with h5py.File(p, "r+") as f:
    for k in ("indptr", "indices"):
        v = f["X"][k][...].astype(np.int64)
        del f["X"][k]
        f["X"].create_dataset(k, data=v)
    names = np.array([s.encode() for s in var.index], dtype="S8")
    attrs = dict(f["var/_index"].attrs)
    del f["var/_index"]
    ds = f["var"].create_dataset("_index", data=names)
    for k, v in attrs.items():
        ds.attrs[k] = v
print(json.dumps({
    "x": X.toarray().tolist(),
    "pert_codes": labels.codes.tolist(),
    "f": [None if np.isnan(v) else float(v) for v in obs["f"]],
    "pca": a.obsm["X_pca"].tolist(),
}))
"#;

#[test]
fn vcell_reads_what_anndata_writes() {
    let dir = tempfile::tempdir().unwrap();
    let v = run_python(WRITE_ANNDATA_FILES, &[dir.path()]);
    let x: Vec<Vec<f32>> = serde_json::from_value(v["x"].clone()).unwrap();
    let (n, m) = (x.len(), x[0].len());
    let expect_x = |got: &XMatrix| {
        let dense = match got {
            XMatrix::Sparse(s) => s.to_dense(),
            XMatrix::Dense(d) => d.clone(),
        };
        assert_eq!(dense.dim(), (n, m));
        for i in 0..n {
            for j in 0..m {
                assert_eq!(dense[[i, j]], x[i][j], "X[{i},{j}]");
            }
        }
    };
    let pert_codes: Vec<i32> = serde_json::from_value(v["pert_codes"].clone()).unwrap();

    // CSR with every column kind
    let path = dir.path().join("csr.h5ad");
    let a = read_h5ad(&path).unwrap();
    expect_x(&a.x);
    let Some(Column::Categorical(pert)) = a.obs.column("pert") else { panic!("pert") };
    assert_eq!(pert.categories.len(), 200);
    assert_eq!(pert.codes, pert_codes);
    assert!(pert.codes.contains(&-1) && pert.codes.contains(&199));
    let col = |name: &str| a.obs.column(name).unwrap().clone();
    assert_eq!(col("flag"), Column::Bool((0..n).map(|i| i % 3 == 0).collect()));
    assert_eq!(col("small_int"), Column::Int((0..n).map(|i| (i % 5) as i64).collect()));
    assert_eq!(col("u32"), Column::Int((0..n as i64).collect()));
    let Column::Float(f) = col("f") else { panic!("f") };
    let f_expect: Vec<Option<f64>> = serde_json::from_value(v["f"].clone()).unwrap();
    for (got, want) in f.iter().zip(&f_expect) {
        match want {
            None => assert!(got.is_nan()),
            Some(w) => assert_eq!(got, w),
        }
    }
    assert_eq!(col("s"), Column::Str((0..n).map(|i| format!("cell-{i}-é")).collect()));
    let Column::Float(nint) = col("nint") else { panic!("nint with missing values reads as Float") };
    assert!(nint[0].is_nan() && nint[1] == 1.0 && nint[11].is_nan());
    assert_eq!(col("nint_full"), Column::Int((0..n as i64).collect()));
    let Column::Categorical(nbool) = col("nbool") else { panic!("nbool with missing values reads as Categorical") };
    assert_eq!(nbool.categories, vec!["False", "True"]);
    assert_eq!(nbool.label(0), None);
    assert_eq!(nbool.label(1), Some("True"));
    assert_eq!(nbool.label(2), Some("False"));
    let pca: Vec<Vec<f64>> = serde_json::from_value(v["pca"].clone()).unwrap();
    assert_eq!(a.obsm.len(), 1);
    assert_eq!(a.obsm[0].0, "X_pca");
    assert_eq!(a.obsm[0].1[[5, 2]], pca[5][2] as f32);
    assert_eq!(a.layers.len(), 1);
    expect_x(&a.layers[0].1);
    let r = H5adReader::open(&path).unwrap();
    assert_eq!(r.layer_info("counts").unwrap().dtype, StoredDtype::Int(4, true));
    // chunked rows agree with the whole matrix
    let rows = r.read_x_rows(100, 163).unwrap();
    for (i, want) in x[100..163].iter().enumerate() {
        for (j, &w) in want.iter().enumerate() {
            assert_eq!(rows.get(i, j).copied().unwrap_or(0.0), w);
        }
    }

    // CSC: whole read converts, row chunks are refused with advice
    let path = dir.path().join("csc.h5ad");
    let r = H5adReader::open(&path).unwrap();
    assert_eq!(r.x_info().unwrap().encoding, MatrixEncoding::Csc);
    expect_x(&r.read_x().unwrap());
    let err = r.read_x_rows(0, 10).unwrap_err().to_string();
    assert!(err.contains("read_x()") && err.contains("/X"), "{err}");

    // dense float16
    let path = dir.path().join("dense16.h5ad");
    let r = H5adReader::open(&path).unwrap();
    let info = r.x_info().unwrap();
    assert_eq!((info.encoding, info.dtype), (MatrixEncoding::Dense, StoredDtype::F16));
    expect_x(&r.read_x().unwrap());
    let rows = r.read_x_rows(3, 9).unwrap();
    assert_eq!(rows.get(0, 0).copied().unwrap_or(0.0), x[3][0]);

    // int64 indptr/indices, fixed-length ASCII var names
    let path = dir.path().join("wide.h5ad");
    let a = read_h5ad(&path).unwrap();
    expect_x(&a.x);
    assert_eq!(a.var.index, (0..m).map(|j| format!("G{j}")).collect::<Vec<_>>());
}
