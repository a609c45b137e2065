//! DE metrics: overlap / precision at k, significant-gene counts, recall, direction match, Spearman correlations,
//! PR and ROC AUC. Mirrors `cell_eval/metrics/_de.py` and `cell_eval/_types/_de.py` (0.8.2).
//!
//! cell-eval casts `p_value`, `fdr` and `log2_fold_change` to **Float32** before anything else
//! (`DEResults.__post_init__`), so: significant ⇔ `f32(fdr) < 0.05`; genes are ranked by `|f32 lfc|` descending with
//! polars' ordinal rank (NaN first, then ±inf, ties in row order).
use std::collections::{BTreeMap, HashMap, HashSet};

use super::numeric::{np_sum_f64, spearman};
use super::MetricError;
use crate::eval::types::DeTable;

/// A DE table viewed the way cell-eval's `DEResults` sees it.
#[derive(Debug)]
pub struct DeView<'a> {
    table: &'a DeTable,
    /// Rows of each target, in file order; targets sorted by code point.
    by_target: BTreeMap<&'a str, Vec<usize>>,
    /// `(target, feature) → row`, built on first use (only the full profile's metrics need it).
    lookup: std::sync::OnceLock<HashMap<(&'a str, &'a str), usize>>,
    lfc: Vec<f32>,
    fdr: Vec<f32>,
    /// Significant features of each target, ranked by |lfc| (NaN first, descending, ties in row order).
    ranked_sig: BTreeMap<&'a str, Vec<&'a str>>,
    any_sig: bool,
}

/// `f32(fdr) < 0.05` (polars compares the Float32 column with the literal cast to f32).
#[inline]
pub fn is_significant(fdr32: f32) -> bool {
    fdr32 < 0.05f32
}

/// The ordering of `get_top_genes`: descending |lfc| with NaN first (polars' total order puts NaN above +inf), ties
/// kept in row order (ordinal rank). `keys` are `|f32 lfc|`; returns the positions in ranked order.
pub fn rank_desc_nan_first(keys: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..keys.len()).collect();
    // total_cmp orders -NaN < -inf < … < +inf < +NaN; |x| is never negative, so NaN is the largest.
    idx.sort_by(|&a, &b| keys[b].total_cmp(&keys[a]).then(a.cmp(&b)));
    idx
}

impl<'a> DeView<'a> {
    pub fn new(table: &'a DeTable) -> Result<Self, MetricError> {
        let n = table.n_rows();
        if table.feature_idx.len() != n || table.fdr.len() != n || table.log2_fold_change.len() != n {
            return Err(MetricError::Input("DE table columns have different lengths".into()));
        }
        let mut by_target: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for i in 0..n {
            let t = table
                .targets
                .get(table.target_idx[i] as usize)
                .ok_or_else(|| MetricError::Input("DE target index out of range".into()))?;
            if table.features.get(table.feature_idx[i] as usize).is_none() {
                return Err(MetricError::Input("DE feature index out of range".into()));
            }
            by_target.entry(t.as_str()).or_default().push(i);
        }
        let lookup = std::sync::OnceLock::new();
        let lfc: Vec<f32> = table.log2_fold_change.iter().map(|&v| v as f32).collect();
        let fdr: Vec<f32> = table.fdr.iter().map(|&v| v as f32).collect();
        let mut ranked_sig = BTreeMap::new();
        let mut any_sig = false;
        for (&t, rows) in &by_target {
            let sig: Vec<usize> = rows.iter().copied().filter(|&r| is_significant(fdr[r])).collect();
            any_sig |= !sig.is_empty();
            let keys: Vec<f32> = sig.iter().map(|&r| lfc[r].abs()).collect();
            let order = rank_desc_nan_first(&keys);
            let names: Vec<&str> =
                order.into_iter().map(|k| table.features[table.feature_idx[sig[k]] as usize].as_str()).collect();
            ranked_sig.insert(t, names);
        }
        Ok(Self { table, by_target, lookup, lfc, fdr, ranked_sig, any_sig })
    }

    /// `(target, feature) → row` (indices were checked in `new`).
    fn lookup(&self) -> &HashMap<(&'a str, &'a str), usize> {
        self.lookup.get_or_init(|| {
            let t = self.table;
            (0..t.n_rows())
                .map(|i| {
                    ((t.targets[t.target_idx[i] as usize].as_str(), t.features[t.feature_idx[i] as usize].as_str()), i)
                })
                .collect()
        })
    }

