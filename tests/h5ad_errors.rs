#![allow(clippy::unwrap_used)]
//! Malformed inputs: each must give an error that names the file and the element, never a panic.
//! Most cases start from a valid file written by `write_h5ad` and break one element with the hdf5 crate.

mod support;

use std::path::{Path, PathBuf};

use hdf5::types::VarLenUnicode;
use support::*;
use vcell::data::anndata::{DataFrame, XMatrix};
use vcell::data::h5ad::{read_h5ad, write_h5ad, H5adError, H5adReader};

/// A valid file (sample_anndata: 6 cells × 4 genes, CSR, nnz 8) in `dir`.
fn valid(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    write_h5ad(&p, &sample_anndata()).unwrap();
    p
}

fn edit(path: &Path, f: impl FnOnce(&hdf5::File)) {
    let file = hdf5::File::open_rw(path).unwrap();
    f(&file);
    file.close().unwrap();
}

fn replace<T: hdf5::H5Type>(file: &hdf5::File, path: &str, data: &[T]) {
    let (parent, name) = path.rsplit_once('/').unwrap();
    let g = if parent.is_empty() { file.group("/").unwrap() } else { file.group(parent).unwrap() };
    g.unlink(name).unwrap();
    g.new_dataset_builder().with_data(data).create(name).unwrap();
}

fn set_str_attr(loc: &hdf5::Location, name: &str, value: &str) {
    if loc.attr_names().unwrap().iter().any(|n| n == name) {
        loc.delete_attr(name).unwrap();
    }
    let v: VarLenUnicode = value.parse().unwrap();
    loc.new_attr::<VarLenUnicode>().create(name).unwrap().write_scalar(&v).unwrap();
}

/// Asserts the message names the file and every fragment.
fn assert_mentions(err: &H5adError, path: &Path, fragments: &[&str]) {
    let msg = err.to_string();
    let file_name = path.file_name().unwrap().to_str().unwrap();
    assert!(msg.contains(file_name), "message does not name the file: {msg}");
    assert_eq!(err.file(), path);
    for f in fragments {
        assert!(msg.contains(f), "message lacks {f:?}: {msg}");
    }
}

#[test]
fn not_hdf5() {
    let p = fixture("errors/pred_not_hdf5.h5ad");
    let err = H5adReader::open(&p).unwrap_err();
    assert!(matches!(err, H5adError::Open { .. }), "{err:?}");
    assert_mentions(&err, &p, &["not an HDF5 file"]);
}

#[test]
fn truncated() {
    let p = fixture("errors/pred_truncated.h5ad");
    let err = H5adReader::open(&p).unwrap_err();
    assert!(matches!(err, H5adError::Open { .. }), "{err:?}");
    assert_mentions(&err, &p, &["truncated"]);
}

#[test]
fn missing_file() {
    let p = fixture("errors/does_not_exist.h5ad");
    let err = H5adReader::open(&p).unwrap_err();
    assert!(matches!(err, H5adError::Io { .. }), "{err:?}");
    assert_mentions(&err, &p, &[]);
}

#[test]
fn not_anndata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("plain.h5");
    hdf5::File::create(&p).unwrap().create_group("stuff").unwrap();
    let err = H5adReader::open(&p).unwrap_err();
    assert_mentions(&err, &p, &["not an AnnData file"]);
}

#[test]
fn missing_x() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "nox.h5ad");
    edit(&p, |f| f.unlink("X").unwrap());
    let r = H5adReader::open(&p).unwrap();
    for err in
        [r.x_info().unwrap_err(), r.read_x().unwrap_err(), r.read_x_rows(0, 1).unwrap_err(), r.read().unwrap_err()]
    {
        assert!(matches!(err, H5adError::Missing { .. }), "{err:?}");
        assert_mentions(&err, &p, &["/X", "missing"]);
    }
}

#[test]
fn wrong_encoding_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "enc.h5ad");
    edit(&p, |f| set_str_attr(&f.group("X").unwrap(), "encoding-type", "coo_matrix"));
    let err = H5adReader::open(&p).unwrap().read_x().unwrap_err();
    assert!(matches!(err, H5adError::UnsupportedEncoding { .. }), "{err:?}");
    assert_mentions(&err, &p, &["/X", "coo_matrix"]);

    let p = valid(dir.path(), "enc_col.h5ad");
    edit(&p, |f| set_str_attr(&f.group("obs/target_gene").unwrap(), "encoding-type", "awkward-array"));
    let err = H5adReader::open(&p).unwrap().obs_column("target_gene").unwrap_err();
    assert_mentions(&err, &p, &["/obs/target_gene", "awkward-array"]);

    let p = valid(dir.path(), "enc_root.h5ad");
    edit(&p, |f| set_str_attr(f, "encoding-type", "mudata"));
    let err = H5adReader::open(&p).unwrap_err();
    assert_mentions(&err, &p, &["mudata"]);
}

