//! Arc's `build_mlp` (`state:src/state/tx/models/utils.py`) and the gene decoder
//! (`LatentToGeneDecoder`, `state:src/state/tx/models/base.py`).
//!
//! `build_mlp(in, out, hidden, n_layers)` is an `nn.Sequential`:
//! `Linear(in, hidden) → act → Dropout → [Linear(hidden, hidden) → act → Dropout]… → Linear(hidden, out)`,
//! or a single `Linear(in, out)` when `n_layers == 1`. The Linears therefore sit at indices 0, 3, 6, 9, … and the
//! state_dict names are `<prefix>.0.weight`, `<prefix>.3.weight`, …; we mirror them with `vb.pp(3 * i)`.

use std::sync::{Arc, Mutex};

use candle_core::{ModuleT, Tensor};
use candle_nn::{ops, Activation, Module, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::precision::{linear, Linear, Precision};
use super::{ModelError, Result};

/// The RNG behind every dropout mask of a model, shared by its layers.
///
/// candle's own dropout draws from an unseedable thread RNG (`rand::rng()`), so runs could not be repeated nor
/// resumed exactly. The training loop calls [`DropoutRng::reseed`] with e.g. `hash(seed, step)` before each step:
/// the masks then depend only on (seed, step), and a resumed run needs no saved RNG state.
#[derive(Debug, Clone)]
pub struct DropoutRng(Arc<Mutex<ChaCha8Rng>>);

impl DropoutRng {
    pub fn new(seed: u64) -> Self {
        Self(Arc::new(Mutex::new(ChaCha8Rng::seed_from_u64(seed))))
    }

    pub fn reseed(&self, seed: u64) {
        if let Ok(mut r) = self.0.lock() {
            *r = ChaCha8Rng::seed_from_u64(seed);
        }
    }

    /// Inverted-dropout mask: 0 with probability `p`, else `1/(1−p)`, shaped and typed like `like`.
    fn mask(&self, like: &Tensor, p: f32) -> candle_core::Result<Tensor> {
        let n = like.elem_count();
        let keep = 1.0 / (1.0 - p);
        let v: Vec<f32> = {
            let mut r = self.0.lock().map_err(|_| candle_core::Error::Msg("dropout RNG lock poisoned".into()))?;
            (0..n).map(|_| if r.random::<f32>() < p { 0.0 } else { keep }).collect()
        };
        Tensor::from_vec(v, like.shape(), like.device())?.to_dtype(like.dtype())
    }
}

/// Inverted dropout (as `nn.Dropout`) drawing its masks from a [`DropoutRng`]; identity when not training.
#[derive(Debug, Clone)]
pub struct SeededDropout {
    p: f32,
    rng: DropoutRng,
}

impl SeededDropout {
    pub fn new(p: f32, rng: &DropoutRng) -> Self {
        Self { p, rng: rng.clone() }
    }
}

impl ModuleT for SeededDropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train || self.p <= 0.0 {
            return Ok(xs.clone());
        }
        xs.mul(&self.rng.mask(xs, self.p)?)
    }
}

/// A `build_mlp` stack: Linears at Sequential indices 0, 3, 6, … with GELU and dropout between them.
#[derive(Debug, Clone)]
pub struct Mlp {
    linears: Vec<Linear>,
    activation: Activation,
    dropout: SeededDropout,
}

impl Mlp {
    /// Loads (or, with a `VarMap`-backed builder, creates) `n_layers` Linears under `vb`.
    ///
    /// Arc passes `activation_class` = GELU (PyTorch's exact, erf-based `nn.GELU()`) for every preset.
    /// The Linears compute in `precision`; GELU and dropout in f32.
    pub fn load(
        vb: VarBuilder,
        in_dim: usize,
        out_dim: usize,
        hidden_dim: usize,
        n_layers: usize,
        dropout: SeededDropout,
        precision: Precision,
    ) -> Result<Self> {
        if n_layers == 0 {
            return Err(ModelError::Config("build_mlp needs n_layers >= 1".into()));
        }
        let mut linears = Vec::with_capacity(n_layers);
        for i in 0..n_layers {
            let d_in = if i == 0 { in_dim } else { hidden_dim };
            let d_out = if i + 1 == n_layers { out_dim } else { hidden_dim };
            linears.push(linear(d_in, d_out, vb.pp((3 * i).to_string()), precision)?);
        }
        Ok(Self { linears, activation: Activation::Gelu, dropout })
    }

