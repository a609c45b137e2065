//! Candle models (ST, SE), baselines, losses and the training loop.
pub mod baselines;
pub mod checkpoint;
pub mod error;
pub mod llama;
pub mod loss;
pub mod mlp;
pub mod optim;
pub mod predict;
pub mod st;
pub mod train;

pub use error::{ModelError, Result};
