//! `cell-eval baseline` (`cell_eval/_baseline.py::build_base_mean_adata`): the cell-mean baseline.
//!
//! The baseline vector is the f32 mean, over every label (control included), of the per-label mean expression
//! (`_build_pert_baseline`: polars `group_by().mean()`, then `pert_matrix.mean(axis=0)`). Every perturbation gets
//! as many copies of it as it has cells in the input (or as a counts CSV says); the input's control cells are
//! appended; only the perturbation column is kept (`ad.concat` keeps the common obs columns). DE of the result
//! against its controls is pdex's, as for any prediction.
//!
//! Differences from cell-eval, deliberate: perturbations are written in sorted order (cell-eval's polars group
//! order varies from run to run), and the mean over labels is summed in sorted label order (cell-eval's order
//! varies too, so its last bits wobble by ~1e-7; see `design/cell-eval.md` §4). Rows are streamed to disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::de::{compute_de, DeOptions};
use super::de_csv::write_de_csv;
use super::error::{EvalError, Result};
use super::input::{prepare_file, InputOptions};
use super::pseudobulk::compute_pseudobulk;
use crate::data::anndata::{Categorical, Column, CsrMatrix, DataFrame};
use crate::data::h5ad::{H5adReader, H5adWriter};
use crate::progress::Progress;

#[derive(Debug, Clone)]
pub struct BaselineOptions {
    pub adata: PathBuf,
    /// Optional CSV with the perturbation column and `n_cells` (cells to write per perturbation).
    pub counts: Option<PathBuf>,
    pub output: PathBuf,
    pub de_output: Option<PathBuf>,
    pub input: InputOptions,
    pub de: DeOptions,
}

/// What was written.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineSummary {
    pub n_perturbations: usize,
    pub n_baseline_cells: usize,
    pub n_control_cells: usize,
    /// The baseline expression vector (log1p space).
    pub vector: Vec<f32>,
}

fn read_err(path: &Path, message: impl Into<String>) -> EvalError {
    EvalError::Read { file: path.display().to_string(), message: message.into() }
}

/// Cells per perturbation from a counts CSV (`<pert_col>,n_cells`), control rows dropped.
fn read_counts(path: &Path, pert_col: &str, control: &str) -> Result<BTreeMap<String, usize>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| read_err(path, e.to_string()))?;
    let headers = reader.headers().map_err(|e| read_err(path, e.to_string()))?.clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            read_err(
                path,
                format!(
                    "{}: column '{name}' not found (header: {})",
                    path.display(),
                    headers.iter().collect::<Vec<_>>().join(",")
                ),
            )
        })
    };
    let (pi, ni) = (col(pert_col)?, col("n_cells")?);
    let mut counts = BTreeMap::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| read_err(path, e.to_string()))?;
        let pert = record.get(pi).unwrap_or_default().to_owned();
        let n: usize = record.get(ni).unwrap_or_default().trim().parse().map_err(|_| {
            read_err(path, format!("{}: line {}: n_cells is not a non-negative integer", path.display(), line + 2))
        })?;
        if pert != control {
            counts.insert(pert, n);
        }
    }
    Ok(counts)
}

