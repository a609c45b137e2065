//! polars `DataFrame.describe()` of the metric columns (`MetricPipeline.get_agg_results`), as written to
//! `agg_results.csv`: rows `count, null_count, mean, std, min, 25%, 50%, 75%, max`.
//!
//! Rules (checked against the fixtures):
//! - `count` counts non-null values (NaN included), `null_count` the nulls;
//! - `mean` = sum / count; any NaN makes it NaN;
//! - `std` with ddof = 1 (see [`std_ddof1`]);
//!
//! **Last-ulp caveat.** polars 2.1 (built with nightly `fadd_algebraic`, so the compiler picks the summation order)
//! does not sum in a documented order. No candidate order reproduced every fixture value: the 4-lane order used here
//! matches the `mean` of 95 of 102 fixture columns bit for bit and the rest within 2 ulp; `std` matches about 70 % bit
//! for bit, the rest within a few ulp (≤ 1e-15 relative). `count`, `null_count`, `min`, quantiles and `max` are exact.
//! - `min` / `max` skip NaN (NaN only if every value is NaN);
//! - quantiles use the "nearest" rule: `sorted[floor(q·(n−1) + 0.5)]`, NaN sorted last and counted.
use crate::eval::metrics::numeric::lane4_sum;
use crate::eval::metrics::MetricTable;

/// The statistic names, in row order.
pub const STATISTICS: [&str; 9] = ["count", "null_count", "mean", "std", "min", "25%", "50%", "75%", "max"];

/// `agg_results.csv` in memory: `values[column][statistic]`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AggTable {
    pub statistics: Vec<String>,
    pub columns: Vec<String>,
    pub values: Vec<Vec<Option<f64>>>,
}

impl AggTable {
    /// The value of `statistic` for `column`.
    pub fn get(&self, statistic: &str, column: &str) -> Option<f64> {
        let i = self.statistics.iter().position(|s| s == statistic)?;
        let j = self.columns.iter().position(|c| c == column)?;
        self.values[j][i]
    }
}

/// Describes every column of a results table.
pub fn describe(table: &MetricTable) -> AggTable {
    AggTable {
        statistics: STATISTICS.iter().map(|s| s.to_string()).collect(),
        columns: table.columns.iter().map(|c| c.name.clone()).collect(),
        values: table.columns.iter().map(|c| describe_column(&c.values)).collect(),
    }
}

/// The nine statistics of one column.
pub fn describe_column(values: &[Option<f64>]) -> Vec<Option<f64>> {
    let present: Vec<f64> = values.iter().flatten().copied().collect();
    let n = present.len();
    let nulls = values.len() - n;
    let mut out = vec![Some(n as f64), Some(nulls as f64)];
    if n == 0 {
        out.extend(std::iter::repeat_n(None, 7));
        return out;
    }
    // nulls take part in the masked sum as zeros, in place
    let with_zeros: Vec<f64> = values.iter().map(|v| v.unwrap_or(0.0)).collect();
    out.push(Some(lane4_sum(&with_zeros) / n as f64));
    out.push(std_ddof1(&present));
    let finite: Vec<f64> = present.iter().copied().filter(|v| !v.is_nan()).collect();
    let min = finite.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| if v < m { v } else { m })));
    let max = finite.iter().copied().fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| if v > m { v } else { m })));
    out.push(Some(min.unwrap_or(f64::NAN)));
    let mut sorted = present.clone();
    sorted.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Greater,
        (false, true) => std::cmp::Ordering::Less,
        _ => a.total_cmp(b),
    });
    for q in [0.25, 0.5, 0.75] {
        out.push(Some(sorted[nearest_index(q, n)]));
    }
    out.push(Some(max.unwrap_or(f64::NAN)));
    out
}

/// polars' "nearest" quantile index: `floor(q·(n−1) + 0.5)`.
pub fn nearest_index(q: f64, n: usize) -> usize {
    let idx = (q * (n as f64 - 1.0) + 0.5).floor();
    (idx.max(0.0) as usize).min(n - 1)
}

/// Sample standard deviation (ddof = 1) as polars computes it (`polars-compute` `VarState`): mean of the chunk, then
/// the sum of squared deviations, `sqrt(dp / (n − 1))`; `None` for fewer than 2 values; NaN propagates.
pub fn std_ddof1(x: &[f64]) -> Option<f64> {
    let n = x.len();
    if n < 2 {
        return None;
    }
    let mean = lane4_sum(x) / n as f64;
    let sq: Vec<f64> = x.iter().map(|&v| (v - mean) * (v - mean)).collect();
    let dp = lane4_sum(&sq);
    let var = dp / (n as f64 - 1.0);
    Some(if var < 0.0 { 0.0 } else { var }.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_describe() {
        let col = [Some(1.0), None, Some(3.0), Some(2.0), Some(4.0)];
        let d = describe_column(&col);
        assert_eq!(d[0], Some(4.0));
        assert_eq!(d[1], Some(1.0));
        assert_eq!(d[2], Some(2.5));
        assert_eq!(d[3], Some((5.0f64 / 3.0).sqrt()));
        assert_eq!(d[4], Some(1.0));
        // n = 4: 25% → floor(0.75+0.5)=1 → 2; 50% → floor(2.0)=2 → 3; 75% → floor(2.75)=2 → 3
        assert_eq!(&d[5..8], &[Some(2.0), Some(3.0), Some(3.0)]);
        assert_eq!(d[8], Some(4.0));
    }

    #[test]
    fn nan_rules() {
        let col = [Some(1.0), Some(f64::NAN), Some(0.5)];
        let d = describe_column(&col);
        assert!(d[2].is_some_and(f64::is_nan));
        assert!(d[3].is_some_and(f64::is_nan));
        assert_eq!(d[4], Some(0.5));
        assert_eq!(d[8], Some(1.0));
        // sorted [0.5, 1.0, NaN]: 75% → floor(1.5+0.5)=2 → NaN
        assert!(d[7].is_some_and(f64::is_nan));
    }
}
