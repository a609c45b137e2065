//! Differential expression of every perturbation against the file's own control, exactly as pdex 0.3.0
//! `mode="ref"` (pdex/_single_cell.py) computes it for cell-eval 0.8.2 (`design/cell-eval.md` §2).
//!
//! Streaming: `X` is read in row chunks, each pass decoding only the rows it needs. The first pass collects the
//! control cells (kept for the whole run as a bucket-indexed [`SortedReference`]) and the rows of a first batch
//! of groups; each further pass collects the next batch, sized so that the collected rows stay within
//! `DeOptions::batch_bytes`, while the previous batch is tested on another thread. A batch is tested 16 groups
//! at a time: column means in cell order and a per-gene transpose (sorted values) per group, then the rank sums
//! gene block by gene block across the groups (the control's columns stay in cache), then lfc and BH per group.
//! Memory is bounded by twice the batch budget, the control, a read chunk and the output table, independent of
//! the number of cells.

use rayon::prelude::*;

use super::bh::bh_adjust;
use super::error::{EvalError, Result};
use super::input::PreparedFile;
use super::mwu::{mwu_from_ranks, MwuResult, RankScratch, SortedReference, REFERENCE_PAD};
use super::pseudobulk::PseudobulkAcc;
use super::types::{DeTable, Pseudobulk};
use crate::data::anndata::MatrixEncoding;
use crate::progress::Progress;

/// Options of the DE stage.
#[derive(Debug, Clone)]
pub struct DeOptions {
    /// Memory budget for the rows collected per pass (about 8 bytes per stored entry). Batch k is tested while
    /// pass k + 1 collects, so up to twice this is held.
    pub batch_bytes: usize,
}

impl Default for DeOptions {
    fn default() -> Self {
        DeOptions { batch_bytes: 256 << 20 }
    }
}

/// The rows of one group, in cell order, stored non-zeros only.
#[derive(Default)]
struct GroupRows {
    ends: Vec<usize>,
    cols: Vec<u32>,
    vals: Vec<f32>,
}

impl GroupRows {
    fn with_capacity(nnz: usize, n_cells: usize) -> Self {
        GroupRows { ends: Vec::with_capacity(n_cells), cols: Vec::with_capacity(nnz), vals: Vec::with_capacity(nnz) }
    }

    fn push_row(&mut self, cols: &[u32], vals: &[f32]) {
        let n = cols.len().min(vals.len());
        // explicitly stored zeros are rare: rows without one are copied whole (a fold, so it vectorises)
        if vals[..n].iter().fold(true, |all, &v| all & (v != 0.0)) {
            self.cols.extend_from_slice(&cols[..n]);
            self.vals.extend_from_slice(&vals[..n]);
        } else {
            for (&c, &v) in cols.iter().zip(vals) {
                // an explicitly stored zero is a zero: it joins the implicit zeros' tie block
                if v != 0.0 {
                    self.cols.push(c);
                    self.vals.push(v);
                }
            }
        }
        self.ends.push(self.cols.len());
    }

    /// Column means of the group's log1p values, as numpy/scipy compute them in pdex:
    /// CSR: Σ f32(x · f32(1/n)) in f32, cells in order (scipy `_data_matrix.mean`);
    /// dense: Σ x in f32, cells in order, then / n in f32 (numpy `mean(axis=0)`).
    fn column_means(&self, n: usize, n_vars: usize, encoding: MatrixEncoding) -> Vec<f32> {
        let mut acc = vec![0.0f32; n_vars];
        match encoding {
            MatrixEncoding::Dense => {
                for (&c, &v) in self.cols.iter().zip(&self.vals) {
                    acc[c as usize] += v;
                }
                let nf = n as f32;
                acc.iter_mut().for_each(|a| *a /= nf);
            }
            MatrixEncoding::Csr | MatrixEncoding::Csc => {
                // scipy: inter_self * (1.0 / denom): the Python float is cast to f32 (NEP 50)
                let inv = (1.0f64 / n as f64) as f32;
                for (&c, &v) in self.cols.iter().zip(&self.vals) {
                    acc[c as usize] += v * inv;
                }
            }
        }
        acc
    }

    /// Per-gene sorted non-zero values (a CSC transpose of the group), as their f32 bit patterns, in
    /// [`SortedReference::from_padded`]'s layout: the values are positive (the input checks reject negative data),
    /// so the bits sort like the values, and faster.
    fn sorted_columns(&self, n_vars: usize) -> GeneColumns {
        let mut out = self.columns_padded(n_vars, REFERENCE_PAD);
        for g in 0..n_vars {
            out.vals[out.ptr[g]..out.ptr[g + 1] - REFERENCE_PAD].sort_unstable();
        }
        out
    }

