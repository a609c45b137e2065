//! The terminal side: raw mode and the alternate screen (restored on exit and on panic), an input thread, the
//! workspace watcher and event tailer threads, and a tokio loop that redraws only when something changed, at most
//! `fps` times a second, each frame wrapped in a synchronized update. Idle, it waits on its channel: no busy loop.
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event as TermEvent};
use crossterm::terminal::{
    self, BeginSynchronizedUpdate, EndSynchronizedUpdate, EnterAlternateScreen, LeaveAlternateScreen,
};
use crossterm::{cursor, execute, queue};
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::action::{Action, Loaded};
use super::app::App;
use super::effect::Effect;
use super::worker::{list_runs, run_effect, WorkerContext};
use super::UiError;
use crate::jobs::{EventReader, RunsWatcher};

/// How often the workspace and the watched event logs are polled.
const RUNS_POLL: Duration = Duration::from_secs(1);
const EVENTS_POLL: Duration = Duration::from_millis(300);

/// Shared between the loop and the background threads.
#[derive(Clone)]
pub struct Channels {
    pub tx: UnboundedSender<Msg>,
    pub watched: Arc<Mutex<Vec<String>>>,
    pub refresh: Arc<AtomicBool>,
    pub stop: Arc<AtomicBool>,
}

/// What the loop receives.
#[derive(Debug)]
pub enum Msg {
    Term(TermEvent),
    Action(Action),
}

fn io_err(e: io::Error) -> UiError {
    UiError::Terminal(e.to_string())
}

/// Put the terminal back (raw mode off, main screen, cursor shown). Safe to call twice.
pub fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), EndSynchronizedUpdate, LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped (normal exit, `?` errors).
struct TerminalGuard;

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// A panic restores the terminal before the message is printed.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        previous(info);
    }));
}

/// Start the workspace watcher and the event tailer. They stop when `stop` is set.
pub fn spawn_watchers(ctx: &WorkerContext, ch: &Channels) {
    let (ws, tx, refresh, stop) = (ctx.workspace.clone(), ch.tx.clone(), ch.refresh.clone(), ch.stop.clone());
    let _ = thread::Builder::new().name("vcell-ui-runs".into()).spawn(move || {
        let mut watcher = RunsWatcher::new(ws.clone());
        let mut any_live = false;
        // The first listing is sent even when there is nothing to report (an empty or missing workspace), so the
        // runs pane leaves "Reading the workspace…".
        let mut first = true;
        while !stop.load(Ordering::Relaxed) {
            let changed = watcher.poll().map(|c| !c.is_empty()).unwrap_or(true);
            if std::mem::take(&mut first) || changed || any_live || refresh.swap(false, Ordering::Relaxed) {
                let loaded = list_runs(&ws);
                if let Loaded::Runs { runs, .. } = &loaded {
                    any_live = runs.iter().any(|r| r.live);
                }
                if tx.send(Msg::Action(Action::Loaded(loaded))).is_err() {
                    return;
                }
            }
            sleep_unless(&stop, &refresh, RUNS_POLL);
        }
    });
    let (root, tx, watched, stop) =
        (ctx.workspace.root().to_owned(), ch.tx.clone(), ch.watched.clone(), ch.stop.clone());
    let _ = thread::Builder::new().name("vcell-ui-events".into()).spawn(move || {
        let mut readers: BTreeMap<String, (EventReader, bool)> = BTreeMap::new();
        while !stop.load(Ordering::Relaxed) {
            let names: Vec<String> = watched.lock().map(|w| w.clone()).unwrap_or_default();
            readers.retain(|k, _| names.contains(k));
            for name in names {
                let (reader, fresh) = readers.entry(name.clone()).or_insert_with(|| {
                    let dir = crate::jobs::RunDir::new(root.join(&name));
                    (EventReader::new(dir.events_jsonl()), true)
                });
                loop {
                    let events = reader.poll().unwrap_or_default();
                    if !events.is_empty() || *fresh {
                        let msg = Loaded::Events { run: name.clone(), events: Arc::new(events), reset: *fresh };
                        *fresh = false;
                        if tx.send(Msg::Action(Action::Loaded(msg))).is_err() {
                            return;
                        }
                    }
                    if !reader.has_more() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                }
            }
            thread::sleep(EVENTS_POLL);
        }
    });
}

