//! Predictions for a held-out split, written as a VCC-style pair of `.h5ad` files:
//! - `real.h5ad`: the split's perturbed cells and the control cells of their cell types, in log1p space;
//! - `pred.h5ad`: the same obs rows, perturbed rows replaced by the predictor's cells, controls copied from real
//!   (as VCC submissions do, so that `vcell eval` and cell-eval compute deltas against the same controls).
//!
//! Predictors: the ST model (each held-out (perturbation, cell type) group cut into sets with matched controls,
//! state's `tx predict` without padding), and the baselines every model has to beat, computed from the training
//! split only:
//! - **control mean**: every perturbed cell = the mean of its cell type's control cells (no effect);
//! - **cell mean**: control mean + the mean shift of all training perturbed cells from their cell type's controls
//!   (cell-eval's cell-mean baseline, moved onto the held-out cell type's controls);
//! - **perturbation mean**: control mean + that perturbation's mean shift in the training cell types where it
//!   was seen (the cell mean when it was never seen).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;

use super::st::StModel;
use super::train::batch_tensors;
use super::{ModelError, Result};
use crate::data::anndata::{Categorical, Column, CsrMatrix, DataFrame};
use crate::data::config::Split;
use crate::data::h5ad::H5adWriter;
use crate::data::sets::{CellSet, SetSampler};
use crate::data::table::CellTable;

/// Which baseline to predict with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    ControlMean,
    CellMean,
    PerturbationMean,
}

impl Baseline {
    pub const ALL: [Baseline; 3] = [Baseline::ControlMean, Baseline::CellMean, Baseline::PerturbationMean];

    pub fn name(self) -> &'static str {
        match self {
            Baseline::ControlMean => "control_mean",
            Baseline::CellMean => "cell_mean",
            Baseline::PerturbationMean => "perturbation_mean",
        }
    }
}

/// Something that predicts the cells of a set from its matched controls.
pub trait Predictor {
    /// Predicted features for `set` (`set.cells.len() × n_features`, row-major).
    fn predict(&mut self, table: &CellTable, set: &CellSet) -> Result<Vec<f32>>;
}

/// The ST model as a predictor (eval mode, one set at a time).
///
/// With `recenter`, every predicted cell is shifted by (mean of the cell type's whole control pool − mean of the
/// set's matched controls): the few controls drawn for a set carry sampling noise that would otherwise pass
/// straight into the predicted pseudobulk (and MAE), while cell-to-cell variation is kept.
pub struct StPredictor<'m> {
    pub model: &'m StModel,
    pub device: Device,
    pub recenter: Option<BTreeMap<u16, Vec<f64>>>,
}

impl Predictor for StPredictor<'_> {
    fn predict(&mut self, table: &CellTable, set: &CellSet) -> Result<Vec<f32>> {
        let (ctrl, pert, batch, _) =
            batch_tensors(table, self.model.config(), std::slice::from_ref(set), &self.device)?;
        let pred = self.model.forward(&ctrl, &pert, batch.as_ref(), false)?;
        let mut values = pred.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?;
        if let Some(pool) = self.recenter.as_ref().and_then(|m| m.get(&set.cell_type)) {
            let g = table.n_features();
            let drawn = table.gather(&set.controls);
            let n = set.controls.len().max(1) as f64;
            let mut drawn_mean = vec![0f64; g];
            for row in drawn.chunks(g) {
                drawn_mean.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64 / n);
            }
            let shift: Vec<f32> = pool.iter().zip(&drawn_mean).map(|(p, d)| (p - d) as f32).collect();
            for row in values.chunks_mut(g) {
                row.iter_mut().zip(&shift).for_each(|(v, s)| *v = (*v + s).max(0.0));
            }
        }
        Ok(values)
    }
}

/// An embedding-space ST model with a gene decoder as a gene-space predictor: sets are built from the embedding
/// table `latent`, predictions decoded to genes (the `table` passed to [`Predictor::predict`] is the expression
/// table of the same cells).
pub struct StGenePredictor<'m> {
    pub model: &'m StModel,
    pub latent: &'m CellTable,
    pub device: Device,
}

