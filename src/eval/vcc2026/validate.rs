//! The vcc2026 preset's input rules (cell-eval2 `io.py::validate_pair`, `norm.py`, `run.py::_run_metrics`;
//! design/vcc2026.md §3), in cell-eval2's order:
//!
//! 1. gene axes identical in length and order;
//! 2. perturbation column in both obs;
//! 3. identical label sets including the control (control must be in real);
//! 4. per side: no negative value, every stored value integral within 1e-6 (NaN fails here) unless fractional
//!    counts are allowed (baseline arm);
//! 5. per-cell total ≤ 1e6;
//! 6. target-gene resolution: at least one label is a var name, var names unique.
//!
//! [`load_pair_deferred`] (`vcell eval --preset vcc2026`) skips the separate read of `X` for rules 4–5: the passes
//! check each row as they read it ([`DeferredCounts`]) and [`verify_deferred`] checks the rows no pass read. A
//! failed check falls back to the full [`check_values`] of real, then pred, so the error is the one of the order
//! above (its example value and cell included).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;

use super::{Group, Result, RowSummary, Side, Vcc2026Error, MAX_COUNTS_PER_CELL};
use crate::data::anndata::Categorical;
use crate::eval::error::short_list;
use crate::eval::error::EvalError;
use crate::eval::input::{chunk_rows_for, open_h5ad, stream_rows_where, stream_values, CellSource};
use crate::eval::normalize::has_fraction;
use crate::progress::Progress;

/// Options of a vcc2026 run.
#[derive(Debug, Clone)]
pub struct Vcc2026Options {
    pub pert_col: String,
    pub control: String,
    /// `allow_fractional_counts` (the baseline arm is scored with it on).
    pub allow_fractional: bool,
    /// Target stored entries per streamed chunk (1 Mi: a chunk's read buffers, 8 MB, are reused from the heap;
    /// at 4 Mi the buffers in flight between the reading and the collecting thread cost page faults).
    pub chunk_nnz: usize,
    pub passes: super::PassOptions,
}

impl Default for Vcc2026Options {
    fn default() -> Self {
        Vcc2026Options {
            pert_col: "target_gene".to_owned(),
            control: "non-targeting".to_owned(),
            allow_fractional: false,
            chunk_nnz: 1 << 20,
            passes: super::PassOptions::default(),
        }
    }
}

/// One checked file.
pub struct LoadedFile {
    pub name: String,
    pub source: Box<dyn CellSource>,
    pub pert: Categorical,
    pub chunk_rows: usize,
    /// Rules 4–5 still owed (files from [`load_pair_deferred`]).
    pub deferred: Option<DeferredCounts>,
}

/// Rules 4–5 of one file, checked row by row as the passes read it.
pub struct DeferredCounts {
    allow_fractional: bool,
    /// Rows checked so far.
    seen: Mutex<Vec<bool>>,
}

impl DeferredCounts {
    fn new(n_obs: usize, allow_fractional: bool) -> Self {
        DeferredCounts { allow_fractional, seen: Mutex::new(vec![false; n_obs]) }
    }

    /// Check obs row `row`; a row that breaks a rule stops the pass with [`EvalError::DeferredValues`].
    pub fn check_row(&self, file: &str, row: usize, values: &[f32]) -> Result<(), EvalError> {
        self.check_summarized_row(file, row, values, &RowSummary::of(values))
    }

    /// [`Self::check_row`] with the row's [`RowSummary`] at hand.
    pub(crate) fn check_summarized_row(
        &self,
        file: &str,
        row: usize,
        values: &[f32],
        summary: &RowSummary,
    ) -> Result<(), EvalError> {
        if !row_within_rules(values, summary, self.allow_fractional) {
            return Err(EvalError::DeferredValues { file: file.to_owned() });
        }
        if let Some(s) = self.seen.lock().unwrap_or_else(|e| e.into_inner()).get_mut(row) {
            *s = true;
        }
        Ok(())
    }

