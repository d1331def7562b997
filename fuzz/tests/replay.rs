//! Replays the seeds (fuzz/seeds), the fuzzer's corpus (fuzz/corpus/segment_reader) and
//! any crash it saved (fuzz/artifacts/segment_reader) through the same checks, without
//! libFuzzer: `cargo test --manifest-path fuzz/Cargo.toml`.

use std::path::Path;

#[test]
fn replay_seeds_corpus_and_artifacts() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for dir in ["seeds", "corpus/segment_reader", "artifacts/segment_reader"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            eprintln!("{}", f.display());
            blackbox_fuzz::check(&data);
            n += 1;
        }
    }
    eprintln!("{n} inputs replayed");
    assert!(n > 0, "no seeds found");
}

/// Writes the seeds in fuzz/seeds from a real segment: `cargo test --manifest-path
/// fuzz/Cargo.toml -- --ignored make_seeds`.
#[test]
#[ignore = "writes fuzz/seeds; run by hand when the record types change"]
fn make_seeds() {
    use blackbox_core::HEADER_SIZE;
    use blackbox_core::{Durability, RecordKind, SegmentWriter};

    let tmp = std::env::temp_dir().join(format!("bbx-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // One record of every kind (a value of every kind inside), in tag order.
    let records: Vec<_> = RecordKind::ALL.iter().map(|k| k.sample()).collect();
    let mut w = SegmentWriter::create(&tmp, Durability::Process).unwrap();
    w.set_current_test(Some("t.py::test_a"));
    for r in &records {
        w.append(r).unwrap();
    }
    w.commit().unwrap();
    let file = std::fs::read(w.path()).unwrap();
    drop(w);
    let committed = u64::from_le_bytes(file[32..40].try_into().unwrap()) as usize;
    let frames = &file[HEADER_SIZE as usize..committed];
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    let put = |name: &str, mode: u8, parts: &[&[u8]]| {
        let mut b = vec![mode];
        for p in parts {
            b.extend_from_slice(p);
        }
        std::fs::write(seeds.join(name), b).unwrap();
    };
    put("whole-segment", 0, &[&file[..committed]]);
    put("frames-fixed", 1, &[frames]);
    put("frames-as-is", 2, &[frames]);
    put("header-overlay", 3, &[&file[..64], frames]);
    put("short-file", 0, &[&file[..100]]);
    std::fs::remove_dir_all(&tmp).unwrap();
}
