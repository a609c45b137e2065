#![allow(clippy::unwrap_used)]
//! Accuracy of the metric stage against cell-eval 0.8.2's outputs in `tests/fixtures/*/celleval/`.
//!
//! DE metrics are computed from the fixtures' stored `real_de.csv` / `pred_de.csv` (byte-identical between the vcc and
//! full runs) and compared with the `results.csv` / `agg_results.csv` cells:
//! - exact (`==`): overlap_at_*, precision_at_*, de_nsig_counts_*, de_sig_genes_recall, de_direction_match,
//!   discrimination_score_* (k/N ratios);
//! - ≤ 1e-15: de_spearman_sig, de_spearman_lfc_sig, pr_auc, roc_auc;
//! - ≤ 1e-6: mae, mse, *_delta, pearson_delta (sklearn/scipy reduce in f32);
//! - not compared: pearson_edistance, clustering_agreement (Leiden, cell-level distances: not reproducible).
mod metrics_support;

use std::path::PathBuf;

use metrics_support::*;
use vcell::eval::describe::describe;
use vcell::eval::metrics::{compute_metrics, MetricTable};
use vcell::eval::profile::{MetricSet, Profile};
use vcell::eval::results_csv::{agg_csv_bytes, results_csv_bytes};

const EXACT: &[&str] = &[
    "overlap_at_N",
    "overlap_at_50",
    "overlap_at_100",
    "overlap_at_200",
    "overlap_at_500",
    "precision_at_N",
    "precision_at_50",
    "precision_at_100",
    "precision_at_200",
    "precision_at_500",
    "de_nsig_counts_real",
    "de_nsig_counts_pred",
    "de_sig_genes_recall",
    "de_direction_match",
    "discrimination_score_l1",
    "discrimination_score_l2",
    "discrimination_score_cosine",
];
const CLOSE_1E15: &[&str] = &["de_spearman_sig", "de_spearman_lfc_sig", "pr_auc", "roc_auc"];

fn tolerance(metric: &str) -> Option<f64> {
    if EXACT.contains(&metric) {
        Some(0.0)
    } else if CLOSE_1E15.contains(&metric) {
        Some(1e-15)
    } else if matches!(metric, "pearson_edistance" | "clustering_agreement") {
        None
    } else {
        Some(1e-6)
    }
}

fn de_table(case: &str) -> MetricTable {
    let dir = fixtures().join(case).join("celleval/vcc");
    let real = load_de(&dir, "real_de");
    let pred = load_de(&dir, "pred_de");
    compute_metrics(&MetricSet::new(Profile::De, &[]), Some((&real, &pred)), None).unwrap()
}

/// Compares the columns of `ours` that the fixture has; returns the max diff per metric.
fn compare_results(ours: &MetricTable, fixture: PathBuf) -> Vec<(String, f64)> {
    let (h, rows) = read_csv(&fixture);
    let ours_bytes = results_csv_bytes(ours).unwrap();
    let mut r = csv::Reader::from_reader(ours_bytes.as_slice());
    let oh: Vec<String> = r.headers().unwrap().iter().map(str::to_string).collect();
    let orows: Vec<Vec<String>> = r.records().map(|x| x.unwrap().iter().map(str::to_string).collect()).collect();
    assert_eq!(orows.len(), rows.len(), "row count {}", fixture.display());
    let mut report = Vec::new();
    for (j, name) in oh.iter().enumerate().skip(1) {
        let Some(fj) = h.iter().position(|c| c == name) else { panic!("{name} not in {}", fixture.display()) };
        let mut max = 0.0f64;
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(orows[i][0], row[0], "perturbation order");
            let d = cell_diff(&orows[i][j], &row[fj]);
            if let Some(tol) = tolerance(name) {
                assert!(
                    d <= tol,
                    "{}: {name} row {} ours {} fixture {} (diff {d})",
                    fixture.display(),
                    row[0],
                    orows[i][j],
                    row[fj]
                );
            }
            max = max.max(d);
        }
        report.push((name.clone(), max));
    }
    report
}

