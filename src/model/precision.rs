//! Mixed precision: bf16 matmuls over f32 master weights.
//!
//! With [`Precision::Bf16`] the weights stay in their stored dtype (f32) — the optimiser updates them there —
//! and each matmul casts its operands to bf16 and its result back (PyTorch's `autocast(dtype=bfloat16)` for
//! `linear`/`matmul`). Everything else (norms, softmax, activations between layers, losses, reductions) runs in
//! f32. `to_dtype` is differentiable, so gradients reach the f32 weights through the casts, in f32.
//! [`Precision::F32`] computes in the weights' own dtype (f32, or f64 in gradient tests).

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

/// Dtype of the matmuls (`precision = "f32" | "bf16"` in the training configs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Matmuls in the weights' dtype.
    #[default]
    F32,
    /// bf16 matmuls, f32 master weights and f32 everything else.
    Bf16,
}

impl Precision {
    /// The dtype matmul operands are cast to; None = as they are.
    pub fn compute_dtype(self) -> Option<DType> {
        match self {
            Precision::F32 => None,
            Precision::Bf16 => Some(DType::BF16),
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    /// `a.matmul(b)` computed in this precision, returned in `a`'s dtype.
    pub fn matmul(self, a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
        match self.compute_dtype() {
            None => a.matmul(b),
            Some(dt) => a.to_dtype(dt)?.matmul(&b.to_dtype(dt)?)?.to_dtype(a.dtype()),
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!("precision {other:?} is not \"f32\" or \"bf16\"")),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

/// `candle_nn::Linear` whose matmul (and bias add) runs in a [`Precision`]; output in the input's dtype.
#[derive(Debug, Clone)]
pub struct Linear {
    inner: candle_nn::Linear,
    precision: Precision,
}

impl Linear {
    pub fn new(inner: candle_nn::Linear, precision: Precision) -> Self {
        Self { inner, precision }
    }

    pub fn weight(&self) -> &Tensor {
        self.inner.weight()
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let Some(dt) = self.precision.compute_dtype() else {
            return self.inner.forward(xs);
        };
        // The cast copies of the weights are part of the graph: their gradients flow back to the f32 variables.
        let w = self.inner.weight().to_dtype(dt)?;
        let b = self.inner.bias().map(|b| b.to_dtype(dt)).transpose()?;
        candle_nn::Linear::new(w, b).forward(&xs.to_dtype(dt)?)?.to_dtype(xs.dtype())
    }
}

/// `candle_nn::linear` (PyTorch's init, or loaded) computing in `precision`.
pub fn linear(in_dim: usize, out_dim: usize, vb: VarBuilder, precision: Precision) -> candle_core::Result<Linear> {
    Ok(Linear::new(candle_nn::linear(in_dim, out_dim, vb)?, precision))
}

/// `candle_nn::linear_no_bias` computing in `precision`.
pub fn linear_no_bias(
    in_dim: usize,
    out_dim: usize,
    vb: VarBuilder,
    precision: Precision,
) -> candle_core::Result<Linear> {
    Ok(Linear::new(candle_nn::linear_no_bias(in_dim, out_dim, vb)?, precision))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn ramp(shape: (usize, usize), scale: f32) -> Tensor {
        let n = shape.0 * shape.1;
        // Values with more than bf16's 8 significant bits, so that rounding shows.
        let v: Vec<f32> = (0..n).map(|i| ((i as f32 * 0.731).sin() + 0.013 * i as f32) * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("t")
    }

    fn bf16_representable(t: &Tensor) -> bool {
        let a: Vec<f32> = t.flatten_all().and_then(|t| t.to_vec1()).expect("a");
        let b: Vec<f32> = t
            .to_dtype(DType::BF16)
            .and_then(|t| t.to_dtype(DType::F32))
            .and_then(|t| t.flatten_all()?.to_vec1())
            .expect("b");
        a == b
    }

    /// The bf16 Linear rounds its result to bf16 (so the bf16 matmul ran), returns f32, stays within bf16's
    /// relative precision (2⁻⁸ per rounding; 1e-2 leaves room for the three roundings of x, W and y), and
    /// backpropagates f32 gradients to the f32 weight that agree with the f32 ones to the same tolerance.
    #[test]
    fn bf16_linear_rounds_and_backpropagates_to_f32_weights() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let full = linear(24, 16, vb.clone(), Precision::F32).expect("f32");
        let half = linear(24, 16, vb, Precision::Bf16).expect("bf16"); // same variables
        vm.data().lock().expect("lock").get("weight").expect("w").set(&ramp((16, 24), 0.2)).expect("set");
        let x = candle_core::Var::from_tensor(&ramp((5, 24), 1.0)).expect("x");
        let y32 = full.forward(&x).expect("y32");
        let y16 = half.forward(&x).expect("y16");
        assert_eq!(y16.dtype(), DType::F32);
        assert!(bf16_representable(&y16), "bf16 path did not round to bf16");
        assert!(!bf16_representable(&y32), "f32 path unexpectedly bf16-exact");
        let rel = |a: &Tensor, b: &Tensor| -> f32 {
            let num = (a - b).and_then(|d| d.sqr()?.sum_all()?.sqrt()).and_then(|t| t.to_scalar::<f32>());
            let den = b.sqr().and_then(|d| d.sum_all()?.sqrt()).and_then(|t| t.to_scalar::<f32>());
            num.expect("num") / den.expect("den")
        };
        let r = rel(&y16, &y32);
        assert!(r > 0.0 && r < 1e-2, "output relative error {r}");
        let w = vm.all_vars().into_iter().find(|v| v.dims() == [16, 24]).expect("w");
        let g32 = y32.sqr().and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("bw32");
        let g16 = y16.sqr().and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("bw16");
        let (gw32, gw16) = (g32.get(&w).expect("gw32"), g16.get(&w).expect("gw16"));
        assert_eq!(gw16.dtype(), DType::F32);
        assert_eq!(w.dtype(), DType::F32);
        let r = rel(gw16, gw32);
        assert!(r > 0.0 && r < 2e-2, "weight gradient relative error {r}");
        assert!(g16.get(&x).is_some_and(|g| g.dtype() == DType::F32));
    }

    #[test]
    fn matmul_and_parse() {
        let a = ramp((3, 7), 1.0);
        let b = ramp((7, 4), 0.5);
        let c = Precision::Bf16.matmul(&a, &b).expect("c");
        assert_eq!(c.dtype(), DType::F32);
        assert!(bf16_representable(&c));
        assert_eq!(
            Precision::F32.matmul(&a, &b).expect("d").to_vec2::<f32>().ok(),
            a.matmul(&b).expect("e").to_vec2::<f32>().ok()
        );
        assert_eq!("bf16".parse::<Precision>(), Ok(Precision::Bf16));
        assert_eq!("f32".parse::<Precision>(), Ok(Precision::F32));
        assert!("fp16".parse::<Precision>().is_err());
        assert_eq!(Precision::Bf16.to_string(), "bf16");
    }
}
