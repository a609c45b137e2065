//! SE cell sentences: the per-cell token sequence and prediction task of the State Embedding model.
//!
//! Follows Arc's collator `VCIDatasetSentenceCollator.sample_cell_sentences`
//! (`state:src/state/emb/data/loader.py`):
//! - only dataset genes with an embedding take part ("valid genes"); the others are skipped entirely;
//! - a row is treated as raw counts and `log1p`-transformed if its max exceeds 35 or Σ expm1(x) exceeds 5·10⁶
//!   (`is_raw_integer_counts`); otherwise it is taken as already logged. No library-size normalisation;
//! - genes are ranked by log expression, ties broken at random (Arc shuffles, then argsorts descending); the top
//!   `pad_length − 1` follow `[CLS]`. When the cell has fewer valid genes than that, the expressed genes are followed by
//!   unexpressed genes sampled with replacement (Arc's behaviour). Only a cell whose every valid gene is expressed and
//!   still too short gets real padding (hidden from attention);
//! - the count value of a token is `c = 100 · log1p(x_g) / Σ_valid log1p(x)`; Arc's quirk is kept: the `[CLS]` slot
//!   carries the `c` of local valid gene `cls_count_gene` (3, `cls_token_idx`);
//! - task genes: `P` expressed (`x > 0`), `N` "unexpressed" (log value `< 1`, Arc's test) per cell, and `S` genes
//!   shared by the whole batch; targets are the log values.
//!
//! One deliberate difference: Arc's model ignores its mask (`forward(..., mask=None)` since 2025-06), so the task
//! genes stay visible in the sentence. With [`SentenceConfig::mask_task_genes`] (default on) sentence positions whose
//! gene is a task gene are hidden from attention during training, making the objective a real masked-gene
//! prediction; set it off to reproduce Arc. Embedding (inference) sentences hide nothing but padding.
//!
//! Randomness is per cell (`seed`, cell id), so a cell's sentence does not depend on how cells are chunked.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::anndata::CsrMatrix;
use super::gene_embeddings::GeneMatch;

/// Arc's `RAW_COUNT_HEURISTIC_THRESHOLD`.
pub const RAW_COUNT_MAX: f32 = 35.0;
/// Arc's `EXPONENTIATED_UMIS_LIMIT`.
pub const RAW_UMI_LIMIT: f64 = 5_000_000.0;

/// Shape of the sentences and of the task (Arc's `dataset.pad_length`, `P`, `N`, `S`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SentenceConfig {
    /// Sentence length including `[CLS]` (Arc: 2048). The dataset token, when used, comes on top.
    pub pad_length: usize,
    /// Expressed task genes per cell (`P`).
    pub n_expressed: usize,
    /// Unexpressed task genes per cell (`N`).
    pub n_unexpressed: usize,
    /// Task genes shared by all cells of a batch (`S`, for the across-cell term of the tabular loss).
    pub n_shared: usize,
    /// Hide task genes from attention in training sentences (see the module docs; Arc: effectively off).
    pub mask_task_genes: bool,
    /// Local valid gene whose count value the `[CLS]` slot carries (Arc's `cls_token_idx` quirk).
    pub cls_count_gene: usize,
}

impl Default for SentenceConfig {
    /// Arc's `P = N = 512`, with `S = 256` so that a cell has the 1280 masked/task genes of the issue
    /// (Arc's `state-defaults.yaml` uses `S = 512`).
    fn default() -> Self {
        SentenceConfig {
            pad_length: 2048,
            n_expressed: 512,
            n_unexpressed: 512,
            n_shared: 256,
            mask_task_genes: true,
            cls_count_gene: 3,
        }
    }
}

