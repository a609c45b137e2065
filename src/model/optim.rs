//! AdamW over a `VarMap`, with an LR schedule, global grad-norm clipping and exact save/restore.
//!
//! candle-nn's `AdamW` keeps its moments private, so a resumed run could not continue bit-exactly; this one
//! owns `m`, `v` and the step count and writes them to safetensors. The update is PyTorch's (`torch.optim.AdamW`,
//! non-fused): `θ ← θ(1 − lr·wd)`, `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
//! `θ ← θ − (lr / (1−β1ᵗ)) · m / (√v / √(1−β2ᵗ) + ε)`. With `weight_decay = 0` it is Arc's Adam.
//! Clipping follows `torch.nn.utils.clip_grad_norm_` (Lightning's `gradient_clip_val`, norm 2):
//! `coef = max_norm / (‖g‖ + 1e-6)`, gradients scaled by `min(coef, 1)`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::{ModelError, Result};

/// Learning-rate schedule, as a function of the 0-based index of the step about to be taken.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// Arc's default: no schedule.
    Constant,
    /// Linear warm-up from lr/warmup_steps to lr over `warmup_steps`, then decay to `min_lr_ratio · lr` at
    /// `total_steps` (held there afterwards).
    WarmupCosine {
        warmup_steps: u64,
        total_steps: u64,
        min_lr_ratio: f64,
    },
    WarmupLinear {
        warmup_steps: u64,
        total_steps: u64,
        min_lr_ratio: f64,
    },
}

impl LrSchedule {
    /// Multiplier of the base LR at step index `t` (0-based).
    pub fn factor(&self, t: u64) -> f64 {
        let (warmup, total, floor, cosine) = match *self {
            LrSchedule::Constant => return 1.0,
            LrSchedule::WarmupCosine { warmup_steps, total_steps, min_lr_ratio } => {
                (warmup_steps, total_steps, min_lr_ratio, true)
            }
            LrSchedule::WarmupLinear { warmup_steps, total_steps, min_lr_ratio } => {
                (warmup_steps, total_steps, min_lr_ratio, false)
            }
        };
        if t < warmup {
            return (t + 1) as f64 / warmup as f64;
        }
        let span = total.saturating_sub(warmup).max(1);
        let p = ((t - warmup) as f64 / span as f64).min(1.0);
        let shape = if cosine { 0.5 * (1.0 + (std::f64::consts::PI * p).cos()) } else { 1.0 - p };
        floor + (1.0 - floor) * shape
    }
}

/// Optimiser settings. Defaults are Arc's `training/default.yaml`: Adam lr 1e-4, β (0.9, 0.999), ε 1e-8,
/// no weight decay (its `weight_decay` key is never used), clip 10, no schedule.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global L2 norm clip; None = no clipping.
    pub max_grad_norm: Option<f64>,
    pub schedule: LrSchedule,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: Some(10.0),
            schedule: LrSchedule::Constant,
        }
    }
}

/// What one step did (for logging).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Steps taken so far, this one included.
    pub step: u64,
    pub lr: f64,
    /// Global gradient L2 norm before clipping.
    pub grad_norm: f64,
    /// Factor the gradients were multiplied by (1 = not clipped).
    pub clip_scale: f64,
}

/// AdamW with owned, saveable state.
#[derive(Debug)]
pub struct AdamW {
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    step: u64,
    cfg: OptimConfig,
}

const STEP_KEY: &str = "__step";

impl AdamW {
    /// Optimises every float variable of `varmap`, in name order (so sums and files are deterministic).
    pub fn new(varmap: &VarMap, cfg: OptimConfig) -> Result<Self> {
        let data = varmap.data().lock().map_err(|_| ModelError::Input("VarMap lock poisoned".into()))?;
        let mut named: Vec<(String, Var)> =
            data.iter().filter(|(_, v)| v.dtype().is_float()).map(|(k, v)| (k.clone(), v.clone())).collect();
        drop(data);
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let mut names = Vec::with_capacity(named.len());
        let mut vars = Vec::with_capacity(named.len());
        let mut m = Vec::with_capacity(named.len());
        let mut v = Vec::with_capacity(named.len());
        for (n, var) in named {
            m.push(var.zeros_like()?);
            v.push(var.zeros_like()?);
            names.push(n);
            vars.push(var);
        }
        Ok(Self { names, vars, m, v, step: 0, cfg })
    }

    pub fn config(&self) -> &OptimConfig {
        &self.cfg
    }

    /// Steps taken so far.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    /// The LR the next step will use.
    pub fn next_lr(&self) -> f64 {
        self.cfg.lr * self.cfg.schedule.factor(self.step)
    }

