//! `pearson_edistance` (`cell_eval/metrics/_anndata.py::edistance`): placeholder, filled in below.
use super::{CellSource, MetricError};

/// Pearson correlation between real and predicted energy distances of each perturbation from control.
pub fn pearson_edistance(
    _cells: &dyn CellSource,
    _perts: &[String],
    _control: &str,
) -> Result<f64, MetricError> {
    Err(MetricError::NeedsCells("pearson_edistance"))
}
