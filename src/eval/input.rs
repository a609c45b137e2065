//! Opening, scanning and checking a real/pred pair, in cell-eval's order (`tests/fixtures/errors/README.md`):
//!
//! 1. open real, then pred;
//! 2. one streaming pass over each `X` (real, then pred): log1p / integer check, cell totals for the count
//!    normalisation, NaN/inf and negative counts, stored non-zeros per cell;
//! 3. gene count; 4. `var_names` order; 5. perturbation column in real, then pred;
//! 6. label sets (unique strings of the cells' labels; a missing label counts as "nan", as in cell-eval);
//! 7. control in real, then pred;
//! 8. what pdex would crash on, real then pred: NaN/inf in `X`, then categories with no cells.
//!    cell-eval crashes with `ZeroDivisionError` on an unused category; we stop with a clear error instead.
//!
//! Nothing is computed on a pair that fails a check, so no half-written DE table exists. Only O(n_cells)
//! scalars are kept per file (category codes, one scale factor, one non-zero count); `X` is re-read in row
//! chunks by the DE and pseudobulk passes.
//!
//! [`load_pair_sources_deferred`] (the `eval` pipeline) saves step 2's full read of a log1p file: when the first
//! chunk of a CSR file already holds a fractional value, the file can only be log1p data (identity transform) or
//! fail a value check (negative, ≥ 15, NaN/inf). Those checks then run on each row as the passes read it, and
//! [`verify_deferred`] checks the rows no pass read. Any failed check, deferred or not, falls back to the full
//! scans, so the error reported is the one of the order above.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use super::error::{short_list, EvalError, Result};
use super::normalize::{decide_transform, ScanStats, Transform, MAX_LOG1P};
use crate::data::anndata::{AnnData, Categorical, Column, CsrMatrix, MatrixEncoding, XMatrix};
use crate::data::h5ad::H5adReader;
use crate::data::kept_rows::KeptRows;
use crate::progress::Progress;

/// Read access to one AnnData file, in row chunks. Implemented by the `.h5ad` reader and by in-memory
/// [`AnnData`] (tests, synthetic data).
pub trait CellSource: Send + Sync {
    /// (n_obs, n_vars).
    fn shape(&self) -> (usize, usize);
    /// How `X` is stored (the column-mean recipe depends on it).
    fn encoding(&self) -> MatrixEncoding;
    fn var_names(&self) -> Result<Vec<String>>;
    fn obs_column_names(&self) -> Result<Vec<String>>;
    /// The named obs column, `Ok(None)` if absent.
    fn obs_column(&self, name: &str) -> Result<Option<Column>>;
    /// Rows `start..end` of `X` as CSR (sorted columns; zeros of a dense X dropped).
    fn read_rows(&self, start: usize, end: usize) -> Result<CsrMatrix>;
    /// An `obsm` entry (`n_obs × d`).
    fn read_obsm(&self, key: &str) -> Result<Array2<f32>>;
    /// [`Self::read_rows`], where rows with `keep(row) == false` may come back empty (a pass that needs few rows
    /// skips decoding the others).
    fn read_rows_where(&self, start: usize, end: usize, keep: &dyn Fn(usize) -> bool) -> Result<CsrMatrix> {
        let _ = keep;
        self.read_rows(start, end)
    }
    /// The rows of `start..end` where `keep(row)` holds, as read (a CSR file's rows stay in its read buffers).
    fn read_kept_rows(&self, start: usize, end: usize, keep: &dyn Fn(usize) -> bool) -> Result<KeptRows> {
        Ok(KeptRows::from_csr(start, self.read_rows_where(start, end, keep)?, keep))
    }
    /// The stored values of rows `start..end` with row offsets, if the source can give them without decoding
    /// the column indices (`Ok(None)`: use [`Self::read_rows`]).
    fn read_values(&self, start: usize, end: usize) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let _ = (start, end);
        Ok(None)
    }
    /// Stored entries of `X` if known cheaply (for chunk sizing).
    fn nnz_hint(&self) -> Option<u64> {
        None
    }
    /// Stored entries per row if known without reading the values (a CSR `indptr`); `Ok(None)` otherwise.
    fn row_lengths(&self) -> Result<Option<Vec<u32>>> {
        Ok(None)
    }
}