    /// Per-gene non-zero values in cell order (a CSC transpose of the group), as f32 bit patterns.
    fn columns(&self, n_vars: usize) -> GeneColumns {
        self.columns_padded(n_vars, 0)
    }

    /// [`Self::columns`] with `pad` free slots after each column.
    fn columns_padded(&self, n_vars: usize, pad: usize) -> GeneColumns {
        let mut ptr = vec![0usize; n_vars + 1];
        for &c in &self.cols {
            ptr[c as usize + 1] += 1;
        }
        for g in 0..n_vars {
            ptr[g + 1] += ptr[g] + pad;
        }
        let mut fill = ptr.clone();
        let mut vals = vec![0u32; ptr[n_vars]];
        for (&c, &v) in self.cols.iter().zip(&self.vals) {
            let slot = &mut fill[c as usize];
            vals[*slot] = v.to_bits();
            *slot += 1;
        }
        GeneColumns { ptr, vals }
    }
}

/// Non-zero values per gene (f32 bit patterns): sorted for the reference, in cell order for a group.
struct GeneColumns {
    ptr: Vec<usize>,
    vals: Vec<u32>,
}

impl GeneColumns {
    fn gene(&self, g: usize) -> &[u32] {
        &self.vals[self.ptr[g]..self.ptr[g + 1]]
    }
}

/// The control group as every test needs it.
struct Reference {
    n: usize,
    /// expm1 of the column means (f32, glibc `expm1f` = Rust `f32::exp_m1` on Linux).
    mean: Vec<f32>,
    /// Per gene sorted non-zero values, tie terms and bucket tables.
    columns: SortedReference<u32>,
}

/// One group's DE rows, genes in `var` order.
struct GroupDe {
    target_mean: Vec<f32>,
    lfc: Vec<f64>,
    percent_change: Vec<f64>,
    p_value: Vec<f64>,
    statistic: Vec<f64>,
    fdr: Vec<f64>,
}

/// log2 fold change of the f32 means: log2(f64(t)/f64(r)), 0/0 = 0 (pdex; glibc `log2` = Rust `f64::log2`).
pub fn log2_fold_change(t: f32, r: f32) -> f64 {
    if t == 0.0 && r == 0.0 {
        0.0
    } else {
        (t as f64 / r as f64).log2()
    }
}

/// (t − r)/r in f64 of the f32 means, 0/0 = 0, t/0 = inf (as in the fixtures).
///
/// Not bit-exact: cell-eval's `percent_change` agrees with this on most rows and differs by a few f32 ulps of the
/// means on the others, consistent with pdex taking it from numpy's SVML `expm1` rather than glibc's `expm1f`
/// (which gives `target_mean`). No metric uses it.
pub fn percent_change(t: f32, r: f32) -> f64 {
    if t == 0.0 && r == 0.0 {
        0.0
    } else {
        (t as f64 - r as f64) / r as f64
    }
}

/// Genes per cache block of the rank-sum stage: the control's columns of one block (a few hundred KB) stay in
/// cache while every group of the batch is tested against them.
const GENE_BLOCK: usize = 128;

/// Groups tested at once (their sorted columns are held together).
const TEST_GROUPS_AT_ONCE: usize = 16;

