//! A group's cells as its passes read them: non-zeros only, in one of two layouts.
//!
//! Count data over up to 65,536 genes (every VCC file) is stored **blocked**: a `u16` gene and a `u16` count per
//! entry, 4 bytes instead of 8, and the entries grouped by blocks of [`STORE_BLOCK`] genes, each block holding
//! its segment of every cell, cell after cell. A group's rows are a few MB that every pass (scan, jackknife, DE)
//! streams again, and the batches' rows were most of a run's page faults: half the bytes halve both. The blocks
//! are the DE's (it walks a block's segments as one stream, where it searched each cell's row for the block's
//! start), and the scan and the jackknife visit them block by block, their per-gene tables of a block in L1.
//! A group holding any value that is not a whole number below 2^16 (a fraction, a large count, a scaled baseline
//! value), or a row out of gene order, is stored **wide**: cell rows of `u32` genes and `f32` values, as read.
//! Both layouts hold the same numbers (a `u16` count converts to the same `f32` and `f64` as the value read) and
//! visit each gene's entries in cell order, so every result is the same bit for bit.

use std::borrow::Cow;

use super::{cell_total, counted_positive, GroupScan, RowSummary};
use crate::data::kept_rows::RowIndices;

/// A stored gene index.
pub trait ColIndex: Copy + Ord + Send + Sync + std::fmt::Debug + 'static {
    fn ix(self) -> usize;
}

impl ColIndex for u16 {
    #[inline(always)]
    fn ix(self) -> usize {
        self as usize
    }
}

impl ColIndex for u32 {
    #[inline(always)]
    fn ix(self) -> usize {
        self as usize
    }
}

/// A stored value.
pub trait StoredValue: Copy + Send + Sync + std::fmt::Debug + 'static {
    fn to_f32(self) -> f32;
    /// `Some(k)` when the value is the whole number `k < below`.
    fn small_count(self, below: usize) -> Option<usize>;
}

impl StoredValue for u16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self as f32
    }

    #[inline(always)]
    fn small_count(self, below: usize) -> Option<usize> {
        let k = self as usize;
        (k < below).then_some(k)
    }
}

impl StoredValue for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }

    /// (v ≥ 0 or NaN here: `v as u32` is its integer part, saturated, and equal to `v` only for a whole number)
    #[inline(always)]
    fn small_count(self, below: usize) -> Option<usize> {
        let k = self as u32;
        ((k as usize) < below && k as f32 == self).then_some(k as usize)
    }
}

/// Cell rows: cell `i` is `cols[ends[i-1]..ends[i]]`, `vals[..]` alike.
#[derive(Debug, Default, Clone)]
pub struct RowsOf<C, V> {
    pub ends: Vec<usize>,
    pub cols: Vec<C>,
    pub vals: Vec<V>,
    /// Each cell's total ([`cell_total`]) where the rows were pushed as read (then one per cell); empty otherwise.
    pub totals: Vec<f64>,
}

/// `u32` genes, `f32` values: anything.
pub type WideRows = RowsOf<u32, f32>;

/// Genes per block of [`BlockRows`] (the DE walks blocks of the same genes).
pub const STORE_BLOCK: usize = 512;

/// One block of [`BlockRows`]: every cell's entries at the block's genes, cell after cell.
#[derive(Debug, Default, Clone)]
pub struct Block {
    /// Per cell, where its segment ends.
    pub ends: Vec<u32>,
    pub cols: Vec<u16>,
    pub vals: Vec<u16>,
}

impl Block {
    pub fn segment_range(&self, i: usize) -> std::ops::Range<usize> {
        let s = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        s..self.ends[i] as usize
    }

    pub fn segment(&self, i: usize) -> (&[u16], &[u16]) {
        let r = self.segment_range(i);
        (&self.cols[r.clone()], &self.vals[r])
    }
}

/// Counts below 2^16 over at most 2^16 genes, rows in gene order, block-major (see the module notes).
#[derive(Debug, Clone)]
pub struct BlockRows {
    pub blocks: Vec<Block>,
    /// Each cell's total ([`cell_total`]).
    pub totals: Vec<f64>,
}

