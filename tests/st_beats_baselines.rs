//! ST, trained briefly on CPU with a fixed seed, beats the control-mean and cell-mean baselines on a held-out cell
//! type: on the VCC metrics (`vcell eval --profile vcc`) and on the VCC score against the cell-mean baseline.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use candle_core::Device;
use vcell::data::config::{DataConfig, Split};
use vcell::data::h5ad::H5adWriter;
use vcell::data::synth::{SynthConfig, SynthDataset};
use vcell::data::table::CellTable;
use vcell::eval::de::DeOptions;
use vcell::eval::input::InputOptions;
use vcell::eval::pipeline::{run_eval, EvalOptions};
use vcell::eval::profile::Profile;
use vcell::eval::score::score;
use vcell::model::predict::{self, Baseline, BaselinePredictor, PairLayout, Predictor};
use vcell::model::train::{StTrainConfig, StepRecord, TrainHooks, Trainer};
use vcell::progress::NoProgress;

struct Quiet {
    dir: PathBuf,
}

impl TrainHooks for Quiet {
    fn stop_requested(&mut self) -> bool {
        false
    }
    fn on_step(&mut self, _: &StepRecord) -> vcell::model::Result<()> {
        Ok(())
    }
    fn on_validation(&mut self, _: u64, _: f64) -> vcell::model::Result<()> {
        Ok(())
    }
    fn checkpoint_dir(&mut self, step: u64) -> PathBuf {
        self.dir.join(format!("step-{step}"))
    }
    fn checkpoint_written(&mut self, _: u64) -> vcell::model::Result<()> {
        Ok(())
    }
}

fn evaluate(
    dir: &Path,
    real: &Path,
    name: &str,
    table: &CellTable,
    layout: &PairLayout,
    p: &mut dyn Predictor,
) -> vcell::eval::describe::AggTable {
    let pred = dir.join(format!("{name}.h5ad"));
    predict::write_prediction(&pred, table, layout, p).unwrap();
    let opts = EvalOptions {
        real: real.to_owned(),
        pred,
        outdir: dir.join(format!("eval-{name}")),
        profile: Profile::Vcc,
        skip_metrics: vec![],
        input: InputOptions::default(),
        de: DeOptions::default(),
        celltype_col: None,
        de_real: None,
        de_pred: None,
        embed_key: None,
        write_de: false,
    };
    run_eval(&opts, &NoProgress).unwrap().remove(0).agg
}

#[test]
fn st_beats_control_mean_and_cell_mean_on_a_held_out_cell_type() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let synth = SynthConfig {
        seed: 3,
        n_genes: 200,
        n_perts: 8,
        n_cell_types: 3,
        cells_per_pert: 60,
        ctrl_per_cell_type: 200,
        de_genes_per_pert: 30,
        effect_sd: 1.0,
        ..SynthConfig::default()
    };
    let data = SynthDataset::new(synth).unwrap();
    let mut w = H5adWriter::create(&dir.join("synth.h5ad"), &data.var()).unwrap();
    w.append_rows(&data.generate_rows(0, data.n_cells())).unwrap();
    w.finish(&data.obs(), &[]).unwrap();
    let cfg_path = dir.join("data.toml");
    std::fs::write(&cfg_path, "[datasets]\nsynth = \"synth.h5ad\"\n[training]\nsynth = \"train\"\n[zeroshot]\n\"synth.celltype_2\" = \"test\"\n").unwrap();
    let table = CellTable::load(&DataConfig::load(&cfg_path).unwrap(), &NoProgress).unwrap();

    let st: StTrainConfig = toml::from_str(
        "hidden_dim = 32\nn_layers = 1\nn_heads = 2\nhead_dim = 16\nffn_dim = 64\nn_encoder_layers = 1\n\
         cell_set_len = 32\nbatch_size = 8\nmax_steps = 1200\nlr = 2e-3\nwarmup_steps = 50\nval_every = 300\n\
         checkpoint_every = 0\nseed = 42\n",
    )
    .unwrap();
    let mut trainer = Trainer::new(&table, st, &Device::Cpu).unwrap();
    let before = trainer.validation_loss().unwrap().unwrap();
    trainer.run(&mut Quiet { dir: dir.join("ckpt") }).unwrap();
    let after = trainer.validation_loss().unwrap().unwrap();
    assert!(after < before, "validation loss on the held-out cell type should fall: {before} -> {after}");

    let layout = PairLayout::new(&table, Split::Test, 32, 0).unwrap();
    let real = dir.join("real.h5ad");
    predict::write_real(&real, &table, &layout).unwrap();
    let mut st_pred = predict::st_predictor(trainer.model(), &Device::Cpu, &table, Split::Test);
    let st_agg = evaluate(dir, &real, "st", &table, &layout, &mut st_pred);
    let mut results = vec![("st", st_agg)];
    for b in [Baseline::ControlMean, Baseline::CellMean] {
        let mut p = BaselinePredictor::fit(&table, Split::Test, b).unwrap();
        results.push((b.name(), evaluate(dir, &real, b.name(), &table, &layout, &mut p)));
    }
    let cell_mean = results.iter().find(|r| r.0 == "cell_mean").unwrap().1.clone();
    let avg = |agg| score(agg, &cell_mean).unwrap().into_iter().find(|r| r.0 == "avg_score").unwrap().1;
    let mean = |agg: &vcell::eval::describe::AggTable, m: &str| agg.get("mean", m).unwrap();
    for (name, agg) in &results {
        eprintln!(
            "{name:<14} DES {:.4} PDS {:.4} MAE {:.4} score {:.4}",
            mean(agg, "overlap_at_N"),
            mean(agg, "discrimination_score_l1"),
            mean(agg, "mae"),
            avg(agg)
        );
    }
    let st_agg = &results[0].1;
    for (name, agg) in &results[1..] {
        assert!(mean(st_agg, "overlap_at_N") > mean(agg, "overlap_at_N"), "DES: ST vs {name}");
        assert!(mean(st_agg, "discrimination_score_l1") > mean(agg, "discrimination_score_l1"), "PDS: ST vs {name}");
        assert!(avg(st_agg) > avg(agg), "VCC score: ST vs {name}");
    }
}