/// Test a batch of groups against the reference.
///
/// Each group is first reduced to its column means and per-gene sorted values (its rows are dropped then).
/// The rank sums then run gene block by gene block, all groups per block: group by group, every test would
/// stream the whole control (tens of MB) through the cache once per group.
fn test_batch(
    rows: Vec<GroupRows>,
    sizes: &[usize],
    n_vars: usize,
    enc: MatrixEncoding,
    reference: &Reference,
    progress: &dyn Progress,
) -> Vec<GroupDe> {
    let prepared: Vec<(Vec<f32>, GeneColumns)> = rows
        .into_par_iter()
        .zip(sizes.par_iter())
        .map(|(r, &n)| {
            let mean = r.column_means(n, n_vars, enc).into_iter().map(f32::exp_m1).collect();
            let columns = r.columns(n_vars);
            (mean, columns)
        })
        .collect();
    let n_groups = prepared.len();
    // per block: results gene-major (gene, group)
    let blocks: Vec<Vec<MwuResult>> = (0..n_vars.div_ceil(GENE_BLOCK))
        .into_par_iter()
        .map(|b| {
            let genes = b * GENE_BLOCK..((b + 1) * GENE_BLOCK).min(n_vars);
            let mut out = Vec::with_capacity(genes.len() * n_groups);
            let mut scratch = RankScratch::default();
            for g in genes {
                for ((_, columns), &n) in prepared.iter().zip(sizes) {
                    let x = columns.gene(g);
                    let (r1, ties) = reference.columns.rank_sum_and_ties_any_order(x, n, g, &mut scratch);
                    out.push(mwu_from_ranks(r1, ties, n, reference.n));
                }
            }
            out
        })
        .collect();
    prepared
        .into_par_iter()
        .enumerate()
        .map(|(k, (target_mean, _))| {
            let mut out = GroupDe {
                lfc: Vec::with_capacity(n_vars),
                percent_change: Vec::with_capacity(n_vars),
                p_value: Vec::with_capacity(n_vars),
                statistic: Vec::with_capacity(n_vars),
                fdr: Vec::new(),
                target_mean,
            };
            for (b, block) in blocks.iter().enumerate() {
                let len = block.len() / n_groups.max(1);
                for j in 0..len {
                    let g = b * GENE_BLOCK + j;
                    let res = block[j * n_groups + k];
                    let (t, r) = (out.target_mean[g], reference.mean[g]);
                    out.lfc.push(log2_fold_change(t, r));
                    out.percent_change.push(percent_change(t, r));
                    out.p_value.push(res.p_value);
                    out.statistic.push(res.statistic);
                }
            }
            out.fdr = bh_adjust(&out.p_value);
            progress.advance(1);
            out
        })
        .collect()
}

/// Pass `pass` over `X`: the rows of `batches[pass]` (one `GroupRows` per group, in batch order; the first pass
/// also collects the control, last), and the pseudobulk of every row read.
///
/// Each row is read in the one pass that handles its category: the pass of its group, or the first pass for the
/// control and for categories that are not tested (the pseudobulk needs every category's rows). Within a category
/// rows keep their file order, so the pseudobulk sums do not depend on the batches.
fn collect_pass(
    file: &PreparedFile,
    batches: &[Vec<usize>],
    pass: usize,
    cat_nnz: &[u64],
    mut pb: Option<&mut PseudobulkAcc>,
    progress: &dyn Progress,
) -> Result<Vec<GroupRows>> {
    const NOT_READ: usize = usize::MAX;
    const PSEUDOBULK_ONLY: usize = usize::MAX - 1;
    let batch = &batches[pass];
    // slot of each category in this pass
    let mut slot = vec![NOT_READ; file.pert.categories.len()];
    let mut rows: Vec<GroupRows> = Vec::with_capacity(batch.len() + 1);
    for (k, &g) in batch.iter().enumerate() {
        slot[g] = k;
        rows.push(GroupRows::with_capacity(cat_nnz[g] as usize, file.counts[g]));
    }
    if pass == 0 {
        let c = file.control_code;
        slot[c] = rows.len();
        rows.push(GroupRows::with_capacity(cat_nnz[c] as usize, file.counts[c]));
        let tested: std::collections::HashSet<usize> = batches.iter().flatten().copied().collect();
        for (c, s) in slot.iter_mut().enumerate() {
            if *s == NOT_READ && !tested.contains(&c) {
                *s = PSEUDOBULK_ONLY;
            }
        }
    }
    let slot_of = |r: usize| -> Option<usize> {
        let code = usize::try_from(*file.pert.codes.get(r)?).ok()?;
        slot.get(code).copied().filter(|&k| k != NOT_READ)
    };
    let wanted = |r: usize| slot_of(r).is_some();
    file.for_each_chunk_where(progress, Some(&wanted), |start, m| {
        for (r, row) in m.outer_iterator().enumerate() {
            let Some(k) = slot_of(start + r) else { continue };
            if let Some(acc) = pb.as_deref_mut() {
                acc.add_sparse(file.pert.codes[start + r] as usize, row.indices(), row.data());
            }
            if k != PSEUDOBULK_ONLY {
                rows[k].push_row(row.indices(), row.data());
            }
        }
        Ok(())
    })?;
    Ok(rows)
}

