//! Per-cell CPM Wilcoxon DE of cell-eval2's CPU engine (`de_compute.py::compute_de` with the scanpy backend;
//! design/vcc2026.md §5):
//!
//! - CPM `y / (L/1e6)` in f64 (`L` the cell total; zero totals divide by 1), scanpy `normalize_total`'s order;
//! - gene gate: control mean CPM `> 5` (strict), the same genes for every perturbation;
//! - `lfc = log2((mean_p + 1e-9)/(mean_ctrl + 1e-9))`, arithmetic means;
//! - Mann–Whitney on `log1p(CPM)` with average ranks over p ∪ ctrl (`mwu::SortedReference`; a group's values
//!   ranked unsorted, their repeats found by a screening per group, `GroupCells`), tie-corrected σ, **no** continuity
//!   correction, NaN z → 0, `p = 2·ndtr(−|z|)` (scanpy `_rank_genes_groups.py`, `norm.sf`);
//! - BH within each perturbation over the gated genes (`bh::bh_adjust` = scipy `false_discovery_control`).

use std::borrow::Cow;
use std::ops::Range;

use super::rows::{with_rows, ColIndex, RowsOf, StoredValue};
use super::{counted_positive, GroupScan, Rows, CELL_TARGET_SUM, DE_EPSILON, MIN_CPM};
use crate::eval::bh::bh_adjust;
use crate::eval::mwu::{ndtr_of_nonpositive, RankScratch, SortedReference, REFERENCE_PAD};

/// scanpy `normalize_total`'s per-cell divisor `L/1e6` (a zero total divides by 1).
fn cpm_divisor(total: f64) -> f64 {
    let f = total / CELL_TARGET_SUM;
    if f == 0.0 {
        1.0
    } else {
        f
    }
}

/// Counts below this take their log1p(CPM) from a per-cell table (99.8 % of the entries of the big counts pair;
/// the others, and any fractional value, call `ln_1p`). 32 ran ~1 % faster than 16 (the `ln_1p` calls of the
/// larger counts cost more than the longer tables); 64 was slower.
const SMALL_COUNTS: usize = 32;

/// The log1p(CPM) of the counts `0..SMALL_COUNTS` in a cell of CPM divisor `f`, as f64 bit patterns (slot 0
/// unused). The same arithmetic as an entry's: `(v as f64 / f).ln_1p()`.
fn small_count_table(f: f64) -> [u64; SMALL_COUNTS] {
    let mut t = [0u64; SMALL_COUNTS];
    for (k, slot) in t.iter_mut().enumerate().skip(1) {
        *slot = (k as f64 / f).ln_1p().to_bits();
    }
    t
}

/// The bits of `log1p(x)`, `x = v/f` being a positive entry's CPM, from the cell's table when `v` is a small count.
#[inline(always)]
fn log1p_cpm_bits<V: StoredValue>(v: V, x: f64, small: &[u64; SMALL_COUNTS]) -> u64 {
    match v.small_count(SMALL_COUNTS) {
        Some(k) => small[k],
        None => x.ln_1p().to_bits(),
    }
}

/// The control's per-cell CPM: mean CPM per gene and, per gene, the sorted non-zero `log1p(CPM)` (as f64 bit
/// patterns: positive values' bits sort like the values, and faster) with [`REFERENCE_PAD`] slots after each
/// column, the layout of [`SortedReference::from_padded`]. Every gene gets its column, gated or not.
fn reference_columns<C: ColIndex, V: StoredValue>(
    rows: &RowsOf<C, V>,
    scan: &GroupScan,
) -> (Vec<f64>, Vec<usize>, Vec<u64>) {
    let n_vars = scan.col_sums.len();
    let mut sum = vec![0.0f64; n_vars];
    // the column layout first (from the scan's counts), so the values go straight into place: a positive count
    // is a positive CPM (x = v/f with f ≥ v/1e6 cannot underflow in f64)
    let mut ptr = vec![0usize; n_vars + 1];
    for (g, &c) in scan.col_positive.iter().enumerate() {
        ptr[g + 1] = ptr[g] + c as usize + REFERENCE_PAD;
    }
    let mut fill = ptr[..n_vars].to_vec();
    let mut vals = vec![0u64; ptr[n_vars]];
    for (i, &l) in scan.cell_totals.iter().enumerate() {
        let (cols, cell_vals) = rows.cell(i);
        let f = cpm_divisor(l);
        let small = small_count_table(f);
        for (&c, &v) in cols.iter().zip(cell_vals) {
            let x = v.to_f32() as f64 / f;
            sum[c.ix()] += x;
            // exactly the scan's test (a NaN, were one to get here, must not overrun a column)
            if !counted_positive(v.to_f32()) {
                continue;
            }
            let at = &mut fill[c.ix()];
            vals[*at] = log1p_cpm_bits(v, x, &small);
            *at += 1;
        }
    }
    let nf = rows.n() as f64;
    let mean: Vec<f64> = sum.iter().map(|&s| s / nf).collect();
    // the columns sorted on every core: alone, this sort left one core idle at the start of the real side
    let mut columns: Vec<&mut [u64]> = Vec::with_capacity(n_vars);
    let mut rest = &mut vals[..];
    for g in 0..n_vars {
        let (column, tail) = std::mem::take(&mut rest).split_at_mut(ptr[g + 1] - ptr[g]);
        columns.push(&mut column[..ptr[g + 1] - ptr[g] - REFERENCE_PAD]);
        rest = tail;
    }
    {
        use rayon::prelude::*;
        columns.into_par_iter().with_min_len(64).for_each(|column| column.sort_unstable());
    }
    (mean, ptr, vals)
}

