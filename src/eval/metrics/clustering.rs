//! `clustering_agreement` (`cell_eval/metrics/_anndata.py::ClusteringAgreement`, cell-eval 0.8.x).
//!
//! What cell-eval computes (defaults: `embed_key=None`, `real_resolution=1.0`,
//! `pred_resolutions=(0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0)`, `metric="ami"`, `n_neighbors=15`):
//! 1. `_centroid_ann`: per perturbation label, the f64 mean of its cells' `X` rows (no PCA, no scaling), control
//!    dropped; rows in sorted label order (`np.unique`), which is also `sorted(perts)`.
//! 2. `_cluster_leiden`: `sc.pp.neighbors(adata, n_neighbors=min(15, n_obs - 1), use_rep="X")` (exact Euclidean
//!    kNN, UMAP fuzzy connectivities: [`super::knn`]) once per side, then
//!    `sc.tl.leiden(resolution=r, flavor="igraph", n_iterations=2)` (random_state 0: [`super::leiden`]).
//! 3. Real is clustered at resolution 1.0; pred at each resolution of the sweep; the score is
//!    `max(0.0, max_r AMI(real, pred_r))` with sklearn's `adjusted_mutual_info_score` (arithmetic mean).
//!    The same value is reported for every perturbation.
//!
//! Exactness: the kNN graph and connectivities follow scanpy/umap step by step, but Leiden's random choices use
//! our own seeded RNG (igraph's RNG stream is not reproduced), so partitions, and hence the score, can differ
//! from cell-eval's where the graph has no clear community structure (see `tests/eval_clustering.rs`).
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::knn::{knn_exact, umap_connectivities, Adjacency};
use super::leiden::leiden_modularity;
use super::{CellSource, MetricError, Side};

/// Which agreement score (`ClusteringAgreement._score`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgreementMetric {
    /// sklearn `adjusted_mutual_info_score` (the default).
    Ami,
    /// sklearn `normalized_mutual_info_score`.
    Nmi,
    /// `(adjusted_rand_score + 1) / 2`.
    Ari,
}

/// Parameters of [`clustering_agreement_with`]; [`Default`] is cell-eval's.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusteringParams {
    pub real_resolution: f64,
    pub pred_resolutions: Vec<f64>,
    pub metric: AgreementMetric,
    pub n_neighbors: usize,
    /// Seed of the Leiden RNG (re-seeded for every Leiden run, as scanpy's `random_state=0` is).
    pub seed: u64,
}

impl Default for ClusteringParams {
    fn default() -> Self {
        Self {
            real_resolution: 1.0,
            pred_resolutions: vec![0.2, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0],
            metric: AgreementMetric::Ami,
            n_neighbors: 15,
            seed: 0,
        }
    }
}

/// Leiden's `beta` (python-igraph `Graph.community_leiden` default).
const LEIDEN_BETA: f64 = 0.01;
/// scanpy `tl.leiden(flavor="igraph")` as cell-eval calls it.
const LEIDEN_ITERATIONS: usize = 2;

/// Best AMI between Leiden clusters of real and predicted perturbation centroids, cell-eval's defaults.
pub fn clustering_agreement(cells: &dyn CellSource, perts: &[String]) -> Result<f64, MetricError> {
    clustering_agreement_with(cells, perts, &ClusteringParams::default())
}

/// [`clustering_agreement`] with explicit parameters. `perts` are the non-control perturbations.
pub fn clustering_agreement_with(
    cells: &dyn CellSource,
    perts: &[String],
    params: &ClusteringParams,
) -> Result<f64, MetricError> {
    let mut sorted: Vec<String> = perts.to_vec();
    sorted.sort();
    sorted.dedup();
    let (real, d) = cells.centroids(Side::Real, &sorted)?;
    let (pred, d2) = cells.centroids(Side::Pred, &sorted)?;
    if d != d2 {
        return Err(MetricError::Input(format!("clustering_agreement: real has {d} features, pred {d2}")));
    }
    let n = sorted.len();
    let real_graph = neighbor_graph(&real, n, d, params.n_neighbors)?;
    let pred_graph = neighbor_graph(&pred, n, d, params.n_neighbors)?;
    let real_labels = leiden_labels(&real_graph, params.real_resolution, params.seed);
    let mut best = 0.0f64;
    for &r in &params.pred_resolutions {
        let pred_labels = leiden_labels(&pred_graph, r, params.seed);
        let score = match params.metric {
            AgreementMetric::Ami => adjusted_mutual_info(&real_labels, &pred_labels),
            AgreementMetric::Nmi => normalized_mutual_info(&real_labels, &pred_labels),
            AgreementMetric::Ari => (adjusted_rand(&real_labels, &pred_labels) + 1.0) / 2.0,
        };
        // python's max(best, score): a NaN score never replaces best
        if score > best {
            best = score;
        }
    }
    Ok(best)
}