/// Test a batch's groups against the reference, [`TEST_GROUPS_AT_ONCE`] at a time (their sorted columns stay
/// small); results in batch order.
fn test_groups(
    file: &PreparedFile,
    batch: &[usize],
    rows: Vec<GroupRows>,
    reference: &Reference,
    progress: &dyn Progress,
) -> Vec<GroupDe> {
    progress.stage(&format!("DE {}: testing {} groups", file.name(), batch.len()), batch.len() as u64);
    let mut results = Vec::with_capacity(batch.len());
    let mut rows = rows.into_iter();
    for sub in batch.chunks(TEST_GROUPS_AT_ONCE) {
        let sizes: Vec<usize> = sub.iter().map(|&g| file.counts[g]).collect();
        let sub_rows: Vec<GroupRows> = rows.by_ref().take(sub.len()).collect();
        results.extend(test_batch(sub_rows, &sizes, file.n_vars, file.encoding, reference, progress));
    }
    results
}

/// A testing thread that panicked (a bug, not an input problem): reported as an error, not a crash.
fn worker_panicked(file: &PreparedFile) -> EvalError {
    EvalError::Read { file: file.name(), message: format!("{}: a DE worker thread panicked", file.name()) }
}

/// Append a tested batch's rows to the table (groups in batch order, genes in `var` order).
fn append_results(
    table: &mut DeTable,
    target_pos: &mut u32,
    file: &PreparedFile,
    reference: &Reference,
    batch: &[usize],
    results: Vec<GroupDe>,
) {
    let n_vars = file.n_vars;
    for (&g, res) in batch.iter().zip(results) {
        let n1 = file.counts[g] as u64;
        table.target_idx.extend(std::iter::repeat_n(*target_pos, n_vars));
        table.feature_idx.extend(0..n_vars as u32);
        table.target_mean.extend_from_slice(&res.target_mean);
        table.ref_mean.extend_from_slice(&reference.mean);
        table.target_membership.extend(std::iter::repeat_n(n1, n_vars));
        table.ref_membership.extend(std::iter::repeat_n(reference.n as u64, n_vars));
        table.log2_fold_change.extend_from_slice(&res.lfc);
        table.percent_change.extend_from_slice(&res.percent_change);
        table.p_value.extend_from_slice(&res.p_value);
        table.statistic.extend_from_slice(&res.statistic);
        table.fdr.extend_from_slice(&res.fdr);
        *target_pos += 1;
    }
}

/// The groups pdex tests: categories in stored order minus the control and "" (missing codes are dropped).
pub fn de_groups(file: &PreparedFile) -> Vec<usize> {
    (0..file.pert.categories.len()).filter(|&c| c != file.control_code && !file.pert.categories[c].is_empty()).collect()
}

/// DE table of `file` against its own control (see the module docs).
pub fn compute_de(file: &PreparedFile, opts: &DeOptions, progress: &dyn Progress) -> Result<DeTable> {
    Ok(run(file, opts, false, None, progress)?.0)
}

/// [`compute_de`] (with the pseudobulk when `want_pseudobulk`) that also hands each tested batch's rows to
/// `on_batch` as soon as they are final (a table of those rows only, names included), so that they can be written
/// while the next batches are tested.
pub fn compute_de_streamed(
    file: &PreparedFile,
    opts: &DeOptions,
    want_pseudobulk: bool,
    on_batch: &mut dyn FnMut(DeTable),
    progress: &dyn Progress,
) -> Result<(DeTable, Option<Pseudobulk>)> {
    run(file, opts, want_pseudobulk, Some(on_batch), progress)
}

/// DE table and pseudobulk from the same passes over `X`.
pub fn compute_de_and_pseudobulk(
    file: &PreparedFile,
    opts: &DeOptions,
    progress: &dyn Progress,
) -> Result<(DeTable, Pseudobulk)> {
    let (de, pb) = run(file, opts, true, None, progress)?;
    let pb = pb.ok_or(EvalError::Cancelled)?;
    Ok((de, pb))
}

