//! The app driven by key events (gitui's app test): switch panes, sort, filter, open help, confirm a delete,
//! evaluate predictions on demand.
#![allow(clippy::unwrap_used)]
#[path = "ui/support.rs"]
mod support;

use std::sync::Mutex;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use support::{app, render, settle};
use vcell::ui::action::Loaded;
use vcell::ui::celleval::load_eval_dir;
use vcell::ui::effect::Effect;
use vcell::ui::keymap::Keymap;
use vcell::ui::panes::eval::EvalSort;
use vcell::ui::theme::Theme;
use vcell::ui::worker::{run_effect, WorkerContext};
use vcell::ui::{Action, App, AppConfig, PaneId};

fn key(c: char) -> KeyEvent {
    let m = if c.is_ascii_uppercase() { KeyModifiers::SHIFT } else { KeyModifiers::NONE };
    KeyEvent::new(KeyCode::Char(c), m)
}

fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

/// Press keys, running the effects they cause; returns the effects.
fn press(app: &mut App, ctx: &WorkerContext, keys: &[KeyEvent]) -> Vec<Effect> {
    let mut all = Vec::new();
    for k in keys {
        let fx = app.handle_key(*k);
        all.extend(fx.iter().cloned());
        settle(app, ctx, fx);
    }
    all
}

fn typed(text: &str) -> Vec<KeyEvent> {
    text.chars().map(|c| KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)).collect()
}

#[test]
fn switch_panes_sort_filter_and_drill_down() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut app, ctx) = app(tmp.path());
    assert_eq!(app.pane, PaneId::Eval, "opening eval outputs shows them");
    press(&mut app, &ctx, &[key('1')]);
    assert_eq!(app.pane, PaneId::Runs);
    press(&mut app, &ctx, &[code(KeyCode::Tab), code(KeyCode::Tab)]);
    assert_eq!(app.pane, PaneId::Eval);
    press(&mut app, &ctx, &[code(KeyCode::BackTab)]);
    assert_eq!(app.pane, PaneId::Loss);
    press(&mut app, &ctx, &[key('3')]);

    // Sort: rank → overlap (highest first) → reverse.
    press(&mut app, &ctx, &[key('s')]);
    assert_eq!(app.eval.sort, EvalSort::Overlap);
    assert_eq!(app.eval.selected_pert().unwrap().name, "GENE00022");
    press(&mut app, &ctx, &[key('S'), key('g')]);
    assert!(app.eval.reverse);
    assert_eq!(app.eval.selected_pert().unwrap().name, "GENE00111");

    // Filter: `/111` Enter leaves one row; typing does not trigger shortcuts.
    let mut keys = vec![key('/')];
    keys.extend(typed("111q"));
    keys.push(code(KeyCode::Backspace));
    keys.push(code(KeyCode::Enter));
    press(&mut app, &ctx, &keys);
    assert!(!app.quit);
    assert_eq!(app.eval.filter, "111");
    assert_eq!(app.eval.view.len(), 1);
    insta::assert_snapshot!("app_eval_filtered_80x24", render(&app, 80, 24));

    // Enter: the perturbation's DE; `a` shows all genes; search; Enter: the gene pane.
    press(&mut app, &ctx, &[code(KeyCode::Enter)]);
    assert_eq!(app.pane, PaneId::De);
    assert_eq!(app.de.perturbation.as_deref(), Some("GENE00111"));
    assert_eq!(app.de.view.len(), 1, "significant genes only");
    press(&mut app, &ctx, &[key('a')]);
    assert_eq!(app.de.view.len(), 300);
    let mut keys = vec![key('/')];
    keys.extend(typed("GENE0029"));
    keys.push(code(KeyCode::Enter));
    press(&mut app, &ctx, &keys);
    assert_eq!(app.de.view.len(), 10);
    press(&mut app, &ctx, &[key('j')]);
    let picked = app.de.selected_row().unwrap().feature.clone();
    assert!(picked.starts_with("GENE0029"));
    press(&mut app, &ctx, &[code(KeyCode::Enter)]);
    assert_eq!(app.pane, PaneId::Gene);
    assert_eq!(app.gene.gene.as_deref(), Some(picked.as_str()));
    let data = app.gene.data.as_ref().expect("gene distribution loaded");
    assert_eq!(data.real.len(), 25);
    assert_eq!(data.control.len(), 60);
    assert_eq!(data.pred.as_ref().map(Vec::len), Some(25));
    assert!(app.gene.de.is_some());

    // Help opens and closes; keys do nothing else while it is open.
    press(&mut app, &ctx, &[key('?')]);
    assert!(app.help);
    press(&mut app, &ctx, &[key('1')]);
    assert_eq!(app.pane, PaneId::Gene);
    insta::assert_snapshot!("app_help_80x24", render(&app, 80, 24));
    press(&mut app, &ctx, &[code(KeyCode::Esc)]);
    assert!(!app.help);

    // The command line.
    let mut keys = vec![key(':')];
    keys.extend(typed("dataset"));
    keys.push(code(KeyCode::Enter));
    press(&mut app, &ctx, &keys);
    assert_eq!(app.pane, PaneId::Dataset);
    let mut keys = vec![key(':')];
    keys.extend(typed("bogus"));
    keys.push(code(KeyCode::Enter));
    press(&mut app, &ctx, &keys);
    assert!(app.status.as_deref().unwrap().contains("unknown command"));
    press(&mut app, &ctx, &[key('q')]);
    assert!(app.quit);
}

