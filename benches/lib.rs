//! Shared helpers of the benchmarks: the sample records, scratch stores, the peers' stores
//! (redb) and the summary that turns one run's Criterion estimates into ratios.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use blackbox_core::{Durability, Phase, Record, Role, SegmentWriter, Value};

pub mod summary;

/// A plausible `CLOCK_MONOTONIC` reading (a machine up for a day), so varints have their
/// real width.
pub const MONO_BASE: u64 = 86_400_000_000_000;

/// The nodeid of test `i` run by worker `w`.
pub fn nodeid(w: usize, i: u64) -> String {
    format!("tests/test_models.py::test_accuracy[w{w}-resnet50-{i}]")
}

/// The record of the write-path benches: `record("metrics", {...})` in a test, about
/// 100 bytes encoded.
pub fn property_set() -> Record {
    Record::PropertySet {
        test: Some("tests/test_models.py::test_accuracy[resnet50-fp16]".into()),
        key: "metrics".into(),
        value: Value::Dict(vec![
            ("pcc".into(), Value::Float(0.998_71)),
            ("atol".into(), Value::Float(1e-3)),
            ("passed".into(), Value::Bool(true)),
        ]),
        mono_ns: MONO_BASE + 1_234_567,
    }
}

/// A fixture setup of test `i` of worker `w`.
pub fn fixture(w: usize, i: u64, setup: bool) -> Record {
    Record::Fixture {
        name: "db_session".into(),
        scope: "function".into(),
        setup,
        test: Some(nodeid(w, i)),
        duration_s: 0.003_25,
        mono_ns: MONO_BASE + i * 1_000,
    }
}

/// A phase report of a passing test with the serialized pytest report the plugin keeps
/// (`pytest_report_to_serializable` of a passed `TestReport`).
pub fn test_phase(w: usize, i: u64, phase: Phase) -> Record {
    let id = nodeid(w, i);
    let when = phase.as_str();
    let report = Value::Dict(vec![
        ("nodeid".into(), Value::Str(id.clone())),
        (
            "location".into(),
            Value::List(vec![
                Value::Str("tests/test_models.py".into()),
                Value::Int(41),
                Value::Str(format!("test_accuracy[w{w}-resnet50-{i}]")),
            ]),
        ),
        (
            "keywords".into(),
            Value::Dict(vec![
                (format!("test_accuracy[w{w}-resnet50-{i}]"), Value::Int(1)),
                ("parametrize".into(), Value::Int(1)),
                ("test_models.py".into(), Value::Int(1)),
                ("tests".into(), Value::Int(1)),
            ]),
        ),
        ("outcome".into(), Value::Str("passed".into())),
        ("longrepr".into(), Value::None),
        ("when".into(), Value::Str(when.into())),
        ("user_properties".into(), Value::List(Vec::new())),
        ("sections".into(), Value::List(Vec::new())),
        ("duration".into(), Value::Float(0.012_34)),
        ("start".into(), Value::Float(1_763_780_000.123)),
        ("stop".into(), Value::Float(1_763_780_000.135)),
        ("$report_type".into(), Value::Str("TestReport".into())),
    ]);
    Record::TestPhase {
        nodeid: id,
        phase,
        outcome: "passed".into(),
        duration_s: 0.012_34,
        mono_ns: MONO_BASE + i * 1_000 + 10,
        report: Some(report),
    }
}

/// Records per test in [`test_records`].
pub const RECORDS_PER_TEST: u64 = 8;

/// Record `k` (0..8) of test `i` of worker `w`, in the order a pytest run writes them:
/// start, fixture setup, setup report, a property, call report, teardown report, fixture
/// teardown, end.
pub fn test_record(w: usize, i: u64, k: u64) -> Record {
    let mono = MONO_BASE + i * 1_000 + k;
    match k {
        0 => Record::TestStart {
            nodeid: nodeid(w, i),
            mono_ns: mono,
        },
        1 => fixture(w, i, true),
        2 => test_phase(w, i, Phase::Setup),
        3 => Record::PropertySet {
            test: Some(nodeid(w, i)),
            key: "metrics".into(),
            value: Value::Dict(vec![
                ("pcc".into(), Value::Float(0.998_71)),
                ("passed".into(), Value::Bool(true)),
            ]),
            mono_ns: mono,
        },
        4 => test_phase(w, i, Phase::Call),
        5 => test_phase(w, i, Phase::Teardown),
        6 => fixture(w, i, false),
        _ => Record::TestEnd {
            nodeid: nodeid(w, i),
            mono_ns: mono,
        },
    }
}

