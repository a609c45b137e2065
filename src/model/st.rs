//! ST, the State Transition model (`StateTransitionPerturbationModel`, `state:src/state/tx/models/state_transition.py`).
//!
//! Forward over sets of S cells (design/state.md §1.3):
//! 1. `p = pert_encoder(pert)` (build_mlp), `b = basal_encoder(ctrl)` (build_mlp or a plain Linear),
//!    `x = p + b` (+ `batch_encoder(batch)` when enabled);
//! 2. `h = transformer_backbone(x)` (bidirectional Llama, no positions, final norm included);
//! 3. head with `predict_residual`: output_space `all` → `final_down_then_up(project_out(h) + ctrl)`, otherwise
//!    `project_out(h + b)` (residual in hidden space); without it → `project_out(h)` (no final_down_then_up);
//! 4. ReLU when `relu_output` (Arc: embed_key X_hvg/null, or no gene decoder).
//!
//! Names mirror Arc's state_dict (`design/state-st-state-dict.txt`), so a checkpoint converted to safetensors
//! loads through `VarBuilder::from_tensors` (the unused `transformer_backbone.embed_tokens` is ignored).

use candle_core::{DType, ModuleT, Tensor};
use candle_nn::{embedding, Embedding, Module, VarBuilder};

use super::llama::{LlamaConfig, LlamaEncoder};
use super::loss::LossKind;
use super::mlp::{DropoutRng, GeneDecoder, GeneDecoderConfig, Mlp, SeededDropout};
use super::precision::{linear, Linear, Precision};
use super::{ModelError, Result};

/// Where ST's output lives (`data.kwargs.output_space`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputSpace {
    /// HVG space (or an embedding decoded to HVGs): residual added in hidden space.
    Gene,
    /// All genes: residual added in output space, then `final_down_then_up` (D → D/8 → D).
    All,
    /// Embedding only (later Arc versions): same head as `Gene`.
    Embedding,
}

/// ST hyper-parameters. Field names follow Arc's yaml where one exists.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StConfig {
    /// Width of a basal (control) cell: genes (HVGs / all) or embedding dim (2058 for SE).
    pub input_dim: usize,
    /// Width of the prediction; equals `input_dim` in every Arc setup (required for output_space all).
    pub output_dim: usize,
    /// Perturbation one-hot size (or feature size, e.g. 5120 for ESM2 features).
    pub pert_dim: usize,
    pub hidden_dim: usize,
    /// Transformer layers.
    pub n_layers: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    /// Llama intermediate (SwiGLU) size.
    pub ffn_dim: usize,
    /// Cells per set in training (a data-side setting; forward accepts any set length).
    pub cell_set_len: usize,
    pub n_encoder_layers: usize,
    pub n_decoder_layers: usize,
    /// Dropout of the encoder/decoder MLPs (Arc: 0.1; the backbone has none).
    pub dropout: f32,
    pub predict_residual: bool,
    /// basal_encoder = build_mlp (true, Arc's code default) or a single Linear (false, state_sm).
    pub use_basal_projection: bool,
    /// Adds `batch_encoder = Embedding(n_batches, hidden)` to the tokens (Arc's `batch_encoder: true`).
    #[serde(default)]
    pub n_batches: Option<usize>,
    /// ReLU on the output (expression outputs are log-normalised, hence ≥ 0).
    pub relu_output: bool,
    pub output_space: OutputSpace,
    /// `LatentToGeneDecoder` (for training in an embedding space); None = `gene_decoder_bool: false`.
    #[serde(default)]
    pub gene_decoder: Option<GeneDecoderConfig>,
    /// Causal attention (transformers ≥ 4.53 without PR #227 silently trained this way); default bidirectional.
    #[serde(default)]
    pub causal: bool,
    /// vcell's head (not Arc's): `ctrl + project_out(h)`, a plain predict-the-delta residual in expression space
    /// with no `final_down_then_up`. Off by default (Arc's head). On, the model starts as "no effect" and only
    /// has to learn the perturbation's shift, which trains much faster on CPU-sized models.
    #[serde(default)]
    pub delta_head: bool,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Dtype of every matmul: `bf16` = mixed precision (f32 weights, norms, softmax and losses). Not part of the
    /// architecture: weights are the same either way. Omitted from `config.json` when f32.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

fn default_eps() -> f64 {
    1e-6
}

impl StConfig {
    /// A small model for tests and demos (runs in milliseconds on CPU).
    pub fn tiny(input_dim: usize, pert_dim: usize) -> Self {
        Self {
            input_dim,
            output_dim: input_dim,
            pert_dim,
            hidden_dim: 32,
            n_layers: 2,
            n_heads: 4,
            head_dim: 8,
            ffn_dim: 64,
            cell_set_len: 16,
            n_encoder_layers: 4,
            n_decoder_layers: 4,
            dropout: 0.1,
            predict_residual: true,
            use_basal_projection: true,
            n_batches: None,
            relu_output: true,
            output_space: OutputSpace::Gene,
            gene_decoder: None,
            causal: false,
            delta_head: false,
            rms_norm_eps: 1e-6,
            precision: Precision::F32,
        }
    }

