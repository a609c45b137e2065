//! `mae`, `mse`, `mae_delta`, `mse_delta` and `pearson_delta` on pseudobulks (`cell_eval/metrics/_anndata.py`,
//! `_generic_evaluation`).
//!
//! The bulks are f32; sklearn's `mean_absolute_error` / `mean_squared_error` keep f32 and reduce with numpy's
//! pairwise f32 sum, then divide by n in f32, so the results are f32 values (emulated here step by step).
//! `pearson_delta` is scipy's `pearsonr` on the f32 deltas, which also returns an f32; it is computed here in f64 and
//! rounded to f32 (agrees to about one f32 ulp, not bit-exact).
use super::numeric::{np_mean_f32, pearson_f64};

/// The f32 delta `pert − control` (numpy f32 subtraction).
pub fn delta(pert: &[f32], ctrl: &[f32]) -> Vec<f32> {
    pert.iter().zip(ctrl).map(|(a, b)| a - b).collect()
}

/// sklearn `mean_absolute_error(x, y)` on f32 vectors.
pub fn mae(x: &[f32], y: &[f32]) -> f64 {
    let d: Vec<f32> = x.iter().zip(y).map(|(a, b)| (b - a).abs()).collect();
    f64::from(np_mean_f32(&d))
}

/// sklearn `mean_squared_error(x, y)` on f32 vectors.
pub fn mse(x: &[f32], y: &[f32]) -> f64 {
    let d: Vec<f32> = x
        .iter()
        .zip(y)
        .map(|(a, b)| {
            let e = a - b;
            e * e
        })
        .collect();
    f64::from(np_mean_f32(&d))
}

/// scipy `pearsonr(x, y)[0]` for f32 input (an f32 result); NaN if either vector is constant.
pub fn pearson_f32(x: &[f32], y: &[f32]) -> f64 {
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let yd: Vec<f64> = y.iter().map(|&v| f64::from(v)).collect();
    let r = pearson_f64(&xd, &yd);
    if r.is_nan() {
        return r;
    }
    f64::from(r.clamp(-1.0, 1.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let y = [1.5f32, 2.0, 2.0, 4.0];
        assert_eq!(mae(&x, &y), 0.375);
        assert_eq!(mse(&x, &y), (0.25 + 1.0) / 4.0);
        assert_eq!(pearson_f32(&x, &x), 1.0);
        assert!(pearson_f32(&x, &[1.0; 4]).is_nan());
        assert_eq!(delta(&x, &y), vec![-0.5, 0.0, 1.0, 0.0]);
    }
}
