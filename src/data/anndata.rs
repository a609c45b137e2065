//! In-memory AnnData types shared by the `.h5ad` reader/writer, the synthetic generator and the layers above.
//!
//! `X` rows are cells, columns are genes. Sparse matrices are CSR with `u32` column indices (genes < 2^32) and
//! `usize` row pointers; values are `f32` (the dtype every VCC file uses; float64/integer files are converted on read).

use ndarray::Array2;

/// A CSR matrix of f32 with u32 column indices, sorted within each row.
pub type CsrMatrix = sprs::CsMatI<f32, u32, usize>;

/// How a matrix is (or will be) stored on disk. Numbers downstream can depend on it: cell-eval's column means
/// follow a different summation recipe for dense and sparse `X` (see `design/cell-eval.md` §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum MatrixEncoding {
    Csr,
    Csc,
    Dense,
}

impl MatrixEncoding {
    /// The anndata `encoding-type` attribute value.
    pub fn encoding_type(self) -> &'static str {
        match self {
            MatrixEncoding::Csr => "csr_matrix",
            MatrixEncoding::Csc => "csc_matrix",
            MatrixEncoding::Dense => "array",
        }
    }
}

/// The element type of a stored matrix, as found on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum StoredDtype {
    F16,
    F32,
    F64,
    Int(u8 /* bytes */, bool /* signed */),
    Bool,
}

/// An expression matrix held in memory.
#[derive(Debug, Clone, PartialEq)]
pub enum XMatrix {
    Sparse(CsrMatrix),
    Dense(Array2<f32>),
}

impl XMatrix {
    pub fn shape(&self) -> (usize, usize) {
        match self {
            XMatrix::Sparse(m) => (m.rows(), m.cols()),
            XMatrix::Dense(a) => (a.nrows(), a.ncols()),
        }
    }
}

/// One column of an `obs` or `var` table.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// pandas Categorical: `codes[i]` indexes `categories` (stored order, not sorted); -1 is missing.
    Categorical(Categorical),
    /// A plain string array (anndata `string-array`).
    Str(Vec<String>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Categorical(c) => c.codes.len(),
            Column::Str(v) => v.len(),
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of row `i` as a label (`None` for a missing categorical value).
    pub fn label(&self, i: usize) -> Option<String> {
        match self {
            Column::Categorical(c) => c.label(i).map(str::to_owned),
            Column::Str(v) => v.get(i).cloned(),
            Column::Int(v) => v.get(i).map(|x| x.to_string()),
            Column::Float(v) => v.get(i).map(|x| x.to_string()),
            Column::Bool(v) => v.get(i).map(|x| if *x { "True" } else { "False" }.to_owned()),
        }
    }

    /// This column as a categorical, converting strings (categories in order of first appearance, as pandas
    /// does for `astype("category")` after sorting is *not* applied here).
    pub fn to_categorical(&self) -> Categorical {
        match self {
            Column::Categorical(c) => c.clone(),
            other => {
                let labels: Vec<Option<String>> = (0..other.len()).map(|i| other.label(i)).collect();
                Categorical::from_labels(&labels)
            }
        }
    }
}

/// A pandas-style categorical column.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Categorical {
    pub codes: Vec<i32>,
    pub categories: Vec<String>,
    pub ordered: bool,
}

impl Categorical {
    /// Build from labels; categories are sorted by code point, as pandas does for `pd.Categorical(strings)`.
    pub fn from_labels(labels: &[Option<String>]) -> Self {
        let mut categories: Vec<String> = labels.iter().flatten().cloned().collect();
        categories.sort();
        categories.dedup();
        let lookup: std::collections::HashMap<&str, i32> =
            categories.iter().enumerate().map(|(i, c)| (c.as_str(), i as i32)).collect();
        let codes = labels.iter().map(|l| l.as_deref().and_then(|s| lookup.get(s).copied()).unwrap_or(-1)).collect();
        Categorical { codes, categories, ordered: false }
    }

    /// The label of row `i`, `None` if missing (code -1) or out of range.
    pub fn label(&self, i: usize) -> Option<&str> {
        let code = *self.codes.get(i)?;
        if code < 0 {
            return None;
        }
        self.categories.get(code as usize).map(String::as_str)
    }

    /// Number of rows per category, in category order.
    pub fn counts(&self) -> Vec<usize> {
        let mut counts = vec![0usize; self.categories.len()];
        for &c in &self.codes {
            if c >= 0 && (c as usize) < counts.len() {
                counts[c as usize] += 1;
            }
        }
        counts
    }
}

/// An `obs` or `var` table: an index of row names and named columns in `column-order`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataFrame {
    /// Name of the index dataset (anndata's `_index` attribute; usually `"_index"`).
    pub index_name: String,
    pub index: Vec<String>,
    pub columns: Vec<(String, Column)>,
}

impl DataFrame {
    /// A table with only an index.
    pub fn with_index(index: Vec<String>) -> Self {
        DataFrame { index_name: "_index".to_owned(), index, columns: Vec::new() }
    }

    pub fn n_rows(&self) -> usize {
        self.index.len()
    }

    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Add or replace a column, keeping column order.
    pub fn set_column(&mut self, name: &str, column: Column) {
        if let Some(slot) = self.columns.iter_mut().find(|(n, _)| n == name) {
            slot.1 = column;
        } else {
            self.columns.push((name.to_owned(), column));
        }
    }
}

/// A whole AnnData object in memory (small and medium files; big ones are streamed, see `h5ad`).
#[derive(Debug, Clone, PartialEq)]
pub struct AnnData {
    pub x: XMatrix,
    pub obs: DataFrame,
    pub var: DataFrame,
    /// `obsm` entries (e.g. embeddings), each `n_obs × d`, in name order.
    pub obsm: Vec<(String, Array2<f32>)>,
    /// `layers` entries, each `n_obs × n_vars`.
    pub layers: Vec<(String, XMatrix)>,
}

impl AnnData {
    pub fn n_obs(&self) -> usize {
        self.obs.n_rows()
    }

    pub fn n_vars(&self) -> usize {
        self.var.n_rows()
    }
}