    /// Sorted distinct targets.
    pub fn perturbations(&self) -> Vec<&'a str> {
        self.by_target.keys().copied().collect()
    }

    fn feature(&self, row: usize) -> &'a str {
        self.table.features[self.table.feature_idx[row] as usize].as_str()
    }

    fn sig_rows(&self, pert: &str) -> impl Iterator<Item = usize> + use<'_, 'a> {
        self.by_target.get(pert).into_iter().flatten().copied().filter(|&r| is_significant(self.fdr[r]))
    }

    fn n_sig(&self, pert: &str) -> usize {
        self.ranked_sig.get(pert).map_or(0, Vec::len)
    }

    fn ranked(&self, pert: &str) -> &[&'a str] {
        self.ranked_sig.get(pert).map_or(&[], Vec::as_slice)
    }
}

/// Real and predicted DE, with the sorted perturbation list both must share (`DEComparison`).
#[derive(Debug)]
pub struct DeComparison<'a> {
    pub real: DeView<'a>,
    pub pred: DeView<'a>,
    pub perturbations: Vec<&'a str>,
}

impl<'a> DeComparison<'a> {
    pub fn new(real: &'a DeTable, pred: &'a DeTable) -> Result<Self, MetricError> {
        let real = DeView::new(real)?;
        let pred = DeView::new(pred)?;
        let rp = real.perturbations();
        let pp = pred.perturbations();
        if rp != pp {
            return Err(MetricError::PerturbationMismatch {
                real: rp.iter().map(|s| s.to_string()).collect(),
                pred: pp.iter().map(|s| s.to_string()).collect(),
            });
        }
        Ok(Self { real, pred, perturbations: rp })
    }

    /// `overlap_at_{k}` (`metric = Overlap`) or `precision_at_{k}` (`Precision`); `k = None` is `_at_N`.
    /// `DEComparison.compute_overlap`.
    pub fn overlap(&self, k: Option<usize>, kind: OverlapKind) -> Vec<(String, Option<f64>)> {
        if !self.real.any_sig || !self.pred.any_sig {
            return self.perturbations.iter().map(|p| (p.to_string(), Some(0.0))).collect();
        }
        self.perturbations
            .iter()
            .map(|&p| {
                let real = self.real.ranked(p);
                let pred = self.pred.ranked(p);
                let base = match kind {
                    OverlapKind::Overlap => real.len(),
                    OverlapKind::Precision => pred.len(),
                };
                let k_eff = match k {
                    Some(k) if k > 0 => k.min(base),
                    _ => base,
                };
                let v = if k_eff == 0 {
                    0.0
                } else {
                    let r: HashSet<&str> = real[..k_eff.min(real.len())].iter().copied().collect();
                    let q: HashSet<&str> = pred[..k_eff.min(pred.len())].iter().copied().collect();
                    r.intersection(&q).count() as f64 / k_eff as f64
                };
                (p.to_string(), Some(v))
            })
            .collect()
    }

    /// `de_nsig_counts`: (real, pred) counts of significant genes per perturbation.
    pub fn nsig_counts(&self) -> Vec<(String, usize, usize)> {
        self.perturbations.iter().map(|&p| (p.to_string(), self.real.n_sig(p), self.pred.n_sig(p))).collect()
    }

    /// `de_sig_genes_recall`: |real_sig ∩ pred_sig| / |real_sig|, only for perturbations with real significant genes.
    pub fn sig_genes_recall(&self) -> Vec<(String, Option<f64>)> {
        self.perturbations
            .iter()
            .map(|&p| {
                let real = self.real.ranked(p);
                if real.is_empty() {
                    return (p.to_string(), None);
                }
                let pred: HashSet<&str> = self.pred.ranked(p).iter().copied().collect();
                let hit = real.iter().filter(|f| pred.contains(*f)).count();
                (p.to_string(), Some(hit as f64 / real.len() as f64))
            })
            .collect()
    }

    /// `de_direction_match`: over real significant genes present in pred, mean of sign(lfc_r) == sign(lfc_p)
    /// (polars `sign`, sign(0) = 0; NaN equals NaN in polars comparisons).
    pub fn direction_match(&self) -> Vec<(String, Option<f64>)> {
        self.perturbations
            .iter()
            .map(|&p| {
                let mut n = 0usize;
                let mut hit = 0usize;
                for r in self.real.sig_rows(p) {
                    let f = self.real.feature(r);
                    if let Some(&q) = self.pred.lookup().get(&(p, f)) {
                        n += 1;
                        let a = polars_sign(self.real.lfc[r]);
                        let b = polars_sign(self.pred.lfc[q]);
                        if a == b || (a.is_nan() && b.is_nan()) {
                            hit += 1;
                        }
                    }
                }
                let v = (n > 0).then(|| hit as f64 / n as f64);
                (p.to_string(), v)
            })
            .collect()
    }

