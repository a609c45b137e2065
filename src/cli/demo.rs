//! `vcell demo`: the whole workflow on data the program generates itself.
//!
//! 1. a synthetic VCC-shaped dataset (`data/synth.h5ad`) with a held-out cell type and few-shot perturbations
//!    (`data/data.toml`), and an ST config (`st.toml`);
//! 2. ST trained as a job in `runs/demo-st` (events, checkpoints, resumable);
//! 3. predictions of the held-out split by ST and by the three baselines, evaluated with the VCC metrics, and
//!    the VCC score of each against the cell-mean baseline.
//!
//! In a terminal the workbench opens on the workspace while the job runs detached (it survives the TUI);
//! with `--headless` (or without a terminal) everything runs in this process with progress output.
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::train::{train_st_in_context, TrainJobArgs, TrainStArgs};
use crate::data::config::{DataConfig, Split};
use crate::data::synth::{SynthConfig, SynthDataset};
use crate::data::table::CellTable;
use crate::eval::de::DeOptions;
use crate::eval::input::InputOptions;
use crate::eval::pipeline::{run_eval, EvalOptions};
use crate::eval::profile::Profile;
use crate::eval::results_csv::read_agg;
use crate::eval::score::{score, score_csv_bytes};
use crate::jobs::{Event, EventKind, JobContext, Workspace};
use crate::model::checkpoint;
use crate::model::predict::{self, Baseline, BaselinePredictor, PairLayout};
use crate::model::train::{Ending, StTrainConfig};

/// The demo's ST configuration (written to `st.toml` so it can be edited and rerun with `vcell train st`).
pub const DEMO_ST_TOML: &str = r#"# ST for the vcell demo: trains in about 3 minutes on 2 CPU cores (release build).
preset = "tiny"
head = "delta"          # predicted cell = matched control cell + learned shift
hidden_dim = 64
n_layers = 2
n_heads = 4
head_dim = 16
ffn_dim = 128
n_encoder_layers = 1
cell_set_len = 32
batch_size = 8
max_steps = 4000
lr = 2e-3
warmup_steps = 50
schedule = "cosine"
val_every = 100
val_sets = 16
checkpoint_every = 250
seed = 42
precision = "f32"       # "bf16": bf16 matmuls, f32 weights and loss (mixed precision, for GPUs)
[loss]
kind = "energy"
"#;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Workspace folder (data, configs, runs).
    #[arg(long, default_value = "vcell-demo")]
    pub workspace: PathBuf,
    /// No workbench: run everything here and print the results.
    #[arg(long)]
    pub headless: bool,
    /// Training steps (default: the demo config's).
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of the synthetic data.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Set by the jobs layer when the demo runs as a detached job.
    #[arg(long, hide = true)]
    pub run_dir: Option<PathBuf>,
    #[arg(long, hide = true)]
    pub resume: bool,
    #[arg(short, long)]
    pub quiet: bool,
}

struct Paths {
    data: PathBuf,
    data_config: PathBuf,
    st_config: PathBuf,
    runs: PathBuf,
}

fn paths(ws: &Path) -> Paths {
    Paths {
        data: ws.join("data").join("synth.h5ad"),
        data_config: ws.join("data").join("data.toml"),
        st_config: ws.join("st.toml"),
        runs: ws.join("runs"),
    }
}

/// Generate the data and configs unless they exist.
fn prepare(args: &DemoArgs) -> anyhow::Result<Paths> {
    let p = paths(&args.workspace);
    std::fs::create_dir_all(p.data.parent().unwrap_or(Path::new("."))).context("creating the workspace")?;
    std::fs::create_dir_all(&p.runs)?;
    if !p.data.exists() {
        let progress = super::progress::BarProgress::new(args.quiet);
        let cfg = SynthConfig { seed: args.seed, ..SynthConfig::default() };
        let data = super::synth::write_synth(&p.data, cfg, &progress)?;
        progress.finish();
        let few_shot: Vec<String> = (0..3).map(|i| format!("{:?}", data.pert_label(i))).collect();
        let toml = format!(
            "# vcell demo data config: celltype_2 is held out entirely (zero-shot); three perturbations of\n\
             # celltype_1 are held out for validation (few-shot).\n\
             [datasets]\nsynth = \"synth.h5ad\"\n[training]\nsynth = \"train\"\n[zeroshot]\n\"synth.celltype_2\" = \"test\"\n\
             [fewshot.\"synth.celltype_1\"]\nval = [{}]\n",
            few_shot.join(", ")
        );
        std::fs::write(&p.data_config, toml)?;
        if !args.quiet {
            summarize_data(&data);
        }
    }
    if !p.st_config.exists() {
        std::fs::write(&p.st_config, DEMO_ST_TOML)?;
    }
    Ok(p)
}

