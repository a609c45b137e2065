//! Command-line interface: clap commands, each a thin call into the layers below with progress output.
//!
//! `anyhow` is used here and in `main.rs` only; the library layers return `thiserror` errors.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod demo;
pub mod device;
pub mod embed;
pub mod eval;
pub mod gpu_check;
pub mod info;
mod malloc_tuning;
pub mod predict;
pub mod progress;
pub mod runs;
pub mod synth;
pub mod train;
pub mod ui;
pub mod vcc2026;

#[derive(Parser, Debug)]
#[command(name = "vcell", version, about = "A terminal workbench for virtual-cell models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The whole workflow on generated data: synthetic dataset, ST training, predictions, VCC scores.
    Demo(demo::DemoArgs),
    /// Generate a synthetic VCC-shaped dataset (raw counts, CSR .h5ad).
    Synth(synth::SynthArgs),
    /// Summarise an .h5ad: shape, X encoding, obs columns and categories, obsm keys (never reads X's data).
    Info(info::InfoArgs),
    /// Jobs that outlive the terminal: start, list, tail, stop, resume, rm.
    Runs(runs::RunsArgs),
    /// Train a model (ST, SE) on a data config, as a job with a run directory.
    Train(train::TrainArgs),
    /// SE cell embeddings of an .h5ad into obsm (a run trained with `vcell train se`).
    Embed(embed::EmbedArgs),
    /// Predict a held-out split with a trained model or a baseline (VCC-style real/pred .h5ad pair).
    Predict(predict::PredictArgs),
    /// Check that the CPU and a CUDA device compute the same ST forward pass and training step.
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Score a prediction against real data with the VCC metrics (cell-eval 0.8.2's `run`).
    Eval(eval::EvalArgs),
    /// Build cell-eval's cell-mean baseline prediction (and its DE table) from an AnnData.
    Baseline(eval::BaselineArgs),
    /// The VCC score of a prediction's agg_results.csv against a baseline's (cell-eval's `score`).
    Score(eval::ScoreArgs),
    /// Pack a prediction into a VCC submission tarball (cell-eval's `prep`).
    Prep(eval::PrepArgs),
    /// The terminal workbench: runs, loss curves, eval, DE, dataset and gene panes.
    Ui(ui::UiArgs),
    /// vcc2026: the real bundle (baseline arm + replicate anchor over five half-splits) for `score --real-bundle`.
    RealBundle(vcc2026::RealBundleArgs),
}

/// Parse the command line, run the command, map errors to a message and exit code 1.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if matches!(cli.command, Command::Eval(_) | Command::Baseline(_) | Command::RealBundle(_)) {
        malloc_tuning::keep_freed_memory();
    }
    match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Synth(args) => synth::run(args),
        Command::Info(args) => info::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Train(args) => train::run(args),
        Command::Embed(args) => embed::run(args),
        Command::Predict(args) => predict::run(args),
        Command::GpuCheck(args) => gpu_check::run(args),
        Command::Eval(args) => eval::run_eval_cmd(args),
        Command::Baseline(args) => eval::run_baseline_cmd(args),
        Command::Score(args) => eval::run_score_cmd(args),
        Command::Prep(args) => eval::run_prep_cmd(args),
        Command::Ui(args) => ui::run(args),
        Command::RealBundle(args) => vcc2026::run_real_bundle(args),
    }
}
