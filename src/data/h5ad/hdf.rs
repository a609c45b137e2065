//! Low-level element access on top of the `hdf5` crate: typed reads that dispatch on the stored data type,
//! string and attribute helpers, and the `encoding-type` lookup. Everything returns `H5adError`s that name the
//! element, and nothing here trusts the file: sizes are checked before use.

use std::ops::Range;

use hdf5::types::{FixedAscii, FixedUnicode, FloatSize, TypeDescriptor as TD, VarLenAscii, VarLenUnicode};
use hdf5::{Container, H5Type, Location};

use super::error::{At, Ctx, Result};
use crate::data::anndata::StoredDtype;

/// The stored type of a container, or an error naming the element.
///
/// float16 has no descriptor in this build of the `hdf5` crate, so a 2-byte type that fails to describe itself is
/// reported as `Float16` (HDF5 itself converts it to f32 on read).
pub(crate) fn descriptor(ctx: Ctx<'_>, c: &Container, element: &str) -> Result<Desc> {
    let dtype = c.dtype().at(ctx, element)?;
    match dtype.to_descriptor() {
        Ok(td) => Ok(Desc::Known(td)),
        Err(_) if dtype.size() == 2 => Ok(Desc::Float16),
        Err(e) => Err(ctx.hdf5(element, e)),
    }
}

/// A type descriptor plus the float16 case the crate cannot describe.
#[derive(Debug, Clone)]
pub(crate) enum Desc {
    Known(TD),
    Float16,
}

impl Desc {
    pub fn stored_dtype(&self) -> Option<StoredDtype> {
        match self {
            Desc::Float16 => Some(StoredDtype::F16),
            Desc::Known(TD::Float(FloatSize::U4)) => Some(StoredDtype::F32),
            Desc::Known(TD::Float(FloatSize::U8)) => Some(StoredDtype::F64),
            Desc::Known(TD::Integer(s)) => Some(StoredDtype::Int(*s as u8, true)),
            Desc::Known(TD::Unsigned(s)) => Some(StoredDtype::Int(*s as u8, false)),
            Desc::Known(TD::Boolean) => Some(StoredDtype::Bool),
            _ => None,
        }
    }

    pub fn is_string(&self) -> bool {
        matches!(self, Desc::Known(TD::VarLenUnicode | TD::VarLenAscii | TD::FixedAscii(_) | TD::FixedUnicode(_)))
    }
}

/// Reads a whole container (`range` = None) or a 1-D slice of a dataset.
fn read_vec<T: H5Type>(c: &Container, range: Option<Range<usize>>) -> hdf5::Result<Vec<T>> {
    match range {
        None => c.read_raw::<T>(),
        Some(r) => Ok(c.read_slice_1d::<T, _>(r.start..r.end)?.into_raw_vec_and_offset().0),
    }
}

/// The length of a 1-D dataset (a scalar counts as 1).
pub(crate) fn len_1d(ctx: Ctx<'_>, c: &Container, element: &str) -> Result<usize> {
    let shape = c.get_shape().at(ctx, element)?;
    match shape.as_slice() {
        [] => Ok(1),
        [n] => Ok(*n),
        other => Err(ctx.invalid(element, format!("expected a 1-D array, found shape {other:?}"))),
    }
}

/// Numbers as f32 (float16/32/64, any integer, bool). HDF5 converts numeric types itself; bools are an enum
/// that HDF5 will not convert to a number, so they are read as bool.
pub(crate) fn read_f32(ctx: Ctx<'_>, c: &Container, element: &str, range: Option<Range<usize>>) -> Result<Vec<f32>> {
    let desc = descriptor(ctx, c, element)?;
    match desc.stored_dtype() {
        Some(StoredDtype::Bool) => {
            Ok(read_vec::<bool>(c, range).at(ctx, element)?.into_iter().map(|b| if b { 1.0 } else { 0.0 }).collect())
        }
        Some(_) => read_vec::<f32>(c, range).at(ctx, element),
        None => Err(ctx.dtype(element, desc)),
    }
}