fn sleep_unless(stop: &AtomicBool, refresh: &AtomicBool, total: Duration) {
    let end = Instant::now() + total;
    while Instant::now() < end && !stop.load(Ordering::Relaxed) && !refresh.load(Ordering::Relaxed) {
        thread::sleep(Duration::from_millis(50).min(end.saturating_duration_since(Instant::now())));
    }
}

/// Run an effect off the UI thread (or hand it to the watchers).
pub fn dispatch(effect: Effect, ctx: &WorkerContext, ch: &Channels) {
    match effect {
        Effect::WatchRuns(names) => {
            if let Ok(mut w) = ch.watched.lock() {
                *w = names;
            }
        }
        Effect::RefreshRuns => ch.refresh.store(true, Ordering::Relaxed),
        other => {
            let (ctx, tx) = (ctx.clone(), ch.tx.clone());
            tokio::task::spawn_blocking(move || {
                run_effect(other, &ctx, &|a| {
                    let _ = tx.send(Msg::Action(a));
                })
            });
        }
    }
}

/// The interactive loop on a real terminal.
pub async fn run_terminal(mut app: App, initial: Vec<Effect>, ctx: WorkerContext, fps: u16) -> Result<(), UiError> {
    let (tx, mut rx) = unbounded_channel::<Msg>();
    let ch = Channels {
        tx: tx.clone(),
        watched: Arc::default(),
        refresh: Arc::default(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    install_panic_hook();
    terminal::enable_raw_mode().map_err(io_err)?;
    let _guard = TerminalGuard;
    execute!(io::stdout(), EnterAlternateScreen, cursor::Hide).map_err(io_err)?;
    let mut term = Terminal::new(CrosstermBackend::new(io::stdout())).map_err(io_err)?;
    term.clear().map_err(io_err)?;

    // Input: a blocking reader thread (crossterm's async stream needs a feature we do not build with).
    let input_tx = tx.clone();
    let _ = thread::Builder::new().name("vcell-ui-input".into()).spawn(move || loop {
        match event::read() {
            Ok(ev) => {
                if input_tx.send(Msg::Term(ev)).is_err() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    spawn_watchers(&ctx, &ch);
    for e in initial {
        dispatch(e, &ctx, &ch);
    }
    let frame_gap = Duration::from_millis(1000 / u64::from(fps.clamp(1, 120)));
    // VCELL_UI_FRAME_STATS=FILE: keep every frame's draw time (in memory) and write a summary at exit
    let stats_path = std::env::var_os("VCELL_UI_FRAME_STATS").map(std::path::PathBuf::from);
    let mut frame_us: Vec<u32> = Vec::new();
    let mut dirty = true;
    let mut last_draw: Option<Instant> = None;
    let result = loop {
        if dirty {
            let due = last_draw.map_or(Instant::now(), |t| t + frame_gap);
            if Instant::now() >= due {
                let started = Instant::now();
                if let Err(e) = draw(&mut term, &app) {
                    break Err(e);
                }
                if stats_path.is_some() {
                    frame_us.push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                last_draw = Some(Instant::now());
                dirty = false;
                continue;
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => dirty |= handle(&mut app, m, &ctx, &ch, &mut rx),
                    None => break Ok(()),
                },
                _ = tokio::time::sleep_until(tokio::time::Instant::from_std(due)) => {}
            }
        } else {
            match rx.recv().await {
                Some(m) => dirty |= handle(&mut app, m, &ctx, &ch, &mut rx),
                None => break Ok(()),
            }
        }
        if app.quit {
            break Ok(());
        }
    };
    ch.stop.store(true, Ordering::Relaxed);
    app.cancel_background();
    if let Some(path) = stats_path {
        // best effort: a diagnostic must not turn a clean exit into an error
        let _ = std::fs::write(path, frame_stats_json(&mut frame_us));
    }
    result
}

/// `{"frames": n, "median_ms": …, "p99_ms": …, "max_ms": …}` of the frame draw times.
fn frame_stats_json(us: &mut [u32]) -> String {
    us.sort_unstable();
    let at = |q: f64| -> f64 {
        if us.is_empty() {
            return 0.0;
        }
        let i = ((us.len() - 1) as f64 * q).round() as usize;
        f64::from(us[i.min(us.len() - 1)]) / 1000.0
    };
    serde_json::json!({"frames": us.len(), "median_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0)}).to_string()
}

/// Apply one message and everything else already queued; true if the screen needs a redraw.
fn handle(app: &mut App, first: Msg, ctx: &WorkerContext, ch: &Channels, rx: &mut UnboundedReceiver<Msg>) -> bool {
    let mut next = Some(first);
    let mut dirty = false;
    while let Some(msg) = next {
        let effects = match msg {
            Msg::Term(TermEvent::Key(key)) => {
                dirty = true;
                app.handle_key(key)
            }
            Msg::Term(TermEvent::Resize(..)) => {
                dirty = true;
                Vec::new()
            }
            Msg::Term(_) => Vec::new(),
            Msg::Action(a) => {
                dirty = true;
                app.update(a)
            }
        };
        for e in effects {
            dispatch(e, ctx, ch);
        }
        if app.quit {
            break;
        }
        next = rx.try_recv().ok();
    }
    dirty
}

fn draw(term: &mut Terminal<CrosstermBackend<io::Stdout>>, app: &App) -> Result<(), UiError> {
    queue!(term.backend_mut(), BeginSynchronizedUpdate).map_err(io_err)?;
    term.draw(|f| app.render(f)).map_err(io_err)?;
    queue!(term.backend_mut(), EndSynchronizedUpdate).map_err(io_err)?;
    term.backend_mut().flush().map_err(io_err)
}

/// Without a terminal: the same watchers, printing a line when a run changes state or (at most every 2 s) makes
/// progress; returns when no run is live any more (or after `limit`).
pub async fn run_headless(app: App, ctx: WorkerContext, limit: Option<Duration>) -> Result<(), UiError> {
    let (tx, mut rx) = unbounded_channel::<Msg>();
    let ch = Channels { tx, watched: Arc::default(), refresh: Arc::default(), stop: Arc::new(AtomicBool::new(false)) };
    drop(app);
    spawn_watchers(&ctx, &ch);
    let started = Instant::now();
    let mut last: BTreeMap<String, (String, Option<u64>, Instant)> = BTreeMap::new();
    let mut out = io::stdout();
    loop {
        let wait = limit.map(|l| l.saturating_sub(started.elapsed())).unwrap_or(Duration::from_secs(3600));
        let msg = match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(m)) => m,
            Ok(None) | Err(_) => break,
        };
        if let Msg::Action(Action::Loaded(Loaded::Runs { runs, .. })) = msg {
            for r in &runs {
                let prev = last.get(&r.name);
                let state_changed = prev.is_none_or(|p| p.0 != r.state);
                let progressed = prev.is_some_and(|p| p.1 != r.step && p.2.elapsed() >= Duration::from_secs(2));
                if state_changed || progressed {
                    let step = r.step.map_or("-".into(), |s| s.to_string());
                    let loss = super::panes::fmt_num(r.loss);
                    let _ = writeln!(out, "{}: {} step {step} loss {loss}", r.name, r.state);
                    last.insert(r.name.clone(), (r.state.clone(), r.step, Instant::now()));
                }
            }
            let _ = out.flush();
            if !runs.iter().any(|r| r.live) {
                break;
            }
        }
    }
    ch.stop.store(true, Ordering::Relaxed);
    Ok(())
}
