#![allow(clippy::unwrap_used)]
//! Baseline arm, replicate anchor (five half-splits) and the final score against cell-eval2 0.20.0's bundle
//! (tests/fixtures/vcc2026/<case>/{bundle,csv,score.csv}). small's inputs: see tests/vcc2026_eval.rs.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vcell::eval::format::fmt_f64;
use vcell::eval::vcc2026::baseline::baseline_side;
use vcell::eval::vcc2026::bundle::{anchor_agg, build_bundle, half_splits, read_anchor_agg, read_anchor_splits};
use vcell::eval::vcc2026::outputs::parse_agg_csv;
use vcell::eval::vcc2026::score::{score, score_real_bundle};
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
    let built =
        build_bundle(&dir.join("real.h5ad"), out.path(), &format!("vcc2026-{case}"), &opts, &NoProgress).unwrap();
    // round trip: the parquet files read back exactly as computed
    let aggs: Vec<_> = built.splits.iter().map(|(_, a)| a.clone()).collect();
    let computed = anchor_agg(&aggs);
    let back = read_anchor_agg(out.path()).unwrap();
    assert_eq!(computed.keys().collect::<Vec<_>>(), back.keys().collect::<Vec<_>>());
    for (m, c) in &computed {
        let b = &back[m];
        let o = |x: Option<usize>| x.map(|v| v as i64);
        assert_eq!(
            (c.0.to_bits(), c.1.to_bits(), c.2.to_bits(), c.3.to_bits(), o(c.4), o(c.5), c.6),
            (
                b.replicate.to_bits(),
                b.replicate_sd.to_bits(),
                b.replicate_min.to_bits(),
                b.replicate_max.to_bits(),
                b.n_perturbations_min,
                b.n_perturbations_max,
                b.estimator.as_str()
            ),
            "{case} anchor_agg.parquet round trip, {m}"
        );
    }
    let splits_back = read_anchor_splits(out.path()).unwrap();
    let mut k = 0;
    for (i, (sp, agg)) in built.splits.iter().enumerate() {
        for (m, (v, n)) in agg {
            let r = &splits_back[k];
            assert_eq!(
                (r.0, r.1, &r.2, r.3.to_bits(), r.4),
                (i as i64, sp.seed as i64, m, v.to_bits(), n.map(|x| x as i64))
            );
            k += 1;
        }
    }
    assert_eq!(k, splits_back.len());
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
    // ours, read back from anchor_splits.parquet in the csv export's layout
    let gs: BTreeMap<_, _> = read_anchor_splits(out.path())
        .unwrap()
        .into_iter()
        .map(|(i, seed, m, v, n)| {
            vec![i.to_string(), seed.to_string(), m, fmt_f64(v), n.map(|x| x.to_string()).unwrap_or_default()]
        })
        .map(|r| (key(&r), r))
        .collect();
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
    // anchor_agg: ours against cell-eval2's own parquet file
    let wa = read_anchor_agg(&fixture(case).join("bundle")).unwrap();
    let ga = read_anchor_agg(out.path()).unwrap();
    assert_eq!(wa.keys().collect::<Vec<_>>(), ga.keys().collect::<Vec<_>>());
    for (m, w) in &wa {
        let g = &ga[m];
        for (x, y) in [
            (g.replicate, w.replicate),
            (g.replicate_sd, w.replicate_sd),
            (g.replicate_min, w.replicate_min),
            (g.replicate_max, w.replicate_max),
        ] {
            assert!(close(x, y, 1e-9), "{case} anchor {m}: {g:?} vs {w:?}");
        }
        assert_eq!(
            (g.n_perturbations_min, g.n_perturbations_max, &g.estimator),
            (w.n_perturbations_min, w.n_perturbations_max, &w.estimator),
            "{case} anchor {m}"
        );
    }
    // the score, from cell-eval2's run and our bundle
    let u = parse_agg_csv(&std::fs::read_to_string(fixture(case).join("run/agg_results.csv")).unwrap()).unwrap();
    let u: BTreeMap<String, f64> = u.iter().map(|(m, s)| (m.clone(), s["mean"])).collect();
    let b: BTreeMap<String, f64> = gb.iter().map(|(m, s)| (m.clone(), s["mean"])).collect();
    let r: BTreeMap<String, f64> = ga.iter().map(|(m, row)| (m.clone(), row.replicate)).collect();
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

/// cell-eval2's own bundle directory as is (parquet anchor, its manifest) and its own run: `score_real_bundle`
/// reproduces its score.csv. Both files carry cell-eval2's digests, so they are compared and no warning is given.
fn check_cell_eval2_bundle(case: &str) {
    let f = fixture(case);
    let out =
        score_real_bundle(&f.join("run/agg_results.csv"), &f.join("run/run_meta.json"), &f.join("bundle")).unwrap();
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert_eq!(out.bundle_id, format!("vcc2026-{case}"));
    let want = csv_rows(&f.join("score.csv"));
    assert_eq!(want.len(), out.rows.len() + 1);
    for (g, w) in out.rows.iter().zip(&want) {
        assert_eq!(g.metric, w[0]);
        assert!(close(g.from_replicate, num(&w[2]), 1e-9), "{case} {}: {} vs {}", g.metric, g.from_replicate, w[2]);
        assert!(close(g.from_baseline, num(&w[1]), 1e-9), "{case} {}: {} vs {}", g.metric, g.from_baseline, w[1]);
    }
    assert_eq!(want[6][0], "avg_score");
    assert!(close(out.avg, num(&want[6][2]), 1e-9), "{case} avg_score {} vs {}", out.avg, want[6][2]);
    // the provenance columns equal cell-eval2's, the bundle digest recomputed from its manifest
    let ours = vcell::eval::vcc2026::score::score_csv(&out);
    let ours: Vec<Vec<String>> = ours.lines().map(|l| l.split(',').map(str::to_owned).collect()).collect();
    let header = std::fs::read_to_string(f.join("score.csv")).unwrap();
    assert_eq!(ours[0].join(","), header.lines().next().unwrap());
    for (g, w) in ours[1..].iter().zip(&want) {
        assert_eq!(g[3..], w[3..], "{case} {}", g[0]);
    }
    // the guard compares cell-eval2's digests with each other: a different config is refused
    let tmp = tempfile::tempdir().unwrap();
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("run/run_meta.json")).unwrap()).unwrap();
    meta["config_digest"] = serde_json::json!("0".repeat(64));
    std::fs::write(tmp.path().join("run_meta.json"), meta.to_string()).unwrap();
    let e = score_real_bundle(&f.join("run/agg_results.csv"), &tmp.path().join("run_meta.json"), &f.join("bundle"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("config_digest"), "{e}");
}

#[test]
fn tiny_cell_eval2_bundle_scores_as_cell_eval2() {
    check_cell_eval2_bundle("tiny");
}

#[test]
fn small_cell_eval2_bundle_scores_as_cell_eval2() {
    check_cell_eval2_bundle("small");
}
