//! A group's cells as its passes read them: CSR rows, non-zeros only, in one of two layouts.
//!
//! Count data over up to 65,536 genes (every VCC file) is stored **compact**: a `u16` gene and a `u16` count per
//! entry, 4 bytes instead of 8. A group's rows are a few MB that every pass (scan, jackknife, DE) streams again,
//! and the batches' rows were most of a run's page faults; halving them halves both. A group holding any value
//! that is not a whole number below 2^16 (a fraction, a large count, a scaled baseline value) is stored **wide**
//! (`u32` gene, `f32` value), as read. Both layouts hold the same numbers: a `u16` count converts to the same `f32`
//! and `f64` as the value it was read from, so every result is the same bit for bit.

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

/// Rows in one layout: cell `i` is `cols[ends[i-1]..ends[i]]`, `vals[..]` alike.
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
/// `u16` genes, `u16` counts.
pub type CompactRows = RowsOf<u16, u16>;

/// The cells of one group, in the order they were read, stored non-zeros only.
#[derive(Debug, Clone)]
pub enum Rows {
    Wide(WideRows),
    Compact(CompactRows),
}

/// Runs `$body` with `$r` bound to the layout of `$rows` (a `&Rows`): generic code, one copy per layout.
macro_rules! with_rows {
    ($rows:expr, $r:ident => $body:expr) => {
        match $rows {
            $crate::eval::vcc2026::rows::Rows::Wide($r) => $body,
            $crate::eval::vcc2026::rows::Rows::Compact($r) => $body,
        }
    };
}
pub(crate) use with_rows;

/// Genes a compact layout can index.
const COMPACT_MAX_GENES: usize = 1 << 16;

impl Default for Rows {
    fn default() -> Self {
        Rows::Wide(WideRows::default())
    }
}

impl Rows {
    /// Empty rows for a group over `n_vars` genes: compact where the genes fit (a value that does not fit
    /// turns the group wide when it comes).
    pub fn for_genes(n_vars: usize) -> Self {
        if n_vars <= COMPACT_MAX_GENES {
            Rows::Compact(CompactRows::default())
        } else {
            Rows::Wide(WideRows::default())
        }
    }

    pub fn n(&self) -> usize {
        with_rows!(self, r => r.n())
    }

    pub fn scan(&self, n_vars: usize) -> GroupScan {
        with_rows!(self, r => r.scan(n_vars))
    }

    pub fn sorted_by_gene(&self) -> Rows {
        match self {
            Rows::Wide(r) => Rows::Wide(r.sorted_by_gene()),
            Rows::Compact(r) => Rows::Compact(r.sorted_by_gene()),
        }
    }

    /// The rows in the wide layout (a copy of compact ones).
    pub fn to_wide(&self) -> WideRows {
        match self {
            Rows::Wide(r) => r.clone(),
            Rows::Compact(r) => r.widened(),
        }
    }

    pub fn reserve(&mut self, cells: usize, entries: usize) {
        with_rows!(self, r => {
            r.ends.reserve(cells);
            r.totals.reserve(cells);
            r.cols.reserve(entries);
            r.vals.reserve(entries);
        })
    }

    /// Appends one cell as read: its non-zero entries, times `scale` per gene when given (`f32(v × scale)`, the
    /// baseline arm's dispersed emission), and its total.
    pub(crate) fn push(&mut self, cols: RowIndices<'_>, vals: &[f32], scale: Option<&[f64]>, summary: &RowSummary) {
        if let Rows::Compact(compact) = self {
            if scale.is_none() && compact.try_push_counts(cols, vals, summary) {
                return;
            }
            *self = Rows::Wide(compact.widened());
        }
        if let Rows::Wide(wide) = self {
            wide.push(cols, vals, scale, summary);
        }
    }

    /// Appends `other`'s cells (staged cells put back in order).
    pub fn append(&mut self, other: &Rows) {
        match (&mut *self, other) {
            (Rows::Compact(a), Rows::Compact(b)) => a.append(b),
            (Rows::Wide(a), Rows::Wide(b)) => a.append(b),
            (Rows::Wide(a), Rows::Compact(b)) => a.append(&b.widened()),
            (Rows::Compact(a), Rows::Wide(b)) => {
                let mut wide = a.widened();
                wide.append(b);
                *self = Rows::Wide(wide);
            }
        }
    }
}

impl<C: ColIndex, V: StoredValue> RowsOf<C, V> {
    pub fn n(&self) -> usize {
        self.ends.len()
    }

    /// Where cell `i`'s entries lie in `cols` and `vals`.
    pub fn cell_range(&self, i: usize) -> std::ops::Range<usize> {
        let s = if i == 0 { 0 } else { self.ends[i - 1] };
        s..self.ends[i]
    }

