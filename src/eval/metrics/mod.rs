//! The metric stage of the evaluation: every metric of cell-eval 0.8.2's `full` profile.
//!
//! Entry point: [`compute_metrics`], which runs the metrics of a [`MetricSet`](crate::eval::profile::MetricSet) in
//! cell-eval's order (DE metrics first, then anndata metrics; `cell_eval/_pipeline/_runner.py`) and pivots them into a
//! [`MetricTable`] (one row per perturbation, one column per metric, as `results.csv`).
pub mod clustering;
pub mod de_metrics;
pub mod edistance;
pub mod error_metrics;
pub mod knn;
pub mod leiden;
pub mod numeric;
pub mod pds;

use std::collections::BTreeSet;

use crate::eval::profile::MetricSet;
use crate::eval::types::{DeTable, Pseudobulk};

pub use de_metrics::{AucKind, DeComparison, OverlapKind};
pub use pds::Distance;

#[derive(Debug, thiserror::Error)]
pub enum MetricError {
    #[error("Perturbation mismatch: real {real:?} != pred {pred:?}")]
    PerturbationMismatch { real: Vec<String>, pred: Vec<String> },
    #[error("Control perturbation ({0}) not found in pseudobulks")]
    MissingControl(String),
    #[error("invalid metric input: {0}")]
    Input(String),
    #[error("metric {0} needs cell-level data, which was not provided")]
    NeedsCells(&'static str),
    #[error("metric {0} is not implemented")]
    NotImplemented(&'static str),
    #[error("unknown metric: {0}")]
    UnknownMetric(String),
}

/// One column of `results.csv`: a value (or null) per perturbation row.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricColumn {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// `results.csv` in memory: sorted perturbations and the metric columns in computation order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricTable {
    pub perturbations: Vec<String>,
    pub columns: Vec<MetricColumn>,
}

impl MetricTable {
    pub fn column(&self, name: &str) -> Option<&MetricColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Which file a cell matrix comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Real,
    Pred,
}

/// A dense, row-major block of cells (rows) × features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DenseCells {
    pub n_rows: usize,
    pub n_cols: usize,
    pub data: Vec<f32>,
}

impl DenseCells {
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_cols..(i + 1) * self.n_cols]
    }
}

/// Cell-level access for `pearson_edistance` and `clustering_agreement`: the cells of one label in one file, in obs
/// order (cell-eval uses `X[mask]`, or `.obsm[embed_key][mask]`).
pub trait CellSource: Sync {
    fn cells(&self, side: Side, label: &str) -> Result<DenseCells, MetricError>;

    /// The cells of each of `labels`, visited in that order. Sources that stream from disk override this to
    /// collect many labels per pass.
    fn for_each_label(
        &self,
        side: Side,
        labels: &[String],
        f: &mut dyn FnMut(&str, DenseCells) -> Result<(), MetricError>,
    ) -> Result<(), MetricError> {
        for label in labels {
            f(label, self.cells(side, label)?)?;
        }
        Ok(())
    }

    /// Row-major `labels × features` f64 means of each label's cells, and the number of features
    /// (`_centroid_ann`: `feats.astype(float64)[mask].mean(0)`).
    fn centroids(&self, side: Side, labels: &[String]) -> Result<(Vec<f64>, usize), MetricError> {
        centroids_from_cells(self, side, labels)
    }
}

/// [`CellSource::centroids`] from the cells: sums in cell order, then / n, as numpy's `mean(0)` of an f64 matrix.
pub fn centroids_from_cells<S: CellSource + ?Sized>(
    cells: &S,
    side: Side,
    labels: &[String],
) -> Result<(Vec<f64>, usize), MetricError> {
    let mut out: Vec<f64> = Vec::new();
    let mut dim: Option<usize> = None;
    for p in labels {
        let c = cells.cells(side, p)?;
        if c.n_rows == 0 {
            // cell-eval's `.loc[cats_sorted]` raises a KeyError for a perturbation without cells
            return Err(MetricError::Input(format!("clustering_agreement: no {side:?} cells for {p}")));
        }
        match dim {
            None => dim = Some(c.n_cols),
            Some(d) if d != c.n_cols => {
                return Err(MetricError::Input(format!(
                    "clustering_agreement: {p} has {} features, expected {d}",
                    c.n_cols
                )))
            }
            Some(_) => {}
        }
        let start = out.len();
        out.resize(start + c.n_cols, 0.0);
        let acc = &mut out[start..];
        for i in 0..c.n_rows {
            for (a, &x) in acc.iter_mut().zip(c.row(i)) {
                *a += f64::from(x);
            }
        }
        let n = c.n_rows as f64;
        for a in acc.iter_mut() {
            *a /= n;
        }
    }
    Ok((out, dim.unwrap_or(0)))
}

