#![allow(clippy::unwrap_used)]
//! Reading the reference fixtures (written by anndata 0.12.19) and checking them against `fixture.json`.

use std::path::{Path, PathBuf};

use vcell::data::anndata::{MatrixEncoding, StoredDtype, XMatrix};
use vcell::data::h5ad::{read_h5ad, H5adReader};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

#[test]
fn tiny_real_smoke() {
    let r = H5adReader::open(&fixture("tiny/real.h5ad")).unwrap();
    let info = r.x_info().unwrap();
    println!("{info:?}");
    let a = read_h5ad(&fixture("tiny/real.h5ad")).unwrap();
    println!("{:?}", a.x.shape());
    println!("{}", vcell::data::info::summarize(&fixture("tiny/real.h5ad"), 5).unwrap());
    let _ = (MatrixEncoding::Csr, StoredDtype::F32, matches!(a.x, XMatrix::Sparse(_)));
}
