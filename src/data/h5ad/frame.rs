//! `obs`/`var` dataframes (anndata `dataframe` 0.2.0): reading whole tables or single columns, and writing.
//!
//! Column encodings understood on read:
//! - `categorical` (codes int8..int64, -1 = missing; string or integer categories),
//! - `string-array`, `array` (ints → `Int`, floats → `Float`, bools → `Bool`, strings → `Str`),
//! - `nullable-integer`: `Int` if nothing is masked, otherwise `Float` with NaN for masked values
//!   (what pandas' `astype(float)` gives),
//! - `nullable-boolean`: `Bool` if nothing is masked, otherwise a `Categorical` over `["False", "True"]` with
//!   missing values as -1,
//! - `nullable-string-array`: `Str` if nothing is masked, otherwise a `Categorical` with missing values.

use std::ops::Range;

use hdf5::{File, Group, LocationType};

use super::error::{At, Ctx, Result};
use super::hdf;
use crate::data::anndata::{Categorical, Column, DataFrame};

/// An opened dataframe group.
pub(crate) struct FrameNode {
    pub element: String,
    group: Group,
    pub index_name: String,
    pub columns: Vec<String>,
}

impl FrameNode {
    pub fn open(ctx: Ctx<'_>, file: &File, element: &str) -> Result<Self> {
        let name = element.trim_start_matches('/');
        if !file.link_exists(name) {
            return Err(ctx.missing(element));
        }
        if file.loc_type_by_name(name).at(ctx, element)? != LocationType::Group {
            return Err(ctx.unsupported(
                element,
                "a dataframe stored as a dataset (anndata < 0.7); re-save the file with a recent anndata",
            ));
        }
        let group = file.group(name).at(ctx, element)?;
        match hdf::encoding_type(ctx, &group, element)?.as_deref() {
            Some("dataframe") | None => {}
            Some(other) => return Err(ctx.encoding(element, other)),
        }
        let index_name = hdf::attr_string(ctx, &group, element, "_index")?
            .unwrap_or_else(|| "_index".to_owned());
        let columns = match hdf::attr_strings(ctx, &group, element, "column-order")? {
            Some(c) => c,
            // No column-order: every member except the index and anndata 0.7's `__categories`.
            None => group
                .member_names()
                .at(ctx, element)?
                .into_iter()
                .filter(|m| *m != index_name && m != "__categories")
                .collect(),
        };
        let node = FrameNode {
            element: element.to_owned(),
            group,
            index_name,
            columns,
        };
        if !node.group.link_exists(&node.index_name) {
            return Err(ctx.missing(&node.index_element()));
        }
        Ok(node)
    }

    fn index_element(&self) -> String {
        format!("{}/{}", self.element, self.index_name)
    }

    /// Number of rows (the index length), from the dataset shape.
    pub fn n_rows(&self, ctx: Ctx<'_>) -> Result<usize> {
        let el = self.index_element();
        let ds = self.group.dataset(&self.index_name).at(ctx, &el)?;
        hdf::len_1d(ctx, &ds, &el)
    }

    /// The index (row names), or a slice of it. A numeric index is formatted as strings.
    pub fn read_index(&self, ctx: Ctx<'_>, range: Option<Range<usize>>) -> Result<Vec<String>> {
        let el = self.index_element();
        let ds = self.group.dataset(&self.index_name).at(ctx, &el)?;
        let n = hdf::len_1d(ctx, &ds, &el)?;
        let range = range.map(|r| r.start.min(n)..r.end.min(n));
        if hdf::descriptor(ctx, &ds, &el)?.is_string() {
            hdf::read_strings(ctx, &ds, &el, range)
        } else {
            Ok(match decode_numeric(ctx, &ds, &el, range)? {
                Column::Int(v) => v.iter().map(i64::to_string).collect(),
                other => (0..other.len()).filter_map(|i| other.label(i)).collect(),
            })
        }
    }

    /// The encoding of one column (`categorical`, `string-array`, `array`, ...), for summaries.
    pub fn column_encoding(&self, ctx: Ctx<'_>, name: &str) -> Result<String> {
        let el = format!("{}/{}", self.element, name);
        if !self.group.link_exists(name) {
            return Err(ctx.missing(&el));
        }
        let loc = self.group.loc_type_by_name(name).at(ctx, &el)?;
        let enc = if loc == LocationType::Group {
            let g = self.group.group(name).at(ctx, &el)?;
            hdf::encoding_type(ctx, &g, &el)?
        } else {
            let d = self.group.dataset(name).at(ctx, &el)?;
            hdf::encoding_type(ctx, &d, &el)?
        };
        Ok(enc.unwrap_or_else(|| "array".to_owned()))
    }

