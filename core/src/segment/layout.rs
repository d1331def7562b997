//! The byte layout of a segment: its header, its frames, and the file name.
//!
//! ```text
//! header (one 4096-byte page, little endian)
//!   0   8  magic            b"BLKBOX\x00\x1a"
//!   8   4  format version   FORMAT_VERSION
//!  12   4  header size      4096
//!  16   4  pid of the writer
//!  20   4  flags            bit 0: closed cleanly (atomic)
//!  24   8  created, Unix ns
//!  32   8  committed        end of the committed frames, a file offset (atomic, release/acquire)
//!  40   4  durability       0 process, 1 system
//!  44   4  current-test seq (atomic; odd while the writer updates the slot)
//!  48   4  current-test len
//!  52   4  crash signal     (atomic; 0 = none; written last by the crash handler)
//!  56   8  crash Unix ns
//!  64   4  crash test len
//!  68  60  reserved (zero)
//! 128 512  current test     the nodeid of the test running in this process
//! 640 512  crash test       the nodeid that ran when the fatal signal came
//! then frames from offset 4096, each 8-byte aligned:
//!   0   4  payload length n (1 ..= MAX_RECORD)
//!   4   4  crc32 of the 4 length bytes followed by the payload
//!   8   n  payload: one postcard-encoded Record
//!      pad to a multiple of 8 (zero)
//! ```
//! The writer appends frames past `committed` and publishes them with one release store of
//! the new end; readers acquire-load `committed` and never look past it. `docs/format.md`
//! has the full protocol.

use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU32, AtomicU64};

pub const MAGIC: [u8; 8] = *b"BLKBOX\x00\x1a";
/// Version history: 1 (0.1.0) first format.
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_SIZE: u64 = 4096;
pub const FRAME_HEADER: usize = 8;
/// The largest payload a frame may carry.
pub const MAX_RECORD: usize = 64 << 20;
/// Address space reserved for one segment; a segment never grows past it.
pub const MAX_SEGMENT: u64 = 16 << 30;
pub const TEST_SLOT: usize = 512;
pub const SEGMENT_SUFFIX: &str = ".seg";

pub(super) const OFF_VERSION: usize = 8;
pub(super) const OFF_HEADER_SIZE: usize = 12;
pub(super) const OFF_PID: usize = 16;
pub(super) const OFF_FLAGS: usize = 20;
pub(super) const OFF_CREATED: usize = 24;
pub(super) const OFF_COMMITTED: usize = 32;
pub(super) const OFF_DURABILITY: usize = 40;
pub(super) const OFF_TEST_SEQ: usize = 44;
pub(super) const OFF_TEST_LEN: usize = 48;
pub(super) const OFF_CRASH_SIGNAL: usize = 52;
pub(super) const OFF_CRASH_NS: usize = 56;
pub(super) const OFF_CRASH_TEST_LEN: usize = 64;
pub(super) const OFF_TEST: usize = 128;
pub(super) const OFF_CRASH_TEST: usize = 640;
pub(super) const FLAG_CLOSED: u32 = 1;

/// How far a commit survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Survives the death of any process (the page cache holds it); no syscall per commit.
    #[default]
    Process,
    /// Also survives power loss: `msync` of the new frames, then of the header, per commit.
    System,
}

impl Durability {
    /// Parses `"process"` or `"system"`.
    pub fn parse(s: &str) -> Option<Durability> {
        match s {
            "process" => Some(Durability::Process),
            "system" => Some(Durability::System),
            _ => None,
        }
    }
}
pub(super) fn align8(n: u64) -> u64 {
    (n + 7) & !7
}
pub(super) fn frame_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(payload);
    h.finalize()
}

/// # Safety
/// `base` must point at a live header mapping.
pub(super) unsafe fn hdr_u32<'a>(base: *mut u8, off: usize) -> &'a AtomicU32 {
    // SAFETY: the offset is 4-aligned inside the page-aligned 4096-byte header.
    unsafe { AtomicU32::from_ptr(base.add(off).cast()) }
}

/// # Safety
/// `base` must point at a live header mapping.
pub(super) unsafe fn hdr_u64<'a>(base: *mut u8, off: usize) -> &'a AtomicU64 {
    // SAFETY: the offset is 8-aligned inside the page-aligned 4096-byte header.
    unsafe { AtomicU64::from_ptr(base.add(off).cast()) }
}
/// Whether `name` is the name of a segment file.
pub fn is_segment_name(name: &std::ffi::OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"seg-") && b.ends_with(SEGMENT_SUFFIX.as_bytes())
}
