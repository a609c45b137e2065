//! Number formatting identical to polars' CSV writer (shortest round-trip via ryu; `NaN`, `inf`, `-inf`), and atomic
//! file writes.
use std::io::Write;
use std::path::Path;

/// An f64 as polars writes it: `1.0`, `0.45454545454545453`, `9.962694218715363e-6`, `NaN`, `inf`, `-inf`.
pub fn fmt_f64(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".to_string()
        } else {
            "-inf".to_string()
        }
    } else {
        let mut b = ryu::Buffer::new();
        b.format_finite(v).to_string()
    }
}

/// A nullable f64 cell: empty for null.
pub fn fmt_opt(v: Option<f64>) -> String {
    v.map(fmt_f64).unwrap_or_default()
}

/// Parses a cell written by polars: empty → `None`; `NaN`/`inf`/`-inf` and plain numbers.
pub fn parse_opt(s: &str) -> Result<Option<f64>, std::num::ParseFloatError> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    match s {
        "NaN" | "nan" => Ok(Some(f64::NAN)),
        "inf" => Ok(Some(f64::INFINITY)),
        "-inf" => Ok(Some(f64::NEG_INFINITY)),
        _ => s.parse::<f64>().map(Some),
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".to_string());
    let tmp_name = format!(".{name}.{}.tmp", std::process::id());
    let tmp = match dir {
        Some(d) => d.join(tmp_name),
        None => Path::new(&tmp_name).to_path_buf(),
    };
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polars_style() {
        assert_eq!(fmt_f64(1.0), "1.0");
        assert_eq!(fmt_f64(0.45454545454545453), "0.45454545454545453");
        assert_eq!(fmt_f64(9.962694218715363e-6), "9.962694218715363e-6");
        assert_eq!(fmt_f64(f64::NAN), "NaN");
        assert_eq!(fmt_f64(f64::NEG_INFINITY), "-inf");
        assert_eq!(fmt_opt(None), "");
        assert_eq!(parse_opt("NaN").ok().flatten().map(f64::is_nan), Some(true));
    }
}
