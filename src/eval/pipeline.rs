//! `cell-eval run` end to end (`cell_eval/_evaluator.py::MetricsEvaluator`): checks, DE of real and pred against
//! their own controls (or DE tables read from CSV), pseudobulks, the profile's metrics, `describe`, and the four
//! output files, optionally once per cell type with a `<celltype>_` prefix.
//!
//! Outputs go to a hidden staging folder inside OUTDIR and are renamed into place only when everything
//! succeeded, so a failed run leaves nothing half-written.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::Array2;

use super::cells::PreparedCells;
use super::de::{compute_de, compute_de_and_pseudobulk, compute_de_streamed, DeOptions};
use super::de_csv::{read_de_csv, write_de_csv, DeCsvWriter};
use super::describe::{describe, AggTable};
use super::error::EvalError;
use super::input::{
    exact_value_error, load_pair_sources_deferred, open_h5ad, verify_deferred, CellSource, InputOptions, PreparedFile,
};
use super::metrics::{compute_metrics, AnndataInput, MetricError, MetricTable};
use super::profile::{MetricSet, Profile};
use super::pseudobulk::{compute_pseudobulk, compute_pseudobulk_obsm};
use super::results_csv::{write_agg, write_results};
use super::types::{DeTable, Pseudobulk};
use crate::data::anndata::{Categorical, Column, CsrMatrix, MatrixEncoding};
use crate::progress::Progress;

