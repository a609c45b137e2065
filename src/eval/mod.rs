//! The VCC evaluation, numerically equal to cell-eval 0.8.2 (see `design/cell-eval.md`).
pub mod types;

pub use types::{DeTable, Pseudobulk};
