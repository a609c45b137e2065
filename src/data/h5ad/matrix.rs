//! Expression matrices on disk (`X`, `layers/*`): CSR/CSC groups and dense 2-D datasets.
//!
//! Everything read from a file is validated before it reaches `sprs` (which panics or misbehaves on bad
//! structure): indptr length, start, monotonicity and end, index bounds, and duplicate indices. Unsorted column
//! indices within a row are sorted, since scipy allows them.

use hdf5::types::{IntSize, TypeDescriptor as TD};
use hdf5::{Dataset, File, LocationType};
use ndarray::Array2;

use super::error::{At, Ctx, Result};
use super::hdf::{self, Desc, RawIndices};
use super::ranges::read_ranges;
use crate::data::anndata::{CsrMatrix, MatrixEncoding, StoredDtype, XMatrix};
use crate::data::kept_rows::{KeptRows, Run, RunIndices};

/// What `x_info()` reports: read from attributes and dataset shapes only, never from the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct XInfo {
    pub encoding: MatrixEncoding,
    pub dtype: StoredDtype,
    /// (n_obs, n_vars)
    pub shape: (usize, usize),
    /// Stored entries; sparse only.
    pub nnz: Option<u64>,
}

/// An opened matrix element.
pub(crate) enum MatrixNode {
    Sparse(SparseNode),
    Dense(DenseNode),
}

pub(crate) struct SparseNode {
    pub element: String,
    pub csc: bool,
    pub shape: (usize, usize),
    pub data: Dataset,
    pub indices: Dataset,
    pub indptr: Dataset,
    pub nnz: usize,
}

pub(crate) struct DenseNode {
    pub element: String,
    pub ds: Dataset,
    pub shape: (usize, usize),
}

impl MatrixNode {
    /// Opens `element` (e.g. `/X`, `/layers/counts`) and checks its metadata (encoding, shape, lengths).
    pub fn open(ctx: Ctx<'_>, file: &File, element: &str) -> Result<Self> {
        let name = element.trim_start_matches('/');
        if !file.link_exists(name) {
            return Err(ctx.missing(element));
        }
        match file.loc_type_by_name(name).at(ctx, element)? {
            LocationType::Dataset => {
                let ds = file.dataset(name).at(ctx, element)?;
                DenseNode::open(ctx, ds, element).map(MatrixNode::Dense)
            }
            LocationType::Group => SparseNode::open(ctx, file, element).map(MatrixNode::Sparse),
            #[allow(unreachable_patterns)]
            _ => Err(ctx.invalid(element, "expected a group or a dataset")),
        }
    }

    pub fn shape(&self) -> (usize, usize) {
        match self {
            MatrixNode::Sparse(s) => s.shape,
            MatrixNode::Dense(d) => d.shape,
        }
    }

    pub fn info(&self, ctx: Ctx<'_>) -> Result<XInfo> {
        let (encoding, ds, element, nnz) = match self {
            MatrixNode::Sparse(s) => (
                if s.csc { MatrixEncoding::Csc } else { MatrixEncoding::Csr },
                &s.data,
                format!("{}/data", s.element),
                Some(s.nnz as u64),
            ),
            MatrixNode::Dense(d) => (MatrixEncoding::Dense, &d.ds, d.element.clone(), None),
        };
        let desc = hdf::descriptor(ctx, ds, &element)?;
        let dtype = desc.stored_dtype().ok_or_else(|| ctx.dtype(&element, &desc))?;
        Ok(XInfo { encoding, dtype, shape: self.shape(), nnz })
    }

    /// The whole matrix; CSC is converted to CSR.
    pub fn read_all(&self, ctx: Ctx<'_>) -> Result<XMatrix> {
        match self {
            MatrixNode::Sparse(s) if s.csc => s.read_csc_as_csr(ctx).map(XMatrix::Sparse),
            MatrixNode::Sparse(s) => {
                let indptr = s.read_indptr(ctx)?;
                s.read_csr_rows(ctx, &indptr, 0, s.shape.0).map(XMatrix::Sparse)
            }
            MatrixNode::Dense(d) => d.read_rows(ctx, 0, d.shape.0).map(XMatrix::Dense),
        }
    }
}