fn summarize_data(data: &SynthDataset) {
    println!(
        "synthetic data: {} cells × {} genes, {} perturbations ({} null) in {} cell types; celltype_2 held out",
        data.n_cells(),
        data.n_genes(),
        data.pert_targets.len(),
        data.null_pert_labels().len(),
        data.cell_type_names.len()
    );
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let p = prepare(&args)?;
    if let Some(run_dir) = args.run_dir.clone() {
        return pipeline(&args, &p, &run_dir);
    }
    let interactive = std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    if args.headless || !interactive {
        let run_dir = unique_run_dir(&p.runs)?;
        return pipeline(&args, &p, &run_dir);
    }
    // The workbench on the workspace, with the demo pipeline running as a detached job.
    let workspace = Workspace::new(&p.runs);
    let exe = std::env::current_exe()?;
    let ws_abs = std::path::absolute(&args.workspace)?;
    let mut argv = vec!["demo".to_owned(), "--workspace".to_owned(), ws_abs.display().to_string(), "--quiet".into()];
    argv.extend(["--device".to_owned(), args.device.clone()]);
    if let Some(n) = args.steps {
        argv.extend(["--steps".to_owned(), n.to_string()]);
    }
    let name = unique_run_dir(&p.runs)?.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let job = crate::jobs::start_run(&workspace, Some(&name), argv, &exe)?;
    drop(job);
    let outputs = p.runs.join(&name).join("outputs");
    let opts = crate::ui::UiOptions {
        eval_dir: Some(outputs.join("eval-st")),
        real: Some(outputs.join("real.h5ad")),
        pred: Some(outputs.join("st.h5ad")),
        dataset: Some(p.data.clone()),
        ..crate::ui::UiOptions::default()
    };
    crate::ui::run(workspace, opts)?;
    println!("the demo job keeps running: `vcell runs list --runs-dir {}`", p.runs.display());
    Ok(())
}

fn unique_run_dir(runs: &Path) -> anyhow::Result<PathBuf> {
    for i in 1.. {
        let name = if i == 1 { "demo-st".to_owned() } else { format!("demo-st-{i}") };
        let dir = runs.join(&name);
        if !dir.exists() {
            return Ok(dir);
        }
    }
    unreachable!("an unbounded range always yields a free name")
}

/// Train, predict, evaluate and score inside one job context.
fn pipeline(args: &DemoArgs, p: &Paths, run_dir: &Path) -> anyhow::Result<()> {
    let mut cfg = StTrainConfig::load(&p.st_config)?;
    if let Some(n) = args.steps {
        cfg.max_steps = n;
    }
    let data_cfg = DataConfig::load(&p.data_config)?;
    let device = super::device::parse_device(&args.device)?;
    let mut ctx = JobContext::open(run_dir, Some(cfg.max_steps), args.resume)?;
    let train_args = TrainStArgs {
        data_config: p.data_config.clone(),
        job: TrainJobArgs {
            config: Some(p.st_config.clone()),
            run_dir: run_dir.to_owned(),
            resume: args.resume,
            device: args.device.clone(),
            max_steps: args.steps,
            precision: None,
            quiet: args.quiet,
        },
    };
    let result = train_st_in_context(&train_args, cfg, &data_cfg, &device, &mut ctx).and_then(|ending| match ending {
        Ending::Stopped => Ok(Ending::Stopped),
        Ending::Finished => evaluate(args, &data_cfg, &device, &mut ctx).map(|_| Ending::Finished),
    });
    match result {
        Ok(Ending::Finished) => Ok(ctx.finish()?),
        Ok(Ending::Stopped) => Ok(ctx.stopped()?),
        Err(e) => {
            let _ = ctx.fail(format!("{e:#}"));
            Err(e)
        }
    }
}

