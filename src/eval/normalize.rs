//! The log1p / integer check and the count normalisation of cell-eval's input stage
//! (cell_eval/utils.py `guess_is_lognorm`, scanpy `normalize_total` + `log1p`), computed from one streaming pass.

use super::error::{EvalError, Result};

/// What one pass over `X` learned about a file. Per-cell vectors are O(n_cells) scalars, never expression data.
#[derive(Debug, Clone, Default)]
pub struct ScanStats {
    pub n_obs: usize,
    pub n_vars: usize,
    /// Stored entries (explicit zeros included).
    pub nnz: u64,
    /// Minimum and maximum over all of X (implicit zeros included, NaN excluded, ±inf excluded).
    pub min: f32,
    pub max: f32,
    pub n_nan: u64,
    pub n_inf: u64,
    pub n_negative: u64,
    /// Some stored value has a fractional part > 1e-3 (`guess_is_lognorm`).
    pub any_fractional: bool,
    /// Per-cell totals, accumulated in f64 and stored as f32 (scanpy's `axis_sum`); 0 for the cells after the first
    /// fractional value (the totals only serve the normalisation of integer data).
    pub cell_totals: Vec<f32>,
    /// Stored non-zero entries per cell (for memory planning of the DE passes).
    pub cell_nnz: Vec<u32>,
}

/// `guess_is_lognorm`'s bound on log1p values (cell_eval/utils.py): data reaching it is taken for counts.
pub const MAX_LOG1P: f32 = 15.0;

/// `guess_is_lognorm`'s fraction threshold (cell_eval/utils.py).
const FRACTION_EPS: f32 = 1e-3;

impl ScanStats {
    pub fn new(n_obs: usize, n_vars: usize) -> Self {
        ScanStats {
            n_obs,
            n_vars,
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            cell_totals: Vec::with_capacity(n_obs),
            cell_nnz: Vec::with_capacity(n_obs),
            ..Default::default()
        }
    }

    /// Add the next cell's stored values.
    pub fn push_cell(&mut self, values: &[f32]) {
        // Totals and fractions matter only while every value so far is an integer (the normalisation of counts);
        // once a fraction was seen the file is log1p data and both are skipped (its totals are left at 0).
        let lanes = if self.any_fractional { finite_lanes::<false>(values) } else { finite_lanes::<true>(values) };
        // non-finite values are rare: only then the element-by-element path
        let (total, nz, min, max, n_negative, any_fractional) = match lanes {
            Some((total, nz, min, max, neg, frac)) => (total, nz, min, max, neg, self.any_fractional || frac),
            None => self.scalar_path(values),
        };
        let (mut min, mut max) = (self.min.min(min), self.max.max(max));
        if values.len() < self.n_vars {
            // implicit zeros
            min = min.min(0.0);
            max = max.max(0.0);
        }
        self.nnz += values.len() as u64;
        self.n_negative += n_negative;
        self.any_fractional = any_fractional;
        (self.min, self.max) = (min, max);
        self.cell_totals.push(total as f32);
        self.cell_nnz.push(nz);
    }

    /// One cell element by element, counting NaN and ±inf (which are left out of the other statistics).
    fn scalar_path(&mut self, values: &[f32]) -> (f64, u32, f32, f32, u64, bool) {
        let (mut total, mut nz) = (0.0f64, 0u32);
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut n_negative = 0u64;
        let mut any_fractional = self.any_fractional;
        for &x in values {
            if !x.is_finite() {
                if x.is_nan() {
                    self.n_nan += 1;
                } else {
                    self.n_inf += 1;
                }
                continue;
            }
            if !any_fractional && x.fract() > FRACTION_EPS {
                any_fractional = true;
            }
            n_negative += u64::from(x < 0.0);
            min = min.min(x);
            max = max.max(x);
            total += x as f64;
            nz += u32::from(x != 0.0);
        }
        (total, nz, min, max, n_negative, any_fractional)
    }

    /// Minimum and maximum with an empty matrix reported as 0.
    fn min_max(&self) -> (f32, f32) {
        if self.min > self.max {
            (0.0, 0.0)
        } else {
            (self.min, self.max)
        }
    }
}

