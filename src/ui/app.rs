//! The `App`: routes keys to actions, actions to panes, and draws the frame (tabs, the pane, the status line,
//! the help overlay and the `:` command line). It holds no logic of its own beyond routing.
use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Wrap};
use ratatui::Frame;

use super::action::{Action, InputKey, Loaded, PaneId};
use super::celleval::EvalRequest;
use super::effect::{Effect, Out};
use super::keymap::Keymap;
use super::panes::runs::{centered, RunsPane};
use super::panes::{self, block, dataset::DatasetPane, de::DePane, eval::EvalPane, gene::GenePane, loss::LossPane};
use super::theme::Theme;

/// What the workbench was opened on.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    pub eval_dir: Option<PathBuf>,
    /// The real `.h5ad` (gene pane; the dataset pane's default).
    pub real: Option<PathBuf>,
    /// The predicted `.h5ad` (gene pane).
    pub pred: Option<PathBuf>,
    /// The `.h5ad` the dataset pane opens (default: `real`).
    pub dataset: Option<PathBuf>,
    pub pert_col: String,
    pub control: String,
}

#[derive(Debug)]
pub struct App {
    pub config: AppConfig,
    pub pane: PaneId,
    pub runs: RunsPane,
    pub loss: LossPane,
    pub eval: EvalPane,
    pub de: DePane,
    pub dataset: DatasetPane,
    pub gene: GenePane,
    pub help: bool,
    /// The `:` command line while open.
    pub palette: Option<String>,
    pub status: Option<String>,
    pub keymap: Keymap,
    pub theme: Theme,
    pub quit: bool,
}

/// Commands of the `:` line, for the help overlay.
pub const COMMANDS: &[(&str, &str)] = &[
    (":q", "quit"),
    (":runs :loss :eval :de :dataset :gene", "go to a pane"),
    (":eval DIR", "load eval outputs"),
    (":evaluate", "evaluate --pred vs --real"),
    (":open FILE.h5ad", "browse a dataset"),
    (":pert NAME  :gene NAME", "pick a perturbation / gene"),
    (":new", "start a run (form)"),
    (":log :smooth :zoom", "loss view"),
];

impl App {
    /// A new app and the effects to run first (loading what the config names).
    pub fn new(config: AppConfig, keymap: Keymap, theme: Theme) -> (App, Vec<Effect>) {
        let mut app = App {
            config,
            pane: PaneId::Runs,
            runs: RunsPane::default(),
            loss: LossPane::default(),
            eval: EvalPane::default(),
            de: DePane::default(),
            dataset: DatasetPane::default(),
            gene: GenePane::default(),
            help: false,
            palette: None,
            status: None,
            keymap,
            theme,
            quit: false,
        };
        // Predictions to evaluate on demand: into the eval folder, else `eval-<pred stem>` next to them.
        if let (Some(real), Some(pred)) = (app.config.real.clone(), app.config.pred.clone()) {
            let outdir = app.config.eval_dir.clone().unwrap_or_else(|| EvalRequest::default_outdir(&pred));
            let (pert_col, control) = (app.config.pert_col.clone(), app.config.control.clone());
            app.eval.request = Some(EvalRequest { real, pred, outdir, pert_col, control });
        }
        let mut effects = Vec::new();
        if let Some(path) = app.config.dataset.clone().or_else(|| app.config.real.clone()) {
            effects.extend(app.update(Action::OpenDataset(path)));
        }
        // An eval folder that does not exist yet (a job still training, as in `vcell demo`) is not an error at
        // startup: the workbench opens on the runs and the folder can be opened later with `:eval DIR`.
        match app.config.eval_dir.clone() {
            Some(dir) if dir.join("results.csv").exists() => effects.extend(app.update(Action::OpenEval(dir))),
            _ => app.pane = PaneId::Runs,
        }
        (app, effects)
    }

    /// Cancel the background work in flight (the workbench is closing): an evaluation stops between blocks of
    /// work and removes its staging folder; scans stop early.
    pub fn cancel_background(&mut self) {
        self.eval.cancel();
        self.dataset.load.cancel();
        self.dataset.stats_load.cancel();
        self.gene.load.cancel();
    }

