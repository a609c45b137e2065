//! The ST training loop: sets with matched controls → `StModel` → energy/MMD loss → AdamW, with validation,
//! checkpoints that resume exactly, and a NaN guard.
//!
//! The loop knows nothing about run directories or terminals: it talks to a [`TrainHooks`] (the CLI wires it to
//! a `jobs::JobContext` and a progress bar). A checkpoint is a directory written by [`checkpoint::save`] plus
//! `trainer.json` (step, data cursor, seeds); it is complete before `TrainHooks::checkpoint_written` is called.
//!
//! Exact resume: the data order is a pure function of `(seed, cursor)` (see `data::sets`), dropout is reseeded
//! from `(seed, step)` every step, and the optimiser's moments are saved, so N steps = k steps + resume + N−k.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};

use super::checkpoint;
use super::loss::LossKind;
use super::mlp::GeneDecoderConfig;
use super::optim::{AdamW, LrSchedule, OptimConfig};
use super::precision::Precision;
use super::st::{init_seeded, OutputSpace, StConfig, StModel};
use super::{ModelError, Result};
use crate::data::config::Split;
use crate::data::sets::{CellSet, DataCursor, SetSampler};
use crate::data::table::CellTable;

pub const TRAINER_STATE_FILE: &str = "trainer.json";
pub const TRAIN_CONFIG_FILE: &str = "train.json";

/// Architecture presets (state.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StPreset {
    /// A few hundred thousand parameters: CI, the demo, CPU experiments.
    #[default]
    Tiny,
    /// Arc's `state_sm` (the VCC Colab model).
    StateSm,
    /// Arc's `state` (0.11.x defaults).
    State,
}

/// The model + training config file (`--config st.toml`). Every field has a default.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StTrainConfig {
    pub preset: StPreset,
    // Architecture overrides of the preset.
    pub hidden_dim: Option<usize>,
    pub n_layers: Option<usize>,
    pub n_heads: Option<usize>,
    pub head_dim: Option<usize>,
    pub ffn_dim: Option<usize>,
    pub n_encoder_layers: Option<usize>,
    pub dropout: Option<f32>,
    /// Cells per set (`cell_set_len`).
    pub cell_set_len: Option<usize>,
    /// Add a learned batch embedding (`batch_encoder`).
    pub batch_encoder: bool,
    /// Head: `delta` = control + predicted shift (vcell's, the default), `arc` = Arc's head.
    pub head: String,
    /// Optimisation.
    pub batch_size: usize,
    pub max_steps: u64,
    pub lr: f64,
    pub weight_decay: f64,
    pub warmup_steps: u64,
    /// `cosine`, `linear` or `constant` (Arc's default is constant).
    pub schedule: String,
    pub min_lr_ratio: f64,
    pub max_grad_norm: Option<f64>,
    pub loss: LossKind,
    /// Validation every N steps on `val_sets` fixed sets of the val split (test when there is no val split).
    pub val_every: u64,
    pub val_sets: usize,
    pub checkpoint_every: u64,
    pub seed: u64,
    /// With `[data] embed_key` (training in an embedding space): also train Arc's gene decoder from the predicted
    /// embeddings to the cells' log1p expression, so that `vcell predict` can write gene-space predictions.
    pub decode_genes: bool,
    /// Hidden widths of the gene decoder (Arc: [1024, 1024, 512]).
    pub decoder_hidden: Vec<usize>,
    /// Weight of the decoder's loss in the training loss (Arc: 1.0).
    pub decoder_weight: f64,
    /// `"f32"` (default) or `"bf16"`: mixed precision — bf16 matmuls, f32 master weights (AdamW updates f32),
    /// f32 norms, softmax and loss. Meant for GPUs; on CPU bf16 is slower than f32.
    pub precision: Precision,
}

