//! `real_de.csv` / `pred_de.csv` exactly as cell-eval writes them (polars `write_csv` of pdex's frame):
//! f32 means in shortest f32 form, other floats in shortest f64 form (ryu, as polars: `9.962694218715363e-6`,
//! `1.0`, `NaN`, `inf`), memberships as integers. Written atomically (temporary file + rename).

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::error::{EvalError, Result};
use super::types::DeTable;

/// The DE CSV header, in cell-eval's column order.
pub const DE_COLUMNS: [&str; 11] = [
    "target",
    "feature",
    "target_mean",
    "ref_mean",
    "target_membership",
    "ref_membership",
    "log2_fold_change",
    "percent_change",
    "p_value",
    "statistic",
    "fdr",
];

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> EvalError + '_ {
    move |source| EvalError::Io { path: path.to_owned(), source }
}

/// A CSV field, quoted as polars does when it holds a separator, quote or line break.
fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}

/// A U statistic (a multiple of ½) as ryu writes it, without ryu's digit search: below 2^53 ryu's shortest form of
/// such a value is its integer part, then ".0" or ".5". Anything else goes through ryu.
fn write_statistic(w: &mut impl Write, v: f64, f64b: &mut ryu::Buffer, itoa: &mut itoa::Buffer) -> std::io::Result<()> {
    let whole = v.trunc();
    if v.is_sign_positive() && v < 1e15 && (v - whole == 0.0 || v - whole == 0.5) {
        w.write_all(itoa.format(whole as u64).as_bytes())?;
        w.write_all(if v == whole { b".0" } else { b".5" })
    } else {
        w.write_all(f64b.format(v).as_bytes())
    }
}

/// Rows formatted per parallel task when writing (about 7 MB of CSV).
const ROWS_PER_BLOCK: usize = 1 << 16;

/// Write `table` as CSV to any writer: the header, then [`write_de_rows`].
pub fn write_de<W: Write + Send>(table: &DeTable, w: &mut W) -> std::io::Result<()> {
    w.write_all(DE_COLUMNS.join(",").as_bytes())?;
    w.write_all(b"\n")?;
    write_de_rows(table, w)
}

/// Write `table`'s rows as CSV lines (no header). Blocks of rows are formatted in parallel (rayon), a window at a
/// time, while the previous window is written, in order: the output is identical to a sequential write and
/// memory stays bounded.
pub fn write_de_rows<W: Write + Send>(table: &DeTable, w: &mut W) -> std::io::Result<()> {
    use rayon::prelude::*;
    let n = table.n_rows();
    let names = Fields::new(table);
    let window = ROWS_PER_BLOCK * 2 * rayon::current_num_threads().max(1);
    let format = |start: usize| -> std::io::Result<Vec<Vec<u8>>> {
        let end = (start + window).min(n);
        (start..end)
            .step_by(ROWS_PER_BLOCK)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|a| {
                let b = (a + ROWS_PER_BLOCK).min(end);
                let mut buf = Vec::with_capacity((b - a) * 128);
                write_rows(table, &names, a..b, &mut buf)?;
                Ok(buf)
            })
            .collect()
    };
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let mut start = 0;
    while start < n {
        let write_pending = || -> std::io::Result<()> { pending.iter().try_for_each(|b| w.write_all(b)) };
        let (formatted, written) = rayon::join(|| format(start), write_pending);
        written?;
        pending = formatted?;
        start += window;
    }
    pending.iter().try_for_each(|b| w.write_all(b))
}

/// A DE CSV written in pieces, atomically: the header into a temporary file beside `path`, then tables of rows in
/// order ([`Self::write`]), then [`Self::finish`] renames it into place. Dropped unfinished (an error upstream),
/// the temporary file is removed.
pub struct DeCsvWriter {
    path: PathBuf,
    tmp: PathBuf,
    w: Option<BufWriter<std::fs::File>>,
}

