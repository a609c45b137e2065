//! Frame render times (run with `cargo test --test ui_bench -- --ignored --nocapture`): the loss pane of a run
//! with 1M logged steps, and the dataset pane of a 300k-cell dataset (state of that shape, or a real file given
//! in `VCELL_BENCH_H5AD`, whose background summary and gene statistics are timed too).
#![allow(clippy::unwrap_used)]
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use vcell::jobs::{Event, EventKind, Workspace};
use vcell::ui::action::{Action, Loaded};
use vcell::ui::background::Latest;
use vcell::ui::keymap::Keymap;
use vcell::ui::panes::dataset::{self, DatasetSummary, GeneStats, ObsColumn};
use vcell::ui::theme::Theme;
use vcell::ui::worker::{run_effect, WorkerContext};
use vcell::ui::{App, AppConfig, PaneId};

fn time_frames(app: &App, w: u16, h: u16, n: u32) -> Duration {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| app.render(f)).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        term.draw(|f| app.render(f)).unwrap();
    }
    t.elapsed() / n
}

fn new_app() -> App {
    App::new(AppConfig::default(), Keymap::default(), Theme::dark()).0
}

#[test]
#[ignore]
fn render_loss_pane_with_a_million_steps() {
    let mut app = new_app();
    app.loss.set_shown(vec!["big".into()]);
    app.update(Action::GoPane(PaneId::Loss));
    let events: Vec<Event> = (1..=1_000_000u64)
        .flat_map(|s| {
            let loss = 2.0 / (1.0 + 1e-4 * s as f64) + 0.05 * ((s * 7919 % 101) as f64 / 101.0);
            let train = Event::new(EventKind::Train, s).with_loss(loss).with("lr", 1e-3).with("throughput", 50.0);
            let val = (s % 1000 == 0).then(|| Event::new(EventKind::Val, s).with_loss(loss * 1.1));
            std::iter::once(train).chain(val)
        })
        .collect();
    let t = Instant::now();
    for chunk in events.chunks(10_000) {
        app.update(Action::Loaded(Loaded::Events {
            run: "big".into(),
            events: Arc::new(chunk.to_vec()),
            reset: false,
        }));
    }
    let ingest = t.elapsed();
    let h = &app.loss.histories["big"];
    println!(
        "loss: ingest 1M train + 1k val events: {ingest:?}; buckets {} (stride {}), recent {}",
        h.train.full.len(),
        h.train.full.stride(),
        h.train.recent.len()
    );
    for (w, hgt) in [(80, 24), (200, 60)] {
        println!("loss {w}x{hgt}: {:?}/frame (full history)", time_frames(&app, w, hgt, 50));
    }
    app.update(Action::ToggleLogScale);
    app.update(Action::CycleSmoothing);
    println!("loss 80x24 log+smooth: {:?}/frame", time_frames(&app, 80, 24, 50));
    app.update(Action::ToggleZoom);
    println!("loss 80x24 recent window: {:?}/frame", time_frames(&app, 80, 24, 50));
}

/// The summary a 300k-cell VCC-like file produces: 2000 perturbations × 4 cell types, 18k genes.
fn vcc_like_summary() -> (DatasetSummary, GeneStats) {
    let cross_labels: Vec<String> = (0..4).map(|i| format!("cell_line_{i}")).collect();
    let categories: Vec<(String, usize)> = (0..2000).map(|i| (format!("GENE{i:05}"), 150)).collect();
    let cross = Some(categories.iter().map(|_| vec![40, 40, 35, 35]).collect());
    let pert = ObsColumn {
        name: "target_gene".into(),
        kind: "category",
        n_categories: categories.len(),
        categories,
        numeric: None,
        cross,
    };
    let summary = DatasetSummary {
        path: PathBuf::from("vcc_300k.h5ad"),
        n_obs: 300_000,
        n_vars: 18_080,
        x: "csr_matrix F32, nnz 1.2e9".into(),
        columns: vec![pert],
        cross_column: Some("cell_line".into()),
        cross_labels,
    };
    let n = 18_080;
    let stats = GeneStats {
        genes: (0..n).map(|i| format!("GENE{i:05}")).collect(),
        mean: vec![1.0; n],
        var: vec![0.5; n],
        frac: vec![0.3; n],
        n_cells: 300_000,
    };
    (summary, stats)
}

