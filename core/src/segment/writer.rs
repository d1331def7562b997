//! The writer of one segment: appends frames past `committed` and commits with one release
//! store of the new end.

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};

use crate::clock::wall_ns;
use crate::error::{Error, Result};
use crate::record::{Record, Value};

use super::bounded::MAX_VALUE_DEPTH;
use super::crash_handler::CRASH_HEADER;
use super::fork::{fork_generation, register_atfork, WRITER_FDS, WRITER_MAPS};
use super::layout::{
    align8, hdr_u32, hdr_u64, is_segment_name, Durability, FLAG_CLOSED, FORMAT_VERSION,
    FRAME_HEADER, HEADER_SIZE, MAGIC, MAX_RECORD, MAX_SEGMENT, OFF_COMMITTED, OFF_CREATED,
    OFF_DURABILITY, OFF_FLAGS, OFF_HEADER_SIZE, OFF_PID, OFF_TEST, OFF_TEST_LEN, OFF_TEST_SEQ,
    OFF_VERSION, SEGMENT_SUFFIX, TEST_SLOT,
};

/// which holds what a pytest-forked child of a passing test writes (about 1.2 KiB), so such
/// a child leaves 8 KiB behind. Larger writers double it from there.
pub const INITIAL_SIZE: u64 = 8 << 10;
/// Growth beyond this size goes in steps of this size instead of doubling.
const MAX_GROWTH_STEP: u64 = 64 << 20;
/// The writer fills reserved pages ahead of its tail with zeros by `pwritev` (see
/// [`SegmentWriter::prefill`]) in chunks of as much as it has written so far, within these
/// bounds.
const PREFILL_MIN: u64 = 16 << 10;
const PREFILL_MAX: u64 = 1 << 20;
const PAGE: u64 = 4096;

fn random_u64() -> u64 {
    let mut x = 0u64;
    // SAFETY: getrandom fills the 8 bytes we own.
    let n = unsafe { libc::getrandom((&raw mut x).cast(), 8, 0) };
    if n == 8 {
        x
    } else {
        wall_ns() ^ (u64::from(std::process::id()) << 32)
    }
}

/// What [`SegmentWriter::append_encoded`] stores: the postcard encoding of a [`Record`].
/// [`Record`] implements it; a binding can implement it for a record borrowed from its
/// caller's objects, to encode them straight into the segment without building a
/// [`Record`] first. The bytes must decode as a [`Record`] (readers refuse anything else,
/// as damage).
pub trait EncodeRecord {
    /// Encodes into `buf`: `Ok(Some(len))`, or `Ok(None)` when `buf` is too small (the
    /// writer then asks for [`encoded_len`](Self::encoded_len) and calls again with room).
    /// `Err` (an [`Error::Encode`] saying why) when the value cannot be encoded at all.
    fn encode_into(&self, buf: &mut [u8]) -> Result<Option<usize>>;
    /// The exact length [`encode_into`](Self::encode_into) writes.
    fn encoded_len(&self) -> Result<usize>;
    /// Whether a value is nested deeper than readers accept ([`MAX_VALUE_DEPTH`]).
    fn too_deep(&self) -> bool;
}

impl EncodeRecord for Record {
    fn encode_into(&self, buf: &mut [u8]) -> Result<Option<usize>> {
        Ok(Record::encode_into(self, buf))
    }
    fn encoded_len(&self) -> Result<usize> {
        Ok(Record::encoded_len(self))
    }
    fn too_deep(&self) -> bool {
        // The common property record holds a scalar, or a list or dict of scalars: two levels
        // at most, so the full walk is skipped. The fields are spelled out so that a new
        // field (a second value) stops this from compiling instead of going unchecked.
        match self {
            Record::PropertySet {
                test: _,
                key: _,
                value,
                mono_ns: _,
            }
            | Record::PropertyAppend {
                test: _,
                key: _,
                value,
                mono_ns: _,
            } if at_most_two_levels(value) => false,
            _ => super::bounded::too_deep(self),
        }
    }
}