/// Inputs of the anndata metrics.
pub struct AnndataInput<'a> {
    pub control: &'a str,
    /// var names (for PDS's target-gene exclusion).
    pub genes: &'a [String],
    pub real: &'a Pseudobulk,
    pub pred: &'a Pseudobulk,
    /// obsm pseudobulks (`--embed-key`), used by `discrimination_score_{l2,cosine}` instead of `real`/`pred`.
    pub embed: Option<(&'a Pseudobulk, &'a Pseudobulk)>,
    /// Cell-level data for `pearson_edistance` and `clustering_agreement`.
    pub cells: Option<&'a dyn CellSource>,
}

type Entries = Vec<(String, Option<f64>)>;

fn repeat(perts: &[String], v: f64) -> Entries {
    perts.iter().map(|p| (p.clone(), Some(v))).collect()
}

/// Runs the DE metrics of `set` (if DE tables are given) and then its anndata metrics (if `anndata` is given), in
/// cell-eval's order, and pivots them into a [`MetricTable`] with sorted perturbation rows.
pub fn compute_metrics(
    set: &MetricSet,
    de: Option<(&DeTable, &DeTable)>,
    anndata: Option<&AnndataInput<'_>>,
) -> Result<MetricTable, MetricError> {
    let mut out: Vec<(String, Entries)> = Vec::new();
    if let Some((real, pred)) = de {
        let de_names = set.de_metrics();
        if !de_names.is_empty() {
            let cmp = DeComparison::new(real, pred)?;
            for name in de_names {
                compute_de_metric(&cmp, name, &mut out)?;
            }
        }
    }
    if let Some(ad) = anndata {
        let names = set.anndata_metrics();
        if !names.is_empty() {
            let ctx = AnndataContext::new(ad)?;
            for name in names {
                let entries = ctx.compute(name)?;
                out.push((name.to_string(), entries));
            }
        }
    }
    Ok(pivot(out))
}

fn pivot(out: Vec<(String, Entries)>) -> MetricTable {
    let perts: BTreeSet<String> =
        out.iter().flat_map(|(_, e)| e.iter().filter(|(_, v)| v.is_some()).map(|(p, _)| p.clone())).collect();
    let perturbations: Vec<String> = perts.into_iter().collect();
    let mut columns: Vec<MetricColumn> = Vec::new();
    for (name, entries) in out {
        if entries.iter().all(|(_, v)| v.is_none()) {
            // an empty dict adds no column in cell-eval's pivot
            continue;
        }
        let mut values = vec![None; perturbations.len()];
        for (p, v) in entries {
            if let Ok(i) = perturbations.binary_search(&p) {
                if v.is_some() {
                    values[i] = v;
                }
            }
        }
        match columns.iter_mut().find(|c| c.name == name) {
            Some(c) => c.values = values,
            None => columns.push(MetricColumn { name, values }),
        }
    }
    MetricTable { perturbations, columns }
}

fn parse_k(suffix: &str) -> Result<Option<usize>, MetricError> {
    if suffix == "N" {
        Ok(None)
    } else {
        suffix.parse::<usize>().map(Some).map_err(|_| MetricError::UnknownMetric(suffix.to_string()))
    }
}

fn compute_de_metric(cmp: &DeComparison<'_>, name: &str, out: &mut Vec<(String, Entries)>) -> Result<(), MetricError> {
    let perts: Vec<String> = cmp.perturbations.iter().map(|s| s.to_string()).collect();
    let entries = if let Some(k) = name.strip_prefix("overlap_at_") {
        cmp.overlap(parse_k(k)?, OverlapKind::Overlap)
    } else if let Some(k) = name.strip_prefix("precision_at_") {
        cmp.overlap(parse_k(k)?, OverlapKind::Precision)
    } else {
        match name {
            "de_spearman_sig" => repeat(&perts, cmp.spearman_sig()),
            "de_direction_match" => cmp.direction_match(),
            "de_spearman_lfc_sig" => cmp.spearman_lfc_sig(),
            "de_sig_genes_recall" => cmp.sig_genes_recall(),
            "de_nsig_counts" => {
                let counts = cmp.nsig_counts();
                out.push((
                    "de_nsig_counts_real".into(),
                    counts.iter().map(|(p, r, _)| (p.clone(), Some(*r as f64))).collect(),
                ));
                out.push((
                    "de_nsig_counts_pred".into(),
                    counts.iter().map(|(p, _, q)| (p.clone(), Some(*q as f64))).collect(),
                ));
                return Ok(());
            }
            "pr_auc" => cmp.auc(AucKind::Pr),
            "roc_auc" => cmp.auc(AucKind::Roc),
            other => return Err(MetricError::UnknownMetric(other.to_string())),
        }
    };
    out.push((name.to_string(), entries));
    Ok(())
}

