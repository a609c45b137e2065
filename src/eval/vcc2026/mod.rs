//! The 2026 Virtual Cell Challenge scorer: `cell-eval2 run --preset vcc2026` (cell-eval2 0.20.0), its baseline
//! arm, the real bundle (baseline arm + replicate anchor over five seeded half-splits) and the final score.
//! What each number means is in `design/vcc2026.md`; the fixtures are `tests/fixtures/vcc2026/`.
//!
//! Stages: [`validate`] (the preset's input rules) → one streaming pass per batch of groups ([`collect_rows`];
//! a group's cells in the layout of [`rows`], compact for counts), giving per group the bulk log-normalised
//! profile and the jackknife correction ([`jackknife`]) and, against a
//! control reference, the per-cell CPM Wilcoxon DE ([`de`]) → the ten profile members ([`metrics`]) → the
//! output files ([`outputs`]). [`baseline`], [`bundle`] and [`score`] are the competition's two ends and the
//! final rescaling. The DE reuses the 2025 machinery (`mwu::rank_sum_and_ties_vs`, `mwu::ndtr`,
//! `bh::bh_adjust`), the streaming reuses `input::{CellSource, stream_chunks}`.

pub mod baseline;
pub mod bundle;
pub mod de;
pub mod digest;
pub mod jackknife;
pub mod metrics;
pub mod outputs;
pub mod rows;
pub mod score;
pub mod validate;

use std::path::PathBuf;

use rayon::prelude::*;

use super::error::EvalError;
use super::input::{stream_kept_rows, CellSource};
use crate::eval::normalize::{has_fraction, in_lanes};
use crate::progress::Progress;
pub use rows::Rows;

/// `bulk_target_sum` (pseudobulk, expression + PDS).
pub const BULK_TARGET_SUM: f64 = 5e4;
/// `target_sum` (per-cell CPM, DE only).
pub const CELL_TARGET_SUM: f64 = 1e6;
/// `max_counts_per_cell`.
pub const MAX_COUNTS_PER_CELL: f64 = 1e6;
/// `filter_gene_min_cpm_cell` (strict `>` on the control mean CPM).
pub const MIN_CPM: f64 = 5.0;
/// `de.epsilon`.
pub const DE_EPSILON: f64 = 1e-9;
/// `de.p_adj_threshold`.
pub const ALPHA: f64 = 0.05;