    /// Number of parameters of `build_mlp(in, out, hidden, n_layers)` (weights and biases), without allocating.
    pub fn n_params(in_dim: usize, out_dim: usize, hidden_dim: usize, n_layers: usize) -> usize {
        (0..n_layers)
            .map(|i| {
                let d_in = if i == 0 { in_dim } else { hidden_dim };
                let d_out = if i + 1 == n_layers { out_dim } else { hidden_dim };
                d_in * d_out + d_out
            })
            .sum()
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let last = self.linears.len().saturating_sub(1);
        let mut h = xs.clone();
        for (i, lin) in self.linears.iter().enumerate() {
            h = lin.forward(&h)?;
            if i < last {
                h = self.activation.forward(&h)?;
                h = self.dropout.forward_t(&h, train)?;
            }
        }
        Ok(h)
    }
}

/// A LayerNorm with weight and bias written with differentiable primitives (`ops::layer_norm_slow`):
/// candle-nn 0.11.1's fused `layer_norm` has no backward (design/deps.md §5). ε defaults to PyTorch's 1e-5.
#[derive(Debug, Clone)]
pub struct DiffLayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl DiffLayerNorm {
    pub fn load(vb: VarBuilder, dim: usize, eps: f32) -> Result<Self> {
        let weight = vb.get_with_hints(dim, "weight", candle_nn::Init::Const(1.0))?;
        let bias = vb.get_with_hints(dim, "bias", candle_nn::Init::Const(0.0))?;
        Ok(Self { weight, bias, eps })
    }
}

impl Module for DiffLayerNorm {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        ops::layer_norm_slow(xs, &self.weight, &self.bias, self.eps)
    }
}

/// Configuration of Arc's `LatentToGeneDecoder` (non-residual variant, the one `_train.py` builds).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GeneDecoderConfig {
    /// Number of output genes (HVGs for output_space gene, all genes for output_space all).
    pub gene_dim: usize,
    /// Hidden layer widths; `_train.py` always uses [1024, 1024, 512].
    #[serde(default = "GeneDecoderConfig::default_hidden")]
    pub hidden_dims: Vec<usize>,
    #[serde(default = "GeneDecoderConfig::default_dropout")]
    pub dropout: f32,
}

impl GeneDecoderConfig {
    fn default_hidden() -> Vec<usize> {
        vec![1024, 1024, 512]
    }
    fn default_dropout() -> f32 {
        0.1
    }
    /// Arc's `decoder_cfg` for a given gene dimension.
    pub fn arc(gene_dim: usize) -> Self {
        Self { gene_dim, hidden_dims: Self::default_hidden(), dropout: Self::default_dropout() }
    }
    /// Parameter count for a latent input of `latent_dim`, without allocating.
    pub fn n_params(&self, latent_dim: usize) -> usize {
        let mut n = 0;
        let mut d_in = latent_dim;
        for &h in &self.hidden_dims {
            n += d_in * h + h + 2 * h; // Linear + LayerNorm
            d_in = h;
        }
        n + d_in * self.gene_dim + self.gene_dim
    }
}

/// `LatentToGeneDecoder`: `[Linear → LayerNorm → GELU → Dropout] × k → Linear → ReLU`, as
/// `gene_decoder.decoder.{0,1,4,5,8,9,12}` in the state_dict (4 Sequential slots per block).
#[derive(Debug, Clone)]
pub struct GeneDecoder {
    blocks: Vec<(Linear, DiffLayerNorm)>,
    out: Linear,
    dropout: SeededDropout,
    gene_dim: usize,
}

impl GeneDecoder {
    /// `vb` points at `gene_decoder` (the `decoder` Sequential is added here).
    /// `rng` is the model's shared dropout RNG; the rate comes from `cfg.dropout`. Linears compute in
    /// `precision`, LayerNorms in f32.
    pub fn load(
        vb: VarBuilder,
        latent_dim: usize,
        cfg: &GeneDecoderConfig,
        rng: &DropoutRng,
        precision: Precision,
    ) -> Result<Self> {
        let vb = vb.pp("decoder");
        let mut blocks = Vec::with_capacity(cfg.hidden_dims.len());
        let mut d_in = latent_dim;
        for (i, &h) in cfg.hidden_dims.iter().enumerate() {
            let lin = linear(d_in, h, vb.pp((4 * i).to_string()), precision)?;
            let ln = DiffLayerNorm::load(vb.pp((4 * i + 1).to_string()), h, 1e-5)?;
            blocks.push((lin, ln));
            d_in = h;
        }
        let out = linear(d_in, cfg.gene_dim, vb.pp((4 * cfg.hidden_dims.len()).to_string()), precision)?;
        Ok(Self { blocks, out, dropout: SeededDropout::new(cfg.dropout, rng), gene_dim: cfg.gene_dim })
    }

