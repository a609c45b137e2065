//! Acting on a run from outside: stop (SIGTERM → checkpoint → `stopped`) and remove.
use std::fs;
use std::thread;
use std::time::{Duration, Instant};

use super::lock::live_holder;
use super::process::{send_signal, ProcessId, Signal};
use super::run_dir::RunDir;
use super::status::{DisplayState, JobState, Status};
use super::JobError;

/// How a stop request ended.
#[derive(Debug, Clone, PartialEq)]
pub enum StopOutcome {
    /// The job checkpointed and wrote `stopped`.
    Stopped(Status),
    /// It reached another end state meanwhile (`finished`, `failed`).
    Ended(Status),
    /// The process died without a final status.
    Lost,
    /// Still not stopped after the timeout (it may be finishing a long step).
    TimedOut,
}

fn live_process(dir: &RunDir) -> Result<(Status, ProcessId), JobError> {
    let status = Status::read(dir)?;
    let state = DisplayState::of(status.as_ref());
    match (status, state.is_live()) {
        (Some(s), true) => match s.process() {
            Some(p) => Ok((s, p)),
            None => Err(JobError::NotRunning { name: dir.name(), state: state.to_string() }),
        },
        _ => Err(JobError::NotRunning { name: dir.name(), state: state.to_string() }),
    }
}

/// Send SIGTERM to the run's process (checked against its recorded start time). Fails with `NotRunning`.
pub fn request_stop(dir: &RunDir) -> Result<ProcessId, JobError> {
    let (_, process) = live_process(dir)?;
    let sent = send_signal(&process, Signal::Term).map_err(|e| JobError::Spawn(format!("kill: {e}")))?;
    if !sent {
        return Err(JobError::NotRunning { name: dir.name(), state: DisplayState::Lost.to_string() });
    }
    Ok(process)
}

/// SIGTERM, then wait up to `timeout` for the job to write `stopped`.
pub fn stop(dir: &RunDir, timeout: Duration) -> Result<StopOutcome, JobError> {
    let process = request_stop(dir)?;
    let deadline = Instant::now() + timeout;
    loop {
        let status = Status::read(dir).ok().flatten();
        match status.as_ref().map(|s| s.state) {
            Some(JobState::Stopped) => return Ok(StopOutcome::Stopped(status.unwrap_or_else(Status::queued))),
            Some(JobState::Finished | JobState::Failed) => {
                return Ok(StopOutcome::Ended(status.unwrap_or_else(Status::queued)))
            }
            _ => {}
        }
        if !process.is_alive() {
            // One last look: the final status may have landed just before the exit.
            if let Ok(Some(s)) = Status::read(dir) {
                if !s.state.is_active() {
                    return Ok(if s.state == JobState::Stopped {
                        StopOutcome::Stopped(s)
                    } else {
                        StopOutcome::Ended(s)
                    });
                }
            }
            return Ok(StopOutcome::Lost);
        }
        if Instant::now() >= deadline {
            return Ok(StopOutcome::TimedOut);
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Delete a run directory. A live run (or one locked by a live resume) is refused unless `force`, which kills
/// the job first (SIGKILL).
pub fn remove(dir: &RunDir, force: bool) -> Result<(), JobError> {
    let live = live_process(dir).ok().map(|(_, p)| p);
    let holder = live_holder(dir).map(|h| h.process());
    for process in [live, holder].into_iter().flatten() {
        if process.pid == std::process::id() {
            continue;
        }
        if !force {
            return Err(JobError::StillRunning { name: dir.name(), pid: process.pid });
        }
        let _ = send_signal(&process, Signal::Kill);
        let deadline = Instant::now() + Duration::from_secs(5);
        while process.is_alive() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
    fs::remove_dir_all(dir.path()).map_err(|e| JobError::io(dir.path(), e))
}