#[test]
fn runs_pane_confirms_delete_and_overlays_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut app, ctx) = app(tmp.path());
    press(&mut app, &ctx, &[key('1')]);
    assert_eq!(app.runs.selected_run().unwrap().name, "st-live", "the live run is selected first");
    assert!(app.loss.histories["st-live"].train.last().is_some(), "its events are tailed");

    // Overlay the finished run too: the loss pane shows both.
    press(&mut app, &ctx, &[key('g'), key(' ')]);
    assert_eq!(app.runs.shown(), vec!["st-done".to_string()]);
    press(&mut app, &ctx, &[key('G')]);
    assert_eq!(app.loss.shown, vec!["st-live".to_string(), "st-done".to_string()]);

    // Stop on a finished run is refused with a message; resume on a live one too.
    press(&mut app, &ctx, &[key('g'), key('x')]);
    assert!(app.runs.confirm.is_none());
    assert!(app.status.as_deref().unwrap().contains("not running"), "{:?}", app.status);

    // Delete st-stopped: `d` asks, `n` cancels, `d` `y` deletes.
    press(&mut app, &ctx, &[key('j'), key('d')]);
    assert!(app.runs.confirm.is_some());
    insta::assert_snapshot!("app_confirm_delete_80x24", render(&app, 80, 24));
    press(&mut app, &ctx, &[key('n')]);
    assert!(app.runs.confirm.is_none());
    assert!(tmp.path().join("st-stopped").exists());
    let fx = press(&mut app, &ctx, &[key('d'), key('y')]);
    assert!(fx.iter().any(|e| matches!(e, Effect::DeleteRun(n) if n == "st-stopped")), "{fx:?}");
    assert!(!tmp.path().join("st-stopped").exists());
    assert_eq!(app.runs.runs.len(), 4);
    assert!(app.status.as_deref().unwrap().contains("deleted st-stopped"));

    // The new-run form: typing goes to the fields; Esc cancels.
    press(&mut app, &ctx, &[key('n')]);
    assert!(app.runs.form.is_some());
    let mut keys = vec![code(KeyCode::Tab)];
    keys.extend(typed("data.toml"));
    press(&mut app, &ctx, &keys);
    let form = app.runs.form.clone().unwrap();
    assert_eq!(form.argv(), vec!["train", "st", "--data-config", "data.toml", "--device", "cpu"]);
    insta::assert_snapshot!("app_new_run_form_80x24", render(&app, 80, 24));

    // The device field (`cpu` filled in): a bad device keeps the form open on it, with the reason.
    let mut keys = vec![code(KeyCode::Tab), code(KeyCode::Tab)];
    keys.extend([code(KeyCode::Backspace); 3]);
    keys.extend(typed("gpu"));
    keys.extend([code(KeyCode::Tab), code(KeyCode::Enter)]);
    let fx = press(&mut app, &ctx, &keys);
    assert!(fx.is_empty(), "{fx:?}");
    let form = app.runs.form.clone().expect("the form stays open");
    assert_eq!(form.focus, vcell::ui::panes::runs::DEVICE_FIELD);
    assert!(app.status.as_deref().unwrap().contains("use cpu, cuda, cuda:N or auto"), "{:?}", app.status);
    insta::assert_snapshot!("app_new_run_form_bad_device_80x24", render(&app, 80, 24));
    let mut keys = vec![code(KeyCode::Backspace); 3];
    keys.extend(typed("cuda:1"));
    press(&mut app, &ctx, &keys);
    assert_eq!(app.runs.form.as_ref().unwrap().argv()[4..], ["--device", "cuda:1"]);
    press(&mut app, &ctx, &[code(KeyCode::Esc)]);
    assert!(app.runs.form.is_none());
}

