//! The runs workspace (`./runs` by default): naming, listing, and noticing new runs by cheap polling.
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::run_dir::RunDir;
use super::spawn::JobSpec;
use super::status::{DisplayState, Status};
use super::{now_unix, JobError};

/// The environment variable naming the runs directory.
pub const RUNS_DIR_ENV: &str = "VCELL_RUNS_DIR";
/// The default runs directory, relative to the working directory.
pub const DEFAULT_RUNS_DIR: &str = "runs";

/// A directory of run directories.
#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// A workspace at `root`, made absolute (jobs get absolute `--run-dir` paths).
    pub fn new(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Workspace { root: std::path::absolute(root).unwrap_or_else(|_| root.to_owned()) }
    }

    /// `explicit`, else `$VCELL_RUNS_DIR`, else `./runs`.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        match explicit {
            Some(p) => Workspace::new(p),
            None => match std::env::var_os(RUNS_DIR_ENV).filter(|v| !v.is_empty()) {
                Some(v) => Workspace::new(PathBuf::from(v)),
                None => Workspace::new(DEFAULT_RUNS_DIR),
            },
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a new run named `name` (checked, not created).
    pub fn new_run_path(&self, name: &str) -> Result<PathBuf, JobError> {
        validate_name(name)?;
        Ok(self.root.join(name))
    }

    /// An existing run.
    pub fn run(&self, name: &str) -> Result<RunDir, JobError> {
        validate_name(name)?;
        let path = self.root.join(name);
        if !path.is_dir() {
            return Err(JobError::NoSuchRun(name.to_owned()));
        }
        Ok(RunDir::new(path))
    }

    /// Create a run named `<prefix>-<UTC yyyymmdd-hhmmss>`, adding `-2`, `-3`… on a collision.
    pub fn create_unique(&self, prefix: &str) -> Result<RunDir, JobError> {
        let stamp = utc_stamp(now_unix() as i64);
        let base = format!("{prefix}-{stamp}");
        for n in 1..1000 {
            let name = if n == 1 { base.clone() } else { format!("{base}-{n}") };
            match RunDir::create(self.new_run_path(&name)?) {
                Ok(dir) => return Ok(dir),
                Err(JobError::AlreadyExists(_)) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(JobError::AlreadyExists(self.root.join(base)))
    }

    /// Names of the run directories (not hidden), sorted. A missing workspace has none.
    pub fn names(&self) -> Result<Vec<String>, JobError> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(JobError::io(&self.root, e)),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| validate_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Summaries of all runs, oldest first.
    pub fn list(&self) -> Result<Vec<RunSummary>, JobError> {
        let mut runs: Vec<RunSummary> =
            self.names()?.into_iter().map(|n| RunSummary::load(RunDir::new(self.root.join(n)))).collect();
        runs.sort_by(|a, b| a.created_at().total_cmp(&b.created_at()).then_with(|| a.name.cmp(&b.name)));
        Ok(runs)
    }
}

/// A run name: `[A-Za-z0-9._-]`, not starting with `.` or `-`, at most 200 bytes.
pub fn validate_name(name: &str) -> Result<(), JobError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && !name.starts_with('-')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(JobError::InvalidName(name.to_owned()))
    }
}

/// What `runs list` and the TUI's runs pane show for one run; never fails (problems go to `problem`).
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub name: String,
    pub dir: RunDir,
    pub state: DisplayState,
    pub status: Option<Status>,
    pub spec: Option<JobSpec>,
    /// A readable note when something is off (unreadable status, missing job.toml).
    pub problem: Option<String>,
}

impl RunSummary {
    pub fn load(dir: RunDir) -> Self {
        let mut problems = Vec::new();
        let (status, state) = match Status::read(&dir) {
            Ok(Some(s)) => {
                let state = DisplayState::of(Some(&s));
                (Some(s), state)
            }
            Ok(None) => {
                problems.push("no status.json".to_owned());
                (None, DisplayState::Missing)
            }
            Err(e) => {
                problems.push(e.to_string());
                (None, DisplayState::Invalid)
            }
        };
        let spec = match JobSpec::read(&dir) {
            Ok(s) => Some(s),
            Err(e) => {
                problems.push(e.to_string());
                None
            }
        };
        if state == DisplayState::Lost {
            if let Some(pid) = status.as_ref().and_then(|s| s.pid) {
                problems.push(format!("process {pid} is gone"));
            }
        }
        if let Some(msg) = status.as_ref().and_then(|s| s.message.clone()) {
            problems.push(msg);
        }
        let problem = if problems.is_empty() { None } else { Some(problems.join("; ")) };
        RunSummary { name: dir.name(), dir, state, status, spec, problem }
    }

