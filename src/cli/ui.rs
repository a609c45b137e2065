//! `vcell ui [WORKSPACE]`: the terminal workbench.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::jobs::Workspace;
use crate::ui::{self, UiOptions};

#[derive(Args, Debug)]
pub struct UiArgs {
    /// The runs directory [default: $VCELL_RUNS_DIR, else ./runs].
    pub workspace: Option<PathBuf>,
    /// Eval output folder (results.csv, score.csv, real_de.csv, pred_de.csv).
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Real .h5ad (gene pane; also the dataset pane's default).
    #[arg(long)]
    pub real: Option<PathBuf>,
    /// Predicted .h5ad (gene pane).
    #[arg(long)]
    pub pred: Option<PathBuf>,
    /// .h5ad for the dataset pane.
    #[arg(long)]
    pub dataset: Option<PathBuf>,
    #[arg(long, default_value = "target_gene")]
    pub pert_col: String,
    #[arg(long, default_value = "non-targeting")]
    pub control: String,
    /// Keymap TOML [default: ~/.config/vcell/keymap.toml if present].
    #[arg(long)]
    pub keymap: Option<PathBuf>,
    /// No terminal UI: print run progress until no run is live.
    #[arg(long)]
    pub headless: bool,
    /// Seconds after which headless mode returns.
    #[arg(long)]
    pub headless_limit: Option<f64>,
    /// Frame-rate cap.
    #[arg(long, default_value_t = 30)]
    pub fps: u16,
    /// Colours for a light terminal background (or VCELL_THEME=light).
    #[arg(long)]
    pub light: bool,
}

pub fn run(args: UiArgs) -> anyhow::Result<()> {
    let ws = Workspace::resolve(args.workspace.as_deref());
    let opts = UiOptions {
        eval_dir: args.eval,
        real: args.real,
        pred: args.pred,
        dataset: args.dataset,
        pert_col: args.pert_col,
        control: args.control,
        keymap: args.keymap,
        headless: args.headless,
        headless_limit: args.headless_limit.map(|s| Duration::from_secs_f64(s.max(0.0))),
        fps: args.fps,
        light: args.light,
        exe: None,
    };
    ui::run(ws, opts)?;
    Ok(())
}