/// `x.fract() != 0.0` without libm's `truncf` call (hot in the count checks), branch-free so that a fold over a
/// row vectorises (`x as i32` saturates, which kept it scalar). Below 2^23, `(|x| + 2^23) − 2^23` is `|x|`
/// rounded to an integer (the sum lies in [2^23, 2^24), where f32 steps by 1; both operations are exact but the
/// rounding); above it every finite f32 is an integer; NaN and ±inf have a NaN fraction.
#[inline]
pub fn has_fraction(x: f32) -> bool {
    const TWO_23: f32 = 8_388_608.0;
    let a = x.abs();
    let small = a < TWO_23;
    let rounded = (a + TWO_23) - TWO_23;
    (small & (rounded != a)) | (!small & !a.is_finite())
}

/// Calls `add(lane, v)` on every value, value `k` in lane `k % N`: accumulators indexed by lane are independent,
/// so the compiler keeps them in vector registers (no early exit, no dependence from one value to the next).
#[inline(always)]
pub(crate) fn in_lanes<const N: usize>(vals: &[f32], mut add: impl FnMut(usize, f32)) {
    let chunks = vals.chunks_exact(N);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (j, &v) in chunk.iter().enumerate() {
            add(j, v);
        }
    }
    for (j, &v) in tail.iter().enumerate() {
        add(j, v);
    }
}

/// One cell's statistics in eight independent lanes (vectorised): total (if `TOTALS`), non-zeros, min, max,
/// negatives, and whether a positive fraction > 1e-3 occurs (if `TOTALS`); `None` if a value is NaN or ±inf. The
/// total's summation order differs from the element-by-element one, which changes nothing where it is used: it
/// matters only for integer data, whose f64 sums are exact in any order.
fn finite_lanes<const TOTALS: bool>(values: &[f32]) -> Option<(f64, u32, f32, f32, u64, bool)> {
    const L: usize = 8;
    let (mut total, mut nz, mut neg) = ([0.0f64; L], [0u32; L], [0u32; L]);
    let (mut min, mut max) = ([f32::INFINITY; L], [f32::NEG_INFINITY; L]);
    let (mut frac, mut non_finite) = ([0u32; L], [0u32; L]);
    // np.modf keeps the sign, so only positive fractions count (as in cell-eval); below 2^23 the integer part of a
    // finite f32 is `x as i32`, above it every f32 is an integer
    let fraction = |x: f32| if x.abs() < 8_388_608.0 { x - (x as i32) as f32 } else { 0.0 };
    let mut lane = |j: usize, x: f32| {
        non_finite[j] |= u32::from(x.to_bits() & 0x7f80_0000 == 0x7f80_0000);
        nz[j] += u32::from(x != 0.0);
        neg[j] += u32::from(x < 0.0);
        min[j] = min[j].min(x);
        max[j] = max[j].max(x);
        if TOTALS {
            total[j] += x as f64;
            frac[j] |= u32::from(fraction(x) > FRACTION_EPS);
        }
    };
    in_lanes::<L>(values, &mut lane);
    if non_finite.iter().any(|&f| f != 0) {
        return None;
    }
    let min = min.iter().fold(f32::INFINITY, |a, &b| a.min(b));
    let max = max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let neg = neg.iter().map(|&n| u64::from(n)).sum();
    Some((total.iter().sum(), nz.iter().sum(), min, max, neg, frac.iter().any(|&f| f != 0)))
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// The file is used as stored (log1p data, or integers with `--allow-discrete`).
    Identity,
    /// Integer counts: `normalize_total` to the file's median cell total, then `log1p`:
    /// value = log1p(f32(x / scale[cell])), with scale = f32(total / target) and 1 for an all-zero cell.
    NormalizeLog1p { target_sum: f32, scale: Vec<f32> },
}

impl Transform {
    /// The transformed value of cell `cell`'s stored value `x`.
    #[inline]
    pub fn apply(&self, cell: usize, x: f32) -> f32 {
        match self {
            Transform::Identity => x,
            // scanpy: X /= counts[:, None] in f32, then np.log1p (numpy's AVX-512 SVML log1pf)
            Transform::NormalizeLog1p { scale, .. } => numpy_log1p_f32(x / scale[cell]),
        }
    }