/// Pseudobulk rows and deltas of every perturbation, built once (`iter_bulk_arrays`).
struct AnndataContext<'a> {
    input: &'a AnndataInput<'a>,
    perts: Vec<String>,
    real_rows: Vec<&'a [f32]>,
    pred_rows: Vec<&'a [f32]>,
    real_deltas: Vec<Vec<f32>>,
    pred_deltas: Vec<Vec<f32>>,
}

/// (perturbations, real rows, pred rows, real deltas, pred deltas).
type BulkParts<'a> = (Vec<String>, Vec<&'a [f32]>, Vec<&'a [f32]>, Vec<Vec<f32>>, Vec<Vec<f32>>);

fn bulk_deltas<'a>(real: &'a Pseudobulk, pred: &'a Pseudobulk, control: &str) -> Result<BulkParts<'a>, MetricError> {
    if real.labels != pred.labels {
        return Err(MetricError::PerturbationMismatch { real: real.labels.clone(), pred: pred.labels.clone() });
    }
    if real.n_cols != pred.n_cols {
        return Err(MetricError::Input(format!("pseudobulk widths differ: {} != {}", real.n_cols, pred.n_cols)));
    }
    let rc = real.row(control).ok_or_else(|| MetricError::MissingControl(control.to_string()))?;
    let pc = pred.row(control).ok_or_else(|| MetricError::MissingControl(control.to_string()))?;
    let perts: Vec<String> = real.labels.iter().filter(|l| *l != control).cloned().collect();
    let mut rr = Vec::new();
    let mut pr = Vec::new();
    let mut rd = Vec::new();
    let mut pd = Vec::new();
    for p in &perts {
        let r = real.row(p).ok_or_else(|| MetricError::Input(format!("no real bulk for {p}")))?;
        let q = pred.row(p).ok_or_else(|| MetricError::Input(format!("no pred bulk for {p}")))?;
        rd.push(error_metrics::delta(r, rc));
        pd.push(error_metrics::delta(q, pc));
        rr.push(r);
        pr.push(q);
    }
    Ok((perts, rr, pr, rd, pd))
}

impl<'a> AnndataContext<'a> {
    fn new(input: &'a AnndataInput<'a>) -> Result<Self, MetricError> {
        let (perts, real_rows, pred_rows, real_deltas, pred_deltas) =
            bulk_deltas(input.real, input.pred, input.control)?;
        Ok(Self { input, perts, real_rows, pred_rows, real_deltas, pred_deltas })
    }

    fn per_pert(&self, f: impl Fn(usize) -> f64) -> Entries {
        self.perts.iter().enumerate().map(|(i, p)| (p.clone(), Some(f(i)))).collect()
    }

    fn pds(&self, metric: Distance) -> Result<Entries, MetricError> {
        let scores = match (metric, self.input.embed) {
            (Distance::L2 | Distance::Cosine, Some((re, pe))) => {
                let (perts, _, _, rd, pd) = bulk_deltas(re, pe, self.input.control)?;
                let s = pds::discrimination_scores(&perts, &rd, &pd, None, metric);
                return Ok(perts.into_iter().zip(s).map(|(p, v)| (p, Some(v))).collect());
            }
            _ => pds::discrimination_scores(
                &self.perts,
                &self.real_deltas,
                &self.pred_deltas,
                Some(self.input.genes),
                metric,
            ),
        };
        Ok(self.perts.iter().cloned().zip(scores).map(|(p, v)| (p, Some(v))).collect())
    }

    fn compute(&self, name: &str) -> Result<Entries, MetricError> {
        Ok(match name {
            // _generic_evaluation calls func(pred, real)
            "pearson_delta" => {
                self.per_pert(|i| error_metrics::pearson_f32(&self.pred_deltas[i], &self.real_deltas[i]))
            }
            "mse" => self.per_pert(|i| error_metrics::mse(self.pred_rows[i], self.real_rows[i])),
            "mae" => self.per_pert(|i| error_metrics::mae(self.pred_rows[i], self.real_rows[i])),
            "mse_delta" => self.per_pert(|i| error_metrics::mse(&self.pred_deltas[i], &self.real_deltas[i])),
            "mae_delta" => self.per_pert(|i| error_metrics::mae(&self.pred_deltas[i], &self.real_deltas[i])),
            "discrimination_score_l1" => self.pds(Distance::L1)?,
            "discrimination_score_l2" => self.pds(Distance::L2)?,
            "discrimination_score_cosine" => self.pds(Distance::Cosine)?,
            "pearson_edistance" => {
                let cells = self.input.cells.ok_or(MetricError::NeedsCells("pearson_edistance"))?;
                let v = edistance::pearson_edistance(cells, &self.perts, self.input.control)?;
                repeat(&self.perts, v)
            }
            "clustering_agreement" => {
                let cells = self.input.cells.ok_or(MetricError::NeedsCells("clustering_agreement"))?;
                let v = clustering::clustering_agreement(cells, &self.perts)?;
                repeat(&self.perts, v)
            }
            other => return Err(MetricError::UnknownMetric(other.to_string())),
        })
    }
}
