//! DE pane: for the selected perturbation, real vs predicted differential expression gene by gene (LFC, FDR),
//! hit/miss marks and overlap counts; sortable, searchable.
use std::sync::Arc;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

use super::{block, edit, fmt_num, input_line, kv, matches, message, move_selection, scroll_offset, Edit};
use crate::ui::action::{Action, PaneId};
use crate::ui::celleval::{DeRow, EvalData};
use crate::ui::effect::Out;
use crate::ui::theme::Theme;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeSort {
    /// Real FDR ascending (most significant first).
    #[default]
    RealFdr,
    PredFdr,
    /// |real LFC| descending.
    RealLfc,
    Gene,
}

impl DeSort {
    fn next(self) -> Self {
        match self {
            DeSort::RealFdr => DeSort::PredFdr,
            DeSort::PredFdr => DeSort::RealLfc,
            DeSort::RealLfc => DeSort::Gene,
            DeSort::Gene => DeSort::RealFdr,
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            DeSort::RealFdr => "real fdr",
            DeSort::PredFdr => "pred fdr",
            DeSort::RealLfc => "|real lfc|",
            DeSort::Gene => "gene",
        }
    }
}

/// A gene's mark: significant in both (hit), real only (miss), predicted only (false positive).
pub fn mark(row: &DeRow) -> &'static str {
    match (row.real_sig(), row.pred_sig()) {
        (true, true) => "hit",
        (true, false) => "miss",
        (false, true) => "fp",
        (false, false) => "",
    }
}

#[derive(Debug, Clone, Default)]
pub struct DePane {
    pub data: Option<Arc<EvalData>>,
    pub perturbation: Option<String>,
    pub sort: DeSort,
    pub reverse: bool,
    pub filter: String,
    pub editing: bool,
    /// Show every gene, not only those significant in the real or predicted data.
    pub all: bool,
    pub selected: usize,
    pub view: Vec<usize>,
    /// (real significant, predicted significant, both).
    pub counts: (usize, usize, usize),
}

impl DePane {
    pub fn set_data(&mut self, data: Option<Arc<EvalData>>) {
        self.data = data;
        if self.perturbation.as_ref().is_none_or(|p| self.rows_of(p).is_none()) {
            self.perturbation = self.data.as_ref().and_then(|d| d.de.keys().next().cloned());
        }
        self.rebuild();
    }

    pub fn set_perturbation(&mut self, p: &str) {
        if self.perturbation.as_deref() != Some(p) {
            self.perturbation = Some(p.to_owned());
            self.selected = 0;
            self.rebuild();
        }
    }

    fn rows_of(&self, p: &str) -> Option<&Vec<DeRow>> {
        self.data.as_ref()?.de.get(p)
    }

