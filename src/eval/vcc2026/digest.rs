//! vcell's own provenance digests for `run_meta.json` and the bundle's `manifest.json`, and the submission guard
//! of `score --real-bundle` (cell-eval2 `real_bundle.py::check_submission`, design/vcc2026.md §7).
//!
//! cell-eval2's `config_digest` / `source_fingerprint` hash its Python config objects and are not reproduced.
//! vcell writes values under the same keys with `"digest_scheme": "vcell-1"`:
//! - `config_digest`: sha256 over a canonical JSON list of the resolved settings that move a number (preset,
//!   members, comparator, control label, input type, the normalisation / DE / gate constants). Not `pert_col`
//!   (which column holds the labels moves no number; the labels themselves are in the fingerprint), not memory
//!   or chunk sizes.
//! - `source_fingerprint`: sha256 over the real file's shape, its var names (in order) and the per-cell
//!   perturbation assignment (sorted label set + each cell's index into it), as cell-eval2's non-strict
//!   `cache.py::fingerprint_adata` does. Metadata only: X is never read (cell-eval2 also hashes X's dtype, which
//!   vcell does not see; its strict mode hashes X itself).
//!
//! Digests are compared only between files of the same scheme (both vcell-1, or both cell-eval2). Across schemes
//! the guard warns and compares what both record: `comparator`, `input_type_real_effective`,
//! `resolved_de_backend` (vcell reproduces cell-eval2's CPU `scanpy` engine, so a gpudge bundle is refused) and the
//! number of perturbations.

use std::collections::{BTreeSet, HashMap};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::metrics::{EXPR_CAPPED_NORM, RESULT_ORDER};
use super::validate::{LoadedFile, Vcc2026Options};
use super::{Result, Vcc2026Error, ALPHA, BULK_TARGET_SUM, CELL_TARGET_SUM, DE_EPSILON, MAX_COUNTS_PER_CELL, MIN_CPM};

/// The value of `digest_scheme` in vcell's `run_meta.json` / `manifest.json`.
pub const DIGEST_SCHEME: &str = "vcell-1";

/// The comparator every vcc2026 member uses.
pub const COMPARATOR: &str = "bulk_lognorm";

/// cell-eval2's `SUBMISSION_PEERS`: the fields a run must share with the bundle.
pub const SUBMISSION_PEERS: [&str; 8] = [
    "config_digest",
    "comparator",
    "source_fingerprint",
    "source_fingerprint_strict",
    "resolved_device",
    "resolved_de_backend",
    "input_type_real_effective",
    "de_real_fingerprint",
];

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical settings list `config_digest` hashes (sorted by key).
pub fn config_payload(opts: &Vcc2026Options) -> Value {
    let members: Vec<&str> = RESULT_ORDER.iter().copied().chain(std::iter::once(EXPR_CAPPED_NORM)).collect();
    let mut items: Vec<(&str, Value)> = vec![
        ("allow_fractional_counts", json!(opts.allow_fractional)),
        ("bulk_target_sum", json!(BULK_TARGET_SUM)),
        ("comparator", json!(COMPARATOR)),
        ("control", json!(opts.control)),
        ("de.epsilon", json!(DE_EPSILON)),
        ("de.fdr_scope", json!("per_pert")),
        ("de.mean_calc", json!("arithmetic")),
        ("de.method", json!("wilcoxon")),
        ("de.p_adj_threshold", json!(ALPHA)),
        ("filter.filter_gene_min_cpm_cell", json!(MIN_CPM)),
        ("input_type", json!("counts")),
        ("max_counts_per_cell", json!(MAX_COUNTS_PER_CELL)),
        ("members", json!(members)),
        ("metrics_version", json!(1)),
        ("preset", json!("vcc2026")),
        ("target_sum", json!(CELL_TARGET_SUM)),
    ];
    items.sort_by(|a, b| a.0.cmp(b.0));
    Value::Array(items.into_iter().map(|(k, v)| json!([k, v])).collect())
}