    fn unseen(&self) -> Vec<bool> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|&s| !s).collect()
    }
}

/// Whether one cell passes rules 4–5 exactly as [`check_values`] tests them (so a row failing here makes the full
/// check fail), from its [`RowSummary`] (vectorised folds without early exits); only a fraction, or a total within
/// 1e-9 of the limit (where the summation order could matter), takes [`check_values`]'s element-by-element path.
fn row_within_rules(values: &[f32], summary: &RowSummary, allow_fractional: bool) -> bool {
    // NaN is not negative (without fractional counts allowed it fails as a fraction)
    if summary.negative {
        return false;
    }
    if !allow_fractional && summary.fraction && values.iter().any(|&v| has_fraction(v) && !is_integral(v)) {
        return false;
    }
    // a sum of n positive terms in any order is within n·ε of the exact one: far inside 1e-9 relative
    if summary.lanes_total < MAX_COUNTS_PER_CELL * (1.0 - 1e-9) {
        return true;
    }
    let total: f64 = values.iter().map(|&v| v as f64).sum();
    total <= MAX_COUNTS_PER_CELL || total.is_nan()
}

impl LoadedFile {
    /// The whole file as a [`Side`]: groups sorted by label, rows in obs order.
    pub fn side(&self, control: &str) -> Result<Side<'_>> {
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); self.pert.categories.len()];
        for (i, &c) in self.pert.codes.iter().enumerate() {
            if c >= 0 {
                rows[c as usize].push(i);
            }
        }
        let mut groups: Vec<Group> = self
            .pert
            .categories
            .iter()
            .zip(rows)
            .filter(|(_, r)| !r.is_empty())
            .map(|(l, r)| Group { label: l.clone(), rows: r, scaled: false })
            .collect();
        groups.sort_by(|a, b| a.label.cmp(&b.label));
        let control = groups
            .iter()
            .position(|g| g.label == control)
            .ok_or_else(|| Vcc2026Error::MissingControl { control: control.to_owned(), which: "real" })?;
        Ok(Side {
            source: self.source.as_ref(),
            name: self.name.clone(),
            groups,
            control,
            scale: None,
            chunk_rows: self.chunk_rows,
            check: self.deferred.as_ref(),
        })
    }
}

/// A checked real/pred pair.
pub struct Loaded {
    pub real: LoadedFile,
    pub pred: LoadedFile,
    pub var_names: Vec<String>,
}

fn pert_of(source: &dyn CellSource, col: &str, which: &'static str) -> Result<Categorical> {
    match source.obs_column(col)? {
        Some(c) => Ok(c.to_categorical()),
        None => Err(Vcc2026Error::MissingPertColumn { column: col.to_owned(), which }),
    }
}

fn present_labels(cat: &Categorical) -> BTreeSet<String> {
    let mut present = vec![false; cat.categories.len()];
    for &c in &cat.codes {
        if c >= 0 {
            present[c as usize] = true;
        }
    }
    cat.categories.iter().zip(present).filter(|(_, p)| *p).map(|(c, _)| c.clone()).collect()
}

/// Integral within 1e-6 absolute in the stored dtype (`norm.py`); NaN is not.
fn is_integral(v: f32) -> bool {
    (v - v.round()).abs() <= 1e-6
}

