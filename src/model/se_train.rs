//! SE training: the masked-gene objective on the raw counts of an `.h5ad` (or of the training cells of a data
//! config's datasets), driven by the loop shared with ST ([`super::train::run_loop`]).
//!
//! A checkpoint directory holds `se_config.json` (the [`SeConfig`]), `model.safetensors`, the optimiser state
//! (`optimizer.json` + `optimizer.safetensors`), `train.json` (the [`SeTrainConfig`]), `trainer.json`
//! ([`SeTrainerState`]: step, data cursor, seed) and `gene_embeddings.safetensors`, a copy of the gene table
//! [`SeModel::new`] needs (hard-linked from the previous checkpoint of the same run when possible, so it costs its
//! size once). [`load_se_model`] rebuilds the model for `vcell embed`.
//!
//! Exact resume: the cell order is a seeded permutation per epoch (a pure function of `(seed, epoch)`), each
//! step's sentences are drawn with a seed derived from `(seed, step)`, dropout is reseeded from `(seed, step)`,
//! and AdamW's moments are saved — so N steps = k steps + resume + N−k.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::checkpoint;
use super::optim::AdamW;
use super::precision::Precision;
use super::se::{SeBatcher, SeConfig, SeModel};
use super::train::{
    optim_config, read_json, write_json_atomic, LoopSchedule, StepRecord, TrainTask, TRAINER_STATE_FILE,
    TRAIN_CONFIG_FILE,
};
use super::{ModelError, Result};
use crate::data::anndata::{Column, CsrMatrix};
use crate::data::cell_sentence::{SentenceConfig, SentenceMode};
use crate::data::config::{DataConfig, Split};
use crate::data::gene_embeddings::{GeneEmbeddings, SafetensorsLayout};
use crate::data::h5ad::H5adReader;
use crate::data::sets::DataCursor;
use crate::progress::Progress;

pub const SE_CONFIG_FILE: &str = "se_config.json";
pub const GENE_EMBEDDINGS_FILE: &str = "gene_embeddings.safetensors";
/// Seed of the validation sentences (fixed, so validation losses are comparable across steps).
const VAL_SENTENCE_SEED: u64 = 999;
/// Cell ids of validation cells start here (their random streams differ from the training cells').
const VAL_ID_OFFSET: u64 = 1 << 40;

/// Architecture presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SePreset {
    /// d_model 32, 2 layers, sentences of 64: CI, the demo, CPU experiments.
    #[default]
    Tiny,
    /// Arc's `state-defaults.yaml` (SE-600M's shape; needs a GPU).
    State,
}

/// The SE model + training config file (`vcell train se --config se.toml`). Every field has a default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SeTrainConfig {
    pub preset: SePreset,
    // Architecture overrides of the preset.
    pub d_model: Option<usize>,
    pub n_heads: Option<usize>,
    pub d_hid: Option<usize>,
    pub n_layers: Option<usize>,
    pub output_dim: Option<usize>,
    pub dropout: Option<f64>,
    pub dataset_correction: Option<bool>,
    /// Sentence length (`[CLS]` + genes).
    pub pad_length: Option<usize>,
    /// Task genes per cell: expressed (P), unexpressed (N), batch-shared (S).
    pub n_expressed: Option<usize>,
    pub n_unexpressed: Option<usize>,
    pub n_shared: Option<usize>,
    /// Optimisation.
    pub batch_size: usize,
    pub max_steps: u64,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    /// `cosine`, `linear` or `constant`.
    pub schedule: String,
    pub min_lr_ratio: f64,
    pub max_grad_norm: Option<f64>,
    /// Validation every N steps on at most `val_cells` held-out cells.
    pub val_every: u64,
    pub val_cells: usize,
    pub checkpoint_every: u64,
    pub seed: u64,
    /// `"f32"` (default) or `"bf16"`: mixed precision — bf16 matmuls, f32 master weights (AdamW updates f32),
    /// f32 norms, softmax and loss. Meant for GPUs; on CPU bf16 is slower than f32.
    pub precision: Precision,
}

