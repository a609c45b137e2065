#![allow(clippy::unwrap_used)]
//! The vcc2026 input rules (design/vcc2026.md §3) on modified copies of the tiny fixture, in memory.
use std::path::Path;

use vcell::data::anndata::{AnnData, Column, XMatrix};
use vcell::eval::input::CellSource;
use vcell::eval::vcc2026::validate::{load_pair_sources, Vcc2026Options};
use vcell::progress::NoProgress;

fn tiny(which: &str) -> AnnData {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vcc2026/tiny").join(format!("{which}.h5ad"));
    vcell::data::h5ad::read_h5ad(&p).unwrap()
}

fn check(real: AnnData, pred: AnnData) -> String {
    let r: Box<dyn CellSource> = Box::new(real);
    let p: Box<dyn CellSource> = Box::new(pred);
    match load_pair_sources(("real".into(), r), ("pred".into(), p), &Vcc2026Options::default(), &NoProgress) {
        Ok(_) => "ok".to_owned(),
        Err(e) => e.to_string(),
    }
}

fn map_values(a: &mut AnnData, f: impl Fn(usize, f32) -> f32) {
    if let XMatrix::Sparse(m) = &mut a.x {
        for (k, v) in m.data_mut().iter_mut().enumerate() {
            *v = f(k, *v);
        }
    } else {
        panic!("tiny is sparse");
    }
}

#[test]
fn the_fixture_pair_is_accepted() {
    assert_eq!(check(tiny("real"), tiny("pred")), "ok");
}

#[test]
fn fractional_nan_and_halved_counts_are_refused() {
    for f in
        [|_: usize, v: f32| v * 0.5, |k: usize, v: f32| if k == 3 { f32::NAN } else { v }, |_: usize, v: f32| v.ln_1p()]
    {
        let mut p = tiny("pred");
        map_values(&mut p, f);
        let e = check(tiny("real"), p);
        assert!(e.contains("declared input_type='counts' but values are fractional"), "{e}");
    }
}

#[test]
fn negative_values_are_refused() {
    let mut p = tiny("pred");
    map_values(&mut p, |k, v| if k == 7 { -1.0 } else { v });
    let e = check(tiny("real"), p);
    assert!(e.contains("data contains negative values; expected non-negative"), "{e}");
}

#[test]
fn per_cell_total_over_1e6_is_refused() {
    let mut p = tiny("pred");
    map_values(&mut p, |k, v| if k == 0 { 2e6 } else { v });
    let e = check(tiny("real"), p);
    assert!(e.starts_with("ScaleLimitError: per-cell total 2"), "{e}");
    assert!(e.contains("exceeds max_counts_per_cell=1000000"), "{e}");
}

#[test]
fn label_sets_must_match_including_control() {
    let mut p = tiny("pred");
    let col = p.obs.columns.iter_mut().find(|(n, _)| n == "target_gene").unwrap();
    if let Column::Categorical(c) = &mut col.1 {
        let ctrl = c.categories.iter().position(|x| x == "non-targeting").unwrap() as i32;
        let other = if ctrl == 0 { 1 } else { 0 };
        for code in c.codes.iter_mut() {
            if *code == ctrl {
                *code = other;
            }
        }
    }
    let e = check(tiny("real"), p);
    assert!(e.starts_with("perturbation sets differ: 8 pred vs 9 real"), "{e}");
    assert!(e.contains("real-only (1)=['non-targeting']"), "{e}");
}

#[test]
fn gene_order_and_count_are_checked() {
    let mut p = tiny("pred");
    p.var.index.reverse();
    assert!(check(tiny("real"), p).contains("gene names/order differ between pred and real"));
}

#[test]
fn unresolvable_targets_are_refused() {
    let (mut r, mut p) = (tiny("real"), tiny("pred"));
    for a in [&mut r, &mut p] {
        for v in a.var.index.iter_mut() {
            v.push_str("-x");
        }
    }
    let e = check(r, p);
    assert!(
        e.starts_with("no target resolves to a gene in the reference feature index: 0 of 8 targets matched"),
        "{e}"
    );
}

