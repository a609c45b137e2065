//! `vcell eval|baseline --preset vcc2026`, `vcell real-bundle`, `vcell score --real-bundle`: cell-eval2 0.20.0's
//! `run`, `baseline`, `prep-real-bundle` and `score` under the vcc2026 preset.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use super::eval::{set_threads, BaselineArgs, EvalArgs};
use crate::eval::format::write_atomic;
use crate::eval::vcc2026::baseline::baseline_side;
use crate::eval::vcc2026::bundle::build_bundle;
use crate::eval::vcc2026::metrics::{ControlSource, SCORED};
use crate::eval::vcc2026::outputs::{agg_csv, agg_table, results_csv};
use crate::eval::vcc2026::pipeline::{run_vcc2026, RunOptions};
use crate::eval::vcc2026::score::{score_csv, score_real_bundle};
use crate::eval::vcc2026::validate::{load_real, Vcc2026Options};
use crate::eval::vcc2026::{analyse_real_and_evaluate, PassOptions};

fn vcc_opts(pert_col: &str, control: &str, memory_mb: usize) -> Vcc2026Options {
    Vcc2026Options {
        pert_col: pert_col.to_owned(),
        control: control.to_owned(),
        passes: PassOptions { batch_bytes: memory_mb.max(16) << 20 },
        ..Vcc2026Options::default()
    }
}

pub fn run_eval(args: &EvalArgs) -> anyhow::Result<()> {
    let opts = RunOptions {
        real: args.real.clone(),
        pred: args.pred.clone(),
        outdir: args.outdir.clone(),
        write_de: args.write_degenes,
        vcc: vcc_opts(&args.pert_col, &args.control_pert, args.memory_mb.max(512)),
    };
    let progress = super::progress::BarProgress::new(args.quiet);
    let out = run_vcc2026(&opts, &progress)?;
    progress.finish();
    if !args.quiet {
        for m in SCORED {
            println!("{m:<42} {:.6}", out.members.aggregate(m));
        }
        println!("wrote {}", opts.outdir.display());
    }
    Ok(())
}

pub fn run_baseline(args: &BaselineArgs) -> anyhow::Result<()> {
    let opts = vcc_opts(&args.pert_col, &args.control_pert, 512);
    let progress = super::progress::BarProgress::new(args.quiet);
    let (real, vars) = load_real(&args.adata, &opts, &progress)?;
    let (arm, draws) = baseline_side(&real, &vars, &opts.control, 0, &progress)?;
    let real_side = real.side(&opts.control)?;
    let (_, members, _) =
        analyse_real_and_evaluate(&vars, &real_side, &arm, ControlSource::Real, &opts.passes, &progress)?;
    progress.finish();
    let dir = &args.output;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_atomic(&dir.join("baseline_agg.csv"), agg_csv(&agg_table(&members)).as_bytes())?;
    write_atomic(&dir.join("baseline_results.csv"), results_csv(&members).as_bytes())?;
    let mut s = String::from("group,position,obs_row,control_draw,source_obs_row\n");
    for d in &draws {
        s.push_str(&format!("{},{},{},{},{}\n", d.group, d.position, d.obs_row, d.control_draw, d.source_obs_row));
    }
    write_atomic(&dir.join("baseline_draws.csv"), s.as_bytes())?;
    if !args.quiet {
        for m in SCORED {
            println!("{m:<42} {:.6}", members.aggregate(m));
        }
        println!("wrote {}", dir.display());
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct RealBundleArgs {
    /// Real (ground truth) .h5ad, raw counts.
    #[arg(long)]
    pub real: PathBuf,
    /// Bundle id (recorded in the manifest and score.csv).
    #[arg(long, default_value = "vcc2026")]
    pub id: String,
    #[arg(short, long)]
    pub outdir: PathBuf,
    #[arg(long, default_value = "target_gene")]
    pub pert_col: String,
    #[arg(long, default_value = "non-targeting")]
    pub control_pert: String,
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Memory budget in MB for the cells collected per pass.
    #[arg(long, default_value_t = 512)]
    pub memory_mb: usize,
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run_real_bundle(args: RealBundleArgs) -> anyhow::Result<()> {
    set_threads(args.threads);
    let opts = vcc_opts(&args.pert_col, &args.control_pert, args.memory_mb);
    let progress = super::progress::BarProgress::new(args.quiet);
    let out = build_bundle(&args.real, &args.outdir, &args.id, &opts, &progress)?;
    progress.finish();
    if !args.quiet {
        println!("wrote real bundle '{}' to {} ({} files)", args.id, args.outdir.display(), out.files.len());
    }
    Ok(())
}

/// `score --real-bundle`: checks the run (`run_meta.json` beside `user`, or `user_meta`) against the bundle's
/// manifest, then scores `user` against the bundle's baseline and replicate anchor (a bundle from `vcell
/// real-bundle` or from cell-eval2's `prep-real-bundle`). A refused run writes nothing.
pub fn run_score(user: &Path, user_meta: Option<&Path>, bundle: &Path, output: &Path) -> anyhow::Result<()> {
    let meta = match user_meta {
        Some(p) => p.to_owned(),
        None => user.parent().map(|d| d.join("run_meta.json")).unwrap_or_else(|| PathBuf::from("run_meta.json")),
    };
    let out = score_real_bundle(user, &meta, bundle)?;
    for w in &out.warnings {
        eprintln!("{w}");
    }
    write_atomic(output, score_csv(&out).as_bytes()).with_context(|| format!("writing {}", output.display()))?;
    for row in &out.rows {
        println!("{:<42} {:.6}", row.metric, row.from_replicate);
    }
    println!("{:<42} {:.6}", "avg_score", out.avg);
    Ok(())
}