/// The control reference of a DE table: its size, mean CPM, the gated genes and their sorted log1p(CPM).
pub struct Reference {
    pub n: usize,
    pub mean: Vec<f64>,
    /// Gated genes (control mean CPM > 5), ascending.
    pub genes: Vec<usize>,
    /// Per gene (gated or not): sorted non-zero log1p(CPM), tie term, bucket table.
    cols: SortedReference<u64>,
}

impl Reference {
    /// Build from the control cells and their scan.
    pub fn build(rows: &Rows, scan: &GroupScan) -> Self {
        let n_vars = scan.col_sums.len();
        let (mean, ptr, vals) = with_rows!(rows, r => reference_columns(r, scan));
        let genes: Vec<usize> = (0..n_vars).filter(|&g| mean[g] > MIN_CPM).collect();
        let n = rows.n();
        Reference { n, mean, genes, cols: SortedReference::from_padded(n, ptr, vals) }
    }
}

/// One perturbation's rows of the DE table (gated genes, in `Reference::genes` order).
#[derive(Debug, Clone)]
pub struct GroupDe {
    pub lfc: Vec<f64>,
    pub p: Vec<f64>,
    pub padj: Vec<f64>,
}

/// The DE of a batch of groups against the reference: the groups in sets of up to [`TEST_GROUPS_AT_ONCE`], the
/// genes in tasks of [`BLOCKS_PER_TASK`] blocks, each task walking its set's rows block by block (no transposition
/// of a whole group: a block's columns stay in cache), then lfc and BH per group. Every (set, genes) task of the
/// batch is in one parallel loop: a loop per set left a core idle at each set's end (9 tasks on two threads).
pub fn test_batch(groups: &[(&Rows, &GroupScan)], reference: &Reference) -> Vec<GroupDe> {
    use rayon::prelude::*;
    let cells: Vec<GroupCells> = groups.par_iter().map(|(r, scan)| GroupCells::new(r, scan)).collect();
    // sets of at most TEST_GROUPS_AT_ONCE, as even as can be: a batch of 41 groups as 7 × 5 + 6 rather than
    // 8 × 5 + 1 (a set of one warms every reference column for a single group)
    let set_size = cells.len().div_ceil(cells.len().div_ceil(TEST_GROUPS_AT_ONCE)).max(1);
    let sets: Vec<&[GroupCells]> = cells.chunks(set_size).collect();
    let n_vars = reference.mean.len();
    let task_genes = GENE_BLOCK * BLOCKS_PER_TASK;
    let n_tasks = n_vars.div_ceil(task_genes);
    // per (set, task), per gated gene and group of the set (gene-major): (p, mean CPM)
    let parts: Vec<Vec<(f64, f64)>> = (0..sets.len() * n_tasks)
        .into_par_iter()
        .map(|k| {
            let t = k % n_tasks;
            test_gene_range(sets[k / n_tasks], reference, t * task_genes..((t + 1) * task_genes).min(n_vars))
        })
        .collect();
    (0..cells.len())
        .into_par_iter()
        .map(|j| {
            let (set, within) = (j / set_size, j % set_size);
            let n_groups = sets[set].len();
            let (mut p, mut lfc) = (Vec::new(), Vec::new());
            let set_parts = &parts[set * n_tasks..(set + 1) * n_tasks];
            for (&(pj, mean), &g) in
                set_parts.iter().flat_map(|part| part.iter().skip(within).step_by(n_groups)).zip(&reference.genes)
            {
                p.push(pj);
                lfc.push(((mean + DE_EPSILON) / (reference.mean[g] + DE_EPSILON)).log2());
            }
            let padj = bh_adjust(&p);
            GroupDe { lfc, p, padj }
        })
        .collect()
}

/// Groups tested together: each reference column is brought into cache once for all of them. Fewer groups make
/// the block walk cheaper (fewer rows between a cell's visits) and the warming of the reference dearer: with the
/// compact rows and the vector lookups, 8 groups ran 1–2 % faster than 12 or 16 (benches/ab_vcc2026.sh).
const TEST_GROUPS_AT_ONCE: usize = 8;