    /// `de_spearman_lfc_sig`: Spearman of f32 LFCs over real significant genes; a missing pred row counts as 0.
    pub fn spearman_lfc_sig(&self) -> Vec<(String, Option<f64>)> {
        self.perturbations
            .iter()
            .map(|&p| {
                let mut x = Vec::new();
                let mut y = Vec::new();
                for r in self.real.sig_rows(p) {
                    let f = self.real.feature(r);
                    x.push(f64::from(self.real.lfc[r]));
                    y.push(self.pred.lookup().get(&(p, f)).map_or(0.0, |&q| f64::from(self.pred.lfc[q])));
                }
                if x.is_empty() {
                    (p.to_string(), None)
                } else {
                    (p.to_string(), Some(spearman(&x, &y)))
                }
            })
            .collect()
    }

    /// `de_spearman_sig`: one value for all perturbations: Spearman of significant counts (real vs pred, 0 filled in)
    /// over perturbations with ≥ 1 real significant gene; 1.0 if there are none.
    pub fn spearman_sig(&self) -> f64 {
        let mut x = Vec::new();
        let mut y = Vec::new();
        for &p in &self.perturbations {
            let r = self.real.n_sig(p);
            if r > 0 {
                x.push(r as f64);
                y.push(self.pred.n_sig(p) as f64);
            }
        }
        if x.is_empty() {
            return 1.0;
        }
        spearman(&x, &y)
    }

    /// Labels and scores of `compute_generic_auc` for one perturbation: label = real f32(fdr) < 0.05; score =
    /// −log10(clip(f32 pred fdr, 1e-10, 1)) in f32 (missing pred row → fdr 1).
    fn auc_inputs(&self, p: &str) -> (Vec<bool>, Vec<f32>) {
        let rows = self.real.by_target.get(p).map_or(&[][..], Vec::as_slice);
        let mut labels = Vec::with_capacity(rows.len());
        let mut scores = Vec::with_capacity(rows.len());
        for &r in rows {
            labels.push(is_significant(self.real.fdr[r]));
            let f = self.real.feature(r);
            let q = self.pred.lookup().get(&(p, f)).map_or(1.0f32, |&q| self.pred.fdr[q]);
            scores.push(nlp(q));
        }
        (labels, scores)
    }

    /// `pr_auc` (`average_precision_score`) or `roc_auc` (`roc_curve` + `auc`) per perturbation; NaN when all labels
    /// are equal or the perturbation has no rows.
    pub fn auc(&self, kind: AucKind) -> Vec<(String, Option<f64>)> {
        self.perturbations
            .iter()
            .map(|&p| {
                let (labels, scores) = self.auc_inputs(p);
                let npos = labels.iter().filter(|&&l| l).count();
                let v = if labels.is_empty() || npos == 0 || npos == labels.len() {
                    f64::NAN
                } else {
                    match kind {
                        AucKind::Pr => average_precision(&labels, &scores),
                        AucKind::Roc => roc_auc(&labels, &scores),
                    }
                };
                (p.to_string(), Some(v))
            })
            .collect()
    }
}

/// polars `clip(1e-10, 1.0)` then `-log10` on a Float32 column (computed in f32).
fn nlp(q: f32) -> f32 {
    let q = if q.is_nan() { q } else { q.clamp(1e-10f32, 1.0f32) };
    -q.log10()
}

fn polars_sign(x: f32) -> f32 {
    if x.is_nan() {
        f32::NAN
    } else if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapKind {
    Overlap,
    Precision,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AucKind {
    Pr,
    Roc,
}

/// sklearn `_binary_clf_curve`: (fps, tps) at each distinct score, scores descending (stable mergesort, reversed).
fn binary_clf_curve(labels: &[bool], scores: &[f32]) -> (Vec<f64>, Vec<f64>) {
    let n = labels.len();
    let mut idx: Vec<usize> = (0..n).collect();
    // np.argsort(kind="mergesort")[::-1]: ascending stable then reversed. NaN sorts last in numpy → first here.
    idx.sort_by(|&a, &b| np_cmp_f32(scores[a], scores[b]).then(a.cmp(&b)));
    idx.reverse();
    let s: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
    let y: Vec<f64> = idx.iter().map(|&i| if labels[i] { 1.0 } else { 0.0 }).collect();
    let mut thresholds = Vec::new();
    for i in 0..n.saturating_sub(1) {
        // np.diff(y_score) != 0 (NaN - NaN is NaN, which is "true")
        let d = s[i + 1] - s[i];
        if d != 0.0 {
            thresholds.push(i);
        }
    }
    thresholds.push(n - 1);
    let mut cum = Vec::with_capacity(n);
    let mut c = 0.0;
    for v in &y {
        c += v;
        cum.push(c);
    }
    let tps: Vec<f64> = thresholds.iter().map(|&t| cum[t]).collect();
    let fps: Vec<f64> = thresholds.iter().zip(&tps).map(|(&t, &tp)| 1.0 + t as f64 - tp).collect();
    (fps, tps)
}

fn np_cmp_f32(a: f32, b: f32) -> std::cmp::Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal),
    }
}