/// The cells of one group, in the order they were read, stored non-zeros only.
#[derive(Debug, Clone)]
pub enum Rows {
    Wide(WideRows),
    Blocked(BlockRows),
}

/// Runs `$body` with `$r` bound to the layout of `$rows` (a `&Rows`, a [`Segments`] either way): generic code,
/// one copy per layout.
macro_rules! with_rows {
    ($rows:expr, $r:ident => $body:expr) => {
        match $rows {
            $crate::eval::vcc2026::rows::Rows::Wide($r) => $body,
            $crate::eval::vcc2026::rows::Rows::Blocked($r) => $body,
        }
    };
}
pub(crate) use with_rows;

/// One cell's genes and values, borrowed where the layout holds them together.
pub type CellEntries<'a, C, V> = (Cow<'a, [C]>, Cow<'a, [V]>);

/// What the passes that visit every entry once need of a layout.
pub trait Segments: Sync {
    type C: ColIndex;
    type V: StoredValue;
    fn n(&self) -> usize;
    /// Calls `f(cell, genes, values)` on every stored segment: whole rows, or a block's segment of a cell. Each
    /// gene's entries come in cell order (and a cell's entries at one gene in their stored order).
    fn for_each_segment(&self, f: impl FnMut(usize, &[Self::C], &[Self::V]));
    /// One cell's entries in gene order.
    fn cell_entries(&self, i: usize) -> CellEntries<'_, Self::C, Self::V>;
    /// The cells' totals, where known.
    fn known_totals(&self) -> Option<&[f64]>;
}

impl<C: ColIndex, V: StoredValue> Segments for RowsOf<C, V> {
    type C = C;
    type V = V;

    fn n(&self) -> usize {
        self.ends.len()
    }

    #[inline(always)]
    fn for_each_segment(&self, mut f: impl FnMut(usize, &[C], &[V])) {
        for i in 0..self.n() {
            let (cols, vals) = self.cell(i);
            f(i, cols, vals);
        }
    }

    fn cell_entries(&self, i: usize) -> CellEntries<'_, C, V> {
        let (cols, vals) = self.cell(i);
        (Cow::Borrowed(cols), Cow::Borrowed(vals))
    }

    fn known_totals(&self) -> Option<&[f64]> {
        (self.totals.len() == self.n()).then_some(&self.totals[..])
    }
}

impl Segments for BlockRows {
    type C = u16;
    type V = u16;

    fn n(&self) -> usize {
        self.totals.len()
    }

    #[inline(always)]
    fn for_each_segment(&self, mut f: impl FnMut(usize, &[u16], &[u16])) {
        for block in &self.blocks {
            for i in 0..self.n() {
                let (cols, vals) = block.segment(i);
                f(i, cols, vals);
            }
        }
    }

    fn cell_entries(&self, i: usize) -> CellEntries<'_, u16, u16> {
        let (mut cols, mut vals) = (Vec::new(), Vec::new());
        for block in &self.blocks {
            let (c, v) = block.segment(i);
            cols.extend_from_slice(c);
            vals.extend_from_slice(v);
        }
        (Cow::Owned(cols), Cow::Owned(vals))
    }

    fn known_totals(&self) -> Option<&[f64]> {
        Some(&self.totals)
    }
}

/// Genes a blocked layout can index.
const BLOCKED_MAX_GENES: usize = 1 << 16;

impl Default for Rows {
    fn default() -> Self {
        Rows::Wide(WideRows::default())
    }
}

impl Rows {
    /// Empty rows for a group over `n_vars` genes: blocked where the genes fit (a row that does not fit turns the
    /// group wide when it comes).
    pub fn for_genes(n_vars: usize) -> Self {
        if n_vars <= BLOCKED_MAX_GENES {
            Rows::Blocked(BlockRows::new(n_vars))
        } else {
            Rows::Wide(WideRows::default())
        }
    }

    pub fn n(&self) -> usize {
        with_rows!(self, r => r.n())
    }

    pub fn scan(&self, n_vars: usize) -> GroupScan {
        with_rows!(self, r => scan(r, n_vars))
    }

    /// The rows with every cell's entries in gene order (blocked rows are).
    pub fn sorted_by_gene(&self) -> Rows {
        match self {
            Rows::Wide(r) => Rows::Wide(r.sorted_by_gene()),
            Rows::Blocked(r) => Rows::Blocked(r.clone()),
        }
    }

