//! cell-eval2's output layouts (design/vcc2026.md §8): `results.csv` (long: perturbation, metric, value),
//! `agg_results.csv` (statistic rows `count, null_count, mean, std, min, max, median`, one column per member
//! sorted by name), `metric_aggregation.csv`, `run_meta.json`, and the DE tables (parquet). Floats are written with
//! the shortest round-trip form (`format::fmt_f64`); cell-eval2's polars 2.1 writes some small values positionally
//! (`0.000027…`) where we write `2.7…e-5`, the same f64.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::de::DeTable;
use super::metrics::{MemberValues, EXPR_CAPPED_NORM, RESULT_ORDER};
use crate::eval::describe::std_ddof1;
use crate::eval::format::{fmt_f64, parse_opt};
use crate::eval::parquet_table::{Column, Table};

/// Statistic rows of `agg_results.csv`.
pub const AGG_STATISTICS: [&str; 7] = ["count", "null_count", "mean", "std", "min", "max", "median"];

/// `results.csv`.
pub fn results_csv(v: &MemberValues) -> String {
    let mut s = String::from("perturbation,metric,value\n");
    for m in RESULT_ORDER {
        if let Some(vals) = v.values.get(m) {
            for (p, x) in v.perts.iter().zip(vals) {
                if let Some(x) = x {
                    let _ = writeln!(s, "{},{},{}", csv_field(p), m, fmt_f64(*x));
                }
            }
        }
    }
    s
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// polars' median of the NaN-dropped values (midpoint for an even count).
fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// One column of `agg_results.csv`: count/null_count on the raw rows, the rest on NaN-dropped values.
pub fn agg_column(vals: &[Option<f64>]) -> Vec<f64> {
    let rows: Vec<f64> = vals.iter().flatten().copied().collect();
    let mut x: Vec<f64> = rows.iter().copied().filter(|v| !v.is_nan()).collect();
    x.sort_by(f64::total_cmp);
    let n = x.len();
    let mean = if n == 0 { f64::NAN } else { x.iter().sum::<f64>() / n as f64 };
    let unsorted: Vec<f64> = rows.iter().copied().filter(|v| !v.is_nan()).collect();
    vec![
        rows.len() as f64,
        0.0,
        mean,
        std_ddof1(&unsorted).unwrap_or(f64::NAN),
        x.first().copied().unwrap_or(f64::NAN),
        x.last().copied().unwrap_or(f64::NAN),
        median(&x),
    ]
}

/// The members' aggregate table: member → statistic values (in [`AGG_STATISTICS`] order).
pub fn agg_table(v: &MemberValues) -> BTreeMap<String, Vec<f64>> {
    let mut t = BTreeMap::new();
    for m in RESULT_ORDER {
        if let Some(vals) = v.values.get(m) {
            t.insert(m.to_owned(), agg_column(vals));
        }
    }
    let mut c = vec![f64::NAN; AGG_STATISTICS.len()];
    c[2] = v.capped_norm;
    t.insert(EXPR_CAPPED_NORM.to_owned(), c);
    t
}

/// `agg_results.csv`.
pub fn agg_csv(t: &BTreeMap<String, Vec<f64>>) -> String {
    let mut s = String::from("statistic");
    for m in t.keys() {
        s.push(',');
        s.push_str(m);
    }
    s.push('\n');
    for (i, st) in AGG_STATISTICS.iter().enumerate() {
        s.push_str(st);
        for col in t.values() {
            s.push(',');
            s.push_str(&fmt_f64(col[i]));
        }
        s.push('\n');
    }
    s
}

/// Parse an `agg_results.csv` (ours or cell-eval2's): member → (statistic → value).
pub fn parse_agg_csv(text: &str) -> Result<BTreeMap<String, BTreeMap<String, f64>>, String> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty agg table")?.split(',').collect();
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split(',').collect();
        let stat = cells.first().ok_or("empty row")?.to_string();
        for (j, name) in header.iter().enumerate().skip(1) {
            let v =
                cells.get(j).map(|c| parse_opt(c)).transpose().map_err(|e| format!("{name}/{stat}: {e}"))?.flatten();
            out.entry(name.to_string()).or_default().insert(stat.clone(), v.unwrap_or(f64::NAN));
        }
    }
    Ok(out)
}

/// `metric_aggregation.csv`.
pub fn metric_aggregation_csv(v: &MemberValues) -> String {
    let mut names: Vec<&str> = RESULT_ORDER.to_vec();
    names.push(EXPR_CAPPED_NORM);
    names.sort_unstable();
    let mut s = String::from("metric,agg,n_used,n_rows,n_nan,n_null,derived\n");
    for m in names {
        if m == EXPR_CAPPED_NORM {
            let _ = writeln!(s, "{m},ratio_of_sums,0,0,0,0,true");
            continue;
        }
        let vals = v.values.get(m).map(|x| x.as_slice()).unwrap_or(&[]);
        let rows = vals.iter().flatten().count();
        let nan = vals.iter().flatten().filter(|x| x.is_nan()).count();
        let _ = writeln!(s, "{m},mean,{},{rows},{nan},0,false", rows - nan);
    }
    s
}

/// A DE table as cell-eval2's `de_real.parquet` / `de_pred.parquet` (`target, feature, log2_fold_change, p_value,
/// p_adj, abs_log2_fold_change`), perturbations in table order, genes in index order.
pub fn de_table(t: &DeTable, var_names: &[String]) -> Table {
    let n = t.perts.len() * t.genes.len();
    let (mut target, mut feature) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut lfc, mut p, mut padj, mut abs) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    for (i, pert) in t.perts.iter().enumerate() {
        for (k, &g) in t.genes.iter().enumerate() {
            let l = t.lfc[i][k];
            target.push(Some(pert.clone()));
            feature.push(var_names.get(g).cloned());
            lfc.push(Some(l));
            p.push(Some(t.p[i][k]));
            padj.push(Some(t.padj[i][k]));
            abs.push(Some(l.abs()));
        }
    }
    Table {
        columns: vec![
            ("target".to_owned(), Column::Str(target)),
            ("feature".to_owned(), Column::Str(feature)),
            ("log2_fold_change".to_owned(), Column::F64(lfc)),
            ("p_value".to_owned(), Column::F64(p)),
            ("p_adj".to_owned(), Column::F64(padj)),
            ("abs_log2_fold_change".to_owned(), Column::F64(abs)),
        ],
    }
}
