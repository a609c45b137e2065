//! The VCC evaluation, numerically equal to cell-eval 0.8.2 (see `design/cell-eval.md`).
pub mod describe;
pub mod format;
pub mod metrics;
pub mod profile;
pub mod results_csv;
pub mod score;
pub mod types;

pub use types::{DeTable, Pseudobulk};
