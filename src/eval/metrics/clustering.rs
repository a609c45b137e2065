//! `clustering_agreement` (`cell_eval/metrics/_anndata.py::ClusteringAgreement`): **not implemented yet**.
//!
//! cell-eval builds f64 centroids per perturbation, a scanpy kNN graph (n_neighbors = min(15, n − 1)), Leiden
//! (igraph flavour, 2 iterations) at resolution 1.0 on real and at (0.2 … 2.0) on pred, and keeps the best AMI.
//! Leiden is not reproducible bit for bit; until a port exists this returns an error, so callers should
//! `--skip-metrics clustering_agreement` (cell-eval itself drops a metric whose computation fails).
use super::{CellSource, MetricError};

/// Best AMI between Leiden clusters of real and predicted perturbation centroids (not implemented).
pub fn clustering_agreement(_cells: &dyn CellSource, _perts: &[String]) -> Result<f64, MetricError> {
    Err(MetricError::NotImplemented("clustering_agreement"))
}
