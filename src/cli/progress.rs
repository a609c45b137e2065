//! indicatif progress bars behind the library's `Progress` trait.
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::Progress;

/// Draws one bar per stage on stderr (hidden when stderr is not a terminal, so logs stay clean).
pub struct BarProgress {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl BarProgress {
    pub fn new(quiet: bool) -> Self {
        BarProgress { bar: Mutex::new(None), quiet }
    }

    pub fn finish(&self) {
        if let Ok(mut guard) = self.bar.lock() {
            if let Some(bar) = guard.take() {
                bar.finish_and_clear();
            }
        }
    }
}

impl Progress for BarProgress {
    fn stage(&self, name: &str, total: u64) {
        let Ok(mut guard) = self.bar.lock() else { return };
        if let Some(old) = guard.take() {
            old.finish_and_clear();
        }
        if self.quiet {
            return;
        }
        let bar = if total > 0 { ProgressBar::new(total) } else { ProgressBar::new_spinner() };
        bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(8));
        let template = if total > 0 {
            "{msg:>14} [{bar:40.cyan/blue}] {pos}/{len} ({elapsed}, eta {eta})"
        } else {
            "{msg:>14} {spinner} {pos} ({elapsed})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(name.to_owned());
        *guard = Some(bar);
    }

    fn advance(&self, n: u64) {
        if let Ok(guard) = self.bar.lock() {
            if let Some(bar) = guard.as_ref() {
                bar.inc(n);
            }
        }
    }
}

impl Drop for BarProgress {
    fn drop(&mut self) {
        self.finish();
    }
}
