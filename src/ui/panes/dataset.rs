//! Dataset pane: browse an `.h5ad`: shape and X encoding, obs columns, categories with counts (cells per
//! perturbation per cell type), and gene search with mean, variance and fraction expressed. Everything is
//! computed in the background, streaming X in row chunks (never densified), so a 300k-cell file is fine.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

use super::{block, edit, fmt_num, input_line, kv, matches, message, move_selection, scroll_offset, Edit};
use crate::data::h5ad::H5adReader;
use crate::data::Column;
use crate::ui::action::{Action, PaneId};
use crate::ui::background::{Latest, Ticket};
use crate::ui::effect::{Effect, Out};
use crate::ui::theme::Theme;
use crate::ui::UiError;

/// Categories kept per column (most frequent first).
pub const MAX_CATEGORIES: usize = 5000;
/// Cell-type columns shown next to the perturbation counts.
pub const MAX_CROSS: usize = 4;
/// Rows of X read at a time by the gene statistics pass.
pub const CHUNK_ROWS: usize = 8192;

#[derive(Debug, Clone, PartialEq)]
pub struct ObsColumn {
    pub name: String,
    pub kind: &'static str,
    /// (label, cells), most frequent first; empty for numeric columns.
    pub categories: Vec<(String, usize)>,
    pub n_categories: usize,
    /// (min, mean, max) of a numeric column.
    pub numeric: Option<(f64, f64, f64)>,
    /// For the perturbation column: cells per category per cell type (`cross_labels` order).
    pub cross: Option<Vec<Vec<usize>>>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetSummary {
    pub path: PathBuf,
    pub n_obs: usize,
    pub n_vars: usize,
    pub x: String,
    pub columns: Vec<ObsColumn>,
    /// The cell-type column used for the cross table and its most frequent labels.
    pub cross_column: Option<String>,
    pub cross_labels: Vec<String>,
}

/// Per-gene statistics over all cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeneStats {
    pub genes: Vec<String>,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    pub frac: Vec<f64>,
    pub n_cells: usize,
}

fn data_err(e: impl std::fmt::Display) -> UiError {
    UiError::Data(e.to_string())
}

fn kind(c: &Column) -> &'static str {
    match c {
        Column::Categorical(_) => "category",
        Column::Str(_) => "string",
        Column::Int(_) => "int",
        Column::Float(_) => "float",
        Column::Bool(_) => "bool",
    }
}

/// Read obs and X's metadata (never X's data).
pub fn summarize(path: &Path, pert_col: &str, cancel: &dyn Fn() -> bool) -> Result<DatasetSummary, UiError> {
    let r = H5adReader::open(path).map_err(data_err)?;
    let info = r.x_info().map_err(data_err)?;
    let nnz = info.nnz.map(|n| format!(", nnz {n}")).unwrap_or_default();
    let x = format!("{} {:?}{nnz}", info.encoding.encoding_type(), info.dtype);
    let mut summary =
        DatasetSummary { path: path.to_owned(), n_obs: info.shape.0, n_vars: info.shape.1, x, ..Default::default() };
    let mut raw: Vec<(String, Column)> = Vec::new();
    for name in r.obs_column_names().map_err(data_err)? {
        if cancel() {
            return Err(UiError::Cancelled);
        }
        let col = r.obs_column(&name).map_err(data_err)?;
        raw.push((name, col));
    }
    let cell_type = ["cell_type", "cell_line", "celltype", "cell_line_name"]
        .into_iter()
        .find(|n| raw.iter().any(|(c, _)| c == n) && *n != pert_col)
        .map(str::to_owned);
    let type_codes = cell_type.as_ref().and_then(|n| raw.iter().find(|(c, _)| c == n)).map(|(_, c)| c.to_categorical());
    if let Some(cat) = &type_codes {
        let mut by_count: Vec<(usize, usize)> = cat.counts().into_iter().enumerate().map(|(i, c)| (c, i)).collect();
        by_count.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        by_count.truncate(MAX_CROSS);
        summary.cross_labels = by_count.iter().map(|&(_, i)| cat.categories[i].clone()).collect();
    }
    for (name, col) in &raw {
        let mut c = ObsColumn {
            name: name.clone(),
            kind: kind(col),
            categories: Vec::new(),
            n_categories: 0,
            numeric: None,
            cross: None,
        };
        match col {
            Column::Int(_) | Column::Float(_) => {
                let vals: Vec<f64> = match col {
                    Column::Int(v) => v.iter().map(|&x| x as f64).collect(),
                    Column::Float(v) => v.iter().copied().filter(|x| x.is_finite()).collect(),
                    _ => Vec::new(),
                };
                if !vals.is_empty() {
                    let min = vals.iter().copied().fold(f64::INFINITY, f64::min);
                    let max = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    c.numeric = Some((min, vals.iter().sum::<f64>() / vals.len() as f64, max));
                }
            }
            _ => {
                let cat = col.to_categorical();
                let counts = cat.counts();
                c.n_categories = cat.categories.len();
                let mut order: Vec<usize> = (0..counts.len()).collect();
                order.sort_by(|&a, &b| counts[b].cmp(&counts[a]).then(cat.categories[a].cmp(&cat.categories[b])));
                order.truncate(MAX_CATEGORIES);
                c.categories = order.iter().map(|&i| (cat.categories[i].clone(), counts[i])).collect();
                if name == pert_col {
                    if let (Some(types), Some(tname)) = (&type_codes, &cell_type) {
                        let _ = tname;
                        let label_pos: HashMap<&str, usize> =
                            summary.cross_labels.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
                        let row_of: HashMap<usize, usize> = order.iter().enumerate().map(|(r, &ci)| (ci, r)).collect();
                        let mut cross = vec![vec![0usize; summary.cross_labels.len()]; order.len()];
                        for (cell, &code) in cat.codes.iter().enumerate() {
                            let (Ok(code), Some(t)) = (usize::try_from(code), types.label(cell)) else { continue };
                            if let (Some(&r), Some(&k)) = (row_of.get(&code), label_pos.get(t)) {
                                cross[r][k] += 1;
                            }
                        }
                        c.cross = Some(cross);
                    }
                }
            }
        }
        summary.columns.push(c);
    }
    summary.cross_column = cell_type;
    // The perturbation column first: it is what users look for.
    if let Some(i) = summary.columns.iter().position(|c| c.name == pert_col) {
        let c = summary.columns.remove(i);
        summary.columns.insert(0, c);
    }
    Ok(summary)
}