/// In-memory AnnData as a [`CellSource`].
impl CellSource for AnnData {
    fn shape(&self) -> (usize, usize) {
        self.x.shape()
    }
    fn encoding(&self) -> MatrixEncoding {
        match self.x {
            XMatrix::Sparse(_) => MatrixEncoding::Csr,
            XMatrix::Dense(_) => MatrixEncoding::Dense,
        }
    }
    fn var_names(&self) -> Result<Vec<String>> {
        Ok(self.var.index.clone())
    }
    fn obs_column_names(&self) -> Result<Vec<String>> {
        Ok(self.obs.column_names().into_iter().map(str::to_owned).collect())
    }
    fn obs_column(&self, name: &str) -> Result<Option<Column>> {
        Ok(self.obs.column(name).cloned())
    }
    fn read_rows(&self, start: usize, end: usize) -> Result<CsrMatrix> {
        match &self.x {
            XMatrix::Sparse(m) => {
                let view = m.slice_outer(start..end);
                Ok(view.to_owned())
            }
            XMatrix::Dense(a) => {
                let mut indptr = vec![0usize];
                let mut indices = Vec::new();
                let mut data = Vec::new();
                for r in start..end {
                    for (c, &v) in a.row(r).iter().enumerate() {
                        if v != 0.0 {
                            indices.push(c as u32);
                            data.push(v);
                        }
                    }
                    indptr.push(indices.len());
                }
                Ok(CsrMatrix::new((end - start, a.ncols()), indptr, indices, data))
            }
        }
    }
    fn row_lengths(&self) -> Result<Option<Vec<u32>>> {
        Ok(match &self.x {
            XMatrix::Sparse(m) if m.is_csr() => Some(
                m.indptr().to_proper().windows(2).map(|w| u32::try_from(w[1] - w[0]).unwrap_or(u32::MAX)).collect(),
            ),
            _ => None,
        })
    }
    fn read_obsm(&self, key: &str) -> Result<Array2<f32>> {
        self.obsm.iter().find(|(k, _)| k == key).map(|(_, a)| a.clone()).ok_or_else(|| EvalError::Read {
            file: "<memory>".to_owned(),
            message: format!("<memory>: no obsm key '{key}'"),
        })
    }
}

fn h5ad_err(e: crate::data::h5ad::H5adError) -> EvalError {
    EvalError::Read { file: String::new(), message: e.to_string() }
}

/// The `.h5ad` reader as a [`CellSource`] (rows streamed from disk; CSC `X` is not streamable and is refused
/// with the reader's message).
impl CellSource for H5adReader {
    fn shape(&self) -> (usize, usize) {
        self.x_info().map(|i| i.shape).unwrap_or((0, 0))
    }
    fn encoding(&self) -> MatrixEncoding {
        self.x_info().map(|i| i.encoding).unwrap_or(MatrixEncoding::Csr)
    }
    fn var_names(&self) -> Result<Vec<String>> {
        H5adReader::var_names(self).map_err(h5ad_err)
    }
    fn obs_column_names(&self) -> Result<Vec<String>> {
        H5adReader::obs_column_names(self).map_err(h5ad_err)
    }
    fn obs_column(&self, name: &str) -> Result<Option<Column>> {
        if !H5adReader::obs_column_names(self).map_err(h5ad_err)?.iter().any(|c| c == name) {
            return Ok(None);
        }
        H5adReader::obs_column(self, name).map(Some).map_err(h5ad_err)
    }
    fn read_rows(&self, start: usize, end: usize) -> Result<CsrMatrix> {
        self.read_x_rows(start, end).map_err(h5ad_err)
    }
    fn read_rows_where(&self, start: usize, end: usize, keep: &dyn Fn(usize) -> bool) -> Result<CsrMatrix> {
        self.read_x_rows_where(start, end, keep).map_err(h5ad_err)
    }
    fn read_kept_rows(&self, start: usize, end: usize, keep: &dyn Fn(usize) -> bool) -> Result<KeptRows> {
        self.read_x_kept_rows(start, end, keep).map_err(h5ad_err)
    }
    fn read_values(&self, start: usize, end: usize) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        self.read_x_values(start, end).map_err(h5ad_err)
    }
    fn read_obsm(&self, key: &str) -> Result<Array2<f32>> {
        H5adReader::read_obsm(self, key).map_err(h5ad_err)
    }
    fn nnz_hint(&self) -> Option<u64> {
        self.x_info().ok().and_then(|i| i.nnz)
    }
    fn row_lengths(&self) -> Result<Option<Vec<u32>>> {
        self.x_row_lengths().map_err(h5ad_err)
    }
}

/// Open an `.h5ad` file for streaming; checks that `X`'s shape can be read.
pub fn open_h5ad(path: &Path) -> Result<Box<dyn CellSource>> {
    let r = H5adReader::open(path).map_err(h5ad_err)?;
    r.x_info().map_err(h5ad_err)?;
    Ok(Box::new(r))
}

/// Check and prepare the real/pred pair at these paths (cell-eval's `_build_anndata_pair`): opens both files,
/// scans each `X` once, runs every check in cell-eval's order (module docs). Nothing is computed on a pair that
/// fails a check.
pub fn load_pair(
    real: &Path,
    pred: &Path,
    opts: &InputOptions,
    progress: &dyn Progress,
) -> Result<(PreparedFile, PreparedFile)> {
    // 1. read real, then pred
    let r = open_h5ad(real)?;
    let p = open_h5ad(pred)?;
    load_pair_sources((real, r), (pred, p), opts, progress)
}

