//! Jobs as processes with a run directory: they outlive the terminal (SSH drops, laptop sleeps) and every reader
//! (the CLI, the TUI) finds them where it left them. No daemon: the run directory is the whole truth.
//!
//! # Layout
//! [`run_dir::RunDir`] owns the layout (`job.toml`, `status.json`, `events.jsonl`, `lock`, `checkpoints/`,
//! `outputs/`, `stdout.log`); nothing else builds these paths.
//!
//! # Starting: the command-line convention
//! A job is the same `vcell …` command a user could type. [`spawn::start_run`] creates the run directory, writes
//! `job.toml` (argv, cwd, created-at, version) and a `queued` status, takes the run lock, and starts
//! `vcell <argv…> --run-dir <abs dir>` detached: its own session (`/usr/bin/setsid`), stdin closed, stdout and
//! stderr appended to `stdout.log`. [`spawn::resume_run`] starts the same command with `--resume` appended. So
//! **every job subcommand accepts `--run-dir DIR` and `--resume`**, and passes them to [`JobContext::open`].
//!
//! # The `JobContext` contract (for the training loop)
//! ```ignore
//! let mut ctx = JobContext::open(&args.run_dir, Some(total_steps), args.resume)?; // lock, signals, `running`
//! match train_loop(&mut ctx) {                      // your loop, below
//!     Ok(Ending::Finished) => ctx.finish(),         // status `finished`, lock released
//!     Ok(Ending::Stopped) => ctx.stopped(),         // status `stopped`, exit 0
//!     Err(e) => { let _ = ctx.fail(e.to_string()); Err(e) } // status `failed` with the message
//! }
//!
//! fn train_loop(ctx: &mut JobContext) -> Result<Ending, E> {
//!     let mut step = ctx.start_step();              // 0, or the step of the checkpoint being resumed
//!     if let Some(ckpt) = ctx.resumed_from() { load(ckpt.file("safetensors"), ckpt.file("json"))?; }
//!     while step < total_steps {
//!         if ctx.stop_requested()? {                // SIGTERM/SIGINT arrived: status is now `stopping`
//!             save(ctx.checkpoint_stem(step))?; ctx.commit_checkpoint(step)?;
//!             return Ok(Ending::Stopped);
//!         }
//!         step += 1;                                // `step` = completed steps
//!         let loss = train_one_step()?;
//!         ctx.record(Event::new(EventKind::Train, step).with_loss(loss).with("lr", lr).with("throughput", it_s))?;
//!         if step % every == 0 { save(ctx.checkpoint_stem(step))?; ctx.commit_checkpoint(step)?; }
//!     }
//!     save(ctx.checkpoint_stem(step))?; ctx.commit_checkpoint(step)?;
//!     Ok(Ending::Finished)
//! }
//! ```
//! - Dropping an unfinished `JobContext` (a panic) records `failed`.
//! - Write checkpoint files atomically ([`run_dir::write_atomic`] or temp + rename) and only then call
//!   `commit_checkpoint`, which moves `checkpoints/latest` atomically: `latest` always names a complete checkpoint.
//! - Resume continues with the same step count: after `--resume`, the first `train` event is `latest + 1`; a
//!   `kill -9` loses at most the steps since the last checkpoint (those steps appear twice in `events.jsonl`).
//! - [`JobContext::stop_flag`] is an `Arc<AtomicBool>` to pass into library code as its cancel flag. A second
//!   SIGTERM/SIGINT exits at once.
//! - The job holds the run lock for its whole life; a second `resume` fails with [`JobError::Locked`].
//! - [`demo::DemoJob`] (`vcell runs __demo-job`) is the reference implementation, used by the tests.
//!
//! # Reading (the CLI and the TUI)
//! - [`workspace::Workspace::list`] → [`workspace::RunSummary`] (state with `lost` detection, step, loss, ETA).
//! - [`workspace::RunsWatcher::poll`] notices new/removed/updated runs (cheap polling, NFS-safe).
//! - [`events::EventReader::poll`] reads new events incrementally (kept offset, torn-line tolerant, bounded).
//! - [`control::stop`], [`spawn::resume_run`], [`control::remove`] act on runs.
//!
//! This layer imports nothing from `ui`, `model` or `eval`.
use std::path::{Path, PathBuf};

pub mod control;
pub mod demo;
pub mod events;
pub mod lock;
pub mod process;
pub mod run_dir;
pub mod runtime;
pub mod spawn;
pub mod status;
pub mod workspace;

pub use events::{Event, EventKind, EventReader, EventWriter};
pub use run_dir::RunDir;
pub use runtime::{Checkpoint, JobContext};
pub use spawn::{resume_run, start_run, DetachedJob, JobSpec, StartOutcome};
pub use status::{DisplayState, JobState, Status};
pub use workspace::{RunSummary, RunsWatcher, Workspace};

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: invalid JSON: {source}", path.display())]
    Json { path: PathBuf, source: serde_json::Error },
    #[error("{}: invalid TOML: {message}", path.display())]
    Toml { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Corrupt { path: PathBuf, message: String },
    #[error("run directory {} already exists (two runs never share a directory)", .0.display())]
    AlreadyExists(PathBuf),
    #[error("run directory {} not found", .0.display())]
    NotFound(PathBuf),
    #[error("no run named {0:?}")]
    NoSuchRun(String),
    #[error("invalid run name {0:?} (use letters, digits, '.', '_', '-')")]
    InvalidName(String),
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    #[error("run is locked by pid {pid} ({}): the job or another resume is running", path.display())]
    Locked { path: PathBuf, pid: u32 },
    #[error("run {name} is {state}; only stopped, failed or lost runs can be resumed")]
    NotResumable { name: String, state: String },
    #[error("run {name} is {state}")]
    NotRunning { name: String, state: String },
    #[error("run {name} is still running (pid {pid})")]
    StillRunning { name: String, pid: u32 },
    #[error("could not start the job: {0}")]
    Spawn(String),
}

impl JobError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        JobError::Io { path: path.to_owned(), source }
    }
}

/// Unix seconds now.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}