    /// The rows in the wide layout (a copy).
    pub fn to_wide(&self) -> WideRows {
        match self {
            Rows::Wide(r) => r.clone(),
            Rows::Blocked(r) => r.widened(),
        }
    }

    /// Room for `cells` cells of `entries` entries in all.
    pub fn reserve(&mut self, cells: usize, entries: usize) {
        match self {
            Rows::Wide(r) => {
                r.ends.reserve(cells);
                r.totals.reserve(cells);
                r.cols.reserve(entries);
                r.vals.reserve(entries);
            }
            Rows::Blocked(r) => {
                r.totals.reserve(cells);
                let per_block = entries / r.blocks.len().max(1);
                for block in &mut r.blocks {
                    block.ends.reserve(cells);
                    block.cols.reserve(per_block);
                    block.vals.reserve(per_block);
                }
            }
        }
    }

    /// Appends one cell as read: its non-zero entries, times `scale` per gene when given (`f32(v × scale)`, the
    /// baseline arm's dispersed emission), and its total.
    pub(crate) fn push(&mut self, cols: RowIndices<'_>, vals: &[f32], scale: Option<&[f64]>, summary: &RowSummary) {
        if let Rows::Blocked(blocked) = self {
            if scale.is_none() && blocked.try_push_counts(cols, vals, summary) {
                return;
            }
            *self = Rows::Wide(blocked.widened());
        }
        if let Rows::Wide(wide) = self {
            wide.push(cols, vals, scale, summary);
        }
    }

    /// Appends `other`'s cells (staged cells put back in order).
    pub fn append(&mut self, other: &Rows) {
        match (&mut *self, other) {
            (Rows::Blocked(a), Rows::Blocked(b)) if a.blocks.len() == b.blocks.len() => a.append(b),
            (Rows::Wide(a), Rows::Wide(b)) => a.append(b),
            (Rows::Wide(a), Rows::Blocked(b)) => a.append(&b.widened()),
            (a, b) => {
                let mut wide = a.to_wide();
                wide.append(&b.to_wide());
                *self = Rows::Wide(wide);
            }
        }
    }
}

/// Per gene sums and positive entries, per cell totals and whether the rows are in gene order.
fn scan<S: Segments>(rows: &S, n_vars: usize) -> GroupScan {
    let mut col_sums = vec![0.0f64; n_vars];
    let mut col_positive = vec![0u32; n_vars];
    let (mut rows_sorted, mut rows_strict) = (true, true);
    let (sums, positive) = (&mut col_sums[..], &mut col_positive[..]);
    rows.for_each_segment(|_, cols, vals| {
        for (&c, &v) in cols.iter().zip(vals) {
            let v = v.to_f32();
            sums[c.ix()] += v as f64;
            positive[c.ix()] += u32::from(counted_positive(v));
        }
        // (a blocked layout's segments follow each other in gene order)
        let (sorted, strict) =
            cols.iter().zip(cols.iter().skip(1)).fold((true, true), |(le, lt), (a, b)| (le & (a <= b), lt & (a < b)));
        rows_sorted &= sorted;
        rows_strict &= strict;
    });
    let cell_totals = match rows.known_totals() {
        Some(t) => t.to_vec(),
        None => (0..rows.n())
            .map(|i| {
                let vals = rows.cell_entries(i).1;
                let wide: Vec<f32> = vals.iter().map(|v| v.to_f32()).collect();
                cell_total(&wide)
            })
            .collect(),
    };
    GroupScan { col_sums, col_positive, cell_totals, rows_sorted, rows_strict }
}

impl<C: ColIndex, V: StoredValue> RowsOf<C, V> {
    pub fn cell_range(&self, i: usize) -> std::ops::Range<usize> {
        let s = if i == 0 { 0 } else { self.ends[i - 1] };
        s..self.ends[i]
    }

    pub fn cell(&self, i: usize) -> (&[C], &[V]) {
        let r = self.cell_range(i);
        (&self.cols[r.clone()], &self.vals[r])
    }

