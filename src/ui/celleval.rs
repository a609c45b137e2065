//! A small reader for the eval layer's output folder (`results.csv`, `agg_results.csv`, `score.csv`,
//! `real_de.csv`, `pred_de.csv`), used by the eval, DE and gene panes until the eval layer exposes its own
//! reader; then swap `load_eval_dir` for it. [`compute_eval`] writes such a folder on demand with the eval
//! library (`vcell eval`'s own pipeline), for predictions that have none yet.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::UiError;
use crate::eval::de::DeOptions;
use crate::eval::input::InputOptions;
use crate::eval::pipeline::{run_eval, EvalOptions};
use crate::eval::profile::Profile;
use crate::progress::Progress;

/// An evaluation to compute: `pred` against `real`, the outputs into `outdir` (what `vcell eval --real R --pred P
/// -o OUTDIR` does with the `vcc` profile).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalRequest {
    pub real: PathBuf,
    pub pred: PathBuf,
    pub outdir: PathBuf,
    pub pert_col: String,
    pub control: String,
}

impl EvalRequest {
    /// The output folder when none is given: `eval-<pred stem>` next to the predictions (`vcell demo`'s layout).
    pub fn default_outdir(pred: &Path) -> PathBuf {
        let stem = pred.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "pred".into());
        pred.with_file_name(format!("eval-{stem}"))
    }
}

/// Evaluate `request` with the eval library (cell-eval's `vcc` profile, DE tables written; outputs published
/// atomically into `outdir`), then read the folder back. Blocking and CPU-heavy: run it off the UI thread.
/// `progress.cancelled()` stops it between blocks of work (nothing is left in `outdir` then).
pub fn compute_eval(request: &EvalRequest, progress: &dyn Progress) -> Result<EvalData, UiError> {
    let opts = EvalOptions {
        real: request.real.clone(),
        pred: request.pred.clone(),
        outdir: request.outdir.clone(),
        profile: Profile::Vcc,
        skip_metrics: Vec::new(),
        input: InputOptions {
            pert_col: request.pert_col.clone(),
            control: request.control.clone(),
            ..InputOptions::default()
        },
        de: DeOptions::default(),
        celltype_col: None,
        de_real: None,
        de_pred: None,
        embed_key: None,
        write_de: true,
    };
    run_eval(&opts, progress).map_err(|e| {
        if progress.cancelled() {
            UiError::Cancelled
        } else {
            UiError::Data(format!("evaluating {}: {e}", request.pred.display()))
        }
    })?;
    load_eval_dir(&request.outdir, &|| progress.cancelled())
}

/// One perturbation's row of `results.csv`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PertRow {
    pub name: String,
    pub overlap: Option<f64>,
    pub mae: Option<f64>,
    /// `discrimination_score_l1` (2025) or `pds_cosine` (2026).
    pub pdisc: Option<f64>,
    /// PDisc rank, 0 is best: (1 − discrimination_score_l1)·N (2025), (1 − pds_cosine)·(N − 1) (2026).
    pub rank: Option<f64>,
    /// 2026 layout: the values of [`EvalData::member_columns`], in that order.
    pub values: Vec<Option<f64>>,
}

/// Which challenge's scorer wrote an eval folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EvalLayout {
    /// cell-eval 0.8.2: wide `results.csv` (one column per metric), `score.csv` vs a cell-mean baseline.
    #[default]
    Vcc2025,
    /// cell-eval2 `--preset vcc2026`: long `results.csv` (perturbation, metric, value), `score.csv` against a
    /// real bundle (`from_replicate` is the competition's rescaled value).
    Vcc2026,
}

/// One scored member of the 2026 preset: its mean and, with a bundle score, its rescaled value.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub mean: Option<f64>,
    pub rescaled: Option<f64>,
}