/// Genes per block. Each (cell, block) segment of a row starts with a cache miss (prefetched), so larger blocks
/// cost fewer misses, until the groups' columns of a block outgrow the cache. DE harness, 16 groups of 200
/// cells against 2,000 (Intel, ms per group): 64 genes 7.2, 128 6.5, 256 6.2, 512 6.0, 1024 6.1–6.6; the
/// transposition of whole groups that this replaced took 6.4.
const GENE_BLOCK: usize = 512;

/// Blocks per task (a task finds each cell's starting point with [`first_at_or_above`], then walks the rows
/// block by block): 2,048 genes, 9 tasks for 18 k genes, enough to balance two threads.
const BLOCKS_PER_TASK: usize = 4;

/// Marks a log1p(CPM) bit pattern (positive: its sign bit is free) as one that may repeat within its gene column.
const SUSPECT: u64 = 1 << 63;

/// One group's cells as [`test_gene_range`] walks them: rows in gene order, each cell's CPM divisor and its
/// table of small counts' log1p(CPM).
///
/// Duplicate screening: the rank sum of a column needs to know its repeated values. A gene column holds one value
/// per cell, so two of its small-count values are equal only if two cells' tables share a value (cells of equal
/// totals, or totals in a small ratio): those table entries carry [`SUSPECT`], as does every value not taken from
/// a table (a count ≥ `SMALL_COUNTS`, a fraction). A column then repeats only suspect values, except where a
/// non-table value equals a table value: such a column is ranked with the exact hash filter (`exact`), as are all
/// columns of a group whose rows are not strictly increasing (a gene listed twice in a row).
struct GroupCells<'a> {
    rows: Cow<'a, Rows>,
    /// Per gene: the group's positive entries (the scan's), which size the columns of a block.
    n_positive: &'a [u32],
    divisor: Vec<f64>,
    small: Vec<[u64; SMALL_COUNTS]>,
    /// Per cell, the CPM of the counts `0..SMALL_COUNTS`.
    cpm: Vec<[f64; SMALL_COUNTS]>,
    /// The screening above holds (rows strictly increasing).
    screened: bool,
    /// Every value of the cells' tables (for the non-table values' check).
    table_values: TableValues,
}

impl<'a> GroupCells<'a> {
    fn new(rows: &'a Rows, scan: &'a GroupScan) -> Self {
        // rows out of gene order get a copy in gene order (stable: a gene repeated in a row keeps its order, so
        // the per-gene sums below add in the same order as in the rows)
        let rows = if scan.rows_sorted { Cow::Borrowed(rows) } else { Cow::Owned(rows.sorted_by_gene()) };
        let divisor: Vec<f64> = scan.cell_totals.iter().map(|&l| cpm_divisor(l)).collect();
        let mut small: Vec<[u64; SMALL_COUNTS]> = divisor.iter().map(|&f| small_count_table(f)).collect();
        let cpm = divisor.iter().map(|&f| std::array::from_fn(|k| k as f64 / f)).collect();
        let screened = scan.rows_strict;
        let table_values = if screened { mark_shared_table_values(&mut small) } else { TableValues::new(Vec::new()) };
        GroupCells { rows, n_positive: &scan.col_positive, divisor, small, cpm, screened, table_values }
    }

    fn n(&self) -> usize {
        self.rows.n()
    }

    /// Per cell, the index of its first entry at gene `gene` or above.
    fn cursors_at(&self, gene: usize, n_vars: usize) -> Vec<usize> {
        with_rows!(&*self.rows, rows => (0..self.n())
            .map(|i| {
                let cell = rows.cell_range(i);
                cell.start + first_at_or_above(&rows.cols[cell], gene, n_vars)
            })
            .collect())
    }

    /// The group's columns of the genes `genes` (the next block after the cursors), per cell in cell order:
    /// the sum of the CPM (for the mean) and the non-zero log1p(CPM) bits (ranked unsorted). Advances the
    /// cursors past the block.
    fn fill_block(&self, cursors: &mut [usize], genes: Range<usize>, out: &mut BlockColumns) {
        with_rows!(&*self.rows, rows => self.fill_block_in(rows, cursors, genes, out))
    }

