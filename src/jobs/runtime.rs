//! What a running job uses: [`JobContext`] (status, events, stop flag, lock, checkpoints).
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::{Event, EventKind, EventWriter};
use super::lock::{RunLock, LOCK_TOKEN_ENV};
use super::process::ProcessId;
use super::run_dir::{checkpoint_name, parse_checkpoint_name, write_atomic, RunDir};
use super::spawn::{JobSpec, RESUME_FLAG, RUN_DIR_FLAG};
use super::status::{JobState, Status};
use super::{now_unix, JobError};

/// How often `record` rewrites `status.json` at most (state changes and checkpoints write at once).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// A complete checkpoint: `checkpoints/step-N.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub step: u64,
    /// `checkpoints/step-N`; add the extension of the file you want (`.json`, `.safetensors`).
    pub stem: PathBuf,
}

impl Checkpoint {
    /// `step-N.<ext>`.
    pub fn file(&self, ext: &str) -> PathBuf {
        self.stem.with_extension(ext)
    }
}

/// The newest complete checkpoint named by `checkpoints/latest`, if any.
pub fn latest_checkpoint(dir: &RunDir) -> Result<Option<Checkpoint>, JobError> {
    let path = dir.latest_pointer();
    match fs::read_to_string(&path) {
        Ok(text) => match parse_checkpoint_name(&text) {
            Some(step) => Ok(Some(Checkpoint { step, stem: dir.checkpoint_stem(step) })),
            None => Err(JobError::Corrupt { path, message: format!("expected `step-N`, found {:?}", text.trim()) }),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(JobError::io(&path, e)),
    }
}

/// The job side of a run directory. See the module docs of [`crate::jobs`] for the contract.
#[derive(Debug)]
pub struct JobContext {
    dir: RunDir,
    events: EventWriter,
    status: Status,
    stop: Arc<AtomicBool>,
    stop_seen: bool,
    resumed_from: Option<Checkpoint>,
    last_status_write: Instant,
    finalized: bool,
    // Held for the life of the job; dropped (file removed) after the final status is written.
    _lock: RunLock,
}

impl JobContext {
    /// Open the run directory for this process: take the lock (or the one handed over by `runs start`/`resume`),
    /// install the SIGTERM/SIGINT stop flag, find the checkpoint to resume from (when `resume`), and set
    /// `running`. `total_steps` (when known) lets readers show an ETA.
    pub fn open(run_dir: &Path, total_steps: Option<u64>, resume: bool) -> Result<Self, JobError> {
        // A job started by hand (`vcell train … --run-dir runs/x` under nohup or slurm) may create its directory.
        fs::create_dir_all(run_dir).map_err(|e| JobError::io(run_dir, e))?;
        let dir = RunDir::open(run_dir)?;
        let token = std::env::var(LOCK_TOKEN_ENV).ok();
        let lock = RunLock::acquire_with_token(&dir, token.as_deref())?;
        if !dir.job_toml().exists() {
            // Started by hand (nohup, slurm): record the command so `runs resume` can restart it.
            let cwd = std::env::current_dir().unwrap_or_else(|_| dir.path().to_owned());
            JobSpec::new(&dir.name(), own_argv(), cwd).write(&dir)?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            // A second signal while stopping exits at once.
            signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))
                .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
                .map_err(|e| JobError::io(Path::new("signal handler"), e))?;
        }
        let resumed_from = if resume { latest_checkpoint(&dir)? } else { None };
        let start_step = resumed_from.as_ref().map_or(0, |c| c.step);
        let me = ProcessId::current();
        let mut status = Status::read(&dir).ok().flatten().unwrap_or_else(Status::queued);
        status.state = JobState::Running;
        status.pid = Some(me.pid);
        status.pid_start_time = me.start_time;
        status.started_at = now_unix();
        status.ended_at = None;
        status.step = start_step;
        status.start_step = start_step;
        status.total_steps = total_steps.or(status.total_steps);
        status.last_checkpoint = resumed_from.as_ref().map(|c| c.step);
        status.message = None;
        if !resume {
            status.last_loss = None;
        }
        status.write(&dir)?;
        let mut events = EventWriter::open(&dir.events_jsonl())?;
        let mut started = Event::new(EventKind::Status, start_step).with("state", "running").with("pid", me.pid);
        if let Some(total) = total_steps {
            started = started.with("total_steps", total);
        }
        if resume {
            match &resumed_from {
                Some(c) => started = started.with("resumed_from", c.step),
                None => events.append(&Event::log(0, "warn", "--resume: no checkpoint yet, starting from step 0"))?,
            }
        }
        events.append(&started)?;
        Ok(JobContext {
            dir,
            events,
            status,
            stop,
            stop_seen: false,
            resumed_from,
            last_status_write: Instant::now(),
            finalized: false,
            _lock: lock,
        })
    }

    pub fn run_dir(&self) -> &RunDir {
        &self.dir
    }
    pub fn outputs_dir(&self) -> PathBuf {
        self.dir.outputs_dir()
    }
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.dir.checkpoints_dir()
    }
    /// The step to continue from: 0, or the step of the checkpoint being resumed.
    pub fn start_step(&self) -> u64 {
        self.status.start_step
    }
    /// The checkpoint to load (`--resume` and one exists).
    pub fn resumed_from(&self) -> Option<&Checkpoint> {
        self.resumed_from.as_ref()
    }
    /// The stop flag (set by SIGTERM/SIGINT), to hand to library code as a cancel flag.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    /// True once SIGTERM/SIGINT arrived. The first time, the status becomes `stopping`. Check it between steps;
    /// then write a checkpoint and call [`JobContext::stopped`].
    pub fn stop_requested(&mut self) -> Result<bool, JobError> {
        if !self.stop.load(Ordering::SeqCst) {
            return Ok(false);
        }
        if !self.stop_seen {
            self.stop_seen = true;
            self.status.state = JobState::Stopping;
            self.write_status()?;
            self.events.append(
                &Event::new(EventKind::Status, self.status.step).with("state", "stopping").with("reason", "signal"),
            )?;
        }
        Ok(true)
    }

    /// Append an event. A `train` event also moves the status's step and last loss (written at most once a second).
    pub fn record(&mut self, event: Event) -> Result<(), JobError> {
        if event.kind == EventKind::Train {
            self.status.step = event.step;
            if event.loss.is_some() {
                self.status.last_loss = event.loss;
            }
        }
        self.events.append(&event)?;
        if self.last_status_write.elapsed() >= STATUS_EVERY {
            self.write_status()?;
        }
        Ok(())
    }

    /// A `train` event at `step` (completed steps) with its loss.
    pub fn train(&mut self, step: u64, loss: f64) -> Result<(), JobError> {
        self.record(Event::new(EventKind::Train, step).with_loss(loss))
    }

    /// A `log` event (`level` info).
    pub fn log(&mut self, message: impl Into<String>) -> Result<(), JobError> {
        self.record(Event::log(self.status.step, "info", message))
    }

    /// Where to write checkpoint `step`: `checkpoints/step-N` (add extensions). Write the files (atomically,
    /// e.g. with [`write_atomic`]), then call [`JobContext::commit_checkpoint`].
    pub fn checkpoint_stem(&self, step: u64) -> PathBuf {
        self.dir.checkpoint_stem(step)
    }

    /// Mark checkpoint `step` complete: `checkpoints/latest` ← `step-N` (atomically), a `checkpoint` event, the
    /// status written at once.
    pub fn commit_checkpoint(&mut self, step: u64) -> Result<Checkpoint, JobError> {
        write_atomic(&self.dir.latest_pointer(), format!("{}\n", checkpoint_name(step)).as_bytes())?;
        self.status.last_checkpoint = Some(step);
        self.events.append(&Event::new(EventKind::Checkpoint, step).with("name", checkpoint_name(step)))?;
        self.events.sync()?;
        self.write_status()?;
        Ok(Checkpoint { step, stem: self.dir.checkpoint_stem(step) })
    }

    /// The newest committed checkpoint.
    pub fn latest_checkpoint(&self) -> Result<Option<Checkpoint>, JobError> {
        latest_checkpoint(&self.dir)
    }

    /// The job completed: status `finished`, lock released.
    pub fn finish(self) -> Result<(), JobError> {
        self.end(JobState::Finished, None)
    }
    /// The job stopped on request after its checkpoint: status `stopped`, lock released.
    pub fn stopped(self) -> Result<(), JobError> {
        self.end(JobState::Stopped, None)
    }
    /// The job failed: status `failed` with the message, lock released.
    pub fn fail(self, message: impl Into<String>) -> Result<(), JobError> {
        self.end(JobState::Failed, Some(message.into()))
    }

    fn end(mut self, state: JobState, message: Option<String>) -> Result<(), JobError> {
        self.finalized = true;
        self.finalize(state, message)
    }

    fn finalize(&mut self, state: JobState, message: Option<String>) -> Result<(), JobError> {
        let mut event = Event::new(EventKind::Status, self.status.step).with("state", state.as_str());
        if let Some(m) = &message {
            event = event.with("message", m.clone());
        }
        self.events.append(&event)?;
        let _ = self.events.sync();
        self.status.state = state;
        self.status.ended_at = Some(now_unix());
        self.status.message = message;
        self.write_status()
    }

    fn write_status(&mut self) -> Result<(), JobError> {
        self.last_status_write = Instant::now();
        self.status.write(&self.dir)
    }
}

