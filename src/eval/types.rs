//! Types passed between the stages of an evaluation: DE tables and pseudobulks.
//!
//! Kept in one place so that the DE stage (`de`), the metric stage (`metrics`) and the orchestration (`run`) agree.

/// One file's differential-expression table against its own control, in pdex's long layout: row `i` is
/// (`targets[target_idx[i]]`, `features[feature_idx[i]]`). Computed tables list targets in the stored category
/// order and genes in `var` order inside each target; tables read from CSV keep the file's row order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeTable {
    /// Distinct target labels, in order of first appearance.
    pub targets: Vec<String>,
    /// Distinct gene names, in order of first appearance (the `var` order for computed tables).
    pub features: Vec<String>,
    pub target_idx: Vec<u32>,
    pub feature_idx: Vec<u32>,
    /// expm1(mean log1p expression) of the target group, as f32 (pdex writes f32).
    pub target_mean: Vec<f32>,
    /// The same for the reference (control) group.
    pub ref_mean: Vec<f32>,
    pub target_membership: Vec<u64>,
    pub ref_membership: Vec<u64>,
    pub log2_fold_change: Vec<f64>,
    pub percent_change: Vec<f64>,
    pub p_value: Vec<f64>,
    /// Mann–Whitney U1 of the target group.
    pub statistic: Vec<f64>,
    /// Benjamini–Hochberg adjusted p-value, per target over all genes.
    pub fdr: Vec<f64>,
}

impl DeTable {
    pub fn n_rows(&self) -> usize {
        self.target_idx.len()
    }

    /// Append `other`'s rows (its indices refer to the same `targets` and `features`).
    pub fn append_rows(&mut self, other: &DeTable) {
        self.target_idx.extend_from_slice(&other.target_idx);
        self.feature_idx.extend_from_slice(&other.feature_idx);
        self.target_mean.extend_from_slice(&other.target_mean);
        self.ref_mean.extend_from_slice(&other.ref_mean);
        self.target_membership.extend_from_slice(&other.target_membership);
        self.ref_membership.extend_from_slice(&other.ref_membership);
        self.log2_fold_change.extend_from_slice(&other.log2_fold_change);
        self.percent_change.extend_from_slice(&other.percent_change);
        self.p_value.extend_from_slice(&other.p_value);
        self.statistic.extend_from_slice(&other.statistic);
        self.fdr.extend_from_slice(&other.fdr);
    }
}

/// Per-label mean expression (pseudobulk) of one file, as cell-eval computes it: accumulated in f64, stored f32.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pseudobulk {
    /// Labels sorted by code point (control included).
    pub labels: Vec<String>,
    /// Number of cells per label.
    pub counts: Vec<usize>,
    /// Number of columns (genes, or embedding dimensions for an `obsm` pseudobulk).
    pub n_cols: usize,
    /// Row-major `labels.len() × n_cols`.
    pub means: Vec<f32>,
    /// The same means in f64, before the f32 cast (cell-eval's clustering centroids,
    /// `feats.astype(float64)[mask].mean(0)`: sums in cell order, then / n). Empty where not computed.
    pub means_f64: Vec<f64>,
}

impl Pseudobulk {
    /// The mean vector of `label`, if present.
    pub fn row(&self, label: &str) -> Option<&[f32]> {
        let i = self.labels.binary_search_by(|l| l.as_str().cmp(label)).ok()?;
        Some(&self.means[i * self.n_cols..(i + 1) * self.n_cols])
    }

    /// The f64 mean vector of `label`, if present and computed.
    pub fn row_f64(&self, label: &str) -> Option<&[f64]> {
        let i = self.labels.binary_search_by(|l| l.as_str().cmp(label)).ok()?;
        self.means_f64.get(i * self.n_cols..(i + 1) * self.n_cols)
    }

    /// Cells of `label`, if present.
    pub fn count(&self, label: &str) -> Option<usize> {
        let i = self.labels.binary_search_by(|l| l.as_str().cmp(label)).ok()?;
        self.counts.get(i).copied()
    }
}
