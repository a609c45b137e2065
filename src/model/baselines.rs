//! Non-learned baselines over in-memory group means (no file IO): what ST has to beat.
//!
//! - **control mean**: every perturbed cell of a cell type is predicted as the mean of that cell type's
//!   control cells (the "no effect" model);
//! - **perturbation mean**: the mean of the training cells of that perturbation in that cell type where seen;
//!   otherwise the mean of all training perturbed cells (controls excluded) of that cell type, or of every cell
//!   type when the cell type has none. The cell-weighted pooled mean is what cell-eval's `baseline` (the VCC
//!   "cell-mean" model) predicts for every perturbation.
//!
//! Means are accumulated in f64 and returned as f32.

use std::collections::HashMap;
use std::hash::Hash;

use ndarray::ArrayView2;

use super::{ModelError, Result};

/// A per-group mean expression vector and the number of cells behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMean {
    pub mean: Vec<f32>,
    pub n_cells: usize,
}

/// Where a baseline prediction came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Control cells of the cell type.
    Control,
    /// Training cells of this (perturbation, cell type).
    Observed,
    /// Pooled training perturbations of the same cell type.
    CellTypePool,
    /// Pooled training perturbations of all cell types.
    GlobalPool,
}

/// How the fallback pool weighs training groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// Every training perturbed cell counts once (cell-eval's cell-mean baseline).
    #[default]
    CellWeighted,
    /// Every training perturbation counts once.
    PerturbationWeighted,
}

/// One baseline prediction: the mean vector predicted for all cells of (perturbation, cell type).
#[derive(Debug, Clone, PartialEq)]
pub struct BaselinePrediction {
    pub pert: String,
    pub cell_type: String,
    pub mean: Vec<f32>,
    pub source: Source,
}

/// Means of the rows of `x` grouped by `keys[row]` (f64 accumulation).
pub fn group_means<K: Clone + Eq + Hash>(x: ArrayView2<f32>, keys: &[K]) -> Result<HashMap<K, GroupMean>> {
    if keys.len() != x.nrows() {
        return Err(ModelError::Input(format!("group_means: {} keys for {} rows", keys.len(), x.nrows())));
    }
    let g = x.ncols();
    let mut acc: HashMap<K, (Vec<f64>, usize)> = HashMap::new();
    for (row, key) in x.rows().into_iter().zip(keys) {
        let e = acc.entry(key.clone()).or_insert_with(|| (vec![0.0; g], 0));
        for (s, v) in e.0.iter_mut().zip(row.iter()) {
            *s += f64::from(*v);
        }
        e.1 += 1;
    }
    Ok(acc
        .into_iter()
        .map(|(k, (sum, n))| {
            let mean = sum.iter().map(|s| (s / n as f64) as f32).collect();
            (k, GroupMean { mean, n_cells: n })
        })
        .collect())
}

/// Control-mean baseline: for each (pert, cell type) target, the control mean of its cell type.
pub fn control_mean(
    control_means: &HashMap<String, GroupMean>,
    targets: &[(String, String)],
) -> Result<Vec<BaselinePrediction>> {
    targets
        .iter()
        .map(|(pert, ct)| {
            let m = control_means
                .get(ct)
                .ok_or_else(|| ModelError::Input(format!("control_mean: no control cells for cell type {ct:?}")))?;
            Ok(BaselinePrediction {
                pert: pert.clone(),
                cell_type: ct.clone(),
                mean: m.mean.clone(),
                source: Source::Control,
            })
        })
        .collect()
}

fn pool<'a>(groups: impl Iterator<Item = &'a GroupMean>, pooling: Pooling) -> Option<Vec<f32>> {
    let mut sum: Option<Vec<f64>> = None;
    let mut total = 0f64;
    for gm in groups {
        if gm.n_cells == 0 {
            continue;
        }
        let w = match pooling {
            Pooling::CellWeighted => gm.n_cells as f64,
            Pooling::PerturbationWeighted => 1.0,
        };
        let s = sum.get_or_insert_with(|| vec![0.0; gm.mean.len()]);
        for (a, v) in s.iter_mut().zip(&gm.mean) {
            *a += w * f64::from(*v);
        }
        total += w;
    }
    sum.map(|s| s.iter().map(|a| (a / total) as f32).collect())
}