impl Default for SeTrainConfig {
    fn default() -> Self {
        SeTrainConfig {
            preset: SePreset::Tiny,
            d_model: None,
            n_heads: None,
            d_hid: None,
            n_layers: None,
            output_dim: None,
            dropout: None,
            dataset_correction: None,
            pad_length: None,
            n_expressed: None,
            n_unexpressed: None,
            n_shared: None,
            batch_size: 16,
            max_steps: 200,
            lr: 2e-3,
            weight_decay: 0.01,
            warmup_steps: 10,
            schedule: "cosine".into(),
            min_lr_ratio: 0.1,
            max_grad_norm: Some(10.0),
            val_every: 50,
            val_cells: 128,
            checkpoint_every: 100,
            seed: 42,
            precision: Precision::F32,
        }
    }
}

impl SeTrainConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
    }

    /// The model config for gene vectors of width `token_dim` and `n_datasets` datasets.
    pub fn model_config(&self, token_dim: usize, n_datasets: usize) -> SeConfig {
        let mut c = match self.preset {
            SePreset::Tiny => SeConfig {
                token_dim,
                d_model: 32,
                n_heads: 4,
                d_hid: 64,
                n_layers: 2,
                output_dim: 32,
                dropout: 0.0,
                count_hidden: 32,
                sentence: SentenceConfig {
                    pad_length: 64,
                    n_expressed: 12,
                    n_unexpressed: 8,
                    n_shared: 4,
                    ..SentenceConfig::default()
                },
                ..SeConfig::default()
            },
            SePreset::State => SeConfig { token_dim, ..SeConfig::default() },
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.$f = v; })* };
        }
        set!(d_model, n_heads, d_hid, n_layers, output_dim, dropout, dataset_correction);
        macro_rules! set_sentence {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.sentence.$f = v; })* };
        }
        set_sentence!(pad_length, n_expressed, n_unexpressed, n_shared);
        c.n_datasets = n_datasets.max(1);
        c.precision = self.precision;
        c
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.max_steps == 0 {
            return Err(ModelError::Config("batch_size and max_steps must be at least 1".into()));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(ModelError::Config(format!("lr must be a positive number, got {}", self.lr)));
        }
        Ok(())
    }
}

/// Raw counts of the cells SE trains and validates on.
#[derive(Debug, Clone, PartialEq)]
pub struct SeCells {
    pub var_names: Vec<String>,
    pub dataset_names: Vec<String>,
    pub train: CsrMatrix,
    pub train_dataset: Vec<u32>,
    pub val: CsrMatrix,
    pub val_dataset: Vec<u32>,
}

impl SeCells {
    /// The training-split cells of every dataset of a data config; validation = at most `max_val` cells of the
    /// val split (the test split when there is no val split), spread evenly over it. Datasets must share genes.
    pub fn from_data_config(cfg: &DataConfig, max_val: usize, progress: &dyn Progress) -> Result<Self> {
        let s = &cfg.settings;
        let mut var_names: Option<Vec<String>> = None;
        let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
        let mut dataset_names = Vec::new();
        for (d, (name, path)) in cfg.datasets.iter().enumerate() {
            let reader = H5adReader::open(path).map_err(input_err(path))?;
            let genes = reader.var_names().map_err(input_err(path))?;
            match &var_names {
                Some(v) if *v != genes => {
                    return Err(ModelError::Input(format!(
                        "{}: genes differ from the first dataset's; SE training needs the same var names in every \
                         dataset",
                        path.display()
                    )))
                }
                Some(_) => {}
                None => var_names = Some(genes),
            }
            let column = |col: &str| -> Result<Vec<Option<String>>> {
                let c: Column = reader.obs_column(col).map_err(input_err(path))?;
                Ok((0..c.len()).map(|i| c.label(i)).collect())
            };
            let perts = column(&s.pert_col)?;
            let types = column(&s.cell_type_key)?;
            let mut rows = [Vec::new(), Vec::new(), Vec::new()];
            for (i, (p, t)) in perts.iter().zip(&types).enumerate() {
                let (Some(p), Some(t)) = (p, t) else { continue };
                let splits = cfg.splits_of(name, t, p, *p == s.control_pert);
                for (k, split) in [Split::Train, Split::Val, Split::Test].into_iter().enumerate() {
                    if splits.contains(split) {
                        rows[k].push(i);
                    }
                }
            }
            let all = read_rows(&reader, path, progress)?;
            let d = d as u32;
            for (k, out) in [&mut train, &mut val, &mut test].into_iter().enumerate() {
                out.push((subset(&all, &rows[k]), vec![d; rows[k].len()]));
            }
            dataset_names.push(name.clone());
        }
        let var_names = var_names.ok_or_else(|| ModelError::Input("the data config has no dataset".into()))?;
        let n_vars = var_names.len();
        let (train, train_dataset) = concat(train, n_vars);
        let (mut val, mut val_dataset) = concat(val, n_vars);
        if val.rows() == 0 {
            (val, val_dataset) = concat(test, n_vars);
        }
        if train.rows() == 0 {
            return Err(ModelError::Input("no cell of the data config is in the training split".into()));
        }
        let keep = spread(val.rows(), max_val);
        let val = subset(&val, &keep);
        let val_dataset = keep.iter().map(|&i| val_dataset[i]).collect();
        Ok(SeCells { var_names, dataset_names, train, train_dataset, val, val_dataset })
    }

