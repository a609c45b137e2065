#![allow(clippy::unwrap_used)]
//! The SE acceptance experiment (ignored: ~2–3 minutes): on synthetic data, a k-NN classifier of cell type and of
//! perturbation on SE embeddings of held-out cells vs the same classifier on PCA of log1p expression with the same
//! dimension. Run: `cargo test --test se_knn -- --ignored --nocapture`. Results are in `SE_RESULTS.md`.

mod se_common;

use se_common::{build, data, eval_loss, subset, train};
use vcell::data::cell_sentence::{SentenceConfig, SentenceMode};
use vcell::data::synth::SynthConfig;
use vcell::model::se::SeConfig;

/// log1p(CP10k) of rows, dense.
fn log1p_norm(x: &vcell::data::anndata::CsrMatrix, idx: &[usize]) -> Vec<Vec<f64>> {
    idx.iter()
        .map(|&i| {
            let row = x.outer_view(i).unwrap();
            let lib: f64 = row.data().iter().map(|&v| f64::from(v)).sum::<f64>().max(1.0);
            let mut v = vec![0.0; x.cols()];
            for (&g, &c) in row.indices().iter().zip(row.data()) {
                v[g as usize] = (f64::from(c) / lib * 1e4).ln_1p();
            }
            v
        })
        .collect()
}

/// Top-`k` principal axes of the rows (subspace iteration on the covariance) and the column means.
fn pca_fit(rows: &[Vec<f64>], k: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let g = rows[0].len();
    let n = rows.len() as f64;
    let mean: Vec<f64> = (0..g).map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n).collect();
    let mut cov = vec![0.0; g * g];
    for r in rows {
        let c: Vec<f64> = r.iter().zip(&mean).map(|(a, m)| a - m).collect();
        for a in 0..g {
            if c[a] == 0.0 {
                continue;
            }
            for b in 0..g {
                cov[a * g + b] += c[a] * c[b];
            }
        }
    }
    let mut q: Vec<Vec<f64>> =
        (0..k).map(|i| (0..g).map(|j| (((i * 31 + j * 17) % 97) as f64) - 48.0).collect()).collect();
    for _ in 0..200 {
        let mut z: Vec<Vec<f64>> =
            q.iter().map(|v| (0..g).map(|a| (0..g).map(|b| cov[a * g + b] * v[b]).sum()).collect()).collect();
        // Gram–Schmidt.
        for i in 0..k {
            for j in 0..i {
                let d: f64 = z[i].iter().zip(&z[j]).map(|(a, b)| a * b).sum();
                let zj = z[j].clone();
                z[i].iter_mut().zip(&zj).for_each(|(a, b)| *a -= d * b);
            }
            let norm = z[i].iter().map(|a| a * a).sum::<f64>().sqrt().max(1e-300);
            z[i].iter_mut().for_each(|a| *a /= norm);
        }
        q = z;
    }
    (mean, q)
}

fn pca_project(rows: &[Vec<f64>], mean: &[f64], axes: &[Vec<f64>]) -> Vec<Vec<f64>> {
    rows.iter()
        .map(|r| axes.iter().map(|a| r.iter().zip(mean).zip(a).map(|((x, m), w)| (x - m) * w).sum()).collect())
        .collect()
}

/// Accuracy of a k-NN majority vote (Euclidean), fitted on `train`, scored on `test`.
fn knn_accuracy(train: &[Vec<f64>], train_y: &[usize], test: &[Vec<f64>], test_y: &[usize], k: usize) -> f64 {
    let n_classes = train_y.iter().chain(test_y).max().unwrap() + 1;
    let mut correct = 0;
    for (x, &y) in test.iter().zip(test_y) {
        let mut d: Vec<(f64, usize)> = train
            .iter()
            .zip(train_y)
            .map(|(t, &ty)| (t.iter().zip(x).map(|(a, b)| (a - b).powi(2)).sum(), ty))
            .collect();
        d.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut votes = vec![0usize; n_classes];
        for &(_, c) in d.iter().take(k) {
            votes[c] += 1;
        }
        let pred = (0..n_classes).max_by_key(|&c| (votes[c], usize::MAX - c)).unwrap();
        correct += usize::from(pred == y);
    }
    correct as f64 / test.len() as f64
}