impl SentenceConfig {
    /// Task genes per cell: `P + N + S`.
    pub fn n_task(&self) -> usize {
        self.n_expressed + self.n_unexpressed + self.n_shared
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SentenceError {
    #[error("no dataset gene has an embedding ({n_genes} genes, none found in the gene-embedding table)")]
    NoValidGenes { n_genes: usize },
    #[error("invalid sentence configuration: {0}")]
    Config(String),
    #[error("row has {found} columns, the dataset has {expected} genes")]
    Columns { found: usize, expected: usize },
}

/// Training sentences carry a task and may hide task genes; embedding sentences hide nothing but padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentenceMode {
    Train,
    Embed,
}

/// One cell's sentence and task.
#[derive(Debug, Clone, PartialEq)]
pub struct CellSentence {
    /// Table rows of the gene tokens at positions `1..pad_length` (length `pad_length − 1`; padding holds 0).
    pub genes: Vec<u32>,
    /// Count values `c` at positions `0..pad_length` (`[CLS]` first).
    pub counts: Vec<f32>,
    /// Positions `0..pad_length` hidden from attention (padding, and masked task genes in training).
    pub hidden: Vec<bool>,
    /// Table rows of the task genes: `P` expressed, `N` unexpressed, then `S` shared (empty in embed mode).
    pub task_genes: Vec<u32>,
    /// Log expression of the task genes.
    pub targets: Vec<f32>,
}

/// A batch of sentences (plain data; the model turns it into tensors).
#[derive(Debug, Clone, PartialEq)]
pub struct SentenceBatch {
    pub cells: Vec<CellSentence>,
    /// Dataset id of each cell (for the dataset token's classifier).
    pub dataset_ids: Vec<u32>,
}

/// Arc's raw-count test on a row's stored values.
pub fn is_raw_counts(values: &[f32]) -> bool {
    let max = values.iter().fold(0f32, |m, &v| m.max(v));
    if max > RAW_COUNT_MAX {
        return true;
    }
    let total: f64 = values.iter().map(|&v| f64::from(v.max(0.0)).exp_m1()).sum();
    total > RAW_UMI_LIMIT
}

/// Turns dataset rows into sentences for one gene-embedding table.
#[derive(Debug, Clone)]
pub struct SentenceBuilder {
    cfg: SentenceConfig,
    /// var index → local valid index.
    local_of_var: Vec<Option<u32>>,
    /// local valid index → table row.
    table_row: Vec<u32>,
}

fn rng_for(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xC311_5E17_E11C_E000);
    rng.set_stream(stream);
    rng
}

/// `k` distinct picks from `pool` (all of it, shuffled, if `k ≥ len`).
fn choose_distinct(pool: &[u32], k: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut v = pool.to_vec();
    let k = k.min(v.len());
    let (head, _) = v.partial_shuffle(rng, k);
    head.to_vec()
}

fn choose_with_replacement(pool: &[u32], k: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    if pool.is_empty() {
        return Vec::new();
    }
    (0..k).map(|_| pool[rng.random_range(0..pool.len())]).collect()
}

/// Arc's task sampling: without replacement when the pool is larger than `k`, with replacement otherwise; an
/// empty pool falls back to all valid genes (Arc would crash or use gene 0).
fn sample_task(pool: &[u32], all: &[u32], k: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    if pool.len() > k {
        choose_distinct(pool, k, rng)
    } else if !pool.is_empty() {
        choose_with_replacement(pool, k, rng)
    } else {
        choose_with_replacement(all, k, rng)
    }
}

impl SentenceBuilder {
    pub fn new(genes: &GeneMatch, cfg: SentenceConfig) -> Result<Self, SentenceError> {
        if cfg.pad_length < 2 {
            return Err(SentenceError::Config("pad_length must be at least 2 ([CLS] and one gene)".into()));
        }
        let mut local_of_var = Vec::with_capacity(genes.table_row.len());
        let mut table_row = Vec::new();
        for row in &genes.table_row {
            match row {
                Some(r) => {
                    local_of_var.push(Some(table_row.len() as u32));
                    table_row.push(*r);
                }
                None => local_of_var.push(None),
            }
        }
        if table_row.is_empty() {
            return Err(SentenceError::NoValidGenes { n_genes: genes.table_row.len() });
        }
        Ok(SentenceBuilder { cfg, local_of_var, table_row })
    }

    pub fn config(&self) -> &SentenceConfig {
        &self.cfg
    }

    /// Number of dataset genes with an embedding.
    pub fn n_valid(&self) -> usize {
        self.table_row.len()
    }

    /// Number of dataset genes (columns of the rows).
    pub fn n_vars(&self) -> usize {
        self.local_of_var.len()
    }

