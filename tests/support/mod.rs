//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use vcell::data::anndata::{AnnData, Categorical, Column, CsrMatrix, DataFrame, XMatrix};

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

/// A CSR matrix from dense rows, dropping zeros.
pub fn csr_from_rows(rows: &[Vec<f32>], n_cols: usize) -> CsrMatrix {
    let mut indptr = vec![0usize];
    let mut indices = Vec::new();
    let mut data = Vec::new();
    for r in rows {
        for (j, &v) in r.iter().enumerate() {
            if v != 0.0 {
                indices.push(j as u32);
                data.push(v);
            }
        }
        indptr.push(data.len());
    }
    CsrMatrix::new((rows.len(), n_cols), indptr, indices, data)
}

/// A small AnnData with every obs column kind, missing categorical values and unicode strings.
pub fn sample_anndata() -> AnnData {
    let n_obs = 6;
    let n_vars = 4;
    let rows: Vec<Vec<f32>> = (0..n_obs)
        .map(|i| (0..n_vars).map(|j| if (i + j) % 3 == 0 { (i * 10 + j) as f32 + 0.5 } else { 0.0 }).collect())
        .collect();
    let mut obs = DataFrame::with_index((0..n_obs).map(|i| format!("cell{i}")).collect());
    obs.set_column(
        "target_gene",
        Column::Categorical(Categorical {
            codes: vec![0, 1, -1, 2, 0, 1],
            categories: vec!["non-targeting".into(), "GENE_B".into(), "GENE_A".into()],
            ordered: false,
        }),
    );
    obs.set_column(
        "label",
        Column::Str(vec!["a".into(), "ü".into(), "日本".into(), "".into(), "e f".into(), "Ω".into()]),
    );
    obs.set_column("count", Column::Int(vec![1, -2, 3, 400_000_000_000, 5, 0]));
    obs.set_column("score", Column::Float(vec![0.5, f64::NAN, -1.25, 1e300, 0.0, 3.0]));
    obs.set_column("flag", Column::Bool(vec![true, false, true, true, false, false]));
    let mut var = DataFrame::with_index((0..n_vars).map(|j| format!("GENE{j:05}")).collect());
    var.set_column("highly_variable", Column::Bool(vec![true, false, true, false]));
    let emb = ndarray::Array2::from_shape_fn((n_obs, 3), |(i, k)| i as f32 - k as f32 * 0.25);
    AnnData {
        x: XMatrix::Sparse(csr_from_rows(&rows, n_vars)),
        obs,
        var,
        obsm: vec![("X_emb".into(), emb)],
        layers: vec![],
    }
}

/// Compares frames treating NaN == NaN.
pub fn assert_frames_eq(a: &DataFrame, b: &DataFrame) {
    assert_eq!(a.index_name, b.index_name);
    assert_eq!(a.index, b.index);
    assert_eq!(a.column_names(), b.column_names());
    for ((_, ca), (name, cb)) in a.columns.iter().zip(&b.columns) {
        match (ca, cb) {
            (Column::Float(x), Column::Float(y)) => {
                assert_eq!(x.len(), y.len(), "{name}");
                for (u, v) in x.iter().zip(y) {
                    assert!(u == v || (u.is_nan() && v.is_nan()), "{name}: {u} vs {v}");
                }
            }
            _ => assert_eq!(ca, cb, "column {name}"),
        }
    }
}

/// Compares two AnnData (NaN-aware for obs/var floats and X values).
pub fn assert_anndata_eq(a: &AnnData, b: &AnnData) {
    assert_x_eq(&a.x, &b.x);
    assert_frames_eq(&a.obs, &b.obs);
    assert_frames_eq(&a.var, &b.var);
    assert_eq!(a.obsm, b.obsm);
    assert_eq!(a.layers.len(), b.layers.len());
    for ((na, la), (nb, lb)) in a.layers.iter().zip(&b.layers) {
        assert_eq!(na, nb);
        assert_x_eq(la, lb);
    }
}

pub fn assert_x_eq(a: &XMatrix, b: &XMatrix) {
    match (a, b) {
        (XMatrix::Sparse(x), XMatrix::Sparse(y)) => {
            assert_eq!(x.shape(), y.shape());
            assert_eq!(x.proper_indptr(), y.proper_indptr());
            assert_eq!(x.indices(), y.indices());
            let same =
                x.data().iter().zip(y.data()).all(|(u, v)| u.to_bits() == v.to_bits() || (u.is_nan() && v.is_nan()));
            assert!(same && x.data().len() == y.data().len(), "X data differs");
        }
        (XMatrix::Dense(x), XMatrix::Dense(y)) => {
            assert_eq!(x.dim(), y.dim());
            assert!(x.iter().zip(y).all(|(u, v)| u == v || (u.is_nan() && v.is_nan())));
        }
        _ => panic!("X encodings differ"),
    }
}

/// The interop venv's python; fails with instructions if it is missing.
pub fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-interop/bin/python");
    assert!(p.exists(), "{} is missing: run scripts/setup.sh to create the Python venv with anndata", p.display());
    p
}

/// Decompresses `src` (gzip) into `dir`, returning the path of the decompressed file.
pub fn gunzip_into(src: &Path, dir: &Path) -> PathBuf {
    let name = src.file_stem().unwrap();
    let out = dir.join(name);
    let bytes = std::process::Command::new("gzip").arg("-dc").arg(src).output().unwrap();
    assert!(bytes.status.success(), "gzip -dc {} failed", src.display());
    std::fs::write(&out, bytes.stdout).unwrap();
    out
}

/// Run the `vcell` binary in `workdir` with `VCELL_RUNS_DIR=runs_dir`, outside any job's lock, stdin closed.
pub fn run_vcell(workdir: &Path, runs_dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_vcell"))
        .args(args)
        .env("VCELL_RUNS_DIR", runs_dir)
        .env_remove("VCELL_JOB_LOCK_TOKEN")
        .current_dir(workdir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}
