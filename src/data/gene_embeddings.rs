//! Gene embeddings: a table mapping gene names to fixed vectors (Arc ships ESM2 protein embeddings, 5120-d), the
//! frozen token vocabulary of the SE model.
//!
//! Formats read ([`GeneEmbeddings::read`], dispatched on the file extension):
//! - **`.pt` / `.pth` / `.torch`**: a PyTorch pickle (`torch.save`) of a dict `gene → 1-D tensor`, as Arc's
//!   `protein_embeddings.pt` / `ESM2_pert_features.pt`. Read with `candle_core::pickle`, which loses the dict's
//!   key order, so genes are sorted by name. (Arc stacks the dict in key order to make token ids; we never use
//!   positional ids across files, always names, so the order does not matter.)
//! - **`.safetensors`**, two layouts: one 1-D tensor per gene (the tensor name is the gene; Arc's "convert"
//!   style), or a single 2-D tensor `[n_genes, dim]` with the gene names in the `__metadata__` entry `genes`
//!   (a JSON array of strings, or one name a line) or in a sidecar `.txt` next to the file.
//! - **`.npy`**: a 2-D array `[n_genes, dim]` plus a sidecar `.txt` (same stem), one gene name a line.
//!
//! Any float dtype is converted to f32. Errors name the file and what is wrong.
//!
//! Genes of a dataset that have no embedding are reported by [`GeneEmbeddings::match_genes`]; the SE cell
//! sentence skips them entirely (they are neither sentence tokens nor prediction targets), which is what Arc's
//! loader does (`state:src/state/emb/data/loader.py`, `valid_gene_mask`: only genes present in the embedding file
//! are kept, and the expression weights are computed over those genes only).
//!
//! [`synthetic_gene_embeddings`] makes a table for a [`SynthDataset`] whose vectors carry the generator's
//! co-regulation structure, so the whole SE pipeline runs without downloads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::synth::SynthDataset;

#[derive(Debug, thiserror::Error)]
pub enum GeneEmbeddingError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Format { path: PathBuf, reason: String },
    #[error("{}: could not read tensors: {source}", path.display())]
    Candle { path: PathBuf, source: candle_core::Error },
    #[error("gene embeddings: {0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, GeneEmbeddingError>;

fn format_err(path: &Path, reason: impl Into<String>) -> GeneEmbeddingError {
    GeneEmbeddingError::Format { path: path.to_path_buf(), reason: reason.into() }
}

fn candle_err(path: &Path) -> impl Fn(candle_core::Error) -> GeneEmbeddingError + '_ {
    move |source| GeneEmbeddingError::Candle { path: path.to_path_buf(), source }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> GeneEmbeddingError + '_ {
    move |source| GeneEmbeddingError::Io { path: path.to_path_buf(), source }
}

/// A gene → vector table (row-major `[len, dim]` f32).
#[derive(Debug, Clone, PartialEq)]
pub struct GeneEmbeddings {
    names: Vec<String>,
    dim: usize,
    data: Vec<f32>,
    index: HashMap<String, usize>,
}

/// How a dataset's genes map onto an embedding table.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneMatch {
    /// For each dataset gene (var order), its row in the table, or `None` when it has no embedding.
    pub table_row: Vec<Option<u32>>,
    /// Dataset genes without an embedding, in var order.
    pub missing: Vec<String>,
}

impl GeneMatch {
    /// Number of dataset genes with an embedding.
    pub fn n_matched(&self) -> usize {
        self.table_row.iter().filter(|r| r.is_some()).count()
    }

    /// A one-line human report: how many genes are missing, a preview of their names, and what happens to them.
    pub fn report(&self) -> String {
        let n = self.table_row.len();
        if self.missing.is_empty() {
            return format!("all {n} dataset genes have an embedding");
        }
        const PREVIEW: usize = 8;
        let mut preview = self.missing.iter().take(PREVIEW).cloned().collect::<Vec<_>>().join(", ");
        if self.missing.len() > PREVIEW {
            preview.push_str(", …");
        }
        format!(
            "{} of {n} dataset genes have no embedding and are skipped (not in cell sentences, not predicted): {preview}",
            self.missing.len()
        )
    }
}

/// The layout written by [`GeneEmbeddings::write_safetensors`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetensorsLayout {
    /// One 1-D tensor per gene, named by the gene.
    PerGene,
    /// A single 2-D tensor `embeddings` `[n, dim]`, gene names in `__metadata__["genes"]` (JSON array).
    Matrix,
}

