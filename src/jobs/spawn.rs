//! Starting a job detached: `job.toml`, then the same `vcell …` command line in its own session (`setsid`), stdin
//! closed, stdout and stderr appended to `stdout.log`, with `--run-dir <dir>` (and `--resume`) appended.
use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lock::{RunLock, LOCK_TOKEN_ENV};
use super::run_dir::{write_atomic, RunDir};
use super::status::{DisplayState, JobState, Status};
use super::workspace::Workspace;
use super::{now_unix, JobError};

/// The flag appended to every job command line: the job writes into this run directory.
pub const RUN_DIR_FLAG: &str = "--run-dir";
/// The flag appended by `resume`: the job continues from `checkpoints/latest`.
pub const RESUME_FLAG: &str = "--resume";

/// `job.toml`: how to (re)start the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    /// The vcell arguments, without the program and without `--run-dir`/`--resume` (e.g. `["train", "st", …]`).
    pub argv: Vec<String>,
    /// The working directory the job runs in.
    pub cwd: PathBuf,
    /// Unix seconds.
    pub created_at: f64,
    pub vcell_version: String,
    /// The binary that started it (for information; `resume` uses the running vcell).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<PathBuf>,
}

impl JobSpec {
    pub fn new(name: &str, argv: Vec<String>, cwd: PathBuf) -> Self {
        JobSpec {
            name: name.to_owned(),
            argv,
            cwd,
            created_at: now_unix(),
            vcell_version: env!("CARGO_PKG_VERSION").to_owned(),
            exe: std::env::current_exe().ok(),
        }
    }

    pub fn read(dir: &RunDir) -> Result<JobSpec, JobError> {
        let path = dir.job_toml();
        let text = fs::read_to_string(&path).map_err(|e| JobError::io(&path, e))?;
        toml::from_str(&text).map_err(|e| JobError::Toml { path, message: e.to_string() })
    }

    pub fn write(&self, dir: &RunDir) -> Result<(), JobError> {
        let path = dir.job_toml();
        let text = toml::to_string(self).map_err(|e| JobError::Toml { path: path.clone(), message: e.to_string() })?;
        write_atomic(&path, text.as_bytes())
    }

    /// The full argument list of the job process.
    pub fn command_args(&self, dir: &RunDir, resume: bool) -> Vec<String> {
        let mut args = self.argv.clone();
        args.push(RUN_DIR_FLAG.to_owned());
        args.push(dir.path().to_string_lossy().into_owned());
        if resume {
            args.push(RESUME_FLAG.to_owned());
        }
        args
    }
}

/// A job process just spawned. Dropping it leaves the job running (a thread reaps it if it exits while we live).
#[derive(Debug)]
pub struct DetachedJob {
    child: Option<Child>,
    dir: RunDir,
    pid: u32,
}

/// How the first seconds of a job went.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// The job reported itself (`running`, or already an end state for a very short job).
    Started(Status),
    /// The process exited without reporting; `stdout.log` says why. The status was set to `failed`.
    Exited { code: Option<i32>, log_tail: String },
    /// Still queued after the timeout.
    Pending,
}

impl DetachedJob {
    /// The job's pid (`setsid` execs in place, so this is the job itself).
    pub fn pid(&self) -> u32 {
        self.pid
    }
    pub fn run_dir(&self) -> &RunDir {
        &self.dir
    }