    /// [`Self::fill_block`] in the group's layout.
    fn fill_block_in<C: ColIndex, V: StoredValue>(
        &self,
        rows: &RowsOf<C, V>,
        cursors: &mut [usize],
        genes: Range<usize>,
        out: &mut BlockColumns,
    ) {
        let width = genes.len();
        out.ptr.clear();
        out.ptr.push(0);
        let mut total = 0usize;
        for &c in &self.n_positive[genes.clone()] {
            total += c as usize;
            out.ptr.push(total);
        }
        out.fill.clear();
        out.fill.extend_from_slice(&out.ptr[..width]);
        // suspects fill each column from its end
        out.back.clear();
        out.back.extend_from_slice(&out.ptr[1..]);
        out.exact.clear();
        out.exact.resize(width, !self.screened);
        // slots from an earlier block are overwritten: every slot below `total` is written below
        if out.vals.len() < total {
            out.vals.resize(total, 0);
        }
        out.sum.clear();
        out.sum.resize(width, 0.0);
        let (fill, back, exact) = (&mut out.fill[..], &mut out.back[..], &mut out.exact[..]);
        let (vals_out, sum) = (&mut out.vals[..], &mut out.sum[..]);
        let (first, stop) = (genes.start, genes.end);
        let (all_cols, all_vals) = (&rows.cols[..], &rows.vals[..]);
        for i in 0..cursors.len() {
            // the cells' segments of a block are far apart in memory (a cell's whole row lies between two):
            // each is fetched a few cells ahead
            if let Some(&ahead) = cursors.get(i + PREFETCH_CELLS) {
                // the segment's expected length: the block's share of the cell's row, and a little more
                let row = rows.cell_range(i + PREFETCH_CELLS);
                let n_vars = self.n_positive.len().max(1);
                let len = (row.len() * (stop - first) / n_vars + 16).min(row.end - ahead);
                prefetch(&all_cols[ahead..ahead + len]);
                prefetch(&all_vals[ahead..ahead + len]);
            }
            let pos = &mut cursors[i];
            let (f, small, cpm) = (self.divisor[i], &self.small[i], &self.cpm[i]);
            let rest = *pos..rows.ends[i];
            let (cols, vals) = (&rows.cols[rest.clone()], &rows.vals[rest]);
            let mut taken = 0usize;
            for (&c, &v) in cols.iter().zip(vals) {
                let g = c.ix();
                if g >= stop {
                    break;
                }
                taken += 1;
                let local = g - first;
                let bits = if let Some(k) = v.small_count(SMALL_COUNTS) {
                    // the CPM from the cell's table too: no division (the same quotient `v / f`)
                    sum[local] += cpm[k];
                    if k == 0 {
                        continue;
                    }
                    small[k]
                } else {
                    let x = v.to_f32() as f64 / f;
                    sum[local] += x;
                    // exactly the scan's test (a NaN, were one to get here, must not overrun a column)
                    if !counted_positive(v.to_f32()) {
                        continue;
                    }
                    // not from a table (see `log1p_cpm_bits`): a suspect, and the column is ranked exactly if
                    // the value is also some cell's table value
                    let bits = x.ln_1p().to_bits();
                    if self.screened && self.table_values.contains(bits) {
                        exact[local] = true;
                    }
                    bits | SUSPECT
                };
                if bits & SUSPECT == 0 {
                    vals_out[fill[local]] = bits;
                    fill[local] += 1;
                } else {
                    back[local] -= 1;
                    vals_out[back[local]] = bits & !SUSPECT;
                }
            }
            *pos += taken;
        }
    }
}

/// Sets [`SUSPECT`] on every table value (counts 1.. of every cell) that occurs more than once across the tables,
/// and returns the set of all the tables' values.
fn mark_shared_table_values(small: &mut [[u64; SMALL_COUNTS]]) -> TableValues {
    let mut sorted: Vec<u64> = small.iter().flat_map(|table| table[1..].iter().copied()).collect();
    sorted.sort_unstable();
    let shared: Vec<u64> = sorted.chunk_by(|a, b| a == b).filter(|run| run.len() > 1).map(|run| run[0]).collect();
    if !shared.is_empty() {
        for table in small.iter_mut() {
            for bits in table[1..].iter_mut() {
                if shared.binary_search(bits).is_ok() {
                    *bits |= SUSPECT;
                }
            }
        }
    }
    TableValues::new(sorted)
}

/// A set of bit patterns with a bitmap in front: most values not in the set are turned away by one bit test.
struct TableValues {
    sorted: Vec<u64>,
    bitmap: Vec<u64>,
}

impl TableValues {
    /// Bitmap bits (a few per value: one lookup in 20 of a value outside the set goes on to the search).
    const BITS: u32 = 16;

    fn new(sorted: Vec<u64>) -> Self {
        let mut bitmap = vec![0u64; (1 << Self::BITS) / 64];
        for &v in &sorted {
            let h = Self::slot(v);
            bitmap[h / 64] |= 1 << (h % 64);
        }
        TableValues { sorted, bitmap }
    }

    fn slot(v: u64) -> usize {
        (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - Self::BITS)) as usize
    }

    fn contains(&self, v: u64) -> bool {
        let h = Self::slot(v);
        self.bitmap[h / 64] & (1 << (h % 64)) != 0 && self.sorted.binary_search(&v).is_ok()
    }
}

