//! The Leiden algorithm as igraph implements it (`igraph/src/community/leiden.c`, `igraph_community_leiden`), used
//! the way `scanpy.tl.leiden(flavor="igraph", n_iterations=2)` calls it through python-igraph's
//! `Graph.community_leiden(objective_function="modularity", weights=…, resolution=…, beta=0.01)`:
//!
//! - node weights are the strengths (weighted degrees) and the resolution is divided by their sum, so the
//!   quality is modularity `1/2m Σ_ij (A_ij − γ k_i k_j / 2m) δ(σ_i, σ_j)`;
//! - each iteration runs local moving (queue-based, strictly improving moves, an empty cluster always a
//!   candidate), refinement inside each cluster (only well-connected singletons merge; the target is drawn with
//!   probability ∝ exp(Δ/β) among non-negative Δ, or the best Δ when that sum overflows), and aggregation on the
//!   refined partition with the unrefined one as the starting partition, until every cluster is a single node;
//! - `n_iterations` such iterations are run, each starting from the previous result.
//!
//! Randomness (node order shuffles, the refinement draw) comes from a seeded ChaCha RNG here, not igraph's RNG
//! (which scanpy seeds from Python's `random` with `random_state=0`), so memberships are deterministic but not
//! bit-identical to igraph's; on graphs with clear community structure both find the same partition.
use rand::Rng;

use super::knn::Adjacency;

/// A weighted undirected graph in adjacency-list form (each edge listed at both ends, no self-loops).
#[derive(Debug, Clone)]
struct Graph {
    adj: Adjacency,
    node_weights: Vec<f64>,
}

/// igraph's `igraph_vector_int_shuffle` (Fisher–Yates from the back).
fn shuffle<R: Rng>(v: &mut [usize], rng: &mut R) {
    for k in (1..v.len()).rev() {
        let j = rng.random_range(0..=k);
        v.swap(k, j);
    }
}

/// Renumbers clusters 0.. in order of first appearance (`igraph_reindex_membership`); returns the count.
fn reindex(membership: &mut [usize]) -> usize {
    let mut map: Vec<Option<usize>> = vec![None; membership.iter().copied().max().map_or(0, |m| m + 1)];
    let mut next = 0;
    for m in membership.iter_mut() {
        let id = match map[*m] {
            Some(id) => id,
            None => {
                map[*m] = Some(next);
                next += 1;
                next - 1
            }
        };
        *m = id;
    }
    next
}

/// `igraph_i_community_leiden_fastmovenodes`: greedy queue-based local moving; updates `membership` in place,
/// reindexes it and returns the number of clusters.
fn fast_move_nodes<R: Rng>(g: &Graph, resolution: f64, membership: &mut [usize], rng: &mut R) -> usize {
    let n = g.adj.len();
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, rng);
    let mut queue: std::collections::VecDeque<usize> = order.into_iter().collect();
    let mut stable = vec![false; n];
    let mut cluster_weights = vec![0f64; n];
    let mut nb_nodes = vec![0usize; n];
    for v in 0..n {
        cluster_weights[membership[v]] += g.node_weights[v];
        nb_nodes[membership[v]] += 1;
    }
    let mut empty: Vec<usize> = (0..n).filter(|&c| nb_nodes[c] == 0).collect();
    let mut w_to = vec![0f64; n];
    let mut added = vec![false; n];
    let mut neigh: Vec<usize> = Vec::with_capacity(n);
    while let Some(v) = queue.pop_front() {
        let current = membership[v];
        cluster_weights[current] -= g.node_weights[v];
        nb_nodes[current] -= 1;
        if nb_nodes[current] == 0 {
            empty.push(current);
        }
        neigh.clear();
        // the top empty cluster is always a candidate (there is one: v's removal or an earlier empty cluster)
        if let Some(&c) = empty.last() {
            neigh.push(c);
            added[c] = true;
        }
        for &(u, w) in &g.adj[v] {
            if u != v {
                let c = membership[u];
                if !added[c] {
                    added[c] = true;
                    neigh.push(c);
                }
                w_to[c] += w;
            }
        }
        let kv = g.node_weights[v];
        let mut best = current;
        let mut max_diff = w_to[current] - kv * cluster_weights[current] * resolution;
        for &c in &neigh {
            let diff = w_to[c] - kv * cluster_weights[c] * resolution;
            if diff > max_diff {
                best = c;
                max_diff = diff;
            }
            w_to[c] = 0.0;
            added[c] = false;
        }
        cluster_weights[best] += kv;
        nb_nodes[best] += 1;
        if empty.last() == Some(&best) {
            empty.pop();
        }
        stable[v] = true;
        if best != current {
            membership[v] = best;
            for &(u, _) in &g.adj[v] {
                if stable[u] && membership[u] != best {
                    queue.push_back(u);
                    stable[u] = false;
                }
            }
        }
    }
    reindex(membership)
}

