//! The real bundle (cell-eval2 `real_bundle.py`, `anchor.py`, `ceiling.py::_disjoint_halves`;
//! design/vcc2026.md §7): the baseline arm scored as a submission (`b`) and the replicate anchor (`r`) over the
//! five seeded half-splits of the real cells.
//!
//! Seeds: `SeedSequence(0).generate_state(5)`. Per seed: `default_rng(seed)`, per group in the categorical's
//! category order `perm = rng.permutation(rows)`, half A = `perm[:n//2]`, B = `perm[n//2:2(n//2)]` (groups with
//! < 2 cells dropped). B is scored against A with `control_source: pred` (B's effects and DE against B's own
//! control); lfc_nmae uses the `full_gate_raw` estimator (gate and denominator from the full real DE table,
//! numerator `mean|lfc_A − lfc_B|`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::baseline::{baseline_side, Draw};
use super::digest::{provenance, source_fingerprint};
use super::metrics::{
    compute_members, lfc_gate, lfc_nmae_one, ControlSource, MemberValues, EXPR_CAPPED_NORM, LFC_NMAE, RESULT_ORDER,
};
use super::outputs::{agg_csv, agg_table, results_csv};
use super::pipeline::{now_utc, write, write_parquet};
use super::validate::{gene_positions, load_real, LoadedFile, Vcc2026Options};
use super::{
    analyse_real_and_evaluate, analyse_side_then, read_first_pass, real_analysis, Group, RealAnalysis, RefChoice,
    Result, Side, Vcc2026Error,
};
use crate::eval::numpy_rng::{default_rng, SeedSequence};
use crate::eval::parquet_table::{read_table, Column, Table};
use crate::progress::Progress;

/// Number of half-splits and the base seed.
pub const N_SPLITS: usize = 5;
pub const BASE_SEED: u128 = 0;

/// One half-split: per group (category order), halves A and B as obs rows in permutation order.
#[derive(Debug, Clone)]
pub struct Split {
    pub seed: u32,
    /// (group label, half A rows, half B rows)
    pub groups: Vec<(String, Vec<usize>, Vec<usize>)>,
}

/// The five disjoint half-splits of `real`.
pub fn half_splits(real: &LoadedFile) -> Vec<Split> {
    let cats = &real.pert.categories;
    let mut rows: Vec<Vec<usize>> = vec![Vec::new(); cats.len()];
    for (i, &c) in real.pert.codes.iter().enumerate() {
        if c >= 0 {
            rows[c as usize].push(i);
        }
    }
    SeedSequence::new(BASE_SEED)
        .generate_state_u32(N_SPLITS)
        .into_iter()
        .map(|seed| {
            let mut rng = default_rng(seed as u128);
            let mut groups = Vec::new();
            // pandas groupby(observed=True): categories in stored order, empty ones skipped
            for (c, r) in rows.iter().enumerate() {
                if r.is_empty() {
                    continue;
                }
                let perm = rng.permutation(r);
                let h = perm.len() / 2;
                if h < 1 {
                    continue;
                }
                groups.push((cats[c].clone(), perm[..h].to_vec(), perm[h..2 * h].to_vec()));
            }
            Split { seed, groups }
        })
        .collect()
}

fn half_side<'a>(real: &'a LoadedFile, split: &Split, b: bool, control: &str) -> Result<Side<'a>> {
    let mut groups: Vec<Group> = split
        .groups
        .iter()
        .map(|(l, a, bb)| Group { label: l.clone(), rows: if b { bb.clone() } else { a.clone() }, scaled: false })
        .collect();
    groups.sort_by(|x, y| x.label.cmp(&y.label));
    let ctrl = groups.iter().position(|g| g.label == control).ok_or_else(|| {
        Vcc2026Error::Bundle(format!("control '{control}' has fewer than 2 cells; no half-split possible"))
    })?;
    Ok(Side {
        source: real.source.as_ref(),
        name: format!("{} half {}", real.name, if b { "B" } else { "A" }),
        groups,
        control: ctrl,
        scale: None,
        chunk_rows: real.chunk_rows,
        check: None,
    })
}

/// One split's aggregate per member, and its number of perturbations (None for the ratio member).
pub type SplitAgg = BTreeMap<String, (f64, Option<usize>)>;

fn aggregates(v: &MemberValues) -> SplitAgg {
    let mut out = SplitAgg::new();
    for m in RESULT_ORDER.iter().chain(std::iter::once(&EXPR_CAPPED_NORM)) {
        let n = if *m == EXPR_CAPPED_NORM { None } else { Some(v.n_used(m)) };
        out.insert(m.to_string(), (v.aggregate(m), n));
    }
    out
}

