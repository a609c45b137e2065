//! The jobs layer through the real binary: detached start, kill -9 → lost → resume, stop, locks, broken run dirs.
//! The job is the reference job `vcell runs __demo-job`. Timeouts are generous; nothing asserts on timing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use vcell::jobs::events::read_all;
use vcell::jobs::process::ProcessId;
use vcell::jobs::runtime::latest_checkpoint;
use vcell::jobs::{Event, EventKind, JobState, RunDir, Status};

const BIN: &str = env!("CARGO_BIN_EXE_vcell");
const LONG: Duration = Duration::from_secs(120);

struct Ws {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Ws {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("runs");
        Ws { _tmp: tmp, root }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("VCELL_RUNS_DIR", &self.root).env_remove("VCELL_JOB_LOCK_TOKEN").current_dir(self._tmp.path());
        c
    }

    fn vcell(&self, args: &[&str]) -> Output {
        self.cmd().args(args).stdin(Stdio::null()).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.vcell(args);
        assert!(out.status.success(), "vcell {args:?} failed:\n{}\n{}", text(&out.stdout), text(&out.stderr));
        text(&out.stdout)
    }

    fn start_demo(&self, name: &str, steps: u64, step_ms: u64, every: u64) {
        let (steps, step_ms, every) = (steps.to_string(), step_ms.to_string(), every.to_string());
        let out = self.ok(&[
            "runs",
            "start",
            "--name",
            name,
            "--",
            "runs",
            "__demo-job",
            "--steps",
            &steps,
            "--step-ms",
            &step_ms,
            "--checkpoint-every",
            &every,
        ]);
        assert_eq!(out.trim(), name);
    }

    fn dir(&self, name: &str) -> RunDir {
        RunDir::new(self.root.join(name))
    }
    fn status(&self, name: &str) -> Option<Status> {
        Status::read(&self.dir(name)).ok().flatten()
    }
    fn events(&self, name: &str) -> Vec<Event> {
        read_all(&self.dir(name).events_jsonl()).unwrap()
    }
    fn train_steps(&self, name: &str) -> Vec<u64> {
        self.events(name).iter().filter(|e| e.kind == EventKind::Train).map(|e| e.step).collect()
    }
    fn pid(&self, name: &str) -> ProcessId {
        self.status(name).unwrap().process().unwrap()
    }
    fn wait_state(&self, name: &str, state: JobState) -> Status {
        wait_until(&format!("{name} to be {state:?}"), || self.status(name).filter(|s| s.state == state));
        self.status(name).unwrap()
    }
    fn wait_train_step(&self, name: &str, step: u64) {
        wait_until(&format!("{name} to reach step {step}"), || {
            self.train_steps(name).last().copied().filter(|s| *s >= step)
        });
    }
}

