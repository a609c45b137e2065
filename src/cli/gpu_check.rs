//! `vcell gpu-check`: do the CPU and an accelerator compute the same ST forward pass and training step?
use anyhow::bail;
use clap::Args;

use crate::model::device_check::{compare_st, compare_st_precision, BF16_TOLERANCE};
use crate::model::precision::Precision;
use crate::model::st::StConfig;

#[derive(Args, Debug, Clone)]
pub struct GpuCheckArgs {
    /// The device to compare with the CPU.
    #[arg(long, default_value = "cuda")]
    pub device: String,
}

pub fn run(args: GpuCheckArgs) -> anyhow::Result<()> {
    let device = super::device::parse_device(&args.device)?;
    if device.is_cpu() {
        bail!("--device {} is the CPU: nothing to compare", args.device);
    }
    let mut failed = false;
    for (name, mut cfg) in [("tiny", StConfig::tiny(64, 8)), ("state_sm (512 genes)", StConfig::state_sm(512, 16))] {
        cfg.cell_set_len = cfg.cell_set_len.min(32);
        let r = compare_st(&cfg, &candle_core::Device::Cpu, &device, 2)?;
        let ok = r.forward_max_rel < 1e-3 && r.loss_rel < 1e-3 && r.weights_max_abs < 1e-3;
        failed |= !ok;
        println!(
            "{name:<22} forward max rel diff {:.2e}  loss rel diff {:.2e}  weights max abs diff {:.2e}  {}",
            r.forward_max_rel,
            r.loss_rel,
            r.weights_max_abs,
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    // Mixed precision: CPU f32 against the device in bf16 (bf16 matmuls, f32 weights), to bf16's tolerance.
    let (tf, tl, tw) = BF16_TOLERANCE;
    for (name, mut cfg) in [("tiny bf16", StConfig::tiny(64, 8)), ("state_sm bf16", StConfig::state_sm(512, 16))] {
        cfg.cell_set_len = cfg.cell_set_len.min(32);
        let r = compare_st_precision(&cfg, &candle_core::Device::Cpu, &device, Precision::Bf16, 2)?;
        let ok = r.forward_max_rel < tf && r.loss_rel < tl && r.weights_max_abs < tw;
        failed |= !ok;
        println!(
            "{name:<22} forward max rel diff {:.2e}  loss rel diff {:.2e}  weights max abs diff {:.2e}  {}",
            r.forward_max_rel,
            r.loss_rel,
            r.weights_max_abs,
            if ok { "ok" } else { "MISMATCH" }
        );
    }
    if failed {
        bail!("CPU and {} disagree beyond tolerance (1e-3 in f32; {tf:e}/{tl:e}/{tw:e} in bf16)", args.device);
    }
    Ok(())
}