    /// The batch's `S` shared task genes (local valid ids), distinct when possible.
    pub fn sample_shared(&self, rng: &mut ChaCha8Rng) -> Vec<u32> {
        let all: Vec<u32> = (0..self.n_valid() as u32).collect();
        sample_task(&all, &all, self.cfg.n_shared, rng)
    }

    /// Builds one cell's sentence from its sparse row (var indices and stored values).
    pub fn build(
        &self,
        indices: &[u32],
        values: &[f32],
        shared: &[u32],
        mode: SentenceMode,
        rng: &mut ChaCha8Rng,
    ) -> CellSentence {
        let n_valid = self.n_valid();
        let len = self.cfg.pad_length - 1;
        // Arc: negative values are clipped (relu), then the raw-count test runs on the whole row.
        let raw = is_raw_counts(values);
        let mut expressed: Vec<(u32, f32)> = indices
            .iter()
            .zip(values)
            .filter_map(|(&g, &v)| {
                let local = (*self.local_of_var.get(g as usize)?)?;
                let v = v.max(0.0);
                let v = if raw { v.ln_1p() } else { v };
                (v > 0.0 && v.is_finite()).then_some((local, v))
            })
            .collect();
        let total: f64 = expressed.iter().map(|&(_, v)| f64::from(v)).sum();
        let mut log_value = vec![0f32; n_valid];
        for &(g, v) in &expressed {
            log_value[g as usize] = v;
        }
        // Arc: weights = x / Σx, or softmax(0) = uniform for an all-zero cell.
        let weight = |g: u32| -> f32 {
            if total > 0.0 {
                (100.0 * f64::from(log_value[g as usize]) / total) as f32
            } else {
                100.0 / n_valid as f32
            }
        };
        // Rank: shuffle then a stable descending sort, so ties fall at random.
        expressed.shuffle(rng);
        expressed.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut genes: Vec<u32> = expressed.iter().take(len).map(|&(g, _)| g).collect();
        let mut n_pad = 0;
        if genes.len() < len {
            let unexpressed: Vec<u32> = (0..n_valid as u32).filter(|&g| log_value[g as usize] == 0.0).collect();
            let need = len - genes.len();
            if n_valid >= len {
                genes.extend(choose_distinct(&unexpressed, need, rng));
            } else if !unexpressed.is_empty() {
                genes.extend(choose_with_replacement(&unexpressed, need, rng));
            }
            n_pad = len - genes.len();
        }
        let mut counts = Vec::with_capacity(len + 1);
        let cls_gene = self.cfg.cls_count_gene as u32;
        counts.push(if (cls_gene as usize) < n_valid { weight(cls_gene) } else { 0.0 });
        counts.extend(genes.iter().map(|&g| weight(g)));
        counts.extend(std::iter::repeat_n(0.0, n_pad));
        let mut hidden = vec![false; len + 1];
        for h in hidden.iter_mut().skip(1 + genes.len()) {
            *h = true;
        }

        let (task, targets) = match mode {
            SentenceMode::Embed => (Vec::new(), Vec::new()),
            SentenceMode::Train => {
                let all: Vec<u32> = (0..n_valid as u32).collect();
                let pos: Vec<u32> = expressed.iter().map(|&(g, _)| g).collect();
                let neg: Vec<u32> = (0..n_valid as u32).filter(|&g| log_value[g as usize] < 1.0).collect();
                let mut task = sample_task(&pos, &all, self.cfg.n_expressed, rng);
                task.extend(sample_task(&neg, &all, self.cfg.n_unexpressed, rng));
                task.extend_from_slice(shared);
                if self.cfg.mask_task_genes {
                    let mut is_task = vec![false; n_valid];
                    for &g in &task {
                        is_task[g as usize] = true;
                    }
                    for (i, &g) in genes.iter().enumerate() {
                        if is_task[g as usize] {
                            hidden[i + 1] = true;
                        }
                    }
                }
                let targets = task.iter().map(|&g| log_value[g as usize]).collect();
                (task, targets)
            }
        };
        let to_table = |g: &u32| self.table_row[*g as usize];
        let mut gene_rows: Vec<u32> = genes.iter().map(to_table).collect();
        gene_rows.extend(std::iter::repeat_n(0, n_pad));
        CellSentence { genes: gene_rows, counts, hidden, task_genes: task.iter().map(to_table).collect(), targets }
    }