/// `sc.pp.neighbors(n_neighbors=min(n_neighbors, n − 1), use_rep="X")` connectivities of `n` centroids.
pub fn neighbor_graph(points: &[f64], n: usize, d: usize, n_neighbors: usize) -> Result<Adjacency, MetricError> {
    if n < 2 {
        // scanpy cannot build a neighbour graph of fewer than two points
        return Err(MetricError::Input(format!("clustering_agreement needs at least 2 perturbations, got {n}")));
    }
    let k = n_neighbors.min(n - 1);
    if k < 2 {
        // n_neighbors = 1 (two perturbations): self only; umap then has no neighbour to connect
        return Ok(vec![Vec::new(); n]);
    }
    let (idx, dist) = knn_exact(points, n, d, k);
    Ok(umap_connectivities(&idx, &dist))
}

/// `sc.tl.leiden(resolution, flavor="igraph", n_iterations=2, random_state=seed)` memberships. scanpy builds the
/// igraph graph from every stored entry of the symmetric matrix (`get_igraph_from_adjacency`, so each pair appears
/// as two parallel edges): the weights are doubled here, which matters for the refinement's exp(Δ/β).
pub fn leiden_labels(adj: &Adjacency, resolution: f64, seed: u64) -> Vec<usize> {
    let doubled: Adjacency = adj.iter().map(|a| a.iter().map(|&(u, w)| (u, 2.0 * w)).collect()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    leiden_modularity(&doubled, resolution, LEIDEN_BETA, LEIDEN_ITERATIONS, &mut rng)
}

/// Contingency table of two labelings (labels renumbered by first appearance): (table, row sums, col sums).
fn contingency(a: &[usize], b: &[usize]) -> (Vec<Vec<u64>>, Vec<u64>, Vec<u64>) {
    fn relabel(x: &[usize]) -> (Vec<usize>, usize) {
        let mut map = std::collections::BTreeMap::new();
        for &v in x {
            let next = map.len();
            map.entry(v).or_insert(next);
        }
        (x.iter().map(|v| map.get(v).copied().unwrap_or(0)).collect(), map.len())
    }
    let (ra, na) = relabel(a);
    let (rb, nb) = relabel(b);
    let mut t = vec![vec![0u64; nb]; na];
    for (&i, &j) in ra.iter().zip(&rb) {
        t[i][j] += 1;
    }
    let rows = t.iter().map(|r| r.iter().sum()).collect();
    let cols = (0..nb).map(|j| t.iter().map(|r| r[j]).sum()).collect();
    (t, rows, cols)
}

/// sklearn `entropy` (natural log) of label counts.
fn entropy(counts: &[u64]) -> f64 {
    let pi: Vec<f64> = counts.iter().filter(|&&c| c > 0).map(|&c| c as f64).collect();
    if pi.len() <= 1 {
        return 0.0;
    }
    let s: f64 = pi.iter().sum();
    -pi.iter().map(|&p| (p / s) * (p.ln() - s.ln())).sum::<f64>()
}

/// sklearn `mutual_info_score` from a contingency table (`sklearn/metrics/cluster/_supervised.py`).
fn mutual_info(t: &[Vec<u64>], rows: &[u64], cols: &[u64]) -> f64 {
    if rows.len() == 1 || cols.len() == 1 {
        return 0.0;
    }
    let n: u64 = rows.iter().sum();
    let nf = n as f64;
    let (ln_pi_sum, ln_pj_sum) = (nf.ln(), nf.ln());
    let mut mi = 0.0;
    for (i, r) in t.iter().enumerate() {
        for (j, &nij) in r.iter().enumerate() {
            if nij == 0 {
                continue;
            }
            let v = nij as f64;
            let c_nm = v / nf;
            let outer = (rows[i] * cols[j]) as f64;
            let log_outer = -outer.ln() + ln_pi_sum + ln_pj_sum;
            let term = c_nm * (v.ln() - nf.ln()) + c_nm * log_outer;
            mi += if term.abs() < f64::EPSILON { 0.0 } else { term };
        }
    }
    mi.max(0.0)
}

/// `ln(k!)` for k = 0..=n.
fn ln_factorials(n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n + 1);
    let mut acc = 0.0f64;
    out.push(0.0);
    for k in 1..=n {
        acc += (k as f64).ln();
        out.push(acc);
    }
    out
}