impl Default for StTrainConfig {
    fn default() -> Self {
        StTrainConfig {
            preset: StPreset::Tiny,
            hidden_dim: None,
            n_layers: None,
            n_heads: None,
            head_dim: None,
            ffn_dim: None,
            n_encoder_layers: None,
            dropout: None,
            cell_set_len: None,
            batch_encoder: false,
            head: "delta".into(),
            batch_size: 8,
            max_steps: 400,
            lr: 1e-3,
            weight_decay: 1e-4,
            warmup_steps: 20,
            schedule: "cosine".into(),
            min_lr_ratio: 0.1,
            max_grad_norm: Some(10.0),
            loss: LossKind::Energy,
            val_every: 50,
            val_sets: 16,
            checkpoint_every: 100,
            seed: 42,
            decode_genes: false,
            decoder_hidden: vec![256, 256],
            decoder_weight: 1.0,
            precision: Precision::F32,
        }
    }
}

impl StTrainConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
        toml::from_str(&text).map_err(|e| ModelError::Config(format!("{}: {e}", path.display())))
    }

    /// The model config for data with `input_dim` features, `pert_dim` perturbations and `n_batches` batches.
    pub fn model_config(&self, input_dim: usize, pert_dim: usize, n_batches: usize) -> StConfig {
        let mut c = match self.preset {
            StPreset::Tiny => StConfig::tiny(input_dim, pert_dim),
            StPreset::StateSm => StConfig::state_sm(input_dim, pert_dim),
            StPreset::State => StConfig::state(input_dim, pert_dim),
        };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.$f = v; })* };
        }
        set!(hidden_dim, n_layers, n_heads, head_dim, ffn_dim, n_encoder_layers, dropout, cell_set_len);
        if let Some(n) = self.n_encoder_layers {
            c.n_decoder_layers = n;
        }
        c.n_batches = if self.batch_encoder { Some(n_batches.max(1)) } else { None };
        c.output_space = OutputSpace::All;
        c.delta_head = self.head != "arc";
        c.precision = self.precision;
        c
    }

    fn optim_config(&self) -> Result<OptimConfig> {
        optim_config(
            self.lr,
            self.weight_decay,
            &self.schedule,
            self.warmup_steps,
            self.max_steps,
            self.min_lr_ratio,
            self.max_grad_norm,
        )
    }

    fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.max_steps == 0 {
            return Err(ModelError::Config("batch_size and max_steps must be at least 1".into()));
        }
        if self.head != "delta" && self.head != "arc" {
            return Err(ModelError::Config(format!("head {:?} is not \"delta\" or \"arc\"", self.head)));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(ModelError::Config(format!("lr must be a positive number, got {}", self.lr)));
        }
        Ok(())
    }
}

/// What the loop saves besides weights and optimiser state.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerState {
    pub step: u64,
    pub cursor: DataCursor,
    pub seed: u64,
    /// Vocabularies the model was trained with, so that predict maps labels the same way.
    pub pert_names: Vec<String>,
    pub batch_names: Vec<String>,
    pub feature_names: Vec<String>,
    pub control: String,
    pub last_val_loss: Option<f64>,
}

/// One training step's numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepRecord {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub cells_per_s: f64,
    pub step_seconds: f64,
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Finished,
    Stopped,
}

/// The loop's view of the outside world: stop requests, logging, checkpoint locations.
pub trait TrainHooks {
    /// Checked before every step; true ends the loop with a checkpoint.
    fn stop_requested(&mut self) -> bool;
    fn on_step(&mut self, record: &StepRecord) -> Result<()>;
    fn on_validation(&mut self, step: u64, val_loss: f64) -> Result<()>;
    /// The directory to write the checkpoint of `step` into.
    fn checkpoint_dir(&mut self, step: u64) -> PathBuf;
    /// The checkpoint of `step` is complete on disk.
    fn checkpoint_written(&mut self, step: u64) -> Result<()>;
}

/// An ST model with its optimiser, data samplers and position in training.
pub struct Trainer<'a> {
    table: &'a CellTable,
    pub cfg: StTrainConfig,
    pub model_cfg: StConfig,
    varmap: VarMap,
    model: StModel,
    optim: AdamW,
    /// The same cells in log1p expression space: the gene decoder's targets (embedding-space training only).
    genes: Option<&'a CellTable>,
    sampler: SetSampler,
    val_sets: Vec<CellSet>,
    pub state: TrainerState,
    device: Device,
}