    /// Unix seconds the run was created (job.toml), else when its status started, else 0.
    pub fn created_at(&self) -> f64 {
        self.spec.as_ref().map(|s| s.created_at).or_else(|| self.status.as_ref().map(|s| s.started_at)).unwrap_or(0.0)
    }

    pub fn step(&self) -> Option<u64> {
        self.status.as_ref().map(|s| s.step)
    }
    pub fn last_loss(&self) -> Option<f64> {
        self.status.as_ref().and_then(|s| s.last_loss)
    }
    /// Seconds left, for a live run that declared `total_steps`.
    pub fn eta_seconds(&self, now: f64) -> Option<f64> {
        if !self.state.is_live() {
            return None;
        }
        self.status.as_ref().and_then(|s| s.eta_seconds(now))
    }
}

/// What changed in a workspace since the last poll.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunsChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// `status.json` changed (mtime or size).
    pub changed: Vec<String>,
}

impl RunsChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// Notices new, removed and updated runs by polling directory entries and `status.json` metadata: one `readdir`
/// and one `stat` per run per poll, cheap enough every second, and reliable on NFS where inotify is not.
#[derive(Debug)]
pub struct RunsWatcher {
    workspace: Workspace,
    known: BTreeMap<String, Option<(SystemTime, u64)>>,
}

impl RunsWatcher {
    /// Every existing run is reported as added on the first poll.
    pub fn new(workspace: Workspace) -> Self {
        RunsWatcher { workspace, known: BTreeMap::new() }
    }

    pub fn poll(&mut self) -> Result<RunsChanges, JobError> {
        let mut changes = RunsChanges::default();
        let mut now = BTreeMap::new();
        for name in self.workspace.names()? {
            let stamp = fs::metadata(RunDir::new(self.workspace.root.join(&name)).status_json())
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            match self.known.get(&name) {
                None => changes.added.push(name.clone()),
                Some(old) if *old != stamp => changes.changed.push(name.clone()),
                Some(_) => {}
            }
            now.insert(name, stamp);
        }
        changes.removed = self.known.keys().filter(|k| !now.contains_key(*k)).cloned().collect();
        self.known = now;
        Ok(changes)
    }
}

/// `yyyymmdd-hhmmss` in UTC (days-from-civil inverse, Howard Hinnant's algorithm).
fn utc_stamp(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn utc_stamps() {
        assert_eq!(utc_stamp(0), "19700101-000000");
        assert_eq!(utc_stamp(951_782_400), "20000229-000000");
        assert_eq!(utc_stamp(1_700_000_000), "20231114-221320");
    }

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", ".hidden", "-x", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        validate_name("train-st_1.2").unwrap();
    }

    #[test]
    fn unique_names_and_listing_tolerate_broken_runs() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path().join("runs"));
        assert!(ws.list().unwrap().is_empty());
        let a = ws.create_unique("x").unwrap();
        let b = ws.create_unique("x").unwrap();
        assert_ne!(a.name(), b.name());
        fs::write(b.status_json(), b"{broken").unwrap();
        let list = ws.list().unwrap();
        assert_eq!(list.len(), 2);
        let states: Vec<_> = list.iter().map(|r| r.state).collect();
        assert!(states.contains(&DisplayState::Missing) && states.contains(&DisplayState::Invalid), "{states:?}");
        assert!(matches!(ws.run("nope"), Err(JobError::NoSuchRun(_))));
    }

    #[test]
    fn watcher_reports_added_changed_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let ws = Workspace::new(tmp.path());
        let mut w = RunsWatcher::new(ws.clone());
        assert!(w.poll().unwrap().is_empty());
        let dir = RunDir::create(tmp.path().join("a")).unwrap();
        assert_eq!(w.poll().unwrap().added, vec!["a".to_string()]);
        Status::queued().write(&dir).unwrap();
        assert_eq!(w.poll().unwrap().changed, vec!["a".to_string()]);
        fs::remove_dir_all(dir.path()).unwrap();
        assert_eq!(w.poll().unwrap().removed, vec!["a".to_string()]);
    }
}
