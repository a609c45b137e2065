//! Loss pane: live training and validation curves of the selected run (and overlaid runs), log scale, smoothing,
//! zoom to recent steps; learning rate and throughput alongside. Histories are bounded (`history.rs`).
use std::collections::BTreeMap;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Chart, Dataset, GraphType, Paragraph};
use ratatui::Frame;

use super::{block, fmt_num, kv, message, spark};
use crate::jobs::Event;
use crate::ui::action::Action;
use crate::ui::effect::Out;
use crate::ui::history::RunHistory;
use crate::ui::theme::Theme;

/// EMA weights of the smoothing levels (0: off).
pub const SMOOTHING: [f64; 4] = [0.0, 0.6, 0.9, 0.98];

#[derive(Debug, Clone, Default)]
pub struct LossPane {
    /// Runs shown, the selected run first.
    pub shown: Vec<String>,
    pub histories: BTreeMap<String, RunHistory>,
    pub log_scale: bool,
    pub smoothing: usize,
    /// Show only the recent window (full resolution).
    pub zoom: bool,
}

impl LossPane {
    /// The runs to show changed: drop the histories of the others (the tailer re-reads them if they come back).
    pub fn set_shown(&mut self, shown: Vec<String>) {
        self.histories.retain(|k, _| shown.contains(k));
        self.shown = shown;
    }

    pub fn push_events(&mut self, run: &str, events: &[Event], reset: bool) {
        if !self.shown.iter().any(|s| s == run) {
            return;
        }
        let h = self.histories.entry(run.to_owned()).or_default();
        if reset {
            *h = RunHistory::default();
        }
        for e in events {
            h.push_event(e);
        }
    }

    pub fn update(&mut self, action: &Action, out: &mut Out) {
        match action {
            Action::ToggleLogScale => self.log_scale = !self.log_scale,
            Action::CycleSmoothing => {
                self.smoothing = (self.smoothing + 1) % SMOOTHING.len();
                out.say(format!("smoothing {}", SMOOTHING[self.smoothing]));
            }
            Action::ToggleZoom => self.zoom = !self.zoom,
            _ => {}
        }
    }
}

/// Exponential moving average (TensorBoard-style, debiased).
pub fn smooth(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    if weight <= 0.0 {
        return points.to_vec();
    }
    let mut acc = 0.0;
    let mut out = Vec::with_capacity(points.len());
    for (i, &(x, y)) in points.iter().enumerate() {
        acc = acc * weight + (1.0 - weight) * y;
        let debias = 1.0 - weight.powi(i as i32 + 1);
        out.push((x, acc / debias));
    }
    out
}

fn transform(points: Vec<(f64, f64)>, log: bool) -> Vec<(f64, f64)> {
    if log {
        points.into_iter().filter(|p| p.1 > 0.0).map(|(x, y)| (x, y.log10())).collect()
    } else {
        points
    }
}

/// A curve to draw: legend name, points, style.
type Curve = (String, Vec<(f64, f64)>, Style);

