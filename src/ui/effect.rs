//! What `update` asks the outside world to do: the event loop runs these off the UI thread (tests run them
//! synchronously with [`super::worker::run_effect`]).
use std::path::PathBuf;

use super::action::Action;
use super::background::Ticket;
use super::celleval::EvalRequest;
use super::panes::gene::GeneRequest;

#[derive(Debug, Clone)]
pub enum Effect {
    /// Start `vcell <argv…>` detached in a new run (the jobs layer; the job outlives the TUI).
    StartRun {
        name: Option<String>,
        argv: Vec<String>,
    },
    StopRun(String),
    ResumeRun(String),
    DeleteRun(String),
    /// Re-list the workspace now.
    RefreshRuns,
    /// Tail `events.jsonl` of exactly these runs (the loss pane's).
    WatchRuns(Vec<String>),
    LoadEval {
        ticket: Ticket,
        dir: PathBuf,
    },
    /// Run the evaluation of `request` (writing its output folder), then load the folder.
    ComputeEval {
        ticket: Ticket,
        request: EvalRequest,
    },
    LoadDataset {
        ticket: Ticket,
        path: PathBuf,
        pert_col: String,
    },
    LoadGeneStats {
        ticket: Ticket,
        path: PathBuf,
    },
    LoadGene {
        ticket: Ticket,
        request: GeneRequest,
    },
}

/// What a pane's update produced besides its own state change.
#[derive(Debug, Default)]
pub struct Out {
    pub effects: Vec<Effect>,
    /// Actions for other panes (e.g. Enter on a perturbation: `SetPerturbation`, then `GoPane(De)`).
    pub actions: Vec<Action>,
    /// A line for the status bar.
    pub message: Option<String>,
}

impl Out {
    pub fn effect(&mut self, e: Effect) {
        self.effects.push(e);
    }
    pub fn then(&mut self, a: Action) {
        self.actions.push(a);
    }
    pub fn say(&mut self, m: impl Into<String>) {
        self.message = Some(m.into());
    }
}
