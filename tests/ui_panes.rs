//! Snapshots of every pane on `TestBackend` at 80×24 and at a tiny size, with fixture data.
#![allow(clippy::unwrap_used)]
#[path = "ui/support.rs"]
mod support;

use support::{app, render};
use vcell::ui::{Action, PaneId};

const SIZES: [(u16, u16); 3] = [(80, 24), (30, 8), (120, 36)];

fn snap_pane(pane: PaneId, setup: impl Fn(&mut vcell::ui::App, &vcell::ui::worker::WorkerContext)) {
    let tmp = tempfile::tempdir().unwrap();
    let (mut app, ctx) = app(tmp.path());
    let fx = app.update(Action::GoPane(pane));
    support::settle(&mut app, &ctx, fx);
    setup(&mut app, &ctx);
    for (w, h) in SIZES {
        let name = format!("{}_{w}x{h}", pane.title().to_lowercase());
        insta::assert_snapshot!(name, render(&app, w, h));
    }
}

#[test]
fn runs_pane() {
    snap_pane(PaneId::Runs, |_, _| {});
}

#[test]
fn loss_pane() {
    snap_pane(PaneId::Loss, |_, _| {});
}

#[test]
fn loss_pane_log_smoothed_recent() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut app, _ctx) = app(tmp.path());
    for a in [Action::GoPane(PaneId::Loss), Action::ToggleLogScale, Action::CycleSmoothing, Action::ToggleZoom] {
        app.update(a);
    }
    insta::assert_snapshot!("loss_log_smooth_zoom_80x24", render(&app, 80, 24));
}

#[test]
fn eval_pane() {
    snap_pane(PaneId::Eval, |_, _| {});
}

#[test]
fn de_pane() {
    snap_pane(PaneId::De, |app, ctx| {
        let fx = app.update(Action::SetPerturbation("GENE00111".into()));
        support::settle(app, ctx, fx);
    });
}

#[test]
fn dataset_pane() {
    snap_pane(PaneId::Dataset, |app, ctx| {
        for c in "GENE0001".chars() {
            let _ = c;
        }
        let mut fx = app.update(Action::Filter);
        for c in "GENE001".chars() {
            fx.extend(app.update(Action::Input(vcell::ui::action::InputKey::Char(c))));
        }
        fx.extend(app.update(Action::Input(vcell::ui::action::InputKey::Submit)));
        support::settle(app, ctx, fx);
    });
}

#[test]
fn gene_pane() {
    snap_pane(PaneId::Gene, |app, ctx| {
        let mut fx = app.update(Action::SetPerturbation("GENE00111".into()));
        fx.extend(app.update(Action::SetGene("GENE00111".into())));
        support::settle(app, ctx, fx);
    });
}

#[test]
fn help_overlay_and_tiny_terminals() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut app, _ctx) = app(tmp.path());
    app.update(Action::Help);
    insta::assert_snapshot!("help_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("help_30x8", render(&app, 30, 8));
    app.update(Action::Help);
    insta::assert_snapshot!("too_small_15x2", render(&app, 15, 2));
}

/// The 2026 layout (cell-eval2 `--preset vcc2026` outputs + `score --real-bundle`): the six scored members with
/// their rescaled values, `avg_score`, and per-perturbation member columns.
#[test]
fn eval_pane_vcc2026() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("eval2026");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["results.csv", "agg_results.csv"] {
        std::fs::copy(support::fixture(&format!("vcc2026/tiny/run/{f}")), dir.join(f)).unwrap();
    }
    std::fs::copy(support::fixture("vcc2026/tiny/score.csv"), dir.join("score.csv")).unwrap();
    let data = vcell::ui::celleval::load_eval_dir(&dir, &|| false).unwrap();
    assert_eq!(data.layout, vcell::ui::celleval::EvalLayout::Vcc2026);
    assert_eq!(data.members.len(), 6);
    let pds = data.members.iter().find(|m| m.name == "pds_cosine").unwrap();
    assert_eq!(pds.rescaled, Some(1.18705035971223));
    assert_eq!(data.score, vec![("avg_score".to_owned(), 0.34272595415659485)]);
    assert!(data.perts.iter().all(|p| p.values.len() == 6 && p.rank.is_some()));
    let (mut app, ctx) = support::app(tmp.path());
    let fx = app.update(Action::GoPane(PaneId::Eval));
    support::settle(&mut app, &ctx, fx);
    let fx = app.update(Action::OpenEval(dir));
    support::settle(&mut app, &ctx, fx);
    insta::assert_snapshot!("eval2026_80x24", render(&app, 80, 24));
    insta::assert_snapshot!("eval2026_120x36", render(&app, 120, 36));
}