impl DenseNode {
    fn open(ctx: Ctx<'_>, ds: Dataset, element: &str) -> Result<Self> {
        if let Some(enc) = hdf::encoding_type(ctx, &ds, element)? {
            if enc != "array" {
                return Err(ctx.encoding(element, &enc));
            }
        }
        let shape = match ds.get_shape().at(ctx, element)?.as_slice() {
            [r, c] => (*r, *c),
            other => return Err(ctx.invalid(element, format!("a dense matrix must be 2-D, found shape {other:?}"))),
        };
        Ok(DenseNode { element: element.to_owned(), ds, shape })
    }

    /// Rows `[start, end)` as f32 (any numeric or bool dtype).
    pub fn read_rows(&self, ctx: Ctx<'_>, start: usize, end: usize) -> Result<Array2<f32>> {
        check_range(ctx, &self.element, start, end, self.shape.0)?;
        let desc = hdf::descriptor(ctx, &self.ds, &self.element)?;
        let sel = hdf::row_block(start, end);
        match desc.stored_dtype() {
            Some(StoredDtype::Bool) => {
                Ok(self.ds.read_slice_2d::<bool, _>(sel).at(ctx, &self.element)?.mapv(|b| if b { 1.0 } else { 0.0 }))
            }
            Some(_) => self.ds.read_slice_2d::<f32, _>(sel).at(ctx, &self.element),
            None => Err(ctx.dtype(&self.element, desc)),
        }
    }
}

/// Stored entries between two kept rows up to which [`SparseNode::read_csr_kept_rows`] reads through the gap
/// instead of issuing another read (32 Ki entries: 128 KB per array, about what an HDF5 read call costs).
const MERGE_GAP: usize = 32 * 1024;

/// [`MERGE_GAP`] where runs are read as one union selection (`ranges::read_ranges`): a range of the union costs
/// HDF5 about one system call, so only gaps of about a page are read through.
const MERGE_GAP_UNION: usize = 1024;

/// Runs per union read: HDF5 merges each range into the selection's span list, so very long unions are split.
const RUNS_PER_UNION: usize = 256;

