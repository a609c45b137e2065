//! Run checkpoints: `config.json` (the [`StConfig`]), `model.safetensors` (weights under Arc's state_dict names),
//! and optionally `optimizer.json` + `optimizer.safetensors` (AdamW settings, moments and step count) for an
//! exact resume. A PyTorch/Lightning checkpoint converted to safetensors (keys of `ckpt["state_dict"]`) loads with
//! [`load_state_dict`]; extra keys such as the frozen `transformer_backbone.embed_tokens.weight` are ignored.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};

use super::optim::{AdamW, OptimConfig};
use super::st::{StConfig, StModel};
use super::{ModelError, Result};

pub const CONFIG_FILE: &str = "config.json";
pub const MODEL_FILE: &str = "model.safetensors";
pub const OPTIM_CONFIG_FILE: &str = "optimizer.json";
pub const OPTIM_STATE_FILE: &str = "optimizer.safetensors";

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io { path: path.to_path_buf(), source }
}

fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let s =
        serde_json::to_string_pretty(value).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })?;
    std::fs::write(path, s).map_err(io_err(path))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let s = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&s).map_err(|source| ModelError::Json { path: path.to_path_buf(), source })
}

/// Writes a checkpoint directory (created if needed). Files are written under a temporary name and renamed,
/// so an interrupted save never leaves a half-written file under the final name.
pub fn save(dir: &Path, cfg: &StConfig, varmap: &VarMap, optim: Option<&AdamW>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let tmp = dir.join(format!("{CONFIG_FILE}.tmp"));
    write_json(&tmp, cfg)?;
    let dst = dir.join(CONFIG_FILE);
    std::fs::rename(&tmp, &dst).map_err(io_err(&dst))?;
    save_weights(dir, varmap, optim)
}

/// Writes `model.safetensors` and, with an optimiser, `optimizer.json` + `optimizer.safetensors` into `dir`
/// (created if needed), each under a temporary name renamed into place. Any model's checkpoint (ST, SE) uses it.
pub fn save_weights(dir: &Path, varmap: &VarMap, optim: Option<&AdamW>) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let finish = |tmp: PathBuf, name: &str| -> Result<()> {
        let dst = dir.join(name);
        std::fs::rename(&tmp, &dst).map_err(io_err(&dst))
    };
    let tmp = dir.join(format!("{MODEL_FILE}.tmp"));
    varmap.save(&tmp)?;
    finish(tmp, MODEL_FILE)?;
    if let Some(o) = optim {
        let tmp = dir.join(format!("{OPTIM_CONFIG_FILE}.tmp"));
        write_json(&tmp, o.config())?;
        finish(tmp, OPTIM_CONFIG_FILE)?;
        let tmp = dir.join(format!("{OPTIM_STATE_FILE}.tmp"));
        o.save(&tmp)?;
        finish(tmp, OPTIM_STATE_FILE)?;
    }
    Ok(())
}

pub fn load_config(dir: &Path) -> Result<StConfig> {
    read_json(&dir.join(CONFIG_FILE))
}

/// Rebuilds a trainable model (weights in a fresh `VarMap`) from a checkpoint directory.
pub fn load_model(dir: &Path, device: &Device) -> Result<(StConfig, VarMap, StModel)> {
    let cfg = load_config(dir)?;
    let mut varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let model = StModel::load(vb, &cfg)?;
    varmap.load(dir.join(MODEL_FILE))?;
    Ok((cfg, varmap, model))
}

/// The optimiser of a checkpoint, bound to `varmap`'s variables; None when the checkpoint has none.
pub fn load_optimizer(dir: &Path, varmap: &VarMap) -> Result<Option<AdamW>> {
    let cfg_path = dir.join(OPTIM_CONFIG_FILE);
    if !cfg_path.exists() {
        return Ok(None);
    }
    let ocfg: OptimConfig = read_json(&cfg_path)?;
    let mut opt = AdamW::new(varmap, ocfg)?;
    opt.load(&dir.join(OPTIM_STATE_FILE))?;
    Ok(Some(opt))
}

/// An inference model from a safetensors state_dict (ours or a converted Arc checkpoint) and a config.
pub fn load_state_dict(path: &Path, cfg: &StConfig, device: &Device) -> Result<StModel> {
    let tensors = candle_core::safetensors::load(path, device)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, device);
    StModel::load(vb, cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    #[test]
    fn round_trip_gives_identical_outputs() {
        let dir = tempfile::tempdir().expect("dir");
        let mut cfg = StConfig::tiny(8, 3);
        cfg.n_batches = Some(2);
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        let m = StModel::load(vb, &cfg).expect("model");
        let opt = AdamW::new(&vm, OptimConfig::default()).expect("opt");
        save(dir.path(), &cfg, &vm, Some(&opt)).expect("save");

        let ctrl = Tensor::ones((1, 4, 8), DType::F32, &Device::Cpu).expect("c");
        let pert = Tensor::ones((1, 4, 3), DType::F32, &Device::Cpu).expect("p");
        let b = Tensor::new(&[[0u32, 1, 1, 0]], &Device::Cpu).expect("b");
        let y0 = m.forward(&ctrl, &pert, Some(&b), false).expect("y0");

        let (cfg2, vm2, m2) = load_model(dir.path(), &Device::Cpu).expect("load");
        assert_eq!(cfg2, cfg);
        let y1 = m2.forward(&ctrl, &pert, Some(&b), false).expect("y1");
        let m3 = load_state_dict(&dir.path().join(MODEL_FILE), &cfg, &Device::Cpu).expect("sd");
        let y2 = m3.forward(&ctrl, &pert, Some(&b), false).expect("y2");
        let v0: Vec<f32> = y0.flatten_all().and_then(|t| t.to_vec1()).expect("v");
        for y in [y1, y2] {
            let v: Vec<f32> = y.flatten_all().and_then(|t| t.to_vec1()).expect("v");
            assert_eq!(v0, v);
        }
        let o = load_optimizer(dir.path(), &vm2).expect("o").expect("some");
        assert_eq!(o.steps_done(), 0);
        assert!(load_config(&dir.path().join("nope")).is_err());
    }
}
