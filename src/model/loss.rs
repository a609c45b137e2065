//! Set losses between predicted and observed cell sets, each of shape [B, N, D] (B sets of N cells):
//! energy distance (Arc's main loss), a multi-scale Gaussian MMD, and MSE.
//!
//! Energy follows geomloss `SamplesLoss("energy")` as Arc calls it (`state:src/state/tx/models/base.py`), with
//! uniform weights: `E = mean_ij‖x_i−y_j‖ − ½·mean_ij‖x_i−x_j‖ − ½·mean_ij‖y_i−y_j‖`, Euclidean (not squared),
//! diagonal included. Distances are geomloss's `sqrt(clamp_min(‖a‖² − 2a·b + ‖b‖², 1e-8))`: the clamp keeps
//! the gradient finite where two points coincide (plain `sqrt` would give ∞·0 = NaN at 0). Set losses are
//! averaged over sets (Arc uses `nanmean`; ours never yields NaN for finite inputs).

use candle_core::{Tensor, D};

use super::{ModelError, Result};

/// geomloss' floor on squared distances before the square root.
pub const DIST_SQ_FLOOR: f64 = 1e-8;

/// Which distribution loss to train with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum LossKind {
    Energy,
    Mmd(MmdConfig),
    Mse,
}

impl LossKind {
    /// Scalar loss: the per-set loss averaged over sets (MSE: averaged over all elements).
    pub fn loss(&self, pred: &Tensor, target: &Tensor) -> Result<Tensor> {
        match self {
            LossKind::Energy => energy_loss(pred, target),
            LossKind::Mmd(c) => mmd_loss(pred, target, c),
            LossKind::Mse => mse_loss(pred, target),
        }
    }
}

/// Bandwidths of the Gaussian kernel `k(a,b) = mean_k exp(−‖a−b‖² / (2σ_k²))`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "bandwidth", rename_all = "lowercase")]
pub enum MmdConfig {
    /// σ_k² = m_k · h, with h the mean squared cross-distance `mean_ij‖x_i−y_j‖²` of the set (held constant
    /// for the gradient). Scale-free, so it suits log-expression (h ~ genes) and embeddings alike; several
    /// multipliers keep a useful gradient both far from and near the target.
    Adaptive { multipliers: Vec<f64> },
    /// Fixed σ_k² values.
    Fixed { sigma2: Vec<f64> },
}

impl Default for MmdConfig {
    fn default() -> Self {
        MmdConfig::Adaptive { multipliers: vec![0.25, 0.5, 1.0, 2.0, 4.0] }
    }
}

fn check_sets(x: &Tensor, y: &Tensor) -> Result<(usize, usize, usize, usize)> {
    let (bx, n, dx) = x.dims3()?;
    let (by, m, dy) = y.dims3()?;
    if bx != by || dx != dy {
        return Err(ModelError::Input(format!(
            "set loss: pred {:?} and target {:?} differ in sets or features",
            x.dims(),
            y.dims()
        )));
    }
    if n == 0 || m == 0 {
        return Err(ModelError::Input("set loss: empty set".into()));
    }
    Ok((bx, n, m, dx))
}

/// Squared Euclidean distances [B, N, M] by the `‖a‖² − 2a·b + ‖b‖²` expansion (geomloss' tensorized path).
pub fn squared_distances(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    let x2 = x.sqr()?.sum_keepdim(D::Minus1)?; // [B,N,1]
    let y2 = y.sqr()?.sum_keepdim(D::Minus1)?.transpose(1, 2)?; // [B,1,M]
    let xy = x.matmul(&y.transpose(1, 2)?.contiguous()?)?; // [B,N,M]
    Ok(x2.broadcast_add(&y2)?.sub(&(xy * 2.0)?)?)
}

/// Safe Euclidean distances [B, N, M]: `sqrt(max(d², 1e-8))`.
pub fn distances(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(squared_distances(x, y)?.maximum(DIST_SQ_FLOOR)?.sqrt()?)
}

fn mean_per_set(t: &Tensor) -> Result<Tensor> {
    Ok(t.flatten_from(1)?.mean(1)?)
}

/// Energy distance per set: `[B]`.
pub fn energy_distance(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    check_sets(x, y)?;
    let dxy = mean_per_set(&distances(x, y)?)?;
    let dxx = mean_per_set(&distances(x, x)?)?;
    let dyy = mean_per_set(&distances(y, y)?)?;
    Ok(((dxy - (dxx * 0.5)?)? - (dyy * 0.5)?)?)
}

