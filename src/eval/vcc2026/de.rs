//! Per-cell CPM Wilcoxon DE of cell-eval2's CPU engine (`de_compute.py::compute_de` with the scanpy backend;
//! design/vcc2026.md §5):
//!
//! - CPM `y / (L/1e6)` in f64 (`L` the cell total; zero totals divide by 1), scanpy `normalize_total`'s order;
//! - gene gate: control mean CPM `> 5` (strict), the same genes for every perturbation;
//! - `lfc = log2((mean_p + 1e-9)/(mean_ctrl + 1e-9))`, arithmetic means;
//! - Mann–Whitney on `log1p(CPM)` with average ranks over p ∪ ctrl (`mwu::SortedReference`, a group's values ranked unsorted when distinct), tie-corrected σ,
//!   **no** continuity correction, NaN z → 0, `p = 2·ndtr(−|z|)` (scanpy `_rank_genes_groups.py`, `norm.sf`);
//! - BH within each perturbation over the gated genes (`bh::bh_adjust` = scipy `false_discovery_control`).

use super::{counted_positive, GroupScan, Rows, CELL_TARGET_SUM, DE_EPSILON, MIN_CPM};
use crate::eval::bh::bh_adjust;
use crate::eval::mwu::{ndtr, RankScratch, SortedReference, REFERENCE_PAD};

/// Per-cell CPM of a group: mean CPM per gene and the non-zero `log1p(CPM)` per gene.
struct CpmColumns {
    n: usize,
    mean: Vec<f64>,
    /// per gene, in cell order or sorted ascending (see [`cpm_columns`]), as f64 bit patterns (positive values:
    /// the bits sort like the values, and faster)
    ptr: Vec<usize>,
    vals: Vec<u64>,
}

/// Counts below this get their log1p(CPM) cached per cell in [`cpm_columns`].
const SMALL_COUNTS: usize = 64;

/// `sorted`: sort each gene's values and leave [`REFERENCE_PAD`] slots after each column, the layout of
/// [`SortedReference::from_padded`] (the reference); a group's are ranked in cell order. Every gene gets its
/// column, gated or not (the ungated hold ~3 % of the entries): the fill then needs no gene → column lookup.
fn cpm_columns(rows: &Rows, scan: &GroupScan, sorted: bool) -> CpmColumns {
    let n = rows.n();
    let n_vars = scan.col_sums.len();
    let mut sum = vec![0.0f64; n_vars];
    // the column layout first (from the scan's counts), so the values go straight into place: a positive count
    // is a positive CPM (x = v/f with f ≥ v/1e6 cannot underflow in f64)
    let pad = if sorted { REFERENCE_PAD } else { 0 };
    let mut ptr = vec![0usize; n_vars + 1];
    for (g, &c) in scan.col_positive.iter().enumerate() {
        ptr[g + 1] = ptr[g] + c as usize + pad;
    }
    let mut fill = ptr[..n_vars].to_vec();
    let mut vals = vec![0u64; ptr[n_vars]];
    for (i, &l) in scan.cell_totals.iter().enumerate() {
        let (cols, cell_vals) = rows.cell(i);
        let mut f = l / CELL_TARGET_SUM;
        if f == 0.0 {
            f = 1.0;
        }
        // Counts are mostly small integers and x depends only on (v, cell): log1p(x) of each small count is
        // computed once per cell (0 = not yet; log1p of a positive x is never +0.0).
        let mut small = [0u64; SMALL_COUNTS];
        for (&c, &v) in cols.iter().zip(cell_vals) {
            let x = v as f64 / f;
            sum[c as usize] += x;
            // exactly the scan's test (a NaN, were one to get here, must not overrun a column)
            if !counted_positive(v) {
                continue;
            }
            // v > 0 here: `k` is its integer part (saturated above u32::MAX), and `k == v` means v is a count
            let k = v as u32;
            let bits = if (k as usize) < SMALL_COUNTS && k as f32 == v {
                let e = &mut small[k as usize];
                if *e == 0 {
                    *e = x.ln_1p().to_bits();
                }
                *e
            } else {
                x.ln_1p().to_bits()
            };
            let at = &mut fill[c as usize];
            vals[*at] = bits;
            *at += 1;
        }
    }
    let nf = n as f64;
    let mean: Vec<f64> = sum.iter().map(|&s| s / nf).collect();
    if sorted {
        for g in 0..n_vars {
            vals[ptr[g]..ptr[g + 1] - pad].sort_unstable();
        }
    }
    CpmColumns { n, mean, ptr, vals }
}

