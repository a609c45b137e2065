//! Some rows of a CSR block, left in the buffers they were read into.
//!
//! A pass that wants one row in four of a shuffled file still reads nearly all of it (runs of kept rows are merged
//! across short gaps), so copying the kept rows out into a compact [`CsrMatrix`] and checking its structure again
//! is pure overhead for a consumer that copies each row once more into its own layout. [`KeptRows`] hands the kept
//! rows over where they lie; their column indices have been checked (in range, strictly increasing) by whoever
//! built it.

use std::ops::Range;

use crate::data::anndata::CsrMatrix;

/// A run of stored entries as read: column indices in their stored width, values as f32.
#[derive(Debug, Clone)]
pub struct Run {
    pub indices: RunIndices,
    pub data: Vec<f32>,
}

/// Column indices of a run: int32 (anndata's default) as stored, anything else converted once.
#[derive(Debug, Clone)]
pub enum RunIndices {
    I32(Vec<i32>),
    U32(Vec<u32>),
}

/// One row's column indices (checked: `0 ≤ c < n_vars`, strictly increasing).
#[derive(Debug, Clone, Copy)]
pub enum RowIndices<'a> {
    I32(&'a [i32]),
    U32(&'a [u32]),
}

impl RowIndices<'_> {
    pub fn len(&self) -> usize {
        match self {
            RowIndices::I32(s) => s.len(),
            RowIndices::U32(s) => s.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entry `k` (checked non-negative when the row was kept).
    #[inline]
    pub fn get(&self, k: usize) -> u32 {
        match self {
            RowIndices::I32(s) => s[k] as u32,
            RowIndices::U32(s) => s[k],
        }
    }

    /// Appends every entry to `out`.
    #[inline]
    pub fn extend_into(&self, out: &mut Vec<u32>) {
        match self {
            RowIndices::I32(s) => out.extend(s.iter().map(|&c| c as u32)),
            RowIndices::U32(s) => out.extend_from_slice(s),
        }
    }
}

/// The kept rows of rows `start..end` of a CSR matrix with `n_vars` columns, in row order.
#[derive(Debug, Clone)]
pub struct KeptRows {
    start: usize,
    end: usize,
    n_vars: usize,
    runs: Vec<Run>,
    /// (row, run, entries of the row within the run)
    rows: Vec<(usize, usize, Range<usize>)>,
}

impl KeptRows {
    /// `rows` must name ranges within `runs` whose indices are checked (see the module notes); rows not listed
    /// are not kept.
    pub(crate) fn new(
        start: usize,
        end: usize,
        n_vars: usize,
        runs: Vec<Run>,
        rows: Vec<(usize, usize, Range<usize>)>,
    ) -> Self {
        KeptRows { start, end, n_vars, runs, rows }
    }

    /// The rows of `m` (rows `start..` of a matrix) for which `keep(row)` holds; `m`'s structure is valid by
    /// construction (a CSC `m` is converted first).
    pub fn from_csr(start: usize, m: CsrMatrix, keep: &dyn Fn(usize) -> bool) -> Self {
        let m = if m.is_csr() { m } else { m.to_csr() };
        let (n_rows, n_vars) = m.shape();
        let (indptr, indices, data) = m.into_raw_storage();
        let rows = (0..n_rows).filter(|&r| keep(start + r)).map(|r| (start + r, 0, indptr[r]..indptr[r + 1])).collect();
        let runs = vec![Run { indices: RunIndices::U32(indices), data }];
        KeptRows { start, end: start + n_rows, n_vars, runs, rows }
    }

    /// First row of the block.
    pub fn start(&self) -> usize {
        self.start
    }

    /// Rows in the block (kept or not).
    pub fn n_rows(&self) -> usize {
        self.end - self.start
    }

    pub fn n_vars(&self) -> usize {
        self.n_vars
    }

    /// The kept rows: (row, column indices, values).
    pub fn iter(&self) -> impl Iterator<Item = (usize, RowIndices<'_>, &[f32])> {
        self.rows.iter().map(|(row, run, range)| {
            let run = &self.runs[*run];
            let idx = match &run.indices {
                RunIndices::I32(v) => RowIndices::I32(&v[range.clone()]),
                RunIndices::U32(v) => RowIndices::U32(&v[range.clone()]),
            };
            (*row, idx, &run.data[range.clone()])
        })
    }

    /// The block as a CSR matrix (rows not kept are empty); the error is sprs' complaint about the structure,
    /// which the checks made when the rows were kept rule out.
    pub fn into_csr(self) -> Result<CsrMatrix, String> {
        let n = self.n_rows();
        let total: usize = self.rows.iter().map(|(_, _, r)| r.len()).sum();
        let (mut indptr, mut indices, mut data) = (Vec::with_capacity(n + 1), Vec::with_capacity(total), Vec::new());
        data.reserve(total);
        indptr.push(0);
        let mut next = self.start;
        for (row, idx, vals) in self.iter() {
            indptr.extend(std::iter::repeat_n(indices.len(), row - next));
            idx.extend_into(&mut indices);
            data.extend_from_slice(vals);
            indptr.push(indices.len());
            next = row + 1;
        }
        indptr.extend(std::iter::repeat_n(indices.len(), self.end - next));
        CsrMatrix::try_new((n, self.n_vars), indptr, indices, data).map_err(|(_, _, _, e)| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CsrMatrix {
        // 4 × 5: rows 0 and 2 empty-ish
        CsrMatrix::new((4, 5), vec![0, 2, 2, 5, 6], vec![0, 3, 1, 2, 4, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    }

    #[test]
    fn kept_rows_of_a_block_and_back() {
        let keep = |row: usize| row != 12;
        let kept = KeptRows::from_csr(10, sample(), &keep);
        assert_eq!((kept.start(), kept.n_rows(), kept.n_vars()), (10, 4, 5));
        let rows: Vec<(usize, Vec<u32>, Vec<f32>)> = kept
            .iter()
            .map(|(row, idx, vals)| (row, (0..idx.len()).map(|k| idx.get(k)).collect(), vals.to_vec()))
            .collect();
        assert_eq!(rows, vec![(10, vec![0, 3], vec![1.0, 2.0]), (11, vec![], vec![]), (13, vec![2], vec![6.0])]);
        let back = kept.into_csr().unwrap();
        assert_eq!(back.indptr().raw_storage(), &[0, 2, 2, 2, 3]);
        assert_eq!(back.indices(), &[0, 3, 2]);
        assert_eq!(back.data(), &[1.0, 2.0, 6.0]);
    }

    #[test]
    fn a_csc_block_is_taken_as_its_rows() {
        let csr = sample();
        let kept = KeptRows::from_csr(0, csr.to_csc(), &|_| true);
        let back = kept.into_csr().unwrap();
        assert_eq!(back, csr);
    }
}
