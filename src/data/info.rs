//! `vcell info`: a quick summary of an `.h5ad` file. Reads attributes, shapes, the obs columns and a few names;
//! never X's data (nnz comes from the stored-values dataset's size), so it is fast on 300k-cell files.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::data::anndata::{Column, StoredDtype};
use crate::data::h5ad::{H5adError, H5adReader, Result, XInfo};

/// How many index names to show.
const NAMES_HEAD: usize = 5;

#[derive(Debug, Clone, serde::Serialize)]
pub struct H5adSummary {
    pub path: PathBuf,
    pub file_bytes: u64,
    pub n_obs: usize,
    pub n_vars: usize,
    /// `None` when the file has no X.
    pub x: Option<XInfo>,
    /// nnz / (n_obs × n_vars), sparse X only.
    pub density: Option<f64>,
    pub obs_columns: Vec<ColumnSummary>,
    pub var_columns: Vec<String>,
    pub obs_names_head: Vec<String>,
    pub var_names_head: Vec<String>,
    pub obsm: Vec<EntrySummary>,
    pub layers: Vec<EntrySummary>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ColumnSummary {
    pub name: String,
    /// The anndata encoding-type (`categorical`, `string-array`, `array`, `nullable-integer`, ...).
    pub encoding: String,
    /// What it decodes to: `categorical`, `string`, `int`, `float` or `bool`.
    pub kind: String,
    /// Distinct labels (categories for a categorical, distinct values for strings and bools).
    pub n_categories: Option<usize>,
    /// Missing values (categorical code -1, NaN).
    pub n_missing: usize,
    /// The most frequent labels, most frequent first (ties in category order).
    pub top: Vec<(String, usize)>,
    /// Smallest and largest value of a numeric column (NaN ignored).
    pub range: Option<(f64, f64)>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct EntrySummary {
    pub name: String,
    pub encoding: String,
    pub shape: Vec<usize>,
    pub dtype: Option<StoredDtype>,
    pub nnz: Option<u64>,
}

/// Summarises `path`, listing the `top_n` most frequent labels of each categorical/string obs column.
pub fn summarize(path: &Path, top_n: usize) -> Result<H5adSummary> {
    let r = H5adReader::open(path)?;
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let x = match r.x_info() {
        Ok(info) => Some(info),
        Err(H5adError::Missing { element, .. }) if element == "/X" => None,
        Err(e) => return Err(e),
    };
    let density = x.and_then(|x| {
        let cells = x.shape.0 as f64 * x.shape.1 as f64;
        x.nnz
            .map(|nnz| if cells > 0.0 { nnz as f64 / cells } else { 0.0 })
    });
    let mut obs_columns = Vec::new();
    for name in r.obs_column_names()? {
        let encoding = r.obs_column_encoding(&name)?;
        let col = r.obs_column(&name)?;
        obs_columns.push(summarize_column(name, encoding, &col, top_n));
    }
    let obsm = r
        .obsm_keys()?
        .into_iter()
        .map(|name| {
            let (encoding, shape, dtype) = r.obsm_entry_info(&name)?;
            Ok(EntrySummary {
                name,
                encoding,
                shape,
                dtype,
                nnz: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let layers = r
        .layer_keys()?
        .into_iter()
        .map(|name| {
            let info = r.layer_info(&name)?;
            Ok(EntrySummary {
                name,
                encoding: info.encoding.encoding_type().to_owned(),
                shape: vec![info.shape.0, info.shape.1],
                dtype: Some(info.dtype),
                nnz: info.nnz,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(H5adSummary {
        path: path.to_path_buf(),
        file_bytes,
        n_obs: r.n_obs()?,
        n_vars: r.n_vars()?,
        x,
        density,
        obs_columns,
        var_columns: r.var_column_names()?,
        obs_names_head: r.obs_names_head(NAMES_HEAD)?,
        var_names_head: r.var_names_head(NAMES_HEAD)?,
        obsm,
        layers,
    })
}

fn summarize_column(name: String, encoding: String, col: &Column, top_n: usize) -> ColumnSummary {
    let (kind, labels, n_missing, range) = match col {
        Column::Categorical(c) => {
            let counts: Vec<(String, usize)> =
                c.categories.iter().cloned().zip(c.counts()).collect();
            let missing = c.codes.iter().filter(|&&k| k < 0).count();
            ("categorical", Some(counts), missing, None)
        }
        Column::Str(v) => ("string", Some(count_labels(v.iter().cloned())), 0, None),
        Column::Bool(v) => {
            let labels = v
                .iter()
                .map(|&b| if b { "True" } else { "False" }.to_owned());
            ("bool", Some(count_labels(labels)), 0, None)
        }
        Column::Int(v) => {
            let range = v.iter().min().zip(v.iter().max());
            ("int", None, 0, range.map(|(a, b)| (*a as f64, *b as f64)))
        }
        Column::Float(v) => {
            let finite = v.iter().copied().filter(|x| !x.is_nan());
            let range = finite.fold(None, |acc: Option<(f64, f64)>, x| match acc {
                None => Some((x, x)),
                Some((a, b)) => Some((a.min(x), b.max(x))),
            });
            let missing = v.iter().filter(|x| x.is_nan()).count();
            ("float", None, missing, range)
        }
    };
    let n_categories = labels.as_ref().map(Vec::len);
    let top = labels
        .map(|mut l| {
            // stable sort: ties keep category (or first-appearance) order
            l.sort_by_key(|b| std::cmp::Reverse(b.1));
            l.truncate(top_n);
            l
        })
        .unwrap_or_default();
    ColumnSummary {
        name,
        encoding,
        kind: kind.to_owned(),
        n_categories,
        n_missing,
        top,
        range,
    }
}

/// Label counts in order of first appearance.
fn count_labels(labels: impl Iterator<Item = String>) -> Vec<(String, usize)> {
    let mut order: Vec<(String, usize)> = Vec::new();
    let mut slot: HashMap<String, usize> = HashMap::new();
    for l in labels {
        match slot.get(&l) {
            Some(&i) => order[i].1 += 1,
            None => {
                slot.insert(l.clone(), order.len());
                order.push((l, 1));
            }
        }
    }
    order
}

fn dtype_name(d: StoredDtype) -> String {
    match d {
        StoredDtype::F16 => "float16".to_owned(),
        StoredDtype::F32 => "float32".to_owned(),
        StoredDtype::F64 => "float64".to_owned(),
        StoredDtype::Int(bytes, true) => format!("int{}", bytes as u32 * 8),
        StoredDtype::Int(bytes, false) => format!("uint{}", bytes as u32 * 8),
        StoredDtype::Bool => "bool".to_owned(),
    }
}

fn shape_str(shape: &[usize]) -> String {
    shape
        .iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" × ")
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn names_line(head: &[String], total: usize) -> String {
    let mut s = head.join(", ");
    if total > head.len() {
        s.push_str(&format!(", … ({total} in all)"));
    }
    if s.is_empty() {
        s.push_str("(none)");
    }
    s
}

impl fmt::Display for H5adSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "file     {} ({})",
            self.path.display(),
            human_bytes(self.file_bytes)
        )?;
        writeln!(f, "cells    {}", self.n_obs)?;
        writeln!(f, "genes    {}", self.n_vars)?;
        match &self.x {
            None => writeln!(f, "X        (none)")?,
            Some(x) => {
                write!(
                    f,
                    "X        {} {}, {}",
                    x.encoding.encoding_type(),
                    dtype_name(x.dtype),
                    shape_str(&[x.shape.0, x.shape.1])
                )?;
                if let Some(nnz) = x.nnz {
                    write!(f, ", nnz {nnz}")?;
                }
                if let Some(d) = self.density {
                    write!(f, " (density {:.2}%)", d * 100.0)?;
                }
                writeln!(f)?;
            }
        }
        writeln!(f, "obs      {} column(s)", self.obs_columns.len())?;
        for c in &self.obs_columns {
            write!(f, "  {:<20} {:<12}", c.name, c.kind)?;
            if let Some(n) = c.n_categories {
                write!(f, " {n} distinct")?;
            }
            if let Some((a, b)) = c.range {
                write!(f, " range {a} .. {b}")?;
            }
            if c.n_missing > 0 {
                write!(f, ", {} missing", c.n_missing)?;
            }
            writeln!(f)?;
            if !c.top.is_empty() {
                let top: Vec<String> = c.top.iter().map(|(l, n)| format!("{l} {n}")).collect();
                writeln!(f, "  {:<20} top: {}", "", top.join(", "))?;
            }
        }
        writeln!(
            f,
            "obs names {}",
            names_line(&self.obs_names_head, self.n_obs)
        )?;
        writeln!(
            f,
            "var names {}",
            names_line(&self.var_names_head, self.n_vars)
        )?;
        if !self.var_columns.is_empty() {
            writeln!(f, "var cols {}", self.var_columns.join(", "))?;
        }
        for (title, entries) in [("obsm", &self.obsm), ("layers", &self.layers)] {
            if entries.is_empty() {
                writeln!(f, "{title:<8} (none)")?;
            }
            for e in entries.iter() {
                write!(
                    f,
                    "{title:<8} {} {} {}",
                    e.name,
                    e.encoding,
                    shape_str(&e.shape)
                )?;
                if let Some(d) = e.dtype {
                    write!(f, " {}", dtype_name(d))?;
                }
                if let Some(nnz) = e.nnz {
                    write!(f, ", nnz {nnz}")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}
