//! Loading a data config into a `CellTable`: splits, normalisation, HVG, label errors.
#![allow(clippy::unwrap_used)]
use std::path::Path;

use vcell::data::config::{DataConfig, Split};
use vcell::data::h5ad::H5adWriter;
use vcell::data::sets::{DataCursor, SetSampler};
use vcell::data::synth::{SynthConfig, SynthDataset};
use vcell::data::table::{CellTable, Features};
use vcell::progress::NoProgress;

fn write_synth(path: &Path) -> SynthDataset {
    let cfg = SynthConfig {
        n_genes: 150,
        n_perts: 6,
        n_cell_types: 3,
        cells_per_pert: 20,
        ctrl_per_cell_type: 40,
        de_genes_per_pert: 10,
        ..SynthConfig::default()
    };
    let data = SynthDataset::new(cfg).unwrap();
    let mut w = H5adWriter::create(path, &data.var()).unwrap();
    w.append_rows(&data.generate_rows(0, data.n_cells())).unwrap();
    w.finish(&data.obs(), &[]).unwrap();
    data
}

#[test]
fn loads_splits_and_normalises() {
    let dir = tempfile::tempdir().unwrap();
    let data = write_synth(&dir.path().join("synth.h5ad"));
    let held = data.pert_label(1).to_owned();
    let toml = format!(
        "[datasets]\nsynth = \"synth.h5ad\"\n[training]\nsynth = \"train\"\n[zeroshot]\n\"synth.celltype_2\" = \"test\"\n\
         [fewshot.\"synth.celltype_0\"]\nval = [\"{held}\"]\ntest = [\"{held}\"]\n"
    );
    let cfg_path = dir.path().join("data.toml");
    std::fs::write(&cfg_path, toml).unwrap();
    let cfg = DataConfig::load(&cfg_path).unwrap();
    let table = CellTable::load(&cfg, &NoProgress).unwrap();
    assert_eq!(table.n_cells(), data.n_cells());
    assert_eq!(table.n_features(), 150);
    let count = |s: Split, ctrl: bool| {
        (0..table.n_cells())
            .filter(|&i| table.splits[i].contains(s) && (table.pert[i] == table.control) == ctrl)
            .count()
    };
    // train perturbed: celltype_0 without the held pert (5×20) + celltype_1 (6×20)
    assert_eq!(count(Split::Train, false), 5 * 20 + 6 * 20);
    // test perturbed: celltype_2 all (6×20) + the few-shot pert in celltype_0 (20)
    assert_eq!(count(Split::Test, false), 6 * 20 + 20);
    assert_eq!(count(Split::Val, false), 20);
    // controls: all three cell types train; celltype_2 and celltype_0 test
    assert_eq!(count(Split::Train, true), 120);
    assert_eq!(count(Split::Test, true), 80);
    // counts were normalised to log1p
    let Features::Sparse(m) = &table.features else { panic!("expected sparse features") };
    assert!(m.data().iter().all(|v| v.is_finite() && *v > 0.0 && *v < 15.0));
    assert!(m.data().iter().any(|v| v.fract() != 0.0));
    // sets of the test split draw controls from the held-out cell type's own pool
    let mut s = SetSampler::new(&table, Split::Test, 8, true, 1).unwrap();
    let set = s.next_set(&mut DataCursor::default());
    assert!(set.controls.iter().all(|&c| table.cell_type[c as usize] == set.cell_type));
}

#[test]
fn hvg_and_bad_labels() {
    let dir = tempfile::tempdir().unwrap();
    write_synth(&dir.path().join("synth.h5ad"));
    let write_cfg = |body: &str| {
        let p = dir.path().join("d.toml");
        std::fs::write(&p, format!("[datasets]\nsynth = \"synth.h5ad\"\n[training]\nsynth = \"train\"\n{body}"))
            .unwrap();
        DataConfig::load(&p).unwrap()
    };
    let table = CellTable::load(&write_cfg("[data]\nhvg = 40\n"), &NoProgress).unwrap();
    assert_eq!(table.n_features(), 40);
    let err = CellTable::load(&write_cfg("[zeroshot]\n\"synth.liver\" = \"test\"\n"), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("liver"), "{err}");
    let err = CellTable::load(&write_cfg("[data]\npert_col = \"guide\"\n"), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("guide") && err.to_string().contains("synth.h5ad"), "{err}");
    let err = CellTable::load(&write_cfg("[data]\ncontrol_pert = \"DMSO\"\n"), &NoProgress).unwrap_err();
    assert!(err.to_string().contains("DMSO"), "{err}");
}
