//! The competition score (cell-eval2 `score.py::_replicate_entries`, `scoring.py`; design/vcc2026.md §7):
//! `s = (u − b)/(r − b)` per scored member; `expr_mse_unbiased_capped_norm` clamped to [0, 1], `de_wilcoxon_lfc_nmae`
//! floored at −6; a missing/NaN `u` scores the floor (0 / −6) or, unfloored, `−b/(r − b)`; the scale is refused
//! when `r − b ≤ 0` (higher-better) / `b − r ≤ 0` (lower-better). `avg_score` = mean of the six. `from_baseline`
//! (diagnostic): bounded members `(u − b)/(1 − b)`, error members `1 − u/b`, same clamps, no average.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use super::bundle::read_anchor_agg;
use super::digest::check_submission;
use super::metrics::{lower_is_better, EXPR_CAPPED_NORM, LFC_NMAE, PDS_COSINE, SCORED};
use super::outputs::parse_agg_csv;
use super::{Result, Vcc2026Error};
use crate::eval::format::fmt_f64;

/// One member's score.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberScore {
    pub metric: String,
    pub from_baseline: f64,
    pub from_replicate: f64,
}

fn clamp(m: &str, s: f64) -> f64 {
    if m == EXPR_CAPPED_NORM {
        s.clamp(0.0, 1.0)
    } else if m == LFC_NMAE {
        s.max(-6.0)
    } else {
        s
    }
}

/// Score `u` (member → submission mean) against `b` (baseline arm means) and `r` (anchor replicates). Rows in
/// cell-eval2's order (lower-is-better members, then higher-is-better, each alphabetical); returns the rows and
/// `avg_score`.
pub fn score(
    u: &BTreeMap<String, f64>,
    b: &BTreeMap<String, f64>,
    r: &BTreeMap<String, f64>,
) -> Result<(Vec<MemberScore>, f64)> {
    let mut names: Vec<&str> = SCORED.to_vec();
    names.sort_by_key(|m| (!lower_is_better(m), m.to_string()));
    let mut rows = Vec::new();
    for m in names {
        let get = |t: &BTreeMap<String, f64>, what: &str| {
            t.get(m).copied().ok_or_else(|| Vcc2026Error::Score(format!("{what} has no value for {m}")))
        };
        let (bv, rv) = (get(b, "baseline")?, get(r, "anchor")?);
        let uv = u.get(m).copied().unwrap_or(f64::NAN);
        let width = if lower_is_better(m) { bv - rv } else { rv - bv };
        if width.is_nan() || width <= 0.0 {
            return Err(Vcc2026Error::Score(format!("degenerate scale for {m}: baseline {bv}, replicate {rv}")));
        }
        let from_rep = if uv.is_nan() {
            match m {
                EXPR_CAPPED_NORM => 0.0,
                LFC_NMAE => -6.0,
                _ => -bv / (rv - bv),
            }
        } else {
            clamp(m, (uv - bv) / (rv - bv))
        };
        let from_base = if lower_is_better(m) { clamp(m, 1.0 - uv / bv) } else { (uv - bv) / (1.0 - bv) };
        rows.push(MemberScore { metric: m.to_owned(), from_baseline: from_base, from_replicate: from_rep });
    }
    let avg = rows.iter().map(|r| r.from_replicate).sum::<f64>() / rows.len() as f64;
    Ok((rows, avg))
}

/// `score.csv` (`metric, from_baseline, from_replicate, anchor_source, anchor_digest, real_bundle_id,
/// real_bundle_digest`), cell-eval2's `score -o` layout.
pub fn score_csv(out: &BundleScore) -> String {
    let mut s = String::from(
        "metric,from_baseline,from_replicate,anchor_source,anchor_digest,real_bundle_id,real_bundle_digest\n",
    );
    let tail = format!("real_bundle,{},{},{}", out.anchor_digest, out.bundle_id, out.bundle_digest);
    for r in &out.rows {
        let _ = writeln!(s, "{},{},{},{tail}", r.metric, fmt_f64(r.from_baseline), fmt_f64(r.from_replicate));
    }
    let _ = writeln!(s, "avg_score,,{},{tail}", fmt_f64(out.avg));
    s
}

/// The outcome of [`score_real_bundle`].
#[derive(Debug, Clone)]
pub struct BundleScore {
    pub rows: Vec<MemberScore>,
    pub avg: f64,
    pub bundle_id: String,
    /// The manifest's `anchor_digest` (empty if it has none).
    pub anchor_digest: String,
    /// cell-eval2's `manifest_digest` of the bundle's manifest.
    pub bundle_digest: String,
    /// Printed on stderr by the CLI (e.g. digests that could not be compared).
    pub warnings: Vec<String>,
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Vcc2026Error::Io { path: path.to_owned(), source })
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    serde_json::from_str(&read_text(path)?)
        .map_err(|e| Vcc2026Error::Parse { path: path.to_owned(), message: e.to_string() })
}

type AggTable = BTreeMap<String, BTreeMap<String, f64>>;

fn read_agg(path: &Path) -> Result<AggTable> {
    parse_agg_csv(&read_text(path)?).map_err(|message| Vcc2026Error::Parse { path: path.to_owned(), message })
}

fn means(t: &AggTable) -> BTreeMap<String, f64> {
    t.iter().filter_map(|(m, s)| s.get("mean").map(|v| (m.clone(), *v))).collect()
}

/// `score --real-bundle`: the run's `agg_results.csv` and `run_meta.json` against a bundle directory written by
/// `vcell real-bundle` or cell-eval2's `prep-real-bundle` (`manifest.json`, `anchor_agg.parquet`,
/// `baseline_agg.csv`). The run is checked against the manifest first ([`check_submission`]); a mismatch is an
/// error and nothing is scored.
pub fn score_real_bundle(user_agg: &Path, user_meta: &Path, bundle: &Path) -> Result<BundleScore> {
    let user = read_agg(user_agg)?;
    let meta_path = user_meta;
    if !meta_path.exists() {
        return Err(Vcc2026Error::Score(format!(
            "--real-bundle needs the run's run_meta.json ({} not found): the run is checked against the bundle",
            meta_path.display()
        )));
    }
    let run_meta = read_json(meta_path)?;
    let manifest = read_json(&bundle.join("manifest.json"))?;
    let anchor = read_anchor_agg(bundle)?;
    let run_n = user.get(PDS_COSINE).and_then(|s| s.get("count")).filter(|c| c.is_finite()).map(|c| *c as usize);
    let bundle_n = anchor.get(PDS_COSINE).and_then(|r| r.n_perturbations_max).and_then(|n| usize::try_from(n).ok());
    let warnings = check_submission(&manifest, &run_meta, run_n, bundle_n)?;
    let b = means(&read_agg(&bundle.join("baseline_agg.csv"))?);
    let r: BTreeMap<String, f64> = anchor.iter().map(|(m, row)| (m.clone(), row.replicate)).collect();
    let (rows, avg) = score(&means(&user), &b, &r)?;
    let text = |k: &str| manifest.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let (bundle_id, anchor_digest) = (text("real_bundle_id"), text("anchor_digest"));
    let bundle_digest = super::digest::manifest_digest(&manifest);
    Ok(BundleScore { rows, avg, bundle_id, anchor_digest, bundle_digest, warnings })
}
