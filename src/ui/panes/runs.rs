//! Runs pane: the runs of the workspace (state, step, loss, ETA); start a job from a form, stop, resume, delete
//! (with confirmation). Acting goes through the jobs layer, so jobs outlive the TUI.
use std::collections::BTreeSet;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Clear, Paragraph, Row, Table};
use ratatui::Frame;

use super::{block, edit, fmt_duration, fmt_num, input_line, message, move_selection, scroll_offset};
use crate::jobs::RunSummary;
use crate::ui::action::{Action, InputKey, PaneId};
use crate::ui::effect::{Effect, Out};
use crate::ui::theme::Theme;

/// One run as the pane shows it (built from a [`RunSummary`] off the UI thread).
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub name: String,
    pub state: String,
    pub live: bool,
    pub resumable: bool,
    pub step: Option<u64>,
    pub total_steps: Option<u64>,
    pub loss: Option<f64>,
    pub eta: Option<f64>,
    pub problem: Option<String>,
    pub command: String,
}

impl RunRow {
    pub fn from_summary(s: &RunSummary, now: f64) -> Self {
        RunRow {
            name: s.name.clone(),
            state: s.state.to_string(),
            live: s.state.is_live(),
            resumable: s.state.is_resumable(),
            step: s.step(),
            total_steps: s.status.as_ref().and_then(|st| st.total_steps),
            loss: s.last_loss(),
            eta: s.eta_seconds(now),
            problem: s.problem.clone(),
            command: s.spec.as_ref().map(|sp| sp.argv.join(" ")).unwrap_or_default(),
        }
    }
}

/// The new-run form: model, data config, model config, device, name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StartForm {
    pub fields: [String; 5],
    pub focus: usize,
}

pub const FORM_LABELS: [&str; 5] = ["model", "data config", "model config", "device", "name"];
/// The index of the device field.
pub const DEVICE_FIELD: usize = 3;

/// Whether `spec` is a device `vcell train --device` accepts: `cpu`, `cuda`, `cuda:N` or `auto` (any case).
/// Whether a CUDA device can actually be opened is the job's business (it fails with a clear message).
pub fn device_error(spec: &str) -> Option<String> {
    let s = spec.trim().to_ascii_lowercase();
    let ok = match s.as_str() {
        "cpu" | "cuda" | "auto" => true,
        other => other.strip_prefix("cuda:").is_some_and(|n| !n.is_empty() && n.parse::<usize>().is_ok()),
    };
    (!ok).then(|| format!("device {spec:?}: use cpu, cuda, cuda:N or auto"))
}

impl StartForm {
    pub fn new() -> Self {
        StartForm { fields: ["st".into(), String::new(), String::new(), "cpu".into(), String::new()], focus: 0 }
    }

    /// The vcell command line: `train <model> [--data-config F] [--config F] [--device D]`; the model `demo`
    /// starts the reference demo job (`runs __demo-job`), which has no device.
    pub fn argv(&self) -> Vec<String> {
        let model = self.fields[0].trim();
        if model == "demo" {
            return ["runs", "__demo-job", "--steps", "300", "--step-ms", "100"].map(String::from).to_vec();
        }
        let mut argv = vec!["train".to_owned(), model.to_owned()];
        for (flag, value) in [
            ("--data-config", &self.fields[1]),
            ("--config", &self.fields[2]),
            ("--device", &self.fields[DEVICE_FIELD]),
        ] {
            if !value.trim().is_empty() {
                argv.push(flag.to_owned());
                argv.push(value.trim().to_owned());
            }
        }
        argv
    }

    pub fn name(&self) -> Option<String> {
        Some(self.fields[4].trim().to_owned()).filter(|n| !n.is_empty())
    }

    /// Why the form cannot start a job yet (a bad device), if so.
    pub fn problem(&self) -> Option<String> {
        let device = self.fields[DEVICE_FIELD].trim();
        if self.fields[0].trim() == "demo" || device.is_empty() {
            return None;
        }
        device_error(device)
    }
}

/// What a confirmation dialog is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirm {
    Delete(String),
    Stop(String),
}

#[derive(Debug, Clone, Default)]
pub struct RunsPane {
    pub runs: Vec<RunRow>,
    /// Unix seconds of the last listing (for ETAs; render never reads the clock).
    pub now: f64,
    pub selected: usize,
    pub loaded: bool,
    /// Runs overlaid in the loss pane besides the selected one.
    pub overlay: BTreeSet<String>,
    pub form: Option<StartForm>,
    pub confirm: Option<Confirm>,
}

impl RunsPane {
    pub fn selected_run(&self) -> Option<&RunRow> {
        self.runs.get(self.selected)
    }

    /// Runs the loss pane shows: the selected one first, then the overlay.
    pub fn shown(&self) -> Vec<String> {
        let mut out: Vec<String> = self.selected_run().map(|r| r.name.clone()).into_iter().collect();
        out.extend(self.overlay.iter().filter(|n| self.runs.iter().any(|r| &r.name == *n)).cloned());
        out.dedup();
        out
    }

