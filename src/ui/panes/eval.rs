//! Eval pane: the VCC summary (overlap_at_N, MAE, PDisc, score vs baseline) of an eval output folder, a sortable
//! and filterable table of perturbations with PDisc rank, overlap and MAE, and a histogram of ranks. Predictions
//! without eval outputs are evaluated on demand (`e`, `:evaluate`) in the background, with progress shown.
use std::path::PathBuf;
use std::sync::Arc;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

use super::{block, edit, fmt_num, input_line, kv, matches, message, move_selection, scroll_offset, Edit};
use crate::ui::action::{Action, PaneId};
use crate::ui::background::Latest;
pub use crate::ui::celleval::EvalData;
use crate::ui::celleval::{EvalLayout, EvalRequest, PertRow, VCC2026_COLUMNS};
use crate::ui::effect::{Effect, Out};
use crate::ui::theme::Theme;

/// Sortable columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvalSort {
    #[default]
    Rank,
    Overlap,
    Mae,
    Name,
}

impl EvalSort {
    fn next(self) -> Self {
        match self {
            EvalSort::Rank => EvalSort::Overlap,
            EvalSort::Overlap => EvalSort::Mae,
            EvalSort::Mae => EvalSort::Name,
            EvalSort::Name => EvalSort::Rank,
        }
    }
    pub fn label(self) -> &'static str {
        self.label_for(EvalLayout::Vcc2025)
    }
    /// The sort's name for a layout (2026: the DE overlap is the significance Jaccard, the error the LFC NMAE).
    pub fn label_for(self, layout: EvalLayout) -> &'static str {
        match (self, layout) {
            (EvalSort::Rank, _) => "rank",
            (EvalSort::Overlap, EvalLayout::Vcc2025) => "overlap",
            (EvalSort::Overlap, EvalLayout::Vcc2026) => "jaccard",
            (EvalSort::Mae, EvalLayout::Vcc2025) => "mae",
            (EvalSort::Mae, EvalLayout::Vcc2026) => "lfc_nmae",
            (EvalSort::Name, _) => "name",
        }
    }
}

/// Positions in [`VCC2026_COLUMNS`] of the sort keys.
const VCC2026_JACCARD: usize = 1;
const VCC2026_NMAE: usize = 4;

#[derive(Debug, Default)]
pub struct EvalPane {
    pub dir: Option<PathBuf>,
    pub data: Option<Arc<EvalData>>,
    pub error: Option<String>,
    pub load: Latest,
    pub sort: EvalSort,
    /// Reverse of the natural order (best first for rank and MAE, highest overlap first).
    pub reverse: bool,
    pub filter: String,
    pub editing: bool,
    pub selected: usize,
    /// Indices into `data.perts`, filtered and sorted.
    pub view: Vec<usize>,
    /// The predictions the workbench was opened on, to evaluate on demand (`--real` and `--pred` given).
    pub request: Option<EvalRequest>,
    /// An evaluation running in the background (its ticket is `load`'s latest).
    pub computing: Option<EvalProgress>,
}

/// Where a background evaluation is.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalProgress {
    pub stage: String,
    pub done: u64,
    /// Units of the stage (0: unknown).
    pub total: u64,
}

impl EvalProgress {
    /// `stage done/total (p%)`, or the stage alone when its size is unknown.
    pub fn describe(&self) -> String {
        if self.total == 0 {
            return self.stage.clone();
        }
        let pct = (self.done.min(self.total) * 100) / self.total;
        format!("{} {}/{} ({pct}%)", self.stage, self.done.min(self.total), self.total)
    }
}

impl EvalPane {
    pub fn open(&mut self, dir: PathBuf, out: &mut Out) {
        if self.computing.take().is_some() {
            out.say("evaluation cancelled");
        }
        let ticket = self.load.start();
        self.dir = Some(dir.clone());
        self.error = None;
        out.effect(Effect::LoadEval { ticket, dir });
    }

    /// Evaluate the predictions in the background (a newer `open` or `compute` cancels it).
    pub fn compute(&mut self, out: &mut Out) {
        let Some(request) = self.request.clone() else {
            out.say("error: no predictions to evaluate: open the workbench with --real REAL.h5ad --pred PRED.h5ad");
            return;
        };
        if self.computing.is_some() {
            out.say("already evaluating…");
            return;
        }
        let ticket = self.load.start();
        self.dir = Some(request.outdir.clone());
        self.error = None;
        self.computing = Some(EvalProgress { stage: "starting".into(), done: 0, total: 0 });
        out.say(format!("evaluating {} in the background → {}", request.pred.display(), request.outdir.display()));
        out.effect(Effect::ComputeEval { ticket, request });
    }