/// Numbers as f64 (for obs columns).
pub(crate) fn read_f64(ctx: Ctx<'_>, c: &Container, element: &str, range: Option<Range<usize>>) -> Result<Vec<f64>> {
    let desc = descriptor(ctx, c, element)?;
    match desc.stored_dtype() {
        Some(StoredDtype::Bool) => {
            Ok(read_vec::<bool>(c, range).at(ctx, element)?.into_iter().map(|b| if b { 1.0 } else { 0.0 }).collect())
        }
        Some(_) => read_vec::<f64>(c, range).at(ctx, element),
        None => Err(ctx.dtype(element, desc)),
    }
}

/// Integers as i64; unsigned values above `i64::MAX` are an error, floats are refused.
pub(crate) fn read_i64(ctx: Ctx<'_>, c: &Container, element: &str, range: Option<Range<usize>>) -> Result<Vec<i64>> {
    let desc = descriptor(ctx, c, element)?;
    match desc {
        Desc::Known(TD::Integer(_)) => read_vec::<i64>(c, range).at(ctx, element),
        Desc::Known(TD::Unsigned(_)) => read_vec::<u64>(c, range)
            .at(ctx, element)?
            .into_iter()
            .map(|v| i64::try_from(v).map_err(|_| ctx.invalid(element, format!("value {v} does not fit in int64"))))
            .collect(),
        Desc::Known(TD::Boolean) => {
            Ok(read_vec::<bool>(c, range).at(ctx, element)?.into_iter().map(i64::from).collect())
        }
        other => Err(ctx.dtype(element, other)),
    }
}

/// Non-negative integers (indptr, indices) as u64; a negative stored value is an error.
pub(crate) fn read_u64(ctx: Ctx<'_>, c: &Container, element: &str, range: Option<Range<usize>>) -> Result<Vec<u64>> {
    let desc = descriptor(ctx, c, element)?;
    match desc {
        Desc::Known(TD::Unsigned(_)) => read_vec::<u64>(c, range).at(ctx, element),
        Desc::Known(TD::Integer(_)) => read_vec::<i64>(c, range)
            .at(ctx, element)?
            .into_iter()
            .map(|v| u64::try_from(v).map_err(|_| ctx.invalid(element, format!("negative value {v}"))))
            .collect(),
        other => Err(ctx.dtype(element, other)),
    }
}

/// Column indices below `bound` as u32, with a fast path for the int32 indices anndata writes (read without HDF5
/// type conversion and checked in one pass); other integer types go through [`read_u64`].
pub(crate) fn read_indices_u32(
    ctx: Ctx<'_>,
    c: &Container,
    element: &str,
    range: Option<Range<usize>>,
    bound: usize,
    axis: &str,
) -> Result<Vec<u32>> {
    let offset = range.as_ref().map_or(0, |r| r.start);
    let raw = read_indices_raw(ctx, c, element, range)?;
    if let Some(k) = raw.first_not_below(0..raw.len(), bound) {
        let v = raw.get_i128(k).unwrap_or_default();
        return Err(ctx.invalid(element, format!("indices[{}] = {v} out of range ({axis} = {bound})", offset + k)));
    }
    Ok(raw.into_u32())
}

/// Column indices as stored, without conversion or checks: int32 (anndata's default) as is, other integer types
/// through [`read_u64`] (checked non-negative).
pub(crate) enum RawIndices {
    I32(Vec<i32>),
    U64(Vec<u64>),
}

pub(crate) fn read_indices_raw(
    ctx: Ctx<'_>,
    c: &Container,
    element: &str,
    range: Option<Range<usize>>,
) -> Result<RawIndices> {
    let desc = descriptor(ctx, c, element)?;
    if let Desc::Known(TD::Integer(hdf5::types::IntSize::U4)) = desc {
        return Ok(RawIndices::I32(read_vec::<i32>(c, range).at(ctx, element)?));
    }
    Ok(RawIndices::U64(read_u64(ctx, c, element, range)?))
}

