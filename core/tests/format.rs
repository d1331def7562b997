//! Stores already on disk keep reading: `data/every-kind-c32df98.seg` is a segment the
//! writer of main at c32df98 (format 1, before the record tags were named) wrote, one record
//! of every kind there was, with every value kind. Each frame must decode to the record it
//! was, re-encode to the same bytes, and fold into the same view through the hot decoder
//! (the follower) as through serde (the snapshot).
//!
//! The file is frozen: a kind added later does not go in (old stores do not hold it);
//! `core/src/record.rs` tests every kind against postcard's encoding.

mod support;

use std::path::{Path, PathBuf};

use blackbox_core::{
    Aggregate, Durability, Follower, FrameChunk, Phase, Record, Role, SegmentReader, SegmentWriter,
    Snapshot, Value,
};
use support::TempDir;

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/every-kind-c32df98.seg")
}

/// What the golden segment holds, in order: one record of each of the 18 kinds of format 1
/// (the hot kinds twice: a property of each value kind, a phase with and without a report).
fn every_kind() -> Vec<Record> {
    let t = Some("tests/test_m.py::test_é[1]".to_owned());
    let all = Value::Dict(vec![
        ("none".into(), Value::None),
        ("bool".into(), Value::Bool(true)),
        ("int".into(), Value::Int(-300)),
        ("float".into(), Value::Float(0.25)),
        ("str".into(), Value::Str("é\u{1F600}".into())),
        ("bytes".into(), Value::Bytes(vec![0, 255, 128])),
        (
            "list".into(),
            Value::List(vec![Value::Int(i64::MIN), Value::List(vec![])]),
        ),
        ("dict".into(), Value::Dict(vec![])),
        (
            "big".into(),
            Value::BigInt("-123456789012345678901234567890".into()),
        ),
    ]);
    vec![
        Record::Process {
            pid: 4242,
            ppid: 1,
            role: Role::Worker,
            worker: Some("gw0".into()),
            wall_ns: 1_800_000_000_000_000_000,
        },
        Record::RunStart {
            argv: vec!["pytest".into(), "-n".into(), "2".into()],
            rootdir: "/r".into(),
            host: "h".into(),
            pid: 4241,
            wall_ns: 1_800_000_000_000_000_001,
        },
        Record::RunEnd {
            exit_status: 1,
            wall_ns: 1_800_000_000_000_000_099,
        },
        Record::TestStart {
            nodeid: t.clone().unwrap(),
            mono_ns: 1 << 40,
        },
        Record::TestPhase {
            nodeid: t.clone().unwrap(),
            phase: Phase::Setup,
            outcome: "passed".into(),
            duration_s: 0.001,
            mono_ns: (1 << 40) + 1,
            report: None,
        },
        Record::TestPhase {
            nodeid: t.clone().unwrap(),
            phase: Phase::Call,
            outcome: "failed".into(),
            duration_s: 0.5,
            mono_ns: (1 << 40) + 2,
            report: Some(all.clone()),
        },
        Record::TestEnd {
            nodeid: t.clone().unwrap(),
            mono_ns: (1 << 40) + 3,
        },
        Record::PropertySet {
            test: t.clone(),
            key: "all".into(),
            value: all,
            mono_ns: (1 << 40) + 4,
        },
        Record::PropertySet {
            test: None,
            key: "session".into(),
            value: Value::Str("x".into()),
            mono_ns: (1 << 40) + 5,
        },
        Record::PropertyAppend {
            test: t.clone(),
            key: "cmp".into(),
            value: Value::Float(0.99),
            mono_ns: (1 << 40) + 6,
        },
        Record::Fixture {
            name: "db".into(),
            scope: "session".into(),
            setup: true,
            test: t.clone(),
            duration_s: 0.125,
            mono_ns: (1 << 40) + 7,
        },
        Record::Timed {
            name: "load".into(),
            test: None,
            duration_s: 2.5,
            mono_ns: (1 << 40) + 8,
        },
        Record::Crash {
            test: t.clone(),
            pid: 4243,
            worker: Some("gw1".into()),
            signal: 11,
            exit_code: None,
            phase: Some("call".into()),
            detail: "Segmentation fault".into(),
            wall_ns: 1_800_000_000_000_000_010,
        },
        Record::Exit {
            test: t.clone(),
            code: 3,
            wall_ns: 1_800_000_000_000_000_011,
        },
        Record::Attachment {
            test: t.clone(),
            kind: "faulthandler".into(),
            path: "faulthandler-4243.txt".into(),
        },
        Record::IntentionalExit {
            test: t.clone(),
            phase: Some(Phase::Teardown),
            code: 0,
            wall_ns: 1_800_000_000_000_000_012,
        },
        Record::ProcessInfo {
            env: vec![("CUDA_VISIBLE_DEVICES".into(), "0,1".into())],
            memory_cgroup: Some("/sys/fs/cgroup/user.slice".into()),
            oom_kills: Some(2),
            mono_ns: 1 << 40,
            wall_ns: 1_800_000_000_000_000_002,
        },
        Record::Timeout {
            test: t.clone(),
            phase: Some("call".into()),
            limit_s: 1.5,
            elapsed_s: 1.625,
            source: "blackbox_timeout".into(),
            fatal: true,
            wall_ns: 1_800_000_000_000_000_013,
        },
        Record::Collected {
            total: 3,
            first: 0,
            nodeids: vec![
                (0, "tests/test_m.py::test_é[1]".into()),
                (24, "2]".into()),
                (16, "other".into()),
            ],
        },
        Record::Resume {
            run: "20261207-000000-abcdef".into(),
            attempt: 2,
            retry: true,
        },
    ]
}

