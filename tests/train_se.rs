//! SE through the real binary: `vcell synth --gene-embeddings`, `vcell train se` as a job (events, checkpoints,
//! exact `--resume`), `vcell embed` (obsm shape, atomic output), and ST trained on the SE embeddings with a gene
//! decoder, through `predict` and `eval`.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::PathBuf;
use std::process::Output;

use vcell::data::gene_embeddings::GeneEmbeddings;
use vcell::data::h5ad::{read_h5ad, H5adReader};
use vcell::jobs::events::read_all;
use vcell::jobs::{Event, EventKind, JobState, RunDir, Status};

const SE: &str = "d_model = 16\nn_heads = 2\nd_hid = 16\noutput_dim = 8\ndropout = 0.1\npad_length = 24\n\
                  n_expressed = 4\nn_unexpressed = 4\nn_shared = 2\nbatch_size = 4\nmax_steps = 12\n\
                  checkpoint_every = 4\nval_every = 4\nval_cells = 16\n";

const ST: &str = "max_steps = 20\ncheckpoint_every = 10\nval_every = 10\nbatch_size = 2\ncell_set_len = 8\n\
                  hidden_dim = 16\nn_layers = 1\nn_heads = 2\nhead_dim = 8\nffn_dim = 32\nn_encoder_layers = 1\n\
                  decode_genes = true\ndecoder_hidden = [32]\n";

struct Ws {
    tmp: tempfile::TempDir,
}