#[test]
#[ignore]
fn render_dataset_pane_300k_cells() {
    let mut app = new_app();
    app.update(Action::GoPane(PaneId::Dataset));
    let (summary, stats) = match std::env::var_os("VCELL_BENCH_H5AD") {
        Some(path) => {
            let path = PathBuf::from(path);
            let t = Instant::now();
            let s = dataset::summarize(&path, "target_gene", &|| false).unwrap();
            println!("dataset: summarize {} ({} cells): {:?}", path.display(), s.n_obs, t.elapsed());
            let t = Instant::now();
            let ticket = Latest::default().start();
            let g = dataset::gene_stats(&path, &ticket, &mut |_, _| {}).unwrap();
            println!("dataset: gene statistics over X ({} genes): {:?}", g.genes.len(), t.elapsed());
            (s, g)
        }
        None => vcc_like_summary(),
    };
    println!(
        "dataset: {} cells, {} categories in the first column",
        summary.n_obs,
        summary.columns[0].categories.len()
    );
    app.dataset.path = Some(summary.path.clone());
    app.dataset.summary = Some(Arc::new(summary));
    let id = app.dataset.stats_load.start().id;
    app.update(Action::Loaded(Loaded::GeneStats { id, done: 1, total: 1, result: Some(Ok(Arc::new(stats))) }));
    for (w, h) in [(80, 24), (200, 60)] {
        println!("dataset {w}x{h}: {:?}/frame", time_frames(&app, w, h, 200));
    }
    app.update(Action::Bottom);
    app.update(Action::Filter);
    let t = Instant::now();
    for c in "GENE1".chars() {
        app.update(Action::Input(vcell::ui::action::InputKey::Char(c)));
    }
    println!("dataset: gene search over 18k names, 5 keystrokes: {:?}", t.elapsed());
    println!("dataset 80x24 with gene matches: {:?}/frame", time_frames(&app, 80, 24, 200));
}

/// The dataset pane opened on a real file as the event loop runs it: the summary and the statistics pass on
/// background threads, the UI thread applying their messages and drawing a frame at most every 33 ms (30 fps).
/// Prints the time to the first frame, to the first frame with the summary, the scan time, and the frame times
/// while the scan runs. Needs `VCELL_BENCH_H5AD=/path/to/file.h5ad` (a target_gene obs column).
#[test]
#[ignore]
fn dataset_pane_on_a_real_file_while_scanning() {
    let Some(path) = std::env::var_os("VCELL_BENCH_H5AD").map(PathBuf::from) else {
        println!("SKIPPED: set VCELL_BENCH_H5AD to an .h5ad");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = WorkerContext { workspace: Workspace::new(tmp.path()), exe: PathBuf::from("/nonexistent/vcell") };
    let opened = Instant::now();
    let config = AppConfig { dataset: Some(path.clone()), pert_col: "target_gene".into(), ..AppConfig::default() };
    let (mut app, effects) = App::new(config, Keymap::default(), Theme::dark());
    app.update(Action::GoPane(PaneId::Dataset));
    let mut term = Terminal::new(TestBackend::new(120, 36)).unwrap();
    term.draw(|f| app.render(f)).unwrap();
    let first_frame = opened.elapsed();

    let (tx, rx) = std::sync::mpsc::channel::<Action>();
    for effect in effects {
        let (tx, ctx) = (tx.clone(), ctx.clone());
        std::thread::spawn(move || run_effect(effect, &ctx, &move |a| drop(tx.send(a))));
    }
    drop(tx);
    let (mut summary_frame, mut scanned) = (None, None);
    let mut frames = Vec::new();
    let mut progress_messages = 0usize;
    let gap = Duration::from_millis(33);
    loop {
        let mut changed = false;
        let mut disconnected = false;
        match rx.recv_timeout(gap) {
            Ok(a) => {
                progress_messages += usize::from(matches!(a, Action::Loaded(Loaded::GeneStats { result: None, .. })));
                app.update(a);
                changed = true;
                while let Ok(a) = rx.try_recv() {
                    progress_messages +=
                        usize::from(matches!(a, Action::Loaded(Loaded::GeneStats { result: None, .. })));
                    app.update(a);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => disconnected = true,
        }
        // Draw on change, and once per tick while scanning (as a progress display would).
        if changed || scanned.is_none() {
            let t = Instant::now();
            term.draw(|f| app.render(f)).unwrap();
            frames.push(t.elapsed());
        }
        if summary_frame.is_none() && app.dataset.summary.is_some() {
            summary_frame = Some(opened.elapsed());
        }
        if scanned.is_none() && (app.dataset.stats.is_some() || app.dataset.error.is_some()) {
            scanned = Some(opened.elapsed());
        }
        if disconnected || (scanned.is_some() && summary_frame.is_some()) {
            break;
        }
    }
    assert!(app.dataset.error.is_none(), "{:?}", app.dataset.error);
    let s = app.dataset.summary.as_ref().unwrap();
    println!("dataset file: {} ({} cells × {} genes, X {})", path.display(), s.n_obs, s.n_vars, s.x);
    println!("first frame (loading): {first_frame:?}");
    println!("first frame with the obs summary: {:?}", summary_frame.unwrap());
    println!("gene statistics scan done: {:?} ({progress_messages} progress messages)", scanned.unwrap());
    frames.sort();
    let pct = |p: f64| frames[((frames.len() - 1) as f64 * p) as usize];
    println!(
        "frames while scanning (120x36): {} drawn, median {:?}, p99 {:?}, max {:?}",
        frames.len(),
        pct(0.5),
        pct(0.99),
        frames[frames.len() - 1]
    );
    println!("dataset 120x36 after the scan: {:?}/frame", time_frames(&app, 120, 36, 200));
}