    /// Cell `i`'s (genes, values).
    pub fn cell(&self, i: usize) -> (&[C], &[V]) {
        let r = self.cell_range(i);
        (&self.cols[r.clone()], &self.vals[r])
    }

    /// The [`GroupScan`] of these cells over `n_vars` genes.
    pub fn scan(&self, n_vars: usize) -> GroupScan {
        let mut col_sums = vec![0.0f64; n_vars];
        let mut col_positive = vec![0u32; n_vars];
        let mut cell_totals = Vec::with_capacity(self.n());
        let (mut rows_sorted, mut rows_strict) = (true, true);
        let totals_known = self.totals.len() == self.n();
        // plain slices: through the vectors themselves their pointers and lengths were reloaded per entry
        let (sums, positive) = (&mut col_sums[..], &mut col_positive[..]);
        let mut wide: Vec<f32> = Vec::new();
        for i in 0..self.n() {
            let (cols, vals) = self.cell(i);
            for (&c, &v) in cols.iter().zip(vals) {
                let v = v.to_f32();
                sums[c.ix()] += v as f64;
                positive[c.ix()] += u32::from(counted_positive(v));
            }
            // taken when the row was read, or in a loop of its own (the row is in L1 by now): in the loop above
            // the running total was kept on the stack, a store and a reload per entry
            cell_totals.push(if totals_known {
                self.totals[i]
            } else {
                wide.clear();
                wide.extend(vals.iter().map(|v| v.to_f32()));
                cell_total(&wide)
            });
            let (sorted, strict) = cols
                .iter()
                .zip(cols.iter().skip(1))
                .fold((true, true), |(le, lt), (a, b)| (le & (a <= b), lt & (a < b)));
            rows_sorted &= sorted;
            rows_strict &= strict;
        }
        GroupScan { col_sums, col_positive, cell_totals, rows_sorted, rows_strict }
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
        for i in 0..self.n() {
            let (cols, vals) = self.cell(i);
            order.clear();
            order.extend(0..cols.len());
            order.sort_by_key(|&k| cols[k]);
            out.cols.extend(order.iter().map(|&k| cols[k]));
            out.vals.extend(order.iter().map(|&k| vals[k]));
        }
        out
    }