/// Mean, variance (population) and fraction of cells expressing each gene, streaming X in row chunks.
/// `progress(done_rows, total_rows)` is called after each chunk.
pub fn gene_stats(path: &Path, ticket: &Ticket, progress: &mut dyn FnMut(usize, usize)) -> Result<GeneStats, UiError> {
    let r = H5adReader::open(path).map_err(data_err)?;
    let (n_obs, n_vars) = r.x_info().map_err(data_err)?.shape;
    let genes = r.var_names().map_err(data_err)?;
    let mut sum = vec![0f64; n_vars];
    let mut sumsq = vec![0f64; n_vars];
    let mut nnz = vec![0u64; n_vars];
    let mut start = 0;
    while start < n_obs {
        if ticket.cancelled() {
            return Err(UiError::Cancelled);
        }
        let end = (start + CHUNK_ROWS).min(n_obs);
        let chunk = r.read_x_rows(start, end).map_err(data_err)?;
        for (&j, &v) in chunk.indices().iter().zip(chunk.data()) {
            let j = j as usize;
            if j < n_vars && v != 0.0 {
                let v = f64::from(v);
                sum[j] += v;
                sumsq[j] += v * v;
                nnz[j] += 1;
            }
        }
        start = end;
        progress(start, n_obs);
    }
    let n = n_obs.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let var = sumsq.iter().zip(&mean).map(|(q, m)| (q / n - m * m).max(0.0)).collect();
    let frac = nnz.iter().map(|&c| c as f64 / n).collect();
    Ok(GeneStats { genes, mean, var, frac, n_cells: n_obs })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Focus {
    #[default]
    Categories,
    Genes,
}

#[derive(Debug, Default)]
pub struct DatasetPane {
    pub path: Option<PathBuf>,
    pub summary: Option<Arc<DatasetSummary>>,
    pub stats: Option<Arc<GeneStats>>,
    pub error: Option<String>,
    pub load: Latest,
    pub stats_load: Latest,
    /// Rows of X read so far by the statistics pass.
    pub progress: (usize, usize),
    pub column: usize,
    pub selected: usize,
    pub focus: Focus,
    pub query: String,
    pub editing: bool,
    /// Indices into `stats.genes` matching `query`.
    pub matches: Vec<usize>,
    pub gene_selected: usize,
}

impl DatasetPane {
    pub fn open(&mut self, path: PathBuf, pert_col: &str, out: &mut Out) {
        self.path = Some(path.clone());
        self.summary = None;
        self.stats = None;
        self.error = None;
        self.progress = (0, 0);
        self.column = 0;
        self.selected = 0;
        out.effect(Effect::LoadDataset {
            ticket: self.load.start(),
            path: path.clone(),
            pert_col: pert_col.to_owned(),
        });
        out.effect(Effect::LoadGeneStats { ticket: self.stats_load.start(), path });
    }

    pub fn loaded(&mut self, id: u64, result: Result<Arc<DatasetSummary>, String>) {
        if self.load.finish(id) {
            match result {
                Ok(s) => self.summary = Some(s),
                Err(e) => self.error = Some(e),
            }
        }
    }

    pub fn stats_loaded(&mut self, id: u64, done: usize, total: usize, result: Option<Result<Arc<GeneStats>, String>>) {
        if !self.stats_load.is_current(id) {
            return;
        }
        self.progress = (done, total);
        if let Some(result) = result {
            self.stats_load.finish(id);
            match result {
                Ok(s) => self.stats = Some(s),
                Err(e) => self.error = Some(format!("gene statistics: {e}")),
            }
            self.rebuild_matches();
        }
    }

    pub fn current_column(&self) -> Option<&ObsColumn> {
        self.summary.as_ref()?.columns.get(self.column)
    }

    fn rebuild_matches(&mut self) {
        self.matches = match &self.stats {
            Some(s) if !self.query.is_empty() => {
                (0..s.genes.len()).filter(|&i| matches(&s.genes[i], &self.query)).take(10_000).collect()
            }
            _ => Vec::new(),
        };
        self.gene_selected = self.gene_selected.min(self.matches.len().saturating_sub(1));
    }

    pub fn update(&mut self, action: &Action, out: &mut Out) {
        if self.editing {
            if let Action::Input(key) = action {
                match edit(&mut self.query, *key) {
                    Edit::Submitted => {
                        self.editing = false;
                        self.focus = Focus::Genes;
                    }
                    Edit::Cancelled => self.editing = false,
                    Edit::Changed => {
                        self.gene_selected = 0;
                        self.rebuild_matches();
                    }
                    Edit::Ignored => {}
                }
            }
            return;
        }
        let n_cols = self.summary.as_ref().map_or(0, |s| s.columns.len());
        match (action, self.focus) {
            (Action::Filter, _) => self.editing = true,
            (Action::Back, Focus::Genes) => self.focus = Focus::Categories,
            (Action::Left, _) => {
                self.column = self.column.saturating_sub(1);
                self.selected = 0;
                self.focus = Focus::Categories;
            }
            (Action::Right, _) => {
                self.column = (self.column + 1).min(n_cols.saturating_sub(1));
                self.selected = 0;
                self.focus = Focus::Categories;
            }
            (Action::Refresh, _) => {
                if let Some(p) = self.path.clone() {
                    let pert = self.summary.as_ref().and_then(|s| s.columns.first()).map(|c| c.name.clone());
                    self.open(p, pert.as_deref().unwrap_or_default(), out);
                }
            }
            (Action::Select, Focus::Categories) => {
                if let Some((label, _)) = self.current_column().and_then(|c| c.categories.get(self.selected)) {
                    out.then(Action::SetPerturbation(label.clone()));
                    out.say(format!("perturbation {label}"));
                }
            }
            (Action::Select, Focus::Genes) => {
                let gene =
                    self.stats.as_ref().zip(self.matches.get(self.gene_selected)).map(|(s, &i)| s.genes[i].clone());
                if let Some(g) = gene {
                    out.then(Action::SetGene(g));
                    out.then(Action::GoPane(PaneId::Gene));
                }
            }
            (a, Focus::Categories) => {
                let n = self.current_column().map_or(0, |c| c.categories.len());
                self.selected = move_selection(self.selected, n, a, 10);
            }
            (a, Focus::Genes) => self.gene_selected = move_selection(self.gene_selected, self.matches.len(), a, 10),
        }
    }
}

pub fn render(pane: &DatasetPane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let name = pane.path.as_ref().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned());
    let outer = block(format!(" Dataset {} ", name.as_deref().unwrap_or("")), theme, area);
    let summary = match (&pane.summary, &pane.error) {
        (_, Some(e)) => {
            message(frame, area, outer, vec![Line::styled(format!("error: {e}"), theme.bad())]);
            return;
        }
        (Some(s), None) => s,
        (None, None) => {
            let text = if pane.path.is_some() { "Reading obs…" } else { "No dataset. Open one with :open FILE.h5ad" };
            message(frame, area, outer, vec![Line::styled(text, theme.dim())]);
            return;
        }
    };
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let [head, body] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let mut spans = kv("cells", summary.n_obs.to_string(), theme);
    spans.extend(kv("genes", summary.n_vars.to_string(), theme));
    spans.extend(kv("X", summary.x.clone(), theme));
    frame.render_widget(Paragraph::new(Line::from(spans)), head);

    let genes_w = if body.width >= 70 { (body.width / 2).min(60) } else { 0 };
    let [cats_area, genes_area] = Layout::horizontal([Constraint::Min(1), Constraint::Length(genes_w)]).areas(body);
    let [tabs_area, table_area] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(cats_area);
    // Column chooser: ◀ name (kind, n) ▶
    let col = summary.columns.get(pane.column);
    let col_line = match col {
        Some(c) => Line::from(vec![
            Span::styled("◀ ", theme.dim()),
            Span::styled(c.name.clone(), theme.accent()),
            Span::styled(format!(" {} {}/{} ", c.kind, pane.column + 1, summary.columns.len()), theme.dim()),
            Span::styled("▶", theme.dim()),
        ]),
        None => Line::styled("no obs columns", theme.dim()),
    };
    frame.render_widget(Paragraph::new(col_line), tabs_area);
    if let Some(c) = col {
        if let Some((min, mean, max)) = c.numeric {
            let mut s = kv("min", fmt_num(Some(min)), theme);
            s.extend(kv("mean", fmt_num(Some(mean)), theme));
            s.extend(kv("max", fmt_num(Some(max)), theme));
            frame.render_widget(Paragraph::new(Line::from(s)), table_area);
        } else {
            let visible = table_area.height.saturating_sub(1) as usize;
            let offset = scroll_offset(pane.selected, visible);
            let cross_n = if c.cross.is_some() && table_area.width >= 50 { summary.cross_labels.len() } else { 0 };
            let rows = c.categories.iter().enumerate().skip(offset).take(visible).map(|(i, (label, n))| {
                let mut cells = vec![label.clone(), n.to_string()];
                if let Some(cross) = c.cross.as_ref().and_then(|x| x.get(i)) {
                    cells.extend(cross.iter().take(cross_n).map(|v| v.to_string()));
                }
                let row = Row::new(cells);
                if i == pane.selected && pane.focus == Focus::Categories {
                    row.style(theme.selected())
                } else {
                    row
                }
            });
            let header_title = format!("{} ({})", c.name, c.n_categories);
            let mut header = vec![header_title, "cells".to_owned()];
            header.extend(summary.cross_labels.iter().take(cross_n).cloned());
            let mut widths = vec![Constraint::Min(10), Constraint::Length(7)];
            widths.extend((0..cross_n).map(|_| Constraint::Length(9)));
            frame.render_widget(Table::new(rows, widths).header(Row::new(header).style(theme.header())), table_area);
        }
    }
    if genes_w > 0 {
        render_genes(pane, theme, frame, genes_area);
    }
}

