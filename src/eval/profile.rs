//! cell-eval's metric profiles (`cell_eval/_pipeline/_runner.py`) and `--skip-metrics`.
use std::fmt;
use std::str::FromStr;

/// DE metrics in registration order (`cell_eval/metrics/_impl.py`).
pub const DE_METRICS: &[&str] = &[
    "overlap_at_N",
    "overlap_at_50",
    "overlap_at_100",
    "overlap_at_200",
    "overlap_at_500",
    "precision_at_N",
    "precision_at_50",
    "precision_at_100",
    "precision_at_200",
    "precision_at_500",
    "de_spearman_sig",
    "de_direction_match",
    "de_spearman_lfc_sig",
    "de_sig_genes_recall",
    "de_nsig_counts",
    "pr_auc",
    "roc_auc",
];

/// Anndata-pair metrics in registration order.
pub const ANNDATA_METRICS: &[&str] = &[
    "pearson_delta",
    "mse",
    "mae",
    "mse_delta",
    "mae_delta",
    "discrimination_score_l1",
    "discrimination_score_l2",
    "discrimination_score_cosine",
    "pearson_edistance",
    "clustering_agreement",
];

pub const MINIMAL_METRICS: &[&str] =
    &["pearson_delta", "mse", "mae", "discrimination_score_l1", "overlap_at_N", "precision_at_N", "de_nsig_counts"];

pub const VCC_METRICS: &[&str] = &["mae", "discrimination_score_l1", "overlap_at_N"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Full,
    Minimal,
    Vcc,
    De,
    Anndata,
    Pds,
}

#[derive(Debug, thiserror::Error)]
#[error("Unrecognized profile: {0}")]
pub struct UnknownProfile(pub String);

impl FromStr for Profile {
    type Err = UnknownProfile;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "full" => Profile::Full,
            "minimal" => Profile::Minimal,
            "vcc" => Profile::Vcc,
            "de" => Profile::De,
            "anndata" => Profile::Anndata,
            "pds" => Profile::Pds,
            other => return Err(UnknownProfile(other.to_string())),
        })
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Full => "full",
            Profile::Minimal => "minimal",
            Profile::Vcc => "vcc",
            Profile::De => "de",
            Profile::Anndata => "anndata",
            Profile::Pds => "pds",
        })
    }
}

impl Profile {
    /// The profile's metric list, in cell-eval's order.
    pub fn metrics(self) -> Vec<&'static str> {
        match self {
            Profile::Full => DE_METRICS.iter().chain(ANNDATA_METRICS).copied().collect(),
            Profile::De => DE_METRICS.to_vec(),
            Profile::Anndata => ANNDATA_METRICS.to_vec(),
            Profile::Minimal => MINIMAL_METRICS.to_vec(),
            Profile::Vcc => VCC_METRICS.to_vec(),
            Profile::Pds => vec!["discrimination_score_l1"],
        }
    }

    /// Whether the profile needs DE tables at all.
    pub fn needs_de(self) -> bool {
        !MetricSet::new(self, &[]).de_metrics().is_empty()
    }
}

/// The metrics one run computes: a profile minus `--skip-metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricSet {
    metrics: Vec<&'static str>,
}

impl MetricSet {
    /// `skip` holds metric names as given to `--skip-metrics` (unknown names are ignored, as in cell-eval).
    pub fn new(profile: Profile, skip: &[&str]) -> Self {
        Self { metrics: profile.metrics().into_iter().filter(|m| !skip.contains(m)).collect() }
    }

    pub fn metrics(&self) -> &[&'static str] {
        &self.metrics
    }

    /// DE metrics in the set's order (computed first).
    pub fn de_metrics(&self) -> Vec<&'static str> {
        self.metrics.iter().copied().filter(|m| DE_METRICS.contains(m)).collect()
    }

    /// Anndata metrics in the set's order (computed after the DE metrics).
    pub fn anndata_metrics(&self) -> Vec<&'static str> {
        self.metrics.iter().copied().filter(|m| ANNDATA_METRICS.contains(m)).collect()
    }
}

/// Whether lower is better (`MetricBestValue.ZERO`), higher is better (`ONE`), or neither, for `score`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BestValue {
    Zero,
    One,
    None,
}

/// The registry's best value of a metric column name; `None` (Rust) for names not in the registry
/// (e.g. `de_nsig_counts_real`), which `score` skips.
pub fn best_value(name: &str) -> Option<BestValue> {
    match name {
        "mse" | "mae" | "mse_delta" | "mae_delta" => Some(BestValue::Zero),
        "de_nsig_counts" => Some(BestValue::None),
        n if DE_METRICS.contains(&n) || ANNDATA_METRICS.contains(&n) => Some(BestValue::One),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcc_order() {
        let s = MetricSet::new(Profile::Vcc, &[]);
        assert_eq!(s.de_metrics(), vec!["overlap_at_N"]);
        assert_eq!(s.anndata_metrics(), vec!["mae", "discrimination_score_l1"]);
        let s = MetricSet::new(Profile::Full, &["pearson_edistance", "clustering_agreement"]);
        assert_eq!(s.metrics().len(), 25);
        assert!(!Profile::Pds.needs_de());
        assert_eq!("vcc".parse::<Profile>().ok(), Some(Profile::Vcc));
    }
}