    /// Every cell of one `.h5ad`; `n_val` of them (a seeded random choice, at most a fifth) are held out.
    pub fn from_h5ad(path: &Path, n_val: usize, seed: u64, progress: &dyn Progress) -> Result<Self> {
        let reader = H5adReader::open(path).map_err(input_err(path))?;
        let var_names = reader.var_names().map_err(input_err(path))?;
        let all = read_rows(&reader, path, progress)?;
        let n = all.rows();
        if n < 2 {
            return Err(ModelError::Input(format!("{}: SE training needs at least 2 cells", path.display())));
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5E_5E));
        let n_val = n_val.min(n / 5).max(1);
        let (val_idx, train_idx) = order.split_at(n_val);
        let (mut val_idx, mut train_idx) = (val_idx.to_vec(), train_idx.to_vec());
        val_idx.sort_unstable();
        train_idx.sort_unstable();
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(SeCells {
            var_names,
            dataset_names: vec![name],
            train_dataset: vec![0; train_idx.len()],
            train: subset(&all, &train_idx),
            val_dataset: vec![0; val_idx.len()],
            val: subset(&all, &val_idx),
        })
    }
}

fn input_err<E: std::fmt::Display>(path: &Path) -> impl FnOnce(E) -> ModelError + '_ {
    move |e| ModelError::Input(format!("{}: {e}", path.display()))
}

/// All rows of X, read in chunks.
fn read_rows(reader: &H5adReader, path: &Path, progress: &dyn Progress) -> Result<CsrMatrix> {
    const CHUNK: usize = 4096;
    let n = reader.n_obs().map_err(input_err(path))?;
    let n_vars = reader.n_vars().map_err(input_err(path))?;
    progress.stage("reading X", n as u64);
    let mut parts = Vec::new();
    for start in (0..n).step_by(CHUNK) {
        let end = (start + CHUNK).min(n);
        parts.push(reader.read_x_rows(start, end).map_err(input_err(path))?);
        progress.advance((end - start) as u64);
    }
    Ok(vstack(&parts, n_vars))
}

/// Rows `idx` of `x`.
pub fn subset(x: &CsrMatrix, idx: &[usize]) -> CsrMatrix {
    let mut indptr = Vec::with_capacity(idx.len() + 1);
    indptr.push(0);
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for &i in idx {
        if let Some(row) = x.outer_view(i) {
            indices.extend_from_slice(row.indices());
            data.extend_from_slice(row.data());
        }
        indptr.push(indices.len());
    }
    CsrMatrix::new((idx.len(), x.cols()), indptr, indices, data)
}

fn vstack(parts: &[CsrMatrix], n_cols: usize) -> CsrMatrix {
    let mut indptr = vec![0];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for m in parts {
        for row in m.outer_iterator() {
            indices.extend_from_slice(row.indices());
            data.extend_from_slice(row.data());
            indptr.push(indices.len());
        }
    }
    CsrMatrix::new((indptr.len() - 1, n_cols), indptr, indices, data)
}

