//! `log1p` of a whole buffer, written so that the compiler vectorises it: the jackknife takes two per stored
//! entry of every group (hundreds of millions per run), and libm's scalar `log` was ~30 % of its time.
//!
//! The logarithm is musl's `log.c` (from FreeBSD's `e_log.c`): `u = 2^k·(1+f)` with `1+f` in [√2/2, √2),
//! `s = f/(2+f)`, the `Lg1..Lg7` polynomial in `s²`, error below 1 ulp; here without branches, and with `f = x`
//! where `k = 0` so that small arguments keep their bits (within a few ulps of libm's `log1p`). The loop is
//! compiled for AVX-512 and AVX2 besides the baseline and picked at run time (`multiversion`). No multiply-add is
//! fused (Rust does not contract `a*b + c`), so every version rounds the same way and the results do not depend
//! on the CPU.
//!
//! Not for values whose ties matter (the DE ranks use libm's `ln_1p`, as numpy does).

use multiversion::multiversion;

// fdlibm e_log.c's constants, by their bits
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LG1: f64 = f64::from_bits(0x3fe5_5555_5555_5593);
const LG2: f64 = f64::from_bits(0x3fd9_9999_9997_fa04);
const LG3: f64 = f64::from_bits(0x3fd2_4924_9422_9359);
const LG4: f64 = f64::from_bits(0x3fcc_71c5_1d8e_78af);
const LG5: f64 = f64::from_bits(0x3fc7_4664_96cb_03de);
const LG6: f64 = f64::from_bits(0x3fc3_9a09_d078_c69f);
const LG7: f64 = f64::from_bits(0x3fc2_f112_df3e_5244);

/// `log1p(x)` for `0 <= x <= f64::MAX`, without branches: musl's `log(u)` of `u = 1 + x`, where for `u < √2`
/// (no exponent to take out) `f = x` itself is used instead of `u − 1`, which would have lost `x`'s low bits
/// (fdlibm `s_log1p.c` does the same); above, the rounding of `u` is below half an ulp of the result.
#[inline(always)]
fn log1p_nonnegative(x: f64) -> f64 {
    let u = 1.0 + x;
    let bits = u.to_bits();
    // reduce u into [√2/2, √2): move the high word so that the exponent rounds at √2
    let hx = (bits >> 32) + (0x3ff0_0000 - 0x3fe6_a09e);
    let m = f64::from_bits((((hx & 0x000f_ffff) + 0x3fe6_a09e) << 32) | (bits & 0xffff_ffff));
    // k = (hx >> 20) − 1023 as f64 without an integer → float conversion (none in AVX2 for 64-bit lanes):
    // (hx >> 20) < 2^12 goes into the low mantissa bits of 2^52
    let dk = f64::from_bits(0x4330_0000_0000_0000 | (hx >> 20)) - (4_503_599_627_370_496.0 + 1023.0);
    let f = if dk == 0.0 { x } else { m - 1.0 };
    let hfsq = 0.5 * f * f;
    let s = f / (2.0 + f);
    let z = s * s;
    let w = z * z;
    let t1 = w * (LG2 + w * (LG4 + w * LG6));
    let t2 = z * (LG1 + w * (LG3 + w * (LG5 + w * LG7)));
    let r = t2 + t1;
    s * (hfsq + r) + dk * LN2_LO - hfsq + f + dk * LN2_HI
}

/// The arguments [`log1p_nonnegative`] holds for (`1 + x` is then a normal number).
const NONNEGATIVE: std::ops::RangeInclusive<f64> = 0.0..=f64::MAX;

/// `out[i] = log1p(scale · xs[i])` for `out` as long as `xs`.
pub fn log1p_scaled(xs: &[f64], scale: f64, out: &mut [f64]) {
    let out = &mut out[..xs.len()];
    if !log1p_scaled_kernel(xs, scale, out) {
        // the rest goes to libm
        for (o, &v) in out.iter_mut().zip(xs) {
            let x = scale * v;
            if !NONNEGATIVE.contains(&x) {
                *o = x.ln_1p();
            }
        }
    }
}

/// Returns whether every argument was in the kernel's range.
#[multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
fn log1p_scaled_kernel(xs: &[f64], scale: f64, out: &mut [f64]) -> bool {
    let mut in_range = true;
    for (o, &v) in out.iter_mut().zip(xs) {
        let x = scale * v;
        in_range &= NONNEGATIVE.contains(&x);
        *o = log1p_nonnegative(x);
    }
    in_range
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ulps(a: f64, b: f64) -> u64 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs()
    }

    #[test]
    fn log1p_within_four_ulps_over_the_jackknife_range() {
        // 1e-12 .. 1e8, log-spaced
        let xs: Vec<f64> = (0..200_000).map(|i| 10f64.powf(-12.0 + 20.0 * i as f64 / 200_000.0)).collect();
        let mut got = vec![0.0; xs.len()];
        log1p_scaled(&xs, 1.0, &mut got);
        let worst = xs.iter().zip(&got).map(|(x, g)| ((g - x.ln_1p()) / x.ln_1p()).abs()).fold(0.0, f64::max);
        assert!(worst <= 4.0 * f64::EPSILON, "worst relative error {worst:e}");
    }

    #[test]
    fn log1p_edge_values() {
        let xs = [0.0, 1e-20, 1e-300, f64::MAX, f64::INFINITY, -0.5, -1.0, -2.0, f64::NAN, 5e-324, 7.0];
        let mut got = [1.0; 11];
        log1p_scaled(&xs, 1.0, &mut got);
        for (g, x) in got.iter().zip(&xs) {
            let w = &x.ln_1p();
            assert!((g.is_nan() && w.is_nan()) || ulps(*g, *w) <= 4, "{g} vs {w}");
        }
    }

    proptest! {
        #[test]
        fn log1p_within_a_few_ulps_of_libm(x in 0.0f64..1e12, scale in 1e-7f64..1e5) {
            let mut got = [0.0; 5];
            log1p_scaled(&[x; 5], scale, &mut got);
            let want = (scale * x).ln_1p();
            prop_assert!(got.iter().all(|&g| ulps(g, want) <= 4), "{:?} vs {}", got, want);
        }

        #[test]
        fn log1p_of_small_arguments(e in -60.0f64..0.0) {
            let x = 2f64.powf(e);
            let mut got = [0.0; 3];
            log1p_scaled(&[x; 3], 1.0, &mut got);
            prop_assert!(got.iter().all(|&g| ulps(g, x.ln_1p()) <= 4), "{:?} vs {}", got, x.ln_1p());
        }
    }
}