impl<'a> Trainer<'a> {
    /// A fresh model on `table`'s training split.
    pub fn new(table: &'a CellTable, cfg: StTrainConfig, device: &Device) -> Result<Self> {
        Self::new_with_genes(table, None, cfg, device)
    }

    /// A fresh model; with `cfg.decode_genes`, `genes` (the same cells in expression space, e.g. loaded from the
    /// data config without `embed_key`) are the targets of a gene decoder trained alongside.
    pub fn new_with_genes(
        table: &'a CellTable,
        genes: Option<&'a CellTable>,
        cfg: StTrainConfig,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let mut model_cfg = cfg.model_config(table.n_features(), table.pert_names.len(), table.batch_names.len());
        let genes = decoder_genes(table, genes, &cfg)?;
        if let Some(g) = genes {
            model_cfg.gene_decoder = Some(GeneDecoderConfig {
                gene_dim: g.n_features(),
                hidden_dims: cfg.decoder_hidden.clone(),
                dropout: model_cfg.dropout,
            });
        }
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
        let model = StModel::load(vb, &model_cfg)?;
        init_seeded(&varmap, cfg.seed)?;
        let optim = AdamW::new(&varmap, cfg.optim_config()?)?;
        let state = TrainerState {
            step: 0,
            cursor: DataCursor::default(),
            seed: cfg.seed,
            pert_names: table.pert_names.clone(),
            batch_names: table.batch_names.clone(),
            feature_names: table.feature_names.clone(),
            control: table.pert_names.get(table.control as usize).cloned().unwrap_or_default(),
            last_val_loss: None,
        };
        Self::assemble(table, genes, cfg, model_cfg, varmap, model, optim, state, device)
    }

    /// Continue from a checkpoint directory written by [`Trainer::save`].
    pub fn resume(table: &'a CellTable, dir: &Path, device: &Device) -> Result<Self> {
        Self::resume_with_genes(table, None, dir, device)
    }

    /// [`Trainer::resume`] of a run trained with a gene decoder (`genes` as in [`Trainer::new_with_genes`]).
    pub fn resume_with_genes(
        table: &'a CellTable,
        genes: Option<&'a CellTable>,
        dir: &Path,
        device: &Device,
    ) -> Result<Self> {
        let cfg: StTrainConfig = read_json(&dir.join(TRAIN_CONFIG_FILE))?;
        let state: TrainerState = read_json(&dir.join(TRAINER_STATE_FILE))?;
        if state.pert_names != table.pert_names || state.feature_names != table.feature_names {
            return Err(ModelError::Checkpoint(format!(
                "{} was trained on other perturbations or genes than the data config gives",
                dir.display()
            )));
        }
        let genes = decoder_genes(table, genes, &cfg)?;
        let (model_cfg, varmap, model) = checkpoint::load_model(dir, device)?;
        if model_cfg.gene_decoder.as_ref().map(|g| g.gene_dim) != genes.map(|g| g.n_features()) {
            return Err(ModelError::Checkpoint(format!(
                "{}: the model's gene decoder does not match the expression data given",
                dir.display()
            )));
        }
        let optim = checkpoint::load_optimizer(dir, &varmap)?
            .ok_or_else(|| ModelError::Checkpoint(format!("{} has no optimizer state", dir.display())))?;
        Self::assemble(table, genes, cfg, model_cfg, varmap, model, optim, state, device)
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        table: &'a CellTable,
        genes: Option<&'a CellTable>,
        cfg: StTrainConfig,
        model_cfg: StConfig,
        varmap: VarMap,
        model: StModel,
        optim: AdamW,
        state: TrainerState,
        device: &Device,
    ) -> Result<Self> {
        let set_len = model_cfg.cell_set_len;
        let data_err = |e: crate::data::sets::SetError| ModelError::Input(e.to_string());
        let sampler = SetSampler::new(table, Split::Train, set_len, true, cfg.seed).map_err(data_err)?;
        // Validation: fixed sets of the val split, or of test when there is none (cell-load's fallback).
        let val_sampler = SetSampler::new(table, Split::Val, set_len, true, cfg.seed ^ 0x5EED)
            .or_else(|_| SetSampler::new(table, Split::Test, set_len, true, cfg.seed ^ 0x5EED))
            .ok();
        let val_sets = match val_sampler {
            Some(mut s) => {
                let mut c = DataCursor::default();
                let n = cfg.val_sets.min(s.sets_per_epoch().max(1));
                (0..n).map(|_| s.next_set(&mut c)).collect()
            }
            None => Vec::new(),
        };
        Ok(Trainer {
            table,
            cfg,
            model_cfg,
            varmap,
            model,
            optim,
            genes,
            sampler,
            val_sets,
            state,
            device: device.clone(),
        })
    }