#[test]
fn indptr_not_monotone() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "mono.h5ad");
    edit(&p, |f| replace(f, "X/indptr", &[0i32, 3, 1, 4, 5, 6, 8]));
    let r = H5adReader::open(&p).unwrap();
    for err in [r.read_x().unwrap_err(), r.read_x_rows(0, 2).unwrap_err()] {
        assert_mentions(&err, &p, &["/X/indptr", "not monotone"]);
    }
}

#[test]
fn indptr_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "range.h5ad");
    edit(&p, |f| replace(f, "X/indptr", &[0i64, 1, 2, 3, 4, 5, 99]));
    let err = H5adReader::open(&p).unwrap().read_x_rows(5, 6).unwrap_err();
    assert_mentions(&err, &p, &["/X/indptr", "out of range"]);

    let p = valid(dir.path(), "start.h5ad");
    edit(&p, |f| replace(f, "X/indptr", &[1i32, 1, 2, 3, 4, 5, 8]));
    let err = H5adReader::open(&p).unwrap().read_x().unwrap_err();
    assert_mentions(&err, &p, &["/X/indptr", "start at 0"]);

    let p = valid(dir.path(), "neg.h5ad");
    edit(&p, |f| replace(f, "X/indptr", &[0i32, -1, 2, 3, 4, 5, 8]));
    let err = H5adReader::open(&p).unwrap().read_x().unwrap_err();
    assert_mentions(&err, &p, &["/X/indptr", "negative"]);

    let p = valid(dir.path(), "len.h5ad");
    edit(&p, |f| replace(f, "X/indptr", &[0i32, 8]));
    let err = H5adReader::open(&p).unwrap().x_info().unwrap_err();
    assert_mentions(&err, &p, &["/X/indptr", "length 2, expected 7"]);
}

#[test]
fn indices_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "idx.h5ad");
    edit(&p, |f| replace(f, "X/indices", &[0i32, 3, 1, 4, 2, 0, 3, 1]));
    let err = H5adReader::open(&p).unwrap().read_x().unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", "out of range", "n_vars = 4"]);
    // the row-filtered read (the evaluation passes) names the first bad entry, negative ones included
    let keep_all = |_: usize| true;
    let err = H5adReader::open(&p).unwrap().read_x_rows_where(0, 6, &keep_all).unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", "indices[3] = 4 out of range", "n_vars = 4"]);
    let p = valid(dir.path(), "idxneg.h5ad");
    edit(&p, |f| replace(f, "X/indices", &[0i32, 3, 2, 1, 0, 3, -7, 1]));
    let keep_row_4 = |r: usize| r == 4;
    let err = H5adReader::open(&p).unwrap().read_x_rows_where(0, 6, &keep_row_4).unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", "indices[6] = -7 out of range"]);

    let p = valid(dir.path(), "datalen.h5ad");
    edit(&p, |f| replace(f, "X/data", &[1f32, 2.0]));
    let err = H5adReader::open(&p).unwrap().x_info().unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", "differs from data length 2"]);
}

#[test]
fn unsorted_indices_are_sorted_and_duplicates_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "unsorted.h5ad");
    let a = sample_anndata();
    let XMatrix::Sparse(x) = &a.x else { unreachable!() };
    // row 0 of the sample holds columns 0 and 3: store them reversed (data too)
    assert_eq!(&x.indices()[..2], &[0, 3]);
    let mut idx: Vec<i32> = x.indices().iter().map(|&i| i as i32).collect();
    let mut data = x.data().to_vec();
    idx.swap(0, 1);
    data.swap(0, 1);
    edit(&p, |f| {
        replace(f, "X/indices", &idx);
        replace(f, "X/data", &data);
    });
    let r = H5adReader::open(&p).unwrap();
    assert_x_eq(&r.read_x().unwrap(), &a.x);
    assert_eq!(r.read_x_rows(0, 1).unwrap().indices(), &[0, 3]);
    // the row-filtered reads of the evaluation passes sort the row in place too
    let keep_all = |_: usize| true;
    assert_x_eq(&XMatrix::Sparse(r.read_x_rows_where(0, 6, &keep_all).unwrap()), &a.x);
    let kept = r.read_x_kept_rows(0, 6, &|row| row == 0).unwrap();
    let rows: Vec<(usize, Vec<u32>, Vec<f32>)> = kept
        .iter()
        .map(|(row, idx, vals)| (row, (0..idx.len()).map(|k| idx.get(k)).collect(), vals.to_vec()))
        .collect();
    assert_eq!(rows, vec![(0, vec![0, 3], x.data()[..2].to_vec())]);

    drop(r);
    idx[1] = idx[0];
    edit(&p, |f| replace(f, "X/indices", &idx));
    let err = H5adReader::open(&p).unwrap().read_x().unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", "duplicate column index 3 in row 0"]);
    let err = H5adReader::open(&p).unwrap().read_x_kept_rows(0, 6, &keep_all).unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", "duplicate column index 3 in row 0"]);
}