impl SparseNode {
    fn open(ctx: Ctx<'_>, file: &File, element: &str) -> Result<Self> {
        let name = element.trim_start_matches('/');
        let group = file.group(name).at(ctx, element)?;
        let csc = match hdf::encoding_type(ctx, &group, element)?.as_deref() {
            Some("csr_matrix") => false,
            Some("csc_matrix") => true,
            Some(other) => return Err(ctx.encoding(element, other)),
            // Files written before anndata 0.7 (h5sparse) carry `h5sparse_format` instead.
            None => match hdf::attr_string(ctx, &group, element, "h5sparse_format")?.as_deref() {
                Some("csr") => false,
                Some("csc") => true,
                Some(other) => return Err(ctx.encoding(element, other)),
                None => {
                    return Err(ctx
                        .invalid(element, "group has no encoding-type attribute (expected csr_matrix or csc_matrix)"))
                }
            },
        };
        let shape = match hdf::attr_u64s(ctx, &group, element, "shape")? {
            Some(s) => s,
            None => hdf::attr_u64s(ctx, &group, element, "h5sparse_shape")?
                .ok_or_else(|| ctx.missing(&format!("{element} (attribute 'shape')")))?,
        };
        let shape = match shape.as_slice() {
            [r, c] => (to_usize(ctx, element, *r)?, to_usize(ctx, element, *c)?),
            other => return Err(ctx.invalid(element, format!("shape attribute must have 2 entries, found {other:?}"))),
        };
        let member = |m: &str| -> Result<Dataset> {
            let el = format!("{element}/{m}");
            if !group.link_exists(m) {
                return Err(ctx.missing(&el));
            }
            group.dataset(m).at(ctx, &el)
        };
        let (data, indices, indptr) = (member("data")?, member("indices")?, member("indptr")?);
        let nnz = hdf::len_1d(ctx, &data, &format!("{element}/data"))?;
        let n_indices = hdf::len_1d(ctx, &indices, &format!("{element}/indices"))?;
        if n_indices != nnz {
            return Err(ctx
                .invalid(&format!("{element}/indices"), format!("length {n_indices} differs from data length {nnz}")));
        }
        let major = if csc { shape.1 } else { shape.0 };
        let n_indptr = hdf::len_1d(ctx, &indptr, &format!("{element}/indptr"))?;
        if n_indptr != major + 1 {
            return Err(ctx.invalid(
                &format!("{element}/indptr"),
                format!(
                    "length {n_indptr}, expected {} ({} {} + 1, from the shape attribute {:?})",
                    major + 1,
                    major,
                    if csc { "columns" } else { "rows" },
                    shape
                ),
            ));
        }
        // Indices are held as u32 in memory (see `CsrMatrix`).
        if u32::try_from(shape.0).is_err() || u32::try_from(shape.1).is_err() {
            return Err(ctx.unsupported(element, "dimensions of 2^32 or more"));
        }
        Ok(SparseNode { element: element.to_owned(), csc, shape, data, indices, indptr, nnz })
    }

    /// The whole indptr, validated: starts at 0, never decreases, ends at nnz.
    pub fn read_indptr(&self, ctx: Ctx<'_>) -> Result<Vec<usize>> {
        let element = format!("{}/indptr", self.element);
        let raw = hdf::read_u64(ctx, &self.indptr, &element, None)?;
        let mut out = Vec::with_capacity(raw.len());
        let mut prev = 0u64;
        for (i, &v) in raw.iter().enumerate() {
            if i == 0 && v != 0 {
                return Err(ctx.invalid(&element, format!("must start at 0, starts at {v}")));
            }
            if v < prev {
                return Err(
                    ctx.invalid(&element, format!("not monotone: indptr[{i}] = {v} < indptr[{}] = {prev}", i - 1))
                );
            }
            prev = v;
            out.push(to_usize(ctx, &element, v)?);
        }
        if prev != self.nnz as u64 {
            return Err(ctx.invalid(
                &element,
                format!("out of range: last entry is {prev} but data has {} stored values", self.nnz),
            ));
        }
        Ok(out)
    }

    /// Minor-axis indices `[a, b)` checked against `bound`, as u32.
    fn read_indices(&self, ctx: Ctx<'_>, a: usize, b: usize, bound: usize) -> Result<Vec<u32>> {
        let element = format!("{}/indices", self.element);
        // bound <= u32::MAX was checked at open
        let axis = if self.csc { "n_obs" } else { "n_vars" };
        hdf::read_indices_u32(ctx, &self.indices, &element, Some(a..b), bound, axis)
    }

    /// The positions `[a, b)` in `indices`/`data` of rows `[start, end)`.
    fn stored_range(&self, ctx: Ctx<'_>, indptr: &[usize], start: usize, end: usize) -> Result<(usize, usize)> {
        check_range(ctx, &self.element, start, end, self.shape.0)?;
        let bounds = indptr.get(start).zip(indptr.get(end));
        let (&a, &b) = bounds.ok_or_else(|| ctx.invalid(&self.element, "indptr too short"))?;
        Ok((a, b))
    }

    fn read_data(&self, ctx: Ctx<'_>, range: std::ops::Range<usize>) -> Result<Vec<f32>> {
        hdf::read_f32(ctx, &self.data, &format!("{}/data", self.element), Some(range))
    }