/// Rule 4 and 5 on one file: negatives, fractional values, per-cell totals. Totals are checked after the value
/// rules of every cell (cell-eval2 checks them in a later stage).
pub fn check_values(
    source: &dyn CellSource,
    name: &str,
    chunk_rows: usize,
    allow_fractional: bool,
    progress: &dyn Progress,
) -> Result<()> {
    let mut negative = false;
    let mut fractional: Option<(f64, usize)> = None;
    let mut over: Option<(f64, usize)> = None;
    progress.stage(&format!("checking {name}"), source.shape().0 as u64);
    stream_values(source, name, chunk_rows, progress, |row, values| {
        let mut total = 0.0f64;
        for &v in values {
            negative |= v < 0.0;
            // an exact integer (fract 0) skips the rounding test
            if !allow_fractional && fractional.is_none() && has_fraction(v) && !is_integral(v) {
                fractional = Some((v as f64, row));
            }
            total += v as f64;
        }
        if over.is_none() && total > MAX_COUNTS_PER_CELL {
            over = Some((total, row));
        }
        Ok(())
    })?;
    if negative {
        return Err(Vcc2026Error::Negative { file: name.to_owned() });
    }
    if let Some((example, cell)) = fractional {
        return Err(Vcc2026Error::Fractional { file: name.to_owned(), example, cell });
    }
    if let Some((t, cell)) = over {
        let total = if t.fract() == 0.0 { format!("{t:.0}") } else { format!("{t}") };
        return Err(Vcc2026Error::ScaleLimit { file: name.to_owned(), total, cell });
    }
    Ok(())
}

/// Rule 6: at least one perturbation label is a gene, and gene names are unique.
pub fn check_targets(var_names: &[String], perts: &[String]) -> Result<()> {
    let mut seen = HashSet::new();
    for v in var_names {
        if !seen.insert(v.as_str()) {
            return Err(Vcc2026Error::DuplicateVar { name: v.clone() });
        }
    }
    if !perts.is_empty() && !perts.iter().any(|p| seen.contains(p.as_str())) {
        return Err(Vcc2026Error::NoTargetResolves { n: perts.len(), examples: short_list(perts, 3) });
    }
    Ok(())
}

/// Position of each gene name.
pub fn gene_positions(var_names: &[String]) -> HashMap<String, usize> {
    var_names.iter().enumerate().map(|(i, v)| (v.clone(), i)).collect()
}

/// Open and check a real/pred pair from paths.
pub fn load_pair(real: &Path, pred: &Path, opts: &Vcc2026Options, progress: &dyn Progress) -> Result<Loaded> {
    let r = open_h5ad(real)?;
    let p = open_h5ad(pred)?;
    load_pair_sources((real.display().to_string(), r), (pred.display().to_string(), p), opts, progress)
}

/// [`load_pair`] with rules 4–5 deferred to the passes (module docs): the caller maps
/// [`EvalError::DeferredValues`] through [`exact_value_error`] and calls [`verify_deferred`] before it uses any
/// result.
pub fn load_pair_deferred(real: &Path, pred: &Path, opts: &Vcc2026Options, progress: &dyn Progress) -> Result<Loaded> {
    let r = open_h5ad(real)?;
    let p = open_h5ad(pred)?;
    load_pair_impl((real.display().to_string(), r), (pred.display().to_string(), p), opts, progress, true)
}

/// Open and check a real/pred pair from sources.
pub fn load_pair_sources(
    real: (String, Box<dyn CellSource>),
    pred: (String, Box<dyn CellSource>),
    opts: &Vcc2026Options,
    progress: &dyn Progress,
) -> Result<Loaded> {
    load_pair_impl(real, pred, opts, progress, false)
}