pub fn render(pane: &LossPane, theme: &Theme, frame: &mut Frame, area: Rect) {
    let mut title = String::from(" Loss");
    if pane.log_scale {
        title.push_str(" [log]");
    }
    if pane.smoothing > 0 {
        title.push_str(&format!(" [ema {}]", SMOOTHING[pane.smoothing]));
    }
    if pane.zoom {
        title.push_str(" [recent]");
    }
    title.push(' ');
    let outer = block(title, theme, area);
    let Some(first) = pane.shown.first() else {
        message(frame, area, outer, vec![Line::styled("Select a run in the Runs pane (1).", theme.dim())]);
        return;
    };
    let has_points = pane.histories.values().any(|h| !h.train.full.is_empty() || !h.val.full.is_empty());
    if !has_points {
        message(frame, area, outer, vec![Line::styled(format!("{first}: no loss logged yet"), theme.dim())]);
        return;
    }
    let inner = outer.inner(area);
    frame.render_widget(outer, area);
    let info_h = if inner.height >= 12 { 2 } else { 1 };
    let [chart_area, info_area] = Layout::vertical([Constraint::Min(1), Constraint::Length(info_h)]).areas(inner);

    // Series data (owned here, borrowed by the datasets).
    let weight = SMOOTHING[pane.smoothing];
    let mut series: Vec<Curve> = Vec::new();
    for (i, name) in pane.shown.iter().enumerate() {
        let Some(h) = pane.histories.get(name) else { continue };
        let color = theme.series(i);
        let label = if pane.shown.len() > 1 { name.clone() } else { "train".into() };
        series.push((label, transform(smooth(&h.train.points(pane.zoom), weight), pane.log_scale), color.into()));
        let val = transform(h.val.points(pane.zoom), pane.log_scale);
        if !val.is_empty() {
            let style = Style::default().fg(color).add_modifier(Modifier::BOLD);
            series.push((if pane.shown.len() > 1 { format!("{name} val") } else { "val".into() }, val, style));
        }
    }
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (_, pts, _) in &series {
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1.0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let (y0, y1) = (y0 - pad, y1 + pad);
    let ylab = |v: f64| if pane.log_scale { fmt_num(Some(10f64.powf(v))) } else { fmt_num(Some(v)) };
    let datasets: Vec<Dataset> = series
        .iter()
        .enumerate()
        .map(|(i, (name, pts, style))| {
            let is_val = name.ends_with("val");
            Dataset::default()
                .name(name.clone())
                .marker(if is_val { Marker::Dot } else { Marker::Braille })
                .graph_type(if is_val || i > 0 && pts.len() < 2 { GraphType::Scatter } else { GraphType::Line })
                .style(*style)
                .data(pts)
        })
        .collect();
    let small = chart_area.height < 8 || chart_area.width < 40;
    let mut chart = Chart::new(datasets)
        .x_axis(
            Axis::default()
                .bounds([x0, x1])
                .labels(if small { vec![] } else { vec![Span::raw(format!("{x0:.0}")), Span::raw(format!("{x1:.0}"))] })
                .style(theme.dim()),
        )
        .y_axis(
            Axis::default()
                .bounds([y0, y1])
                .labels(if small { vec![] } else { vec![Span::raw(ylab(y0)), Span::raw(ylab(y1))] })
                .style(theme.dim()),
        );
    if small {
        chart = chart.legend_position(None);
    }
    frame.render_widget(chart, chart_area);

    // Numbers of the selected run: step, loss, val, lr, throughput (+ a throughput sparkline when there is room).
    let mut lines = Vec::new();
    if let Some(h) = pane.histories.get(first) {
        let mut spans = Vec::new();
        spans.extend(kv("step", h.train.last().map_or("-".into(), |(s, _)| s.to_string()), theme));
        spans.extend(kv("loss", fmt_num(h.train.last().map(|p| p.1)), theme));
        spans.extend(kv("val", fmt_num(h.val.last().map(|p| p.1)), theme));
        spans.extend(kv("lr", fmt_num(h.lr.last().map(|p| p.1)), theme));
        spans.extend(kv("it/s", fmt_num(h.throughput.last().map(|p| p.1)), theme));
        lines.push(Line::from(spans));
        if info_h > 1 {
            let pts = h.throughput.recent.points();
            let width = info_area.width.saturating_sub(12) as usize;
            let tail: Vec<usize> = pts.iter().rev().take(width).rev().map(|p| p.1.max(0.0).round() as usize).collect();
            let max = tail.iter().copied().max().unwrap_or(0);
            lines.push(Line::from(vec![Span::styled("throughput ", theme.dim()), Span::raw(spark(&tail, max))]));
        }
    }
    frame.render_widget(Paragraph::new(lines), info_area);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoothing_is_debiased() {
        let s = smooth(&[(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)], 0.9);
        assert!(s.iter().all(|p| (p.1 - 1.0).abs() < 1e-12), "{s:?}");
        assert_eq!(smooth(&[(0.0, 2.0)], 0.0), vec![(0.0, 2.0)]);
    }
}
