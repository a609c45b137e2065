#![allow(clippy::unwrap_used)]
//! `embed_h5ad`: embeddings land in obsm, X/obs are carried over, chunking does not change the result;
//! prints the embed throughput (debug build).

mod se_common;

use se_common::{build, data};
use vcell::data::anndata::{AnnData, XMatrix};
use vcell::data::cell_sentence::SentenceConfig;
use vcell::data::h5ad::{read_h5ad, write_h5ad};
use vcell::data::synth::SynthConfig;
use vcell::model::se::{embed_h5ad, embed_h5ad_with, EmbedOptions, SeConfig};
use vcell::progress::NoProgress;

#[test]
fn embed_writes_obsm_and_is_chunk_independent() {
    let synth = SynthConfig {
        n_genes: 200,
        n_perts: 4,
        n_cell_types: 2,
        cells_per_pert: 10,
        ctrl_per_cell_type: 20,
        ..SynthConfig::default()
    };
    let d = data(synth, 16);
    let cfg = SeConfig {
        d_model: 32,
        n_heads: 4,
        d_hid: 64,
        output_dim: 32,
        count_hidden: 32,
        sentence: SentenceConfig {
            pad_length: 64,
            n_expressed: 4,
            n_unexpressed: 4,
            n_shared: 2,
            ..SentenceConfig::default()
        },
        ..SeConfig::tiny(16)
    };
    let t = build(&d, &cfg);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.h5ad");
    let mut var = d.ds.var();
    // A gene the model does not know: reported, skipped.
    var.index[0] = "UNKNOWN_GENE".into();
    let adata = AnnData {
        x: XMatrix::Sparse(d.x.clone()),
        obs: d.ds.obs(),
        var,
        obsm: vec![("X_pca".into(), ndarray::Array2::<f32>::ones((d.ds.n_cells(), 3)))],
        layers: vec![],
    };
    write_h5ad(&input, &adata).unwrap();
    let out = dir.path().join("out.h5ad");
    let report = embed_h5ad(&t.model, &input, &out, "X_state", 7, &NoProgress).unwrap();
    assert_eq!(report.genes.missing, vec!["UNKNOWN_GENE".to_string()]);
    let back = read_h5ad(&out).unwrap();
    assert_eq!(back.x, adata.x);
    assert_eq!(back.obs, adata.obs);
    let keys: Vec<&str> = back.obsm.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["X_pca", "X_state"]);
    let emb = &back.obsm[1].1;
    assert_eq!(emb.dim(), (d.ds.n_cells(), cfg.embedding_dim()));
    assert!(emb.iter().all(|v| v.is_finite()));
    // The cell part is L2-normalised.
    let norm: f32 = emb.row(3).iter().take(cfg.output_dim).map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-4);
    // Other chunk size, same embeddings; output may replace the input.
    let opts = EmbedOptions { key: "X_state".into(), chunk: 64, ..EmbedOptions::default() };
    let r2 = embed_h5ad_with(&t.model, &input, &input, &opts, &NoProgress).unwrap();
    let again = read_h5ad(&input).unwrap();
    let diff = (&again.obsm[1].1 - emb).iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(diff < 1e-5, "chunking changed embeddings by {diff}");
    assert!(!dir.path().read_dir().unwrap().any(|e| e.unwrap().file_name().to_string_lossy().contains(".tmp")));
    println!(
        "embed throughput (debug build, d_model 32, 2 layers, sentence 64): {:.0} cells/s ({} cells, chunk 64)",
        r2.cells_per_second(),
        r2.n_cells
    );
}