/// Score one split: B against A, `control_source: pred`; lfc_nmae by `full_gate_raw`.
pub fn score_split(
    real: &LoadedFile,
    var_names: &[String],
    full: &RealAnalysis,
    split: &Split,
    opts: &Vcc2026Options,
    progress: &dyn Progress,
) -> Result<SplitAgg> {
    let a_side = half_side(real, split, false, &opts.control)?;
    let b_side = half_side(real, split, true, &opts.control)?;
    // half B's first pass is read while half A's last batch is analysed
    let a_first = read_first_pass(&a_side, &opts.passes, progress)?;
    let (a, b_first) = analyse_side_then(&a_side, a_first, RefChoice::Own, true, progress, || {
        read_first_pass(&b_side, &opts.passes, progress)
    })?;
    let a = real_analysis(a)?;
    let ((b_stats, b_de, _), ()) = analyse_side_then(&b_side, b_first, RefChoice::Own, true, progress, || Ok(()))?;
    let b_de = b_de.ok_or_else(|| Vcc2026Error::Bundle("half B DE missing".to_owned()))?;
    let mut v = compute_members(var_names, &a.stats, &b_stats, &a.de, &b_de, ControlSource::Pred)?;
    // full_gate_raw
    let gpos = gene_positions(var_names);
    let feats: HashSet<usize> = full.de.genes.iter().copied().collect();
    let a_pos: HashMap<usize, usize> = a.de.genes.iter().enumerate().map(|(k, &g)| (g, k)).collect();
    let b_pos: HashMap<usize, usize> = b_de.genes.iter().enumerate().map(|(k, &g)| (g, k)).collect();
    let mut nmae = Vec::new();
    for p in &v.perts {
        let gate = lfc_gate(&full.de, p, &feats, &gpos);
        let (ia, ib) = (a.de.pert_index(p), b_de.pert_index(p));
        let la =
            |g: usize| ia.and_then(|i| a_pos.get(&g).map(|&k| a.de.lfc[i][k])).filter(|x| x.is_finite()).unwrap_or(0.0);
        let lb =
            |g: usize| ib.and_then(|i| b_pos.get(&g).map(|&k| b_de.lfc[i][k])).filter(|x| x.is_finite()).unwrap_or(0.0);
        // same gate rules as lfc_nmae (≥ 10 genes, finite non-zero denominator), numerator mean|lA − lB|
        nmae.push(lfc_nmae_one(&gate, |_| Some(0.0)).map(|_| {
            let n = gate.len() as f64;
            let d = gate.iter().map(|(_, l)| l.abs()).sum::<f64>() / n;
            let num = gate.iter().map(|&(g, _)| (la(g) - lb(g)).abs()).sum::<f64>() / n;
            num / d
        }));
    }
    v.values.insert(LFC_NMAE, nmae);
    Ok(aggregates(&v))
}