impl GeneEmbeddings {
    /// Builds a table from names and row-major data. Names must be unique and non-empty, values finite.
    pub fn new(names: Vec<String>, dim: usize, data: Vec<f32>) -> Result<Self> {
        if dim == 0 {
            return Err(GeneEmbeddingError::Invalid("embedding dimension is 0".into()));
        }
        if data.len() != names.len() * dim {
            return Err(GeneEmbeddingError::Invalid(format!(
                "{} names × dim {dim} needs {} values, got {}",
                names.len(),
                names.len() * dim,
                data.len()
            )));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(GeneEmbeddingError::Invalid(format!(
                "gene {:?} has a non-finite value",
                names.get(i / dim).map_or("?", |s| s.as_str())
            )));
        }
        let mut index = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(GeneEmbeddingError::Invalid(format!("gene {i} has an empty name")));
            }
            if index.insert(name.clone(), i).is_some() {
                return Err(GeneEmbeddingError::Invalid(format!("gene {name:?} appears twice")));
            }
        }
        Ok(GeneEmbeddings { names, dim, data, index })
    }

    /// Reads a file, choosing the format by extension (see the module docs).
    pub fn read(path: &Path) -> Result<Self> {
        Self::read_with_gene_list(path, None)
    }

    /// Like [`Self::read`], with an explicit gene-list file for the matrix layouts (overrides metadata and the
    /// default sidecar `<stem>.txt`).
    pub fn read_with_gene_list(path: &Path, gene_list: Option<&Path>) -> Result<Self> {
        if !path.exists() {
            return Err(io_err(path)(std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")));
        }
        let ext = path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()).unwrap_or_default();
        let table = match ext.as_str() {
            "safetensors" => read_safetensors(path, gene_list)?,
            "pt" | "pth" | "torch" | "bin" => read_torch(path)?,
            "npy" => read_npy(path, gene_list)?,
            other => {
                return Err(format_err(
                    path,
                    format!(
                        "unknown gene-embedding format {other:?}: expected .safetensors, .pt/.pth/.torch (a torch.save \
                         dict gene → tensor) or .npy with a gene list"
                    ),
                ))
            }
        };
        table.map_err(|e| match e {
            GeneEmbeddingError::Invalid(reason) => format_err(path, reason),
            e => e,
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Row of `name`.
    pub fn row_of(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }

    /// The vector of `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.row_of(name).map(|i| &self.data[i * self.dim..(i + 1) * self.dim])
    }

    /// Row-major data `[len, dim]`.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    /// The table as a `[len, dim]` f32 tensor.
    pub fn to_tensor(&self, device: &Device) -> candle_core::Result<Tensor> {
        Tensor::from_slice(&self.data, (self.len(), self.dim), device)
    }

    /// Maps dataset genes (var order) to table rows; the missing ones are listed.
    pub fn match_genes(&self, genes: &[String]) -> GeneMatch {
        let mut missing = Vec::new();
        let table_row = genes
            .iter()
            .map(|g| {
                let row = self.row_of(g).map(|r| r as u32);
                if row.is_none() {
                    missing.push(g.clone());
                }
                row
            })
            .collect();
        GeneMatch { table_row, missing }
    }

    /// Writes a `.safetensors` file (atomically: a temporary file renamed into place).
    pub fn write_safetensors(&self, path: &Path, layout: SafetensorsLayout) -> Result<()> {
        let mut header = serde_json::Map::new();
        let mut payload: Vec<u8> = Vec::with_capacity(self.data.len() * 4);
        let entry = |shape: Vec<usize>, start: usize, end: usize| serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [start, end] });
        match layout {
            SafetensorsLayout::PerGene => {
                for (i, name) in self.names.iter().enumerate() {
                    let start = payload.len();
                    for v in &self.data[i * self.dim..(i + 1) * self.dim] {
                        payload.extend_from_slice(&v.to_le_bytes());
                    }
                    header.insert(name.clone(), entry(vec![self.dim], start, payload.len()));
                }
            }
            SafetensorsLayout::Matrix => {
                for v in &self.data {
                    payload.extend_from_slice(&v.to_le_bytes());
                }
                header.insert("embeddings".into(), entry(vec![self.len(), self.dim], 0, payload.len()));
                let genes = serde_json::to_string(&self.names)
                    .map_err(|e| GeneEmbeddingError::Invalid(format!("gene names: {e}")))?;
                header.insert("__metadata__".into(), serde_json::json!({ "genes": genes }));
            }
        }
        let mut head = serde_json::to_vec(&serde_json::Value::Object(header))
            .map_err(|e| GeneEmbeddingError::Invalid(format!("header: {e}")))?;
        while head.len() % 8 != 0 {
            head.push(b' ');
        }
        let mut bytes = Vec::with_capacity(8 + head.len() + payload.len());
        bytes.extend_from_slice(&(head.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&head);
        bytes.extend_from_slice(&payload);
        write_atomic(path, &bytes)
    }

    /// Writes a 2-D `.npy` (f32) and the gene names one a line into `gene_list`.
    pub fn write_npy(&self, path: &Path, gene_list: &Path) -> Result<()> {
        let t = self.to_tensor(&Device::Cpu).map_err(candle_err(path))?;
        t.write_npy(path).map_err(candle_err(path))?;
        let mut text = self.names.join("\n");
        text.push('\n');
        write_atomic(gene_list, text.as_bytes())
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(path)(e)
    })
}

