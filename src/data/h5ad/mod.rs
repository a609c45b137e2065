//! AnnData `.h5ad` files: a validating reader with element-level access ([`H5adReader`]), whole-file
//! [`read_h5ad`]/[`write_h5ad`], and a streaming [`H5adWriter`] for outputs too big to hold.
//!
//! The on-disk layout is anndata 0.12's (see `design/cell-eval.md` §7). Reading accepts what anndata and older
//! tools write (CSR/CSC/dense X in any numeric dtype, int32/int64 indices, categorical/string/numeric/bool/
//! nullable obs columns, fixed-length strings, legacy `h5sparse_*` attributes); writing produces exactly what
//! anndata 0.12 writes, so `anndata.read_h5ad` reads it back. Malformed input is an [`H5adError`] naming the
//! file and the element, never a panic.

mod error;
mod frame;
mod hdf;
mod matrix;
mod ranges;
mod read;
mod write;

pub use error::{H5adError, Result};
pub use matrix::XInfo;
pub use read::{read_h5ad, H5adReader};
pub use write::{write_h5ad, H5adWriter};
