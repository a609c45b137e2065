//! Data layer: AnnData `.h5ad` I/O, summaries, synthetic VCC-shaped data.
pub mod anndata;
pub mod config;
pub mod synth;

pub use anndata::{AnnData, Categorical, Column, CsrMatrix, DataFrame, MatrixEncoding, XMatrix};