/// The default sidecar gene list of a matrix file: same stem, `.txt`.
pub fn sidecar_gene_list(path: &Path) -> PathBuf {
    path.with_extension("txt")
}

fn read_gene_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(parse_gene_lines(&text))
}

fn parse_gene_lines(text: &str) -> Vec<String> {
    text.lines().map(|l| l.trim()).filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

fn tensor_rows(path: &Path, t: &Tensor) -> Result<(usize, usize, Vec<f32>)> {
    let (n, d) =
        t.dims2().map_err(|_| format_err(path, format!("expected a 2-D array, found shape {:?}", t.dims())))?;
    if !t.dtype().is_float() {
        return Err(format_err(path, format!("expected a float array, found {:?}", t.dtype())));
    }
    let v = t
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle_err(path))?;
    Ok((n, d, v))
}

fn matrix_with_names(path: &Path, names: Vec<String>, t: &Tensor, names_from: &str) -> Result<Result<GeneEmbeddings>> {
    let (n, d, data) = tensor_rows(path, t)?;
    if names.len() != n {
        return Err(format_err(
            path,
            format!("the array has {n} rows but the gene list ({names_from}) has {} names", names.len()),
        ));
    }
    Ok(GeneEmbeddings::new(names, d, data))
}

fn read_npy(path: &Path, gene_list: Option<&Path>) -> Result<Result<GeneEmbeddings>> {
    let t = Tensor::read_npy(path).map_err(candle_err(path))?;
    let list = gene_list.map(Path::to_path_buf).unwrap_or_else(|| sidecar_gene_list(path));
    if !list.exists() {
        return Err(format_err(
            path,
            format!("a .npy file needs a gene list, one name a line; expected {}", list.display()),
        ));
    }
    let names = read_gene_list(&list)?;
    matrix_with_names(path, names, &t, &list.display().to_string())
}

