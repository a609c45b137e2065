//! `vcell embed`: SE cell embeddings of an `.h5ad`, written into `obsm` (Arc's `state emb transform`,
//! `state:src/state/emb/inference.py`).
//!
//! Cells are streamed in chunks: each chunk of X is read, copied into the output by the streaming
//! [`H5adWriter`] and embedded; obs, var and the dense obsm entries are carried over and the embeddings are added
//! as `obsm[key]` (float32, `n × embedding_dim`). The output is written to a temporary file and renamed into
//! place at the end, so a failure or cancellation leaves no partial file (and `output` may equal `input`).
//! What the streaming writer cannot carry (layers, non-dense obsm entries, uns, varm, obsp) is dropped and listed
//! in [`EmbedReport::dropped`].

use std::path::Path;
use std::time::Instant;

use ndarray::Array2;

use super::{Result, SeBatcher, SeError, SeModel};
use crate::data::cell_sentence::SentenceMode;
use crate::data::gene_embeddings::GeneMatch;
use crate::data::h5ad::{H5adReader, H5adWriter};
use crate::progress::Progress;

/// Options of [`embed_h5ad_with`].
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedOptions {
    /// `obsm` key of the embeddings (Arc's default: `X_state`).
    pub key: String,
    /// Cells per chunk (model batch).
    pub chunk: usize,
    /// var column with gene names, tried when the var index matches no gene of the model (Arc's `--gene-column`,
    /// default `gene_name`).
    pub gene_column: Option<String>,
    /// Seed of the sentences' random tie-breaks (embeddings are stochastic for cells with fewer expressed genes
    /// than the sentence length, as in Arc; a fixed seed makes them reproducible and chunking-independent).
    pub seed: u64,
    /// Dataset id given to every cell.
    pub dataset_id: u32,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        EmbedOptions {
            key: "X_state".into(),
            chunk: 256,
            gene_column: Some("gene_name".into()),
            seed: 0,
            dataset_id: 0,
        }
    }
}

/// What [`embed_h5ad_with`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbedReport {
    pub n_cells: usize,
    pub dim: usize,
    /// How the input's genes matched the model's gene table (missing genes are skipped).
    pub genes: GeneMatch,
    /// Where the gene names came from: `var index` or `var[<column>]`.
    pub gene_source: String,
    /// Elements of the input not carried into the output.
    pub dropped: Vec<String>,
    pub seconds: f64,
}

impl EmbedReport {
    pub fn cells_per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.n_cells as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Embeds every cell of `input` into `output`'s `obsm[key]`, `chunk` cells at a time (see the module docs).
pub fn embed_h5ad(
    model: &SeModel,
    input: &Path,
    output: &Path,
    key: &str,
    chunk: usize,
    progress: &dyn Progress,
) -> Result<EmbedReport> {
    let opts = EmbedOptions { key: key.to_owned(), chunk, ..EmbedOptions::default() };
    embed_h5ad_with(model, input, output, &opts, progress)
}

/// [`embed_h5ad`] with all options.
pub fn embed_h5ad_with(
    model: &SeModel,
    input: &Path,
    output: &Path,
    opts: &EmbedOptions,
    progress: &dyn Progress,
) -> Result<EmbedReport> {
    let started = Instant::now();
    if opts.chunk == 0 {
        return Err(SeError::Input("chunk must be at least 1".into()));
    }
    if opts.key.is_empty() || opts.key.contains('/') {
        return Err(SeError::Input(format!("invalid obsm key {:?}", opts.key)));
    }
    let reader = H5adReader::open(input)?;
    let n = reader.n_obs()?;
    let var = reader.var()?;
    let mut names = reader.var_names()?;
    let mut gene_source = "var index".to_owned();
    if model.match_genes(&names).n_matched() == 0 {
        if let Some(col) = &opts.gene_column {
            if let Some(column) = var.column(col) {
                let alt: Vec<String> = (0..column.len()).map(|i| column.label(i).unwrap_or_default()).collect();
                if model.match_genes(&alt).n_matched() > 0 {
                    names = alt;
                    gene_source = format!("var[{col:?}]");
                }
            }
        }
    }
    let batcher = SeBatcher::new(model, &names).map_err(|e| match e {
        SeError::Sentence(s) => SeError::Input(format!(
            "{}: {s}; gene names tried: the var index{}",
            input.display(),
            opts.gene_column.as_ref().map(|c| format!(" and var[{c:?}]")).unwrap_or_default()
        )),
        e => e,
    })?;
    let obs = reader.obs()?;
    let mut obsm = Vec::new();
    let mut dropped = Vec::new();
    for k in reader.obsm_keys()? {
        if k == opts.key {
            dropped.push(format!("obsm/{k} (replaced)"));
            continue;
        }
        match reader.read_obsm(&k) {
            Ok(a) => obsm.push((k, a)),
            Err(_) => dropped.push(format!("obsm/{k} (not a dense array)")),
        }
    }
    dropped.extend(reader.layer_keys()?.into_iter().map(|l| format!("layers/{l}")));

    let dim = model.config().embedding_dim();
    let mut emb = Array2::<f32>::zeros((n, dim));
    let mut writer = H5adWriter::create(output, &var)?;
    progress.stage("embed", n as u64);
    let mut start = 0;
    while start < n {
        if progress.cancelled() {
            return Err(SeError::Cancelled);
        }
        let end = (start + opts.chunk).min(n);
        let rows = reader.read_x_rows(start, end)?;
        writer.append_rows(&rows)?;
        let ids: Vec<u64> = (start as u64..end as u64).collect();
        let batch = batcher.batch(&rows, &ids, &vec![opts.dataset_id; end - start], SentenceMode::Embed, opts.seed)?;
        let e = model.embed(&batch)?.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        for (i, row) in e.into_iter().enumerate() {
            for (j, v) in row.into_iter().enumerate() {
                emb[[start + i, j]] = v;
            }
        }
        progress.advance((end - start) as u64);
        start = end;
    }
    drop(reader);
    obsm.push((opts.key.clone(), emb));
    obsm.sort_by(|a, b| a.0.cmp(&b.0));
    writer.finish(&obs, &obsm)?;
    Ok(EmbedReport {
        n_cells: n,
        dim,
        genes: batcher.gene_match().clone(),
        gene_source,
        dropped,
        seconds: started.elapsed().as_secs_f64(),
    })
}
