//! Perturbation discrimination score (`discrimination_score`, `cell_eval/metrics/_anndata.py`).
//!
//! For perturbation p: distances from pred's delta of p to the real delta of every perturbation q (p included),
//! over all genes except the one whose var name equals p (expression space only). rank = #{q: d_q < d_p} (numpy's
//! argsort is unstable, so exact ties are unspecified; none occur in the fixtures); score = 1 − rank/N.
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

    fn eval(self, a: &[f32], b: &[f32], keep: &dyn Fn(usize) -> bool) -> f64 {
        match self {
            Distance::L1 => {
                let mut s = 0.0f64;
                for (g, (x, y)) in a.iter().zip(b).enumerate() {
                    if keep(g) {
                        s += (f64::from(*x) - f64::from(*y)).abs();
                    }
                }
                s
            }
            Distance::L2 => {
                let mut s = 0.0f64;
                for (g, (x, y)) in a.iter().zip(b).enumerate() {
                    if keep(g) {
                        let d = f64::from(*x) - f64::from(*y);
                        s += d * d;
                    }
                }
                s.sqrt()
            }
            Distance::Cosine => {
                let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
                for (g, (x, y)) in a.iter().zip(b).enumerate() {
                    if keep(g) {
                        let (x, y) = (f64::from(*x), f64::from(*y));
                        ab += x * y;
                        aa += x * x;
                        bb += y * y;
                    }
                }
                let na = aa.sqrt();
                let nb = bb.sqrt();
                // sklearn normalises zero vectors to zero (norm treated as 1), giving similarity 0
                let na = if na == 0.0 { 1.0 } else { na };
                let nb = if nb == 0.0 { 1.0 } else { nb };
                (1.0 - ab / (na * nb)).clamp(0.0, 2.0)
            }
        }
    }
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
            // var names may repeat: every column named like the target is dropped (mask built once per target)
            let mask: Option<Vec<bool>> =
                genes.filter(|g| g.iter().any(|name| name == p)).map(|g| g.iter().map(|name| name != p).collect());
            let keep = |g: usize| -> bool { mask.as_ref().is_none_or(|m| m[g]) };
            let dists: Vec<f64> = real_deltas.iter().map(|r| metric.eval(r, &pred_deltas[p_idx], &keep)).collect();
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