    /// A copy with every cell's entries in gene order (stable: a gene repeated in a row keeps its order).
    pub fn sorted_by_gene(&self) -> Self {
        let mut out = RowsOf {
            ends: self.ends.clone(),
            cols: Vec::with_capacity(self.cols.len()),
            vals: Vec::with_capacity(self.vals.len()),
            totals: self.totals.clone(),
        };
        let mut order: Vec<usize> = Vec::new();
        for i in 0..self.ends.len() {
            let (cols, vals) = self.cell(i);
            order.clear();
            order.extend(0..cols.len());
            order.sort_by_key(|&k| cols[k]);
            out.cols.extend(order.iter().map(|&k| cols[k]));
            out.vals.extend(order.iter().map(|&k| vals[k]));
        }
        out
    }

    fn append(&mut self, other: &Self) {
        let base = self.cols.len();
        self.cols.extend_from_slice(&other.cols);
        self.vals.extend_from_slice(&other.vals);
        self.ends.extend(other.ends.iter().map(|&e| base + e));
        self.totals.extend_from_slice(&other.totals);
    }
}

impl WideRows {
    fn push(&mut self, cols: RowIndices<'_>, vals: &[f32], scale: Option<&[f64]>, summary: &RowSummary) {
        let start = self.cols.len();
        if scale.is_none() && !summary.zero {
            cols.extend_into(&mut self.cols);
            self.vals.extend_from_slice(vals);
        } else {
            for (k, &v) in vals.iter().enumerate() {
                let c = cols.get(k);
                let x = match scale {
                    Some(s) => (v as f64 * s[c as usize]) as f32,
                    None => v,
                };
                if x != 0.0 {
                    self.cols.push(c);
                    self.vals.push(x);
                }
            }
        }
        self.ends.push(self.cols.len());
        self.totals.push(if scale.is_none() { summary.total(vals) } else { cell_total(&self.vals[start..]) });
    }
}

impl BlockRows {
    fn new(n_vars: usize) -> Self {
        BlockRows { blocks: vec![Block::default(); n_vars.div_ceil(STORE_BLOCK)], totals: Vec::new() }
    }

    /// The same rows as wide cell rows.
    pub fn widened(&self) -> WideRows {
        let mut out = WideRows::default();
        for i in 0..self.n() {
            let (cols, vals) = self.cell_entries(i);
            out.cols.extend(cols.iter().map(|&c| c as u32));
            out.vals.extend(vals.iter().map(|&v| v as f32));
            out.ends.push(out.cols.len());
        }
        out.totals = self.totals.clone();
        out
    }

    fn append(&mut self, other: &Self) {
        for (a, b) in self.blocks.iter_mut().zip(&other.blocks) {
            let base = a.cols.len() as u32;
            a.cols.extend_from_slice(&b.cols);
            a.vals.extend_from_slice(&b.vals);
            a.ends.extend(b.ends.iter().map(|&e| base + e));
        }
        self.totals.extend_from_slice(&other.totals);
    }