/// Open, scan and check one `.h5ad` file on its own (e.g. `baseline` DE): perturbation column, control,
/// NaN/inf and unused categories.
pub fn prepare_file(path: &Path, opts: &InputOptions, progress: &dyn Progress) -> Result<PreparedFile> {
    let s = open_h5ad(path)?;
    prepare_source(path, s, opts, progress)
}

/// Options of the input stage (cell-eval's defaults in [`Default`]).
#[derive(Debug, Clone)]
pub struct InputOptions {
    /// `--pert-col` (default `target_gene`).
    pub pert_col: String,
    /// `--control-pert` (default `non-targeting`).
    pub control: String,
    /// `--allow-discrete`: integer data is used as stored, and log1p data may exceed 15.
    pub allow_discrete: bool,
    /// Target stored entries per row chunk read from `X` (memory of one chunk ≈ 8 bytes × this).
    pub chunk_nnz: usize,
}

impl Default for InputOptions {
    fn default() -> Self {
        InputOptions {
            pert_col: "target_gene".to_owned(),
            control: "non-targeting".to_owned(),
            allow_discrete: false,
            chunk_nnz: 1 << 20,
        }
    }
}

/// A checked file, ready for the DE and pseudobulk passes. Holds the open source, not `X`.
pub struct PreparedFile {
    pub path: PathBuf,
    pub(crate) source: Box<dyn CellSource>,
    pub n_obs: usize,
    pub n_vars: usize,
    pub encoding: MatrixEncoding,
    pub var_names: Vec<String>,
    /// The perturbation column as a categorical (stored category order; -1 = missing).
    pub pert: Categorical,
    pub pert_col: String,
    pub control: String,
    /// Index of the control in `pert.categories`.
    pub control_code: usize,
    /// Cells per category.
    pub counts: Vec<usize>,
    /// How stored values become log1p expression (identity, or the count normalisation).
    pub transform: Transform,
    /// Stored entries per cell (non-zeros after a full scan; all stored entries, from `indptr`, when the value
    /// checks are deferred), for the memory plans of the passes.
    pub row_nnz: Vec<u32>,
    /// The value checks still owed by a file from [`load_pair_sources_deferred`].
    pub(crate) deferred: Option<DeferredValueCheck>,
    /// Rows per chunk when streaming `X`.
    pub chunk_rows: usize,
}

impl std::fmt::Debug for PreparedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFile")
            .field("path", &self.path)
            .field("n_obs", &self.n_obs)
            .field("n_vars", &self.n_vars)
            .field("encoding", &self.encoding)
            .field("categories", &self.pert.categories)
            .field("control", &self.control)
            .finish_non_exhaustive()
    }
}

/// Step 2's value checks (and step 8's NaN/inf check) of a log1p file, run on the rows as the passes read them.
pub(crate) struct DeferredValueCheck {
    /// Stored values must lie in `[0, limit)`: this excludes NaN, ±inf, negatives and, without
    /// `--allow-discrete`, log1p values ≥ 15 (`decide_transform`).
    limit: f32,
    /// Rows whose values were checked.
    seen: std::sync::Mutex<Vec<bool>>,
}

impl DeferredValueCheck {
    fn new(n_obs: usize, allow_discrete: bool) -> Self {
        let limit = if allow_discrete { f32::INFINITY } else { MAX_LOG1P };
        DeferredValueCheck { limit, seen: std::sync::Mutex::new(vec![false; n_obs]) }
    }

    /// Check the rows of a block read at `start` that the pass asked for (`keep`); the first failing row stops
    /// the pass with [`EvalError::DeferredValues`].
    fn check_block(
        &self,
        file: &str,
        start: usize,
        m: &CsrMatrix,
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    ) -> Result<()> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        for (r, row) in m.outer_iterator().enumerate() {
            let i = start + r;
            if keep.is_some_and(|k| !k(i)) || i >= seen.len() {
                continue;
            }
            // a fold, not `all`: no early exit, so it vectorises
            let (limit, values) = (self.limit, row.data());
            if !values.iter().fold(true, |ok, &v| ok & (v >= 0.0) & (v < limit)) {
                return Err(EvalError::DeferredValues { file: file.to_owned() });
            }
            seen[i] = true;
        }
        Ok(())
    }

    /// Rows no pass has read.
    fn unseen(&self) -> Vec<bool> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|&s| !s).collect()
    }
}

impl PreparedFile {
    /// A name for messages.
    pub fn name(&self) -> String {
        self.path.display().to_string()
    }

