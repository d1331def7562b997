//! What the segment-reader fuzzer checks, as a library: the libFuzzer target
//! (`fuzz_targets/segment_reader.rs`) and the corpus replayer (`tests/replay.rs`) both call
//! [`check`].
//!
//! An input becomes one segment file in a run folder. Its first byte picks how:
//! - `0 mod 4`: the rest is the whole file, as is (foreign files, short files, headers);
//! - `1 mod 4`: a valid header, then the rest as frames whose checksums are made right, so
//!   the record decoder sees hostile payloads;
//! - `2 mod 4`: a valid header, then the rest as frames, checksums as given;
//! - `3 mod 4`: the first 64 bytes of the rest overwrite the header's fields, the remainder
//!   becomes frames with checksums made right.
//!
//! Then `SegmentReader::open`, `read_from`, `read_one` on every record found, the header
//! accessors, and `Snapshot::read` of the folder run. Nothing may panic, and the reader may
//! hold no more memory than [`allowed`] for the file's size: a length field is never trusted
//! for an allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::OnceLock;

use blackbox_core::{FORMAT_VERSION, HEADER_SIZE, MAGIC, MAX_RECORD};
use blackbox_core::{SegmentReader, Snapshot};

/// Counts the bytes the process holds, and the most it held since [`reset_peak`].
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn account(delta: isize) {
    let now = LIVE.fetch_add(delta, Ordering::Relaxed) + delta;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards to the system allocator; the bookkeeping allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        account(l.size() as isize);
        // SAFETY: the caller's layout contract is ours.
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

fn reset_peak() -> isize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The most a reader may hold for a file of `len` bytes: the read window (1 MiB) and some
/// fixed overhead, plus what the decoded records take (a byte of encoding can become a few
/// dozen bytes of `Value` in memory, twice while a Vec grows).
pub fn allowed(len: usize) -> usize {
    (4 << 20) + 256 * len
}

/// The run folder the fuzzer writes its one segment into (per process).
fn run_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let d = base.join(format!("bbx-fuzz-{}", std::process::id())).join("run");
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn header() -> Vec<u8> {
    let mut b = vec![0u8; HEADER_SIZE as usize];
    b[..8].copy_from_slice(&MAGIC);
    b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    b[16..20].copy_from_slice(&7u32.to_le_bytes());
    b
}

/// Walks `frames` as the reader would and makes each frame's checksum right.
fn fix_checksums(frames: &mut [u8]) {
    let mut pos = 0usize;
    while pos + 8 <= frames.len() {
        let len = u32::from_le_bytes(frames[pos..pos + 4].try_into().unwrap()) as usize;
        if len == 0 || len > MAX_RECORD || pos + 8 + len > frames.len() {
            return;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&frames[pos..pos + 4]);
        h.update(&frames[pos + 8..pos + 8 + len]);
        frames[pos + 4..pos + 8].copy_from_slice(&h.finalize().to_le_bytes());
        pos += (8 + len).next_multiple_of(8);
    }
}

/// The segment file an input stands for (see the module docs).
pub fn segment_bytes(data: &[u8]) -> Vec<u8> {
    let Some((&mode, body)) = data.split_first() else { return Vec::new() };
    let framed = |overlay: &[u8], frames: &[u8], fix: bool| {
        let mut b = header();
        b[..overlay.len()].copy_from_slice(overlay);
        let mut f = frames.to_vec();
        if fix {
            fix_checksums(&mut f);
        }
        b.extend_from_slice(&f);
        if overlay.len() < 40 {
            let committed = b.len() as u64 & !7;
            b[32..40].copy_from_slice(&committed.to_le_bytes());
        }
        b
    };
    match mode % 4 {
        0 => body.to_vec(),
        1 => framed(&[], body, true),
        2 => framed(&[], body, false),
        _ => {
            let n = body.len().min(64);
            framed(&body[..n], &body[n..], true)
        }
    }
}

fn encode(r: &blackbox_core::Record) -> Vec<u8> {
    let mut b = vec![0u8; r.encoded_len()];
    r.encode_into(&mut b).unwrap();
    b
}

/// Reads the segment an input stands for in every way a reader does; panics on a broken
/// invariant.
pub fn check(data: &[u8]) {
    let bytes = segment_bytes(data);
    let dir = run_dir();
    let path = dir.join("seg-1-fuzz.seg");
    std::fs::write(&path, &bytes).unwrap();
    let base = reset_peak();
    match SegmentReader::open(&path) {
        Ok(r) => {
            let b = r.read_from(0);
            assert!(b.next <= bytes.len().max(HEADER_SIZE as usize) as u64);
            let mut last = None;
            for (offset, rec) in &b.records {
                assert!(*offset >= HEADER_SIZE && offset % 8 == 0 && *offset < b.next);
                assert!(last < Some(*offset));
                last = Some(*offset);
                // Compared by encoding: a NaN read back is not == to itself.
                let one = r.read_one(*offset).expect("read_one finds what read_from found");
                assert_eq!(encode(&one), encode(rec), "read_one disagrees at {offset}");
                let _ = rec.to_json();
            }
            if let Some(d) = &b.damage {
                assert_eq!(d.path, path);
                let _ = d.to_string();
            }
            // Reading again from where it stopped finds nothing new.
            if b.damage.is_none() {
                assert!(r.read_from(b.next).records.is_empty());
            }
            let _ = (r.info(), r.crash_mark(), r.current_test(), r.committed());
            assert!(!r.writer_alive());
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let snap = Snapshot::read("fuzz", dir).expect("the run folder exists");
    assert_eq!(snap.segments.len(), 1);
    let _ = snap.damage().count();
    let held = (PEAK.load(Ordering::Relaxed) - base).max(0) as usize;
    assert!(held <= allowed(bytes.len()), "{held} bytes held to read a {}-byte segment", bytes.len());
}
