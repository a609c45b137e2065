//! Bounded loss histories (burn-train `renderer/tui/full_history.rs` + `recent_history.rs` style): a decimating
//! history of the whole run that keeps the min/max shape in a fixed number of buckets, and a sliding window of the
//! most recent steps at full resolution. Memory is bounded however long the run.
use std::collections::VecDeque;

/// Buckets kept by a [`FullHistory`] by default (each holds min, max and last of `stride` steps).
pub const DEFAULT_BUCKETS: usize = 1024;
/// Steps kept at full resolution by a [`RecentHistory`] by default.
pub const DEFAULT_RECENT_STEPS: u64 = 2000;

#[derive(Debug, Clone, Copy, PartialEq)]
struct Bucket {
    /// First step this bucket covers (a multiple of the stride).
    start: u64,
    min: (u64, f64),
    max: (u64, f64),
    last: (u64, f64),
}

impl Bucket {
    fn new(start: u64, step: u64, value: f64) -> Self {
        Bucket { start, min: (step, value), max: (step, value), last: (step, value) }
    }
    fn add(&mut self, step: u64, value: f64) {
        if value < self.min.1 {
            self.min = (step, value);
        }
        if value > self.max.1 {
            self.max = (step, value);
        }
        if step >= self.last.0 {
            self.last = (step, value);
        }
    }
    fn merge(&mut self, other: &Bucket) {
        self.add(other.min.0, other.min.1);
        self.add(other.max.0, other.max.1);
        self.add(other.last.0, other.last.1);
    }
}

/// The whole history of one series in at most `capacity` buckets: when full, neighbouring buckets merge and the
/// stride (steps per bucket) doubles. Each bucket keeps its min and max, so spikes survive decimation.
#[derive(Debug, Clone)]
pub struct FullHistory {
    buckets: Vec<Bucket>,
    capacity: usize,
    stride: u64,
    pushes: u64,
}

impl Default for FullHistory {
    fn default() -> Self {
        FullHistory::new(DEFAULT_BUCKETS)
    }
}

impl FullHistory {
    /// `capacity` is rounded up to at least 4 buckets.
    pub fn new(capacity: usize) -> Self {
        FullHistory { buckets: Vec::new(), capacity: capacity.max(4), stride: 1, pushes: 0 }
    }

    /// Add a value. Non-finite values are ignored. A step lower than the newest one (a resumed run replays the
    /// steps since its checkpoint) drops the buckets after it first.
    pub fn push(&mut self, step: u64, value: f64) {
        if !value.is_finite() {
            return;
        }
        self.pushes += 1;
        let start = step - step % self.stride;
        while self.buckets.last().is_some_and(|b| b.start > start) {
            self.buckets.pop();
        }
        match self.buckets.last_mut() {
            Some(b) if b.start == start => b.add(step, value),
            _ => self.buckets.push(Bucket::new(start, step, value)),
        }
        if self.buckets.len() > self.capacity {
            self.decimate();
        }
    }

    fn decimate(&mut self) {
        self.stride = self.stride.saturating_mul(2);
        let mut merged: Vec<Bucket> = Vec::with_capacity(self.capacity);
        for b in &self.buckets {
            let start = b.start - b.start % self.stride;
            match merged.last_mut() {
                Some(m) if m.start == start => m.merge(b),
                _ => merged.push(Bucket { start, ..*b }),
            }
        }
        self.buckets = merged;
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
    /// Steps per bucket.
    pub fn stride(&self) -> u64 {
        self.stride
    }
    /// Values pushed so far.
    pub fn pushes(&self) -> u64 {
        self.pushes
    }
    pub fn last(&self) -> Option<(u64, f64)> {
        self.buckets.last().map(|b| b.last)
    }
    /// (min, max) over everything pushed (that was not replaced by a resume).
    pub fn range(&self) -> Option<(f64, f64)> {
        self.buckets.iter().fold(None, |acc, b| match acc {
            None => Some((b.min.1, b.max.1)),
            Some((lo, hi)) => Some((f64::min(lo, b.min.1), f64::max(hi, b.max.1))),
        })
    }

    /// Points to plot, in step order: each bucket's min and max (one point when they coincide).
    pub fn points(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::with_capacity(self.buckets.len() * 2);
        for b in &self.buckets {
            let (a, c) = if b.min.0 <= b.max.0 { (b.min, b.max) } else { (b.max, b.min) };
            out.push((a.0 as f64, a.1));
            if c.0 != a.0 {
                out.push((c.0 as f64, c.1));
            }
        }
        out
    }
}

/// The last `window` steps at full resolution (at most `max_points` points).
#[derive(Debug, Clone)]
pub struct RecentHistory {
    points: VecDeque<(u64, f64)>,
    window: u64,
    max_points: usize,
}

impl Default for RecentHistory {
    fn default() -> Self {
        RecentHistory::new(DEFAULT_RECENT_STEPS, DEFAULT_RECENT_STEPS as usize)
    }
}

impl RecentHistory {
    pub fn new(window: u64, max_points: usize) -> Self {
        RecentHistory { points: VecDeque::new(), window: window.max(1), max_points: max_points.max(1) }
    }