fn concat(parts: Vec<(CsrMatrix, Vec<u32>)>, n_cols: usize) -> (CsrMatrix, Vec<u32>) {
    let ids = parts.iter().flat_map(|p| p.1.iter().copied()).collect();
    let mats: Vec<CsrMatrix> = parts.into_iter().map(|p| p.0).collect();
    (vstack(&mats, n_cols), ids)
}

/// At most `k` indices of `0..n`, evenly spaced.
fn spread(n: usize, k: usize) -> Vec<usize> {
    if n <= k {
        return (0..n).collect();
    }
    (0..k).map(|i| i * n / k).collect()
}

/// What the SE loop saves besides weights and optimiser state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SeTrainerState {
    pub step: u64,
    pub cursor: DataCursor,
    pub seed: u64,
    pub n_train_cells: usize,
    pub dataset_names: Vec<String>,
    pub last_val_loss: Option<f64>,
}

/// An SE model with its optimiser, cells and position in training.
pub struct SeTrainer<'a> {
    cells: &'a SeCells,
    pub cfg: SeTrainConfig,
    pub model_cfg: SeConfig,
    genes: GeneEmbeddings,
    varmap: VarMap,
    model: SeModel,
    batcher: SeBatcher,
    optim: AdamW,
    /// The current epoch's cell order.
    order: (u64, Vec<u32>),
    pub state: SeTrainerState,
    /// The gene-table copy of the last checkpoint written or resumed from (hard-linked into the next one).
    last_genes_copy: Mutex<Option<PathBuf>>,
}

impl<'a> SeTrainer<'a> {
    /// A fresh model over the gene table `genes`.
    pub fn new(cells: &'a SeCells, genes: GeneEmbeddings, cfg: SeTrainConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let model_cfg = cfg.model_config(genes.dim(), cells.dataset_names.len());
        let varmap = VarMap::new();
        let model = SeModel::new(VarBuilder::from_varmap(&varmap, DType::F32, device), &model_cfg, &genes)?;
        let optim = AdamW::new(
            &varmap,
            optim_config(
                cfg.lr,
                cfg.weight_decay,
                &cfg.schedule,
                cfg.warmup_steps,
                cfg.max_steps,
                cfg.min_lr_ratio,
                cfg.max_grad_norm,
            )?,
        )?;
        let state = SeTrainerState {
            step: 0,
            cursor: DataCursor::default(),
            seed: cfg.seed,
            n_train_cells: cells.train.rows(),
            dataset_names: cells.dataset_names.clone(),
            last_val_loss: None,
        };
        Self::assemble(cells, cfg, model_cfg, genes, varmap, model, optim, state, None)
    }

    /// Continue from a checkpoint directory written by [`SeTrainer::save`].
    pub fn resume(cells: &'a SeCells, dir: &Path, device: &Device) -> Result<Self> {
        let cfg: SeTrainConfig = read_json(&dir.join(TRAIN_CONFIG_FILE))?;
        let state: SeTrainerState = read_json(&dir.join(TRAINER_STATE_FILE))?;
        if state.n_train_cells != cells.train.rows() || state.dataset_names != cells.dataset_names {
            return Err(ModelError::Checkpoint(format!(
                "{} was trained on other cells ({} training cells of {:?}) than given ({} of {:?})",
                dir.display(),
                state.n_train_cells,
                state.dataset_names,
                cells.train.rows(),
                cells.dataset_names
            )));
        }
        let (model_cfg, genes, varmap, model) = load_se_model(dir, device)?;
        let optim = checkpoint::load_optimizer(dir, &varmap)?
            .ok_or_else(|| ModelError::Checkpoint(format!("{} has no optimizer state", dir.display())))?;
        let genes_copy = Some(dir.join(GENE_EMBEDDINGS_FILE));
        Self::assemble(cells, cfg, model_cfg, genes, varmap, model, optim, state, genes_copy)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        cells: &'a SeCells,
        cfg: SeTrainConfig,
        model_cfg: SeConfig,
        genes: GeneEmbeddings,
        varmap: VarMap,
        model: SeModel,
        optim: AdamW,
        state: SeTrainerState,
        genes_copy: Option<PathBuf>,
    ) -> Result<Self> {
        if cells.train.rows() == 0 {
            return Err(ModelError::Input("no training cells".into()));
        }
        let batcher = SeBatcher::new(&model, &cells.var_names)?;
        let order = (state.cursor.epoch, epoch_order(state.seed, state.cursor.epoch, cells.train.rows()));
        Ok(SeTrainer {
            cells,
            cfg,
            model_cfg,
            genes,
            varmap,
            model,
            batcher,
            optim,
            order,
            state,
            last_genes_copy: Mutex::new(genes_copy),
        })
    }