impl Drop for Ws {
    /// Never leave a job behind, even when a test fails half-way.
    fn drop(&mut self) {
        for entry in std::fs::read_dir(&self.root).into_iter().flatten().flatten() {
            let status = Status::read(&RunDir::new(entry.path())).ok().flatten();
            if let Some(p) = status.and_then(|s| s.process()).filter(|p| p.is_alive()) {
                kill("-KILL", &p.pid.to_string());
            }
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn wait_until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + LONG;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

fn kill(signal: &str, target: &str) {
    let _ = Command::new("kill").args([signal, "--", target]).stderr(Stdio::null()).status();
}

fn wait_dead(p: ProcessId) {
    wait_until("the process to exit", || (!p.is_alive()).then_some(()));
}

/// Events, checkpoints and status of a run that finished all `steps`, checkpointing every `every`.
fn assert_complete(ws: &Ws, name: &str, steps: u64, every: u64) {
    let status = ws.wait_state(name, JobState::Finished);
    assert_eq!(status.step, steps);
    assert_eq!(ws.train_steps(name), (1..=steps).collect::<Vec<_>>());
    let dir = ws.dir(name);
    for step in (every..=steps).step_by(every as usize) {
        assert!(dir.checkpoint_stem(step).with_extension("json").exists(), "checkpoint {step}");
    }
    assert_eq!(latest_checkpoint(&dir).unwrap().unwrap().step, steps);
    assert!(!dir.lock_file().exists());
    let last = ws.events(name).pop().unwrap();
    assert_eq!((last.kind, last.text("state")), (EventKind::Status, Some("finished")));
}

fn have(program: &str) -> bool {
    Command::new("which").arg(program).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}

#[test]
fn detached_job_survives_its_tmux_session_being_killed() {
    if !have("tmux") {
        eprintln!("tmux not installed; covered by detached_job_survives_its_shell_being_killed");
        return;
    }
    let ws = Ws::new();
    let socket = format!("vcell-jobs-test-{}", std::process::id());
    let shell = format!(
        "{BIN} runs --runs-dir {} start --name t -- runs __demo-job --steps 30 --step-ms 100 --checkpoint-every 5; \
         sleep 300",
        ws.root.display()
    );
    let started = Command::new("tmux")
        .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d", "-s", "jobs", &shell])
        .env_remove("TMUX")
        .status()
        .unwrap();
    assert!(started.success());
    ws.wait_train_step("t", 3);
    let job = ws.pid("t");
    let killed = Command::new("tmux").args(["-L", &socket, "kill-server"]).status().unwrap();
    assert!(killed.success());
    assert!(job.is_alive(), "the job died with its terminal");
    assert_complete(&ws, "t", 30, 5);
}

#[test]
fn detached_job_survives_its_shell_being_killed() {
    use std::os::unix::process::CommandExt;
    let ws = Ws::new();
    let script =
        "\"$0\" runs start --name s -- runs __demo-job --steps 20 --step-ms 100 --checkpoint-every 5; sleep 300";
    let mut sh = Command::new("sh")
        .args(["-c", script, BIN])
        .env("VCELL_RUNS_DIR", &ws.root)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    ws.wait_train_step("s", 3);
    let job = ws.pid("s");
    let group = format!("-{}", sh.id());
    kill("-HUP", &group);
    kill("-KILL", &group);
    sh.wait().unwrap();
    assert!(job.is_alive(), "the job died with its shell's process group");
    assert_complete(&ws, "s", 20, 5);
}

#[test]
fn kill_9_shows_lost_and_resume_continues_from_the_last_checkpoint() {
    let ws = Ws::new();
    ws.start_demo("k", 40, 100, 5);
    ws.wait_train_step("k", 12);
    let job = ws.pid("k");
    kill("-KILL", &job.pid.to_string());
    wait_dead(job);
    let dir = ws.dir("k");
    let checkpoint = latest_checkpoint(&dir).unwrap().unwrap().step;
    assert!(checkpoint >= 10 && checkpoint.is_multiple_of(5), "{checkpoint}");
    let before = ws.train_steps("k");
    let listed = ws.ok(&["runs", "list"]);
    let row = listed.lines().find(|l| l.starts_with("k ")).unwrap();
    assert!(row.contains(" lost "), "{listed}");
    let json: serde_json::Value = serde_json::from_str(&ws.ok(&["runs", "list", "--json"])).unwrap();
    assert_eq!(json[0]["state"], "lost");
    // The dead job's lock is still there: resume must take it over.
    assert!(dir.lock_file().exists());

    ws.ok(&["runs", "resume", "k"]);
    ws.wait_state("k", JobState::Finished);
    let events = ws.events("k");
    let resumed_at = events
        .iter()
        .position(|e| e.kind == EventKind::Status && e.number("resumed_from").is_some())
        .expect("a status event with resumed_from");
    assert_eq!(events[resumed_at].number("resumed_from"), Some(checkpoint as f64));
    let steps = |es: &[Event]| es.iter().filter(|e| e.kind == EventKind::Train).map(|e| e.step).collect::<Vec<_>>();
    assert_eq!(steps(&events[..resumed_at]), before);
    assert_eq!(steps(&events[resumed_at..]), (checkpoint + 1..=40).collect::<Vec<_>>());
    let status = ws.status("k").unwrap();
    assert_eq!((status.step, status.start_step), (40, checkpoint));
    assert_eq!(latest_checkpoint(&dir).unwrap().unwrap().step, 40);
    // A finished run is not resumed again.
    let again = ws.vcell(&["runs", "resume", "k"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("finished"), "{}", text(&again.stderr));
}

#[test]
fn stop_writes_a_checkpoint_and_exits_cleanly() {
    let ws = Ws::new();
    ws.start_demo("st", 100_000, 50, 1000);
    ws.wait_train_step("st", 3);
    let job = ws.pid("st");
    // A running job is not removed without --force.
    let rm = ws.vcell(&["runs", "rm", "st", "--yes"]);
    assert!(!rm.status.success());
    assert!(text(&rm.stderr).contains("still running"), "{}", text(&rm.stderr));

    let out = ws.ok(&["runs", "stop", "st", "--timeout", "60"]);
    assert!(out.contains("stopped st"), "{out}");
    let status = ws.status("st").unwrap();
    assert_eq!(status.state, JobState::Stopped);
    let dir = ws.dir("st");
    let latest = latest_checkpoint(&dir).unwrap().unwrap();
    assert_eq!(latest.step, status.step);
    assert!(latest.file("json").exists());
    wait_dead(job);
    assert!(!dir.lock_file().exists());
    let states: Vec<_> = ws.events("st").iter().filter_map(|e| e.text("state").map(str::to_owned)).collect();
    assert_eq!(states, ["running", "stopping", "stopped"]);
    assert!(ws.ok(&["runs", "list"]).contains("stopped"));
    // Stopping again is a clear error.
    let again = ws.vcell(&["runs", "stop", "st"]);
    assert!(!again.status.success());
    assert!(text(&again.stderr).contains("is stopped"), "{}", text(&again.stderr));
    // And rm --yes works now.
    ws.ok(&["runs", "rm", "st", "--yes"]);
    assert!(!dir.path().exists());
}

#[test]
fn two_concurrent_resumes_one_wins_the_other_gets_a_lock_error() {
    let ws = Ws::new();
    ws.start_demo("c", 100_000, 50, 5);
    ws.wait_train_step("c", 6);
    let job = ws.pid("c");
    // While the job runs, resume is refused by its lock.
    let busy = ws.vcell(&["runs", "resume", "c"]);
    assert!(!busy.status.success());
    assert!(text(&busy.stderr).contains("locked by pid"), "{}", text(&busy.stderr));
    kill("-KILL", &job.pid.to_string());
    wait_dead(job);

    let spawn = || ws.cmd().args(["runs", "resume", "c"]).stdin(Stdio::null()).output();
    let (a, b) = thread::scope(|s| {
        let a = s.spawn(spawn);
        let b = s.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let ok = [&a, &b].iter().filter(|o| o.status.success()).count();
    assert_eq!(ok, 1, "a: {}\nb: {}", text(&a.stderr), text(&b.stderr));
    let loser = if a.status.success() { &b } else { &a };
    assert!(text(&loser.stderr).contains("locked by pid"), "{}", text(&loser.stderr));
    // Exactly one job process runs the run; stop it.
    ws.wait_state("c", JobState::Running);
    ws.ok(&["runs", "stop", "c", "--timeout", "60"]);
    let resumes = ws.events("c").iter().filter(|e| e.number("resumed_from").is_some()).count();
    assert_eq!(resumes, 1);
}

#[test]
fn start_refuses_an_existing_name_and_tail_follows_to_the_end() {
    let ws = Ws::new();
    ws.start_demo("f", 15, 50, 5);
    let dup = ws.vcell(&["runs", "start", "--name", "f", "--", "runs", "__demo-job"]);
    assert!(!dup.status.success());
    assert!(text(&dup.stderr).contains("already exists"), "{}", text(&dup.stderr));
    let out = ws.ok(&["runs", "tail", "f", "--follow"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.iter().any(|l| l.contains("loss") && l.contains("it/s")), "{out}");
    assert!(lines.last().unwrap().contains("status finished"), "{out}");
    assert_eq!(lines.iter().filter(|l| l.contains("loss ")).count(), 15, "{out}");
    let job_toml = std::fs::read_to_string(ws.dir("f").job_toml()).unwrap();
    assert!(job_toml.contains("__demo-job") && job_toml.contains("vcell_version"), "{job_toml}");
}

#[test]
fn a_bad_command_is_reported_as_failed() {
    let ws = Ws::new();
    let out = ws.vcell(&["runs", "start", "--name", "bad", "--", "no-such-subcommand"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("before starting"), "{}", text(&out.stderr));
    assert_eq!(ws.status("bad").unwrap().state, JobState::Failed);
    assert!(ws.ok(&["runs", "list"]).contains("failed"));
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

fn status_json(state: &str, pid: u32, start_time: Option<u64>) -> String {
    serde_json::json!({"state": state, "pid": pid, "pid_start_time": start_time, "step": 3, "last_loss": 0.5})
        .to_string()
}

#[test]
fn broken_run_directories_give_clear_states_without_panics() {
    let ws = Ws::new();
    let run = |name: &str| ws.root.join(name);
    let train = "{\"t\":1,\"kind\":\"train\",\"step\":1,\"loss\":0.5}\n";
    // A torn last line.
    write(&run("torn").join("status.json"), &status_json("finished", 1, None));
    write(&run("torn").join("events.jsonl"), &format!("{train}{{\"t\":2,\"kind\":\"tr"));
    // An empty events file, status running with a dead pid.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    write(&run("empty").join("status.json"), &status_json("running", dead, Some(1)));
    write(&run("empty").join("events.jsonl"), "");
    // No status.json at all.
    write(&run("nostatus").join("events.jsonl"), train);
    // A running status whose pid now belongs to another process (this test; wrong start time).
    let me = ProcessId::current();
    write(&run("reused").join("status.json"), &status_json("running", me.pid, me.start_time.map(|t| t + 7)));
    // Garbage.
    write(&run("garbage").join("status.json"), "{{{");
    write(&run("garbage").join("events.jsonl"), "nonsense\n");

    let listed = ws.ok(&["runs", "list"]);
    let state_of = |name: &str| {
        let line = listed.lines().find(|l| l.split_whitespace().next() == Some(name)).unwrap();
        line.split_whitespace().nth(1).unwrap().to_owned()
    };
    assert_eq!(state_of("torn"), "finished", "{listed}");
    assert_eq!(state_of("empty"), "lost", "{listed}");
    assert_eq!(state_of("nostatus"), "missing", "{listed}");
    assert_eq!(state_of("reused"), "lost", "{listed}");
    assert_eq!(state_of("garbage"), "invalid", "{listed}");
    let json: serde_json::Value = serde_json::from_str(&ws.ok(&["runs", "list", "--json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 5);

    let torn = ws.ok(&["runs", "tail", "torn"]);
    assert_eq!(torn.lines().count(), 1, "{torn}");
    assert!(ws.ok(&["runs", "tail", "empty", "--follow"]).is_empty());
    assert!(ws.ok(&["runs", "tail", "garbage"]).contains("[warn] events.jsonl: malformed line"));
    ws.ok(&["runs", "tail", "nostatus", "--follow"]);
    for (args, expect) in [
        (vec!["runs", "stop", "empty"], "lost"),
        (vec!["runs", "stop", "reused"], "lost"),
        (vec!["runs", "stop", "nostatus"], "missing"),
        (vec!["runs", "resume", "nostatus"], "job.toml"),
        (vec!["runs", "tail", "nope"], "no run named"),
        (vec!["runs", "tail", "../x"], "invalid run name"),
    ] {
        let out = ws.vcell(&args);
        let err = text(&out.stderr);
        assert!(!out.status.success() && err.contains(expect), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // rm asks: "n" keeps the run, "y" removes it.
    let mut rm = ws.cmd().args(["runs", "rm", "garbage"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(rm.stdin.as_mut().unwrap(), b"n\n").unwrap();
    assert!(rm.wait().unwrap().success());
    assert!(run("garbage").exists());
    let mut rm = ws.cmd().args(["runs", "rm", "garbage"]).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(rm.stdin.as_mut().unwrap(), b"y\n").unwrap();
    assert!(rm.wait().unwrap().success());
    assert!(!run("garbage").exists());
}

#[test]
fn rm_force_kills_a_running_job_and_removes_it() {
    let ws = Ws::new();
    ws.start_demo("r", 100_000, 50, 1000);
    ws.wait_train_step("r", 2);
    let job = ws.pid("r");
    ws.ok(&["runs", "rm", "r", "--yes", "--force"]);
    wait_dead(job);
    assert!(!ws.root.join("r").exists());
}
