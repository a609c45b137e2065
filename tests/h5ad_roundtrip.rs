#![allow(clippy::unwrap_used)]
//! write → read round trips: fixed examples, proptest-generated CSR matrices and obs tables, dense X, obsm,
//! layers, and the streaming writer against `write_h5ad`.

mod support;

use ndarray::Array2;
use proptest::prelude::*;
use support::*;
use vcell::data::anndata::{AnnData, Categorical, Column, CsrMatrix, DataFrame, XMatrix};
use vcell::data::h5ad::{read_h5ad, write_h5ad, H5adReader, H5adWriter};

/// Readers move into worker threads (TUI, jobs) and errors into `anyhow`.
#[test]
fn types_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<H5adReader>();
    check::<vcell::data::h5ad::H5adError>();
    fn check_send<T: Send>() {}
    check_send::<H5adWriter>();
}

#[test]
fn sample_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.h5ad");
    let a = sample_anndata();
    write_h5ad(&path, &a).unwrap();
    let b = read_h5ad(&path).unwrap();
    assert_anndata_eq(&a, &b);
    // no temporary file left behind
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn dense_x_and_layers_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.h5ad");
    let mut a = sample_anndata();
    let dense = Array2::from_shape_fn((6, 4), |(i, j)| {
        if i == j {
            0.0
        } else {
            (i * 4 + j) as f32 * 0.1
        }
    });
    a.x = XMatrix::Dense(dense.clone());
    a.layers = vec![
        (
            "counts".into(),
            XMatrix::Sparse(csr_from_rows(&vec![vec![1.0, 0.0, 0.0, 2.0]; 6], 4)),
        ),
        ("dense".into(), XMatrix::Dense(dense)),
    ];
    write_h5ad(&path, &a).unwrap();
    let b = read_h5ad(&path).unwrap();
    assert_anndata_eq(&a, &b);
    let r = H5adReader::open(&path).unwrap();
    assert_eq!(r.layer_keys().unwrap(), vec!["counts", "dense"]);
    // dense rows come back as CSR without the zeros
    let rows = r.read_x_rows(1, 3).unwrap();
    assert_eq!(rows.shape(), (2, 4));
    assert_eq!(rows.nnz(), 6);
    assert_eq!(rows.get(0, 1), None);
    assert_eq!(rows.get(0, 0), Some(&0.4));
}

#[test]
fn empty_shapes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for (n_obs, n_vars) in [(0usize, 0usize), (0, 5), (3, 0), (4, 3)] {
        let path = dir.path().join(format!("e{n_obs}_{n_vars}.h5ad"));
        let a = AnnData {
            x: XMatrix::Sparse(CsrMatrix::zero((n_obs, n_vars))),
            obs: DataFrame::with_index((0..n_obs).map(|i| i.to_string()).collect()),
            var: DataFrame::with_index((0..n_vars).map(|i| format!("g{i}")).collect()),
            obsm: vec![],
            layers: vec![],
        };
        write_h5ad(&path, &a).unwrap();
        let b = read_h5ad(&path).unwrap();
        assert_anndata_eq(&a, &b);
        let r = H5adReader::open(&path).unwrap();
        assert_eq!(r.read_x_rows(0, n_obs).unwrap().shape(), (n_obs, n_vars));
    }
}

#[test]
fn obsm_rows_and_info() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("o.h5ad");
    let a = sample_anndata();
    write_h5ad(&path, &a).unwrap();
    let r = H5adReader::open(&path).unwrap();
    assert_eq!(r.obsm_keys().unwrap(), vec!["X_emb"]);
    let full = r.read_obsm("X_emb").unwrap();
    assert_eq!(full, a.obsm[0].1);
    let part = r.read_obsm_rows("X_emb", 2, 5).unwrap();
    let expect = Array2::from_shape_fn((3, 3), |(i, k)| a.obsm[0].1[[i + 2, k]]);
    assert_eq!(part, expect);
    let info = r.x_info().unwrap();
    assert_eq!(info.shape, (6, 4));
    assert_eq!(info.nnz, Some(8));
}