/// Energy loss: energy distance averaged over sets (scalar).
pub fn energy_loss(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    Ok(energy_distance(x, y)?.mean_all()?)
}

fn gaussian_kernel_mean(d2: &Tensor, sigma2: &[Tensor]) -> Result<Tensor> {
    // d2 [B,N,M], each sigma2 [B,1,1] → per-set mean of the averaged kernel [B]
    let mut acc: Option<Tensor> = None;
    for s in sigma2 {
        let k = d2.broadcast_div(&(s * 2.0)?)?.neg()?.exp()?;
        acc = Some(match acc {
            None => k,
            Some(a) => (a + k)?,
        });
    }
    let k = acc.ok_or_else(|| ModelError::Config("mmd: no bandwidths".into()))?;
    Ok((mean_per_set(&k)? / sigma2.len() as f64)?)
}

/// Biased (V-statistic) MMD² per set with a multi-scale Gaussian kernel: `mean Kxx + mean Kyy − 2·mean Kxy`, `[B]`.
pub fn mmd_distance(x: &Tensor, y: &Tensor, cfg: &MmdConfig) -> Result<Tensor> {
    let (b, _, _, _) = check_sets(x, y)?;
    let dxy = squared_distances(x, y)?.relu()?;
    let dxx = squared_distances(x, x)?.relu()?;
    let dyy = squared_distances(y, y)?.relu()?;
    let sigma2: Vec<Tensor> = match cfg {
        MmdConfig::Adaptive { multipliers } => {
            let h = mean_per_set(&dxy)?.detach().maximum(1e-6)?.reshape((b, 1, 1))?;
            multipliers.iter().map(|&m| Ok((&h * m)?)).collect::<Result<_>>()?
        }
        MmdConfig::Fixed { sigma2 } => sigma2
            .iter()
            .map(|&s| {
                if s > 0.0 {
                    Ok(Tensor::full(s, (b, 1, 1), x.device())?.to_dtype(x.dtype())?)
                } else {
                    Err(ModelError::Config(format!("mmd: sigma² {s} must be > 0")))
                }
            })
            .collect::<Result<_>>()?,
    };
    let kxx = gaussian_kernel_mean(&dxx, &sigma2)?;
    let kyy = gaussian_kernel_mean(&dyy, &sigma2)?;
    let kxy = gaussian_kernel_mean(&dxy, &sigma2)?;
    Ok(((kxx + kyy)? - (kxy * 2.0)?)?)
}

/// MMD loss averaged over sets (scalar).
pub fn mmd_loss(x: &Tensor, y: &Tensor, cfg: &MmdConfig) -> Result<Tensor> {
    Ok(mmd_distance(x, y, cfg)?.mean_all()?)
}

