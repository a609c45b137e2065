//! The run lock: `<run>/lock` holds the pid (and start time) of the one process that owns the run, so two
//! `resume`s (or a resume and the live job) can never run at once.
//!
//! - Created atomically with its content: a temp file hard-linked to `lock` (`link` fails if `lock` exists; this
//!   also works on NFS, unlike `O_EXCL` on old servers).
//! - A lock whose process is dead (or whose pid was reused: the start time differs) is stale and is taken over:
//!   it is renamed away, checked to be the same stale content, and deleted.
//! - Hand-over: `runs start`/`runs resume` take the lock before spawning, pass its token to the child in
//!   `VCELL_JOB_LOCK_TOKEN`, and disarm their guard; the child rewrites the lock with its own pid when it presents
//!   the same token. So there is no window where a second `resume` could slip in.
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::process::ProcessId;
use super::run_dir::{write_atomic, RunDir};
use super::{now_unix, JobError};

/// The environment variable that carries a lock token from the starter to the job.
pub const LOCK_TOKEN_ENV: &str = "VCELL_JOB_LOCK_TOKEN";

/// The content of a lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockInfo {
    pub pid: u32,
    #[serde(default)]
    pub start_time: Option<u64>,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub created_at: f64,
}

impl LockInfo {
    fn mine(token: String) -> Self {
        let me = ProcessId::current();
        LockInfo { pid: me.pid, start_time: me.start_time, token, created_at: now_unix() }
    }
    pub fn process(&self) -> ProcessId {
        ProcessId { pid: self.pid, start_time: self.start_time }
    }
}

/// Who holds a run's lock now (None: unlocked or stale).
pub fn live_holder(dir: &RunDir) -> Option<LockInfo> {
    read_lock(&dir.lock_file()).ok().flatten().filter(|info| info.process().is_alive())
}

fn read_lock(path: &Path) -> Result<Option<LockInfo>, JobError> {
    match fs::read(path) {
        // Unparseable content means no identifiable holder: treated as stale.
        Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
        Err(e) => Err(JobError::io(path, e)),
    }
}

fn new_token() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A held lock; dropping it removes the lock file (if it is still ours).
#[derive(Debug)]
pub struct RunLock {
    path: PathBuf,
    info: LockInfo,
    armed: bool,
}

impl RunLock {
    /// Take the lock of a run, taking over a stale one. Fails with `JobError::Locked` if a live process holds it.
    pub fn acquire(dir: &RunDir) -> Result<Self, JobError> {
        Self::acquire_with_token(dir, None)
    }

    /// Take the lock; if it is held with `token` (handed over by the starter), take it over.
    pub fn acquire_with_token(dir: &RunDir, token: Option<&str>) -> Result<Self, JobError> {
        let path = dir.lock_file();
        let info = LockInfo::mine(token.map(str::to_owned).unwrap_or_else(new_token));
        let bytes = serde_json::to_vec(&info).map_err(|source| JobError::Json { path: path.clone(), source })?;
        for _ in 0..5 {
            if create_with_content(&path, &bytes)? {
                return Ok(RunLock { path, info, armed: true });
            }
            let existing = match read_lock(&path) {
                Ok(e) => e,
                Err(JobError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if let Some(held) = &existing {
                if token.is_some_and(|t| !t.is_empty() && t == held.token) {
                    // Handed over by our starter: rewrite with our pid, same token.
                    write_atomic(&path, &bytes)?;
                    return Ok(RunLock { path, info, armed: true });
                }
                if held.process().is_alive() {
                    return Err(JobError::Locked { path, pid: held.pid });
                }
            }
            remove_stale(&path, existing.as_ref())?;
        }
        Err(JobError::Locked { path, pid: 0 })
    }

    pub fn token(&self) -> &str {
        &self.info.token
    }
    pub fn info(&self) -> &LockInfo {
        &self.info
    }

    /// Leave the lock file in place for a child that will take it over with `token()`.
    pub fn hand_over(mut self) {
        self.armed = false;
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Remove only our own lock (a stale-lock takeover by someone else must not be undone).
        if let Ok(Some(current)) = read_lock(&self.path) {
            if current.pid == self.info.pid && current.token == self.info.token {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Create `path` with `bytes` atomically; false if it already exists.
fn create_with_content(path: &Path, bytes: &[u8]) -> Result<bool, JobError> {
    let tmp = path.with_file_name(format!(".lock.tmp.{}", new_token()));
    fs::write(&tmp, bytes).map_err(|e| JobError::io(&tmp, e))?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(JobError::io(path, e)),
    }
}

/// Move a stale lock away. If what we moved is not the stale lock we judged (someone replaced it in between), put
/// it back and report the lock as busy.
fn remove_stale(path: &Path, judged: Option<&LockInfo>) -> Result<(), JobError> {
    let aside = path.with_file_name(format!(".lock.stale.{}", new_token()));
    match fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(JobError::io(path, e)),
    }
    let moved = read_lock(&aside).ok().flatten();
    if moved.as_ref() == judged {
        let _ = fs::remove_file(&aside);
        Ok(())
    } else {
        let _ = fs::hard_link(&aside, path);
        let _ = fs::remove_file(&aside);
        Err(JobError::Locked { path: path.to_owned(), pid: moved.map(|m| m.pid).unwrap_or(0) })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn run_dir() -> (tempfile::TempDir, RunDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RunDir::create(tmp.path().join("r")).unwrap();
        (tmp, dir)
    }

    #[test]
    fn second_acquire_fails_and_drop_releases() {
        let (_tmp, dir) = run_dir();
        let lock = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).unwrap_err();
        assert!(matches!(err, JobError::Locked { pid, .. } if pid == std::process::id()), "{err}");
        assert_eq!(live_holder(&dir).unwrap().pid, std::process::id());
        drop(lock);
        assert!(!dir.lock_file().exists());
        assert!(live_holder(&dir).is_none());
        let _again = RunLock::acquire(&dir).unwrap();
    }

    #[test]
    fn stale_lock_of_a_dead_process_is_taken_over() {
        let (_tmp, dir) = run_dir();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let stale = LockInfo { pid: dead, start_time: Some(1), token: "old".into(), created_at: 0.0 };
        fs::write(dir.lock_file(), serde_json::to_vec(&stale).unwrap()).unwrap();
        let lock = RunLock::acquire(&dir).unwrap();
        assert_eq!(lock.info().pid, std::process::id());
    }

    #[test]
    fn reused_pid_and_garbage_locks_are_stale() {
        let (_tmp, dir) = run_dir();
        let me = ProcessId::current();
        let reused =
            LockInfo { pid: me.pid, start_time: me.start_time.map(|t| t + 1), token: "x".into(), created_at: 0.0 };
        fs::write(dir.lock_file(), serde_json::to_vec(&reused).unwrap()).unwrap();
        drop(RunLock::acquire(&dir).unwrap());
        fs::write(dir.lock_file(), b"garbage").unwrap();
        drop(RunLock::acquire(&dir).unwrap());
    }

    #[test]
    fn hand_over_by_token() {
        let (_tmp, dir) = run_dir();
        let lock = RunLock::acquire(&dir).unwrap();
        let token = lock.token().to_owned();
        lock.hand_over();
        assert!(dir.lock_file().exists());
        assert!(RunLock::acquire(&dir).is_err());
        assert!(RunLock::acquire_with_token(&dir, Some("wrong")).is_err());
        let taken = RunLock::acquire_with_token(&dir, Some(&token)).unwrap();
        drop(taken);
        assert!(!dir.lock_file().exists());
    }
}
