//! The VCC evaluation, numerically equal to cell-eval 0.8.2 (see `design/cell-eval.md`).
pub mod bh;
pub mod de;
pub mod de_csv;
pub mod error;
pub mod input;
pub mod mwu;
pub mod normalize;
pub mod pseudobulk;
pub mod types;

pub use error::{EvalError, Result as EvalResult};
pub use types::{DeTable, Pseudobulk};
