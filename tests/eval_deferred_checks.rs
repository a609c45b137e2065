#![allow(clippy::unwrap_used)]
//! `vcell eval` defers the value checks of a log1p file to the passes that read `X` (`input::
//! load_pair_sources_deferred`). These tests put a bad value beyond the first chunk, where only the deferred checks
//! can see it, and require the error of the full checks (`input::load_pair`, cell-eval's order) and an empty OUTDIR.

use std::path::{Path, PathBuf};

use vcell::data::anndata::{AnnData, Column, XMatrix};
use vcell::data::h5ad::{read_h5ad, write_h5ad};
use vcell::eval::de::DeOptions;
use vcell::eval::input::{load_pair, InputOptions};
use vcell::eval::pipeline::{run_eval, EvalOptions};
use vcell::eval::profile::Profile;
use vcell::progress::NoProgress;

/// A row far beyond the first chunk (16 rows with `chunk_nnz: 1`).
const LATE_ROW: usize = 90;

fn fixture(name: &str) -> AnnData {
    read_h5ad(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/errors").join(name)).unwrap()
}

/// Set the first stored value of `row`.
fn set_value(ad: &mut AnnData, row: usize, value: f32) {
    let XMatrix::Sparse(m) = &mut ad.x else { panic!("fixture X is CSR") };
    let at = m.indptr().to_proper()[row];
    m.data_mut()[at] = value;
}

/// Mark `row`'s perturbation label missing (its cell belongs to no group, so no DE pass reads it).
fn drop_label(ad: &mut AnnData, row: usize) {
    let Some(Column::Categorical(c)) = ad.obs.column("target_gene").cloned() else { panic!("categorical") };
    let mut c = c;
    c.codes[row] = -1;
    ad.obs.set_column("target_gene", Column::Categorical(c));
}

fn input_opts(allow_discrete: bool) -> InputOptions {
    InputOptions { chunk_nnz: 1, allow_discrete, ..InputOptions::default() }
}

fn write_pair(dir: &Path, real: &AnnData, pred: &AnnData) -> (PathBuf, PathBuf) {
    let (r, p) = (dir.join("real.h5ad"), dir.join("pred.h5ad"));
    write_h5ad(&r, real).unwrap();
    write_h5ad(&p, pred).unwrap();
    (r, p)
}

fn eval(real: &Path, pred: &Path, out: &Path, input: InputOptions) -> Result<(), String> {
    let opts = EvalOptions {
        real: real.to_owned(),
        pred: pred.to_owned(),
        outdir: out.to_owned(),
        profile: Profile::Vcc,
        skip_metrics: vec![],
        input,
        de: DeOptions::default(),
        celltype_col: None,
        de_real: None,
        de_pred: None,
        embed_key: None,
        write_de: true,
    };
    run_eval(&opts, &NoProgress).map(|_| ()).map_err(|e| e.to_string())
}

/// The pipeline's error equals the full checks' error, and nothing is left in OUTDIR.
fn assert_same_error(real: &AnnData, pred: &AnnData, allow_discrete: bool, case: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (r, p) = write_pair(dir.path(), real, pred);
    let want = load_pair(&r, &p, &input_opts(allow_discrete), &NoProgress).unwrap_err().to_string();
    let out = dir.path().join("out");
    let got = eval(&r, &p, &out, input_opts(allow_discrete)).unwrap_err();
    assert_eq!(got, want, "{case}");
    let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
    assert!(left.is_empty(), "{case}: OUTDIR holds {left:?}");
    got
}

#[test]
fn late_bad_values_give_the_full_checks_error() {
    let (real, pred) = (fixture("real.h5ad"), fixture("pred.h5ad"));
    let cases: [(&str, f32, &str); 4] = [
        ("NaN", f32::NAN, "NaN"),
        ("inf", f32::INFINITY, "infinite"),
        ("negative", -1.0, "negative"),
        ("20", 20.0, "15"),
    ];
    for (name, value, phrase) in cases {
        for in_real in [true, false] {
            let (mut r, mut p) = (real.clone(), pred.clone());
            set_value(if in_real { &mut r } else { &mut p }, LATE_ROW, value);
            let msg = assert_same_error(&r, &p, false, &format!("{name} in {}", if in_real { "real" } else { "pred" }));
            assert!(msg.contains(phrase), "{name}: {msg}");
        }
    }
}

#[test]
fn allow_discrete_accepts_large_log1p_values_but_not_negatives() {
    let (real, mut pred) = (fixture("real.h5ad"), fixture("pred.h5ad"));
    set_value(&mut pred, LATE_ROW, 20.0);
    let dir = tempfile::tempdir().unwrap();
    let (r, p) = write_pair(dir.path(), &real, &pred);
    eval(&r, &p, &dir.path().join("out"), input_opts(true)).unwrap();
    assert!(dir.path().join("out/agg_results.csv").exists());
    set_value(&mut pred, LATE_ROW, -1.0);
    assert_same_error(&real, &pred, true, "negative with --allow-discrete");
}

#[test]
fn step_two_errors_come_before_later_checks() {
    // pred fails step 2 late in X (a value ≥ 15) and step 8 in real (a NaN): step 2 is reported
    let (mut real, mut pred) = (fixture("real.h5ad"), fixture("pred.h5ad"));
    set_value(&mut real, LATE_ROW, f32::NAN);
    set_value(&mut pred, LATE_ROW + 5, 20.0);
    let msg = assert_same_error(&real, &pred, false, "NaN in real, 20 in pred");
    assert!(msg.contains("pred"), "{msg}");
    // a failing gene-order check (step 4) does not hide a late step-2 failure
    let mut pred = fixture("pred_gene_order.h5ad");
    set_value(&mut pred, LATE_ROW, 20.0);
    let msg = assert_same_error(&fixture("real.h5ad"), &pred, false, "gene order and 20 in pred");
    assert!(msg.contains("15"), "{msg}");
}

#[test]
fn rows_no_pass_reads_are_still_checked() {
    let (mut real, mut pred) = (fixture("real.h5ad"), fixture("pred.h5ad"));
    drop_label(&mut real, LATE_ROW);
    drop_label(&mut pred, LATE_ROW);
    set_value(&mut pred, LATE_ROW, f32::NAN);
    let msg = assert_same_error(&real, &pred, false, "NaN in an unlabelled cell");
    assert!(msg.contains("NaN"), "{msg}");
}

#[test]
fn chunk_size_does_not_change_outputs() {
    let (real, pred) = (fixture("real.h5ad"), fixture("pred.h5ad"));
    let dir = tempfile::tempdir().unwrap();
    let (r, p) = write_pair(dir.path(), &real, &pred);
    let (small, whole) = (dir.path().join("small"), dir.path().join("whole"));
    eval(&r, &p, &small, input_opts(false)).unwrap();
    eval(&r, &p, &whole, InputOptions::default()).unwrap();
    for f in ["real_de.csv", "pred_de.csv", "results.csv", "agg_results.csv"] {
        assert_eq!(std::fs::read(small.join(f)).unwrap(), std::fs::read(whole.join(f)).unwrap(), "{f}");
    }
}

#[test]
fn every_error_fixture_gives_the_full_checks_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/errors");
    let real = dir.join("real.h5ad");
    for pred in [
        "pred_gene_order.h5ad",
        "pred_missing_pert.h5ad",
        "pred_nan.h5ad",
        "pred_no_control.h5ad",
        "pred_no_pert_col.h5ad",
        "pred_not_hdf5.h5ad",
        "pred_truncated.h5ad",
        "pred_unused_category.h5ad",
    ] {
        let pred = dir.join(pred);
        let want = load_pair(&real, &pred, &input_opts(false), &NoProgress).unwrap_err().to_string();
        let out = tempfile::tempdir().unwrap();
        let got = eval(&real, &pred, &out.path().join("out"), input_opts(false)).unwrap_err();
        assert_eq!(got, want, "{}", pred.display());
    }
}
