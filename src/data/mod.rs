//! Data layer: AnnData `.h5ad` I/O, summaries, synthetic VCC-shaped data.
pub mod anndata;
pub mod h5ad;
pub mod info;

pub use anndata::{AnnData, Categorical, Column, CsrMatrix, DataFrame, MatrixEncoding, XMatrix};
