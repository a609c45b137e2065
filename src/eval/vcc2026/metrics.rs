//! The ten members of the `vcc2026` profile (cell-eval2 `metrics/discrimination.py`, `metrics/delta.py`,
//! `metrics/de.py`, `metrics/direction.py`; design/vcc2026.md §6): six scored + four diagnostics.

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;

use super::de::DeTable;
use super::validate::gene_positions;
use super::{Result, SideStats, Vcc2026Error, ALPHA, BULK_TARGET_SUM};
use crate::eval::metrics::numeric::np_sum_f64;

pub const PDS_COSINE: &str = "pds_cosine";
pub const EXPR_MSE_UNBIASED: &str = "expr_mse_unbiased";
pub const EXPR_MSE_UNBIASED_CAPPED: &str = "expr_mse_unbiased_capped";
pub const EXPR_DISTANCE_UNBIASED: &str = "expr_distance_unbiased";
pub const EXPR_REAL_MASS_RATIO: &str = "expr_real_mass_ratio";
pub const EXPR_CAPPED_NORM: &str = "expr_mse_unbiased_capped_norm";
pub const LFC_NMAE: &str = "de_wilcoxon_lfc_nmae";
pub const FIDELITY: &str = "de_wilcoxon_direction_fidelity_yield_raw";
pub const REACH: &str = "de_wilcoxon_direction_reach_raw";
pub const SIG_JACCARD: &str = "de_wilcoxon_sig_jaccard";

/// The members in `results.csv` order (DE first, then expression/PDS); the ratio-of-sums member has no rows.
pub const RESULT_ORDER: [&str; 9] = [
    LFC_NMAE,
    FIDELITY,
    REACH,
    SIG_JACCARD,
    PDS_COSINE,
    EXPR_MSE_UNBIASED,
    EXPR_MSE_UNBIASED_CAPPED,
    EXPR_DISTANCE_UNBIASED,
    EXPR_REAL_MASS_RATIO,
];

/// The six scored members.
pub const SCORED: [&str; 6] = [PDS_COSINE, EXPR_CAPPED_NORM, FIDELITY, REACH, SIG_JACCARD, LFC_NMAE];

/// Whether lower is better (the two error members).
pub fn lower_is_better(m: &str) -> bool {
    m == EXPR_CAPPED_NORM || m == LFC_NMAE
}

/// Per-perturbation values of the nine per-perturbation members plus the ratio-of-sums member.
#[derive(Debug, Clone, Default)]
pub struct MemberValues {
    /// Non-control real labels, sorted.
    pub perts: Vec<String>,
    /// member → per-perturbation value (`None`: no row, e.g. lfc_nmae's omitted perturbations).
    pub values: HashMap<&'static str, Vec<Option<f64>>>,
    pub capped_norm: f64,
}

impl MemberValues {
    /// Mean of the non-NaN values of a member (the ratio for the ratio-of-sums member).
    pub fn aggregate(&self, m: &str) -> f64 {
        if m == EXPR_CAPPED_NORM {
            return self.capped_norm;
        }
        let v: Vec<f64> = self
            .values
            .get(m)
            .map(|v| v.iter().flatten().copied().filter(|x| !x.is_nan()).collect())
            .unwrap_or_default();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    }

    /// Number of non-NaN per-perturbation values.
    pub fn n_used(&self, m: &str) -> usize {
        self.values.get(m).map(|v| v.iter().flatten().filter(|x| !x.is_nan()).count()).unwrap_or(0)
    }
}

/// Which control the predicted effects are taken against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlSource {
    Real,
    Pred,
}

fn sqd(a: &[f64], b: &[f64], own: Option<usize>) -> f64 {
    let mut s = 0.0;
    for (x, y) in a.iter().zip(b) {
        let d = x - y;
        s += d * d;
    }
    if let Some(g) = own {
        let d = a[g] - b[g];
        s -= d * d;
    }
    s
}

