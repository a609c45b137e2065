//! Shared by the TUI tests: a workspace with hand-written runs, fixtures, and running effects synchronously.
#![allow(dead_code)]
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use vcell::jobs::process::ProcessId;
use vcell::jobs::{EventReader, RunDir, Workspace};
use vcell::ui::action::{Action, Loaded};
use vcell::ui::effect::Effect;
use vcell::ui::keymap::Keymap;
use vcell::ui::panes::runs::RunRow;
use vcell::ui::theme::Theme;
use vcell::ui::worker::{run_effect, WorkerContext};
use vcell::ui::{App, AppConfig};

/// The clock the runs pane is given (status times are relative to it).
pub const NOW: f64 = 1_700_000_000.0;

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

fn write_run(root: &Path, name: &str, status: &str, created: f64) -> RunDir {
    let dir = RunDir::create(root.join(name)).unwrap();
    let job = format!(
        "name = \"{name}\"\nargv = [\"train\", \"st\", \"--data-config\", \"data.toml\"]\ncwd = \"/work\"\ncreated_at = {created}\nvcell_version = \"0.1.0\"\n"
    );
    fs::write(dir.job_toml(), job).unwrap();
    if !status.is_empty() {
        fs::write(dir.status_json(), status).unwrap();
    }
    dir
}

/// A workspace with a live run (this test process stands in for its job), a finished, a stopped, a failed run
/// and one without status. The live run has 200 training steps logged, validation every 50.
pub fn workspace(root: &Path) -> Workspace {
    let me = ProcessId::current();
    let live = write_run(
        root,
        "st-live",
        &format!(
            r#"{{"state":"running","pid":{},"pid_start_time":{},"started_at":{},"updated_at":{},"step":200,"start_step":0,"total_steps":1000,"last_loss":0.4123}}"#,
            me.pid,
            me.start_time.unwrap_or(0),
            NOW - 100.0,
            NOW
        ),
        NOW - 100.0,
    );
    let mut events = String::new();
    for step in 1..=200u64 {
        let loss = 2.0 / (1.0 + 0.05 * step as f64) + 0.02 * ((step * 7919 % 13) as f64 / 13.0);
        let lr = 1e-3 / (1.0 + 0.01 * step as f64);
        let tp = 40.0 + (step % 9) as f64;
        events.push_str(&format!(
            "{{\"t\":{},\"kind\":\"train\",\"step\":{step},\"loss\":{loss},\"lr\":{lr},\"throughput\":{tp}}}\n",
            NOW - 100.0 + step as f64 * 0.5
        ));
        if step % 50 == 0 {
            events.push_str(&format!("{{\"t\":0,\"kind\":\"val\",\"step\":{step},\"loss\":{}}}\n", loss * 1.1));
        }
    }
    fs::write(live.events_jsonl(), events).unwrap();
    write_run(
        root,
        "st-done",
        r#"{"state":"finished","started_at":1699990000,"ended_at":1699993600,"step":1000,"total_steps":1000,"last_loss":0.1021}"#,
        NOW - 9000.0,
    );
    write_run(
        root,
        "st-stopped",
        r#"{"state":"stopped","started_at":1699990000,"step":420,"total_steps":1000,"last_loss":0.3312,"last_checkpoint":400}"#,
        NOW - 8000.0,
    );
    write_run(
        root,
        "st-failed",
        r#"{"state":"failed","started_at":1699990000,"step":12,"message":"CUDA out of memory"}"#,
        NOW - 7000.0,
    );
    write_run(root, "st-nostatus", "", NOW - 6000.0);
    Workspace::new(root)
}

/// The runs listing with the fixed clock.
pub fn runs_loaded(ws: &Workspace) -> Action {
    let runs = ws.list().unwrap().iter().map(|s| RunRow::from_summary(s, NOW)).collect();
    Action::Loaded(Loaded::Runs { now: NOW, runs })
}

pub fn config() -> AppConfig {
    AppConfig {
        eval_dir: Some(fixture("tiny/celleval/vcc")),
        real: Some(fixture("tiny/real.h5ad")),
        pred: Some(fixture("tiny/pred.h5ad")),
        dataset: None,
        pert_col: "target_gene".into(),
        control: "non-targeting".into(),
    }
}

/// Run effects (and the effects their results cause) to completion, like the event loop but synchronously.
/// `WatchRuns` reads the watched runs' whole event logs. Job starts are not allowed here.
pub fn settle(app: &mut App, ctx: &WorkerContext, effects: Vec<Effect>) {
    let mut queue = effects;
    while !queue.is_empty() {
        let effect = queue.remove(0);
        let results = Mutex::new(Vec::new());
        match effect {
            Effect::WatchRuns(names) => {
                for name in names {
                    let path = RunDir::new(ctx.workspace.root().join(&name)).events_jsonl();
                    let events = EventReader::new(path).poll_all().unwrap();
                    results.lock().unwrap().push(Action::Loaded(Loaded::Events {
                        run: name,
                        events: std::sync::Arc::new(events),
                        reset: true,
                    }));
                }
            }
            Effect::RefreshRuns => results.lock().unwrap().push(runs_loaded(&ctx.workspace)),
            Effect::StartRun { .. } | Effect::ResumeRun(_) | Effect::StopRun(_) => {
                panic!("tests do not start or signal jobs: {effect:?}")
            }
            other => run_effect(other, ctx, &|a| results.lock().unwrap().push(a)),
        }
        for a in results.into_inner().unwrap() {
            queue.extend(app.update(a));
        }
    }
}

/// An app on the test workspace with the fixtures loaded.
pub fn app(root: &Path) -> (App, WorkerContext) {
    let ws = workspace(root);
    let ctx = WorkerContext { workspace: ws.clone(), exe: PathBuf::from("/nonexistent/vcell") };
    let (mut app, effects) = App::new(config(), Keymap::default(), Theme::dark());
    settle(&mut app, &ctx, effects);
    let fx = app.update(runs_loaded(&ws));
    settle(&mut app, &ctx, fx);
    (app, ctx)
}

pub fn render(app: &App, w: u16, h: u16) -> String {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| app.render(f)).unwrap();
    term.backend().to_string()
}
