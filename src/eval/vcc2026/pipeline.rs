//! `vcell eval --preset vcc2026`: `cell-eval2 run --preset vcc2026` (validate → analyse real → analyse pred
//! against the real control → members → files).

use std::path::{Path, PathBuf};

use super::digest::{provenance, source_fingerprint};
use super::metrics::{ControlSource, MemberValues};
use super::outputs::{agg_csv, agg_table, de_table, metric_aggregation_csv, results_csv};
use super::validate::{exact_value_error, load_pair_deferred, verify_deferred, Vcc2026Options};
use super::{analyse_real_and_evaluate, Result, Vcc2026Error};
use crate::eval::error::EvalError;
use crate::eval::format::write_atomic;
use crate::eval::parquet_table::{write_table, Table};
use crate::progress::Progress;

/// What a vcc2026 run needs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub real: PathBuf,
    pub pred: PathBuf,
    pub outdir: PathBuf,
    /// Also write `de_real.parquet` / `de_pred.parquet` (`--write-degenes`).
    pub write_de: bool,
    pub vcc: Vcc2026Options,
}

/// A run's results.
pub struct RunOutput {
    pub members: MemberValues,
    pub files: Vec<PathBuf>,
}

pub(crate) fn write(dir: &Path, name: &str, text: &str, files: &mut Vec<PathBuf>) -> Result<()> {
    write_bytes(dir, name, text.as_bytes(), files)
}

pub(crate) fn write_bytes(dir: &Path, name: &str, bytes: &[u8], files: &mut Vec<PathBuf>) -> Result<()> {
    let p = dir.join(name);
    write_atomic(&p, bytes).map_err(|source| Vcc2026Error::Io { path: p.clone(), source })?;
    files.push(p);
    Ok(())
}

/// Write `table` as `dir/name` (parquet, atomically).
pub(crate) fn write_parquet(dir: &Path, name: &str, table: &Table, files: &mut Vec<PathBuf>) -> Result<()> {
    let bytes = write_table(table)
        .map_err(|e| Vcc2026Error::Parse { path: dir.join(name), message: format!("writing parquet: {e}") })?;
    write_bytes(dir, name, &bytes, files)
}

/// Score a prediction under the vcc2026 preset and write cell-eval2's files into `outdir`.
pub fn run_vcc2026(opts: &RunOptions, progress: &dyn Progress) -> Result<RunOutput> {
    let loaded = load_pair_deferred(&opts.real, &opts.pred, &opts.vcc, progress)?;
    let analysed = (|| {
        let real_side = loaded.real.side(&opts.vcc.control)?;
        let pred_side = loaded.pred.side(&opts.vcc.control)?;
        let (real, members, pred_de) = analyse_real_and_evaluate(
            &loaded.var_names,
            &real_side,
            &pred_side,
            ControlSource::Real,
            &opts.vcc.passes,
            progress,
        )?;
        // the rows no pass read, before any result is used
        verify_deferred(&loaded, &opts.vcc, progress)?;
        Ok((real, members, pred_de))
    })();
    let (real, members, pred_de) = analysed.map_err(|e| match e {
        // a pass stopped at a row that breaks a value rule: report what the full checks report
        Vcc2026Error::Eval(EvalError::DeferredValues { .. }) => exact_value_error(&loaded, &opts.vcc, progress),
        e => e,
    })?;
    std::fs::create_dir_all(&opts.outdir).map_err(|source| Vcc2026Error::Io { path: opts.outdir.clone(), source })?;
    let mut files = Vec::new();
    let dir = &opts.outdir;
    write(dir, "results.csv", &results_csv(&members), &mut files)?;
    write(dir, "agg_results.csv", &agg_csv(&agg_table(&members)), &mut files)?;
    write(dir, "metric_aggregation.csv", &metric_aggregation_csv(&members), &mut files)?;
    if opts.write_de {
        write_parquet(dir, "de_real.parquet", &de_table(&real.de, &loaded.var_names), &mut files)?;
        write_parquet(dir, "de_pred.parquet", &de_table(&pred_de, &loaded.var_names), &mut files)?;
    }
    let fingerprint = source_fingerprint(&loaded.real, &loaded.var_names);
    write(dir, "run_meta.json", &run_meta(opts, "counts", &fingerprint), &mut files)?;
    Ok(RunOutput { members, files })
}

/// `run_meta.json`: cell-eval2's keys that describe the computation. `config_digest` and `source_fingerprint` are
/// vcell's own (`digest_scheme: vcell-1`, see [`super::digest`]), not cell-eval2's values.
pub fn run_meta(opts: &RunOptions, pred_input: &str, source_fingerprint: &str) -> String {
    let mut v = serde_json::json!({
        "anchor_metric_names": super::metrics::RESULT_ORDER.iter().chain(std::iter::once(&super::metrics::EXPR_CAPPED_NORM)).collect::<Vec<_>>(),
        "engine": format!("vcell {}", env!("CARGO_PKG_VERSION")),
        "input_type_pred_effective": pred_input,
        "metrics_version": 1,
        "preset": "vcc2026",
        "pert_col": opts.vcc.pert_col,
        "control": opts.vcc.control,
        "source": opts.real.display().to_string(),
        "de_pred_fingerprint": null,
        "created_utc": now_utc(),
    });
    if let Some(m) = v.as_object_mut() {
        for (k, x) in provenance(&opts.vcc, source_fingerprint) {
            m.insert(k.to_owned(), x);
        }
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Seconds since the epoch as an RFC 3339-ish UTC stamp.
pub fn now_utc() -> String {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (s / 86400, s % 86400);
    // civil from days (Howard Hinnant)
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00", rem / 3600, rem % 3600 / 60, rem % 60)
}
