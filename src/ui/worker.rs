//! Running [`Effect`]s: plain blocking functions (the event loop calls them on `spawn_blocking`; tests call them
//! directly). Results go back as `Action::Loaded` through `send`.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::action::{Action, Loaded};
use super::background::Ticket;
use super::celleval::{compute_eval, load_eval_dir};
use super::effect::Effect;
use super::panes::runs::RunRow;
use super::panes::{dataset, gene};
use crate::jobs::{control, now_unix, resume_run, start_run, StartOutcome, Workspace};
use crate::progress::Progress;

/// What effects need from outside the app.
#[derive(Debug, Clone)]
pub struct WorkerContext {
    pub workspace: Workspace,
    /// The vcell binary started for jobs.
    pub exe: PathBuf,
}

/// The runs of the workspace as the runs pane shows them.
pub fn list_runs(ws: &Workspace) -> Loaded {
    let now = now_unix();
    let runs = ws.list().map(|list| list.iter().map(|s| RunRow::from_summary(s, now)).collect()).unwrap_or_default();
    Loaded::Runs { now, runs }
}

/// At most this often a progress message (besides one per stage).
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

/// A background evaluation's [`Progress`]: stage changes and (throttled) advances go to the app as
/// `Loaded::EvalProgress`; the ticket's cancel flag stops the evaluation.
struct EvalProgressSink<'a> {
    ticket: &'a Ticket,
    send: &'a (dyn Fn(Action) + Sync),
    /// Stage, units done, units in the stage, time of the last message.
    state: Mutex<(String, u64, u64, Instant)>,
}

impl EvalProgressSink<'_> {
    fn report(&self, stage: &str, done: u64, total: u64) {
        let id = self.ticket.id;
        (self.send)(Action::Loaded(Loaded::EvalProgress { id, stage: stage.to_owned(), done, total }));
    }
}

impl Progress for EvalProgressSink<'_> {
    fn stage(&self, name: &str, total: u64) {
        if let Ok(mut s) = self.state.lock() {
            *s = (name.to_owned(), 0, total, Instant::now());
        }
        self.report(name, 0, total);
    }

    fn advance(&self, n: u64) {
        let due = match self.state.lock() {
            Ok(mut s) => {
                s.1 += n;
                if s.3.elapsed() >= PROGRESS_EVERY {
                    s.3 = Instant::now();
                    Some((s.0.clone(), s.1, s.2))
                } else {
                    None
                }
            }
            Err(_) => None,
        };
        if let Some((stage, done, total)) = due {
            self.report(&stage, done, total);
        }
    }

    fn cancelled(&self) -> bool {
        self.ticket.cancelled()
    }
}

/// Run one effect to completion, sending its results. `WatchRuns` is the event loop's business (ignored here).
/// `send` may be called from several threads (an evaluation reports progress from its worker threads).
pub fn run_effect(effect: Effect, ctx: &WorkerContext, send: &(dyn Fn(Action) + Sync)) {
    let job_done = |message: Result<String, String>| send(Action::Loaded(Loaded::JobDone { message }));
    match effect {
        Effect::StartRun { name, argv } => {
            let result = start_run(&ctx.workspace, name.as_deref(), argv, &ctx.exe)
                .map_err(|e| e.to_string())
                .map(|mut job| describe(job.run_dir().name(), "started", job.wait_started(Duration::from_secs(10))));
            job_done(result.and_then(|r| r));
        }
        Effect::ResumeRun(name) => {
            let result = ctx
                .workspace
                .run(&name)
                .and_then(|dir| resume_run(&dir, &ctx.exe))
                .map_err(|e| e.to_string())
                .map(|mut job| describe(name.clone(), "resumed", job.wait_started(Duration::from_secs(10))));
            job_done(result.and_then(|r| r));
        }
        Effect::StopRun(name) => {
            let result = ctx.workspace.run(&name).and_then(|dir| control::request_stop(&dir));
            job_done(
                result
                    .map(|_| format!("stop requested for {name}: it checkpoints, then stops"))
                    .map_err(|e| e.to_string()),
            );
        }
        Effect::DeleteRun(name) => {
            let result = ctx.workspace.run(&name).and_then(|dir| control::remove(&dir, false));
            job_done(result.map(|()| format!("deleted {name}")).map_err(|e| e.to_string()));
        }
        Effect::RefreshRuns => send(Action::Loaded(list_runs(&ctx.workspace))),
        Effect::WatchRuns(_) => {}
        Effect::LoadEval { ticket, dir } => {
            let cancel = || ticket.cancelled();
            let result = load_eval_dir(&dir, &cancel).map(Arc::new).map_err(|e| e.to_string());
            send(Action::Loaded(Loaded::Eval { id: ticket.id, result }));
        }
        Effect::ComputeEval { ticket, request } => {
            let sink =
                EvalProgressSink { ticket: &ticket, send, state: Mutex::new((String::new(), 0, 0, Instant::now())) };
            let result = compute_eval(&request, &sink).map(Arc::new).map_err(|e| e.to_string());
            send(Action::Loaded(Loaded::Eval { id: ticket.id, result }));
        }
        Effect::LoadDataset { ticket, path, pert_col } => {
            let cancel = || ticket.cancelled();
            let result = dataset::summarize(&path, &pert_col, &cancel).map(Arc::new).map_err(|e| e.to_string());
            send(Action::Loaded(Loaded::Dataset { id: ticket.id, result }));
        }
        Effect::LoadGeneStats { ticket, path } => {
            let mut last = std::time::Instant::now();
            let mut progress = |done: usize, total: usize| {
                if last.elapsed() > Duration::from_millis(250) {
                    last = std::time::Instant::now();
                    send(Action::Loaded(Loaded::GeneStats { id: ticket.id, done, total, result: None }));
                }
            };
            let result = dataset::gene_stats(&path, &ticket, &mut progress).map(Arc::new).map_err(|e| e.to_string());
            let (done, total) = result.as_ref().map(|s| (s.n_cells, s.n_cells)).unwrap_or((0, 0));
            send(Action::Loaded(Loaded::GeneStats { id: ticket.id, done, total, result: Some(result) }));
        }
        Effect::LoadGene { ticket, request } => {
            let result = gene::load_gene(&request, &ticket).map(Arc::new).map_err(|e| e.to_string());
            send(Action::Loaded(Loaded::Gene { id: ticket.id, result }));
        }
    }
}

fn describe(name: String, what: &str, outcome: StartOutcome) -> Result<String, String> {
    match outcome {
        StartOutcome::Started(s) => Ok(format!("{what} {name}: {}", s.state.as_str())),
        StartOutcome::Pending => Ok(format!("{what} {name}: still queued")),
        StartOutcome::Exited { code, log_tail } => {
            let last = log_tail.lines().last().unwrap_or_default().to_owned();
            Err(format!("{name} exited ({}) before starting: {last}", code.map_or("signal".into(), |c| c.to_string())))
        }
    }
}
