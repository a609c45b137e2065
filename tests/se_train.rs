#![allow(clippy::unwrap_used)]
//! A tiny SE trained on small synthetic data: the masked-gene loss falls on held-out cells.

mod se_common;

use se_common::{build, data, eval_loss, train};
use vcell::data::cell_sentence::SentenceConfig;
use vcell::data::synth::SynthConfig;
use vcell::model::se::SeConfig;

pub fn small_synth() -> SynthConfig {
    SynthConfig {
        n_genes: 300,
        n_perts: 6,
        n_cell_types: 2,
        cells_per_pert: 20,
        ctrl_per_cell_type: 60,
        de_genes_per_pert: 30,
        mean_umis: 3000.0,
        ..SynthConfig::default()
    }
}

pub fn small_se(token_dim: usize) -> SeConfig {
    SeConfig {
        token_dim,
        d_model: 32,
        n_heads: 4,
        d_hid: 64,
        n_layers: 2,
        output_dim: 32,
        dropout: 0.0,
        count_hidden: 32,
        n_datasets: 1,
        sentence: SentenceConfig {
            pad_length: 64,
            n_expressed: 12,
            n_unexpressed: 8,
            n_shared: 4,
            ..Default::default()
        },
        ..SeConfig::default()
    }
}

#[test]
fn held_out_masked_gene_loss_falls() {
    let d = data(small_synth(), 16);
    let n = d.ds.n_cells();
    let held: Vec<usize> = (n - 60..n).collect();
    let train_idx: Vec<usize> = (0..n - 60).collect();
    let t = build(&d, &small_se(16));
    let before = eval_loss(&t, &d.x, &held, 30);
    let started = std::time::Instant::now();
    let losses = train(&t, &d.x, &train_idx, 200, 16, 2e-3);
    let secs = started.elapsed().as_secs_f64();
    let after = eval_loss(&t, &d.x, &held, 30);
    let first: f32 = losses[..10].iter().sum::<f32>() / 10.0;
    let last: f32 = losses[190..].iter().sum::<f32>() / 10.0;
    println!("held-out loss {before:.3} -> {after:.3}; train loss {first:.3} -> {last:.3}; 200 steps in {secs:.1}s");
    assert!(losses.iter().all(|l| l.is_finite()));
    // SE starts from unseeded random weights (candle's CPU RNG cannot be seeded), so the starting loss varies
    // (13.3–32 seen) while training lands at 11.0–12.7: require a clear fall from a high start, or, from a low one,
    // a fall to the trained level (an untrained model keeps its start exactly, so it fails either way).
    assert!(after < 0.85 * before || (after < before && after < 13.5), "held-out loss {before} -> {after}");
}