    /// Whether counts were normalised (`normalize_total` + log1p) on load.
    pub fn was_normalised(&self) -> bool {
        !self.transform.is_identity()
    }

    /// Stream transformed rows of `X` in chunks: `f(first_row, chunk)` with the chunk's values already
    /// transformed to log1p expression. Checks cancellation between chunks.
    pub fn for_each_chunk(
        &self,
        progress: &dyn Progress,
        f: impl FnMut(usize, &CsrMatrix) -> Result<()>,
    ) -> Result<()> {
        self.for_each_chunk_where(progress, None, f)
    }

    /// [`Self::for_each_chunk`] where only the rows with `keep(row)` are needed (the others may be empty).
    pub fn for_each_chunk_where(
        &self,
        progress: &dyn Progress,
        keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
        mut f: impl FnMut(usize, &CsrMatrix) -> Result<()>,
    ) -> Result<()> {
        let (source, n_obs) = (self.source.as_ref(), self.n_obs);
        stream_rows_where(source, &self.name(), self.chunk_rows, 0..n_obs, keep, progress, |start, mut m| {
            if let Some(check) = &self.deferred {
                check.check_block(&self.name(), start, &m, keep)?;
            }
            if !self.transform.is_identity() {
                for (r, mut row) in m.outer_iterator_mut().enumerate() {
                    for (_, v) in row.iter_mut() {
                        *v = self.transform.apply(start + r, *v);
                    }
                }
            }
            f(start, &m)
        })
    }

    /// Open an obsm entry and check its row count.
    pub fn read_obsm(&self, key: &str) -> Result<Array2<f32>> {
        let a = self.source.read_obsm(key)?;
        if a.nrows() != self.n_obs {
            return Err(EvalError::ObsmShape {
                file: self.name(),
                key: key.to_owned(),
                rows: a.nrows(),
                n_obs: self.n_obs,
            });
        }
        Ok(a)
    }
}

/// Read `X` of `source` in chunks of `chunk_rows` rows, checking each block's shape.
pub(crate) fn stream_chunks(
    source: &dyn CellSource,
    name: &str,
    chunk_rows: usize,
    progress: &dyn Progress,
    f: impl FnMut(usize, CsrMatrix) -> Result<()>,
) -> Result<()> {
    stream_rows_where(source, name, chunk_rows, 0..source.shape().0, None, progress, f)
}

/// [`stream_chunks`] over the rows `range`, where only the rows with `keep(row)` are needed (the others may come
/// back empty). A reader thread decodes the next chunk while `f` works on the current one (see [`prefetched`]).
pub(crate) fn stream_rows_where(
    source: &dyn CellSource,
    name: &str,
    chunk_rows: usize,
    range: std::ops::Range<usize>,
    keep: Option<&(dyn Fn(usize) -> bool + Sync)>,
    progress: &dyn Progress,
    mut f: impl FnMut(usize, CsrMatrix) -> Result<()>,
) -> Result<()> {
    let end_row = range.end.min(source.shape().0);
    let read = |start: usize, end: usize| {
        let m = match keep {
            Some(k) => source.read_rows_where(start, end, k)?,
            None => source.read_rows(start, end)?,
        };
        checked_block(source, name, start, end, m)
    };
    prefetched(range.start..end_row, chunk_rows, read, progress, |start, m: CsrMatrix| {
        let rows = m.rows();
        f(start, m)?;
        progress.advance(rows as u64);
        Ok(())
    })
}

/// [`stream_rows_where`] for a consumer that takes the kept rows where they were read (no CSR block is built).
pub(crate) fn stream_kept_rows(
    source: &dyn CellSource,
    name: &str,
    chunk_rows: usize,
    range: std::ops::Range<usize>,
    keep: &(dyn Fn(usize) -> bool + Sync),
    progress: &dyn Progress,
    mut f: impl FnMut(KeptRows) -> Result<()>,
) -> Result<()> {
    let end_row = range.end.min(source.shape().0);
    let n_vars = source.shape().1;
    let read = |start: usize, end: usize| {
        let kept = source.read_kept_rows(start, end, keep)?;
        if kept.start() != start || kept.n_rows() != end - start || kept.n_vars() != n_vars {
            return Err(bad_block(name, start..end, (kept.n_rows(), kept.n_vars()), n_vars));
        }
        Ok(kept)
    };
    prefetched(range.start..end_row, chunk_rows, read, progress, |_, kept: KeptRows| {
        let rows = kept.n_rows();
        f(kept)?;
        progress.advance(rows as u64);
        Ok(())
    })
}