    pub fn model(&self) -> &SeModel {
        &self.model
    }

    /// Switches the matmul precision (e.g. `--precision` on a resume). The model is rebuilt on the same
    /// variables, so weights and the optimiser's moments carry over unchanged: only the casts differ.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        if precision == self.model_cfg.precision {
            return Ok(());
        }
        let mut model_cfg = self.model_cfg.clone();
        model_cfg.precision = precision;
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, self.model.device());
        self.model = SeModel::new(vb, &model_cfg, &self.genes)?;
        self.model_cfg = model_cfg;
        self.cfg.precision = precision;
        Ok(())
    }

    pub fn n_params(&self) -> usize {
        super::se::n_params(&self.model_cfg)
    }

    /// How the data's genes matched the gene table.
    pub fn gene_report(&self) -> String {
        self.batcher.gene_match().report()
    }

    /// The next `batch_size` training cells (advancing the cursor through seeded per-epoch permutations).
    fn next_cells(&mut self) -> Vec<usize> {
        let n = self.cells.train.rows() as u64;
        let mut out = Vec::with_capacity(self.cfg.batch_size);
        for _ in 0..self.cfg.batch_size {
            if self.state.cursor.index >= n {
                self.state.cursor.epoch += 1;
                self.state.cursor.index = 0;
            }
            if self.order.0 != self.state.cursor.epoch {
                self.order =
                    (self.state.cursor.epoch, epoch_order(self.state.seed, self.state.cursor.epoch, n as usize));
            }
            let i = self.order.1.get(self.state.cursor.index as usize).copied().unwrap_or(0);
            out.push(i as usize);
            self.state.cursor.index += 1;
        }
        out
    }

    /// One optimisation step on the next batch of cells.
    pub fn step(&mut self) -> Result<StepRecord> {
        let started = Instant::now();
        let idx = self.next_cells();
        let rows = subset(&self.cells.train, &idx);
        let ids: Vec<u64> = idx.iter().map(|&i| i as u64).collect();
        let datasets: Vec<u32> = idx.iter().map(|&i| self.cells.train_dataset.get(i).copied().unwrap_or(0)).collect();
        let step_seed = self.state.seed ^ (self.state.step + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let batch = self.batcher.batch(&rows, &ids, &datasets, SentenceMode::Train, step_seed)?;
        self.model.reseed_dropout(self.state.seed ^ self.state.step.wrapping_mul(0x9E37_79B9));
        let loss = self.model.loss(&batch)?;
        let loss_value = loss.to_scalar::<f32>()? as f64;
        if !loss_value.is_finite() {
            return Err(ModelError::Input(format!(
                "training diverged: loss is {loss_value} at step {}; stopping without saving (the last checkpoint \
                 is kept); lower lr",
                self.state.step + 1
            )));
        }
        let stats = self.optim.backward_step(&loss).map_err(|e| match e {
            ModelError::Input(m) if m.contains("non-finite") => ModelError::Input(format!(
                "training diverged: {m}; stopping without saving (the last checkpoint is kept); lower lr"
            )),
            other => other,
        })?;
        self.state.step += 1;
        let seconds = started.elapsed().as_secs_f64();
        Ok(StepRecord {
            step: self.state.step,
            loss: loss_value,
            lr: stats.lr,
            grad_norm: stats.grad_norm,
            cells_per_s: idx.len() as f64 / seconds.max(1e-9),
            step_seconds: seconds,
        })
    }

    /// Mean masked-gene loss (no dropout, fixed sentences) over the held-out cells; None without any.
    pub fn validation_loss(&self) -> Result<Option<f64>> {
        let n = self.cells.val.rows();
        if n == 0 {
            return Ok(None);
        }
        let (mut total, mut count) = (0.0, 0usize);
        let all: Vec<usize> = (0..n).collect();
        for chunk in all.chunks(self.cfg.batch_size.max(1) * 2) {
            let rows = subset(&self.cells.val, chunk);
            let ids: Vec<u64> = chunk.iter().map(|&i| VAL_ID_OFFSET + i as u64).collect();
            let datasets: Vec<u32> =
                chunk.iter().map(|&i| self.cells.val_dataset.get(i).copied().unwrap_or(0)).collect();
            let batch = self.batcher.batch(&rows, &ids, &datasets, SentenceMode::Train, VAL_SENTENCE_SEED)?;
            let loss = self.model.eval_loss(&batch)?.to_scalar::<f32>()? as f64;
            total += loss * chunk.len() as f64;
            count += chunk.len();
        }
        Ok(Some(total / count.max(1) as f64))
    }

    /// Write a complete checkpoint into `dir` (each file atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save_weights(dir, &self.varmap, Some(&self.optim))?;
        write_json_atomic(&dir.join(SE_CONFIG_FILE), &self.model_cfg)?;
        self.save_genes(&dir.join(GENE_EMBEDDINGS_FILE))?;
        write_json_atomic(&dir.join(TRAIN_CONFIG_FILE), &self.cfg)?;
        write_json_atomic(&dir.join(TRAINER_STATE_FILE), &self.state)
    }

    /// The gene table into `dst`: a hard link to the previous checkpoint's copy when possible, else written.
    fn save_genes(&self, dst: &Path) -> Result<()> {
        let mut last = self.last_genes_copy.lock().map_err(|_| ModelError::Input("gene-table lock poisoned".into()))?;
        let linked = match last.as_deref() {
            Some(src) if src == dst => return Ok(()),
            Some(src) if src.exists() => {
                let tmp = dst.with_extension("safetensors.tmp");
                let _ = std::fs::remove_file(&tmp);
                std::fs::hard_link(src, &tmp).and_then(|()| std::fs::rename(&tmp, dst)).is_ok()
            }
            _ => false,
        };
        if !linked {
            self.genes.write_safetensors(dst, SafetensorsLayout::Matrix).map_err(super::se::SeError::from)?;
        }
        *last = Some(dst.to_path_buf());
        Ok(())
    }
}

