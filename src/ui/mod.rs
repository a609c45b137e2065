//! The ratatui workbench (issue 8): one terminal window over SSH to start and watch jobs and inspect
//! predictions. It sits on `jobs`, `data` (and the eval outputs) and adds routing and drawing only.
//!
//! - [`app::App`] routes; each pane under [`panes`] owns its state, an `update(&Action)` and a pure `render`.
//! - [`action::Action`] is the only way state changes; keys map to actions through [`keymap::Keymap`] (TOML).
//! - Background work ([`worker`]) answers with `Action::Loaded` carrying its request id ([`background::Latest`]).
//! - [`event_loop`]: redraw on change only, frame cap, synchronized updates, panic hook, no busy loop.
//! - [`history`]: bounded loss histories.
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

pub mod action;
pub mod app;
pub mod background;
pub mod celleval;
pub mod effect;
pub mod event_loop;
pub mod history;
pub mod keymap;
pub mod panes;
pub mod theme;
pub mod worker;

pub use action::{Action, PaneId};
pub use app::{App, AppConfig};

use crate::jobs::Workspace;

#[derive(Debug, thiserror::Error)]
pub enum UiError {
    #[error("terminal: {0}")]
    Terminal(String),
    #[error(transparent)]
    Keymap(#[from] keymap::KeymapError),
    #[error("{0}")]
    Data(String),
    #[error("cancelled")]
    Cancelled,
}

/// How to open the workbench.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// Eval output folder (results.csv, score.csv, real_de.csv, pred_de.csv).
    pub eval_dir: Option<PathBuf>,
    /// The real and predicted `.h5ad` (gene pane; `real` is also the dataset pane's default).
    pub real: Option<PathBuf>,
    pub pred: Option<PathBuf>,
    /// The `.h5ad` the dataset pane opens.
    pub dataset: Option<PathBuf>,
    pub pert_col: String,
    pub control: String,
    /// A keymap TOML; default `$XDG_CONFIG_HOME/vcell/keymap.toml` (or `~/.config/…`) when it exists.
    pub keymap: Option<PathBuf>,
    /// No terminal UI: print run progress lines until no run is live.
    pub headless: bool,
    /// Stop the headless mode after this long.
    pub headless_limit: Option<Duration>,
    /// Frame-rate cap.
    pub fps: u16,
    /// Colours for a light terminal background.
    pub light: bool,
    /// The vcell binary started for jobs (default: this executable).
    pub exe: Option<PathBuf>,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions {
            eval_dir: None,
            real: None,
            pred: None,
            dataset: None,
            pert_col: "target_gene".into(),
            control: "non-targeting".into(),
            keymap: None,
            headless: false,
            headless_limit: None,
            fps: 30,
            light: false,
            exe: None,
        }
    }
}

fn default_keymap_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("vcell").join("keymap.toml")).filter(|p| p.exists())
}

/// Open the workbench on `workspace` (headless when asked or when stdout is not a terminal).
pub fn run(workspace: Workspace, opts: UiOptions) -> Result<(), UiError> {
    let keymap = match opts.keymap.clone().or_else(default_keymap_path) {
        Some(p) => keymap::Keymap::load(&p)?,
        None => keymap::Keymap::default(),
    };
    let theme = if opts.light || std::env::var("VCELL_THEME").is_ok_and(|v| v == "light") {
        theme::Theme::light()
    } else {
        theme::Theme::dark()
    };
    let config = AppConfig {
        eval_dir: opts.eval_dir.clone(),
        real: opts.real.clone(),
        pred: opts.pred.clone(),
        dataset: opts.dataset.clone(),
        pert_col: opts.pert_col.clone(),
        control: opts.control.clone(),
    };
    let exe = match opts.exe.clone() {
        Some(e) => e,
        None => std::env::current_exe().map_err(|e| UiError::Terminal(format!("current executable: {e}")))?,
    };
    let ctx = worker::WorkerContext { workspace, exe };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| UiError::Terminal(format!("tokio runtime: {e}")))?;
    let headless = opts.headless || !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal();
    let (app, initial) = App::new(config, keymap, theme);
    let result = if headless {
        runtime.block_on(event_loop::run_headless(app, ctx, opts.headless_limit))
    } else {
        runtime.block_on(event_loop::run_terminal(app, initial, ctx, opts.fps))
    };
    // Background work was cancelled on the way out; give it a moment to clean up (an evaluation removes its
    // staging folder), but never wait for a long computation to finish.
    runtime.shutdown_timeout(Duration::from_secs(2));
    result
}
