//! Test support for the metric tests: a minimal DE CSV → `DeTable` loader (the real reader lives in
//! `src/eval/de_csv.rs` on the `evalde` branch), fixture paths and CSV comparison helpers.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use vcell::eval::DeTable;

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reads a file, gunzipping `*.gz` through the `gzip` binary (no gzip crate in the dependency set).
pub fn read_maybe_gz(path: &Path) -> Vec<u8> {
    if path.extension().is_some_and(|e| e == "gz") {
        let out = Command::new("gzip").arg("-dc").arg(path).output().unwrap();
        assert!(out.status.success(), "gunzip {}", path.display());
        out.stdout
    } else {
        std::fs::read(path).unwrap()
    }
}

fn parse_f64(s: &str) -> f64 {
    match s {
        "NaN" | "nan" => f64::NAN,
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        "" => f64::NAN,
        _ => s.parse().unwrap(),
    }
}

/// Minimal `DeTable::from_csv_reader` for tests: pdex's columns, rows kept in file order.
pub fn de_from_csv(bytes: &[u8]) -> DeTable {
    let mut r = csv::Reader::from_reader(bytes);
    let h = r.headers().unwrap().clone();
    let col = |n: &str| h.iter().position(|c| c == n).unwrap();
    let (ct, cf, cl, cp, cq) = (col("target"), col("feature"), col("log2_fold_change"), col("p_value"), col("fdr"));
    let mut t = DeTable::default();
    let mut ti: HashMap<String, u32> = HashMap::new();
    let mut fi: HashMap<String, u32> = HashMap::new();
    for rec in r.records() {
        let rec = rec.unwrap();
        let target = rec.get(ct).unwrap();
        let feature = rec.get(cf).unwrap();
        let a = *ti.entry(target.to_string()).or_insert_with(|| {
            t.targets.push(target.to_string());
            (t.targets.len() - 1) as u32
        });
        let b = *fi.entry(feature.to_string()).or_insert_with(|| {
            t.features.push(feature.to_string());
            (t.features.len() - 1) as u32
        });
        t.target_idx.push(a);
        t.feature_idx.push(b);
        t.log2_fold_change.push(parse_f64(rec.get(cl).unwrap()));
        t.p_value.push(parse_f64(rec.get(cp).unwrap()));
        t.fdr.push(parse_f64(rec.get(cq).unwrap()));
    }
    t
}

pub fn load_de(dir: &Path, name: &str) -> DeTable {
    let plain = dir.join(format!("{name}.csv"));
    let path = if plain.exists() { plain } else { dir.join(format!("{name}.csv.gz")) };
    de_from_csv(&read_maybe_gz(&path))
}

/// A CSV as (header, rows of cells).
pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap();
    let h = r.headers().unwrap().iter().map(str::to_string).collect();
    let rows = r.records().map(|x| x.unwrap().iter().map(str::to_string).collect()).collect();
    (h, rows)
}

/// |a − b| with NaN == NaN (0) and null == null (0); mismatched null/NaN-ness is +inf.
pub fn cell_diff(a: &str, b: &str) -> f64 {
    if a == b {
        return 0.0;
    }
    if a.is_empty() || b.is_empty() {
        return f64::INFINITY;
    }
    let (x, y) = (parse_f64(a), parse_f64(b));
    if x.is_nan() && y.is_nan() || x == y {
        return 0.0;
    }
    if x.is_nan() || y.is_nan() {
        return f64::INFINITY;
    }
    (x - y).abs()
}

/// Cells of one h5ad file as dense f32 rows, with their labels (`target_gene`), after cell-eval's log-normalisation
/// check (integer data → `normalize_total` to the median cell total, then `log1p`, emulated per the spec §1).
pub struct Cells {
    pub n_cols: usize,
    pub data: Vec<f32>,
    pub labels: Vec<String>,
    pub genes: Vec<String>,
}

pub fn load_cells(path: &Path) -> Cells {
    use vcell::data::anndata::XMatrix;
    use vcell::data::h5ad::H5adReader;
    let tmp;
    let path = if path.extension().is_some_and(|e| e == "gz") {
        tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x.h5ad");
        std::fs::write(&p, read_maybe_gz(path)).unwrap();
        p
    } else {
        path.to_path_buf()
    };
    let r = H5adReader::open(&path).unwrap();
    let genes = r.var_names().unwrap();
    let col = r.obs_column("target_gene").unwrap();
    let labels: Vec<String> = (0..col.len()).map(|i| col.label(i).unwrap_or_else(|| "nan".into())).collect();
    let x = r.read_x().unwrap();
    let (n, g) = x.shape();
    let mut data = vec![0.0f32; n * g];
    match x {
        XMatrix::Sparse(m) => {
            for (i, row) in m.outer_iterator().enumerate() {
                for (j, &v) in row.iter() {
                    data[i * g + j] = v;
                }
            }
        }
        XMatrix::Dense(a) => {
            for (k, v) in a.iter().enumerate() {
                data[k] = *v;
            }
        }
    }
    let is_counts = data.iter().all(|v| (v - v.round()).abs() <= 1e-3);
    if is_counts {
        let sums: Vec<f32> =
            (0..n).map(|i| data[i * g..(i + 1) * g].iter().map(|&v| f64::from(v)).sum::<f64>() as f32).collect();
        let mut s = sums.clone();
        s.sort_by(f32::total_cmp);
        let target = if n % 2 == 1 { s[n / 2] } else { (s[n / 2 - 1] + s[n / 2]) / 2.0 };
        for i in 0..n {
            let f = sums[i] / target;
            for v in &mut data[i * g..(i + 1) * g] {
                if *v != 0.0 {
                    *v = (*v / f).ln_1p();
                }
            }
        }
    }
    Cells { n_cols: g, data, labels, genes }
}

/// cell-eval's pseudobulk: polars group_by mean (f64 accumulation) returned as f32, labels sorted.
pub fn pseudobulk(c: &Cells) -> vcell::eval::Pseudobulk {
    let mut labels: Vec<String> = c.labels.clone();
    labels.sort();
    labels.dedup();
    let g = c.n_cols;
    let mut sums = vec![0.0f64; labels.len() * g];
    let mut counts = vec![0usize; labels.len()];
    for (i, l) in c.labels.iter().enumerate() {
        let k = labels.binary_search(l).unwrap();
        counts[k] += 1;
        for j in 0..g {
            sums[k * g + j] += f64::from(c.data[i * g + j]);
        }
    }
    let means_f64: Vec<f64> = sums.iter().enumerate().map(|(idx, s)| s / counts[idx / g] as f64).collect();
    let means = means_f64.iter().map(|&m| m as f32).collect();
    vcell::eval::Pseudobulk { labels, counts, n_cols: g, means, means_f64 }
}
