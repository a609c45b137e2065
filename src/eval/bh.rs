//! Benjamini–Hochberg FDR, as `scipy.stats.false_discovery_control(ps, method="bh")`
//! (scipy/stats/_morestats.py), which pdex applies per target over all genes.

/// BH-adjusted p-values, in the input order.
///
/// scipy: sort p ascending, multiply the i-th (1-based) by `m / i` (the factor computed first, in f64), take the
/// reverse running minimum, clip to [0, 1]. With `m <= 1` the input is returned unchanged (pdex/scipy skip the
/// correction). Ties in the sort do not change the result (tied values end with the same adjusted value), so any
/// order of ties is equivalent to numpy's argsort.
/// NaN p-values sort last (numpy's order) and stay NaN.
pub fn bh_adjust(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    if m <= 1 {
        return p.to_vec();
    }
    // one unstable sort on (NaN last as numpy puts them, then the value in total order), ties in any order
    let key = |x: f64| -> u64 {
        if x.is_nan() {
            return u64::MAX;
        }
        // total_cmp's order as an unsigned integer (negatives flipped, non-negatives above them; +inf stays
        // below u64::MAX)
        let bits = x.to_bits();
        if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        }
    };
    let mut keyed: Vec<(u64, usize)> = p.iter().enumerate().map(|(i, &x)| (key(x), i)).collect();
    keyed.sort_unstable_by_key(|&(k, _)| k);
    let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
    let mf = m as f64;
    let mut adj: Vec<f64> = order.iter().enumerate().map(|(k, &i)| p[i] * (mf / (k + 1) as f64)).collect();
    for k in (0..m - 1).rev() {
        // np.minimum.accumulate: NaN propagates
        let next = adj[k + 1];
        if next < adj[k] || next.is_nan() {
            adj[k] = next;
        }
    }
    let mut out = vec![0.0; m];
    for (k, &i) in order.iter().enumerate() {
        out[i] = adj[k].clamp(0.0, 1.0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_example() {
        let p = [0.01, 0.04, 0.03, 0.5];
        let q = bh_adjust(&p);
        let expect = [0.04, 0.04 * 4.0 / 3.0 * 0.75 / 0.75, 0.04 * 4.0 / 3.0, 0.5];
        // sorted: 0.01*4=0.04, 0.03*2=0.06, 0.04*4/3=0.0533, 0.5 → reverse min: 0.04, 0.0533, 0.0533, 0.5
        assert_eq!(q[0], 0.01 * 4.0);
        assert_eq!(q[3], 0.5);
        assert_eq!(q[1], q[2]);
        assert!((q[2] - expect[2]).abs() < 1e-15);
    }

    #[test]
    fn m_le_1_unchanged() {
        assert_eq!(bh_adjust(&[0.3]), vec![0.3]);
        assert!(bh_adjust(&[]).is_empty());
    }
}
