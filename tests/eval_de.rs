#![allow(clippy::unwrap_used)]
//! DE stage against cell-eval 0.8.2's own outputs (`tests/fixtures/*/celleval/vcc/*_de.csv`):
//! means, LFC, statistic, memberships and row order bit-exact; p-value and fdr ≤ 1e-12 relative; the significant
//! sets (f32(fdr) < 0.05) identical; our CSV byte-identical where the p-values' last digits agree. Plus the
//! input checks on every `errors/` case that reaches them.

use std::path::{Path, PathBuf};
use std::process::Command;

use vcell::eval::de::{compute_de, compute_de_and_pseudobulk, compute_de_streamed, DeOptions};
use vcell::eval::de_csv::{read_de_csv, write_de, write_de_csv, DeCsvWriter};
use vcell::eval::input::{load_pair, prepare_file, InputOptions};
use vcell::eval::{DeTable, EvalError};
use vcell::progress::NoProgress;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// A fixture file, gunzipped into `dir` when only `NAME.gz` is stored.
fn fixture_file(dir: &tempfile::TempDir, rel: &str) -> PathBuf {
    let p = fixtures().join(rel);
    if p.exists() {
        return p;
    }
    let gz = fixtures().join(format!("{rel}.gz"));
    let out = dir.path().join(rel.replace('/', "_"));
    if !out.exists() {
        let bytes = Command::new("gzip").arg("-dc").arg(&gz).output().unwrap();
        assert!(bytes.status.success(), "gzip -dc {}", gz.display());
        std::fs::write(&out, bytes.stdout).unwrap();
    }
    out
}

fn rel_err(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        ((a - b) / b).abs()
    }
}