/// `m` if it is the CSR block of rows `start..end` of `source` (a source that returns something else is broken).
fn checked_block(source: &dyn CellSource, name: &str, start: usize, end: usize, m: CsrMatrix) -> Result<CsrMatrix> {
    let n_vars = source.shape().1;
    if m.rows() != end - start || m.cols() != n_vars || !m.is_csr() {
        return Err(bad_block(name, start..end, (m.rows(), m.cols()), n_vars));
    }
    Ok(m)
}

/// The error for a source that returned a `(rows, cols)` block other than rows `asked` of `n_vars` columns.
fn bad_block(name: &str, asked: std::ops::Range<usize>, (rows, cols): (usize, usize), n_vars: usize) -> EvalError {
    let (start, end) = (asked.start, asked.end);
    EvalError::BadBlock { file: name.to_owned(), start, end, rows, cols, expected_rows: end - start, n_vars }
}

/// Every row's stored values, in order: `f(row, values)`. A CSR file is read without its `indices` (each row's
/// indices are checked by the pass that later reads the row); other sources go through [`CellSource::read_rows`].
pub(crate) fn stream_values(
    source: &dyn CellSource,
    name: &str,
    chunk_rows: usize,
    progress: &dyn Progress,
    mut f: impl FnMut(usize, &[f32]) -> Result<()>,
) -> Result<()> {
    let n_obs = source.shape().0;
    let read = |start: usize, end: usize| read_values_block(source, name, start, end);
    prefetched(0..n_obs, chunk_rows, read, progress, |start, (offsets, values)| {
        for (r, w) in offsets.windows(2).enumerate() {
            f(start + r, values.get(w[0]..w[1]).unwrap_or_default())?;
        }
        progress.advance(offsets.len().saturating_sub(1) as u64);
        Ok(())
    })
}

/// Row offsets and stored values of rows `start..end` (see [`stream_values`]).
fn read_values_block(source: &dyn CellSource, name: &str, start: usize, end: usize) -> Result<(Vec<usize>, Vec<f32>)> {
    if let Some(v) = source.read_values(start, end)? {
        return Ok(v);
    }
    let m = checked_block(source, name, start, end, source.read_rows(start, end)?)?;
    let offsets = m.indptr().to_proper().into_owned();
    Ok((offsets, m.data().to_vec()))
}

/// Blocks `read(start, end)` of `chunk_rows` rows over `range`, handed to `f` in order. A reader thread reads
/// the next block while `f` works on the current one (one block in flight), so reading and the caller's work
/// overlap on two cores. An error on either side stops both; cancellation is checked between blocks.
fn prefetched<T: Send>(
    range: std::ops::Range<usize>,
    chunk_rows: usize,
    read: impl Fn(usize, usize) -> Result<T> + Sync,
    progress: &dyn Progress,
    mut f: impl FnMut(usize, T) -> Result<()>,
) -> Result<()> {
    let step = chunk_rows.max(1);
    std::thread::scope(|scope| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(usize, T)>>(1);
        let read = &read;
        scope.spawn(move || {
            let mut start = range.start;
            while start < range.end {
                let end = (start + step).min(range.end);
                let block = read(start, end).map(|b| (start, b));
                let failed = block.is_err();
                // a closed channel means the consumer stopped (error or cancel)
                if tx.send(block).is_err() || failed {
                    return;
                }
                start = end;
            }
        });
        for block in rx {
            if progress.cancelled() {
                return Err(EvalError::Cancelled);
            }
            let (start, b) = block?;
            f(start, b)?;
        }
        Ok(())
    })
}

/// Rows per chunk for about `chunk_nnz` stored entries per chunk.
pub(crate) fn chunk_rows_for(source: &dyn CellSource, chunk_nnz: usize) -> usize {
    let (n_obs, n_vars) = source.shape();
    let per_row = match source.nnz_hint() {
        Some(nnz) if n_obs > 0 => (nnz as usize / n_obs).max(1),
        _ => n_vars.max(1),
    };
    (chunk_nnz / per_row).clamp(16, 8192)
}

/// A source after its scan (steps 1–2), before the pair checks.
struct Scanned {
    path: PathBuf,
    source: Box<dyn CellSource>,
    /// Complete unless `deferred` is set (then: the first chunk only).
    stats: ScanStats,
    transform: Transform,
    chunk_rows: usize,
    row_nnz: Vec<u32>,
    deferred: Option<DeferredValueCheck>,
}

/// Step 2 for one file: a full scan, or with `defer` the first chunk only when that settles the transform (see
/// the module docs).
fn scan(
    path: &Path,
    source: Box<dyn CellSource>,
    opts: &InputOptions,
    progress: &dyn Progress,
    defer: bool,
) -> Result<Scanned> {
    let chunk_rows = chunk_rows_for(source.as_ref(), opts.chunk_nnz);
    let mut s = Scanned {
        path: path.to_owned(),
        source,
        stats: ScanStats::default(),
        transform: Transform::Identity,
        chunk_rows,
        row_nnz: Vec::new(),
        deferred: None,
    };
    if defer {
        probe(&mut s, opts)?;
    }
    if s.deferred.is_none() {
        full_scan(&mut s, opts, progress)?;
    }
    Ok(s)
}

