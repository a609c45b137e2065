//! One file per pane. Each pane owns its state struct, an `update` that takes `&Action`, and a pure `render`.
pub mod dataset;
pub mod de;
pub mod eval;
pub mod gene;
pub mod loss;
pub mod runs;

use ratatui::layout::Rect;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;

use super::action::{Action, InputKey};
use super::theme::Theme;

/// How a text edit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edit {
    Changed,
    Submitted,
    Cancelled,
    Ignored,
}

/// Apply a raw key to a one-line text field.
pub fn edit(text: &mut String, key: InputKey) -> Edit {
    match key {
        InputKey::Char(c) => {
            text.push(c);
            Edit::Changed
        }
        InputKey::Backspace => {
            text.pop();
            Edit::Changed
        }
        InputKey::Submit => Edit::Submitted,
        InputKey::Cancel => Edit::Cancelled,
        InputKey::Next | InputKey::Prev => Edit::Ignored,
    }
}

/// Move a selection in a list of `len` items; `page` rows per page.
pub fn move_selection(selected: usize, len: usize, action: &Action, page: usize) -> usize {
    if len == 0 {
        return 0;
    }
    let last = len - 1;
    let page = page.max(1);
    match action {
        Action::Up => selected.saturating_sub(1),
        Action::Down => (selected + 1).min(last),
        Action::PageUp => selected.saturating_sub(page),
        Action::PageDown => (selected + page).min(last),
        Action::Top => 0,
        Action::Bottom => last,
        _ => selected.min(last),
    }
}

/// The rows of a table that fit, scrolled so that `selected` is visible: the first row index to show.
pub fn scroll_offset(selected: usize, visible: usize) -> usize {
    if visible == 0 {
        return 0;
    }
    selected.saturating_sub(visible - 1)
}

/// A bordered block with a title; no border at all when the area is tiny (every row counts).
pub fn block<'a>(title: impl Into<Line<'a>>, theme: &Theme, area: Rect) -> Block<'a> {
    if area.height < 6 || area.width < 24 {
        Block::default().title(title.into().style(theme.title()))
    } else {
        Block::default().borders(Borders::ALL).border_style(theme.border()).title(title.into().style(theme.title()))
    }
}

/// A centred message (empty states, errors, loading).
pub fn message(frame: &mut Frame, area: Rect, block: Block<'_>, lines: Vec<Line<'_>>) {
    frame.render_widget(Paragraph::new(lines).block(block).wrap(Wrap { trim: true }), area);
}

/// A number in at most ~8 characters.
pub fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if v.is_nan() => "NaN".into(),
        Some(0.0) => "0".into(),
        Some(v) if v.abs() >= 1e5 || v.abs() < 1e-3 => format!("{v:.2e}"),
        Some(v) if v.abs() >= 100.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.4}"),
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn fmt_duration(secs: Option<f64>) -> String {
    let Some(s) = secs.filter(|s| s.is_finite() && *s >= 0.0) else { return "-".into() };
    let s = s.round() as u64;
    if s >= 86_400 {
        format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600)
    } else if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// `label: value` spans for a summary line.
pub fn kv<'a>(label: &'a str, value: String, theme: &Theme) -> Vec<Span<'a>> {
    vec![Span::styled(label, theme.dim()), Span::raw(" "), Span::styled(value, theme.accent()), Span::raw("  ")]
}

/// A text field line: `label text█` while editing.
pub fn input_line<'a>(label: &'a str, text: &'a str, editing: bool, theme: &Theme) -> Line<'a> {
    let mut spans = vec![Span::styled(label, theme.dim()), Span::raw(text)];
    if editing {
        spans.push(Span::styled("█", theme.accent()));
    }
    Line::from(spans)
}

/// Eight-level bars for a histogram of `counts` (one character per bin).
pub fn spark(counts: &[usize], max: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    counts.iter().map(|&c| if c == 0 || max == 0 { BARS[0] } else { BARS[(1 + (c * 7) / max).min(8)] }).collect()
}

/// Case-insensitive substring match.
pub fn matches(text: &str, filter: &str) -> bool {
    filter.is_empty() || text.to_lowercase().contains(&filter.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(fmt_num(Some(0.123456)), "0.1235");
        assert_eq!(fmt_num(Some(1234.5)), "1234.5");
        assert_eq!(fmt_num(Some(1e-5)), "1.00e-5");
        assert_eq!(fmt_duration(Some(3725.0)), "1h02m");
        assert_eq!(fmt_duration(None), "-");
        assert_eq!(spark(&[0, 1, 8], 8), " ▁█");
        assert_eq!(move_selection(0, 5, &Action::Up, 3), 0);
        assert_eq!(move_selection(4, 5, &Action::PageDown, 3), 4);
        assert_eq!(scroll_offset(10, 4), 7);
    }
}
