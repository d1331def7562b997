//! The writer's tests: write, commit, grow, prefill, read back, crash marks.

use super::*;
use crate::record::Value;
use crate::segment::bounded;
use crate::segment::{mark_crash, SegmentReader};

/// Writers register process-wide crash state: tests that create them take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn tmp() -> PathBuf {
    let d = std::env::temp_dir().join(format!("bbx-seg-{}-{:x}", std::process::id(), random_u64()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn prop(i: i64) -> Record {
    Record::PropertySet {
        test: Some("t.py::a".into()),
        key: "k".into(),
        value: Value::Int(i),
        mono_ns: 0,
    }
}

/// A record encoded by someone else: it is written only when its encoding succeeds,
/// and asked for its length when the room past the tail is too small.
struct Borrowed<'a> {
    record: &'a Record,
    fail: bool,
    /// Encode only into a buffer of exactly the encoded length (the sized path).
    exact_only: bool,
}

impl EncodeRecord for Borrowed<'_> {
    fn encode_into(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        if self.fail {
            return Err(Error::Encode("refused on purpose".into()));
        }
        if self.exact_only && buf.len() != self.record.encoded_len() {
            return Ok(None);
        }
        Ok(self.record.encode_into(buf))
    }
    fn encoded_len(&self) -> Result<usize> {
        Ok(self.record.encoded_len())
    }
    fn too_deep(&self) -> bool {
        false
    }
}