/// Mean squared error over all elements (cells paired by position).
pub fn mse_loss(x: &Tensor, y: &Tensor) -> Result<Tensor> {
    if x.dims() != y.dims() {
        return Err(ModelError::Input(format!("mse: shapes differ: {:?} vs {:?}", x.dims(), y.dims())));
    }
    Ok((x - y)?.sqr()?.mean_all()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn rand_sets(b: usize, n: usize, d: usize, seed: u64) -> Vec<Vec<Vec<f64>>> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..b).map(|_| (0..n).map(|_| (0..d).map(|_| rng.random_range(-2.0..2.0)).collect()).collect()).collect()
    }

    fn to_tensor(s: &[Vec<Vec<f64>>], dtype: DType) -> Tensor {
        let (b, n, d) = (s.len(), s[0].len(), s[0][0].len());
        let flat: Vec<f64> = s.iter().flatten().flatten().copied().collect();
        Tensor::from_vec(flat, (b, n, d), &Device::Cpu).and_then(|t| t.to_dtype(dtype)).expect("tensor")
    }

    fn dist_ref(a: &[f64], b: &[f64]) -> f64 {
        let d2: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
        d2.max(DIST_SQ_FLOOR).sqrt()
    }

    fn mean_d(x: &[Vec<f64>], y: &[Vec<f64>]) -> f64 {
        let mut s = 0.0;
        for a in x {
            for b in y {
                s += dist_ref(a, b);
            }
        }
        s / (x.len() * y.len()) as f64
    }

    fn energy_ref(x: &[Vec<f64>], y: &[Vec<f64>]) -> f64 {
        mean_d(x, y) - 0.5 * mean_d(x, x) - 0.5 * mean_d(y, y)
    }

    #[test]
    fn energy_by_hand() {
        // x = {(0,0), (3,4)}, y = {(0,0)}: cross distances {~0, 5}, within-x {~0,5,5,~0}, within-y {~0}.
        let x = Tensor::new(&[[[0f64, 0.0], [3.0, 4.0]]], &Device::Cpu).expect("x");
        let y = Tensor::new(&[[[0f64, 0.0]]], &Device::Cpu).expect("y");
        let e = energy_distance(&x, &y).expect("e").to_vec1::<f64>().expect("v");
        let eps = DIST_SQ_FLOOR.sqrt();
        let want = (eps + 5.0) / 2.0 - 0.5 * (2.0 * eps + 10.0) / 4.0 - 0.5 * eps;
        assert!((e[0] - want).abs() < 1e-12, "{} vs {want}", e[0]);
        assert!((want - 1.25).abs() < 1e-4);
        // identical sets: zero
        let z = energy_distance(&x, &x).expect("z").to_vec1::<f64>().expect("v");
        assert!(z[0].abs() < 1e-12);
    }

    #[test]
    fn energy_matches_f64_loop_with_unequal_sizes() {
        let xs = rand_sets(3, 5, 4, 1);
        let ys = rand_sets(3, 7, 4, 2);
        let got = energy_distance(&to_tensor(&xs, DType::F32), &to_tensor(&ys, DType::F32))
            .expect("e")
            .to_vec1::<f32>()
            .expect("v");
        let mut mean = 0.0;
        for i in 0..3 {
            let want = energy_ref(&xs[i], &ys[i]);
            mean += want / 3.0;
            // f32 + the ‖a‖²−2a·b+‖b‖² expansion: diagonal terms come out as sqrt(~1e-7) rather than 1e-4
            // (as in geomloss/PyTorch in f32), hence the loose f32 tolerance; f64 is checked tightly below.
            assert!((got[i] as f64 - want).abs() < 1e-4, "set {i}: {} vs {want}", got[i]);
        }
        let per_set = energy_distance(&to_tensor(&xs, DType::F64), &to_tensor(&ys, DType::F64))
            .expect("e")
            .to_vec1::<f64>()
            .expect("v");
        for i in 0..3 {
            assert!((per_set[i] - energy_ref(&xs[i], &ys[i])).abs() < 1e-10);
        }
        let l = energy_loss(&to_tensor(&xs, DType::F64), &to_tensor(&ys, DType::F64))
            .expect("l")
            .to_scalar::<f64>()
            .expect("s");
        assert!((l - mean).abs() < 1e-12);
    }

    fn grad_check(loss: impl Fn(&Tensor) -> f64, x: &Var, autograd: &Tensor) {
        let base: Vec<f64> = x.flatten_all().and_then(|t| t.to_vec1()).expect("x");
        let g: Vec<f64> = autograd.flatten_all().and_then(|t| t.to_vec1()).expect("g");
        let h = 1e-6;
        for i in 0..base.len() {
            let mut p = base.clone();
            p[i] += h;
            let mut m = base.clone();
            m[i] -= h;
            let tp = Tensor::from_vec(p, x.shape(), &Device::Cpu).expect("p");
            let tm = Tensor::from_vec(m, x.shape(), &Device::Cpu).expect("m");
            let fd = (loss(&tp) - loss(&tm)) / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-5 * (1.0 + fd.abs()), "coord {i}: fd {fd} vs autograd {}", g[i]);
        }
    }

    #[test]
    fn energy_gradient_matches_finite_differences() {
        let y = to_tensor(&rand_sets(2, 4, 3, 5), DType::F64);
        let x = Var::from_tensor(&to_tensor(&rand_sets(2, 3, 3, 6), DType::F64)).expect("var");
        let l = energy_loss(x.as_tensor(), &y).expect("l");
        let grads = l.backward().expect("bw");
        let g = grads.get(x.as_tensor()).expect("grad");
        let f = |t: &Tensor| energy_loss(t, &y).and_then(|l| Ok(l.to_scalar::<f64>()?)).expect("f");
        grad_check(f, &x, g);
    }

    #[test]
    fn mmd_gradient_matches_finite_differences() {
        let y = to_tensor(&rand_sets(2, 4, 3, 7), DType::F64);
        let x = Var::from_tensor(&to_tensor(&rand_sets(2, 3, 3, 8), DType::F64)).expect("var");
        let cfg = MmdConfig::Fixed { sigma2: vec![0.5, 2.0] };
        let l = mmd_loss(x.as_tensor(), &y, &cfg).expect("l");
        let grads = l.backward().expect("bw");
        let g = grads.get(x.as_tensor()).expect("grad");
        let f = |t: &Tensor| mmd_loss(t, &y, &cfg).and_then(|l| Ok(l.to_scalar::<f64>()?)).expect("f");
        grad_check(f, &x, g);
    }

    #[test]
    fn coincident_points_give_finite_gradients() {
        // two equal predicted points, one of them equal to a target point
        let x = Var::from_tensor(&Tensor::new(&[[[1f32, 2.0], [1.0, 2.0], [0.0, 0.0]]], &Device::Cpu).expect("x"))
            .expect("var");
        let y = Tensor::new(&[[[1f32, 2.0], [3.0, 1.0]]], &Device::Cpu).expect("y");
        for kind in [LossKind::Energy, LossKind::Mmd(MmdConfig::default()), LossKind::Mse] {
            let y = if kind == LossKind::Mse {
                Tensor::new(&[[[1f32, 2.0], [3.0, 1.0], [0.0, 0.0]]], &Device::Cpu).expect("y")
            } else {
                y.clone()
            };
            let l = kind.loss(x.as_tensor(), &y).expect("l");
            assert!(l.to_scalar::<f32>().expect("s").is_finite());
            let grads = l.backward().expect("bw");
            let g: Vec<f32> =
                grads.get(x.as_tensor()).expect("grad").flatten_all().and_then(|t| t.to_vec1()).expect("g");
            assert!(g.iter().all(|v| v.is_finite()), "{kind:?}: {g:?}");
            assert!(g.iter().any(|v| *v != 0.0), "{kind:?}: all-zero gradient");
        }
        // the whole set identical to the target: energy 0, gradient finite (zero)
        let x = Var::from_tensor(&y).expect("var");
        let l = energy_loss(x.as_tensor(), &y).expect("l");
        let grads = l.backward().expect("bw");
        let g: Vec<f32> = grads.get(x.as_tensor()).expect("grad").flatten_all().and_then(|t| t.to_vec1()).expect("g");
        assert!(g.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn mmd_by_hand() {
        // 1-D, x = {0}, y = {1}, σ² = 1: Kxx = Kyy = 1, Kxy = e^{-1/2} ⇒ MMD² = 2 − 2e^{-1/2}.
        let x = Tensor::new(&[[[0f64]]], &Device::Cpu).expect("x");
        let y = Tensor::new(&[[[1f64]]], &Device::Cpu).expect("y");
        let cfg = MmdConfig::Fixed { sigma2: vec![1.0] };
        let v = mmd_loss(&x, &y, &cfg).expect("m").to_scalar::<f64>().expect("s");
        assert!((v - (2.0 - 2.0 * (-0.5f64).exp())).abs() < 1e-12, "{v}");
        // two bandwidths average their kernels: σ² = {1, 4}
        let cfg = MmdConfig::Fixed { sigma2: vec![1.0, 4.0] };
        let v = mmd_loss(&x, &y, &cfg).expect("m").to_scalar::<f64>().expect("s");
        let want = 2.0 - ((-0.5f64).exp() + (-0.125f64).exp());
        assert!((v - want).abs() < 1e-12, "{v} vs {want}");
        // adaptive: h = 1, multipliers {1} ⇒ same as σ² = 1
        let cfg = MmdConfig::Adaptive { multipliers: vec![1.0] };
        let v = mmd_loss(&x, &y, &cfg).expect("m").to_scalar::<f64>().expect("s");
        assert!((v - (2.0 - 2.0 * (-0.5f64).exp())).abs() < 1e-12, "{v}");
        // identical sets: zero
        assert!(mmd_loss(&x, &x, &MmdConfig::default()).expect("m").to_scalar::<f64>().expect("s").abs() < 1e-12);
    }

    #[test]
    fn mse_by_hand_and_errors() {
        let x = Tensor::new(&[[[1f32, 2.0], [3.0, 4.0]]], &Device::Cpu).expect("x");
        let y = Tensor::new(&[[[1f32, 0.0], [0.0, 4.0]]], &Device::Cpu).expect("y");
        let v = mse_loss(&x, &y).expect("m").to_scalar::<f32>().expect("s");
        assert!((v - (4.0 + 9.0) / 4.0).abs() < 1e-6);
        let z = Tensor::zeros((1, 2, 3), DType::F32, &Device::Cpu).expect("z");
        assert!(matches!(mse_loss(&x, &z), Err(ModelError::Input(_))));
        assert!(matches!(energy_loss(&x, &z), Err(ModelError::Input(_))));
    }
}