    /// Appends one cell if every value is a whole number in `0..2^16` (its zeros dropped) and its genes increase;
    /// otherwise leaves the rows as they were and returns false. The genes fit: [`Rows::for_genes`] chose this
    /// layout.
    fn try_push_counts(&mut self, cols: RowIndices<'_>, vals: &[f32], summary: &RowSummary) -> bool {
        if summary.fraction || summary.negative {
            return false;
        }
        // whole numbers ≥ 0 or -0.0 here (no fraction, NaN, infinity or negative): without the sign bit, their bit
        // patterns order like their values (a -0.0 is a zero, dropped below as in the wide layout)
        let max_bits = vals.iter().fold(0u32, |m, &v| m.max(v.to_bits() & 0x7fff_ffff));
        if max_bits > (u16::MAX as f32).to_bits() {
            return false;
        }
        let increasing = match cols {
            RowIndices::I32(s) => s.windows(2).fold(true, |ok, w| ok & (w[0] < w[1])),
            RowIndices::U32(s) => s.windows(2).fold(true, |ok, w| ok & (w[0] < w[1])),
        };
        if !increasing {
            return false;
        }
        if summary.zero {
            for (k, &v) in vals.iter().enumerate() {
                if v != 0.0 {
                    let c = cols.get(k) as usize;
                    let block = &mut self.blocks[c / STORE_BLOCK];
                    block.cols.push(c as u16);
                    block.vals.push(v as u16);
                }
            }
        } else {
            // the row's run of each block, found from where an even spread of its genes would put the run's end
            let n = vals.len();
            let mut start = 0usize;
            let n_genes = self.blocks.len() * STORE_BLOCK;
            for (b, block) in self.blocks.iter_mut().enumerate() {
                let limit = (b + 1) * STORE_BLOCK;
                let guess = (n * limit / n_genes).saturating_sub(start);
                let end = start
                    + match cols {
                        RowIndices::I32(s) => run_end(&s[start..], limit as i64, guess),
                        RowIndices::U32(s) => run_end(&s[start..], limit as i64, guess),
                    };
                match cols {
                    RowIndices::I32(s) => block.cols.extend(s[start..end].iter().map(|&c| c as u16)),
                    RowIndices::U32(s) => block.cols.extend(s[start..end].iter().map(|&c| c as u16)),
                }
                block.vals.extend(vals[start..end].iter().map(|&v| v as u16));
                start = end;
            }
        }
        for block in &mut self.blocks {
            block.ends.push(block.cols.len() as u32);
        }
        self.totals.push(summary.total(vals));
        true
    }
}

