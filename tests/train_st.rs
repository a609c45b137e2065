//! ST training through the real binary: a detached run killed with `kill -9` resumes from its last checkpoint
//! with the same step count and no jump in the loss; bad configs and diverging training fail clearly.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use vcell::data::h5ad::H5adWriter;
use vcell::data::synth::{SynthConfig, SynthDataset};
use vcell::jobs::events::read_all;
use vcell::jobs::{Event, EventKind, JobState, RunDir, Status};

struct Ws {
    tmp: tempfile::TempDir,
}

impl Ws {
    /// A small synthetic dataset, a data config with a held-out cell type, and an ST config.
    fn new(st_toml: &str) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = SynthConfig {
            n_genes: 120,
            n_perts: 6,
            n_cell_types: 2,
            cells_per_pert: 24,
            ctrl_per_cell_type: 48,
            de_genes_per_pert: 12,
            ..SynthConfig::default()
        };
        let data = SynthDataset::new(cfg).unwrap();
        let mut w = H5adWriter::create(&tmp.path().join("synth.h5ad"), &data.var()).unwrap();
        w.append_rows(&data.generate_rows(0, data.n_cells())).unwrap();
        w.finish(&data.obs(), &[]).unwrap();
        std::fs::write(
            tmp.path().join("data.toml"),
            "[datasets]\nsynth = \"synth.h5ad\"\n[training]\nsynth = \"train\"\n[zeroshot]\n\"synth.celltype_1\" = \"test\"\n",
        )
        .unwrap();
        std::fs::write(tmp.path().join("st.toml"), st_toml).unwrap();
        Ws { tmp }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn vcell(&self, args: &[&str]) -> Output {
        support::run_vcell(self.tmp.path(), &self.path("runs"), args)
    }

    fn run_dir(&self, name: &str) -> RunDir {
        RunDir::new(self.path("runs").join(name))
    }

    fn status(&self, name: &str) -> Option<Status> {
        Status::read(&self.run_dir(name)).ok().flatten()
    }

    fn events(&self, name: &str) -> Vec<Event> {
        read_all(&self.run_dir(name).events_jsonl()).unwrap()
    }

