//! indicatif progress bars behind the library's `Progress` trait.
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::progress::Progress;

/// Draws one bar per stage on stderr (hidden when stderr is not a terminal, so logs stay clean).
///
/// With `VCELL_TIMINGS=1` in the environment it also prints each stage's wall time to stderr when the stage ends
/// (for benchmarks: where the time goes, without a profiler).
pub struct BarProgress {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
    timings: Option<Mutex<Option<(String, Instant)>>>,
}

impl BarProgress {
    pub fn new(quiet: bool) -> Self {
        let timings = std::env::var_os("VCELL_TIMINGS").filter(|v| v != "0").map(|_| Mutex::new(None));
        BarProgress { bar: Mutex::new(None), quiet, timings }
    }

    pub fn finish(&self) {
        if let Ok(mut guard) = self.bar.lock() {
            if let Some(bar) = guard.take() {
                bar.finish_and_clear();
            }
        }
        self.end_timed_stage(None);
    }

    /// Print the running stage's time and start timing `next`.
    fn end_timed_stage(&self, next: Option<&str>) {
        let Some(Ok(mut current)) = self.timings.as_ref().map(|t| t.lock()) else { return };
        if let Some((name, start)) = current.take() {
            eprintln!("[timing] {:>8.3}s  {name}", start.elapsed().as_secs_f64());
        }
        *current = next.map(|n| (n.to_owned(), Instant::now()));
    }
}

impl Progress for BarProgress {
    fn stage(&self, name: &str, total: u64) {
        self.end_timed_stage(Some(name));
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
