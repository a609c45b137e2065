//! `vcell train st`: train ST on a data config, as a job with a run directory.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::data::config::DataConfig;
use crate::data::table::CellTable;
use crate::jobs::{Event, EventKind, JobContext};
use crate::model::train::{Ending, StTrainConfig, StepRecord, TrainHooks, Trainer};

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(subcommand)]
    pub model: TrainModel,
}

#[derive(Subcommand, Debug)]
pub enum TrainModel {
    /// The State Transition model.
    St(TrainStArgs),
}

#[derive(Args, Debug, Clone)]
pub struct TrainStArgs {
    /// The cell-load style data config (TOML).
    #[arg(long)]
    pub data_config: PathBuf,
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
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    match args.model {
        TrainModel::St(a) => train_st(a),
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

fn train_st(args: TrainStArgs) -> anyhow::Result<()> {
    let device = super::device::parse_device(&args.device)?;
    let mut cfg = match &args.config {
        Some(p) => StTrainConfig::load(p)?,
        None => StTrainConfig::default(),
    };
    if let Some(n) = args.max_steps {
        cfg.max_steps = n;
    }
    let data_cfg = DataConfig::load(&args.data_config)?;
    let mut ctx = JobContext::open(&args.run_dir, Some(cfg.max_steps), args.resume)?;
    let result = train_in_context(&args, cfg, &data_cfg, &device, &mut ctx);
    match result {
        Ok(Ending::Finished) => Ok(ctx.finish()?),
        Ok(Ending::Stopped) => {
            if !args.quiet {
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

pub(crate) fn train_in_context(
    args: &TrainStArgs,
    cfg: StTrainConfig,
    data_cfg: &DataConfig,
    device: &candle_core::Device,
    ctx: &mut JobContext,
) -> anyhow::Result<Ending> {
    let progress = super::progress::BarProgress::new(args.quiet);
    let table = CellTable::load(data_cfg, &progress).context("loading the data config's datasets")?;
    progress.finish();
    let mut trainer = match ctx.resumed_from() {
        Some(ckpt) => {
            let dir = ckpt.file("ckpt");
            let mut t =
                Trainer::resume(&table, &dir, device).with_context(|| format!("resuming from {}", dir.display()))?;
            if let Some(n) = args.max_steps {
                t.cfg.max_steps = n;
            }
            t
        }
        None => Trainer::new(&table, cfg, device)?,
    };
    ctx.log(format!(
        "ST: {} cells, {} features, {} perturbations, {} parameters, device {:?}",
        table.n_cells(),
        table.n_features(),
        table.pert_names.len(),
        trainer.n_params(),
        device
    ))?;
    let bar = if args.quiet { ProgressBar::hidden() } else { ProgressBar::new(trainer.cfg.max_steps) };
    bar.set_draw_target(if args.quiet { ProgressDrawTarget::hidden() } else { ProgressDrawTarget::stderr_with_hz(4) });
    if let Ok(style) =
        ProgressStyle::with_template("train [{bar:30.cyan/blue}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_position(trainer.state.step);
    if !args.quiet {
        bar.println(format!(
            "training ST ({} parameters) on {} cells × {} features, {} perturbations",
            trainer.n_params(),
            table.n_cells(),
            table.n_features(),
            table.pert_names.len()
        ));
    }
    let mut hooks = JobHooks { ctx, bar, quiet: args.quiet, started: Instant::now() };
    let ending = trainer.run(&mut hooks)?;
    hooks.bar.finish_and_clear();
    if !args.quiet {
        println!(
            "{} at step {} (last val_loss {})",
            if ending == Ending::Finished { "finished" } else { "stopped" },
            trainer.state.step,
            trainer.state.last_val_loss.map_or("n/a".to_owned(), |v| format!("{v:.5}"))
        );
    }
    Ok(ending)
}
