//! A trainable Llama-style encoder over a set of cells, mirroring the HF `LlamaModel` that Arc uses as ST's
//! `transformer_backbone` (`state:src/state/tx/models/utils.py`, `get_transformer_backbone`).
//!
//! What differs from candle-transformers' `llama.rs` (an inference model):
//! - no token embedding: ST passes `inputs_embeds`. Arc's checkpoint still holds a zeroed, frozen
//!   `embed_tokens` [32000, H]; we neither create nor need it (loading ignores unknown keys);
//! - no positional signal: Arc replaces rotary by `NoRoPE` (cos = 1, sin = 0), i.e. the identity, so there is no
//!   rotation at all and the encoder is permutation-equivariant over the cells of a set;
//! - attention is bidirectional by default (Arc's `bidirectional_attention: true`, PR #227/#228); `causal` is a
//!   switch because released checkpoints may have been trained causally (design/state.md §1.3);
//! - only differentiable ops: `ops::softmax(x, D::Minus1)` and a hand-written RMSNorm, because candle-nn 0.11.1's
//!   fused `softmax_last_dim` / `rms_norm` have no backward (design/deps.md §5); no KV cache.

use candle_core::{DType, Device, Module, Tensor, D};
use candle_nn::{ops, VarBuilder};

use super::precision::{linear_no_bias, Linear, Precision};
use super::{ModelError, Result};

/// Backbone hyper-parameters (the subset of HF `LlamaConfig` that Arc's presets set).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub head_dim: usize,
    /// HF `LlamaConfig.rms_norm_eps` default; Arc's `layer_norm_eps` key is ignored by Llama.
    #[serde(default = "LlamaConfig::default_eps")]
    pub rms_norm_eps: f64,
    /// Causal (lower-triangular) attention instead of Arc's bidirectional default.
    #[serde(default)]
    pub causal: bool,
    /// Dtype of the projections and attention matmuls (norms and softmax stay f32).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl LlamaConfig {
    fn default_eps() -> f64 {
        1e-6
    }

    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0 || self.num_attention_heads == 0 || self.head_dim == 0 {
            return Err(ModelError::Config("llama: hidden_size, heads and head_dim must be > 0".into()));
        }
        if self.num_hidden_layers == 0 || self.intermediate_size == 0 {
            return Err(ModelError::Config("llama: layers and intermediate_size must be > 0".into()));
        }
        Ok(())
    }

    /// Trainable parameters (no `embed_tokens`), without allocating.
    pub fn n_params(&self) -> usize {
        let h = self.hidden_size;
        let a = self.num_attention_heads * self.head_dim;
        let attn = 3 * h * a + a * h;
        let mlp = 3 * h * self.intermediate_size;
        self.num_hidden_layers * (attn + mlp + 2 * h) + h
    }
}

/// RMSNorm `x · rsqrt(mean(x²) + ε) · w`, computed in f32, differentiable (HF `LlamaRMSNorm`).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        Ok(Self { weight, eps: eps as f32 })
    }
}

impl Module for RmsNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        ops::rms_norm_slow(xs, &self.weight, self.eps)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    n_heads: usize,
    head_dim: usize,
    precision: Precision,
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let h = cfg.hidden_size;
        let a = cfg.num_attention_heads * cfg.head_dim;
        Ok(Self {
            q_proj: linear_no_bias(h, a, vb.pp("q_proj"), cfg.precision)?,
            k_proj: linear_no_bias(h, a, vb.pp("k_proj"), cfg.precision)?,
            v_proj: linear_no_bias(h, a, vb.pp("v_proj"), cfg.precision)?,
            o_proj: linear_no_bias(a, h, vb.pp("o_proj"), cfg.precision)?,
            n_heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim,
            precision: cfg.precision,
        })
    }

    /// `xs`: [B, S, H]; `mask`: additive [S, S] (0 or −∞) or None.
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let (b, s, _) = xs.dims3()?;
        let split = |t: Tensor| -> candle_core::Result<Tensor> {
            t.reshape((b, s, self.n_heads, self.head_dim))?.transpose(1, 2)?.contiguous()
        };
        let q = split(self.q_proj.forward(xs)?)?;
        let k = split(self.k_proj.forward(xs)?)?;
        let v = split(self.v_proj.forward(xs)?)?;
        // NoRoPE: cos = 1, sin = 0 ⇒ q and k are used as they are.
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        // Scores and probabilities in f32 (the mask and softmax need the range); the two matmuls in `precision`.
        let mut scores = (self.precision.matmul(&q, &k.t()?.contiguous()?)? * scale)?;
        if let Some(m) = mask {
            scores = scores.broadcast_add(m)?;
        }
        let probs = ops::softmax(&scores, D::Minus1)?;
        let out = self.precision.matmul(&probs, &v)?.transpose(1, 2)?.reshape((b, s, self.n_heads * self.head_dim))?;
        self.o_proj.forward(&out)
    }
}

