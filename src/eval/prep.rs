//! `cell-eval prep` (`cell_eval/_cli/_prep.py::strip_anndata`): a VCC submission tarball.
//!
//! Checks the perturbation column and the control, puts the genes in the expected order (or fails listing the
//! missing and extra ones), enforces the cell limit, log-normalises integer counts, keeps only the perturbation
//! column (index `0..n`), writes CSR float32, compresses it with zstd and packs `pred.h5ad.zst` with
//! `watermark.txt` ("vcc-prep") into an uncompressed tar. The tarball is written under a temporary name and
//! renamed into place.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::error::{short_list, EvalError, Result};
use super::input::{prepare_file, InputOptions};
use crate::data::anndata::{Categorical, Column, CsrMatrix, DataFrame};
use crate::data::h5ad::H5adWriter;
use crate::progress::NoProgress;

#[derive(Debug, Clone)]
pub struct PrepOptions {
    pub input: PathBuf,
    /// Expected genes, in order.
    pub genes: Vec<String>,
    pub output: PathBuf,
    pub pert_col: String,
    pub control: String,
    /// Expected number of genes (None: no check). A gene list of another length wins, with a warning.
    pub expected_gene_dim: Option<usize>,
    pub max_cell_dim: Option<usize>,
    pub allow_discrete: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PrepSummary {
    pub n_cells: usize,
    pub n_genes: usize,
    pub reordered: bool,
    pub warnings: Vec<String>,
}

fn err(path: &Path, message: impl Into<String>) -> EvalError {
    EvalError::Read { file: path.display().to_string(), message: message.into() }
}

pub fn prep(opts: &PrepOptions) -> Result<PrepSummary> {
    let input_opts = InputOptions {
        pert_col: opts.pert_col.clone(),
        control: opts.control.clone(),
        allow_discrete: opts.allow_discrete,
        ..InputOptions::default()
    };
    let file = prepare_file(&opts.input, &input_opts, &NoProgress)?;
    let mut warnings = Vec::new();
    let mut expected = opts.expected_gene_dim;
    if let Some(d) = expected {
        if d != opts.genes.len() {
            warnings.push(format!(
                "the gene list has {} genes, not the expected {d}; expecting {} instead",
                opts.genes.len(),
                opts.genes.len()
            ));
            expected = Some(opts.genes.len());
        }
    }
    // Column permutation: input column j goes to output column perm[j].
    let reordered = file.var_names != opts.genes;
    let perm: Vec<u32> = if reordered {
        let position: std::collections::HashMap<&str, usize> =
            opts.genes.iter().enumerate().map(|(i, g)| (g.as_str(), i)).collect();
        let missing: Vec<String> = opts.genes.iter().filter(|g| !file.var_names.contains(g)).cloned().collect();
        let extra: Vec<String> =
            file.var_names.iter().filter(|g| !position.contains_key(g.as_str())).cloned().collect();
        if !missing.is_empty() || !extra.is_empty() || file.var_names.len() != opts.genes.len() {
            return Err(err(
                &opts.input,
                format!(
                    "{}: the gene list does not match the AnnData's genes: missing genes {}; extra genes {}",
                    opts.input.display(),
                    short_list(&missing, 6),
                    short_list(&extra, 6)
                ),
            ));
        }
        warnings.push("the AnnData has every expected gene but in another order: reordering".into());
        file.var_names.iter().map(|g| position.get(g.as_str()).copied().unwrap_or(0) as u32).collect()
    } else {
        (0..file.n_vars as u32).collect()
    };
    if let Some(d) = expected {
        if opts.genes.len() != d {
            return Err(err(&opts.input, format!("gene dimension {} is not the expected {d}", opts.genes.len())));
        }
    }
    if let Some(max) = opts.max_cell_dim {
        if file.n_obs > max {
            return Err(err(
                &opts.input,
                format!("{}: {} cells exceed the maximum of {max}", opts.input.display(), file.n_obs),
            ));
        }
    }

    let dir = opts.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let work = tempdir_in(dir)?;
    let h5ad = work.join("pred.h5ad");
    let var = DataFrame::with_index(opts.genes.clone());
    let out_err = |e: crate::data::h5ad::H5adError| err(&opts.output, e.to_string());
    let mut writer = H5adWriter::create(&h5ad, &var).map_err(out_err)?;
    let mut write_error = None;
    file.for_each_chunk(&NoProgress, |_, m| {
        let chunk = if reordered { permute_columns(m, &perm) } else { m.clone() };
        if let Err(e) = writer.append_rows(&chunk) {
            write_error = Some(e);
        }
        Ok(())
    })?;
    if let Some(e) = write_error {
        return Err(out_err(e));
    }
    let mut obs = DataFrame::with_index((0..file.n_obs).map(|i| i.to_string()).collect());
    let pert = Categorical { codes: file.pert.codes.clone(), categories: file.pert.categories.clone(), ordered: false };
    obs.set_column(&opts.pert_col, Column::Categorical(pert));
    writer.finish(&obs, &[]).map_err(out_err)?;

    let io = |e: std::io::Error| err(&opts.output, e.to_string());
    let zst = work.join("pred.h5ad.zst");
    {
        let mut src = std::fs::File::open(&h5ad).map_err(io)?;
        let dst = std::fs::File::create(&zst).map_err(io)?;
        // Level 3 is zstd's default, as cell-eval's `zstd -T0` uses (single-threaded here: the zstd crate's
        // multithreading needs a build feature that pulls in more C code for a one-off step).
        let mut enc = zstd::stream::Encoder::new(dst, 3).map_err(io)?;
        std::io::copy(&mut src, &mut enc).map_err(io)?;
        enc.finish().map_err(io)?;
    }
    std::fs::remove_file(&h5ad).map_err(io)?;
    std::fs::write(work.join("watermark.txt"), "vcc-prep").map_err(io)?;
    let tmp_tar = work.join("out.tar");
    {
        let mut builder = tar::Builder::new(std::fs::File::create(&tmp_tar).map_err(io)?);
        builder.append_path_with_name(&zst, "pred.h5ad.zst").map_err(io)?;
        builder.append_path_with_name(work.join("watermark.txt"), "watermark.txt").map_err(io)?;
        builder.into_inner().map_err(io)?.flush().map_err(io)?;
    }
    std::fs::rename(&tmp_tar, &opts.output).map_err(io)?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(PrepSummary { n_cells: file.n_obs, n_genes: opts.genes.len(), reordered, warnings })
}

fn permute_columns(m: &CsrMatrix, perm: &[u32]) -> CsrMatrix {
    let mut indptr = vec![0usize];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for row in m.outer_iterator() {
        let mut entries: Vec<(u32, f32)> = row.iter().map(|(j, &v)| (perm[j], v)).collect();
        entries.sort_unstable_by_key(|e| e.0);
        for (j, v) in entries {
            indices.push(j);
            data.push(v);
        }
        indptr.push(indices.len());
    }
    CsrMatrix::new((m.rows(), m.cols()), indptr, indices, data)
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    let path = dir.join(format!(".vcell-prep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&path);
    std::fs::create_dir_all(&path).map_err(|e| err(&path, e.to_string()))?;
    Ok(path)
}
