//! Per-label mean expression (cell-eval's pseudobulk: `X.toarray()` then polars `group_by(label).mean()`),
//! accumulated in f64 from the streaming pass and stored f32, labels sorted by code point (control included).

use super::error::Result;
use super::input::PreparedFile;
use super::types::Pseudobulk;
use crate::progress::Progress;

/// f64 sums per category, filled row by row.
pub struct PseudobulkAcc {
    n_cols: usize,
    sums: Vec<f64>,
}

impl PseudobulkAcc {
    pub fn new(n_categories: usize, n_cols: usize) -> Self {
        PseudobulkAcc { n_cols, sums: vec![0.0; n_categories * n_cols] }
    }

    /// Add a sparse row of category `code`.
    #[inline]
    pub fn add_sparse(&mut self, code: usize, cols: &[u32], vals: &[f32]) {
        let base = code * self.n_cols;
        for (&c, &v) in cols.iter().zip(vals) {
            self.sums[base + c as usize] += v as f64;
        }
    }

    /// Add a dense row of category `code`.
    #[inline]
    pub fn add_dense(&mut self, code: usize, vals: &[f32]) {
        let base = code * self.n_cols;
        for (s, &v) in self.sums[base..base + self.n_cols].iter_mut().zip(vals) {
            *s += v as f64;
        }
    }

    /// Means of the categories with cells, sorted by label (code point order).
    pub fn finish(self, categories: &[String], counts: &[usize]) -> Pseudobulk {
        let mut order: Vec<usize> = (0..categories.len()).filter(|&c| counts[c] > 0).collect();
        order.sort_by(|&a, &b| categories[a].cmp(&categories[b]));
        let mut means_f64 = Vec::with_capacity(order.len() * self.n_cols);
        for &c in &order {
            let n = counts[c] as f64;
            let row = &self.sums[c * self.n_cols..(c + 1) * self.n_cols];
            means_f64.extend(row.iter().map(|&s| s / n));
        }
        let means = means_f64.iter().map(|&m| m as f32).collect();
        Pseudobulk {
            labels: order.iter().map(|&c| categories[c].clone()).collect(),
            counts: order.iter().map(|&c| counts[c]).collect(),
            n_cols: self.n_cols,
            means,
            means_f64,
        }
    }
}

/// The pseudobulk of `X` (log1p expression, normalised if the file held counts), in one pass.
pub fn compute_pseudobulk(file: &PreparedFile, progress: &dyn Progress) -> Result<Pseudobulk> {
    let mut acc = PseudobulkAcc::new(file.pert.categories.len(), file.n_vars);
    progress.stage(&format!("pseudobulk {}", file.name()), file.n_obs as u64);
    file.for_each_chunk(progress, |start, m| {
        for (r, row) in m.outer_iterator().enumerate() {
            let code = file.pert.codes[start + r];
            if code >= 0 {
                acc.add_sparse(code as usize, row.indices(), row.data());
            }
        }
        Ok(())
    })?;
    Ok(acc.finish(&file.pert.categories, &file.counts))
}

/// The pseudobulk of an `obsm` entry (`--embed-key`).
pub fn compute_pseudobulk_obsm(file: &PreparedFile, key: &str) -> Result<Pseudobulk> {
    let a = file.read_obsm(key)?;
    let mut acc = PseudobulkAcc::new(file.pert.categories.len(), a.ncols());
    for (i, row) in a.rows().into_iter().enumerate() {
        let code = file.pert.codes[i];
        if code >= 0 {
            let v: Vec<f32> = row.to_vec();
            acc.add_dense(code as usize, &v);
        }
    }
    Ok(acc.finish(&file.pert.categories, &file.counts))
}