    pub fn is_identity(&self) -> bool {
        matches!(self, Transform::Identity)
    }
}

/// numpy's float32 `np.log1p` as it runs on the AVX-512 machines the fixtures were made on: Intel SVML's
/// `__svml_log1pf16` (numpy/SVML `linux/avx512/svml_z0_log1p_s_la.s`, main path; constants from its
/// `__svml_slog1p_data_internal` table). It is not correctly rounded and differs from glibc's `log1pf` in the last
/// bit for some inputs, which changes scanpy's `log1p` of normalised counts and hence the DE means.
/// Valid for finite x ≥ 0 (the only values normalised counts take); other inputs fall back to `f32::ln_1p`.
pub fn numpy_log1p_f32(x: f32) -> f32 {
    if !(x >= 0.0 && x.is_finite()) {
        return x.ln_1p();
    }
    const ONE: f32 = 1.0;
    const TWO_THIRDS_BITS: i32 = 0x3f2a_aaab;
    const C: [u32; 8] =
        [0x3e0d_84ed, 0xbe1a_d9e3, 0x3e0f_cb12, 0xbe28_ad37, 0x3e4c_e190, 0xbe80_058e, 0x3eaa_aa94, 0xbf00_0000];
    const LN2: u32 = 0x3f31_7218;
    // 1 + x as a high part s and a low part lo
    let a = ONE.max(x);
    let b = ONE.min(x);
    let s = a + b;
    let lo = b + (a - s);
    // s = 2^k · m with m in [2/3, 4/3)
    let t = (s.to_bits() as i32).wrapping_sub(TWO_THIRDS_BITS);
    let k = t >> 23;
    let m = f32::from_bits(((t & 0x007f_ffff) + TWO_THIRDS_BITS) as u32);
    let two_minus_k = f32::from_bits((0x3f80_0000i32).wrapping_sub(k << 23) as u32);
    let r = (m - ONE) + lo * two_minus_k;
    // log1p(r) ≈ r + r²·P(r), P of degree 7, Horner with FMA
    let mut p = f32::from_bits(C[0]).mul_add(r, f32::from_bits(C[1]));
    for &c in &C[2..] {
        p = r.mul_add(p, f32::from_bits(c));
    }
    let poly = r.mul_add(r * p, r);
    f32::from_bits(LN2).mul_add(k as f32, poly)
}

/// f32 median as `np.median` computes it: the middle value, or the f32 mean of the two middle values.
pub fn median_f32(values: &[f32]) -> Option<f32> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f32::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// The scanpy `normalize_total` scale factors: target = median of the positive cell totals (f32), scale =
/// f32(total / target), an all-zero cell gets 1 (`counts += counts == 0`).
pub fn normalize_total_scales(cell_totals: &[f32]) -> (f32, Vec<f32>) {
    let positive: Vec<f32> = cell_totals.iter().copied().filter(|&t| t > 0.0).collect();
    let target = median_f32(&positive).unwrap_or(1.0);
    let scale = cell_totals
        .iter()
        .map(|&t| {
            let s = t / target;
            if s == 0.0 {
                1.0
            } else {
                s
            }
        })
        .collect();
    (target, scale)
}

