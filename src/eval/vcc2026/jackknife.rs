//! `bulk_lognorm` profiles and the leave-one-cell-out (jackknife) sampling correction of one group
//! (cell-eval2 `prep.py::bulk_lognorm_means`, `moments.py`; design/vcc2026.md §4, §6).
//!
//! `b_g = log1p(5e4·P_g/S)` with `P_g = Σ_cells y_cg`, `S = Σ_g P_g`; all-zero group → zeros.
//! `C = max(0, (n−1)/n · Σ_g [Σ_i V_ig² − (Σ_i V_ig)²/n])` with `V_ig = log1p(5e4·(P_g − y_ig)/r_i) − b_g`,
//! `r_i = S − ℓ_i` (V = −b_g when r_i = 0); C = 0 when n < 2 or S = 0. Deviations from `b` are taken before
//! summing, as cell-eval2 does (the cancellation is load-bearing).

use super::rows::{with_rows, ColIndex, RowsOf, StoredValue};
use super::{GroupScan, Rows, BULK_TARGET_SUM};
use crate::eval::metrics::numeric::np_sum_f64;
use crate::eval::vector_log::log1p_scaled;

/// The bulk profile `log1p(P · (5e4/S))` (`prep.py::bulk_lognorm_means`: the scale is formed first) and `S`
/// (numpy's pairwise sum). The logarithms are [`log1p_scaled`]'s (within 4 ulps of libm's): two per gene and
/// group with the shift below, libm's scalar `log1p` took 3 % of a run.
pub fn bulk_from_sums(p: &[f64]) -> (Vec<f64>, f64) {
    let s = np_sum_f64(p);
    if s > 0.0 {
        let mut profile = vec![0.0; p.len()];
        log1p_scaled(p, BULK_TARGET_SUM / s, &mut profile);
        (profile, s)
    } else {
        (vec![0.0; p.len()], s)
    }
}

/// Cells whose own share `δ = ℓ/r` of the group's counts is at most this take the series path below; the rest
/// (tiny groups, a dominant cell) are summed directly.
const SERIES_MAX_DELTA: f64 = 0.25;

/// The group's bulk profile and jackknife correction.
///
/// Where a cell has a zero, `V = log1p(T·P/r) − log1p(T·P/S) = log1p(w·δ)` exactly, with `w = a/(1+a)`,
/// `a = T·P/S` and `δ = ℓ/r`. So the zero entries of a gene (about 80% of a sparse matrix) need no logarithm of
/// their own: over every cell, `Σ_i log1p(w·δ_i) = Σ_k (−1)^{k+1}/k · w^k · Σ_i δ_i^k` and its square are power
/// series in `w` whose coefficients are the power sums of the cells' `δ`, the same for every gene. Each stored
/// entry then adds its own `V` and takes back the `Z = log1p(w·δ)` the series counted for it: two logarithms per
/// stored entry, taken a cell at a time by [`log1p_scaled`]. Truncation is below 1e-18 of each term; the result
/// agrees with the direct per-entry sum ([`bulk_and_jackknife_direct`]) to ~1e-13 relative.
pub fn bulk_and_jackknife(rows: &Rows, n_vars: usize) -> (Vec<f64>, f64) {
    bulk_and_jackknife_scanned(rows, &rows.scan(n_vars))
}

/// [`bulk_and_jackknife`] from the group's [`GroupScan`].
pub fn bulk_and_jackknife_scanned(rows: &Rows, scan: &GroupScan) -> (Vec<f64>, f64) {
    with_rows!(rows, r => bulk_and_jackknife_of(r, scan))
}

