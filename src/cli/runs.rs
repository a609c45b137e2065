//! `vcell runs …`: jobs that outlive the terminal.
use std::io::{self, BufRead, Write};
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;

use crate::jobs::control::{self, StopOutcome};
use crate::jobs::demo::DemoJob;
use crate::jobs::{
    now_unix, resume_run, start_run, DisplayState, Event, EventKind, EventReader, StartOutcome, Status, Workspace,
};

#[derive(Args, Debug)]
pub struct RunsArgs {
    /// The runs directory [default: $VCELL_RUNS_DIR, else ./runs].
    #[arg(long, global = true)]
    pub runs_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: RunsCommand,
}

#[derive(Subcommand, Debug)]
pub enum RunsCommand {
    /// Start `vcell <COMMAND…> --run-dir runs/<name>` detached (survives the terminal); prints the run name.
    Start {
        /// Run name (default: from the command and the time). Fails if it exists.
        #[arg(long)]
        name: Option<String>,
        /// Seconds to wait for the job to report `running`.
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
        /// The vcell command, after `--` (e.g. `-- train st --config st.toml`).
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// List runs: NAME STATE STEP LOSS AGE ETA (`lost`: the process died while running).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print a run's events formatted; with --follow keep printing until the job ends.
    Tail {
        name: String,
        #[arg(short, long)]
        follow: bool,
        /// Print the raw JSON lines.
        #[arg(long)]
        raw: bool,
    },
    /// SIGTERM a run: it checkpoints and becomes `stopped`.
    Stop {
        name: String,
        /// Seconds to wait for `stopped`.
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Restart a stopped, failed or lost run from its latest checkpoint (same command + `--resume`).
    Resume {
        name: String,
        #[arg(long, default_value_t = 10.0)]
        wait: f64,
    },
    /// Delete a run directory (asks unless --yes; refuses a running job unless --force, which kills it).
    Rm {
        name: String,
        #[arg(short, long)]
        yes: bool,
        #[arg(long)]
        force: bool,
    },
    /// The reference job used to test the job protocol (a fake training loop using `JobContext`).
    #[command(name = "__demo-job", hide = true)]
    DemoJob {
        #[arg(long)]
        run_dir: PathBuf,
        #[arg(long, default_value_t = 20)]
        steps: u64,
        #[arg(long, default_value_t = 100)]
        step_ms: u64,
        #[arg(long, default_value_t = 10)]
        checkpoint_every: u64,
        #[arg(long)]
        resume: bool,
    },
}

pub fn run(args: RunsArgs) -> anyhow::Result<()> {
    let ws = Workspace::resolve(args.runs_dir.as_deref());
    match args.command {
        RunsCommand::Start { name, wait, command } => start(&ws, name.as_deref(), command, wait),
        RunsCommand::List { json } => list(&ws, json),
        RunsCommand::Tail { name, follow, raw } => tail(&ws, &name, follow, raw),
        RunsCommand::Stop { name, timeout } => stop(&ws, &name, timeout),
        RunsCommand::Resume { name, wait } => resume(&ws, &name, wait),
        RunsCommand::Rm { name, yes, force } => rm(&ws, &name, yes, force),
        RunsCommand::DemoJob { run_dir, steps, step_ms, checkpoint_every, resume } => {
            DemoJob { run_dir, steps, step_ms, checkpoint_every, resume }.run()?;
            Ok(())
        }
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

fn report_start(outcome: StartOutcome, name: &str, what: &str) -> anyhow::Result<()> {
    match outcome {
        StartOutcome::Started(status) => {
            let pid = status.pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            eprintln!("{what} {name}{pid}, step {}: {}", status.step, status.state.as_str());
            Ok(())
        }
        StartOutcome::Exited { code, log_tail } => {
            let code = code.map_or("a signal".to_owned(), |c| format!("code {c}"));
            bail!("the job exited with {code} before starting; stdout.log:\n{log_tail}")
        }
        StartOutcome::Pending => {
            eprintln!("{what} {name}; the job has not reported yet (see `vcell runs tail {name}`)");
            Ok(())
        }
    }
}

fn start(ws: &Workspace, name: Option<&str>, command: Vec<String>, wait: f64) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the vcell binary")?;
    let mut job = start_run(ws, name, command, &exe)?;
    let name = job.run_dir().name();
    println!("{name}");
    io::stdout().flush()?;
    report_start(job.wait_started(secs(wait)), &name, "started")
}

fn resume(ws: &Workspace, name: &str, wait: f64) -> anyhow::Result<()> {
    let dir = ws.run(name)?;
    let exe = std::env::current_exe().context("locating the vcell binary")?;
    let mut job = resume_run(&dir, &exe)?;
    report_start(job.wait_started(secs(wait)), name, "resumed")
}

/// `12s`, `5m`, `3h`, `2d`.
fn human_duration(s: f64) -> String {
    let s = s.max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn list(ws: &Workspace, as_json: bool) -> anyhow::Result<()> {
    let runs = ws.list()?;
    let now = now_unix();
    if as_json {
        let rows: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "state": r.state.to_string(),
                    "step": r.step(),
                    "total_steps": r.status.as_ref().and_then(|s| s.total_steps),
                    "last_loss": r.last_loss(),
                    "last_checkpoint": r.status.as_ref().and_then(|s| s.last_checkpoint),
                    "pid": r.status.as_ref().and_then(|s| s.pid),
                    "age_s": now - r.created_at(),
                    "eta_s": r.eta_seconds(now),
                    "problem": r.problem,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!("no runs in {}", ws.root().display());
        return Ok(());
    }
    let mut rows = vec![["NAME", "STATE", "STEP", "LOSS", "AGE", "ETA", "NOTE"].map(String::from)];
    for r in &runs {
        let step = match (r.step(), r.status.as_ref().and_then(|s| s.total_steps)) {
            (Some(s), Some(t)) => format!("{s}/{t}"),
            (Some(s), None) => s.to_string(),
            (None, _) => "-".into(),
        };
        rows.push([
            r.name.clone(),
            r.state.to_string(),
            step,
            r.last_loss().map_or("-".into(), |l| format!("{l:.4}")),
            human_duration(now - r.created_at()),
            r.eta_seconds(now).map_or("-".into(), human_duration),
            r.problem.clone().unwrap_or_default(),
        ]);
    }
    let widths: Vec<usize> = (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = io::stdout().lock();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

/// One event as a line: step, loss, lr, throughput for training; the message for logs.
pub fn format_event(e: &Event) -> String {
    let mut s = format!("step {:>7}  ", e.step);
    match e.kind {
        EventKind::Train | EventKind::Val | EventKind::Eval => {
            if e.kind != EventKind::Train {
                s.push_str(&format!("{:<5} ", if e.kind == EventKind::Val { "val" } else { "eval" }));
            }
            if let Some(loss) = e.loss {
                s.push_str(&format!("loss {loss:.4}"));
            }
            if let Some(lr) = e.number("lr") {
                s.push_str(&format!("  lr {lr:.2e}"));
            }
            if let Some(t) = e.number("throughput") {
                s.push_str(&format!("  {t:.1} it/s"));
            }
            for (k, v) in &e.extra {
                if !matches!(k.as_str(), "lr" | "throughput") {
                    s.push_str(&format!("  {k} {v}"));
                }
            }
        }
        EventKind::Checkpoint => {
            s.push_str(&format!("checkpoint {}", e.text("name").unwrap_or("")));
        }
        EventKind::Log => {
            s.push_str(&format!("[{}] {}", e.text("level").unwrap_or("info"), e.text("message").unwrap_or("")));
        }
        EventKind::Status => {
            s.push_str(&format!("status {}", e.text("state").unwrap_or("?")));
            for (k, v) in &e.extra {
                if k != "state" {
                    s.push_str(&format!("  {k} {v}"));
                }
            }
        }
    }
    s
}

fn tail(ws: &Workspace, name: &str, follow: bool, raw: bool) -> anyhow::Result<()> {
    let dir = ws.run(name)?;
    let mut reader = EventReader::new(dir.events_jsonl());
    let out = io::stdout();
    let print = |events: Vec<Event>| -> anyhow::Result<()> {
        let mut lock = out.lock();
        for e in &events {
            let line = if raw { serde_json::to_string(e)? } else { format_event(e) };
            writeln!(lock, "{line}")?;
        }
        lock.flush()?;
        Ok(())
    };
    print(reader.poll_all()?)?;
    if !follow {
        return Ok(());
    }
    loop {
        let state = DisplayState::of(Status::read(&dir).ok().flatten().as_ref());
        print(reader.poll_all()?)?;
        if !state.is_live() || !dir.path().is_dir() {
            // The status is written after the last event: one more read gets everything.
            print(reader.poll_all()?)?;
            eprintln!("run {name} is {state}");
            return Ok(());
        }
        thread::sleep(Duration::from_millis(250));
    }
}

fn stop(ws: &Workspace, name: &str, timeout: f64) -> anyhow::Result<()> {
    let dir = ws.run(name)?;
    match control::stop(&dir, secs(timeout))? {
        StopOutcome::Stopped(s) => {
            let ckpt = s.last_checkpoint.map(|c| format!(", checkpoint step-{c}")).unwrap_or_default();
            println!("stopped {name} at step {}{ckpt}", s.step);
            Ok(())
        }
        StopOutcome::Ended(s) => {
            println!("{name} ended as {} at step {}", s.state.as_str(), s.step);
            Ok(())
        }
        StopOutcome::Lost => bail!("{name}: the process died without writing a final status (lost)"),
        StopOutcome::TimedOut => bail!("{name}: not stopped after {timeout}s (still finishing a step?)"),
    }
}

fn rm(ws: &Workspace, name: &str, yes: bool, force: bool) -> anyhow::Result<()> {
    let dir = ws.run(name)?;
    if !yes {
        eprint!("remove run {name} and all its files ({})? [y/N] ", dir.path().display());
        io::stderr().flush()?;
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("not removed");
            return Ok(());
        }
    }
    control::remove(&dir, force)?;
    println!("removed {name}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_train_and_log_events() {
        let e = Event::new(EventKind::Train, 12).with_loss(0.5).with("lr", 1e-3).with("throughput", 10.0);
        assert_eq!(format_event(&e), "step      12  loss 0.5000  lr 1.00e-3  10.0 it/s");
        let l = Event::log(3, "warn", "hi");
        assert_eq!(format_event(&l), "step       3  [warn] hi");
        assert_eq!(human_duration(59.0), "59s");
        assert_eq!(human_duration(3700.0), "1h01m");
    }
}