    /// Arc's `model=state_sm` (the VCC Colab preset): hidden 672, 4 layers, 8×84 heads, MLP 2688, sets of 128,
    /// 4-layer encoders/decoder, Linear basal encoder, no gene decoder, output_space all.
    pub fn state_sm(input_dim: usize, pert_dim: usize) -> Self {
        Self {
            input_dim,
            output_dim: input_dim,
            pert_dim,
            hidden_dim: 672,
            n_layers: 4,
            n_heads: 8,
            head_dim: 84,
            ffn_dim: 2688,
            cell_set_len: 128,
            n_encoder_layers: 4,
            n_decoder_layers: 4,
            dropout: 0.1,
            predict_residual: true,
            use_basal_projection: false,
            n_batches: None,
            relu_output: true,
            output_space: OutputSpace::All,
            gene_decoder: None,
            causal: false,
            delta_head: false,
            rms_norm_eps: 1e-6,
            precision: Precision::F32,
        }
    }

    /// Arc 0.11.1's default `model=state`: hidden 768, 8 layers, 12×64 heads, MLP 3072, sets of 512, 1-layer
    /// encoders/decoder, MLP basal encoder (code default), gene decoder to `input_dim` genes, output_space all.
    pub fn state(input_dim: usize, pert_dim: usize) -> Self {
        Self {
            input_dim,
            output_dim: input_dim,
            pert_dim,
            hidden_dim: 768,
            n_layers: 8,
            n_heads: 12,
            head_dim: 64,
            ffn_dim: 3072,
            cell_set_len: 512,
            n_encoder_layers: 1,
            n_decoder_layers: 1,
            dropout: 0.1,
            predict_residual: true,
            use_basal_projection: true,
            n_batches: None,
            relu_output: true,
            output_space: OutputSpace::All,
            gene_decoder: Some(GeneDecoderConfig::arc(input_dim)),
            causal: false,
            delta_head: false,
            rms_norm_eps: 1e-6,
            precision: Precision::F32,
        }
    }

    pub fn llama_config(&self) -> LlamaConfig {
        LlamaConfig {
            hidden_size: self.hidden_dim,
            intermediate_size: self.ffn_dim,
            num_hidden_layers: self.n_layers,
            num_attention_heads: self.n_heads,
            head_dim: self.head_dim,
            rms_norm_eps: self.rms_norm_eps,
            causal: self.causal,
            precision: self.precision,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.input_dim == 0 || self.output_dim == 0 || self.pert_dim == 0 || self.hidden_dim == 0 {
            return Err(ModelError::Config("ST dims must be > 0".into()));
        }
        if self.n_encoder_layers == 0 || self.n_decoder_layers == 0 {
            return Err(ModelError::Config("ST encoder/decoder MLPs need >= 1 layer".into()));
        }
        if self.output_space == OutputSpace::All {
            if self.output_dim != self.input_dim {
                return Err(ModelError::Config(format!(
                    "output_space all adds the basal cell to the output: output_dim {} != input_dim {}",
                    self.output_dim, self.input_dim
                )));
            }
            if self.output_dim < 8 {
                return Err(ModelError::Config(
                    "output_space all needs output_dim >= 8 (final_down_then_up uses D/8)".into(),
                ));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ModelError::Config(format!("dropout {} not in [0, 1)", self.dropout)));
        }
        self.llama_config().validate()
    }

    /// Trainable parameters by module, computed from the config without allocating (Arc's frozen
    /// `embed_tokens` is excluded). Order: pert_encoder, basal_encoder, batch_encoder, backbone, project_out,
    /// final_down_then_up, gene_decoder.
    pub fn n_params_by_module(&self) -> Vec<(&'static str, usize)> {
        let h = self.hidden_dim;
        let basal = if self.use_basal_projection {
            Mlp::n_params(self.input_dim, h, h, self.n_encoder_layers)
        } else {
            self.input_dim * h + h
        };
        let d = self.output_dim;
        let fdu = if self.output_space == OutputSpace::All && !self.delta_head {
            d * (d / 8) + d / 8 + (d / 8) * d + d
        } else {
            0
        };
        vec![
            ("pert_encoder", Mlp::n_params(self.pert_dim, h, h, self.n_encoder_layers)),
            ("basal_encoder", basal),
            ("batch_encoder", self.n_batches.map_or(0, |n| n * h)),
            ("transformer_backbone", self.llama_config().n_params()),
            ("project_out", Mlp::n_params(h, self.output_dim, h, self.n_decoder_layers)),
            ("final_down_then_up", fdu),
            ("gene_decoder", self.gene_decoder.as_ref().map_or(0, |g| g.n_params(self.output_dim))),
        ]
    }

    /// Total trainable parameters.
    pub fn n_params(&self) -> usize {
        self.n_params_by_module().iter().map(|(_, n)| n).sum()
    }
}

#[derive(Debug, Clone)]
enum BasalEncoder {
    Linear(Linear),
    Mlp(Mlp),
}

impl BasalEncoder {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match self {
            BasalEncoder::Linear(l) => l.forward(xs),
            BasalEncoder::Mlp(m) => m.forward_t(xs, train),
        }
    }
}

/// `final_down_then_up`: Linear(D, D/8) → GELU → Linear(D/8, D) (Sequential indices 0, 2).
#[derive(Debug, Clone)]
struct DownThenUp {
    down: Linear,
    up: Linear,
}

