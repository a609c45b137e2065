//! Many element ranges of a 1-D dataset in one HDF5 read: the file selection is the union of the ranges, the
//! memory side one contiguous buffer (the ranges' elements back to back, in order).
//!
//! Why: a filtered pass over `X` (the rows of a few groups, spread over a shuffled file) wants hundreds of short
//! ranges per read. One hyperslab read per range costs ~5 µs of CPU each, so ranges used to be merged across the
//! rows between them, and a pass copied nearly the whole file from the page cache. With one read per union,
//! HDF5 copies only the selected elements (the chunk cache is off, `hdf::open_file`, so an unfiltered chunk is
//! read straight from the file; a filtered one is decompressed once per read, as before).
//!
//! The `hdf5` crate selects regular hyperslabs only, so the union is built with `H5Sselect_hyperslab(OR)`.

use std::ops::Range;

use hdf5::{Dataset, Dataspace, Datatype, H5Type};

/// Plain numbers: every bit pattern is a value, so a buffer HDF5 has written is initialised whatever it wrote.
pub(crate) trait Plain: H5Type + Copy {}
impl Plain for i32 {}
impl Plain for u32 {}
impl Plain for i64 {}
impl Plain for u64 {}
impl Plain for f32 {}
impl Plain for f64 {}

/// Elements `ranges` (ascending, disjoint, within the dataset) of `ds`, converted to `T`, back to back.
#[allow(unsafe_code)]
pub(crate) fn read_ranges<T: Plain>(ds: &Dataset, ranges: &[Range<usize>]) -> hdf5::Result<Vec<T>> {
    let total: usize = ranges.iter().map(|r| r.len()).sum();
    // not zeroed first (that memset was ~1 % of a vcc2026 run): H5Dread writes every element, see below
    let mut out: Vec<T> = Vec::with_capacity(total);
    if total == 0 {
        return Ok(out);
    }
    let len = ds.size();
    if ranges.windows(2).any(|w| w[1].start < w[0].end) || ranges.iter().any(|r| r.start > r.end || r.end > len) {
        return Err(format!("ranges must be ascending, disjoint and within the {len} elements").into());
    }
    let file_space = ds.space()?;
    let mem_space = Dataspace::try_new(total)?;
    let mem_type = Datatype::from_type::<T>()?;
    // SAFETY: every id is live for the call (owned by the handles above, closed when they drop); `start` and
    // `count` point to one hsize_t each, the rank of the 1-D file space; `out` holds `total` elements of `T`,
    // which is what the memory space (`total` elements) and memory type (`T`'s own) describe to H5Dread. HDF5
    // calls go through the crate's global lock.
    let status = hdf5::sync::sync(|| unsafe {
        use hdf5_sys::h5s::{H5S_seloper_t, H5Sselect_hyperslab, H5Sselect_none};
        if H5Sselect_none(file_space.id()) < 0 {
            return -1;
        }
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            let (start, count) = ([r.start as u64], [r.len() as u64]);
            let op = H5S_seloper_t::H5S_SELECT_OR;
            if H5Sselect_hyperslab(
                file_space.id(),
                op,
                start.as_ptr(),
                std::ptr::null(),
                count.as_ptr(),
                std::ptr::null(),
            ) < 0
            {
                return -1;
            }
        }
        hdf5_sys::h5d::H5Dread(
            ds.id(),
            mem_type.id(),
            mem_space.id(),
            file_space.id(),
            hdf5_sys::h5p::H5P_DEFAULT,
            out.as_mut_ptr().cast(),
        )
    });
    if status < 0 {
        return Err("reading a selection of element ranges failed".into());
    }
    // SAFETY: the read succeeded, and its file selection (the union of the disjoint `ranges`, `total` elements)
    // and memory space (`total` elements, all selected) have the same size, so HDF5 wrote all `total` elements
    // of `T` into the capacity reserved above; any bits are a valid `T` (`Plain`).
    unsafe { out.set_len(total) };
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn unions_of_ranges_read_back_to_back() {
        let dir = tempfile::tempdir().unwrap();
        let ints: Vec<i32> = (0..1000).map(|i| i * 7 - 300).collect();
        let path = dir.path().join("r.h5");
        let f = hdf5::File::create(&path).unwrap();
        f.new_dataset_builder().with_data(&ints).create("contig").unwrap();
        f.new_dataset_builder().chunk(64).with_data(&ints).create("chunked").unwrap();
        f.new_dataset_builder().chunk(50).deflate(1).with_data(&ints).create("zipped").unwrap();
        for name in ["contig", "chunked", "zipped"] {
            let ds = f.dataset(name).unwrap();
            for ranges in
                [vec![0..1000], vec![], vec![5..6], vec![0..3, 3..5, 63..65, 100..900, 999..1000], vec![10..10, 20..30]]
            {
                let want: Vec<i32> = ranges.iter().flat_map(|r| ints[r.clone()].to_vec()).collect();
                assert_eq!(read_ranges::<i32>(&ds, &ranges).unwrap(), want, "{name} {ranges:?}");
                // converted on the way, as every typed read is
                let as_f32: Vec<f32> = want.iter().map(|&x| x as f32).collect();
                assert_eq!(read_ranges::<f32>(&ds, &ranges).unwrap(), as_f32);
            }
            assert!(read_ranges::<i32>(&ds, &[990..1001]).is_err());
            assert!(read_ranges::<i32>(&ds, &[10..20, 5..8]).is_err());
        }
    }
}