fn same_f64(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

#[derive(Debug, Default)]
#[allow(dead_code)] // printed with {:?}
struct Report {
    rows: usize,
    max_rel_p: f64,
    max_rel_fdr: f64,
    n_sig: usize,
    pc_exact: usize,
    max_pc_err: f64,
    csv_lines_differing: usize,
}

/// Compare a computed table with cell-eval's CSV.
fn compare(ours: &DeTable, csv: &Path) -> Report {
    let want = read_de_csv(csv).unwrap();
    assert_eq!(ours.n_rows(), want.n_rows(), "{}: rows", csv.display());
    let mut rep = Report { rows: want.n_rows(), ..Report::default() };
    for i in 0..want.n_rows() {
        let ctx = || {
            format!(
                "{} row {} ({} / {})",
                csv.display(),
                i + 2,
                want.targets[want.target_idx[i] as usize],
                want.features[want.feature_idx[i] as usize]
            )
        };
        assert_eq!(ours.targets[ours.target_idx[i] as usize], want.targets[want.target_idx[i] as usize], "{}", ctx());
        assert_eq!(
            ours.features[ours.feature_idx[i] as usize],
            want.features[want.feature_idx[i] as usize],
            "{}",
            ctx()
        );
        assert_eq!(ours.target_mean[i].to_bits(), want.target_mean[i].to_bits(), "target_mean {}", ctx());
        assert_eq!(ours.ref_mean[i].to_bits(), want.ref_mean[i].to_bits(), "ref_mean {}", ctx());
        assert_eq!(ours.target_membership[i], want.target_membership[i], "{}", ctx());
        assert_eq!(ours.ref_membership[i], want.ref_membership[i], "{}", ctx());
        assert!(
            same_f64(ours.log2_fold_change[i], want.log2_fold_change[i]),
            "lfc {} vs {} {}",
            ours.log2_fold_change[i],
            want.log2_fold_change[i],
            ctx()
        );
        // percent_change: not bit-exact (see `de::percent_change`); a few f32 ulps of the means
        let pc = ours.percent_change[i];
        let pcw = want.percent_change[i];
        if same_f64(pc, pcw) {
            rep.pc_exact += 1;
        } else {
            let r = rel_err(pc, pcw).min((pc - pcw).abs());
            assert!(r <= 1e-6, "percent_change {pc} vs {pcw} {}", ctx());
            rep.max_pc_err = rep.max_pc_err.max(r);
        }
        assert_eq!(ours.statistic[i], want.statistic[i], "statistic {}", ctx());
        let rp = rel_err(ours.p_value[i], want.p_value[i]);
        let rf = rel_err(ours.fdr[i], want.fdr[i]);
        assert!(rp <= 1e-12, "p {} vs {} {}", ours.p_value[i], want.p_value[i], ctx());
        assert!(rf <= 1e-12, "fdr {} vs {} {}", ours.fdr[i], want.fdr[i], ctx());
        rep.max_rel_p = rep.max_rel_p.max(rp);
        rep.max_rel_fdr = rep.max_rel_fdr.max(rf);
        let sig = (ours.fdr[i] as f32) < 0.05;
        assert_eq!(sig, (want.fdr[i] as f32) < 0.05, "significance {}", ctx());
        rep.n_sig += sig as usize;
    }
    // our CSV text: identical except possibly the last digits of p_value / fdr
    let mut buf = Vec::new();
    write_de(ours, &mut buf).unwrap();
    let text = String::from_utf8(buf).unwrap();
    let expected = std::fs::read_to_string(csv).unwrap();
    for (a, b) in text.lines().zip(expected.lines()) {
        if a != b {
            rep.csv_lines_differing += 1;
            let (fa, fb): (Vec<&str>, Vec<&str>) = (a.split(',').collect(), b.split(',').collect());
            for k in [0, 1, 2, 3, 4, 5, 6, 9] {
                assert_eq!(fa[k], fb[k], "CSV column {k}: {a} vs {b}");
            }
        }
    }
    assert_eq!(text.lines().count(), expected.lines().count());
    rep
}

fn check_pair(case: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let real = fixture_file(&tmp, &format!("{case}/real.h5ad"));
    let pred = fixture_file(&tmp, &format!("{case}/pred.h5ad"));
    let (r, p) = load_pair(&real, &pred, &InputOptions::default(), &NoProgress).unwrap();
    for (file, which) in [(&r, "real"), (&p, "pred")] {
        let (de, pb) = compute_de_and_pseudobulk(file, &DeOptions::default(), &NoProgress).unwrap();
        let csv = fixture_file(&tmp, &format!("{case}/celleval/vcc/{which}_de.csv"));
        let rep = compare(&de, &csv);
        eprintln!("{case} {which}: {rep:?} normalised={}", file.was_normalised());
        assert_eq!(pb.labels.len(), de.targets.len() + 1);
        // several passes (one group per pass) give the same table
        let multi = compute_de(file, &DeOptions { batch_bytes: 1 }, &NoProgress).unwrap();
        assert_eq!(multi, de, "{case} {which}: multi-pass");
        // atomic write, then read back
        let out = tmp.path().join(format!("{which}_de.csv"));
        write_de_csv(&de, &out).unwrap();
        let back = read_de_csv(&out).unwrap();
        assert_eq!(back.n_rows(), de.n_rows());
        assert_eq!(back.target_mean, de.target_mean);
        assert_eq!(back.statistic, de.statistic);
        // streamed: one group per pass, each batch's rows written as they come; the same table and bytes
        let streamed_path = tmp.path().join(format!("{which}_streamed.csv"));
        let mut writer = DeCsvWriter::create(&streamed_path).unwrap();
        let mut batches = 0;
        let (streamed, _) = compute_de_streamed(
            file,
            &DeOptions { batch_bytes: 1 },
            false,
            &mut |rows| {
                batches += 1;
                writer.write(&rows).unwrap();
            },
            &NoProgress,
        )
        .unwrap();
        writer.finish().unwrap();
        assert_eq!(streamed, de, "{case} {which}: streamed");
        assert_eq!(batches, de.targets.len(), "{case} {which}: one batch per group");
        assert_eq!(std::fs::read(&streamed_path).unwrap(), std::fs::read(&out).unwrap(), "{case} {which}: bytes");
    }
}

#[test]
fn tiny() {
    check_pair("tiny");
}

#[test]
fn tiny_counts() {
    check_pair("tiny_counts");
}

#[test]
fn tiny_dense() {
    check_pair("tiny_dense");
}

#[test]
fn small() {
    check_pair("small");
}

#[test]
fn errors_valid_pair() {
    check_pair("errors");
}

#[test]
fn tiny_baseline() {
    let base = fixtures().join("tiny/celleval/vcc/baseline");
    let file = prepare_file(&base.join("baseline.h5ad"), &InputOptions::default(), &NoProgress).unwrap();
    let de = compute_de(&file, &DeOptions::default(), &NoProgress).unwrap();
    let rep = compare(&de, &base.join("baseline_de.csv"));
    eprintln!("tiny baseline: {rep:?}");
}

// ---- input checks on the errors/ fixtures ----

fn pair_err(pred: &str, opts: &InputOptions) -> EvalError {
    let dir = fixtures().join("errors");
    load_pair(&dir.join("real.h5ad"), &dir.join(pred), opts, &NoProgress).unwrap_err()
}

#[test]
fn error_missing_pert() {
    let e = pair_err("pred_missing_pert.h5ad", &InputOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, EvalError::PerturbationMismatch { .. }), "{msg}");
    assert!(msg.contains("only in real: ['GENE00080']") && msg.contains("only in pred: []"), "{msg}");
}

