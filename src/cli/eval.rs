//! `vcell eval`, `vcell baseline`, `vcell score`, `vcell prep`: cell-eval's `run`, `baseline`, `score`, `prep`.
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;

use crate::eval::baseline::{build_baseline, BaselineOptions};
use crate::eval::de::DeOptions;
use crate::eval::input::InputOptions;
use crate::eval::pipeline::{run_eval, EvalOptions, EvalOutput};
use crate::eval::profile::Profile;
use crate::eval::results_csv::read_agg;
use crate::eval::score::{score, score_csv_bytes};

#[derive(Args, Debug, Clone)]
pub struct EvalArgs {
    /// Real (ground truth) .h5ad.
    #[arg(long, visible_alias = "ar")]
    pub real: PathBuf,
    /// Predicted .h5ad.
    #[arg(long, visible_alias = "ap")]
    pub pred: PathBuf,
    /// Output folder (created): real_de.csv, pred_de.csv, results.csv, agg_results.csv.
    #[arg(short, long, default_value = "./cell-eval-outdir")]
    pub outdir: PathBuf,
    /// full, minimal, vcc, de, anndata or pds.
    #[arg(long, default_value = "full")]
    pub profile: String,
    #[arg(long, default_value = "target_gene")]
    pub pert_col: String,
    #[arg(long, default_value = "non-targeting")]
    pub control_pert: String,
    /// Evaluate each cell type of this obs column separately (outputs prefixed `<celltype>_`).
    #[arg(long)]
    pub celltype_col: Option<String>,
    /// Precomputed real DE table (skips real DE).
    #[arg(long)]
    pub de_real: Option<PathBuf>,
    /// Precomputed pred DE table (skips pred DE).
    #[arg(long)]
    pub de_pred: Option<PathBuf>,
    /// Use integer data as stored (no normalize_total + log1p) and allow log1p values ≥ 15.
    #[arg(long)]
    pub allow_discrete: bool,
    /// Comma-separated metrics to skip.
    #[arg(long, value_delimiter = ',')]
    pub skip_metrics: Vec<String>,
    /// obsm key used by discrimination_score_l2/cosine and the cell-level metrics.
    #[arg(long)]
    pub embed_key: Option<String>,
    /// Worker threads (default: all cores; cell-eval's default is 1).
    #[arg(long, visible_alias = "num-threads")]
    pub threads: Option<usize>,
    /// Memory budget in MB for the rows collected per DE pass (one batch is tested while the next is read, so
    /// up to twice this is held).
    #[arg(long, default_value_t = 256)]
    pub memory_mb: usize,
    #[arg(short, long)]
    pub quiet: bool,
    /// Rule set: `v1` (default; cell-eval 0.8.2, the 2025 challenge) or `vcc2026` (cell-eval2 0.20.0).
    #[arg(long, default_value = "v1")]
    pub preset: String,
    /// vcc2026: also write the DE tables (`de_real.parquet`, `de_pred.parquet`).
    #[arg(long)]
    pub write_degenes: bool,
}

pub fn set_threads(threads: Option<usize>) {
    if let Some(n) = threads {
        // Only the first call configures the global pool; later calls are harmless no-ops.
        let _ = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global();
    }
}

