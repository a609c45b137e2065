//! Errors of the evaluation's input checks, DE stage and DE CSV I/O.
//!
//! Messages name the file, the column and the offending labels (long lists shortened), so that a user can fix the
//! input without reading a traceback. The checks run in cell-eval's order (`tests/fixtures/errors/README.md`).

use std::path::PathBuf;

/// Result alias of the evaluation input/DE stage.
pub type Result<T, E = EvalError> = std::result::Result<T, E>;

/// Which file of the pair an error is about.
pub fn file_label(path: &std::path::Path) -> String {
    path.display().to_string()
}

/// Shorten a list of labels for a message: at most `max` items, then "… (N more)".
pub fn short_list(items: &[String], max: usize) -> String {
    let mut s: Vec<String> = items.iter().take(max).map(|x| format!("'{x}'")).collect();
    if items.len() > max {
        s.push(format!("… ({} more)", items.len() - max));
    }
    format!("[{}]", s.join(", "))
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The file could not be read (the message names the file and element).
    #[error("{message}")]
    Read { file: String, message: String },

    #[error(
        "{file}: X looks log1p-normalised (it has fractional values) but contains negative values (min {min}); \
         expected log1p(normalised counts) ≥ 0"
    )]
    NegativeLogNorm { file: String, min: f32 },

    #[error(
        "{file}: X contains {count} negative value(s) (min {min}); expression must be non-negative \
         (raw integer counts or log1p-normalised data)"
    )]
    Negative { file: String, count: u64, min: f32 },

    #[error(
        "{file}: X looks log1p-normalised but its maximum is {max} (≥ 15), which suggests un-logged data; \
         pass --allow-discrete to evaluate it anyway"
    )]
    MaxTooLarge { file: String, max: f32 },

    #[error("gene count mismatch: real has {real} genes, pred has {pred}")]
    GeneCount { real: usize, pred: usize },

    #[error(
        "gene names order mismatch: position {index} is '{real_name}' in real but '{pred_name}' in pred \
         ({n_diff} position(s) differ); pred must list the same genes in the same order"
    )]
    GeneOrder { index: usize, real_name: String, pred_name: String, n_diff: usize },

    #[error("perturbation column '{column}' not found in {which} ({file}); obs columns: {available}")]
    MissingPertColumn { which: &'static str, file: String, column: String, available: String },

    #[error(
        "perturbation mismatch between real and pred in column '{column}': only in real: {only_real}; \
         only in pred: {only_pred}"
    )]
    PerturbationMismatch { column: String, only_real: String, only_pred: String },

    #[error("control perturbation '{control}' not found in {which} ({file}); labels: {labels}")]
    MissingControl { which: &'static str, file: String, control: String, labels: String },

    #[error("{file}: X contains {n_nan} NaN and {n_inf} infinite value(s); expression values must be finite")]
    NonFinite { file: String, n_nan: u64, n_inf: u64 },

    /// A pass met a value that fails the input checks it was deferring (see `input::load_pair_sources_deferred`);
    /// replaced by `input::exact_value_error` before it reaches a user.
    #[error("{file}: X holds a value that fails the input checks")]
    DeferredValues { file: String },

    #[error(
        "{file}: column '{column}' declares categories with no cells: {categories}; remove unused categories \
         (pandas: .cat.remove_unused_categories()) — cell-eval/pdex crash on them (ZeroDivisionError)"
    )]
    UnusedCategory { file: String, column: String, categories: String },

    #[error("{file}: column '{column}' has unsupported type for perturbation labels: {detail}")]
    BadPertColumn { file: String, column: String, detail: String },

    #[error("{file}: obsm key '{key}' has {rows} rows but the file has {n_obs} cells")]
    ObsmShape { file: String, key: String, rows: usize, n_obs: usize },

    #[error("{file}: reading rows {start}..{end} gave a {rows}×{cols} block, expected {expected_rows}×{n_vars}")]
    BadBlock { file: String, start: usize, end: usize, rows: usize, cols: usize, expected_rows: usize, n_vars: usize },

    #[error("{path}: {message}")]
    Csv { path: PathBuf, message: String },

    #[error("{path}: missing column(s) {missing} (header: {header})")]
    CsvMissingColumn { path: PathBuf, missing: String, header: String },

    #[error("{path}, line {line}, column '{column}': cannot parse '{value}' as a number")]
    CsvBadNumber { path: PathBuf, line: u64, column: String, value: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cancelled")]
    Cancelled,
}
