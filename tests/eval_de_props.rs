#![allow(clippy::unwrap_used)]
//! Property tests of the DE statistics against brute-force references, and of the streaming DE against a
//! direct in-memory computation (several passes and chunk sizes must give identical tables).

use std::path::Path;

use ndarray::Array2;
use proptest::prelude::*;
use vcell::data::anndata::{AnnData, Categorical, Column, CsrMatrix, DataFrame, XMatrix};
use vcell::eval::bh::bh_adjust;
use vcell::eval::de::{compute_de, compute_de_and_pseudobulk, DeOptions};
use vcell::eval::input::{prepare_source, InputOptions};
use vcell::eval::mwu::{
    mwu_sparse, nonzero_tie_term, rank_sum_and_ties, rank_sum_and_ties_vs, RankScratch, SortedReference,
};
use vcell::eval::pseudobulk::compute_pseudobulk;
use vcell::eval::EvalError;
use vcell::progress::NoProgress;

/// O(n²) ranks: rank(v) = #{w < v} + (#{w == v} + 1)/2.
fn brute_u_ties(x: &[f32], y: &[f32]) -> (f64, f64) {
    let all: Vec<f32> = x.iter().chain(y).copied().collect();
    let rank = |v: f32| {
        let less = all.iter().filter(|&&w| w < v).count() as f64;
        let eq = all.iter().filter(|&&w| w == v).count() as f64;
        less + (eq + 1.0) / 2.0
    };
    let r1: f64 = x.iter().map(|&v| rank(v)).sum();
    let mut ties = 0.0;
    let mut seen: Vec<f32> = Vec::new();
    for &v in &all {
        if !seen.contains(&v) {
            seen.push(v);
            let t = all.iter().filter(|&&w| w == v).count() as f64;
            ties += t * t * t - t;
        }
    }
    let n1 = x.len() as f64;
    (r1 - n1 * (n1 + 1.0) / 2.0, ties)
}

/// U1 by pair counting: Σ [x > y] + ½ [x == y].
fn pair_u(x: &[f32], y: &[f32]) -> f64 {
    let mut u = 0.0;
    for &a in x {
        for &b in y {
            if a > b {
                u += 1.0;
            } else if a == b {
                u += 0.5;
            }
        }
    }
    u
}

/// erfc by its Taylor series (x < 1.5) or its continued fraction (x ≥ 1.5); independent of Cephes and fdlibm.
/// Within 1.3e-14 relative of mpmath on (0, 4) (the series loses digits to cancellation above 1.5, where the
/// fraction, evaluated backwards over 2,000 terms, is within 1.1e-15).
fn erfc_ref(x: f64) -> f64 {
    if x < 1.5 {
        let mut term = x;
        let mut sum = x;
        let mut n = 0.0;
        loop {
            n += 1.0;
            term *= -x * x / n;
            let add = term / (2.0 * n + 1.0);
            sum += add;
            if add.abs() <= 1e-18 * sum.abs() {
                break;
            }
        }
        1.0 - 2.0 / std::f64::consts::PI.sqrt() * sum
    } else {
        // erfc(x) = exp(-x²)/√π · 1/(x + 1/2/(x + 1/(x + 3/2/(x + …))))
        let mut f = x;
        for k in (1..2000).rev() {
            f = x + (k as f64 / 2.0) / f;
        }
        (-x * x).exp() / std::f64::consts::PI.sqrt() / f
    }
}

fn p_ref(u1: f64, ties: f64, n1: usize, n2: usize) -> f64 {
    let (a, b) = (n1 as f64, n2 as f64);
    let n = a + b;
    let var = a * b / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 {
        return 1.0;
    }
    let u = u1.max(a * b - u1);
    let z = (u - a * b / 2.0 - 0.5) / var.sqrt();
    (erfc_ref(z / std::f64::consts::SQRT_2)).min(1.0)
}

fn nonzero_sorted(v: &[f32]) -> Vec<f32> {
    let mut nz: Vec<f32> = v.iter().copied().filter(|&x| x != 0.0).collect();
    nz.sort_by(f32::total_cmp);
    nz
}

fn sample() -> impl Strategy<Value = Vec<f32>> {
    // few distinct values and many zeros: ties everywhere
    prop::collection::vec(
        prop_oneof![4 => Just(0.0f32), 1 => Just(0.5f32), 1 => Just(1.0f32), 1 => Just(2.25f32), 1 => (1u32..50).prop_map(|k| k as f32 / 7.0)],
        1..40,
    )
}