/// Whether `value` is a scalar, or a list or dict whose items are all scalars.
fn at_most_two_levels(value: &Value) -> bool {
    let scalar = |v: &Value| !matches!(v, Value::List(_) | Value::Dict(_));
    match value {
        Value::List(items) => items.iter().all(scalar),
        Value::Dict(pairs) => pairs.iter().all(|(_, v)| scalar(v)),
        _ => true,
    }
}

/// The single writer of one segment. Not shared between threads or processes: a process
/// has one per run (see [`crate::recorder::Recorder`]), and a forked child makes its own.
pub struct SegmentWriter {
    path: PathBuf,
    file: File,
    map: MmapRaw,
    /// Bytes of the file reserved with `posix_fallocate`: writes stay below it.
    allocated: u64,
    /// End of the frames written so far, committed or not.
    tail: u64,
    /// End of the committed frames (what readers see).
    committed: u64,
    /// End (page-aligned) of the pages ahead of the tail already put in the page cache by
    /// [`prefill`](Self::prefill); `MAX_SEGMENT` when prefilling is off.
    prefilled: u64,
    durability: Durability,
    generation: u64,
    fd_slot: Option<usize>,
}

impl fmt::Debug for SegmentWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentWriter")
            .field("path", &self.path)
            .field("committed", &self.committed)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

/// A segment being created: when creating it fails, its temporary file is removed and its
/// descriptor leaves the fork table.
struct Unfinished {
    tmp: Option<PathBuf>,
    fd: i32,
    fd_slot: Option<usize>,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(p) = self.tmp.take() {
            let _ = std::fs::remove_file(p);
        }
        if let Some(slot) = self.fd_slot.take() {
            WRITER_MAPS[slot].store(std::ptr::null_mut(), Ordering::Relaxed);
            let _ = WRITER_FDS[slot].compare_exchange(
                self.fd,
                -1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

/// Whether `file` is on ext4, where [`SegmentWriter::prefill`] was measured to pay: a page
/// filled by `pwritev` costs about a quarter of a page faulted in. On tmpfs it costs more
/// than the fault; on copy-on-write filesystems, writing zeros first would make the later
/// stores into the mapping need new blocks; network and FUSE filesystems would carry the
/// zeros to their server.
fn on_ext4(file: &File) -> bool {
    /// `EXT4_SUPER_MAGIC` (ext2 and ext3 mounted by the ext4 driver share it).
    const EXT4_MAGIC: u64 = 0xEF53;
    // SAFETY: fstatfs fills the zeroed struct we own, from our own descriptor.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::fstatfs(file.as_raw_fd(), &raw mut st) == 0 && st.f_type as u64 == EXT4_MAGIC
    }
}

/// Whether this process has a file size limit (`RLIMIT_FSIZE`).
fn file_size_limited() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &raw mut lim) };
    rc != 0 || lim.rlim_cur != libc::RLIM_INFINITY
}

/// Gives the finished segment `tmp` its name `path`, never replacing (nor following) what is
/// already there.
fn publish(tmp: &Path, path: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    };
    let (from, to) = (c(tmp)?, c(path)?);
    // SAFETY: NUL-terminated paths; renameat2 only reads them.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // A filesystem (or kernel) without RENAME_NOREPLACE: link() never replaces either.
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
            std::fs::hard_link(tmp, path)?;
            let _ = std::fs::remove_file(tmp);
            Ok(())
        }
        _ => Err(e),
    }
}