    /// Progress of the background evaluation (stale reports are dropped).
    pub fn progress(&mut self, id: u64, stage: String, done: u64, total: u64) {
        if self.load.is_current(id) && self.load.pending() {
            if let Some(p) = &mut self.computing {
                *p = EvalProgress { stage, done, total };
            }
        }
    }

    /// Stop background work (the workbench is closing).
    pub fn cancel(&mut self) {
        self.load.cancel();
        self.computing = None;
    }

    pub fn loaded(&mut self, id: u64, result: Result<Arc<EvalData>, String>) -> bool {
        if !self.load.finish(id) {
            return false;
        }
        self.computing = None;
        match result {
            Ok(d) => {
                self.data = Some(d);
                self.error = None;
            }
            Err(e) => self.error = Some(e),
        }
        self.rebuild();
        true
    }

    pub fn selected_pert(&self) -> Option<&PertRow> {
        let data = self.data.as_ref()?;
        self.view.get(self.selected).and_then(|&i| data.perts.get(i))
    }

    fn rebuild(&mut self) {
        let keep = self.selected_pert().map(|p| p.name.clone());
        let Some(data) = &self.data else {
            self.view.clear();
            return;
        };
        let mut view: Vec<usize> =
            (0..data.perts.len()).filter(|&i| matches(&data.perts[i].name, &self.filter)).collect();
        let value = |p: &PertRow, k: usize| p.values.get(k).copied().flatten();
        let key = |p: &PertRow| match (self.sort, data.layout) {
            (EvalSort::Rank, _) => p.rank,
            (EvalSort::Overlap, EvalLayout::Vcc2025) => p.overlap.map(|v| -v),
            (EvalSort::Mae, EvalLayout::Vcc2025) => p.mae,
            (EvalSort::Overlap, EvalLayout::Vcc2026) => value(p, VCC2026_JACCARD).map(|v| -v),
            (EvalSort::Mae, EvalLayout::Vcc2026) => value(p, VCC2026_NMAE),
            (EvalSort::Name, _) => None,
        };
        view.sort_by(|&a, &b| {
            let (pa, pb) = (&data.perts[a], &data.perts[b]);
            let by_key = match (key(pa), key(pb)) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            };
            by_key.then_with(|| pa.name.cmp(&pb.name))
        });
        if self.reverse {
            view.reverse();
        }
        self.view = view;
        self.selected = keep
            .and_then(|k| self.view.iter().position(|&i| data.perts[i].name == k))
            .unwrap_or(0)
            .min(self.view.len().saturating_sub(1));
    }

    pub fn update(&mut self, action: &Action, out: &mut Out) {
        if self.editing {
            if let Action::Input(key) = action {
                match edit(&mut self.filter, *key) {
                    Edit::Submitted | Edit::Cancelled => self.editing = false,
                    Edit::Changed => self.rebuild(),
                    Edit::Ignored => {}
                }
            }
            return;
        }
        match action {
            Action::Sort => {
                self.sort = self.sort.next();
                self.reverse = false;
                self.rebuild();
                out.say(format!("sorted by {}", self.sort.label()));
            }
            Action::ReverseSort => {
                self.reverse = !self.reverse;
                self.rebuild();
            }
            Action::Filter => self.editing = true,
            Action::Back if !self.filter.is_empty() => {
                self.filter.clear();
                self.rebuild();
            }
            Action::Refresh if self.computing.is_some() => out.say("evaluating: the results show when it is done"),
            Action::Refresh => {
                if let Some(dir) = self.dir.clone() {
                    self.open(dir, out);
                }
            }
            Action::Select => {
                if let Some(p) = self.selected_pert() {
                    out.then(Action::SetPerturbation(p.name.clone()));
                    out.then(Action::GoPane(PaneId::De));
                }
            }
            a => self.selected = move_selection(self.selected, self.view.len(), a, 10),
        }
    }
}

/// Rank histogram: `bins` counts over [0, n].
pub fn rank_histogram(perts: &[PertRow], bins: usize) -> Vec<usize> {
    let n = perts.len() as f64;
    let mut counts = vec![0usize; bins.max(1)];
    for r in perts.iter().filter_map(|p| p.rank) {
        let b = if n > 0.0 { ((r / n) * bins as f64).floor() as usize } else { 0 };
        if let Some(c) = counts.get_mut(b.min(bins.saturating_sub(1))) {
            *c += 1;
        }
    }
    counts
}

