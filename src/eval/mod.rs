//! The VCC evaluation, numerically equal to cell-eval 0.8.2 (see `design/cell-eval.md`).
//!
//! Stages: `input` (checks, log-normalisation) → `de` (pdex's Mann–Whitney DE, streaming) and `pseudobulk` →
//! `metrics` (the cell-level ones read cells through `cells`, a batch of labels per streaming pass) → `describe` →
//! `results_csv`; `pipeline` runs them as `cell-eval run` does; `score` and `baseline` are cell-eval's `score` and
//! `baseline` commands.
pub mod baseline;
pub mod bh;
pub mod cells;
pub mod de;
pub mod de_csv;
pub mod describe;
pub mod error;
pub mod format;
pub mod input;
pub mod metrics;
pub mod mwu;
pub mod normalize;
pub mod numpy_rng;
pub mod parquet_table;
pub mod pipeline;
pub mod prep;
pub mod profile;
pub mod pseudobulk;
pub mod results_csv;
pub mod score;
pub mod types;
pub mod vcc2026;
pub mod vector_log;

pub use error::{EvalError, Result as EvalResult};
pub use types::{DeTable, Pseudobulk};