fn run(
    file: &PreparedFile,
    opts: &DeOptions,
    want_pseudobulk: bool,
    mut on_batch: Option<&mut dyn FnMut(DeTable)>,
    progress: &dyn Progress,
) -> Result<(DeTable, Option<Pseudobulk>)> {
    let n_vars = file.n_vars;
    let n_cat = file.pert.categories.len();
    let groups = de_groups(file);
    for &g in &groups {
        if file.counts[g] == 0 {
            return Err(EvalError::UnusedCategory {
                file: file.name(),
                column: file.pert_col.clone(),
                categories: format!("['{}']", file.pert.categories[g]),
            });
        }
    }
    // stored non-zeros per category, for the batch plan
    let mut cat_nnz = vec![0u64; n_cat];
    for (i, &c) in file.pert.codes.iter().enumerate() {
        if c >= 0 {
            cat_nnz[c as usize] += file.row_nnz.get(i).copied().unwrap_or(0) as u64;
        }
    }
    let cost = |c: usize| cat_nnz[c] as usize * 8 + n_vars * 8 + file.counts[c] * 8;
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut used = cost(file.control_code);
    for &g in &groups {
        if !current.is_empty() && used + cost(g) > opts.batch_bytes {
            batches.push(std::mem::take(&mut current));
            used = 0;
        }
        used += cost(g);
        current.push(g);
    }
    if !current.is_empty() || batches.is_empty() {
        batches.push(current);
    }

    let total_rows = groups.len() * n_vars;
    let mut table = DeTable {
        targets: groups.iter().map(|&g| file.pert.categories[g].clone()).collect(),
        features: file.var_names.clone(),
        target_idx: Vec::with_capacity(total_rows),
        feature_idx: Vec::with_capacity(total_rows),
        target_mean: Vec::with_capacity(total_rows),
        ref_mean: Vec::with_capacity(total_rows),
        target_membership: Vec::with_capacity(total_rows),
        ref_membership: Vec::with_capacity(total_rows),
        log2_fold_change: Vec::with_capacity(total_rows),
        percent_change: Vec::with_capacity(total_rows),
        p_value: Vec::with_capacity(total_rows),
        statistic: Vec::with_capacity(total_rows),
        fdr: Vec::with_capacity(total_rows),
    };
    let mut pb = want_pseudobulk.then(|| PseudobulkAcc::new(n_cat, n_vars));
    let reference: std::sync::OnceLock<Reference> = std::sync::OnceLock::new();
    let n_passes = batches.len();
    let mut target_pos = 0u32;
    // a tested batch's rows go into the table, and to `on_batch` as a table of their own
    let mut emit = |table: &mut DeTable, pos: &mut u32, reference: &Reference, done: &[usize], results| match on_batch
        .as_deref_mut()
    {
        Some(sink) => {
            let mut rows =
                DeTable { targets: table.targets.clone(), features: table.features.clone(), ..Default::default() };
            append_results(&mut rows, pos, file, reference, done, results);
            table.append_rows(&rows);
            sink(rows);
        }
        None => append_results(table, pos, file, reference, done, results),
    };
    // Pass k + 1 reads while batch k is tested on another thread (one batch in testing, one being collected).
    std::thread::scope(|ts| -> Result<()> {
        let mut testing: Option<(&[usize], std::thread::ScopedJoinHandle<Vec<GroupDe>>)> = None;

        for (pass, batch) in batches.iter().enumerate() {
            progress.stage(&format!("DE {} (pass {}/{n_passes})", file.name(), pass + 1), file.n_obs as u64);
            let mut rows = collect_pass(file, &batches, pass, &cat_nnz, pb.as_mut(), progress)?;
            if pass == 0 {
                let ctrl_rows = rows.pop().unwrap_or_default();
                let n = file.counts[file.control_code];
                let GeneColumns { ptr, vals } = ctrl_rows.sorted_columns(n_vars);
                let _ = reference.set(Reference {
                    n,
                    mean: ctrl_rows.column_means(n, n_vars, file.encoding).into_iter().map(f32::exp_m1).collect(),
                    columns: SortedReference::from_padded(n, ptr, vals),
                });
            }
            let reference = reference.get().ok_or(EvalError::Cancelled)?;
            if let Some((done, handle)) = testing.take() {
                let results = handle.join().map_err(|_| worker_panicked(file))?;
                emit(&mut table, &mut target_pos, reference, done, results);
            }
            if progress.cancelled() {
                return Err(EvalError::Cancelled);
            }
            let handle = ts.spawn(move || test_groups(file, batch, rows, reference, progress));
            testing = Some((batch.as_slice(), handle));
        }
        if let Some((done, handle)) = testing.take() {
            let results = handle.join().map_err(|_| worker_panicked(file))?;
            let reference = reference.get().ok_or(EvalError::Cancelled)?;
            emit(&mut table, &mut target_pos, reference, done, results);
        }
        if progress.cancelled() {
            return Err(EvalError::Cancelled);
        }
        Ok(())
    })?;
    let pb = pb.map(|acc| acc.finish(&file.pert.categories, &file.counts));
    Ok((table, pb))
}