pub fn render(pane: &EvalPane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let title = match &pane.computing {
        Some(p) => format!(" Eval — evaluating: {} ", p.describe()),
        None => " Eval ".to_owned(),
    };
    let outer = block(title, theme, area);
    let data = match (&pane.data, &pane.error, &pane.computing) {
        (_, Some(e), None) => {
            let mut lines = vec![Line::styled(format!("error: {e}"), theme.bad())];
            if pane.request.is_some() {
                lines.push(Line::styled("Press e to evaluate the predictions again.", theme.dim()));
            }
            message(frame, area, outer, lines);
            return;
        }
        (None, _, Some(p)) => {
            let mut lines = Vec::new();
            if let Some(r) = &pane.request {
                lines.push(Line::raw(format!("Evaluating {}", r.pred.display())));
                lines.push(Line::styled(format!("  against {}", r.real.display()), theme.dim()));
                lines.push(Line::styled(format!("  into {}", r.outdir.display()), theme.dim()));
            }
            lines.push(Line::styled(p.describe(), theme.accent()));
            let width = area.width.saturating_sub(4) as u64;
            if let Some(filled) = (p.done.min(p.total) * width).checked_div(p.total) {
                lines.push(Line::from(vec![
                    Span::styled("█".repeat(filled as usize), theme.accent()),
                    Span::styled("░".repeat((width - filled) as usize), theme.dim()),
                ]));
            }
            message(frame, area, outer, lines);
            return;
        }
        (Some(d), _, _) => d,
        (None, _, None) => {
            let mut lines = Vec::new();
            if pane.load.pending() {
                lines.push(Line::styled("Loading eval outputs…", theme.dim()));
            } else if let Some(r) = &pane.request {
                lines.push(Line::styled(format!("No eval outputs in {} yet.", r.outdir.display()), theme.dim()));
                lines.push(Line::raw(format!(
                    "Press e (or :evaluate) to evaluate {} against {} in the background.",
                    r.pred.display(),
                    r.real.display()
                )));
            } else {
                lines.push(Line::styled(
                    "No eval outputs. Open a folder with :eval DIR (results.csv, score.csv, *_de.csv).",
                    theme.dim(),
                ));
            }
            message(frame, area, outer, lines);
            return;
        }
    };
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let summary_h = if inner.height >= 12 { 3 } else { 1 };
    let [summary_area, filter_area, body] =
        Layout::vertical([Constraint::Length(summary_h), Constraint::Length(1), Constraint::Min(1)]).areas(inner);

    let lines = match data.layout {
        EvalLayout::Vcc2025 => summary_2025(data, summary_h, theme),
        EvalLayout::Vcc2026 => summary_2026(data, summary_h, theme),
    };
    frame.render_widget(Paragraph::new(lines), summary_area);
    let sort_label = pane.sort.label_for(data.layout);
    let sort = format!("sort {sort_label}{}  filter ", if pane.reverse { " (rev)" } else { "" });
    frame.render_widget(Paragraph::new(input_line_owned(&sort, &pane.filter, pane.editing, theme)), filter_area);

    let hist_min_width = if data.layout == EvalLayout::Vcc2026 { 110 } else { 70 };
    let hist_w = if body.width >= hist_min_width { 26 } else { 0 };
    let [table_area, hist_area] = Layout::horizontal([Constraint::Min(1), Constraint::Length(hist_w)]).areas(body);
    let visible = table_area.height.saturating_sub(1) as usize;
    let offset = scroll_offset(pane.selected, visible);
    let (header, widths): (Vec<&str>, Vec<Constraint>) = match data.layout {
        EvalLayout::Vcc2025 => (
            vec!["PERTURBATION", "RANK", "OVERLAP", "MAE", "PDISC"],
            vec![
                Constraint::Min(10),
                Constraint::Length(7),
                Constraint::Length(8),
                Constraint::Length(8),
                Constraint::Length(8),
            ],
        ),
        EvalLayout::Vcc2026 => {
            let mut h = vec!["PERTURBATION", "RANK"];
            h.extend(VCC2026_COLUMNS.iter().map(|(label, _)| *label));
            let mut w = vec![Constraint::Min(10), Constraint::Length(6)];
            w.extend(VCC2026_COLUMNS.iter().map(|_| Constraint::Length(8)));
            (h, w)
        }
    };
    let rows = pane.view.iter().enumerate().skip(offset).take(visible).filter_map(|(i, &pi)| {
        let p = data.perts.get(pi)?;
        let cells = match data.layout {
            EvalLayout::Vcc2025 => {
                vec![p.name.clone(), fmt_num(p.rank), fmt_num(p.overlap), fmt_num(p.mae), fmt_num(p.pdisc)]
            }
            EvalLayout::Vcc2026 => {
                let mut c = vec![p.name.clone(), fmt_num(p.rank)];
                c.extend(p.values.iter().map(|v| fmt_num(*v)));
                c
            }
        };
        let row = Row::new(cells);
        Some(if i == pane.selected { row.style(theme.selected()) } else { row })
    });
    let table = Table::new(rows, widths).header(Row::new(header).style(theme.header()));
    frame.render_widget(table, table_area);
    if hist_w > 0 {
        let bins = 10usize.min(data.perts.len().max(1));
        let counts = rank_histogram(&data.perts, bins);
        let max = counts.iter().copied().max().unwrap_or(0);
        let n = data.perts.len() as f64;
        let bar_w = hist_w.saturating_sub(14) as usize;
        let mut lines = vec![Line::styled(" PDisc rank histogram", theme.header())];
        for (b, &c) in counts.iter().enumerate() {
            let lo = n * b as f64 / bins as f64;
            let len = if max > 0 { (c * bar_w).div_ceil(max) } else { 0 };
            lines.push(Line::from(vec![
                Span::styled(format!(" {lo:>5.1} "), theme.dim()),
                Span::styled("█".repeat(len), theme.accent()),
                Span::raw(format!(" {c}")),
            ]));
        }
        frame.render_widget(Paragraph::new(lines), hist_area);
    }
}