impl Predictor for StGenePredictor<'_> {
    fn predict(&mut self, _genes: &CellTable, set: &CellSet) -> Result<Vec<f32>> {
        let (ctrl, pert, batch, _) =
            batch_tensors(self.latent, self.model.config(), std::slice::from_ref(set), &self.device)?;
        let pred = self.model.forward(&ctrl, &pert, batch.as_ref(), false)?;
        let genes = self.model.decode_genes(&pred, false)?;
        Ok(genes.flatten_all()?.to_device(&Device::Cpu)?.to_vec1::<f32>()?)
    }
}

/// Mean features per key over the rows of `rows`, accumulated in f64.
fn means<K: Ord + Clone>(table: &CellTable, rows: impl Iterator<Item = (K, u32)>) -> BTreeMap<K, (Vec<f64>, usize)> {
    let g = table.n_features();
    let mut acc: BTreeMap<K, (Vec<f64>, usize)> = BTreeMap::new();
    let mut buf = vec![0f32; g];
    for (key, row) in rows {
        table.gather_into(&[row], &mut buf);
        let e = acc.entry(key).or_insert_with(|| (vec![0.0; g], 0));
        for (s, v) in e.0.iter_mut().zip(&buf) {
            *s += *v as f64;
        }
        e.1 += 1;
    }
    for (sum, n) in acc.values_mut() {
        sum.iter_mut().for_each(|s| *s /= (*n).max(1) as f64);
    }
    acc
}

/// The baselines, fitted on the training split and the held-out split's controls.
pub struct BaselinePredictor {
    kind: Baseline,
    /// Control mean per cell type, over the controls of the split being predicted.
    control: BTreeMap<u16, Vec<f64>>,
    /// Mean shift of all training perturbed cells from their cell type's training controls.
    cell_shift: Vec<f64>,
    /// Per perturbation: mean over the training cell types where it was seen of its shift.
    pert_shift: BTreeMap<u32, Vec<f64>>,
}

impl BaselinePredictor {
    pub fn fit(table: &CellTable, split: Split, kind: Baseline) -> Result<Self> {
        let in_split = |i: usize, s: Split| table.splits[i].contains(s);
        let control = means(
            table,
            (0..table.n_cells())
                .filter(|&i| in_split(i, split) && table.pert[i] == table.control)
                .map(|i| (table.cell_type[i], i as u32)),
        )
        .into_iter()
        .map(|(k, (m, _))| (k, m))
        .collect();
        let train_ctrl = means(
            table,
            (0..table.n_cells())
                .filter(|&i| in_split(i, Split::Train) && table.pert[i] == table.control)
                .map(|i| (table.cell_type[i], i as u32)),
        );
        let train_groups = means(
            table,
            (0..table.n_cells())
                .filter(|&i| in_split(i, Split::Train) && table.pert[i] != table.control)
                .map(|i| ((table.pert[i], table.cell_type[i]), i as u32)),
        );
        let g = table.n_features();
        let mut cell_shift = vec![0f64; g];
        let mut total = 0usize;
        let mut per_pert: BTreeMap<u32, (Vec<f64>, usize)> = BTreeMap::new();
        for (&(pert, ct), (mean, n)) in &train_groups {
            let Some((base, _)) = train_ctrl.get(&ct) else { continue };
            let shift: Vec<f64> = mean.iter().zip(base).map(|(m, b)| m - b).collect();
            for (c, s) in cell_shift.iter_mut().zip(&shift) {
                *c += s * *n as f64;
            }
            total += n;
            let e = per_pert.entry(pert).or_insert_with(|| (vec![0.0; g], 0));
            e.0.iter_mut().zip(&shift).for_each(|(a, s)| *a += s);
            e.1 += 1;
        }
        if total == 0 && kind != Baseline::ControlMean {
            return Err(ModelError::Input("baselines need perturbed training cells with controls".into()));
        }
        cell_shift.iter_mut().for_each(|c| *c /= total.max(1) as f64);
        let pert_shift =
            per_pert.into_iter().map(|(p, (s, n))| (p, s.into_iter().map(|x| x / n as f64).collect())).collect();
        Ok(BaselinePredictor { kind, control, cell_shift, pert_shift })
    }
}