    pub fn typing(&self) -> bool {
        self.form.is_some()
    }

    /// New listing: keep the selection on the same run.
    pub fn set_runs(&mut self, now: f64, runs: Vec<RunRow>) {
        let keep = self.selected_run().map(|r| r.name.clone());
        let first = !self.loaded;
        self.runs = runs;
        self.now = now;
        self.loaded = true;
        self.selected = match keep {
            Some(name) => self.runs.iter().position(|r| r.name == name).unwrap_or(self.selected),
            // The newest live run, else the newest.
            None if first => self.runs.iter().rposition(|r| r.live).unwrap_or(self.runs.len().saturating_sub(1)),
            None => self.selected,
        }
        .min(self.runs.len().saturating_sub(1));
        self.overlay.retain(|n| self.runs.iter().any(|r| &r.name == n));
    }

    pub fn update(&mut self, action: &Action, out: &mut Out) {
        if let Some(c) = self.confirm.clone() {
            match action {
                Action::Confirm => {
                    self.confirm = None;
                    match c {
                        Confirm::Delete(name) => {
                            out.say(format!("deleting {name}…"));
                            out.effect(Effect::DeleteRun(name));
                        }
                        Confirm::Stop(name) => {
                            out.say(format!("stopping {name}…"));
                            out.effect(Effect::StopRun(name));
                        }
                    }
                }
                Action::Cancel | Action::Back => self.confirm = None,
                _ => {}
            }
            return;
        }
        if let Some(form) = &mut self.form {
            if let Action::Input(key) = action {
                match key {
                    InputKey::Next => form.focus = (form.focus + 1) % FORM_LABELS.len(),
                    InputKey::Prev => form.focus = (form.focus + FORM_LABELS.len() - 1) % FORM_LABELS.len(),
                    InputKey::Submit if form.focus + 1 < FORM_LABELS.len() => form.focus += 1,
                    InputKey::Submit if form.problem().is_some() => {
                        if let Some(p) = form.problem() {
                            out.say(format!("error: {p}"));
                        }
                        form.focus = DEVICE_FIELD;
                    }
                    InputKey::Submit => {
                        let (name, argv) = (form.name(), form.argv());
                        self.form = None;
                        out.say(format!("starting vcell {}…", argv.join(" ")));
                        out.effect(Effect::StartRun { name, argv });
                    }
                    InputKey::Cancel => self.form = None,
                    key => {
                        let _ = edit(&mut form.fields[form.focus], *key);
                    }
                }
            }
            return;
        }
        let before = self.shown();
        match action {
            Action::NewRun => self.form = Some(StartForm::new()),
            Action::StopRun => match self.selected_run() {
                Some(r) if r.live => self.confirm = Some(Confirm::Stop(r.name.clone())),
                Some(r) => out.say(format!("{} is {}, not running", r.name, r.state)),
                None => {}
            },
            Action::ResumeRun => match self.selected_run() {
                Some(r) if r.resumable => {
                    out.say(format!("resuming {}…", r.name));
                    out.effect(Effect::ResumeRun(r.name.clone()));
                }
                Some(r) => out.say(format!("{} is {}: only stopped, failed or lost runs resume", r.name, r.state)),
                None => {}
            },
            Action::DeleteRun => {
                if let Some(r) = self.selected_run() {
                    self.confirm = Some(Confirm::Delete(r.name.clone()));
                }
            }
            Action::ToggleOverlay => {
                if let Some(name) = self.selected_run().map(|r| r.name.clone()) {
                    if !self.overlay.remove(&name) {
                        self.overlay.insert(name);
                    }
                }
            }
            Action::Select => out.then(Action::GoPane(PaneId::Loss)),
            Action::Refresh => out.effect(Effect::RefreshRuns),
            a => self.selected = move_selection(self.selected, self.runs.len(), a, 10),
        }
        let after = self.shown();
        if before != after {
            out.effect(Effect::WatchRuns(after));
        }
    }
}

pub fn render(pane: &RunsPane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let title = format!(" Runs ({}) ", pane.runs.len());
    let outer = block(title, theme, area);
    if !pane.loaded || pane.runs.is_empty() {
        let text = if pane.loaded { "No runs yet. Press n to start one." } else { "Reading the workspace…" };
        message(frame, area, outer, vec![Line::styled(text, theme.dim())]);
    } else {
        let inner = outer.inner(area);
        frame.render_widget(outer, area);
        let detail_h = if inner.height >= 10 { 2 } else { 0 };
        let [table_area, detail_area] =
            Layout::vertical([Constraint::Min(1), Constraint::Length(detail_h)]).areas(inner);
        render_table(pane, theme, frame, table_area);
        if detail_h > 0 {
            if let Some(r) = pane.selected_run() {
                let mut lines = vec![Line::from(vec![
                    Span::styled("cmd ", theme.dim()),
                    Span::raw(format!("vcell {}", r.command)),
                ])];
                if let Some(p) = &r.problem {
                    lines.push(Line::styled(p.clone(), theme.bad()));
                }
                frame.render_widget(Paragraph::new(lines), detail_area);
            }
        }
    }
    if let Some(form) = &pane.form {
        render_form(form, theme, frame, area);
    }
    if let Some(c) = &pane.confirm {
        let text = match c {
            Confirm::Delete(n) => format!("Delete run {n} and all its files? (y/n)"),
            Confirm::Stop(n) => format!("Stop {n}? It checkpoints first. (y/n)"),
        };
        let popup = centered(area, (text.len() as u16 + 4).min(area.width), 5.min(area.height));
        frame.render_widget(Clear, popup);
        let b = if popup.height >= 3 {
            ratatui::widgets::Block::bordered().title(" Confirm ").border_style(theme.warn())
        } else {
            ratatui::widgets::Block::default()
        };
        frame.render_widget(
            Paragraph::new(Line::styled(text, theme.warn())).block(b).wrap(ratatui::widgets::Wrap { trim: true }),
            popup,
        );
    }
}

