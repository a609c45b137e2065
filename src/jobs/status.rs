//! `status.json`: the job's state, written atomically by the job process (and by the starter before the job runs),
//! and the state a reader shows (`lost` for a dead pid behind a live-looking status).
use std::fmt;
use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use super::process::ProcessId;
use super::run_dir::{write_atomic, RunDir};
use super::{now_unix, JobError};

/// The state a job writes about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Created by `runs start`/`runs resume`; the process has not reported yet.
    Queued,
    Running,
    /// SIGTERM received; the job is finishing its step and writing a checkpoint.
    Stopping,
    /// Stopped on request after a checkpoint; can be resumed.
    Stopped,
    Finished,
    Failed,
}

impl JobState {
    /// Running or about to: a reader expects a live process behind it.
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running | JobState::Stopping)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Stopping => "stopping",
            JobState::Stopped => "stopped",
            JobState::Finished => "finished",
            JobState::Failed => "failed",
        }
    }
}

/// The content of `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub state: JobState,
    /// The job process (absent while queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Start time of `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22): detects a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_time: Option<u64>,
    /// Unix seconds when this process started (or the run was queued).
    #[serde(default)]
    pub started_at: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<f64>,
    /// Unix seconds of the last write.
    #[serde(default)]
    pub updated_at: f64,
    /// Completed steps.
    #[serde(default)]
    pub step: u64,
    /// The step this process started from (0, or the checkpoint it resumed): with `started_at` it gives the rate.
    #[serde(default)]
    pub start_step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_loss: Option<f64>,
    /// The newest complete checkpoint (its step).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<u64>,
    /// Why the job failed, or other short news.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Status {
    /// A fresh `queued` status.
    pub fn queued() -> Self {
        let now = now_unix();
        Status {
            state: JobState::Queued,
            pid: None,
            pid_start_time: None,
            started_at: now,
            ended_at: None,
            updated_at: now,
            step: 0,
            start_step: 0,
            total_steps: None,
            last_loss: None,
            last_checkpoint: None,
            message: None,
        }
    }

    /// The recorded process, if any.
    pub fn process(&self) -> Option<ProcessId> {
        self.pid.map(|pid| ProcessId { pid, start_time: self.pid_start_time })
    }

    /// Read `status.json`: `Ok(None)` when it does not exist.
    pub fn read(dir: &RunDir) -> Result<Option<Status>, JobError> {
        let path = dir.status_json();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| JobError::Json { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(JobError::io(&path, e)),
        }
    }

    /// Write `status.json` atomically (stamps `updated_at`).
    pub fn write(&mut self, dir: &RunDir) -> Result<(), JobError> {
        self.updated_at = now_unix();
        let path = dir.status_json();
        let bytes = serde_json::to_vec_pretty(self).map_err(|source| JobError::Json { path: path.clone(), source })?;
        write_atomic(&path, &bytes)
    }

    /// Estimated seconds left, from this process's rate (needs `total_steps` and some progress).
    pub fn eta_seconds(&self, now: f64) -> Option<f64> {
        let total = self.total_steps?;
        let done = self.step.checked_sub(self.start_step).filter(|d| *d > 0)?;
        let elapsed = now - self.started_at;
        if elapsed <= 0.0 {
            return None;
        }
        Some(total.saturating_sub(self.step) as f64 * elapsed / done as f64)
    }
}

/// What a reader shows for a run: the written state, or what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayState {
    Job(JobState),
    /// The status says running/stopping (or queued with a pid) but the process is dead or its pid was reused.
    Lost,
    /// No `status.json`.
    Missing,
    /// `status.json` does not parse.
    Invalid,
}

impl DisplayState {
    /// The state of a run from its status (checks the process for active states).
    pub fn of(status: Option<&Status>) -> Self {
        match status {
            None => DisplayState::Missing,
            Some(s) if s.state.is_active() => match s.process() {
                Some(p) if !p.is_alive() => DisplayState::Lost,
                None if s.state != JobState::Queued => DisplayState::Lost,
                _ => DisplayState::Job(s.state),
            },
            Some(s) => DisplayState::Job(s.state),
        }
    }

    /// A live process may still be writing to the run.
    pub fn is_live(self) -> bool {
        matches!(self, DisplayState::Job(s) if s.is_active())
    }

    /// The run can be resumed: it stopped, failed or was lost.
    pub fn is_resumable(self) -> bool {
        matches!(self, DisplayState::Lost | DisplayState::Job(JobState::Stopped | JobState::Failed))
    }
}

impl fmt::Display for DisplayState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DisplayState::Job(s) => s.as_str(),
            DisplayState::Lost => "lost",
            DisplayState::Missing => "missing",
            DisplayState::Invalid => "invalid",
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_reads_missing_as_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(tmp.path().join("r")).unwrap();
        assert_eq!(Status::read(&dir).unwrap(), None);
        let mut s = Status::queued();
        s.step = 7;
        s.write(&dir).unwrap();
        assert_eq!(Status::read(&dir).unwrap().unwrap().step, 7);
        fs::write(dir.status_json(), b"{not json").unwrap();
        assert!(matches!(Status::read(&dir), Err(JobError::Json { .. })));
    }

    #[test]
    fn reads_a_minimal_status() {
        let s: Status = serde_json::from_str(r#"{"state":"finished"}"#).unwrap();
        assert_eq!(DisplayState::of(Some(&s)), DisplayState::Job(JobState::Finished));
    }

    #[test]
    fn running_with_dead_or_reused_pid_is_lost() {
        let me = ProcessId::current();
        let mut s = Status::queued();
        s.state = JobState::Running;
        s.pid = Some(me.pid);
        s.pid_start_time = me.start_time;
        assert_eq!(DisplayState::of(Some(&s)), DisplayState::Job(JobState::Running));
        s.pid_start_time = me.start_time.map(|t| t + 1);
        assert_eq!(DisplayState::of(Some(&s)), DisplayState::Lost);
        s.pid = None;
        assert_eq!(DisplayState::of(Some(&s)), DisplayState::Lost);
        s.state = JobState::Stopped;
        assert_eq!(DisplayState::of(Some(&s)), DisplayState::Job(JobState::Stopped));
        assert_eq!(DisplayState::of(None), DisplayState::Missing);
    }

    #[test]
    fn eta_from_rate() {
        let mut s = Status::queued();
        s.started_at = 100.0;
        s.start_step = 10;
        s.step = 20;
        s.total_steps = Some(40);
        assert_eq!(s.eta_seconds(110.0), Some(20.0));
        s.step = 10;
        assert_eq!(s.eta_seconds(110.0), None);
    }
}