impl Drop for JobContext {
    /// Dropped without `finish`/`stopped`/`fail` (an early `?` return or a panic): record `failed`.
    fn drop(&mut self) {
        if !self.finalized {
            self.finalized = true;
            let msg = if std::thread::panicking() { "the job panicked" } else { "the job ended without a final state" };
            let _ = self.finalize(JobState::Failed, Some(msg.to_owned()));
        }
    }
}

/// This process's vcell arguments without `--run-dir DIR` and `--resume` (for a `job.toml` written by the job).
fn own_argv() -> Vec<String> {
    let mut out = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == RUN_DIR_FLAG {
            args.next();
        } else if a == RESUME_FLAG || a.starts_with(&format!("{RUN_DIR_FLAG}=")) {
            continue;
        } else {
            out.push(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::jobs::events::read_all;
    use crate::jobs::status::DisplayState;

    #[test]
    fn lifecycle_writes_status_events_and_latest() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("r");
        let mut ctx = JobContext::open(&path, Some(4), false).unwrap();
        assert_eq!(ctx.start_step(), 0);
        // The lock is held while the job runs.
        assert!(JobContext::open(&path, None, true).is_err());
        ctx.train(1, 0.5).unwrap();
        ctx.train(2, 0.25).unwrap();
        fs::write(ctx.checkpoint_stem(2).with_extension("json"), b"{}").unwrap();
        let c = ctx.commit_checkpoint(2).unwrap();
        assert_eq!(c.file("json"), path.join("checkpoints").join("step-2.json"));
        let dir = ctx.run_dir().clone();
        assert_eq!(Status::read(&dir).unwrap().unwrap().state, JobState::Running);
        ctx.finish().unwrap();
        let status = Status::read(&dir).unwrap().unwrap();
        assert_eq!((status.state, status.step, status.last_loss), (JobState::Finished, 2, Some(0.25)));
        assert_eq!(DisplayState::of(Some(&status)), DisplayState::Job(JobState::Finished));
        assert!(!dir.lock_file().exists());
        let kinds: Vec<_> = read_all(&dir.events_jsonl()).unwrap().iter().map(|e| e.kind).collect();
        use EventKind as K;
        assert_eq!(kinds, vec![K::Status, K::Train, K::Train, K::Checkpoint, K::Status]);
        // Resume starts at the latest checkpoint.
        let ctx = JobContext::open(&path, Some(4), true).unwrap();
        assert_eq!(ctx.start_step(), 2);
        assert_eq!(ctx.resumed_from().unwrap().step, 2);
        drop(ctx);
        let status = Status::read(&dir).unwrap().unwrap();
        assert_eq!(status.state, JobState::Failed);
        assert!(dir.job_toml().exists());
    }

    #[test]
    fn corrupt_latest_pointer_is_an_error_not_a_panic() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(tmp.path().join("r")).unwrap();
        assert_eq!(latest_checkpoint(&dir).unwrap(), None);
        fs::write(dir.latest_pointer(), b"nonsense").unwrap();
        assert!(matches!(latest_checkpoint(&dir), Err(JobError::Corrupt { .. })));
    }
}
