//! `H5adReader`: an open `.h5ad` file with element-level access, so callers read only what they need
//! (one obs column, a chunk of rows, shapes only).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hdf5::File;
use ndarray::Array2;

use super::error::{At, Ctx, H5adError, Result};
use super::frame::FrameNode;
use super::hdf;
use super::matrix::{dense_to_csr, MatrixNode, SparseNode, XInfo};
use crate::data::anndata::{AnnData, Column, CsrMatrix, DataFrame, StoredDtype, XMatrix};
use crate::data::kept_rows::KeptRows;

/// The 8-byte signature every HDF5 file starts with (at offset 0 unless a user block precedes it).
const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];

/// An open `.h5ad` file.
pub struct H5adReader {
    file: File,
    path: PathBuf,
    /// X's validated indptr, read on the first row-range request (CSR only).
    x_indptr: OnceLock<Vec<usize>>,
}

impl std::fmt::Debug for H5adReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H5adReader").field("path", &self.path).finish()
    }
}

impl H5adReader {
    /// Opens `path` read-only. Fails clearly if it is missing, not HDF5, truncated, or not an AnnData file
    /// (no `obs`/`var` groups, or a root `encoding-type` other than `anndata`).
    pub fn open(path: &Path) -> Result<Self> {
        let ctx = Ctx::new(path);
        let mut head = [0u8; 8];
        let mut f = std::fs::File::open(path).map_err(|e| ctx.io("/", e))?;
        let n = read_up_to(&mut f, &mut head).map_err(|e| ctx.io("/", e))?;
        let signature_at_start = n == head.len() && head == HDF5_SIGNATURE;
        let file = hdf::open_file(path, false).map_err(|e| {
            let reason = if !signature_at_start {
                "not an HDF5 file (no HDF5 signature); an .h5ad file must be HDF5".to_owned()
            } else {
                format!("HDF5 file is truncated or corrupt ({e})")
            };
            H5adError::Open { file: path.to_path_buf(), element: "/".to_owned(), reason }
        })?;
        match hdf::encoding_type(ctx, &file, "/")?.as_deref() {
            Some("anndata") => {}
            Some(other) => return Err(ctx.encoding("/", other)),
            None if file.link_exists("obs") || file.link_exists("var") => {}
            None => return Err(ctx.invalid("/", "not an AnnData file: no encoding-type=anndata and no obs/var groups")),
        }
        Ok(H5adReader { file, path: path.to_path_buf(), x_indptr: OnceLock::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx::new(&self.path)
    }

    fn x_node(&self) -> Result<MatrixNode> {
        MatrixNode::open(self.ctx(), &self.file, "/X")
    }

    fn frame(&self, element: &str) -> Result<FrameNode> {
        FrameNode::open(self.ctx(), &self.file, element)
    }

    /// Encoding, dtype, shape and nnz of X, from attributes and dataset shapes only.
    pub fn x_info(&self) -> Result<XInfo> {
        self.x_node()?.info(self.ctx())
    }

    /// Number of cells: the length of the obs index.
    pub fn n_obs(&self) -> Result<usize> {
        self.frame("/obs")?.n_rows(self.ctx())
    }

    /// Number of genes: the length of the var index.
    pub fn n_vars(&self) -> Result<usize> {
        self.frame("/var")?.n_rows(self.ctx())
    }

    pub fn obs(&self) -> Result<DataFrame> {
        self.frame("/obs")?.read(self.ctx())
    }

    pub fn var(&self) -> Result<DataFrame> {
        self.frame("/var")?.read(self.ctx())
    }

    /// One obs column; `ColumnNotFound` lists the columns that exist.
    pub fn obs_column(&self, name: &str) -> Result<Column> {
        let frame = self.frame("/obs")?;
        if !frame.columns.iter().any(|c| c == name) {
            return Err(H5adError::ColumnNotFound {
                file: self.path.clone(),
                name: name.to_owned(),
                available: frame.columns.clone(),
            });
        }
        let col = frame.read_column(self.ctx(), name)?;
        let n = frame.n_rows(self.ctx())?;
        if col.len() != n {
            return Err(self
                .ctx()
                .invalid(&format!("/obs/{name}"), format!("has {} rows but the obs index has {n}", col.len())));
        }
        Ok(col)
    }

    /// obs column names in `column-order`.
    pub fn obs_column_names(&self) -> Result<Vec<String>> {
        Ok(self.frame("/obs")?.columns)
    }

    /// var column names in `column-order`.
    pub fn var_column_names(&self) -> Result<Vec<String>> {
        Ok(self.frame("/var")?.columns)
    }

    /// The var index (gene names).
    pub fn var_names(&self) -> Result<Vec<String>> {
        self.frame("/var")?.read_index(self.ctx(), None)
    }

    /// The obs index (cell names).
    pub fn obs_names(&self) -> Result<Vec<String>> {
        self.frame("/obs")?.read_index(self.ctx(), None)
    }

    /// Rows `[start, end)` of X as CSR, with memory bounded by the chunk.
    ///
    /// - CSR: the indptr is read and validated once (cached), then only `indices[a..b]` and `data[a..b]`.
    /// - Dense: the row hyperslab is read and exact zeros are dropped.
    /// - CSC: not supported (rows of a CSC matrix are scattered over the whole file); use [`Self::read_x`],
    ///   which loads and converts the whole matrix, then slice the result.
    pub fn read_x_rows(&self, start: usize, end: usize) -> Result<CsrMatrix> {
        let ctx = self.ctx();
        match self.x_node()? {
            MatrixNode::Sparse(s) if s.csc => Err(ctx.unsupported(
                "/X",
                "X is stored as CSC, so rows cannot be read in chunks; use read_x() to load and convert the \
                 whole matrix",
            )),
            MatrixNode::Sparse(s) => {
                let indptr = self.cached_indptr(&s)?;
                s.read_csr_rows(ctx, indptr, start, end)
            }
            MatrixNode::Dense(d) => {
                let rows = d.read_rows(ctx, start, end)?;
                dense_to_csr(ctx, "/X", &rows)
            }
        }
    }

    /// `X/indptr`, read once per reader and kept (every row-chunk read needs it).
    fn cached_indptr(&self, s: &SparseNode) -> Result<&[usize]> {
        if let Some(p) = self.x_indptr.get() {
            return Ok(p);
        }
        let p = s.read_indptr(self.ctx())?;
        Ok(self.x_indptr.get_or_init(|| p))
    }

    /// Stored entries per row of a CSR `X`, from `indptr` alone; `None` when `X` is not CSR.
    pub fn x_row_lengths(&self) -> Result<Option<Vec<u32>>> {
        match self.x_node()? {
            MatrixNode::Sparse(s) if !s.csc => {
                let indptr = self.cached_indptr(&s)?;
                Ok(Some(indptr.windows(2).map(|w| u32::try_from(w[1] - w[0]).unwrap_or(u32::MAX)).collect()))
            }
            _ => Ok(None),
        }
    }

    /// [`Self::read_x_rows`] with only the rows where `keep(row)` holds filled in (others empty): the CSR block of
    /// [`Self::read_x_kept_rows`].
    pub fn read_x_rows_where(&self, start: usize, end: usize, keep: &dyn Fn(usize) -> bool) -> Result<CsrMatrix> {
        let kept = self.read_x_kept_rows(start, end, keep)?;
        kept.into_csr().map_err(|e| self.ctx().invalid("/X", format!("invalid sparse structure: {e}")))
    }

    /// The rows of `[start, end)` where `keep(row)` holds, left in the buffers they were read into (see
    /// `SparseNode::read_csr_kept_rows`). Dense and CSC `X` are read whole and filtered.
    pub fn read_x_kept_rows(&self, start: usize, end: usize, keep: &dyn Fn(usize) -> bool) -> Result<KeptRows> {
        let ctx = self.ctx();
        match self.x_node()? {
            MatrixNode::Sparse(s) if !s.csc => {
                let indptr = self.cached_indptr(&s)?;
                s.read_csr_kept_rows(ctx, indptr, start, end, keep)
            }
            _ => Ok(KeptRows::from_csr(start, self.read_x_rows(start, end)?, keep)),
        }
    }

    /// The stored values of rows `[start, end)` of a CSR `X` with their row offsets, `indices` not read (see
    /// `SparseNode::read_csr_values`); `None` when `X` is not CSR.
    pub fn read_x_values(&self, start: usize, end: usize) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let ctx = self.ctx();
        match self.x_node()? {
            MatrixNode::Sparse(s) if !s.csc => {
                let indptr = self.cached_indptr(&s)?;
                s.read_csr_values(ctx, indptr, start, end).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// The whole X: `Sparse` for CSR and CSC (converted to CSR), `Dense` for a dense dataset.
    pub fn read_x(&self) -> Result<XMatrix> {
        self.x_node()?.read_all(self.ctx())
    }

    fn keys(&self, group: &str) -> Result<Vec<String>> {
        if !self.file.link_exists(group) {
            return Ok(Vec::new());
        }
        let el = format!("/{group}");
        let g = self.file.group(group).at(self.ctx(), &el)?;
        let mut names = g.member_names().at(self.ctx(), &el)?;
        names.sort();
        Ok(names)
    }

    /// Names in `obsm`, sorted.
    pub fn obsm_keys(&self) -> Result<Vec<String>> {
        self.keys("obsm")
    }

    /// Names in `layers`, sorted.
    pub fn layer_keys(&self) -> Result<Vec<String>> {
        self.keys("layers")
    }

    fn obsm_dataset(&self, key: &str) -> Result<(hdf5::Dataset, String, usize)> {
        let ctx = self.ctx();
        let keys = self.obsm_keys()?;
        if !keys.iter().any(|k| k == key) {
            return Err(H5adError::KeyNotFound {
                file: self.path.clone(),
                element: "/obsm".to_owned(),
                key: key.to_owned(),
                available: keys,
            });
        }
        let el = format!("/obsm/{key}");
        let name = format!("obsm/{key}");
        if self.file.loc_type_by_name(&name).at(ctx, &el)? != hdf5::LocationType::Dataset {
            return Err(ctx.unsupported(&el, "only dense obsm arrays can be read"));
        }
        let ds = self.file.dataset(&name).at(ctx, &el)?;
        let n_rows = match ds.get_shape().at(ctx, &el)?.as_slice() {
            [r, _] | [r] => *r,
            other => return Err(ctx.invalid(&el, format!("expected a 2-D array, found shape {other:?}"))),
        };
        Ok((ds, el, n_rows))
    }

    /// A dense `obsm` entry as f32 (1-D entries become one column).
    pub fn read_obsm(&self, key: &str) -> Result<Array2<f32>> {
        let (_, _, n) = self.obsm_dataset(key)?;
        self.read_obsm_rows(key, 0, n)
    }

    /// Rows `[start, end)` of a dense `obsm` entry.
    pub fn read_obsm_rows(&self, key: &str, start: usize, end: usize) -> Result<Array2<f32>> {
        let ctx = self.ctx();
        let (ds, el, n) = self.obsm_dataset(key)?;
        if start > end || end > n {
            return Err(ctx.invalid(&el, format!("row range {start}..{end} is outside 0..{n}")));
        }
        // Numbers only; HDF5 converts any integer or float width to f32.
        let desc = hdf::descriptor(ctx, &ds, &el)?;
        if matches!(desc.stored_dtype(), None | Some(StoredDtype::Bool)) {
            return Err(ctx.dtype(&el, desc));
        }
        if ds.ndim() == 1 {
            let v = ds.read_slice_1d::<f32, _>(start..end).at(ctx, &el)?;
            return Array2::from_shape_vec((end - start, 1), v.to_vec()).map_err(|e| ctx.invalid(&el, e.to_string()));
        }
        ds.read_slice_2d::<f32, _>(hdf::row_block(start, end)).at(ctx, &el)
    }

    /// A whole layer (CSR, CSC converted to CSR, or dense).
    pub fn read_layer(&self, name: &str) -> Result<XMatrix> {
        let keys = self.layer_keys()?;
        if !keys.iter().any(|k| k == name) {
            return Err(H5adError::KeyNotFound {
                file: self.path.clone(),
                element: "/layers".to_owned(),
                key: name.to_owned(),
                available: keys,
            });
        }
        MatrixNode::open(self.ctx(), &self.file, &format!("/layers/{name}"))?.read_all(self.ctx())
    }

    /// Everything this crate models: X, obs, var, dense obsm entries and layers. Shapes are cross-checked.
    /// obsm entries that are not dense arrays (sparse matrices, dataframes) are skipped.
    pub fn read(&self) -> Result<AnnData> {
        let ctx = self.ctx();
        let obs = self.obs()?;
        let var = self.var()?;
        let x_node = self.x_node()?;
        let (rows, cols) = x_node.shape();
        if rows != obs.n_rows() {
            return Err(ctx.invalid("/obs", format!("obs has {} rows but X has {rows}", obs.n_rows())));
        }
        if cols != var.n_rows() {
            return Err(ctx.invalid("/var", format!("var has {} rows but X has {cols} columns", var.n_rows())));
        }
        let x = x_node.read_all(ctx)?;
        let mut obsm = Vec::new();
        for key in self.obsm_keys()? {
            let name = format!("obsm/{key}");
            if self.file.loc_type_by_name(&name).at(ctx, &format!("/{name}"))? != hdf5::LocationType::Dataset {
                continue;
            }
            let a = self.read_obsm(&key)?;
            if a.nrows() != rows {
                return Err(ctx.invalid(&format!("/obsm/{key}"), format!("has {} rows but X has {rows}", a.nrows())));
            }
            obsm.push((key, a));
        }
        let mut layers = Vec::new();
        for key in self.layer_keys()? {
            let m = self.read_layer(&key)?;
            if m.shape() != (rows, cols) {
                return Err(ctx.invalid(
                    &format!("/layers/{key}"),
                    format!("shape {:?} differs from X's {:?}", m.shape(), (rows, cols)),
                ));
            }
            layers.push((key, m));
        }
        Ok(AnnData { x, obs, var, obsm, layers })
    }

    /// The encoding of an obs column (`categorical`, `string-array`, `array`, `nullable-integer`, ...), from
    /// its attributes only.
    pub fn obs_column_encoding(&self, name: &str) -> Result<String> {
        self.frame("/obs")?.column_encoding(self.ctx(), name)
    }

    /// The first `n` obs names (reads only those).
    pub fn obs_names_head(&self, n: usize) -> Result<Vec<String>> {
        self.frame("/obs")?.read_index(self.ctx(), Some(0..n))
    }

    /// The first `n` var names (reads only those).
    pub fn var_names_head(&self, n: usize) -> Result<Vec<String>> {
        self.frame("/var")?.read_index(self.ctx(), Some(0..n))
    }

    /// Encoding, dtype, shape and nnz of a layer, without reading its data.
    pub fn layer_info(&self, name: &str) -> Result<XInfo> {
        MatrixNode::open(self.ctx(), &self.file, &format!("/layers/{name}"))?.info(self.ctx())
    }

    /// The shape and stored dtype of an obsm entry (for a group, e.g. a sparse matrix or a dataframe, its
    /// `shape` attribute if any and no dtype), plus its encoding-type.
    pub fn obsm_entry_info(&self, key: &str) -> Result<(String, Vec<usize>, Option<StoredDtype>)> {
        let ctx = self.ctx();
        let el = format!("/obsm/{key}");
        let name = format!("obsm/{key}");
        if !self.file.link_exists(&name) {
            return Err(ctx.missing(&el));
        }
        if self.file.loc_type_by_name(&name).at(ctx, &el)? == hdf5::LocationType::Dataset {
            let ds = self.file.dataset(&name).at(ctx, &el)?;
            let enc = hdf::encoding_type(ctx, &ds, &el)?.unwrap_or_else(|| "array".to_owned());
            let dtype = hdf::descriptor(ctx, &ds, &el)?.stored_dtype();
            Ok((enc, ds.shape(), dtype))
        } else {
            let g = self.file.group(&name).at(ctx, &el)?;
            let enc = hdf::encoding_type(ctx, &g, &el)?.unwrap_or_default();
            let shape =
                hdf::attr_u64s(ctx, &g, &el, "shape")?.unwrap_or_default().into_iter().map(|v| v as usize).collect();
            Ok((enc, shape, None))
        }
    }
}

/// Reads a whole `.h5ad` file into memory.
pub fn read_h5ad(path: &Path) -> Result<AnnData> {
    H5adReader::open(path)?.read()
}

fn read_up_to(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
