//! Writing `.h5ad` files the way anndata 0.12 does (see `design/cell-eval.md` §7), always atomically:
//! everything goes to `<path>.tmp-<pid>` in the same directory, which is renamed over `path` only when complete.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hdf5::{Dataset, File, Group};
use ndarray::Array2;

use super::error::{At, Ctx, Result};
use super::frame;
use super::hdf;
use crate::data::anndata::{AnnData, CsrMatrix, DataFrame, XMatrix};

/// Elements per chunk of the streaming writer's resizable datasets (256 KiB of f32).
const CHUNK: usize = 1 << 16;

/// Writes `adata` to `path` atomically.
pub fn write_h5ad(path: &Path, adata: &AnnData) -> Result<()> {
    let ctx = Ctx::new(path);
    validate(ctx, adata)?;
    let tmp = temp_path(path);
    let result = write_all(ctx, &tmp, adata);
    commit(ctx, &tmp, path, result)
}

fn write_all(ctx: Ctx<'_>, tmp: &Path, adata: &AnnData) -> Result<()> {
    let file = hdf::open_file(tmp, true).at(ctx, "/")?;
    write_root(ctx, &file)?;
    write_matrix(ctx, &file, "/X", &adata.x)?;
    frame::write_frame(ctx, &file, "/obs", &adata.obs)?;
    frame::write_frame(ctx, &file, "/var", &adata.var)?;
    write_obsm(ctx, &file, &adata.obsm)?;
    let layers = dict_group(ctx, &file, "layers")?;
    for (name, m) in &adata.layers {
        write_matrix(ctx, &layers, &format!("/layers/{name}"), m)?;
    }
    drop(layers);
    write_empty_dicts(ctx, &file, &["obsp", "uns", "varm", "varp"])?;
    file.close().at(ctx, "/")
}

/// Shapes and names checked up front, so invalid input never produces a file.
fn validate(ctx: Ctx<'_>, adata: &AnnData) -> Result<()> {
    let (rows, cols) = adata.x.shape();
    if rows != adata.n_obs() {
        return Err(ctx.invalid(
            "/obs",
            format!("obs has {} rows but X has {rows}", adata.n_obs()),
        ));
    }
    if cols != adata.n_vars() {
        return Err(ctx.invalid(
            "/var",
            format!("var has {} rows but X has {cols} columns", adata.n_vars()),
        ));
    }
    frame::validate(ctx, "/obs", &adata.obs)?;
    frame::validate(ctx, "/var", &adata.var)?;
    validate_obsm(ctx, &adata.obsm, rows)?;
    for (name, m) in &adata.layers {
        check_key(ctx, "/layers", name)?;
        if m.shape() != (rows, cols) {
            return Err(ctx.invalid(
                &format!("/layers/{name}"),
                format!("shape {:?} differs from X's {:?}", m.shape(), (rows, cols)),
            ));
        }
    }
    Ok(())
}

fn validate_obsm(ctx: Ctx<'_>, obsm: &[(String, Array2<f32>)], rows: usize) -> Result<()> {
    for (name, a) in obsm {
        check_key(ctx, "/obsm", name)?;
        if a.nrows() != rows {
            return Err(ctx.invalid(
                &format!("/obsm/{name}"),
                format!("has {} rows but there are {rows} cells", a.nrows()),
            ));
        }
    }
    Ok(())
}

fn check_key(ctx: Ctx<'_>, element: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." {
        return Err(ctx.invalid(element, format!("invalid entry name {name:?}")));
    }
    Ok(())
}

/// `<path>.tmp-<pid>`, next to `path` so the final rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(format!(".tmp-{}", std::process::id()));
    PathBuf::from(s)
}

/// Renames `tmp` over `path` if writing succeeded, otherwise removes `tmp` and returns the write error.
fn commit(ctx: Ctx<'_>, tmp: &Path, path: &Path, written: Result<()>) -> Result<()> {
    match written {
        Ok(()) => std::fs::rename(tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(tmp);
            ctx.io("/ (renaming the finished temporary file into place)", e)
        }),
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            Err(e)
        }
    }
}

fn write_root(ctx: Ctx<'_>, file: &File) -> Result<()> {
    hdf::write_encoding(ctx, file, "/", "anndata", "0.1.0")
}

fn dict_group(ctx: Ctx<'_>, file: &File, name: &str) -> Result<Group> {
    let el = format!("/{name}");
    let g = file.create_group(name).at(ctx, &el)?;
    hdf::write_encoding(ctx, &g, &el, "dict", "0.1.0")?;
    Ok(g)
}

fn write_empty_dicts(ctx: Ctx<'_>, file: &File, names: &[&str]) -> Result<()> {
    for name in names {
        dict_group(ctx, file, name)?;
    }
    Ok(())
}

