//! `vcell embed`: SE cell embeddings of an `.h5ad` (the `[CLS]` embeddings of a run trained with `vcell train se`)
//! written into `obsm[--key]` of a copy of the file, streaming cells in chunks; the output appears atomically
//! (temporary file + rename), so a failed or interrupted run leaves no output.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::model::se::{embed_h5ad_with, EmbedOptions};
use crate::model::se_train::load_se_model;

#[derive(Args, Debug, Clone)]
pub struct EmbedArgs {
    /// Run directory of an SE run (its latest checkpoint is used unless --checkpoint is given).
    #[arg(long, required_unless_present = "checkpoint")]
    pub run_dir: Option<PathBuf>,
    /// An SE checkpoint directory (`<run>/checkpoints/step-N.ckpt`).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Cells to embed (.h5ad with raw counts in X).
    #[arg(long)]
    pub input: PathBuf,
    /// Output .h5ad: the input's X, obs, var and dense obsm plus the embeddings (may equal --input).
    #[arg(short, long)]
    pub output: PathBuf,
    /// obsm key of the embeddings.
    #[arg(long, default_value = "X_state")]
    pub key: String,
    /// Cells per chunk (model batch).
    #[arg(long, default_value_t = 256)]
    pub chunk: usize,
    /// var column with gene names, tried when the var index matches no gene of the model.
    #[arg(long, default_value = "gene_name")]
    pub gene_column: String,
    /// Seed of the sentences' random tie-breaks.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(args: EmbedArgs) -> anyhow::Result<()> {
    let device = super::device::parse_device(&args.device)?;
    let dir = match (&args.checkpoint, &args.run_dir) {
        (Some(c), _) => c.clone(),
        (None, Some(r)) => super::predict::checkpoint_dir(r)?,
        (None, None) => bail!("give --run-dir or --checkpoint"),
    };
    let (cfg, _, _, model) =
        load_se_model(&dir, &device).with_context(|| format!("loading the SE model of {}", dir.display()))?;
    let opts = EmbedOptions {
        key: args.key.clone(),
        chunk: args.chunk,
        gene_column: Some(args.gene_column.clone()),
        seed: args.seed,
        dataset_id: 0,
    };
    let progress = super::progress::BarProgress::new(args.quiet);
    let report = embed_h5ad_with(&model, &args.input, &args.output, &opts, &progress)
        .with_context(|| format!("embedding {}", args.input.display()))?;
    progress.finish();
    if !args.quiet {
        println!(
            "wrote {}: obsm[{:?}] = {} cells × {} ({} from {}, d_model {}, {} layers) in {:.1}s, {:.0} cells/s",
            args.output.display(),
            args.key,
            report.n_cells,
            report.dim,
            report.gene_source,
            dir.display(),
            cfg.d_model,
            cfg.n_layers,
            report.seconds,
            report.cells_per_second()
        );
        println!("genes: {}", report.genes.report());
        if !report.dropped.is_empty() {
            println!("not carried over: {}", report.dropped.join(", "));
        }
    }
    Ok(())
}