/// Perturbation-mean baseline. `train` maps (pert, cell type) to the mean of its *training* cells; groups whose
/// perturbation is `control_pert` are ignored. Errors if there is no training perturbation at all, or if group
/// vectors differ in length.
pub fn perturbation_mean(
    train: &HashMap<(String, String), GroupMean>,
    control_pert: &str,
    targets: &[(String, String)],
    pooling: Pooling,
) -> Result<Vec<BaselinePrediction>> {
    let perturbed: Vec<(&(String, String), &GroupMean)> =
        train.iter().filter(|((p, _), gm)| p != control_pert && gm.n_cells > 0).collect();
    let width = perturbed
        .first()
        .map(|(_, gm)| gm.mean.len())
        .ok_or_else(|| ModelError::Input("perturbation_mean: no training perturbations".into()))?;
    if perturbed.iter().any(|(_, gm)| gm.mean.len() != width) {
        return Err(ModelError::Input("perturbation_mean: group means differ in length".into()));
    }
    // Pool in a fixed key order so the f64 sums (and thus the output) do not depend on HashMap order.
    let mut sorted = perturbed.clone();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    let global = pool(sorted.iter().map(|(_, gm)| *gm), pooling)
        .ok_or_else(|| ModelError::Input("perturbation_mean: no training cells".into()))?;
    let mut by_ct: HashMap<&str, Vec<f32>> = HashMap::new();
    let mut cts: Vec<&str> = sorted.iter().map(|((_, ct), _)| ct.as_str()).collect();
    cts.sort_unstable();
    cts.dedup();
    for ct in cts {
        if let Some(p) = pool(sorted.iter().filter(|((_, c), _)| c == ct).map(|(_, gm)| *gm), pooling) {
            by_ct.insert(ct, p);
        }
    }
    Ok(targets
        .iter()
        .map(|(pert, ct)| {
            let key = (pert.clone(), ct.clone());
            let (mean, source) = match train.get(&key) {
                Some(gm) if pert != control_pert && gm.n_cells > 0 => (gm.mean.clone(), Source::Observed),
                _ => match by_ct.get(ct.as_str()) {
                    Some(m) => (m.clone(), Source::CellTypePool),
                    None => (global.clone(), Source::GlobalPool),
                },
            };
            BaselinePrediction { pert: pert.clone(), cell_type: ct.clone(), mean, source }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    fn k(p: &str, c: &str) -> (String, String) {
        (p.to_string(), c.to_string())
    }

    #[test]
    fn group_means_by_hand() {
        let x = array![[1f32, 2.0], [3.0, 4.0], [10.0, 0.0]];
        let keys = ["a", "a", "b"];
        let m = group_means(x.view(), &keys).expect("m");
        assert_eq!(m["a"].mean, vec![2.0, 3.0]);
        assert_eq!(m["a"].n_cells, 2);
        assert_eq!(m["b"].mean, vec![10.0, 0.0]);
        assert!(group_means(x.view(), &keys[..2]).is_err());
    }

    #[test]
    fn control_mean_baseline() {
        let mut c = HashMap::new();
        c.insert("ctA".to_string(), GroupMean { mean: vec![1.0, 2.0], n_cells: 5 });
        let p = control_mean(&c, &[k("g1", "ctA")]).expect("p");
        assert_eq!(p[0].mean, vec![1.0, 2.0]);
        assert_eq!(p[0].source, Source::Control);
        assert!(control_mean(&c, &[k("g1", "ctB")]).is_err());
    }

    #[test]
    fn perturbation_mean_baseline() {
        let mut t = HashMap::new();
        let gm = |m: Vec<f32>, n| GroupMean { mean: m, n_cells: n };
        t.insert(k("g1", "ctA"), gm(vec![1.0, 0.0], 1));
        t.insert(k("g2", "ctA"), gm(vec![4.0, 3.0], 3));
        t.insert(k("g1", "ctB"), gm(vec![10.0, 10.0], 2));
        t.insert(k("non-targeting", "ctA"), gm(vec![100.0, 100.0], 50));
        let targets = [k("g1", "ctA"), k("g3", "ctA"), k("g3", "ctC"), k("g2", "ctB")];
        let p = perturbation_mean(&t, "non-targeting", &targets, Pooling::CellWeighted).expect("p");
        assert_eq!(p[0].mean, vec![1.0, 0.0]);
        assert_eq!(p[0].source, Source::Observed);
        // ctA pool, cell-weighted: (1·[1,0] + 3·[4,3]) / 4 = [3.25, 2.25]; controls excluded
        assert_eq!(p[1].mean, vec![3.25, 2.25]);
        assert_eq!(p[1].source, Source::CellTypePool);
        // global pool: (1·[1,0] + 3·[4,3] + 2·[10,10]) / 6 = [33/6, 29/6]
        assert!((p[2].mean[0] - 5.5).abs() < 1e-6);
        assert!((p[2].mean[1] - 29.0 / 6.0).abs() < 1e-6);
        assert_eq!(p[2].source, Source::GlobalPool);
        // ctB has only g1: pool = [10, 10]
        assert_eq!(p[3].mean, vec![10.0, 10.0]);
        let q = perturbation_mean(&t, "non-targeting", &targets, Pooling::PerturbationWeighted).expect("q");
        assert_eq!(q[1].mean, vec![2.5, 1.5]);
        assert!((q[2].mean[0] - 5.0).abs() < 1e-6);
        let empty = HashMap::new();
        assert!(perturbation_mean(&empty, "nt", &targets, Pooling::CellWeighted).is_err());
    }
}