/// Per-gene 1-D tensors (sorted by name) into a table.
fn from_named_vectors(path: &Path, mut tensors: Vec<(String, Tensor)>) -> Result<Result<GeneEmbeddings>> {
    if tensors.is_empty() {
        return Err(format_err(path, "no tensors found (expected a dict gene name → 1-D tensor)"));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dim = None;
    let mut names = Vec::with_capacity(tensors.len());
    let mut data = Vec::new();
    for (name, t) in tensors {
        let t = match t.dims() {
            [_] => t,
            [1, _] | [_, 1] => t.flatten_all().map_err(candle_err(path))?,
            other => {
                return Err(format_err(path, format!("gene {name:?}: expected a 1-D vector, found shape {other:?}")))
            }
        };
        if !t.dtype().is_float() {
            return Err(format_err(path, format!("gene {name:?}: expected floats, found {:?}", t.dtype())));
        }
        let d = t.dim(0).map_err(candle_err(path))?;
        match dim {
            None => dim = Some(d),
            Some(d0) if d0 != d => {
                return Err(format_err(path, format!("gene {name:?} has {d} values, earlier genes have {d0}")))
            }
            Some(_) => {}
        }
        data.extend(t.to_dtype(DType::F32).and_then(|t| t.to_vec1::<f32>()).map_err(candle_err(path))?);
        names.push(name);
    }
    Ok(GeneEmbeddings::new(names, dim.unwrap_or(0), data))
}

fn read_torch(path: &Path) -> Result<Result<GeneEmbeddings>> {
    let tensors = candle_core::pickle::read_all(path).map_err(candle_err(path))?;
    from_named_vectors(path, tensors)
}

/// The `__metadata__` map of a safetensors file (empty when absent).
fn safetensors_metadata(path: &Path, bytes: &[u8]) -> Result<HashMap<String, String>> {
    let bad = |why: &str| format_err(path, format!("not a safetensors file: {why}"));
    let n = bytes.get(..8).ok_or_else(|| bad("shorter than 8 bytes"))?;
    let n = u64::from_le_bytes(n.try_into().map_err(|_| bad("header length"))?) as usize;
    let head = bytes.get(8..8usize.saturating_add(n)).ok_or_else(|| bad("header runs past the end of the file"))?;
    let value: serde_json::Value =
        serde_json::from_slice(head).map_err(|e| bad(&format!("header is not JSON ({e})")))?;
    let mut out = HashMap::new();
    if let Some(serde_json::Value::Object(meta)) = value.get("__metadata__") {
        for (k, v) in meta {
            if let serde_json::Value::String(s) = v {
                out.insert(k.clone(), s.clone());
            }
        }
    }
    Ok(out)
}

fn read_safetensors(path: &Path, gene_list: Option<&Path>) -> Result<Result<GeneEmbeddings>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let meta = safetensors_metadata(path, &bytes)?;
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(candle_err(path))?;
    drop(bytes);
    let two_d: Vec<&String> =
        tensors.iter().filter(|(_, t)| t.rank() == 2 && t.dim(0).unwrap_or(0) > 1).map(|(k, _)| k).collect();
    if tensors.len() == 1 && two_d.len() == 1 {
        let (_, t) = tensors.iter().next().ok_or_else(|| format_err(path, "no tensors"))?;
        if let Some(list) = gene_list {
            return matrix_with_names(path, read_gene_list(list)?, t, &list.display().to_string());
        }
        if let Some(genes) = meta.get("genes") {
            let names = match serde_json::from_str::<Vec<String>>(genes) {
                Ok(v) => v,
                Err(_) => parse_gene_lines(genes),
            };
            return matrix_with_names(path, names, t, "metadata \"genes\"");
        }
        let side = sidecar_gene_list(path);
        if side.exists() {
            return matrix_with_names(path, read_gene_list(&side)?, t, &side.display().to_string());
        }
        return Err(format_err(
            path,
            format!(
                "a single 2-D tensor needs gene names: a \"genes\" metadata entry or a gene list {}",
                side.display()
            ),
        ));
    }
    if !two_d.is_empty() {
        return Err(format_err(
            path,
            format!(
                "expected one 1-D tensor per gene, or a single 2-D tensor; found {} tensors of which 2-D: {:?}",
                tensors.len(),
                two_d.iter().take(3).collect::<Vec<_>>()
            ),
        ));
    }
    from_named_vectors(path, tensors.into_iter().collect())
}