#[test]
fn streaming_writer_equals_write_h5ad() {
    let dir = tempfile::tempdir().unwrap();
    let a = sample_anndata();
    let XMatrix::Sparse(x) = &a.x else {
        unreachable!()
    };
    let whole = dir.path().join("whole.h5ad");
    write_h5ad(&whole, &a).unwrap();
    let streamed = dir.path().join("streamed.h5ad");
    let mut w = H5adWriter::create(&streamed, &a.var).unwrap();
    for (start, end) in [(0, 2), (2, 2), (2, 5), (5, 6)] {
        let chunk: CsrMatrix = x.slice_outer(start..end).to_owned();
        w.append_rows(&chunk).unwrap();
    }
    w.finish(&a.obs, &a.obsm).unwrap();
    assert_anndata_eq(&read_h5ad(&whole).unwrap(), &read_h5ad(&streamed).unwrap());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn streaming_writer_dropped_removes_temp_and_checks_rows() {
    let dir = tempfile::tempdir().unwrap();
    let a = sample_anndata();
    let path = dir.path().join("s.h5ad");
    {
        let mut w = H5adWriter::create(&path, &a.var).unwrap();
        w.append_rows(&CsrMatrix::zero((2, 4))).unwrap();
        // wrong width
        let err = w.append_rows(&CsrMatrix::zero((1, 5))).unwrap_err();
        assert!(err.to_string().contains("/X"), "{err}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let mut w = H5adWriter::create(&path, &a.var).unwrap();
    w.append_rows(&CsrMatrix::zero((2, 4))).unwrap();
    let err = w.finish(&a.obs, &[]).unwrap_err().to_string();
    assert!(err.contains("/obs") && err.contains("s.h5ad"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn write_rejects_bad_input_without_leaving_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.h5ad");
    let mut a = sample_anndata();
    a.obs.index.pop();
    let err = write_h5ad(&path, &a).unwrap_err().to_string();
    assert!(err.contains("/obs"), "{err}");
    let mut a = sample_anndata();
    a.obs.set_column(
        "target_gene",
        Column::Categorical(Categorical {
            codes: vec![0, 1, 2, 3, 0, 0],
            categories: vec!["a".into()],
            ordered: false,
        }),
    );
    let err = write_h5ad(&path, &a).unwrap_err().to_string();
    assert!(err.contains("/obs/target_gene/codes"), "{err}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

// ---- proptest ----------------------------------------------------------------------------------------

fn csr_strategy() -> impl Strategy<Value = CsrMatrix> {
    (0usize..12, 0usize..9).prop_flat_map(|(rows, cols)| {
        let cell = prop_oneof![
            3 => Just(0.0f32),
            2 => -1e6f32..1e6f32,
            1 => Just(f32::NAN),
        ];
        proptest::collection::vec(proptest::collection::vec(cell, cols), rows)
            .prop_map(move |m| csr_from_rows(&m, cols))
    })
}

fn column_strategy(n: usize) -> impl Strategy<Value = Column> {
    let cats = proptest::collection::vec("[a-zA-Zé日 _-]{0,6}", 1..5).prop_map(|mut c| {
        c.sort();
        c.dedup();
        c
    });
    prop_oneof![
        (
            cats,
            proptest::collection::vec(any::<u8>(), n),
            any::<bool>()
        )
            .prop_map(|(categories, raw, ordered)| {
                let k = categories.len() as i32;
                let codes = raw.iter().map(|&r| (r as i32 % (k + 1)) - 1).collect();
                Column::Categorical(Categorical {
                    codes,
                    categories,
                    ordered,
                })
            }),
        proptest::collection::vec("\\PC{0,8}", n).prop_map(Column::Str),
        proptest::collection::vec(any::<i64>(), n).prop_map(Column::Int),
        proptest::collection::vec(
            prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY)],
            n
        )
        .prop_map(Column::Float),
        proptest::collection::vec(any::<bool>(), n).prop_map(Column::Bool),
    ]
}

fn anndata_strategy() -> impl Strategy<Value = AnnData> {
    csr_strategy()
        .prop_flat_map(|x| {
            let n = x.rows();
            let cols = proptest::collection::vec(column_strategy(n), 0..4);
            let emb = proptest::collection::vec(-10f32..10f32, n * 2);
            (Just(x), cols, emb)
        })
        .prop_map(|(x, cols, emb)| {
            let (n, m) = x.shape();
            let mut obs = DataFrame::with_index((0..n).map(|i| format!("c{i}")).collect());
            for (k, c) in cols.into_iter().enumerate() {
                obs.set_column(&format!("col{k}"), c);
            }
            AnnData {
                obsm: vec![("X_pca".into(), Array2::from_shape_vec((n, 2), emb).unwrap())],
                x: XMatrix::Sparse(x),
                obs,
                var: DataFrame::with_index((0..m).map(|j| format!("g{j}")).collect()),
                layers: vec![],
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn prop_round_trip(a in anndata_strategy()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.h5ad");
        write_h5ad(&path, &a).unwrap();
        let b = read_h5ad(&path).unwrap();
        assert_anndata_eq(&a, &b);
        // chunked row reads agree with the whole matrix
        let r = H5adReader::open(&path).unwrap();
        let XMatrix::Sparse(x) = &a.x else { unreachable!() };
        let n = x.rows();
        let mid = n / 2;
        let top = r.read_x_rows(0, mid).unwrap();
        let bottom = r.read_x_rows(mid, n).unwrap();
        assert_x_eq(&XMatrix::Sparse(top), &XMatrix::Sparse(x.slice_outer(0..mid).to_owned()));
        assert_x_eq(&XMatrix::Sparse(bottom), &XMatrix::Sparse(x.slice_outer(mid..n).to_owned()));
    }

    #[test]
    fn prop_streaming_equals_whole(a in anndata_strategy(), split in 0usize..12) {
        let dir = tempfile::tempdir().unwrap();
        let XMatrix::Sparse(x) = &a.x else { unreachable!() };
        let split = split.min(x.rows());
        let s = dir.path().join("s.h5ad");
        let mut w = H5adWriter::create(&s, &a.var).unwrap();
        w.append_rows(&x.slice_outer(0..split).to_owned()).unwrap();
        w.append_rows(&x.slice_outer(split..x.rows()).to_owned()).unwrap();
        w.finish(&a.obs, &a.obsm).unwrap();
        assert_anndata_eq(&a, &read_h5ad(&s).unwrap());
    }
}
