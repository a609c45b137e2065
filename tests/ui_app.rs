//! The app driven by key events (gitui's app test): switch panes, sort, filter, open help, confirm a delete.
#![allow(clippy::unwrap_used)]
#[path = "ui/support.rs"]
mod support;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use support::{app, render, settle};
use vcell::ui::effect::Effect;
use vcell::ui::panes::eval::EvalSort;
use vcell::ui::worker::WorkerContext;
use vcell::ui::{App, PaneId};

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