/// Errors of the vcc2026 pipeline; messages follow cell-eval2's wording where it has one.
#[derive(Debug, thiserror::Error)]
pub enum Vcc2026Error {
    #[error(transparent)]
    Eval(#[from] EvalError),
    #[error("gene dimension mismatch: pred {pred} != real {real}")]
    GeneDimension { pred: usize, real: usize },
    #[error("gene names/order differ between pred and real (first difference at position {index}: pred '{pred}', real '{real}')")]
    GeneOrder { index: usize, pred: String, real: String },
    #[error("perturbation column '{column}' missing from {which}.obs")]
    MissingPertColumn { column: String, which: &'static str },
    #[error("control perturbation '{control}' not found in {which}")]
    MissingControl { control: String, which: &'static str },
    #[error("perturbation sets differ: {n_pred} pred vs {n_real} real; pred-only ({n_pred_only})={pred_only}; real-only ({n_real_only})={real_only}")]
    PerturbationSets {
        n_pred: usize,
        n_real: usize,
        n_pred_only: usize,
        pred_only: String,
        n_real_only: usize,
        real_only: String,
    },
    #[error("{file}: data contains negative values; expected non-negative")]
    Negative { file: String },
    #[error("{file}: declared input_type='counts' but values are fractional (e.g. {example} in cell {cell})")]
    Fractional { file: String, example: f64, cell: usize },
    #[error("ScaleLimitError: per-cell total {total} exceeds max_counts_per_cell=1000000 ({file}, cell {cell})")]
    ScaleLimit { file: String, total: String, cell: usize },
    #[error("no target resolves to a gene in the reference feature index: 0 of {n} targets matched (e.g. {examples})")]
    NoTargetResolves { n: usize, examples: String },
    #[error("duplicated gene names in var index (e.g. '{name}'); target-gene exclusion needs unique names")]
    DuplicateVar { name: String },
    #[error("group '{label}' has no cells")]
    EmptyGroup { label: String },
    #[error("{0}")]
    Metric(String),
    #[error("{0}")]
    Bundle(String),
    #[error("{0}")]
    Score(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
}

pub type Result<T, E = Vcc2026Error> = std::result::Result<T, E>;

/// One group of cells of a [`Side`]: a label and its cells as obs rows of the source (a row may repeat).
#[derive(Debug, Clone)]
pub struct Group {
    pub label: String,
    pub rows: Vec<usize>,
    /// Emitted cells are `f32(row × scale)` (the baseline arm's dispersed emission).
    pub scaled: bool,
}

/// A set of labelled cell groups read from one source: a whole file, a half-split of it, or the baseline arm.
pub struct Side<'a> {
    pub source: &'a dyn CellSource,
    pub name: String,
    /// Sorted by label (code point order); includes the control.
    pub groups: Vec<Group>,
    /// Index of the control in `groups`.
    pub control: usize,
    /// Per-gene scale for `scaled` groups.
    pub scale: Option<Vec<f64>>,
    pub chunk_rows: usize,
    /// Rules 4–5 to check on each row read (a file from `validate::load_pair_deferred`).
    pub check: Option<&'a validate::DeferredCounts>,
}

impl Side<'_> {
    pub fn labels(&self) -> Vec<String> {
        self.groups.iter().map(|g| g.label.clone()).collect()
    }
}

/// What the jackknife and the CPM DE of a group both start from, in one pass over its entries (each pass
/// streams the group, several MB, from memory again).
#[derive(Debug, Clone)]
pub struct GroupScan {
    /// Per gene: the sum of its entries (`P`, in cell order).
    pub col_sums: Vec<f64>,
    /// Per gene: its positive entries.
    pub col_positive: Vec<u32>,
    /// Per cell: its total (in entry order, as scanpy sums it).
    pub cell_totals: Vec<f64>,
    /// Every cell lists its genes in non-decreasing order (CSR rows usually do; the DE walks them in gene order).
    pub rows_sorted: bool,
    /// Every cell lists its genes in increasing order, none twice (then a group's gene column holds one value per
    /// cell, which the DE's duplicate screening relies on).
    pub rows_strict: bool,
}

/// The entries [`GroupScan::col_positive`] counts, and so the ones the DE's CPM columns hold (NaN and negative
/// values are not).
#[inline]
pub(crate) fn counted_positive(v: f32) -> bool {
    v > 0.0
}

/// One pass over a cell's stored values (vectorised: eight lanes, no early exit) for everything the passes ask of
/// a row as it is read: the value rules' inputs (a negative, a fraction), whether a stored zero is to be dropped,
/// and the cell's total.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowSummary {
    pub negative: bool,
    /// Some value is not a whole number (NaN and ±inf included).
    pub fraction: bool,
    pub zero: bool,
    /// The lanes' sums, added.
    pub lanes_total: f64,
    /// Σ|v| in the same lanes.
    magnitude: f64,
    /// The largest value's bit pattern without its sign bit (for values ≥ 0, the largest value's).
    pub max_bits: u32,
}

impl RowSummary {
    pub fn of(vals: &[f32]) -> Self {
        Self::of_counts(vals).unwrap_or_else(|| Self::of_any(vals))
    }

    /// [`Self::of`] for a row of whole numbers ≥ 0 whose sums in sixteen f32 lanes stay below 2^24: every partial
    /// sum is then exact, so the lanes' total is the f64 lanes' number, at twice their width. `None` for any
    /// other row. (A lane sum rounds only once it reaches 2^24, and never comes back below.)
    /// Compiled for AVX-512 and AVX2 besides the baseline (sixteen f32 lanes are one AVX-512 register; the
    /// baseline has no unsigned max).
    #[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
    fn of_counts(vals: &[f32]) -> Option<RowSummary> {
        let mut sum = [0.0f32; 16];
        let mut lanes = LaneFlags::<16>::default();
        in_lanes::<16>(vals, |j, v| {
            sum[j] += v;
            lanes.add(j, v);
        });
        let total: f64 = sum.iter().map(|&s| s as f64).sum();
        let summary = lanes.summary(total, total);
        if summary.negative || summary.fraction || sum.iter().any(|&s| s >= 16_777_216.0) {
            return None;
        }
        Some(summary)
    }

    /// [`Self::of`] for any row: eight f64 lanes (compiled as [`Self::of_counts`]; only additions, so every
    /// version gives the same bits).
    #[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
    fn of_any(vals: &[f32]) -> RowSummary {
        let (mut sum, mut magnitude) = ([0.0f64; 8], [0.0f64; 8]);
        let mut lanes = LaneFlags::<8>::default();
        in_lanes::<8>(vals, |j, v| {
            sum[j] += v as f64;
            magnitude[j] += (v as f64).abs();
            lanes.add(j, v);
        });
        lanes.summary(sum.iter().sum(), magnitude.iter().sum())
    }