#[test]
fn filtered_read_of_rows_far_apart() {
    // rows of 1500 stored entries: keeping every other row leaves gaps above the merge threshold, so one read
    // selects several separate ranges (a union selection)
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("wide.h5ad");
    let n_vars = 1500usize;
    let rows: Vec<Vec<f32>> = (0..6).map(|i| (0..n_vars).map(|j| (i * n_vars + j + 1) as f32).collect()).collect();
    let mut a = sample_anndata();
    a.x = XMatrix::Sparse(csr_from_rows(&rows, n_vars));
    a.var = DataFrame::with_index((0..n_vars).map(|j| format!("G{j}")).collect());
    write_h5ad(&p, &a).unwrap();
    let keep_even = |r: usize| r.is_multiple_of(2);
    let all_columns: Vec<u32> = (0..n_vars as u32).collect();
    let got = H5adReader::open(&p).unwrap().read_x_rows_where(0, 6, &keep_even).unwrap();
    for (r, row) in got.outer_iterator().enumerate() {
        if keep_even(r) {
            assert_eq!((row.indices(), row.data()), (&all_columns[..], &rows[r][..]), "row {r}");
        } else {
            assert_eq!(row.nnz(), 0, "row {r}");
        }
    }
    // in row 4 (the third range of the union) an unsorted pair is sorted with its values
    let mut idx: Vec<i32> = (0..6).flat_map(|_| 0..n_vars as i32).collect();
    idx.swap(4 * n_vars + 10, 4 * n_vars + 11);
    edit(&p, |f| replace(f, "X/indices", &idx));
    let got = H5adReader::open(&p).unwrap().read_x_rows_where(0, 6, &keep_even).unwrap();
    let row4 = got.outer_view(4).unwrap();
    assert_eq!(row4.indices(), &all_columns[..]);
    assert_eq!(&row4.data()[9..13], &[rows[4][9], rows[4][11], rows[4][10], rows[4][12]]);
    // and a bad index there is named by its position in the file
    idx[4 * n_vars + 20] = n_vars as i32;
    edit(&p, |f| replace(f, "X/indices", &idx));
    let err = H5adReader::open(&p).unwrap().read_x_rows_where(0, 6, &keep_even).unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", &format!("indices[{}] = 1500 out of range", 4 * n_vars + 20)]);
}

#[test]
fn int64_indices_in_the_filtered_read() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "idx64.h5ad");
    let a = sample_anndata();
    let XMatrix::Sparse(x) = &a.x else { unreachable!() };
    let mut idx: Vec<i64> = x.indices().iter().map(|&i| i64::from(i)).collect();
    edit(&p, |f| replace(f, "X/indices", &idx));
    let keep_odd = |row: usize| row % 2 == 1;
    let got = H5adReader::open(&p).unwrap().read_x_rows_where(0, 6, &keep_odd).unwrap();
    for (row, (g, want)) in got.outer_iterator().zip(x.outer_iterator()).enumerate() {
        let want = if keep_odd(row) { (want.indices().to_vec(), want.data().to_vec()) } else { (vec![], vec![]) };
        assert_eq!((g.indices().to_vec(), g.data().to_vec()), want, "row {row}");
    }
    // a value that would wrap into range as u32 is still out of range
    let last = idx.len() - 1;
    idx[last] = (1i64 << 32) + 1;
    edit(&p, |f| replace(f, "X/indices", &idx));
    let keep_all = |_: usize| true;
    let err = H5adReader::open(&p).unwrap().read_x_rows_where(0, 6, &keep_all).unwrap_err();
    assert_mentions(&err, &p, &["/X/indices", &format!("indices[{last}] = 4294967297 out of range")]);
}

#[test]
fn codes_outside_categories() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "codes.h5ad");
    edit(&p, |f| replace(f, "obs/target_gene/codes", &[0i8, 1, 9, 2, 0, 1]));
    let r = H5adReader::open(&p).unwrap();
    for err in [r.obs_column("target_gene").unwrap_err(), r.obs().unwrap_err(), r.read().unwrap_err()] {
        assert!(matches!(err, H5adError::Invalid { .. }), "{err:?}");
        assert_mentions(&err, &p, &["/obs/target_gene/codes", "code 9 at row 2", "3 categories"]);
    }
    drop(r); // HDF5 refuses to reopen a file read-write while it is open read-only
    edit(&p, |f| replace(f, "obs/target_gene/codes", &[0i8, 1, -2, 2, 0, 1]));
    let err = H5adReader::open(&p).unwrap().obs_column("target_gene").unwrap_err();
    assert_mentions(&err, &p, &["/obs/target_gene/codes", "code -2"]);
}