    /// Global L2 norm of the gradients of the optimised variables (summed over tensors in f64, in name order).
    pub fn grad_norm(&self, grads: &GradStore) -> Result<f64> {
        let mut sq = 0f64;
        for var in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                // per-tensor sum in the gradient's dtype (no f64 copy of every gradient), f64 across tensors
                sq += g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            }
        }
        Ok(sq.sqrt())
    }

    /// `loss.backward()` then [`AdamW::step`].
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<StepStats> {
        let grads = loss.backward()?;
        self.step(&grads)
    }

    /// One update: clip (if configured), then AdamW with the scheduled LR. Variables without a gradient are
    /// left untouched (their moments too), as in PyTorch.
    pub fn step(&mut self, grads: &GradStore) -> Result<StepStats> {
        let grad_norm = self.grad_norm(grads)?;
        if !grad_norm.is_finite() {
            return Err(ModelError::Input(format!("non-finite gradient norm ({grad_norm}) at step {}", self.step + 1)));
        }
        let clip_scale = match self.cfg.max_grad_norm {
            Some(max) => (max / (grad_norm + 1e-6)).min(1.0),
            None => 1.0,
        };
        let lr = self.next_lr();
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2_sqrt = (1.0 - b2.powi(t)).sqrt();
        let step_size = lr / bc1;
        let decay = 1.0 - lr * self.cfg.weight_decay;
        for i in 0..self.vars.len() {
            let var = &self.vars[i];
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let g = if clip_scale < 1.0 { (g * clip_scale)? } else { g.clone() };
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let denom = ((v.sqrt()? / bc2_sqrt)? + self.cfg.eps)?;
            let theta = if self.cfg.weight_decay != 0.0 { (var.as_tensor() * decay)? } else { var.as_tensor().clone() };
            let theta = (theta - ((&m / &denom)? * step_size)?)?;
            var.set(&theta.detach())?;
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        Ok(StepStats { step: self.step, lr, grad_norm, clip_scale })
    }

    /// Writes `m.<var>`, `v.<var>` and the step count to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map: HashMap<String, Tensor> = HashMap::with_capacity(2 * self.vars.len() + 1);
        for (i, n) in self.names.iter().enumerate() {
            map.insert(format!("m.{n}"), self.m[i].clone());
            map.insert(format!("v.{n}"), self.v[i].clone());
        }
        map.insert(STEP_KEY.into(), Tensor::new(&[self.step as i64], &Device::Cpu)?);
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Restores moments and step count written by [`AdamW::save`]; every variable must be present with the
    /// same shape.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = self.vars.first().map(|v| v.device().clone()).unwrap_or(Device::Cpu);
        let map = candle_core::safetensors::load(path, &device)?;
        let step = map
            .get(STEP_KEY)
            .ok_or_else(|| ModelError::Checkpoint(format!("{}: no {STEP_KEY}", path.display())))?
            .to_vec1::<i64>()?;
        let step = step
            .first()
            .copied()
            .and_then(|s| u64::try_from(s).ok())
            .ok_or_else(|| ModelError::Checkpoint("bad step count".into()))?;
        let mut m = Vec::with_capacity(self.vars.len());
        let mut v = Vec::with_capacity(self.vars.len());
        for (i, n) in self.names.iter().enumerate() {
            for (key, out) in [(format!("m.{n}"), &mut m), (format!("v.{n}"), &mut v)] {
                let t = map
                    .get(&key)
                    .ok_or_else(|| ModelError::Checkpoint(format!("{}: missing {key}", path.display())))?;
                if t.dims() != self.vars[i].dims() {
                    return Err(ModelError::Checkpoint(format!(
                        "{key}: shape {:?} != variable {:?}",
                        t.dims(),
                        self.vars[i].dims()
                    )));
                }
                out.push(t.to_dtype(self.vars[i].dtype())?);
            }
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::loss::LossKind;
    use crate::model::st::{StConfig, StModel};
    use candle_nn::VarBuilder;

    #[test]
    fn schedules() {
        let c = LrSchedule::WarmupCosine { warmup_steps: 10, total_steps: 110, min_lr_ratio: 0.1 };
        assert!((c.factor(0) - 0.1).abs() < 1e-12);
        assert!((c.factor(9) - 1.0).abs() < 1e-12);
        assert!((c.factor(10) - 1.0).abs() < 1e-12);
        assert!((c.factor(60) - 0.55).abs() < 1e-12);
        assert!((c.factor(110) - 0.1).abs() < 1e-12);
        assert!((c.factor(1000) - 0.1).abs() < 1e-12);
        let l = LrSchedule::WarmupLinear { warmup_steps: 0, total_steps: 100, min_lr_ratio: 0.0 };
        assert!((l.factor(0) - 1.0).abs() < 1e-12);
        assert!((l.factor(50) - 0.5).abs() < 1e-12);
        assert_eq!(LrSchedule::Constant.factor(123), 1.0);
    }

    /// One step by hand on f(θ) = ½θ², θ = 3: g = 3, m̂ = g, v̂ = g² ⇒ θ ← θ(1 − lr·wd) − lr·g/(|g| + ε).
    #[test]
    fn single_step_by_hand_and_clipping() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
        let w = vb.get_with_hints(1, "w", candle_nn::Init::Const(3.0)).expect("w");
        let cfg = OptimConfig { lr: 0.1, weight_decay: 0.5, max_grad_norm: Some(1.5), ..OptimConfig::default() };
        let mut opt = AdamW::new(&vm, cfg).expect("opt");
        let loss = (w.sqr().expect("sq") * 0.5).expect("l").sum_all().expect("s");
        let st = opt.backward_step(&loss).expect("step");
        assert!((st.grad_norm - 3.0).abs() < 1e-12);
        assert!((st.clip_scale - 1.5 / (3.0 + 1e-6)).abs() < 1e-12);
        let g = 3.0 * st.clip_scale;
        let want = 3.0 * (1.0 - 0.1 * 0.5) - 0.1 * g / (g + 1e-8);
        let got = vm.all_vars()[0].as_tensor().to_vec1::<f64>().expect("v")[0];
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        assert_eq!(opt.steps_done(), 1);
    }

    fn tiny() -> StConfig {
        let mut c = StConfig::tiny(8, 3);
        c.hidden_dim = 16;
        c.n_heads = 2;
        c.ffn_dim = 16;
        c.dropout = 0.1; // masks come from the model's DropoutRng, reseeded per step in `run`
        c
    }

    fn batch() -> (Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        let ctrl = Tensor::arange(0f32, 48.0, &dev).and_then(|t| (t / 48.0)?.reshape((2, 3, 8))).expect("ctrl");
        let pert = Tensor::new(
            &[
                [[1f32, 0.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
                [[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]],
            ],
            &dev,
        )
        .expect("pert");
        let tgt = (ctrl.cos().expect("c") + 1.0).expect("t");
        (ctrl, pert, tgt)
    }

    fn run(vm: &VarMap, m: &StModel, opt: &mut AdamW, n: usize) {
        let (ctrl, pert, tgt) = batch();
        for _ in 0..n {
            // masks depend only on (seed, step): the resumed run draws the same ones
            m.reseed_dropout(1000 + opt.steps_done());
            let l = m.loss(&ctrl, &pert, None, &tgt, None, &LossKind::Energy, 1.0, true).expect("loss");
            opt.backward_step(&l.total).expect("step");
        }
        let _ = vm;
    }

    fn snapshot(vm: &VarMap) -> Vec<(String, Vec<f32>)> {
        let data = vm.data().lock().expect("lock");
        let mut v: Vec<_> =
            data.iter().map(|(k, t)| (k.clone(), t.flatten_all().and_then(|t| t.to_vec1()).expect("v"))).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn resume_is_bit_exact() {
        let dir = tempfile::tempdir().expect("dir");
        let init = dir.path().join("init.safetensors");
        let cfg = tiny();
        let ocfg = OptimConfig {
            lr: 1e-2,
            weight_decay: 0.01,
            max_grad_norm: Some(0.5),
            schedule: LrSchedule::WarmupCosine { warmup_steps: 2, total_steps: 6, min_lr_ratio: 0.1 },
            ..OptimConfig::default()
        };
        let build = || {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
            let m = StModel::load(vb, &cfg).expect("model");
            (vm, m)
        };
        // straight run: 6 steps
        let (mut vm_a, m_a) = build();
        vm_a.save(&init).expect("save init");
        let mut opt_a = AdamW::new(&vm_a, ocfg.clone()).expect("opt");
        run(&vm_a, &m_a, &mut opt_a, 6);
        let a = snapshot(&vm_a);
        // 3 steps, save, fresh model + optimiser, load, 3 more
        vm_a.load(&init).expect("reload");
        let mut opt_b = AdamW::new(&vm_a, ocfg.clone()).expect("opt");
        run(&vm_a, &m_a, &mut opt_b, 3);
        vm_a.save(dir.path().join("w.safetensors")).expect("w");
        opt_b.save(&dir.path().join("o.safetensors")).expect("o");
        let (mut vm_c, m_c) = build();
        vm_c.load(dir.path().join("w.safetensors")).expect("load w");
        let mut opt_c = AdamW::new(&vm_c, ocfg).expect("opt");
        opt_c.load(&dir.path().join("o.safetensors")).expect("load o");
        assert_eq!(opt_c.steps_done(), 3);
        run(&vm_c, &m_c, &mut opt_c, 3);
        let c = snapshot(&vm_c);
        assert_eq!(a.len(), c.len());
        for ((na, va), (nc, vc)) in a.iter().zip(&c) {
            assert_eq!(na, nc);
            assert!(va.iter().zip(vc).all(|(x, y)| x.to_bits() == y.to_bits()), "{na} differs after resume");
        }
        // and the run actually moved the weights
        let i = snapshot(&{
            let (mut vm, _m) = build();
            vm.load(&init).expect("init");
            vm
        });
        assert!(a.iter().zip(&i).any(|((_, x), (_, y))| x != y));
    }
}