fn evaluate(
    args: &DemoArgs,
    data_cfg: &DataConfig,
    device: &candle_core::Device,
    ctx: &mut JobContext,
) -> anyhow::Result<()> {
    let out = ctx.outputs_dir();
    std::fs::create_dir_all(&out)?;
    let table = CellTable::load(data_cfg, &crate::progress::NoProgress)?;
    let ckpt = ctx.latest_checkpoint()?.context("training wrote no checkpoint")?.file("ckpt");
    let (st_cfg, _varmap, model) = checkpoint::load_model(&ckpt, device)?;
    let layout = PairLayout::new(&table, Split::Test, st_cfg.cell_set_len, 0)?;
    let real = out.join("real.h5ad");
    predict::write_real(&real, &table, &layout)?;
    let mut models: Vec<(String, PathBuf)> = Vec::new();
    let st_path = out.join("st.h5ad");
    predict::write_prediction(
        &st_path,
        &table,
        &layout,
        &mut predict::st_predictor(&model, device, &table, Split::Test),
    )?;
    models.push(("st".into(), st_path));
    for b in Baseline::ALL {
        let path = out.join(format!("{}.h5ad", b.name()));
        predict::write_prediction(&path, &table, &layout, &mut BaselinePredictor::fit(&table, Split::Test, b)?)?;
        models.push((b.name().into(), path));
    }
    if !args.quiet {
        println!(
            "predicted {} held-out cells; evaluating (cell-eval vcc profile)…",
            layout.sets.iter().map(|s| s.cells.len()).sum::<usize>()
        );
    }
    for (name, pred) in &models {
        let opts = EvalOptions {
            real: real.clone(),
            pred: pred.clone(),
            outdir: out.join(format!("eval-{name}")),
            profile: Profile::Vcc,
            skip_metrics: Vec::new(),
            input: InputOptions::default(),
            de: DeOptions::default(),
            celltype_col: None,
            de_real: None,
            de_pred: None,
            embed_key: None,
            write_de: name == "st",
        };
        run_eval(&opts, &crate::progress::NoProgress)?;
    }
    let base = read_agg(&out.join("eval-cell_mean").join("agg_results.csv"))?;
    let mut lines = vec![format!("{:<18} {:>10} {:>10} {:>10} {:>12}", "model", "DES", "PDS", "MAE", "VCC score")];
    for (name, _) in &models {
        let dir = out.join(format!("eval-{name}"));
        let agg = read_agg(&dir.join("agg_results.csv"))?;
        let rows = score(&agg, &base)?;
        crate::eval::format::write_atomic(&dir.join("score.csv"), &score_csv_bytes(&rows))?;
        let avg = rows.iter().find(|(m, _)| m == "avg_score").map_or(f64::NAN, |r| r.1);
        let get = |m: &str| agg.get("mean", m).unwrap_or(f64::NAN);
        let (des, pds, mae) = (get("overlap_at_N"), get("discrimination_score_l1"), get("mae"));
        ctx.record(
            Event::new(EventKind::Eval, ctx_step(ctx))
                .with("model", name.as_str())
                .with("overlap_at_N", des)
                .with("discrimination_score_l1", pds)
                .with("mae", mae)
                .with("avg_score", avg),
        )?;
        lines.push(format!("{name:<18} {des:>10.4} {pds:>10.4} {mae:>10.4} {avg:>12.4}"));
    }
    if !args.quiet {
        println!("held-out split (VCC score against the cell-mean baseline; DES = overlap_at_N, PDS = discrimination_score_l1):");
        for l in &lines {
            println!("  {l}");
        }
        println!("outputs in {}", out.display());
    }
    Ok(())
}

fn ctx_step(ctx: &JobContext) -> u64 {
    ctx.latest_checkpoint().ok().flatten().map_or(0, |c| c.step)
}
