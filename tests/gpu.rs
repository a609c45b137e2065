//! CPU vs CUDA agreement for ST: forward output and one training step. Runs only when the binary is built with
//! `--features cuda` and a CUDA device opens; otherwise it prints why it skipped. `benches/gpu.sh` runs the same
//! check on the GPU box through `vcell gpu-check` (that machine has no Rust toolchain to run `cargo test`).
#![allow(clippy::unwrap_used)]

use candle_core::Device;
use vcell::model::device_check::compare_st;
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