/// `vcell eval --preset vcc2026` checks rules 4–5 while its passes read `X` (`validate::load_pair_deferred`): its
/// error must be the full checks' error (`validate::load_pair`), with nothing written.
fn assert_eval_error_is_exact(real: &AnnData, pred: &AnnData, case: &str) -> String {
    use vcell::eval::vcc2026::pipeline::{run_vcc2026, RunOptions};
    use vcell::eval::vcc2026::validate::load_pair;
    let dir = tempfile::tempdir().unwrap();
    let (r, p) = (dir.path().join("real.h5ad"), dir.path().join("pred.h5ad"));
    vcell::data::h5ad::write_h5ad(&r, real).unwrap();
    vcell::data::h5ad::write_h5ad(&p, pred).unwrap();
    let vcc = Vcc2026Options::default();
    let want = load_pair(&r, &p, &vcc, &NoProgress).err().map(|e| e.to_string()).unwrap_or_default();
    let out = dir.path().join("out");
    let opts = RunOptions { real: r, pred: p, outdir: out.clone(), write_de: false, vcc };
    let got = run_vcc2026(&opts, &NoProgress).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(!want.is_empty(), "{case}: the full checks passed");
    assert_eq!(got, want, "{case}");
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(), "{case}: outputs written");
    got
}

/// Set value `k` of the stored values (`k` counted from the end when `from_end`).
fn set_nth(a: &mut AnnData, k: usize, from_end: bool, value: f32) {
    let XMatrix::Sparse(m) = &mut a.x else { panic!("tiny is sparse") };
    let data = m.data_mut();
    let i = if from_end { data.len() - 1 - k } else { k };
    data[i] = value;
}

#[test]
fn eval_reports_the_full_checks_error_for_values_anywhere() {
    let cases: [(&str, f32); 4] = [("negative", -1.0), ("fractional", 2.5), ("NaN", f32::NAN), ("2e6", 2e6)];
    for (name, value) in cases {
        for in_real in [true, false] {
            for (k, from_end) in [(0, false), (3, true)] {
                let (mut r, mut p) = (tiny("real"), tiny("pred"));
                set_nth(if in_real { &mut r } else { &mut p }, k, from_end, value);
                assert_eval_error_is_exact(
                    &r,
                    &p,
                    &format!("{name} in {} at {k} {from_end}", ["pred", "real"][in_real as usize]),
                );
            }
        }
    }
    // several broken rules in both files: negatives outrank fractions, real outranks pred
    let (mut r, mut p) = (tiny("real"), tiny("pred"));
    set_nth(&mut r, 2, true, 0.5);
    set_nth(&mut p, 5, false, -2.0);
    let e = assert_eval_error_is_exact(&r, &p, "fraction in real, negative in pred");
    assert!(e.contains("real.h5ad") && e.contains("fractional"), "{e}");
}

#[test]
fn eval_checks_cells_no_pass_reads() {
    // a cell without a label belongs to no group: only the final check reads it
    let (r, mut p) = (tiny("real"), tiny("pred"));
    let col = p.obs.columns.iter_mut().find(|(n, _)| n == "target_gene").unwrap();
    let Column::Categorical(c) = &mut col.1 else { panic!("categorical") };
    let last = c.codes.len() - 1;
    c.codes[last] = -1;
    set_nth(&mut p, 0, true, 0.25);
    let e = assert_eval_error_is_exact(&r, &p, "fraction in an unlabelled cell");
    assert!(e.contains("fractional"), "{e}");
}

#[test]
fn eval_reports_value_rules_before_target_resolution() {
    let (mut r, mut p) = (tiny("real"), tiny("pred"));
    for a in [&mut r, &mut p] {
        for v in a.var.index.iter_mut() {
            v.push_str("-x");
        }
    }
    set_nth(&mut p, 1, true, 7.5);
    let e = assert_eval_error_is_exact(&r, &p, "fraction and no target resolves");
    assert!(e.contains("fractional"), "{e}");
}
