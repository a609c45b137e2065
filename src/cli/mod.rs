//! Command-line interface: clap commands, each a thin call into the layers below with progress output.
//!
//! `anyhow` is used here and in `main.rs` only; the library layers return `thiserror` errors.
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod info;
pub mod progress;
pub mod runs;
pub mod synth;
pub mod ui;

#[derive(Parser, Debug)]
#[command(name = "vcell", version, about = "A terminal workbench for virtual-cell models")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Generate a synthetic VCC-shaped dataset (raw counts, CSR .h5ad).
    Synth(synth::SynthArgs),
    /// Summarise an .h5ad: shape, X encoding, obs columns and categories, obsm keys (never reads X's data).
    Info(info::InfoArgs),
    /// Jobs that outlive the terminal: start, list, tail, stop, resume, rm.
    Runs(runs::RunsArgs),
    /// The terminal workbench: runs, loss curves, eval, DE, dataset and gene panes.
    Ui(ui::UiArgs),
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
    match cli.command {
        Command::Synth(args) => synth::run(args),
        Command::Info(args) => info::run(args),
        Command::Runs(args) => runs::run(args),
        Command::Ui(args) => ui::run(args),
    }
}
