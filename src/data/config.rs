//! The TOML data config of Arc's `state`/`cell-load`: datasets, the training section, zero-shot cell types and
//! few-shot perturbations, plus the column names (`data.kwargs` in state's Hydra config).
//!
//! ```toml
//! [data]                       # columns and feature space (state's `data.kwargs`)
//! pert_col = "target_gene"
//! cell_type_key = "cell_type"
//! batch_col = "batch"
//! control_pert = "non-targeting"
//! # embed_key = "X_state"      # train on an obsm embedding instead of X
//! # hvg = 2000                 # keep the top highly-variable genes
//!
//! [datasets]                   # name -> .h5ad file
//! synth = "data/synth.h5ad"
//! [training]                   # every cell type of these datasets trains, unless overridden below
//! synth = "train"
//! [zeroshot]                   # "dataset.cell_type" = "val" | "test": hold out a whole cell type
//! "synth.celltype_2" = "test"
//! [fewshot."synth.celltype_0"] # these perturbations go to val/test; the rest stay in train
//! val = ["GENE00012"]
//! test = ["GENE00012", "GENE00450"]
//! ```
//!
//! Split rules follow cell-load (`cell_load/data_modules/perturbation_dataloader.py`): a zero-shot cell type sends
//! its perturbed and control cells to its split, and its controls also to train; few-shot splits share the cell
//! type's whole control pool; a dataset missing from `[training]` contributes only its zero-shot/few-shot cell types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read data config {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("data config {path} is not valid TOML for vcell: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("data config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// Which split a group of cells belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Split::Train => 1,
            Split::Val => 2,
            Split::Test => 4,
        }
    }
}

/// A set of splits (a cell can be in several: zero-shot controls are in train and test; few-shot val/test overlap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct SplitSet(u8);