    /// Sentences for all rows of `rows`; row `i` is cell `cell_ids[i]` (its random stream). The shared task genes
    /// are drawn from a stream keyed by the first cell id.
    pub fn build_batch(
        &self,
        rows: &CsrMatrix,
        cell_ids: &[u64],
        dataset_ids: &[u32],
        mode: SentenceMode,
        seed: u64,
    ) -> Result<SentenceBatch, SentenceError> {
        if rows.cols() != self.n_vars() {
            return Err(SentenceError::Columns { found: rows.cols(), expected: self.n_vars() });
        }
        if cell_ids.len() != rows.rows() || dataset_ids.len() != rows.rows() {
            return Err(SentenceError::Config(format!(
                "{} rows but {} cell ids and {} dataset ids",
                rows.rows(),
                cell_ids.len(),
                dataset_ids.len()
            )));
        }
        let shared = match mode {
            SentenceMode::Train => {
                let key = cell_ids.first().copied().unwrap_or(0);
                self.sample_shared(&mut rng_for(seed ^ 0x5_4A2E_D000, key))
            }
            SentenceMode::Embed => Vec::new(),
        };
        let cells = (0..rows.rows())
            .into_par_iter()
            .map(|i| {
                let mut rng = rng_for(seed, cell_ids[i]);
                match rows.outer_view(i) {
                    Some(row) => self.build(row.indices(), row.data(), &shared, mode, &mut rng),
                    None => self.build(&[], &[], &shared, mode, &mut rng),
                }
            })
            .collect();
        Ok(SentenceBatch { cells, dataset_ids: dataset_ids.to_vec() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn builder(n: usize, cfg: SentenceConfig) -> SentenceBuilder {
        let m = GeneMatch { table_row: (0..n as u32).map(|g| Some(g + 100)).collect(), missing: vec![] };
        SentenceBuilder::new(&m, cfg).unwrap()
    }

    fn cfg(pad: usize, p: usize, n: usize, s: usize) -> SentenceConfig {
        SentenceConfig { pad_length: pad, n_expressed: p, n_unexpressed: n, n_shared: s, ..SentenceConfig::default() }
    }

    #[test]
    fn raw_count_heuristic() {
        assert!(is_raw_counts(&[36.0, 1.0]));
        assert!(!is_raw_counts(&[3.0, 1.0]));
        // Σ expm1 > 5e6: many values just under the max threshold.
        assert!(is_raw_counts(&[15.0; 2]));
        assert!(!is_raw_counts(&[]));
    }

    #[test]
    fn counts_match_hand_computation() {
        // Raw counts (max 40 > 35) → log1p; weights over valid genes only.
        let b = builder(6, SentenceConfig { cls_count_gene: 3, ..cfg(4, 1, 1, 0) });
        let mut rng = rng_for(0, 0);
        let s = b.build(&[0, 3, 5], &[40.0, 2.0, 1.0], &[], SentenceMode::Train, &mut rng);
        let (a, c, e) = (41f64.ln(), 3f64.ln(), 2f64.ln());
        let total = a + c + e;
        // Sentence: genes 0, 3, 5 in descending order.
        assert_eq!(s.genes, vec![100, 103, 105]);
        let expect = [100.0 * c / total, 100.0 * a / total, 100.0 * c / total, 100.0 * e / total];
        for (got, want) in s.counts.iter().zip(expect) {
            assert!((f64::from(*got) - want).abs() < 1e-4, "{got} vs {want}");
        }
        assert_eq!(s.task_genes.len(), 2);
        // Unexpressed (log < 1): genes 1, 2, 4 and 5 (log1p(1) = 0.69).
        assert!([101, 102, 104, 105].contains(&s.task_genes[1]));
        assert!(s.targets[0] > 0.0);
    }

    #[test]
    fn logged_input_is_not_transformed_again() {
        let b = builder(3, cfg(4, 1, 1, 0));
        let s = b.build(&[0, 1], &[2.0, 1.0], &[], SentenceMode::Embed, &mut rng_for(0, 0));
        assert!((s.counts[1] - 100.0 * 2.0 / 3.0).abs() < 1e-4);
        assert!((s.counts[2] - 100.0 / 3.0).abs() < 1e-4);
        // One unexpressed gene fills the last slot; nothing hidden.
        assert_eq!(s.genes, vec![100, 101, 102]);
        assert!(s.hidden.iter().all(|h| !h));
        assert!(s.task_genes.is_empty());
    }

    #[test]
    fn short_fully_expressed_cells_are_padded() {
        let b = builder(2, cfg(5, 1, 1, 0));
        let s = b.build(&[0, 1], &[1.0, 2.0], &[], SentenceMode::Embed, &mut rng_for(0, 0));
        assert_eq!(s.genes, vec![101, 100, 0, 0]);
        assert_eq!(s.hidden, vec![false, false, false, true, true]);
        assert_eq!(s.counts[3], 0.0);
    }

    #[test]
    fn genes_without_embedding_are_skipped() {
        let m = GeneMatch { table_row: vec![Some(7), None, Some(9)], missing: vec!["B".into()] };
        let b = SentenceBuilder::new(&m, cfg(3, 1, 1, 0)).unwrap();
        let s = b.build(&[0, 1, 2], &[1.0, 5.0, 2.0], &[], SentenceMode::Embed, &mut rng_for(0, 0));
        assert_eq!(s.genes, vec![9, 7]);
        assert!((s.counts[1] - 100.0 * 2.0 / 3.0).abs() < 1e-4, "gene 1 excluded from the total");
        let none = GeneMatch { table_row: vec![None], missing: vec!["A".into()] };
        assert!(matches!(SentenceBuilder::new(&none, cfg(3, 1, 1, 0)), Err(SentenceError::NoValidGenes { .. })));
    }

    #[test]
    fn masking_is_deterministic_and_sized() {
        let n = 300;
        let b = builder(n, cfg(64, 24, 16, 8));
        let idx: Vec<u32> = (0..n as u32).step_by(2).collect();
        let vals: Vec<f32> = idx.iter().map(|&g| 1.0 + (g % 17) as f32).collect();
        let rows = CsrMatrix::new((1, n), vec![0, idx.len()], idx.clone(), vals.clone());
        let a = b.build_batch(&rows, &[5], &[0], SentenceMode::Train, 42).unwrap();
        let again = b.build_batch(&rows, &[5], &[0], SentenceMode::Train, 42).unwrap();
        let other = b.build_batch(&rows, &[5], &[0], SentenceMode::Train, 43).unwrap();
        assert_eq!(a, again);
        assert_ne!(a, other);
        let c = &a.cells[0];
        assert_eq!(c.task_genes.len(), 24 + 16 + 8);
        assert_eq!(c.targets.len(), 48);
        assert_eq!(c.genes.len(), 63);
        // 150 expressed genes > 24: the P expressed task genes are distinct and expressed.
        let p: std::collections::HashSet<u32> = c.task_genes[..24].iter().copied().collect();
        assert_eq!(p.len(), 24);
        assert!(c.targets[..24].iter().all(|&t| t > 0.0));
        assert!(c.targets[24..40].iter().all(|&t| t < 1.0));
        // Every sentence position holding a task gene is hidden, and only those (no padding here).
        let task: std::collections::HashSet<u32> = c.task_genes.iter().copied().collect();
        for (i, g) in c.genes.iter().enumerate() {
            assert_eq!(c.hidden[i + 1], task.contains(g));
        }
        assert!(!c.hidden[0]);
        assert!(c.hidden.iter().any(|&h| h));
        // Same cell id in another chunk → same sentence.
        let two = CsrMatrix::new((2, n), vec![0, 0, idx.len()], idx, vals);
        let b2 = b.build_batch(&two, &[9, 5], &[0, 0], SentenceMode::Embed, 42).unwrap();
        let b1 = b.build_batch(&rows, &[5], &[0], SentenceMode::Embed, 42).unwrap();
        assert_eq!(b2.cells[1], b1.cells[0]);
    }
}
