//! The run directory layout. This module is the only place that builds paths inside a run directory.
//!
//! ```text
//! runs/<name>/
//!   job.toml        the command line (see `JobSpec`)
//!   status.json     written atomically (temp file + rename) by the job process only
//!   events.jsonl    append-only, one JSON event per line
//!   lock            the pid (and start time) of the process that owns the run; see `lock.rs`
//!   checkpoints/    step-N.* files written by the job, `latest` names the newest complete one
//!   outputs/        predictions, eval results
//!   stdout.log      stdout and stderr of the detached process
//! ```
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::JobError;

/// A run directory: paths only; `create` and `open` check the filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

impl RunDir {
    /// Wrap a path without touching the filesystem.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    /// Create a new run directory (and its `checkpoints/` and `outputs/`). Fails if the directory exists, so two
    /// runs never share one: `create_dir` is atomic, only one creator wins.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, JobError> {
        let dir = RunDir::new(root);
        if let Some(parent) = dir.root.parent() {
            if !parent.as_os_str().is_empty() {
                fs::create_dir_all(parent).map_err(|e| JobError::io(parent, e))?;
            }
        }
        match fs::create_dir(&dir.root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(JobError::AlreadyExists(dir.root.clone()))
            }
            Err(e) => return Err(JobError::io(&dir.root, e)),
        }
        dir.ensure_subdirs()?;
        Ok(dir)
    }

    /// Open an existing run directory (creating missing subdirectories, e.g. for a run started by hand).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, JobError> {
        let dir = RunDir::new(root);
        if !dir.root.is_dir() {
            return Err(JobError::NotFound(dir.root.clone()));
        }
        dir.ensure_subdirs()?;
        Ok(dir)
    }

    fn ensure_subdirs(&self) -> Result<(), JobError> {
        for sub in [self.checkpoints_dir(), self.outputs_dir()] {
            fs::create_dir_all(&sub).map_err(|e| JobError::io(&sub, e))?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.root
    }
    /// The run's name: the last component of its path.
    pub fn name(&self) -> String {
        self.root.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    }
    pub fn job_toml(&self) -> PathBuf {
        self.root.join("job.toml")
    }
    pub fn status_json(&self) -> PathBuf {
        self.root.join("status.json")
    }
    pub fn events_jsonl(&self) -> PathBuf {
        self.root.join("events.jsonl")
    }
    pub fn stdout_log(&self) -> PathBuf {
        self.root.join("stdout.log")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }
    pub fn outputs_dir(&self) -> PathBuf {
        self.root.join("outputs")
    }
    /// `checkpoints/latest`: a one-line text file naming the newest complete checkpoint (`step-N`).
    pub fn latest_pointer(&self) -> PathBuf {
        self.checkpoints_dir().join("latest")
    }
    /// `checkpoints/step-N`: the stem of checkpoint N; the job adds extensions (`.json`, `.safetensors`).
    pub fn checkpoint_stem(&self, step: u64) -> PathBuf {
        self.checkpoints_dir().join(checkpoint_name(step))
    }
}

/// `step-N`, the name of checkpoint N (what `latest` holds).
pub fn checkpoint_name(step: u64) -> String {
    format!("step-{step}")
}

/// Parse `step-N` back into N.
pub fn parse_checkpoint_name(name: &str) -> Option<u64> {
    name.trim().strip_prefix("step-")?.parse().ok()
}

/// Write a file atomically: a temp file in the same directory, fsync, rename over the target. Readers see the old
/// content or the new one, never a partial file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), JobError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{file_name}.tmp.{}.{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(JobError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn create_refuses_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("runs").join("a");
        let dir = RunDir::create(&root).unwrap();
        assert!(dir.checkpoints_dir().is_dir());
        assert!(dir.outputs_dir().is_dir());
        assert_eq!(dir.name(), "a");
        assert!(matches!(RunDir::create(&root), Err(JobError::AlreadyExists(_))));
    }

    #[test]
    fn open_missing_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(RunDir::open(tmp.path().join("nope")), Err(JobError::NotFound(_))));
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_files() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("status.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "second");
        let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn atomic_write_into_missing_directory_fails_cleanly() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("missing").join("status.json");
        assert!(matches!(write_atomic(&path, b"x"), Err(JobError::Io { .. })));
    }

    #[test]
    fn checkpoint_names_round_trip() {
        assert_eq!(checkpoint_name(42), "step-42");
        assert_eq!(parse_checkpoint_name("step-42\n"), Some(42));
        assert_eq!(parse_checkpoint_name("step-x"), None);
        assert_eq!(parse_checkpoint_name(""), None);
    }
}