    /// The cell's total as scanpy sums it: in entry order, in f64 (`X.sum(axis=1)`). That is a chain of dependent
    /// additions, ~4 cycles per entry. Whole numbers whose magnitudes sum below 2^53 have exact partial sums in
    /// any order, so for counts the lanes' total is the same number; anything else (a fraction, NaN, ±inf, a huge
    /// total) is summed again in order.
    pub fn total(&self, vals: &[f32]) -> f64 {
        // (a rounded magnitude sum only errs upwards past 2^53: the terms are non-negative)
        if !self.fraction && self.magnitude < 9_007_199_254_740_992.0 {
            self.lanes_total
        } else {
            vals.iter().fold(0.0f64, |l, &v| l + v as f64)
        }
    }
}

/// What a [`RowSummary`] tells of a row's values besides its sums, folded value by value in `N` independent lanes
/// (value `k` in lane `k % N`, see `in_lanes`): one running maximum for the row made every value wait on a
/// reduction across the vector.
struct LaneFlags<const N: usize> {
    negative: [bool; N],
    fraction: [bool; N],
    zero: [bool; N],
    max_bits: [u32; N],
}

impl<const N: usize> Default for LaneFlags<N> {
    fn default() -> Self {
        LaneFlags { negative: [false; N], fraction: [false; N], zero: [false; N], max_bits: [0; N] }
    }
}

impl<const N: usize> LaneFlags<N> {
    #[inline(always)]
    fn add(&mut self, lane: usize, v: f32) {
        self.negative[lane] |= v < 0.0;
        self.fraction[lane] |= has_fraction(v);
        self.zero[lane] |= v == 0.0;
        self.max_bits[lane] = self.max_bits[lane].max(v.to_bits() & 0x7fff_ffff);
    }