    /// Whether a text field has the keyboard.
    pub fn typing(&self) -> bool {
        self.palette.is_some()
            || self.runs.typing()
            || (self.pane == PaneId::Eval && self.eval.editing)
            || (self.pane == PaneId::De && self.de.editing)
            || (self.pane == PaneId::Dataset && self.dataset.editing)
    }

    /// The action a key means now (modal first: text fields, confirmation, help; then the keymap).
    pub fn key_to_action(&self, key: &KeyEvent) -> Option<Action> {
        if key.kind == KeyEventKind::Release {
            return None;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Some(Action::Quit);
        }
        if self.typing() {
            let k = match key.code {
                KeyCode::Char(c) => InputKey::Char(c),
                KeyCode::Backspace => InputKey::Backspace,
                KeyCode::Enter => InputKey::Submit,
                KeyCode::Esc => InputKey::Cancel,
                KeyCode::Tab | KeyCode::Down => InputKey::Next,
                KeyCode::BackTab | KeyCode::Up => InputKey::Prev,
                _ => return None,
            };
            return Some(Action::Input(k));
        }
        if self.runs.confirm.is_some() {
            return match key.code {
                KeyCode::Char('y') | KeyCode::Char('Y') | KeyCode::Enter => Some(Action::Confirm),
                KeyCode::Char('n') | KeyCode::Char('N') | KeyCode::Esc | KeyCode::Char('q') => Some(Action::Cancel),
                _ => None,
            };
        }
        if self.help {
            return match key.code {
                KeyCode::Esc | KeyCode::Char('q') | KeyCode::Char('?') | KeyCode::Enter => Some(Action::Help),
                _ => None,
            };
        }
        self.keymap.action_for(key)
    }

    /// Handle a key: translate and update. Returns the effects to run.
    pub fn handle_key(&mut self, key: KeyEvent) -> Vec<Effect> {
        match self.key_to_action(&key) {
            Some(a) => self.update(a),
            None => Vec::new(),
        }
    }

    /// The one place state changes.
    pub fn update(&mut self, action: Action) -> Vec<Effect> {
        let mut queue = vec![action];
        let mut effects = Vec::new();
        while !queue.is_empty() {
            let action = queue.remove(0);
            let mut out = Out::default();
            self.apply(action, &mut out);
            if let Some(m) = out.message {
                self.status = Some(m);
            }
            effects.extend(out.effects);
            queue.extend(out.actions);
        }
        effects
    }

    fn apply(&mut self, action: Action, out: &mut Out) {
        // The command line and the runs pane's modals see every key first.
        if let Some(text) = &mut self.palette {
            if let Action::Input(key) = action {
                match panes::edit(text, key) {
                    panes::Edit::Submitted => {
                        let line = std::mem::take(text);
                        self.palette = None;
                        match parse_command(&line) {
                            Ok(actions) => out.actions.extend(actions),
                            Err(e) => out.say(e),
                        }
                    }
                    panes::Edit::Cancelled => self.palette = None,
                    _ => {}
                }
                return;
            }
        }
        if (self.runs.form.is_some() || self.runs.confirm.is_some())
            && matches!(action, Action::Input(_) | Action::Confirm | Action::Cancel | Action::Back)
        {
            {
                let before = self.runs.shown();
                self.runs.update(&action, out);
                self.sync_shown(before, out);
                return;
            }
        }
        match action {
            Action::Quit => self.quit = true,
            Action::Help => self.help = !self.help,
            Action::Palette => self.palette = Some(String::new()),
            Action::NextPane => self.pane = PaneId::ALL[(self.pane.index() + 1) % PaneId::ALL.len()],
            Action::PrevPane => {
                self.pane = PaneId::ALL[(self.pane.index() + PaneId::ALL.len() - 1) % PaneId::ALL.len()]
            }
            Action::GoPane(p) => self.pane = p,
            Action::OpenEval(dir) => {
                self.eval.open(dir, out);
                if self.pane == PaneId::Runs {
                    self.pane = PaneId::Eval;
                }
            }
            Action::ComputeEval => {
                self.pane = PaneId::Eval;
                self.eval.compute(out);
            }
            Action::OpenDataset(path) => {
                let pert_col = self.config.pert_col.clone();
                self.dataset.open(path, &pert_col, out);
            }
            Action::SetPerturbation(p) => {
                self.de.set_perturbation(&p);
                self.gene.perturbation = Some(p);
                self.request_gene(out);
            }
            Action::SetGene(g) => {
                self.gene.gene = Some(g);
                self.request_gene(out);
            }
            Action::Loaded(loaded) => self.loaded(loaded, out),
            Action::NewRun => {
                self.pane = PaneId::Runs;
                self.runs.update(&action, out);
            }
            other => {
                let before = self.runs.shown();
                match self.pane {
                    PaneId::Runs => self.runs.update(&other, out),
                    PaneId::Loss => self.loss.update(&other, out),
                    PaneId::Eval => self.eval.update(&other, out),
                    PaneId::De => self.de.update(&other, out),
                    PaneId::Dataset => self.dataset.update(&other, out),
                    PaneId::Gene => self.gene.update(&other, out),
                }
                self.sync_shown(before, out);
            }
        }
    }