/// `igraph_i_community_leiden_mergenodes` for one cluster `subset` (nodes with `membership == cluster`): refined
/// labels of those nodes are set to `*nb_refined ..` (consecutive, in order of the subset's nodes).
#[allow(clippy::too_many_arguments)]
fn merge_nodes<R: Rng>(
    g: &Graph,
    subset: &[usize],
    membership: &[usize],
    cluster: usize,
    resolution: f64,
    beta: f64,
    nb_refined: &mut usize,
    refined: &mut [usize],
    rng: &mut R,
) {
    let n = subset.len();
    // local index of each refined cluster: subset position
    let mut cluster_weights = vec![0f64; n];
    let mut external = vec![0f64; n];
    let mut total = 0f64;
    for (i, &v) in subset.iter().enumerate() {
        refined[v] = i;
        cluster_weights[i] += g.node_weights[v];
        total += g.node_weights[v];
        for &(u, w) in &g.adj[v] {
            if u != v && membership[u] == cluster {
                external[i] += w;
            }
        }
    }
    let mut order = subset.to_vec();
    shuffle(&mut order, rng);
    let mut non_singleton = vec![false; n];
    let mut w_to = vec![0f64; n];
    let mut added = vec![false; n];
    let mut neigh: Vec<usize> = Vec::with_capacity(n);
    let mut cum: Vec<f64> = Vec::with_capacity(n);
    for &v in &order {
        let current = refined[v];
        let well_connected = |c: usize, cw: &[f64], ext: &[f64]| ext[c] >= cw[c] * (total - cw[c]) * resolution;
        if non_singleton[current] || !well_connected(current, &cluster_weights, &external) {
            continue;
        }
        cluster_weights[current] = 0.0;
        neigh.clear();
        cum.clear();
        neigh.push(current);
        added[current] = true;
        for &(u, w) in &g.adj[v] {
            if u != v && membership[u] == cluster {
                let c = refined[u];
                if !added[c] {
                    added[c] = true;
                    neigh.push(c);
                }
                w_to[c] += w;
            }
        }
        let kv = g.node_weights[v];
        let mut best = current;
        let mut max_diff = 0.0;
        let mut total_cum = 0.0;
        for &c in &neigh {
            if well_connected(c, &cluster_weights, &external) {
                let diff = w_to[c] - kv * cluster_weights[c] * resolution;
                if diff > max_diff {
                    best = c;
                    max_diff = diff;
                }
                if diff >= 0.0 {
                    total_cum += (diff / beta).exp();
                }
            }
            cum.push(total_cum);
            w_to[c] = 0.0;
            added[c] = false;
        }
        let chosen = if total_cum < f64::INFINITY {
            let r = rng.random::<f64>() * total_cum;
            // igraph_vector_binsearch_slice: first position whose cumulative value is ≥ r
            let idx = cum.partition_point(|&x| x < r).min(neigh.len() - 1);
            neigh[idx]
        } else {
            best
        };
        cluster_weights[chosen] += kv;
        for &(u, w) in &g.adj[v] {
            if membership[u] == cluster {
                if refined[u] == chosen {
                    external[chosen] -= w;
                } else {
                    external[chosen] += w;
                }
            }
        }
        if chosen != current {
            refined[v] = chosen;
            non_singleton[chosen] = true;
        }
    }
    // igraph_i_community_leiden_clean_refined_membership
    let mut new_id: Vec<Option<usize>> = vec![None; n];
    for &v in subset {
        let c = refined[v];
        let id = match new_id[c] {
            Some(id) => id,
            None => {
                new_id[c] = Some(*nb_refined);
                *nb_refined += 1;
                *nb_refined - 1
            }
        };
        refined[v] = id;
    }
}