impl CpmColumns {
    /// Gene `g`'s values (a group's columns have no padding).
    fn gene(&self, g: usize) -> &[u64] {
        &self.vals[self.ptr[g]..self.ptr[g + 1]]
    }
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
        let CpmColumns { n, mean, ptr, vals } = cpm_columns(rows, scan, true);
        let genes: Vec<usize> = (0..n_vars).filter(|&g| mean[g] > MIN_CPM).collect();
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

/// Genes per cache block of the rank sums (see `eval::de::test_batch`).
const GENE_BLOCK: usize = 128;

/// The DE of a batch of groups against the reference: each group's CPM columns, then the rank sums gene block
/// by gene block across the groups (the control's columns of a block stay in cache), then lfc and BH per group.
pub fn test_batch(groups: &[(&Rows, &GroupScan)], reference: &Reference) -> Vec<GroupDe> {
    // a few groups at a time: their CPM columns (8 bytes per stored value) stay small
    groups.chunks(TEST_GROUPS_AT_ONCE).flat_map(|sub| test_few(sub, reference)).collect()
}

/// Groups whose CPM columns are held at once by [`test_batch`].
const TEST_GROUPS_AT_ONCE: usize = 16;

fn test_few(groups: &[(&Rows, &GroupScan)], reference: &Reference) -> Vec<GroupDe> {
    use rayon::prelude::*;
    let cols: Vec<CpmColumns> = groups.par_iter().map(|(r, scan)| cpm_columns(r, scan, false)).collect();
    let n_genes = reference.genes.len();
    let n2 = reference.n;
    let blocks: Vec<Vec<f64>> = (0..n_genes.div_ceil(GENE_BLOCK))
        .into_par_iter()
        .map(|b| {
            let genes = b * GENE_BLOCK..((b + 1) * GENE_BLOCK).min(n_genes);
            let mut out = Vec::with_capacity(genes.len() * cols.len());
            let mut scratch = RankScratch::default();
            for &g in &reference.genes[genes] {
                // a sequential read brings the gene's reference into cache before the lookups jump around in it
                std::hint::black_box(reference.cols.warm(g));
                for c in &cols {
                    let n1 = c.n;
                    let (nn, n1f, n2f) = ((n1 + n2) as f64, n1 as f64, n2 as f64);
                    let (r1, ties) = reference.cols.rank_sum_and_ties_any_order(c.gene(g), n1, g, &mut scratch);
                    // scanpy: T = 1 - Σ(t³-t)/(N³-N); std = sqrt(T·n1·n2·(N+1)/12); z = (R1 - n1(N+1)/2)/std
                    let t = 1.0 - ties / (nn * nn * nn - nn);
                    let sd = (t * n1f * n2f * (nn + 1.0) / 12.0).sqrt();
                    let mut z = (r1 - n1f * (nn + 1.0) / 2.0) / sd;
                    if z.is_nan() {
                        z = 0.0;
                    }
                    out.push(2.0 * ndtr(-z.abs()));
                }
            }
            out
        })
        .collect();
    let n_groups = cols.len();
    cols.into_par_iter()
        .enumerate()
        .map(|(j, c)| {
            let lfc = reference
                .genes
                .iter()
                .map(|&g| ((c.mean[g] + DE_EPSILON) / (reference.mean[g] + DE_EPSILON)).log2())
                .collect();
            let mut p = Vec::with_capacity(n_genes);
            for block in &blocks {
                p.extend(block.iter().skip(j).step_by(n_groups.max(1)));
            }
            let padj = bh_adjust(&p);
            GroupDe { lfc, p, padj }
        })
        .collect()
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