    /// Keep the loss pane's runs in step with the runs pane's selection and overlay.
    fn sync_shown(&mut self, before: Vec<String>, out: &mut Out) {
        let now = self.runs.shown();
        if now != self.loss.shown || now != before {
            self.loss.set_shown(now.clone());
            if !out.effects.iter().any(|e| matches!(e, Effect::WatchRuns(_))) {
                out.effect(Effect::WatchRuns(now));
            }
        }
    }

    fn request_gene(&mut self, out: &mut Out) {
        self.gene.de = match (&self.gene.perturbation, &self.gene.gene, &self.de.data) {
            (Some(p), Some(g), Some(d)) => d.de.get(p).and_then(|rows| rows.iter().find(|r| &r.feature == g)).cloned(),
            _ => None,
        };
        let c = &self.config;
        self.gene.request(c.real.as_ref(), c.pred.as_ref(), &c.pert_col, &c.control, out);
    }

    fn loaded(&mut self, loaded: Loaded, out: &mut Out) {
        match loaded {
            Loaded::Runs { now, runs } => {
                let before = self.runs.shown();
                self.runs.set_runs(now, runs);
                self.sync_shown(before, out);
            }
            Loaded::Events { run, events, reset } => self.loss.push_events(&run, &events, reset),
            Loaded::EvalProgress { id, stage, done, total } => self.eval.progress(id, stage, done, total),
            Loaded::Eval { id, result } => {
                let computed = self.eval.computing.is_some() && self.eval.load.is_current(id);
                match &result {
                    Err(e) => out.say(format!("error: eval: {e}")),
                    Ok(d) if computed => {
                        out.say(format!("evaluated: {} perturbations, outputs in {}", d.perts.len(), d.dir.display()))
                    }
                    Ok(_) => {}
                }
                if self.eval.loaded(id, result) {
                    self.de.set_data(self.eval.data.clone());
                    if let Some(p) = self.de.perturbation.clone() {
                        self.gene.perturbation.get_or_insert(p);
                    }
                }
            }
            Loaded::Dataset { id, result } => self.dataset.loaded(id, result),
            Loaded::GeneStats { id, done, total, result } => self.dataset.stats_loaded(id, done, total, result),
            Loaded::Gene { id, result } => self.gene.loaded(id, result),
            Loaded::JobDone { message } => {
                out.say(match message {
                    Ok(m) => m,
                    Err(e) => format!("error: {e}"),
                });
                out.effect(Effect::RefreshRuns);
            }
        }
    }