fn bulk_and_jackknife_of<C: ColIndex, V: StoredValue>(rows: &RowsOf<C, V>, scan: &GroupScan) -> (Vec<f64>, f64) {
    let (p, totals, n_vars) = (&scan.col_sums, &scan.cell_totals, scan.col_sums.len());
    let (profile, s) = bulk_from_sums(p);
    let n = rows.n();
    if n < 2 || s <= 0.0 {
        return (profile, 0.0);
    }
    // moments.py::_loo_bulk shifts by its own `log1p(TS·P/S)` (not the profile's `P·(TS/S)`)
    let shift_args: Vec<f64> = p.iter().map(|&x| BULK_TARGET_SUM * x / s).collect();
    let mut b = vec![0.0; n_vars];
    log1p_scaled(&shift_args, 1.0, &mut b);
    let mut sum = vec![0.0f64; n_vars];
    let mut sumsq = vec![0.0f64; n_vars];
    // (cell, δ, r) of the cells on the series path
    let mut series: Vec<(usize, f64, f64)> = Vec::with_capacity(n);
    for (i, &l) in totals.iter().enumerate() {
        let r = s - l;
        if r > 0.0 && l / r <= SERIES_MAX_DELTA {
            series.push((i, l / r, r));
        } else {
            let (cols, vals) = rows.cell(i);
            add_cell_direct(p, &b, s, cols, vals, &mut sum, &mut sumsq);
        }
    }
    if !series.is_empty() {
        let delta_max = series.iter().map(|c| c.1).fold(0.0f64, f64::max);
        let k = series_terms(delta_max);
        // power sums Σ δ^j (j = 1..=k) over the series cells
        let mut all = vec![0.0f64; k];
        for &(_, delta, _) in &series {
            let mut x = 1.0;
            for a in all.iter_mut() {
                x *= delta;
                *a += x;
            }
        }
        let w: Vec<f64> = p
            .iter()
            .map(|&pg| {
                let a = BULK_TARGET_SUM * pg / s;
                a / (1.0 + a)
            })
            .collect();
        // what a cell's entries gather per gene, side by side: two cache lines per entry instead of five
        let pw: Vec<[f64; 2]> = p.iter().zip(&w).map(|(&pg, &wg)| [pg, wg]).collect();
        let mut b_sums: Vec<[f64; 3]> = (0..n_vars).map(|g| [b[g], sum[g], sumsq[g]]).collect();
        // per stored entry: V and the zero-entry value Z it replaces in the series sums below, a chunk of a
        // cell's entries at a time (the buffers stay in cache; a whole cell's went to L2 and back)
        const CHUNK: usize = 512;
        let [mut rest, mut wz, mut lv, mut lz] = [[0.0f64; CHUNK]; 4];
        for &(i, delta, r) in &series {
            let (cols, vals) = rows.cell(i);
            for (cols, vals) in cols.chunks(CHUNK).zip(vals.chunks(CHUNK)) {
                let m = cols.len();
                for (((&c, &y), r), z) in cols.iter().zip(vals).zip(rest.iter_mut()).zip(wz.iter_mut()) {
                    let [pg, wg] = pw[c.ix()];
                    *r = pg - y.to_f32() as f64;
                    *z = wg;
                }
                log1p_scaled(&rest[..m], BULK_TARGET_SUM / r, &mut lv);
                log1p_scaled(&wz[..m], delta, &mut lz);
                for ((&c, &l), &z) in cols.iter().zip(&lv).zip(&lz) {
                    let [bg, s1, s2] = &mut b_sums[c.ix()];
                    let v = l - *bg;
                    *s1 += v - z;
                    *s2 += v * v - z * z;
                }
            }
        }
        for ((s1, s2), &[_, t1, t2]) in sum.iter_mut().zip(sumsq.iter_mut()).zip(&b_sums) {
            (*s1, *s2) = (t1, t2);
        }
        // every series cell as if zero: Σ_i log1p(w·δ_i) and its square, by the power series in w
        let (lin, sq) = series_coefficients(k);
        for g in 0..n_vars {
            let wg = w[g];
            if wg == 0.0 {
                continue;
            }
            // Horner in w over j = k..1 (coefficient j-1 multiplies w^j)
            let (mut s1, mut s2) = (0.0f64, 0.0f64);
            for j in (0..k).rev() {
                s1 = (s1 + lin[j] * all[j]) * wg;
                s2 = (s2 + sq[j] * all[j]) * wg;
            }
            sum[g] += s1;
            sumsq[g] += s2;
        }
    }
    let nf = n as f64;
    let qv: Vec<f64> = sum.iter().zip(&sumsq).map(|(&s1, &s2)| s2 - s1 * s1 / nf).collect();
    (profile, ((nf - 1.0) / nf * np_sum_f64(&qv)).max(0.0))
}

/// Number of series terms for `t = w·δ ≤ delta_max`: the first omitted term is below 1e-18 of `t`.
fn series_terms(delta_max: f64) -> usize {
    if delta_max <= 0.0 {
        return 1;
    }
    let k = (1e-18f64.ln() / delta_max.ln()).ceil() as usize + 2;
    k.clamp(2, 64)
}

/// Coefficients of `t^j` (index j−1) in `log1p(t) = Σ (−1)^{j+1} t^j / j` and in
/// `log1p(t)² = Σ_{j≥2} (−1)^j · 2·H_{j−1}/j · t^j` (`H` the harmonic numbers).
fn series_coefficients(k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut lin = Vec::with_capacity(k);
    let mut sq = Vec::with_capacity(k);
    let mut harmonic = 0.0f64; // H_{j-1}
    for j in 1..=k {
        let sign = if j % 2 == 0 { -1.0 } else { 1.0 };
        lin.push(sign / j as f64);
        sq.push(-sign * 2.0 * harmonic / j as f64);
        harmonic += 1.0 / j as f64;
    }
    (lin, sq)
}

