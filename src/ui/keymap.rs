//! Keys → [`Action`]s. The defaults can be overridden by a TOML file:
//!
//! ```toml
//! [keys]
//! "q" = "quit"
//! "ctrl-c" = "quit"
//! "f1" = "help"
//! "1" = { go_pane = "runs" }
//! "x" = "none"        # unbind
//! ```
//! Key names: a character, or `enter esc tab backtab backspace up down left right pageup pagedown home end
//! delete space f1`…`f12`, with optional `ctrl-`/`alt-`/`shift-` prefixes.
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde::Deserialize;

use super::action::{Action, PaneId};

/// A key with modifiers, as matched by the keymap (SHIFT is dropped for characters: `G` is `G`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub code: KeyCodeName,
    pub ctrl: bool,
    pub alt: bool,
    pub shift: bool,
}

/// The subset of key codes the keymap knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyCodeName {
    Char(char),
    F(u8),
    Enter,
    Esc,
    Tab,
    BackTab,
    Backspace,
    Up,
    Down,
    Left,
    Right,
    PageUp,
    PageDown,
    Home,
    End,
    Delete,
}

#[derive(Debug, thiserror::Error)]
pub enum KeymapError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("keymap: invalid TOML: {0}")]
    Toml(String),
    #[error("keymap: unknown key {key:?} (use a character or one of enter, esc, tab, backtab, backspace, up, down, left, right, pageup, pagedown, home, end, delete, space, f1..f12, with ctrl-/alt-/shift- prefixes)")]
    BadKey { key: String },
    #[error("keymap: key {key:?}: unknown action ({message})")]
    BadAction { key: String, message: String },
}

impl Key {
    pub fn plain(code: KeyCodeName) -> Self {
        Key { code, ctrl: false, alt: false, shift: false }
    }

    pub fn from_event(ev: &KeyEvent) -> Option<Key> {
        let code = match ev.code {
            KeyCode::Char(c) => KeyCodeName::Char(c),
            KeyCode::F(n) => KeyCodeName::F(n),
            KeyCode::Enter => KeyCodeName::Enter,
            KeyCode::Esc => KeyCodeName::Esc,
            KeyCode::Tab => KeyCodeName::Tab,
            KeyCode::BackTab => KeyCodeName::BackTab,
            KeyCode::Backspace => KeyCodeName::Backspace,
            KeyCode::Up => KeyCodeName::Up,
            KeyCode::Down => KeyCodeName::Down,
            KeyCode::Left => KeyCodeName::Left,
            KeyCode::Right => KeyCodeName::Right,
            KeyCode::PageUp => KeyCodeName::PageUp,
            KeyCode::PageDown => KeyCodeName::PageDown,
            KeyCode::Home => KeyCodeName::Home,
            KeyCode::End => KeyCodeName::End,
            KeyCode::Delete => KeyCodeName::Delete,
            _ => return None,
        };
        let m = ev.modifiers;
        let is_char = matches!(code, KeyCodeName::Char(_));
        Some(Key {
            code,
            ctrl: m.contains(KeyModifiers::CONTROL),
            alt: m.contains(KeyModifiers::ALT),
            shift: m.contains(KeyModifiers::SHIFT) && !is_char && code != KeyCodeName::BackTab,
        })
    }

