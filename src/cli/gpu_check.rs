//! `vcell gpu-check`: do the CPU and an accelerator compute the same ST forward pass and training step?
use anyhow::bail;
use clap::Args;

use crate::model::device_check::{compare_st_precision, BF16_TOLERANCE};
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
    // f32 against f32 to 1e-3; then CPU f32 against the device in bf16 (bf16 matmuls, f32 weights) to bf16's
    // tolerance
    let (tf, tl, tw) = BF16_TOLERANCE;
    let checks = [
        ("tiny", StConfig::tiny(64, 8), Precision::F32, (1e-3, 1e-3, 1e-3)),
        ("state_sm (512 genes)", StConfig::state_sm(512, 16), Precision::F32, (1e-3, 1e-3, 1e-3)),
        ("tiny bf16", StConfig::tiny(64, 8), Precision::Bf16, BF16_TOLERANCE),
        ("state_sm bf16", StConfig::state_sm(512, 16), Precision::Bf16, BF16_TOLERANCE),
    ];
    let mut failed = false;
    for (name, mut cfg, precision, (max_fwd, max_loss, max_w)) in checks {
        cfg.cell_set_len = cfg.cell_set_len.min(32);
        let r = compare_st_precision(&cfg, &candle_core::Device::Cpu, &device, precision, 2)?;
        let ok = r.forward_max_rel < max_fwd && r.loss_rel < max_loss && r.weights_max_abs < max_w;
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
