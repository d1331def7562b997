//! Damaged and hostile files: truncated segments, flipped bytes, wrong magic, a future
//! format version, empty files, huge length fields, and a directory, a symlink or a FIFO
//! where a segment should be. Readers name the path, the offset and the reason, read
//! everything valid before the damage, never panic, and never allocate more than the file
//! holds. Segments are created 0600 in 0700 folders and never through a planted symlink.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fs::File;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use blackbox_core::FoldOptions;
use blackbox_core::{
    Durability, Error, Record, Recorder, Role, SegmentReader, SegmentWriter, Snapshot, Store, Value,
};
use blackbox_core::{
    FrameChunk, ReadBatch, FORMAT_VERSION, HEADER_SIZE, MAGIC, MAX_RECORD, MAX_VALUE_DEPTH,
    READ_WINDOW,
};
use support::{ack, child_role, spawn, TempDir};

// ---------------------------------------------------------------------------------------
// Allocation accounting: what the current thread holds at its peak.
// ---------------------------------------------------------------------------------------

struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn account(delta: isize) {
    let _ = LIVE.try_with(|l| {
        let now = l.get() + delta;
        l.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: forwards to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        account(l.size() as isize);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        account(l.size() as isize);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        account(-(l.size() as isize));
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        account(new as isize - l.size() as isize);
        // SAFETY: as above.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f` and returns its result with the most this thread held at once meanwhile,
/// above what it held before.
fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let out = f();
    (out, (PEAK.with(Cell::get) - base).max(0) as usize)
}

// ---------------------------------------------------------------------------------------
// Segments made by the writer, and by hand after docs/format.md
// ---------------------------------------------------------------------------------------

fn rec(i: usize) -> Record {
    Record::PropertySet {
        test: Some(format!("t.py::test_{i}")),
        key: "k".repeat(i % 5),
        value: Value::Bytes(vec![i as u8; (i * 37) % 300]),
        mono_ns: i as u64,
    }
}

/// A finished segment of `n` records (its writer gone): (path, [(offset, record)]).
fn written(dir: &Path, n: usize) -> (PathBuf, Vec<(u64, Record)>) {
    let mut w = SegmentWriter::create(dir, Durability::Process).unwrap();
    for i in 0..n {
        w.append(&rec(i)).unwrap();
        w.commit().unwrap();
    }
    let path = w.path().to_owned();
    drop(w);
    let r = SegmentReader::open(&path).unwrap();
    let b = r.read_from(0);
    assert!(b.damage.is_none() && b.records.len() == n);
    (path, b.records)
}

fn encode(r: &Record) -> Vec<u8> {
    let mut buf = vec![0u8; r.encoded_len()];
    r.encode_into(&mut buf).unwrap();
    buf
}

/// One frame as docs/format.md lays it out: length, crc32(length bytes + payload), payload,
/// zero padding to 8.
fn frame(payload: &[u8]) -> Vec<u8> {
    let len = (payload.len() as u32).to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    let mut f = Vec::new();
    f.extend_from_slice(&len);
    f.extend_from_slice(&h.finalize().to_le_bytes());
    f.extend_from_slice(payload);
    f.resize(f.len().next_multiple_of(8), 0);
    f
}

/// A whole segment as docs/format.md lays it out, committed to the end of `frames`.
fn handmade(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE as usize];
    b[..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    b[16..20].copy_from_slice(&4242u32.to_le_bytes());
    b[24..32].copy_from_slice(&1_800_000_000_000_000_000u64.to_le_bytes());
    for f in frames {
        b.extend_from_slice(f);
    }
    let committed = b.len() as u64;
    set_committed(&mut b, committed);
    b
}

fn set_committed(b: &mut [u8], committed: u64) {
    b[32..40].copy_from_slice(&committed.to_le_bytes());
}

fn plant(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs `f` while byte `pos` of the file at `path` is `value`, then puts the old one back.
fn with_flip<T>(path: &Path, pos: usize, value: u8, f: impl FnOnce() -> T) -> T {
    use std::os::unix::fs::FileExt;
    let file = File::options().read(true).write(true).open(path).unwrap();
    let mut old = [0u8];
    file.read_exact_at(&mut old, pos as u64).unwrap();
    file.write_all_at(&[value], pos as u64).unwrap();
    let out = f();
    file.write_all_at(&old, pos as u64).unwrap();
    out
}

fn read(path: &Path) -> ReadBatch {
    let r = SegmentReader::open(path).unwrap_or_else(|e| panic!("{e}"));
    let batch = r.read_from(0);
    let frames = by_frames(&r);
    // A frame that does not decode is damage at its offset in both (the reason aside).
    let seen = |b: &ReadBatch| {
        let d = b.damage.as_ref().map(|d| {
            let decoding = d.reason.contains("undecodable") || d.reason.contains("trailing");
            (
                d.path.clone(),
                d.offset,
                (!decoding).then(|| d.reason.clone()),
            )
        });
        (b.records.clone(), b.next, d)
    };
    assert_eq!(
        seen(&frames),
        seen(&batch),
        "read_frames and read_from disagree"
    );
    batch
}

/// What the follower's reader sees: windows of checked frames (`read_frames`), decoded
/// afterwards. It must find the same records and the same damage as `read_from`.
fn by_frames(r: &SegmentReader) -> ReadBatch {
    let mut out = ReadBatch::default();
    let mut chunk = FrameChunk::default();
    let mut next = 0;
    loop {
        r.read_frames(next, &mut chunk);
        for &(offset, _, _) in &chunk.frames {
            // Decoded as a reader decodes (depth-bounded, reserving little up front).
            let Some(rec) = r.read_one(offset) else {
                out.next = offset;
                out.damage = Some(blackbox_core::Damage {
                    path: r.path().to_owned(),
                    offset,
                    reason: "undecodable".into(),
                });
                return out;
            };
            out.records.push((offset, rec));
        }
        out.next = chunk.next;
        if chunk.damage.is_some() || chunk.frames.is_empty() {
            out.damage = chunk.damage.take();
            return out;
        }
        next = chunk.next;
    }
}

fn damaged_open(path: &Path) -> blackbox_core::Damage {
    match SegmentReader::open(path) {
        Err(Error::Damaged(d)) => {
            assert_eq!(d.path, path);
            let shown = Error::Damaged(d.clone()).to_string();
            assert!(
                shown.contains(&path.display().to_string())
                    && shown.contains(&format!("at offset {}", d.offset)),
                "{shown}"
            );
            d
        }
        other => panic!("{}: expected damage, got {other:?}", path.display()),
    }
}

/// A store at `root` (created), a new run in it and a recorder of that run.
fn new_run(root: &Path, role: Role) -> (Store, String, Recorder) {
    let store = Store::create(root).unwrap();
    let run = store.new_run().unwrap();
    let rec = Recorder::new(
        store.run_path(&run).unwrap(),
        role,
        None,
        Durability::Process,
    );
    (store, run, rec)
}

fn records_of(b: &ReadBatch) -> Vec<Record> {
    b.records.iter().map(|(_, r)| r.clone()).collect()
}

// ---------------------------------------------------------------------------------------

#[test]
fn a_handmade_segment_after_the_documented_layout_reads_back() {
    let tmp = TempDir::new("layout");
    let recs: Vec<Record> = (0..5).map(rec).collect();
    let frames: Vec<Vec<u8>> = recs.iter().map(|r| frame(&encode(r))).collect();
    let p = plant(tmp.path(), "seg-1-layout.seg", &handmade(&frames));
    let r = SegmentReader::open(&p).unwrap();
    let b = r.read_from(0);
    assert!(b.damage.is_none(), "{:?}", b.damage);
    assert_eq!(records_of(&b), recs);
    assert_eq!(r.info().pid, 4242);
    assert_eq!(b.next, std::fs::metadata(&p).unwrap().len());
    // And the writer lays frames out the same way, byte for byte.
    let (wp, _) = written(tmp.path(), 5);
    let wbytes = std::fs::read(&wp).unwrap();
    let body: Vec<u8> = frames.concat();
    assert_eq!(
        &wbytes[HEADER_SIZE as usize..HEADER_SIZE as usize + body.len()],
        &body[..]
    );
}

#[test]
fn a_truncated_segment_reads_up_to_the_cut() {
    let tmp = TempDir::new("trunc");
    let (path, recs) = written(tmp.path(), 40);
    let bytes = std::fs::read(&path).unwrap();
    let committed = u64::from_le_bytes(bytes[32..40].try_into().unwrap());
    let ends: Vec<u64> = recs
        .iter()
        .map(|(o, _)| *o)
        .skip(1)
        .chain([committed])
        .collect();
    let mut cuts: Vec<u64> = vec![
        0,
        1,
        8,
        100,
        HEADER_SIZE - 1,
        HEADER_SIZE,
        HEADER_SIZE + 3,
        committed - 1,
    ];
    for (o, _) in &recs {
        cuts.extend([*o, *o + 4, *o + 8, *o + 13]);
    }
    for cut in cuts {
        let p = plant(tmp.path(), "seg-9-cut.seg", &bytes[..cut as usize]);
        if cut < HEADER_SIZE {
            let d = damaged_open(&p);
            assert_eq!(d.offset, 0);
            assert!(
                d.reason.contains(&format!("holds {cut} bytes")),
                "{}",
                d.reason
            );
            continue;
        }
        let b = read(&p);
        let whole = ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(b.records, recs[..whole], "cut at {cut}");
        let d = b
            .damage
            .unwrap_or_else(|| panic!("cut at {cut}: no damage reported"));
        let stop = if whole < recs.len() {
            recs[whole].0
        } else {
            committed
        };
        assert_eq!(
            (d.path.as_path(), d.offset),
            (p.as_path(), stop),
            "cut at {cut}: {d}"
        );
        assert!(
            d.reason.contains("the file ends") || d.reason.contains("truncated"),
            "cut at {cut}: {}",
            d.reason
        );
        assert_eq!(b.next, stop);
    }
}

#[test]
fn every_flipped_byte_stops_reading_at_its_frame() {
    let tmp = TempDir::new("flip");
    let (path, recs) = written(tmp.path(), 24);
    let mut bytes = std::fs::read(&path).unwrap();
    let committed = u64::from_le_bytes(bytes[32..40].try_into().unwrap()) as usize;
    // The reserved space past the committed end plays no part: keep the copies small.
    bytes.truncate(committed);
    let p = plant(tmp.path(), "seg-9-flip.seg", &bytes);
    let mut caught = 0;
    for pos in HEADER_SIZE as usize..committed {
        let k = recs.iter().rposition(|(o, _)| *o as usize <= pos).unwrap();
        let (start, _) = recs[k];
        let payload_end = start as usize
            + 8
            + u32::from_le_bytes(
                bytes[start as usize..start as usize + 4]
                    .try_into()
                    .unwrap(),
            ) as usize;
        for mask in [0x01u8, 0x80, 0xff] {
            let got = with_flip(&p, pos, bytes[pos] ^ mask, || read(&p));
            if pos < payload_end {
                let d = got
                    .damage
                    .unwrap_or_else(|| panic!("flip {mask:#x} at {pos} not caught"));
                assert_eq!(d.offset, start, "flip at {pos}: {d}");
                assert_eq!(got.records, recs[..k], "flip at {pos}");
                caught += 1;
            } else {
                // Padding carries nothing: every record still reads.
                assert!(
                    got.damage.is_none(),
                    "flip in padding at {pos}: {:?}",
                    got.damage
                );
                assert_eq!(got.records, recs);
            }
        }
    }
    // The header: magic and version are refused by name; the committed end can only
    // shorten what is read; the other fields change nothing about the records.
    // Every byte of the fields, a sample of the two nodeid slots and the reserved rest.
    for pos in (0..128).chain((128..HEADER_SIZE as usize).step_by(29)) {
        let opened = with_flip(&p, pos, bytes[pos] ^ 0x41, || {
            SegmentReader::open(&p).map(|r| r.read_from(0))
        });
        match opened {
            Err(Error::Damaged(d)) => assert!(pos < 8 || (12..16).contains(&pos), "{pos}: {d}"),
            Err(Error::UnsupportedVersion { found, .. }) => {
                assert!((8..12).contains(&pos) && found != FORMAT_VERSION);
            }
            Err(e) => panic!("{pos}: {e}"),
            Ok(got) => {
                if (32..40).contains(&pos) {
                    assert!(recs.starts_with(&got.records), "flip at {pos}");
                    assert!(
                        got.damage.is_some()
                            || got.records.len() < recs.len()
                            || got.records == recs
                    );
                } else {
                    assert!(got.damage.is_none(), "flip at {pos}: {:?}", got.damage);
                    assert_eq!(got.records, recs);
                }
            }
        }
    }
    eprintln!(
        "{caught} flips in {} frame bytes caught",
        committed - HEADER_SIZE as usize
    );
}

#[test]
fn foreign_files_and_future_versions_are_refused_by_name() {
    let tmp = TempDir::new("foreign");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.resize(9000, 0x42);
    let p = plant(tmp.path(), "seg-1-png.seg", &png);
    let d = damaged_open(&p);
    assert_eq!(d.offset, 0);
    assert!(d.reason.contains("wrong magic"), "{}", d.reason);

    let mut future = handmade(&[frame(&encode(&rec(1)))]);
    future[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let p = plant(tmp.path(), "seg-1-future.seg", &future);
    match SegmentReader::open(&p) {
        Err(e @ Error::UnsupportedVersion { .. }) => {
            let Error::UnsupportedVersion {
                path,
                found,
                supported,
            } = &e
            else {
                unreachable!()
            };
            assert_eq!(
                (path.as_path(), *found, *supported),
                (p.as_path(), FORMAT_VERSION + 1, FORMAT_VERSION)
            );
            let msg = e.to_string();
            assert!(
                msg.contains(&p.display().to_string())
                    && msg.contains(&format!("version {}", FORMAT_VERSION + 1)),
                "{msg}"
            );
        }
        other => panic!("{other:?}"),
    }

    let mut wrong_header = handmade(&[]);
    wrong_header[12..16].copy_from_slice(&8192u32.to_le_bytes());
    let d = damaged_open(&plant(tmp.path(), "seg-1-hsize.seg", &wrong_header));
    assert_eq!(d.offset, 12);
}

#[test]
fn an_empty_segment_is_damage_unless_a_live_writer_holds_it() {
    let tmp = TempDir::new("empty");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let (good, recs) = written(&run, 3);
    let empty = plant(&run, "seg-1-empty.seg", b"");
    let d = damaged_open(&empty);
    assert!(d.reason.contains("holds 0 bytes"), "{}", d.reason);

    // While someone holds its lock (a writer that has just created it) it is not reported
    // yet: the follower looks again on its next poll.
    let holder = File::open(&empty).unwrap();
    holder.lock().unwrap();
    let snap = Snapshot::read("run", &run).unwrap();
    assert_eq!(
        snap.segments.len(),
        1,
        "an empty segment with a live writer is skipped for now"
    );
    assert_eq!(snap.segments[0].path, good);
    drop(holder);

    // Its writer is gone: reported as damaged, with the good segment still read in full.
    let snap = Snapshot::read("run", &run).unwrap();
    assert_eq!(snap.segments.len(), 2);
    let bad = snap.segments.iter().position(|s| s.path == empty).unwrap();
    let d = snap.segments[bad]
        .damage
        .as_ref()
        .expect("the empty file is reported");
    assert_eq!((d.path.as_path(), d.offset), (empty.as_path(), 0));
    assert!(!snap.segments[bad].alive);
    let ok = 1 - bad;
    assert!(snap.segments[ok].damage.is_none());
    assert_eq!(snap.records[ok].len(), recs.len());
    assert_eq!(snap.damage().count(), 1);
}

#[test]
fn huge_length_fields_allocate_nothing_they_promise() {
    let tmp = TempDir::new("huge");
    let recs: Vec<Record> = (0..4).map(rec).collect();
    let frames: Vec<Vec<u8>> = recs.iter().map(|r| frame(&encode(r))).collect();
    let good = handmade(&frames);
    let last = (good.len() - frames[3].len()) as u64;
    for (len, expect) in [
        (u32::MAX, "out of range"),
        (MAX_RECORD as u32 + 1, "out of range"),
        (MAX_RECORD as u32, "runs past"),
        (1 << 20, "runs past"),
        (0, "out of range"),
    ] {
        let mut b = good.clone();
        b[last as usize..last as usize + 4].copy_from_slice(&len.to_le_bytes());
        let p = plant(tmp.path(), "seg-1-len.seg", &b);
        let (got, peak) = peak_of(|| read(&p));
        assert_eq!(records_of(&got), recs[..3]);
        let d = got.damage.unwrap();
        assert_eq!(d.offset, last, "{d}");
        assert!(d.reason.contains(expect), "length {len}: {}", d.reason);
        assert!(
            peak < 64 << 10,
            "length {len}: {peak} bytes allocated for a {}-byte file",
            b.len()
        );
    }
    // A committed end far past the file: read what is there, say it was truncated.
    for committed in [u64::MAX - 7, 1 << 40, good.len() as u64 + 4096] {
        let mut b = good.clone();
        set_committed(&mut b, committed);
        let p = plant(tmp.path(), "seg-1-committed.seg", &b);
        let (got, peak) = peak_of(|| read(&p));
        assert_eq!(records_of(&got), recs);
        let d = got.damage.unwrap();
        assert_eq!(d.offset, good.len() as u64);
        assert!(d.reason.contains("truncated"), "{}", d.reason);
        assert!(
            peak < 64 << 10,
            "committed {committed}: {peak} bytes allocated"
        );
        // read_one of a frame the header promises but the file lacks.
        let r = SegmentReader::open(&p).unwrap();
        let (one, peak) = peak_of(|| r.read_one(good.len() as u64));
        assert!(one.is_none() && peak < 4096);
    }
    // A committed end that is not a frame boundary, or inside the header.
    for committed in [HEADER_SIZE + 3, 100, 0] {
        let mut b = good.clone();
        set_committed(&mut b, committed);
        let got = read(&plant(tmp.path(), "seg-1-odd.seg", &b));
        assert!(got.records.is_empty());
        assert_eq!(got.damage.unwrap().offset, 32);
    }
}

#[test]
fn a_huge_sparse_segment_is_read_in_bounded_memory() {
    let tmp = TempDir::new("sparse");
    let recs: Vec<Record> = (0..4).map(rec).collect();
    let mut b = handmade(&recs.iter().map(|r| frame(&encode(r))).collect::<Vec<_>>());
    let end = b.len() as u64;
    let size = 1u64 << 40; // 1 TiB of holes
    set_committed(&mut b, size);
    let p = plant(tmp.path(), "seg-1-sparse.seg", &b);
    File::options()
        .write(true)
        .open(&p)
        .unwrap()
        .set_len(size)
        .unwrap();
    let (got, peak) = peak_of(|| read(&p));
    assert_eq!(records_of(&got), recs);
    let d = got.damage.unwrap();
    assert_eq!(d.offset, end);
    assert!(d.reason.contains("frame length 0"), "{}", d.reason);
    assert!(
        peak <= READ_WINDOW + (64 << 10),
        "{peak} bytes allocated to read a sparse 1 TiB file"
    );
    // (The accounting works: the reader did hold its one window.)
    assert!(peak >= READ_WINDOW, "{peak}");
}

#[test]
fn frames_with_valid_checksums_and_hostile_payloads() {
    let tmp = TempDir::new("payload");
    let ok = frame(&encode(&rec(1)));
    // A record kind from the future (variant 200), trailing bytes, garbage.
    let mut trailing = encode(&rec(2));
    trailing.push(0);
    for (payload, expect) in [
        (vec![200u8, 1, 2, 3], "undecodable record"),
        (trailing, "trailing bytes"),
        (vec![0xff; 64], "undecodable record"),
    ] {
        let p = plant(
            tmp.path(),
            "seg-1-payload.seg",
            &handmade(&[ok.clone(), frame(&payload)]),
        );
        let got = read(&p);
        assert_eq!(records_of(&got), vec![rec(1)]);
        let d = got.damage.unwrap();
        assert_eq!(d.offset, HEADER_SIZE + ok.len() as u64);
        assert!(d.reason.contains(expect), "{}", d.reason);
    }
    // Lists nested 150 deep, each claiming 100 000 elements (the frame holds that many
    // bytes, but they do not decode): the claims must not buy room reserved up front at
    // every level (1 MiB each, before the decoder capped it).
    let mut claims = vec![6u8, 0, 0];
    for _ in 0..150 {
        claims.extend_from_slice(&[6, 0xa0, 0x8d, 0x06]);
    }
    claims.resize(claims.len() + 100_000, 0xff);
    let p = plant(
        tmp.path(),
        "seg-1-claims.seg",
        &handmade(&[ok.clone(), frame(&claims)]),
    );
    let (got, peak) = peak_of(|| read(&p));
    assert_eq!(records_of(&got), vec![rec(1)]);
    assert!(got.damage.unwrap().reason.contains("undecodable record"));
    assert!(
        peak < 2 << 20,
        "{peak} bytes allocated for a {}-byte frame",
        claims.len()
    );

    // A value nested a million levels deep: refused, not a stack overflow of the reader.
    let mut deep = vec![6u8, 0, 0];
    for _ in 0..1_000_000 {
        deep.extend_from_slice(&[6, 1]);
    }
    deep.extend_from_slice(&[0, 0]);
    let p = plant(
        tmp.path(),
        "seg-1-deep.seg",
        &handmade(&[ok.clone(), frame(&deep)]),
    );
    let (got, peak) = peak_of(|| read(&p));
    assert_eq!(records_of(&got), vec![rec(1)]);
    assert!(got.damage.unwrap().reason.contains("nested more than"));
    assert!(peak < 8 << 20, "{peak}");
}

#[test]
fn writers_refuse_values_readers_would_refuse() {
    let tmp = TempDir::new("depth");
    let nest = |depth: usize| {
        let mut v = Value::None;
        for _ in 1..depth {
            v = Value::List(vec![v]);
        }
        Record::PropertyAppend {
            test: None,
            key: "deep".into(),
            value: v,
            mono_ns: depth as u64,
        }
    };
    let mut w = SegmentWriter::create(tmp.path(), Durability::Process).unwrap();
    w.append(&nest(MAX_VALUE_DEPTH)).unwrap();
    let e = w.append(&nest(MAX_VALUE_DEPTH + 1)).unwrap_err();
    assert!(
        matches!(e, Error::Encode(_)) && e.to_string().contains("nested more than"),
        "{e}"
    );
    w.append(&rec(3)).unwrap();
    w.commit().unwrap();
    let got = read(w.path());
    assert!(got.damage.is_none());
    assert_eq!(records_of(&got), vec![nest(MAX_VALUE_DEPTH), rec(3)]);
}

#[test]
fn a_directory_a_symlink_or_a_fifo_in_place_of_a_segment() {
    let tmp = TempDir::new("kinds");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let elsewhere = tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let (target, _) = written(&elsewhere, 5);
    let (good, recs) = written(&run, 2);

    let dir = run.join("seg-1-dir.seg");
    std::fs::create_dir(&dir).unwrap();
    let link = run.join("seg-1-link.seg");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let dangling = run.join("seg-1-dangling.seg");
    std::os::unix::fs::symlink(tmp.path().join("nothing-here"), &dangling).unwrap();
    let fifo = run.join("seg-1-fifo.seg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);

    // Opening a FIFO must not wait for a writer: do it on a thread with a deadline.
    let (tx, rx) = std::sync::mpsc::channel();
    let run2 = run.clone();
    std::thread::spawn(move || {
        let d = [
            damaged_open(&run2.join("seg-1-dir.seg")),
            damaged_open(&run2.join("seg-1-link.seg")),
            damaged_open(&run2.join("seg-1-fifo.seg")),
            damaged_open(&run2.join("seg-1-dangling.seg")),
        ];
        let snap = Snapshot::read("run", &run2).unwrap();
        tx.send((d, snap)).unwrap();
    });
    let (d, snap) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("reading a FIFO in place of a segment hung");
    assert!(
        d[0].reason.contains("not a regular file"),
        "{}",
        d[0].reason
    );
    assert!(d[1].reason.contains("symbolic link"), "{}", d[1].reason);
    assert!(
        d[2].reason.contains("not a regular file"),
        "{}",
        d[2].reason
    );
    assert!(d[3].reason.contains("symbolic link"), "{}", d[3].reason);

    assert_eq!(snap.segments.len(), 5);
    for (i, st) in snap.segments.iter().enumerate() {
        if st.path == good {
            assert!(st.damage.is_none());
            assert_eq!(
                snap.records[i],
                recs.iter().map(|(_, r)| r.clone()).collect::<Vec<_>>()
            );
        } else {
            let d = st
                .damage
                .as_ref()
                .unwrap_or_else(|| panic!("{} not reported", st.path.display()));
            assert_eq!(d.path, st.path);
            assert!(
                snap.records[i].is_empty(),
                "read through {}",
                st.path.display()
            );
        }
    }
    // Nothing was read through the link: only the good segment's records are there.
    assert_eq!(snap.record_count(), recs.len());
}

#[test]
fn a_planted_symlink_is_never_followed_nor_replaced() {
    let tmp = TempDir::new("planted");
    let run = tmp.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();
    let missing = tmp.path().join("would-be-created");
    std::os::unix::fs::symlink(&victim, run.join("seg-7-a.seg")).unwrap();
    std::os::unix::fs::symlink(&missing, run.join("seg-7-b.seg")).unwrap();
    std::os::unix::fs::symlink(&victim, run.join(".new-seg-7-c.seg")).unwrap();
    std::os::unix::fs::symlink(&missing, run.join(".new-seg-7-d.seg")).unwrap();
    for name in ["seg-7-a.seg", "seg-7-b.seg", "seg-7-c.seg", "seg-7-d.seg"] {
        match SegmentWriter::create_named(&run, name, Durability::Process) {
            Err(Error::Io { source, .. }) => {
                assert_eq!(source.kind(), std::io::ErrorKind::AlreadyExists, "{name}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!missing.exists());
    for name in [
        "seg-7-a.seg",
        "seg-7-b.seg",
        ".new-seg-7-c.seg",
        ".new-seg-7-d.seg",
    ] {
        assert!(
            std::fs::symlink_metadata(run.join(name))
                .unwrap()
                .file_type()
                .is_symlink(),
            "{name} was replaced"
        );
    }
    // No half-made files were left behind by the refused attempts.
    let names: Vec<String> = std::fs::read_dir(&run)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    // Not a segment name: refused before anything is created.
    assert!(SegmentWriter::create_named(&run, "../escape.seg", Durability::Process).is_err());
    assert!(SegmentWriter::create_named(&run, "notes.txt", Durability::Process).is_err());
}

/// Entry point of the child processes (the tests below start this binary again).
#[test]
#[ignore = "a child process of the tests in this file; it does nothing on its own"]
fn child() {
    let role = child_role().expect("run by the tests in this file, with BBX_CHILD set");
    let dir = PathBuf::from(std::env::var("BBX_DIR").unwrap());
    match role.as_str() {
        "modes" => {
            let umask = u32::from_str_radix(&std::env::var("BBX_UMASK").unwrap(), 8).unwrap();
            // SAFETY: umask only changes this process's creation mask.
            unsafe { libc::umask(umask as libc::mode_t) };
            let (store, run, mut rec) = new_run(&dir.join("store"), Role::Main);
            rec.start_test("t.py::x").unwrap();
            rec.close().unwrap();
            let fh = store.run_path(&run).unwrap().join("faulthandler-1.txt");
            blackbox_core::create_file(&fh).unwrap();
            blackbox_core::fold_run(&store, &run, &FoldOptions::default()).unwrap();
            ack(&format!("SEG {}", rec.segment_path().unwrap().display()));
        }
        "truncate_open" => {
            // A reader holds a segment open while another process cuts it below its header:
            // the reader must report it, not fault on the mapped header (SIGBUS).
            let (path, _) = written(&dir, 10);
            let r = SegmentReader::open(&path).unwrap();
            assert_eq!(r.read_from(0).records.len(), 10);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(100)
                .unwrap();
            let b = r.read_from(0);
            let d = b.damage.expect("damage");
            assert!(
                b.records.is_empty() && d.offset == 0 && d.reason.contains("cut to 100 bytes"),
                "{d}"
            );
            assert_eq!(r.committed(), 0);
            assert_eq!(r.crash_mark(), None);
            assert_eq!(r.current_test(), None);
            assert!(!r.info().closed_cleanly);
            assert!(!r.writer_alive());
            ack("SURVIVED");
        }
        other => panic!("unknown child role {other}"),
    }
}

#[test]
fn every_file_of_the_store_is_0600_in_0700_folders_whatever_the_umask() {
    for umask in ["0", "022", "077", "777"] {
        let tmp = TempDir::new("modes");
        let mut s = spawn(
            "child",
            "modes",
            &[
                ("BBX_DIR", tmp.path().display().to_string()),
                ("BBX_UMASK", umask.to_owned()),
            ],
            &tmp.path().join("c.log"),
        );
        let seg = PathBuf::from(s.expect_ack("SEG ").strip_prefix("SEG ").unwrap());
        assert!(s.wait().success(), "umask {umask}: {}", s.log_text());
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777;
        let store = tmp.path().join("store");
        let run = seg.parent().unwrap();
        for (path, want) in [
            (seg.clone(), 0o600),
            (run.join("faulthandler-1.txt"), 0o600),
            (run.to_owned(), 0o700),
            (store.clone(), 0o700),
            (store.join("history.redb"), 0o600),
            (store.join(".gitignore"), 0o600),
        ] {
            assert_eq!(mode(&path), want, "umask {umask}: {}", path.display());
        }
        assert!(std::fs::symlink_metadata(&seg)
            .unwrap()
            .file_type()
            .is_file());
        assert_eq!(
            std::fs::metadata(&seg).unwrap().nlink(),
            1,
            "the temporary name is gone"
        );
        // The store keeps itself out of version control, as .pytest_cache does.
        let ignore = std::fs::read_to_string(store.join(".gitignore")).unwrap();
        assert_eq!(ignore.lines().last(), Some("*"), "{ignore}");
    }
}

#[test]
fn a_segment_of_a_passing_forked_child_takes_8_kib() {
    use std::os::unix::fs::MetadataExt;
    let tmp = TempDir::new("small");
    let (_store, _run, mut rec) = new_run(&tmp.path().join("store"), Role::Forked);
    // What a pytest-forked child of a passing test writes: its start, three phase
    // reports of a few hundred bytes, its end.
    rec.start_test("test_p.py::test_a[0]").unwrap();
    for i in 0..3 {
        rec.record(&Record::PropertySet {
            test: Some("test_p.py::test_a[0]".into()),
            key: format!("report{i}"),
            value: Value::Str("x".repeat(300)),
            mono_ns: i,
        })
        .unwrap();
    }
    rec.end_test("test_p.py::test_a[0]").unwrap();
    let seg = rec.segment_path().unwrap().to_owned();
    let m = std::fs::metadata(&seg).unwrap();
    assert_eq!(m.len(), blackbox_core::INITIAL_SIZE);
    assert!(m.len() <= 8 << 10 && m.blocks() * 512 <= 8 << 10, "{m:?}");
}

// ---------------------------------------------------------------------------------------
// A store another user can reach: refused by name, with the fix. Tests that need a second
// user (uid 65534, `nobody`) or chown need root and say so when they skip.
// ---------------------------------------------------------------------------------------

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid always succeeds.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root (chown to a second user, uid {NOBODY})");
    }
    root
}

fn refusal(e: &Error, path: &Path, words: &str) {
    let shown = e.to_string();
    assert!(
        matches!(e, Error::Refused { .. })
            && shown.contains(&path.display().to_string())
            && shown.contains(words),
        "{shown}"
    );
}

#[test]
fn a_store_directory_writable_by_others_is_refused_unless_sticky() {
    let tmp = TempDir::new("shared");
    let root = tmp.path().join("store");
    std::fs::create_dir(&root).unwrap();
    for mode in [0o777, 0o775, 0o757] {
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = Store::create(&root).unwrap_err();
        refusal(&e, &root, "writable by other users");
        assert!(e.to_string().contains("chmod go-w"), "{e}");
    }
    assert!(!root.join(".gitignore").exists(), "nothing written into it");
    // A sticky folder (as /tmp): others may create, never rename or remove ours.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let store = Store::create(&root).unwrap();
    assert!(store.new_run().is_ok());
    // The user's own 0755 store is theirs to choose.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(Store::create(&root).is_ok());
}

#[test]
fn a_store_or_history_of_another_user_is_refused_by_name() {
    if !is_root() {
        return;
    }
    let tmp = TempDir::new("foreign-owner");
    let root = tmp.path().join("store");
    std::fs::create_dir(&root).unwrap();
    std::os::unix::fs::chown(&root, Some(NOBODY), Some(NOBODY)).unwrap();
    let e = Store::create(&root).unwrap_err();
    refusal(&e, &root, &format!("owned by uid {NOBODY}"));
    assert!(e.to_string().contains("store directory of your own"), "{e}");
    assert!(!root.join(".gitignore").exists());

    // history.redb pre-created by another user (empty, 0666: the trap), or ours
    // but writable by others: no fold writes into it.
    std::os::unix::fs::chown(&root, Some(0), Some(0)).unwrap();
    let (store, run, mut rec) = new_run(&root, Role::Main);
    rec.start_test("t.py::secret").unwrap();
    rec.close().unwrap();
    let history = store.history_path();
    for (owner, mode, words) in [
        (NOBODY, 0o666, format!("owned by uid {NOBODY}")),
        (0, 0o666, "writable by other users".to_owned()),
    ] {
        File::create(&history).unwrap();
        std::os::unix::fs::chown(&history, Some(owner), Some(owner)).unwrap();
        std::fs::set_permissions(&history, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = blackbox_core::fold_run(&store, &run, &FoldOptions::default()).unwrap_err();
        refusal(&e, &history, &words);
        assert_eq!(
            std::fs::metadata(&history).unwrap().len(),
            0,
            "written into"
        );
        std::fs::remove_file(&history).unwrap();
    }
    // Ours and private: folded, and then 0600.
    blackbox_core::fold_run(&store, &run, &FoldOptions::default()).unwrap();
    assert_eq!(
        std::fs::metadata(&history).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // A run folder handed to another user's writer (a worker told the path) is not
    // written into by it, and vice versa: the folder must be the writer's own.
    std::os::unix::fs::chown(store.run_path(&run).unwrap(), Some(NOBODY), None).unwrap();
    let mut rec = Recorder::new(
        store.run_path(&run).unwrap(),
        Role::Worker,
        Some("gw0".into()),
        Durability::Process,
    );
    let e = rec.start_test("t.py::x").unwrap_err();
    refusal(&e, &store.run_path(&run).unwrap(), "owned by uid");
}

#[test]
fn another_user_reads_nothing_of_a_store() {
    if !is_root() {
        return;
    }
    let tmp = TempDir::new("nobody-reads");
    // Reachable by anyone down to the store (as a checkout under /tmp would be).
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (store, run, mut rec) = new_run(&tmp.path().join("store"), Role::Main);
    rec.record(&Record::PropertySet {
        test: None,
        key: "token".into(),
        value: Value::Str("s3cret-value".into()),
        mono_ns: 1,
    })
    .unwrap();
    rec.close().unwrap();
    blackbox_core::fold_run(&store, &run, &FoldOptions::default()).unwrap();
    let seg = rec.segment_path().unwrap().to_owned();
    for path in [seg.as_path(), store.history_path().as_path(), store.root()] {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "cat"])
            .arg(path)
            .output()
            .expect("setpriv (util-linux) runs");
        assert!(
            !out.status.success() && !String::from_utf8_lossy(&out.stdout).contains("s3cret"),
            "{}: {out:?}",
            path.display()
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied")
                || String::from_utf8_lossy(&out.stderr).contains("Is a directory"),
            "{}: {out:?}",
            path.display()
        );
    }
}

#[test]
fn a_planted_link_fifo_or_foreign_file_in_place_of_a_store_file_is_refused_by_name() {
    let tmp = TempDir::new("planted-files");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run_dir = store.run_path(&store.new_run().unwrap()).unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").unwrap();

    // An attachment (faulthandler-<pid>.txt): a symlink, a FIFO, a hard link.
    let link = run_dir.join("faulthandler-11.txt");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    refusal(
        &blackbox_core::create_file(&link).unwrap_err(),
        &link,
        "a symbolic link",
    );
    let fifo = run_dir.join("faulthandler-12.txt");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    refusal(
        &blackbox_core::create_file(&fifo).unwrap_err(),
        &fifo,
        "a FIFO",
    );
    let hard = run_dir.join("faulthandler-13.txt");
    std::fs::hard_link(&victim, &hard).unwrap();
    refusal(
        &blackbox_core::create_file(&hard).unwrap_err(),
        &hard,
        "2 links",
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    // A file of our own from an earlier process of the same pid is reused, emptied.
    let old = run_dir.join("faulthandler-14.txt");
    std::fs::write(&old, b"old").unwrap();
    blackbox_core::create_file(&old).unwrap();
    assert_eq!(std::fs::read(&old).unwrap(), b"");

    // history.redb as a symlink to a file of ours: refused, the file untouched.
    std::os::unix::fs::symlink(&victim, store.history_path()).unwrap();
    let run = store.latest().unwrap();
    let e = blackbox_core::fold_run(&store, &run, &FoldOptions::default()).unwrap_err();
    assert!(
        e.to_string().contains("history.redb") && e.to_string().contains("symlink"),
        "{e}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // The .gitignore: what is there (a link here) is neither followed nor replaced.
    let root2 = tmp.path().join("store2");
    std::fs::create_dir(&root2).unwrap();
    std::os::unix::fs::symlink(&victim, root2.join(".gitignore")).unwrap();
    Store::create(&root2).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

    // A run folder swapped for a symlink (to a folder of ours) after the run began: the
    // writer that opens its segment there refuses it by name.
    let real = tmp.path().join("real-run");
    std::fs::create_dir(&real).unwrap();
    let swapped = store.root().join("20990101-000000.000000-abcd");
    std::os::unix::fs::symlink(&real, &swapped).unwrap();
    let mut rec = Recorder::new(&swapped, Role::Worker, None, Durability::Process);
    refusal(
        &rec.start_test("t.py::x").unwrap_err(),
        &swapped,
        "a symbolic link",
    );
    assert_eq!(std::fs::read_dir(&real).unwrap().count(), 0);
}

#[test]
fn empty_attachments_are_removed_and_nothing_else() {
    let tmp = TempDir::new("tidy");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run_dir = store.run_path(&store.new_run().unwrap()).unwrap();
    let (seg, _) = written(&run_dir, 3);
    let empty = run_dir.join("faulthandler-1.txt");
    let full = run_dir.join("faulthandler-2.txt");
    std::fs::write(&empty, b"").unwrap();
    std::fs::write(&full, b"Fatal Python error").unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"").unwrap();
    std::os::unix::fs::symlink(&outside, run_dir.join("faulthandler-3.txt")).unwrap();
    let removed = blackbox_core::remove_empty_attachments(&run_dir).unwrap();
    assert_eq!(removed, vec![empty.clone()]);
    assert!(!empty.exists() && full.exists() && seg.exists() && outside.exists());
}

#[test]
fn a_segment_cut_below_its_header_while_open_is_reported_not_a_sigbus() {
    let tmp = TempDir::new("cut-open");
    let mut s = spawn(
        "child",
        "truncate_open",
        &[("BBX_DIR", tmp.path().display().to_string())],
        &tmp.path().join("c.log"),
    );
    let acks = s.rest_of_acks();
    let st = s.wait();
    assert!(
        st.success() && acks == ["SURVIVED"],
        "{}: {acks:?}; log:\n{}",
        support::describe(st),
        s.log_text()
    );
}
