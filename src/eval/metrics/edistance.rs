//! `pearson_edistance` (`cell_eval/metrics/_anndata.py::edistance`).
//!
//! For each perturbation p and each file: energy distance `2·mean d(x, y) − mean d(x, x') − mean d(y, y')` between
//! p's cells x and the control cells y (Euclidean, every pair including the zero diagonal, as
//! `sklearn.metrics.pairwise_distances(...).mean()`), then Pearson r between the real and pred distances across
//! perturbations. sklearn computes Euclidean distances of f32 data with the dot-product trick and f32 output, so this
//! exact f64 version agrees only approximately (not bit for bit; the fixtures are not compared).
use rayon::prelude::*;

use super::numeric::pearson_f64;
use super::{CellSource, DenseCells, MetricError, Side};

fn mean_pairwise(a: &DenseCells, b: &DenseCells) -> f64 {
    if a.n_rows == 0 || b.n_rows == 0 {
        return f64::NAN;
    }
    let total: f64 = (0..a.n_rows)
        .into_par_iter()
        .map(|i| {
            let x = a.row(i);
            (0..b.n_rows)
                .map(|j| {
                    x.iter()
                        .zip(b.row(j))
                        .map(|(p, q)| {
                            let d = f64::from(*p) - f64::from(*q);
                            d * d
                        })
                        .sum::<f64>()
                        .sqrt()
                })
                .sum::<f64>()
        })
        .sum();
    total / (a.n_rows * b.n_rows) as f64
}

/// Pearson correlation between real and predicted energy distances of each perturbation from control.
pub fn pearson_edistance(cells: &dyn CellSource, perts: &[String], control: &str) -> Result<f64, MetricError> {
    let ctrl_real = cells.cells(Side::Real, control)?;
    let ctrl_pred = cells.cells(Side::Pred, control)?;
    let sigma_real = mean_pairwise(&ctrl_real, &ctrl_real);
    let sigma_pred = mean_pairwise(&ctrl_pred, &ctrl_pred);
    let mut d_real = Vec::with_capacity(perts.len());
    let mut d_pred = Vec::with_capacity(perts.len());
    for p in perts {
        let x = cells.cells(Side::Real, p)?;
        d_real.push(2.0 * mean_pairwise(&x, &ctrl_real) - mean_pairwise(&x, &x) - sigma_real);
        let x = cells.cells(Side::Pred, p)?;
        d_pred.push(2.0 * mean_pairwise(&x, &ctrl_pred) - mean_pairwise(&x, &x) - sigma_pred);
    }
    Ok(pearson_f64(&d_real, &d_pred))
}