impl DownThenUp {
    fn load(vb: VarBuilder, d: usize, p: Precision) -> Result<Self> {
        Ok(Self { down: linear(d, d / 8, vb.pp("0"), p)?, up: linear(d / 8, d, vb.pp("2"), p)? })
    }
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.up.forward(&self.down.forward(xs)?.gelu_erf()?)
    }
}

/// The ST model.
#[derive(Debug, Clone)]
pub struct StModel {
    cfg: StConfig,
    pert_encoder: Mlp,
    basal_encoder: BasalEncoder,
    batch_encoder: Option<Embedding>,
    transformer_backbone: LlamaEncoder,
    project_out: Mlp,
    final_down_then_up: Option<DownThenUp>,
    gene_decoder: Option<GeneDecoder>,
    dropout_rng: DropoutRng,
}

/// Losses of one training step (Arc logs `train_loss` and `decoder_loss`; total = main + weight · decoder).
#[derive(Debug, Clone)]
pub struct StLoss {
    pub total: Tensor,
    pub main: Tensor,
    pub decoder: Option<Tensor>,
}

impl StModel {
    /// Builds the model under `vb` (root of Arc's state_dict names).
    pub fn load(vb: VarBuilder, cfg: &StConfig) -> Result<Self> {
        cfg.validate()?;
        let h = cfg.hidden_dim;
        let dropout_rng = DropoutRng::new(0);
        let drop = SeededDropout::new(cfg.dropout, &dropout_rng);
        let p = cfg.precision;
        let pert_encoder = Mlp::load(vb.pp("pert_encoder"), cfg.pert_dim, h, h, cfg.n_encoder_layers, drop.clone(), p)?;
        let basal_encoder = if cfg.use_basal_projection {
            BasalEncoder::Mlp(Mlp::load(
                vb.pp("basal_encoder"),
                cfg.input_dim,
                h,
                h,
                cfg.n_encoder_layers,
                drop.clone(),
                p,
            )?)
        } else {
            BasalEncoder::Linear(linear(cfg.input_dim, h, vb.pp("basal_encoder"), p)?)
        };
        let batch_encoder = match cfg.n_batches {
            Some(n) if n > 0 => Some(embedding(n, h, vb.pp("batch_encoder"))?),
            Some(_) => return Err(ModelError::Config("n_batches must be > 0".into())),
            None => None,
        };
        let transformer_backbone = LlamaEncoder::load(vb.pp("transformer_backbone"), &cfg.llama_config())?;
        let project_out = Mlp::load(vb.pp("project_out"), h, cfg.output_dim, h, cfg.n_decoder_layers, drop, p)?;
        let final_down_then_up = if cfg.output_space == OutputSpace::All && !cfg.delta_head {
            Some(DownThenUp::load(vb.pp("final_down_then_up"), cfg.output_dim, p)?)
        } else {
            None
        };
        let gene_decoder = match &cfg.gene_decoder {
            Some(g) => Some(GeneDecoder::load(vb.pp("gene_decoder"), cfg.output_dim, g, &dropout_rng, p)?),
            None => None,
        };
        Ok(Self {
            cfg: cfg.clone(),
            pert_encoder,
            basal_encoder,
            batch_encoder,
            transformer_backbone,
            project_out,
            final_down_then_up,
            gene_decoder,
            dropout_rng,
        })
    }

    /// Resets the dropout RNG; call it before each training step with a value derived from (seed, step) so a
    /// run — and a resumed run — draws the same masks.
    pub fn reseed_dropout(&self, seed: u64) {
        self.dropout_rng.reseed(seed);
    }

    pub fn config(&self) -> &StConfig {
        &self.cfg
    }

    pub fn has_gene_decoder(&self) -> bool {
        self.gene_decoder.is_some()
    }

    fn check_input(&self, name: &str, t: &Tensor, b: usize, s: usize, d: usize) -> Result<()> {
        if t.dims() != [b, s, d] {
            return Err(ModelError::Input(format!("{name}: expected shape [{b}, {s}, {d}], got {:?}", t.dims())));
        }
        Ok(())
    }