impl SplitSet {
    pub fn contains(self, split: Split) -> bool {
        self.0 & split.bit() != 0
    }
    pub fn insert(&mut self, split: Split) {
        self.0 |= split.bit();
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// Column names and feature space (`[data]`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSettings {
    pub pert_col: String,
    pub cell_type_key: String,
    /// Batch column; empty string = no batch covariate.
    pub batch_col: String,
    pub control_pert: String,
    /// Train on `obsm[embed_key]` instead of `X`.
    pub embed_key: Option<String>,
    /// Keep only the top-N highly variable genes of the training cells (None = all genes).
    pub hvg: Option<usize>,
}

impl Default for DataSettings {
    fn default() -> Self {
        DataSettings {
            pert_col: "target_gene".into(),
            cell_type_key: "cell_type".into(),
            batch_col: "batch".into(),
            control_pert: "non-targeting".into(),
            embed_key: None,
            hvg: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct FewshotEntry {
    #[serde(default)]
    val: Vec<String>,
    #[serde(default)]
    test: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    data: DataSettings,
    datasets: BTreeMap<String, PathBuf>,
    #[serde(default)]
    training: BTreeMap<String, String>,
    #[serde(default)]
    zeroshot: BTreeMap<String, Split>,
    #[serde(default)]
    fewshot: BTreeMap<String, FewshotEntry>,
}

/// A parsed and checked data config. Dataset paths are resolved relative to the config file.
#[derive(Debug, Clone, PartialEq)]
pub struct DataConfig {
    pub path: PathBuf,
    pub settings: DataSettings,
    /// (name, file), sorted by name.
    pub datasets: Vec<(String, PathBuf)>,
    pub training: Vec<String>,
    /// (dataset, cell type) → split.
    pub zeroshot: BTreeMap<(String, String), Split>,
    /// (dataset, cell type) → (val perturbations, test perturbations).
    pub fewshot: BTreeMap<(String, String), (Vec<String>, Vec<String>)>,
}

impl DataConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parse TOML text; `path` names the file in errors and anchors relative dataset paths.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?;
        let invalid = |message: String| ConfigError::Invalid { path: path.to_owned(), message };
        let base = path.parent().unwrap_or(Path::new("."));
        if raw.datasets.is_empty() {
            return Err(invalid("[datasets] is empty: name at least one .h5ad file".into()));
        }
        for (name, value) in &raw.training {
            if !raw.datasets.contains_key(name) {
                return Err(invalid(format!("[training] names unknown dataset {name:?}")));
            }
            if value != "train" {
                return Err(invalid(format!("[training] {name} = {value:?}: the only accepted value is \"train\"")));
            }
        }
        let split_key = |section: &str, key: &str| -> Result<(String, String), ConfigError> {
            let (ds, ct) = key
                .split_once('.')
                .ok_or_else(|| invalid(format!("[{section}] key {key:?} must be \"dataset.cell_type\"")))?;
            if !raw.datasets.contains_key(ds) {
                return Err(invalid(format!("[{section}] key {key:?} names unknown dataset {ds:?}")));
            }
            Ok((ds.to_owned(), ct.to_owned()))
        };
        let mut zeroshot = BTreeMap::new();
        for (key, split) in &raw.zeroshot {
            if *split == Split::Train {
                return Err(invalid(format!("[zeroshot] {key:?} = \"train\": use \"val\" or \"test\"")));
            }
            zeroshot.insert(split_key("zeroshot", key)?, *split);
        }
        let mut fewshot = BTreeMap::new();
        for (key, entry) in &raw.fewshot {
            let k = split_key("fewshot", key)?;
            if zeroshot.contains_key(&k) {
                return Err(invalid(format!("{key:?} is both zero-shot and few-shot")));
            }
            if entry.val.is_empty() && entry.test.is_empty() {
                return Err(invalid(format!("[fewshot.{key:?}] lists no val or test perturbations")));
            }
            fewshot.insert(k, (entry.val.clone(), entry.test.clone()));
        }
        let datasets =
            raw.datasets.into_iter().map(|(n, p)| (n, if p.is_absolute() { p } else { base.join(p) })).collect();
        Ok(DataConfig {
            path: path.to_owned(),
            settings: raw.data,
            datasets,
            training: raw.training.into_keys().collect(),
            zeroshot,
            fewshot,
        })
    }

    /// The splits of a cell of `dataset`, given its cell type and whether it is a control and its perturbation.
    pub fn splits_of(&self, dataset: &str, cell_type: &str, pert: &str, is_control: bool) -> SplitSet {
        let key = (dataset.to_owned(), cell_type.to_owned());
        let mut set = SplitSet::default();
        if let Some(split) = self.zeroshot.get(&key) {
            set.insert(*split);
            if is_control {
                set.insert(Split::Train);
            }
            return set;
        }
        if let Some((val, test)) = self.fewshot.get(&key) {
            if is_control {
                set.insert(Split::Train);
                set.insert(Split::Val);
                set.insert(Split::Test);
                return set;
            }
            let in_val = val.iter().any(|p| p == pert);
            let in_test = test.iter().any(|p| p == pert);
            if in_val {
                set.insert(Split::Val);
            }
            if in_test {
                set.insert(Split::Test);
            }
            if !in_val && !in_test && self.training.iter().any(|d| d == dataset) {
                set.insert(Split::Train);
            }
            return set;
        }
        if self.training.iter().any(|d| d == dataset) {
            set.insert(Split::Train);
        }
        set
    }

    /// Check that every cell type and perturbation the config names exists in the data; `known` gives, per
    /// dataset, its cell types and its perturbation labels.
    pub fn check_labels(&self, known: &BTreeMap<String, (Vec<String>, Vec<String>)>) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: self.path.clone(), message };
        let keys = self.zeroshot.keys().chain(self.fewshot.keys());
        for (ds, ct) in keys {
            let Some((cell_types, _)) = known.get(ds) else { continue };
            if !cell_types.iter().any(|c| c == ct) {
                return Err(invalid(format!(
                    "cell type {ct:?} not found in dataset {ds:?} (column {:?}); it has: {}",
                    self.settings.cell_type_key,
                    preview(cell_types)
                )));
            }
        }
        for ((ds, ct), (val, test)) in &self.fewshot {
            let Some((_, perts)) = known.get(ds) else { continue };
            for p in val.iter().chain(test) {
                if !perts.iter().any(|q| q == p) {
                    return Err(invalid(format!(
                        "few-shot perturbation {p:?} (for {ds}.{ct}) not found in column {:?}; known: {}",
                        self.settings.pert_col,
                        preview(perts)
                    )));
                }
            }
        }
        Ok(())
    }
}

