//! Small flat parquet tables as polars writes them for cell-eval2 (`anchor_agg.parquet`, `anchor_splits.parquet`,
//! `de_real.parquet`): every column nullable (`OPTIONAL`), strings `BYTE_ARRAY (STRING)`, floats `DOUBLE`,
//! integers `INT64`, one row group, zstd. Only the parquet crate's low-level writer and record reader are used (no
//! arrow), so there is no `ARROW:schema` key: pyarrow reads the strings as `string` where polars' files give
//! `large_string`; polars reads both as `str`.

use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType, ZstdLevel};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::errors::ParquetError;
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field;
use parquet::schema::types::Type;

/// One column's values.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Str(Vec<Option<String>>),
    F64(Vec<Option<f64>>),
    I64(Vec<Option<i64>>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Str(v) => v.len(),
            Column::F64(v) => v.len(),
            Column::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A table: named columns of equal length.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
}

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    pub fn n_rows(&self) -> usize {
        self.columns.first().map(|(_, c)| c.len()).unwrap_or(0)
    }

    /// A string column, or an error naming what is wrong.
    pub fn strs(&self, name: &str) -> Result<&[Option<String>], String> {
        match self.column(name) {
            Some(Column::Str(v)) => Ok(v),
            Some(_) => Err(format!("column '{name}' is not a string column")),
            None => Err(format!("no column '{name}'")),
        }
    }

    /// A float column (integers are widened).
    pub fn f64s(&self, name: &str) -> Result<Vec<Option<f64>>, String> {
        match self.column(name) {
            Some(Column::F64(v)) => Ok(v.clone()),
            Some(Column::I64(v)) => Ok(v.iter().map(|x| x.map(|i| i as f64)).collect()),
            Some(_) => Err(format!("column '{name}' is not numeric")),
            None => Err(format!("no column '{name}'")),
        }
    }

    /// An integer column.
    pub fn i64s(&self, name: &str) -> Result<&[Option<i64>], String> {
        match self.column(name) {
            Some(Column::I64(v)) => Ok(v),
            Some(_) => Err(format!("column '{name}' is not an integer column")),
            None => Err(format!("no column '{name}'")),
        }
    }
}

fn def_levels<T>(v: &[Option<T>]) -> Vec<i16> {
    v.iter().map(|x| i16::from(x.is_some())).collect()
}

/// Serialise `table` as a parquet file (in memory; write it with `format::write_atomic`).
pub fn write_table(table: &Table) -> Result<Vec<u8>, ParquetError> {
    let n = table.n_rows();
    if let Some((name, _)) = table.columns.iter().find(|(_, c)| c.len() != n) {
        return Err(ParquetError::General(format!("column '{name}' has a different length")));
    }
    let mut fields = Vec::new();
    for (name, col) in &table.columns {
        let (phys, logical) = match col {
            Column::Str(_) => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
            Column::F64(_) => (PhysicalType::DOUBLE, None),
            Column::I64(_) => (PhysicalType::INT64, None),
        };
        let t = Type::primitive_type_builder(name, phys)
            .with_repetition(Repetition::OPTIONAL)
            .with_logical_type(logical)
            .build()?;
        fields.push(Arc::new(t));
    }
    let schema = Arc::new(Type::group_type_builder("schema").with_fields(fields).build()?);
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
        .set_created_by(format!("vcell {}", env!("CARGO_PKG_VERSION")))
        .build();
    let mut buf = Vec::new();
    let mut w = SerializedFileWriter::new(&mut buf, schema, Arc::new(props))?;
    let mut rg = w.next_row_group()?;
    for (_, col) in &table.columns {
        let mut cw = rg.next_column()?.ok_or_else(|| ParquetError::General("schema/column mismatch".into()))?;
        match col {
            Column::Str(v) => {
                let vals: Vec<ByteArray> = v.iter().flatten().map(|s| ByteArray::from(s.as_bytes().to_vec())).collect();
                cw.typed::<ByteArrayType>().write_batch(&vals, Some(&def_levels(v)), None)?;
            }
            Column::F64(v) => {
                let vals: Vec<f64> = v.iter().flatten().copied().collect();
                cw.typed::<DoubleType>().write_batch(&vals, Some(&def_levels(v)), None)?;
            }
            Column::I64(v) => {
                let vals: Vec<i64> = v.iter().flatten().copied().collect();
                cw.typed::<Int64Type>().write_batch(&vals, Some(&def_levels(v)), None)?;
            }
        }
        cw.close()?;
    }
    rg.close()?;
    w.close()?;
    Ok(buf)
}