    /// Wait until the job writes a status other than `queued`, it exits, or `timeout` passes.
    pub fn wait_started(&mut self, timeout: Duration) -> StartOutcome {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = Status::read(&self.dir) {
                if status.state != JobState::Queued {
                    return StartOutcome::Started(status);
                }
            }
            let exited = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(exit) = exited {
                if let Ok(Some(status)) = Status::read(&self.dir) {
                    if status.state != JobState::Queued {
                        return StartOutcome::Started(status);
                    }
                }
                let log_tail = tail_text(&self.dir.stdout_log(), 2000);
                let mut failed = Status::read(&self.dir).ok().flatten().unwrap_or_else(Status::queued);
                failed.state = JobState::Failed;
                failed.ended_at = Some(now_unix());
                failed.message = Some(format!("exited before starting ({exit}); see stdout.log"));
                let _ = failed.write(&self.dir);
                return StartOutcome::Exited { code: exit.code(), log_tail };
            }
            if Instant::now() >= deadline {
                return StartOutcome::Pending;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for DetachedJob {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Reap it if it exits while this process lives (a long-lived TUI must not collect zombies).
            let _ = thread::Builder::new().name("vcell-job-reaper".into()).spawn(move || child.wait());
        }
    }
}

/// The last `max` bytes of a text file (lossy), for error messages.
pub fn tail_text(path: &Path, max: usize) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(max);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Create a new run in `workspace` (name given or derived from the command) and start `argv` detached in it.
/// `exe` is the vcell binary (normally `std::env::current_exe()`).
pub fn start_run(
    workspace: &Workspace,
    name: Option<&str>,
    argv: Vec<String>,
    exe: &Path,
) -> Result<DetachedJob, JobError> {
    if argv.is_empty() {
        return Err(JobError::InvalidCommand("empty command".into()));
    }
    let dir = match name {
        Some(name) => RunDir::create(workspace.new_run_path(name)?)?,
        None => workspace.create_unique(&default_name_prefix(&argv))?,
    };
    let cwd = std::env::current_dir().map_err(|e| JobError::io(Path::new("."), e))?;
    let spec = JobSpec::new(&dir.name(), argv, cwd);
    spec.write(&dir)?;
    Status::queued().write(&dir)?;
    let lock = RunLock::acquire(&dir)?;
    let job = spawn_detached(&dir, &spec, exe, false, lock.token())?;
    lock.hand_over();
    Ok(job)
}

/// Restart a stopped, failed or lost run with `--resume`. Fails with `JobError::Locked` if another process holds
/// the run (the job itself or a concurrent resume) and with `NotResumable` for a finished or live run.
pub fn resume_run(dir: &RunDir, exe: &Path) -> Result<DetachedJob, JobError> {
    let spec = JobSpec::read(dir)?;
    let lock = RunLock::acquire(dir)?;
    let status = Status::read(dir).ok().flatten();
    let state = DisplayState::of(status.as_ref());
    if !(state.is_resumable() || state == DisplayState::Missing) {
        return Err(JobError::NotResumable { name: dir.name(), state: state.to_string() });
    }
    let mut queued = status.unwrap_or_else(Status::queued);
    queued.state = JobState::Queued;
    queued.pid = None;
    queued.pid_start_time = None;
    queued.ended_at = None;
    queued.message = None;
    queued.write(dir)?;
    let job = spawn_detached(dir, &spec, exe, true, lock.token())?;
    lock.hand_over();
    Ok(job)
}

fn spawn_detached(
    dir: &RunDir,
    spec: &JobSpec,
    exe: &Path,
    resume: bool,
    token: &str,
) -> Result<DetachedJob, JobError> {
    let log_path = dir.stdout_log();
    let log = OpenOptions::new().create(true).append(true).open(&log_path).map_err(|e| JobError::io(&log_path, e))?;
    let log_err = log.try_clone().map_err(|e| JobError::io(&log_path, e))?;
    let setsid = Path::new("/usr/bin/setsid");
    // Without `--fork`, setsid calls setsid(2) and execs in place: our child is not a process-group leader, so no
    // fork is needed and the pid we get is the job's.
    let mut cmd = if setsid.exists() {
        let mut c = Command::new(setsid);
        c.arg(exe);
        c
    } else {
        // Fallback: a new process group (not a new session); it still escapes the terminal's SIGHUP and Ctrl-C.
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(exe);
        c.process_group(0);
        c
    };
    let cwd = if spec.cwd.is_dir() { spec.cwd.clone() } else { dir.path().to_owned() };
    cmd.args(spec.command_args(dir, resume))
        .current_dir(cwd)
        .env(LOCK_TOKEN_ENV, token)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log_err));
    let child = cmd.spawn().map_err(|e| JobError::Spawn(format!("{}: {e}", exe.display())))?;
    let pid = child.id();
    Ok(DetachedJob { child: Some(child), dir: dir.clone(), pid })
}

/// A run-name prefix from the command: its leading words (before the first flag), e.g. `train-st`.
fn default_name_prefix(argv: &[String]) -> String {
    let words: Vec<&str> = argv.iter().take_while(|a| !a.starts_with('-')).take(3).map(String::as_str).collect();
    let mut name = String::new();
    for ch in words.join("-").chars() {
        if ch.is_ascii_alphanumeric() {
            name.push(ch.to_ascii_lowercase());
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches('-');
    if name.is_empty() {
        "run".to_owned()
    } else {
        name.to_owned()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn name_prefix_from_command() {
        let argv = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(default_name_prefix(&argv("train st --config x.toml")), "train-st");
        assert_eq!(default_name_prefix(&argv("runs __demo-job --steps 3")), "runs-demo-job");
        assert_eq!(default_name_prefix(&argv("--x")), "run");
    }

    #[test]
    fn job_toml_round_trips_and_appends_run_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(tmp.path().join("r")).unwrap();
        let spec = JobSpec::new("r", vec!["train".into(), "st".into()], tmp.path().to_owned());
        spec.write(&dir).unwrap();
        assert_eq!(JobSpec::read(&dir).unwrap(), spec);
        let args = spec.command_args(&dir, true);
        assert_eq!(args[..3], ["train".to_string(), "st".into(), "--run-dir".into()]);
        assert_eq!(args.last().unwrap(), "--resume");
    }
}
