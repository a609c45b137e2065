//! `results.csv` and `agg_results.csv` (`cell_eval/_evaluator.py::_write_results`): polars `write_csv` layout.
use std::path::Path;

use crate::eval::describe::AggTable;
use crate::eval::format::{fmt_f64, fmt_opt, write_atomic};
use crate::eval::metrics::MetricTable;

#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("writing {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("{0}")]
    Format(String),
}

fn to_bytes(header: Vec<String>, rows: Vec<Vec<String>>) -> Result<Vec<u8>, CsvError> {
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::Any(b'\n')).from_writer(Vec::new());
    w.write_record(&header)?;
    for r in rows {
        w.write_record(&r)?;
    }
    w.into_inner().map_err(|e| CsvError::Format(e.to_string()))
}

/// The bytes of `results.csv`: `perturbation` plus the metric columns; nulls are empty cells.
pub fn results_csv_bytes(table: &MetricTable) -> Result<Vec<u8>, CsvError> {
    let mut header = vec!["perturbation".to_string()];
    header.extend(table.columns.iter().map(|c| c.name.clone()));
    let rows = table
        .perturbations
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut r = vec![p.clone()];
            r.extend(table.columns.iter().map(|c| fmt_opt(c.values.get(i).copied().flatten())));
            r
        })
        .collect();
    to_bytes(header, rows)
}

/// The bytes of `agg_results.csv`: `statistic` plus one column per metric.
pub fn agg_csv_bytes(agg: &AggTable) -> Result<Vec<u8>, CsvError> {
    let mut header = vec!["statistic".to_string()];
    header.extend(agg.columns.iter().cloned());
    let rows = agg
        .statistics
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut r = vec![s.clone()];
            r.extend(agg.values.iter().map(|col| fmt_opt(col.get(i).copied().flatten())));
            r
        })
        .collect();
    to_bytes(header, rows)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), CsvError> {
    write_atomic(path, bytes).map_err(|source| CsvError::Io { path: path.display().to_string(), source })
}

/// Writes `results.csv` atomically.
pub fn write_results(path: &Path, table: &MetricTable) -> Result<(), CsvError> {
    write(path, &results_csv_bytes(table)?)
}

/// Writes `agg_results.csv` atomically.
pub fn write_agg(path: &Path, agg: &AggTable) -> Result<(), CsvError> {
    write(path, &agg_csv_bytes(agg)?)
}

/// Reads an `agg_results.csv` back (for `score`).
pub fn read_agg(path: &Path) -> Result<AggTable, CsvError> {
    let bytes = std::fs::read(path).map_err(|source| CsvError::Io { path: path.display().to_string(), source })?;
    parse_agg(&bytes)
}

/// Parses `agg_results.csv` bytes.
pub fn parse_agg(bytes: &[u8]) -> Result<AggTable, CsvError> {
    let mut r = csv::ReaderBuilder::new().has_headers(true).from_reader(bytes);
    let header = r.headers()?.clone();
    if header.get(0) != Some("statistic") {
        return Err(CsvError::Format("Missing 'statistic' column in agg results (likely wrong file input)".into()));
    }
    let columns: Vec<String> = header.iter().skip(1).map(str::to_string).collect();
    let mut statistics = Vec::new();
    let mut values: Vec<Vec<Option<f64>>> = vec![Vec::new(); columns.len()];
    for rec in r.records() {
        let rec = rec?;
        statistics.push(rec.get(0).unwrap_or_default().to_string());
        for (j, col) in values.iter_mut().enumerate() {
            let cell = rec.get(j + 1).unwrap_or_default();
            let v = crate::eval::format::parse_opt(cell)
                .map_err(|e| CsvError::Format(format!("bad number {cell:?}: {e}")))?;
            col.push(v);
        }
    }
    Ok(AggTable { statistics, columns, values })
}

/// `fmt_f64`, re-exported for callers writing single values.
pub fn format_value(v: f64) -> String {
    fmt_f64(v)
}