/// How many cells ahead [`GroupCells::fill_block`] prefetches a cell's segment (4, 8 or 16: no difference
/// measured). Without prefetching, with 64-gene blocks, a whole run took 9.1 s of CPU instead of 7.7 s; fetching
/// the segment's expected length instead of its first two lines saved another ~0.25 s (7.2–7.3 → 6.8–7.1 s).
const PREFETCH_CELLS: usize = 8;

/// Asks for the cache lines of `data` (a hint: nothing is read, nothing can fault).
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = data.as_ptr().cast::<i8>();
        let bytes = std::mem::size_of_val(data);
        for offset in (0..bytes).step_by(64) {
            // SAFETY: a prefetch is a hint to the cache; it never faults and has no visible effect (the
            // addresses are inside `data` anyway)
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// The index of the first of the sorted `cols` at `gene` or above. A row's genes spread over `0..n_vars`, so
/// the search starts where `gene` would sit in an even spread and widens from there: it touches a few cache
/// lines of the row, where a binary search touched a dozen.
fn first_at_or_above<C: ColIndex>(cols: &[C], gene: usize, n_vars: usize) -> usize {
    let len = cols.len();
    let guess = (len as u128 * gene as u128 / n_vars.max(1) as u128) as usize;
    let mut step = 16usize;
    let (mut lo, mut hi) = (guess.saturating_sub(step).min(len), guess.saturating_add(step).min(len));
    loop {
        // the answer is in lo..=hi once everything before lo is below `gene` and cols[hi] is not
        let lo_ok = lo == 0 || cols[lo - 1].ix() < gene;
        let hi_ok = hi == len || cols[hi].ix() >= gene;
        if lo_ok && hi_ok {
            return lo + cols[lo..hi].partition_point(|&c| c.ix() < gene);
        }
        step = step.saturating_mul(2);
        if !lo_ok {
            lo = lo.saturating_sub(step);
        }
        if !hi_ok {
            hi = hi.saturating_add(step).min(len);
        }
    }
}

/// A group's columns of one block of genes (reused from block to block). A column holds its values in any
/// order, the suspects of [`GroupCells`]' screening at its end.
#[derive(Default)]
struct BlockColumns {
    ptr: Vec<usize>,
    /// Per gene: where its next value goes (from the column's start) and its next suspect (from its end).
    fill: Vec<usize>,
    back: Vec<usize>,
    vals: Vec<u64>,
    /// Per gene of the block: Σ CPM over the cells, in cell order.
    sum: Vec<f64>,
    /// Per gene of the block: rank with the exact duplicate filter (the screening does not cover the column).
    exact: Vec<bool>,
}

impl BlockColumns {
    /// The values of the block's `local`-th gene, and the suspects among them (sorted here).
    fn gene(&mut self, local: usize) -> (&[u64], &[u64]) {
        let (start, suspects, end) = (self.ptr[local], self.back[local], self.ptr[local + 1]);
        if end - suspects > 1 {
            self.vals[suspects..end].sort_unstable();
        }
        (&self.vals[start..end], &self.vals[suspects..end])
    }
}

/// (p, mean CPM) of every group at each gated gene in `genes`, gene-major.
fn test_gene_range(cells: &[GroupCells], reference: &Reference, genes: Range<usize>) -> Vec<(f64, f64)> {
    let mut cursors: Vec<Vec<usize>> = cells.iter().map(|c| c.cursors_at(genes.start, reference.mean.len())).collect();
    let mut columns: Vec<BlockColumns> = cells.iter().map(|_| BlockColumns::default()).collect();
    let all_gated = &reference.genes;
    let mut next = all_gated.partition_point(|&g| g < genes.start);
    // per test: (rank sum, tie term, n1) and the group's mean CPM; the p-values at the end, in a loop of their own
    let mut tests: Vec<[f64; 3]> = Vec::new();
    let mut means: Vec<f64> = Vec::new();
    let mut scratch = RankScratch::default();
    let n2 = reference.n;
    for first in genes.clone().step_by(GENE_BLOCK) {
        let block = first..(first + GENE_BLOCK).min(genes.end);
        for ((c, cur), col) in cells.iter().zip(&mut cursors).zip(&mut columns) {
            c.fill_block(cur, block.clone(), col);
        }
        while let Some(&g) = all_gated.get(next).filter(|&&g| g < block.end) {
            next += 1;
            // a sequential read brings the gene's reference into cache before the lookups jump around in it
            std::hint::black_box(reference.cols.warm(g));
            for (c, col) in cells.iter().zip(&mut columns) {
                let n1 = c.n();
                let local = g - block.start;
                let (r1, ties) = if col.exact[local] {
                    let (start, end) = (col.ptr[local], col.ptr[local + 1]);
                    reference.cols.rank_sum_and_ties_any_order(&col.vals[start..end], n1, g, &mut scratch)
                } else {
                    let (values, suspects) = col.gene(local);
                    reference.cols.rank_sum_and_ties_with_suspects(values, n1, g, suspects)
                };
                tests.push([r1, ties, n1 as f64]);
                means.push(col.sum[local] / n1 as f64);
            }
        }
    }
    p_values(&tests, n2).into_iter().zip(means).collect()
}

/// `p_value` of every test (rank sum, tie term, n1) against `n2` reference cells: the z-scores and the common
/// branch of the normal CDF vectorised ([`ndtr_of_nonpositive`]), bit for bit `p_value`'s (its scalar divisions,
/// square root and CDF were ~3 % of a run).
fn p_values(tests: &[[f64; 3]], n2: usize) -> Vec<f64> {
    let mut a = vec![0.0; tests.len()];
    minus_abs_z(tests, n2 as f64, &mut a);
    let mut p = vec![0.0; tests.len()];
    ndtr_of_nonpositive(&a, &mut p);
    for p in &mut p {
        *p *= 2.0;
    }
    p
}

/// `−|z|` of `p_value`, same operations in the same order (`(n1 + n2) as f64` is exact as `n1f + n2f`).
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl", "x86_64+avx2"))]
fn minus_abs_z(tests: &[[f64; 3]], n2f: f64, out: &mut [f64]) {
    for (o, &[r1, ties, n1f]) in out.iter_mut().zip(tests) {
        let nn = n1f + n2f;
        let t = 1.0 - ties / (nn * nn * nn - nn);
        let sd = (t * n1f * n2f * (nn + 1.0) / 12.0).sqrt();
        let z = (r1 - n1f * (nn + 1.0) / 2.0) / sd;
        *o = if z.is_nan() { -0.0 } else { -z.abs() };
    }
}

/// scanpy's two-sided p-value from a rank sum: `T = 1 − Σ(t³−t)/(N³−N)`, `σ = sqrt(T·n1·n2·(N+1)/12)`,
/// `z = (R1 − n1(N+1)/2)/σ` (NaN → 0), `p = 2·ndtr(−|z|)`. The runs take it through [`p_values`]; this one test
/// at a time is the reference the tests hold them to.
#[cfg(test)]
fn p_value(r1: f64, ties: f64, n1: usize, n2: usize) -> f64 {
    let (nn, n1f, n2f) = ((n1 + n2) as f64, n1 as f64, n2 as f64);
    let t = 1.0 - ties / (nn * nn * nn - nn);
    let sd = (t * n1f * n2f * (nn + 1.0) / 12.0).sqrt();
    let mut z = (r1 - n1f * (nn + 1.0) / 2.0) / sd;
    if z.is_nan() {
        z = 0.0;
    }
    2.0 * crate::eval::mwu::ndtr(-z.abs())
}

/// A side's DE table: perturbations × gated genes.
#[derive(Debug, Clone, Default)]
pub struct DeTable {
    /// Gated gene indices (ascending), shared by every perturbation.
    pub genes: Vec<usize>,
    pub perts: Vec<String>,
    pub lfc: Vec<Vec<f64>>,
    pub p: Vec<Vec<f64>>,
    pub padj: Vec<Vec<f64>>,
}

impl DeTable {
    pub fn pert_index(&self, label: &str) -> Option<usize> {
        self.perts.iter().position(|p| p == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::mwu::rank_sum_and_ties;
    use crate::eval::vcc2026::{test_rows, test_rows_compact};

    /// Cells over `n_vars` genes: mostly small counts, some counts ≥ `SMALL_COUNTS`, some fractional values,
    /// a few repeated cells (equal values in a column), an empty cell; `shuffled` puts some rows out of gene order.
    fn random_cells(seed: u64, n: usize, n_vars: usize, shuffled: bool) -> Vec<Vec<(u32, f32)>> {
        let mut next = crate::eval::vcc2026::test_rng(seed);
        let mut cells: Vec<Vec<(u32, f32)>> = Vec::new();
        for i in 0..n {
            if i == 3 {
                cells.push(Vec::new());
                continue;
            }
            if i % 7 == 6 {
                // a copy of an earlier cell: its values tie with that cell's, gene by gene
                let j = (next() as usize) % cells.len();
                cells.push(cells[j].clone());
                continue;
            }
            let mut cell: Vec<(u32, f32)> = (0..n_vars as u32)
                .filter_map(|g| {
                    let u = next() % 100;
                    // a few dense genes, the rest sparse
                    let p = if g % 97 == 0 { 80 } else { 8 };
                    (u < p).then(|| {
                        let r = next() % 100;
                        let v = if r < 85 {
                            1 + next() % 4
                        } else if r < 97 {
                            5 + next() % 30
                        } else {
                            0
                        };
                        (g, if v == 0 { 2.5 } else { v as f32 })
                    })
                })
                .collect();
            if shuffled && i % 5 == 1 {
                cell.reverse();
            }
            cells.push(cell);
        }
        cells
    }

    /// The DE as written in the spec: per gene, the sorted values of both sides merged ([`rank_sum_and_ties`]).
    fn naive(rows: &Rows, reference: &Reference, ctrl: &Rows) -> GroupDe {
        let column = |rows: &Rows, g: usize| -> (Vec<f64>, f64) {
            let rows = rows.to_wide();
            let (mut vals, mut sum) = (Vec::new(), 0.0);
            for i in 0..rows.n() {
                let (cols, cvals) = rows.cell(i);
                let l: f64 = cvals.iter().fold(0.0, |a, &v| a + v as f64);
                let f = cpm_divisor(l);
                for (&c, &v) in cols.iter().zip(cvals) {
                    if c as usize == g {
                        let x = v as f64 / f;
                        sum += x;
                        if v > 0.0 {
                            vals.push(x.ln_1p());
                        }
                    }
                }
            }
            vals.sort_by(f64::total_cmp);
            (vals, sum / rows.n() as f64)
        };
        let (mut p, mut lfc) = (Vec::new(), Vec::new());
        for &g in &reference.genes {
            let (x, mean) = column(rows, g);
            let (y, ref_mean) = column(ctrl, g);
            assert_eq!(ref_mean, reference.mean[g]);
            let (r1, ties) = rank_sum_and_ties(&x, rows.n(), &y, ctrl.n());
            p.push(p_value(r1, ties, rows.n(), ctrl.n()));
            lfc.push(((mean + DE_EPSILON) / (ref_mean + DE_EPSILON)).log2());
        }
        let padj = bh_adjust(&p);
        GroupDe { lfc, p, padj }
    }

    #[test]
    fn the_batched_p_values_equal_p_value_bit_for_bit() {
        // rank sums across the whole range (both tails, the centre), tie terms from none to nearly all tied
        let mut next = crate::eval::vcc2026::test_rng(5);
        let (n2, mut tests, mut want) = (2000usize, Vec::new(), Vec::new());
        for k in 0..20_000u64 {
            let n1 = [1usize, 2, 37, 200, 1000][(k % 5) as usize];
            let nn = (n1 + n2) as f64;
            let r1 = (n1 * (n1 + 1)) as f64 / 2.0 + (next() % (n1 * n2 + 1) as u64) as f64 + 0.5 * (k % 2) as f64;
            let ties = (next() % 1000) as f64 / 1000.0 * (nn * nn * nn - nn) * if k % 7 == 0 { 1.0 } else { 0.1 };
            tests.push([r1, ties, n1 as f64]);
            want.push(p_value(r1, ties, n1, n2).to_bits());
        }
        let got: Vec<u64> = p_values(&tests, n2).iter().map(|p| p.to_bits()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn blocks_equal_the_merged_ranks_bit_for_bit() {
        // more genes than a task, more groups than are tested at once
        let n_vars = GENE_BLOCK * BLOCKS_PER_TASK + 300;
        let ctrl = test_rows(&random_cells(1, 60, n_vars, false));
        let reference = Reference::build(&ctrl, &ctrl.scan(n_vars));
        assert!(reference.genes.len() > 100 && reference.genes.len() < n_vars, "{}", reference.genes.len());
        let groups: Vec<Rows> = (0..TEST_GROUPS_AT_ONCE as u64 + 3)
            .map(|s| test_rows(&random_cells(10 + s, 12, n_vars, s % 3 == 0)))
            .collect();
        let scans: Vec<GroupScan> = groups.iter().map(|r| r.scan(n_vars)).collect();
        assert!(scans.iter().any(|s| !s.rows_sorted) && scans.iter().any(|s| s.rows_sorted));
        let pairs: Vec<(&Rows, &GroupScan)> = groups.iter().zip(&scans).collect();
        let got = test_batch(&pairs, &reference);
        assert_eq!(got.len(), groups.len());
        for (rows, de) in groups.iter().zip(&got) {
            let want = naive(rows, &reference, &ctrl);
            assert_eq!(de.p, want.p);
            assert_eq!(de.lfc, want.lfc);
            assert_eq!(de.padj, want.padj);
        }
        // the test has teeth: some p-values are small, and some columns hold ties within the group
        assert!(got.iter().flat_map(|d| &d.p).any(|&p| p < 1e-3));
    }

    #[test]
    fn compact_and_wide_groups_give_the_same_bits() {
        let n_vars = GENE_BLOCK * BLOCKS_PER_TASK + 300;
        // counts only (the fractions of `random_cells` made counts ≥ SMALL_COUNTS)
        let counts = |cells: Vec<Vec<(u32, f32)>>| -> Vec<Vec<(u32, f32)>> {
            cells
                .into_iter()
                .map(|cell| cell.into_iter().map(|(g, v)| (g, if v == 2.5 { 40.0 } else { v })).collect())
                .collect()
        };
        let ctrl_cells = counts(random_cells(1, 60, n_vars, false));
        let (ctrl, ctrl_compact) = (test_rows(&ctrl_cells), test_rows_compact(&ctrl_cells));
        let reference = Reference::build(&ctrl, &ctrl.scan(n_vars));
        let from_compact = Reference::build(&ctrl_compact, &ctrl_compact.scan(n_vars));
        assert_eq!((&reference.mean, &reference.genes), (&from_compact.mean, &from_compact.genes));
        let cells: Vec<_> =
            (0..TEST_GROUPS_AT_ONCE as u64 + 3).map(|s| counts(random_cells(10 + s, 12, n_vars, s % 3 == 0))).collect();
        let wide: Vec<Rows> = cells.iter().map(|c| test_rows(c)).collect();
        // a share mixing both layouts
        let mixed: Vec<Rows> = cells
            .iter()
            .enumerate()
            .map(|(k, c)| if k % 2 == 0 { test_rows_compact(c) } else { test_rows(c) })
            .collect();
        let run = |groups: &[Rows], reference: &Reference| {
            let scans: Vec<GroupScan> = groups.iter().map(|r| r.scan(n_vars)).collect();
            let pairs: Vec<(&Rows, &GroupScan)> = groups.iter().zip(&scans).collect();
            test_batch(&pairs, reference)
        };
        let (a, b) = (run(&wide, &reference), run(&mixed, &from_compact));
        for ((x, y), rows) in a.iter().zip(&b).zip(&wide) {
            assert_eq!((&x.p, &x.lfc, &x.padj), (&y.p, &y.lfc, &y.padj));
            assert_eq!(x.p, naive(rows, &reference, &ctrl).p);
        }
    }

    #[test]
    fn the_duplicate_screening_falls_back_where_it_cannot_vouch() {
        let n_vars = 700;
        let ctrl = test_rows(&random_cells(1, 60, n_vars, false));
        let reference = Reference::build(&ctrl, &ctrl.scan(n_vars));
        let g = reference.genes[0] as u32;
        let (h, h2) = (reference.genes[1] as u32, reference.genes[2] as u32);
        // totals 80 and 160: count 40 in the second cell is count 20 of the first in CPM, bit for bit, but only
        // the 20 comes from a table
        const { assert!(20 < SMALL_COUNTS && 40 >= SMALL_COUNTS) };
        let mut cells = random_cells(5, 20, n_vars, false);
        cells.push(vec![(g, 20.0), (h, 60.0)]);
        cells.push(vec![(g, 40.0), (h2, 120.0)]);
        let ratio = test_rows(&cells);
        // a gene listed twice in a row: the screening does not hold for the group
        let mut cells = random_cells(6, 20, n_vars, false);
        cells.push(vec![(g, 3.0), (g, 3.0), (h, 1.0)]);
        let repeated = test_rows(&cells);
        let scans = [ratio.scan(n_vars), repeated.scan(n_vars)];
        assert!(scans[0].rows_strict && scans[1].rows_sorted && !scans[1].rows_strict);
        let group = GroupCells::new(&ratio, &scans[0]);
        let (mut cursors, mut columns) = (group.cursors_at(0, n_vars), BlockColumns::default());
        group.fill_block(&mut cursors, 0..n_vars, &mut columns);
        assert!(columns.exact[g as usize] && !columns.exact[h as usize]);
        assert!(!GroupCells::new(&repeated, &scans[1]).screened);
        let got = test_batch(&[(&ratio, &scans[0]), (&repeated, &scans[1])], &reference);
        for (rows, de) in [&ratio, &repeated].into_iter().zip(&got) {
            let want = naive(rows, &reference, &ctrl);
            assert_eq!(de.p, want.p);
        }
    }

    #[test]
    fn the_widening_search_finds_the_first_gene_at_or_above() {
        let rows: [Vec<u32>; 4] = [vec![], vec![7], (0..400).map(|g| g * 3).collect(), (900..1000).collect()];
        for cols in &rows {
            for gene in [0, 1, 6, 7, 8, 299, 300, 301, 899, 900, 950, 999, 1000, 1200] {
                let want = cols.partition_point(|&c| (c as usize) < gene);
                assert_eq!(first_at_or_above(cols, gene, 1200), want, "{gene} in {} genes", cols.len());
            }
        }
    }

    #[test]
    fn sorted_copy_keeps_each_cells_entries() {
        let rows = test_rows(&[vec![(5, 1.0), (2, 2.0), (9, 3.0)], vec![], vec![(1, 4.0)]]);
        let sorted = rows.sorted_by_gene();
        let (w, s) = (rows.to_wide(), sorted.to_wide());
        assert_eq!(s.ends, w.ends);
        assert_eq!(s.cols, vec![2, 5, 9, 1]);
        assert_eq!(s.vals, vec![2.0, 1.0, 3.0, 4.0]);
        assert!(!rows.scan(10).rows_sorted && sorted.scan(10).rows_sorted);
    }
}