/// The first record of segment `w`.
pub fn process(w: usize) -> Record {
    Record::Process {
        pid: 10_000 + w as u32,
        ppid: 9_999,
        role: Role::Worker,
        worker: Some(format!("gw{w}")),
        wall_ns: 1_763_780_000_000_000_000,
    }
}

/// What the records of a generated run look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// Tests in the 8-record pattern of [`test_record`] (mean 225 B a record: three of the
    /// eight carry the serialized pytest report).
    Pytest,
    /// Only `record("metrics", {...})` calls like [`property_set`] (106 B), 8 per test.
    Small,
}

impl Mix {
    pub fn name(self) -> &'static str {
        match self {
            Mix::Pytest => "pytest",
            Mix::Small => "small",
        }
    }

    /// Data record `t` (from 0) of segment `w`.
    pub fn record(self, w: usize, t: u64) -> Record {
        match self {
            Mix::Pytest => test_record(w, t / RECORDS_PER_TEST, t % RECORDS_PER_TEST),
            Mix::Small => match property_set() {
                Record::PropertySet { value, mono_ns, .. } => Record::PropertySet {
                    test: Some(nodeid(w, t / RECORDS_PER_TEST)),
                    key: "metrics".into(),
                    value,
                    mono_ns: mono_ns + t,
                },
                other => other,
            },
        }
    }
}

/// Every record of a run of `total` records over `segments` segments, segment after
/// segment: each starts with its process record, then the data records of `mix` (with
/// [`Mix::Pytest`] the last test of a segment may be cut short).
pub fn run_records(mix: Mix, segments: usize, total: u64) -> impl Iterator<Item = (usize, Record)> {
    let per = total / segments as u64;
    (0..segments).flat_map(move |w| {
        let n = if w + 1 == segments {
            total - per * (segments as u64 - 1)
        } else {
            per
        };
        (0..n).map(move |j| {
            if j == 0 {
                (w, process(w))
            } else {
                (w, mix.record(w, j - 1))
            }
        })
    })
}

/// Writes the run of [`run_records`] into `dir` (created), one [`SegmentWriter`] per
/// segment, a commit per 8 records; every segment is closed cleanly. Returns the bytes
/// framed.
pub fn build_run(dir: &Path, mix: Mix, segments: usize, total: u64) -> u64 {
    std::fs::create_dir_all(dir).expect("creating the run folder");
    let mut writers: Vec<SegmentWriter> = (0..segments)
        .map(|_| SegmentWriter::create(dir, Durability::Process).expect("creating a segment"))
        .collect();
    let mut n = 0u64;
    for (w, rec) in run_records(mix, segments, total) {
        writers[w].append(&rec).expect("append");
        n += 1;
        if n.is_multiple_of(RECORDS_PER_TEST) {
            writers[w].commit().expect("commit");
        }
    }
    let mut bytes = 0;
    for mut w in writers {
        w.close().expect("close");
        bytes += w.committed_len() - blackbox_core::HEADER_SIZE;
    }
    bytes
}

/// The redb table the peers use: a sequence number to a postcard-encoded [`Record`].
pub const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("records");

/// Writes the records of [`run_records`] into a new redb database at `path`, in one
/// transaction.
pub fn build_redb(path: &Path, mix: Mix, segments: usize, total: u64) -> redb::Database {
    let db = redb::Database::create(path).expect("creating the redb database");
    let txn = db.begin_write().expect("begin_write");
    {
        let mut table = txn.open_table(REDB_TABLE).expect("open_table");
        let mut buf = vec![0u8; 64 << 10];
        for (seq, (_, rec)) in run_records(mix, segments, total).enumerate() {
            let n = rec.encode_into(&mut buf).expect("encode");
            table.insert(seq as u64, &buf[..n]).expect("insert");
        }
    }
    txn.commit().expect("commit");
    db
}

/// A folder of scratch files, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh folder under the system's temporary directory, named for this process.
    pub fn new(name: &str) -> Scratch {
        let path =
            std::env::temp_dir().join(format!("blackbox-bench-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("creating a scratch folder");
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// `n` bytes as "12.3 MB".
pub fn human_bytes(n: u64) -> String {
    let mut s = String::new();
    if n >= 1 << 20 {
        let _ = write!(s, "{:.1} MiB", n as f64 / f64::from(1u32 << 20));
    } else if n >= 1 << 10 {
        let _ = write!(s, "{:.1} KiB", n as f64 / 1024.0);
    } else {
        let _ = write!(s, "{n} B");
    }
    s
}