    /// The same rows as `u32` genes and `f32` values.
    pub fn widened(&self) -> WideRows {
        RowsOf {
            ends: self.ends.clone(),
            cols: self.cols.iter().map(|c| c.ix() as u32).collect(),
            vals: self.vals.iter().map(|v| v.to_f32()).collect(),
            totals: self.totals.clone(),
        }
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
    /// Appends a row as read (`summary` is its [`RowSummary`]), scaled where `scale` is given, without its
    /// stored zeros.
    fn push(&mut self, cols: RowIndices<'_>, vals: &[f32], scale: Option<&[f64]>, summary: &RowSummary) {
        let start = self.cols.len();
        if scale.is_none() && !summary.zero {
            // the usual row: no stored zero to drop
            cols.extend_into(&mut self.cols);
            self.vals.extend_from_slice(vals);
        } else {
            for (k, &v) in vals.iter().enumerate() {
                let c = cols.get(k);
                let x = match scale {
                    // baseline.py: (control_row.astype(float64) * scale).astype(float32)
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
        // a zero adds nothing to a total, in any order: the row's total is the kept values' (scaled rows are
        // other values)
        self.totals.push(if scale.is_none() { summary.total(vals) } else { cell_total(&self.vals[start..]) });
    }
}

impl CompactRows {
    /// Appends one cell if every value is a whole number in `0..2^16` (its zeros dropped); otherwise leaves the
    /// rows as they were and returns false. The genes fit: [`Rows::for_genes`] chose this layout.
    fn try_push_counts(&mut self, cols: RowIndices<'_>, vals: &[f32], summary: &RowSummary) -> bool {
        if summary.fraction || summary.negative {
            return false;
        }
        // whole numbers ≥ 0 or -0.0 here (no fraction, NaN, infinity or negative): without the sign bit, their bit
        // patterns order like their values (a -0.0 is a zero, dropped below as in the wide layout)
        if summary.max_bits > (u16::MAX as f32).to_bits() {
            return false;
        }
        if summary.zero {
            for (k, &v) in vals.iter().enumerate() {
                if v != 0.0 {
                    self.cols.push(cols.get(k) as u16);
                    self.vals.push(v as u16);
                }
            }
        } else {
            match cols {
                RowIndices::I32(s) => narrow(s, &mut self.cols, |&c| c as u16),
                RowIndices::U32(s) => narrow(s, &mut self.cols, |&c| c as u16),
            }
            // whole numbers in 1..=65535 here: adding 2^23 puts one exactly in the low mantissa bits, so its
            // low 16 bits are the value (an add and a pack; the saturating `v as u16` compiled to scalar code)
            narrow(vals, &mut self.vals, |&v| (v + 8_388_608.0).to_bits() as u16);
        }
        self.ends.push(self.cols.len());
        self.totals.push(summary.total(vals));
        true
    }
}

/// Appends `f` of each of `from` to `to`, compiled for AVX-512 and AVX2 besides the baseline: the narrowing
/// conversions to `u16` vectorise there, not in SSE2.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx512bw", "x86_64+avx2"))]
fn narrow<A: Copy>(from: &[A], to: &mut Vec<u16>, f: impl Fn(&A) -> u16) {
    to.extend(from.iter().map(f));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::vcc2026::test_push;

    #[test]
    fn counts_stay_compact_and_anything_else_turns_the_group_wide() {
        let counts = vec![vec![(0, 1.0), (3, 0.0), (7, 65535.0)], vec![], vec![(2, 4.0)]];
        let mut rows = Rows::for_genes(10);
        test_push(&mut rows, &counts, None);
        let Rows::Compact(compact) = &rows else { panic!("counts below 2^16 stay compact") };
        // the stored zero is dropped, as in the wide layout
        assert_eq!(
            (compact.cols.clone(), compact.vals.clone(), compact.ends.clone()),
            (vec![0, 7, 2], vec![1, 65535, 4], vec![2, 2, 3])
        );
        let mut wide = Rows::Wide(WideRows::default());
        test_push(&mut wide, &counts, None);
        let w = wide.to_wide();
        assert_eq!(rows.to_wide().cols, w.cols);
        assert_eq!(rows.to_wide().vals, w.vals);
        assert_eq!(rows.to_wide().totals, w.totals);
        let mut signed_zero = Rows::for_genes(10);
        test_push(&mut signed_zero, &[vec![(1, 3.0), (2, -0.0), (4, 1.0)]], None);
        let Rows::Compact(c) = &signed_zero else { panic!("a -0.0 is a zero") };
        assert_eq!((c.cols.clone(), c.vals.clone()), (vec![1, 4], vec![3, 1]));
        for (value, why) in
            [(65536.0f32, "a large count"), (2.5, "a fraction"), (-1.0, "a negative"), (f32::NAN, "NaN")]
        {
            let mut rows = Rows::for_genes(10);
            test_push(&mut rows, &counts, None);
            test_push(&mut rows, &[vec![(1, 3.0), (4, value)]], None);
            let Rows::Wide(w) = &rows else { panic!("{why} turns the group wide") };
            assert_eq!(w.n(), 4);
            assert_eq!(w.cell(3).1[1].to_bits(), value.to_bits(), "{why}");
            assert_eq!(w.cell(0).1, &[1.0, 65535.0]);
        }
        // scaled cells are never counts; too many genes for u16
        let mut rows = Rows::for_genes(10);
        test_push(&mut rows, &counts[..1], Some(&[0.5; 10]));
        assert!(matches!(rows, Rows::Wide(_)));
        assert!(matches!(Rows::for_genes(65_537), Rows::Wide(_)));
        assert!(matches!(Rows::for_genes(65_536), Rows::Compact(_)));
    }

    #[test]
    fn both_layouts_scan_alike() {
        let mut next = super::super::test_rng(3);
        let cells: Vec<Vec<(u32, f32)>> = (0..30)
            .map(|i| {
                let mut cell: Vec<(u32, f32)> = Vec::new();
                for g in 0..300u32 {
                    if next().is_multiple_of(4) {
                        cell.push((g, (1 + next() % 300) as f32));
                    }
                }
                if i % 7 == 3 {
                    cell.reverse();
                }
                cell
            })
            .collect();
        let mut compact = Rows::for_genes(300);
        test_push(&mut compact, &cells, None);
        assert!(matches!(compact, Rows::Compact(_)));
        let wide = Rows::Wide(compact.to_wide());
        let (a, b) = (compact.scan(300), wide.scan(300));
        assert_eq!(a.col_sums, b.col_sums);
        assert_eq!(a.col_positive, b.col_positive);
        assert_eq!(a.cell_totals, b.cell_totals);
        assert_eq!((a.rows_sorted, a.rows_strict), (b.rows_sorted, b.rows_strict));
        assert_eq!(compact.sorted_by_gene().to_wide().cols, wide.sorted_by_gene().to_wide().cols);
        let mut appended = Rows::for_genes(300);
        test_push(&mut appended, &cells[..10], None);
        let mut rest = Rows::for_genes(300);
        test_push(&mut rest, &cells[10..], None);
        appended.append(&rest);
        assert_eq!(appended.to_wide().ends, wide.to_wide().ends);
        assert_eq!(appended.to_wide().vals, wide.to_wide().vals);
    }
}