fn write_obsm(ctx: Ctx<'_>, file: &File, obsm: &[(String, Array2<f32>)]) -> Result<()> {
    let g = dict_group(ctx, file, "obsm")?;
    for (name, a) in obsm {
        let el = format!("/obsm/{name}");
        write_dense(ctx, &g, &el, name, a)?;
    }
    Ok(())
}

fn write_dense(ctx: Ctx<'_>, parent: &Group, el: &str, name: &str, a: &Array2<f32>) -> Result<()> {
    let a = a.as_standard_layout();
    let ds = parent
        .new_dataset_builder()
        .with_data(&a)
        .create(name)
        .at(ctx, el)?;
    hdf::write_encoding(ctx, &ds, el, "array", "0.2.0")
}

/// `element` is the absolute path (`/X`, `/layers/counts`); the last component is created under `parent`.
fn write_matrix(ctx: Ctx<'_>, parent: &Group, element: &str, m: &XMatrix) -> Result<()> {
    let name = element.rsplit('/').next().unwrap_or(element);
    match m {
        XMatrix::Dense(a) => write_dense(ctx, parent, element, name, a),
        XMatrix::Sparse(csr) => {
            let (indptr, indices, data) = csr_parts(csr);
            let g = sparse_group(ctx, parent, element, name)?;
            write_shape_attr(ctx, &g, element, (csr.rows(), csr.cols()))?;
            write_slice_ds(ctx, &g, &format!("{element}/data"), "data", &data)?;
            write_indices(ctx, &g, element, csr.cols(), &indices)?;
            write_indptr(ctx, &g, element, &indptr)
        }
    }
}

/// The CSR group with its attributes; members are added by the caller.
fn sparse_group(ctx: Ctx<'_>, parent: &Group, element: &str, name: &str) -> Result<Group> {
    let g = parent.create_group(name).at(ctx, element)?;
    hdf::write_encoding(ctx, &g, element, "csr_matrix", "0.1.0")?;
    Ok(g)
}

fn write_shape_attr(ctx: Ctx<'_>, g: &Group, element: &str, shape: (usize, usize)) -> Result<()> {
    let el = format!("{element} (attribute 'shape')");
    let v = [shape.0 as i64, shape.1 as i64];
    g.new_attr_builder()
        .with_data(&v)
        .create("shape")
        .at(ctx, &el)
        .map(|_| ())
}

fn write_slice_ds<T: hdf5::H5Type>(
    ctx: Ctx<'_>,
    g: &Group,
    el: &str,
    name: &str,
    v: &[T],
) -> Result<()> {
    g.new_dataset_builder()
        .with_data(v)
        .create(name)
        .at(ctx, el)
        .map(|_| ())
}

/// Column indices as int32, or int64 when n_vars ≥ 2^31 (what scipy would choose).
fn write_indices(
    ctx: Ctx<'_>,
    g: &Group,
    element: &str,
    n_vars: usize,
    indices: &[u32],
) -> Result<()> {
    let el = format!("{element}/indices");
    if n_vars <= i32::MAX as usize {
        let v: Vec<i32> = indices.iter().map(|&i| i as i32).collect();
        write_slice_ds(ctx, g, &el, "indices", &v)
    } else {
        let v: Vec<i64> = indices.iter().map(|&i| i64::from(i)).collect();
        write_slice_ds(ctx, g, &el, "indices", &v)
    }
}

/// Row pointers as int32, or int64 once nnz ≥ 2^31.
fn write_indptr(ctx: Ctx<'_>, g: &Group, element: &str, indptr: &[usize]) -> Result<()> {
    let el = format!("{element}/indptr");
    let nnz = indptr.last().copied().unwrap_or(0);
    if nnz <= i32::MAX as usize {
        let v: Vec<i32> = indptr.iter().map(|&p| p as i32).collect();
        write_slice_ds(ctx, g, &el, "indptr", &v)
    } else {
        let v: Vec<i64> = indptr.iter().map(|&p| p as i64).collect();
        write_slice_ds(ctx, g, &el, "indptr", &v)
    }
}

/// indptr (starting at 0), indices and data of a CSR matrix, whatever its storage or offset.
fn csr_parts(m: &CsrMatrix) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let owned;
    let m = if m.is_csr() {
        m
    } else {
        owned = m.to_other_storage();
        &owned
    };
    // A sliced matrix may keep an offset indptr; indices()/data() are already exactly its nnz entries.
    let indptr = m.proper_indptr().into_owned();
    let indices = m.indices().to_vec();
    let data = m.data().to_vec();
    (indptr, indices, data)
}

/// Streaming writer for outputs too big to hold in memory (e.g. a 300k-cell prediction).
///
/// Rows are appended in chunks into resizable, chunked `X/data` and `X/indices` datasets; the row pointers
/// (8 bytes per cell) stay in memory and are written with obs and obsm at [`H5adWriter::finish`], which then
/// renames the temporary file into place. Dropping the writer without `finish` removes the temporary file.
pub struct H5adWriter {
    path: PathBuf,
    tmp: PathBuf,
    file: Option<File>,
    x: Option<(Group, Dataset, Dataset)>,
    n_vars: usize,
    indptr: Vec<usize>,
    done: bool,
}