#[test]
#[ignore = "experiment, ~2-3 minutes: cargo test --test se_knn -- --ignored --nocapture"]
fn se_vs_pca_knn() {
    let synth = SynthConfig {
        n_genes: 500,
        n_perts: 8,
        n_cell_types: 3,
        cells_per_pert: 30,
        ctrl_per_cell_type: 90,
        de_genes_per_pert: 50,
        mean_umis: 4000.0,
        ..SynthConfig::default()
    };
    let steps: usize = std::env::var("SE_KNN_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(600);
    let d = data(synth, 32);
    let n = d.ds.n_cells();
    let n_test = n / 5;
    let train_idx: Vec<usize> = (0..n - n_test).collect();
    let test_idx: Vec<usize> = (n - n_test..n).collect();
    let dim = 32;
    let cfg = SeConfig {
        token_dim: 32,
        d_model: 64,
        n_heads: 4,
        d_hid: 128,
        n_layers: 2,
        output_dim: dim,
        dropout: 0.0,
        count_hidden: 64,
        n_datasets: 1,
        sentence: SentenceConfig {
            pad_length: 128,
            n_expressed: 24,
            n_unexpressed: 16,
            n_shared: 8,
            ..Default::default()
        },
        ..SeConfig::default()
    };
    let t = build(&d, &cfg);
    let before = eval_loss(&t, &d.x, &test_idx, 40);
    let started = std::time::Instant::now();
    let losses = train(&t, &d.x, &train_idx, steps, 16, 2e-3);
    let train_secs = started.elapsed().as_secs_f64();
    let after = eval_loss(&t, &d.x, &test_idx, 40);
    let embed = |idx: &[usize]| -> (Vec<Vec<f64>>, f64) {
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        for chunk in idx.chunks(128) {
            let rows = subset(&d.x, chunk);
            let ids: Vec<u64> = chunk.iter().map(|&i| i as u64).collect();
            let b = t.batcher.batch(&rows, &ids, &vec![0; chunk.len()], SentenceMode::Embed, 0).unwrap();
            let e = t.model.embed(&b).unwrap().narrow(1, 0, dim).unwrap().to_vec2::<f32>().unwrap();
            out.extend(e.into_iter().map(|r| r.into_iter().map(f64::from).collect::<Vec<_>>()));
        }
        (out, idx.len() as f64 / started.elapsed().as_secs_f64())
    };
    let (se_train, _) = embed(&train_idx);
    let (se_test, cells_per_s) = embed(&test_idx);
    let expr_train = log1p_norm(&d.x, &train_idx);
    let expr_test = log1p_norm(&d.x, &test_idx);
    let (mean, axes) = pca_fit(&expr_train, dim);
    let pca_train = pca_project(&expr_train, &mean, &axes);
    let pca_test = pca_project(&expr_test, &mean, &axes);
    let label = |f: &dyn Fn(usize) -> usize, idx: &[usize]| idx.iter().map(|&i| f(i)).collect::<Vec<_>>();
    let ct = |i: usize| d.ds.cells[i].cell_type as usize;
    let pert = |i: usize| d.ds.cells[i].pert.map_or(0, |p| p as usize + 1);
    let k = 10;
    let mut lines = vec![format!(
        "cells {n} (train {}, held-out {n_test}), genes 500, 8 perturbations + control, 3 cell types; dim {dim}; k = {k}",
        train_idx.len()
    )];
    lines.push(format!(
        "SE: {steps} steps of 16 cells in {train_secs:.0}s; held-out loss {before:.3} -> {after:.3} (train {:.3} -> {:.3})",
        losses[..10].iter().sum::<f32>() / 10.0,
        losses[steps - 10..].iter().sum::<f32>() / 10.0
    ));
    for (what, f) in [("cell type", &ct as &dyn Fn(usize) -> usize), ("perturbation", &pert)] {
        let (ytr, yte) = (label(f, &train_idx), label(f, &test_idx));
        let se = knn_accuracy(&se_train, &ytr, &se_test, &yte, k);
        let pca = knn_accuracy(&pca_train, &ytr, &pca_test, &yte, k);
        lines.push(format!("k-NN {what}: SE {se:.3}  PCA {pca:.3}"));
    }
    lines.push(format!("embed throughput (this build, batch 128, sentence 128): {cells_per_s:.0} cells/s"));
    for l in &lines {
        println!("{l}");
    }
    assert!(after < before);
}
