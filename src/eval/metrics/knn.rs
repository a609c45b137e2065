//! Exact Euclidean kNN and scanpy's UMAP connectivities, as `sc.pp.neighbors(adata, n_neighbors, use_rep="X")`
//! computes them for small inputs.
//!
//! - `scanpy/neighbors/__init__.py::Neighbors._handle_transformer`: for Euclidean data with fewer than 8192
//!   observations scanpy uses a brute-force `sklearn.neighbors.KNeighborsTransformer(n_neighbors=min(n_obs - 1,
//!   n_neighbors))`, whose graph holds every point itself (distance 0) plus its `n_neighbors` nearest others;
//!   `_get_indices_distances_from_sparse_matrix` then keeps the first `n_neighbors` columns (self first), so each
//!   point has `n_neighbors - 1` true neighbours.
//! - `scanpy/neighbors/_connectivity.py::umap` calls `umap.umap_.fuzzy_simplicial_set` with those indices and
//!   distances (`set_op_mix_ratio = 1`, `local_connectivity = 1`): [`smooth_knn_dist`] (float32, binary search for
//!   σ, ρ = nearest non-zero distance), `compute_membership_strengths` (w = exp(−(d − ρ)/σ), self → 0), and the
//!   fuzzy union `A + Aᵀ − A∘Aᵀ`, all in float32.
//!
//! Difference from sklearn: distances here are computed directly, Σ(xᵢ − yᵢ)², in f64, whereas sklearn's
//! `ArgKmin` uses ‖x‖² − 2x·y + ‖y‖² (BLAS); the two agree to ~1e-12 relative but can order near-ties
//! differently, and sklearn's self-distance may come out as a tiny non-zero number instead of 0.
use rayon::prelude::*;

/// umap `SMOOTH_K_TOLERANCE` (`umap/umap_.py`).
const SMOOTH_K_TOLERANCE: f64 = 1e-5;
/// umap `MIN_K_DIST_SCALE` (`umap/umap_.py`).
const MIN_K_DIST_SCALE: f32 = 1e-3;

/// The `k` nearest points of each row of `points` (row-major, `n × d`), the point itself first; distances are
/// Euclidean. Ties are broken by the lower index. `k` is clamped to `n`.
pub fn knn_exact(points: &[f64], n: usize, d: usize, k: usize) -> (Vec<Vec<usize>>, Vec<Vec<f64>>) {
    let k = k.min(n);
    let row = |i: usize| &points[i * d..(i + 1) * d];
    // full pairwise distance matrix: n is the number of perturbations (≤ a few hundred)
    let dist: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|i| {
            let a = row(i);
            (0..n)
                .map(|j| {
                    if i == j {
                        0.0
                    } else {
                        a.iter().zip(row(j)).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
                    }
                })
                .collect()
        })
        .collect();
    let mut indices = Vec::with_capacity(n);
    let mut dists = Vec::with_capacity(n);
    for (i, di) in dist.iter().enumerate() {
        let mut order: Vec<usize> = (0..n).filter(|&j| j != i).collect();
        order.sort_by(|&a, &b| di[a].total_cmp(&di[b]).then(a.cmp(&b)));
        let mut idx = Vec::with_capacity(k);
        idx.push(i);
        idx.extend(order.into_iter().take(k.saturating_sub(1)));
        dists.push(idx.iter().map(|&j| di[j]).collect());
        indices.push(idx);
    }
    (indices, dists)
}

/// umap's `smooth_knn_dist` (`umap/umap_.py`, numba with float32 locals) with `local_connectivity = 1`,
/// `bandwidth = 1`, `n_iter = 64`: returns (σ, ρ) per row. `distances` rows hold the point itself first.
pub fn smooth_knn_dist(distances: &[Vec<f32>], k: f32) -> (Vec<f32>, Vec<f32>) {
    let target = f64::from(k).log2();
    let n_total: usize = distances.iter().map(Vec::len).sum();
    let mean_distances = if n_total == 0 {
        0.0
    } else {
        distances.iter().flatten().map(|&x| f64::from(x)).sum::<f64>() / n_total as f64
    };
    let mut sigmas = vec![0f32; distances.len()];
    let mut rhos = vec![0f32; distances.len()];
    for (i, row) in distances.iter().enumerate() {
        let mut lo = 0f32;
        let mut hi = f32::INFINITY;
        let mut mid = 1f32;
        // local_connectivity = 1: ρ = the first non-zero distance (or the largest, if fewer)
        let rho = row.iter().copied().find(|&x| x > 0.0).unwrap_or(0.0);
        rhos[i] = rho;
        for _ in 0..64 {
            let mut psum = 0f32;
            for &dij in row.iter().skip(1) {
                let dd = dij - rho;
                psum += if dd > 0.0 { (-(dd / mid)).exp() } else { 1.0 };
            }
            if (f64::from(psum) - target).abs() < SMOOTH_K_TOLERANCE {
                break;
            }
            if f64::from(psum) > target {
                hi = mid;
                mid = (lo + hi) / 2.0;
            } else {
                lo = mid;
                if hi == f32::INFINITY {
                    mid *= 2.0;
                } else {
                    mid = (lo + hi) / 2.0;
                }
            }
        }
        let mut sigma = mid;
        if rho > 0.0 {
            let mean_ith = if row.is_empty() {
                0.0
            } else {
                (row.iter().map(|&x| f64::from(x)).sum::<f64>() / row.len() as f64) as f32
            };
            if sigma < MIN_K_DIST_SCALE * mean_ith {
                sigma = MIN_K_DIST_SCALE * mean_ith;
            }
        } else if sigma < MIN_K_DIST_SCALE * mean_distances as f32 {
            sigma = MIN_K_DIST_SCALE * mean_distances as f32;
        }
        sigmas[i] = sigma;
    }
    (sigmas, rhos)
}

/// A symmetric weighted graph as adjacency lists sorted by neighbour: `adj[v] = [(u, w), …]`, no self-loops.
pub type Adjacency = Vec<Vec<(usize, f64)>>;

/// scanpy's `connectivities` for the given kNN (`umap.fuzzy_simplicial_set`): float32 membership strengths,
/// then the fuzzy union `a + aᵀ − a∘aᵀ`; entries that are 0 are dropped (`eliminate_zeros`).
pub fn umap_connectivities(indices: &[Vec<usize>], dists: &[Vec<f64>]) -> Adjacency {
    let n = indices.len();
    let k = indices.first().map_or(0, Vec::len);
    let d32: Vec<Vec<f32>> = dists.iter().map(|r| r.iter().map(|&x| x as f32).collect()).collect();
    let (sigmas, rhos) = smooth_knn_dist(&d32, k as f32);
    // directed memberships (umap compute_membership_strengths); a dense n × n is fine at this size
    let mut a = vec![0f32; n * n];
    for i in 0..n {
        for (&j, &dij) in indices[i].iter().zip(&d32[i]) {
            let val = if j == i {
                0.0
            } else if dij - rhos[i] <= 0.0 || sigmas[i] == 0.0 {
                1.0
            } else {
                (-((dij - rhos[i]) / sigmas[i])).exp()
            };
            // coo → csr sums duplicates; indices are distinct per row
            a[i * n + j] += val;
        }
    }
    let mut adj: Adjacency = vec![Vec::new(); n];
    for i in 0..n {
        for j in 0..n {
            let x = a[i * n + j];
            let y = a[j * n + i];
            let w = (x + y) - x * y;
            if w != 0.0 && i != j {
                adj[i].push((j, f64::from(w)));
            }
        }
    }
    adj
}
