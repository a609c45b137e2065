//! Progress reporting and cancellation for long library work.
//!
//! The lower layers never print: they call a [`Progress`] that the CLI maps to an indicatif bar and the jobs layer
//! maps to event-log lines.

use std::sync::atomic::{AtomicBool, Ordering};

/// Receives progress from long-running library functions.
pub trait Progress: Sync {
    /// A new stage starts, with `total` units of work (0 when unknown).
    fn stage(&self, name: &str, total: u64);
    /// `n` more units of the current stage are done.
    fn advance(&self, n: u64);
    /// True when the caller asked to stop; long loops check it between units of work.
    fn cancelled(&self) -> bool {
        false
    }
}

/// A progress sink that ignores everything.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _name: &str, _total: u64) {}
    fn advance(&self, _n: u64) {}
}

/// A cancel flag that can be shared with a signal handler.
#[derive(Default)]
pub struct CancelFlag(AtomicBool);

impl CancelFlag {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst)
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}