    /// Rows `[start, end)` of a CSR matrix, reading only that slice of `indices` and `data`.
    pub fn read_csr_rows(&self, ctx: Ctx<'_>, indptr: &[usize], start: usize, end: usize) -> Result<CsrMatrix> {
        let (a, b) = self.stored_range(ctx, indptr, start, end)?;
        let indices = self.read_indices(ctx, a, b, self.shape.1)?;
        let data = self.read_data(ctx, a..b)?;
        let local: Vec<usize> = indptr.get(start..=end).unwrap_or_default().iter().map(|p| p - a).collect();
        build_csr(ctx, &self.element, (end - start, self.shape.1), local, indices, data)
    }

    /// The rows of `[start, end)` where `keep(row)` holds, left in the read buffers. Only the stored ranges of the
    /// kept rows are read: runs of kept rows, merged across small gaps where one larger range is cheaper than two
    /// ([`MERGE_GAP_UNION`]; [`MERGE_GAP`] for the types read one run per call), up to [`RUNS_PER_UNION`] runs
    /// per HDF5 read (`ranges::read_ranges`). Only the kept rows are checked: each row's column indices in one pass
    /// (in range and strictly increasing), an unsorted row sorted in place (scipy allows them), a repeated column
    /// an error.
    pub fn read_csr_kept_rows(
        &self,
        ctx: Ctx<'_>,
        indptr: &[usize],
        start: usize,
        end: usize,
        keep: &dyn Fn(usize) -> bool,
    ) -> Result<KeptRows> {
        self.stored_range(ctx, indptr, start, end)?;
        let idx_element = format!("{}/indices", self.element);
        let data_element = format!("{}/data", self.element);
        // int32 indices and numeric (not bool, not float16) data: a group of runs is one union read per array
        let union = matches!(hdf::descriptor(ctx, &self.indices, &idx_element)?, Desc::Known(TD::Integer(IntSize::U4)))
            && matches!(
                hdf::descriptor(ctx, &self.data, &data_element)?,
                Desc::Known(TD::Float(_) | TD::Integer(_) | TD::Unsigned(_))
            );
        let (merge_gap, runs_per_read) = if union { (MERGE_GAP_UNION, RUNS_PER_UNION) } else { (MERGE_GAP, 1) };
        // row runs [r0, r1) to read
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for r in (start..end).filter(|&r| keep(r)) {
            match runs.last_mut() {
                Some((_, e)) if indptr[r] - indptr[*e] <= merge_gap => *e = r + 1,
                _ => runs.push((r, r + 1)),
            }
        }
        let n_vars = self.shape.1;
        let mut read_runs = Vec::new();
        let mut rows = Vec::new();
        for (run, group) in runs.chunks(runs_per_read).enumerate() {
            let ranges: Vec<std::ops::Range<usize>> = group.iter().map(|&(r0, r1)| indptr[r0]..indptr[r1]).collect();
            let total: usize = ranges.iter().map(|r| r.len()).sum();
            let (mut raw, mut data) = if union {
                (
                    RawIndices::I32(read_ranges::<i32>(&self.indices, &ranges).at(ctx, &idx_element)?),
                    read_ranges::<f32>(&self.data, &ranges).at(ctx, &data_element)?,
                )
            } else {
                // one run per read (`chunks` never yields an empty group)
                let r = ranges[0].clone();
                (hdf::read_indices_raw(ctx, &self.indices, &idx_element, Some(r.clone()))?, self.read_data(ctx, r)?)
            };
            if raw.len() != total || data.len() != total {
                let (a, b) = (ranges[0].start, ranges[ranges.len() - 1].end);
                return Err(ctx.invalid(&self.element, format!("short read of entries in {a}..{b}")));
            }
            // where each range starts in the buffers
            let mut base = 0usize;
            for (&(r0, r1), range) in group.iter().zip(&ranges) {
                for r in (r0..r1).filter(|&r| keep(r)) {
                    // indptr is checked (non-decreasing, ending at nnz), so the row lies within its range
                    let (s, e) = (base + indptr[r] - range.start, base + indptr[r + 1] - range.start);
                    let vals = &mut data[s..e];
                    let checked = match &mut raw {
                        RawIndices::I32(v) => check_kept_row(&mut v[s..e], vals, |c| c >= 0 && (c as usize) < n_vars),
                        RawIndices::U64(v) => check_kept_row(&mut v[s..e], vals, |c| c < n_vars as u64),
                    };
                    match checked {
                        RowCheck::Ok => rows.push((r, run, s..e)),
                        RowCheck::OutOfRange(k) => {
                            let v = raw.get_i128(s + k).unwrap_or_default();
                            return Err(ctx.invalid(
                                &idx_element,
                                format!("indices[{}] = {v} out of range (n_vars = {n_vars})", indptr[r] + k),
                            ));
                        }
                        RowCheck::Repeated(c) => {
                            return Err(ctx.invalid(&idx_element, format!("duplicate column index {c} in row {r}")))
                        }
                    }
                }
                base += range.len();
            }
            let indices = match raw {
                RawIndices::I32(v) => RunIndices::I32(v),
                // every kept row's entries are below n_vars < 2^32; the others are never looked at
                RawIndices::U64(v) => RunIndices::U32(v.into_iter().map(|c| c as u32).collect()),
            };
            read_runs.push(Run { indices, data });
        }
        Ok(KeptRows::new(start, end, n_vars, read_runs, rows))
    }