/// `config_digest` (vcell-1).
pub fn config_digest(opts: &Vcc2026Options) -> String {
    let text = serde_json::to_string(&config_payload(opts)).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(DIGEST_SCHEME.as_bytes());
    h.update([0]);
    h.update(text.as_bytes());
    hex(&h.finalize())
}

fn update_str(h: &mut Sha256, s: &str) {
    h.update((s.len() as u64).to_le_bytes());
    h.update(s.as_bytes());
}

/// `source_fingerprint` (vcell-1) of a loaded real file: shape, var names, per-cell perturbation labels.
pub fn source_fingerprint(real: &LoadedFile, var_names: &[String]) -> String {
    let (n_obs, n_vars) = real.source.shape();
    let mut h = Sha256::new();
    h.update(DIGEST_SCHEME.as_bytes());
    h.update(b"\0adata\0");
    h.update((n_obs as u64).to_le_bytes());
    h.update((n_vars as u64).to_le_bytes());
    h.update((var_names.len() as u64).to_le_bytes());
    for v in var_names {
        update_str(&mut h, v);
    }
    // the sorted set of labels in use, then each cell's index into it (−1: no label)
    let cats = &real.pert.categories;
    let used: BTreeSet<&str> =
        real.pert.codes.iter().filter(|&&c| c >= 0).filter_map(|&c| cats.get(c as usize)).map(String::as_str).collect();
    h.update((used.len() as u64).to_le_bytes());
    for l in &used {
        update_str(&mut h, l);
    }
    let pos: HashMap<&str, i64> = used.iter().enumerate().map(|(i, l)| (*l, i as i64)).collect();
    for &c in &real.pert.codes {
        let k = if c < 0 { -1 } else { cats.get(c as usize).and_then(|l| pos.get(l.as_str())).copied().unwrap_or(-1) };
        h.update(k.to_le_bytes());
    }
    hex(&h.finalize())
}

/// The provenance keys vcell adds to `run_meta.json` and `manifest.json`.
pub fn provenance(opts: &Vcc2026Options, source_fingerprint: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("digest_scheme", json!(DIGEST_SCHEME)),
        ("config_digest", json!(config_digest(opts))),
        ("source_fingerprint", json!(source_fingerprint)),
        ("source_fingerprint_strict", json!(false)),
        ("comparator", json!(COMPARATOR)),
        ("resolved_device", json!("cpu")),
        ("resolved_de_backend", json!("scanpy")),
        ("input_type_real_effective", json!("counts")),
        ("de_real_fingerprint", Value::Null),
    ]
}

/// Which digest scheme a `run_meta.json` / `manifest.json` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    /// vcell's, with its version (`vcell-1`).
    Vcell(String),
    /// cell-eval2's own digests (`cell_eval2_version` present, no `digest_scheme`).
    CellEval2,
    /// Neither (e.g. written by a vcell without digests).
    Unknown,
}

impl Scheme {
    pub fn of(meta: &Value) -> Scheme {
        if let Some(s) = meta.get("digest_scheme").and_then(Value::as_str) {
            Scheme::Vcell(s.to_owned())
        } else if meta.get("cell_eval2_version").is_some() {
            Scheme::CellEval2
        } else {
            Scheme::Unknown
        }
    }

    fn describe(&self) -> String {
        match self {
            Scheme::Vcell(s) => format!("vcell ({s})"),
            Scheme::CellEval2 => "cell-eval2".to_owned(),
            Scheme::Unknown => "unknown (no digest_scheme, no cell_eval2_version)".to_owned(),
        }
    }
}