/// The payloads of the frames of the segment at `path`, in order.
fn payloads(path: &Path) -> Vec<Vec<u8>> {
    let r = SegmentReader::open(path).unwrap();
    let mut chunk = FrameChunk::default();
    r.read_frames(0, &mut chunk);
    assert!(chunk.damage.is_none(), "{:?}", chunk.damage);
    (0..chunk.frames.len())
        .map(|k| chunk.payload(k).to_vec())
        .collect()
}

#[test]
fn a_segment_written_before_the_tags_were_named_reads_back_the_same() {
    let want = every_kind();
    let r = SegmentReader::open(&golden()).unwrap();
    let b = r.read_from(0);
    assert!(b.damage.is_none(), "{:?}", b.damage);
    let got: Vec<Record> = b.records.iter().map(|(_, r)| r.clone()).collect();
    assert_eq!(got, want);
    // Today's encoder writes the same bytes.
    let old = payloads(&golden());
    assert_eq!(old.len(), want.len());
    for (rec, bytes) in want.iter().zip(&old) {
        let mut buf = vec![0u8; rec.encoded_len()];
        assert_eq!(rec.encode_into(&mut buf), Some(bytes.len()), "{rec:?}");
        assert_eq!(&buf, bytes, "{rec:?}");
    }
    // The follower (the hot decoder) and the snapshot (serde) fold it into the same view.
    let tmp = TempDir::new("golden");
    let run = tmp.path().join("20261207-000000-abcdef");
    std::fs::create_dir(&run).unwrap();
    std::fs::copy(golden(), run.join("seg-4242-0000000000000001.seg")).unwrap();
    let snap = Snapshot::read("20261207-000000-abcdef", &run).unwrap();
    assert_eq!(snap.damage().count(), 0);
    assert_eq!(snap.record_count(), want.len());
    let mut f = Follower::new("20261207-000000-abcdef", &run);
    let view = f.view(&mut Aggregate::default());
    assert_eq!(format!("{view:?}"), format!("{:?}", snap.view()));
    // The test that ran, and the two collected that never started.
    assert_eq!(view.tests.len(), 3);
}

/// Writes the golden segment: `cargo test -p blackbox-core --test format -- --ignored`,
/// only ever with the code of the commit the file is named after.
#[test]
#[ignore = "writes core/tests/data/every-kind-c32df98.seg; the file is frozen"]
fn make_golden() {
    let tmp = TempDir::new("make-golden");
    let mut w = SegmentWriter::create(tmp.path(), Durability::Process).unwrap();
    for rec in every_kind() {
        w.append(&rec).unwrap();
    }
    w.commit().unwrap();
    let path = w.path().to_owned();
    drop(w);
    std::fs::create_dir_all(golden().parent().unwrap()).unwrap();
    std::fs::copy(path, golden()).unwrap();
}
