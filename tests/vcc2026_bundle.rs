#![allow(clippy::unwrap_used)]
//! Baseline arm, replicate anchor (five half-splits) and the final score against cell-eval2 0.20.0's bundle
//! (tests/fixtures/vcc2026/<case>/{bundle,csv,score.csv}). small's inputs: see tests/vcc2026_eval.rs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vcell::eval::vcc2026::baseline::baseline_side;
use vcell::eval::vcc2026::bundle::{build_bundle, half_splits};
use vcell::eval::vcc2026::outputs::parse_agg_csv;
use vcell::eval::vcc2026::score::score;
use vcell::eval::vcc2026::validate::{load_real, Vcc2026Options};
use vcell::progress::NoProgress;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vcc2026").join(case)
}

fn inputs(case: &str) -> Option<PathBuf> {
    if case == "tiny" {
        return Some(fixture("tiny"));
    }
    let d = PathBuf::from(std::env::var("VCC2026_SMALL_DIR").unwrap_or_else(|_| "/tmp/vcc_small".to_owned()));
    d.join("real.h5ad").exists().then_some(d)
}

fn csv_rows(p: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(p).unwrap().lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect()
}

fn num(s: &str) -> f64 {
    vcell::eval::format::parse_opt(s).unwrap().unwrap_or(f64::NAN)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a.is_nan() && b.is_nan()) || (a - b).abs() <= (tol * b.abs()).max(1e-15)
}

fn check_case(case: &str) {
    let Some(dir) = inputs(case) else {
        eprintln!("skipping {case}: inputs not found");
        return;
    };
    let opts = Vcc2026Options::default();
    let (real, vars) = load_real(&dir.join("real.h5ad"), &opts, &NoProgress).unwrap();
    // half-splits
    let splits = half_splits(&real);
    let mut got = Vec::new();
    for (i, s) in splits.iter().enumerate() {
        for (g, a, b) in &s.groups {
            for (half, rows) in [("A", a), ("B", b)] {
                for (k, r) in rows.iter().enumerate() {
                    got.push(vec![
                        i.to_string(),
                        s.seed.to_string(),
                        g.clone(),
                        half.to_owned(),
                        k.to_string(),
                        r.to_string(),
                    ]);
                }
            }
        }
    }
    assert_eq!(got, csv_rows(&fixture(case).join("csv/anchor_halves.csv")), "{case}: half-splits");
    // baseline draws
    let (_, draws) = baseline_side(&real, &vars, &opts.control, 0, &NoProgress).unwrap();
    let got: Vec<Vec<String>> = draws
        .iter()
        .map(|d| {
            vec![
                d.group.clone(),
                d.position.to_string(),
                d.obs_row.to_string(),
                d.control_draw.to_string(),
                d.source_obs_row.to_string(),
            ]
        })
        .collect();
    assert_eq!(got, csv_rows(&fixture(case).join("csv/baseline_draws.csv")), "{case}: baseline draws");
    drop(real);
    // the bundle
    let out = tempfile::tempdir().unwrap();
    build_bundle(&dir.join("real.h5ad"), out.path(), &format!("vcc2026-{case}"), &opts, &NoProgress).unwrap();
    let wb = parse_agg_csv(&std::fs::read_to_string(fixture(case).join("bundle/baseline_agg.csv")).unwrap()).unwrap();
    let gb = parse_agg_csv(&std::fs::read_to_string(out.path().join("baseline_agg.csv")).unwrap()).unwrap();
    for (m, st) in &wb {
        for (s, &w) in st {
            let g = gb[m][s];
            assert!(close(g, w, 1e-9), "{case} baseline {m}/{s}: got {g} want {w}");
        }
    }
    let key = |r: &Vec<String>| (r[0].clone(), r[2].clone());
    let ws: BTreeMap<_, _> =
        csv_rows(&fixture(case).join("csv/anchor_splits.csv")).into_iter().map(|r| (key(&r), r)).collect();
    let gs: BTreeMap<_, _> =
        csv_rows(&out.path().join("anchor_splits.csv")).into_iter().map(|r| (key(&r), r)).collect();
    assert_eq!(ws.keys().collect::<Vec<_>>(), gs.keys().collect::<Vec<_>>());
    let mut worst = 0.0f64;
    for (k, w) in &ws {
        let g = &gs[k];
        assert_eq!(g[1], w[1], "seed");
        let (a, b) = (num(&g[3]), num(&w[3]));
        assert!(close(a, b, 1e-9), "{case} split {k:?}: got {a} want {b}");
        if b != 0.0 {
            worst = worst.max(((a - b) / b).abs());
        }
        assert_eq!(g[4], w[4], "{case} split {k:?} n_perturbations");
    }
    let wa: BTreeMap<_, _> =
        csv_rows(&fixture(case).join("csv/anchor_agg.csv")).into_iter().map(|r| (r[0].clone(), r)).collect();
    let ga: BTreeMap<_, _> =
        csv_rows(&out.path().join("anchor_agg.csv")).into_iter().map(|r| (r[0].clone(), r)).collect();
    assert_eq!(wa.keys().collect::<Vec<_>>(), ga.keys().collect::<Vec<_>>());
    for (m, w) in &wa {
        let g = &ga[m];
        for i in 1..5 {
            assert!(close(num(&g[i]), num(&w[i]), 1e-9), "{case} anchor {m} col {i}: {} vs {}", g[i], w[i]);
        }
        assert_eq!(&g[5..], &w[5..], "{case} anchor {m}");
    }
    // the score, from cell-eval2's run and our bundle
    let u = parse_agg_csv(&std::fs::read_to_string(fixture(case).join("run/agg_results.csv")).unwrap()).unwrap();
    let u: BTreeMap<String, f64> = u.iter().map(|(m, s)| (m.clone(), s["mean"])).collect();
    let b: BTreeMap<String, f64> = gb.iter().map(|(m, s)| (m.clone(), s["mean"])).collect();
    let r: BTreeMap<String, f64> = ga.iter().map(|(m, row)| (m.clone(), num(&row[1]))).collect();
    let (rows, avg) = score(&u, &b, &r).unwrap();
    let want = csv_rows(&fixture(case).join("score.csv"));
    for (g, w) in rows.iter().zip(&want) {
        assert_eq!(g.metric, w[0]);
        assert!(
            close(g.from_replicate, num(&w[2]), 1e-9),
            "{case} score {}: {} vs {}",
            g.metric,
            g.from_replicate,
            w[2]
        );
        assert!(
            close(g.from_baseline, num(&w[1]), 1e-9),
            "{case} from_baseline {}: {} vs {}",
            g.metric,
            g.from_baseline,
            w[1]
        );
    }
    let wavg = num(&want[6][2]);
    assert!(close(avg, wavg, 1e-9), "{case} avg_score {avg} vs {wavg}");
    eprintln!(
        "{case}: splits worst rel {worst:e}; avg_score {avg} (cell-eval2 {wavg}, rel {:e})",
        ((avg - wavg) / wavg).abs()
    );
}

#[test]
fn tiny_bundle_and_score_match_cell_eval2() {
    check_case("tiny");
}

#[test]
fn small_bundle_and_score_match_cell_eval2() {
    check_case("small");
}
