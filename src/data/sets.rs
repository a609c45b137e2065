//! Cell sets with covariate-matched controls, as cell-load builds them for ST
//! (`cell_load/data_modules/samplers.py`, `cell_load/mapping_strategies/random.py`).
//!
//! - Perturbed cells of one (cell type, perturbation[, batch]) group are shuffled and cut into sets of
//!   `set_len`; short sets are padded by sampling the group with replacement (train/val), as cell-load does.
//! - Each perturbed cell gets a control cell drawn uniformly from the same cell type and split, and from the same
//!   batch when the batch has controls (cell-load's `basal_mapping_strategy=batch`, falling back to the cell type).
//! - The order of an epoch is a pure function of `(seed, epoch)` and the controls of a set of `(seed, epoch,
//!   index)`, so the data cursor `(epoch, index)` is all a checkpoint needs to resume exactly.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::config::Split;
use super::table::CellTable;

/// One set: perturbed cells (rows of the table) and their matched controls, same length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellSet {
    pub pert: u32,
    pub cell_type: u16,
    pub cells: Vec<u32>,
    pub controls: Vec<u32>,
}

/// Where the sampler is in its stream of sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DataCursor {
    pub epoch: u64,
    pub index: u64,
}

#[derive(Debug, Clone)]
struct Group {
    pert: u32,
    cell_type: u16,
    cells: Vec<u32>,
}

/// Builds sets of one split of a [`CellTable`].
#[derive(Debug, Clone)]
pub struct SetSampler {
    groups: Vec<Group>,
    /// (cell type, batch) → control rows; batch `u16::MAX` holds the whole cell type's pool.
    controls: BTreeMap<(u16, u16), Vec<u32>>,
    batch_of: Vec<u16>,
    set_len: usize,
    pad: bool,
    seed: u64,
    epoch_sets: Vec<(usize, Vec<u32>)>,
    epoch_loaded: Option<u64>,
}

const ALL_BATCHES: u16 = u16::MAX;

