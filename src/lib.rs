//! vcell: a terminal workbench for virtual-cell models.
//!
//! Layers, lowest first (a layer never imports one above it):
//! `data` → `eval` → `model`, then `jobs`, `ui` and `cli` on top. `data`, `eval` and `model` are synchronous
//! libraries with `thiserror` errors; they report progress through [`progress::Progress`] and never print.
pub mod cli;
pub mod data;
pub mod eval;
pub mod jobs;
pub mod model;
pub mod progress;
pub mod ui;
