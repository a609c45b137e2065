//! `vcell train st|se`: train ST on a data config, or SE on the raw counts of a data config's training cells or
//! of one `.h5ad`, as a job with a run directory. Both models run the same loop
//! ([`crate::model::train::run_loop`]) through the same [`JobHooks`] bridge and job wrapper ([`run_job`]).
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::data::config::DataConfig;
use crate::data::gene_embeddings::GeneEmbeddings;
use crate::data::table::CellTable;
use crate::jobs::Checkpoint;
use crate::jobs::{Event, EventKind, JobContext};
use crate::model::se_train::{SeCells, SeTrainConfig, SeTrainer};
use crate::model::train::{run_loop, Ending, StTrainConfig, StepRecord, TrainHooks, TrainTask, Trainer};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub model: TrainModel,
}

#[derive(Subcommand, Debug)]
pub enum TrainModel {
    /// The State Transition model.
    St(TrainStArgs),
    /// The State Embedding model (cell embeddings from gene embeddings; `vcell embed` applies it).
    Se(TrainSeArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TrainSeArgs {
    /// A data config: SE trains on the raw counts of its datasets' training-split cells and validates on the val
    /// (else test) split.
    #[arg(long, conflicts_with = "input", required_unless_present = "input")]
    pub data_config: Option<PathBuf>,
    /// Or one .h5ad: every cell, a few held out for validation.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Gene embeddings (.safetensors, .pt, or .npy with a gene list; `vcell synth --gene-embeddings` writes one).
    /// A copy goes into every checkpoint, so --resume does not need it.
    #[arg(long, required_unless_present = "resume")]
    pub gene_embeddings: Option<PathBuf>,
    /// Gene list of a matrix-layout gene-embedding file (default: the sidecar `<stem>.txt`).
    #[arg(long)]
    pub gene_list: Option<PathBuf>,
    #[command(flatten)]
    pub job: TrainJobArgs,
}

/// What every `vcell train <model>` takes besides its data: config, run directory, resume, device.
#[derive(Args, Debug, Clone)]
pub struct TrainJobArgs {
    /// Model and training config (TOML); defaults to the built-in tiny preset.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run directory (created if missing): events, status, checkpoints.
    #[arg(long)]
    pub run_dir: PathBuf,
    /// Continue from the run directory's latest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Override max_steps of the config.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// Override the config's precision: f32, or bf16 (mixed precision: bf16 matmuls, f32 weights and loss).
    /// Applies on --resume too (weights are f32 either way).
    #[arg(long)]
    pub precision: Option<crate::model::precision::Precision>,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct TrainStArgs {
    /// The cell-load style data config (TOML).
    #[arg(long)]
    pub data_config: PathBuf,
    #[command(flatten)]
    pub job: TrainJobArgs,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    match args.model {
        TrainModel::St(a) => train_st(a),
        TrainModel::Se(a) => train_se(a),
    }
}

/// Bridges the training loop to the run directory and the terminal.
struct JobHooks<'a> {
    ctx: &'a mut JobContext,
    bar: ProgressBar,
    quiet: bool,
    started: Instant,
}

impl TrainHooks for JobHooks<'_> {
    fn stop_requested(&mut self) -> bool {
        self.ctx.stop_requested().unwrap_or(true)
    }

    fn on_step(&mut self, r: &StepRecord) -> crate::model::Result<()> {
        let event = Event::new(EventKind::Train, r.step)
            .with_loss(r.loss)
            .with("lr", r.lr)
            .with("grad_norm", r.grad_norm)
            .with("throughput", r.cells_per_s)
            .with("step_seconds", r.step_seconds);
        self.ctx.record(event).map_err(to_model_err)?;
        self.bar.set_position(r.step);
        self.bar.set_message(format!("loss {:.4}  lr {:.2e}  {:.0} cells/s", r.loss, r.lr, r.cells_per_s));
        Ok(())
    }

    fn on_validation(&mut self, step: u64, val_loss: f64) -> crate::model::Result<()> {
        self.ctx.record(Event::new(EventKind::Val, step).with_loss(val_loss)).map_err(to_model_err)?;
        if !self.quiet {
            self.bar.println(format!(
                "step {step:>6}  val_loss {val_loss:.5}  ({:.0}s)",
                self.started.elapsed().as_secs_f64()
            ));
        }
        Ok(())
    }

    fn checkpoint_dir(&mut self, step: u64) -> PathBuf {
        self.ctx.checkpoint_stem(step).with_extension("ckpt")
    }

    fn checkpoint_written(&mut self, step: u64) -> crate::model::Result<()> {
        self.ctx.commit_checkpoint(step).map_err(to_model_err).map(|_| ())
    }
}

fn to_model_err(e: crate::jobs::JobError) -> crate::model::ModelError {
    crate::model::ModelError::Input(format!("run directory: {e}"))
}

/// Runs `body` as a job in `run_dir` (the `JobContext` contract): finished, stopped or failed status.
fn run_job(
    run_dir: &std::path::Path,
    total_steps: u64,
    resume: bool,
    quiet: bool,
    body: impl FnOnce(&mut JobContext) -> anyhow::Result<Ending>,
) -> anyhow::Result<()> {
    let mut ctx = JobContext::open(run_dir, Some(total_steps), resume)?;
    match body(&mut ctx) {
        Ok(Ending::Finished) => Ok(ctx.finish()?),
        Ok(Ending::Stopped) => {
            if !quiet {
                eprintln!("stopped: checkpoint written; continue with `vcell runs resume` or --resume");
            }
            Ok(ctx.stopped()?)
        }
        Err(e) => {
            let _ = ctx.fail(format!("{e:#}"));
            Err(e)
        }
    }
}

/// Runs the shared training loop on `task` with a progress bar and the run directory's hooks.
fn drive(task: &mut dyn TrainTask, ctx: &mut JobContext, quiet: bool, banner: String) -> anyhow::Result<Ending> {
    let max_steps = task.schedule().max_steps;
    let bar = if quiet { ProgressBar::hidden() } else { ProgressBar::new(max_steps) };
    bar.set_draw_target(if quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr_with_hz(4) });
    if let Ok(style) =
        ProgressStyle::with_template("train [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(task.current_step());
    if !quiet {
        bar.println(banner);
    }
    let mut hooks = JobHooks { ctx, bar, quiet, started: Instant::now() };
    let ending = run_loop(task, &mut hooks)?;
    hooks.bar.finish_and_clear();
    Ok(ending)
}

fn print_ending(quiet: bool, ending: Ending, step: u64, last_val_loss: Option<f64>) {
    if !quiet {
        println!(
            "{} at step {} (last val_loss {})",
            if ending == Ending::Finished { "finished" } else { "stopped" },
            step,
            last_val_loss.map_or("n/a".to_owned(), |v| format!("{v:.5}"))
        );
    }
}

fn resumed_dir(ckpt: &Checkpoint) -> PathBuf {
    ckpt.file("ckpt")
}

fn train_st(args: TrainStArgs) -> anyhow::Result<()> {
    let device = super::device::parse_device(&args.job.device)?;
    let mut cfg = match &args.job.config {
        Some(p) => StTrainConfig::load(p)?,
        None => StTrainConfig::default(),
    };
    if let Some(n) = args.job.max_steps {
        cfg.max_steps = n;
    }
    if let Some(p) = args.job.precision {
        cfg.precision = p;
    }
    let data_cfg = DataConfig::load(&args.data_config)?;
    run_job(&args.job.run_dir, cfg.max_steps, args.job.resume, args.job.quiet, |ctx| {
        train_st_in_context(&args, cfg, &data_cfg, &device, ctx)
    })
}

pub(crate) fn train_st_in_context(
    args: &TrainStArgs,
    cfg: StTrainConfig,
    data_cfg: &DataConfig,
    device: &candle_core::Device,
    ctx: &mut JobContext,
) -> anyhow::Result<Ending> {
    let progress = super::progress::BarProgress::new(args.job.quiet);
    let table = CellTable::load(data_cfg, &progress).context("loading the data config's datasets")?;
    let resumed = ctx.resumed_from().map(resumed_dir);
    let decode_genes = match &resumed {
        Some(dir) => {
            let c: StTrainConfig = crate::model::train::read_json(&dir.join(crate::model::train::TRAIN_CONFIG_FILE))
                .with_context(|| format!("reading the training config of {}", dir.display()))?;
            c.decode_genes
        }
        None => cfg.decode_genes,
    };
    // Embedding-space training with a gene decoder: the same cells' expression are the decoder's targets.
    let genes = match (&data_cfg.settings.embed_key, decode_genes) {
        (Some(_), true) => Some(super::predict::load_gene_table(data_cfg, &progress)?),
        _ => None,
    };
    progress.finish();
    let mut trainer = match &resumed {
        Some(dir) => {
            let mut t = Trainer::resume_with_genes(&table, genes.as_ref(), dir, device)
                .with_context(|| format!("resuming from {}", dir.display()))?;
            if let Some(n) = args.job.max_steps {
                t.cfg.max_steps = n;
            }
            if let Some(p) = args.job.precision {
                t.set_precision(p)?;
            }
            t
        }
        None => Trainer::new_with_genes(&table, genes.as_ref(), cfg, device)?,
    };
    ctx.log(format!(
        "ST: {} cells, {} features, {} perturbations, {} parameters, device {:?}, precision {}",
        table.n_cells(),
        table.n_features(),
        table.pert_names.len(),
        trainer.n_params(),
        device,
        trainer.model_cfg.precision
    ))?;
    let banner = format!(
        "training ST ({} parameters) on {} cells × {} features, {} perturbations{}",
        trainer.n_params(),
        table.n_cells(),
        table.n_features(),
        table.pert_names.len(),
        genes.as_ref().map(|g| format!(", decoding to {} genes", g.n_features())).unwrap_or_default()
    );
    let ending = drive(&mut trainer, ctx, args.job.quiet, banner)?;
    print_ending(args.job.quiet, ending, trainer.state.step, trainer.state.last_val_loss);
    Ok(ending)
}

fn train_se(args: TrainSeArgs) -> anyhow::Result<()> {
    let device = super::device::parse_device(&args.job.device)?;
    let mut cfg = match &args.job.config {
        Some(p) => SeTrainConfig::load(p)?,
        None => SeTrainConfig::default(),
    };
    if let Some(n) = args.job.max_steps {
        cfg.max_steps = n;
    }
    if let Some(p) = args.job.precision {
        cfg.precision = p;
    }
    let data_cfg = args.data_config.as_deref().map(DataConfig::load).transpose()?;
    run_job(&args.job.run_dir, cfg.max_steps, args.job.resume, args.job.quiet, |ctx| {
        train_se_in_context(&args, cfg, data_cfg.as_ref(), &device, ctx)
    })
}

fn train_se_in_context(
    args: &TrainSeArgs,
    cfg: SeTrainConfig,
    data_cfg: Option<&DataConfig>,
    device: &candle_core::Device,
    ctx: &mut JobContext,
) -> anyhow::Result<Ending> {
    let progress = super::progress::BarProgress::new(args.job.quiet);
    let resumed = ctx.resumed_from().map(resumed_dir);
    // The data split must not depend on a config changed between runs: a resume reads the checkpoint's.
    let (val_cells, seed) = match &resumed {
        Some(dir) => {
            let c: SeTrainConfig = crate::model::train::read_json(&dir.join(crate::model::train::TRAIN_CONFIG_FILE))
                .with_context(|| format!("reading the training config of {}", dir.display()))?;
            (c.val_cells, c.seed)
        }
        None => (cfg.val_cells, cfg.seed),
    };
    let cells = match (data_cfg, &args.input) {
        (Some(d), _) => {
            SeCells::from_data_config(d, val_cells, &progress).context("loading the data config's cells")?
        }
        (None, Some(p)) => {
            SeCells::from_h5ad(p, val_cells, seed, &progress).with_context(|| format!("loading {}", p.display()))?
        }
        (None, None) => anyhow::bail!("give --data-config or --input"),
    };
    progress.finish();
    let mut trainer = match &resumed {
        Some(dir) => {
            let mut t =
                SeTrainer::resume(&cells, dir, device).with_context(|| format!("resuming from {}", dir.display()))?;
            if let Some(n) = args.job.max_steps {
                t.cfg.max_steps = n;
            }
            if let Some(p) = args.job.precision {
                t.set_precision(p)?;
            }
            t
        }
        None => {
            let path = args.gene_embeddings.as_deref().context("--gene-embeddings is required")?;
            let genes = GeneEmbeddings::read_with_gene_list(path, args.gene_list.as_deref())
                .with_context(|| format!("reading gene embeddings {}", path.display()))?;
            SeTrainer::new(&cells, genes, cfg, device)?
        }
    };
    let summary = format!(
        "SE: {} training + {} held-out cells × {} genes from {} dataset(s), {} parameters, device {:?}, precision {}; \
         genes: {}",
        cells.train.rows(),
        cells.val.rows(),
        cells.var_names.len(),
        cells.dataset_names.len(),
        trainer.n_params(),
        device,
        trainer.model_cfg.precision,
        trainer.gene_report()
    );
    ctx.log(summary.clone())?;
    let ending = drive(&mut trainer, ctx, args.job.quiet, format!("training {summary}"))?;
    print_ending(args.job.quiet, ending, trainer.state.step, trainer.state.last_val_loss);
    Ok(ending)
}