/// An app opened on predictions without eval outputs (`--real`, `--pred`, `--eval` naming a folder not written yet).
fn app_with_predictions(root: &std::path::Path) -> (App, WorkerContext, std::path::PathBuf) {
    let ws = support::workspace(&root.join("runs"));
    let ctx = WorkerContext { workspace: ws, exe: std::path::PathBuf::from("/nonexistent/vcell") };
    let outdir = root.join("eval-out");
    let config = AppConfig { eval_dir: Some(outdir.clone()), ..support::config() };
    let (mut app, fx) = App::new(config, Keymap::default(), Theme::dark());
    settle(&mut app, &ctx, fx);
    (app, ctx, outdir)
}

/// Run an effect on another thread, as the event loop does, collecting what it sends.
fn run_off_thread(effect: Effect, ctx: &WorkerContext) -> Vec<Action> {
    let sent = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| run_effect(effect, ctx, &|a| sent.lock().unwrap().push(a)));
    });
    sent.into_inner().unwrap()
}

#[test]
fn evaluates_predictions_on_demand() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut app, ctx, outdir) = app_with_predictions(tmp.path());
    assert_eq!(app.pane, PaneId::Runs, "no eval outputs yet: the workbench opens on the runs");
    press(&mut app, &ctx, &[key('3')]);
    assert!(app.eval.data.is_none());
    assert!(render(&app, 120, 24).contains("Press e (or :evaluate) to evaluate"), "{}", render(&app, 120, 24));

    // `e` asks for the evaluation as an effect (the event loop runs it off the UI thread).
    let fx = app.handle_key(key('e'));
    let [Effect::ComputeEval { request, .. }] = &fx[..] else { panic!("{fx:?}") };
    assert_eq!(request.outdir, outdir);
    assert_eq!(request.pred, support::fixture("tiny/pred.h5ad"));
    assert!(app.eval.computing.is_some());
    assert!(render(&app, 80, 24).contains("Eval — evaluating"));
    assert!(app.handle_key(key('e')).is_empty(), "a second `e` while it runs starts nothing");
    assert!(app.status.as_deref().unwrap().contains("already evaluating"));

    // It reports progress stage by stage, then the loaded results.
    let sent = run_off_thread(fx[0].clone(), &ctx);
    let (last, progress) = sent.split_last().unwrap();
    let stages: Vec<String> = progress
        .iter()
        .filter_map(|a| match a {
            Action::Loaded(Loaded::EvalProgress { stage, .. }) => Some(stage.clone()),
            _ => None,
        })
        .collect();
    assert!(stages.len() == progress.len() && stages.iter().any(|s| s.starts_with("DE")), "{stages:?}");
    assert_eq!(stages.last().map(String::as_str), Some("metrics"));
    for a in progress {
        app.update(a.clone());
    }
    assert_eq!(app.eval.computing.as_ref().map(|p| p.stage.as_str()), Some("metrics"));
    assert!(render(&app, 80, 24).contains("evaluating: metrics"), "{}", render(&app, 80, 24));
    let fx = app.update(last.clone());
    settle(&mut app, &ctx, fx);
    assert!(app.eval.computing.is_none());
    assert!(app.status.as_deref().unwrap().contains("evaluated: 8 perturbations"), "{:?}", app.status);

    // The same numbers as cell-eval's outputs for this pair, and the folder is a normal eval folder.
    let reference = load_eval_dir(&support::fixture("tiny/celleval/vcc"), &|| false).unwrap();
    let data = app.eval.data.clone().expect("results shown");
    assert_eq!(data.perts.len(), reference.perts.len());
    for p in &reference.perts {
        let q = data.perts.iter().find(|q| q.name == p.name).unwrap();
        for (a, b) in [(q.overlap, p.overlap), (q.mae, p.mae), (q.pdisc, p.pdisc)] {
            let (a, b) = (a.unwrap(), b.unwrap());
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{}: {a} vs {b}", p.name);
        }
    }
    for f in ["results.csv", "agg_results.csv", "real_de.csv", "pred_de.csv"] {
        assert!(outdir.join(f).exists(), "{f}");
    }
    assert_eq!(std::fs::read_dir(&outdir).unwrap().count(), 4, "no staging folder left");

    // The DE pane has the tables: Enter on a perturbation shows its genes.
    press(&mut app, &ctx, &[key('g'), code(KeyCode::Enter)]);
    assert_eq!(app.pane, PaneId::De);
    assert!(app.de.data.as_ref().is_some_and(|d| d.de.len() == 8));
}