/// `anchor_agg` row: replicate, sd (ddof 0), min, max, n_perturbations min/max, estimator.
pub type AnchorRow = (f64, f64, f64, f64, Option<usize>, Option<usize>, &'static str);

/// `anchor_agg` rows per metric.
pub fn anchor_agg(splits: &[SplitAgg]) -> BTreeMap<String, AnchorRow> {
    let mut out = BTreeMap::new();
    if splits.is_empty() {
        return out;
    }
    for m in splits[0].keys() {
        let x: Vec<f64> = splits.iter().map(|s| s[m].0).collect();
        let k = x.len() as f64;
        let mean = x.iter().sum::<f64>() / k;
        let sd = (x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / k).sqrt();
        let min = x.iter().copied().fold(f64::INFINITY, f64::min);
        let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ns: Vec<usize> = splits.iter().filter_map(|s| s[m].1).collect();
        let est = if m == LFC_NMAE { "full_gate_raw" } else { "split_half_raw" };
        out.insert(m.clone(), (mean, sd, min, max, ns.iter().min().copied(), ns.iter().max().copied(), est));
    }
    out
}

/// What `real-bundle` produced.
pub struct BundleOutput {
    pub baseline: MemberValues,
    pub draws: Vec<Draw>,
    pub splits: Vec<(Split, SplitAgg)>,
    pub files: Vec<PathBuf>,
}

/// Build the real bundle into `outdir`: `baseline_agg.csv`, `baseline_results.csv`, `anchor_agg.parquet`,
/// `anchor_splits.parquet`, `manifest.json` (with vcell's `config_digest` / `source_fingerprint`, see
/// [`super::digest`]).
pub fn build_bundle(
    real_path: &Path,
    outdir: &Path,
    id: &str,
    opts: &Vcc2026Options,
    progress: &dyn Progress,
) -> Result<BundleOutput> {
    let (real, vars) = load_real(real_path, opts, progress)?;
    let real_side = real.side(&opts.control)?;
    // 0 end
    let (arm, draws) = baseline_side(&real, &vars, &opts.control, 0, progress)?;
    let (full, baseline, _) =
        analyse_real_and_evaluate(&vars, &real_side, &arm, ControlSource::Real, &opts.passes, progress)?;
    for m in super::metrics::SCORED {
        let b = baseline.aggregate(m);
        let ok = if super::metrics::lower_is_better(m) { b > 0.0 } else { b < 1.0 };
        if !ok || !b.is_finite() {
            return Err(Vcc2026Error::Bundle(format!("baseline arm gives a degenerate scale for {m}: b = {b}")));
        }
    }
    // 1 end
    let mut splits = Vec::new();
    for s in half_splits(&real) {
        let agg = score_split(&real, &vars, &full, &s, opts, progress)?;
        for (m, (v, _)) in &agg {
            if super::metrics::SCORED.contains(&m.as_str()) && !v.is_finite() {
                return Err(Vcc2026Error::Bundle(format!("anchor split (seed {}) gives a non-finite {m}", s.seed)));
            }
        }
        splits.push((s, agg));
    }
    std::fs::create_dir_all(outdir).map_err(|source| Vcc2026Error::Io { path: outdir.to_owned(), source })?;
    let mut files = Vec::new();
    write(outdir, "baseline_agg.csv", &agg_csv(&agg_table(&baseline)), &mut files)?;
    write(outdir, "baseline_results.csv", &results_csv(&baseline), &mut files)?;
    write_parquet(outdir, "anchor_splits.parquet", &splits_table(&splits), &mut files)?;
    let aggs: Vec<SplitAgg> = splits.iter().map(|(_, a)| a.clone()).collect();
    let anchor = anchor_agg(&aggs);
    write_parquet(outdir, "anchor_agg.parquet", &anchor_agg_table(&anchor), &mut files)?;
    let manifest = serde_json::json!({
        "anchor_digest": anchor_digest(&anchor),
        "real_bundle_id": id,
        "members": super::metrics::SCORED,
        "seeds": splits.iter().map(|(s, _)| s.seed).collect::<Vec<_>>(),
        "seed_derivation": "numpy.random.SeedSequence(base_seed).generate_state(n_splits)",
        "base_seed": 0,
        "control_source_effective": "pred",
        "estimators": {"de_wilcoxon_lfc_nmae": "full_gate_raw", "default": "split_half_raw"},
        "pert_col": opts.pert_col,
        "control": opts.control,
        "source": real_path.display().to_string(),
        "engine": format!("vcell {}", env!("CARGO_PKG_VERSION")),
        "created_utc": now_utc(),
    });
    let mut manifest = manifest;
    if let Some(m) = manifest.as_object_mut() {
        for (k, x) in provenance(opts, &source_fingerprint(&real, &vars)) {
            m.insert(k.to_owned(), x);
        }
    }
    write(outdir, "manifest.json", &serde_json::to_string_pretty(&manifest).unwrap_or_default(), &mut files)?;
    Ok(BundleOutput { baseline, draws, splits, files })
}

/// `anchor_digest` (vcell-1): sha256 of the anchor rows in Python's JSON form (metric order, floats in `repr`).
/// cell-eval2's own digest hashes its polars frame and is not reproduced; `score.csv` carries whichever the
/// bundle's manifest holds.
pub fn anchor_digest(rows: &BTreeMap<String, AnchorRow>) -> String {
    use sha2::Digest;
    let list: Vec<serde_json::Value> =
        rows.iter().map(|(m, r)| serde_json::json!([m, r.0, r.1, r.2, r.3, r.4, r.5, r.6])).collect();
    let mut text = String::from(super::digest::DIGEST_SCHEME);
    super::digest::python_json(&serde_json::Value::Array(list), &mut text);
    sha2::Sha256::digest(text.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn opt_i64(x: Option<usize>) -> Option<i64> {
    x.and_then(|v| i64::try_from(v).ok())
}

/// `anchor_splits.parquet` (`split_index, seed, metric, value, n_perturbations`; all but metric/value Int64).
pub fn splits_table(splits: &[(Split, SplitAgg)]) -> Table {
    let (mut idx, mut seed, mut metric, mut value, mut n) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (sp, agg)) in splits.iter().enumerate() {
        for (m, (v, k)) in agg {
            idx.push(opt_i64(Some(i)));
            seed.push(Some(i64::from(sp.seed)));
            metric.push(Some(m.clone()));
            value.push(Some(*v));
            n.push(opt_i64(*k));
        }
    }
    Table {
        columns: vec![
            ("split_index".to_owned(), Column::I64(idx)),
            ("seed".to_owned(), Column::I64(seed)),
            ("metric".to_owned(), Column::Str(metric)),
            ("value".to_owned(), Column::F64(value)),
            ("n_perturbations".to_owned(), Column::I64(n)),
        ],
    }
}

/// `anchor_agg.parquet` (`metric, replicate, replicate_sd, replicate_min, replicate_max, n_perturbations_min,
/// n_perturbations_max, estimator`).
pub fn anchor_agg_table(rows: &BTreeMap<String, AnchorRow>) -> Table {
    let f = |g: fn(&AnchorRow) -> f64| Column::F64(rows.values().map(|r| Some(g(r))).collect());
    Table {
        columns: vec![
            ("metric".to_owned(), Column::Str(rows.keys().map(|m| Some(m.clone())).collect())),
            ("replicate".to_owned(), f(|r| r.0)),
            ("replicate_sd".to_owned(), f(|r| r.1)),
            ("replicate_min".to_owned(), f(|r| r.2)),
            ("replicate_max".to_owned(), f(|r| r.3)),
            ("n_perturbations_min".to_owned(), Column::I64(rows.values().map(|r| opt_i64(r.4)).collect())),
            ("n_perturbations_max".to_owned(), Column::I64(rows.values().map(|r| opt_i64(r.5)).collect())),
            ("estimator".to_owned(), Column::Str(rows.values().map(|r| Some(r.6.to_owned())).collect())),
        ],
    }
}

/// One row of a bundle's `anchor_agg.parquet` as read back (vcell's or cell-eval2's).
#[derive(Debug, Clone, PartialEq)]
pub struct AnchorAggRow {
    pub replicate: f64,
    pub replicate_sd: f64,
    pub replicate_min: f64,
    pub replicate_max: f64,
    pub n_perturbations_min: Option<i64>,
    pub n_perturbations_max: Option<i64>,
    pub estimator: String,
}

/// Read `dir/anchor_agg.parquet` (written by vcell or cell-eval2): metric → row. A null replicate reads as NaN.
pub fn read_anchor_agg(dir: &Path) -> Result<BTreeMap<String, AnchorAggRow>> {
    let path = dir.join("anchor_agg.parquet");
    let err = |message: String| Vcc2026Error::Parse { path: path.clone(), message };
    if !path.exists() {
        return Err(err("no anchor_agg.parquet in the bundle (bundles from vcell < 0.1 wrote CSV: rebuild it)".into()));
    }
    let t = read_table(&path).map_err(err)?;
    let nan = |v: Vec<Option<f64>>| v.into_iter().map(|x| x.unwrap_or(f64::NAN)).collect::<Vec<_>>();
    let metric = t.strs("metric").map_err(err)?;
    let rep = nan(t.f64s("replicate").map_err(err)?);
    let sd = nan(t.f64s("replicate_sd").map_err(err)?);
    let lo = nan(t.f64s("replicate_min").map_err(err)?);
    let hi = nan(t.f64s("replicate_max").map_err(err)?);
    let nlo = t.i64s("n_perturbations_min").map_err(err)?;
    let nhi = t.i64s("n_perturbations_max").map_err(err)?;
    let est = t.strs("estimator").map_err(err)?;
    let mut out = BTreeMap::new();
    for i in 0..t.n_rows() {
        let m = metric[i].clone().ok_or_else(|| err(format!("row {i}: null metric")))?;
        out.insert(
            m,
            AnchorAggRow {
                replicate: rep[i],
                replicate_sd: sd[i],
                replicate_min: lo[i],
                replicate_max: hi[i],
                n_perturbations_min: nlo[i],
                n_perturbations_max: nhi[i],
                estimator: est[i].clone().unwrap_or_default(),
            },
        );
    }
    Ok(out)
}

/// One row of `anchor_splits.parquet` as read back: (split_index, seed, metric, value, n_perturbations).
pub type AnchorSplitRow = (i64, i64, String, f64, Option<i64>);

/// Read `dir/anchor_splits.parquet` (vcell's or cell-eval2's), in file order.
pub fn read_anchor_splits(dir: &Path) -> Result<Vec<AnchorSplitRow>> {
    let path = dir.join("anchor_splits.parquet");
    let err = |message: String| Vcc2026Error::Parse { path: path.clone(), message };
    let t = read_table(&path).map_err(err)?;
    let idx = t.i64s("split_index").map_err(err)?;
    let seed = t.i64s("seed").map_err(err)?;
    let metric = t.strs("metric").map_err(err)?;
    let value = t.f64s("value").map_err(err)?;
    let n = t.i64s("n_perturbations").map_err(err)?;
    (0..t.n_rows())
        .map(|i| {
            Ok((
                idx[i].ok_or_else(|| err(format!("row {i}: null split_index")))?,
                seed[i].ok_or_else(|| err(format!("row {i}: null seed")))?,
                metric[i].clone().ok_or_else(|| err(format!("row {i}: null metric")))?,
                value[i].unwrap_or(f64::NAN),
                n[i],
            ))
        })
        .collect()
}