/// sklearn `expected_mutual_information` (`_expected_mutual_info_fast.pyx`).
fn expected_mutual_info(rows: &[u64], cols: &[u64], n: u64) -> f64 {
    if rows.len() == 1 || cols.len() == 1 {
        return 0.0;
    }
    let nn = n as usize;
    let lf = ln_factorials(nn);
    let nf = n as f64;
    let mut emi = 0.0;
    for &a in rows {
        for &b in cols {
            let (a_, b_) = (a as usize, b as usize);
            let start = 1usize.max((a_ + b_).saturating_sub(nn));
            let end = a_.min(b_);
            let gln_const = lf[a_] + lf[b_] + lf[nn - a_] + lf[nn - b_] - lf[nn];
            for nij in start..=end {
                let term1 = nij as f64 / nf;
                let term2 = (nf.ln() + (nij as f64).ln()) - (a as f64).ln() - (b as f64).ln();
                let gln = gln_const - lf[nij] - lf[a_ - nij] - lf[b_ - nij] - lf[nn + nij - a_ - b_];
                emi += term1 * term2 * gln.exp();
            }
        }
    }
    emi
}

/// sklearn `adjusted_mutual_info_score(average_method="arithmetic")`.
pub fn adjusted_mutual_info(labels_true: &[usize], labels_pred: &[usize]) -> f64 {
    let (t, rows, cols) = contingency(labels_true, labels_pred);
    if (rows.len() == 1 && cols.len() == 1) || (rows.is_empty() && cols.is_empty()) {
        return 1.0;
    }
    let n: u64 = rows.iter().sum();
    let mi = mutual_info(&t, &rows, &cols);
    let emi = expected_mutual_info(&rows, &cols, n);
    let normalizer = (entropy(&rows) + entropy(&cols)) / 2.0;
    let mut denominator = normalizer - emi;
    if denominator < 0.0 {
        denominator = denominator.min(-f64::EPSILON);
    } else {
        denominator = denominator.max(f64::EPSILON);
    }
    (mi - emi) / denominator
}

/// sklearn `normalized_mutual_info_score(average_method="arithmetic")`.
pub fn normalized_mutual_info(labels_true: &[usize], labels_pred: &[usize]) -> f64 {
    let (t, rows, cols) = contingency(labels_true, labels_pred);
    if (rows.len() == 1 && cols.len() == 1) || (rows.is_empty() && cols.is_empty()) {
        return 1.0;
    }
    let mi = mutual_info(&t, &rows, &cols);
    if mi == 0.0 {
        return 0.0;
    }
    mi / ((entropy(&rows) + entropy(&cols)) / 2.0)
}

/// sklearn `adjusted_rand_score` (`sklearn/metrics/cluster/_supervised.py`, via `pair_confusion_matrix`, in
/// integers as sklearn converts to Python ints).
pub fn adjusted_rand(labels_true: &[usize], labels_pred: &[usize]) -> f64 {
    let (t, n_c, n_k) = contingency(labels_true, labels_pred);
    let n = i128::from(n_c.iter().sum::<u64>());
    let sum_sq: i128 = t.iter().flatten().map(|&x| i128::from(x) * i128::from(x)).sum();
    let mut dot_k: i128 = 0;
    let mut dot_c: i128 = 0;
    for (i, r) in t.iter().enumerate() {
        for (j, &nij) in r.iter().enumerate() {
            dot_k += i128::from(nij) * i128::from(n_k[j]);
            dot_c += i128::from(nij) * i128::from(n_c[i]);
        }
    }
    let tp = sum_sq - n;
    let fp = dot_k - sum_sq;
    let fn_ = dot_c - sum_sq;
    let tn = n * n - fp - fn_ - sum_sq;
    if fn_ == 0 && fp == 0 {
        return 1.0;
    }
    let num = tp * tn - fn_ * fp;
    let den = (tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn);
    2.0 * (num as f64) / (den as f64)
}