    /// The lanes folded into the row's summary.
    fn summary(&self, lanes_total: f64, magnitude: f64) -> RowSummary {
        RowSummary {
            negative: self.negative.contains(&true),
            fraction: self.fraction.contains(&true),
            zero: self.zero.contains(&true),
            lanes_total,
            magnitude,
            max_bits: self.max_bits.iter().copied().max().unwrap_or(0),
        }
    }
}

/// A cell's total as scanpy sums it ([`RowSummary::total`]).
pub(crate) fn cell_total(vals: &[f32]) -> f64 {
    RowSummary::of(vals).total(vals)
}

/// One streaming pass over `side.source` collecting the cells of the groups `which` (indices into `side.groups`).
pub fn collect_rows(side: &Side, which: &[usize], progress: &dyn Progress) -> Result<Vec<Rows>> {
    // (obs row, slot) sorted by row; a row can feed several slots
    let mut want: Vec<(usize, usize)> = Vec::new();
    for (slot, &g) in which.iter().enumerate() {
        want.extend(side.groups[g].rows.iter().map(|&r| (r, slot)));
    }
    want.sort_unstable();
    let n_vars = side.source.shape().1;
    // scaled groups hold fractions: wide from the start
    let empty = |g: usize| if side.groups[g].scaled { Rows::default() } else { Rows::for_genes(n_vars) };
    let mut out: Vec<Rows> = which.iter().map(|&g| empty(g)).collect();
    // position-ordered filling: remember each slot's cells in its own row order
    let mut order: Vec<Vec<(usize, usize)>> = vec![Vec::new(); which.len()];
    for (slot, &g) in which.iter().enumerate() {
        order[slot] = side.groups[g].rows.iter().enumerate().map(|(pos, &r)| (r, pos)).collect();
        order[slot].sort_unstable();
    }
    // Groups list their cells in file order (the usual case): rows go straight into place. Otherwise each row
    // is staged with its position in the group and the group is assembled at the end.
    let in_file_order: Vec<bool> = which.iter().map(|&g| side.groups[g].rows.windows(2).all(|w| w[0] < w[1])).collect();
    for (slot, &g) in which.iter().enumerate() {
        let n = side.groups[g].rows.len();
        // a quarter above the file's average: most groups then fit without a reallocation, and the reserved
        // pages that stay unused are never touched (not resident)
        let per_row = side.source.nnz_hint().map_or(0, |nnz| nnz as usize / side.source.shape().0.max(1));
        out[slot].reserve(n, n * per_row * 5 / 4);
    }
    let mut staged: Vec<Vec<(usize, Rows)>> = vec![Vec::new(); which.len()];
    let mut k = 0usize;
    let mut next_in_slot = vec![0usize; which.len()];
    let scale = side.scale.as_deref();
    if want.is_empty() {
        return Ok(out);
    }
    // only the rows from the first wanted to the last wanted are read
    let rows_needed = want[0].0..want[want.len() - 1].0 + 1;
    // only the wanted rows are decoded
    let mut wanted_rows = vec![false; side.source.shape().0];
    for &(r, _) in &want {
        if let Some(w) = wanted_rows.get_mut(r) {
            *w = true;
        }
    }
    let keep = |r: usize| wanted_rows.get(r).copied().unwrap_or(false);
    let keep: &(dyn Fn(usize) -> bool + Sync) = &keep;
    let missing =
        |r: usize| EvalError::Read { file: side.name.clone(), message: format!("row {r} missing from chunk") };
    let res = stream_kept_rows(side.source, &side.name, side.chunk_rows, rows_needed, keep, progress, |block| {
        for (r, cols, vals) in block.iter() {
            if k < want.len() && want[k].0 < r {
                return Err(missing(want[k].0));
            }
            // only wanted rows are read; a row can feed several slots
            let summary = RowSummary::of(vals);
            while k < want.len() && want[k].0 == r {
                let slot = want[k].1;
                if let Some(check) = side.check {
                    check.check_summarized_row(&side.name, r, vals, &summary)?;
                }
                let sc = if side.groups[which[slot]].scaled { scale } else { None };
                if in_file_order[slot] {
                    out[slot].push(cols, vals, sc, &summary);
                } else {
                    let mut one = empty(which[slot]);
                    one.push(cols, vals, sc, &summary);
                    // the position(s) of this row in the group, in order of appearance of duplicates
                    let i = next_in_slot[slot];
                    let pos = order[slot].get(i).map(|&(_, p)| p).unwrap_or(i);
                    next_in_slot[slot] += 1;
                    staged[slot].push((pos, one));
                }
                k += 1;
            }
        }
        Ok(())
    });
    res?;
    if let Some(&(r, _)) = want.get(k) {
        return Err(missing(r).into());
    }
    for (slot, mut cells) in staged.into_iter().enumerate() {
        if in_file_order[slot] {
            continue;
        }
        cells.sort_by_key(|(p, _)| *p);
        for (_, c) in cells {
            out[slot].append(&c);
        }
    }
    Ok(out)
}

/// Per-group results of one side.
#[derive(Debug, Clone)]
pub struct SideStats {
    pub labels: Vec<String>,
    pub control: usize,
    pub n_cells: Vec<usize>,
    /// `bulk_lognorm` profile per group (empty for the control when its profile was not asked for: the pred
    /// side under `control_source: real`).
    pub bulk: Vec<Vec<f64>>,
    /// Jackknife sampling correction per group (0 for a control whose profile was not asked for).
    pub jk: Vec<f64>,
}

/// Options of the passes.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// Budget for the cells collected per pass (about 8 bytes per stored entry).
    pub batch_bytes: usize,
}

impl Default for PassOptions {
    fn default() -> Self {
        PassOptions { batch_bytes: 512 << 20 }
    }
}