fn render_table(pane: &RunsPane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let wide = area.width >= 60;
    let visible = area.height.saturating_sub(1) as usize;
    let offset = scroll_offset(pane.selected, visible);
    let rows = pane.runs.iter().enumerate().skip(offset).take(visible).map(|(i, r)| {
        let mark = if pane.overlay.contains(&r.name) { "+" } else { " " };
        let step = match (r.step, r.total_steps) {
            (Some(s), Some(t)) if wide => format!("{s}/{t}"),
            (Some(s), _) => s.to_string(),
            _ => "-".into(),
        };
        let mut cells = vec![
            Span::raw(format!("{mark}{}", r.name)),
            Span::styled(r.state.clone(), theme.state(&r.state)),
            Span::raw(step),
            Span::raw(fmt_num(r.loss)),
        ];
        if wide {
            cells.push(Span::raw(fmt_duration(r.eta)));
        }
        let row = Row::new(cells);
        if i == pane.selected {
            row.style(theme.selected())
        } else {
            row
        }
    });
    let (header, widths) = if wide {
        (
            vec!["NAME", "STATE", "STEP", "LOSS", "ETA"],
            vec![
                Constraint::Min(12),
                Constraint::Length(9),
                Constraint::Length(13),
                Constraint::Length(9),
                Constraint::Length(7),
            ],
        )
    } else {
        (
            vec!["NAME", "STATE", "STEP", "LOSS"],
            vec![Constraint::Min(6), Constraint::Length(8), Constraint::Length(6), Constraint::Length(7)],
        )
    };
    let table = Table::new(rows, widths).header(Row::new(header).style(theme.header())).column_spacing(1);
    frame.render_widget(table, area);
}

fn render_form(form: &StartForm, theme: &Theme, frame: &mut Frame, area: Rect) {
    let popup = centered(area, 76.min(area.width), 10.min(area.height));
    frame.render_widget(Clear, popup);
    let b = block(" New run (Tab: next field, Enter: start, Esc: cancel) ", theme, popup);
    let lines: Vec<Line> = FORM_LABELS
        .iter()
        .zip(&form.fields)
        .enumerate()
        .map(|(i, (label, value))| {
            let focused = i == form.focus;
            let mut line = input_line(label, value, focused, theme);
            line.spans.insert(1, Span::raw(": "));
            if focused {
                line = line.style(theme.accent());
            }
            line
        })
        .chain(std::iter::once(match form.problem() {
            Some(p) => Line::styled(p, theme.bad()),
            None if form.focus == DEVICE_FIELD => Line::styled("cpu, cuda, cuda:N or auto", theme.dim()),
            None => Line::raw(""),
        }))
        .chain(std::iter::once(Line::styled(format!("vcell {}", form.argv().join(" ")), theme.dim())))
        .collect();
    frame.render_widget(Paragraph::new(lines).block(b).wrap(ratatui::widgets::Wrap { trim: false }), popup);
}

/// A `w`×`h` rectangle centred in `area`.
pub fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_checked() {
        for ok in ["cpu", "CPU", "cuda", "cuda:0", "cuda:12", "auto", " auto "] {
            assert_eq!(device_error(ok), None, "{ok}");
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", "cuda0", "metal"] {
            assert!(device_error(bad).is_some_and(|e| e.contains("cuda:N")), "{bad}");
        }
    }

    #[test]
    fn the_form_passes_the_device() {
        let mut f = StartForm::new();
        f.fields[1] = "d.toml".into();
        assert_eq!(f.argv(), ["train", "st", "--data-config", "d.toml", "--device", "cpu"]);
        f.fields[DEVICE_FIELD] = "cuda:1".into();
        assert_eq!(f.argv()[4..], ["--device", "cuda:1"]);
        f.fields[DEVICE_FIELD] = String::new();
        assert_eq!(f.argv(), ["train", "st", "--data-config", "d.toml"], "empty: the job's default");
        f.fields[DEVICE_FIELD] = "gpu".into();
        assert!(f.problem().is_some());
        f.fields[0] = "demo".into();
        assert!(f.problem().is_none() && !f.argv().contains(&"--device".to_owned()), "the demo job has no device");
    }
}