proptest! {
    #[test]
    fn mwu_matches_brute_force(x in sample(), y in sample()) {
        let (xn, yn) = (nonzero_sorted(&x), nonzero_sorted(&y));
        let (r1, ties) = rank_sum_and_ties(&xn, x.len(), &yn, y.len());
        let (u_brute, ties_brute) = brute_u_ties(&x, &y);
        let n1 = x.len() as f64;
        prop_assert_eq!(r1 - n1 * (n1 + 1.0) / 2.0, u_brute);
        prop_assert_eq!(u_brute, pair_u(&x, &y));
        prop_assert_eq!(ties, ties_brute);
        // the binary-search version used by the DE stage is bit-identical to the merge
        prop_assert_eq!(rank_sum_and_ties_vs(&xn, x.len(), &yn, y.len(), nonzero_tie_term(&yn)), (r1, ties));
        // and so is the bucket-indexed reference (as one column among others, f32 and f64)
        let (ptr, mut vals) = (vec![0, 2.min(yn.len()), yn.len() + 2.min(yn.len())], yn[..2.min(yn.len())].to_vec());
        vals.extend_from_slice(&yn);
        let index = SortedReference::new(y.len(), ptr.clone(), vals.clone());
        prop_assert_eq!(index.rank_sum_and_ties(&xn, x.len(), 1), (r1, ties));
        let index64 = SortedReference::new(y.len(), ptr, vals.iter().map(|&v| v as f64).collect::<Vec<f64>>());
        let xn64: Vec<f64> = xn.iter().map(|&v| v as f64).collect();
        prop_assert_eq!(index64.rank_sum_and_ties(&xn64, x.len(), 1), (r1, ties));
        let res = mwu_sparse(&xn, x.len(), &yn, y.len());
        prop_assert_eq!(res.statistic, u_brute);
        let want = p_ref(u_brute, ties_brute, x.len(), y.len());
        prop_assert!((0.0..=1.0).contains(&res.p_value));
        prop_assert!(((res.p_value - want) / want).abs() <= 1e-12, "p {} vs {}", res.p_value, want);
    }

    #[test]
    fn bh_matches_reference(p in prop::collection::vec(prop_oneof![Just(1.0f64), Just(0.01), 0.0f64..1.0], 0..60)) {
        let q = bh_adjust(&p);
        let m = p.len();
        if m <= 1 {
            prop_assert_eq!(q, p);
        } else {
            for i in 0..m {
                // q_i = min over p_j ≥ p_i of p_j · (m / #{k: p_k ≤ p_j}), clipped to 1
                let mut best = f64::INFINITY;
                for j in 0..m {
                    if p[j] >= p[i] {
                        let r = p.iter().filter(|&&v| v <= p[j]).count();
                        best = best.min(p[j] * (m as f64 / r as f64));
                    }
                }
                prop_assert_eq!(q[i], best.clamp(0.0, 1.0));
            }
        }
    }
}

/// A random AnnData: `n_groups` perturbations + control, shuffled cells, unsorted categories, an all-zero gene.
fn synthetic(seed: u64, n_cells: usize, n_genes: usize, counts: bool, dense: bool) -> AnnData {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut rnd = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 33) as f64) / (1u64 << 31) as f64
    };
    let categories = vec!["GENE2".to_owned(), "non-targeting".to_owned(), "GENE0".to_owned(), "GENE1".to_owned()];
    let codes: Vec<i32> = (0..n_cells).map(|i| if i < 4 { i as i32 } else { (rnd() * 4.0) as i32 }).collect();
    let mut x = Array2::<f32>::zeros((n_cells, n_genes));
    for i in 0..n_cells {
        for g in 1..n_genes {
            if rnd() < 0.5 {
                let k = (1.0 + rnd() * 6.0 * (1.0 + codes[i] as f64 * (g % 3) as f64)).floor();
                x[[i, g]] = if counts { k as f32 } else { (k as f32 / 3.0).ln_1p() };
            }
        }
    }
    let xm = if dense { XMatrix::Dense(x) } else { XMatrix::Sparse(CsrMatrix::csr_from_dense(x.view(), 0.0)) };
    let mut obs = DataFrame::with_index((0..n_cells).map(|i| format!("c{i}")).collect());
    obs.set_column("target_gene", Column::Categorical(Categorical { codes, categories, ordered: false }));
    AnnData {
        x: xm,
        obs,
        var: DataFrame::with_index((0..n_genes).map(|g| format!("GENE{g}")).collect()),
        obsm: vec![],
        layers: vec![],
    }
}