/// SwiGLU MLP: `down(silu(gate(x)) · up(x))`.
#[derive(Debug, Clone)]
struct SwiGlu {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl SwiGlu {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: linear_no_bias(h, i, vb.pp("gate_proj"), cfg.precision)?,
            up_proj: linear_no_bias(h, i, vb.pp("up_proj"), cfg.precision)?,
            down_proj: linear_no_bias(i, h, vb.pp("down_proj"), cfg.precision)?,
        })
    }
}

impl Module for SwiGlu {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let g = self.gate_proj.forward(xs)?.silu()?;
        self.down_proj.forward(&(g * self.up_proj.forward(xs)?)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: SwiGlu,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        Ok(Self {
            input_layernorm: RmsNorm::load(vb.pp("input_layernorm"), cfg.hidden_size, cfg.rms_norm_eps)?,
            self_attn: Attention::load(vb.pp("self_attn"), cfg)?,
            post_attention_layernorm: RmsNorm::load(
                vb.pp("post_attention_layernorm"),
                cfg.hidden_size,
                cfg.rms_norm_eps,
            )?,
            mlp: SwiGlu::load(vb.pp("mlp"), cfg)?,
        })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> candle_core::Result<Tensor> {
        let h = (xs + self.self_attn.forward(&self.input_layernorm.forward(xs)?, mask)?)?;
        &h + self.mlp.forward(&self.post_attention_layernorm.forward(&h)?)?
    }
}

/// The backbone: pre-norm blocks then a final RMSNorm (HF's `last_hidden_state` includes it).
#[derive(Debug, Clone)]
pub struct LlamaEncoder {
    layers: Vec<Block>,
    norm: RmsNorm,
    causal: bool,
}

impl LlamaEncoder {
    /// `vb` points at `transformer_backbone`; names are `layers.N.…` and `norm`.
    pub fn load(vb: VarBuilder, cfg: &LlamaConfig) -> Result<Self> {
        cfg.validate()?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(vb.pp(format!("layers.{i}")), cfg))
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::load(vb.pp("norm"), cfg.hidden_size, cfg.rms_norm_eps)?;
        Ok(Self { layers, norm, causal: cfg.causal })
    }

    /// `xs`: [B, S, H] → [B, S, H].
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (_, s, _) = xs.dims3()?;
        let mask = if self.causal { Some(causal_mask(s, xs.dtype(), xs.device())?) } else { None };
        let mut h = xs.clone();
        for layer in &self.layers {
            h = layer.forward(&h, mask.as_ref())?;
        }
        Ok(self.norm.forward(&h)?)
    }
}

/// Additive [S, S] mask: 0 on and below the diagonal, −∞ above.
fn causal_mask(s: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..s).flat_map(|i| (0..s).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
    Ok(Tensor::from_vec(v, (s, s), device)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    fn cfg(causal: bool) -> LlamaConfig {
        LlamaConfig {
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            head_dim: 8,
            rms_norm_eps: 1e-6,
            causal,
            precision: Precision::F32,
        }
    }

    #[test]
    fn names_and_param_count() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let c = cfg(false);
        let _enc = LlamaEncoder::load(vb.pp("transformer_backbone"), &c).expect("load");
        let data = vm.data().lock().expect("lock");
        for n in [
            "transformer_backbone.layers.1.self_attn.q_proj.weight",
            "transformer_backbone.layers.1.self_attn.o_proj.weight",
            "transformer_backbone.layers.0.mlp.gate_proj.weight",
            "transformer_backbone.layers.0.mlp.down_proj.weight",
            "transformer_backbone.layers.0.input_layernorm.weight",
            "transformer_backbone.layers.0.post_attention_layernorm.weight",
            "transformer_backbone.norm.weight",
        ] {
            assert!(data.contains_key(n), "{n}");
        }
        assert_eq!(data.len(), 2 * 9 + 1);
        let n: usize = data.values().map(|v| v.elem_count()).sum();
        assert_eq!(n, c.n_params());
    }

    #[test]
    fn causal_mask_shape() {
        let m = causal_mask(3, DType::F32, &Device::Cpu).expect("m");
        let v = m.to_vec2::<f32>().expect("v");
        assert_eq!(v[0][1], f32::NEG_INFINITY);
        assert_eq!(v[2][0], 0.0);
        assert_eq!(v[1][1], 0.0);
    }

    #[test]
    fn rmsnorm_matches_formula() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let n = RmsNorm::load(vb, 2, 1e-6).expect("n");
        let x = Tensor::new(&[[3f32, 4.0]], &Device::Cpu).expect("x");
        let y = n.forward(&x).expect("y").to_vec2::<f32>().expect("v");
        let r = ((9.0 + 16.0) / 2.0f64 + 1e-6).sqrt();
        assert!((y[0][0] as f64 - 3.0 / r).abs() < 1e-6);
        assert!((y[0][1] as f64 - 4.0 / r).abs() < 1e-6);
    }
}