fn reserve(file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    // SAFETY: posix_fallocate on our own descriptor; it returns the error code (not errno).
    let rc = unsafe {
        libc::posix_fallocate(
            file.as_raw_fd(),
            from as libc::off_t,
            (to - from) as libc::off_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let err = io::Error::from_raw_os_error(rc);
        Err(match rc {
            libc::ENOSPC | libc::EFBIG | libc::EDQUOT => Error::StoreFull {
                path: path.to_owned(),
                wanted: to,
                source: err,
            },
            _ => Error::io(path, "reserving space in", err),
        })
    }
}

impl SegmentWriter {
    /// Creates a new segment in `dir` (which must exist), named `seg-<pid>-<random>.seg`,
    /// mode 0600, with `O_EXCL | O_NOFOLLOW`, and takes its lock for the writer's life.
    /// See [`create_named`](Self::create_named) for how it appears in `dir`.
    pub fn create(dir: &Path, durability: Durability) -> Result<SegmentWriter> {
        let pid = std::process::id();
        let mut attempts = 0;
        loop {
            let name = format!("seg-{pid}-{:016x}{SEGMENT_SUFFIX}", random_u64());
            match SegmentWriter::create_named(dir, &name, durability) {
                Err(Error::Io { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists && attempts < 8 =>
                {
                    attempts += 1;
                }
                r => return r,
            }
        }
    }

    /// Creates the segment `dir/name` ([`create`](Self::create) picks a fresh random name).
    ///
    /// The file is built under a temporary name that is not a segment name (`.new-<name>`):
    /// created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode 0600, locked, given its first
    /// space and its complete header, and only then renamed to `name` without replacing
    /// anything there (`RENAME_NOREPLACE`, or `link` + `unlink` where the filesystem lacks
    /// it). So a reader never sees a segment without its lock or its header, and a file or
    /// symlink already at `name` is neither followed nor replaced: the call fails with
    /// [`Error::Io`] of kind `AlreadyExists`. On failure the temporary file is removed.
    pub fn create_named(dir: &Path, name: &str, durability: Durability) -> Result<SegmentWriter> {
        register_atfork();
        if !is_segment_name(std::ffi::OsStr::new(name)) || name.contains('/') {
            return Err(Error::io(
                &dir.join(name),
                "creating segment",
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a segment name (seg-*.seg)",
                ),
            ));
        }
        let pid = std::process::id();
        let path = dir.join(name);
        let tmp = dir.join(format!(".new-{name}"));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, "creating segment", e))?;
        // Registered at once, so a fork from another thread from now on leaves the child no
        // reference to the lock.
        let fd_slot = WRITER_FDS.iter().position(|s| {
            s.compare_exchange(-1, file.as_raw_fd(), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        });
        let mut pending = Unfinished {
            tmp: Some(tmp.clone()),
            fd: file.as_raw_fd(),
            fd_slot,
        };
        // Exactly 0600: the umask may have taken the owner's bits away.
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| Error::io(&tmp, "setting the mode of", e))?;
        // Nobody else can have it yet (O_EXCL): this only fails on filesystems without flock.
        file.try_lock()
            .map_err(|e| Error::io(&tmp, "locking segment", io::Error::other(e.to_string())))?;
        reserve(&file, &path, 0, INITIAL_SIZE)?;
        let map = MmapOptions::new()
            .len(MAX_SEGMENT as usize)
            .map_raw(&file)
            .map_err(|e| Error::io(&path, "mapping segment", e))?;
        let prefill = durability == Durability::Process && on_ext4(&file);
        if prefill {
            // A fault must not read pages ahead: that would fill the page cache with small
            // folios before `prefill` puts large ones there. Only advice: a failure costs
            // speed, nothing else.
            let _ = map.advise(memmap2::Advice::Random);
        }
        let base = map.as_mut_ptr();
        if let Some(slot) = fd_slot {
            WRITER_MAPS[slot].store(base, Ordering::Relaxed);
        }
        // SAFETY: the first INITIAL_SIZE bytes are allocated file space in our mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), base, 8);
            hdr_u32(base, OFF_VERSION).store(FORMAT_VERSION, Ordering::Relaxed);
            hdr_u32(base, OFF_HEADER_SIZE).store(HEADER_SIZE as u32, Ordering::Relaxed);
            hdr_u32(base, OFF_PID).store(pid, Ordering::Relaxed);
            hdr_u64(base, OFF_CREATED).store(wall_ns(), Ordering::Relaxed);
            hdr_u32(base, OFF_DURABILITY).store(
                u32::from(durability == Durability::System),
                Ordering::Relaxed,
            );
            hdr_u64(base, OFF_COMMITTED).store(HEADER_SIZE, Ordering::Release);
        }
        let finish = || -> Result<()> {
            if durability == Durability::System {
                // The header reaches the disk before the name does.
                map.flush_range(0, HEADER_SIZE as usize)
                    .map_err(|e| Error::io(&tmp, "syncing", e))?;
            }
            publish(&tmp, &path).map_err(|e| Error::io(&path, "creating segment", e))
        };
        if let Err(e) = finish() {
            // Out of the fork table before the mapping goes.
            if let Some(slot) = fd_slot {
                WRITER_MAPS[slot].store(std::ptr::null_mut(), Ordering::Relaxed);
            }
            return Err(e);
        }
        pending.tmp = None;
        pending.fd_slot = None;
        let w = SegmentWriter {
            path,
            file,
            map,
            allocated: INITIAL_SIZE,
            tail: HEADER_SIZE,
            committed: HEADER_SIZE,
            // Under `System` every commit syncs its pages anyway, and pages dirtied ahead of
            // the tail would only be written twice.
            prefilled: if prefill { HEADER_SIZE } else { MAX_SEGMENT },
            durability,
            generation: fork_generation(),
            fd_slot,
        };
        if durability == Durability::System {
            if let Some(parent) = w.path.parent() {
                File::open(parent)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| Error::io(parent, "syncing", e))?;
            }
        }
        CRASH_HEADER.store(base, Ordering::Release);
        Ok(w)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this writer was inherited through `fork()`: it must not be written again.
    pub fn is_inherited(&self) -> bool {
        self.generation != fork_generation()
    }

    fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Bytes appended but not yet committed.
    pub fn pending(&self) -> u64 {
        self.tail - self.committed
    }

    pub fn committed_len(&self) -> u64 {
        self.committed
    }

    fn ensure(&mut self, end: u64) -> Result<()> {
        if end <= self.allocated {
            return Ok(());
        }
        if end > MAX_SEGMENT {
            return Err(Error::SegmentFull {
                path: self.path.clone(),
                limit: MAX_SEGMENT,
            });
        }
        let step = self.allocated.min(MAX_GROWTH_STEP);
        let mut target = self.allocated + step;
        while target < end {
            target += step;
        }
        let target = target.min(MAX_SEGMENT);
        match reserve(&self.file, &self.path, self.allocated, target) {
            Ok(()) => self.allocated = target,
            Err(Error::StoreFull { .. }) if target > end => {
                // No room for a whole growth step: take just what this frame needs (whole
                // pages), so the store fills up before it refuses a record.
                let need = (end + 4095) & !4095;
                reserve(&self.file, &self.path, self.allocated, need)?;
                self.allocated = need;
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Appends one record after the last one, uncommitted: readers see it after
    /// [`commit`](Self::commit).
    pub fn append(&mut self, record: &Record) -> Result<()> {
        self.append_encoded(record)
    }

    /// Appends anything that encodes as a [`Record`] (see [`EncodeRecord`]), uncommitted.
    /// An encoding error leaves the segment as it was.
    pub fn append_encoded<E: EncodeRecord + ?Sized>(&mut self, record: &E) -> Result<()> {
        if self.is_inherited() {
            return Err(Error::Inherited {
                path: self.path.clone(),
            });
        }
        if record.too_deep() {
            return Err(Error::Encode(format!(
                "a value nested more than {MAX_VALUE_DEPTH} levels deep (lists and dicts inside each other); readers refuse deeper records"
            )));
        }
        let start = self.tail;
        let payload_at = start + FRAME_HEADER as u64;
        // The common case serializes the record once, straight into the space already
        // reserved past the tail; only a record that does not fit there is sized first.
        let room = self
            .allocated
            .saturating_sub(payload_at)
            .min(MAX_RECORD as u64) as usize;
        let fast = if room == 0 {
            None
        } else {
            // SAFETY: [payload_at, payload_at + room) lies below `allocated` (file space
            // exists) and past `committed` (no reader looks there yet); only this writer
            // writes the mapping. Bytes written past the frame stay uncommitted.
            let payload = unsafe {
                std::slice::from_raw_parts_mut(self.base().add(payload_at as usize), room)
            };
            record.encode_into(payload)?
        };
        let len = if let Some(n) = fast {
            n
        } else {
            let len = record.encoded_len()?;
            if len > MAX_RECORD {
                return Err(Error::RecordTooLarge {
                    size: len,
                    limit: MAX_RECORD,
                });
            }
            self.ensure(start + align8(FRAME_HEADER as u64 + len as u64))?;
            // SAFETY: as above, `ensure` having reserved the whole frame.
            let payload = unsafe {
                std::slice::from_raw_parts_mut(self.base().add(payload_at as usize), len)
            };
            let n = record.encode_into(payload)?.ok_or_else(|| {
                Error::Encode("the encoded size changed between sizing and writing".into())
            })?;
            debug_assert_eq!(n, len);
            len
        };
        let end = start + align8(FRAME_HEADER as u64 + len as u64);
        self.ensure(end)?;
        // SAFETY: [start, end) lies below `allocated` (ensured) and past `committed` (no
        // reader looks there yet); only this writer writes the mapping.
        let frame = unsafe {
            std::slice::from_raw_parts_mut(self.base().add(start as usize), (end - start) as usize)
        };
        frame[FRAME_HEADER + len..].fill(0);
        // The checksum covers the length bytes followed by the payload: with the length in
        // the checksum's place for a moment, they are contiguous, one pass over them.
        let len_bytes = (len as u32).to_le_bytes();
        frame[4..8].copy_from_slice(&len_bytes);
        let crc = crc32fast::hash(&frame[4..FRAME_HEADER + len]);
        frame[..4].copy_from_slice(&len_bytes);
        frame[4..8].copy_from_slice(&crc.to_le_bytes());
        self.tail = end;
        if end + PREFILL_MIN > self.prefilled {
            self.prefill();
        }
        Ok(())
    }

    /// Puts the next reserved pages past the tail into the page cache, by writing zeros
    /// there with one `pwritev`, so the appends that reach them find them there.
    ///
    /// The first store into a page of a `MAP_SHARED` file that is not in the page cache
    /// costs a page fault that allocates, zeroes and reads in a 4 KiB page (about 2 µs on
    /// ext4); a buffered write of many pages at once allocates them in large folios, and
    /// leaves each page only a minor fault: about 4 times cheaper per page, on the caller's
    /// thread. It only ever writes whole pages past every byte of a frame (so nothing a
    /// frame holds) and below `allocated` (space `posix_fallocate` reserved: no new
    /// allocation); if it fails, the appends fault the pages in as before. Under a file size
    /// limit it does nothing: a limit lowered after the space was reserved would make the
    /// write raise SIGXFSZ, where stores into the mapping never do.
    #[cold]
    #[inline(never)]
    fn prefill(&mut self) {
        static ZEROS: [u8; PAGE as usize] = [0; PAGE as usize];
        let from = self.prefilled.max(self.tail.next_multiple_of(PAGE));
        let chunk = (self.tail - HEADER_SIZE).clamp(PREFILL_MIN, PREFILL_MAX);
        let to = (from + chunk).min(self.allocated) & !(PAGE - 1);
        if to <= from {
            return;
        }
        if file_size_limited() {
            // For good, with the read-ahead of faults back, as without prefilling.
            self.prefilled = MAX_SEGMENT;
            let _ = self.map.advise(memmap2::Advice::Normal);
            return;
        }
        let mut iov = [libc::iovec {
            iov_base: ZEROS.as_ptr().cast_mut().cast(),
            iov_len: PAGE as usize,
        }; (PREFILL_MAX / PAGE) as usize];
        let pages = ((to - from) / PAGE) as usize;
        // SAFETY: pwritev on our own descriptor, from `pages` iovecs over a static page of
        // zeros, which it only reads.
        let _ = unsafe {
            libc::pwritev(
                self.file.as_raw_fd(),
                iov.as_mut_ptr(),
                pages as libc::c_int,
                from as libc::off_t,
            )
        };
        // Tried once: a short or failed write leaves those pages to the page faults.
        self.prefilled = to;
    }

    /// Drops what was appended since the last commit.
    pub fn rollback(&mut self) {
        self.tail = self.committed;
    }

    /// Publishes every appended record at once: one release store of the committed end
    /// (after an `msync` of the new frames under [`Durability::System`]).
    pub fn commit(&mut self) -> Result<()> {
        if self.tail == self.committed {
            return Ok(());
        }
        if self.is_inherited() {
            return Err(Error::Inherited {
                path: self.path.clone(),
            });
        }
        if self.durability == Durability::System {
            self.sync_range(self.committed, self.tail)?;
        }
        // SAFETY: the header page is mapped for the writer's life.
        unsafe { hdr_u64(self.base(), OFF_COMMITTED).store(self.tail, Ordering::Release) };
        self.committed = self.tail;
        if self.durability == Durability::System {
            self.sync_range(0, HEADER_SIZE)?;
        }
        Ok(())
    }

    fn sync_range(&self, from: u64, to: u64) -> Result<()> {
        let page = 4096u64;
        let start = from & !(page - 1);
        self.map
            .flush_range(start as usize, (to - start) as usize)
            .map_err(|e| Error::io(&self.path, "syncing", e))
    }

    /// Records which test this process is running (for the crash handler and for readers
    /// of a live or dead run); `None` when none runs. A nodeid longer than the slot is cut.
    pub fn set_current_test(&mut self, nodeid: Option<&str>) {
        if self.is_inherited() {
            return;
        }
        let base = self.base();
        let bytes = nodeid.map_or(&[][..], str::as_bytes);
        let bytes = &bytes[..floor_char_boundary(bytes, TEST_SLOT)];
        // SAFETY: the header page is mapped; a seqlock (odd while writing) lets readers
        // detect a torn slot.
        unsafe {
            let seq = hdr_u32(base, OFF_TEST_SEQ);
            let s = seq.load(Ordering::Relaxed);
            seq.store(s.wrapping_add(1), Ordering::Relaxed);
            std::sync::atomic::fence(Ordering::Release);
            for (i, b) in bytes.iter().enumerate() {
                (*base.add(OFF_TEST + i).cast::<std::sync::atomic::AtomicU8>())
                    .store(*b, Ordering::Relaxed);
            }
            hdr_u32(base, OFF_TEST_LEN).store(bytes.len() as u32, Ordering::Relaxed);
            seq.store(s.wrapping_add(2), Ordering::Release);
        }
    }

    /// Marks the segment as closed cleanly. The writer keeps its lock until dropped.
    pub fn close(&mut self) -> Result<()> {
        self.commit()?;
        if !self.is_inherited() {
            // SAFETY: the header page is mapped.
            unsafe { hdr_u32(self.base(), OFF_FLAGS).fetch_or(FLAG_CLOSED, Ordering::Release) };
            if self.durability == Durability::System {
                self.sync_range(0, HEADER_SIZE)?;
            }
        }
        Ok(())
    }
}

impl Drop for SegmentWriter {
    fn drop(&mut self) {
        let _ = CRASH_HEADER.compare_exchange(
            self.base(),
            std::ptr::null_mut(),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        if let Some(slot) = self.fd_slot {
            let _ = WRITER_MAPS[slot].compare_exchange(
                self.base(),
                std::ptr::null_mut(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            let _ = WRITER_FDS[slot].compare_exchange(
                self.file.as_raw_fd(),
                -1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}

fn floor_char_boundary(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut i = max;
    while i > 0 && (bytes[i] & 0xC0) == 0x80 {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests;