    /// One column, decoded.
    pub fn read_column(&self, ctx: Ctx<'_>, name: &str) -> Result<Column> {
        let el = format!("{}/{}", self.element, name);
        if !self.group.link_exists(name) {
            return Err(ctx.missing(&el));
        }
        if self.group.loc_type_by_name(name).at(ctx, &el)? == LocationType::Group {
            let g = self.group.group(name).at(ctx, &el)?;
            let enc = hdf::encoding_type(ctx, &g, &el)?;
            match enc.as_deref() {
                Some("categorical") => read_categorical(ctx, &g, &el).map(Column::Categorical),
                Some("nullable-integer") => read_nullable_int(ctx, &g, &el),
                Some("nullable-boolean") => read_nullable_bool(ctx, &g, &el),
                Some("nullable-string-array") => read_nullable_str(ctx, &g, &el),
                Some(other) => Err(ctx.encoding(&el, other)),
                None => Err(ctx.encoding(&el, "(none: group without encoding-type)")),
            }
        } else {
            let ds = self.group.dataset(name).at(ctx, &el)?;
            match hdf::encoding_type(ctx, &ds, &el)?.as_deref() {
                Some("string-array") => hdf::read_strings(ctx, &ds, &el, None).map(Column::Str),
                Some("array") | None => {
                    hdf::len_1d(ctx, &ds, &el)?;
                    if hdf::descriptor(ctx, &ds, &el)?.is_string() {
                        hdf::read_strings(ctx, &ds, &el, None).map(Column::Str)
                    } else {
                        decode_numeric(ctx, &ds, &el, None)
                    }
                }
                Some(other) => Err(ctx.encoding(&el, other)),
            }
        }
    }

    /// The whole table; every column must have as many rows as the index.
    pub fn read(&self, ctx: Ctx<'_>) -> Result<DataFrame> {
        let index = self.read_index(ctx, None)?;
        let mut columns = Vec::with_capacity(self.columns.len());
        for name in &self.columns {
            let col = self.read_column(ctx, name)?;
            if col.len() != index.len() {
                return Err(ctx.invalid(
                    &format!("{}/{}", self.element, name),
                    format!("has {} rows but the index has {}", col.len(), index.len()),
                ));
            }
            columns.push((name.clone(), col));
        }
        Ok(DataFrame {
            index_name: self.index_name.clone(),
            index,
            columns,
        })
    }
}

/// A numeric or bool dataset as a column.
fn decode_numeric(
    ctx: Ctx<'_>,
    ds: &hdf5::Dataset,
    el: &str,
    range: Option<Range<usize>>,
) -> Result<Column> {
    let desc = hdf::descriptor(ctx, ds, el)?;
    match desc.stored_dtype() {
        Some(crate::data::anndata::StoredDtype::Bool) => {
            hdf::read_bool(ctx, ds, el, range).map(Column::Bool)
        }
        Some(crate::data::anndata::StoredDtype::Int(..)) => {
            hdf::read_i64(ctx, ds, el, range).map(Column::Int)
        }
        Some(_) => hdf::read_f64(ctx, ds, el, range).map(Column::Float),
        None => Err(ctx.dtype(el, desc)),
    }
}

fn member(ctx: Ctx<'_>, g: &Group, el: &str, name: &str) -> Result<(hdf5::Dataset, String)> {
    let m = format!("{el}/{name}");
    if !g.link_exists(name) {
        return Err(ctx.missing(&m));
    }
    Ok((g.dataset(name).at(ctx, &m)?, m))
}

