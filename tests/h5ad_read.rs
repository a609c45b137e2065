#![allow(clippy::unwrap_used)]
//! Reading every reference `.h5ad` fixture (all written by anndata 0.12.19) and checking shapes, nnz/density,
//! perturbation counts and a few values against `fixture.json` and values read with anndata.

mod support;

use std::collections::HashMap;
use std::path::Path;

use serde_json::Value;
use support::*;
use vcell::data::anndata::{Column, MatrixEncoding, StoredDtype, XMatrix};
use vcell::data::h5ad::{read_h5ad, H5adReader};
use vcell::data::info::summarize;

/// What one file should contain. `row0_sum` and `counts` were read with anndata 0.12.19 (`X[0].sum()`,
/// `obs.target_gene.value_counts()`).
struct Expect<'a> {
    rel: &'a str,
    encoding: MatrixEncoding,
    nnz: Option<u64>,
    row0_sum: f64,
    counts: &'a [(&'a str, usize)],
}

fn meta(case: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{case}/fixture.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Checks one file; `real` selects which of fixture.json's cell counts applies.
fn check(path: &Path, case: &str, real: bool, e: &Expect<'_>) {
    let m = meta(case);
    let n_cells = m[if real { "n_cells_real" } else { "n_cells_pred" }].as_u64().unwrap() as usize;
    let n_genes = m["n_genes"].as_u64().unwrap() as usize;
    let control = m["control"].as_str().unwrap();
    let pert_col = m["pert_col"].as_str().unwrap_or("target_gene");

    let r = H5adReader::open(path).unwrap();
    let info = r.x_info().unwrap();
    assert_eq!(info.shape, (n_cells, n_genes), "{}", e.rel);
    assert_eq!((r.n_obs().unwrap(), r.n_vars().unwrap()), (n_cells, n_genes));
    assert_eq!(info.encoding, e.encoding, "{}", e.rel);
    assert_eq!(info.dtype, StoredDtype::F32, "{}", e.rel);
    assert_eq!(info.nnz, e.nnz, "{}", e.rel);
    if real && e.encoding != MatrixEncoding::Dense {
        let frac = m["nnz_frac_real"].as_f64().unwrap();
        let density = info.nnz.unwrap() as f64 / (n_cells * n_genes) as f64;
        assert!((density - frac).abs() < 1e-12, "{}: {density} vs {frac}", e.rel);
    }

    let a = read_h5ad(path).unwrap();
    assert_eq!(a.x.shape(), (n_cells, n_genes));
    let var_names = r.var_names().unwrap();
    assert_eq!(var_names.len(), n_genes);
    assert_eq!(var_names[0], "GENE00000");
    assert_eq!(a.var.index, var_names);
    assert_eq!(r.obs_names().unwrap(), a.obs.index);

    // perturbation counts
    let Column::Categorical(c) = r.obs_column(pert_col).unwrap() else { panic!("{pert_col} not categorical") };
    let counts: HashMap<&str, usize> = c.categories.iter().map(String::as_str).zip(c.counts()).collect();
    let expected: HashMap<&str, usize> = e.counts.iter().copied().collect();
    assert_eq!(counts, expected, "{}", e.rel);
    assert_eq!(counts[control], m["n_ctrl"].as_u64().unwrap() as usize);
    assert!(c.codes.iter().all(|&k| k >= 0));

    // values: row 0's sum, the zero genes, integer counts, and row chunks equal the whole matrix
    let dense = match &a.x {
        XMatrix::Sparse(s) => s.to_dense(),
        XMatrix::Dense(d) => d.clone(),
    };
    let row0: f64 = dense.row(0).iter().map(|&v| f64::from(v)).sum();
    assert!((row0 - e.row0_sum).abs() < 1e-3 * e.row0_sum.abs().max(1.0), "{}: {row0}", e.rel);
    if real {
        for g in m["zero_genes"].as_array().unwrap() {
            let j = var_names.iter().position(|n| n == g.as_str().unwrap()).unwrap();
            assert!(dense.column(j).iter().all(|&v| v == 0.0), "{} {g}", e.rel);
        }
    }
    if m["counts"].as_bool().unwrap() && real {
        assert!(dense.iter().all(|&v| v >= 0.0 && v.fract() == 0.0));
    }
    let mut start = 0;
    while start < n_cells {
        let end = (start + 97).min(n_cells);
        let chunk = r.read_x_rows(start, end).unwrap();
        for (i, row) in chunk.outer_iterator().enumerate() {
            for (j, &v) in row.iter() {
                assert_eq!(v, dense[[start + i, j]]);
            }
            assert_eq!(row.nnz(), dense.row(start + i).iter().filter(|&&v| v != 0.0).count());
        }
        start = end;
    }

    // the summary agrees and never needs X's data
    let s = summarize(path, 3).unwrap();
    assert_eq!((s.n_obs, s.n_vars), (n_cells, n_genes));
    assert_eq!(s.x.unwrap().nnz, e.nnz);
    let col = s.obs_columns.iter().find(|c| c.name == pert_col).unwrap();
    assert_eq!(col.n_categories, Some(e.counts.len()));
    assert_eq!(col.top.len(), 3.min(e.counts.len()));
    assert_eq!(col.top[0].0, control);
    let text = s.to_string();
    assert!(text.contains(&format!("cells    {n_cells}")) && text.contains(control), "{text}");
}

const TINY_COUNTS: &[(&str, usize)] = &[
    ("GENE00124", 33),
    ("GENE00132", 28),
    ("GENE00200", 33),
    ("GENE00111", 25),
    ("GENE00206", 32),
    ("GENE00236", 32),
    ("GENE00283", 34),
    ("GENE00022", 28),
    ("non-targeting", 60),
];

#[test]
fn tiny() {
    for (rel, real, nnz, row0) in [
        ("tiny/real.h5ad", true, 82057, 780.5579223632812),
        ("tiny/pred.h5ad", false, 82225, 780.5579223632812),
        ("tiny/celleval/vcc/baseline/baseline.h5ad", false, 88481, 742.9161376953125),
    ] {
        let e = Expect { rel, encoding: MatrixEncoding::Csr, nnz: Some(nnz), row0_sum: row0, counts: TINY_COUNTS };
        check(&fixture(rel), "tiny", real, &e);
    }
}

#[test]
fn tiny_counts() {
    let counts = &[
        ("GENE00247", 30),
        ("GENE00263", 35),
        ("GENE00233", 29),
        ("GENE00262", 36),
        ("GENE00057", 31),
        ("GENE00234", 30),
        ("GENE00267", 25),
        ("GENE00283", 32),
        ("non-targeting", 60),
    ];
    let e = Expect {
        rel: "tiny_counts/real.h5ad",
        encoding: MatrixEncoding::Csr,
        nnz: Some(81579),
        row0_sum: 8362.0,
        counts,
    };
    check(&fixture(e.rel), "tiny_counts", true, &e);
    // pred of the same case: same cells and labels
    let r = H5adReader::open(&fixture("tiny_counts/pred.h5ad")).unwrap();
    assert_eq!(r.x_info().unwrap().shape, (308, 300));
}

#[test]
fn tiny_dense() {
    let counts = &[
        ("GENE00124", 28),
        ("GENE00061", 27),
        ("GENE00025", 35),
        ("GENE00298", 28),
        ("GENE00264", 35),
        ("GENE00091", 35),
        ("GENE00112", 31),
        ("GENE00244", 26),
        ("non-targeting", 60),
    ];
    let e = Expect {
        rel: "tiny_dense/pred.h5ad",
        encoding: MatrixEncoding::Dense,
        nnz: None,
        row0_sum: 675.584228515625,
        counts,
    };
    check(&fixture(e.rel), "tiny_dense", false, &e);
    let a = read_h5ad(&fixture(e.rel)).unwrap();
    assert!(matches!(a.x, XMatrix::Dense(_)));
    let real = H5adReader::open(&fixture("tiny_dense/real.h5ad")).unwrap();
    assert_eq!(real.x_info().unwrap().encoding, MatrixEncoding::Csr);
}

#[test]
fn errors_case_files() {
    let counts = &[
        ("GENE00070", 10),
        ("GENE00076", 12),
        ("GENE00055", 9),
        ("GENE00075", 12),
        ("GENE00080", 11),
        ("GENE00078", 12),
        ("GENE00000", 9),
        ("GENE00017", 11),
        ("non-targeting", 20),
    ];
    let e = Expect {
        rel: "errors/real.h5ad",
        encoding: MatrixEncoding::Csr,
        nnz: Some(9652),
        row0_sum: 296.7218933105469,
        counts,
    };
    check(&fixture(e.rel), "errors", true, &e);
    // pred and its derived cases are all readable; the defects are semantic (cell-eval's job)
    let r = H5adReader::open(&fixture("errors/pred.h5ad")).unwrap();
    assert_eq!(r.x_info().unwrap().shape, (106, 100));
    let unused = H5adReader::open(&fixture("errors/pred_unused_category.h5ad")).unwrap();
    let Column::Categorical(c) = unused.obs_column("target_gene").unwrap() else { panic!() };
    assert_eq!(c.categories.len(), 10);
    assert_eq!(c.counts()[c.categories.iter().position(|x| x == "GENE99999").unwrap()], 0);
    let no_col = H5adReader::open(&fixture("errors/pred_no_pert_col.h5ad")).unwrap();
    assert_eq!(no_col.obs_column_names().unwrap(), vec!["perturbation"]);
    let nan = read_h5ad(&fixture("errors/pred_nan.h5ad")).unwrap();
    let XMatrix::Sparse(x) = &nan.x else { panic!() };
    assert_eq!(x.data().iter().filter(|v| v.is_nan()).count(), 10);
    for f in ["pred_gene_order", "pred_missing_pert", "pred_no_control"] {
        read_h5ad(&fixture(&format!("errors/{f}.h5ad"))).unwrap();
    }
}

#[test]
fn vcc2026_tiny() {
    let counts = &[
        ("GENE00061", 28),
        ("GENE00030", 27),
        ("GENE00002", 36),
        ("GENE00246", 26),
        ("GENE00204", 34),
        ("GENE00291", 36),
        ("GENE00115", 31),
        ("GENE00166", 27),
        ("non-targeting", 60),
    ];
    let real = Expect {
        rel: "vcc2026/tiny/real.h5ad",
        encoding: MatrixEncoding::Csr,
        nnz: Some(78481),
        row0_sum: 10382.0,
        counts,
    };
    check(&fixture(real.rel), "vcc2026/tiny", true, &real);
    let base = Expect {
        rel: "vcc2026/tiny/baseline/baseline_pred.h5ad",
        encoding: MatrixEncoding::Csr,
        nnz: Some(78155),
        row0_sum: 9196.7236328125,
        counts,
    };
    check(&fixture(base.rel), "vcc2026/tiny", false, &base);
    read_h5ad(&fixture("vcc2026/tiny/pred.h5ad")).unwrap();
}

#[test]
fn small_gzipped() {
    let dir = tempfile::tempdir().unwrap();
    let m = meta("small");
    for (name, real) in [("real.h5ad.gz", true), ("pred.h5ad.gz", false)] {
        let path = gunzip_into(&fixture(&format!("small/{name}")), dir.path());
        let r = H5adReader::open(&path).unwrap();
        let info = r.x_info().unwrap();
        assert_eq!(info.shape, (2212, 2000));
        assert_eq!(info.encoding, MatrixEncoding::Csr);
        if real {
            let density = info.nnz.unwrap() as f64 / (2212.0 * 2000.0);
            assert!((density - m["nnz_frac_real"].as_f64().unwrap()).abs() < 1e-12);
        }
        let Column::Categorical(c) = r.obs_column("target_gene").unwrap() else { panic!() };
        assert_eq!(c.categories.len(), 21);
        let ctrl = c.categories.iter().position(|x| x == "non-targeting").unwrap();
        assert_eq!(c.counts()[ctrl], 200);
        assert_eq!(c.counts().iter().sum::<usize>(), 2212);
        // chunked reads cover exactly nnz entries
        let mut nnz = 0;
        for start in (0..2212).step_by(500) {
            nnz += r.read_x_rows(start, (start + 500).min(2212)).unwrap().nnz() as u64;
        }
        assert_eq!(Some(nnz), info.nnz);
        // filtered reads (separate reads per run of kept rows, merged across small gaps) equal the full read with
        // the other rows emptied
        let full = r.read_x_rows(100, 2212).unwrap();
        let patterns: [&dyn Fn(usize) -> bool; 5] =
            [&|_| true, &|_| false, &|i| i % 7 == 0, &|i| i % 173 == 5 || i % 211 == 0, &|i| (1000..1003).contains(&i)];
        for keep in patterns {
            let got = r.read_x_rows_where(100, 2212, keep).unwrap();
            assert_eq!(got.shape(), full.shape());
            for (i, (g, f)) in got.outer_iterator().zip(full.outer_iterator()).enumerate() {
                if keep(100 + i) {
                    assert_eq!((g.indices(), g.data()), (f.indices(), f.data()), "row {}", 100 + i);
                } else {
                    assert_eq!(g.nnz(), 0, "row {}", 100 + i);
                }
            }
        }
        let a = read_h5ad(&path).unwrap();
        assert_eq!(a.x.shape(), (2212, 2000));
    }
}