/// Read a flat parquet table (ours or polars'): `BYTE_ARRAY` as strings, `DOUBLE`/`FLOAT` as floats,
/// `INT32`/`INT64` as integers; other column types are refused.
pub fn read_table(path: &Path) -> Result<Table, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = SerializedFileReader::new(file).map_err(|e| e.to_string())?;
    let schema = reader.metadata().file_metadata().schema_descr_ptr();
    let mut columns = Vec::new();
    for c in schema.columns() {
        let col = match c.physical_type() {
            PhysicalType::BYTE_ARRAY => Column::Str(Vec::new()),
            PhysicalType::DOUBLE | PhysicalType::FLOAT => Column::F64(Vec::new()),
            PhysicalType::INT32 | PhysicalType::INT64 => Column::I64(Vec::new()),
            other => return Err(format!("column '{}': unsupported type {other}", c.name())),
        };
        columns.push((c.name().to_owned(), col));
    }
    let rows = reader.get_row_iter(None).map_err(|e| e.to_string())?;
    for (r, row) in rows.enumerate() {
        let row = row.map_err(|e| e.to_string())?;
        let n_fields = row.get_column_iter().count();
        if n_fields != columns.len() {
            return Err(format!("row {r}: {n_fields} fields for {} columns (nested schema?)", columns.len()));
        }
        for ((name, col), (fname, field)) in columns.iter_mut().zip(row.get_column_iter()) {
            if name != fname {
                return Err(format!("row {r}: field '{fname}' where column '{name}' was expected"));
            }
            push(col, field).map_err(|e| format!("column '{name}', row {r}: {e}"))?;
        }
    }
    Ok(Table { columns })
}

fn push(col: &mut Column, field: &Field) -> Result<(), String> {
    match (col, field) {
        (Column::Str(v), Field::Null) => v.push(None),
        (Column::F64(v), Field::Null) => v.push(None),
        (Column::I64(v), Field::Null) => v.push(None),
        (Column::Str(v), Field::Str(s)) => v.push(Some(s.clone())),
        (Column::Str(v), Field::Bytes(b)) => {
            v.push(Some(String::from_utf8(b.data().to_vec()).map_err(|e| e.to_string())?))
        }
        (Column::F64(v), Field::Double(x)) => v.push(Some(*x)),
        (Column::F64(v), Field::Float(x)) => v.push(Some(f64::from(*x))),
        (Column::I64(v), f) => v.push(Some(int_of(f).ok_or_else(|| format!("unsupported value {f:?}"))?)),
        (_, f) => return Err(format!("unsupported value {f:?}")),
    }
    Ok(())
}

fn int_of(f: &Field) -> Option<i64> {
    Some(match *f {
        Field::Byte(x) => i64::from(x),
        Field::Short(x) => i64::from(x),
        Field::Int(x) => i64::from(x),
        Field::Long(x) => x,
        Field::UByte(x) => i64::from(x),
        Field::UShort(x) => i64::from(x),
        Field::UInt(x) => i64::from(x),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_with_nulls() {
        let t = Table {
            columns: vec![
                ("metric".into(), Column::Str(vec![Some("a".into()), None, Some("ü,\"x\"".into())])),
                ("value".into(), Column::F64(vec![None, Some(f64::NAN), Some(-1.5e-300)])),
                ("n".into(), Column::I64(vec![Some(3), None, Some(i64::MAX)])),
                ("empty".into(), Column::I64(vec![None, None, None])),
            ],
        };
        let bytes = write_table(&t).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        std::fs::write(&p, bytes).unwrap();
        let back = read_table(&p).unwrap();
        assert_eq!(back.n_rows(), 3);
        assert_eq!(back.strs("metric").unwrap(), t.strs("metric").unwrap());
        let v = back.f64s("value").unwrap();
        assert!(v[0].is_none() && v[1].unwrap().is_nan() && v[2] == Some(-1.5e-300));
        assert_eq!(back.i64s("n").unwrap(), t.i64s("n").unwrap());
        assert_eq!(back.i64s("empty").unwrap(), &[None, None, None]);
    }
}