impl RawIndices {
    pub(crate) fn len(&self) -> usize {
        match self {
            RawIndices::I32(v) => v.len(),
            RawIndices::U64(v) => v.len(),
        }
    }

    /// The first entry of `range` that is negative or not below `bound` (`range.start` if the range is out of
    /// bounds); `None` if all are below. The common all-good case is one branch-free pass, which vectorises.
    #[inline]
    pub(crate) fn first_not_below(&self, range: Range<usize>, bound: usize) -> Option<usize> {
        let first = range.start;
        let k = match self {
            RawIndices::I32(v) => {
                let Some(s) = v.get(range) else { return Some(first) };
                let bound = i64::try_from(bound).unwrap_or(i64::MAX);
                let bad = |x: i32| x < 0 || i64::from(x) >= bound;
                if !s.iter().fold(false, |any, &x| any | bad(x)) {
                    return None;
                }
                s.iter().position(|&x| bad(x))
            }
            RawIndices::U64(v) => {
                let Some(s) = v.get(range) else { return Some(first) };
                s.iter().position(|&x| x >= bound as u64)
            }
        };
        k.map(|k| first + k)
    }

    /// All entries as u32 (in place for int32), once [`Self::first_not_below`] has passed them.
    pub(crate) fn into_u32(self) -> Vec<u32> {
        match self {
            RawIndices::I32(v) => v.into_iter().map(|x| x as u32).collect(),
            RawIndices::U64(v) => v.into_iter().map(|x| x as u32).collect(),
        }
    }

    /// Entry `k` as stored (for messages).
    pub(crate) fn get_i128(&self, k: usize) -> Option<i128> {
        match self {
            RawIndices::I32(v) => v.get(k).map(|&x| i128::from(x)),
            RawIndices::U64(v) => v.get(k).map(|&x| i128::from(x)),
        }
    }
}

/// Booleans (HDF5 FALSE/TRUE enum as h5py writes them); integers are accepted as `!= 0`.
pub(crate) fn read_bool(ctx: Ctx<'_>, c: &Container, element: &str, range: Option<Range<usize>>) -> Result<Vec<bool>> {
    let desc = descriptor(ctx, c, element)?;
    match desc {
        Desc::Known(TD::Boolean) => read_vec::<bool>(c, range).at(ctx, element),
        Desc::Known(TD::Integer(_) | TD::Unsigned(_)) => {
            Ok(read_i64(ctx, c, element, range)?.into_iter().map(|v| v != 0).collect())
        }
        other => Err(ctx.dtype(element, other)),
    }
}

/// Fixed-length strings are read through a buffer of capacity `N >= n`; HDF5 pads/truncates between sizes.
fn read_fixed<const N: usize>(c: &Container, unicode: bool, range: Option<Range<usize>>) -> hdf5::Result<Vec<String>> {
    if unicode {
        Ok(read_vec::<FixedUnicode<N>>(c, range)?
            .iter()
            .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned())
            .collect())
    } else {
        Ok(read_vec::<FixedAscii<N>>(c, range)?
            .iter()
            .map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned())
            .collect())
    }
}