/// The number of leading entries of the increasing `cols` below `limit`, searched from `guess` outwards.
fn run_end<T: Copy + Into<i64>>(cols: &[T], limit: i64, guess: usize) -> usize {
    let len = cols.len();
    let below = |k: usize| cols[k].into() < limit;
    let mut step = 16usize;
    let (mut lo, mut hi) = (guess.saturating_sub(step).min(len), guess.saturating_add(step).min(len));
    loop {
        // the answer is in lo..=hi once everything before lo is below `limit` and cols[hi] is not
        let lo_ok = lo == 0 || below(lo - 1);
        let hi_ok = hi == len || !below(hi);
        if lo_ok && hi_ok {
            return lo + cols[lo..hi].partition_point(|&c| c.into() < limit);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn push_all(rows: &mut Rows, cells: &[Vec<(u32, f32)>], scale: Option<&[f64]>) {
        for cell in cells {
            let cols: Vec<u32> = cell.iter().map(|e| e.0).collect();
            let vals: Vec<f32> = cell.iter().map(|e| e.1).collect();
            rows.push(RowIndices::U32(&cols), &vals, scale, &RowSummary::of(&vals));
        }
    }

    fn wide_of(cells: &[Vec<(u32, f32)>]) -> WideRows {
        let mut rows = Rows::Wide(WideRows::default());
        push_all(&mut rows, cells, None);
        rows.to_wide()
    }

    #[test]
    fn counts_stay_blocked_and_anything_else_turns_the_group_wide() {
        let n_vars = 3 * STORE_BLOCK + 10;
        let last = n_vars as u32 - 1;
        let counts = vec![
            vec![(0, 1.0), (3, 0.0), (511, 65535.0), (512, 2.0), (last, 7.0)],
            vec![],
            vec![(1030, 4.0)],
            vec![(5, 1.0), (700, 0.0)],
        ];
        let mut rows = Rows::for_genes(n_vars);
        push_all(&mut rows, &counts, None);
        let Rows::Blocked(blocked) = &rows else { panic!("counts below 2^16 stay blocked") };
        assert_eq!(blocked.blocks.len(), 4);
        // the stored zeros are dropped, as in the wide layout
        assert_eq!(
            (blocked.blocks[0].cols.clone(), blocked.blocks[0].vals.clone()),
            (vec![0, 511, 5], vec![1, 65535, 1])
        );
        assert_eq!(blocked.blocks[0].ends, vec![2, 2, 2, 3]);
        assert_eq!((blocked.blocks[1].cols.clone(), blocked.blocks[1].ends.clone()), (vec![512], vec![1, 1, 1, 1]));
        assert_eq!((blocked.blocks[2].cols.clone(), blocked.blocks[2].ends.clone()), (vec![1030], vec![0, 0, 1, 1]));
        assert_eq!(blocked.blocks[3].cols, vec![last as u16]);
        let w = wide_of(&counts);
        let back = rows.to_wide();
        assert_eq!((&back.cols, &back.vals, &back.ends, &back.totals), (&w.cols, &w.vals, &w.ends, &w.totals));
        let mut signed_zero = Rows::for_genes(10);
        push_all(&mut signed_zero, &[vec![(1, 3.0), (2, -0.0), (4, 1.0)]], None);
        let Rows::Blocked(c) = &signed_zero else { panic!("a -0.0 is a zero") };
        assert_eq!((c.blocks[0].cols.clone(), c.blocks[0].vals.clone()), (vec![1, 4], vec![3, 1]));
        for (row, why) in [
            (vec![(1, 3.0), (4, 65536.0)], "a large count"),
            (vec![(1, 3.0), (4, 2.5)], "a fraction"),
            (vec![(1, 3.0), (4, -1.0)], "a negative"),
            (vec![(1, 3.0), (4, f32::NAN)], "NaN"),
            (vec![(4, 3.0), (1, 1.0)], "genes out of order"),
        ] {
            let mut rows = Rows::for_genes(n_vars);
            push_all(&mut rows, &counts, None);
            push_all(&mut rows, std::slice::from_ref(&row), None);
            let Rows::Wide(w) = &rows else { panic!("{why} turns the group wide") };
            assert_eq!(w.ends.len(), 5);
            assert_eq!(w.cell(4).1[1].to_bits(), row[1].1.to_bits(), "{why}");
            assert_eq!(w.cell(0).1, &[1.0, 65535.0, 2.0, 7.0]);
        }
        // scaled cells are never counts; too many genes for u16
        let mut rows = Rows::for_genes(10);
        push_all(&mut rows, &counts[1..2], Some(&[0.5; 10]));
        assert!(matches!(rows, Rows::Wide(_)));
        assert!(matches!(Rows::for_genes(65_537), Rows::Wide(_)));
        assert!(matches!(Rows::for_genes(65_536), Rows::Blocked(_)));
    }

    #[test]
    fn both_layouts_scan_alike() {
        let mut next = super::super::test_rng(3);
        let n_vars = 2 * STORE_BLOCK + 77;
        let cells: Vec<Vec<(u32, f32)>> = (0..30)
            .map(|_| {
                let mut cell: Vec<(u32, f32)> = Vec::new();
                for g in 0..n_vars as u32 {
                    if next().is_multiple_of(4) {
                        cell.push((g, (1 + next() % 300) as f32));
                    }
                }
                cell
            })
            .collect();
        let mut blocked = Rows::for_genes(n_vars);
        push_all(&mut blocked, &cells, None);
        assert!(matches!(blocked, Rows::Blocked(_)));
        let wide = Rows::Wide(wide_of(&cells));
        let (a, b) = (blocked.scan(n_vars), wide.scan(n_vars));
        assert_eq!(a.col_sums, b.col_sums);
        assert_eq!(a.col_positive, b.col_positive);
        assert_eq!(a.cell_totals, b.cell_totals);
        assert_eq!((a.rows_sorted, a.rows_strict), (true, true));
        assert_eq!((b.rows_sorted, b.rows_strict), (true, true));
        let mut appended = Rows::for_genes(n_vars);
        push_all(&mut appended, &cells[..10], None);
        let mut rest = Rows::for_genes(n_vars);
        push_all(&mut rest, &cells[10..], None);
        appended.append(&rest);
        assert!(matches!(appended, Rows::Blocked(_)));
        let (x, y) = (appended.to_wide(), wide.to_wide());
        assert_eq!((&x.ends, &x.cols, &x.vals), (&y.ends, &y.cols, &y.vals));
    }

    #[test]
    fn the_run_search_finds_each_blocks_end() {
        let cols: Vec<u32> = (0..400).map(|g| g * 3).collect();
        for limit in [0i64, 1, 3, 4, 600, 1197, 1198, 5000] {
            let want = cols.partition_point(|&c| (c as i64) < limit);
            for guess in [0usize, 7, 200, 399, 400, 1000] {
                assert_eq!(run_end(&cols, limit, guess), want, "{limit} from {guess}");
            }
        }
        assert_eq!(run_end::<u32>(&[], 5, 3), 0);
    }
}
