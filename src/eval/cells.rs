//! Cell-level access for `pearson_edistance` and `clustering_agreement` without holding the files in memory.
//!
//! `pearson_edistance` visits the cells of every label once per file: the labels are collected a batch at a time
//! (sparse rows within the DE batch budget) by one streaming pass per batch, and each label is densified only while
//! it is used. `clustering_agreement` needs only the f64 mean of each label's cells, which the DE passes already
//! accumulated in cell order (the pseudobulk's `means_f64`), so it reads nothing.

use super::input::PreparedFile;
use super::metrics::{centroids_from_cells, CellSource, DenseCells, MetricError, Side};
use super::types::Pseudobulk;
use crate::progress::NoProgress;

/// The two prepared files as a [`CellSource`].
pub struct PreparedCells<'a> {
    real: (&'a PreparedFile, Option<&'a Pseudobulk>),
    pred: (&'a PreparedFile, Option<&'a Pseudobulk>),
    /// Cells come from `.obsm[key]` instead of `X` (`--embed-key`).
    embed_key: Option<String>,
    /// Budget for the sparse rows collected per pass.
    batch_bytes: usize,
}

/// The rows of one label, stored non-zeros only, in obs order.
#[derive(Default)]
struct LabelRows {
    ends: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl LabelRows {
    fn dense(&self, n_cols: usize) -> DenseCells {
        let mut data = vec![0f32; self.ends.len() * n_cols];
        let mut start = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            let row = &mut data[i * n_cols..(i + 1) * n_cols];
            for (&c, &v) in self.cols[start..end].iter().zip(&self.vals[start..end]) {
                row[c as usize] = v;
            }
            start = end;
        }
        DenseCells { n_rows: self.ends.len(), n_cols, data }
    }
}

impl<'a> PreparedCells<'a> {
    /// `bulks`: the pseudobulks of real and pred (their f64 means serve as centroids), when computed.
    pub fn new(
        (real, pred): (&'a PreparedFile, &'a PreparedFile),
        bulks: (Option<&'a Pseudobulk>, Option<&'a Pseudobulk>),
        embed_key: Option<String>,
        batch_bytes: usize,
    ) -> Self {
        PreparedCells { real: (real, bulks.0), pred: (pred, bulks.1), embed_key, batch_bytes }
    }

    fn side(&self, side: Side) -> (&'a PreparedFile, Option<&'a Pseudobulk>) {
        match side {
            Side::Real => self.real,
            Side::Pred => self.pred,
        }
    }

    /// Category code of each label (None: not in the file, so no cells).
    fn codes(file: &PreparedFile, labels: &[String]) -> Vec<Option<usize>> {
        labels.iter().map(|l| file.pert.categories.iter().position(|c| c == l)).collect()
    }

    /// Labels from `.obsm[key]`: the matrix is small (cells × dimensions), read once.
    fn for_each_embedded(
        file: &PreparedFile,
        key: &str,
        labels: &[String],
        f: &mut dyn FnMut(&str, DenseCells) -> Result<(), MetricError>,
    ) -> Result<(), MetricError> {
        let emb = file.read_obsm(key).map_err(|e| MetricError::Input(e.to_string()))?;
        for (label, code) in labels.iter().zip(Self::codes(file, labels)) {
            let rows: Vec<usize> = (0..emb.nrows())
                .filter(|&i| code.is_some() && file.pert.codes.get(i).and_then(|&c| usize::try_from(c).ok()) == code)
                .collect();
            let mut data = Vec::with_capacity(rows.len() * emb.ncols());
            for &i in &rows {
                data.extend(emb.row(i).iter().copied());
            }
            f(label, DenseCells { n_rows: rows.len(), n_cols: emb.ncols(), data })?;
        }
        Ok(())
    }
}

impl CellSource for PreparedCells<'_> {
    fn cells(&self, side: Side, label: &str) -> Result<DenseCells, MetricError> {
        let mut out = DenseCells::default();
        self.for_each_label(side, &[label.to_owned()], &mut |_, c| {
            out = c;
            Ok(())
        })?;
        Ok(out)
    }

    fn for_each_label(
        &self,
        side: Side,
        labels: &[String],
        f: &mut dyn FnMut(&str, DenseCells) -> Result<(), MetricError>,
    ) -> Result<(), MetricError> {
        let (file, _) = self.side(side);
        if let Some(key) = &self.embed_key {
            return Self::for_each_embedded(file, key, labels, f);
        }
        let codes = Self::codes(file, labels);
        let mut cat_nnz = vec![0usize; file.pert.categories.len()];
        for (i, &c) in file.pert.codes.iter().enumerate() {
            if let Ok(c) = usize::try_from(c) {
                cat_nnz[c] += file.row_nnz.get(i).copied().unwrap_or(0) as usize;
            }
        }
        // batches of consecutive labels within the budget (at least one label each)
        let mut start = 0;
        while start < labels.len() {
            let mut end = start;
            let mut used = 0usize;
            while end < labels.len() {
                let cost = codes[end].map_or(0, |c| cat_nnz[c] * 8 + file.counts[c] * 8);
                if end > start && used + cost > self.batch_bytes {
                    break;
                }
                used += cost;
                end += 1;
            }
            let batch = &codes[start..end];
            // slot of each category in this batch (a label asked twice shares its slot)
            let mut slot = vec![usize::MAX; file.pert.categories.len()];
            for (k, c) in batch.iter().enumerate() {
                if let Some(c) = *c {
                    if slot[c] == usize::MAX {
                        slot[c] = k;
                    }
                }
            }
            let slot_of = |r: usize| -> Option<usize> {
                let code = usize::try_from(*file.pert.codes.get(r)?).ok()?;
                slot.get(code).copied().filter(|&k| k != usize::MAX)
            };
            let mut rows: Vec<LabelRows> = (start..end).map(|_| LabelRows::default()).collect();
            if batch.iter().any(Option::is_some) {
                let wanted = |r: usize| slot_of(r).is_some();
                file.for_each_chunk_where(&NoProgress, Some(&wanted), |first, m| {
                    for (r, row) in m.outer_iterator().enumerate() {
                        if let Some(k) = slot_of(first + r) {
                            let dst = &mut rows[k];
                            dst.cols.extend_from_slice(row.indices());
                            dst.vals.extend_from_slice(row.data());
                            dst.ends.push(dst.cols.len());
                        }
                    }
                    Ok(())
                })
                .map_err(|e| MetricError::Input(e.to_string()))?;
            }
            for (k, label) in labels[start..end].iter().enumerate() {
                let from = batch[k].map_or(k, |c| slot[c]);
                f(label, rows[from].dense(file.n_vars))?;
            }
            start = end;
        }
        Ok(())
    }

    fn centroids(&self, side: Side, labels: &[String]) -> Result<(Vec<f64>, usize), MetricError> {
        match (self.side(side), &self.embed_key) {
            ((_, Some(bulk)), None) => {
                let mut out = Vec::with_capacity(labels.len() * bulk.n_cols);
                for l in labels {
                    match (bulk.row_f64(l), bulk.count(l)) {
                        (Some(row), Some(n)) if n > 0 => out.extend_from_slice(row),
                        _ => {
                            return Err(MetricError::Input(format!("clustering_agreement: no {side:?} cells for {l}")))
                        }
                    }
                }
                Ok((out, bulk.n_cols))
            }
            _ => centroids_from_cells(self, side, labels),
        }
    }
}