/// Everything but the DE members.
fn expression_and_pds(
    var_names: &[String],
    real: &SideStats,
    pred: &SideStats,
    perts: &[String],
    control_source: ControlSource,
    out: &mut MemberValues,
) -> Result<()> {
    let gpos = gene_positions(var_names);
    let n_vars = var_names.len();
    let ridx: HashMap<&str, usize> = real.labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let pidx: HashMap<&str, usize> = pred.labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let lookup = |m: &HashMap<&str, usize>, l: &str| {
        m.get(l).copied().ok_or_else(|| Vcc2026Error::Metric(format!("perturbation '{l}' missing from a side")))
    };
    let rc = &real.bulk[real.control];
    let pc = match control_source {
        ControlSource::Real => rc,
        ControlSource::Pred => &pred.bulk[pred.control],
    };
    let n = perts.len();
    // ---- pds_cosine: panel-wide target exclusion, cosine distance, midrank, n-1
    let mut keep = vec![true; n_vars];
    for p in perts {
        if let Some(&g) = gpos.get(p) {
            keep[g] = false;
        }
    }
    // the effects over the kept genes, per perturbation in parallel (one core took ~10 ms here, the other idle)
    let (rd, pd): (Vec<Vec<f64>>, Vec<Vec<f64>>) = perts
        .par_iter()
        .map(|p| {
            let rb = &real.bulk[lookup(&ridx, p)?];
            let pb = &pred.bulk[lookup(&pidx, p)?];
            let r: Vec<f64> = (0..n_vars).filter(|&g| keep[g]).map(|g| rb[g] - rc[g]).collect();
            let d: Vec<f64> = (0..n_vars).filter(|&g| keep[g]).map(|g| pb[g] - pc[g]).collect();
            Ok((r, d))
        })
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .unzip();
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let rn: Vec<f64> = rd.iter().map(|v| norm(v)).collect();
    let pn: Vec<f64> = pd.iter().map(|v| norm(v)).collect();
    // n² dot products over the panel (150² × 18k on the big pair): rows in parallel, each in lanes (`dot`)
    let pds: Vec<Option<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let d: Vec<f64> = (0..n)
                .map(|j| {
                    let den = pn[i] * rn[j];
                    let cos = if den != 0.0 { dot(&pd[i], &rd[j]) / den } else { 0.0 };
                    (1.0 - cos).clamp(0.0, 2.0)
                })
                .collect();
            let m = d[i];
            let less = d.iter().filter(|&&x| x < m).count() as f64;
            let eq = d.iter().filter(|&&x| x == m).count() as f64;
            let k = less + (eq - 1.0) / 2.0;
            Some(if n > 1 { 1.0 - k / (n as f64 - 1.0) } else { 1.0 })
        })
        .collect();
    out.values.insert(PDS_COSINE, pds);

    // ---- expression family
    let g_total = n_vars as f64;
    let own: Vec<Option<usize>> = perts.iter().map(|p| gpos.get(p).copied()).collect();
    let w: Vec<f64> = own.iter().map(|o| 1.0 / if o.is_some() { g_total - 1.0 } else { g_total }).collect();
    let c_ctrl = real.jk[real.control];
    // per perturbation (in parallel: the n expm1 profiles were ~1 % of a run on one core, the other idle)
    let per_pert: Vec<(f64, f64, f64, f64, f64)> = perts
        .par_iter()
        .enumerate()
        .map(|(i, p)| {
            let ri = lookup(&ridx, p)?;
            let pi = lookup(&pidx, p)?;
            let (rb, pb) = (&real.bulk[ri], &pred.bulk[pi]);
            let (cr, cp) = (real.jk[ri], pred.jk[pi]);
            let dist = w[i] * (sqd(rb, rc, own[i]) - cr - c_ctrl);
            let s = sqd(pb, rb, own[i]);
            // numpy's pairwise sum: the values are 1 ± a few ulp and their spread is the column's std
            let e: Vec<f64> = rb.iter().map(|x| x.exp_m1()).collect();
            Ok((dist, s, w[i] * (s - cp - cr), cp.min(cr), np_sum_f64(&e) / BULK_TARGET_SUM))
        })
        .collect::<Result<_>>()?;
    let dist: Vec<f64> = per_pert.iter().map(|t| t.0).collect();
    let sq_pred: Vec<f64> = per_pert.iter().map(|t| t.1).collect();
    let mse: Vec<f64> = per_pert.iter().map(|t| t.2).collect();
    let claim_terms: Vec<f64> = per_pert.iter().map(|t| t.3).collect();
    let mass: Vec<f64> = per_pert.iter().map(|t| t.4).collect();
    let mut capped = Vec::with_capacity(n);
    let claim: f64 = claim_terms.iter().zip(&w).map(|(c, w)| c * w).sum();
    // budget: per gene, weighted centred sum of squares of the predicted bulks over perturbations whose own gene
    // is not that gene
    let pb_rows: Vec<&Vec<f64>> =
        perts.iter().map(|p| lookup(&pidx, p).map(|i| &pred.bulk[i])).collect::<Result<_>>()?;
    let mut own_count = vec![0usize; n_vars];
    for g in own.iter().flatten() {
        own_count[*g] += 1;
    }
    // per gene in parallel (`None`: fewer than two perturbations count), added in gene order
    let per_gene: Vec<Option<f64>> = (0..n_vars)
        .into_par_iter()
        .map(|g| {
            if n - own_count[g] < 2 {
                return None;
            }
            let (mut sw, mut swx) = (0.0, 0.0);
            for i in 0..n {
                if own[i] != Some(g) {
                    sw += w[i];
                    swx += w[i] * pb_rows[i][g];
                }
            }
            let xm = swx / sw;
            let mut ss = 0.0;
            for i in 0..n {
                if own[i] != Some(g) {
                    let d = pb_rows[i][g] - xm;
                    ss += w[i] * d * d;
                }
            }
            Some(ss.max(0.0))
        })
        .collect();
    let mut budget = 0.0;
    for ss in per_gene.into_iter().flatten() {
        budget += ss;
    }
    let rho = if claim > 0.0 { (budget / claim).min(1.0) } else { 1.0 };
    for (i, p) in perts.iter().enumerate() {
        let ri = lookup(&ridx, p)?;
        capped.push(w[i] * (sq_pred[i] - rho * claim_terms[i] - real.jk[ri]));
    }
    let (mut num, mut den) = (0.0, 0.0);
    for i in 0..n {
        if capped[i].is_finite() && dist[i].is_finite() {
            num += capped[i];
            den += dist[i];
        }
    }
    out.capped_norm = if den > 0.0 { num / den } else { f64::NAN };
    out.values.insert(EXPR_DISTANCE_UNBIASED, dist.into_iter().map(Some).collect());
    out.values.insert(EXPR_MSE_UNBIASED, mse.into_iter().map(Some).collect());
    out.values.insert(EXPR_MSE_UNBIASED_CAPPED, capped.into_iter().map(Some).collect());
    out.values.insert(EXPR_REAL_MASS_RATIO, mass.into_iter().map(Some).collect());
    Ok(())
}