/// Strings: variable-length UTF-8 (what anndata writes) or ASCII, and fixed-length strings up to 4096 bytes.
/// Invalid UTF-8 is replaced rather than trusted.
pub(crate) fn read_strings(
    ctx: Ctx<'_>,
    c: &Container,
    element: &str,
    range: Option<Range<usize>>,
) -> Result<Vec<String>> {
    let desc = descriptor(ctx, c, element)?;
    let out = match desc {
        Desc::Known(TD::VarLenUnicode) => read_vec::<VarLenUnicode>(c, range)
            .map(|v| v.iter().map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned()).collect()),
        Desc::Known(TD::VarLenAscii) => read_vec::<VarLenAscii>(c, range)
            .map(|v| v.iter().map(|s| String::from_utf8_lossy(s.as_bytes()).into_owned()).collect()),
        Desc::Known(TD::FixedAscii(n)) | Desc::Known(TD::FixedUnicode(n)) => {
            let unicode = matches!(desc, Desc::Known(TD::FixedUnicode(_)));
            match n {
                0..=16 => read_fixed::<16>(c, unicode, range),
                17..=64 => read_fixed::<64>(c, unicode, range),
                65..=256 => read_fixed::<256>(c, unicode, range),
                257..=4096 => read_fixed::<4096>(c, unicode, range),
                _ => return Err(ctx.dtype(element, desc)),
            }
        }
        other => return Err(ctx.dtype(element, other)),
    };
    out.at(ctx, element)
}

/// One string attribute, `None` if the attribute is absent. A one-element array is accepted too.
pub(crate) fn attr_string(ctx: Ctx<'_>, loc: &Location, element: &str, name: &str) -> Result<Option<String>> {
    if !has_attr(loc, name) {
        return Ok(None);
    }
    let at = format!("{element} (attribute '{name}')");
    let attr = loc.attr(name).at(ctx, &at)?;
    let mut values = read_strings(ctx, &attr, &at, None)?;
    match values.len() {
        1 => Ok(values.pop()),
        n => Err(ctx.invalid(&at, format!("expected one string, found {n}"))),
    }
}

/// A string-array attribute (e.g. `column-order`). anndata stores an empty list as float64[0], so any empty
/// numeric array reads as an empty list.
pub(crate) fn attr_strings(ctx: Ctx<'_>, loc: &Location, element: &str, name: &str) -> Result<Option<Vec<String>>> {
    if !has_attr(loc, name) {
        return Ok(None);
    }
    let at = format!("{element} (attribute '{name}')");
    let attr = loc.attr(name).at(ctx, &at)?;
    let desc = descriptor(ctx, &attr, &at)?;
    if desc.is_string() {
        return read_strings(ctx, &attr, &at, None).map(Some);
    }
    if attr.size() == 0 {
        return Ok(Some(Vec::new()));
    }
    Err(ctx.invalid(&at, format!("expected an array of strings, found {desc:?}")))
}

/// An integer-array attribute such as `shape`.
pub(crate) fn attr_u64s(ctx: Ctx<'_>, loc: &Location, element: &str, name: &str) -> Result<Option<Vec<u64>>> {
    if !has_attr(loc, name) {
        return Ok(None);
    }
    let at = format!("{element} (attribute '{name}')");
    let attr = loc.attr(name).at(ctx, &at)?;
    read_u64(ctx, &attr, &at, None).map(Some)
}

/// A boolean attribute (categorical `ordered`): h5py's enum bool, an integer, or absent/unreadable = false.
/// Robust by design: `ordered` never decides whether a file is readable.
pub(crate) fn attr_bool_lenient(loc: &Location, name: &str) -> bool {
    let Ok(attr) = loc.attr(name) else {
        return false;
    };
    if let Ok(v) = attr.read_raw::<bool>() {
        return v.first().copied().unwrap_or(false);
    }
    attr.read_raw::<i64>().ok().and_then(|v| v.first().copied()).is_some_and(|v| v != 0)
}

pub(crate) fn has_attr(loc: &Location, name: &str) -> bool {
    loc.attr_names().map(|names| names.iter().any(|n| n == name)).unwrap_or(false)
}

/// The `encoding-type` attribute, `None` if absent.
pub(crate) fn encoding_type(ctx: Ctx<'_>, loc: &Location, element: &str) -> Result<Option<String>> {
    attr_string(ctx, loc, element, "encoding-type")
}