    pub fn gene_dim(&self) -> usize {
        self.gene_dim
    }
}

impl ModuleT for GeneDecoder {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut h = xs.clone();
        for (lin, ln) in &self.blocks {
            h = lin.forward(&h)?;
            h = ln.forward(&h)?;
            h = h.gelu_erf()?;
            h = self.dropout.forward_t(&h, train)?;
        }
        self.out.forward(&h)?.relu()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn mlp_names_and_shapes_mirror_build_mlp() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let rng = DropoutRng::new(0);
        let mlp =
            Mlp::load(vb.pp("pert_encoder"), 5, 7, 6, 4, SeededDropout::new(0.1, &rng), Precision::F32).expect("mlp");
        let data = vm.data().lock().expect("lock");
        let mut names: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.dims().to_vec())).collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                ("pert_encoder.0.bias".into(), vec![6]),
                ("pert_encoder.0.weight".into(), vec![6, 5]),
                ("pert_encoder.3.bias".into(), vec![6]),
                ("pert_encoder.3.weight".into(), vec![6, 6]),
                ("pert_encoder.6.bias".into(), vec![6]),
                ("pert_encoder.6.weight".into(), vec![6, 6]),
                ("pert_encoder.9.bias".into(), vec![7]),
                ("pert_encoder.9.weight".into(), vec![7, 6]),
            ]
        );
        drop(data);
        let x = Tensor::zeros((2, 3, 5), DType::F32, &Device::Cpu).expect("x");
        let y = mlp.forward_t(&x, true).expect("fwd");
        assert_eq!(y.dims(), &[2, 3, 7]);
        let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, Mlp::n_params(5, 7, 6, 4));
    }

    #[test]
    fn gene_decoder_names_mirror_arc() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let cfg = GeneDecoderConfig { gene_dim: 9, hidden_dims: vec![8, 8, 4], dropout: 0.1 };
        let dec = GeneDecoder::load(vb.pp("gene_decoder"), 6, &cfg, &DropoutRng::new(0), Precision::F32).expect("dec");
        let mut names: Vec<_> = vm.data().lock().expect("lock").keys().cloned().collect();
        names.sort();
        let expected: Vec<String> = [0, 1, 4, 5, 8, 9, 12]
            .iter()
            .flat_map(|i| [format!("gene_decoder.decoder.{i}.bias"), format!("gene_decoder.decoder.{i}.weight")])
            .collect();
        let mut expected = expected;
        expected.sort();
        assert_eq!(names, expected);
        let x = Tensor::ones((2, 3, 6), DType::F32, &Device::Cpu).expect("x");
        let y = dec.forward_t(&x, false).expect("fwd");
        assert_eq!(y.dims(), &[2, 3, 9]);
        let min = y.flatten_all().expect("f").min(0).expect("m");
        assert!(min.to_scalar::<f32>().expect("s") >= 0.0);
        let n: usize = vm.all_vars().iter().map(|v| v.elem_count()).sum();
        assert_eq!(n, cfg.n_params(6));
    }

    #[test]
    fn seeded_dropout_is_reproducible_and_unbiased() {
        let rng = DropoutRng::new(1);
        let d = SeededDropout::new(0.25, &rng);
        let x = Tensor::ones((64, 64), candle_core::DType::F32, &Device::Cpu).expect("x");
        rng.reseed(7);
        let a: Vec<f32> = d.forward_t(&x, true).and_then(|t| t.flatten_all()?.to_vec1()).expect("a");
        rng.reseed(7);
        let b: Vec<f32> = d.forward_t(&x, true).and_then(|t| t.flatten_all()?.to_vec1()).expect("b");
        assert_eq!(a, b);
        let zeros = a.iter().filter(|v| **v == 0.0).count() as f64 / a.len() as f64;
        assert!((zeros - 0.25).abs() < 0.03, "{zeros}");
        let mean = a.iter().map(|v| f64::from(*v)).sum::<f64>() / a.len() as f64;
        assert!((mean - 1.0).abs() < 0.05, "{mean}");
        assert!(a.iter().all(|v| *v == 0.0 || (*v - 4.0 / 3.0).abs() < 1e-6));
        let c: Vec<f32> = d.forward_t(&x, true).and_then(|t| t.flatten_all()?.to_vec1()).expect("c");
        assert_ne!(a, c);
        let e: Vec<f32> = d.forward_t(&x, false).and_then(|t| t.flatten_all()?.to_vec1()).expect("e");
        assert!(e.iter().all(|v| *v == 1.0));
    }
}
