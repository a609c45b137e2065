//! Data layer: AnnData `.h5ad` I/O, summaries, the data config, cell tables and sets, synthetic VCC-shaped data.
pub mod anndata;
pub mod cell_sentence;
pub mod config;
pub mod gene_embeddings;
pub mod h5ad;
pub mod info;
pub mod kept_rows;
pub mod sets;
pub mod synth;
pub mod table;

pub use anndata::{AnnData, Categorical, Column, CsrMatrix, DataFrame, MatrixEncoding, XMatrix};