    /// The stored values of rows `[start, end)` and their offsets (`offsets[i]..offsets[i + 1]` is row
    /// `start + i`), without reading or checking `indices`: for passes that only look at values.
    pub fn read_csr_values(
        &self,
        ctx: Ctx<'_>,
        indptr: &[usize],
        start: usize,
        end: usize,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let (a, b) = self.stored_range(ctx, indptr, start, end)?;
        let data = self.read_data(ctx, a..b)?;
        let offsets = indptr.get(start..=end).unwrap_or_default().iter().map(|p| p - a).collect();
        Ok((offsets, data))
    }

    /// A whole CSC matrix, transposed into CSR (rows come out with sorted columns).
    fn read_csc_as_csr(&self, ctx: Ctx<'_>) -> Result<CsrMatrix> {
        let (n_rows, n_cols) = self.shape;
        let colptr = self.read_indptr(ctx)?;
        let rows = self.read_indices(ctx, 0, self.nnz, n_rows)?;
        let vals = hdf::read_f32(ctx, &self.data, &format!("{}/data", self.element), None)?;
        let mut indptr = vec![0usize; n_rows + 1];
        for &r in &rows {
            indptr[r as usize + 1] += 1;
        }
        for i in 0..n_rows {
            indptr[i + 1] += indptr[i];
        }
        let mut next = indptr.clone();
        let mut indices = vec![0u32; self.nnz];
        let mut data = vec![0f32; self.nnz];
        for col in 0..n_cols {
            for k in colptr[col]..colptr[col + 1] {
                let r = rows[k] as usize;
                indices[next[r]] = col as u32;
                data[next[r]] = vals[k];
                next[r] += 1;
            }
        }
        build_csr(ctx, &self.element, self.shape, indptr, indices, data)
    }
}

/// Dense rows to CSR, dropping exact zeros (NaN is kept: it is not zero).
pub(crate) fn dense_to_csr(ctx: Ctx<'_>, element: &str, a: &Array2<f32>) -> Result<CsrMatrix> {
    let mut indptr = Vec::with_capacity(a.nrows() + 1);
    let mut indices = Vec::new();
    let mut data = Vec::new();
    indptr.push(0);
    for row in a.rows() {
        for (j, &v) in row.iter().enumerate() {
            if v != 0.0 {
                indices.push(j as u32);
                data.push(v);
            }
        }
        indptr.push(data.len());
    }
    build_csr(ctx, element, a.dim(), indptr, indices, data)
}

