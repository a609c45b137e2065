#![allow(clippy::unwrap_used)]
//! `vcell score --real-bundle`'s submission guard (design/vcc2026.md §7) on tiny: vcell's own digests
//! (`digest_scheme: vcell-1`) compared between a vcell run and a vcell bundle; a cell-eval2 bundle scored with a
//! warning, since its digests are cell-eval2's.
mod support;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tempfile::TempDir;
use vcell::eval::vcc2026::bundle::build_bundle;
use vcell::eval::vcc2026::pipeline::{run_vcc2026, RunOptions};
use vcell::eval::vcc2026::validate::Vcc2026Options;
use vcell::progress::NoProgress;

fn tiny() -> PathBuf {
    support::fixture("vcc2026/tiny")
}

fn run(dir: &Path, vcc: Vcc2026Options) {
    let opts = RunOptions {
        real: tiny().join("real.h5ad"),
        pred: tiny().join("pred.h5ad"),
        outdir: dir.to_owned(),
        write_de: false,
        vcc,
    };
    run_vcc2026(&opts, &NoProgress).unwrap();
}

/// One vcell bundle and two vcell runs of tiny, shared by the tests: `run` under the default settings, `other`
/// with `allow_fractional_counts` on (same numbers on integer counts, a different requested config).
struct Shared {
    _dir: TempDir,
    bundle: PathBuf,
    run: PathBuf,
    other: PathBuf,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (bundle, run_dir, other) = (dir.path().join("bundle"), dir.path().join("run"), dir.path().join("other"));
        build_bundle(&tiny().join("real.h5ad"), &bundle, "vcc2026-tiny", &Vcc2026Options::default(), &NoProgress)
            .unwrap();
        run(&run_dir, Vcc2026Options::default());
        run(&other, Vcc2026Options { allow_fractional: true, ..Vcc2026Options::default() });
        Shared { _dir: dir, bundle, run: run_dir, other }
    })
}

fn score(run_dir: &Path, bundle: &Path, out: &Path) -> std::process::Output {
    let tmp = tempfile::tempdir().unwrap();
    support::run_vcell(
        tmp.path(),
        tmp.path(),
        &[
            "score",
            "-i",
            run_dir.join("agg_results.csv").to_str().unwrap(),
            "--real-bundle",
            bundle.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
        ],
    )
}

fn meta(p: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn vcell_digests_are_written_and_match() {
    let s = shared();
    let (m, r) = (meta(&s.bundle.join("manifest.json")), meta(&s.run.join("run_meta.json")));
    for v in [&m, &r] {
        assert_eq!(v["digest_scheme"], "vcell-1");
        assert_eq!(v["config_digest"].as_str().unwrap().len(), 64);
        assert_eq!(v["source_fingerprint"].as_str().unwrap().len(), 64);
    }
    assert_eq!(m["config_digest"], r["config_digest"]);
    assert_eq!(m["source_fingerprint"], r["source_fingerprint"]);
    let o = meta(&s.other.join("run_meta.json"));
    assert_ne!(o["config_digest"], r["config_digest"]);
    assert_eq!(o["source_fingerprint"], r["source_fingerprint"]);
}

#[test]
fn matching_vcell_run_is_accepted() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("score.csv");
    let o = score(&s.run, &s.bundle, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(!stderr.contains("warning"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.lines().last().unwrap().starts_with("avg_score,"), "{text}");
}

#[test]
fn mismatched_config_is_refused_and_nothing_written() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("score.csv");
    let o = score(&s.other, &s.bundle, &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(stderr.contains("config_digest") && stderr.contains("refusing"), "{stderr}");
    assert!(!stderr.contains("source_fingerprint"), "{stderr}");
    assert!(!out.exists());
}

#[test]
fn other_real_data_is_refused() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(s.run.join("agg_results.csv"), tmp.path().join("agg_results.csv")).unwrap();
    let mut m = meta(&s.run.join("run_meta.json"));
    m["source_fingerprint"] = serde_json::json!("f".repeat(64));
    std::fs::write(tmp.path().join("run_meta.json"), m.to_string()).unwrap();
    let out = tmp.path().join("score.csv");
    let o = score(tmp.path(), &s.bundle, &out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("source_fingerprint"));
    assert!(!out.exists());
}

#[test]
fn missing_run_meta_is_refused() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(s.run.join("agg_results.csv"), tmp.path().join("agg_results.csv")).unwrap();
    let out = tmp.path().join("score.csv");
    let o = score(tmp.path(), &s.bundle, &out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("run_meta.json"));
    assert!(!out.exists());
}

#[test]
fn cell_eval2_bundle_with_vcell_run_scores_with_a_warning() {
    let s = shared();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("score.csv");
    let o = score(&s.run, &tiny().join("bundle"), &out);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("cannot compare digests"), "{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains("vcc2026-tiny"), "{text}");
    // a comparable field that differs is still refused
    let tmp2 = tempfile::tempdir().unwrap();
    std::fs::copy(s.run.join("agg_results.csv"), tmp2.path().join("agg_results.csv")).unwrap();
    let mut m = meta(&s.run.join("run_meta.json"));
    m["comparator"] = serde_json::json!("expr_lognorm");
    std::fs::write(tmp2.path().join("run_meta.json"), m.to_string()).unwrap();
    let out2 = tmp2.path().join("score.csv");
    let o = score(tmp2.path(), &tiny().join("bundle"), &out2);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("comparator"));
    assert!(!out2.exists());
}
