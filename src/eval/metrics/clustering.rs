//! `clustering_agreement` (`cell_eval/metrics/_anndata.py::ClusteringAgreement`): placeholder.
use super::{CellSource, MetricError};

/// Best AMI between Leiden clusters of real and predicted perturbation centroids.
pub fn clustering_agreement(
    _cells: &dyn CellSource,
    _perts: &[String],
) -> Result<f64, MetricError> {
    Err(MetricError::NeedsCells("clustering_agreement"))
}