    pub fn model(&self) -> &StModel {
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
        let vb = VarBuilder::from_varmap(&self.varmap, DType::F32, &self.device);
        self.model = StModel::load(vb, &model_cfg)?;
        self.model_cfg = model_cfg;
        self.cfg.precision = precision;
        Ok(())
    }

    pub fn n_params(&self) -> usize {
        self.model_cfg.n_params()
    }

    /// Tensors (ctrl, pert one-hot, batch ids, target) for a batch of sets of equal length.
    pub fn batch_tensors(&self, sets: &[CellSet]) -> Result<(Tensor, Tensor, Option<Tensor>, Tensor)> {
        batch_tensors(self.table, &self.model_cfg, sets, &self.device)
    }

    /// Mean validation loss over the fixed validation sets (no dropout); None without a val/test split.
    pub fn validation_loss(&self) -> Result<Option<f64>> {
        if self.val_sets.is_empty() {
            return Ok(None);
        }
        let mut total = 0.0;
        let mut n = 0usize;
        for chunk in self.val_sets.chunks(self.cfg.batch_size) {
            let (ctrl, pert, batch, target) = self.batch_tensors(chunk)?;
            let pred = self.model.forward(&ctrl, &pert, batch.as_ref(), false)?;
            let loss = self.cfg.loss.loss(&pred, &target)?.to_scalar::<f32>()? as f64;
            total += loss * chunk.len() as f64;
            n += chunk.len();
        }
        Ok(Some(total / n.max(1) as f64))
    }

