//! `cell-eval score` (`cell_eval/_score.py::score_agg_metrics`): the user's agg `mean` row against a baseline's.
use crate::eval::describe::AggTable;
use crate::eval::metrics::numeric::np_sum_f64;
use crate::eval::profile::{best_value, BestValue};

#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error("Columns do not match: {0:?} != {1:?}")]
    ColumnMismatch(Vec<String>, Vec<String>),
    #[error("Comparison statistic '{0}' not found in results")]
    MissingStatistic(String),
}

/// `metric,from_baseline` rows: best-0 metrics first, then best-1 metrics (each in column order), then `avg_score`.
pub fn score(user: &AggTable, base: &AggTable) -> Result<Vec<(String, f64)>, ScoreError> {
    score_with(user, base, "mean")
}

/// [`score`] with another comparison statistic.
pub fn score_with(user: &AggTable, base: &AggTable, statistic: &str) -> Result<Vec<(String, f64)>, ScoreError> {
    if user.columns != base.columns {
        return Err(ScoreError::ColumnMismatch(user.columns.clone(), base.columns.clone()));
    }
    let ui = user
        .statistics
        .iter()
        .position(|s| s == statistic)
        .ok_or_else(|| ScoreError::MissingStatistic(statistic.to_string()))?;
    let bi = base
        .statistics
        .iter()
        .position(|s| s == statistic)
        .ok_or_else(|| ScoreError::MissingStatistic(statistic.to_string()))?;
    let val = |t: &AggTable, j: usize, i: usize| t.values[j][i].unwrap_or(f64::NAN);
    let mut zero = Vec::new();
    let mut one = Vec::new();
    for (j, name) in user.columns.iter().enumerate() {
        let u = val(user, j, ui);
        let b = val(base, j, bi);
        match best_value(name) {
            Some(BestValue::Zero) => zero.push((name.clone(), 1.0 - u / b)),
            Some(BestValue::One) => one.push((name.clone(), (u - b) / (1.0 - b))),
            _ => {}
        }
    }
    let mut rows: Vec<(String, f64)> = zero
        .into_iter()
        .chain(one)
        .map(|(n, v)| {
            let v = if v.is_nan() { 0.0 } else { v };
            (n, if v < 0.0 { 0.0 } else { v })
        })
        .collect();
    let vals: Vec<f64> = rows.iter().map(|(_, v)| *v).collect();
    let avg = np_sum_f64(&vals) / vals.len() as f64;
    rows.push(("avg_score".to_string(), avg));
    Ok(rows)
}

/// The bytes of the score CSV (`metric,from_baseline`).
pub fn score_csv_bytes(rows: &[(String, f64)]) -> Vec<u8> {
    let mut s = String::from("metric,from_baseline\n");
    for (m, v) in rows {
        s.push_str(m);
        s.push(',');
        s.push_str(&crate::eval::format::fmt_f64(*v));
        s.push('\n');
    }
    s.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agg(cols: &[&str], mean: &[f64]) -> AggTable {
        AggTable {
            statistics: vec!["count".into(), "mean".into()],
            columns: cols.iter().map(|s| s.to_string()).collect(),
            values: mean.iter().map(|&m| vec![Some(8.0), Some(m)]).collect(),
        }
    }

    #[test]
    fn hand_score() {
        let cols = ["overlap_at_N", "mae", "discrimination_score_l1", "de_nsig_counts_real"];
        let u = agg(&cols, &[0.5, 0.1, 0.9, 3.0]);
        let b = agg(&cols, &[0.0, 0.2, 0.5, 1.0]);
        let s = score(&u, &b).unwrap_or_default();
        let names: Vec<&str> = s.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["mae", "overlap_at_N", "discrimination_score_l1", "avg_score"]);
        assert_eq!(s[0].1, 0.5);
        assert_eq!(s[1].1, 0.5);
        assert!((s[2].1 - 0.8).abs() < 1e-15);
    }
}