    /// `ctrl`: [B, S, input_dim] basal cells, `pert`: [B, S, pert_dim] (one-hot or features),
    /// `batch`: [B, S] u32 batch indices (required iff `n_batches` is set). Returns [B, S, output_dim].
    pub fn forward(&self, ctrl: &Tensor, pert: &Tensor, batch: Option<&Tensor>, train: bool) -> Result<Tensor> {
        let (b, s, _) = ctrl.dims3()?;
        self.check_input("ctrl", ctrl, b, s, self.cfg.input_dim)?;
        self.check_input("pert", pert, b, s, self.cfg.pert_dim)?;
        let p = self.pert_encoder.forward_t(pert, train)?;
        let basal = self.basal_encoder.forward_t(ctrl, train)?;
        let mut x = (&p + &basal)?;
        match (&self.batch_encoder, batch) {
            (Some(emb), Some(idx)) => {
                if idx.dims() != [b, s] {
                    return Err(ModelError::Input(format!("batch: expected shape [{b}, {s}], got {:?}", idx.dims())));
                }
                x = (x + emb.forward(&idx.to_dtype(DType::U32)?)?)?;
            }
            (Some(_), None) => {
                return Err(ModelError::Input("model has a batch encoder: batch indices are required".into()))
            }
            (None, Some(_)) => {
                return Err(ModelError::Input(
                    "batch indices given but the model has no batch encoder (n_batches unset)".into(),
                ))
            }
            (None, None) => {}
        }
        let h = self.transformer_backbone.forward(&x)?;
        // Head as in state_transition.py `forward`.
        // Without predict_residual Arc skips final_down_then_up even in output_space all (it exists but is unused).
        if self.cfg.delta_head {
            let out = (self.project_out.forward_t(&h, train)? + ctrl)?;
            return Ok(if self.cfg.relu_output { out.relu()? } else { out });
        }
        let out = match (&self.final_down_then_up, self.cfg.predict_residual) {
            (Some(fdu), true) => fdu.forward(&(self.project_out.forward_t(&h, train)? + ctrl)?)?,
            (None, true) => self.project_out.forward_t(&(h + basal)?, train)?,
            (_, false) => self.project_out.forward_t(&h, train)?,
        };
        Ok(if self.cfg.relu_output { out.relu()? } else { out })
    }

    /// Gene decoder on latent predictions [B, S, output_dim] → [B, S, gene_dim].
    pub fn decode_genes(&self, latent: &Tensor, train: bool) -> Result<Tensor> {
        match &self.gene_decoder {
            Some(d) => Ok(d.forward_t(latent, train)?),
            None => Err(ModelError::Config("model has no gene decoder".into())),
        }
    }

    /// One step's loss as Arc's `training_step`: the main distribution loss per set (mean over sets), plus
    /// `decoder_weight` × the same loss between decoded predictions and `gene_target` when both exist.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        ctrl: &Tensor,
        pert: &Tensor,
        batch: Option<&Tensor>,
        target: &Tensor,
        gene_target: Option<&Tensor>,
        kind: &LossKind,
        decoder_weight: f64,
        train: bool,
    ) -> Result<StLoss> {
        let pred = self.forward(ctrl, pert, batch, train)?;
        let main = kind.loss(&pred, target)?;
        let decoder = match (&self.gene_decoder, gene_target) {
            (Some(_), Some(gt)) => {
                let dec = self.decode_genes(&pred, train)?;
                Some(kind.loss(&dec, gt)?)
            }
            _ => None,
        };
        let total = match &decoder {
            Some(d) => (&main + (d * decoder_weight)?)?,
            None => main.clone(),
        };
        Ok(StLoss { total, main, decoder })
    }
}