/// Defer the value checks of `s` if its first chunk holds a fraction and passes them, and its row lengths are
/// known without reading `X`.
fn probe(s: &mut Scanned, opts: &InputOptions) -> Result<()> {
    let Some(row_nnz) = s.source.row_lengths()? else { return Ok(()) };
    let name = s.path.display().to_string();
    let (n_obs, n_vars) = s.source.shape();
    if row_nnz.len() != n_obs {
        return Ok(());
    }
    let (offsets, values) = read_values_block(s.source.as_ref(), &name, 0, s.chunk_rows.min(n_obs))?;
    let mut stats = ScanStats::new(n_obs, n_vars);
    for w in offsets.windows(2) {
        stats.push_cell(values.get(w[0]..w[1]).unwrap_or_default());
    }
    let clean = stats.n_nan == 0 && stats.n_inf == 0;
    if stats.any_fractional && clean && decide_transform(&name, &stats, opts.allow_discrete).is_ok() {
        s.stats = stats;
        s.transform = Transform::Identity;
        s.row_nnz = row_nnz;
        s.deferred = Some(DeferredValueCheck::new(n_obs, opts.allow_discrete));
    }
    Ok(())
}

/// Every stored value of `source` through [`ScanStats`] (one streaming pass).
fn scan_stats(source: &dyn CellSource, name: &str, chunk_rows: usize, progress: &dyn Progress) -> Result<ScanStats> {
    let (n_obs, n_vars) = source.shape();
    progress.stage(&format!("scanning {name}"), n_obs as u64);
    let mut stats = ScanStats::new(n_obs, n_vars);
    stream_values(source, name, chunk_rows, progress, |_, values| {
        stats.push_cell(values);
        Ok(())
    })?;
    Ok(stats)
}

/// Step 2 in full: every stored value, then the transform (or the file's step-2 error).
fn full_scan(s: &mut Scanned, opts: &InputOptions, progress: &dyn Progress) -> Result<()> {
    let name = s.path.display().to_string();
    let stats = scan_stats(s.source.as_ref(), &name, s.chunk_rows, progress)?;
    s.transform = decide_transform(&name, &stats, opts.allow_discrete)?;
    s.row_nnz = stats.cell_nnz.clone();
    s.stats = stats;
    s.deferred = None;
    Ok(())
}

/// The label of each cell as cell-eval compares them (`astype(str)`: a missing value is "nan").
fn unique_labels(cat: &Categorical) -> Vec<String> {
    let mut present = vec![false; cat.categories.len()];
    let mut missing = false;
    for &c in &cat.codes {
        if c >= 0 && (c as usize) < present.len() {
            present[c as usize] = true;
        } else {
            missing = true;
        }
    }
    let mut set: BTreeSet<String> =
        cat.categories.iter().zip(&present).filter(|(_, &p)| p).map(|(c, _)| c.clone()).collect();
    if missing {
        set.insert("nan".to_owned());
    }
    set.into_iter().collect()
}

fn pert_column(s: &Scanned, which: &'static str, opts: &InputOptions) -> Result<Categorical> {
    let name = s.path.display().to_string();
    match s.source.obs_column(&opts.pert_col)? {
        Some(col) => {
            let cat = col.to_categorical();
            let n_obs = s.source.shape().0;
            if cat.codes.len() != n_obs {
                return Err(EvalError::BadPertColumn {
                    file: name,
                    column: opts.pert_col.clone(),
                    detail: format!("{} values for {} cells", cat.codes.len(), n_obs),
                });
            }
            Ok(cat)
        }
        None => Err(EvalError::MissingPertColumn {
            which,
            file: name,
            column: opts.pert_col.clone(),
            available: short_list(&s.source.obs_column_names()?, 20),
        }),
    }
}

fn check_control(s: &Scanned, which: &'static str, labels: &[String], opts: &InputOptions) -> Result<()> {
    if labels.contains(&opts.control) {
        Ok(())
    } else {
        Err(EvalError::MissingControl {
            which,
            file: s.path.display().to_string(),
            control: opts.control.clone(),
            labels: short_list(labels, 10),
        })
    }
}

