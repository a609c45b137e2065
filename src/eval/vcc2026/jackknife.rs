//! `bulk_lognorm` profiles and the leave-one-cell-out (jackknife) sampling correction of one group
//! (cell-eval2 `prep.py::bulk_lognorm_means`, `moments.py`; design/vcc2026.md §4, §6).
//!
//! `b_g = log1p(5e4·P_g/S)` with `P_g = Σ_cells y_cg`, `S = Σ_g P_g`; all-zero group → zeros.
//! `C = max(0, (n−1)/n · Σ_g [Σ_i V_ig² − (Σ_i V_ig)²/n])` with `V_ig = log1p(5e4·(P_g − y_ig)/r_i) − b_g`,
//! `r_i = S − ℓ_i` (V = −b_g when r_i = 0); C = 0 when n < 2 or S = 0. Deviations from `b` are taken before
//! summing, as cell-eval2 does (the cancellation is load-bearing).

use super::{Rows, BULK_TARGET_SUM};
use crate::eval::metrics::numeric::np_sum_f64;

/// Column sums `P` (f64, cells in order).
pub fn column_sums(rows: &Rows, n_vars: usize) -> Vec<f64> {
    let mut p = vec![0.0f64; n_vars];
    for (&c, &v) in rows.cols.iter().zip(&rows.vals) {
        p[c as usize] += v;
    }
    p
}

/// The bulk profile `log1p(P · (5e4/S))` (`prep.py::bulk_lognorm_means`: the scale is formed first) and `S`
/// (numpy's pairwise sum).
pub fn bulk_from_sums(p: &[f64]) -> (Vec<f64>, f64) {
    let s = np_sum_f64(p);
    if s > 0.0 {
        let scale = BULK_TARGET_SUM / s;
        (p.iter().map(|&x| (x * scale).ln_1p()).collect(), s)
    } else {
        (vec![0.0; p.len()], s)
    }
}

/// The group's bulk profile and jackknife correction.
pub fn bulk_and_jackknife(rows: &Rows, n_vars: usize) -> (Vec<f64>, f64) {
    let p = column_sums(rows, n_vars);
    let (profile, s) = bulk_from_sums(&p);
    let n = rows.n();
    if n < 2 || s <= 0.0 {
        return (profile, 0.0);
    }
    // moments.py::_loo_bulk shifts by its own `log1p(TS·P/S)` (not the profile's `P·(TS/S)`)
    let b: Vec<f64> = p.iter().map(|&x| (BULK_TARGET_SUM * x / s).ln_1p()).collect();
    let mut sum = vec![0.0f64; n_vars];
    let mut sumsq = vec![0.0f64; n_vars];
    // the value of a gene where the cell has a zero, per cell: log1p(5e4·P_g/r) − b_g
    for i in 0..n {
        let (cols, vals) = rows.cell(i);
        let l: f64 = vals.iter().sum();
        let r = s - l;
        let mut k = 0usize;
        if r > 0.0 {
            for g in 0..n_vars {
                let y = if k < cols.len() && cols[k] as usize == g {
                    k += 1;
                    vals[k - 1]
                } else {
                    0.0
                };
                let v = (BULK_TARGET_SUM * (p[g] - y) / r).ln_1p() - b[g];
                sum[g] += v;
                sumsq[g] += v * v;
            }
        } else {
            for g in 0..n_vars {
                let v = -b[g];
                sum[g] += v;
                sumsq[g] += v * v;
            }
        }
    }
    let nf = n as f64;
    let qv: Vec<f64> = sum.iter().zip(&sumsq).map(|(&s1, &s2)| s2 - s1 * s1 / nf).collect();
    (profile, ((nf - 1.0) / nf * np_sum_f64(&qv)).max(0.0))
}
