//! Candle models (ST, SE), baselines, losses and the training loop.
//!
//! - [`st`]: the State Transition model ([`st::StConfig`], [`st::StModel`], [`st::init_seeded`]), with state_dict
//!   names mirroring Arc's (`design/state-st-state-dict.txt`);
//! - [`llama`]: the bidirectional (optionally causal) Llama encoder used as ST's backbone;
//! - [`mlp`]: Arc's `build_mlp`, the `LatentToGeneDecoder` and seeded dropout;
//! - [`loss`]: energy distance (geomloss "energy"), multi-scale Gaussian MMD, MSE;
//! - [`precision`]: `precision = "bf16"` mixed precision (bf16 matmuls, f32 master weights) and its Linear;
//! - [`optim`]: AdamW with LR schedule, global grad-norm clipping and exact save/restore;
//! - [`baselines`]: control-mean and perturbation-mean predictions from group means;
//! - [`se`]: the State Embedding model (cell embeddings from gene embeddings, masked-gene objective);
//! - [`train`]: the training loop shared by ST and SE ([`train::run_loop`]) and ST's trainer; [`se_train`]: SE's
//!   trainer; [`predict`]: held-out predictions with ST and the baselines;
//! - [`checkpoint`]: run directories (config + weights + optimiser state), loading converted Arc state_dicts.
//!
//! Only differentiable candle ops are used in training paths: candle-nn 0.11.1's fused `rms_norm`, `layer_norm`,
//! `softmax_last_dim` and `rope` have no backward (design/deps.md §5).
pub mod baselines;
pub mod checkpoint;
pub mod device_check;
pub mod error;
pub mod llama;
pub mod loss;
pub mod mlp;
pub mod optim;
pub mod precision;
pub mod predict;
pub mod se;
pub mod se_train;
pub mod st;
pub mod train;

pub use error::{ModelError, Result};