    /// Parse `ctrl-c`, `G`, `pagedown`, `f1`, `space`, `-`.
    pub fn parse(text: &str) -> Result<Key, KeymapError> {
        let bad = || KeymapError::BadKey { key: text.to_owned() };
        let mut key = Key::plain(KeyCodeName::Esc);
        let mut rest = text;
        loop {
            let lower = rest.to_ascii_lowercase();
            if rest.chars().count() > 1 && lower.starts_with("ctrl-") {
                key.ctrl = true;
                rest = &rest[5..];
            } else if rest.chars().count() > 1 && lower.starts_with("alt-") {
                key.alt = true;
                rest = &rest[4..];
            } else if rest.chars().count() > 1 && lower.starts_with("shift-") {
                key.shift = true;
                rest = &rest[6..];
            } else {
                break;
            }
        }
        let mut chars = rest.chars();
        key.code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCodeName::Char(c),
            (None, _) => return Err(bad()),
            _ => match rest.to_ascii_lowercase().as_str() {
                "enter" | "return" => KeyCodeName::Enter,
                "esc" | "escape" => KeyCodeName::Esc,
                "tab" => KeyCodeName::Tab,
                "backtab" => KeyCodeName::BackTab,
                "backspace" => KeyCodeName::Backspace,
                "up" => KeyCodeName::Up,
                "down" => KeyCodeName::Down,
                "left" => KeyCodeName::Left,
                "right" => KeyCodeName::Right,
                "pageup" => KeyCodeName::PageUp,
                "pagedown" => KeyCodeName::PageDown,
                "home" => KeyCodeName::Home,
                "end" => KeyCodeName::End,
                "delete" | "del" => KeyCodeName::Delete,
                "space" => KeyCodeName::Char(' '),
                f if f.starts_with('f') => match f[1..].parse::<u8>() {
                    Ok(n) if (1..=12).contains(&n) => KeyCodeName::F(n),
                    _ => return Err(bad()),
                },
                _ => return Err(bad()),
            },
        };
        if matches!(key.code, KeyCodeName::Char(_)) {
            key.shift = false;
        }
        if key.ctrl {
            if let KeyCodeName::Char(c) = key.code {
                key.code = KeyCodeName::Char(c.to_ascii_lowercase());
            }
        }
        Ok(key)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ctrl {
            f.write_str("ctrl-")?;
        }
        if self.alt {
            f.write_str("alt-")?;
        }
        if self.shift {
            f.write_str("shift-")?;
        }
        match self.code {
            KeyCodeName::Char(' ') => f.write_str("space"),
            KeyCodeName::Char(c) => write!(f, "{c}"),
            KeyCodeName::F(n) => write!(f, "f{n}"),
            other => write!(f, "{}", format!("{other:?}").to_ascii_lowercase()),
        }
    }
}

#[derive(Deserialize)]
struct KeymapFile {
    #[serde(default)]
    keys: BTreeMap<String, toml::Value>,
}

/// The key → action table.
#[derive(Debug, Clone)]
pub struct Keymap {
    map: BTreeMap<Key, Action>,
}

impl Default for Keymap {
    fn default() -> Self {
        use Action as A;
        use KeyCodeName as K;
        let c = |ch| Key::plain(K::Char(ch));
        let mut map = BTreeMap::new();
        let mut bind = |k: Key, a: Action| {
            map.insert(k, a);
        };
        bind(c('q'), A::Quit);
        bind(Key { ctrl: true, ..c('c') }, A::Quit);
        bind(c('?'), A::Help);
        bind(Key::plain(K::F(1)), A::Help);
        bind(c(':'), A::Palette);
        bind(Key::plain(K::Tab), A::NextPane);
        bind(Key::plain(K::BackTab), A::PrevPane);
        for (i, p) in PaneId::ALL.into_iter().enumerate() {
            bind(c(char::from(b'1' + i as u8)), A::GoPane(p));
        }
        bind(Key::plain(K::Up), A::Up);
        bind(c('k'), A::Up);
        bind(Key::plain(K::Down), A::Down);
        bind(c('j'), A::Down);
        bind(Key::plain(K::Left), A::Left);
        bind(c('h'), A::Left);
        bind(Key::plain(K::Right), A::Right);
        bind(c('l'), A::Right);
        bind(Key::plain(K::PageUp), A::PageUp);
        bind(Key::plain(K::PageDown), A::PageDown);
        bind(Key::plain(K::Home), A::Top);
        bind(c('g'), A::Top);
        bind(Key::plain(K::End), A::Bottom);
        bind(c('G'), A::Bottom);
        bind(Key::plain(K::Enter), A::Select);
        bind(Key::plain(K::Esc), A::Back);
        bind(c('s'), A::Sort);
        bind(c('S'), A::ReverseSort);
        bind(c('/'), A::Filter);
        bind(c('n'), A::NewRun);
        bind(c('x'), A::StopRun);
        bind(c('r'), A::ResumeRun);
        bind(c('d'), A::DeleteRun);
        bind(Key::plain(K::Delete), A::DeleteRun);
        bind(c(' '), A::ToggleOverlay);
        bind(c('L'), A::ToggleLogScale);
        bind(c('m'), A::CycleSmoothing);
        bind(c('z'), A::ToggleZoom);
        bind(c('a'), A::ToggleAll);
        bind(c('R'), A::Refresh);
        bind(c('e'), A::ComputeEval);
        Keymap { map }
    }
}

impl Keymap {
    pub fn get(&self, key: &Key) -> Option<&Action> {
        self.map.get(key)
    }

    pub fn action_for(&self, ev: &KeyEvent) -> Option<Action> {
        Key::from_event(ev).and_then(|k| self.get(&k).cloned())
    }