#[test]
fn error_gene_order() {
    let e = pair_err("pred_gene_order.h5ad", &InputOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, EvalError::GeneOrder { index: 49, n_diff: 2, .. }), "{msg}");
    assert!(msg.contains("'GENE00049'") && msg.contains("'GENE00050'"), "{msg}");
}

#[test]
fn error_no_pert_col() {
    let e = pair_err("pred_no_pert_col.h5ad", &InputOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, EvalError::MissingPertColumn { which: "pred", .. }), "{msg}");
    assert!(
        msg.contains("'target_gene'") && msg.contains("'perturbation'") && msg.contains("pred_no_pert_col.h5ad"),
        "{msg}"
    );
}

#[test]
fn error_no_control_is_a_label_mismatch_first() {
    // cell-eval compares the label sets before looking for the control
    let e = pair_err("pred_no_control.h5ad", &InputOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, EvalError::PerturbationMismatch { .. }), "{msg}");
    assert!(msg.contains("only in real: ['non-targeting']"), "{msg}");
}

#[test]
fn error_control_flag() {
    let opts = InputOptions { control: "DMSO".to_owned(), ..InputOptions::default() };
    let e = pair_err("pred.h5ad", &opts);
    let msg = e.to_string();
    assert!(matches!(e, EvalError::MissingControl { which: "real", .. }), "{msg}");
    assert!(msg.contains("'DMSO'") && msg.contains("'non-targeting'"), "{msg}");
}

#[test]
fn error_nan() {
    let e = pair_err("pred_nan.h5ad", &InputOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, EvalError::NonFinite { n_nan: 10, n_inf: 0, .. }), "{msg}");
    assert!(msg.contains("pred_nan.h5ad") && msg.contains("10 NaN"), "{msg}");
}

#[test]
fn error_unused_category() {
    let e = pair_err("pred_unused_category.h5ad", &InputOptions::default());
    let msg = e.to_string();
    assert!(matches!(e, EvalError::UnusedCategory { .. }), "{msg}");
    assert!(msg.contains("'GENE99999'") && msg.contains("pred_unused_category.h5ad"), "{msg}");
}

#[test]
fn error_unreadable_files() {
    for (f, needle) in [("pred_truncated.h5ad", "pred_truncated.h5ad"), ("pred_not_hdf5.h5ad", "pred_not_hdf5.h5ad")] {
        let e = pair_err(f, &InputOptions::default());
        assert!(matches!(e, EvalError::Read { .. }), "{e}");
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn de_csv_missing_column_and_bad_number() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("bad.csv");
    std::fs::write(&p, "target,feature,target_mean\nA,B,1.0\n").unwrap();
    let e = read_de_csv(&p).unwrap_err();
    assert!(e.to_string().contains("missing column(s) ref_mean"), "{e}");
    let good = std::fs::read_to_string(fixtures().join("errors/celleval/vcc/real_de.csv")).unwrap();
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let mut fields: Vec<&str> = lines[3].split(',').collect();
    fields[8] = "x1";
    lines[3] = fields.join(",");
    std::fs::write(&p, lines.join("\n")).unwrap();
    let e = read_de_csv(&p).unwrap_err();
    assert!(matches!(e, EvalError::CsvBadNumber { line: 4, .. }), "{e}");
}