pub fn build_baseline(opts: &BaselineOptions, progress: &dyn Progress) -> Result<BaselineSummary> {
    let file = prepare_file(&opts.adata, &opts.input, progress)?;
    let bulk = compute_pseudobulk(&file, progress)?;
    // f32 mean of the label means, summed row by row as numpy's `mean(axis=0)` does for a C-ordered matrix.
    let g = bulk.n_cols;
    let mut sum = vec![0f32; g];
    for row in bulk.means.chunks(g) {
        sum.iter_mut().zip(row).for_each(|(s, v)| *s += *v);
    }
    let n = bulk.labels.len() as f32;
    let vector: Vec<f32> = sum.iter().map(|s| s / n).collect();

    let counts: BTreeMap<String, usize> = match &opts.counts {
        Some(path) => read_counts(path, &opts.input.pert_col, &opts.input.control)?,
        None => bulk
            .labels
            .iter()
            .zip(&bulk.counts)
            .filter(|(l, _)| **l != opts.input.control)
            .map(|(l, c)| (l.clone(), *c))
            .collect(),
    };

    for out in std::iter::once(&opts.output).chain(opts.de_output.as_ref()) {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| read_err(out, e.to_string()))?;
        }
    }
    let reader = H5adReader::open(&opts.adata).map_err(|e| read_err(&opts.adata, e.to_string()))?;
    let var = DataFrame::with_index(file.var_names.clone());
    let out_err = |e: crate::data::h5ad::H5adError| read_err(&opts.output, e.to_string());
    let mut writer = H5adWriter::create(&opts.output, &var).map_err(out_err)?;
    // The baseline row as CSR (zeros dropped, as scipy does when the dense block meets sparse controls).
    let (idx, val): (Vec<u32>, Vec<f32>) =
        vector.iter().enumerate().filter(|(_, v)| **v != 0.0).map(|(j, v)| (j as u32, *v)).unzip();
    const BLOCK: usize = 1024;
    let mut labels: Vec<String> = Vec::new();
    let mut index: Vec<String> = Vec::new();
    progress.stage("writing baseline", counts.values().sum::<usize>() as u64);
    for (pert, &n) in &counts {
        let mut left = n;
        while left > 0 {
            let k = left.min(BLOCK);
            let mut indptr = Vec::with_capacity(k + 1);
            indptr.extend((0..=k).map(|r| r * idx.len()));
            let indices: Vec<u32> = idx.iter().copied().cycle().take(k * idx.len()).collect();
            let data: Vec<f32> = val.iter().copied().cycle().take(k * val.len()).collect();
            writer.append_rows(&CsrMatrix::new((k, g), indptr, indices, data)).map_err(out_err)?;
            left -= k;
            progress.advance(k as u64);
        }
        for _ in 0..n {
            index.push(format!("p.{}", index.len()));
            labels.push(pert.clone());
        }
    }
    let n_baseline = labels.len();
    // The input's controls, normalised like everything else, in obs order.
    let names = reader.obs_names().map_err(|e| read_err(&opts.adata, e.to_string()))?;
    let control_code = file.control_code as i32;
    let mut write_err = None;
    file.for_each_chunk(progress, |start, m| {
        let rows: Vec<usize> =
            (0..m.rows()).filter(|&k| file.pert.codes.get(start + k) == Some(&control_code)).collect();
        if rows.is_empty() {
            return Ok(());
        }
        let mut indptr = vec![0usize];
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        for &k in &rows {
            if let Some(row) = m.outer_view(k) {
                indices.extend_from_slice(row.indices());
                data.extend_from_slice(row.data());
            }
            indptr.push(indices.len());
            index.push(names.get(start + k).cloned().unwrap_or_else(|| format!("c.{}", start + k)));
            labels.push(opts.input.control.clone());
        }
        if let Err(e) = writer.append_rows(&CsrMatrix::new((rows.len(), g), indptr, indices, data)) {
            write_err = Some(e);
        }
        Ok(())
    })?;
    if let Some(e) = write_err {
        return Err(out_err(e));
    }
    let n_control = labels.len() - n_baseline;
    let label_opts: Vec<Option<String>> = labels.into_iter().map(Some).collect();
    let mut obs = DataFrame::with_index(index);
    let cat: Categorical = Categorical::from_labels(&label_opts);
    obs.set_column(&opts.input.pert_col, Column::Categorical(cat));
    writer.finish(&obs, &[]).map_err(out_err)?;

    if let Some(de_path) = &opts.de_output {
        let written = prepare_file(&opts.output, &opts.input, progress)?;
        let table = compute_de(&written, &opts.de, progress)?;
        write_de_csv(&table, de_path)?;
    }
    Ok(BaselineSummary {
        n_perturbations: counts.len(),
        n_baseline_cells: n_baseline,
        n_control_cells: n_control,
        vector,
    })
}