/// Each gene's row in a DE table (`ABSENT`: not a tested gene), shared by all of the table's perturbations.
struct GeneRows(Vec<u32>);

impl GeneRows {
    const ABSENT: u32 = u32::MAX;

    fn of(table: &DeTable) -> Self {
        let len = table.genes.iter().max().map_or(0, |&g| g + 1);
        let mut pos = vec![Self::ABSENT; len];
        for (k, &g) in table.genes.iter().enumerate() {
            pos[g] = k as u32;
        }
        GeneRows(pos)
    }

    fn get(&self, g: usize) -> Option<usize> {
        self.0.get(g).filter(|&&k| k != Self::ABSENT).map(|&k| k as usize)
    }
}

/// One perturbation's rows of a DE table keyed by gene index.
struct PertRows<'a> {
    table: &'a DeTable,
    i: usize,
    pos: &'a GeneRows,
}

impl<'a> PertRows<'a> {
    fn new(table: &'a DeTable, pos: &'a GeneRows, label: &str) -> Option<Self> {
        let i = table.pert_index(label)?;
        Some(PertRows { table, i, pos })
    }
    fn has(&self, g: usize) -> bool {
        self.pos.get(g).is_some()
    }
    fn lfc(&self, g: usize) -> Option<f64> {
        self.pos.get(g).map(|k| self.table.lfc[self.i][k])
    }
    fn padj(&self, g: usize) -> Option<f64> {
        self.pos.get(g).map(|k| self.table.padj[self.i][k])
    }
    fn p(&self, g: usize) -> Option<f64> {
        self.pos.get(g).map(|k| self.table.p[self.i][k])
    }
    /// The significant genes (own removed), ascending.
    fn sig(&self, own: Option<usize>) -> Vec<usize> {
        let mut genes: Vec<usize> = self
            .table
            .genes
            .iter()
            .enumerate()
            .filter(|&(k, &g)| Some(g) != own && self.table.padj[self.i][k] < ALPHA)
            .map(|(_, &g)| g)
            .collect();
        genes.sort_unstable();
        genes
    }
}