fn render_genes(pane: &DatasetPane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let [search, table_area] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
    frame.render_widget(Paragraph::new(input_line(" gene /", &pane.query, pane.editing, theme)), search);
    let Some(stats) = &pane.stats else {
        let (done, total) = pane.progress;
        let pct = (100 * done).checked_div(total).unwrap_or(0);
        let text = format!(" gene statistics: reading X… {pct}%");
        frame.render_widget(Paragraph::new(Line::styled(text, theme.dim())), table_area);
        return;
    };
    if pane.query.is_empty() {
        let text = format!(" {} genes; / to search", stats.genes.len());
        frame.render_widget(Paragraph::new(Line::styled(text, theme.dim())), table_area);
        return;
    }
    let visible = table_area.height.saturating_sub(1) as usize;
    let offset = scroll_offset(pane.gene_selected, visible);
    let rows = pane.matches.iter().enumerate().skip(offset).take(visible).map(|(k, &i)| {
        let row = Row::new(vec![
            stats.genes[i].clone(),
            fmt_num(Some(stats.mean[i])),
            fmt_num(Some(stats.var[i])),
            fmt_num(Some(stats.frac[i])),
        ]);
        if k == pane.gene_selected && pane.focus == Focus::Genes {
            row.style(theme.selected())
        } else {
            row
        }
    });
    let widths = [Constraint::Min(6), Constraint::Length(7), Constraint::Length(7), Constraint::Length(6)];
    let header = Row::new(vec!["GENE", "MEAN", "VAR", "FRAC"]).style(theme.header());
    frame.render_widget(Table::new(rows, widths).header(header).column_spacing(1), table_area);
}
