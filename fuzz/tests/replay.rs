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
    use blackbox_core::{Durability, Phase, Record, Role, SegmentWriter, Value};

    let tmp = std::env::temp_dir().join(format!("bbx-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let all = Value::Dict(vec![
        ("n".into(), Value::None),
        ("b".into(), Value::Bool(true)),
        ("i".into(), Value::Int(-3)),
        ("f".into(), Value::Float(0.25)),
        ("s".into(), Value::Str("é".into())),
        ("y".into(), Value::Bytes(vec![0, 255])),
        ("l".into(), Value::List(vec![Value::Int(1), Value::List(vec![])])),
        ("big".into(), Value::BigInt("123456789012345678901234567890".into())),
    ]);
    let t = Some("t.py::test_a".to_owned());
    let records = vec![
        Record::Process { pid: 7, ppid: 1, role: Role::Worker, worker: Some("gw0".into()), wall_ns: 1 },
        Record::RunStart { argv: vec!["pytest".into()], rootdir: "/r".into(), host: "h".into(), pid: 7, wall_ns: 2 },
        Record::Resume { run: "20261207-000000.000000-abcd".into(), attempt: 2, retry: false },
        Record::Collected { total: 2, first: 0, nodeids: vec![(0, "t.py::test_a".into()), (11, "b".into())] },
        Record::TestStart { nodeid: "t.py::test_a".into(), mono_ns: 3 },
        Record::PropertySet { test: t.clone(), key: "all".into(), value: all.clone(), mono_ns: 4 },
        Record::PropertyAppend { test: t.clone(), key: "cmp".into(), value: Value::Float(0.5), mono_ns: 5 },
        Record::Fixture { name: "db".into(), scope: "session".into(), setup: true, test: t.clone(), duration_s: 0.1, mono_ns: 6 },
        Record::Timed { name: "f".into(), test: t.clone(), duration_s: 0.2, mono_ns: 7 },
        Record::TestPhase { nodeid: "t.py::test_a".into(), phase: Phase::Call, outcome: "failed".into(), duration_s: 0.3, mono_ns: 8, report: Some(all) },
        Record::TestEnd { nodeid: "t.py::test_a".into(), mono_ns: 9 },
        Record::Crash { test: t.clone(), pid: 8, worker: None, signal: 11, exit_code: None, phase: Some("call".into()), detail: "x".into(), wall_ns: 10 },
        Record::Exit { test: t.clone(), code: 3, wall_ns: 11 },
        Record::Attachment { test: t, kind: "faulthandler".into(), path: "fh.txt".into() },
        Record::RunEnd { exit_status: 1, wall_ns: 12 },
    ];
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