#[test]
fn de_metrics_match_full_fixtures() {
    for case in ["tiny", "tiny_counts", "small"] {
        let ours = de_table(case);
        let report = compare_results(&ours, fixtures().join(case).join("celleval/full/results.csv"));
        eprintln!("{case}: {report:?}");
        assert_eq!(report.len(), 18);
    }
}

#[test]
fn de_overlap_matches_vcc_fixtures() {
    for case in ["tiny", "tiny_counts", "tiny_dense", "small", "errors"] {
        let dir = fixtures().join(case).join("celleval/vcc");
        let real = load_de(&dir, "real_de");
        let pred = load_de(&dir, "pred_de");
        let set = MetricSet::new(Profile::Vcc, &[]);
        let ours = compute_metrics(&set, Some((&real, &pred)), None).unwrap();
        let report = compare_results(&ours, dir.join("results.csv"));
        eprintln!("{case} vcc: {report:?}");
    }
}

#[test]
fn results_csv_header_and_describe_of_fixture_results() {
    // describe() of the fixture's own results.csv must reproduce its agg_results.csv exactly.
    for path in [
        "tiny/celleval/full",
        "tiny/celleval/vcc",
        "tiny_counts/celleval/full",
        "small/celleval/full",
        "small/celleval/vcc",
        "tiny_dense/celleval/vcc",
        "errors/celleval/vcc",
        "small/celleval/vcc/baseline",
        "tiny/celleval/vcc/baseline",
    ] {
        let dir = fixtures().join(path);
        let (h, rows) = read_csv(&dir.join("results.csv"));
        let table = MetricTable {
            perturbations: rows.iter().map(|r| r[0].clone()).collect(),
            columns: h
                .iter()
                .enumerate()
                .skip(1)
                .map(|(j, name)| vcell::eval::metrics::MetricColumn {
                    name: name.clone(),
                    values: rows.iter().map(|r| vcell::eval::format::parse_opt(&r[j]).unwrap()).collect(),
                })
                .collect(),
        };
        // writing the parsed table back gives the same bytes
        let back = results_csv_bytes(&table).unwrap();
        assert_eq!(
            String::from_utf8(back).unwrap(),
            std::fs::read_to_string(dir.join("results.csv")).unwrap(),
            "{path} results.csv round trip"
        );
        let agg = agg_csv_bytes(&describe(&table)).unwrap();
        let got = String::from_utf8(agg).unwrap();
        let want = std::fs::read_to_string(dir.join("agg_results.csv")).unwrap();
        let max = compare_agg(&got, &want, path);
        eprintln!("{path}: max relative diff of mean/std {max:e}");
    }
}

/// Compares agg CSV text: header and count/null_count/min/quantiles/max exactly, mean and std within 4e-16 relative
/// (polars' summation order is compiler-chosen; see `src/eval/describe.rs`). Returns the max relative mean/std diff.
fn compare_agg(got: &str, want: &str, what: &str) -> f64 {
    let g: Vec<Vec<&str>> = got.lines().map(|l| l.split(',').collect()).collect();
    let w: Vec<Vec<&str>> = want.lines().map(|l| l.split(',').collect()).collect();
    assert_eq!(g.len(), w.len(), "{what}: rows");
    assert_eq!(g[0], w[0], "{what}: header");
    let mut max = 0.0f64;
    for (gr, wr) in g.iter().zip(&w).skip(1) {
        assert_eq!(gr[0], wr[0]);
        for (j, (a, b)) in gr.iter().zip(wr).enumerate().skip(1) {
            let d = cell_diff(a, b);
            if matches!(gr[0], "mean" | "std") {
                let scale = b.parse::<f64>().map(f64::abs).unwrap_or(0.0).max(1e-300);
                let rel = if d == 0.0 { 0.0 } else { d / scale };
                // a constant column has std exactly 0 in ours and ~1e-16 (absolute) in polars
                let ok = rel <= 4e-16 || d <= 2e-16;
                assert!(ok, "{what}: {} {}: ours {a} fixture {b}", gr[0], w[0][j]);
                if d > 2e-16 {
                    max = max.max(rel);
                }
            } else {
                assert_eq!(a, b, "{what}: {} {}", gr[0], w[0][j]);
            }
        }
    }
    max
}

