//! Gene pane: for a perturbation and a gene, the distribution of real vs predicted vs control expression
//! (histograms on shared bins), the means, and the gene's DE result.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::Paragraph;
use ratatui::Frame;

use super::{block, fmt_num, kv, message, spark};
use crate::data::h5ad::H5adReader;
use crate::ui::action::Action;
use crate::ui::background::{Latest, Ticket};
use crate::ui::celleval::DeRow;
use crate::ui::effect::{Effect, Out};
use crate::ui::theme::Theme;
use crate::ui::UiError;

/// Where to read the expression of one gene.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneRequest {
    pub real: PathBuf,
    pub pred: Option<PathBuf>,
    pub pert_col: String,
    pub control: String,
    pub perturbation: String,
    pub gene: String,
}

/// Expression values of the gene in the perturbed cells (real, predicted) and in control cells (real).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GeneData {
    pub real: Vec<f32>,
    pub pred: Option<Vec<f32>>,
    pub control: Vec<f32>,
}

fn data_err(e: impl std::fmt::Display) -> UiError {
    UiError::Data(e.to_string())
}

/// The values of `gene` in the cells whose `pert_col` is each of `labels`, reading only the row chunks that
/// hold such cells.
pub fn gene_values(
    path: &Path,
    pert_col: &str,
    labels: &[&str],
    gene: &str,
    ticket: &Ticket,
) -> Result<Vec<Vec<f32>>, UiError> {
    const CHUNK: usize = 4096;
    let r = H5adReader::open(path).map_err(data_err)?;
    let genes = r.var_names().map_err(data_err)?;
    let j = genes
        .iter()
        .position(|g| g == gene)
        .ok_or_else(|| UiError::Data(format!("{}: no gene {gene:?}", path.display())))?;
    let cat = r.obs_column(pert_col).map_err(data_err)?.to_categorical();
    let codes: Vec<Option<i32>> =
        labels.iter().map(|l| cat.categories.iter().position(|c| c == l).map(|i| i as i32)).collect();
    let mut out = vec![Vec::new(); labels.len()];
    let n = cat.codes.len();
    let mut start = 0;
    while start < n {
        if ticket.cancelled() {
            return Err(UiError::Cancelled);
        }
        let end = (start + CHUNK).min(n);
        let wanted = |code: i32| codes.iter().position(|c| *c == Some(code));
        if cat.codes[start..end].iter().any(|&c| wanted(c).is_some()) {
            let chunk = r.read_x_rows(start, end).map_err(data_err)?;
            for (row, &code) in cat.codes[start..end].iter().enumerate() {
                if let Some(k) = wanted(code) {
                    let v = chunk.outer_view(row).and_then(|v| v.get(j).copied()).unwrap_or(0.0);
                    out[k].push(v);
                }
            }
        }
        start = end;
    }
    Ok(out)
}

pub fn load_gene(req: &GeneRequest, ticket: &Ticket) -> Result<GeneData, UiError> {
    let mut real = gene_values(&req.real, &req.pert_col, &[&req.perturbation, &req.control], &req.gene, ticket)?;
    let control = real.pop().unwrap_or_default();
    let real = real.pop().unwrap_or_default();
    let pred = match &req.pred {
        Some(p) => gene_values(p, &req.pert_col, &[&req.perturbation], &req.gene, ticket)?.pop(),
        None => None,
    };
    Ok(GeneData { real, pred, control })
}

#[derive(Debug, Default)]
pub struct GenePane {
    pub perturbation: Option<String>,
    pub gene: Option<String>,
    pub data: Option<Arc<GeneData>>,
    pub de: Option<DeRow>,
    pub error: Option<String>,
    pub load: Latest,
}

impl GenePane {
    /// Ask for the distribution if both the perturbation and the gene are known and the files are given.
    pub fn request(
        &mut self,
        real: Option<&PathBuf>,
        pred: Option<&PathBuf>,
        pert_col: &str,
        control: &str,
        out: &mut Out,
    ) {
        let (Some(p), Some(g)) = (&self.perturbation, &self.gene) else { return };
        self.data = None;
        self.error = None;
        let Some(real) = real else {
            self.error = Some("no real .h5ad given (vcell ui --real FILE)".into());
            return;
        };
        let request = GeneRequest {
            real: real.clone(),
            pred: pred.cloned(),
            pert_col: pert_col.to_owned(),
            control: control.to_owned(),
            perturbation: p.clone(),
            gene: g.clone(),
        };
        out.effect(Effect::LoadGene { ticket: self.load.start(), request });
    }

