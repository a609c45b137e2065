//! The one way the workbench's state changes: every key, command, timer and background result becomes an
//! [`Action`] handed to `App::update`. User actions deserialize from the keymap TOML (`"q" = "quit"`,
//! `"1" = { go_pane = "runs" }`); internal ones (`Loaded`, `Input`) are never read from a file.
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::celleval::EvalData;
use super::panes::dataset::{DatasetSummary, GeneStats};
use super::panes::gene::GeneData;
use super::panes::runs::RunRow;
use crate::jobs::Event;

/// The panes, in tab order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaneId {
    Runs,
    Loss,
    Eval,
    De,
    Dataset,
    Gene,
}

impl PaneId {
    pub const ALL: [PaneId; 6] = [PaneId::Runs, PaneId::Loss, PaneId::Eval, PaneId::De, PaneId::Dataset, PaneId::Gene];

    pub fn title(self) -> &'static str {
        match self {
            PaneId::Runs => "Runs",
            PaneId::Loss => "Loss",
            PaneId::Eval => "Eval",
            PaneId::De => "DE",
            PaneId::Dataset => "Dataset",
            PaneId::Gene => "Gene",
        }
    }

    pub fn index(self) -> usize {
        PaneId::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    pub fn parse(name: &str) -> Option<PaneId> {
        let name = name.to_ascii_lowercase();
        PaneId::ALL.into_iter().find(|p| p.title().to_ascii_lowercase() == name || name == format!("{}", p.index() + 1))
    }
}

/// A raw key for a text field (filter, search, palette, the new-run form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKey {
    Char(char),
    Backspace,
    /// Tab / Down: next field of a form.
    Next,
    /// BackTab / Up: previous field.
    Prev,
    Submit,
    Cancel,
}

/// Everything that can happen.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Quit,
    /// Open or close the help overlay.
    Help,
    /// Open the `:` command line.
    Palette,
    NextPane,
    PrevPane,
    GoPane(PaneId),
    Up,
    Down,
    PageUp,
    PageDown,
    Top,
    Bottom,
    Left,
    Right,
    /// Enter: open the selected item (a run's loss, a perturbation's DE, a gene's distribution).
    Select,
    /// Esc: close what is open.
    Back,
    /// Next sort column / reverse the order.
    Sort,
    ReverseSort,
    /// Start typing a filter or search.
    Filter,
    /// Runs pane.
    NewRun,
    StopRun,
    ResumeRun,
    DeleteRun,
    /// Add or remove the selected run from the loss overlay.
    ToggleOverlay,
    Confirm,
    Cancel,
    /// Loss pane.
    ToggleLogScale,
    CycleSmoothing,
    ToggleZoom,
    /// DE pane: significant genes only / all genes.
    ToggleAll,
    /// Reload what the current pane shows.
    Refresh,
    /// Load eval outputs (results.csv, score.csv, real_de.csv, pred_de.csv) from a folder.
    OpenEval(PathBuf),
    /// Evaluate the predictions the workbench was opened on (`--pred` against `--real`) in the background, into
    /// the eval folder, and show the results.
    ComputeEval,
    /// Browse an `.h5ad` in the dataset pane.
    OpenDataset(PathBuf),
    SetPerturbation(String),
    SetGene(String),
    /// A raw key for the focused text field.
    #[serde(skip)]
    Input(InputKey),
    /// A background result.
    #[serde(skip)]
    Loaded(Loaded),
}

/// Results from the background, each carrying the request id it answers (stale ones are dropped).
#[derive(Debug, Clone)]
pub enum Loaded {
    Runs {
        now: f64,
        runs: Vec<RunRow>,
    },
    Events {
        run: String,
        events: Arc<Vec<Event>>,
        reset: bool,
    },
    Eval {
        id: u64,
        result: Result<Arc<EvalData>, String>,
    },
    /// Progress of an evaluation computed in the background (its final result comes as `Eval` with the same id).
    EvalProgress {
        id: u64,
        stage: String,
        done: u64,
        total: u64,
    },
    Dataset {
        id: u64,
        result: Result<Arc<DatasetSummary>, String>,
    },
    GeneStats {
        id: u64,
        done: usize,
        total: usize,
        result: Option<Result<Arc<GeneStats>, String>>,
    },
    Gene {
        id: u64,
        result: Result<Arc<GeneData>, String>,
    },
    /// A job command (start, stop, resume, delete) finished.
    JobDone {
        message: Result<String, String>,
    },
}