#[test]
fn opening_another_folder_cancels_the_evaluation() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut app, ctx, outdir) = app_with_predictions(tmp.path());
    let fx = app.handle_key(key('e'));
    let [effect @ Effect::ComputeEval { ticket, .. }] = &fx[..] else { panic!("{fx:?}") };
    let mut keys = vec![key(':')];
    keys.extend(typed(&format!("eval {}", support::fixture("tiny/celleval/vcc").display())));
    keys.push(code(KeyCode::Enter));
    press(&mut app, &ctx, &keys);
    assert!(ticket.cancelled());
    assert!(app.eval.computing.is_none());
    assert_eq!(app.eval.data.as_ref().unwrap().perts.len(), 8, "the opened folder is shown");

    // The cancelled evaluation stops, writes nothing, and its late answer is dropped.
    let sent = run_off_thread(effect.clone(), &ctx);
    assert!(matches!(sent.last(), Some(Action::Loaded(Loaded::Eval { result: Err(_), .. }))), "{sent:?}");
    for a in sent {
        app.update(a);
    }
    assert!(app.eval.error.is_none() && app.eval.data.is_some());
    assert!(!outdir.join("results.csv").exists());
    assert!(std::fs::read_dir(&outdir).map(|d| d.count()).unwrap_or(0) == 0, "no staging folder left");
}

#[test]
fn evaluate_needs_predictions() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = support::workspace(tmp.path());
    let ctx = WorkerContext { workspace: ws, exe: std::path::PathBuf::from("/nonexistent/vcell") };
    let config = AppConfig { pred: None, ..support::config() };
    let (mut app, fx) = App::new(config, Keymap::default(), Theme::dark());
    settle(&mut app, &ctx, fx);
    let mut keys = vec![key(':')];
    keys.extend(typed("evaluate"));
    keys.push(code(KeyCode::Enter));
    let fx = press(&mut app, &ctx, &keys);
    assert!(fx.is_empty(), "{fx:?}");
    assert_eq!(app.pane, PaneId::Eval);
    assert!(app.status.as_deref().unwrap().contains("--pred"), "{:?}", app.status);
}