/// One cell's `V` over every gene, the way cell-eval2 writes it (`r ≤ 0`: `V = −b`).
fn add_cell_direct<C: ColIndex, V: StoredValue>(
    p: &[f64],
    b: &[f64],
    s: f64,
    cols: &[C],
    vals: &[V],
    sum: &mut [f64],
    sumsq: &mut [f64],
) {
    let l: f64 = vals.iter().map(|&v| v.to_f32() as f64).sum();
    let r = s - l;
    let mut k = 0usize;
    for g in 0..p.len() {
        let v = if r > 0.0 {
            let y = if k < cols.len() && cols[k].ix() == g {
                k += 1;
                vals[k - 1].to_f32() as f64
            } else {
                0.0
            };
            (BULK_TARGET_SUM * (p[g] - y) / r).ln_1p() - b[g]
        } else {
            -b[g]
        };
        sum[g] += v;
        sumsq[g] += v * v;
    }
}

/// The correction summed entry by entry, as cell-eval2 does (the reference for [`bulk_and_jackknife`]).
pub fn bulk_and_jackknife_direct(rows: &Rows, n_vars: usize) -> (Vec<f64>, f64) {
    let p = rows.scan(n_vars).col_sums;
    let (profile, s) = bulk_from_sums(&p);
    let n = rows.n();
    if n < 2 || s <= 0.0 {
        return (profile, 0.0);
    }
    let b: Vec<f64> = p.iter().map(|&x| (BULK_TARGET_SUM * x / s).ln_1p()).collect();
    let mut sum = vec![0.0f64; n_vars];
    let mut sumsq = vec![0.0f64; n_vars];
    with_rows!(rows, r => {
        for i in 0..n {
            let (cols, vals) = r.cell(i);
            add_cell_direct(&p, &b, s, cols, vals, &mut sum, &mut sumsq);
        }
    });
    let nf = n as f64;
    let qv: Vec<f64> = sum.iter().zip(&sumsq).map(|(&s1, &s2)| s2 - s1 * s1 / nf).collect();
    (profile, ((nf - 1.0) / nf * np_sum_f64(&qv)).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::vcc2026::test_rows;
    use proptest::prelude::*;

    fn random_cells(seed: u64, n: usize, n_vars: usize, density: f64, max_count: u64) -> Vec<Vec<(u32, f32)>> {
        let mut next = crate::eval::vcc2026::test_rng(seed);
        (0..n)
            .map(|_| {
                (0..n_vars as u32)
                    .filter_map(|g| {
                        let u = (next() % 1_000_000) as f64 / 1e6;
                        (u < density).then(|| (g, (1 + next() % max_count) as f32))
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn series_matches_the_direct_sum_on_a_typical_group() {
        let rows = test_rows(&random_cells(7, 200, 500, 0.2, 30));
        let (b1, c1) = bulk_and_jackknife(&rows, 500);
        let (b2, c2) = bulk_and_jackknife_direct(&rows, 500);
        assert_eq!(b1, b2);
        assert!(c2 > 0.0);
        assert!(((c1 - c2) / c2).abs() < 1e-11, "series {c1} vs direct {c2}");
    }

    #[test]
    fn both_layouts_give_the_same_bits() {
        let cells = random_cells(11, 120, 400, 0.25, 300);
        let (wide, compact) = (test_rows(&cells), crate::eval::vcc2026::test_rows_compact(&cells));
        assert!(matches!(compact, Rows::Compact(_)));
        let (b1, c1) = bulk_and_jackknife(&wide, 400);
        let (b2, c2) = bulk_and_jackknife(&compact, 400);
        assert_eq!((b1, c1.to_bits()), (b2, c2.to_bits()));
        assert_eq!(
            bulk_and_jackknife_direct(&wide, 400).1.to_bits(),
            bulk_and_jackknife_direct(&compact, 400).1.to_bits()
        );
    }

    #[test]
    fn a_dominant_cell_takes_the_direct_path() {
        // one cell holds most of the counts (δ > SERIES_MAX_DELTA), the others are small
        let mut cells = random_cells(3, 6, 40, 0.5, 5);
        cells.push((0..40u32).map(|g| (g, 500.0)).collect());
        let rows = test_rows(&cells);
        let (_, c1) = bulk_and_jackknife(&rows, 40);
        let (_, c2) = bulk_and_jackknife_direct(&rows, 40);
        assert!(((c1 - c2) / c2).abs() < 1e-11, "series {c1} vs direct {c2}");
    }

    proptest! {
        #[test]
        fn series_equals_direct(seed in 0u64..10_000, n in 2usize..60, density in 0.01f64..0.9, max_count in 1u64..200) {
            let rows = test_rows(&random_cells(seed, n, 50, density, max_count));
            let (_, c1) = bulk_and_jackknife(&rows, 50);
            let (_, c2) = bulk_and_jackknife_direct(&rows, 50);
            let scale = c2.abs().max(1e-12);
            prop_assert!(((c1 - c2) / scale).abs() < 1e-9, "series {} vs direct {}", c1, c2);
        }
    }
}
