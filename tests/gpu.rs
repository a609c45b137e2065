//! CPU vs CUDA agreement for ST: forward output and one training step. Runs only when the binary is built with
//! `--features cuda` and a CUDA device opens; otherwise it prints why it skipped. `benches/gpu.sh` runs the same
//! check on the GPU box through `vcell gpu-check` (that machine has no Rust toolchain to run `cargo test`).
#![allow(clippy::unwrap_used)]

use candle_core::Device;
use vcell::model::device_check::{compare_st, compare_st_precision, BF16_TOLERANCE};
use vcell::model::precision::Precision;
use vcell::model::st::StConfig;

fn cuda() -> Option<Device> {
    #[cfg(feature = "cuda")]
    {
        match Device::new_cuda(0) {
            Ok(d) => return Some(d),
            Err(e) => eprintln!("skipped: no usable CUDA device ({e})"),
        }
    }
    #[cfg(not(feature = "cuda"))]
    eprintln!("skipped: built without the `cuda` feature");
    None
}

#[test]
fn st_forward_and_training_step_agree_on_cpu_and_cuda() {
    let Some(gpu) = cuda() else { return };
    for cfg in [StConfig::tiny(64, 8), StConfig::state_sm(512, 16)] {
        let mut cfg = cfg;
        cfg.cell_set_len = cfg.cell_set_len.min(32);
        let r = compare_st(&cfg, &Device::Cpu, &gpu, 2).unwrap();
        eprintln!("{r:?}");
        assert!(r.forward_max_rel < 1e-3, "{r:?}");
        assert!(r.loss_rel < 1e-3, "{r:?}");
        assert!(r.weights_max_abs < 1e-3, "{r:?}");
    }
}

/// Mixed precision on CUDA: CPU f32 against CUDA bf16 (bf16 matmuls over f32 weights), to bf16's tolerance.
#[test]
fn st_bf16_on_cuda_agrees_with_f32_on_cpu() {
    let Some(gpu) = cuda() else { return };
    let (fwd, loss, w) = BF16_TOLERANCE;
    for cfg in [StConfig::tiny(64, 8), StConfig::state_sm(512, 16)] {
        let mut cfg = cfg;
        cfg.cell_set_len = cfg.cell_set_len.min(32);
        let r = compare_st_precision(&cfg, &Device::Cpu, &gpu, Precision::Bf16, 2).unwrap();
        eprintln!("bf16: {r:?}");
        assert!(r.forward_max_rel > 0.0, "bit-identical to f32: bf16 did not run ({r:?})");
        assert!(r.forward_max_rel < fwd && r.loss_rel < loss && r.weights_max_abs < w, "{r:?}");
    }
}