#[test]
fn append_encoded_writes_only_what_encodes() {
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tmp();
    let mut w = SegmentWriter::create(&d, Durability::Process).unwrap();
    let (one, two) = (prop(1), prop(2));
    let failing = Borrowed {
        record: &one,
        fail: true,
        exact_only: false,
    };
    let err = w.append_encoded(&failing).unwrap_err();
    assert!(err.to_string().contains("refused on purpose"), "{err}");
    assert_eq!(w.pending(), 0, "a failed encoding appends nothing");
    let sized = Borrowed {
        record: &two,
        fail: false,
        exact_only: true,
    };
    w.append_encoded(&sized).unwrap();
    w.commit().unwrap();
    let r = SegmentReader::open(w.path()).unwrap();
    let b = r.read_from(0);
    assert!(b.damage.is_none());
    let got: Vec<Record> = b.records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(got.last(), Some(&two));
    assert!(!got.contains(&one));
    drop(w);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn write_commit_read() {
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tmp();
    let mut w = SegmentWriter::create(&d, Durability::Process).unwrap();
    w.append(&prop(1)).unwrap();
    let r = SegmentReader::open(w.path()).unwrap();
    assert!(
        r.read_from(0).records.is_empty(),
        "uncommitted records are invisible"
    );
    w.commit().unwrap();
    let b = r.read_from(0);
    assert_eq!(b.records.len(), 1);
    assert!(b.damage.is_none());
    assert!(r.writer_alive());
    w.append(&prop(2)).unwrap();
    w.rollback();
    w.append(&prop(3)).unwrap();
    w.commit().unwrap();
    let b2 = r.read_from(b.next);
    assert_eq!(
        b2.records
            .iter()
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>(),
        vec![prop(3)]
    );
    w.set_current_test(Some("t.py::running"));
    assert_eq!(r.current_test().as_deref(), Some("t.py::running"));
    w.close().unwrap();
    assert!(r.info().closed_cleanly);
    drop(w);
    assert!(!r.writer_alive());
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn grows_past_initial_reservation() {
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tmp();
    let mut w = SegmentWriter::create(&d, Durability::Process).unwrap();
    let big = Record::PropertySet {
        test: None,
        key: "blob".into(),
        value: Value::Str("x".repeat(100_000)),
        mono_ns: 0,
    };
    for _ in 0..30 {
        w.append(&big).unwrap();
    }
    w.commit().unwrap();
    let r = SegmentReader::open(w.path()).unwrap();
    assert_eq!(r.read_from(0).records.len(), 30);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn read_range_streams_across_windows_and_stops_where_read_from_does() {
    use std::os::unix::fs::FileExt;
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tmp();
    let mut w = SegmentWriter::create(&d, Durability::Process).unwrap();
    // Small records between large ones: about 3 windows of READ_WINDOW bytes.
    for i in 0..60 {
        let value = if i % 3 == 0 {
            Value::Str("x".repeat(100_000))
        } else {
            Value::Int(i)
        };
        w.append(&Record::PropertySet {
            test: None,
            key: format!("k{i}"),
            value,
            mono_ns: 0,
        })
        .unwrap();
    }
    w.commit().unwrap();
    let path = w.path().to_owned();
    drop(w);
    let streamed = |r: &SegmentReader| {
        let (mut next, mut all) = (0, Vec::new());
        loop {
            let b = r.read_range(next, 7);
            assert!(b.records.len() <= 7);
            let got = b.records.len();
            all.extend(b.records);
            next = b.next;
            if b.damage.is_some() || got == 0 {
                return (all, next, b.damage.map(|d| (d.offset, d.reason)));
            }
        }
    };
    let r = SegmentReader::open(&path).unwrap();
    let whole = r.read_from(0);
    assert_eq!(whole.records.len(), 60);
    assert!(whole.damage.is_none());
    assert_eq!(streamed(&r), (whole.records.clone(), whole.next, None));
    // A flipped byte in the 41st record's payload: both stop there, with one damage.
    let at = whole.records[40].0;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at + FRAME_HEADER as u64 + 1)
        .unwrap();
    f.write_all_at(&[byte[0] ^ 0xff], at + FRAME_HEADER as u64 + 1)
        .unwrap();
    let r = SegmentReader::open(&path).unwrap();
    let whole = r.read_from(0);
    assert_eq!(whole.records.len(), 40);
    let damage = whole.damage.clone().map(|d| (d.offset, d.reason));
    assert_eq!(damage, Some((at, "checksum mismatch".to_owned())));
    assert_eq!(streamed(&r), (whole.records, at, damage));
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn prefilled_pages_keep_every_frame_and_stay_in_the_reservation() {
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tmp();
    let mut w = SegmentWriter::create(&d, Durability::Process).unwrap();
    let big = Record::PropertySet {
        test: None,
        key: "blob".into(),
        value: Value::Bytes(vec![7; (PREFILL_MAX + 3 * PAGE) as usize]),
        mono_ns: 0,
    };
    let mut want = Vec::new();
    for i in 0..40_000 {
        // Rolled-back frames, a frame larger than a prefill chunk, and many small ones
        // across several chunks and growth steps.
        if i % 1000 == 999 {
            w.commit().unwrap();
            w.append(&prop(-1)).unwrap();
            w.rollback();
        }
        let r = if i == 20_000 { big.clone() } else { prop(i) };
        w.append(&r).unwrap();
        want.push(r);
        if i % 7 == 0 {
            w.commit().unwrap();
        }
        assert!(w.prefilled == MAX_SEGMENT || w.prefilled <= w.allocated);
        assert!(w.tail <= w.allocated);
    }
    w.commit().unwrap();
    if on_ext4(&w.file) {
        assert!(
            w.prefilled > 2 * PREFILL_MAX && w.prefilled < MAX_SEGMENT,
            "prefilled up to {}",
            w.prefilled
        );
    } else {
        assert_eq!(w.prefilled, MAX_SEGMENT, "prefilling is for ext4 only");
    }
    let len = std::fs::metadata(w.path()).unwrap().len();
    assert_eq!(len, w.allocated, "the file holds exactly what was reserved");
    let b = SegmentReader::open(w.path()).unwrap().read_from(0);
    assert!(b.damage.is_none(), "{:?}", b.damage);
    let got: Vec<Record> = b.records.into_iter().map(|(_, r)| r).collect();
    let first_diff = got.iter().zip(&want).position(|(g, w)| g != w);
    assert!(
        got.len() == want.len() && first_diff.is_none(),
        "read {} records, wrote {}; first difference at {first_diff:?}",
        got.len(),
        want.len()
    );
    drop(w);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn system_durability_does_not_prefill() {
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tmp();
    let mut w = SegmentWriter::create(&d, Durability::System).unwrap();
    for i in 0..100 {
        w.append(&prop(i)).unwrap();
    }
    w.commit().unwrap();
    assert_eq!(w.prefilled, MAX_SEGMENT);
    drop(w);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn the_depth_shortcut_agrees_with_the_full_walk() {
    let scalar = Value::Float(1.0);
    let list = |v: Value| Value::List(vec![Value::None, v]);
    let dict = |v: Value| Value::Dict(vec![("a".into(), Value::Int(1)), ("b".into(), v)]);
    let mut deep = Value::None;
    for i in 0..=MAX_VALUE_DEPTH {
        deep = if i % 2 == 0 { list(deep) } else { dict(deep) };
    }
    for (value, shallow) in [
        (scalar.clone(), true),
        (list(scalar.clone()), true),
        (dict(scalar.clone()), true),
        (list(list(scalar.clone())), false),
        (dict(list(scalar)), false),
        (deep, false),
    ] {
        assert_eq!(at_most_two_levels(&value), shallow, "{value:?}");
        for rec in [
            Record::PropertySet {
                test: None,
                key: "k".into(),
                value: value.clone(),
                mono_ns: 0,
            },
            Record::PropertyAppend {
                test: None,
                key: "k".into(),
                value: value.clone(),
                mono_ns: 0,
            },
        ] {
            assert_eq!(
                EncodeRecord::too_deep(&rec),
                bounded::too_deep(&rec),
                "{rec:?}"
            );
        }
    }
}

#[test]
fn crash_mark_records_signal_and_test() {
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let d = tmp();
    let mut w = SegmentWriter::create(&d, Durability::Process).unwrap();
    w.set_current_test(Some("t.py::boom"));
    assert!(mark_crash(11));
    let r = SegmentReader::open(w.path()).unwrap();
    let m = r.crash_mark().unwrap();
    assert_eq!(m.signal, 11);
    assert_eq!(m.test.as_deref(), Some("t.py::boom"));
    drop(w);
    std::fs::remove_dir_all(d).unwrap();
}

#[test]
fn long_nodeid_is_cut_on_a_char_boundary() {
    let s = "é".repeat(400);
    let n = floor_char_boundary(s.as_bytes(), TEST_SLOT);
    assert!(n <= TEST_SLOT && s.is_char_boundary(n));
}
