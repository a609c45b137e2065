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