// ---- writing ------------------------------------------------------------------------------------------

/// Strings as HDF5 variable-length UTF-8 (what h5py and anndata write); a NUL byte cannot be stored.
pub(crate) fn to_vlen(ctx: Ctx<'_>, element: &str, values: &[String]) -> Result<Vec<VarLenUnicode>> {
    values
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse::<VarLenUnicode>()
                .map_err(|_| ctx.invalid(element, format!("string {i} ({s:?}) contains a NUL byte")))
        })
        .collect()
}

/// A scalar variable-length UTF-8 string attribute (anndata checks that these are vlen strings).
pub(crate) fn write_str_attr(ctx: Ctx<'_>, loc: &Location, element: &str, name: &str, value: &str) -> Result<()> {
    let v = to_vlen(ctx, element, &[value.to_owned()])?;
    let at = format!("{element} (attribute '{name}')");
    let attr = loc.new_attr::<VarLenUnicode>().create(name).at(ctx, &at)?;
    attr.write_raw(&v).at(ctx, &at)
}

/// `encoding-type` and `encoding-version`.
pub(crate) fn write_encoding(ctx: Ctx<'_>, loc: &Location, element: &str, kind: &str, version: &str) -> Result<()> {
    write_str_attr(ctx, loc, element, "encoding-type", kind)?;
    write_str_attr(ctx, loc, element, "encoding-version", version)
}

/// A 1-D string dataset tagged `string-array`.
pub(crate) fn write_string_array(
    ctx: Ctx<'_>,
    group: &hdf5::Group,
    element: &str,
    name: &str,
    values: &[String],
) -> Result<()> {
    let v = to_vlen(ctx, element, values)?;
    let ds = group.new_dataset_builder().with_data(&v).create(name).at(ctx, element)?;
    write_encoding(ctx, &ds, element, "string-array", "0.2.0")
}

/// A 1-D numeric (or bool) dataset tagged `array`.
pub(crate) fn write_array<T: H5Type>(
    ctx: Ctx<'_>,
    group: &hdf5::Group,
    element: &str,
    name: &str,
    values: &[T],
) -> Result<()> {
    let ds = group.new_dataset_builder().with_data(values).create(name).at(ctx, element)?;
    write_encoding(ctx, &ds, element, "array", "0.2.0")
}

/// The selection `rows[start..end], all columns` of a 2-D dataset (ndarray's `s!` macro needs `unsafe`).
pub(crate) fn row_block(start: usize, end: usize) -> hdf5::Selection {
    hdf5::Hyperslab::from(vec![hdf5::SliceOrIndex::from(start..end), hdf5::SliceOrIndex::from(..)]).into()
}

/// Opens (`create == false`, read-only) or creates an HDF5 file with HDF5's `flock` file locking off.
///
/// Why: HDF5 does not open its descriptors close-on-exec, so a child process spawned by any thread while a file
/// is open inherits the descriptor and with it the lock, which then outlives our close. A Python process
/// (anndata, cell-eval) opening the finished file is refused with "unable to lock file" for as long as that
/// unrelated child runs. Our writers publish by atomic rename, so readers never see a half-written file and the
/// lock buys nothing here.
pub(crate) fn open_file(path: &std::path::Path, create: bool) -> hdf5::Result<hdf5::File> {
    let mut builder = hdf5::File::with_options();
    if create {
        builder.with_fapl(|p| p.file_locking(false));
    } else {
        // No chunk cache for reading: an unfiltered chunk is then read straight into our buffer instead of into
        // the cache and copied out (HDF5 `H5D__chunk_cacheable`); our reads are large contiguous ranges, so a
        // filtered chunk is decompressed about once per read either way.
        builder.with_fapl(|p| p.file_locking(false).chunk_cache(0, 0, 0.75));
    }
    if create {
        builder.create(path)
    } else {
        builder.open(path)
    }
}