/// Sorts each row's column indices if needed, rejects duplicates, and builds the matrix with `try_new`.
/// Callers guarantee `indptr` is monotone, starts at 0 and ends at `data.len()`, and indices < cols.
pub(crate) fn build_csr(
    ctx: Ctx<'_>,
    element: &str,
    shape: (usize, usize),
    indptr: Vec<usize>,
    mut indices: Vec<u32>,
    mut data: Vec<f32>,
) -> Result<CsrMatrix> {
    if data.len() != indices.len() {
        return Err(ctx.invalid(element, "data and indices differ in length"));
    }
    for (row, w) in indptr.windows(2).enumerate() {
        let (a, b) = (w[0], w[1]);
        let Some(idx) = indices.get(a..b) else {
            return Err(ctx.invalid(element, format!("row {row} runs past the stored values")));
        };
        if !idx.windows(2).all(|p| p[0] < p[1]) {
            let mut pairs: Vec<(u32, f32)> = idx.iter().copied().zip(data[a..b].iter().copied()).collect();
            pairs.sort_by_key(|p| p.0);
            if let Some(p) = pairs.windows(2).find(|p| p[0].0 == p[1].0) {
                return Err(ctx.invalid(
                    &format!("{element}/indices"),
                    format!("duplicate column index {} in row {row}", p[0].0),
                ));
            }
            for (k, (c, v)) in pairs.into_iter().enumerate() {
                indices[a + k] = c;
                data[a + k] = v;
            }
        }
    }
    CsrMatrix::try_new(shape, indptr, indices, data)
        .map_err(|(_, _, _, e)| ctx.invalid(element, format!("invalid sparse structure: {e}")))
}

/// The outcome of [`check_kept_row`].
enum RowCheck {
    Ok,
    /// The first entry out of range (position in the row).
    OutOfRange(usize),
    /// A column stored twice.
    Repeated(u64),
}

/// Checks one row's column indices: the usual sorted, in-range row in one branch-free pass; otherwise the first
/// entry out of range, or (all in range) the row sorted in place with its values, or a repeated column.
fn check_kept_row<T: Copy + Ord + Into<i128>>(
    idx: &mut [T],
    vals: &mut [f32],
    in_range: impl Fn(T) -> bool,
) -> RowCheck {
    let sorted = idx.windows(2).fold(true, |ok, w| ok & (w[0] < w[1]));
    // strictly increasing from an in-range first entry to an in-range last one: every entry is in range
    if sorted && idx.first().is_none_or(|&c| in_range(c)) && idx.last().is_none_or(|&c| in_range(c)) {
        return RowCheck::Ok;
    }
    if let Some(k) = idx.iter().position(|&c| !in_range(c)) {
        return RowCheck::OutOfRange(k);
    }
    let mut pairs: Vec<(T, f32)> = idx.iter().copied().zip(vals.iter().copied()).collect();
    pairs.sort_by_key(|p| p.0);
    if let Some(p) = pairs.windows(2).find(|p| p[0].0 == p[1].0) {
        return RowCheck::Repeated(u64::try_from(p[0].0.into()).unwrap_or_default());
    }
    for (k, (c, v)) in pairs.into_iter().enumerate() {
        idx[k] = c;
        vals[k] = v;
    }
    RowCheck::Ok
}

fn check_range(ctx: Ctx<'_>, element: &str, start: usize, end: usize, n: usize) -> Result<()> {
    if start > end || end > n {
        return Err(ctx.invalid(element, format!("row range {start}..{end} is outside 0..{n}")));
    }
    Ok(())
}

fn to_usize(ctx: Ctx<'_>, element: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| ctx.invalid(element, format!("value {v} too large")))
}