fn read_categorical(ctx: Ctx<'_>, g: &Group, el: &str) -> Result<Categorical> {
    let (cats_ds, cats_el) = member(ctx, g, el, "categories")?;
    let categories = if hdf::descriptor(ctx, &cats_ds, &cats_el)?.is_string() {
        hdf::read_strings(ctx, &cats_ds, &cats_el, None)?
    } else {
        match decode_numeric(ctx, &cats_ds, &cats_el, None)? {
            Column::Int(v) => v.iter().map(i64::to_string).collect(),
            Column::Float(v) => v.iter().map(|x| format!("{x:?}")).collect(),
            other => (0..other.len()).filter_map(|i| other.label(i)).collect(),
        }
    };
    let (codes_ds, codes_el) = member(ctx, g, el, "codes")?;
    let raw = hdf::read_i64(ctx, &codes_ds, &codes_el, None)?;
    let n_cat = categories.len() as i64;
    let mut codes = Vec::with_capacity(raw.len());
    for (row, &c) in raw.iter().enumerate() {
        if c < -1 || c >= n_cat {
            return Err(ctx.invalid(
                &codes_el,
                format!(
                    "code {c} at row {row} is outside the {n_cat} categories (valid: -1 for missing, 0..{n_cat})"
                ),
            ));
        }
        codes.push(c as i32);
    }
    Ok(Categorical {
        codes,
        categories,
        ordered: hdf::attr_bool_lenient(g, "ordered"),
    })
}

fn read_mask(ctx: Ctx<'_>, g: &Group, el: &str, n: usize) -> Result<Vec<bool>> {
    let (ds, m) = member(ctx, g, el, "mask")?;
    let mask = hdf::read_bool(ctx, &ds, &m, None)?;
    if mask.len() != n {
        return Err(ctx.invalid(
            &m,
            format!("length {} differs from values length {n}", mask.len()),
        ));
    }
    Ok(mask)
}

fn read_nullable_int(ctx: Ctx<'_>, g: &Group, el: &str) -> Result<Column> {
    let (ds, m) = member(ctx, g, el, "values")?;
    let values = hdf::read_i64(ctx, &ds, &m, None)?;
    let mask = read_mask(ctx, g, el, values.len())?;
    if !mask.iter().any(|&b| b) {
        return Ok(Column::Int(values));
    }
    Ok(Column::Float(
        values
            .iter()
            .zip(&mask)
            .map(|(&v, &masked)| if masked { f64::NAN } else { v as f64 })
            .collect(),
    ))
}

fn read_nullable_bool(ctx: Ctx<'_>, g: &Group, el: &str) -> Result<Column> {
    let (ds, m) = member(ctx, g, el, "values")?;
    let values = hdf::read_bool(ctx, &ds, &m, None)?;
    let mask = read_mask(ctx, g, el, values.len())?;
    if !mask.iter().any(|&b| b) {
        return Ok(Column::Bool(values));
    }
    Ok(Column::Categorical(Categorical {
        codes: values
            .iter()
            .zip(&mask)
            .map(|(&v, &masked)| if masked { -1 } else { i32::from(v) })
            .collect(),
        categories: vec!["False".to_owned(), "True".to_owned()],
        ordered: false,
    }))
}

fn read_nullable_str(ctx: Ctx<'_>, g: &Group, el: &str) -> Result<Column> {
    let (ds, m) = member(ctx, g, el, "values")?;
    let values = hdf::read_strings(ctx, &ds, &m, None)?;
    let mask = read_mask(ctx, g, el, values.len())?;
    if !mask.iter().any(|&b| b) {
        return Ok(Column::Str(values));
    }
    let labels: Vec<Option<String>> = values
        .into_iter()
        .zip(&mask)
        .map(|(v, &masked)| (!masked).then_some(v))
        .collect();
    Ok(Column::Categorical(Categorical::from_labels(&labels)))
}

// ---- writing ------------------------------------------------------------------------------------------

/// Checks a table before anything is written, so a bad table never leaves a half-written file.
pub(crate) fn validate(ctx: Ctx<'_>, element: &str, df: &DataFrame) -> Result<()> {
    let index_name = index_name(df);
    let n = df.n_rows();
    let mut seen = std::collections::HashSet::new();
    for (name, col) in &df.columns {
        let el = format!("{element}/{name}");
        if name.is_empty() || name.contains('/') || name == index_name {
            return Err(ctx.invalid(
                &el,
                "column names must be non-empty, contain no '/', and differ from the index name",
            ));
        }
        if !seen.insert(name.as_str()) {
            return Err(ctx.invalid(&el, "duplicate column name"));
        }
        if col.len() != n {
            return Err(ctx.invalid(&el, format!("has {} rows but the index has {n}", col.len())));
        }
        if let Column::Categorical(c) = col {
            let n_cat = c.categories.len() as i64;
            if let Some((row, code)) = c
                .codes
                .iter()
                .enumerate()
                .find(|(_, &k)| k < -1 || i64::from(k) >= n_cat)
            {
                return Err(ctx.invalid(
                    &format!("{el}/codes"),
                    format!("code {code} at row {row} is outside the {n_cat} categories"),
                ));
            }
            let mut uniq = std::collections::HashSet::new();
            if let Some(dup) = c.categories.iter().find(|s| !uniq.insert(s.as_str())) {
                return Err(ctx.invalid(
                    &format!("{el}/categories"),
                    format!("duplicate category {dup:?} (pandas requires unique categories)"),
                ));
            }
        }
    }
    Ok(())
}