/// Re-initialises every variable of `varmap` from `seed`, deterministically (candle's CPU RNG cannot be
/// seeded, and Arc trains with `train_seed 42`). Mirrors PyTorch's defaults by name and shape:
/// - backbone projections (`transformer_backbone.*_proj.weight`): N(0, 0.02), HF Llama's `initializer_range`;
/// - other Linear weights [out, in] and their biases: U(±1/√in) (`nn.Linear`'s kaiming-uniform(a=√5));
/// - 1-D `weight`s (RMSNorm/LayerNorm): 1, and the biases next to them: 0;
/// - `batch_encoder.weight` (`nn.Embedding`): N(0, 1).
///
/// Variables are visited in name order, so the result depends only on the seed and the names/shapes.
pub fn init_seeded(varmap: &candle_nn::VarMap, seed: u64) -> Result<()> {
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};
    let data = varmap.data().lock().map_err(|_| ModelError::Input("VarMap lock poisoned".into()))?;
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for name in names {
        let Some(var) = data.get(name) else { continue };
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let sibling_weight =
            name.strip_suffix(".bias").and_then(|p| data.get(&format!("{p}.weight"))).map(|w| w.dims().to_vec());
        let normal = |std: f64, rng: &mut rand_chacha::ChaCha8Rng| -> Result<Vec<f32>> {
            let d = Normal::new(0.0, std).map_err(|e| ModelError::Config(e.to_string()))?;
            Ok((0..n).map(|_| d.sample(rng) as f32).collect())
        };
        let uniform = |fan_in: usize, rng: &mut rand_chacha::ChaCha8Rng| -> Vec<f32> {
            let b = 1.0 / (fan_in.max(1) as f64).sqrt();
            (0..n).map(|_| rng.random_range(-b..=b) as f32).collect()
        };
        let values: Vec<f32> = if name.ends_with(".weight") && dims.len() == 1 {
            vec![1.0; n]
        } else if name == "batch_encoder.weight" {
            normal(1.0, &mut rng)?
        } else if name.starts_with("transformer_backbone.") && dims.len() == 2 {
            normal(0.02, &mut rng)?
        } else if name.ends_with(".weight") && dims.len() == 2 {
            uniform(dims[1], &mut rng)
        } else {
            match sibling_weight.as_deref() {
                Some([_]) => vec![0.0; n],
                Some([_, fan_in]) => uniform(*fan_in, &mut rng),
                _ => normal(0.02, &mut rng)?,
            }
        };
        let t = Tensor::from_vec(values, dims.as_slice(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::optim::{AdamW, OptimConfig};
    use candle_core::Device;
    use candle_nn::VarMap;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
    }

    fn onehot(b: usize, s: usize, p: usize, which: &[usize]) -> Tensor {
        let mut v = vec![0f32; b * s * p];
        for bi in 0..b {
            for si in 0..s {
                v[(bi * s + si) * p + which[bi] % p] = 1.0;
            }
        }
        Tensor::from_vec(v, (b, s, p), &Device::Cpu).expect("onehot")
    }

    fn build(cfg: &StConfig) -> (VarMap, StModel) {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = StModel::load(vb, cfg).expect("load");
        (vm, m)
    }

    fn small(output_space: OutputSpace) -> StConfig {
        let mut c = StConfig::tiny(16, 5);
        c.hidden_dim = 16;
        c.n_heads = 2;
        c.head_dim = 8;
        c.ffn_dim = 24;
        c.output_space = output_space;
        c
    }

    /// Asserts every VarMap variable gets a finite, non-zero gradient from `loss`.
    fn assert_full_grad(vm: &VarMap, loss: &Tensor) -> usize {
        let grads = loss.backward().expect("backward");
        let data = vm.data().lock().expect("lock");
        let mut missing = Vec::new();
        for (name, var) in data.iter() {
            let ok = grads.get(var.as_tensor()).is_some_and(|g| {
                let a = g.abs().and_then(|a| a.sum_all()).and_then(|s| s.to_scalar::<f32>()).expect("grad sum");
                a.is_finite() && a > 0.0
            });
            if !ok {
                missing.push(name.clone());
            }
        }
        assert!(missing.is_empty(), "no/zero gradient for {missing:?}");
        data.len()
    }

    #[test]
    fn output_shapes_all_spaces() {
        for os in [OutputSpace::Gene, OutputSpace::All, OutputSpace::Embedding] {
            let (_vm, m) = build(&small(os));
            let y = m.forward(&randn(&[2, 3, 16], 1), &onehot(2, 3, 5, &[0, 1]), None, false).expect("fwd");
            assert_eq!(y.dims(), &[2, 3, 16]);
        }
    }

    #[test]
    fn param_count_matches_varmap() {
        let mut c = small(OutputSpace::All);
        c.n_batches = Some(3);
        c.gene_decoder = Some(GeneDecoderConfig { gene_dim: 10, hidden_dims: vec![12, 8], dropout: 0.1 });
        let (vm, _m) = build(&c);
        let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, c.n_params());
    }

    /// Arc 0.11.1's measured numbers (design/state-cpu-reference.md "Parameters", pert_dim 41, 2000 genes):
    /// total minus the frozen `embed_tokens`.
    #[test]
    fn preset_param_counts_match_arc() {
        let sm = StConfig::state_sm(2000, 41);
        assert_eq!(sm.n_params(), 56_846_106 - 32_000 * 672);
        assert_eq!(sm.n_params(), 35_342_106);
        let st = StConfig::state(2000, 41);
        assert_eq!(st.n_params(), 84_274_346);
        let by: std::collections::HashMap<_, _> = st.n_params_by_module().into_iter().collect();
        assert_eq!(by["gene_decoder"], 4_654_544);
        assert_eq!(by["project_out"], 1_538_000);
        assert_eq!(by["basal_encoder"], 1_536_768);
        assert_eq!(by["final_down_then_up"], 1_002_250);
        assert_eq!(by["pert_encoder"], 32_256);
        assert_eq!(by["transformer_backbone"], 100_086_528 - 32_000 * 768);
        let mut gene = StConfig::state(2000, 41);
        gene.output_space = OutputSpace::Gene;
        assert_eq!(gene.n_params() + 32_000 * 768, 107_848_096);
    }

    #[test]
    fn every_var_gets_gradient() {
        // gene space, no decoder
        let c = small(OutputSpace::Gene);
        let (vm, m) = build(&c);
        let (ctrl, pert, tgt) = (
            randn(&[2, 4, 16], 2).abs().expect("a"),
            onehot(2, 4, 5, &[1, 3]),
            randn(&[2, 4, 16], 3).abs().expect("a"),
        );
        let l = m.loss(&ctrl, &pert, None, &tgt, None, &LossKind::Energy, 1.0, true).expect("loss");
        let n1 = assert_full_grad(&vm, &l.total);
        eprintln!("gradient coverage, gene space: {n1}/{n1} variables");

        // all space, gene decoder, batch embedding
        let mut c = small(OutputSpace::All);
        c.n_batches = Some(3);
        c.gene_decoder = Some(GeneDecoderConfig { gene_dim: 12, hidden_dims: vec![16, 16, 8], dropout: 0.1 });
        let (vm, m) = build(&c);
        let batch = Tensor::new(&[[0u32, 1, 2, 0], [2, 2, 1, 0]], &Device::Cpu).expect("b");
        let gt = randn(&[2, 4, 12], 4).abs().expect("a");
        let l = m.loss(&ctrl, &pert, Some(&batch), &tgt, Some(&gt), &LossKind::Energy, 1.0, true).expect("loss");
        assert!(l.decoder.is_some());
        let n2 = assert_full_grad(&vm, &l.total);
        eprintln!("gradient coverage, all space + gene decoder + batch embedding: {n2}/{n2} variables");
        assert!(n2 > n1, "{n2} vars with decoder/batch vs {n1}");
    }

    fn permute_rows(t: &Tensor, perm: &[u32]) -> Tensor {
        let idx = Tensor::new(perm, &Device::Cpu).expect("idx");
        t.index_select(&idx, 1).expect("perm")
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff")
    }

    #[test]
    fn permutation_equivariant_unless_causal() {
        let perm = [3u32, 0, 4, 1, 2];
        let ctrl = randn(&[2, 5, 16], 7);
        let pert = onehot(2, 5, 5, &[2, 4]);
        for causal in [false, true] {
            let mut c = small(OutputSpace::Gene);
            c.causal = causal;
            c.relu_output = false;
            let (_vm, m) = build(&c);
            let y = m.forward(&ctrl, &pert, None, false).expect("y");
            let y_perm = m.forward(&permute_rows(&ctrl, &perm), &permute_rows(&pert, &perm), None, false).expect("yp");
            let d = max_abs_diff(&permute_rows(&y, &perm), &y_perm);
            if causal {
                assert!(d > 1e-3, "causal model should not be equivariant (diff {d})");
            } else {
                assert!(d < 1e-5, "bidirectional model not equivariant (diff {d})");
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (_vm, m) = build(&small(OutputSpace::Gene));
        let r = m.forward(&randn(&[2, 3, 15], 1), &onehot(2, 3, 5, &[0, 1]), None, false);
        assert!(matches!(r, Err(ModelError::Input(_))));
        let b = Tensor::new(&[[0u32, 1, 2]], &Device::Cpu).expect("b");
        let r = m.forward(&randn(&[1, 3, 16], 1), &onehot(1, 3, 5, &[0]), Some(&b), false);
        assert!(matches!(r, Err(ModelError::Input(_))));
        let mut c = small(OutputSpace::All);
        c.output_dim = 12;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        assert!(matches!(StModel::load(vb, &c), Err(ModelError::Config(_))));
    }

    /// A tiny model learns a synthetic perturbation task: each perturbation shifts a different block of genes.
    ///
    /// Settings, and why: 1-layer encoders/decoder (Arc's `model=state` preset) — with the 4-layer MLPs of
    /// `tiny()`/`state_sm` and PyTorch's default init the deep path trains far slower (loss ~6.5 → ~1.9 in
    /// 100 steps); no output ReLU — with 16 genes and low cell-to-cell spread, an output gene that starts
    /// negative for every cell gets no gradient ever again (Arc's ReLU head has the same trap), which stalls
    /// some seeds at ~1.3. Warm-up + cosine decay because energy gradients do not shrink near the optimum.
    /// A tiny 1-layer config without dropout, and a learnable task on 4 sets × 8 cells × 16 genes: control
    /// ~ 1 ± 0.3, perturbation k one-hot, target = control + 2 on genes [4k, 4k+4).
    fn shift_task() -> (StConfig, Tensor, Tensor, Tensor) {
        let (b, s, g, p) = (4usize, 8usize, 16usize, 4usize);
        let mut c = StConfig::tiny(g, p);
        c.dropout = 0.0;
        c.relu_output = false;
        c.n_encoder_layers = 1;
        c.n_decoder_layers = 1;
        let ctrl = (randn(&[b, s, g], 11) * 0.3).and_then(|t| t + 1.0).expect("ctrl");
        let which = [0usize, 1, 2, 3];
        let pert = onehot(b, s, p, &which);
        let mut shift = vec![0f32; b * s * g];
        for bi in 0..b {
            for si in 0..s {
                for gi in 0..4 {
                    shift[(bi * s + si) * g + 4 * which[bi] + gi] = 2.0;
                }
            }
        }
        let tgt = (&ctrl + Tensor::from_vec(shift, (b, s, g), &Device::Cpu).expect("s")).expect("tgt");
        (c, ctrl, pert, tgt)
    }

    #[test]
    fn tiny_model_overfits() {
        let (c, ctrl, pert, tgt) = shift_task();
        let (vm, m) = build(&c);
        init_seeded(&vm, 42).expect("init");
        let mut opt = AdamW::new(
            &vm,
            OptimConfig {
                lr: 1e-2,
                schedule: crate::model::optim::LrSchedule::WarmupCosine {
                    warmup_steps: 10,
                    total_steps: 100,
                    min_lr_ratio: 0.01,
                },
                ..OptimConfig::default()
            },
        )
        .expect("opt");
        let mut first = None;
        let mut last = 0f32;
        for _ in 0..100 {
            let l = m.loss(&ctrl, &pert, None, &tgt, None, &LossKind::Energy, 1.0, true).expect("loss");
            let v = l.total.to_scalar::<f32>().expect("v");
            first.get_or_insert(v);
            last = v;
            opt.backward_step(&l.total).expect("step");
        }
        let first = first.expect("first");
        eprintln!("tiny overfit: energy loss {first:.4} -> {last:.4}");
        assert!(last * 5.0 < first, "loss did not drop 5x: {first} -> {last}");
    }

    fn flat(t: &Tensor) -> Vec<f32> {
        t.flatten_all().and_then(|t| t.to_vec1()).expect("flat")
    }

    /// Mixed precision against f32 on the same weights, through every kind of layer (MLP encoders, backbone,
    /// output_space all head, gene decoder, batch embedding). bf16 keeps 8 significant bits (relative rounding
    /// ≤ 2⁻⁹ ≈ 2e-3 per cast); a dozen matmuls in a row compound that to ~1e-2 at worst, so losses and the full
    /// gradient must agree to 2e-2 relative — and must not be bit-identical, which would mean bf16 never ran.
    #[test]
    fn bf16_loss_and_gradient_match_f32() {
        let mut c = small(OutputSpace::All);
        c.dropout = 0.0;
        c.n_batches = Some(2);
        c.gene_decoder = Some(GeneDecoderConfig { gene_dim: 6, hidden_dims: vec![8], dropout: 0.0 });
        let vm = VarMap::new();
        let m32 = StModel::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &c).expect("f32");
        let mut c16 = c.clone();
        c16.precision = Precision::Bf16;
        // Same VarMap: the bf16 model reads the very same f32 variables.
        let m16 = StModel::load(VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu), &c16).expect("bf16");
        init_seeded(&vm, 5).expect("init");
        let ctrl = randn(&[2, 6, 16], 31).abs().expect("a");
        let pert = onehot(2, 6, 5, &[1, 4]);
        let tgt = randn(&[2, 6, 16], 32).abs().expect("a");
        let gt = randn(&[2, 6, 6], 33).abs().expect("a");
        let batch = Tensor::new(&[[0u32, 1, 1, 0, 0, 1], [1, 0, 0, 1, 1, 0]], &Device::Cpu).expect("b");
        for kind in [LossKind::Energy, LossKind::Mse] {
            let run =
                |m: &StModel| m.loss(&ctrl, &pert, Some(&batch), &tgt, Some(&gt), &kind, 1.0, true).expect("loss");
            let (l32, l16) = (run(&m32), run(&m16));
            assert_eq!(l16.total.dtype(), DType::F32);
            let (a, b) = (l32.total.to_scalar::<f32>().expect("a"), l16.total.to_scalar::<f32>().expect("b"));
            let rel = ((a - b) / a).abs();
            eprintln!("{kind:?}: f32 loss {a:.6}, bf16 loss {b:.6}, relative difference {rel:.2e}");
            assert!(a.is_finite() && a > 0.0);
            assert!(rel < 2e-2, "{kind:?}: bf16 loss {b} vs f32 {a}");
            assert_ne!(a, b, "{kind:?}: bit-identical losses, the bf16 path did not run");
            let (g32, g16) = (l32.total.backward().expect("bw"), l16.total.backward().expect("bw"));
            let (mut dot, mut n32, mut n16, mut vars) = (0f64, 0f64, 0f64, 0);
            for var in vm.all_vars() {
                assert_eq!(var.dtype(), DType::F32);
                let a = g32.get(var.as_tensor()).expect("f32 grad");
                let b = g16.get(var.as_tensor()).expect("bf16 grad reaches the f32 variable");
                assert_eq!(b.dtype(), DType::F32);
                for (x, y) in flat(a).into_iter().zip(flat(b)) {
                    dot += f64::from(x) * f64::from(y);
                    n32 += f64::from(x).powi(2);
                    n16 += f64::from(y).powi(2);
                }
                vars += 1;
            }
            let cos = dot / (n32.sqrt() * n16.sqrt());
            let norm_rel = (n16.sqrt() / n32.sqrt() - 1.0).abs();
            eprintln!(
                "{kind:?}: gradient over {vars} variables: cosine {cos:.6}, norm relative difference {norm_rel:.2e}"
            );
            assert!(cos > 0.999 && norm_rel < 2e-2, "{kind:?}: bf16 gradient off: cosine {cos}, norm {norm_rel}");
        }
    }

    /// bf16 training from the same start as f32 (the `tiny_model_overfits` task, 40 steps): AdamW updates the f32
    /// weights, which stay f32, and the loss falls as in f32 (final losses within 25%: trajectories drift apart
    /// by rounding, but a broken bf16 path — wrong casts, lost gradients — would not train at all).
    #[test]
    fn bf16_training_step_updates_f32_weights() {
        let (c, ctrl, pert, tgt) = shift_task();
        let mut last = Vec::new();
        for precision in [Precision::F32, Precision::Bf16] {
            let mut c = c.clone();
            c.precision = precision;
            let (vm, m) = build(&c);
            init_seeded(&vm, 42).expect("init");
            let before: Vec<Vec<f32>> = vm.all_vars().iter().map(|v| flat(v.as_tensor())).collect();
            let mut opt = AdamW::new(&vm, OptimConfig { lr: 1e-2, ..OptimConfig::default() }).expect("opt");
            let t0 = std::time::Instant::now();
            let mut losses = Vec::new();
            for _ in 0..40 {
                let l = m.loss(&ctrl, &pert, None, &tgt, None, &LossKind::Energy, 1.0, true).expect("loss");
                losses.push(l.total.to_scalar::<f32>().expect("v"));
                opt.backward_step(&l.total).expect("step");
            }
            let per_step = t0.elapsed() / 40;
            let vars = vm.all_vars();
            assert!(vars.iter().all(|v| v.dtype() == DType::F32), "{precision}: weights left f32");
            let changed = vars.iter().zip(&before).filter(|(v, b)| flat(v.as_tensor()) != **b).count();
            assert_eq!(changed, vars.len(), "{precision}: not every weight was updated");
            let (first, end) = (losses[0], losses[losses.len() - 1]);
            eprintln!(
                "{precision}: energy loss {first:.4} -> {:.4} (step 1) -> {end:.4} (step 40), {per_step:.2?}/step",
                losses[1]
            );
            assert!(losses[1] < first, "{precision}: first step did not lower the loss");
            assert!(end * 3.0 < first, "{precision}: loss did not fall 3x: {first} -> {end}");
            last.push((first, end));
        }
        let ((f32_first, f32_end), (bf_first, bf_end)) = (last[0], last[1]);
        assert!(((bf_first - f32_first) / f32_first).abs() < 2e-2, "start {bf_first} vs {f32_first}");
        assert!(((bf_end - f32_end) / f32_end).abs() < 0.25, "end {bf_end} vs {f32_end}");
    }

    /// Autograd through the whole model (f64) agrees with central finite differences on sampled weights.
    #[test]
    fn model_gradient_matches_finite_differences() {
        let mut c = small(OutputSpace::All);
        c.dropout = 0.0;
        c.n_batches = Some(2);
        c.gene_decoder = Some(GeneDecoderConfig { gene_dim: 6, hidden_dims: vec![8], dropout: 0.0 });
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let m = StModel::load(vb, &c).expect("load");
        init_seeded(&vm, 3).expect("init");
        let f64t = |t: Tensor| t.to_dtype(DType::F64).expect("f64");
        let ctrl = f64t(randn(&[2, 3, 16], 21).abs().expect("a"));
        let pert = f64t(onehot(2, 3, 5, &[1, 4]));
        let tgt = f64t(randn(&[2, 3, 16], 22).abs().expect("a"));
        let gt = f64t(randn(&[2, 3, 6], 23).abs().expect("a"));
        let batch = Tensor::new(&[[0u32, 1, 1], [1, 0, 0]], &Device::Cpu).expect("b");
        for kind in [LossKind::Energy, LossKind::Mse] {
            let eval = || -> f64 {
                m.loss(&ctrl, &pert, Some(&batch), &tgt, Some(&gt), &kind, 1.0, false)
                    .and_then(|l| Ok(l.total.to_scalar::<f64>()?))
                    .expect("loss")
            };
            let l = m.loss(&ctrl, &pert, Some(&batch), &tgt, Some(&gt), &kind, 1.0, false).expect("loss");
            let grads = l.total.backward().expect("bw");
            let data = vm.data().lock().expect("lock");
            let mut names: Vec<_> = data.keys().cloned().collect();
            names.sort();
            let mut checked = 0;
            for name in names {
                let var = &data[&name];
                let g: Vec<f64> =
                    grads.get(var.as_tensor()).expect("grad").flatten_all().and_then(|t| t.to_vec1()).expect("g");
                let base: Vec<f64> = var.flatten_all().and_then(|t| t.to_vec1()).expect("w");
                for &i in &[0usize, base.len() / 2, base.len() - 1] {
                    let h = 1e-5;
                    let mut w = base.clone();
                    w[i] += h;
                    var.set(&Tensor::from_vec(w.clone(), var.shape(), &Device::Cpu).expect("t")).expect("set");
                    let lp = eval();
                    w[i] -= 2.0 * h;
                    var.set(&Tensor::from_vec(w, var.shape(), &Device::Cpu).expect("t")).expect("set");
                    let lm = eval();
                    var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).expect("t")).expect("set");
                    let fd = (lp - lm) / (2.0 * h);
                    assert!(
                        (fd - g[i]).abs() < 1e-6 + 1e-4 * fd.abs().max(g[i].abs()),
                        "{kind:?} {name}[{i}]: fd {fd} vs autograd {}",
                        g[i]
                    );
                    checked += 1;
                }
            }
            assert!(checked > 30);
        }
    }

    /// Timing probe for the `state_sm` preset (35.3 M parameters): one forward + backward + AdamW step on one set
    /// of 128 cells × 2000 genes. Run with `cargo test --lib state_sm_one_step -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn state_sm_one_step() {
        let c = StConfig::state_sm(2000, 41);
        let (vm, m) = build(&c);
        let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, c.n_params());
        let ctrl = randn(&[1, 128, 2000], 1).abs().expect("a");
        let tgt = randn(&[1, 128, 2000], 2).abs().expect("a");
        let pert = onehot(1, 128, 41, &[3]);
        let mut opt = AdamW::new(&vm, OptimConfig::default()).expect("opt");
        for i in 0..3 {
            let t0 = std::time::Instant::now();
            let l = m.loss(&ctrl, &pert, None, &tgt, None, &LossKind::Energy, 1.0, true).expect("loss");
            let t1 = t0.elapsed();
            let grads = l.total.backward().expect("bw");
            let t2 = t0.elapsed();
            let st = opt.step(&grads).expect("step");
            eprintln!(
                "state_sm step {i}: loss {:.4}, grad norm {:.3}, forward {:.2?}, +backward {:.2?}, +AdamW {:.2?}",
                l.total.to_scalar::<f32>().expect("v"),
                st.grad_norm,
                t1,
                t2 - t1,
                t0.elapsed() - t2
            );
        }
    }
}