/// |a ∩ b| of two ascending lists without repeats.
fn intersection_len(a: &[usize], b: &[usize]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                n += 1;
                i += 1;
                j += 1;
            }
        }
    }
    n
}

fn defined(x: Option<f64>) -> bool {
    x.is_some_and(|v| !v.is_nan() && v != 0.0)
}

fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// lfc_nmae of one perturbation: gate = real significant with finite lfc (own removed), ≥ 10 genes, non-zero
/// finite denominator; pred lfc missing/non-finite → 0.
pub fn lfc_nmae_one(gate: &[(usize, f64)], pred_lfc: impl Fn(usize) -> Option<f64>) -> Option<f64> {
    if gate.len() < 10 {
        return None;
    }
    let n = gate.len() as f64;
    let d = gate.iter().map(|(_, l)| l.abs()).sum::<f64>() / n;
    if !(d > 0.0 && d.is_finite()) {
        return None;
    }
    let num = gate
        .iter()
        .map(|&(g, l)| {
            let lp = pred_lfc(g).filter(|v| v.is_finite()).unwrap_or(0.0);
            (lp - l).abs()
        })
        .sum::<f64>()
        / n;
    Some(num / d)
}

/// The real-side lfc_nmae gate of a perturbation.
pub fn lfc_gate(
    r: &DeTable,
    label: &str,
    own_from: &HashSet<usize>,
    gpos: &HashMap<String, usize>,
) -> Vec<(usize, f64)> {
    let Some(i) = r.pert_index(label) else { return Vec::new() };
    let own = gpos.get(label).copied().filter(|g| own_from.contains(g));
    r.genes
        .iter()
        .enumerate()
        .filter(|&(k, &g)| Some(g) != own && r.padj[i][k] < ALPHA && r.lfc[i][k].is_finite())
        .map(|(k, &g)| (g, r.lfc[i][k]))
        .collect()
}