/// cell-eval's log1p / integer decision for one file (check 2 of `errors/README.md`), with the negative-value
/// check added for integer data (pdex's sparse MWU rejects negatives later).
pub fn decide_transform(file: &str, stats: &ScanStats, allow_discrete: bool) -> Result<Transform> {
    let (min, max) = stats.min_max();
    if stats.any_fractional {
        if min < 0.0 {
            return Err(EvalError::NegativeLogNorm { file: file.to_owned(), min });
        }
        if max >= MAX_LOG1P && !allow_discrete {
            return Err(EvalError::MaxTooLarge { file: file.to_owned(), max });
        }
        return Ok(Transform::Identity);
    }
    if stats.n_negative > 0 {
        return Err(EvalError::Negative { file: file.to_owned(), count: stats.n_negative, min });
    }
    if allow_discrete {
        return Ok(Transform::Identity);
    }
    let (target_sum, scale) = normalize_total_scales(&stats.cell_totals);
    Ok(Transform::NormalizeLog1p { target_sum, scale })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_log1p_close_to_libm() {
        for i in 0..20000 {
            let x = i as f32 * 0.01237;
            let (a, b) = (numpy_log1p_f32(x), x.ln_1p());
            assert!((a - b).abs() <= 2.0 * f32::EPSILON * b.abs().max(1e-30), "{x}: {a} vs {b}");
        }
        assert_eq!(numpy_log1p_f32(0.0), 0.0);
    }

    #[test]
    fn lanes_equal_scalar_path() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for case in 0..400 {
            let len = rng.random_range(0..70);
            let values: Vec<f32> = (0..len)
                .map(|_| match case % 4 {
                    0 => rng.random_range(0..40) as f32,
                    1 => rng.random_range(-3.0f32..12.0),
                    2 => rng.random_range(0..3) as f32 + if rng.random_bool(0.1) { 0.0005 } else { 0.0 },
                    _ => rng.random_range(-1e9f32..1e9),
                })
                .collect();
            let mut s = ScanStats::new(1, 100);
            let lanes = finite_lanes::<true>(&values).unwrap();
            let scalar = s.scalar_path(&values);
            let without_totals = finite_lanes::<false>(&values).unwrap();
            assert_eq!(
                (without_totals.1, without_totals.2, without_totals.3, without_totals.4),
                (scalar.1, scalar.2, scalar.3, scalar.4)
            );
            assert_eq!(
                (lanes.1, lanes.2, lanes.3, lanes.4, lanes.5),
                (scalar.1, scalar.2, scalar.3, scalar.4, scalar.5)
            );
            if case % 4 == 0 {
                assert_eq!(lanes.0, scalar.0);
            } else {
                assert!((lanes.0 - scalar.0).abs() <= 1e-9 * scalar.0.abs().max(1.0), "{lanes:?} {scalar:?}");
            }
        }
    }

    #[test]
    fn has_fraction_is_fract_not_zero() {
        let specials = [
            0.0f32,
            -0.0,
            0.5,
            -0.5,
            1.0,
            -3.0,
            2.5,
            3.5,
            1e-40,
            8_388_607.5,
            8_388_608.0,
            -8_388_607.5,
            16_777_217.0,
            1e30,
            f32::MAX,
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
        ];
        let steps = (0..20_000).map(|i| i as f32 * 0.137 - 1000.0);
        for x in specials.into_iter().chain(steps) {
            assert_eq!(has_fraction(x), x.fract() != 0.0, "{x}");
        }
        // every 997th bit pattern: all exponents, both signs, subnormals, NaNs
        for bits in (0..=u32::MAX).step_by(997) {
            let x = f32::from_bits(bits);
            assert_eq!(has_fraction(x), x.fract() != 0.0, "{x} ({bits:#x})");
        }
    }

    #[test]
    fn median_even_odd() {
        assert_eq!(median_f32(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median_f32(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median_f32(&[]), None);
    }

    #[test]
    fn decide() {
        let mut s = ScanStats::new(2, 3);
        s.push_cell(&[1.0, 2.0]);
        s.push_cell(&[3.0, 1.0, 1.0]);
        match decide_transform("f", &s, false) {
            Ok(Transform::NormalizeLog1p { target_sum, scale }) => {
                assert_eq!(target_sum, 4.0);
                assert_eq!(scale, vec![0.75, 1.25]);
            }
            other => panic!("{other:?}"),
        }
        let mut s = ScanStats::new(1, 2);
        s.push_cell(&[0.5, 16.0]);
        assert!(matches!(decide_transform("f", &s, false), Err(EvalError::MaxTooLarge { .. })));
        assert!(decide_transform("f", &s, true).is_ok());
        let mut s = ScanStats::new(1, 2);
        s.push_cell(&[0.5, -1.0]);
        assert!(matches!(decide_transform("f", &s, false), Err(EvalError::NegativeLogNorm { .. })));
    }
}
