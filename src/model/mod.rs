//! Candle models (ST, SE), baselines, losses and the training loop.
pub mod se;
