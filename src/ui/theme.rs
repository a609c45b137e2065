//! Colours readable on dark and light terminals: only the 16 named ANSI colours (the terminal's palette decides
//! the actual shade), the default foreground/background, and modifiers. No background colour is ever set except
//! through `REVERSED`, so selections stay readable whatever the palette.
use ratatui::style::{Color, Modifier, Style};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Theme {
    pub light: bool,
}

impl Default for Theme {
    fn default() -> Self {
        Theme::dark()
    }
}

impl Theme {
    pub fn dark() -> Self {
        Theme { light: false }
    }
    pub fn light() -> Self {
        Theme { light: true }
    }

    pub fn text(&self) -> Style {
        Style::default()
    }
    pub fn dim(&self) -> Style {
        Style::default().add_modifier(Modifier::DIM)
    }
    pub fn title(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD)
    }
    pub fn header(&self) -> Style {
        Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
    }
    pub fn selected(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED)
    }
    pub fn tab_active(&self) -> Style {
        Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD)
    }
    pub fn accent(&self) -> Style {
        Style::default().fg(if self.light { Color::Blue } else { Color::Cyan })
    }
    pub fn good(&self) -> Style {
        Style::default().fg(Color::Green)
    }
    pub fn warn(&self) -> Style {
        Style::default().fg(if self.light { Color::Magenta } else { Color::Yellow })
    }
    pub fn bad(&self) -> Style {
        Style::default().fg(Color::Red)
    }
    pub fn border(&self) -> Style {
        Style::default()
    }

    /// Colours of overlaid series, in order.
    pub fn series(&self, i: usize) -> Color {
        const DARK: [Color; 6] = [Color::Cyan, Color::Yellow, Color::Magenta, Color::Green, Color::Blue, Color::Red];
        const LIGHT: [Color; 6] = [Color::Blue, Color::Red, Color::Magenta, Color::Green, Color::Cyan, Color::Black];
        if self.light {
            LIGHT[i % LIGHT.len()]
        } else {
            DARK[i % DARK.len()]
        }
    }

    /// The style of a run state word.
    pub fn state(&self, state: &str) -> Style {
        match state {
            "running" | "queued" | "stopping" => self.accent().add_modifier(Modifier::BOLD),
            "finished" => self.good(),
            "stopped" => self.warn(),
            "failed" | "lost" | "invalid" | "missing" => self.bad(),
            _ => self.text(),
        }
    }
}