/// 2025 summary: the means and the score vs the cell-mean baseline.
fn summary_2025<'a>(data: &EvalData, summary_h: u16, theme: &Theme) -> Vec<Line<'a>> {
    let mean = |m: &str| data.means.iter().find(|(k, _)| k == m).map(|(_, v)| *v);
    let score = |m: &str| data.score.iter().find(|(k, _)| k == m).map(|(_, v)| *v);
    let mut l1 = Vec::new();
    l1.extend(kv("perts", data.perts.len().to_string(), theme));
    l1.extend(kv("score", fmt_num(score("avg_score")), theme));
    let mut lines = vec![Line::from(l1)];
    for (label, metric) in
        [("DES overlap_at_N", "overlap_at_N"), ("MAE", "mae"), ("PDS pdisc_l1", "discrimination_score_l1")]
    {
        let mut spans = kv(label, fmt_num(mean(metric)), theme);
        spans.push(Span::styled("vs baseline ", theme.dim()));
        spans.push(Span::raw(fmt_num(score(metric))));
        lines.push(Line::from(spans));
    }
    if summary_h == 1 {
        let mut spans = kv("score", fmt_num(score("avg_score")), theme);
        spans.extend(kv("ovl", fmt_num(mean("overlap_at_N")), theme));
        spans.extend(kv("mae", fmt_num(mean("mae")), theme));
        lines = vec![Line::from(spans)];
    } else {
        // Three rows: the first merges the count and score with DES.
        let des = lines.remove(1);
        lines[0].spans.extend(des.spans);
    }
    lines
}

/// A scored member's column label (the table's).
fn member_label(metric: &str) -> &'static str {
    match metric {
        crate::eval::vcc2026::metrics::EXPR_CAPPED_NORM => "MSEnorm",
        m => VCC2026_COLUMNS.iter().find(|(_, name)| *name == m).map_or("?", |(label, _)| label),
    }
}

/// 2026 summary: `avg_score`, then each scored member's mean and rescaled value (0 = the mean-response
/// baseline, 1 = a replicate of the real data), two or three members per line.
fn summary_2026<'a>(data: &'a EvalData, summary_h: u16, theme: &Theme) -> Vec<Line<'a>> {
    let score = data.score.iter().find(|(k, _)| k == "avg_score").map(|(_, v)| *v);
    let mut head = kv("perts", data.perts.len().to_string(), theme);
    head.extend(kv("avg_score", fmt_num(score), theme));
    let member = |m: &'a crate::ui::celleval::Member| {
        let mut spans = kv(member_label(&m.name), fmt_num(m.mean), theme);
        spans.insert(3, Span::styled("→", theme.dim()));
        spans.insert(4, Span::raw(fmt_num(m.rescaled)));
        spans
    };
    if summary_h == 1 {
        return vec![Line::from(head)];
    }
    let mut lines = vec![Line::from(head)];
    for chunk in data.members.chunks(3) {
        lines.push(Line::from(chunk.iter().flat_map(member).collect::<Vec<_>>()));
    }
    lines.truncate(summary_h as usize);
    lines
}

fn input_line_owned<'a>(label: &'a str, text: &'a str, editing: bool, theme: &Theme) -> Line<'a> {
    input_line(label, text, editing, theme)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_ranks() {
        let p = |r: f64| PertRow { rank: Some(r), ..PertRow::default() };
        let perts = vec![p(0.0), p(0.0), p(1.0), p(3.9), p(4.0)];
        assert_eq!(rank_histogram(&perts, 5), vec![2, 1, 0, 1, 1]);
    }
}