/// Batches of group indices whose collected cells fit the budget.
fn plan_batches(side: &Side, groups: &[usize], opts: &PassOptions) -> Vec<Vec<usize>> {
    let (n_obs, n_vars) = side.source.shape();
    let per_row = match side.source.nnz_hint() {
        Some(nnz) if n_obs > 0 => (nnz as usize / n_obs).max(1),
        _ => n_vars.max(1),
    };
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut cur: Vec<usize> = Vec::new();
    let mut used = 0usize;
    for &g in groups {
        // counted in the wide layout (8 bytes per entry): count data takes half of that (`rows`), which left the
        // batches as they were (twice the groups per batch: no faster, 0.87 GB instead of 0.61)
        let cost = side.groups[g].rows.len() * per_row * 8 + n_vars * 16;
        if !cur.is_empty() && used + cost > opts.batch_bytes {
            out.push(std::mem::take(&mut cur));
            used = 0;
        }
        used += cost;
        cur.push(g);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// What [`analyse_side`] gives: the side's profiles and corrections, its DE table (unless the reference is
/// `None`) and, for `RefChoice::Own`, the reference built from its control.
pub type SideAnalysis = (SideStats, Option<de::DeTable>, Option<de::Reference>);

/// A side's batches of groups, with its first pass read: the control's cells and the first batch's.
pub struct FirstPass {
    batches: Vec<Vec<usize>>,
    control: Rows,
    rows: Vec<Rows>,
}

/// Plan `side`'s batches and read its first pass. The control comes in the first batch's pass: its cells are
/// spread over the file like every group's.
pub fn read_first_pass(side: &Side, opts: &PassOptions, progress: &dyn Progress) -> Result<FirstPass> {
    for g in &side.groups {
        if g.rows.is_empty() {
            return Err(Vcc2026Error::EmptyGroup { label: g.label.clone() });
        }
    }
    let others: Vec<usize> = (0..side.groups.len()).filter(|&g| g != side.control).collect();
    // Batch k + 1 is read on another thread while batch k is analysed, so two batches are held at once:
    // each gets half of the budget.
    let half = PassOptions { batch_bytes: opts.batch_bytes / 2 };
    let batches = plan_batches(side, &others, &half);
    let first: Vec<usize> =
        std::iter::once(side.control).chain(batches.first().into_iter().flatten().copied()).collect();
    progress.stage(&format!("{}: control + {} groups", side.name, first.len() - 1), side.source.shape().0 as u64);
    let mut rows = collect_rows(side, &first, progress)?;
    let control = rows.remove(0);
    Ok(FirstPass { batches, control, rows })
}

/// Bulk profiles, jackknife corrections and (unless `reference` is `None`) the DE of every non-control group
/// against the reference: `Own` builds it from this side's control (the real side, anchor halves,
/// `control_source: pred`), `External` takes another side's. One pass over `X` per batch of groups; the control
/// is read in the first batch's pass, and batch k + 1 is read on a thread while batch k is analysed.
pub fn analyse_side(
    side: &Side,
    reference: RefChoice<'_>,
    opts: &PassOptions,
    progress: &dyn Progress,
) -> Result<SideAnalysis> {
    let first = read_first_pass(side, opts, progress)?;
    analyse_side_then(side, first, reference, true, progress, || Ok(())).map(|(analysis, ())| analysis)
}

/// [`analyse_side`] from the side's [`FirstPass`]. `next` runs on a thread of its own as soon as this side's
/// last batch is read: reading the next side's first pass there keeps both cores busy while the last batch is
/// analysed (a first pass has no analysis to overlap, and its reading alone keeps the cores ~70 % busy).
/// `control_profile: false` skips the control's profile and jackknife (no member reads them: the pred side under
/// `control_source: real`); its cells are still read, and so checked.
pub fn analyse_side_then<R: Send>(
    side: &Side,
    first: FirstPass,
    reference: RefChoice<'_>,
    control_profile: bool,
    progress: &dyn Progress,
    next: impl FnOnce() -> Result<R> + Send,
) -> Result<(SideAnalysis, R)> {
    let n_vars = side.source.shape().1;
    let ng = side.groups.len();
    let mut bulk = vec![Vec::new(); ng];
    let mut jk = vec![0.0; ng];
    let mut de_rows: Vec<Option<de::GroupDe>> = vec![None; ng];
    let FirstPass { batches, control: ctrl_rows, rows: first_rows } = first;
    let read = |batch: &[usize]| {
        progress.stage(&format!("{}: {} groups", side.name, batch.len()), side.source.shape().0 as u64);
        collect_rows(side, batch, progress)
    };
    let panicked = || Vcc2026Error::Metric(format!("{}: a reading thread panicked", side.name));
    let (own_ref, after) = std::thread::scope(|ts| -> Result<(Option<de::Reference>, R)> {
        let mut next = Some(next);
        let mut after = None;
        // batch i's reader, or once every batch is read, `next`
        let mut start_reading = |i: usize| {
            let reader = batches.get(i).map(|b| ts.spawn(move || read(b)));
            if reader.is_none() {
                if let Some(f) = next.take() {
                    after = Some(ts.spawn(f));
                }
            }
            reader
        };
        let mut reader = start_reading(1);
        // each group's scan, then its profile and jackknife
        let scan_and_jackknife = |rows: &[Rows]| -> (Vec<GroupScan>, Vec<(Vec<f64>, f64)>) {
            rows.par_iter()
                .map(|r| {
                    let scan = r.scan(n_vars);
                    let jk = jackknife::bulk_and_jackknife_scanned(r, &scan);
                    (scan, jk)
                })
                .unzip()
        };
        let mut rows = first_rows;
        // the control's profile and (when the side is its own reference) the reference, on the two cores, beside
        // the first batch's scans and jackknives (the reference's column fill and bucket tables run on one core)
        let needs_scan = control_profile || matches!(reference, RefChoice::Own);
        let ctrl_scan = needs_scan.then(|| ctrl_rows.scan(n_vars));
        let ((profile, first_scans), own_ref) = rayon::join(
            || {
                let profile = ctrl_scan
                    .as_ref()
                    .filter(|_| control_profile)
                    .map(|scan| jackknife::bulk_and_jackknife_scanned(&ctrl_rows, scan));
                (profile, scan_and_jackknife(&rows))
            },
            || match (&ctrl_scan, reference) {
                (Some(scan), RefChoice::Own) => Some(de::Reference::build(&ctrl_rows, scan)),
                _ => None,
            },
        );
        drop(ctrl_rows);
        if let Some((b, j)) = profile {
            bulk[side.control] = b;
            jk[side.control] = j;
        }
        let de_ref = reference.resolve(own_ref.as_ref());
        let mut first_scans = Some(first_scans);
        for (i, batch) in batches.iter().enumerate() {
            if i > 0 {
                rows = match reader.take() {
                    Some(handle) => handle.join().map_err(|_| panicked())??,
                    None => return Err(panicked()),
                };
                reader = start_reading(i + 1);
            }
            let (scans, res) = match first_scans.take() {
                Some(first) => first,
                None => scan_and_jackknife(&rows),
            };
            let des: Vec<Option<de::GroupDe>> = match de_ref {
                Some(rf) => {
                    let groups: Vec<(&Rows, &GroupScan)> = rows.iter().zip(&scans).collect();
                    de::test_batch(&groups, rf).into_iter().map(Some).collect()
                }
                None => vec![None; rows.len()],
            };
            for ((&g, (b, j)), d) in batch.iter().zip(res).zip(des) {
                bulk[g] = b;
                jk[g] = j;
                de_rows[g] = d;
            }
        }
        let after = match (after, next) {
            (Some(handle), _) => handle.join().map_err(|_| panicked())??,
            (None, Some(f)) => f()?,
            (None, None) => return Err(panicked()),
        };
        Ok((own_ref, after))
    })?;
    let de_ref = reference.resolve(own_ref.as_ref());
    let stats = SideStats {
        labels: side.labels(),
        control: side.control,
        n_cells: side.groups.iter().map(|g| g.rows.len()).collect(),
        bulk,
        jk,
    };
    let table = de_ref.map(|rf| {
        let mut t = de::DeTable {
            genes: rf.genes.clone(),
            perts: Vec::new(),
            lfc: Vec::new(),
            p: Vec::new(),
            padj: Vec::new(),
        };
        for (g, d) in de_rows.into_iter().enumerate() {
            if let Some(d) = d {
                t.perts.push(side.groups[g].label.clone());
                t.lfc.push(d.lfc);
                t.p.push(d.p);
                t.padj.push(d.padj);
            }
        }
        t
    });
    Ok(((stats, table, own_ref), after))
}

/// Which control the DE of a side is computed against.
#[derive(Clone, Copy)]
pub enum RefChoice<'a> {
    /// No DE.
    None,
    /// This side's own control cells.
    Own,
    /// Another side's control (the real control for the pred side under `control_source: real`).
    External(&'a de::Reference),
}

impl<'a> RefChoice<'a> {
    /// The reference the DE runs against, given the side's own (built only for `Own`).
    fn resolve(self, own: Option<&'a de::Reference>) -> Option<&'a de::Reference> {
        match self {
            RefChoice::Own => own,
            RefChoice::External(r) => Some(r),
            RefChoice::None => None,
        }
    }
}

pub use validate::{load_pair, Loaded};
pub mod pipeline;

/// The real side's analysis, shared by the submission run, the baseline arm and the lfc_nmae anchor.
pub struct RealAnalysis {
    pub stats: SideStats,
    pub de: de::DeTable,
    pub reference: de::Reference,
}

/// The real side's analysis from [`analyse_side`]'s (with `RefChoice::Own`).
pub(crate) fn real_analysis((stats, de, reference): SideAnalysis) -> Result<RealAnalysis> {
    match (de, reference) {
        (Some(de), Some(reference)) => Ok(RealAnalysis { stats, de, reference }),
        _ => Err(Vcc2026Error::Metric("real DE missing".to_owned())),
    }
}

/// Analyse the real side (DE against its own control), then score `pred` against it: `control_source: real`
/// takes the pred DE against the real control and the pred effects against the real control bulk; `pred` uses
/// the pred side's own control for both. `pred`'s first pass is read while the real side's last batch is analysed
/// (see [`analyse_side_then`]).
pub fn analyse_real_and_evaluate(
    var_names: &[String],
    real: &Side,
    pred: &Side,
    control_source: metrics::ControlSource,
    opts: &PassOptions,
    progress: &dyn Progress,
) -> Result<(RealAnalysis, metrics::MemberValues, de::DeTable)> {
    let real_first = read_first_pass(real, opts, progress)?;
    let (analysis, pred_first) =
        analyse_side_then(real, real_first, RefChoice::Own, true, progress, || read_first_pass(pred, opts, progress))?;
    let real = real_analysis(analysis)?;
    let (members, pred_de) = evaluate_from(var_names, &real, pred, pred_first, control_source, progress)?;
    Ok((real, members, pred_de))
}

/// The scoring half of [`analyse_real_and_evaluate`], from `pred`'s first pass.
fn evaluate_from(
    var_names: &[String],
    real: &RealAnalysis,
    pred: &Side,
    pred_first: FirstPass,
    control_source: metrics::ControlSource,
    progress: &dyn Progress,
) -> Result<(metrics::MemberValues, de::DeTable)> {
    let choice = match control_source {
        metrics::ControlSource::Real => RefChoice::External(&real.reference),
        metrics::ControlSource::Pred => RefChoice::Own,
    };
    // the pred control's profile is read only under `control_source: pred` (metrics::expression_and_pds)
    let control_profile = matches!(control_source, metrics::ControlSource::Pred);
    let ((pstats, pde, _), ()) = analyse_side_then(pred, pred_first, choice, control_profile, progress, || Ok(()))?;
    let pde = pde.ok_or_else(|| Vcc2026Error::Metric("pred DE missing".to_owned()))?;
    let members = metrics::compute_members(var_names, &real.stats, &pstats, &real.de, &pde, control_source)?;
    Ok((members, pde))
}

/// Rows of test cells given as (gene, value) lists.
#[cfg(test)]
pub(crate) fn test_rows(cells: &[Vec<(u32, f32)>]) -> Rows {
    let mut rows = rows::WideRows::default();
    for cell in cells {
        for &(c, v) in cell {
            rows.cols.push(c);
            rows.vals.push(v);
        }
        rows.ends.push(rows.cols.len());
    }
    Rows::Wide(rows)
}

/// Pushes test cells given as (gene, value) lists into `rows` as [`collect_rows`] does (`scale` per gene).
#[cfg(test)]
pub(crate) fn test_push(rows: &mut Rows, cells: &[Vec<(u32, f32)>], scale: Option<&[f64]>) {
    for cell in cells {
        let cols: Vec<u32> = cell.iter().map(|e| e.0).collect();
        let vals: Vec<f32> = cell.iter().map(|e| e.1).collect();
        rows.push(crate::data::kept_rows::RowIndices::U32(&cols), &vals, scale, &RowSummary::of(&vals));
    }
}

/// [`test_rows`] in the compact layout, pushed as [`collect_rows`] pushes (the values must be counts below 2^16).
#[cfg(test)]
pub(crate) fn test_rows_compact(cells: &[Vec<(u32, f32)>]) -> Rows {
    let mut rows = Rows::for_genes(1 << 16);
    test_push(&mut rows, cells, None);
    assert!(matches!(rows, Rows::Compact(_)), "test cells that the compact layout takes");
    rows
}

/// A reproducible xorshift64 stream for test data.
#[cfg(test)]
pub(crate) fn test_rng(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_order(vals: &[f32]) -> f64 {
        vals.iter().fold(0.0f64, |l, &v| l + v as f64)
    }

    #[test]
    fn collected_groups_hold_their_cells_in_group_order_in_either_layout() {
        use crate::data::anndata::{AnnData, DataFrame, XMatrix};
        let (n_obs, n_vars) = (8, 600);
        let x = ndarray::Array2::from_shape_fn((n_obs, n_vars), |(i, j)| {
            if (i * 7 + j * 3) % 5 == 0 {
                (1 + (i + j) % 9) as f32
            } else {
                0.0
            }
        });
        let mut x = x;
        x[[7, 10]] = 2.5; // a fraction: its group is wide
        x[[4, 11]] = 70_000.0; // a count past u16: its group too, staged out of file order
        let adata = AnnData {
            x: XMatrix::Dense(x.clone()),
            obs: DataFrame::with_index((0..n_obs).map(|i| format!("c{i}")).collect()),
            var: DataFrame::with_index((0..n_vars).map(|j| format!("g{j}")).collect()),
            obsm: vec![],
            layers: vec![],
        };
        let group = |label: &str, rows: Vec<usize>| Group { label: label.to_owned(), rows, scaled: false };
        let side = Side {
            source: &adata,
            name: "test".to_owned(),
            groups: vec![group("a", vec![5, 1, 3]), group("b", vec![0, 2, 7]), group("c", vec![6, 4])],
            control: 0,
            scale: None,
            chunk_rows: 3,
            check: None,
        };
        let rows = collect_rows(&side, &[0, 1, 2], &crate::progress::NoProgress).expect("collected");
        assert!(matches!(rows[0], Rows::Compact(_)), "counts out of file order stay compact");
        assert!(matches!(rows[1], Rows::Wide(_)) && matches!(rows[2], Rows::Wide(_)));
        for (got, group) in rows.iter().zip(&side.groups) {
            let got = got.to_wide();
            assert_eq!(got.ends.len(), group.rows.len());
            for (i, &r) in group.rows.iter().enumerate() {
                let (cols, vals) = got.cell(i);
                let want: Vec<(u32, f32)> =
                    (0..n_vars).filter(|&j| x[[r, j]] != 0.0).map(|j| (j as u32, x[[r, j]])).collect();
                let have: Vec<(u32, f32)> = cols.iter().copied().zip(vals.iter().copied()).collect();
                assert_eq!(have, want, "{} cell {i} (row {r})", group.label);
                assert_eq!(got.totals[i], want.iter().map(|e| e.1 as f64).sum::<f64>());
            }
        }
    }

    #[test]
    fn cell_total_is_the_in_order_sum_bit_for_bit() {
        let mut next = test_rng(5);
        for len in [0usize, 1, 7, 8, 9, 63, 1000, 3871] {
            let counts: Vec<f32> = (0..len).map(|_| (1 + next() % 40) as f32).collect();
            assert_eq!(cell_total(&counts).to_bits(), in_order(&counts).to_bits());
            // fractions over many decades (f32s of a few decades sum exactly in f64), where the order changes the
            // bits
            let scaled: Vec<f32> = counts.iter().map(|&c| c * 10f32.powi(-((next() % 24) as i32))).collect();
            assert_eq!(cell_total(&scaled).to_bits(), in_order(&scaled).to_bits());
            let lanes: f64 = (0..8).map(|j| scaled.iter().skip(j).step_by(8).fold(0.0, |l, &v| l + v as f64)).sum();
            if len >= 1000 {
                assert_ne!(lanes.to_bits(), in_order(&scaled).to_bits(), "the test needs an order-dependent sum");
            }
        }
        // whole numbers past 2^53 in total, negatives, NaN, infinities
        let huge = [1e16f32, 3.0, 1e16, 5.0, 7.0, 1e16, 1.0, 1.0, 9.0];
        assert_eq!(cell_total(&huge).to_bits(), in_order(&huge).to_bits());
        let signed = [5.0f32, -3.0, 2.0, -7.0, 1.0, 1.0, 8.0, -2.0, 4.0];
        assert_eq!(cell_total(&signed).to_bits(), in_order(&signed).to_bits());
        assert!(cell_total(&[1.0, f32::NAN, 2.0]).is_nan());
        assert_eq!(cell_total(&[1.0, f32::INFINITY, 2.0]), f64::INFINITY);
        // the f32 lanes and the f64 lanes give the same summary wherever the first apply
        for len in [0usize, 5, 16, 17, 40, 3871] {
            let counts: Vec<f32> =
                (0..len).map(|k| if k % 9 == 4 { 0.0 } else { (1 + next() % 5000) as f32 }).collect();
            let (fast, any) = (RowSummary::of_counts(&counts).expect("counts"), RowSummary::of_any(&counts));
            assert_eq!(
                (fast.lanes_total.to_bits(), fast.magnitude.to_bits()),
                (any.lanes_total.to_bits(), any.magnitude.to_bits())
            );
            assert_eq!((fast.zero, fast.max_bits), (any.zero, any.max_bits));
        }
        // a lane reaching 2^24 (counts of 2^23 + 1 sum inexactly in f32), a negative, a fraction: the f64 lanes
        let big = vec![8_388_609.0f32; 48];
        assert!(RowSummary::of_counts(&big).is_none());
        assert_eq!(cell_total(&big).to_bits(), in_order(&big).to_bits());
        assert!(RowSummary::of_counts(&[1.0, -2.0]).is_none() && RowSummary::of_counts(&[1.0, 0.5]).is_none());
        // the flags, wherever the value sits among the lanes and the tail
        for at in [0usize, 7, 8, 10] {
            let mut row = vec![3.0f32; 11];
            for (v, flag) in [(0.0f32, "zero"), (-1.0, "negative"), (2.5, "fraction"), (f32::NAN, "fraction")] {
                row[at] = v;
                let s = RowSummary::of(&row);
                assert_eq!((s.zero, s.negative, s.fraction), (flag == "zero", flag == "negative", flag == "fraction"));
            }
        }
    }
}