/// Synthetic gene embeddings for a [`SynthDataset`]: genes regulated alike get correlated vectors.
///
/// Each gene gets a feature vector: its log expected expression in each cell type (centred over cell types, so it
/// says which cell types use the gene), its true log-fold change under each perturbation in each cell type (zero
/// for genes a perturbation does not move) and whether it is a perturbation target. The features are standardised
/// and mapped to `dim` by a fixed random Gaussian projection, plus gene-specific noise (30% of the variance), so two
/// genes moved by the same perturbations or marking the same cell type have nearby vectors — as ESM2 vectors of
/// functionally related proteins tend to be. Deterministic for `(dataset, dim, seed)`.
pub fn synthetic_gene_embeddings(ds: &SynthDataset, dim: usize, seed: u64) -> Result<GeneEmbeddings> {
    let n_genes = ds.n_genes();
    let n_types = ds.config.n_cell_types;
    let n_perts = ds.pert_targets.len();
    let n_feat = n_types + n_perts * n_types + 1;
    let mut feats = vec![0f64; n_genes * n_feat];
    let per_type: Vec<Vec<f64>> =
        (0..n_types).map(|t| ds.expected_fraction(None, t, 0).iter().map(|f| f.max(1e-300).ln()).collect()).collect();
    for g in 0..n_genes {
        let mean = per_type.iter().map(|v| v[g]).sum::<f64>() / n_types as f64;
        for (t, v) in per_type.iter().enumerate() {
            feats[g * n_feat + t] = v[g] - mean;
        }
    }
    for p in 0..n_perts {
        for t in 0..n_types {
            for &(g, lfc) in ds.true_effects(p, t) {
                if g < n_genes {
                    feats[g * n_feat + n_types + p * n_types + t] = lfc;
                }
            }
        }
        if let Some(&target) = ds.pert_targets.get(p) {
            if target < n_genes {
                feats[target * n_feat + n_feat - 1] = 1.0;
            }
        }
    }
    // Standardise each feature over genes (features that never vary stay 0).
    for j in 0..n_feat {
        let col: Vec<f64> = (0..n_genes).map(|g| feats[g * n_feat + j]).collect();
        let mean = col.iter().sum::<f64>() / n_genes.max(1) as f64;
        let var = col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n_genes.max(1) as f64;
        let sd = var.sqrt();
        for g in 0..n_genes {
            feats[g * n_feat + j] = if sd > 1e-12 { (feats[g * n_feat + j] - mean) / sd } else { 0.0 };
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5E6E_E3B0);
    let mut gauss = || -> f64 {
        let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        let u2: f64 = rng.random::<f64>();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    };
    let proj: Vec<f64> = (0..n_feat * dim).map(|_| gauss() / (n_feat as f64).sqrt()).collect();
    let (signal, noise) = (0.7f64.sqrt(), 0.3f64.sqrt());
    let mut data = Vec::with_capacity(n_genes * dim);
    for g in 0..n_genes {
        let f = &feats[g * n_feat..(g + 1) * n_feat];
        for k in 0..dim {
            let s: f64 = f.iter().enumerate().map(|(j, v)| v * proj[j * dim + k]).sum();
            data.push((signal * s + noise * gauss()) as f32);
        }
    }
    GeneEmbeddings::new(ds.gene_names.clone(), dim, data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::synth::SynthConfig;

    fn table() -> GeneEmbeddings {
        GeneEmbeddings::new(vec!["A".into(), "B".into(), "C".into()], 2, vec![1., 2., 3., 4., 5., 6.]).unwrap()
    }

    #[test]
    fn match_reports_missing() {
        let m = table().match_genes(&["B".into(), "X".into(), "A".into()]);
        assert_eq!(m.table_row, vec![Some(1), None, Some(0)]);
        assert_eq!(m.missing, vec!["X".to_string()]);
        assert_eq!(m.n_matched(), 2);
        assert!(m.report().starts_with("1 of 3 dataset genes have no embedding"), "{}", m.report());
    }

    #[test]
    fn invalid_tables() {
        assert!(GeneEmbeddings::new(vec!["A".into(), "A".into()], 1, vec![0., 1.]).is_err());
        assert!(GeneEmbeddings::new(vec!["A".into()], 2, vec![0.]).is_err());
        assert!(GeneEmbeddings::new(vec!["A".into()], 1, vec![f32::NAN]).is_err());
    }

    #[test]
    fn synthetic_embeddings_carry_structure() {
        let cfg =
            SynthConfig { n_genes: 300, n_perts: 6, n_cell_types: 2, de_genes_per_pert: 30, ..SynthConfig::default() };
        let ds = SynthDataset::new(cfg).unwrap();
        let e = synthetic_gene_embeddings(&ds, 32, 1).unwrap();
        assert_eq!((e.len(), e.dim()), (300, 32));
        assert_eq!(e, synthetic_gene_embeddings(&ds, 32, 1).unwrap());
        // Genes moved by the same perturbation are more similar than random pairs, on average.
        let cos = |a: &[f32], b: &[f32]| {
            let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            d / (a.iter().map(|x| x * x).sum::<f32>().sqrt() * b.iter().map(|x| x * x).sum::<f32>().sqrt())
        };
        let genes: Vec<usize> = ds.true_effects(0, 0).iter().map(|&(g, _)| g).collect();
        let row = |g: usize| e.get(&ds.gene_names[g]).unwrap().to_vec();
        let mut same = 0.0;
        let mut n = 0.0;
        for i in 0..genes.len() {
            for j in i + 1..genes.len() {
                same += cos(&row(genes[i]), &row(genes[j])).abs();
                n += 1.0;
            }
        }
        let mut rand = 0.0;
        for g in 0..100 {
            rand += cos(&row(g), &row(g + 150)).abs();
        }
        assert!(same / n > rand / 100.0, "co-regulated {} vs random {}", same / n, rand / 100.0);
    }
}