/// Everything `vcell eval` takes.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    pub real: PathBuf,
    pub pred: PathBuf,
    pub outdir: PathBuf,
    pub profile: Profile,
    pub skip_metrics: Vec<String>,
    pub input: InputOptions,
    pub de: DeOptions,
    pub celltype_col: Option<String>,
    pub de_real: Option<PathBuf>,
    pub de_pred: Option<PathBuf>,
    pub embed_key: Option<String>,
    /// Skip writing the DE CSVs (they are large; `vcell demo` does not need them).
    pub write_de: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error(transparent)]
    Metric(#[from] MetricError),
    #[error("writing outputs in {dir}: {message}")]
    Output { dir: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, PipelineError>;

/// One evaluated group (the whole file, or one cell type).
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// `""` for the whole pair, else the cell type (files are prefixed with `<celltype>_`).
    pub celltype: String,
    pub results: MetricTable,
    pub agg: AggTable,
}

/// Run the evaluation and write `real_de.csv`, `pred_de.csv`, `results.csv`, `agg_results.csv` into `outdir`.
pub fn run_eval(opts: &EvalOptions, progress: &dyn Progress) -> Result<Vec<EvalOutput>> {
    let staging = staging_dir(&opts.outdir)?;
    let outcome = run_into(opts, &staging, progress);
    match outcome {
        Ok(outputs) => {
            publish(&staging, &opts.outdir)?;
            Ok(outputs)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

fn output_err(dir: &Path, e: impl std::fmt::Display) -> PipelineError {
    PipelineError::Output { dir: dir.to_owned(), message: e.to_string() }
}

fn staging_dir(outdir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(outdir).map_err(|e| output_err(outdir, e))?;
    let staging = outdir.join(format!(".vcell-staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| output_err(outdir, e))?;
    Ok(staging)
}

fn publish(staging: &Path, outdir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(staging).map_err(|e| output_err(outdir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| output_err(outdir, e))?;
        let dst = outdir.join(entry.file_name());
        std::fs::rename(entry.path(), &dst).map_err(|e| output_err(outdir, e))?;
    }
    std::fs::remove_dir_all(staging).map_err(|e| output_err(outdir, e))
}

fn run_into(opts: &EvalOptions, staging: &Path, progress: &dyn Progress) -> Result<Vec<EvalOutput>> {
    let Some(col) = &opts.celltype_col else {
        let real = open_h5ad(&opts.real)?;
        let pred = open_h5ad(&opts.pred)?;
        return Ok(vec![evaluate_group(opts, real, pred, "", staging, progress)?]);
    };
    // Per cell type (cell-eval's `--celltype-col`): the cell types of real, each evaluated on its own cells.
    let real = open_h5ad(&opts.real)?;
    let real_types = celltype_column(real.as_ref(), col, &opts.real)?;
    let pred = open_h5ad(&opts.pred)?;
    let pred_types = celltype_column(pred.as_ref(), col, &opts.pred)?;
    let mut names: Vec<String> = real_types.categories.clone();
    names.sort();
    let mut outputs = Vec::new();
    for name in names {
        let rows = |c: &Categorical| -> Vec<usize> {
            (0..c.codes.len()).filter(|&i| c.label(i) == Some(name.as_str())).collect()
        };
        let (r_rows, p_rows) = (rows(&real_types), rows(&pred_types));
        if r_rows.is_empty() {
            continue;
        }
        let real_sub = RowSubset::new(open_h5ad(&opts.real)?, r_rows);
        let pred_sub = RowSubset::new(open_h5ad(&opts.pred)?, p_rows);
        outputs.push(evaluate_group(opts, Box::new(real_sub), Box::new(pred_sub), &name, staging, progress)?);
    }
    Ok(outputs)
}

fn celltype_column(source: &dyn CellSource, col: &str, path: &Path) -> Result<Categorical> {
    match source.obs_column(col)? {
        Some(c) => Ok(c.to_categorical()),
        None => Err(EvalError::Read {
            file: path.display().to_string(),
            message: format!(
                "cell type column '{col}' not found in {}; obs columns: {}",
                path.display(),
                source.obs_column_names()?.join(", ")
            ),
        }
        .into()),
    }
}

fn evaluate_group(
    opts: &EvalOptions,
    real: Box<dyn CellSource>,
    pred: Box<dyn CellSource>,
    celltype: &str,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<EvalOutput> {
    let prefix = if celltype.is_empty() { String::new() } else { format!("{celltype}_") };
    let (real, pred) = load_pair_sources_deferred((&opts.real, real), (&opts.pred, pred), &opts.input, progress)?;
    let set = MetricSet::new(opts.profile, &opts.skip_metrics.iter().map(String::as_str).collect::<Vec<_>>());
    let need_de = !set.de_metrics().is_empty();
    let need_bulk = !set.anndata_metrics().is_empty();

    // DE CSVs are written on their own threads (overlapping the pred DE and the metrics); joined below.
    let mut writers: Vec<std::thread::JoinHandle<Result<()>>> = Vec::new();
    let mut side = |file: &PreparedFile,
                    given: &Option<PathBuf>,
                    name: &str|
     -> Result<(Option<Arc<DeTable>>, Option<Pseudobulk>)> {
        let path = staging.join(format!("{prefix}{name}_de.csv"));
        let (de, bulk) = match (need_de, given) {
            (true, Some(csv)) => {
                let table = Arc::new(read_de_csv(csv)?);
                if opts.write_de {
                    let table = Arc::clone(&table);
                    writers.push(std::thread::spawn(move || Ok(write_de_csv(&table, &path)?)));
                }
                (Some(table), None)
            }
            (true, None) if opts.write_de => {
                // each tested batch is written while the next ones are tested
                // `None` marks the end: a writer whose DE failed never renames its file into place
                let (tx, rx) = std::sync::mpsc::sync_channel::<Option<DeTable>>(1);
                let mut w = DeCsvWriter::create(&path)?;
                writers.push(std::thread::spawn(move || -> Result<()> {
                    for rows in rx {
                        match rows {
                            Some(rows) => w.write(&rows)?,
                            None => return Ok(w.finish()?),
                        }
                    }
                    Err(EvalError::Cancelled.into())
                }));
                // a writer that failed has dropped its end: its error is reported when it is joined
                let computed =
                    compute_de_streamed(file, &opts.de, need_bulk, &mut |rows| drop(tx.send(Some(rows))), progress);
                if computed.is_ok() {
                    let _ = tx.send(None);
                }
                drop(tx);
                let (de, bulk) = computed?;
                (Some(Arc::new(de)), bulk)
            }
            (true, None) if need_bulk => {
                let (de, bulk) = compute_de_and_pseudobulk(file, &opts.de, progress)?;
                (Some(Arc::new(de)), Some(bulk))
            }
            (true, None) => (Some(Arc::new(compute_de(file, &opts.de, progress)?)), None),
            (false, _) => (None, None),
        };
        let bulk = match (need_bulk, bulk) {
            (true, None) => Some(compute_pseudobulk(file, progress)?),
            (_, b) => b,
        };
        Ok((de, bulk))
    };
    let real_side = side(&real, &opts.de_real, "real");
    let pred_side = real_side.as_ref().ok().map(|_| side(&pred, &opts.de_pred, "pred"));
    let outcome = (|| {
        let (real_de, real_bulk) = real_side?;
        let (pred_de, pred_bulk) = pred_side.ok_or(EvalError::Cancelled)??;
        // the value checks the passes did not cover, before any result is used
        verify_deferred(&real, &pred, &opts.input, progress)?;
        finish_group(
            opts,
            &set,
            (&real, &pred),
            (real_de, real_bulk),
            (pred_de, pred_bulk),
            celltype,
            staging,
            progress,
        )
    })()
    .map_err(|e| match e {
        // a pass stopped at a value that fails the deferred checks: report what the full checks report
        PipelineError::Eval(EvalError::DeferredValues { .. }) => {
            exact_value_error(&real, &pred, &opts.input, progress).into()
        }
        e => e,
    });
    // every writer is joined, also when something failed, so no thread outlives the staging folder
    let mut written = Ok(());
    for w in writers {
        let res = w.join().unwrap_or_else(|_| Err(output_err(staging, "DE CSV writer panicked")));
        if written.is_ok() {
            written = res;
        }
    }
    let out = outcome?;
    written?;
    Ok(out)
}

type SideTables = (Option<Arc<DeTable>>, Option<Pseudobulk>);

/// Metrics, `describe` and the results files of one group, once both sides' DE and pseudobulks exist.
#[allow(clippy::too_many_arguments)]
fn finish_group(
    opts: &EvalOptions,
    set: &MetricSet,
    (real, pred): (&PreparedFile, &PreparedFile),
    (real_de, real_bulk): SideTables,
    (pred_de, pred_bulk): SideTables,
    celltype: &str,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<EvalOutput> {
    let prefix = if celltype.is_empty() { String::new() } else { format!("{celltype}_") };
    let need_bulk = !set.anndata_metrics().is_empty();
    let embed = match &opts.embed_key {
        Some(key) if need_bulk => Some((compute_pseudobulk_obsm(real, key)?, compute_pseudobulk_obsm(pred, key)?)),
        _ => None,
    };
    let cells = PreparedCells::new(
        (real, pred),
        (real_bulk.as_ref(), pred_bulk.as_ref()),
        opts.embed_key.clone(),
        opts.de.batch_bytes,
    );
    let anndata = match (&real_bulk, &pred_bulk) {
        (Some(r), Some(p)) => Some(AnndataInput {
            control: &opts.input.control,
            genes: &real.var_names,
            real: r,
            pred: p,
            embed: embed.as_ref().map(|(a, b)| (a, b)),
            cells: Some(&cells),
        }),
        _ => None,
    };
    let de = match (&real_de, &pred_de) {
        (Some(r), Some(p)) => Some((&**r, &**p)),
        _ => None,
    };
    progress.stage("metrics", 0);
    let results = compute_metrics(set, de, anndata.as_ref())?;
    let agg = describe(&results);
    write_results(&staging.join(format!("{prefix}results.csv")), &results).map_err(|e| output_err(staging, e))?;
    write_agg(&staging.join(format!("{prefix}agg_results.csv")), &agg).map_err(|e| output_err(staging, e))?;
    Ok(EvalOutput { celltype: celltype.to_owned(), results, agg })
}

/// A subset of the rows of another source (one cell type), in their original order.
struct RowSubset {
    inner: Box<dyn CellSource>,
    rows: Vec<usize>,
}

impl RowSubset {
    fn new(inner: Box<dyn CellSource>, rows: Vec<usize>) -> Self {
        RowSubset { inner, rows }
    }
}

impl CellSource for RowSubset {
    fn shape(&self) -> (usize, usize) {
        (self.rows.len(), self.inner.shape().1)
    }
    fn encoding(&self) -> MatrixEncoding {
        self.inner.encoding()
    }
    fn var_names(&self) -> super::EvalResult<Vec<String>> {
        self.inner.var_names()
    }
    fn obs_column_names(&self) -> super::EvalResult<Vec<String>> {
        self.inner.obs_column_names()
    }
    fn obs_column(&self, name: &str) -> super::EvalResult<Option<Column>> {
        Ok(self.inner.obs_column(name)?.map(|c| subset_column(&c, &self.rows)))
    }
    fn read_rows(&self, start: usize, end: usize) -> super::EvalResult<CsrMatrix> {
        let wanted = &self.rows[start.min(self.rows.len())..end.min(self.rows.len())];
        let n_cols = self.inner.shape().1;
        let (Some(&first), Some(&last)) = (wanted.first(), wanted.last()) else {
            return Ok(CsrMatrix::zero((0, n_cols)));
        };
        let block = self.inner.read_rows(first, last + 1)?;
        let mut indptr = vec![0usize];
        let (mut indices, mut data) = (Vec::new(), Vec::new());
        for &r in wanted {
            if let Some(row) = block.outer_view(r - first) {
                indices.extend_from_slice(row.indices());
                data.extend_from_slice(row.data());
            }
            indptr.push(indices.len());
        }
        Ok(CsrMatrix::new((wanted.len(), n_cols), indptr, indices, data))
    }
    fn read_obsm(&self, key: &str) -> super::EvalResult<Array2<f32>> {
        let all = self.inner.read_obsm(key)?;
        Ok(all.select(ndarray::Axis(0), &self.rows))
    }
}

fn subset_column(c: &Column, rows: &[usize]) -> Column {
    match c {
        Column::Categorical(cat) => Column::Categorical(Categorical {
            codes: rows.iter().map(|&r| cat.codes.get(r).copied().unwrap_or(-1)).collect(),
            categories: cat.categories.clone(),
            ordered: cat.ordered,
        }),
        Column::Str(v) => Column::Str(rows.iter().filter_map(|&r| v.get(r).cloned()).collect()),
        Column::Int(v) => Column::Int(rows.iter().filter_map(|&r| v.get(r).copied()).collect()),
        Column::Float(v) => Column::Float(rows.iter().filter_map(|&r| v.get(r).copied()).collect()),
        Column::Bool(v) => Column::Bool(rows.iter().filter_map(|&r| v.get(r).copied()).collect()),
    }
}
