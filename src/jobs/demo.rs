//! The reference job (`vcell runs __demo-job`): a fake training loop that uses [`JobContext`] exactly as the real
//! training loop will, so that the job protocol (detach, stop, resume, lost, tail) is tested end to end without a
//! model. The loss is a deterministic function of the step, so a resumed run writes the same numbers.
use std::path::PathBuf;
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::events::{Event, EventKind};
use super::run_dir::write_atomic;
use super::runtime::JobContext;
use super::JobError;

#[derive(Debug, Clone)]
pub struct DemoJob {
    pub run_dir: PathBuf,
    pub steps: u64,
    pub step_ms: u64,
    /// Checkpoint every K steps (0: only at the end and on stop).
    pub checkpoint_every: u64,
    pub resume: bool,
}

/// What the demo writes as `checkpoints/step-N.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DemoCheckpoint {
    pub step: u64,
    pub loss: f64,
}

/// The loss after `step` steps: decreasing, with deterministic wiggle.
pub fn demo_loss(step: u64) -> f64 {
    let wiggle = (step.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
    2.0 / (1.0 + 0.05 * step as f64) + 0.01 * wiggle
}

/// The learning rate after `step` steps (cosine-free, simple decay; for the formatted view).
fn demo_lr(step: u64) -> f64 {
    1e-3 / (1.0 + 0.01 * step as f64)
}

/// How the demo ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoOutcome {
    Finished,
    Stopped,
}

impl DemoJob {
    /// Open the run, loop, and record the end state (`finished`, `stopped`, or `failed` with the error).
    pub fn run(&self) -> Result<DemoOutcome, JobError> {
        let mut ctx = JobContext::open(&self.run_dir, Some(self.steps), self.resume)?;
        match self.train(&mut ctx) {
            Ok(DemoOutcome::Finished) => ctx.finish().map(|()| DemoOutcome::Finished),
            Ok(DemoOutcome::Stopped) => ctx.stopped().map(|()| DemoOutcome::Stopped),
            Err(e) => {
                let _ = ctx.fail(e.to_string());
                Err(e)
            }
        }
    }

    fn train(&self, ctx: &mut JobContext) -> Result<DemoOutcome, JobError> {
        let mut step = ctx.start_step();
        if let Some(ckpt) = ctx.resumed_from() {
            let path = ckpt.file("json");
            let text = std::fs::read_to_string(&path).map_err(|e| JobError::io(&path, e))?;
            let state: DemoCheckpoint =
                serde_json::from_str(&text).map_err(|source| JobError::Json { path: path.clone(), source })?;
            if state.step != step {
                let message = format!("checkpoint says step {}, latest says {step}", state.step);
                return Err(JobError::Corrupt { path, message });
            }
            ctx.log(format!("resumed from step {step}"))?;
        }
        let throughput = 1000.0 / self.step_ms.max(1) as f64;
        while step < self.steps {
            if ctx.stop_requested()? {
                self.checkpoint(ctx, step)?;
                return Ok(DemoOutcome::Stopped);
            }
            thread::sleep(Duration::from_millis(self.step_ms));
            step += 1;
            ctx.record(
                Event::new(EventKind::Train, step)
                    .with_loss(demo_loss(step))
                    .with("lr", demo_lr(step))
                    .with("throughput", throughput),
            )?;
            if self.checkpoint_every > 0 && step.is_multiple_of(self.checkpoint_every) {
                self.checkpoint(ctx, step)?;
            }
        }
        if ctx.latest_checkpoint()?.map(|c| c.step) != Some(step) {
            self.checkpoint(ctx, step)?;
        }
        Ok(DemoOutcome::Finished)
    }

    fn checkpoint(&self, ctx: &mut JobContext, step: u64) -> Result<(), JobError> {
        let path = ctx.checkpoint_stem(step).with_extension("json");
        let state = DemoCheckpoint { step, loss: demo_loss(step) };
        let bytes = serde_json::to_vec(&state).map_err(|source| JobError::Json { path: path.clone(), source })?;
        write_atomic(&path, &bytes)?;
        ctx.commit_checkpoint(step)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::jobs::events::read_all;
    use crate::jobs::run_dir::RunDir;
    use crate::jobs::status::{JobState, Status};

    #[test]
    fn demo_runs_and_resumes_in_process() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("demo");
        let job = DemoJob { run_dir: run_dir.clone(), steps: 6, step_ms: 0, checkpoint_every: 4, resume: false };
        assert_eq!(job.run().unwrap(), DemoOutcome::Finished);
        let dir = RunDir::new(&run_dir);
        let status = Status::read(&dir).unwrap().unwrap();
        assert_eq!((status.state, status.step, status.last_checkpoint), (JobState::Finished, 6, Some(6)));
        let steps: Vec<u64> = read_all(&dir.events_jsonl())
            .unwrap()
            .iter()
            .filter(|e| e.kind == EventKind::Train)
            .map(|e| e.step)
            .collect();
        assert_eq!(steps, (1..=6).collect::<Vec<_>>());
        assert!(dir.checkpoint_stem(4).with_extension("json").exists());
        // Resume of a finished demo: latest is step 6, nothing left to do.
        let again = DemoJob { resume: true, ..job };
        assert_eq!(again.run().unwrap(), DemoOutcome::Finished);
        assert_eq!(Status::read(&dir).unwrap().unwrap().step, 6);
    }

    #[test]
    fn loss_is_deterministic_and_decreasing_on_average() {
        assert_eq!(demo_loss(10), demo_loss(10));
        assert!(demo_loss(100) < demo_loss(1));
    }
}
