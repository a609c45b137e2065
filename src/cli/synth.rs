//! `vcell synth`: write a synthetic VCC-shaped dataset.
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::data::gene_embeddings::{sidecar_gene_list, synthetic_gene_embeddings, SafetensorsLayout};
use crate::data::h5ad::H5adWriter;
use crate::data::synth::{SynthConfig, SynthDataset};
use crate::progress::Progress;

#[derive(Args, Debug, Clone)]
pub struct SynthArgs {
    /// Output .h5ad (written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Start from the VCC's shape (18,080 genes, ~300k cells) instead of the small demo default.
    #[arg(long)]
    pub vcc_scale: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub n_genes: Option<usize>,
    #[arg(long)]
    pub n_perts: Option<usize>,
    #[arg(long)]
    pub n_cell_types: Option<usize>,
    #[arg(long)]
    pub n_batches: Option<usize>,
    /// Perturbed cells per (perturbation, cell type).
    #[arg(long)]
    pub cells_per_pert: Option<usize>,
    /// Control cells per cell type.
    #[arg(long)]
    pub ctrl_per_cell_type: Option<usize>,
    /// Expected UMIs per cell.
    #[arg(long)]
    pub mean_umis: Option<f64>,
    /// Also write synthetic gene embeddings of the dataset's genes (.safetensors, or .npy + a `<stem>.txt` gene
    /// list), for `vcell train se` without downloads.
    #[arg(long)]
    pub gene_embeddings: Option<PathBuf>,
    /// Width of the synthetic gene embeddings.
    #[arg(long, default_value_t = 32)]
    pub embedding_dim: usize,
    #[arg(short, long)]
    pub quiet: bool,
}

impl SynthArgs {
    pub fn config(&self) -> SynthConfig {
        let mut c = if self.vcc_scale { SynthConfig::vcc_scale() } else { SynthConfig::default() };
        macro_rules! set {
            ($($f:ident),*) => { $(if let Some(v) = self.$f { c.$f = v; })* };
        }
        set!(seed, n_genes, n_perts, n_cell_types, n_batches, cells_per_pert, ctrl_per_cell_type, mean_umis);
        c
    }
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    let progress = super::progress::BarProgress::new(args.quiet);
    let cfg = args.config();
    let start = std::time::Instant::now();
    let data = write_synth(&args.output, cfg, &progress)?;
    progress.finish();
    if !args.quiet {
        println!(
            "wrote {}: {} cells × {} genes, {} perturbations ({} null), {} cell types, {} batches in {:.1}s",
            args.output.display(),
            data.n_cells(),
            data.n_genes(),
            data.pert_targets.len(),
            data.null_pert_labels().len(),
            data.cell_type_names.len(),
            data.batch_names.len(),
            start.elapsed().as_secs_f64()
        );
    }
    if let Some(path) = &args.gene_embeddings {
        write_gene_embeddings(path, &data, args.embedding_dim, data.config.seed)?;
        if !args.quiet {
            println!(
                "wrote {}: {} genes × {} (synthetic gene embeddings)",
                path.display(),
                data.n_genes(),
                args.embedding_dim
            );
        }
    }
    Ok(())
}

/// Synthetic gene embeddings of `data`'s genes (see [`synthetic_gene_embeddings`]), by extension: `.npy` (with
/// the sidecar gene list) or `.safetensors` (matrix layout).
pub fn write_gene_embeddings(path: &Path, data: &SynthDataset, dim: usize, seed: u64) -> anyhow::Result<()> {
    if dim == 0 {
        anyhow::bail!("--embedding-dim must be at least 1");
    }
    let genes = synthetic_gene_embeddings(data, dim, seed)?;
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_default();
    match ext.as_str() {
        "npy" => genes.write_npy(path, &sidecar_gene_list(path)),
        "safetensors" => genes.write_safetensors(path, SafetensorsLayout::Matrix),
        other => anyhow::bail!("--gene-embeddings: unknown extension {other:?} (use .safetensors or .npy)"),
    }
    .with_context(|| format!("writing {}", path.display()))
}

/// Generate and stream a synthetic dataset to `path` in chunks (bounded memory at any scale).
pub fn write_synth(path: &Path, cfg: SynthConfig, progress: &dyn Progress) -> anyhow::Result<SynthDataset> {
    const CHUNK: usize = 4096;
    let data = SynthDataset::new(cfg)?;
    let mut writer = H5adWriter::create(path, &data.var()).with_context(|| format!("creating {}", path.display()))?;
    progress.stage("generating", data.n_cells() as u64);
    for start in (0..data.n_cells()).step_by(CHUNK) {
        let end = (start + CHUNK).min(data.n_cells());
        writer.append_rows(&data.generate_rows(start, end))?;
        progress.advance((end - start) as u64);
    }
    writer.finish(&data.obs(), &[])?;
    Ok(data)
}
