//! Errors of the model layer.

/// Everything that can go wrong while building, running, training or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An error from candle (shape mismatch, missing tensor in a checkpoint, device failure, ...).
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),
    /// A configuration that cannot describe a valid model.
    #[error("invalid model config: {0}")]
    Config(String),
    /// Inputs that do not fit the model or the function (wrong dims, empty groups, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// File-system errors while saving or loading checkpoints.
    #[error("io error on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A JSON config or state file that could not be (de)serialised.
    #[error("json error on {path}: {source}")]
    Json {
        path: std::path::PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// A checkpoint whose content does not match what is being restored.
    #[error("checkpoint mismatch: {0}")]
    Checkpoint(String),
    /// An error of the SE model (its config, gene table, sentences or embedding output).
    #[error(transparent)]
    Se(#[from] super::se::SeError),
}

/// Result alias of the model layer.
pub type Result<T> = std::result::Result<T, ModelError>;