impl Predictor for BaselinePredictor {
    fn predict(&mut self, table: &CellTable, set: &CellSet) -> Result<Vec<f32>> {
        let base = self
            .control
            .get(&set.cell_type)
            .ok_or_else(|| ModelError::Input(format!("no control cells for cell type {}", set.cell_type)))?;
        let shift = match self.kind {
            Baseline::ControlMean => None,
            Baseline::CellMean => Some(&self.cell_shift),
            Baseline::PerturbationMean => Some(self.pert_shift.get(&set.pert).unwrap_or(&self.cell_shift)),
        };
        // log1p expression is non-negative: clip the shifted mean at 0.
        let row: Vec<f32> = match shift {
            Some(s) => base.iter().zip(s).map(|(b, d)| (b + d).max(0.0) as f32).collect(),
            None => base.iter().map(|&b| b as f32).collect(),
        };
        debug_assert_eq!(row.len(), table.n_features());
        Ok(row.iter().copied().cycle().take(row.len() * set.cells.len()).collect())
    }
}

/// Rows of the pair, in obs order: every held-out perturbed cell (grouped by set), then the split's controls of
/// the same cell types.
pub struct PairLayout {
    pub sets: Vec<CellSet>,
    pub controls: Vec<u32>,
}

impl PairLayout {
    pub fn new(table: &CellTable, split: Split, set_len: usize, seed: u64) -> Result<Self> {
        let sampler =
            SetSampler::new(table, split, set_len, false, seed).map_err(|e| ModelError::Input(e.to_string()))?;
        let sets = sampler.prediction_sets(seed);
        let mut types: Vec<u16> = sets.iter().map(|s| s.cell_type).collect();
        types.sort_unstable();
        types.dedup();
        let controls = types.iter().flat_map(|&t| sampler.control_pool(t).iter().copied()).collect();
        Ok(PairLayout { sets, controls })
    }

    fn obs(&self, table: &CellTable) -> DataFrame {
        let rows: Vec<u32> =
            self.sets.iter().flat_map(|s| s.cells.iter().copied()).chain(self.controls.clone()).collect();
        let categorical = |codes: Vec<i32>, names: &[String]| {
            Column::Categorical(Categorical { codes, categories: names.to_vec(), ordered: false })
        };
        let mut obs = DataFrame::with_index(rows.iter().map(|r| format!("cell{r}")).collect());
        obs.set_column(
            "target_gene",
            categorical(rows.iter().map(|&r| table.pert[r as usize] as i32).collect(), &table.pert_names),
        );
        obs.set_column(
            "cell_type",
            categorical(rows.iter().map(|&r| table.cell_type[r as usize] as i32).collect(), &table.cell_type_names),
        );
        obs.set_column(
            "batch",
            categorical(rows.iter().map(|&r| table.batch[r as usize] as i32).collect(), &table.batch_names),
        );
        drop_unused_categories(&mut obs);
        obs
    }
}

/// cell-eval rejects declared categories without cells (pdex divides by their size): keep only used ones.
fn drop_unused_categories(obs: &mut DataFrame) {
    for (_, col) in obs.columns.iter_mut() {
        if let Column::Categorical(c) = col {
            let counts = c.counts();
            let mut remap = vec![-1i32; c.categories.len()];
            let mut kept = Vec::new();
            for (i, name) in c.categories.iter().enumerate() {
                if counts[i] > 0 {
                    remap[i] = kept.len() as i32;
                    kept.push(name.clone());
                }
            }
            for code in c.codes.iter_mut() {
                if *code >= 0 {
                    *code = remap[*code as usize];
                }
            }
            c.categories = kept;
        }
    }
}

