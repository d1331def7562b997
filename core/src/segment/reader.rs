//! The reader of one segment: its header's state (liveness, crash mark, running test) and
//! its committed frames, each checked, stopping at the first bad one.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use memmap2::{Mmap, MmapOptions};

use crate::error::{Damage, Error, Result};
use crate::record::{Record, Role};

use super::bounded::decode_record;
use super::layout::{
    align8, frame_crc, hdr_u32, hdr_u64, Durability, FLAG_CLOSED, FORMAT_VERSION, FRAME_HEADER,
    HEADER_SIZE, MAGIC, MAX_RECORD, OFF_COMMITTED, OFF_CRASH_NS, OFF_CRASH_SIGNAL, OFF_CRASH_TEST,
    OFF_CRASH_TEST_LEN, OFF_CREATED, OFF_DURABILITY, OFF_FLAGS, OFF_HEADER_SIZE, OFF_PID, OFF_TEST,
    OFF_TEST_LEN, OFF_TEST_SEQ, OFF_VERSION, TEST_SLOT,
};

/// What the fatal-signal handler wrote into a segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashMark {
    pub signal: i32,
    pub wall_ns: u64,
    pub test: Option<String>,
}

/// The fixed fields of a segment header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderInfo {
    pub version: u32,
    pub pid: u32,
    pub created_wall_ns: u64,
    pub closed_cleanly: bool,
    pub durability: Durability,
}

/// One segment's state as a reader sees it now.
#[derive(Debug, Clone)]
pub struct SegmentStatus {
    pub path: PathBuf,
    /// From the header; 0 when the header could not be read.
    pub pid: u32,
    /// From the segment's first record.
    pub role: Option<Role>,
    pub worker: Option<String>,
    pub ppid: Option<u32>,
    pub alive: bool,
    pub closed_cleanly: bool,
    pub created_wall_ns: u64,
    pub crash: Option<CrashMark>,
    pub current_test: Option<String>,
    pub committed: u64,
    /// Where reading stopped early, or why the file could not be read at all.
    pub damage: Option<Damage>,
}

/// A segment opened for reading: the header page is mapped (to acquire-load the committed
/// end); frames are read with `pread`, never past the end of the file.
pub struct SegmentReader {
    path: PathBuf,
    file: File,
    header: Mmap,
    info: HeaderInfo,
}

impl fmt::Debug for SegmentReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentReader")
            .field("path", &self.path)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// Frames read from a segment, and where reading stopped early, if it did.
#[derive(Debug, Default)]
pub struct ReadBatch {
    /// Each record with the file offset of its frame.
    pub records: Vec<(u64, Record)>,
    /// The offset the next read starts from.
    pub next: u64,
    pub damage: Option<Damage>,
}

