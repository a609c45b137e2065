//! Shared helpers of the SE integration tests: synthetic data, a minimal training loop, row subsets.
#![allow(clippy::unwrap_used, dead_code)]

use candle_core::{DType, Device};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vcell::data::anndata::CsrMatrix;
use vcell::data::cell_sentence::SentenceMode;
use vcell::data::gene_embeddings::{synthetic_gene_embeddings, GeneEmbeddings};
use vcell::data::synth::{SynthConfig, SynthDataset};
use vcell::model::se::{SeBatcher, SeConfig, SeModel};

pub struct Data {
    pub ds: SynthDataset,
    pub x: CsrMatrix,
    pub genes: GeneEmbeddings,
}

pub fn data(cfg: SynthConfig, emb_dim: usize) -> Data {
    let ds = SynthDataset::new(cfg).unwrap();
    let x = ds.generate_rows(0, ds.n_cells());
    let genes = synthetic_gene_embeddings(&ds, emb_dim, 1).unwrap();
    Data { ds, x, genes }
}

/// Rows `idx` of `x` as a new CSR matrix.
pub fn subset(x: &CsrMatrix, idx: &[usize]) -> CsrMatrix {
    let mut indptr = vec![0];
    let mut indices = Vec::new();
    let mut data = Vec::new();
    for &i in idx {
        let row = x.outer_view(i).unwrap();
        indices.extend_from_slice(row.indices());
        data.extend_from_slice(row.data());
        indptr.push(indices.len());
    }
    CsrMatrix::new((idx.len(), x.cols()), indptr, indices, data)
}

pub struct Trained {
    pub varmap: VarMap,
    pub model: SeModel,
    pub batcher: SeBatcher,
}

pub fn build(d: &Data, cfg: &SeConfig) -> Trained {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = SeModel::new(vb, cfg, &d.genes).unwrap();
    let batcher = SeBatcher::new(&model, &d.ds.gene_names).unwrap();
    Trained { varmap, model, batcher }
}

/// Mean validation loss (no dropout) over `idx`, with a fixed sentence seed.
pub fn eval_loss(t: &Trained, x: &CsrMatrix, idx: &[usize], batch: usize) -> f32 {
    let mut total = 0.0;
    let mut n = 0;
    for chunk in idx.chunks(batch) {
        let rows = subset(x, chunk);
        let ids: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
        let b = t.batcher.batch(&rows, &ids, &vec![0; chunk.len()], SentenceMode::Train, 999).unwrap();
        total += t.model.eval_loss(&b).unwrap().to_scalar::<f32>().unwrap() * chunk.len() as f32;
        n += chunk.len();
    }
    total / n as f32
}

/// AdamW on random minibatches of `train_idx`; returns the training losses.
pub fn train(t: &Trained, x: &CsrMatrix, train_idx: &[usize], steps: usize, batch: usize, lr: f64) -> Vec<f32> {
    let mut opt =
        AdamW::new(t.varmap.all_vars(), ParamsAdamW { lr, weight_decay: 0.01, ..ParamsAdamW::default() }).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut order = train_idx.to_vec();
    let mut pos = order.len();
    let mut losses = Vec::with_capacity(steps);
    for step in 0..steps {
        if pos + batch > order.len() {
            order.shuffle(&mut rng);
            pos = 0;
        }
        let chunk = &order[pos..pos + batch];
        pos += batch;
        let rows = subset(x, chunk);
        let ids: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
        let b = t.batcher.batch(&rows, &ids, &vec![0; batch], SentenceMode::Train, step as u64).unwrap();
        let loss = t.model.loss(&b).unwrap();
        losses.push(loss.to_scalar::<f32>().unwrap());
        opt.backward_step(&loss).unwrap();
    }
    losses
}