fn dense_to_csr(values: &[f32], n_rows: usize, n_cols: usize) -> CsrMatrix {
    let mut indptr = vec![0usize];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for r in 0..n_rows {
        for (j, &v) in values[r * n_cols..(r + 1) * n_cols].iter().enumerate() {
            if v != 0.0 {
                indices.push(j as u32);
                data.push(v);
            }
        }
        indptr.push(indices.len());
    }
    CsrMatrix::new((n_rows, n_cols), indptr, indices, data)
}

fn write_rows(
    path: &Path,
    table: &CellTable,
    layout: &PairLayout,
    mut row_source: impl FnMut(&CellSet) -> Result<Vec<f32>>,
) -> Result<()> {
    let g = table.n_features();
    let var = DataFrame::with_index(table.feature_names.clone());
    let data_err = |e: crate::data::h5ad::H5adError| ModelError::Input(e.to_string());
    let mut writer = H5adWriter::create(path, &var).map_err(data_err)?;
    for set in &layout.sets {
        let values = row_source(set)?;
        if values.len() != set.cells.len() * g || values.iter().any(|v| !v.is_finite()) {
            return Err(ModelError::Input(format!(
                "prediction for {} has {} values (expected {}) or NaN/inf",
                table.pert_names[set.pert as usize],
                values.len(),
                set.cells.len() * g
            )));
        }
        writer.append_rows(&dense_to_csr(&values, set.cells.len(), g)).map_err(data_err)?;
    }
    for chunk in layout.controls.chunks(1024) {
        writer.append_rows(&dense_to_csr(&table.gather(chunk), chunk.len(), g)).map_err(data_err)?;
    }
    writer.finish(&layout.obs(table), &[]).map_err(data_err)
}

/// Write the real cells of the layout (log1p features) to `path`.
pub fn write_real(path: &Path, table: &CellTable, layout: &PairLayout) -> Result<()> {
    write_rows(path, table, layout, |set| Ok(table.gather(&set.cells)))
}

/// Write a predictor's cells for the layout to `path` (controls copied from the real data).
pub fn write_prediction(
    path: &Path,
    table: &CellTable,
    layout: &PairLayout,
    predictor: &mut dyn Predictor,
) -> Result<()> {
    write_rows(path, table, layout, |set| predictor.predict(table, set))
}

/// Predicted mean expression per (perturbation, cell type) — for quick checks without writing files.
pub fn predicted_means(
    table: &CellTable,
    layout: &PairLayout,
    predictor: &mut dyn Predictor,
) -> Result<BTreeMap<(u32, u16), Vec<f64>>> {
    let g = table.n_features();
    let mut acc: BTreeMap<(u32, u16), (Vec<f64>, usize)> = BTreeMap::new();
    for set in &layout.sets {
        let values = predictor.predict(table, set)?;
        let e = acc.entry((set.pert, set.cell_type)).or_insert_with(|| (vec![0.0; g], 0));
        for row in values.chunks(g) {
            e.0.iter_mut().zip(row).for_each(|(a, v)| *a += *v as f64);
            e.1 += 1;
        }
    }
    Ok(acc.into_iter().map(|(k, (s, n))| (k, s.into_iter().map(|x| x / n as f64).collect())).collect())
}

/// The ST predictor on `device`, recentred on the control pools of `split` (see [`StPredictor`]).
pub fn st_predictor<'m>(model: &'m StModel, device: &Device, table: &CellTable, split: Split) -> StPredictor<'m> {
    let pools = means(
        table,
        (0..table.n_cells())
            .filter(|&i| table.splits[i].contains(split) && table.pert[i] == table.control)
            .map(|i| (table.cell_type[i], i as u32)),
    );
    let recenter = Some(pools.into_iter().map(|(k, (m, _))| (k, m)).collect());
    StPredictor { model, device: device.clone(), recenter }
}