/// Check a run against a bundle before scoring. `run_n_perts` is the run's number of scored perturbations
/// (`count` of `pds_cosine` in `agg_results.csv`), `bundle_n_perts` the anchor's (`n_perturbations_max` of
/// `pds_cosine`). Returns the warnings to print; a mismatch is an error naming every differing field.
pub fn check_submission(
    manifest: &Value,
    run_meta: &Value,
    run_n_perts: Option<usize>,
    bundle_n_perts: Option<usize>,
) -> Result<Vec<String>> {
    let (ms, rs) = (Scheme::of(manifest), Scheme::of(run_meta));
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    let compare =
        |field: &str, fail_closed: bool, problems: &mut Vec<String>| match (manifest.get(field), run_meta.get(field)) {
            (Some(want), Some(got)) if want != got => {
                problems.push(format!("{field}: bundle={want} submission={got}"));
            }
            (Some(_), Some(_)) => {}
            (want, _) if fail_closed => problems.push(format!(
                "{field}: missing from {}",
                if want.is_none() { "the bundle manifest" } else { "run_meta.json" }
            )),
            _ => {}
        };
    let same = ms == rs && ms != Scheme::Unknown;
    if same {
        for f in SUBMISSION_PEERS {
            compare(f, true, &mut problems);
        }
    } else {
        warnings.push(format!(
            "warning: cannot compare digests: the bundle's manifest uses {} digests and run_meta.json uses {}; \
             comparing comparator, input type, DE engine and the number of perturbations only",
            ms.describe(),
            rs.describe()
        ));
        compare("comparator", true, &mut problems);
        compare("input_type_real_effective", false, &mut problems);
        compare("resolved_de_backend", false, &mut problems);
    }
    if let (Some(r), Some(b)) = (run_n_perts, bundle_n_perts) {
        if r != b {
            problems.push(format!("number of perturbations: bundle={b} submission={r}"));
        }
    }
    if problems.is_empty() {
        Ok(warnings)
    } else {
        Err(Vcc2026Error::Score(format!(
            "the run was not produced under this real bundle's configuration/data; refusing to score: {}",
            problems.join("; ")
        )))
    }
}

/// `real_bundle_digest` of `score.csv`: cell-eval2's `real_bundle.py::manifest_digest`, sha256 of
/// `json.dumps(manifest − created_utc, sort_keys=True, separators=(",", ":"))` (Python's serialisation reproduced
/// by [`python_json`]).
pub fn manifest_digest(manifest: &Value) -> String {
    let mut text = String::new();
    match manifest {
        Value::Object(map) => {
            let kept: serde_json::Map<String, Value> =
                map.iter().filter(|(k, _)| k.as_str() != "created_utc").map(|(k, v)| (k.clone(), v.clone())).collect();
            python_json(&Value::Object(kept), &mut text);
        }
        other => python_json(other, &mut text),
    }
    hex(&Sha256::digest(text.as_bytes()))
}

/// `json.dumps(v, sort_keys=True, separators=(",", ":"))` as Python writes it: keys sorted by code point, ASCII
/// only (`\uXXXX` escapes, surrogate pairs above the BMP), floats in `repr` form (`1e-09`, `50000.0`, `1e+16`).
pub fn python_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) if !n.is_f64() => out.push_str(&i.to_string()),
            (_, Some(u), _) if !n.is_f64() => out.push_str(&u.to_string()),
            (_, _, Some(f)) => out.push_str(&python_float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => python_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                python_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // Python sorts str keys by code point; Rust's str order is byte order of UTF-8, the same order
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                python_str(k, out);
                out.push(':');
                python_json(&map[k.as_str()], out);
            }
            out.push('}');
        }
    }
}