impl TrainTask for SeTrainer<'_> {
    fn step(&mut self) -> Result<StepRecord> {
        SeTrainer::step(self)
    }

    fn validation_loss(&self) -> Result<Option<f64>> {
        SeTrainer::validation_loss(self)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        SeTrainer::save(self, dir)
    }

    fn current_step(&self) -> u64 {
        self.state.step
    }

    fn schedule(&self) -> LoopSchedule {
        LoopSchedule {
            max_steps: self.cfg.max_steps,
            val_every: self.cfg.val_every,
            checkpoint_every: self.cfg.checkpoint_every,
        }
    }

    fn set_last_val_loss(&mut self, val_loss: f64) {
        self.state.last_val_loss = Some(val_loss);
    }
}

/// The permutation of `0..n` used in `epoch`.
fn epoch_order(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0xD1B5_4A32_D192_ED03)));
    order
}

/// True when `dir` looks like an SE checkpoint.
pub fn is_se_checkpoint(dir: &Path) -> bool {
    dir.join(SE_CONFIG_FILE).is_file()
}

/// The model of an SE checkpoint directory: config, gene table, weights.
pub fn load_se_model(dir: &Path, device: &Device) -> Result<(SeConfig, GeneEmbeddings, VarMap, SeModel)> {
    if !is_se_checkpoint(dir) {
        return Err(ModelError::Checkpoint(format!(
            "{} is not an SE checkpoint (no {SE_CONFIG_FILE}; was it trained with `vcell train se`?)",
            dir.display()
        )));
    }
    let cfg: SeConfig = read_json(&dir.join(SE_CONFIG_FILE))?;
    let genes = GeneEmbeddings::read(&dir.join(GENE_EMBEDDINGS_FILE)).map_err(super::se::SeError::from)?;
    let mut varmap = VarMap::new();
    let model = SeModel::new(VarBuilder::from_varmap(&varmap, DType::F32, device), &cfg, &genes)?;
    varmap.load(dir.join(checkpoint::MODEL_FILE))?;
    Ok((cfg, genes, varmap, model))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::gene_embeddings::synthetic_gene_embeddings;
    use crate::data::synth::{SynthConfig, SynthDataset};
    use crate::model::train::{run_loop, Ending, TrainHooks};

    struct Hooks {
        dir: PathBuf,
        losses: Vec<f64>,
        stop_at: Option<u64>,
        step: u64,
    }

    impl TrainHooks for Hooks {
        fn stop_requested(&mut self) -> bool {
            self.stop_at == Some(self.step)
        }
        fn on_step(&mut self, r: &StepRecord) -> Result<()> {
            self.step = r.step;
            self.losses.push(r.loss);
            Ok(())
        }
        fn on_validation(&mut self, _: u64, _: f64) -> Result<()> {
            Ok(())
        }
        fn checkpoint_dir(&mut self, step: u64) -> PathBuf {
            self.dir.join(format!("step-{step}.ckpt"))
        }
        fn checkpoint_written(&mut self, _: u64) -> Result<()> {
            Ok(())
        }
    }

    fn cells() -> (SeCells, GeneEmbeddings) {
        let ds = SynthDataset::new(SynthConfig {
            n_genes: 120,
            n_perts: 3,
            n_cell_types: 2,
            cells_per_pert: 6,
            ctrl_per_cell_type: 12,
            ..SynthConfig::default()
        })
        .expect("synth");
        let x = ds.generate_rows(0, ds.n_cells());
        let n = x.rows();
        let genes = synthetic_gene_embeddings(&ds, 8, 1).expect("genes");
        let cells = SeCells {
            var_names: ds.gene_names.clone(),
            dataset_names: vec!["d".into()],
            train: subset(&x, &(0..n - 8).collect::<Vec<_>>()),
            train_dataset: vec![0; n - 8],
            val: subset(&x, &(n - 8..n).collect::<Vec<_>>()),
            val_dataset: vec![0; 8],
        };
        (cells, genes)
    }

    fn cfg() -> SeTrainConfig {
        SeTrainConfig {
            d_model: Some(16),
            n_heads: Some(2),
            d_hid: Some(16),
            output_dim: Some(8),
            dropout: Some(0.1),
            pad_length: Some(24),
            n_expressed: Some(4),
            n_unexpressed: Some(4),
            n_shared: Some(2),
            batch_size: 4,
            max_steps: 6,
            val_every: 3,
            checkpoint_every: 0,
            ..SeTrainConfig::default()
        }
    }

    #[test]
    fn resume_is_exact() {
        let (cells, genes) = cells();
        let dir = tempfile::tempdir().expect("dir");
        let mut full = SeTrainer::new(&cells, genes.clone(), cfg(), &Device::Cpu).expect("trainer");
        // The same initial weights for both runs: save the fresh model and resume both from it.
        let start = dir.path().join("start.ckpt");
        full.save(&start).expect("save");
        let mut a = Hooks { dir: dir.path().join("a"), losses: vec![], stop_at: None, step: 0 };
        full = SeTrainer::resume(&cells, &start, &Device::Cpu).expect("resume");
        assert_eq!(run_loop(&mut full, &mut a).expect("run"), Ending::Finished);
        let mut b = Hooks { dir: dir.path().join("b"), losses: vec![], stop_at: Some(4), step: 0 };
        let mut part = SeTrainer::resume(&cells, &start, &Device::Cpu).expect("resume");
        assert_eq!(run_loop(&mut part, &mut b).expect("run"), Ending::Stopped);
        let mut rest = SeTrainer::resume(&cells, &dir.path().join("b/step-4.ckpt"), &Device::Cpu).expect("resume");
        assert_eq!(rest.state.step, 4);
        b.stop_at = None;
        assert_eq!(run_loop(&mut rest, &mut b).expect("run"), Ending::Finished);
        assert_eq!(a.losses.len(), 6);
        assert_eq!(a.losses, b.losses, "resumed run differs");
        assert!(rest.state.last_val_loss.is_some_and(f64::is_finite));
        let (_, g, _, _) = load_se_model(&dir.path().join("b/step-6.ckpt"), &Device::Cpu).expect("load");
        assert_eq!(g, genes);
    }
}
