//! The real binary in a real terminal (tmux): start an ST training run from the workbench's new-run form, watch
//! its loss curve move, kill the terminal (the whole tmux server), open the workbench again in a new session and
//! see the same run still training, its step continuing. Skipped, with a message, when tmux is not installed
//! (`scripts/setup.sh` installs it).
#![allow(clippy::unwrap_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use vcell::jobs::{JobState, RunDir, Status};

const BIN: &str = env!("CARGO_BIN_EXE_vcell");
const SESSION: &str = "vcell";
const RUN: &str = "tmuxrun";
/// Generous: a debug build on a busy 2-core machine.
const TIMEOUT: Duration = Duration::from_secs(90);

// Long enough never to finish during the test (it is stopped at the end); small enough that a step takes tens of
// milliseconds, so the step visibly moves between polls.
const ST: &str = "max_steps = 1000000\ncheckpoint_every = 25\nval_every = 25\nbatch_size = 8\ncell_set_len = 64\n\
                  hidden_dim = 16\nn_layers = 1\nn_heads = 2\nhead_dim = 8\nffn_dim = 32\nn_encoder_layers = 1\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn single_quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn tmux_available() -> bool {
    Command::new("tmux").arg("-V").stdin(Stdio::null()).output().is_ok_and(|o| o.status.success())
}

/// A private tmux server (`-L`, no user config) over a temporary workspace; killed, and the run stopped, on drop.
struct Term {
    tmp: tempfile::TempDir,
    socket: String,
}

impl Term {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let socket = format!("vcell-test-{}", std::process::id());
        Term { tmp, socket }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .env("TERM", "xterm-256color")
            .env_remove("TMUX")
            .env_remove("VCELL_JOB_LOCK_TOKEN")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    fn vcell(&self, args: &[&str]) -> Output {
        support::run_vcell(self.tmp.path(), &self.path("runs"), args)
    }

    /// `vcell ui` in a new detached 120×36 session, in the workspace, with no user keymap.
    fn open_workbench(&self) {
        let root = self.tmp.path().to_string_lossy().into_owned();
        let command = format!(
            "env -u VCELL_JOB_LOCK_TOKEN TERM=xterm-256color XDG_CONFIG_HOME={} VCELL_RUNS_DIR={} {} ui",
            single_quoted(&root),
            single_quoted(&format!("{root}/runs")),
            single_quoted(BIN)
        );
        let out = self.tmux(&["new-session", "-d", "-s", SESSION, "-x", "120", "-y", "36", "-c", &root, &command]);
        assert!(out.status.success(), "tmux new-session: {}", text(&out.stderr));
        // Keep the pane after the process exits, so a crash leaves its output to print.
        let _ = self.tmux(&["set-option", "-t", SESSION, "remain-on-exit", "on"]);
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", SESSION];
        args.extend_from_slice(keys);
        let out = self.tmux(&args);
        assert!(out.status.success(), "tmux send-keys {keys:?}: {}\n{}", text(&out.stderr), self.capture());
    }

    fn type_text(&self, s: &str) {
        let out = self.tmux(&["send-keys", "-t", SESSION, "-l", s]);
        assert!(out.status.success(), "tmux send-keys -l {s:?}: {}", text(&out.stderr));
    }

    fn capture(&self) -> String {
        text(&self.tmux(&["capture-pane", "-p", "-t", SESSION]).stdout)
    }

    /// Poll the pane until `found` returns something; on timeout fail with the pane and the run's log.
    fn wait_for<T>(&self, what: &str, mut found: impl FnMut(&str) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            let pane = self.capture();
            if let Some(v) = found(&pane) {
                return v;
            }
            if let Ok(Some(s)) = Status::read(&self.run_dir()) {
                assert!(s.state != JobState::Failed, "the job failed: {:?}\n{}\npane:\n{pane}", s.message, self.log());
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {what}; the pane:\n{pane}\nthe run's stdout.log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn run_dir(&self) -> RunDir {
        RunDir::new(self.path("runs").join(RUN))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.run_dir().stdout_log()).unwrap_or_default()
    }

    fn kill_server(&self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        self.kill_server();
        // Never leave a training job behind, whatever happened (a no-op once the test stopped it).
        if self.run_dir().path().exists() {
            let _ = self.vcell(&["runs", "stop", RUN, "--timeout", "30"]);
        }
    }
}