fn python_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{u:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Python's `repr(float)`: the shortest round-trip digits, fixed notation for decimal exponents in [-4, 16),
/// otherwise `d.ddde±XX`.
pub fn python_float_repr(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity".into() } else { "-Infinity".into() };
    }
    if x == 0.0 {
        return if x.is_sign_negative() { "-0.0".into() } else { "0.0".into() };
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "d.ddd" + "e" + exponent
    let sci = format!("{:e}", x.abs());
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if x < 0.0 { "-" } else { "" };
    if (-4..16).contains(&exp) {
        let n = digits.len() as i32;
        let body = if exp < 0 {
            format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
        } else if exp + 1 >= n {
            format!("{}{}.0", digits, "0".repeat((exp + 1 - n) as usize))
        } else {
            format!("{}.{}", &digits[..(exp + 1) as usize], &digits[(exp + 1) as usize..])
        };
        format!("{sign}{body}")
    } else {
        let m = if digits.len() > 1 { format!("{}.{}", &digits[..1], &digits[1..]) } else { digits.clone() };
        let esign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{m}e{esign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #[test]
    fn python_float_repr_matches_python() {
        // (value, Python's repr)
        for (x, want) in [
            (50000.0, "50000.0"),
            (1e-9, "1e-09"),
            (5e-5, "5e-05"),
            (0.0001, "0.0001"),
            (0.1, "0.1"),
            (1e16, "1e+16"),
            (1234567890123456.0, "1234567890123456.0"),
            (-2.5, "-2.5"),
            (0.5468046683176828, "0.5468046683176828"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (1e22, "1e+22"),
            (2.0, "2.0"),
        ] {
            assert_eq!(python_float_repr(x), want, "{x}");
        }
        let mut out = String::new();
        python_json(&serde_json::json!({"b": [1, 2.0, null, "é\n"], "a": true}), &mut out);
        assert_eq!(out, r#"{"a":true,"b":[1,2.0,null,"\u00e9\n"]}"#);
    }

    use super::*;

    fn vcell_meta(cfg: &str, src: &str) -> Value {
        let mut m = serde_json::Map::new();
        for (k, v) in provenance(&Vcc2026Options::default(), src) {
            m.insert(k.to_owned(), v);
        }
        m.insert("config_digest".into(), json!(cfg));
        Value::Object(m)
    }

    #[test]
    fn vcc2026_config_digest_ignores_pert_col_and_memory_but_not_control() {
        let a = Vcc2026Options::default();
        let b = Vcc2026Options { pert_col: "gene".into(), chunk_nnz: 7, ..Vcc2026Options::default() };
        let c = Vcc2026Options { control: "ctrl".into(), ..Vcc2026Options::default() };
        assert_eq!(config_digest(&a), config_digest(&b));
        assert_ne!(config_digest(&a), config_digest(&c));
        assert_eq!(config_digest(&a).len(), 64);
    }

    #[test]
    fn vcc2026_guard_same_scheme() {
        let m = vcell_meta("x", "s");
        assert!(check_submission(&m, &vcell_meta("x", "s"), Some(8), Some(8)).unwrap().is_empty());
        let e = check_submission(&m, &vcell_meta("y", "s"), None, None).unwrap_err().to_string();
        assert!(e.contains("config_digest"), "{e}");
        let e = check_submission(&m, &vcell_meta("x", "t"), None, None).unwrap_err().to_string();
        assert!(e.contains("source_fingerprint"), "{e}");
        // fail-closed on a missing peer
        let mut r = vcell_meta("x", "s");
        r.as_object_mut().unwrap().remove("resolved_device");
        let e = check_submission(&m, &r, None, None).unwrap_err().to_string();
        assert!(e.contains("resolved_device: missing from run_meta.json"), "{e}");
        let e = check_submission(&m, &vcell_meta("x", "s"), Some(7), Some(8)).unwrap_err().to_string();
        assert!(e.contains("number of perturbations"), "{e}");
    }

    #[test]
    fn vcc2026_guard_mixed_schemes_warns() {
        let ce2 = json!({"cell_eval2_version": "0.20.0", "config_digest": "abc", "comparator": "bulk_lognorm",
                         "input_type_real_effective": "counts"});
        let w = check_submission(&ce2, &vcell_meta("x", "s"), Some(8), Some(8)).unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("cannot compare digests"));
        let other = json!({"cell_eval2_version": "0.20.0", "comparator": "expr_lognorm"});
        assert!(check_submission(&other, &vcell_meta("x", "s"), None, None).is_err());
        let gpu =
            json!({"cell_eval2_version": "0.20.0", "comparator": "bulk_lognorm", "resolved_de_backend": "gpudge"});
        let e = check_submission(&gpu, &vcell_meta("x", "s"), None, None).unwrap_err().to_string();
        assert!(e.contains("resolved_de_backend"), "{e}");
        // two cell-eval2 files compare their own digests
        let ce2b = json!({"cell_eval2_version": "0.20.0", "config_digest": "abd", "comparator": "bulk_lognorm"});
        let e = check_submission(&ce2, &ce2b, None, None).unwrap_err().to_string();
        assert!(e.contains("config_digest"), "{e}");
    }
}