/// Step 8 for one file: NaN/inf, then unused categories (which pdex would turn into groups).
fn check_pdex(s: &Scanned, cat: &Categorical, opts: &InputOptions) -> Result<()> {
    let name = s.path.display().to_string();
    if s.stats.n_nan > 0 || s.stats.n_inf > 0 {
        return Err(EvalError::NonFinite { file: name, n_nan: s.stats.n_nan, n_inf: s.stats.n_inf });
    }
    let counts = cat.counts();
    let unused: Vec<String> =
        cat.categories.iter().zip(&counts).filter(|(c, &n)| n == 0 && !c.is_empty()).map(|(c, _)| c.clone()).collect();
    if !unused.is_empty() {
        return Err(EvalError::UnusedCategory {
            file: name,
            column: opts.pert_col.clone(),
            categories: short_list(&unused, 10),
        });
    }
    Ok(())
}

fn finish(s: Scanned, cat: Categorical, opts: &InputOptions, var_names: Vec<String>) -> Result<PreparedFile> {
    let (n_obs, n_vars) = s.source.shape();
    let control_code =
        cat.categories.iter().position(|c| *c == opts.control).ok_or_else(|| EvalError::MissingControl {
            which: "file",
            file: s.path.display().to_string(),
            control: opts.control.clone(),
            labels: short_list(&cat.categories, 10),
        })?;
    let counts = cat.counts();
    Ok(PreparedFile {
        path: s.path,
        encoding: s.source.encoding(),
        source: s.source,
        n_obs,
        n_vars,
        var_names,
        pert: cat,
        pert_col: opts.pert_col.clone(),
        control: opts.control.clone(),
        control_code,
        counts,
        transform: s.transform,
        row_nnz: s.row_nnz,
        deferred: s.deferred,
        chunk_rows: s.chunk_rows,
    })
}

/// Check and prepare a real/pred pair from open sources (see the module docs for the order of the checks).
pub fn load_pair_sources(
    real: (&Path, Box<dyn CellSource>),
    pred: (&Path, Box<dyn CellSource>),
    opts: &InputOptions,
    progress: &dyn Progress,
) -> Result<(PreparedFile, PreparedFile)> {
    load_pair_impl(real, pred, opts, progress, false)
}

/// [`load_pair_sources`] with the value checks of log1p files deferred to the passes that read `X` (module docs).
/// A pass over a value that fails them stops with [`EvalError::DeferredValues`]; the caller then reports
/// [`exact_value_error`], and calls [`verify_deferred`] before it uses any result.
pub fn load_pair_sources_deferred(
    real: (&Path, Box<dyn CellSource>),
    pred: (&Path, Box<dyn CellSource>),
    opts: &InputOptions,
    progress: &dyn Progress,
) -> Result<(PreparedFile, PreparedFile)> {
    load_pair_impl(real, pred, opts, progress, true)
}

fn load_pair_impl(
    real: (&Path, Box<dyn CellSource>),
    pred: (&Path, Box<dyn CellSource>),
    opts: &InputOptions,
    progress: &dyn Progress,
    defer: bool,
) -> Result<(PreparedFile, PreparedFile)> {
    // 2. log1p / integer check, real then pred: both files are scanned at once (each scan is mostly reading),
    // and real's error, if any, is reported first
    let (real, pred) = std::thread::scope(|s| {
        let pred_scan = s.spawn(|| scan(pred.0, pred.1, opts, progress, defer));
        let real_scan = scan(real.0, real.1, opts, progress, defer);
        let pred_scan = pred_scan.join().map_err(|_| EvalError::Read {
            file: pred.0.display().to_string(),
            message: format!("{}: the scanning thread panicked", pred.0.display()),
        });
        (real_scan, pred_scan)
    });
    let mut real = real?;
    let mut pred = pred??;
    let checked = match pair_checks(&real, &pred, opts) {
        Err(e) if real.deferred.is_some() || pred.deferred.is_some() => {
            // step 2 comes first: with complete scans, the first failing check is the one to report
            full_scan(&mut real, opts, progress)?;
            full_scan(&mut pred, opts, progress)?;
            return Err(pair_checks(&real, &pred, opts).err().unwrap_or(e));
        }
        checked => checked?,
    };
    let real = finish(real, checked.real_cat, opts, checked.real_vars)?;
    let pred = finish(pred, checked.pred_cat, opts, checked.pred_vars)?;
    Ok((real, pred))
}

/// What steps 3–8 read from a scanned pair.
struct PairChecked {
    real_vars: Vec<String>,
    pred_vars: Vec<String>,
    real_cat: Categorical,
    pred_cat: Categorical,
}

