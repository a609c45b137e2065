//! `pearson_edistance` (`cell_eval/metrics/_anndata.py::edistance`).
//!
//! For each perturbation p and each file: energy distance `2·mean d(x, y) − mean d(x, x') − mean d(y, y')` between
//! p's cells x and the control cells y (Euclidean, every pair including the zero diagonal, as
//! `sklearn.metrics.pairwise_distances(...).mean()`), then Pearson r between the real and pred distances across
//! perturbations. sklearn computes Euclidean distances of f32 data with the dot-product trick in f64 and f32 output;
//! this version does the same product in f64 (output kept in f64), so it agrees closely but not bit for bit.
use candle_core::{Device, Tensor};

use super::numeric::pearson_f64;
use super::{CellSource, DenseCells, MetricError, Side};

/// Cells as an f64 matrix with their squared norms: Euclidean distances come from one matrix product
/// (`‖x‖² + ‖y‖² − 2·x·y`, clamped at 0), as sklearn's `euclidean_distances` computes them for f32 input (upcast to
/// f64 per chunk, `sklearn/metrics/pairwise.py::_euclidean_distances_upcast`). candle's CPU matmul (the `gemm`
/// crate, SIMD and multithreaded) does the product; a direct loop over the 18k genes of every pair took ~100×
/// longer on the big pair.
struct Cells {
    n: usize,
    m: Tensor,
    sq_norms: Vec<f64>,
}

fn candle_err(e: candle_core::Error) -> MetricError {
    MetricError::Input(format!("pairwise distances: {e}"))
}

impl Cells {
    fn new(c: &DenseCells) -> Result<Cells, MetricError> {
        let data: Vec<f64> = c.data.iter().map(|&v| f64::from(v)).collect();
        let sq_norms = data.chunks(c.n_cols.max(1)).map(|r| r.iter().map(|v| v * v).sum()).collect();
        let m = Tensor::from_vec(data, (c.n_rows, c.n_cols), &Device::Cpu).map_err(candle_err)?;
        Ok(Cells { n: c.n_rows, m, sq_norms })
    }
}

/// Mean Euclidean distance over all pairs (x in `a`, y in `b`); `same`: `b` is `a`, whose diagonal is 0.
fn mean_pairwise(a: &Cells, b: &Cells, same: bool) -> Result<f64, MetricError> {
    if a.n == 0 || b.n == 0 {
        return Ok(f64::NAN);
    }
    let dots: Vec<f64> =
        a.m.matmul(&b.m.t().map_err(candle_err)?)
            .and_then(|g| g.flatten_all())
            .and_then(|g| g.to_vec1())
            .map_err(candle_err)?;
    let mut total = 0.0f64;
    for (i, row) in dots.chunks(b.n).enumerate() {
        for (j, &g) in row.iter().enumerate() {
            if same && i == j {
                continue;
            }
            total += (a.sq_norms[i] + b.sq_norms[j] - 2.0 * g).max(0.0).sqrt();
        }
    }
    Ok(total / (a.n * b.n) as f64)
}

/// Pearson correlation between real and predicted energy distances of each perturbation from control.
pub fn pearson_edistance(cells: &dyn CellSource, perts: &[String], control: &str) -> Result<f64, MetricError> {
    // one side at a time, so only one control matrix (f64) is held
    let d_real = energy_distances(cells, Side::Real, perts, control)?;
    let d_pred = energy_distances(cells, Side::Pred, perts, control)?;
    Ok(pearson_f64(&d_real, &d_pred))
}

/// Energy distance of each perturbation's cells from the control cells of one side.
fn energy_distances(
    cells: &dyn CellSource,
    side: Side,
    perts: &[String],
    control: &str,
) -> Result<Vec<f64>, MetricError> {
    // the control first, then each perturbation, in one visit of the side's cells
    let labels: Vec<String> = std::iter::once(control.to_owned()).chain(perts.iter().cloned()).collect();
    let mut ctrl: Option<(Cells, f64)> = None;
    let mut out = Vec::with_capacity(perts.len());
    cells.for_each_label(side, &labels, &mut |_, c| {
        let x = Cells::new(&c)?;
        drop(c);
        match &ctrl {
            None => {
                let sigma = mean_pairwise(&x, &x, true)?;
                ctrl = Some((x, sigma));
            }
            Some((y, sigma)) => out.push(2.0 * mean_pairwise(&x, y, false)? - mean_pairwise(&x, &x, true)? - sigma),
        }
        Ok(())
    })?;
    Ok(out)
}