#[test]
fn shape_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    // obs rows ≠ X rows: obs has 5 names, X has 6 rows
    let p = dir.path().join("rows.h5ad");
    let mut a = sample_anndata();
    a.obs = DataFrame::with_index((0..6).map(|i| format!("c{i}")).collect());
    write_h5ad(&p, &a).unwrap();
    edit(&p, |f| {
        let names: Vec<VarLenUnicode> = (0..5).map(|i| format!("c{i}").parse().unwrap()).collect();
        replace(f, "obs/_index", &names);
    });
    let err = read_h5ad(&p).unwrap_err();
    assert_mentions(&err, &p, &["/obs", "obs has 5 rows but X has 6"]);

    // var rows ≠ X columns
    let p = dir.path().join("cols.h5ad");
    let mut a = sample_anndata();
    a.var = DataFrame::with_index((0..4).map(|i| format!("g{i}")).collect());
    write_h5ad(&p, &a).unwrap();
    edit(&p, |f| {
        let names: Vec<VarLenUnicode> = (0..5).map(|i| format!("g{i}").parse().unwrap()).collect();
        replace(f, "var/_index", &names);
    });
    let err = read_h5ad(&p).unwrap_err();
    assert_mentions(&err, &p, &["/var", "var has 5 rows but X has 4 columns"]);

    // X's shape attribute disagrees with its indptr
    let p = valid(dir.path(), "shape.h5ad");
    edit(&p, |f| {
        let g = f.group("X").unwrap();
        g.delete_attr("shape").unwrap();
        g.new_attr_builder().with_data(&[7i64, 4]).create("shape").unwrap();
    });
    let err = H5adReader::open(&p).unwrap().x_info().unwrap_err();
    assert_mentions(&err, &p, &["/X/indptr", "expected 8"]);

    // an obs column shorter than the index
    let p = valid(dir.path(), "col.h5ad");
    edit(&p, |f| replace(f, "obs/count", &[1i64, 2]));
    let err = H5adReader::open(&p).unwrap().obs().unwrap_err();
    assert_mentions(&err, &p, &["/obs/count", "has 2 rows but the index has 6"]);
}

#[test]
fn missing_obs_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "col.h5ad");
    let r = H5adReader::open(&p).unwrap();
    let err = r.obs_column("perturbation").unwrap_err();
    match &err {
        H5adError::ColumnNotFound { name, available, .. } => {
            assert_eq!(name, "perturbation");
            assert_eq!(available, &["target_gene", "label", "count", "score", "flag"]);
        }
        other => panic!("{other:?}"),
    }
    assert_mentions(&err, &p, &["/obs", "perturbation", "target_gene"]);

    // column-order names a column that is not stored
    drop(r);
    edit(&p, |f| f.unlink("obs/flag").unwrap());
    let err = H5adReader::open(&p).unwrap().obs().unwrap_err();
    assert_mentions(&err, &p, &["/obs/flag", "missing"]);
}

#[test]
fn missing_obsm_and_layer_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "keys.h5ad");
    let r = H5adReader::open(&p).unwrap();
    let err = r.read_obsm("X_umap").unwrap_err();
    assert_mentions(&err, &p, &["/obsm", "X_umap", "X_emb"]);
    let err = r.read_layer("counts").unwrap_err();
    assert_mentions(&err, &p, &["/layers", "counts"]);
    let err = r.read_x_rows(4, 9).unwrap_err();
    assert_mentions(&err, &p, &["/X", "4..9"]);
}

#[test]
fn dense_x_must_be_2d_and_numeric() {
    let dir = tempfile::tempdir().unwrap();
    let p = valid(dir.path(), "dense1d.h5ad");
    edit(&p, |f| {
        f.unlink("X").unwrap();
        f.new_dataset_builder().with_data(&[1f32, 2.0, 3.0]).create("X").unwrap();
    });
    let err = H5adReader::open(&p).unwrap().read_x().unwrap_err();
    assert_mentions(&err, &p, &["/X", "2-D"]);

    let p = valid(dir.path(), "densestr.h5ad");
    edit(&p, |f| {
        f.unlink("X").unwrap();
        let v: Vec<VarLenUnicode> = (0..24).map(|i| i.to_string().parse().unwrap()).collect();
        let a = ndarray::Array2::from_shape_vec((6, 4), v).unwrap();
        f.new_dataset_builder().with_data(&a).create("X").unwrap();
    });
    let err = H5adReader::open(&p).unwrap().read_x().unwrap_err();
    assert!(matches!(err, H5adError::UnsupportedDtype { .. }), "{err:?}");
    assert_mentions(&err, &p, &["/X"]);
}
