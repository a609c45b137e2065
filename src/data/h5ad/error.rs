//! Errors of the `.h5ad` reader and writer. Every variant names the file and the element inside it
//! (an HDF5 path such as `/obs/target_gene/codes`), so a message alone says where to look.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum H5adError {
    /// The file could not be opened as HDF5: missing, not HDF5 at all, truncated or corrupt.
    #[error("{}: cannot open {element}: {reason}", file.display())]
    Open {
        file: PathBuf,
        element: String,
        reason: String,
    },
    /// A required element is absent.
    #[error("{}: {element}: missing", file.display())]
    Missing { file: PathBuf, element: String },
    /// The element's `encoding-type` attribute names an encoding this reader does not know.
    #[error("{}: {element}: unsupported encoding-type '{encoding}'", file.display())]
    UnsupportedEncoding {
        file: PathBuf,
        element: String,
        encoding: String,
    },
    /// The element's HDF5 data type cannot be read here (e.g. a compound type where numbers are expected).
    #[error("{}: {element}: unsupported data type {dtype}", file.display())]
    UnsupportedDtype {
        file: PathBuf,
        element: String,
        dtype: String,
    },
    /// The element is readable but its content breaks the AnnData layout (bad indptr, codes out of range, ...).
    #[error("{}: {element}: {reason}", file.display())]
    Invalid {
        file: PathBuf,
        element: String,
        reason: String,
    },
    /// A valid element that this operation cannot serve (e.g. row ranges of a CSC matrix).
    #[error("{}: {element}: {reason}", file.display())]
    Unsupported {
        file: PathBuf,
        element: String,
        reason: String,
    },
    /// `obs_column(name)` for a column the file does not have.
    #[error("{}: /obs: no column '{name}' (available: {})", file.display(), available.join(", "))]
    ColumnNotFound {
        file: PathBuf,
        name: String,
        available: Vec<String>,
    },
    /// A named entry of `obsm` or `layers` that does not exist.
    #[error("{}: {element}: no entry '{key}' (available: {})", file.display(), available.join(", "))]
    KeyNotFound {
        file: PathBuf,
        element: String,
        key: String,
        available: Vec<String>,
    },
    /// An error reported by the HDF5 library while touching `element`.
    #[error("{}: {element}: HDF5 error: {source}", file.display())]
    Hdf5 {
        file: PathBuf,
        element: String,
        #[source]
        source: hdf5::Error,
    },
    /// A file-system error (open, rename, remove).
    #[error("{}: {element}: {source}", file.display())]
    Io {
        file: PathBuf,
        element: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, H5adError>;

impl H5adError {
    /// The file the error is about.
    pub fn file(&self) -> &Path {
        match self {
            H5adError::Open { file, .. }
            | H5adError::Missing { file, .. }
            | H5adError::UnsupportedEncoding { file, .. }
            | H5adError::UnsupportedDtype { file, .. }
            | H5adError::Invalid { file, .. }
            | H5adError::Unsupported { file, .. }
            | H5adError::ColumnNotFound { file, .. }
            | H5adError::KeyNotFound { file, .. }
            | H5adError::Hdf5 { file, .. }
            | H5adError::Io { file, .. } => file,
        }
    }
}

/// Builds errors for one file; keeps call sites short.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub file: &'a Path,
}

impl<'a> Ctx<'a> {
    pub fn new(file: &'a Path) -> Self {
        Ctx { file }
    }

    pub fn invalid(self, element: &str, reason: impl Into<String>) -> H5adError {
        H5adError::Invalid {
            file: self.file.to_path_buf(),
            element: element.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn unsupported(self, element: &str, reason: impl Into<String>) -> H5adError {
        H5adError::Unsupported {
            file: self.file.to_path_buf(),
            element: element.to_owned(),
            reason: reason.into(),
        }
    }

    pub fn missing(self, element: &str) -> H5adError {
        H5adError::Missing {
            file: self.file.to_path_buf(),
            element: element.to_owned(),
        }
    }

    pub fn encoding(self, element: &str, encoding: &str) -> H5adError {
        H5adError::UnsupportedEncoding {
            file: self.file.to_path_buf(),
            element: element.to_owned(),
            encoding: encoding.to_owned(),
        }
    }

    pub fn dtype(self, element: &str, dtype: impl std::fmt::Debug) -> H5adError {
        H5adError::UnsupportedDtype {
            file: self.file.to_path_buf(),
            element: element.to_owned(),
            dtype: format!("{dtype:?}"),
        }
    }

    pub fn hdf5(self, element: &str, source: hdf5::Error) -> H5adError {
        H5adError::Hdf5 {
            file: self.file.to_path_buf(),
            element: element.to_owned(),
            source,
        }
    }

    pub fn io(self, element: &str, source: std::io::Error) -> H5adError {
        H5adError::Io {
            file: self.file.to_path_buf(),
            element: element.to_owned(),
            source,
        }
    }
}

/// `hdf5_result.at(ctx, "/X/data")?` attaches the file and element to an HDF5 error.
pub(crate) trait At<T> {
    fn at(self, ctx: Ctx<'_>, element: &str) -> Result<T>;
}

impl<T> At<T> for std::result::Result<T, hdf5::Error> {
    fn at(self, ctx: Ctx<'_>, element: &str) -> Result<T> {
        self.map_err(|e| ctx.hdf5(element, e))
    }
}
