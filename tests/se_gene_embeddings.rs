#![allow(clippy::unwrap_used)]
//! Gene-embedding readers on files written here: safetensors (per-gene tensors, written by candle; a 2-D matrix
//! with `genes` metadata; a 2-D matrix with a sidecar gene list), `.npy` + gene list, and a PyTorch `.pt` dict
//! built byte by byte (a `torch.save` zip holding a protocol-2 pickle), since no torch is available here.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use vcell::data::gene_embeddings::{GeneEmbeddings, SafetensorsLayout};

fn sample() -> GeneEmbeddings {
    let names = vec!["TP53".to_string(), "GAPDH".into(), "MYC".into()];
    GeneEmbeddings::new(names, 4, (0..12).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap()
}

fn same_vectors(a: &GeneEmbeddings, b: &GeneEmbeddings) {
    assert_eq!(a.len(), b.len());
    assert_eq!(a.dim(), b.dim());
    for name in a.names() {
        assert_eq!(a.get(name).unwrap(), b.get(name).unwrap(), "{name}");
    }
}

#[test]
fn safetensors_matrix_with_metadata_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("emb.safetensors");
    sample().write_safetensors(&p, SafetensorsLayout::Matrix).unwrap();
    let back = GeneEmbeddings::read(&p).unwrap();
    assert_eq!(back, sample(), "matrix layout keeps the gene order");
}

#[test]
fn safetensors_per_gene_written_by_candle() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("per_gene.safetensors");
    let s = sample();
    let map: HashMap<String, Tensor> =
        s.names().iter().map(|n| (n.clone(), Tensor::new(s.get(n).unwrap(), &Device::Cpu).unwrap())).collect();
    candle_core::safetensors::save(&map, &p).unwrap();
    same_vectors(&GeneEmbeddings::read(&p).unwrap(), &s);
    // Our own per-gene writer reads back the same.
    let q = dir.path().join("ours.safetensors");
    s.write_safetensors(&q, SafetensorsLayout::PerGene).unwrap();
    same_vectors(&GeneEmbeddings::read(&q).unwrap(), &s);
}

#[test]
fn safetensors_matrix_with_sidecar_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    let s = sample();
    let t = s.to_tensor(&Device::Cpu).unwrap().to_dtype(candle_core::DType::F16).unwrap();
    candle_core::safetensors::save(&HashMap::from([("emb".to_string(), t)]), &p).unwrap();
    let err = GeneEmbeddings::read(&p).unwrap_err().to_string();
    assert!(err.contains("m.safetensors") && err.contains("gene names"), "{err}");
    std::fs::write(dir.path().join("m.txt"), "TP53\nGAPDH\nMYC\n").unwrap();
    let back = GeneEmbeddings::read(&p).unwrap();
    assert_eq!(back.names(), s.names());
    assert!((back.get("MYC").unwrap()[3] - s.get("MYC").unwrap()[3]).abs() < 1e-2, "f16 converted");
    std::fs::write(dir.path().join("m.txt"), "TP53\nGAPDH\n").unwrap();
    let err = GeneEmbeddings::read(&p).unwrap_err().to_string();
    assert!(err.contains("3 rows") && err.contains("2 names"), "{err}");
}

#[test]
fn npy_with_gene_list() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("emb.npy");
    let s = sample();
    s.write_npy(&p, &dir.path().join("emb.txt")).unwrap();
    assert_eq!(GeneEmbeddings::read(&p).unwrap(), s);
    std::fs::remove_file(dir.path().join("emb.txt")).unwrap();
    let err = GeneEmbeddings::read(&p).unwrap_err().to_string();
    assert!(err.contains("emb.npy") && err.contains("gene list"), "{err}");
    let other = dir.path().join("names.list");
    std::fs::write(&other, "TP53\nGAPDH\nMYC\n").unwrap();
    assert_eq!(GeneEmbeddings::read_with_gene_list(&p, Some(&other)).unwrap(), s);
}

#[test]
fn unknown_and_missing_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("emb.csv");
    std::fs::write(&p, "x").unwrap();
    let err = GeneEmbeddings::read(&p).unwrap_err().to_string();
    assert!(err.contains("emb.csv") && err.contains("unknown gene-embedding format"), "{err}");
    let err = GeneEmbeddings::read(&dir.path().join("nope.pt")).unwrap_err().to_string();
    assert!(err.contains("nope.pt"), "{err}");
    let junk = dir.path().join("junk.safetensors");
    std::fs::write(&junk, b"0123").unwrap();
    assert!(GeneEmbeddings::read(&junk).unwrap_err().to_string().contains("junk.safetensors"));
}