    pub fn push(&mut self, step: u64, value: f64) {
        if !value.is_finite() {
            return;
        }
        while self.points.back().is_some_and(|p| p.0 >= step) {
            self.points.pop_back();
        }
        self.points.push_back((step, value));
        while self.points.front().is_some_and(|p| p.0 + self.window <= step) || self.points.len() > self.max_points {
            self.points.pop_front();
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
    pub fn points(&self) -> Vec<(f64, f64)> {
        self.points.iter().map(|&(s, v)| (s as f64, v)).collect()
    }
}

/// One series: full (decimated) plus recent (exact).
#[derive(Debug, Clone, Default)]
pub struct Series {
    pub full: FullHistory,
    pub recent: RecentHistory,
}

impl Series {
    pub fn push(&mut self, step: u64, value: f64) {
        self.full.push(step, value);
        self.recent.push(step, value);
    }
    pub fn last(&self) -> Option<(u64, f64)> {
        self.full.last()
    }
    pub fn points(&self, recent: bool) -> Vec<(f64, f64)> {
        if recent {
            self.recent.points()
        } else {
            self.full.points()
        }
    }
}

/// What the loss pane keeps per run: training and validation loss, learning rate and throughput.
#[derive(Debug, Clone, Default)]
pub struct RunHistory {
    pub train: Series,
    pub val: Series,
    pub lr: Series,
    pub throughput: Series,
    pub events: u64,
}

impl RunHistory {
    pub fn push_event(&mut self, event: &crate::jobs::Event) {
        use crate::jobs::EventKind;
        self.events += 1;
        match event.kind {
            EventKind::Train => {
                if let Some(loss) = event.loss {
                    self.train.push(event.step, loss);
                }
                if let Some(lr) = event.number("lr") {
                    self.lr.push(event.step, lr);
                }
                if let Some(t) = event.number("throughput") {
                    self.throughput.push(event.step, t);
                }
            }
            EventKind::Val => {
                if let Some(loss) = event.loss {
                    self.val.push(event.step, loss);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn memory_is_bounded_after_a_million_pushes() {
        let mut h = FullHistory::new(1024);
        let mut r = RecentHistory::new(2000, 2000);
        for step in 1..=1_000_000u64 {
            let v = 1.0 / step as f64;
            h.push(step, v);
            r.push(step, v);
        }
        assert!(h.len() <= 1024, "{}", h.len());
        assert!(h.len() >= 256, "decimation must not throw away too much: {}", h.len());
        assert!(h.points().len() <= 2048);
        assert_eq!(h.pushes(), 1_000_000);
        assert_eq!(h.last(), Some((1_000_000, 1e-6)));
        assert!(r.len() <= 2000);
        assert_eq!(r.points().last().unwrap().0, 1_000_000.0);
        assert_eq!(r.points().first().unwrap().0, 998_001.0);
    }

    #[test]
    fn decimation_keeps_the_min_max_shape() {
        let mut h = FullHistory::new(8);
        for step in 0..1000u64 {
            let v = match step {
                500 => 100.0,
                777 => -5.0,
                _ => (step % 7) as f64,
            };
            h.push(step, v);
        }
        assert!(h.len() <= 8);
        assert_eq!(h.range(), Some((-5.0, 100.0)));
        let pts = h.points();
        assert!(pts.contains(&(500.0, 100.0)), "{pts:?}");
        assert!(pts.contains(&(777.0, -5.0)), "{pts:?}");
        assert!(pts.windows(2).all(|w| w[0].0 <= w[1].0), "steps in order: {pts:?}");
        assert_eq!(h.last(), Some((999, (999 % 7) as f64)));
    }

    #[test]
    fn resume_replays_replace_later_points_and_nan_is_ignored() {
        let mut h = FullHistory::new(64);
        let mut r = RecentHistory::new(100, 100);
        for step in 1..=20 {
            h.push(step, step as f64);
            r.push(step, step as f64);
        }
        h.push(15, 0.5);
        r.push(15, 0.5);
        h.push(16, f64::NAN);
        assert_eq!(h.last(), Some((15, 0.5)));
        assert_eq!(r.points().last(), Some(&(15.0, 0.5)));
        assert_eq!(r.len(), 15);
    }

    #[test]
    fn run_history_reads_event_fields() {
        use crate::jobs::{Event, EventKind};
        let mut run = RunHistory::default();
        run.push_event(&Event::new(EventKind::Train, 1).with_loss(2.0).with("lr", 1e-3).with("throughput", 50.0));
        run.push_event(&Event::new(EventKind::Val, 1).with_loss(2.5));
        run.push_event(&Event::log(1, "info", "hello"));
        assert_eq!(run.train.last(), Some((1, 2.0)));
        assert_eq!(run.val.last(), Some((1, 2.5)));
        assert_eq!(run.lr.last(), Some((1, 1e-3)));
        assert_eq!(run.throughput.last(), Some((1, 50.0)));
        assert_eq!(run.events, 3);
    }
}