/// `igraph_i_community_leiden_aggregate`: one node per refined cluster, edges between distinct refined clusters
/// (summed weights, no self-loops), node weights summed; returns the graph and each aggregate node's cluster.
fn aggregate(g: &Graph, membership: &[usize], refined: &[usize], nb_refined: usize) -> (Graph, Vec<usize>) {
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); nb_refined];
    for (v, &c) in refined.iter().enumerate() {
        members[c].push(v);
    }
    let mut adj: Adjacency = vec![Vec::new(); nb_refined];
    let mut node_weights = vec![0f64; nb_refined];
    let mut agg_membership = vec![0usize; nb_refined];
    let mut w_to = vec![0f64; nb_refined];
    let mut added = vec![false; nb_refined];
    let mut neigh = Vec::new();
    for c in 0..nb_refined {
        neigh.clear();
        for &v in &members[c] {
            for &(u, w) in &g.adj[v] {
                let c2 = refined[u];
                if c2 > c {
                    if !added[c2] {
                        added[c2] = true;
                        neigh.push(c2);
                    }
                    w_to[c2] += w;
                }
            }
            node_weights[c] += g.node_weights[v];
            agg_membership[c] = membership[v];
        }
        for &c2 in &neigh {
            adj[c].push((c2, w_to[c2]));
            adj[c2].push((c, w_to[c2]));
            w_to[c2] = 0.0;
            added[c2] = false;
        }
    }
    for a in &mut adj {
        a.sort_by_key(|&(u, _)| u);
    }
    (Graph { adj, node_weights }, agg_membership)
}

/// One Leiden iteration (`igraph_i_community_leiden`); updates `membership` in place.
fn leiden_iteration<R: Rng>(base: &Graph, resolution: f64, beta: f64, membership: &mut [usize], rng: &mut R) {
    let n = base.adj.len();
    reindex(membership);
    let mut aggregate_node: Vec<usize> = (0..n).collect();
    let mut graph = base.clone();
    let mut agg_membership = membership.to_vec();
    let mut level = 0;
    loop {
        let nb_clusters = fast_move_nodes(&graph, resolution, &mut agg_membership, rng);
        if level == 0 {
            membership.copy_from_slice(&agg_membership);
        }
        if nb_clusters >= graph.adj.len() {
            break;
        }
        if level > 0 {
            for i in 0..n {
                membership[i] = agg_membership[aggregate_node[i]];
            }
        }
        let mut clusters: Vec<Vec<usize>> = vec![Vec::new(); nb_clusters];
        for (v, &c) in agg_membership.iter().enumerate() {
            clusters[c].push(v);
        }
        let mut refined = vec![0usize; graph.adj.len()];
        let mut nb_refined = 0;
        for (c, subset) in clusters.iter().enumerate() {
            merge_nodes(&graph, subset, &agg_membership, c, resolution, beta, &mut nb_refined, &mut refined, rng);
        }
        if nb_refined >= graph.adj.len() {
            refined.copy_from_slice(&agg_membership);
            nb_refined = nb_clusters;
        }
        for a in aggregate_node.iter_mut() {
            *a = refined[*a];
        }
        let (next, next_membership) = aggregate(&graph, &agg_membership, &refined, nb_refined);
        graph = next;
        agg_membership = next_membership;
        level += 1;
    }
}

/// Leiden with modularity (python-igraph `community_leiden(objective_function="modularity")`): node weights =
/// strengths, resolution / Σ strengths, `beta`, `n_iterations` iterations from the singleton partition. Returns
/// the membership, clusters numbered 0.. in order of first appearance.
pub fn leiden_modularity<R: Rng>(
    adj: &Adjacency,
    resolution: f64,
    beta: f64,
    n_iterations: usize,
    rng: &mut R,
) -> Vec<usize> {
    let n = adj.len();
    let node_weights: Vec<f64> = adj.iter().map(|a| a.iter().map(|&(_, w)| w).sum()).collect();
    let total: f64 = node_weights.iter().sum();
    let res = if total > 0.0 { resolution / total } else { resolution };
    let g = Graph { adj: adj.clone(), node_weights };
    let mut membership: Vec<usize> = (0..n).collect();
    for _ in 0..n_iterations {
        leiden_iteration(&g, res, beta, &mut membership, rng);
    }
    reindex(&mut membership);
    membership
}

/// Modularity of a partition, `1/2m Σ_ij (A_ij − γ k_i k_j / 2m) δ(c_i, c_j)` (for tests and diagnostics).
pub fn modularity(adj: &Adjacency, membership: &[usize], resolution: f64) -> f64 {
    let k: Vec<f64> = adj.iter().map(|a| a.iter().map(|&(_, w)| w).sum()).collect();
    let two_m: f64 = k.iter().sum();
    if two_m == 0.0 {
        return 0.0;
    }
    let nc = membership.iter().copied().max().map_or(0, |m| m + 1);
    let mut kc = vec![0f64; nc];
    let mut internal = 0.0;
    for (v, a) in adj.iter().enumerate() {
        kc[membership[v]] += k[v];
        for &(u, w) in a {
            if membership[u] == membership[v] {
                internal += w;
            }
        }
    }
    let expected: f64 = kc.iter().map(|x| x * x).sum::<f64>() * resolution / two_m;
    (internal - expected) / two_m
}