fn de_members(var_names: &[String], real: &DeTable, pred: &DeTable, perts: &[String], out: &mut MemberValues) {
    let gpos = gene_positions(var_names);
    let feats: HashSet<usize> = real.genes.iter().copied().collect();
    let (real_pos, pred_pos) = (GeneRows::of(real), GeneRows::of(pred));
    // (sig_jaccard, lfc_nmae, fidelity, reach) of one perturbation; the perturbations run in parallel
    let one = |p: &String| -> [Option<f64>; 4] {
        let own = gpos.get(p).copied().filter(|g| feats.contains(g));
        let (Some(r), Some(q)) = (PertRows::new(real, &real_pos, p), PertRows::new(pred, &pred_pos, p)) else {
            return [Some(f64::NAN), None, Some(f64::NAN), Some(f64::NAN)];
        };
        // sig_jaccard
        let rs = r.sig(own);
        let qs = q.sig(own);
        let inter = intersection_len(&rs, &qs);
        let uni = rs.len() + qs.len() - inter;
        let jac = Some(if uni == 0 { 1.0 } else { inter as f64 / uni as f64 });
        // lfc_nmae
        let gate = lfc_gate(real, p, &feats, &gpos);
        let nmae = lfc_nmae_one(&gate, |g| q.lfc(g));
        // inner join (pred ∩ real genes), own removed
        let joined: Vec<usize> = pred.genes.iter().copied().filter(|&g| r.has(g) && Some(g) != own).collect();
        let n_conf = rs.len();
        let mut n_pred = 0usize;
        let mut k = 0usize;
        struct PoolRow<'s> {
            sigp: bool,
            pp: f64,
            pv: f64,
            al: f64,
            name: &'s str,
            adj: bool,
            m: bool,
        }
        let mut pool: Vec<PoolRow> = Vec::new();
        for &g in &joined {
            let (lr, lp) = (r.lfc(g), q.lfc(g));
            let adj = defined(lr);
            let com = defined(lp);
            let m = adj && com && sign(lp.unwrap_or(0.0)) == sign(lr.unwrap_or(0.0));
            let pp = q.padj(g).unwrap_or(f64::NAN);
            let sigp = pp < ALPHA;
            if sigp && adj {
                n_pred += 1;
                if m {
                    k += 1;
                }
            }
            if r.padj(g).is_some_and(|x| x < ALPHA) {
                let nan_inf = |x: Option<f64>| x.filter(|v| !v.is_nan()).unwrap_or(f64::INFINITY);
                let al = lp.filter(|v| !v.is_nan()).map(f64::abs).unwrap_or(f64::NEG_INFINITY);
                pool.push(PoolRow {
                    sigp,
                    pp: nan_inf(q.padj(g)),
                    pv: nan_inf(q.p(g)),
                    al,
                    name: &var_names[g],
                    adj,
                    m,
                });
            }
        }
        let denom = n_pred.max(n_conf);
        let fid = Some(if denom == 0 { f64::NAN } else { k as f64 / denom as f64 });
        pool.sort_by(|a, b| {
            b.sigp
                .cmp(&a.sigp)
                .then(a.pp.total_cmp(&b.pp))
                .then(a.pv.total_cmp(&b.pv))
                .then(b.al.total_cmp(&a.al))
                .then(a.name.cmp(b.name))
        });
        let (mut nd, mut nm, mut kstar) = (0usize, 0usize, 0usize);
        for row in &pool {
            nd += row.adj as usize;
            nm += row.m as usize;
            if nd > 0 && nm as f64 / nd as f64 >= 0.9 {
                kstar = kstar.max(nd);
            }
        }
        let reach = Some(if n_conf == 0 { f64::NAN } else { kstar as f64 / n_conf as f64 });
        [jac, nmae, fid, reach]
    };
    let rows: Vec<[Option<f64>; 4]> = perts.par_iter().map(one).collect();
    for (i, name) in [SIG_JACCARD, LFC_NMAE, FIDELITY, REACH].into_iter().enumerate() {
        out.values.insert(name, rows.iter().map(|r| r[i]).collect());
    }
}

/// All ten members.
pub fn compute_members(
    var_names: &[String],
    real: &SideStats,
    pred: &SideStats,
    real_de: &DeTable,
    pred_de: &DeTable,
    control_source: ControlSource,
) -> Result<MemberValues> {
    let perts: Vec<String> =
        real.labels.iter().enumerate().filter(|(i, _)| *i != real.control).map(|(_, l)| l.clone()).collect();
    let mut out = MemberValues { perts: perts.clone(), ..Default::default() };
    expression_and_pds(var_names, real, pred, &perts, control_source, &mut out)?;
    de_members(var_names, real_de, pred_de, &perts, &mut out);
    Ok(out)
}

/// `Σ a·b` in eight independent lanes (vectorised; an in-order sum is a chain of dependent additions, and the
/// panel's n² dot products took ~5 % of a run that way). The order differs from numpy's BLAS as the in-order
/// sum did: the cosines agree to rounding. Compiled for AVX-512 and AVX2 besides the baseline (no multiply-add
/// is fused, so every version gives the same bits).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
fn dot(a: &[f64], b: &[f64]) -> f64 {
    const LANES: usize = 8;
    let mut lanes = [0.0f64; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (xa, xb) in ca.zip(cb) {
        for ((l, x), y) in lanes.iter_mut().zip(xa).zip(xb) {
            *l += x * y;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

#[cfg(test)]
mod tests {
    use super::dot;

    #[test]
    fn dot_in_lanes_agrees_with_the_in_order_sum() {
        let mut next = crate::eval::vcc2026::test_rng(11);
        for len in [0usize, 1, 7, 8, 9, 100, 18_003] {
            let mut draw = || (next() % 2_000_001) as f64 / 1e6 - 1.0;
            let a: Vec<f64> = (0..len).map(|_| draw()).collect();
            let b: Vec<f64> = (0..len).map(|_| draw()).collect();
            let in_order: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let scale: f64 = a.iter().zip(&b).map(|(x, y)| (x * y).abs()).sum::<f64>().max(1e-300);
            assert!((dot(&a, &b) - in_order).abs() <= 1e-13 * scale, "len {len}");
        }
        assert_eq!(dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
    }
}