/// sklearn `average_precision_score` for binary labels (`_binary_uninterpolated_average_precision`):
/// `max(0, -np.sum(np.diff(recall) * precision[:-1]))`.
pub fn average_precision(labels: &[bool], scores: &[f32]) -> f64 {
    let (fps, tps) = binary_clf_curve(labels, scores);
    let m = tps.len();
    let last_tp = tps[m - 1];
    let precision: Vec<f64> = tps
        .iter()
        .zip(&fps)
        .map(|(&tp, &fp)| {
            let ps = tp + fp;
            if ps != 0.0 {
                tp / ps
            } else {
                0.0
            }
        })
        .collect();
    let recall: Vec<f64> = tps.iter().map(|&tp| if last_tp == 0.0 { 1.0 } else { tp / last_tp }).collect();
    // reversed, with precision 1 and recall 0 appended
    let mut prec_r: Vec<f64> = precision.iter().rev().copied().collect();
    prec_r.push(1.0);
    let mut rec_r: Vec<f64> = recall.iter().rev().copied().collect();
    rec_r.push(0.0);
    let terms: Vec<f64> = (0..m).map(|i| (rec_r[i + 1] - rec_r[i]) * prec_r[i]).collect();
    let v = -np_sum_f64(&terms);
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// sklearn `roc_curve` (drop_intermediate=True) + `auc` (np.trapezoid).
pub fn roc_auc(labels: &[bool], scores: &[f32]) -> f64 {
    let (mut fps, mut tps) = binary_clf_curve(labels, scores);
    if fps.len() > 2 {
        let m = fps.len();
        let mut keep = Vec::with_capacity(m);
        keep.push(0);
        for i in 0..m - 2 {
            let d2f = fps[i + 2] - 2.0 * fps[i + 1] + fps[i];
            let d2t = tps[i + 2] - 2.0 * tps[i + 1] + tps[i];
            // np.diff(x, 2) is diff(diff(x)); integers here, so the direct second difference is exact
            if d2f != 0.0 || d2t != 0.0 {
                keep.push(i + 1);
            }
        }
        keep.push(m - 1);
        fps = keep.iter().map(|&i| fps[i]).collect();
        tps = keep.iter().map(|&i| tps[i]).collect();
    }
    fps.insert(0, 0.0);
    tps.insert(0, 0.0);
    let fl = fps[fps.len() - 1];
    let tl = tps[tps.len() - 1];
    let fpr: Vec<f64> = fps.iter().map(|&v| v / fl).collect();
    let tpr: Vec<f64> = tps.iter().map(|&v| v / tl).collect();
    trapezoid(&tpr, &fpr)
}

/// `np.trapezoid(y, x)`: `(d * (y[1:] + y[:-1]) / 2.0).sum()`.
fn trapezoid(y: &[f64], x: &[f64]) -> f64 {
    let terms: Vec<f64> = (0..x.len() - 1).map(|i| (x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2.0).collect();
    np_sum_f64(&terms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roc_hand() {
        // scores 0.9(pos) 0.8(neg) 0.7(pos) 0.1(neg): AUC = 3/4
        let l = [true, false, true, false];
        let s = [0.9f32, 0.8, 0.7, 0.1];
        assert!((roc_auc(&l, &s) - 0.75).abs() < 1e-15);
        // AP = 1/2*(1) + 1/2*(2/3) = 0.8333…
        assert!((average_precision(&l, &s) - (0.5 + 1.0 / 3.0)).abs() < 1e-15);
    }

    #[test]
    fn roc_ties() {
        // all tied: a single threshold; roc = 0.5, AP = prevalence
        let l = [true, false, false, true];
        let s = [1.0f32; 4];
        assert!((roc_auc(&l, &s) - 0.5).abs() < 1e-15);
        assert!((average_precision(&l, &s) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn ranking_nan_first_then_inf() {
        let k = [1.0f32, f32::INFINITY, f32::NAN, 2.0, f32::INFINITY, 1.0];
        assert_eq!(rank_desc_nan_first(&k), vec![2, 1, 4, 3, 0, 5]);
    }

    #[test]
    fn threshold_is_f32() {
        assert!(!is_significant(0.049_999_999_99_f64 as f32));
        assert!(is_significant(0.0499_f64 as f32));
    }
}