#[test]
fn score_matches_fixtures() {
    use vcell::eval::results_csv::read_agg;
    use vcell::eval::score::{score, score_csv_bytes};
    for case in ["tiny", "small"] {
        let dir = fixtures().join(case).join("celleval/vcc");
        let user = read_agg(&dir.join("agg_results.csv")).unwrap();
        let base = read_agg(&dir.join("baseline/agg_results.csv")).unwrap();
        let rows = score(&user, &base).unwrap();
        let got = String::from_utf8(score_csv_bytes(&rows)).unwrap();
        let want = std::fs::read_to_string(dir.join("score.csv")).unwrap();
        assert_eq!(got, want, "{case} score.csv");
    }
}

fn anndata_table(real: &std::path::Path, pred: &std::path::Path, profile: Profile) -> MetricTable {
    let rc = load_cells(real);
    let pc = load_cells(pred);
    let rb = pseudobulk(&rc);
    let pb = pseudobulk(&pc);
    let input = vcell::eval::metrics::AnndataInput {
        control: "non-targeting",
        genes: &rc.genes,
        real: &rb,
        pred: &pb,
        embed: None,
        cells: None,
    };
    let set = MetricSet::new(profile, &["pearson_edistance", "clustering_agreement"]);
    compute_metrics(&set, None, Some(&input)).unwrap()
}

#[test]
fn anndata_metrics_match_fixtures() {
    for (case, real, pred, results, profile) in [
        ("tiny", "tiny/real.h5ad", "tiny/pred.h5ad", "tiny/celleval/full/results.csv", Profile::Anndata),
        (
            "tiny_counts",
            "tiny_counts/real.h5ad",
            "tiny_counts/pred.h5ad",
            "tiny_counts/celleval/full/results.csv",
            Profile::Anndata,
        ),
        ("small", "small/real.h5ad.gz", "small/pred.h5ad.gz", "small/celleval/full/results.csv", Profile::Anndata),
        (
            "tiny_dense",
            "tiny_dense/real.h5ad",
            "tiny_dense/pred.h5ad",
            "tiny_dense/celleval/vcc/results.csv",
            Profile::Pds,
        ),
        ("errors", "errors/real.h5ad", "errors/pred.h5ad", "errors/celleval/vcc/results.csv", Profile::Pds),
        (
            "tiny baseline",
            "tiny/real.h5ad",
            "tiny/celleval/vcc/baseline/baseline.h5ad",
            "tiny/celleval/vcc/baseline/results.csv",
            Profile::Pds,
        ),
    ] {
        let f = fixtures();
        if !f.join(real).exists() || !f.join(pred).exists() {
            eprintln!("{case}: inputs missing, skipped");
            continue;
        }
        let mut ours = anndata_table(&f.join(real), &f.join(pred), profile);
        if profile == Profile::Pds {
            // vcc fixtures also hold mae
            let more = anndata_table(&f.join(real), &f.join(pred), Profile::Minimal);
            if let Some(c) = more.column("mae") {
                ours.columns.push(c.clone());
            }
        }
        let report = compare_results(&ours, f.join(results));
        eprintln!("{case}: {report:?}");
    }
}

struct PairCells(Cells, Cells);

impl vcell::eval::metrics::CellSource for PairCells {
    fn cells(
        &self,
        side: vcell::eval::metrics::Side,
        label: &str,
    ) -> Result<vcell::eval::metrics::DenseCells, vcell::eval::metrics::MetricError> {
        let c = match side {
            vcell::eval::metrics::Side::Real => &self.0,
            vcell::eval::metrics::Side::Pred => &self.1,
        };
        let mut data = Vec::new();
        let mut n = 0;
        for (i, l) in c.labels.iter().enumerate() {
            if l == label {
                data.extend_from_slice(&c.data[i * c.n_cols..(i + 1) * c.n_cols]);
                n += 1;
            }
        }
        Ok(vcell::eval::metrics::DenseCells { n_rows: n, n_cols: c.n_cols, data })
    }
}