impl DeCsvWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = DeCsvWriter { path: path.to_owned(), tmp, w: Some(BufWriter::with_capacity(1 << 20, f)) };
        let header = format!("{}\n", DE_COLUMNS.join(","));
        out.writer()?.write_all(header.as_bytes()).map_err(io_err(&out.tmp))?;
        Ok(out)
    }

    fn writer(&mut self) -> Result<&mut BufWriter<std::fs::File>> {
        let tmp = &self.tmp;
        self.w.as_mut().ok_or_else(|| io_err(tmp)(std::io::Error::other("DE CSV writer already finished")))
    }

    /// Append `rows` (all of its rows, in order).
    pub fn write(&mut self, rows: &DeTable) -> Result<()> {
        let w = self.writer()?;
        write_de_rows(rows, w).map_err(io_err(&self.tmp))
    }

    /// Flush, sync and rename into place.
    pub fn finish(mut self) -> Result<()> {
        let w = self.w.take().ok_or_else(|| io_err(&self.tmp)(std::io::Error::other("finished twice")))?;
        let f = w.into_inner().map_err(|e| io_err(&self.tmp)(e.into_error()))?;
        f.sync_all().map_err(io_err(&self.tmp))?;
        std::fs::rename(&self.tmp, &self.path).map_err(io_err(&self.path))
    }
}