/// Steps 3–8 on a scanned pair.
fn pair_checks(real: &Scanned, pred: &Scanned, opts: &InputOptions) -> Result<PairChecked> {
    // 3. gene count
    let real_vars = real.source.var_names()?;
    let pred_vars = pred.source.var_names()?;
    let (rn, pn) = (real.source.shape().1, pred.source.shape().1);
    if rn != pn || real_vars.len() != pred_vars.len() {
        return Err(EvalError::GeneCount { real: rn.max(real_vars.len()), pred: pn.max(pred_vars.len()) });
    }
    // 4. var_names order
    let diffs: Vec<usize> = (0..real_vars.len()).filter(|&i| real_vars[i] != pred_vars[i]).collect();
    if let Some(&index) = diffs.first() {
        return Err(EvalError::GeneOrder {
            index,
            real_name: real_vars[index].clone(),
            pred_name: pred_vars[index].clone(),
            n_diff: diffs.len(),
        });
    }
    // 5. perturbation column, real then pred
    let real_cat = pert_column(real, "real", opts)?;
    let pred_cat = pert_column(pred, "pred", opts)?;
    // 6. label sets
    let real_labels = unique_labels(&real_cat);
    let pred_labels = unique_labels(&pred_cat);
    if real_labels != pred_labels {
        let only = |a: &[String], b: &[String]| -> Vec<String> {
            a.iter().filter(|x| b.binary_search(x).is_err()).cloned().collect()
        };
        return Err(EvalError::PerturbationMismatch {
            column: opts.pert_col.clone(),
            only_real: short_list(&only(&real_labels, &pred_labels), 10),
            only_pred: short_list(&only(&pred_labels, &real_labels), 10),
        });
    }
    // 7. control, real then pred
    check_control(real, "real", &real_labels, opts)?;
    check_control(pred, "pred", &pred_labels, opts)?;
    // 8. what pdex would fail on, real then pred
    check_pdex(real, &real_cat, opts)?;
    check_pdex(pred, &pred_cat, opts)?;
    Ok(PairChecked { real_vars, pred_vars, real_cat, pred_cat })
}

/// Check the rows of a pair from [`load_pair_sources_deferred`] that no pass has read; a value that fails is
/// reported as [`exact_value_error`] would.
pub fn verify_deferred(
    real: &PreparedFile,
    pred: &PreparedFile,
    opts: &InputOptions,
    progress: &dyn Progress,
) -> Result<()> {
    let outcome = check_unseen_rows(real, progress).and_then(|()| check_unseen_rows(pred, progress));
    match outcome {
        Err(EvalError::DeferredValues { .. }) => Err(exact_value_error(real, pred, opts, progress)),
        other => other,
    }
}

fn check_unseen_rows(file: &PreparedFile, progress: &dyn Progress) -> Result<()> {
    let Some(check) = &file.deferred else { return Ok(()) };
    let unseen = check.unseen();
    if !unseen.contains(&true) {
        return Ok(());
    }
    let wanted = |r: usize| unseen.get(r).copied().unwrap_or(false);
    file.for_each_chunk_where(progress, Some(&wanted), |_, _| Ok(()))
}

/// The error cell-eval reports for a pair from [`load_pair_sources_deferred`] whose deferred checks failed: both
/// files scanned in full, then step 2 (real, pred) and step 8's NaN/inf check (real, pred); steps 3–7 and the
/// rest of 8 passed already.
pub fn exact_value_error(
    real: &PreparedFile,
    pred: &PreparedFile,
    opts: &InputOptions,
    progress: &dyn Progress,
) -> EvalError {
    let mut scanned = Vec::with_capacity(2);
    for file in [real, pred] {
        let name = file.name();
        let stats = match scan_stats(file.source.as_ref(), &name, file.chunk_rows, progress) {
            Ok(stats) => stats,
            Err(e) => return e,
        };
        if let Err(e) = decide_transform(&name, &stats, opts.allow_discrete) {
            return e;
        }
        scanned.push((name, stats));
    }
    for (name, stats) in scanned {
        if stats.n_nan > 0 || stats.n_inf > 0 {
            return EvalError::NonFinite { file: name, n_nan: stats.n_nan, n_inf: stats.n_inf };
        }
    }
    EvalError::Read {
        file: real.name(),
        message: "a value failed the input checks while X was read, but a full scan found none".to_owned(),
    }
}

/// Check and prepare a single file (e.g. for `baseline` DE): the per-file checks of [`load_pair_sources`].
pub fn prepare_source(
    path: &Path,
    source: Box<dyn CellSource>,
    opts: &InputOptions,
    progress: &dyn Progress,
) -> Result<PreparedFile> {
    let s = scan(path, source, opts, progress, false)?;
    let vars = s.source.var_names()?;
    let n_vars = s.source.shape().1;
    if vars.len() != n_vars {
        return Err(EvalError::Read {
            file: path.display().to_string(),
            message: format!("{} var names for {} genes", vars.len(), n_vars),
        });
    }
    let cat = pert_column(&s, "file", opts)?;
    check_control(&s, "file", &unique_labels(&cat), opts)?;
    check_pdex(&s, &cat, opts)?;
    finish(s, cat, opts, vars)
}
