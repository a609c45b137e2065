//! Background work, gitui `AsyncSingleJob` style: a pane asks for something (load an eval folder, summarise an
//! `.h5ad`, the distribution of a gene) through a [`Ticket`]; the result comes back as an `Action::Loaded` carrying
//! the ticket's id, and only the latest request's result is kept (a newer request cancels the older one).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// One request: its id and a cancel flag the worker checks between chunks.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub id: u64,
    pub cancel: Arc<AtomicBool>,
}

impl Ticket {
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// The latest request of one kind.
#[derive(Debug, Default)]
pub struct Latest {
    id: u64,
    cancel: Arc<AtomicBool>,
    pending: bool,
}

impl Latest {
    /// A new request: the previous one (if still running) is cancelled and its result will be dropped.
    pub fn start(&mut self) -> Ticket {
        self.cancel.store(true, Ordering::Relaxed);
        self.id += 1;
        self.cancel = Arc::new(AtomicBool::new(false));
        self.pending = true;
        Ticket { id: self.id, cancel: self.cancel.clone() }
    }

    /// Whether a result for `id` answers the latest request (and should be kept).
    pub fn is_current(&self, id: u64) -> bool {
        id == self.id
    }

    /// Accept the final result for `id`: true if it is the latest (no longer pending then).
    pub fn finish(&mut self, id: u64) -> bool {
        if id == self.id {
            self.pending = false;
            true
        } else {
            false
        }
    }

    pub fn pending(&self) -> bool {
        self.pending
    }

    /// Cancel the request in flight (its result will be dropped); nothing is pending afterwards.
    pub fn cancel(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.id += 1;
        self.pending = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_latest_result_is_kept() {
        let mut l = Latest::default();
        let a = l.start();
        let b = l.start();
        assert!(a.cancelled() && !b.cancelled());
        assert!(l.pending());
        assert!(!l.finish(a.id));
        assert!(l.pending());
        assert!(l.finish(b.id));
        assert!(!l.pending());
        let c = l.start();
        l.cancel();
        assert!(c.cancelled() && !l.pending() && !l.finish(c.id), "a cancelled request's result is dropped");
    }
}