impl SegmentReader {
    /// Opens a segment for reading. Fails, naming the path, on anything that is not a
    /// regular segment file of a known version: a symlink (never followed), a directory, a
    /// short or foreign file, a future format version.
    pub fn open(path: &Path) -> Result<SegmentReader> {
        let damaged = |offset: u64, reason: String| {
            Error::Damaged(Damage {
                path: path.to_owned(),
                offset,
                reason,
            })
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::ELOOP) {
                    damaged(
                        0,
                        "is a symbolic link; segments are never followed through links".into(),
                    )
                } else {
                    Error::io(path, "opening segment", e)
                }
            })?;
        let meta = file
            .metadata()
            .map_err(|e| Error::io(path, "reading metadata of", e))?;
        if !meta.is_file() {
            return Err(damaged(0, "is not a regular file".into()));
        }
        if meta.len() < HEADER_SIZE {
            return Err(damaged(
                0,
                format!(
                    "holds {} bytes, fewer than the {HEADER_SIZE}-byte header",
                    meta.len()
                ),
            ));
        }
        // SAFETY: a read-only view of the header page, which exists (checked above); fields
        // another process changes are only read through atomics.
        let header = unsafe { MmapOptions::new().len(HEADER_SIZE as usize).map(&file) }
            .map_err(|e| Error::io(path, "mapping the header of", e))?;
        if header[..8] != MAGIC {
            return Err(damaged(0, "wrong magic: not a blackbox segment".into()));
        }
        let le32 = |off: usize| u32::from_le_bytes(header[off..off + 4].try_into().unwrap());
        let version = le32(OFF_VERSION);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_owned(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if u64::from(le32(OFF_HEADER_SIZE)) != HEADER_SIZE {
            return Err(damaged(
                OFF_HEADER_SIZE as u64,
                format!("header size {} is not {HEADER_SIZE}", le32(OFF_HEADER_SIZE)),
            ));
        }
        let info = HeaderInfo {
            version,
            pid: le32(OFF_PID),
            created_wall_ns: u64::from_le_bytes(
                header[OFF_CREATED..OFF_CREATED + 8].try_into().unwrap(),
            ),
            closed_cleanly: false,
            durability: if le32(OFF_DURABILITY) == 1 {
                Durability::System
            } else {
                Durability::Process
            },
        };
        Ok(SegmentReader {
            path: path.to_owned(),
            file,
            header,
            info,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn hdr(&self) -> *mut u8 {
        self.header.as_ptr().cast_mut()
    }

    /// Whether the file still holds its header page. Touching the mapped header of a file
    /// that another process truncated would raise SIGBUS, so every read of a live header
    /// field checks this first. (A truncation between the check and the load can still
    /// fault: writers never truncate, so only a hostile or careless process can do that.)
    fn header_present(&self) -> bool {
        self.file.metadata().is_ok_and(|m| m.len() >= HEADER_SIZE)
    }

    /// The header's fixed fields, with the closed flag as of now.
    pub fn info(&self) -> HeaderInfo {
        if !self.header_present() {
            return self.info.clone();
        }
        // SAFETY: the header page is mapped read-only and the file still holds it.
        let flags = unsafe { hdr_u32(self.hdr(), OFF_FLAGS).load(Ordering::Acquire) };
        HeaderInfo {
            closed_cleanly: flags & FLAG_CLOSED != 0,
            ..self.info.clone()
        }
    }

    /// The committed end, acquire-loaded: every frame before it is complete.
    /// 0 when the file no longer holds its header (it was truncated since it was opened).
    pub fn committed(&self) -> u64 {
        if !self.header_present() {
            return 0;
        }
        // SAFETY: the header page is mapped read-only and the file still holds it.
        unsafe { hdr_u64(self.hdr(), OFF_COMMITTED).load(Ordering::Acquire) }
    }

    /// Whether the writer still runs: it holds an exclusive lock for its whole life, so a
    /// reader that can take a shared lock knows it is gone (pid reuse cannot fool this).
    pub fn writer_alive(&self) -> bool {
        match self.file.try_lock_shared() {
            Ok(()) => {
                let _ = self.file.unlock();
                false
            }
            Err(std::fs::TryLockError::WouldBlock) => true,
            Err(std::fs::TryLockError::Error(_)) => false,
        }
    }

    fn slot_string(&self, len_off: usize, off: usize) -> Option<String> {
        // SAFETY: header page mapped; bytes are read atomically one by one.
        let len = unsafe { hdr_u32(self.hdr(), len_off).load(Ordering::Acquire) } as usize;
        if len == 0 {
            return None;
        }
        let len = len.min(TEST_SLOT);
        let bytes: Vec<u8> = (0..len)
            // SAFETY: inside the header page.
            .map(|i| unsafe {
                (*self
                    .hdr()
                    .add(off + i)
                    .cast::<std::sync::atomic::AtomicU8>())
                .load(Ordering::Relaxed)
            })
            .collect();
        Some(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The nodeid the writer says it is running, if any.
    pub fn current_test(&self) -> Option<String> {
        if !self.header_present() {
            return None;
        }
        for _ in 0..16 {
            // SAFETY: header page mapped; seqlock read.
            let seq = unsafe { hdr_u32(self.hdr(), OFF_TEST_SEQ) };
            let before = seq.load(Ordering::Acquire);
            if before & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let s = self.slot_string(OFF_TEST_LEN, OFF_TEST);
            std::sync::atomic::fence(Ordering::Acquire);
            if seq.load(Ordering::Relaxed) == before {
                return s;
            }
        }
        None
    }

    /// What the fatal-signal handler recorded, if it ran.
    pub fn crash_mark(&self) -> Option<CrashMark> {
        if !self.header_present() {
            return None;
        }
        // SAFETY: header page mapped and present; the signal is stored last with release.
        let signal =
            unsafe { hdr_u32(self.hdr(), OFF_CRASH_SIGNAL).load(Ordering::Acquire) } as i32;
        if signal == 0 {
            return None;
        }
        // SAFETY: as above.
        let wall_ns = unsafe { hdr_u64(self.hdr(), OFF_CRASH_NS).load(Ordering::Relaxed) };
        Some(CrashMark {
            signal,
            wall_ns,
            test: self.slot_string(OFF_CRASH_TEST_LEN, OFF_CRASH_TEST),
        })
    }

    /// Reads the committed frames from `from` (a frame boundary, at least the header size)
    /// up to the committed end. Stops at the first bad frame and says where and why; never
    /// reads or allocates past the end of the file, and holds at most one window of
    /// [`READ_WINDOW`] bytes (or one frame, when a frame is larger) in memory besides the
    /// records it returns.
    pub fn read_from(&self, from: u64) -> ReadBatch {
        self.read_range(from, usize::MAX)
    }

    /// [`read_from`](Self::read_from), stopping after `max_records` records (at a frame
    /// boundary, `next` says where to go on), so a caller can stream a large segment.
    pub fn read_range(&self, from: u64, max_records: usize) -> ReadBatch {
        // The frames are read and checked by read_frames, one window at a time; this decodes
        // them into owned records.
        let mut batch = ReadBatch {
            next: from.max(HEADER_SIZE),
            ..ReadBatch::default()
        };
        let mut chunk = FrameChunk::default();
        loop {
            let want = max_records - batch.records.len();
            self.read_frames_upto(batch.next, &mut chunk, want);
            for &(pos, at, len) in &chunk.frames {
                match decode_record(&chunk.buf[at..at + len]) {
                    Ok(rec) => batch.records.push((pos, rec)),
                    Err(why) => {
                        batch.damage = Some(self.damage(pos, why));
                        return batch;
                    }
                }
                batch.next = pos + align8((FRAME_HEADER + len) as u64);
            }
            batch.next = chunk.next;
            if chunk.damage.is_some() || chunk.frames.is_empty() || want == chunk.frames.len() {
                batch.damage = chunk.damage.take();
                return batch;
            }
        }
    }

    /// Reads the one committed record whose frame starts at `offset`, or `None` when there
    /// is no valid frame there.
    pub fn read_one(&self, offset: u64) -> Option<Record> {
        // The committed end first (0 when the header is gone), then the length: see
        // `read_frames_upto`.
        let committed = self.committed();
        let end = committed.min(self.file.metadata().ok()?.len());
        if offset < HEADER_SIZE || !offset.is_multiple_of(8) || offset + FRAME_HEADER as u64 > end {
            return None;
        }
        let mut head = [0u8; FRAME_HEADER];
        self.file.read_exact_at(&mut head, offset).ok()?;
        let len_bytes: [u8; 4] = head[..4].try_into().ok()?;
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len == 0 || len > MAX_RECORD || offset + (FRAME_HEADER + len) as u64 > end {
            return None;
        }
        let mut payload = vec![0u8; len];
        self.file
            .read_exact_at(&mut payload, offset + FRAME_HEADER as u64)
            .ok()?;
        if frame_crc(len_bytes, &payload) != u32::from_le_bytes(head[4..8].try_into().ok()?) {
            return None;
        }
        decode_record(&payload).ok()
    }

    fn damage(&self, offset: u64, reason: String) -> Damage {
        Damage {
            path: self.path.clone(),
            offset,
            reason,
        }
    }

    /// The committed frames from `from` that lie in one window of the file (at least one
    /// frame, at most [`READ_WINDOW`] bytes or that one frame), with their lengths and
    /// checksums verified but not decoded: the frames' payloads are slices of
    /// [`FrameChunk::buf`], for a caller that decodes them elsewhere (another thread,
    /// borrowing instead of allocating). Fills `chunk`, reusing its buffers.
    ///
    /// Stops at the first bad frame with the damage [`read_range`](Self::read_range) would
    /// report; `next` is where the following chunk starts. A frame that does not decode is
    /// the caller's damage to report, at that frame's offset.
    pub fn read_frames(&self, from: u64, chunk: &mut FrameChunk) {
        self.read_frames_upto(from, chunk, usize::MAX);
    }

    /// [`read_frames`](Self::read_frames), stopping after `max_frames` frames, so that a
    /// caller that wants only so many checks no more.
    fn read_frames_upto(&self, from: u64, chunk: &mut FrameChunk, max_frames: usize) {
        chunk.frames.clear();
        chunk.next = from.max(HEADER_SIZE);
        chunk.damage = None;
        let mut window = Window {
            buf: std::mem::take(&mut chunk.buf),
            start: 0,
        };
        window.buf.clear();
        let file_len = match self.file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                chunk.damage = Some(self.damage(chunk.next, format!("cannot stat: {e}")));
                chunk.buf = window.buf;
                return;
            }
        };
        if file_len < HEADER_SIZE {
            chunk.damage = Some(self.damage(0, format!("the file was cut to {file_len} bytes, below its {HEADER_SIZE}-byte header, while open")));
            chunk.buf = window.buf;
            return;
        }
        let committed = self.committed();
        if committed < HEADER_SIZE || !committed.is_multiple_of(8) {
            chunk.damage = Some(self.damage(
                OFF_COMMITTED as u64,
                format!("committed end {committed} is not a frame boundary"),
            ));
            chunk.buf = window.buf;
            return;
        }
        // The length was read before the committed end: a writer may have grown the file
        // and committed past the old length in between. Its growth comes before its commit,
        // so a length read after the commit was seen holds it, unless the file was cut.
        let file_len = if committed > file_len {
            self.file.metadata().map_or(file_len, |m| m.len())
        } else {
            file_len
        };
        let truncated = committed > file_len;
        let end = committed.min(file_len);
        let mut pos = chunk.next;
        // The window holds [pos, in_window) once loaded; later frames must lie inside it.
        let in_window = |w: &Window, pos: u64, n: u64| pos + n <= w.start + w.buf.len() as u64;
        while pos < end && chunk.frames.len() < max_frames {
            let rest = end - pos;
            let past_end = if truncated {
                format!("the file ends there (it holds {file_len} bytes, the header says {committed} are committed)")
            } else {
                "the committed end is there".to_owned()
            };
            if rest < FRAME_HEADER as u64 {
                chunk.damage = Some(self.damage(
                    pos,
                    format!("{rest} stray bytes, too few for a frame header: {past_end}"),
                ));
                break;
            }
            if !chunk.frames.is_empty() && !in_window(&window, pos, FRAME_HEADER as u64) {
                break;
            }
            let head = match window.get(&self.file, pos, FRAME_HEADER, end) {
                Ok(h) => h,
                Err(e) => {
                    chunk.damage = Some(self.damage(pos, format!("read failed: {e}")));
                    break;
                }
            };
            let len_bytes: [u8; 4] = head[..4].try_into().unwrap();
            let len = u32::from_le_bytes(len_bytes) as usize;
            let crc = u32::from_le_bytes(head[4..8].try_into().unwrap());
            if len == 0 || len > MAX_RECORD {
                chunk.damage = Some(self.damage(
                    pos,
                    format!("frame length {len} is out of range (1..={MAX_RECORD})"),
                ));
                break;
            }
            let framed = align8((FRAME_HEADER + len) as u64);
            if framed > rest {
                chunk.damage = Some(self.damage(
                    pos,
                    format!("frame of {framed} bytes (payload {len}) runs past the readable end, {rest} bytes on: {past_end}"),
                ));
                break;
            }
            if !chunk.frames.is_empty() && !in_window(&window, pos, framed) {
                break;
            }
            let frame = match window.get(&self.file, pos, framed as usize, end) {
                Ok(f) => f,
                Err(e) => {
                    chunk.damage = Some(self.damage(pos, format!("read failed: {e}")));
                    break;
                }
            };
            if frame_crc(len_bytes, &frame[FRAME_HEADER..FRAME_HEADER + len]) != crc {
                chunk.damage = Some(self.damage(pos, "checksum mismatch".into()));
                break;
            }
            let at = (pos - window.start) as usize + FRAME_HEADER;
            chunk.frames.push((pos, at, len));
            pos += framed;
        }
        chunk.next = pos;
        if chunk.damage.is_none() && truncated && pos >= end {
            chunk.damage = Some(self.damage(
                pos,
                format!("the file ends here, but the header says {committed} bytes are committed: it was truncated"),
            ));
        }
        chunk.buf = window.buf;
    }
}

/// Frames of one segment, checked but not decoded ([`SegmentReader::read_frames`]).
#[derive(Debug, Default)]
pub struct FrameChunk {
    /// The bytes read.
    pub buf: Vec<u8>,
    /// Each frame: its file offset, and where its payload lies in `buf` (start, length).
    pub frames: Vec<(u64, usize, usize)>,
    /// The offset the next read starts from.
    pub next: u64,
    pub damage: Option<Damage>,
}

impl FrameChunk {
    /// The payload of frame `k`.
    pub fn payload(&self, k: usize) -> &[u8] {
        let (_, at, len) = self.frames[k];
        &self.buf[at..at + len]
    }
}

/// How much of a segment [`SegmentReader::read_from`] reads with one `pread`.
pub const READ_WINDOW: usize = 1 << 20;

/// A window of a segment file in memory: frames are parsed out of it, and it moves on by
/// whole reads, so a reader holds at most [`READ_WINDOW`] bytes (or one larger frame).
#[derive(Default)]
struct Window {
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
}

impl Window {
    /// The bytes `[pos, pos + n)`, with `pos + n <= end`; reads `[pos, ..)` again when they are
    /// not all in the window, never past `end`.
    fn get(&mut self, file: &File, pos: u64, n: usize, end: u64) -> io::Result<&[u8]> {
        let have = pos >= self.start && pos + n as u64 <= self.start + self.buf.len() as u64;
        if !have {
            let len = (n.max(READ_WINDOW) as u64).min(end - pos) as usize;
            self.buf.clear();
            self.buf.resize(len, 0);
            file.read_exact_at(&mut self.buf, pos)?;
            self.start = pos;
        }
        let at = (pos - self.start) as usize;
        Ok(&self.buf[at..at + n])
    }
}

/// Whether a live writer holds the lock of the regular file at `path` (never followed
/// through a symlink; false for anything that cannot be opened).
pub(crate) fn writer_holds_lock(path: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    else {
        return false;
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return false;
    }
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}