#[test]
fn streaming_passes_and_chunks_do_not_change_the_table() {
    for (counts, dense) in [(false, false), (true, false), (false, true)] {
        let ad = synthetic(3, 157, 23, counts, dense);
        let big =
            prepare_source(Path::new("mem.h5ad"), Box::new(ad.clone()), &InputOptions::default(), &NoProgress).unwrap();
        let (one, pb) = compute_de_and_pseudobulk(&big, &DeOptions::default(), &NoProgress).unwrap();
        let opts = InputOptions { chunk_nnz: 1, ..InputOptions::default() };
        let small = prepare_source(Path::new("mem.h5ad"), Box::new(ad.clone()), &opts, &NoProgress).unwrap();
        let many = compute_de(&small, &DeOptions { batch_bytes: 1 }, &NoProgress).unwrap();
        assert_eq!(one, many);
        assert_eq!(pb, compute_pseudobulk(&small, &NoProgress).unwrap());
        // stored categories order, control omitted
        assert_eq!(one.targets, vec!["GENE2", "GENE0", "GENE1"]);
        assert_eq!(one.n_rows(), 3 * 23);
        assert_eq!(pb.labels, vec!["GENE0", "GENE1", "GENE2", "non-targeting"]);
        // gene 0 is all zero: LFC 0, p 1
        assert_eq!(one.log2_fold_change[0], 0.0);
        assert_eq!(one.p_value[0], 1.0);
        assert_eq!(one.percent_change[0], 0.0);
    }
}

#[test]
fn de_rows_match_a_direct_computation() {
    let ad = synthetic(5, 120, 11, false, false);
    let XMatrix::Sparse(m) = &ad.x else { unreachable!() };
    let dense = m.to_dense();
    let Some(Column::Categorical(cat)) = ad.obs.column("target_gene") else { unreachable!() };
    let file =
        prepare_source(Path::new("mem.h5ad"), Box::new(ad.clone()), &InputOptions::default(), &NoProgress).unwrap();
    let de = compute_de(&file, &DeOptions::default(), &NoProgress).unwrap();
    let cells = |code: i32| -> Vec<usize> { (0..120).filter(|&i| cat.codes[i] == code).collect() };
    let ctrl = cells(1);
    let mut row = 0;
    for code in [0, 2, 3] {
        let grp = cells(code);
        let inv_t = (1.0 / grp.len() as f64) as f32;
        let inv_r = (1.0 / ctrl.len() as f64) as f32;
        for g in 0..11 {
            let t = grp.iter().fold(0.0f32, |a, &i| a + dense[[i, g]] * inv_t).exp_m1();
            let r = ctrl.iter().fold(0.0f32, |a, &i| a + dense[[i, g]] * inv_r).exp_m1();
            assert_eq!(de.target_mean[row], t);
            assert_eq!(de.ref_mean[row], r);
            let x: Vec<f32> = grp.iter().map(|&i| dense[[i, g]]).collect();
            let y: Vec<f32> = ctrl.iter().map(|&i| dense[[i, g]]).collect();
            let (u, ties) = brute_u_ties(&x, &y);
            assert_eq!(de.statistic[row], u);
            let p = p_ref(u, ties, x.len(), y.len());
            assert!(((de.p_value[row] - p) / p).abs() < 1e-12);
            assert_eq!(de.target_membership[row], grp.len() as u64);
            assert_eq!(de.ref_membership[row], ctrl.len() as u64);
            row += 1;
        }
    }
}

#[test]
fn unused_category_and_nan_are_clear_errors() {
    let mut ad = synthetic(7, 40, 5, false, false);
    if let Some(Column::Categorical(c)) = ad.obs.columns.iter_mut().map(|(_, c)| c).next() {
        c.categories.push("GENE9".to_owned());
    }
    let err = prepare_source(Path::new("p.h5ad"), Box::new(ad), &InputOptions::default(), &NoProgress).unwrap_err();
    assert!(matches!(err, EvalError::UnusedCategory { .. }), "{err}");
    assert!(err.to_string().contains("GENE9"), "{err}");

    let mut ad = synthetic(7, 40, 5, false, false);
    if let XMatrix::Sparse(m) = &mut ad.x {
        m.data_mut()[0] = f32::NAN;
    }
    let err = prepare_source(Path::new("p.h5ad"), Box::new(ad), &InputOptions::default(), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("1 NaN"), "{err}");
}

fn wide_sample() -> impl Strategy<Value = Vec<f32>> {
    // values spread over many binades, some repeated, many zeros
    prop::collection::vec(
        prop_oneof![3 => Just(0.0f32), 1 => Just(3.5f32), 4 => (-20i32..14, 1u32..1000).prop_map(|(e, m)| m as f32 * 2f32.powi(e))],
        0..300,
    )
}