    pub fn rows(&self) -> &[DeRow] {
        self.perturbation.as_deref().and_then(|p| self.rows_of(p)).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn selected_row(&self) -> Option<&DeRow> {
        self.view.get(self.selected).and_then(|&i| self.rows().get(i))
    }

    fn rebuild(&mut self) {
        let keep = self.selected_row().map(|r| r.feature.clone());
        let data = self.data.clone();
        let empty = Vec::new();
        let rows: &[DeRow] = match (&data, &self.perturbation) {
            (Some(d), Some(p)) => d.de.get(p).unwrap_or(&empty),
            _ => &empty,
        };
        self.counts = rows.iter().fold((0, 0, 0), |(r, p, b), row| {
            (
                r + usize::from(row.real_sig()),
                p + usize::from(row.pred_sig()),
                b + usize::from(row.real_sig() && row.pred_sig()),
            )
        });
        let mut view: Vec<usize> = (0..rows.len())
            .filter(|&i| {
                (self.all || rows[i].real_sig() || rows[i].pred_sig()) && matches(&rows[i].feature, &self.filter)
            })
            .collect();
        let fdr =
            |s: Option<crate::ui::celleval::DeStat>| s.map(|s| s.fdr).filter(|v| !v.is_nan()).unwrap_or(f64::INFINITY);
        let lfc = |s: Option<crate::ui::celleval::DeStat>| {
            s.map(|s| -s.lfc.abs()).filter(|v| !v.is_nan()).unwrap_or(f64::INFINITY)
        };
        view.sort_by(|&a, &b| {
            let (ra, rb) = (&rows[a], &rows[b]);
            let ord = match self.sort {
                DeSort::RealFdr => fdr(ra.real).total_cmp(&fdr(rb.real)),
                DeSort::PredFdr => fdr(ra.pred).total_cmp(&fdr(rb.pred)),
                DeSort::RealLfc => lfc(ra.real).total_cmp(&lfc(rb.real)),
                DeSort::Gene => std::cmp::Ordering::Equal,
            };
            ord.then_with(|| ra.feature.cmp(&rb.feature))
        });
        if self.reverse {
            view.reverse();
        }
        self.selected = keep
            .and_then(|k| view.iter().position(|&i| rows[i].feature == k))
            .unwrap_or(self.selected)
            .min(view.len().saturating_sub(1));
        self.view = view;
    }

    pub fn update(&mut self, action: &Action, out: &mut Out) {
        if self.editing {
            if let Action::Input(key) = action {
                match edit(&mut self.filter, *key) {
                    Edit::Submitted | Edit::Cancelled => self.editing = false,
                    Edit::Changed => {
                        self.selected = 0;
                        self.rebuild()
                    }
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
            Action::ToggleAll => {
                self.all = !self.all;
                self.rebuild();
                out.say(if self.all { "all genes" } else { "significant genes only" });
            }
            Action::Filter => self.editing = true,
            Action::Back if !self.filter.is_empty() => {
                self.filter.clear();
                self.rebuild();
            }
            Action::Back => out.then(Action::GoPane(PaneId::Eval)),
            Action::Select => {
                if let Some(r) = self.selected_row() {
                    out.then(Action::SetGene(r.feature.clone()));
                    out.then(Action::GoPane(PaneId::Gene));
                }
            }
            a => self.selected = move_selection(self.selected, self.view.len(), a, 10),
        }
    }
}

pub fn render(pane: &DePane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let title = match &pane.perturbation {
        Some(p) => format!(" DE: {p} "),
        None => " DE ".into(),
    };
    let outer = block(title, theme, area);
    if pane.data.as_ref().is_none_or(|d| d.de.is_empty()) || pane.perturbation.is_none() {
        let text = "No DE tables. Open eval outputs with real_de.csv and pred_de.csv (:eval DIR).";
        message(frame, area, outer, vec![Line::styled(text, theme.dim())]);
        return;
    }
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let [head, filter_area, body] =
        Layout::vertical([Constraint::Length(1), Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let (real, pred, both) = pane.counts;
    let mut spans = kv("real sig", real.to_string(), theme);
    spans.extend(kv("pred sig", pred.to_string(), theme));
    spans.extend(kv("overlap", both.to_string(), theme));
    let ratio = if real > 0 { Some(both as f64 / real as f64) } else { None };
    spans.extend(kv("recall", fmt_num(ratio), theme));
    frame.render_widget(Paragraph::new(Line::from(spans)), head);
    let label = format!(
        "{} sort {}{}  search ",
        if pane.all { "all" } else { "sig" },
        pane.sort.label(),
        if pane.reverse { " (rev)" } else { "" }
    );
    frame.render_widget(Paragraph::new(input_line(&label, &pane.filter, pane.editing, theme)), filter_area);
    let rows = pane.rows();
    let visible = body.height.saturating_sub(1) as usize;
    let offset = scroll_offset(pane.selected, visible);
    let wide = body.width >= 64;
    let table_rows = pane.view.iter().enumerate().skip(offset).take(visible).filter_map(|(i, &ri)| {
        let r = rows.get(ri)?;
        let m = mark(r);
        let style = match m {
            "hit" => theme.good(),
            "miss" => theme.bad(),
            "fp" => theme.warn(),
            _ => theme.text(),
        };
        let mut cells = vec![
            Span::raw(r.feature.clone()),
            Span::styled(m, style),
            Span::raw(fmt_num(r.real.map(|s| s.lfc))),
            Span::raw(fmt_num(r.real.map(|s| s.fdr))),
            Span::raw(fmt_num(r.pred.map(|s| s.lfc))),
            Span::raw(fmt_num(r.pred.map(|s| s.fdr))),
        ];
        if !wide {
            cells.truncate(4);
        }
        let row = Row::new(cells);
        Some(if i == pane.selected { row.style(theme.selected()) } else { row })
    });
    let mut header = vec!["GENE", "MARK", "REAL LFC", "REAL FDR", "PRED LFC", "PRED FDR"];
    let mut widths = vec![
        Constraint::Min(9),
        Constraint::Length(4),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    if !wide {
        header.truncate(4);
        widths.truncate(4);
    }
    frame.render_widget(Table::new(table_rows, widths).header(Row::new(header).style(theme.header())), body);
}