    /// One optimisation step on the next batch of training sets.
    pub fn step(&mut self) -> Result<StepRecord> {
        let started = Instant::now();
        let sets: Vec<CellSet> =
            (0..self.cfg.batch_size).map(|_| self.sampler.next_set(&mut self.state.cursor)).collect();
        let (ctrl, pert, batch, target) = self.batch_tensors(&sets)?;
        self.model.reseed_dropout(self.state.seed ^ (self.state.step.wrapping_mul(0x9E37_79B9)));
        let loss = match self.genes {
            None => {
                let pred = self.model.forward(&ctrl, &pert, batch.as_ref(), true)?;
                self.cfg.loss.loss(&pred, &target)?
            }
            Some(genes) => {
                let cells: Vec<u32> = sets.iter().flat_map(|x| x.cells.iter().copied()).collect();
                let (b, s) = (sets.len(), self.model_cfg.cell_set_len);
                let gene_target = Tensor::from_vec(genes.gather(&cells), (b, s, genes.n_features()), &self.device)?;
                let l = self.model.loss(
                    &ctrl,
                    &pert,
                    batch.as_ref(),
                    &target,
                    Some(&gene_target),
                    &self.cfg.loss,
                    self.cfg.decoder_weight,
                    true,
                )?;
                l.total
            }
        };
        let loss_value = loss.to_scalar::<f32>()? as f64;
        if !loss_value.is_finite() {
            return Err(ModelError::Input(format!(
                "training diverged: loss is {loss_value} at step {}; stopping without saving (the last checkpoint \
                 is kept); lower lr or check the data for extreme values",
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
        let cells = (sets.len() * self.model_cfg.cell_set_len) as f64;
        Ok(StepRecord {
            step: self.state.step,
            loss: loss_value,
            lr: stats.lr,
            grad_norm: stats.grad_norm,
            cells_per_s: cells / seconds.max(1e-9),
            step_seconds: seconds,
        })
    }

    /// Write a complete checkpoint into `dir` (each file atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        checkpoint::save(dir, &self.model_cfg, &self.varmap, Some(&self.optim))?;
        write_json_atomic(&dir.join(TRAIN_CONFIG_FILE), &self.cfg)?;
        write_json_atomic(&dir.join(TRAINER_STATE_FILE), &self.state)
    }

    /// Train until `max_steps` or a stop request, validating and checkpointing on schedule (see [`run_loop`]).
    pub fn run(&mut self, hooks: &mut dyn TrainHooks) -> Result<Ending> {
        run_loop(self, hooks)
    }
}

impl TrainTask for Trainer<'_> {
    fn step(&mut self) -> Result<StepRecord> {
        Trainer::step(self)
    }

    fn validation_loss(&self) -> Result<Option<f64>> {
        Trainer::validation_loss(self)
    }

    fn save(&self, dir: &Path) -> Result<()> {
        Trainer::save(self, dir)
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

/// When a [`TrainTask`] stops, validates and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopSchedule {
    pub max_steps: u64,
    /// Validate every N steps and after the last one (0 = never).
    pub val_every: u64,
    /// Checkpoint every N steps (0 = only at the end or on a stop).
    pub checkpoint_every: u64,
}

/// A model with its optimiser, data and position in training: what [`run_loop`] drives (ST's [`Trainer`], SE's
/// `se_train::SeTrainer`).
pub trait TrainTask {
    /// One optimisation step; errors on a non-finite loss or gradient (the NaN guard) without changing state.
    fn step(&mut self) -> Result<StepRecord>;
    /// Held-out loss without dropout; None when there is nothing held out.
    fn validation_loss(&self) -> Result<Option<f64>>;
    /// Write a complete checkpoint (weights, optimiser, trainer state) into `dir`.
    fn save(&self, dir: &Path) -> Result<()>;
    /// Completed steps.
    fn current_step(&self) -> u64;
    fn schedule(&self) -> LoopSchedule;
    /// Remember the last validation loss (saved with the trainer state).
    fn set_last_val_loss(&mut self, val_loss: f64);
}

/// The training loop shared by every model: stop checks before each step, hooks after it, validation and
/// checkpoints on the task's schedule, a final checkpoint; a failing step (e.g. the NaN guard) ends the loop with
/// the error and writes nothing (the last checkpoint is kept).
pub fn run_loop(task: &mut dyn TrainTask, hooks: &mut dyn TrainHooks) -> Result<Ending> {
    let sched = task.schedule();
    while task.current_step() < sched.max_steps {
        if hooks.stop_requested() {
            checkpoint(task, hooks)?;
            return Ok(Ending::Stopped);
        }
        let record = task.step()?;
        hooks.on_step(&record)?;
        let step = task.current_step();
        if sched.val_every > 0 && (step.is_multiple_of(sched.val_every) || step == sched.max_steps) {
            if let Some(v) = task.validation_loss()? {
                task.set_last_val_loss(v);
                hooks.on_validation(step, v)?;
            }
        }
        if sched.checkpoint_every > 0 && step.is_multiple_of(sched.checkpoint_every) && step < sched.max_steps {
            checkpoint(task, hooks)?;
        }
    }
    checkpoint(task, hooks)?;
    Ok(Ending::Finished)
}

fn checkpoint(task: &mut dyn TrainTask, hooks: &mut dyn TrainHooks) -> Result<()> {
    let step = task.current_step();
    let dir = hooks.checkpoint_dir(step);
    task.save(&dir)?;
    hooks.checkpoint_written(step)
}

/// The decoder's expression table when the config asks for a gene decoder: it must hold the same cells.
fn decoder_genes<'a>(
    table: &CellTable,
    genes: Option<&'a CellTable>,
    cfg: &StTrainConfig,
) -> Result<Option<&'a CellTable>> {
    match (cfg.decode_genes, genes) {
        (false, _) => Ok(None),
        (true, None) => Err(ModelError::Config(
            "decode_genes needs the cells' expression (train on a data config with [data] embed_key)".into(),
        )),
        (true, Some(g)) => {
            if g.n_cells() != table.n_cells() || g.pert != table.pert || g.cell_type != table.cell_type {
                return Err(ModelError::Input(
                    "the expression table does not hold the same cells as the embedding table".into(),
                ));
            }
            Ok(Some(g))
        }
    }
}

/// Tensors for a batch of sets: ctrl `[B,S,G]`, pert one-hot `[B,S,P]`, batch ids `[B,S]` (when the model has a
/// batch encoder), target `[B,S,G]`. Sets must have equal length.
pub fn batch_tensors(
    table: &CellTable,
    cfg: &StConfig,
    sets: &[CellSet],
    device: &Device,
) -> Result<(Tensor, Tensor, Option<Tensor>, Tensor)> {
    let b = sets.len();
    let s = sets.first().map_or(0, |x| x.cells.len());
    if b == 0 || s == 0 || sets.iter().any(|x| x.cells.len() != s || x.controls.len() != s) {
        return Err(ModelError::Input("a batch needs non-empty sets of equal length".into()));
    }
    let g = table.n_features();
    let controls: Vec<u32> = sets.iter().flat_map(|x| x.controls.iter().copied()).collect();
    let cells: Vec<u32> = sets.iter().flat_map(|x| x.cells.iter().copied()).collect();
    let ctrl = Tensor::from_vec(table.gather(&controls), (b, s, g), device)?;
    let target = Tensor::from_vec(table.gather(&cells), (b, s, g), device)?;
    let p = cfg.pert_dim;
    let mut onehot = vec![0f32; b * s * p];
    for (k, set) in sets.iter().enumerate() {
        let pi = set.pert as usize;
        if pi >= p {
            return Err(ModelError::Input(format!("perturbation index {pi} outside the model's {p} perturbations")));
        }
        for j in 0..s {
            onehot[(k * s + j) * p + pi] = 1.0;
        }
    }
    let pert = Tensor::from_vec(onehot, (b, s, p), device)?;
    let batch = match cfg.n_batches {
        Some(_) => {
            let ids: Vec<u32> = cells.iter().map(|&c| table.batch[c as usize] as u32).collect();
            Some(Tensor::from_vec(ids, (b, s), device)?)
        }
        None => None,
    };
    Ok((ctrl, pert, batch, target))
}

/// AdamW settings from a training config's fields (`schedule`: `cosine`, `linear` or `constant`).
pub(crate) fn optim_config(
    lr: f64,
    weight_decay: f64,
    schedule: &str,
    warmup_steps: u64,
    max_steps: u64,
    min_lr_ratio: f64,
    max_grad_norm: Option<f64>,
) -> Result<OptimConfig> {
    let schedule = match schedule {
        "constant" => LrSchedule::Constant,
        "cosine" => LrSchedule::WarmupCosine { warmup_steps, total_steps: max_steps, min_lr_ratio },
        "linear" => LrSchedule::WarmupLinear { warmup_steps, total_steps: max_steps, min_lr_ratio },
        other => {
            return Err(ModelError::Config(format!(
                "schedule {other:?} is not one of \"cosine\", \"linear\", \"constant\""
            )))
        }
    };
    Ok(OptimConfig { lr, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, max_grad_norm, schedule })
}

pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io { path: path.into(), source })?;
    serde_json::from_str(&text).map_err(|source| ModelError::Json { path: path.into(), source })
}

pub(crate) fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|source| ModelError::Json { path: path.into(), source })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|source| ModelError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| ModelError::Io { path: path.into(), source })
}
