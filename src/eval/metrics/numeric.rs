//! Summation orders and small statistics that have to follow numpy / polars to the last bit.
//!
//! numpy reduces with a pairwise sum (`numpy/_core/src/umath/loops_utils.h.src`, `pairwise_sum`): fewer than 8
//! values are added in order; up to 128 values go through 8 interleaved accumulators; longer runs split in two halves
//! (rounded down to a multiple of 8). A reduction starts from the ufunc identity (0), so `np.sum(a)` is
//! `0 + pairwise(a)`.
//!
//! polars (`polars-compute/src/float_sum.rs`) sums the first `n % 128` values in order, the rest in 128-value blocks of
//! 16 stripes, and adds the two parts.

/// `np.sum(a)` for a contiguous f64 array.
pub fn np_sum_f64(a: &[f64]) -> f64 {
    0.0 + np_pairwise(a)
}

/// `np.sum(a)` for a contiguous f32 array, accumulated in f32.
pub fn np_sum_f32(a: &[f32]) -> f32 {
    0.0 + np_pairwise(a)
}

/// numpy's pairwise summation (`numpy/_core/src/umath/loops_utils.h.src` `pairwise_sum`): plain below 8
/// elements, 8 accumulators up to 128, halves (rounded to a multiple of 8) above. Generic so the f32 and f64
/// sums follow the same order.
fn np_pairwise<T: Copy + Default + std::ops::Add<Output = T> + std::ops::AddAssign>(a: &[T]) -> T {
    let n = a.len();
    if n < 8 {
        let mut res = T::default();
        for &v in a {
            res += v;
        }
        res
    } else if n <= 128 {
        let mut r = [T::default(); 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - (n % 8) {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        while i < n {
            res += a[i];
            i += 1;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        np_pairwise(&a[..n2]) + np_pairwise(&a[n2..])
    }
}

/// `np.mean` of an f32 array: f32 pairwise sum divided by `n` in f32.
pub fn np_mean_f32(a: &[f32]) -> f32 {
    np_sum_f32(a) / a.len() as f32
}

const STRIPE: usize = 16;
const BLOCK: usize = 128;

fn polars_block_sum(block: &[f64]) -> f64 {
    let mut v = [0.0f64; STRIPE];
    for chunk in block.chunks_exact(STRIPE) {
        for j in 0..STRIPE {
            v[j] += chunk[j];
        }
    }
    let mut width = STRIPE;
    while width > 4 {
        for j in 0..width / 2 {
            v[j] += v[width / 2 + j];
        }
        width /= 2;
    }
    (v[0] + v[2]) + (v[1] + v[3])
}

fn polars_pairwise(f: &[f64]) -> f64 {
    if f.len() == BLOCK {
        return polars_block_sum(f);
    }
    let blocks = f.len() / BLOCK;
    let left = (blocks / 2) * BLOCK;
    polars_pairwise(&f[..left]) + polars_pairwise(&f[left..])
}

/// polars' `sum` of a non-null f64 column (`polars-compute/src/float_sum.rs`).
pub fn polars_sum_f64(f: &[f64]) -> f64 {
    let rem = f.len() % BLOCK;
    let (rest, main) = f.split_at(rem);
    let mainsum = if main.is_empty() { 0.0 } else { polars_pairwise(main) };
    let mut restsum = -0.0;
    for &v in rest {
        restsum += v;
    }
    mainsum + restsum
}

/// A 4-lane reassociated sum (lanes `i mod 4` accumulated over full groups of 4, reduced as
/// `(l0 + l2) + (l1 + l3)`, then the tail added in order): how an LLVM-vectorised `fadd_algebraic` fold over f64
/// (polars' `alg_sum_f64`, AVX2) sums. Best match found for polars `describe()`'s mean (95 of 102 fixture columns
/// bit-exact; the others within 2 ulp).
pub fn lane4_sum(x: &[f64]) -> f64 {
    let n = x.len();
    let mut i = 0;
    let mut s = 0.0;
    if n >= 4 {
        let mut v = [0.0f64; 4];
        while i + 4 <= n {
            for j in 0..4 {
                v[j] += x[i + j];
            }
            i += 4;
        }
        s = (v[0] + v[2]) + (v[1] + v[3]);
    }
    while i < n {
        s += x[i];
        i += 1;
    }
    s
}

/// Average ranks (1-based), ties share the mean of their positions; NaN ranks above everything (total order).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]).then(a.cmp(&b)));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && same(x[idx[j]], x[idx[i]]) {
            j += 1;
        }
        // positions i..j (0-based) share rank mean of (i+1 ..= j)
        let r = (i + 1 + j) as f64 / 2.0;
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    ranks
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Pearson correlation in f64, two-pass (mean, then centred products); NaN when either side is constant or fewer
/// than two values.
pub fn pearson_f64(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    if n < 2 || y.len() != n {
        return f64::NAN;
    }
    let mx = x.iter().sum::<f64>() / n as f64;
    let my = y.iter().sum::<f64>() / n as f64;
    let (mut sxx, mut sxy, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in x.iter().zip(y) {
        let dx = a - mx;
        let dy = b - my;
        sxx += dx * dx;
        sxy += dx * dy;
        syy += dy * dy;
    }
    let d = sxx * syy;
    if d > 0.0 {
        sxy / d.sqrt()
    } else {
        f64::NAN
    }
}

/// Spearman correlation as polars' `pl.corr(method="spearman")`: Pearson of average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson_f64(&average_ranks(x), &average_ranks(y))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn np_sum_small_is_sequential() {
        assert_eq!(np_sum_f64(&[1.0, 2.0, 3.0]), 6.0);
        let a: Vec<f64> = (0..300).map(|i| (i as f64).sin()).collect();
        let s = np_sum_f64(&a);
        let seq: f64 = a.iter().sum();
        assert!((s - seq).abs() < 1e-12);
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(average_ranks(&[10.0, 20.0, 10.0, 5.0]), vec![2.5, 4.0, 2.5, 1.0]);
    }

    #[test]
    fn spearman_hand() {
        // perfectly monotone
        assert!((spearman(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]) - 1.0).abs() < 1e-15);
        assert!(spearman(&[1.0, 1.0], &[1.0, 2.0]).is_nan());
        // ranks x = [1,2,3], y = [1,3,2]: r = 0.5
        assert!((spearman(&[1.0, 2.0, 3.0], &[1.0, 3.0, 2.0]) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn polars_sum_matches_sequential_for_short() {
        let a = [0.1, 0.2, 0.3];
        assert_eq!(polars_sum_f64(&a), 0.1 + 0.2 + 0.3);
    }
}