/// A short list for error messages: the first few items and a count.
pub fn preview(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let head: Vec<&str> = items.iter().take(SHOWN).map(String::as_str).collect();
    if items.len() > SHOWN {
        format!("{} … ({} in all)", head.join(", "), items.len())
    } else {
        head.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[data]
batch_col = "batch"
[datasets]
synth = "synth.h5ad"
other = "/abs/other.h5ad"
[training]
synth = "train"
[zeroshot]
"synth.celltype_2" = "test"
"other.t1" = "val"
[fewshot."synth.celltype_0"]
val = ["GENE00012"]
test = ["GENE00012", "GENE00450"]
"#;

    #[test]
    fn parses_and_resolves_paths() {
        let cfg = DataConfig::parse(EXAMPLE, Path::new("/cfg/data.toml")).unwrap();
        assert_eq!(cfg.datasets[1], ("synth".to_owned(), PathBuf::from("/cfg/synth.h5ad")));
        assert_eq!(cfg.datasets[0].1, PathBuf::from("/abs/other.h5ad"));
        assert_eq!(cfg.settings.pert_col, "target_gene");
        assert_eq!(cfg.zeroshot.len(), 2);
    }

    #[test]
    fn split_rules_follow_cell_load() {
        let cfg = DataConfig::parse(EXAMPLE, Path::new("d.toml")).unwrap();
        let s = |ds: &str, ct: &str, p: &str, ctrl: bool| cfg.splits_of(ds, ct, p, ctrl);
        // plain training cell type
        let plain = s("synth", "celltype_1", "GENE00001", false);
        assert!(plain.contains(Split::Train) && !plain.contains(Split::Test));
        // zero-shot: perturbed cells to test only, controls to test and train
        let zs = s("synth", "celltype_2", "GENE00001", false);
        assert!(zs.contains(Split::Test) && !zs.contains(Split::Train));
        let zs_ctrl = s("synth", "celltype_2", "non-targeting", true);
        assert!(zs_ctrl.contains(Split::Test) && zs_ctrl.contains(Split::Train));
        // few-shot: listed perts held out (val and test may overlap), others train, controls everywhere
        let fs = s("synth", "celltype_0", "GENE00012", false);
        assert!(fs.contains(Split::Val) && fs.contains(Split::Test) && !fs.contains(Split::Train));
        assert!(s("synth", "celltype_0", "GENE00450", false).contains(Split::Test));
        assert!(s("synth", "celltype_0", "GENE00002", false).contains(Split::Train));
        let fs_ctrl = s("synth", "celltype_0", "non-targeting", true);
        assert!(Split::ALL.iter().all(|&x| fs_ctrl.contains(x)));
        // a dataset not in [training] contributes only its held-out cell types
        assert!(s("other", "t0", "X", false).is_empty());
        assert!(s("other", "t1", "X", false).contains(Split::Val));
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let cases = [
            ("[datasets]\n", "empty"),
            ("[datasets]\na = \"a.h5ad\"\n[training]\nb = \"train\"\n", "unknown dataset \"b\""),
            ("[datasets]\na = \"a.h5ad\"\n[zeroshot]\n\"a\" = \"test\"\n", "dataset.cell_type"),
            ("[datasets]\na = \"a.h5ad\"\n[zeroshot]\n\"a.t\" = \"tset\"\n", "unknown variant"),
            ("[datasets]\na = \"a.h5ad\"\n[data]\npert_column = \"x\"\n", "unknown field"),
            ("[datasets]\na = \"a.h5ad\"\n[fewshot.\"a.t\"]\n", "no val or test"),
            ("not toml [", "TOML"),
        ];
        for (text, needle) in cases {
            let err = DataConfig::parse(text, Path::new("bad.toml")).unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(err.contains("bad.toml"), "{err:?} should name the file");
        }
    }

    #[test]
    fn unknown_labels_are_reported() {
        let cfg = DataConfig::parse(EXAMPLE, Path::new("d.toml")).unwrap();
        let mut known = BTreeMap::new();
        known.insert(
            "synth".to_owned(),
            (vec!["celltype_0".into(), "celltype_2".into()], vec!["GENE00012".into(), "GENE00450".into()]),
        );
        assert!(cfg.check_labels(&known).is_ok());
        known.get_mut("synth").unwrap().1.pop();
        let err = cfg.check_labels(&known).unwrap_err().to_string();
        assert!(err.contains("GENE00450"), "{err}");
        known.get_mut("synth").unwrap().0.pop();
        assert!(cfg.check_labels(&known).unwrap_err().to_string().contains("celltype_2"));
    }
}