    /// Draw the whole frame. Pure: reads state only.
    pub fn render(&self, frame: &mut Frame) {
        let area = frame.area();
        if area.width < 20 || area.height < 3 {
            frame.render_widget(Paragraph::new("vcell: window too small").wrap(Wrap { trim: true }), area);
            return;
        }
        let [tabs, body, status] =
            Layout::vertical([Constraint::Length(1), Constraint::Min(1), Constraint::Length(1)]).areas(area);
        self.render_tabs(frame, tabs);
        let t = &self.theme;
        match self.pane {
            PaneId::Runs => panes::runs::render(&self.runs, t, frame, body),
            PaneId::Loss => panes::loss::render(&self.loss, t, frame, body),
            PaneId::Eval => panes::eval::render(&self.eval, t, frame, body),
            PaneId::De => panes::de::render(&self.de, t, frame, body),
            PaneId::Dataset => panes::dataset::render(&self.dataset, t, frame, body),
            PaneId::Gene => panes::gene::render(&self.gene, t, frame, body),
        }
        self.render_status(frame, status);
        if self.help {
            self.render_help(frame, body);
        }
    }

    fn render_tabs(&self, frame: &mut Frame, area: Rect) {
        let short = area.width < 60;
        let mut spans = Vec::new();
        for p in PaneId::ALL {
            let label = if short {
                format!("{}{}", p.index() + 1, &p.title()[..1])
            } else {
                format!("{} {}", p.index() + 1, p.title())
            };
            let style = if p == self.pane { self.theme.tab_active() } else { self.theme.dim() };
            spans.push(Span::styled(format!(" {label} "), style));
        }
        if !short {
            spans.push(Span::styled("  vcell", self.theme.title()));
        }
        frame.render_widget(Paragraph::new(Line::from(spans)), area);
    }

    fn render_status(&self, frame: &mut Frame, area: Rect) {
        let t = &self.theme;
        let line = if let Some(text) = &self.palette {
            Line::from(vec![Span::styled(":", t.accent()), Span::raw(text.clone()), Span::styled("█", t.accent())])
        } else if let Some(m) = &self.status {
            let style = if m.starts_with("error") { t.bad() } else { t.text() };
            Line::styled(m.clone(), style)
        } else {
            let hint = match self.pane {
                PaneId::Runs => "n new  x stop  r resume  d delete  space overlay  enter loss",
                PaneId::Loss => "L log  m smooth  z recent",
                PaneId::Eval => "s sort  S reverse  / filter  enter DE  e evaluate",
                PaneId::De => "s sort  / search  a all/sig  enter gene",
                PaneId::Dataset => "←→ column  / gene  enter pick",
                PaneId::Gene => "pick in Eval/DE or :gene NAME",
            };
            Line::from(vec![Span::styled(hint, t.dim()), Span::styled("  ? help  : cmd  q quit", t.dim())])
        };
        frame.render_widget(Paragraph::new(line), area);
    }

