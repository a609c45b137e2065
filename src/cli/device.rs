//! `--device cpu|cuda[:N]|auto` → a candle `Device`.
use anyhow::bail;
use candle_core::Device;

/// Parse a device flag. `auto` picks CUDA when the `cuda` feature is built in and a device opens, else the CPU,
/// and says which on stderr.
pub fn parse_device(spec: &str) -> anyhow::Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto_device()),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal: usize = match s.strip_prefix("cuda:") {
                Some(n) => n.parse().map_err(|_| anyhow::anyhow!("bad CUDA ordinal in --device {s:?}"))?,
                None => 0,
            };
            cuda_device(ordinal)
        }
        other => bail!("unknown --device {other:?}: use cpu, cuda, cuda:N or auto"),
    }
}

#[cfg(feature = "cuda")]
fn cuda_device(ordinal: usize) -> anyhow::Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| anyhow::anyhow!("cannot open CUDA device {ordinal}: {e}"))
}

#[cfg(not(feature = "cuda"))]
fn cuda_device(_ordinal: usize) -> anyhow::Result<Device> {
    bail!("this vcell was built without CUDA: rebuild with `cargo build --release --features cuda` (see README)")
}

fn auto_device() -> Device {
    #[cfg(feature = "cuda")]
    {
        match Device::new_cuda(0) {
            Ok(d) => {
                eprintln!("device: cuda:0");
                return d;
            }
            Err(e) => eprintln!("device: no usable CUDA device ({e}); falling back to cpu"),
        }
    }
    #[cfg(not(feature = "cuda"))]
    eprintln!("device: cpu (built without the `cuda` feature)");
    Device::Cpu
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device("CPU").unwrap().is_cpu());
        assert!(parse_device("gpu").unwrap_err().to_string().contains("unknown --device"));
        assert!(parse_device("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse_device("cuda").unwrap_err().to_string().contains("--features cuda"));
        assert!(parse_device("auto").is_ok());
    }
}