impl std::fmt::Debug for H5adWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5adWriter")
            .field("path", &self.path)
            .field("rows", &(self.indptr.len() - 1))
            .finish()
    }
}

impl H5adWriter {
    /// Starts `<path>.tmp-<pid>` with `var` written and an empty CSR float32 X of `var.n_rows()` columns.
    pub fn create(path: &Path, var: &DataFrame) -> Result<Self> {
        let ctx = Ctx::new(path);
        frame::validate(ctx, "/var", var)?;
        let tmp = temp_path(path);
        let mut w = H5adWriter {
            path: path.to_path_buf(),
            tmp: tmp.clone(),
            file: None,
            x: None,
            n_vars: var.n_rows(),
            indptr: vec![0],
            done: false,
        };
        // From here on, dropping `w` on error removes the temporary file.
        let file = hdf::open_file(&tmp, true).at(ctx, "/")?;
        write_root(ctx, &file)?;
        frame::write_frame(ctx, &file, "/var", var)?;
        let g = sparse_group(ctx, &file, "/X", "X")?;
        let data = g
            .new_dataset::<f32>()
            .chunk(CHUNK)
            .shape(0..)
            .create("data")
            .at(ctx, "/X/data")?;
        let indices = if w.n_vars <= i32::MAX as usize {
            g.new_dataset::<i32>()
        } else {
            g.new_dataset::<i64>()
        }
        .chunk(CHUNK)
        .shape(0..)
        .create("indices")
        .at(ctx, "/X/indices")?;
        w.file = Some(file);
        w.x = Some((g, data, indices));
        Ok(w)
    }

    /// Rows appended so far.
    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// Appends the rows of `rows` (which must have `n_vars` columns) to X.
    pub fn append_rows(&mut self, rows: &CsrMatrix) -> Result<()> {
        let ctx = Ctx::new(&self.path);
        if rows.cols() != self.n_vars {
            return Err(ctx.invalid(
                "/X",
                format!(
                    "appended rows have {} columns, X has {}",
                    rows.cols(),
                    self.n_vars
                ),
            ));
        }
        let Some((_, data_ds, indices_ds)) = &self.x else {
            return Err(ctx.invalid("/X", "writer is no longer open"));
        };
        let (indptr, indices, data) = csr_parts(rows);
        let nnz = self.indptr.last().copied().unwrap_or(0);
        let k = data.len();
        if k > 0 {
            let end = nnz + k;
            data_ds.resize(end).at(ctx, "/X/data")?;
            data_ds.write_slice(&data, nnz..end).at(ctx, "/X/data")?;
            indices_ds.resize(end).at(ctx, "/X/indices")?;
            if self.n_vars <= i32::MAX as usize {
                let v: Vec<i32> = indices.iter().map(|&i| i as i32).collect();
                indices_ds.write_slice(&v, nnz..end)
            } else {
                let v: Vec<i64> = indices.iter().map(|&i| i64::from(i)).collect();
                indices_ds.write_slice(&v, nnz..end)
            }
            .at(ctx, "/X/indices")?;
        }
        self.indptr.extend(indptr.iter().skip(1).map(|p| p + nnz));
        Ok(())
    }

    /// Writes indptr, the X shape, `obs` (its row count must equal the rows appended) and `obsm`, then renames
    /// the file into place.
    pub fn finish(mut self, obs: &DataFrame, obsm: &[(String, Array2<f32>)]) -> Result<()> {
        let path = self.path.clone();
        let ctx = Ctx::new(&path);
        let n = self.n_rows();
        if obs.n_rows() != n {
            return Err(ctx.invalid(
                "/obs",
                format!(
                    "obs has {} rows but {n} rows were appended to X",
                    obs.n_rows()
                ),
            ));
        }
        frame::validate(ctx, "/obs", obs)?;
        validate_obsm(ctx, obsm, n)?;
        let (Some(file), Some((g, data, indices))) = (self.file.take(), self.x.take()) else {
            return Err(ctx.invalid("/X", "writer is no longer open"));
        };
        drop((data, indices));
        write_indptr(ctx, &g, "/X", &self.indptr)?;
        write_shape_attr(ctx, &g, "/X", (n, self.n_vars))?;
        drop(g);
        frame::write_frame(ctx, &file, "/obs", obs)?;
        write_obsm(ctx, &file, obsm)?;
        write_empty_dicts(ctx, &file, &["layers", "obsp", "uns", "varm", "varp"])?;
        file.close().at(ctx, "/")?;
        self.done = true;
        commit(ctx, &self.tmp, &self.path, Ok(()))
    }
}

impl Drop for H5adWriter {
    fn drop(&mut self) {
        if !self.done {
            self.x = None;
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}