/// A fixture's folder, its cells in memory and its sorted non-control perturbations.
fn fixture_cells(case: &str) -> (PathBuf, PairCells, Vec<String>) {
    let f = fixtures().join(case);
    let cells = PairCells(load_cells(&f.join("real.h5ad")), load_cells(&f.join("pred.h5ad")));
    let mut perts: Vec<String> = cells.0.labels.iter().filter(|l| *l != "non-targeting").cloned().collect();
    perts.sort();
    perts.dedup();
    (f, cells, perts)
}

/// pearson_edistance is compared loosely (sklearn's f32 dot-product Euclidean distances are not reproducible bit for
/// bit): ≤ 1e-4 on the tiny fixtures.
#[test]
fn pearson_edistance_close_to_fixture() {
    for case in ["tiny", "tiny_counts"] {
        let (f, cells, perts) = fixture_cells(case);
        let v = vcell::eval::metrics::edistance::pearson_edistance(&cells, &perts, "non-targeting").unwrap();
        let (h, rows) = read_csv(&f.join("celleval/full/results.csv"));
        let j = h.iter().position(|c| c == "pearson_edistance").unwrap();
        let want: f64 = rows[0][j].parse().unwrap();
        eprintln!("{case}: pearson_edistance ours {v} fixture {want} diff {:e}", (v - want).abs());
        assert!((v - want).abs() <= 1e-4);
    }
}

/// The full profile end to end (`run_eval`): the streamed cell access behind pearson_edistance (labels collected
/// a batch per pass) and the pseudobulk centroids behind clustering_agreement give the same values as the
/// in-memory cells, whatever the batch budget (1 byte: one label per pass; default: all labels in one pass).
/// The two budgets agree exactly; the in-memory cells of `tiny_counts` are normalised by the test's own loader
/// (libm log1p, not numpy's), hence the 1e-7 there.
#[test]
fn full_profile_streamed_cells_equal_in_memory_cells() {
    use vcell::eval::de::DeOptions;
    use vcell::eval::input::InputOptions;
    use vcell::eval::pipeline::{run_eval, EvalOptions};
    for case in ["tiny", "tiny_counts"] {
        let (f, cells, perts) = fixture_cells(case);
        let want_ed = vcell::eval::metrics::edistance::pearson_edistance(&cells, &perts, "non-targeting").unwrap();
        let want_ca = vcell::eval::metrics::clustering::clustering_agreement(&cells, &perts).unwrap();
        let mut by_budget = Vec::new();
        for batch_bytes in [1, DeOptions::default().batch_bytes] {
            let tmp = tempfile::tempdir().unwrap();
            let opts = EvalOptions {
                real: f.join("real.h5ad"),
                pred: f.join("pred.h5ad"),
                outdir: tmp.path().join("out"),
                profile: Profile::Full,
                skip_metrics: vec![],
                input: InputOptions::default(),
                de: DeOptions { batch_bytes },
                celltype_col: None,
                de_real: None,
                de_pred: None,
                embed_key: None,
                write_de: false,
            };
            let out = run_eval(&opts, &vcell::progress::NoProgress).unwrap().remove(0).results;
            for (name, want) in [("pearson_edistance", want_ed), ("clustering_agreement", want_ca)] {
                let col = out.column(name).unwrap_or_else(|| panic!("{case}: no {name}"));
                // one value for the whole run, repeated per perturbation
                for v in &col.values {
                    let v = v.unwrap_or(f64::NAN);
                    assert!((v - want).abs() <= 1e-7, "{case} {name} batch_bytes={batch_bytes}: {v} vs {want}");
                }
                by_budget.push((name, col.values.clone()));
            }
        }
        assert_eq!(by_budget[..2], by_budget[2..], "{case}: the batch budget changed a value");
    }
}