impl Ws {
    fn new() -> Self {
        let ws = Ws { tmp: tempfile::tempdir().unwrap() };
        let out = ws.vcell(&[
            "synth",
            "-o",
            "s.h5ad",
            "--n-genes",
            "120",
            "--n-perts",
            "4",
            "--n-cell-types",
            "2",
            "--cells-per-pert",
            "16",
            "--ctrl-per-cell-type",
            "32",
            "--gene-embeddings",
            "g.safetensors",
            "--embedding-dim",
            "8",
            "--quiet",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        std::fs::write(ws.path("se.toml"), SE).unwrap();
        std::fs::write(ws.path("st.toml"), ST).unwrap();
        ws
    }

    fn path(&self, p: &str) -> PathBuf {
        self.tmp.path().join(p)
    }

    fn vcell(&self, args: &[&str]) -> Output {
        support::run_vcell(self.tmp.path(), &self.path("runs"), args)
    }

    fn ok(&self, args: &[&str]) -> Output {
        let out = self.vcell(args);
        assert!(out.status.success(), "vcell {args:?} failed: {}", text(&out.stderr));
        out
    }

    fn events(&self, run: &str) -> Vec<Event> {
        read_all(&RunDir::new(self.path(run)).events_jsonl()).unwrap()
    }

    fn status(&self, run: &str) -> Status {
        Status::read(&RunDir::new(self.path(run))).unwrap().unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn train_losses(events: &[Event]) -> Vec<(u64, f64)> {
    events.iter().filter(|e| e.kind == EventKind::Train).map(|e| (e.step, e.loss.unwrap())).collect()
}

fn train_se(ws: &Ws, run: &str, extra: &[&str]) {
    let mut args = vec!["train", "se", "--input", "s.h5ad", "--config", "se.toml", "--run-dir", run, "--quiet"];
    args.extend_from_slice(extra);
    ws.ok(&args);
}

#[test]
fn synth_writes_readable_gene_embeddings() {
    let ws = Ws::new();
    let genes = GeneEmbeddings::read(&ws.path("g.safetensors")).unwrap();
    let var = H5adReader::open(&ws.path("s.h5ad")).unwrap().var_names().unwrap();
    assert_eq!(genes.names(), var.as_slice());
    assert_eq!(genes.dim(), 8);
    assert!(genes.data().iter().all(|v| v.is_finite()));
    // .npy with its sidecar gene list too.
    ws.ok(&["synth", "-o", "t.h5ad", "--n-genes", "50", "--gene-embeddings", "t.npy", "--quiet"]);
    let npy = GeneEmbeddings::read(&ws.path("t.npy")).unwrap();
    assert_eq!((npy.len(), npy.dim()), (50, 32));
}

#[test]
fn se_job_resumes_exactly_and_embeds_atomically() {
    let ws = Ws::new();
    // One run of 12 steps; another of 8 steps, then --resume to 12.
    train_se(&ws, "runs/full", &["--gene-embeddings", "g.safetensors"]);
    train_se(&ws, "runs/part", &["--gene-embeddings", "g.safetensors", "--max-steps", "8"]);
    assert_eq!(ws.status("runs/part").state, JobState::Finished);
    assert_eq!(ws.status("runs/part").step, 8);
    train_se(&ws, "runs/part", &["--resume", "--max-steps", "12"]);
    let status = ws.status("runs/part");
    assert_eq!((status.state, status.step, status.last_checkpoint), (JobState::Finished, 12, Some(12)));
    let part = train_losses(&ws.events("runs/part"));
    let steps: Vec<u64> = part.iter().map(|p| p.0).collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>(), "resume continues at step 9");
    assert!(ws.events("runs/part").iter().any(|e| e.kind == EventKind::Val && e.step == 12));
    let ckpt = ws.path("runs/part/checkpoints/step-12.ckpt");
    for f in
        ["se_config.json", "model.safetensors", "optimizer.safetensors", "trainer.json", "gene_embeddings.safetensors"]
    {
        assert!(ckpt.join(f).is_file(), "{f} missing");
    }
    // (Exactness of the resumed losses is checked in `model::se_train`'s unit test from shared initial weights;
    // the two runs here start from different random weights, SE's init not being seeded.)
    assert_eq!(train_losses(&ws.events("runs/full")).len(), 12);

    // Embed: obsm[key] with one row per cell and the model's embedding width.
    let out = ws.ok(&[
        "embed",
        "--run-dir",
        "runs/part",
        "--input",
        "s.h5ad",
        "-o",
        "e.h5ad",
        "--key",
        "X_se",
        "--chunk",
        "16",
    ]);
    assert!(text(&out.stdout).contains("cells/s"), "{}", text(&out.stdout));
    let e = read_h5ad(&ws.path("e.h5ad")).unwrap();
    let s = read_h5ad(&ws.path("s.h5ad")).unwrap();
    assert_eq!(e.obs, s.obs);
    let (key, emb) = &e.obsm[0];
    assert_eq!(key, "X_se");
    // output_dim 8 + the dataset embedding (10).
    assert_eq!(emb.dim(), (s.obs.n_rows(), 18));
    assert!(emb.iter().all(|v| v.is_finite()));

    // A failed embed leaves no output (and no temporary file): genes the model does not know.
    ws.ok(&["synth", "-o", "other.h5ad", "--n-genes", "30", "--quiet"]);
    let mut other = read_h5ad(&ws.path("other.h5ad")).unwrap();
    other.var.index = (0..30).map(|i| format!("X{i}")).collect();
    vcell::data::h5ad::write_h5ad(&ws.path("other.h5ad"), &other).unwrap();
    let out = ws.vcell(&["embed", "--run-dir", "runs/part", "--input", "other.h5ad", "-o", "bad.h5ad"]);
    assert!(!out.status.success());
    assert!(!ws.path("bad.h5ad").exists());
    assert!(!std::fs::read_dir(ws.tmp.path()).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("tmp")));
    // An ST run directory is not an SE model.
    let out = ws.vcell(&["embed", "--checkpoint", "nowhere", "--input", "s.h5ad", "-o", "bad.h5ad"]);
    assert!(!out.status.success() && text(&out.stderr).contains("not an SE checkpoint"), "{}", text(&out.stderr));
}

#[test]
fn st_trains_on_se_embeddings_and_decodes_to_genes() {
    let ws = Ws::new();
    train_se(&ws, "runs/se", &["--gene-embeddings", "g.safetensors", "--max-steps", "4"]);
    ws.ok(&["embed", "--run-dir", "runs/se", "--input", "s.h5ad", "-o", "e.h5ad", "--quiet"]);
    let split = "[training]\nsynth = \"train\"\n[zeroshot]\n\"synth.celltype_1\" = \"test\"\n";
    std::fs::write(
        ws.path("emb.toml"),
        format!("[data]\nembed_key = \"X_state\"\n[datasets]\nsynth = \"e.h5ad\"\n{split}"),
    )
    .unwrap();
    ws.ok(&["train", "st", "--data-config", "emb.toml", "--config", "st.toml", "--run-dir", "runs/st", "--quiet"]);
    assert_eq!(ws.status("runs/st").step, 20);
    ws.ok(&[
        "predict",
        "--run-dir",
        "runs/st",
        "--data-config",
        "emb.toml",
        "-o",
        "pred.h5ad",
        "--real-output",
        "real.h5ad",
        "--quiet",
    ]);
    // Gene space: the decoder's 120 genes, not the 18 embedding dims.
    let pred = H5adReader::open(&ws.path("pred.h5ad")).unwrap();
    assert_eq!(pred.n_vars().unwrap(), 120);
    assert_eq!(pred.var_names().unwrap(), H5adReader::open(&ws.path("s.h5ad")).unwrap().var_names().unwrap());
    ws.ok(&["eval", "--real", "real.h5ad", "--pred", "pred.h5ad", "--profile", "vcc", "-o", "ev", "--quiet"]);
    assert!(ws.path("ev/agg_results.csv").is_file());
    // Without the expression (decode_genes on non-embedding data) the config is refused.
    std::fs::write(ws.path("expr.toml"), format!("[datasets]\nsynth = \"s.h5ad\"\n{split}")).unwrap();
    let out = ws.vcell(&[
        "train",
        "st",
        "--data-config",
        "expr.toml",
        "--config",
        "st.toml",
        "--run-dir",
        "runs/x",
        "--quiet",
    ]);
    assert!(!out.status.success() && text(&out.stderr).contains("decode_genes"), "{}", text(&out.stderr));
}