impl Drop for DeCsvWriter {
    fn drop(&mut self) {
        if self.w.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Fields formatted once per table: the escaped target and feature names, and each feature's control mean (the
/// same on every row of a table computed against one control).
struct Fields<'a> {
    targets: Vec<std::borrow::Cow<'a, str>>,
    features: Vec<std::borrow::Cow<'a, str>>,
    /// Per feature: the bits of the first row's `ref_mean` and their text.
    ref_means: Vec<Option<(u32, String)>>,
}

impl<'a> Fields<'a> {
    fn new(table: &'a DeTable) -> Self {
        let mut ref_means = vec![None; table.features.len()];
        let mut f32b = ryu::Buffer::new();
        for (&f, &r) in table.feature_idx.iter().zip(&table.ref_mean) {
            match ref_means.get_mut(f as usize) {
                Some(slot @ None) => *slot = Some((r.to_bits(), f32b.format(r).to_owned())),
                Some(Some(_)) => {}
                None => break,
            }
            if f as usize + 1 == table.features.len() {
                break;
            }
        }
        Fields {
            targets: table.targets.iter().map(|t| csv_field(t)).collect(),
            features: table.features.iter().map(|f| csv_field(f)).collect(),
            ref_means,
        }
    }
}

/// Rows `range` of `table`, formatted as CSV lines.
fn write_rows(
    table: &DeTable,
    names: &Fields<'_>,
    range: std::ops::Range<usize>,
    w: &mut impl Write,
) -> std::io::Result<()> {
    let mut f32b = ryu::Buffer::new();
    let mut f64b = ryu::Buffer::new();
    let mut itoa = itoa::Buffer::new();
    for i in range {
        let f = table.feature_idx[i] as usize;
        w.write_all(names.targets[table.target_idx[i] as usize].as_bytes())?;
        w.write_all(b",")?;
        w.write_all(names.features[f].as_bytes())?;
        w.write_all(b",")?;
        w.write_all(f32b.format(table.target_mean[i]).as_bytes())?;
        w.write_all(b",")?;
        let r = table.ref_mean[i];
        match names.ref_means.get(f) {
            Some(Some((bits, text))) if *bits == r.to_bits() => w.write_all(text.as_bytes())?,
            _ => w.write_all(f32b.format(r).as_bytes())?,
        }
        w.write_all(b",")?;
        w.write_all(itoa.format(table.target_membership[i]).as_bytes())?;
        w.write_all(b",")?;
        w.write_all(itoa.format(table.ref_membership[i]).as_bytes())?;
        for v in [table.log2_fold_change[i], table.percent_change[i], table.p_value[i]] {
            w.write_all(b",")?;
            w.write_all(f64b.format(v).as_bytes())?;
        }
        w.write_all(b",")?;
        write_statistic(w, table.statistic[i], &mut f64b, &mut itoa)?;
        w.write_all(b",")?;
        w.write_all(f64b.format(table.fdr[i]).as_bytes())?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Write `table` to `path` atomically: a temporary file in the same folder, then a rename.
pub fn write_de_csv(table: &DeTable, path: &Path) -> Result<()> {
    let mut w = DeCsvWriter::create(path)?;
    w.write(table)?;
    w.finish()
}

fn parse_f64(s: &str) -> Option<f64> {
    // polars spells the specials inf, -inf and NaN; an empty field is a null, read as NaN
    if s.is_empty() {
        return Some(f64::NAN);
    }
    s.parse::<f64>().ok()
}

fn parse_count(s: &str) -> Option<u64> {
    s.parse::<u64>().ok().or_else(|| {
        let f: f64 = s.parse().ok()?;
        (f >= 0.0 && f.fract() == 0.0 && f < 2f64.powi(63)).then_some(f as u64)
    })
}

/// Read a DE CSV (`--de-real/--de-pred`): the eleven columns by name (others ignored), rows in file order.
pub fn read_de_csv(path: &Path) -> Result<DeTable> {
    let file = std::fs::File::open(path).map_err(io_err(path))?;
    read_de(std::io::BufReader::with_capacity(1 << 20, file), path)
}

/// Read a DE CSV from any reader; `path` names it in errors.
pub fn read_de<R: std::io::Read>(reader: R, path: &Path) -> Result<DeTable> {
    let csv_err = |e: csv::Error| EvalError::Csv { path: path.to_owned(), message: e.to_string() };
    let mut rdr = csv::ReaderBuilder::new().has_headers(true).from_reader(reader);
    let header: Vec<String> = rdr.headers().map_err(csv_err)?.iter().map(str::to_owned).collect();
    let mut idx = [0usize; 11];
    let mut missing = Vec::new();
    for (k, col) in DE_COLUMNS.iter().enumerate() {
        match header.iter().position(|h| h == col) {
            Some(p) => idx[k] = p,
            None => missing.push(col.to_string()),
        }
    }
    if !missing.is_empty() {
        return Err(EvalError::CsvMissingColumn {
            path: path.to_owned(),
            missing: missing.join(", "),
            header: header.join(","),
        });
    }
    let mut t = DeTable::default();
    let mut targets: HashMap<String, u32> = HashMap::new();
    let mut features: HashMap<String, u32> = HashMap::new();
    let mut record = csv::StringRecord::new();
    while rdr.read_record(&mut record).map_err(csv_err)? {
        let line = record.position().map_or(0, |p| p.line());
        let field = |k: usize| record.get(idx[k]).unwrap_or("");
        let bad = |k: usize| EvalError::CsvBadNumber {
            path: path.to_owned(),
            line,
            column: DE_COLUMNS[k].to_owned(),
            value: field(k).to_owned(),
        };
        let f64_at = |k: usize| parse_f64(field(k)).ok_or_else(|| bad(k));
        let intern = |map: &mut HashMap<String, u32>, list: &mut Vec<String>, s: &str| -> u32 {
            if let Some(&i) = map.get(s) {
                return i;
            }
            let i = list.len() as u32;
            list.push(s.to_owned());
            map.insert(s.to_owned(), i);
            i
        };
        let ti = intern(&mut targets, &mut t.targets, field(0));
        let fi = intern(&mut features, &mut t.features, field(1));
        t.target_idx.push(ti);
        t.feature_idx.push(fi);
        t.target_mean.push(field(2).parse::<f32>().map_err(|_| bad(2))?);
        t.ref_mean.push(field(3).parse::<f32>().map_err(|_| bad(3))?);
        t.target_membership.push(parse_count(field(4)).ok_or_else(|| bad(4))?);
        t.ref_membership.push(parse_count(field(5)).ok_or_else(|| bad(5))?);
        t.log2_fold_change.push(f64_at(6)?);
        t.percent_change.push(f64_at(7)?);
        t.p_value.push(f64_at(8)?);
        t.statistic.push(f64_at(9)?);
        t.fdr.push(f64_at(10)?);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistic_fast_path_writes_what_ryu_writes() {
        let (mut f64b, mut itoa) = (ryu::Buffer::new(), itoa::Buffer::new());
        let mut values: Vec<f64> = (0..20_000).map(|k| k as f64 / 2.0).collect();
        values.extend([1e15 - 0.5, 1e15, 4.5e14 + 0.5, 1e16, 2f64.powi(53), 0.25, 1.0 / 3.0, -0.0, -1.5, f64::NAN]);
        values.extend([f64::INFINITY, 123456789.5, 999999999999999.5]);
        for v in values {
            let mut got = Vec::new();
            write_statistic(&mut got, v, &mut f64b, &mut itoa).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), ryu::Buffer::new().format(v), "{v}");
        }
    }

    #[test]
    fn unfinished_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("real_de.csv");
        let mut w = DeCsvWriter::create(&path).unwrap();
        w.write(&DeTable::default()).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "temporary file left behind");
        let w = DeCsvWriter::create(&path).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{}\n", DE_COLUMNS.join(",")));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn round_trip_formats() {
        let t = DeTable {
            targets: vec!["G1".into()],
            features: vec!["A".into(), "B,2".into()],
            target_idx: vec![0, 0],
            feature_idx: vec![0, 1],
            target_mean: vec![9.730496, 0.0],
            ref_mean: vec![10.662123, 0.0],
            target_membership: vec![33, 33],
            ref_membership: vec![60, 60],
            log2_fold_change: vec![-0.13190938158066018, f64::INFINITY],
            percent_change: vec![-0.08737718968240381, f64::NAN],
            p_value: vec![9.962694218715363e-6, 1.0],
            statistic: vec![895.0, 990.0],
            fdr: vec![0.9189077636254538, 1.0],
        };
        let mut buf = Vec::new();
        write_de(&t, &mut buf).unwrap();
        let s = String::from_utf8(buf.clone()).unwrap();
        assert_eq!(
            s.lines().nth(1).unwrap(),
            "G1,A,9.730496,10.662123,33,60,-0.13190938158066018,-0.08737718968240381,9.962694218715363e-6,895.0,0.9189077636254538"
        );
        assert_eq!(s.lines().nth(2).unwrap(), "G1,\"B,2\",0.0,0.0,33,60,inf,NaN,1.0,990.0,1.0");
        let back = read_de(&buf[..], Path::new("x.csv")).unwrap();
        assert_eq!(back.features, t.features);
        assert_eq!(back.target_mean, t.target_mean);
        assert!(back.percent_change[1].is_nan());
    }