    /// The defaults with the `[keys]` of `text` applied.
    pub fn from_toml(text: &str) -> Result<Keymap, KeymapError> {
        let file: KeymapFile = toml::from_str(text).map_err(|e| KeymapError::Toml(e.to_string()))?;
        let mut keymap = Keymap::default();
        for (name, value) in file.keys {
            let key = Key::parse(&name)?;
            if value.as_str() == Some("none") {
                keymap.map.remove(&key);
                continue;
            }
            let action: Action = value
                .try_into()
                .map_err(|e: toml::de::Error| KeymapError::BadAction { key: name.clone(), message: e.to_string() })?;
            keymap.map.insert(key, action);
        }
        Ok(keymap)
    }

    pub fn load(path: &Path) -> Result<Keymap, KeymapError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| KeymapError::Io { path: path.display().to_string(), source })?;
        Keymap::from_toml(&text)
    }

    /// The keys bound to actions equal to `action` (by debug form), for the help overlay.
    pub fn keys_for(&self, action: &Action) -> Vec<String> {
        let want = format!("{action:?}");
        self.map.iter().filter(|(_, a)| format!("{a:?}") == want).map(|(k, _)| k.to_string()).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ev(code: KeyCode, m: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, m)
    }

    #[test]
    fn parses_keys() {
        assert_eq!(Key::parse("q").unwrap(), Key::plain(KeyCodeName::Char('q')));
        assert_eq!(Key::parse("G").unwrap(), Key::plain(KeyCodeName::Char('G')));
        assert_eq!(Key::parse("-").unwrap(), Key::plain(KeyCodeName::Char('-')));
        assert_eq!(Key::parse("ctrl-C").unwrap(), Key { ctrl: true, ..Key::plain(KeyCodeName::Char('c')) });
        assert_eq!(Key::parse("PageDown").unwrap(), Key::plain(KeyCodeName::PageDown));
        assert_eq!(Key::parse("f12").unwrap(), Key::plain(KeyCodeName::F(12)));
        assert_eq!(Key::parse("space").unwrap(), Key::plain(KeyCodeName::Char(' ')));
        for bad in ["", "ctrl-", "f13", "pgdn", "shift-foo"] {
            assert!(matches!(Key::parse(bad), Err(KeymapError::BadKey { .. })), "{bad}");
        }
    }

    #[test]
    fn events_match_parsed_keys() {
        let km = Keymap::default();
        assert!(matches!(km.action_for(&ev(KeyCode::Char('G'), KeyModifiers::SHIFT)), Some(Action::Bottom)));
        assert!(matches!(km.action_for(&ev(KeyCode::Char('c'), KeyModifiers::CONTROL)), Some(Action::Quit)));
        assert!(matches!(km.action_for(&ev(KeyCode::BackTab, KeyModifiers::SHIFT)), Some(Action::PrevPane)));
        assert!(matches!(
            km.action_for(&ev(KeyCode::Char('3'), KeyModifiers::NONE)),
            Some(Action::GoPane(PaneId::Eval))
        ));
    }

    #[test]
    fn toml_overrides_and_unbinds() {
        let km = Keymap::from_toml(
            r#"
            [keys]
            "Q" = "quit"
            "q" = "none"
            "ctrl-h" = "help"
            "F2" = { go_pane = "dataset" }
            "o" = { open_eval = "/tmp/out" }
            "#,
        )
        .unwrap();
        assert!(km.get(&Key::parse("q").unwrap()).is_none());
        assert!(matches!(km.get(&Key::parse("Q").unwrap()), Some(Action::Quit)));
        assert!(matches!(km.get(&Key::parse("ctrl-h").unwrap()), Some(Action::Help)));
        assert!(matches!(km.get(&Key::parse("f2").unwrap()), Some(Action::GoPane(PaneId::Dataset))));
        assert!(matches!(km.get(&Key::parse("o").unwrap()), Some(Action::OpenEval(_))));
        assert!(matches!(km.get(&Key::parse("j").unwrap()), Some(Action::Down)), "defaults kept");
    }

    #[test]
    fn bad_keymaps_give_clear_errors() {
        let e = Keymap::from_toml("[keys]\n\"ctrl-pgdn\" = \"quit\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown key \"ctrl-pgdn\""), "{e}");
        let e = Keymap::from_toml("[keys]\n\"x\" = \"explode\"\n").unwrap_err();
        assert!(e.to_string().contains("key \"x\": unknown action"), "{e}");
        let e = Keymap::from_toml("[keys\n").unwrap_err();
        assert!(e.to_string().contains("invalid TOML"), "{e}");
        let e = Keymap::from_toml("[keys]\n\"1\" = { go_pane = \"nowhere\" }\n").unwrap_err();
        assert!(matches!(e, KeymapError::BadAction { .. }), "{e}");
    }
}