    fn render_help(&self, frame: &mut Frame, area: Rect) {
        let t = &self.theme;
        let popup = centered(area, 78, 22);
        frame.render_widget(Clear, popup);
        let entries: [(&str, Action); 22] = [
            ("quit", Action::Quit),
            ("help", Action::Help),
            ("command line", Action::Palette),
            ("next pane", Action::NextPane),
            ("previous pane", Action::PrevPane),
            ("down / up", Action::Down),
            ("top / bottom", Action::Bottom),
            ("open selected", Action::Select),
            ("back", Action::Back),
            ("sort column", Action::Sort),
            ("reverse sort", Action::ReverseSort),
            ("filter / search", Action::Filter),
            ("new run", Action::NewRun),
            ("stop run", Action::StopRun),
            ("resume run", Action::ResumeRun),
            ("delete run", Action::DeleteRun),
            ("overlay run", Action::ToggleOverlay),
            ("log scale", Action::ToggleLogScale),
            ("smoothing", Action::CycleSmoothing),
            ("zoom recent", Action::ToggleZoom),
            ("DE all / sig", Action::ToggleAll),
            ("evaluate predictions", Action::ComputeEval),
        ];
        let key_lines: Vec<Line> = entries
            .iter()
            .map(|(label, a)| {
                let keys = self.keymap.keys_for(a).join(" ");
                Line::from(vec![Span::styled(format!("{keys:>12} "), t.accent()), Span::raw(*label)])
            })
            .collect();
        let mut cmd_lines: Vec<Line> = COMMANDS
            .iter()
            .flat_map(|(c, what)| [Line::styled(format!(" {c}"), t.accent()), Line::raw(format!("     {what}"))])
            .collect();
        let b = block(" Help: Esc closes; keys from ~/.config/vcell/keymap.toml ", t, popup);
        let inner = b.inner(popup);
        frame.render_widget(b, popup);
        if inner.width >= 70 {
            let [left, right] = Layout::horizontal([Constraint::Length(36), Constraint::Min(1)]).areas(inner);
            // Keys that do not fit the left column continue at the top of the right one.
            let mut key_lines = key_lines;
            let overflow = key_lines.split_off(key_lines.len().min(left.height as usize));
            if !overflow.is_empty() {
                cmd_lines.splice(0..0, overflow.into_iter().chain(std::iter::once(Line::raw(""))));
            }
            frame.render_widget(Paragraph::new(key_lines), left);
            frame.render_widget(Paragraph::new(cmd_lines), right);
        } else {
            let mut lines = key_lines;
            lines.extend(cmd_lines);
            frame.render_widget(Paragraph::new(lines), inner);
        }
    }
}

/// Parse a `:` command line into actions.
pub fn parse_command(line: &str) -> Result<Vec<Action>, String> {
    let line = line.trim();
    let (cmd, arg) = match line.split_once(char::is_whitespace) {
        Some((c, a)) => (c, a.trim()),
        None => (line, ""),
    };
    let need = |what: &str| if arg.is_empty() { Err(format!(":{cmd} needs {what}")) } else { Ok(arg.to_owned()) };
    let actions = match cmd {
        "" => vec![],
        "q" | "quit" | "exit" => vec![Action::Quit],
        "help" | "h" => vec![Action::Help],
        "eval" if !arg.is_empty() => vec![Action::OpenEval(PathBuf::from(arg))],
        "evaluate" | "run-eval" => vec![Action::ComputeEval],
        "open" | "data" | "dataset" if !arg.is_empty() => {
            vec![Action::OpenDataset(PathBuf::from(arg)), Action::GoPane(PaneId::Dataset)]
        }
        "pert" | "perturbation" => vec![Action::SetPerturbation(need("a perturbation")?), Action::GoPane(PaneId::De)],
        "gene" => vec![Action::SetGene(need("a gene name")?), Action::GoPane(PaneId::Gene)],
        "new" | "start" => vec![Action::NewRun],
        "log" => vec![Action::GoPane(PaneId::Loss), Action::ToggleLogScale],
        "smooth" => vec![Action::GoPane(PaneId::Loss), Action::CycleSmoothing],
        "zoom" => vec![Action::GoPane(PaneId::Loss), Action::ToggleZoom],
        "refresh" => vec![Action::Refresh],
        other => match PaneId::parse(other) {
            Some(p) => vec![Action::GoPane(p)],
            None => return Err(format!("unknown command :{other} (see ? for the list)")),
        },
    };
    Ok(actions)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn commands_parse() {
        assert!(matches!(parse_command("q").unwrap()[..], [Action::Quit]));
        assert!(matches!(parse_command("de").unwrap()[..], [Action::GoPane(PaneId::De)]));
        assert!(matches!(parse_command("3").unwrap()[..], [Action::GoPane(PaneId::Eval)]));
        assert!(matches!(parse_command("eval /x").unwrap()[..], [Action::OpenEval(_)]));
        assert!(matches!(parse_command("evaluate").unwrap()[..], [Action::ComputeEval]));
        assert!(matches!(parse_command("gene ABC").unwrap()[..], [Action::SetGene(_), Action::GoPane(PaneId::Gene)]));
        assert!(parse_command("gene").unwrap_err().contains("needs"));
        assert!(parse_command("frobnicate").unwrap_err().contains("unknown command"));
    }
}