    #[test]
    fn control_means_that_differ_between_targets_are_written_as_stored() {
        // ref_mean is formatted once per feature; a table whose rows disagree on it (e.g. read from another tool's
        // CSV) must still get each row's own value
        let rows = 6;
        let t = DeTable {
            targets: vec!["G1".into(), "G2".into(), "G3".into()],
            features: vec!["A".into(), "B".into()],
            target_idx: vec![0, 0, 1, 1, 2, 2],
            feature_idx: vec![0, 1, 0, 1, 1, 0],
            target_mean: vec![1.5; rows],
            ref_mean: vec![0.25, 0.5, 0.25, 0.75, 0.5, 0.125],
            target_membership: vec![3; rows],
            ref_membership: vec![9; rows],
            log2_fold_change: vec![0.0; rows],
            percent_change: vec![0.0; rows],
            p_value: vec![1.0; rows],
            statistic: vec![4.5; rows],
            fdr: vec![1.0; rows],
        };
        let mut buf = Vec::new();
        write_de(&t, &mut buf).unwrap();
        let refs: Vec<String> =
            String::from_utf8(buf).unwrap().lines().skip(1).map(|l| l.split(',').nth(3).unwrap().to_owned()).collect();
        assert_eq!(refs, ["0.25", "0.5", "0.25", "0.75", "0.5", "0.125"]);
    }
}
