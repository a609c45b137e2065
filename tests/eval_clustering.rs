#![allow(clippy::unwrap_used)]
//! `clustering_agreement`: agreement scores (sklearn definitions), scanpy/umap kNN connectivities, igraph-style
//! Leiden, and the metric against cell-eval's `results.csv`.
mod metrics_support;

use metrics_support::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vcell::eval::metrics::clustering::{
    adjusted_mutual_info, adjusted_rand, clustering_agreement, leiden_labels, neighbor_graph, normalized_mutual_info,
};
use vcell::eval::metrics::knn::{knn_exact, umap_connectivities, Adjacency};
use vcell::eval::metrics::leiden::{leiden_modularity, modularity};
use vcell::eval::metrics::{CellSource, DenseCells, MetricError, Side};

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() <= tol, "{a} vs {b}");
}

// ---- agreement scores -------------------------------------------------------------------------------------------

/// sklearn docstring examples and values from the textbook formulas (Vinh, Epps & Bailey 2010), computed with a
/// separate Python script using math.lgamma.
#[test]
fn ami_nmi_ari_sklearn_examples() {
    // perfect agreement, up to relabelling
    assert_eq!(adjusted_mutual_info(&[0, 0, 1, 1], &[0, 0, 1, 1]), 1.0);
    assert_eq!(adjusted_mutual_info(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
    assert_eq!(normalized_mutual_info(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
    assert_eq!(adjusted_rand(&[0, 0, 1, 1], &[1, 1, 0, 0]), 1.0);
    // one class fully split: null
    assert_eq!(adjusted_mutual_info(&[0, 0, 0, 0], &[0, 1, 2, 3]), 0.0);
    assert_eq!(normalized_mutual_info(&[0, 0, 0, 0], &[0, 1, 2, 3]), 0.0);
    assert_eq!(adjusted_rand(&[0, 0, 0, 0], &[0, 1, 2, 3]), 0.0);
    // both single-cluster: sklearn's special case 1.0
    assert_eq!(adjusted_mutual_info(&[3, 3, 3], &[7, 7, 7]), 1.0);
    // adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1]) == 0.57… (= 4/7), symmetric
    close(adjusted_rand(&[0, 0, 1, 2], &[0, 0, 1, 1]), 4.0 / 7.0, 1e-15);
    close(adjusted_rand(&[0, 0, 1, 1], &[0, 0, 1, 2]), 4.0 / 7.0, 1e-15);
    // AMI / NMI of [0,0,1,1] vs [0,0,1,2]
    close(adjusted_mutual_info(&[0, 0, 1, 1], &[0, 0, 1, 2]), 0.5714285714285712, 1e-12);
    close(normalized_mutual_info(&[0, 0, 1, 1], &[0, 0, 1, 2]), 0.8, 1e-12);
    let a = [0, 0, 0, 1, 1, 1, 2, 2];
    let b = [0, 0, 1, 1, 2, 2, 2, 2];
    close(adjusted_mutual_info(&a, &b), 0.27454164973683187, 1e-12);
    close(normalized_mutual_info(&a, &b), 0.5300257549140326, 1e-12);
}

// ---- kNN connectivities -----------------------------------------------------------------------------------------

fn weight(adj: &Adjacency, i: usize, j: usize) -> f64 {
    adj[i].iter().find(|(u, _)| *u == j).map_or(0.0, |(_, w)| *w)
}

/// Points 0, 1, 3, 7 on a line, n_neighbors = 3 (self + 2). With two neighbours umap's binary search solves
/// 1 + exp(−(d₂ − ρ)/σ) = log2(3), so the nearest gets 1 and the second p = log2(3) − 1 (to 1e-5).
/// Directed: 0→{1:1, 2:p}, 1→{0:1, 2:p}, 2→{1:1, 0:p}, 3→{2:1, 1:p}; the fuzzy union a + b − ab gives
/// (0,1) = 1, (0,2) = 2p − p², (1,2) = 1, (1,3) = p, (2,3) = 1, (0,3) = 0.
#[test]
fn umap_connectivities_by_hand() {
    let pts = [0.0, 1.0, 3.0, 7.0];
    let (idx, dist) = knn_exact(&pts, 4, 1, 3);
    assert_eq!(idx, vec![vec![0, 1, 2], vec![1, 0, 2], vec![2, 1, 0], vec![3, 2, 1]]);
    assert_eq!(dist[3], vec![0.0, 4.0, 6.0]);
    let adj = umap_connectivities(&idx, &dist);
    let p = 3f64.log2() - 1.0;
    let tol = 1e-4;
    close(weight(&adj, 0, 1), 1.0, 1e-7);
    close(weight(&adj, 0, 2), 2.0 * p - p * p, tol);
    close(weight(&adj, 1, 2), 1.0, 1e-7);
    close(weight(&adj, 1, 3), p, tol);
    close(weight(&adj, 2, 3), 1.0, 1e-7);
    assert_eq!(weight(&adj, 0, 3), 0.0);
    // symmetric, no self-loops
    for i in 0..4 {
        assert_eq!(weight(&adj, i, i), 0.0);
        for j in 0..4 {
            assert_eq!(weight(&adj, i, j), weight(&adj, j, i));
        }
    }
}

// ---- Leiden -------------------------------------------------------------------------------------------------------

/// `k` cliques of size `s`; clique c is joined to clique c+1 by one edge (a ring if `ring`).
fn cliques(k: usize, s: usize, ring: bool) -> Adjacency {
    let n = k * s;
    let mut adj: Adjacency = vec![Vec::new(); n];
    let add = |a: usize, b: usize, adj: &mut Adjacency| {
        adj[a].push((b, 1.0));
        adj[b].push((a, 1.0));
    };
    for c in 0..k {
        for i in 0..s {
            for j in i + 1..s {
                add(c * s + i, c * s + j, &mut adj);
            }
        }
        if c + 1 < k || (ring && k > 2) {
            add(c * s + s - 1, ((c + 1) % k) * s, &mut adj);
        }
    }
    for a in &mut adj {
        a.sort_by_key(|&(u, _)| u);
    }
    adj
}

fn clique_partition(k: usize, s: usize) -> Vec<usize> {
    (0..k * s).map(|v| v / s).collect()
}

#[test]
fn leiden_two_cliques() {
    let adj = cliques(2, 5, false);
    for seed in 0..20 {
        let m = leiden_labels(&adj, 1.0, seed);
        assert_eq!(adjusted_rand(&m, &clique_partition(2, 5)), 1.0, "seed {seed}: {m:?}");
    }
}

#[test]
fn leiden_ring_of_cliques() {
    let (k, s) = (8, 6);
    let adj = cliques(k, s, true);
    let want = clique_partition(k, s);
    for seed in 0..20 {
        let m = leiden_labels(&adj, 1.0, seed);
        assert_eq!(adjusted_rand(&m, &want), 1.0, "seed {seed}: {m:?}");
        close(modularity(&adj, &m, 1.0), modularity(&adj, &want, 1.0), 1e-12);
    }
    // a low resolution merges neighbouring cliques
    let m = leiden_labels(&adj, 0.1, 0);
    assert!(m.iter().max().unwrap() + 1 < k);
}

#[test]
fn leiden_is_deterministic_per_seed() {
    // a noisy graph without clean structure: results depend on the seed but are reproducible
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let n = 60;
    let pts: Vec<f64> = (0..n * 3).map(|_| rand::Rng::random::<f64>(&mut rng)).collect();
    let adj = neighbor_graph(&pts, n, 3, 15).unwrap();
    for seed in 0..5 {
        let a = leiden_labels(&adj, 1.0, seed);
        let b = leiden_labels(&adj, 1.0, seed);
        assert_eq!(a, b);
        // the partition is at least as good as all-in-one (modularity 0) and as singletons
        assert!(modularity(&adj, &a, 1.0) > 0.0);
    }
    let mut r = ChaCha8Rng::seed_from_u64(1);
    let m = leiden_modularity(&adj, 1.0, 0.01, 2, &mut r);
    assert_eq!(m.len(), n);
}

// ---- the metric ---------------------------------------------------------------------------------------------------

struct PairCells(Cells, Cells);

impl CellSource for PairCells {
    fn cells(&self, side: Side, label: &str) -> Result<DenseCells, MetricError> {
        let c = match side {
            Side::Real => &self.0,
            Side::Pred => &self.1,
        };
        let mut data = Vec::new();
        let mut n = 0;
        for (i, l) in c.labels.iter().enumerate() {
            if l == label {
                data.extend_from_slice(&c.data[i * c.n_cols..(i + 1) * c.n_cols]);
                n += 1;
            }
        }
        Ok(DenseCells { n_rows: n, n_cols: c.n_cols, data })
    }
}

/// Synthetic centroids in 3 well-separated groups; pred = real + small noise: the metric is 1.0.
#[test]
fn clustering_agreement_separated_groups() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut real = Cells { n_cols: 10, data: Vec::new(), labels: Vec::new(), genes: Vec::new() };
    let mut pred = Cells { n_cols: 10, data: Vec::new(), labels: Vec::new(), genes: Vec::new() };
    let mut perts = Vec::new();
    for p in 0..24 {
        let group = p % 3;
        let name = format!("P{p:02}");
        perts.push(name.clone());
        for _cell in 0..4 {
            for g in 0..10 {
                let base = if g / 3 == group { 10.0 } else { 0.0 };
                let x: f64 = base + rand::Rng::random::<f64>(&mut rng);
                real.data.push(x as f32);
                pred.data.push((x + 0.1 * rand::Rng::random::<f64>(&mut rng)) as f32);
            }
            real.labels.push(name.clone());
            pred.labels.push(name.clone());
        }
    }
    let v = clustering_agreement(&PairCells(real, pred), &perts).unwrap();
    assert_eq!(v, 1.0);
}

/// cell-eval's values in the fixtures' `results.csv` (full profile) and ours.
///
/// Exact equality is expected only where the outcome does not hinge on Leiden's random choices: `tiny` (1.0,
/// real and pred centroids give the same partition). Elsewhere the score depends on igraph's RNG stream (scanpy's
/// `random_state=0` seeds igraph through Python's `random`), on sklearn's BLAS-based kNN distances (near-ties,
/// non-zero self-distances) and on float32 rounding in umap, none of which are reproduced bit for bit; those
/// cases are reported, and only checked to lie in cell-eval's range [0, 1].
///
/// Observed (seed 0): tiny 1.0 = 1.0, tiny_counts 0.0 = 0.0, small 0.0887 vs 0.0. In `small` the predicted
/// centroids (`pred_mode = noise`) have no cluster structure, so the pred partitions are essentially random draws:
/// Leiden seeds 2 and 4 give 0.0 like cell-eval, seeds 0, 1, 3, 5 give 0.089, 0.067, 0.135, 0.084.
/// Treating every self-distance as a tiny non-zero value (what sklearn's ‖x‖² − 2x·y + ‖y‖² can produce) flips
/// tiny_counts to 1.0, so exact zero self-distances are the better model of cell-eval's runs.
#[test]
fn clustering_agreement_vs_fixtures() {
    for (case, real, pred, exact) in [
        ("tiny", "tiny/real.h5ad", "tiny/pred.h5ad", true),
        ("tiny_counts", "tiny_counts/real.h5ad", "tiny_counts/pred.h5ad", false),
        ("small", "small/real.h5ad.gz", "small/pred.h5ad.gz", false),
    ] {
        let f = fixtures();
        if !f.join(real).exists() || !f.join(pred).exists() {
            eprintln!("{case}: inputs missing, skipped");
            continue;
        }
        let cells = PairCells(load_cells(&f.join(real)), load_cells(&f.join(pred)));
        let mut perts: Vec<String> = cells.0.labels.iter().filter(|l| *l != "non-targeting").cloned().collect();
        perts.sort();
        perts.dedup();
        let t = std::time::Instant::now();
        let v = clustering_agreement(&cells, &perts).unwrap();
        let (h, rows) = read_csv(&f.join(case).join("celleval/full/results.csv"));
        let j = h.iter().position(|c| c == "clustering_agreement").unwrap();
        let want: f64 = rows[0][j].parse().unwrap();
        eprintln!(
            "{case}: clustering_agreement ours {v} cell-eval {want} diff {:e} ({:?})",
            (v - want).abs(),
            t.elapsed()
        );
        assert!((0.0..=1.0).contains(&v));
        if exact {
            assert_eq!(v, want);
        }
    }
}