fn index_name(df: &DataFrame) -> &str {
    if df.index_name.is_empty() {
        "_index"
    } else {
        &df.index_name
    }
}

/// Writes `df` as group `name` under `parent`, the way anndata 0.12 does.
pub(crate) fn write_frame(
    ctx: Ctx<'_>,
    parent: &Group,
    element: &str,
    df: &DataFrame,
) -> Result<()> {
    validate(ctx, element, df)?;
    let name = element.rsplit('/').next().unwrap_or(element);
    let g = parent.create_group(name).at(ctx, element)?;
    hdf::write_encoding(ctx, &g, element, "dataframe", "0.2.0")?;
    let index_name = index_name(df);
    hdf::write_str_attr(ctx, &g, element, "_index", index_name)?;
    let order_el = format!("{element} (attribute 'column-order')");
    if df.columns.is_empty() {
        // anndata writes an empty column list as float64[0]; keep byte-compatible with it.
        g.new_attr::<f64>()
            .shape(0)
            .create("column-order")
            .at(ctx, &order_el)?;
    } else {
        let names: Vec<String> = df.columns.iter().map(|(n, _)| n.clone()).collect();
        let v = hdf::to_vlen(ctx, &order_el, &names)?;
        g.new_attr_builder()
            .with_data(&v)
            .create("column-order")
            .at(ctx, &order_el)?;
    }
    hdf::write_string_array(
        ctx,
        &g,
        &format!("{element}/{index_name}"),
        index_name,
        &df.index,
    )?;
    for (col_name, col) in &df.columns {
        let el = format!("{element}/{col_name}");
        match col {
            Column::Categorical(c) => write_categorical(ctx, &g, &el, col_name, c)?,
            Column::Str(v) => hdf::write_string_array(ctx, &g, &el, col_name, v)?,
            Column::Int(v) => hdf::write_array(ctx, &g, &el, col_name, v)?,
            Column::Float(v) => hdf::write_array(ctx, &g, &el, col_name, v)?,
            Column::Bool(v) => hdf::write_array(ctx, &g, &el, col_name, v)?,
        }
    }
    Ok(())
}

fn write_categorical(
    ctx: Ctx<'_>,
    parent: &Group,
    el: &str,
    name: &str,
    c: &Categorical,
) -> Result<()> {
    let g = parent.create_group(name).at(ctx, el)?;
    hdf::write_encoding(ctx, &g, el, "categorical", "0.2.0")?;
    // h5py's numpy bool: an HDF5 enum over int8 with FALSE=0/TRUE=1 (the `hdf5` crate's bool is the same).
    let ordered_el = format!("{el} (attribute 'ordered')");
    g.new_attr::<bool>()
        .create("ordered")
        .at(ctx, &ordered_el)?
        .write_scalar(&c.ordered)
        .at(ctx, &ordered_el)?;
    hdf::write_string_array(
        ctx,
        &g,
        &format!("{el}/categories"),
        "categories",
        &c.categories,
    )?;
    // pandas' code width: int8 up to 127 categories, then int16, then int32.
    let codes_el = format!("{el}/codes");
    let n_cat = c.categories.len();
    if n_cat <= i8::MAX as usize {
        let v: Vec<i8> = c.codes.iter().map(|&k| k as i8).collect();
        hdf::write_array(ctx, &g, &codes_el, "codes", &v)
    } else if n_cat <= i16::MAX as usize {
        let v: Vec<i16> = c.codes.iter().map(|&k| k as i16).collect();
        hdf::write_array(ctx, &g, &codes_el, "codes", &v)
    } else {
        hdf::write_array(ctx, &g, &codes_el, "codes", &c.codes)
    }
}