    pub fn loaded(&mut self, id: u64, result: Result<Arc<GeneData>, String>) {
        if self.load.finish(id) {
            match result {
                Ok(d) => self.data = Some(d),
                Err(e) => self.error = Some(e),
            }
        }
    }

    pub fn update(&mut self, _action: &Action, _out: &mut Out) {}
}

fn mean(v: &[f32]) -> Option<f64> {
    if v.is_empty() {
        None
    } else {
        Some(v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64)
    }
}

/// Counts of `values` in `bins` equal bins over [lo, hi].
pub fn histogram(values: &[f32], lo: f64, hi: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0usize; bins.max(1)];
    let width = (hi - lo).max(f64::MIN_POSITIVE);
    for &v in values {
        let b = (((f64::from(v) - lo) / width) * bins as f64).floor().max(0.0) as usize;
        if let Some(c) = counts.get_mut(b.min(bins.saturating_sub(1))) {
            *c += 1;
        }
    }
    counts
}

pub fn render(pane: &GenePane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let title = match (&pane.perturbation, &pane.gene) {
        (Some(p), Some(g)) => format!(" Gene {g} in {p} "),
        (None, Some(g)) => format!(" Gene {g} "),
        _ => " Gene ".into(),
    };
    let outer = block(title, theme, area);
    if let Some(e) = &pane.error {
        message(frame, area, outer, vec![Line::styled(format!("error: {e}"), theme.bad())]);
        return;
    }
    let Some(data) = &pane.data else {
        let text = match (&pane.perturbation, &pane.gene) {
            (Some(_), Some(_)) if pane.load.pending() => "Reading expression…",
            _ => "Pick a perturbation (Eval pane) and a gene (DE pane, or :gene NAME).",
        };
        message(frame, area, outer, vec![Line::styled(text, theme.dim())]);
        return;
    };
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let empty = Vec::new();
    let pred = data.pred.as_ref().unwrap_or(&empty);
    let all = data.real.iter().chain(pred).chain(&data.control).map(|&v| f64::from(v));
    let (lo, hi) = all.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| (a.min(v), b.max(v)));
    let (lo, hi) = if lo.is_finite() { (lo, hi.max(lo + 1e-9)) } else { (0.0, 1.0) };
    let bins = (inner.width.saturating_sub(22) as usize).clamp(4, 60);
    let series: [(&str, &[f32], ratatui::style::Style); 3] = [
        ("real   ", &data.real, theme.accent()),
        ("pred   ", pred, theme.warn()),
        ("control", &data.control, theme.dim()),
    ];
    let hists: Vec<Vec<usize>> = series.iter().map(|(_, v, _)| histogram(v, lo, hi, bins)).collect();
    let mut lines = Vec::new();
    let mut head = kv("range", format!("{}..{}", fmt_num(Some(lo)), fmt_num(Some(hi))), theme);
    head.extend(kv("bins", bins.to_string(), theme));
    lines.push(Line::from(head));
    for ((label, values, style), h) in series.iter().zip(&hists) {
        let max = h.iter().copied().max().unwrap_or(0);
        lines.push(Line::from(vec![
            Span::styled(*label, theme.dim()),
            Span::raw(" "),
            Span::styled(spark(h, max), *style),
            Span::raw(format!(" n={} mean={}", values.len(), fmt_num(mean(values)))),
        ]));
    }
    if let Some(de) = &pane.de {
        let mark = super::de::mark(de);
        let mut s = kv("DE real lfc", fmt_num(de.real.map(|d| d.lfc)), theme);
        s.extend(kv("fdr", fmt_num(de.real.map(|d| d.fdr)), theme));
        s.extend(kv("pred lfc", fmt_num(de.pred.map(|d| d.lfc)), theme));
        s.extend(kv("fdr", fmt_num(de.pred.map(|d| d.fdr)), theme));
        s.push(Span::styled(mark, theme.title()));
        lines.push(Line::from(s));
    }
    frame.render_widget(Paragraph::new(lines), inner);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_edges() {
        assert_eq!(histogram(&[0.0, 0.5, 1.0], 0.0, 1.0, 2), vec![1, 2]);
        assert_eq!(histogram(&[], 0.0, 1.0, 3), vec![0, 0, 0]);
    }
}