proptest! {
    #[test]
    fn bucket_index_equals_merge(x in wide_sample(), y in wide_sample()) {
        let (xn, yn) = (nonzero_sorted(&x), nonzero_sorted(&y));
        let index = SortedReference::new(y.len(), vec![0, yn.len()], yn.clone());
        prop_assert_eq!(index.rank_sum_and_ties(&xn, x.len(), 0), rank_sum_and_ties(&xn, x.len(), &yn, y.len()));
    }
}

/// `v` in a deterministic pseudo-random order (Fisher–Yates with xorshift).
fn shuffled<T>(mut v: Vec<T>, seed: u64) -> Vec<T> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

proptest! {
    /// The sort-free path (target values pairwise distinct, in any order) gives the same bits as the sorted one.
    #[test]
    fn distinct_unsorted_equals_sorted(x in wide_sample(), y in wide_sample(), seed in 0u64..1000) {
        let mut xn = nonzero_sorted(&x);
        xn.dedup();
        let yn = nonzero_sorted(&y);
        let index = SortedReference::new(y.len(), vec![0, yn.len()], yn.clone());
        let want = index.rank_sum_and_ties(&xn, x.len(), 0);
        let shuffled = shuffled(xn, seed);
        prop_assert_eq!(index.rank_sum_and_ties_distinct(&shuffled, x.len(), 0), want);
    }
}

proptest! {
    /// The any-order path (duplicates allowed, cell order) gives the same bits as sorting first, whatever the ties
    /// within the target and against the control, and the scratch tables are left clean for the next column.
    #[test]
    fn any_order_equals_sorted(x in sample(), y in sample(), x2 in sample(), seed in 0u64..1000) {
        let bits = |v: &[f32]| -> Vec<u32> { v.iter().filter(|&&a| a > 0.0).map(|a| a.to_bits()).collect() };
        let yn: Vec<u32> = {
            let mut b = bits(&y);
            b.sort_unstable();
            b
        };
        let index = SortedReference::new(y.len(), vec![0, yn.len()], yn);
        let mut scratch = RankScratch::default();
        for x in [&x, &x2, &x] {
            let mut sorted = bits(x);
            sorted.sort_unstable();
            let want = index.rank_sum_and_ties(&sorted, x.len(), 0);
            let shuffled = shuffled(bits(x), seed);
            prop_assert_eq!(index.rank_sum_and_ties_any_order(&shuffled, x.len(), 0, &mut scratch), want);
        }
    }
}

proptest! {
    /// The DE's keys (f64 bit patterns as `u64`) take the vector lookup where the CPU has AVX2: any order, with
    /// every value listed as a suspect, it gives the same bits as the merge, for spread values and for heavy ties
    /// (buckets longer than the vector's slots).
    #[test]
    fn u64_keys_equal_merge(x in prop_oneof![wide_sample(), sample()], y in prop_oneof![wide_sample(), sample()], seed in 0u64..1000) {
        let as_bits = |v: &[f32]| -> Vec<u64> { nonzero_sorted(v).iter().map(|&a| (a as f64).to_bits()).collect() };
        let (xn, yn) = (as_bits(&x), as_bits(&y));
        let want = rank_sum_and_ties(&xn, x.len(), &yn, y.len());
        let index = SortedReference::new(y.len(), vec![0, yn.len()], yn);
        let shuffled = shuffled(xn.clone(), seed);
        prop_assert_eq!(index.rank_sum_and_ties_with_suspects(&shuffled, x.len(), 0, &xn), want);
    }
}

/// A column of more than 2^16 values (its bucket starts take 32 bits) ranks as the merge does, for the DE's keys
/// and for `f32` values.
#[test]
fn a_column_longer_than_two_to_the_sixteen_ranks_as_the_merge() {
    let mut next = 12345u64;
    let mut draw = || {
        next ^= next << 13;
        next ^= next >> 7;
        next ^= next << 17;
        next
    };
    let y: Vec<f32> = (0..70_000).map(|_| (1 + draw() % 5_000) as f32 / 8.0).collect();
    let x: Vec<f32> = (0..3_000).map(|_| (draw() % 6_000) as f32 / 8.0).collect();
    let (xn, yn) = (nonzero_sorted(&x), nonzero_sorted(&y));
    let want = rank_sum_and_ties(&xn, x.len(), &yn, y.len());
    let index = SortedReference::new(y.len(), vec![0, yn.len()], yn.clone());
    assert_eq!(index.rank_sum_and_ties(&xn, x.len(), 0), want);
    let bits = |v: &[f32]| -> Vec<u64> { v.iter().map(|&a| (a as f64).to_bits()).collect() };
    let (xb, yb) = (bits(&xn), bits(&yn));
    let index = SortedReference::new(y.len(), vec![0, yb.len()], yb);
    assert_eq!(index.rank_sum_and_ties_with_suspects(&xb, x.len(), 0, &xb), want);
}
