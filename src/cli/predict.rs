//! `vcell predict`: predictions of a trained ST run (or a baseline) for a held-out split, as a VCC-style
//! real/pred pair of .h5ad files that `vcell eval` and cell-eval score.
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::data::config::{DataConfig, Split};
use crate::data::table::CellTable;
use crate::model::checkpoint;
use crate::model::predict::{self, Baseline, BaselinePredictor, PairLayout};
use crate::model::train::{TrainerState, TRAINER_STATE_FILE};

#[derive(Args, Debug, Clone)]
pub struct PredictArgs {
    /// Run directory of a trained model (its latest checkpoint is used unless --checkpoint is given).
    #[arg(long, required_unless_present = "baseline")]
    pub run_dir: Option<PathBuf>,
    /// A checkpoint directory (`<run>/checkpoints/step-N.ckpt`).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Predict with a baseline instead of a model.
    #[arg(long, value_enum)]
    pub baseline: Option<BaselineArg>,
    #[arg(long)]
    pub data_config: PathBuf,
    /// Which split to predict.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Predicted cells (.h5ad; written atomically).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write the real cells of the split in the same layout (the `--real` of `vcell eval`).
    #[arg(long)]
    pub real_output: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Seed of the control cells matched to each predicted set.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy)]
pub enum BaselineArg {
    ControlMean,
    CellMean,
    PerturbationMean,
}

impl From<BaselineArg> for Baseline {
    fn from(b: BaselineArg) -> Self {
        match b {
            BaselineArg::ControlMean => Baseline::ControlMean,
            BaselineArg::CellMean => Baseline::CellMean,
            BaselineArg::PerturbationMean => Baseline::PerturbationMean,
        }
    }
}

pub fn parse_split(s: &str) -> anyhow::Result<Split> {
    match s {
        "train" => Ok(Split::Train),
        "val" => Ok(Split::Val),
        "test" => Ok(Split::Test),
        other => bail!("unknown split {other:?}: use train, val or test"),
    }
}

/// The checkpoint directory to predict with: `--checkpoint`, or the run's `latest`.
pub fn checkpoint_dir(run_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let dir = crate::jobs::RunDir::open(run_dir)?;
    match crate::jobs::runtime::latest_checkpoint(&dir)? {
        Some(c) => Ok(c.file("ckpt")),
        None => bail!("{} has no checkpoint yet", run_dir.display()),
    }
}

/// The cells of a data config in log1p expression space, even when it trains on `[data] embed_key`: the same
/// cells in the same order (split assignment does not depend on the feature space).
pub fn load_gene_table(data_cfg: &DataConfig, progress: &dyn crate::progress::Progress) -> anyhow::Result<CellTable> {
    let mut cfg = data_cfg.clone();
    cfg.settings.embed_key = None;
    CellTable::load(&cfg, progress).context("loading the data config's expression (for the gene decoder)")
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let split = parse_split(&args.split)?;
    let device = super::device::parse_device(&args.device)?;
    let data_cfg = DataConfig::load(&args.data_config)?;
    let progress = super::progress::BarProgress::new(args.quiet);
    let table = CellTable::load(&data_cfg, &progress)?;
    progress.finish();
    let written = match args.baseline {
        Some(b) => {
            let layout = PairLayout::new(&table, split, 256, args.seed)?;
            let mut predictor = BaselinePredictor::fit(&table, split, b.into())?;
            predict::write_prediction(&args.output, &table, &layout, &mut predictor)?;
            if let Some(real) = &args.real_output {
                predict::write_real(real, &table, &layout)?;
            }
            layout.sets.iter().map(|s| s.cells.len()).sum::<usize>()
        }
        None => {
            let ckpt = match (&args.checkpoint, &args.run_dir) {
                (Some(c), _) => c.clone(),
                (None, Some(r)) => checkpoint_dir(r)?,
                (None, None) => bail!("give --run-dir, --checkpoint or --baseline"),
            };
            let state: TrainerState = serde_json::from_str(
                &std::fs::read_to_string(ckpt.join(TRAINER_STATE_FILE))
                    .with_context(|| format!("reading {}", ckpt.display()))?,
            )?;
            if state.pert_names != table.pert_names || state.feature_names != table.feature_names {
                bail!(
                    "{} was trained with other perturbations or genes than {} gives: use the training data config",
                    ckpt.display(),
                    args.data_config.display()
                );
            }
            let (cfg, _varmap, model) = checkpoint::load_model(&ckpt, &device)?;
            let layout = PairLayout::new(&table, split, cfg.cell_set_len, args.seed)?;
            if model.has_gene_decoder() && data_cfg.settings.embed_key.is_some() {
                // Embedding-space model with a gene decoder: predictions and real cells in gene space.
                let genes = load_gene_table(&data_cfg, &progress)?;
                let mut predictor = predict::StGenePredictor { model: &model, latent: &table, device: device.clone() };
                predict::write_prediction(&args.output, &genes, &layout, &mut predictor)?;
                if let Some(real) = &args.real_output {
                    predict::write_real(real, &genes, &layout)?;
                }
                if !args.quiet {
                    println!("decoded to {} genes with the model's gene decoder", genes.n_features());
                }
            } else {
                let mut predictor = predict::st_predictor(&model, &device, &table, split);
                predict::write_prediction(&args.output, &table, &layout, &mut predictor)?;
                if let Some(real) = &args.real_output {
                    predict::write_real(real, &table, &layout)?;
                }
            }
            layout.sets.iter().map(|s| s.cells.len()).sum::<usize>()
        }
    };
    if !args.quiet {
        println!("wrote {} ({written} predicted cells, split {})", args.output.display(), split.name());
    }
    Ok(())
}