// ---- a torch.save file, by hand ----

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A zip with stored (uncompressed) entries.
fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let header = |sig: u32, central: bool| {
            let mut h = Vec::new();
            h.extend_from_slice(&sig.to_le_bytes());
            if central {
                h.extend_from_slice(&20u16.to_le_bytes()); // version made by
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // version needed
            h.extend_from_slice(&0u16.to_le_bytes()); // flags
            h.extend_from_slice(&0u16.to_le_bytes()); // stored
            h.extend_from_slice(&0u32.to_le_bytes()); // time, date
            h.extend_from_slice(&crc.to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&0u16.to_le_bytes()); // comment
                h.extend_from_slice(&0u16.to_le_bytes()); // disk
                h.extend_from_slice(&0u16.to_le_bytes()); // internal attrs
                h.extend_from_slice(&0u32.to_le_bytes()); // external attrs
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend(header(0x0403_4b50, false));
        out.extend_from_slice(data);
        central.extend(header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    std::fs::write(path, out).unwrap();
}

fn unicode(p: &mut Vec<u8>, s: &str) {
    p.push(b'X');
    p.extend_from_slice(&(s.len() as u32).to_le_bytes());
    p.extend_from_slice(s.as_bytes());
}

/// `torch.save({gene: tensor, …})` for 1-D float32 tensors: what Arc's `protein_embeddings.pt` holds.
fn write_torch_dict(path: &Path, genes: &[(&str, Vec<f32>)]) {
    let mut p = vec![0x80, 2, b'}', b'('];
    let mut entries = Vec::new();
    for (i, (name, v)) in genes.iter().enumerate() {
        unicode(&mut p, name);
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n(");
        p.push(b'(');
        unicode(&mut p, "storage");
        p.extend_from_slice(b"ctorch\nFloatStorage\n");
        unicode(&mut p, &i.to_string());
        unicode(&mut p, "cpu");
        p.push(b'J');
        p.extend_from_slice(&(v.len() as u32).to_le_bytes());
        p.extend_from_slice(b"tQ"); // tuple, persistent id
        p.extend_from_slice(&[b'K', 0]); // storage offset
        p.push(b'J');
        p.extend_from_slice(&(v.len() as u32).to_le_bytes());
        p.push(0x85); // size tuple
        p.extend_from_slice(&[b'K', 1, 0x85]); // stride
        p.push(0x89); // requires_grad False
        p.extend_from_slice(b"ccollections\nOrderedDict\n)R"); // backward hooks
        p.extend_from_slice(b"tR");
        entries.push((format!("archive/data/{i}"), v.iter().flat_map(|x| x.to_le_bytes()).collect()));
    }
    p.extend_from_slice(b"u.");
    entries.insert(0, ("archive/data.pkl".to_string(), p));
    entries.push(("archive/version".to_string(), b"3\n".to_vec()));
    write_zip(path, &entries);
}

#[test]
fn torch_pickle_dict() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("protein_embeddings.pt");
    write_torch_dict(
        &p,
        &[("TP53", vec![1.0, 2.0, 3.0]), ("MYC", vec![-1.0, 0.5, 4.0]), ("A1BG", vec![0.0, 0.0, 1.0])],
    );
    let e = GeneEmbeddings::read(&p).unwrap();
    assert_eq!(e.names(), &["A1BG", "MYC", "TP53"], "sorted by name");
    assert_eq!(e.get("MYC").unwrap(), &[-1.0, 0.5, 4.0]);
    assert_eq!(e.get("TP53").unwrap(), &[1.0, 2.0, 3.0]);
    // Mixed lengths are an error naming the gene.
    let q = dir.path().join("bad.pt");
    write_torch_dict(&q, &[("A", vec![1.0, 2.0]), ("B", vec![1.0])]);
    let err = GeneEmbeddings::read(&q).unwrap_err().to_string();
    assert!(err.contains("bad.pt") && err.contains("values"), "{err}");
}

#[test]
fn missing_genes_are_reported() {
    let m = sample().match_genes(&["MYC".into(), "NOTAGENE".into(), "TP53".into(), "LINC01".into()]);
    assert_eq!(m.missing, vec!["NOTAGENE".to_string(), "LINC01".into()]);
    let r = m.report();
    assert!(r.contains("2 of 4") && r.contains("NOTAGENE") && r.contains("skipped"), "{r}");
}