#[derive(Debug, thiserror::Error)]
pub enum SetError {
    #[error("split {split} has no perturbed cells: check the data config's [training]/[zeroshot]/[fewshot] sections")]
    NoCells { split: &'static str },
    #[error("cell type {cell_type:?} has perturbed cells in split {split} but no control cells ({control:?})")]
    NoControls { split: &'static str, cell_type: String, control: String },
    #[error("set_len must be at least 1")]
    SetLen,
}

impl SetSampler {
    /// Sets of `split`. `pad` fills short sets by sampling with replacement (train/val); without it the last set
    /// of a group is shorter (predict).
    pub fn new(table: &CellTable, split: Split, set_len: usize, pad: bool, seed: u64) -> Result<Self, SetError> {
        if set_len == 0 {
            return Err(SetError::SetLen);
        }
        let mut groups: BTreeMap<(u16, u32), Vec<u32>> = BTreeMap::new();
        let mut controls: BTreeMap<(u16, u16), Vec<u32>> = BTreeMap::new();
        for i in 0..table.n_cells() {
            if !table.splits[i].contains(split) {
                continue;
            }
            let (ct, batch) = (table.cell_type[i], table.batch[i]);
            if table.pert[i] == table.control {
                controls.entry((ct, batch)).or_default().push(i as u32);
                controls.entry((ct, ALL_BATCHES)).or_default().push(i as u32);
            } else {
                groups.entry((ct, table.pert[i])).or_default().push(i as u32);
            }
        }
        if groups.is_empty() {
            return Err(SetError::NoCells { split: split.name() });
        }
        for &(ct, _) in groups.keys() {
            if !controls.contains_key(&(ct, ALL_BATCHES)) {
                return Err(SetError::NoControls {
                    split: split.name(),
                    cell_type: table.cell_type_names[ct as usize].clone(),
                    control: table.pert_names[table.control as usize].clone(),
                });
            }
        }
        let groups = groups.into_iter().map(|((cell_type, pert), cells)| Group { pert, cell_type, cells }).collect();
        Ok(SetSampler {
            groups,
            controls,
            batch_of: table.batch.clone(),
            set_len,
            pad,
            seed,
            epoch_sets: Vec::new(),
            epoch_loaded: None,
        })
    }

    /// Number of (cell type, perturbation) groups.
    pub fn n_groups(&self) -> usize {
        self.groups.len()
    }

    /// Number of sets in one epoch.
    pub fn sets_per_epoch(&self) -> usize {
        self.groups.iter().map(|g| g.cells.len().div_ceil(self.set_len)).sum()
    }

    /// The (cell type, perturbation) of every group, in a stable order.
    pub fn group_keys(&self) -> Vec<(u16, u32)> {
        self.groups.iter().map(|g| (g.cell_type, g.pert)).collect()
    }

    fn load_epoch(&mut self, epoch: u64) {
        if self.epoch_loaded == Some(epoch) {
            return;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(epoch.wrapping_mul(2).wrapping_add(1));
        let mut sets = Vec::with_capacity(self.sets_per_epoch());
        for (gi, group) in self.groups.iter().enumerate() {
            let mut cells = group.cells.clone();
            cells.shuffle(&mut rng);
            for chunk in cells.chunks(self.set_len) {
                let mut set = chunk.to_vec();
                while self.pad && set.len() < self.set_len {
                    set.push(group.cells[rng.random_range(0..group.cells.len())]);
                }
                sets.push((gi, set));
            }
        }
        sets.shuffle(&mut rng);
        self.epoch_sets = sets;
        self.epoch_loaded = Some(epoch);
    }

    /// The set at `cursor`, advancing it (wrapping into the next epoch).
    pub fn next_set(&mut self, cursor: &mut DataCursor) -> CellSet {
        self.load_epoch(cursor.epoch);
        if cursor.index as usize >= self.epoch_sets.len() {
            cursor.epoch += 1;
            cursor.index = 0;
            self.load_epoch(cursor.epoch);
        }
        let (gi, cells) = self.epoch_sets[cursor.index as usize].clone();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0xC0_47_20_15);
        rng.set_stream(cursor.epoch.wrapping_mul(1 << 32).wrapping_add(cursor.index));
        cursor.index += 1;
        let group = &self.groups[gi];
        let controls = self.match_controls(group.cell_type, &cells, &mut rng);
        CellSet { pert: group.pert, cell_type: group.cell_type, cells, controls }
    }

    fn match_controls(&self, cell_type: u16, cells: &[u32], rng: &mut ChaCha8Rng) -> Vec<u32> {
        cells
            .iter()
            .map(|&c| {
                let batch = self.batch_of[c as usize];
                let pool = self
                    .controls
                    .get(&(cell_type, batch))
                    .or_else(|| self.controls.get(&(cell_type, ALL_BATCHES)))
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                if pool.is_empty() {
                    c // unreachable by construction (checked in `new`); keeps this function total
                } else {
                    pool[rng.random_range(0..pool.len())]
                }
            })
            .collect()
    }

    /// Every group once, cut into sets without padding, controls drawn with `seed`: the sets `predict` runs.
    pub fn prediction_sets(&self, seed: u64) -> Vec<CellSet> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut out = Vec::new();
        for group in &self.groups {
            for chunk in group.cells.chunks(self.set_len) {
                let controls = self.match_controls(group.cell_type, chunk, &mut rng);
                out.push(CellSet { pert: group.pert, cell_type: group.cell_type, cells: chunk.to_vec(), controls });
            }
        }
        out
    }

    /// Control rows of a cell type in this split.
    pub fn control_pool(&self, cell_type: u16) -> &[u32] {
        self.controls.get(&(cell_type, ALL_BATCHES)).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::config::SplitSet;
    use crate::data::table::Features;
    use ndarray::Array2;

    fn table() -> CellTable {
        // 2 cell types × (3 perts × 5 cells + 4 controls); cell type 1 is held out (test).
        let mut t = CellTable {
            features: Features::Dense(Array2::zeros((38, 2))),
            feature_names: vec!["a".into(), "b".into()],
            pert_names: vec!["non-targeting".into(), "P1".into(), "P2".into(), "P3".into()],
            control: 0,
            cell_type_names: vec!["t0".into(), "t1".into()],
            batch_names: vec!["b0".into(), "b1".into()],
            pert: vec![],
            cell_type: vec![],
            batch: vec![],
            splits: vec![],
        };
        for ct in 0..2u16 {
            for p in 0..4u32 {
                let n = if p == 0 { 4 } else { 5 };
                for k in 0..n {
                    t.pert.push(p);
                    t.cell_type.push(ct);
                    t.batch.push((k % 2) as u16);
                    let mut s = SplitSet::default();
                    s.insert(if ct == 0 || p == 0 { Split::Train } else { Split::Test });
                    if ct == 1 && p == 0 {
                        s.insert(Split::Test);
                    }
                    t.splits.push(s);
                }
            }
        }
        t
    }

    #[test]
    fn sets_are_padded_matched_and_deterministic() {
        let t = table();
        let mut s = SetSampler::new(&t, Split::Train, 4, true, 7).unwrap();
        // train: t0 × 3 perts (5 cells → 2 sets each)
        assert_eq!(s.n_groups(), 3);
        assert_eq!(s.sets_per_epoch(), 6);
        let mut cursor = DataCursor::default();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let set = s.next_set(&mut cursor);
            assert_eq!(set.cells.len(), 4);
            assert_eq!(set.controls.len(), 4);
            for (&c, &k) in set.cells.iter().zip(&set.controls) {
                assert_eq!(t.pert[c as usize], set.pert);
                assert_eq!(t.pert[k as usize], 0, "control matched");
                assert_eq!(t.cell_type[k as usize], t.cell_type[c as usize]);
                assert_eq!(t.batch[k as usize], t.batch[c as usize], "batch matched when possible");
            }
            seen.push(set);
        }
        assert_eq!(cursor, DataCursor { epoch: 0, index: 6 }, "wraps lazily on the next call");
        // resuming from a cursor gives the same sets
        let mut again = SetSampler::new(&t, Split::Train, 4, true, 7).unwrap();
        let mut c2 = DataCursor { epoch: 0, index: 3 };
        assert_eq!(again.next_set(&mut c2), seen[3]);
        // next epoch wraps
        let mut c3 = DataCursor { epoch: 0, index: 6 };
        again.next_set(&mut c3);
        assert_eq!(c3, DataCursor { epoch: 1, index: 1 });
    }

    #[test]
    fn held_out_split_and_prediction_sets() {
        let t = table();
        let s = SetSampler::new(&t, Split::Test, 4, false, 1).unwrap();
        let sets = s.prediction_sets(3);
        assert_eq!(sets.len(), 6);
        assert!(sets.iter().all(|set| set.cell_type == 1));
        let total: usize = sets.iter().map(|s| s.cells.len()).sum();
        assert_eq!(total, 15, "every held-out cell once, no padding");
        assert!(SetSampler::new(&t, Split::Val, 4, true, 1).unwrap_err().to_string().contains("val"));
    }
}