/// The loss pane's numbers line: `step N  loss X`.
fn loss_line(pane: &str) -> Option<(u64, String)> {
    pane.lines().find_map(|l| {
        let rest = &l[l.find("step ")? + 5..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let step = digits.parse().ok()?;
        let after = rest[digits.len()..].trim_start().strip_prefix("loss ")?;
        let loss = after.split_whitespace().next()?.to_owned();
        Some((step, loss))
    })
}

fn write_workspace(dir: &Path, t: &Term) {
    let out = t.vcell(&[
        "synth",
        "-o",
        "synth.h5ad",
        "--n-genes",
        "120",
        "--n-perts",
        "6",
        "--n-cell-types",
        "2",
        "--cells-per-pert",
        "24",
        "--ctrl-per-cell-type",
        "48",
        "--quiet",
    ]);
    assert!(out.status.success(), "vcell synth: {}", text(&out.stderr));
    std::fs::write(
        dir.join("data.toml"),
        "[datasets]\nsynth = \"synth.h5ad\"\n[training]\nsynth = \"train\"\n[zeroshot]\n\"synth.celltype_1\" = \"test\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("st.toml"), ST).unwrap();
}

#[test]
fn training_started_in_the_tui_survives_the_terminal() {
    if !tmux_available() {
        eprintln!(
            "SKIPPED training_started_in_the_tui_survives_the_terminal: tmux is not installed (scripts/setup.sh)"
        );
        return;
    }
    let t = Term::new();
    write_workspace(t.tmp.path(), &t);

    // The workbench on an empty workspace.
    t.open_workbench();
    t.wait_for("the empty runs pane", |p| p.contains("No runs yet").then_some(()));

    // The new-run form: model `st` is filled in; data config, model config, device, name.
    t.keys(&["n"]);
    t.wait_for("the new-run form", |p| p.contains("New run").then_some(()));
    t.keys(&["Tab"]);
    t.type_text("data.toml");
    t.keys(&["Tab"]);
    t.type_text("st.toml");
    t.keys(&["Tab"]);
    t.wait_for("the device field", |p| p.contains("cpu, cuda, cuda:N or auto").then_some(()));
    // `cpu` is filled in; `auto` picks CUDA when built in and present, else the CPU.
    t.keys(&["BSpace", "BSpace", "BSpace"]);
    t.type_text("auto");
    t.keys(&["Tab"]);
    t.type_text(RUN);
    t.wait_for("the command line in the form", |p| {
        p.contains("vcell train st --data-config data.toml --config st.toml --device auto").then_some(())
    });
    t.keys(&["Enter"]);
    t.wait_for("the run listed as running", |p| {
        p.lines().any(|l| l.contains(RUN) && l.contains("running")).then_some(())
    });
    let spec = std::fs::read_to_string(t.run_dir().job_toml()).unwrap();
    assert!(spec.contains("\"--device\"") && spec.contains("\"auto\""), "{spec}");

    // The loss pane: the step and loss move.
    t.keys(&["2"]);
    let (first, _) = t.wait_for("a logged step", loss_line);
    let (moved, _) = t.wait_for("the step to move", |p| loss_line(p).filter(|(s, _)| *s > first));
    assert!(p_has_curve(&t.capture()), "no curve drawn:\n{}", t.capture());

    // Close the terminal: the whole tmux server (the workbench dies with it; the job does not).
    t.kill_server();
    let gone = t.tmux(&["has-session", "-t", SESSION]);
    assert!(!gone.status.success(), "the tmux server is still up");
    let start = Instant::now();
    loop {
        let status = Status::read(&t.run_dir()).unwrap().unwrap();
        assert_eq!(status.state, JobState::Running, "the job must outlive the terminal: {status:?}\n{}", t.log());
        if status.step > moved {
            break;
        }
        assert!(start.elapsed() < TIMEOUT, "the job stopped making progress without a terminal: {status:?}");
        thread::sleep(Duration::from_millis(50));
    }

    // A new terminal, a new workbench: the same run, still running, its step continuing from where it was.
    t.open_workbench();
    t.wait_for("the run still running", |p| p.lines().any(|l| l.contains(RUN) && l.contains("running")).then_some(()));
    t.keys(&["2"]);
    let (again, _) = t.wait_for("the loss pane of the run", loss_line);
    assert!(again >= moved, "the curve restarted: step {again} after {moved} before the terminal was closed");
    t.wait_for("the step to keep moving", |p| loss_line(p).filter(|(s, _)| *s > again));
    assert!(p_has_curve(&t.capture()), "no curve drawn:\n{}", t.capture());

    // Quit the workbench, stop the job (it checkpoints), and check it stopped.
    t.keys(&["q"]);
    let out = t.vcell(&["runs", "stop", RUN, "--timeout", "60"]);
    assert!(out.status.success(), "vcell runs stop: {}{}", text(&out.stdout), text(&out.stderr));
    let status = Status::read(&t.run_dir()).unwrap().unwrap();
    assert_eq!(status.state, JobState::Stopped, "{status:?}");
    assert!(status.step > again);
    eprintln!(
        "steps seen: {first} -> {moved} in the first workbench, {again} -> more in the second; stopped at {}",
        status.step
    );
}

/// Whether the loss pane drew a curve (braille cells).
fn p_has_curve(pane: &str) -> bool {
    pane.chars().filter(|c| ('\u{2801}'..='\u{28ff}').contains(c)).count() >= 3
}