    fn wait_for(&self, what: &str, mut done: impl FnMut() -> bool) {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(240), "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn train_losses(events: &[Event]) -> Vec<(u64, f64)> {
    events.iter().filter(|e| e.kind == EventKind::Train).map(|e| (e.step, e.loss.unwrap())).collect()
}

// Batches of 8 sets of 64 cells keep the job running long enough (tens of ms a step) that the test catches it mid-run.
const STEPS: u64 = 60;
const ST: &str = "max_steps = 60\ncheckpoint_every = 10\nval_every = 10\nbatch_size = 8\ncell_set_len = 64\n\
                  hidden_dim = 16\nn_layers = 1\nn_heads = 2\nhead_dim = 8\nffn_dim = 32\nn_encoder_layers = 1\n";

#[test]
fn kill_9_then_resume_continues_exactly() {
    let ws = Ws::new(ST);
    let out = ws.vcell(&[
        "runs",
        "start",
        "--name",
        "st",
        "--",
        "train",
        "st",
        "--data-config",
        "data.toml",
        "--config",
        "st.toml",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Let it pass at least two checkpoints, then kill it hard.
    ws.wait_for("a checkpoint at step >= 20", || {
        let status = ws.status("st");
        if let Some(s) = &status {
            // fail fast (with the job's own output) instead of waiting out the timeout
            assert!(
                s.state != JobState::Failed,
                "the job failed: {:?}\n{}",
                s.message,
                std::fs::read_to_string(ws.run_dir("st").stdout_log()).unwrap_or_default()
            );
        }
        status.and_then(|s| s.last_checkpoint).unwrap_or(0) >= 20
    });
    let pid = ws.status("st").unwrap().process().unwrap();
    let killed = Command::new("kill").args(["-9", &pid.pid.to_string()]).status().unwrap();
    assert!(killed.success());
    ws.wait_for("the killed job to be seen as lost", || {
        let out = ws.vcell(&["runs", "list"]);
        text(&out.stdout).lines().any(|l| l.starts_with("st") && l.contains("lost"))
    });
    let before = train_losses(&ws.events("st"));
    // `latest` is what resume reads (status.json may lag it if the kill landed between the two writes).
    let ckpt = vcell::jobs::runtime::latest_checkpoint(&ws.run_dir("st")).unwrap().unwrap().step;

    let out = ws.vcell(&["runs", "resume", "st"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    ws.wait_for("the resumed job to finish", || {
        ws.status("st").is_some_and(|s| matches!(s.state, JobState::Finished | JobState::Failed))
    });
    let status = ws.status("st").unwrap();
    assert_eq!(status.state, JobState::Finished, "{:?}", status.message);
    assert_eq!(status.step, STEPS);

    let all = train_losses(&ws.events("st"));
    let after = &all[before.len()..];
    assert_eq!(after.first().unwrap().0, ckpt + 1, "resumed at the checkpoint's step");
    assert_eq!(after.last().unwrap().0, STEPS);
    // Steps run both before the kill and after the resume give the same loss: the resume is exact
    // (same weights, optimiser moments, data order and dropout masks), so the curve has no jump.
    let mut compared = 0;
    for (step, loss) in after {
        if let Some((_, old)) = before.iter().find(|(s, _)| s == step) {
            assert!((loss - old).abs() <= 1e-5 * old.abs().max(1.0), "step {step}: {loss} vs {old} before the kill");
            compared += 1;
        }
    }
    assert!(compared > 0 || before.last().unwrap().0 == ckpt, "some steps ran twice or the kill hit a checkpoint");
    // Validation loss fell on the held-out cell type.
    let val: Vec<f64> = ws.events("st").iter().filter(|e| e.kind == EventKind::Val).map(|e| e.loss.unwrap()).collect();
    assert!(val.last().unwrap() < &val[0], "val loss should fall: {val:?}");
}

#[test]
fn bad_config_and_divergence_fail_clearly() {
    let ws = Ws::new("max_steps = 5\nlearning_rate = 0.1\n");
    let out = ws.vcell(&[
        "train",
        "st",
        "--data-config",
        "data.toml",
        "--config",
        "st.toml",
        "--run-dir",
        "runs/bad",
        "--quiet",
    ]);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("learning_rate") && err.contains("st.toml"), "{err}");

    // An absurd learning rate makes the loss non-finite: the job fails with a clear message and keeps the last
    // good checkpoint.
    std::fs::write(
        ws.path("st.toml"),
        format!("{ST}lr = 1e12\nwarmup_steps = 0\nmax_grad_norm = 1e30\nschedule = \"constant\"\n")
            .replace("max_steps = 60", "max_steps = 400"),
    )
    .unwrap();
    let out = ws.vcell(&[
        "train",
        "st",
        "--data-config",
        "data.toml",
        "--config",
        "st.toml",
        "--run-dir",
        "runs/nan",
        "--quiet",
    ]);
    assert!(!out.status.success(), "diverging training must fail");
    let err = text(&out.stderr);
    assert!(err.contains("training diverged") && err.contains("last checkpoint is kept"), "{err}");
    let status = ws.status("nan").unwrap();
    assert_eq!(status.state, JobState::Failed);
    if let Some(step) = status.last_checkpoint {
        assert!(ws.run_dir("nan").checkpoint_stem(step).with_extension("ckpt").join("model.safetensors").exists());
    }

    // Unknown data config entries are named.
    let out = ws.vcell(&["train", "st", "--data-config", "missing.toml", "--run-dir", "runs/x", "--quiet"]);
    assert!(text(&out.stderr).contains("missing.toml"));
}

/// `--precision bf16` reaches the model (recorded in the checkpoint's model and training configs), trains to a
/// finite loss, and a resume can switch back to f32 (the weights are f32 either way).
#[test]
fn bf16_precision_is_recorded_and_switchable_on_resume() {
    let ws = Ws::new(&ST.replace("checkpoint_every = 10", "checkpoint_every = 3"));
    let train = |extra: &[&str]| {
        let mut args =
            vec!["train", "st", "--data-config", "data.toml", "--config", "st.toml", "--run-dir", "runs/bf", "--quiet"];
        args.extend_from_slice(extra);
        let out = ws.vcell(&args);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    let ckpt_json = |name: &str| -> serde_json::Value {
        let step = ws.status("bf").unwrap().last_checkpoint.unwrap();
        let dir = ws.run_dir("bf").checkpoint_stem(step).with_extension("ckpt");
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
    };
    train(&["--precision", "bf16", "--max-steps", "4"]);
    assert_eq!(ckpt_json("config.json")["precision"], "bf16");
    assert_eq!(ckpt_json("train.json")["precision"], "bf16");
    let losses = train_losses(&ws.events("bf"));
    assert_eq!(losses.len(), 4);
    assert!(losses.iter().all(|(_, l)| l.is_finite() && *l > 0.0), "{losses:?}");

    train(&["--resume", "--precision", "f32", "--max-steps", "6"]);
    assert_eq!(ws.status("bf").unwrap().step, 6);
    assert!(ckpt_json("config.json").get("precision").is_none(), "f32 is the default and is not written");
    assert_eq!(ckpt_json("train.json")["precision"], "f32");

    let out = ws.vcell(&["train", "st", "--data-config", "data.toml", "--run-dir", "runs/x", "--precision", "fp16"]);
    assert!(!out.status.success() && text(&out.stderr).contains("fp16"), "{}", text(&out.stderr));
}