/// Per-perturbation columns of the 2026 layout (the capped, normalised expression error exists only as an
/// aggregate; its per-perturbation numerator `expr_mse_unbiased_capped` is shown).
pub const VCC2026_COLUMNS: [(&str, &str); 6] = [
    ("PDS", crate::eval::vcc2026::metrics::PDS_COSINE),
    ("JACC", crate::eval::vcc2026::metrics::SIG_JACCARD),
    ("FIDEL", crate::eval::vcc2026::metrics::FIDELITY),
    ("REACH", crate::eval::vcc2026::metrics::REACH),
    ("NMAE", crate::eval::vcc2026::metrics::LFC_NMAE),
    ("MSEcap", crate::eval::vcc2026::metrics::EXPR_MSE_UNBIASED_CAPPED),
];

/// One gene of one perturbation, real and predicted DE side by side.
#[derive(Debug, Clone, PartialEq)]
pub struct DeRow {
    pub feature: String,
    pub real: Option<DeStat>,
    pub pred: Option<DeStat>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeStat {
    pub lfc: f64,
    pub fdr: f64,
    pub target_mean: f64,
    pub ref_mean: f64,
}

/// Significance threshold of the VCC DE metrics.
pub const FDR_THRESHOLD: f64 = 0.05;

impl DeStat {
    pub fn significant(&self) -> bool {
        self.fdr < FDR_THRESHOLD
    }
}

impl DeRow {
    pub fn real_sig(&self) -> bool {
        self.real.is_some_and(|s| s.significant())
    }
    pub fn pred_sig(&self) -> bool {
        self.pred.is_some_and(|s| s.significant())
    }
}

/// Everything read from an eval output folder.
#[derive(Debug, Clone, Default)]
pub struct EvalData {
    pub dir: PathBuf,
    /// `score.csv`: metric → improvement over the baseline (and `avg_score`).
    pub score: Vec<(String, f64)>,
    /// The `mean` row of `agg_results.csv`.
    pub means: Vec<(String, f64)>,
    pub perts: Vec<PertRow>,
    /// target → genes (sorted by feature name), when the DE tables are present.
    pub de: BTreeMap<String, Vec<DeRow>>,
    pub notes: Vec<String>,
    pub layout: EvalLayout,
    /// 2026 layout: the six scored members (means from `agg_results.csv`, rescaled values from `score.csv`).
    pub members: Vec<Member>,
    /// 2026 layout: the metric of each entry of [`PertRow::values`].
    pub member_columns: Vec<String>,
}

fn err(path: &Path, e: impl std::fmt::Display) -> UiError {
    UiError::Data(format!("{}: {e}", path.display()))
}

fn parse_num(s: &str) -> Option<f64> {
    let t = s.trim();
    if t.is_empty() {
        None
    } else {
        t.parse::<f64>().ok()
    }
}

/// Rows of a CSV as (header, records) with the header positions looked up by name.
struct Csv {
    path: PathBuf,
    headers: Vec<String>,
    reader: csv::Reader<std::fs::File>,
}

impl Csv {
    fn open(path: &Path) -> Result<Csv, UiError> {
        let mut reader = csv::Reader::from_path(path).map_err(|e| err(path, e))?;
        let headers = reader.headers().map_err(|e| err(path, e))?.iter().map(str::to_owned).collect();
        Ok(Csv { path: path.to_owned(), headers, reader })
    }
    fn col(&self, name: &str) -> Option<usize> {
        self.headers.iter().position(|h| h == name)
    }
    fn need(&self, name: &str) -> Result<usize, UiError> {
        self.col(name).ok_or_else(|| err(&self.path, format!("no column {name:?}")))
    }
}

/// Read an eval output folder. `results.csv` is required; the others are optional (noted when missing).
pub fn load_eval_dir(dir: &Path, cancel: &dyn Fn() -> bool) -> Result<EvalData, UiError> {
    let mut data = EvalData { dir: dir.to_owned(), ..EvalData::default() };
    let results = dir.join("results.csv");
    let mut csv = Csv::open(&results)?;
    if csv.headers == ["perturbation", "metric", "value"] {
        return load_vcc2026(data, csv);
    }

    let name = csv.need("perturbation")?;
    let (ov, mae, disc) = (csv.col("overlap_at_N"), csv.col("mae"), csv.col("discrimination_score_l1"));
    for rec in csv.reader.records() {
        let rec = rec.map_err(|e| err(&results, e))?;
        let get = |i: Option<usize>| i.and_then(|i| rec.get(i)).and_then(parse_num);
        data.perts.push(PertRow {
            name: rec.get(name).unwrap_or_default().to_owned(),
            overlap: get(ov),
            mae: get(mae),
            pdisc: get(disc),
            rank: None,
            values: Vec::new(),
        });
    }
    let n = data.perts.len() as f64;
    for p in &mut data.perts {
        p.rank = p.pdisc.map(|d| (1.0 - d) * n);
    }
    let score = dir.join("score.csv");
    if score.exists() {
        let mut csv = Csv::open(&score)?;
        let (m, v) = (csv.need("metric")?, csv.need("from_baseline")?);
        for rec in csv.reader.records() {
            let rec = rec.map_err(|e| err(&score, e))?;
            if let (Some(metric), Some(value)) = (rec.get(m), rec.get(v).and_then(parse_num)) {
                data.score.push((metric.to_owned(), value));
            }
        }
    } else {
        data.notes.push("no score.csv (run the eval with a baseline)".into());
    }
    data.means = read_agg_means(&dir.join("agg_results.csv"))?;
    let (real, pred) = (dir.join("real_de.csv"), dir.join("pred_de.csv"));
    if real.exists() && pred.exists() {
        let mut by_target: BTreeMap<String, BTreeMap<String, DeRow>> = BTreeMap::new();
        for (path, is_real) in [(&real, true), (&pred, false)] {
            read_de(path, is_real, &mut by_target, cancel)?;
        }
        data.de = by_target.into_iter().map(|(t, genes)| (t, genes.into_values().collect())).collect();
    } else {
        data.notes.push("no real_de.csv/pred_de.csv: the DE pane is empty".into());
    }
    Ok(data)
}

/// The `mean` row of an `agg_results.csv` (both layouts: a `statistic` column, one column per metric); empty if
/// the file is absent.
fn read_agg_means(agg: &Path) -> Result<Vec<(String, f64)>, UiError> {
    let mut means = Vec::new();
    if !agg.exists() {
        return Ok(means);
    }
    let mut csv = Csv::open(agg)?;
    let stat = csv.need("statistic")?;
    let headers = csv.headers.clone();
    for rec in csv.reader.records() {
        let rec = rec.map_err(|e| err(agg, e))?;
        if rec.get(stat) == Some("mean") {
            for (i, h) in headers.iter().enumerate() {
                if let Some(v) = rec.get(i).and_then(parse_num).filter(|_| i != stat) {
                    means.push((h.clone(), v));
                }
            }
        }
    }
    Ok(means)
}

/// A cell-eval2 `--preset vcc2026` folder: long `results.csv`, `agg_results.csv` (statistic rows × members),
/// optional `score.csv` from `score --real-bundle`.
fn load_vcc2026(mut data: EvalData, mut csv: Csv) -> Result<EvalData, UiError> {
    use crate::eval::vcc2026::metrics::{PDS_COSINE, SCORED};
    data.layout = EvalLayout::Vcc2026;
    data.member_columns = VCC2026_COLUMNS.iter().map(|(_, m)| (*m).to_owned()).collect();
    let results = csv.path.clone();
    let mut by_pert: BTreeMap<String, Vec<Option<f64>>> = BTreeMap::new();
    for rec in csv.reader.records() {
        let rec = rec.map_err(|e| err(&results, e))?;
        let (Some(pert), Some(metric)) = (rec.get(0), rec.get(1)) else { continue };
        let row = by_pert.entry(pert.to_owned()).or_insert_with(|| vec![None; VCC2026_COLUMNS.len()]);
        if let Some(k) = VCC2026_COLUMNS.iter().position(|(_, m)| *m == metric) {
            row[k] = rec.get(2).and_then(parse_num);
        }
    }
    let pds_col = VCC2026_COLUMNS.iter().position(|(_, m)| *m == PDS_COSINE);
    let n = by_pert.len() as f64;
    data.perts = by_pert
        .into_iter()
        .map(|(name, values)| {
            let pdisc = pds_col.and_then(|k| values[k]);
            PertRow { name, pdisc, rank: pdisc.map(|d| (1.0 - d) * (n - 1.0).max(0.0)), values, ..PertRow::default() }
        })
        .collect();
    data.means = read_agg_means(&data.dir.join("agg_results.csv"))?;
    let score = data.dir.join("score.csv");
    let mut rescaled: Vec<(String, f64)> = Vec::new();
    if score.exists() {
        let mut csv = Csv::open(&score)?;
        let (m, v) = (csv.need("metric")?, csv.need("from_replicate")?);
        for rec in csv.reader.records() {
            let rec = rec.map_err(|e| err(&score, e))?;
            if let (Some(metric), Some(value)) = (rec.get(m), rec.get(v).and_then(parse_num)) {
                rescaled.push((metric.to_owned(), value));
            }
        }
        data.score = rescaled.iter().filter(|(m, _)| m == "avg_score").cloned().collect();
    } else {
        data.notes.push("no score.csv (vcell score --real-bundle BUNDLE -i agg_results.csv)".into());
    }
    let lookup = |list: &[(String, f64)], m: &str| list.iter().find(|(k, _)| k == m).map(|(_, v)| *v);
    data.members = SCORED
        .iter()
        .map(|&m| Member { name: m.to_owned(), mean: lookup(&data.means, m), rescaled: lookup(&rescaled, m) })
        .collect();
    data.notes.push("vcc2026 outputs: no DE tables are shown (run with --write-degenes for de_*.parquet)".into());
    Ok(data)
}

fn read_de(
    path: &Path,
    is_real: bool,
    out: &mut BTreeMap<String, BTreeMap<String, DeRow>>,
    cancel: &dyn Fn() -> bool,
) -> Result<(), UiError> {
    let mut csv = Csv::open(path)?;
    let cols = [
        csv.need("target")?,
        csv.need("feature")?,
        csv.need("log2_fold_change")?,
        csv.need("fdr")?,
        csv.need("target_mean")?,
        csv.need("ref_mean")?,
    ];
    let mut rec = csv::StringRecord::new();
    let mut n = 0usize;
    while csv.reader.read_record(&mut rec).map_err(|e| err(path, e))? {
        n += 1;
        if n.is_multiple_of(100_000) && cancel() {
            return Err(UiError::Cancelled);
        }
        let field = |i: usize| rec.get(cols[i]).unwrap_or_default();
        let num = |i: usize| parse_num(field(i)).unwrap_or(f64::NAN);
        let stat = DeStat { lfc: num(2), fdr: num(3), target_mean: num(4), ref_mean: num(5) };
        let row = out.entry(field(0).to_owned()).or_default().entry(field(1).to_owned()).or_insert_with(|| DeRow {
            feature: field(1).to_owned(),
            real: None,
            pred: None,
        });
        if is_real {
            row.real = Some(stat);
        } else {
            row.pred = Some(stat);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_the_tiny_vcc_fixture() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny/celleval/vcc");
        let d = load_eval_dir(&dir, &|| false).unwrap();
        assert_eq!(d.perts.len(), 8);
        let p = d.perts.iter().find(|p| p.name == "GENE00111").unwrap();
        assert_eq!(p.pdisc, Some(0.625));
        assert_eq!(p.rank, Some(3.0));
        assert!(d.score.iter().any(|(m, v)| m == "avg_score" && (v - 0.4340868749958294).abs() < 1e-12));
        assert!(d.means.iter().any(|(m, v)| m == "mae" && (v - 0.13545721769332886).abs() < 1e-12));
        assert_eq!(d.de.len(), 8);
        assert!(d.de.values().all(|rows| rows.len() == 300));
        assert!(d.de.values().flatten().all(|r| r.real.is_some() && r.pred.is_some()));
    }

    #[test]
    fn missing_results_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let e = load_eval_dir(tmp.path(), &|| false).unwrap_err();
        assert!(e.to_string().contains("results.csv"), "{e}");
    }
}