fn load_pair_impl(
    real: (String, Box<dyn CellSource>),
    pred: (String, Box<dyn CellSource>),
    opts: &Vcc2026Options,
    progress: &dyn Progress,
    defer: bool,
) -> Result<Loaded> {
    let (rname, rsrc) = real;
    let (pname, psrc) = pred;
    // 1. gene axes
    let rv = rsrc.var_names()?;
    let pv = psrc.var_names()?;
    if rv.len() != pv.len() || rsrc.shape().1 != psrc.shape().1 {
        return Err(Vcc2026Error::GeneDimension {
            pred: psrc.shape().1.max(pv.len()),
            real: rsrc.shape().1.max(rv.len()),
        });
    }
    if let Some(index) = (0..rv.len()).find(|&i| rv[i] != pv[i]) {
        return Err(Vcc2026Error::GeneOrder { index, pred: pv[index].clone(), real: rv[index].clone() });
    }
    // 2. perturbation column
    let rcat = pert_of(rsrc.as_ref(), &opts.pert_col, "real")?;
    let pcat = pert_of(psrc.as_ref(), &opts.pert_col, "pred")?;
    // 3. label sets incl. control
    let rl = present_labels(&rcat);
    let pl = present_labels(&pcat);
    if rl != pl {
        let po: Vec<String> = pl.difference(&rl).cloned().collect();
        let ro: Vec<String> = rl.difference(&pl).cloned().collect();
        return Err(Vcc2026Error::PerturbationSets {
            n_pred: pl.len(),
            n_real: rl.len(),
            n_pred_only: po.len(),
            pred_only: short_list(&po, 10),
            n_real_only: ro.len(),
            real_only: short_list(&ro, 10),
        });
    }
    if !rl.contains(&opts.control) {
        return Err(Vcc2026Error::MissingControl { control: opts.control.clone(), which: "real" });
    }
    // 4–5. values, real then pred
    let rchunk = chunk_rows_for(rsrc.as_ref(), opts.chunk_nnz);
    let pchunk = chunk_rows_for(psrc.as_ref(), opts.chunk_nnz);
    let check_both = || {
        // both files at once (each check is mostly reading); real's error, if any, is reported first
        let (rcheck, pcheck) = std::thread::scope(|s| {
            let p = s.spawn(|| check_values(psrc.as_ref(), &pname, pchunk, opts.allow_fractional, progress));
            let r = check_values(rsrc.as_ref(), &rname, rchunk, false, progress);
            (r, p.join())
        });
        rcheck?;
        pcheck.map_err(|_| Vcc2026Error::Metric(format!("checking {pname} failed unexpectedly")))?
    };
    if !defer {
        check_both()?;
    }
    // 6. targets (after rules 4–5: when they were deferred, they are checked first)
    let perts: Vec<String> = rl.iter().filter(|l| **l != opts.control).cloned().collect();
    if let Err(e) = check_targets(&rv, &perts) {
        if defer {
            check_both()?;
        }
        return Err(e);
    }
    let deferred = |n_obs: usize, allow_fractional: bool| defer.then(|| DeferredCounts::new(n_obs, allow_fractional));
    let (rn, pn) = (rsrc.shape().0, psrc.shape().0);
    Ok(Loaded {
        real: LoadedFile { name: rname, source: rsrc, pert: rcat, chunk_rows: rchunk, deferred: deferred(rn, false) },
        pred: LoadedFile {
            name: pname,
            source: psrc,
            pert: pcat,
            chunk_rows: pchunk,
            deferred: deferred(pn, opts.allow_fractional),
        },
        var_names: rv,
    })
}

/// Check the rows of a pair from [`load_pair_deferred`] that no pass has read; a row that breaks a rule is
/// reported as [`exact_value_error`] would.
pub fn verify_deferred(loaded: &Loaded, opts: &Vcc2026Options, progress: &dyn Progress) -> Result<()> {
    let outcome = check_unseen_rows(&loaded.real, progress).and_then(|()| check_unseen_rows(&loaded.pred, progress));
    match outcome {
        Err(EvalError::DeferredValues { .. }) => Err(exact_value_error(loaded, opts, progress)),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(()),
    }
}

fn check_unseen_rows(file: &LoadedFile, progress: &dyn Progress) -> Result<(), EvalError> {
    let Some(check) = &file.deferred else { return Ok(()) };
    let unseen = check.unseen();
    let (Some(first), Some(last)) = (unseen.iter().position(|&u| u), unseen.iter().rposition(|&u| u)) else {
        return Ok(());
    };
    let keep = |r: usize| unseen.get(r).copied().unwrap_or(false);
    let keep: &(dyn Fn(usize) -> bool + Sync) = &keep;
    stream_rows_where(
        file.source.as_ref(),
        &file.name,
        file.chunk_rows,
        first..last + 1,
        Some(keep),
        progress,
        |start, m| {
            for (r, row) in m.outer_iterator().enumerate() {
                if keep(start + r) {
                    check.check_row(&file.name, start + r, row.data())?;
                }
            }
            Ok(())
        },
    )
}

