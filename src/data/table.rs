//! The cells a model trains on: features in log1p-normalised space (or an `obsm` embedding), with perturbation,
//! cell type, batch and split of every cell, loaded from the datasets of a [`DataConfig`].
//!
//! Raw integer counts are normalised as state's `preprocess_train` does (scanpy `normalize_total` to the median
//! cell total of the file, then `log1p`); data that is already log1p is kept as it is.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ndarray::Array2;

use super::anndata::{Column, CsrMatrix};
use super::config::{preview, ConfigError, DataConfig, SplitSet};
use super::h5ad::{H5adError, H5adReader};
use crate::progress::Progress;

/// Features of the loaded cells.
#[derive(Debug, Clone, PartialEq)]
pub enum Features {
    /// log1p-normalised expression, cells × genes.
    Sparse(CsrMatrix),
    /// An embedding (`obsm`), cells × dims.
    Dense(Array2<f32>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CellTable {
    pub features: Features,
    pub feature_names: Vec<String>,
    /// Perturbation vocabulary (union over datasets, sorted); `control` indexes the control label.
    pub pert_names: Vec<String>,
    pub control: u32,
    pub cell_type_names: Vec<String>,
    pub batch_names: Vec<String>,
    pub pert: Vec<u32>,
    pub cell_type: Vec<u16>,
    pub batch: Vec<u16>,
    pub splits: Vec<SplitSet>,
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    H5ad(#[from] H5adError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{file}: obs column {column:?} not found (columns: {available})")]
    MissingColumn { file: PathBuf, column: String, available: String },
    #[error("{file}: control label {control:?} not found in obs column {column:?} (labels: {labels})")]
    NoControl { file: PathBuf, control: String, column: String, labels: String },
    #[error("{file}: genes differ from {first}: every dataset must have the same var names in the same order")]
    GeneMismatch { file: PathBuf, first: PathBuf },
    #[error("{file}: {what}")]
    BadValues { file: PathBuf, what: String },
    #[error("too many {what} ({n}); at most {max} are supported")]
    TooMany { what: &'static str, n: usize, max: usize },
    #[error("no cell of any dataset is assigned to a split: check [training], [zeroshot] and [fewshot]")]
    Empty,
}

impl CellTable {
    pub fn n_cells(&self) -> usize {
        self.pert.len()
    }

    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Write the dense features of `rows` into `out` (`rows.len() × n_features`, row-major).
    pub fn gather_into(&self, rows: &[u32], out: &mut [f32]) {
        let g = self.n_features();
        out.fill(0.0);
        for (k, &r) in rows.iter().enumerate() {
            let dst = &mut out[k * g..(k + 1) * g];
            match &self.features {
                Features::Sparse(m) => {
                    if let Some(row) = m.outer_view(r as usize) {
                        for (j, &v) in row.iter() {
                            dst[j] = v;
                        }
                    }
                }
                Features::Dense(a) => {
                    for (d, s) in dst.iter_mut().zip(a.row(r as usize)) {
                        *d = *s;
                    }
                }
            }
        }
    }

    /// Dense features of `rows`.
    pub fn gather(&self, rows: &[u32]) -> Vec<f32> {
        let mut out = vec![0.0; rows.len() * self.n_features()];
        self.gather_into(rows, &mut out);
        out
    }

    /// Load every dataset of the config (only cells assigned to some split), normalising counts.
    pub fn load(cfg: &DataConfig, progress: &dyn Progress) -> Result<Self, TableError> {
        let s = &cfg.settings;
        let mut first_genes: Option<(PathBuf, Vec<String>)> = None;
        let mut parts = Vec::new();
        let mut known = BTreeMap::new();
        for (name, path) in &cfg.datasets {
            let reader = H5adReader::open(path)?;
            let genes = match &s.embed_key {
                Some(key) => {
                    let emb = reader.read_obsm(key)?;
                    (0..emb.ncols()).map(|d| format!("{key}_{d}")).collect()
                }
                None => reader.var_names()?,
            };
            match &first_genes {
                Some((first, g)) if *g != genes => {
                    return Err(TableError::GeneMismatch { file: path.clone(), first: first.clone() })
                }
                Some(_) => {}
                None => first_genes = Some((path.clone(), genes)),
            }
            let column = |col: &str| -> Result<Vec<Option<String>>, TableError> {
                let names = reader.obs_column_names()?;
                if !names.iter().any(|n| n == col) {
                    return Err(TableError::MissingColumn {
                        file: path.clone(),
                        column: col.to_owned(),
                        available: preview(&names),
                    });
                }
                let c: Column = reader.obs_column(col)?;
                Ok((0..c.len()).map(|i| c.label(i)).collect())
            };
            let perts = column(&s.pert_col)?;
            let types = column(&s.cell_type_key)?;
            let batches = if s.batch_col.is_empty() { vec![None; perts.len()] } else { column(&s.batch_col)? };
            let mut labels: Vec<String> = perts.iter().flatten().cloned().collect();
            labels.sort();
            labels.dedup();
            if !labels.contains(&s.control_pert) {
                return Err(TableError::NoControl {
                    file: path.clone(),
                    control: s.control_pert.clone(),
                    column: s.pert_col.clone(),
                    labels: preview(&labels),
                });
            }
            let mut type_names: Vec<String> = types.iter().flatten().cloned().collect();
            type_names.sort();
            type_names.dedup();
            known.insert(name.clone(), (type_names, labels));
            parts.push((name.clone(), path.clone(), reader, perts, types, batches));
        }
        cfg.check_labels(&known)?;

        let mut pert_names: Vec<String> = known.values().flat_map(|(_, p)| p.iter().cloned()).collect();
        pert_names.sort();
        pert_names.dedup();
        let mut cell_type_names: Vec<String> = known.values().flat_map(|(t, _)| t.iter().cloned()).collect();
        cell_type_names.sort();
        cell_type_names.dedup();
        let mut batch_names: Vec<String> = parts.iter().flat_map(|p| p.5.iter().flatten().cloned()).collect::<Vec<_>>();
        batch_names.sort();
        batch_names.dedup();
        if batch_names.is_empty() {
            batch_names.push(String::new());
        }
        if cell_type_names.len() >= u16::MAX as usize || batch_names.len() >= u16::MAX as usize {
            return Err(TableError::TooMany { what: "cell types or batches", n: cell_type_names.len(), max: 65534 });
        }
        let index = |names: &[String], l: &str| names.binary_search_by(|n| n.as_str().cmp(l)).unwrap_or(0);
        let control = index(&pert_names, &s.control_pert) as u32;

        let (mut pert, mut cell_type, mut batch, mut splits) = (vec![], vec![], vec![], vec![]);
        let mut sparse_parts: Vec<CsrMatrix> = Vec::new();
        let mut dense_rows: Vec<f32> = Vec::new();
        let n_features = first_genes.as_ref().map_or(0, |(_, g)| g.len());
        for (name, path, reader, perts, types, batches) in &parts {
            let keep: Vec<usize> = (0..perts.len())
                .filter(|&i| {
                    let (Some(p), Some(t)) = (&perts[i], &types[i]) else { return false };
                    !cfg.splits_of(name, t, p, *p == s.control_pert).is_empty()
                })
                .collect();
            for &i in &keep {
                let (Some(p), Some(t)) = (&perts[i], &types[i]) else { continue };
                pert.push(index(&pert_names, p) as u32);
                cell_type.push(index(&cell_type_names, t) as u16);
                batch.push(batches[i].as_deref().map_or(0, |b| index(&batch_names, b)) as u16);
                splits.push(cfg.splits_of(name, t, p, *p == s.control_pert));
            }
            match &s.embed_key {
                Some(key) => {
                    let emb = reader.read_obsm(key)?;
                    if emb.iter().any(|v| !v.is_finite()) {
                        return Err(TableError::BadValues {
                            file: path.clone(),
                            what: format!("obsm/{key} has NaN or infinite values"),
                        });
                    }
                    for &i in &keep {
                        dense_rows.extend(emb.row(i).iter());
                    }
                }
                None => sparse_parts.push(read_log1p_rows(reader, path, &keep, progress)?),
            }
        }
        if pert.is_empty() {
            return Err(TableError::Empty);
        }
        let features = match &s.embed_key {
            Some(_) => Features::Dense(
                Array2::from_shape_vec((pert.len(), n_features), dense_rows)
                    .map_err(|e| TableError::BadValues { file: cfg.path.clone(), what: e.to_string() })?,
            ),
            None => Features::Sparse(vstack(&sparse_parts, n_features)),
        };
        let mut table = CellTable {
            features,
            feature_names: first_genes.map(|(_, g)| g).unwrap_or_default(),
            pert_names,
            control,
            cell_type_names,
            batch_names,
            pert,
            cell_type,
            batch,
            splits,
        };
        if let (Some(n), None) = (s.hvg, &s.embed_key) {
            table.keep_top_variable_genes(n);
        }
        Ok(table)
    }

    /// Keep the `n` genes with the highest variance of log1p expression over the training cells (a simple,
    /// deterministic stand-in for scanpy's dispersion-based HVG ranking), in their original order.
    pub fn keep_top_variable_genes(&mut self, n: usize) {
        let Features::Sparse(m) = &self.features else { return };
        if n >= m.cols() {
            return;
        }
        let (mut sum, mut sq) = (vec![0f64; m.cols()], vec![0f64; m.cols()]);
        let mut count = 0f64;
        for (i, row) in m.outer_iterator().enumerate() {
            if !self.splits[i].contains(super::config::Split::Train) {
                continue;
            }
            count += 1.0;
            for (j, &v) in row.iter() {
                sum[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let count = count.max(1.0);
        let var: Vec<f64> = (0..m.cols()).map(|j| sq[j] / count - (sum[j] / count).powi(2)).collect();
        let mut order: Vec<usize> = (0..m.cols()).collect();
        order.sort_by(|&a, &b| var[b].total_cmp(&var[a]).then(a.cmp(&b)));
        let mut keep = order[..n].to_vec();
        keep.sort_unstable();
        let mut new_index = vec![u32::MAX; m.cols()];
        for (k, &g) in keep.iter().enumerate() {
            new_index[g] = k as u32;
        }
        let mut indptr = vec![0usize];
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        for row in m.outer_iterator() {
            for (j, &v) in row.iter() {
                if new_index[j] != u32::MAX {
                    indices.push(new_index[j]);
                    data.push(v);
                }
            }
            indptr.push(indices.len());
        }
        self.features = Features::Sparse(CsrMatrix::new((m.rows(), n), indptr, indices, data));
        self.feature_names = keep.iter().map(|&g| self.feature_names[g].clone()).collect();
    }
}

/// Read the `keep` rows of X in chunks, normalising raw counts (median total, log1p) when X holds integers.
fn read_log1p_rows(
    reader: &H5adReader,
    path: &std::path::Path,
    keep: &[usize],
    progress: &dyn Progress,
) -> Result<CsrMatrix, TableError> {
    const CHUNK: usize = 8192;
    let n_obs = reader.n_obs()?;
    let n_vars = reader.n_vars()?;
    progress.stage("reading cells", n_obs as u64);
    let mut wanted = vec![false; n_obs];
    for &i in keep {
        wanted[i] = true;
    }
    let (mut indptr, mut indices, mut data) = (vec![0usize], Vec::new(), Vec::new());
    let mut all_integer = true;
    let mut totals = Vec::with_capacity(n_obs);
    for start in (0..n_obs).step_by(CHUNK) {
        let end = (start + CHUNK).min(n_obs);
        let chunk = reader.read_x_rows(start, end)?;
        for (k, row) in chunk.outer_iterator().enumerate() {
            let mut total = 0f64;
            for (_, &v) in row.iter() {
                if !v.is_finite() || v < 0.0 {
                    return Err(TableError::BadValues {
                        file: path.to_owned(),
                        what: format!("X has a negative, NaN or infinite value in cell {}", start + k),
                    });
                }
                all_integer &= v.fract() == 0.0;
                total += v as f64;
            }
            totals.push(total);
            if wanted[start + k] {
                for (j, &v) in row.iter() {
                    indices.push(j as u32);
                    data.push(v);
                }
                indptr.push(indices.len());
            }
        }
        progress.advance((end - start) as u64);
    }
    if all_integer && !data.is_empty() {
        let mut sorted: Vec<f64> = totals.iter().copied().filter(|t| *t > 0.0).collect();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.is_empty() {
            1.0
        } else if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        for (r, &cell) in keep.iter().enumerate() {
            let scale = if totals[cell] > 0.0 { median / totals[cell] } else { 0.0 };
            for v in &mut data[indptr[r]..indptr[r + 1]] {
                *v = ((*v as f64) * scale).ln_1p() as f32;
            }
        }
    }
    Ok(CsrMatrix::new((keep.len(), n_vars), indptr, indices, data))
}

fn vstack(parts: &[CsrMatrix], n_cols: usize) -> CsrMatrix {
    let mut indptr = vec![0usize];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for m in parts {
        for row in m.outer_iterator() {
            indices.extend(row.indices());
            data.extend(row.data());
            indptr.push(indices.len());
        }
    }
    CsrMatrix::new((indptr.len() - 1, n_cols), indptr, indices, data)
}