pub fn run_eval_cmd(args: EvalArgs) -> anyhow::Result<()> {
    set_threads(args.threads);
    match args.preset.as_str() {
        "vcc2026" => return super::vcc2026::run_eval(&args),
        "v1" => {}
        other => bail!("--preset: unknown preset '{other}' (v1 or vcc2026)"),
    }
    let profile: Profile = args.profile.parse().map_err(|e| anyhow::anyhow!("--profile: {e}"))?;
    let opts = EvalOptions {
        real: args.real.clone(),
        pred: args.pred.clone(),
        outdir: args.outdir.clone(),
        profile,
        skip_metrics: args.skip_metrics.clone(),
        input: InputOptions {
            pert_col: args.pert_col.clone(),
            control: args.control_pert.clone(),
            allow_discrete: args.allow_discrete,
            ..InputOptions::default()
        },
        de: DeOptions { batch_bytes: args.memory_mb.max(16) << 20 },
        celltype_col: args.celltype_col.clone(),
        de_real: args.de_real.clone(),
        de_pred: args.de_pred.clone(),
        embed_key: args.embed_key.clone(),
        write_de: true,
    };
    let progress = super::progress::BarProgress::new(args.quiet);
    let started = Instant::now();
    let outputs = run_eval(&opts, &progress)?;
    progress.finish();
    if !args.quiet {
        for out in &outputs {
            print_headline(out);
        }
        println!("wrote {} in {:.1}s", args.outdir.display(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// The mean row of the headline metrics.
pub fn print_headline(out: &EvalOutput) {
    let label = if out.celltype.is_empty() { String::new() } else { format!("[{}] ", out.celltype) };
    let mut parts = Vec::new();
    for (name, short) in [
        ("overlap_at_N", "DES overlap_at_N"),
        ("discrimination_score_l1", "PDS discrimination_score_l1"),
        ("mae", "MAE"),
        ("pearson_delta", "pearson_delta"),
    ] {
        if let Some(v) = out.agg.get("mean", name) {
            parts.push(format!("{short} {v:.4}"));
        }
    }
    println!("{label}{} perturbations: {}", out.results.perturbations.len(), parts.join(", "));
}

#[derive(Args, Debug, Clone)]
pub struct BaselineArgs {
    /// The (training) AnnData whose cell-mean is the baseline.
    #[arg(short = 'a', long)]
    pub adata: PathBuf,
    /// CSV with `<pert-col>,n_cells`: cells to write per perturbation (default: as in ADATA).
    #[arg(short = 'c', long)]
    pub counts: Option<PathBuf>,
    #[arg(short, long, default_value = "./baseline.h5ad")]
    pub output: PathBuf,
    /// Also compute and write the baseline's DE table.
    #[arg(short = 'O', long)]
    pub de_output: Option<PathBuf>,
    #[arg(long, default_value = "target_gene")]
    pub pert_col: String,
    #[arg(long, default_value = "non-targeting")]
    pub control_pert: String,
    #[arg(long)]
    pub allow_discrete: bool,
    #[arg(short = 't', long, visible_alias = "num-threads")]
    pub threads: Option<usize>,
    #[arg(short, long)]
    pub quiet: bool,
    /// `v1` (default: cell-eval's cell-mean baseline) or `vcc2026` (the dispersed mean-response arm of ADATA =
    /// the real data, scored; OUTPUT is then a folder).
    #[arg(long, default_value = "v1")]
    pub preset: String,
}

pub fn run_baseline_cmd(args: BaselineArgs) -> anyhow::Result<()> {
    set_threads(args.threads);
    match args.preset.as_str() {
        "vcc2026" => return super::vcc2026::run_baseline(&args),
        "v1" => {}
        other => bail!("--preset: unknown preset '{other}' (v1 or vcc2026)"),
    }
    let opts = BaselineOptions {
        adata: args.adata.clone(),
        counts: args.counts.clone(),
        output: args.output.clone(),
        de_output: args.de_output.clone(),
        input: InputOptions {
            pert_col: args.pert_col.clone(),
            control: args.control_pert.clone(),
            allow_discrete: args.allow_discrete,
            ..InputOptions::default()
        },
        de: DeOptions::default(),
    };
    let progress = super::progress::BarProgress::new(args.quiet);
    let summary = build_baseline(&opts, &progress)?;
    progress.finish();
    if !args.quiet {
        println!(
            "wrote {}: {} perturbations × their cell counts ({} cells) + {} controls",
            args.output.display(),
            summary.n_perturbations,
            summary.n_baseline_cells,
            summary.n_control_cells
        );
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct ScoreArgs {
    /// agg_results.csv of the prediction.
    #[arg(short = 'i', long)]
    pub user_input: PathBuf,
    /// agg_results.csv of the baseline.
    #[arg(short = 'I', long, required_unless_present = "real_bundle")]
    pub base_input: Option<PathBuf>,
    #[arg(short, long, default_value = "./score.csv")]
    pub output: PathBuf,
    /// vcc2026: score against a real bundle folder (baseline + replicate anchor) written by `vcell real-bundle` or
    /// cell-eval2's `prep-real-bundle`. The run's run_meta.json must match the bundle's manifest.
    #[arg(long)]
    pub real_bundle: Option<PathBuf>,
    /// vcc2026: the run's run_meta.json (default: beside --user-input).
    #[arg(long, requires = "real_bundle")]
    pub user_meta: Option<PathBuf>,
}

pub fn run_score_cmd(args: ScoreArgs) -> anyhow::Result<()> {
    if let Some(bundle) = &args.real_bundle {
        return super::vcc2026::run_score(&args.user_input, args.user_meta.as_deref(), bundle, &args.output);
    }
    let Some(base_input) = args.base_input.clone() else { bail!("--base-input or --real-bundle is required") };
    let args = ScoreArgs { base_input: Some(base_input.clone()), ..args };
    let user = read_agg(&args.user_input).with_context(|| format!("reading {}", args.user_input.display()))?;
    let base = read_agg(&base_input).with_context(|| format!("reading {}", base_input.display()))?;
    let rows = score(&user, &base)?;
    crate::eval::format::write_atomic(&args.output, &score_csv_bytes(&rows))?;
    for (metric, value) in &rows {
        println!("{metric:<26} {value:.6}");
    }
    Ok(())
}

#[derive(Args, Debug, Clone)]
pub struct PrepArgs {
    #[arg(short, long)]
    pub input: PathBuf,
    /// CSV with the expected gene names, in order (one per line; a `gene_name`-style header is skipped).
    #[arg(short, long)]
    pub genes: PathBuf,
    /// Output tarball [default: <input>.prep.vcc].
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    #[arg(short = 'p', long, default_value = "target_gene")]
    pub pert_col: String,
    #[arg(short = 'n', long, default_value = "non-targeting")]
    pub ntc_name: String,
    /// Expected number of genes (-1 disables the check).
    #[arg(long, default_value_t = 18080, allow_hyphen_values = true)]
    pub expected_gene_dim: i64,
    /// Maximum number of cells (-1 disables the check).
    #[arg(long, default_value_t = 200_000, allow_hyphen_values = true)]
    pub max_cell_dim: i64,
    #[arg(long)]
    pub allow_discrete: bool,
}

pub fn run_prep_cmd(args: PrepArgs) -> anyhow::Result<()> {
    let output = args.output.clone().unwrap_or_else(|| {
        let mut s = args.input.clone().into_os_string();
        s.push(".prep.vcc");
        PathBuf::from(s)
    });
    let text = std::fs::read_to_string(&args.genes).with_context(|| format!("reading {}", args.genes.display()))?;
    let mut genes: Vec<String> =
        text.lines().map(|l| l.trim().trim_matches('"').to_owned()).filter(|l| !l.is_empty()).collect();
    if genes.first().is_some_and(|g| g.eq_ignore_ascii_case("gene_name") || g.eq_ignore_ascii_case("gene")) {
        genes.remove(0);
    }
    if genes.is_empty() {
        bail!("{} lists no genes", args.genes.display());
    }
    let opts = crate::eval::prep::PrepOptions {
        input: args.input.clone(),
        genes,
        output: output.clone(),
        pert_col: args.pert_col.clone(),
        control: args.ntc_name.clone(),
        expected_gene_dim: usize::try_from(args.expected_gene_dim).ok(),
        max_cell_dim: usize::try_from(args.max_cell_dim).ok(),
        allow_discrete: args.allow_discrete,
    };
    let summary = crate::eval::prep::prep(&opts)?;
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    println!("wrote {} ({} cells × {} genes)", output.display(), summary.n_cells, summary.n_genes);
    Ok(())
}