/// The error of rules 4–5 for a pair whose deferred checks failed: the full checks of real, then pred (rules 1–3
/// passed already, and rule 6 comes after).
pub fn exact_value_error(loaded: &Loaded, opts: &Vcc2026Options, progress: &dyn Progress) -> Vcc2026Error {
    let (r, p) = (&loaded.real, &loaded.pred);
    check_values(r.source.as_ref(), &r.name, r.chunk_rows, false, progress)
        .and_then(|()| check_values(p.source.as_ref(), &p.name, p.chunk_rows, opts.allow_fractional, progress))
        .err()
        .unwrap_or_else(|| {
            Vcc2026Error::Metric(format!(
                "{}: a row broke a value rule while read, but a full check found none",
                r.name
            ))
        })
}

/// Open and check the real file on its own (baseline arm, bundle): perturbation column, control, values, targets.
pub fn load_real(real: &Path, opts: &Vcc2026Options, progress: &dyn Progress) -> Result<(LoadedFile, Vec<String>)> {
    let src = open_h5ad(real)?;
    let name = real.display().to_string();
    let vars = src.var_names()?;
    let cat = pert_of(src.as_ref(), &opts.pert_col, "real")?;
    let labels = present_labels(&cat);
    if !labels.contains(&opts.control) {
        return Err(Vcc2026Error::MissingControl { control: opts.control.clone(), which: "real" });
    }
    let chunk = chunk_rows_for(src.as_ref(), opts.chunk_nnz);
    check_values(src.as_ref(), &name, chunk, false, progress)?;
    let perts: Vec<String> = labels.iter().filter(|l| **l != opts.control).cloned().collect();
    check_targets(&vars, &perts)?;
    Ok((LoadedFile { name, source: src, pert: cat, chunk_rows: chunk, deferred: None }, vars))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Rules 4–5 of one row, element by element, as [`check_values`] applies them.
    fn scalar_rules(values: &[f32], allow_fractional: bool) -> bool {
        let mut total = 0.0f64;
        let (mut negative, mut fractional) = (false, false);
        for &v in values {
            negative |= v < 0.0;
            fractional |= !allow_fractional && has_fraction(v) && !is_integral(v);
            total += v as f64;
        }
        !negative && !fractional && (total <= MAX_COUNTS_PER_CELL || total.is_nan())
    }

    #[test]
    fn vectorised_row_rules_equal_the_scalar_ones() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for case in 0..4000 {
            let len = rng.random_range(0..90);
            let mut values: Vec<f32> = (0..len).map(|_| rng.random_range(0..50) as f32).collect();
            match case % 8 {
                // totals right at the limit: 1e6 exactly, one above, a fraction above
                1 if len > 0 => values[0] = (MAX_COUNTS_PER_CELL as f32) - values[1..].iter().sum::<f32>(),
                2 if len > 0 => values[0] = (MAX_COUNTS_PER_CELL as f32) - values[1..].iter().sum::<f32>() + 1.0,
                3 if len > 0 => values[len / 2] = 2.5,
                4 if len > 0 => values[len - 1] = f32::NAN,
                5 if len > 0 => values[len / 3] = -1.0,
                6 if len > 0 => values[0] = 1.0 + 1e-7,
                7 if len > 0 => values[0] = f32::INFINITY,
                _ => {}
            }
            for allow in [false, true] {
                assert_eq!(
                    row_within_rules(&values, &RowSummary::of(&values), allow),
                    scalar_rules(&values, allow),
                    "case {case} {values:?}"
                );
            }
        }
    }
}
