#![allow(clippy::unwrap_used)]
//! Property tests: describe() quantiles / std against brute force, and the DE ranking rule.
use proptest::prelude::*;
use vcell::eval::describe::{describe_column, nearest_index};
use vcell::eval::metrics::de_metrics::rank_desc_nan_first;

proptest! {
    #[test]
    fn quantiles_and_std(v in proptest::collection::vec(-1e3f64..1e3, 2..60)) {
        let col: Vec<Option<f64>> = v.iter().map(|&x| Some(x)).collect();
        let d = describe_column(&col);
        let mut s = v.clone();
        s.sort_by(f64::total_cmp);
        let n = s.len();
        for (k, q) in [0.25, 0.5, 0.75].iter().enumerate() {
            let i = (q * (n as f64 - 1.0) + 0.5).floor() as usize;
            prop_assert_eq!(d[5 + k], Some(s[i]));
            prop_assert_eq!(nearest_index(*q, n), i);
        }
        prop_assert_eq!(d[4], Some(s[0]));
        prop_assert_eq!(d[8], Some(s[n - 1]));
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n as f64 - 1.0);
        let std = d[3].unwrap();
        prop_assert!((std - var.sqrt()).abs() <= 1e-9 * (1.0 + var.sqrt()));
        prop_assert!((d[2].unwrap() - mean).abs() <= 1e-9 * (1.0 + mean.abs()));
    }

    #[test]
    fn ranking_rule(v in proptest::collection::vec(prop_oneof![Just(f32::NAN), Just(f32::INFINITY), 0f32..5.0, Just(1.0f32)], 0..40)) {
        let order = rank_desc_nan_first(&v);
        // a permutation; NaN first, then non-increasing; ties in index order
        let mut seen = order.clone();
        seen.sort();
        prop_assert_eq!(seen, (0..v.len()).collect::<Vec<_>>());
        for w in order.windows(2) {
            let (a, b) = (v[w[0]], v[w[1]]);
            if a.is_nan() { prop_assert!(!b.is_nan() || w[0] < w[1]); continue; }
            prop_assert!(!b.is_nan());
            prop_assert!(a >= b);
            if a == b { prop_assert!(w[0] < w[1]); }
        }
    }
}
