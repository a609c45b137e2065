//! Perturbation discrimination score (`discrimination_score`, `cell_eval/metrics/_anndata.py`).
//!
//! For perturbation p: distances from pred's delta of p to the real delta of every perturbation q (p included),
//! over all genes except the one whose var name equals p (expression space only). rank = #{q: d_q < d_p} (numpy's
//! argsort is unstable, so exact ties are unspecified; none occur in the fixtures); score = 1 − rank/N.
use std::ops::Range;

use rayon::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distance {
    /// scipy `cdist(..., "cityblock")` in f64.
    L1,
    /// Euclidean distance (sklearn computes it in f64 from f32 data).
    L2,
    /// 1 − cosine similarity.
    Cosine,
}

impl Distance {
    pub fn name(self) -> &'static str {
        match self {
            Distance::L1 => "l1",
            Distance::L2 => "l2",
            Distance::Cosine => "cosine",
        }
    }

    /// Distances from `b` to every row of `rows`, over the genes of `segments` (in order). Each distance is summed
    /// in f64 in gene order, one term after the other, as scipy's `cdist` loop does (see [`lane_sums`]).
    fn distances(self, rows: &[Vec<f32>], b: &[f32], segments: &[Range<usize>]) -> Vec<f64> {
        match self {
            Distance::L1 => lane_sums(rows, b, segments, |x, y| [(x - y).abs()]).into_iter().map(|[s]| s).collect(),
            Distance::L2 => {
                lane_sums(rows, b, segments, |x, y| [(x - y) * (x - y)]).into_iter().map(|[s]| s.sqrt()).collect()
            }
            Distance::Cosine => lane_sums(rows, b, segments, |x, y| [x * y, x * x, y * y])
                .into_iter()
                .map(|[ab, aa, bb]| {
                    let (na, nb) = (aa.sqrt(), bb.sqrt());
                    // sklearn normalises zero vectors to zero (norm treated as 1), giving similarity 0
                    let na = if na == 0.0 { 1.0 } else { na };
                    let nb = if nb == 0.0 { 1.0 } else { nb };
                    (1.0 - ab / (na * nb)).clamp(0.0, 2.0)
                })
                .collect(),
        }
    }
}

/// Per row of `rows`: the `K` sums over the genes of `segments` of `term(row[g], b[g])` in f64, in gene order.
/// [`LANES`] rows are summed side by side: each lane's chain is the sequential sum (same bits as one row at a
/// time), and the independent chains fill the pipeline instead of waiting on one addition after another.
fn lane_sums<const K: usize>(
    rows: &[Vec<f32>],
    b: &[f32],
    segments: &[Range<usize>],
    term: impl Fn(f64, f64) -> [f64; K],
) -> Vec<[f64; K]> {
    let mut out = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(LANES) {
        // a short last chunk repeats its last row; the extra lanes are dropped
        let a: [&[f32]; LANES] = std::array::from_fn(|j| chunk[j.min(chunk.len() - 1)].as_slice());
        let mut acc = [[0.0f64; K]; LANES];
        for seg in segments {
            let bs = &b[seg.clone()];
            let rs: [&[f32]; LANES] = std::array::from_fn(|j| &a[j][seg.clone()]);
            for (g, &y) in bs.iter().enumerate() {
                let y = f64::from(y);
                for j in 0..LANES {
                    let t = term(f64::from(rs[j][g]), y);
                    for k in 0..K {
                        acc[j][k] += t[k];
                    }
                }
            }
        }
        out.extend_from_slice(&acc[..chunk.len()]);
    }
    out
}

/// Rows whose distances are summed side by side in [`Distance::distances`].
const LANES: usize = 4;

/// The gene ranges left when the genes `drop(g)` are taken out of `0..n`.
fn kept_segments(n: usize, drop: impl Fn(usize) -> bool) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for g in 0..n {
        if drop(g) {
            if start < g {
                out.push(start..g);
            }
            start = g + 1;
        }
    }
    if start < n {
        out.push(start..n);
    }
    out
}

/// Discrimination scores, one per perturbation (in the order of `perts`).
///
/// `real_deltas[i]` / `pred_deltas[i]` are the deltas of `perts[i]`. `genes` are the var names used to drop the
/// target gene; pass `None` for an embedding (no exclusion).
pub fn discrimination_scores(
    perts: &[String],
    real_deltas: &[Vec<f32>],
    pred_deltas: &[Vec<f32>],
    genes: Option<&[String]>,
    metric: Distance,
) -> Vec<f64> {
    let n = perts.len();
    perts
        .par_iter()
        .enumerate()
        .map(|(p_idx, p)| {
            // var names may repeat: every column named like the target is dropped
            let pred = &pred_deltas[p_idx];
            let segments =
                kept_segments(pred.len(), |g| genes.and_then(|names| names.get(g)).is_some_and(|name| name == p));
            let dists = metric.distances(real_deltas, pred, &segments);
            let own = dists[p_idx];
            let rank = dists.iter().filter(|&&d| d < own).count();
            1.0 - rank as f64 / n as f64
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_pds() {
        let perts = vec!["G0".to_string(), "G1".to_string()];
        let genes = vec!["G0".to_string(), "G1".to_string(), "G2".to_string()];
        let real = vec![vec![10.0f32, 0.0, 1.0], vec![0.0, 10.0, -1.0]];
        // pred of G0 matches real G0 except on G0 itself (excluded); pred of G1 is closer to real G0
        let pred = vec![vec![-50.0f32, 0.0, 1.0], vec![10.0, 0.0, 1.0]];
        let s = discrimination_scores(&perts, &real, &pred, Some(&genes), Distance::L1);
        assert_eq!(s, vec![1.0, 0.5]);
        let s = discrimination_scores(&perts, &real, &pred, None, Distance::L1);
        // without exclusion G0's pred is at distance 60 from real G0 and 62 from G1: still rank 0
        assert_eq!(s, vec![1.0, 0.5]);
    }
}
