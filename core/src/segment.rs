//! One writer's file: the byte layout, the writer and the reader of a single segment.
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

use std::ffi::CString;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

use memmap2::{Mmap, MmapOptions, MmapRaw};

use crate::error::{Error, Result};
use crate::record::{Record, Value};

mod bounded;
pub use bounded::MAX_VALUE_DEPTH;
pub(crate) use bounded::{decode_hot, decode_record, decode_value};

pub const MAGIC: [u8; 8] = *b"BLKBOX\x00\x1a";
/// Version history: 1 (0.1.0) first format.
pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_SIZE: u64 = 4096;
pub const FRAME_HEADER: usize = 8;
/// The largest payload a frame may carry.
pub const MAX_RECORD: usize = 64 << 20;
/// Address space reserved for one segment; a segment never grows past it.
pub const MAX_SEGMENT: u64 = 16 << 30;
/// Bytes reserved on disk when a segment is created: the header and one page of frames,
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
pub const TEST_SLOT: usize = 512;
pub const SEGMENT_SUFFIX: &str = ".seg";

const OFF_VERSION: usize = 8;
const OFF_HEADER_SIZE: usize = 12;
const OFF_PID: usize = 16;
const OFF_FLAGS: usize = 20;
const OFF_CREATED: usize = 24;
const OFF_COMMITTED: usize = 32;
const OFF_DURABILITY: usize = 40;
const OFF_TEST_SEQ: usize = 44;
const OFF_TEST_LEN: usize = 48;
const OFF_CRASH_SIGNAL: usize = 52;
const OFF_CRASH_NS: usize = 56;
const OFF_CRASH_TEST_LEN: usize = 64;
const OFF_TEST: usize = 128;
const OFF_CRASH_TEST: usize = 640;
const FLAG_CLOSED: u32 = 1;

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

/// Where and why reading a segment stopped early. Everything before `offset` was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: at offset {}: {}",
            self.path.display(),
            self.offset,
            self.reason
        )
    }
}

pub(crate) fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

pub(crate) fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

pub(crate) fn wall_ns() -> u64 {
    clock_ns(libc::CLOCK_REALTIME)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; it is async-signal-safe.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

fn frame_crc(len_bytes: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len_bytes);
    h.update(payload);
    h.finalize()
}

// ---------------------------------------------------------------------------------------
// Fork safety and the crash slot: process-wide state a signal handler may touch.
// ---------------------------------------------------------------------------------------

/// Bumped in every child right after `fork()` (`pthread_atfork`), so a writer notices it was
/// inherited with one relaxed load instead of a `getpid()` per write.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Descriptors of this process's open segments: the atfork child handler points them at
/// /dev/null so the child holds no reference to the parent's lock.
const FD_SLOTS: usize = 64;
static WRITER_FDS: [AtomicI32; FD_SLOTS] = [const { AtomicI32::new(-1) }; FD_SLOTS];
/// The mapping of the segment in the same slot of [`WRITER_FDS`], or null. A mapping holds
/// the open file, and so its lock, as firmly as a descriptor does: the atfork child handler
/// replaces it with an inaccessible anonymous mapping of the same size at the same address
/// (the inherited writer's drop later unmaps that).
static WRITER_MAPS: [AtomicPtr<u8>; FD_SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; FD_SLOTS];
/// The header page of the segment the crash handler marks (the newest writer of this
/// process), or null.
static CRASH_HEADER: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
static ATFORK: Once = Once::new();
/// This process's pid once [`process_id`] asked for it, else 0; the atfork child handler
/// sets it back to 0.
static PID: AtomicU32 = AtomicU32::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    PID.store(0, Ordering::Relaxed);
    CRASH_HEADER.store(std::ptr::null_mut(), Ordering::Relaxed);
    // Only plain syscalls here (open, dup2, close, mmap): the parent may have had threads.
    for map in &WRITER_MAPS {
        let base = map.swap(std::ptr::null_mut(), Ordering::Relaxed);
        if !base.is_null() {
            // SAFETY: `base` starts a MAX_SEGMENT-byte mapping this process inherited; MAP_FIXED
            // replaces it in one step, so the address range stays owned by the inherited
            // writer, which only unmaps it.
            unsafe {
                libc::mmap(
                    base.cast(),
                    MAX_SEGMENT as usize,
                    libc::PROT_NONE,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                    -1,
                    0,
                );
            }
        }
    }
    let devnull = c"/dev/null";
    for slot in &WRITER_FDS {
        let fd = slot.swap(-1, Ordering::Relaxed);
        if fd >= 0 {
            // SAFETY: plain syscalls on descriptors this process owns.
            unsafe {
                let nul = libc::open(devnull.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
                if nul >= 0 {
                    libc::dup2(nul, fd);
                    libc::close(nul);
                }
            }
        }
    }
}

fn register_atfork() {
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only makes async-signal-safe calls.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
}

/// This process's pid, as `std::process::id()` gives it, without a `getpid()` system call
/// each time: kept from the first call until a `fork()` (the atfork child handler forgets
/// it). A child made by a raw `clone` system call, bypassing libc's `fork()`, would see
/// its parent's pid.
pub fn process_id() -> u32 {
    register_atfork();
    match PID.load(Ordering::Relaxed) {
        0 => {
            let pid = std::process::id();
            PID.store(pid, Ordering::Relaxed);
            pid
        }
        pid => pid,
    }
}

pub(crate) fn fork_generation() -> u64 {
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Marks the newest segment of this process as crashed by `signal`: the signal number,
/// the time and the nodeid of the running test go into the segment header.
///
/// Async-signal-safe: no allocation, no lock, only atomic stores into the mapped header and
/// `clock_gettime`. Call it first thing from a fatal-signal handler; it does nothing when
/// this process has no segment (for instance in a child forked before its first write).
/// Returns whether a segment was marked.
pub fn mark_crash(signal: i32) -> bool {
    let base = CRASH_HEADER.load(Ordering::Acquire);
    if base.is_null() {
        return false;
    }
    // SAFETY: `base` is the start of a live 4096-byte header mapping: the writer clears the
    // pointer before unmapping it, and the child clears it after fork.
    unsafe { mark_crash_at(base, signal) };
    true
}

/// # Safety
/// `base` must point at a live header mapping.
unsafe fn mark_crash_at(base: *mut u8, signal: i32) {
    // SAFETY: the caller's.
    unsafe {
        let len = hdr_u32(base, OFF_TEST_LEN).load(Ordering::Relaxed) as usize;
        let len = len.min(TEST_SLOT);
        for i in 0..len {
            let b = (*base.add(OFF_TEST + i).cast::<std::sync::atomic::AtomicU8>())
                .load(Ordering::Relaxed);
            (*base
                .add(OFF_CRASH_TEST + i)
                .cast::<std::sync::atomic::AtomicU8>())
            .store(b, Ordering::Relaxed);
        }
        hdr_u32(base, OFF_CRASH_TEST_LEN).store(len as u32, Ordering::Relaxed);
        hdr_u64(base, OFF_CRASH_NS).store(clock_ns(libc::CLOCK_REALTIME), Ordering::Relaxed);
        hdr_u32(base, OFF_CRASH_SIGNAL).store(signal as u32, Ordering::Release);
    }
}

static PREVIOUS_HANDLERS: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];
static HANDLED: [AtomicU32; 32] = [const { AtomicU32::new(0) }; 32];

/// The fatal signals [`install_crash_handler`] catches.
pub const FATAL_SIGNALS: [i32; 5] = [
    libc::SIGSEGV,
    libc::SIGABRT,
    libc::SIGBUS,
    libc::SIGFPE,
    libc::SIGILL,
];

extern "C" fn on_fatal_signal(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    ctx: *mut libc::c_void,
) {
    // Marked before chaining: the handler before ours may never return (faulthandler
    // restores the default action and raises the signal again from inside its handler).
    crate::watchdog::note_dying();
    let base = CRASH_HEADER.load(Ordering::Acquire);
    // SAFETY: a non-null pointer is a live header mapping (see `mark_crash`).
    let no_mark_before =
        !base.is_null() && unsafe { hdr_u32(base, OFF_CRASH_SIGNAL).load(Ordering::Acquire) } == 0;
    if !base.is_null() {
        // SAFETY: as above.
        unsafe { mark_crash_at(base, sig) };
    }
    let idx = sig as usize;
    if idx < 32 {
        let prev = PREVIOUS_HANDLERS[idx].load(Ordering::Relaxed) as usize;
        let flags = HANDLED[idx].load(Ordering::Relaxed);
        // SAFETY: chain to the handler that was installed before ours, exactly as the
        // kernel would have called it; SIG_DFL/SIG_IGN are restored and the signal raised
        // again so the process dies the way it would have.
        unsafe {
            if prev == libc::SIG_DFL || prev == libc::SIG_IGN {
                // The process dies now: show the user what faulthandler wrote, as it would
                // have shown without us (see `set_crash_echo`).
                echo_crash(sig, base);
                libc::signal(sig, libc::SIG_DFL);
                libc::raise(sig);
                return;
            } else if flags & (libc::SA_SIGINFO as u32) != 0 {
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    std::mem::transmute(prev);
                f(sig, info, ctx);
            } else {
                let f: extern "C" fn(libc::c_int) = std::mem::transmute(prev);
                f(sig);
            }
        }
        // The earlier handler returned. If it left ours installed, it dealt with the signal
        // (a JIT or a runtime that catches its own faults on purpose) and the process goes
        // on: that was no crash. A handler that gives up restores the default action before
        // it returns, and the repeated fault kills the process, marked. abort() raises
        // SIGABRT again after a handler returns, so that mark always stays.
        if no_mark_before
            && sig != libc::SIGABRT
            && CRASH_HEADER.load(Ordering::Acquire) == base
            && crash_handler_installed(sig)
        {
            // SAFETY: as above; the pointer was live when loaded and this thread is inside
            // the writer's process, which clears it before unmapping.
            unsafe { hdr_u32(base, OFF_CRASH_SIGNAL).store(0, Ordering::Release) };
            crate::watchdog::note_alive();
        }
    }
}

/// Where a dying process shows its traceback: faulthandler writes it into the run folder
/// (`ECHO_SOURCE`), and the crash handler copies it to the descriptor the user's stderr
/// was (`ECHO_TARGET`), so the terminal shows what it shows without the recorder. -1: none.
static ECHO_SOURCE: AtomicI32 = AtomicI32::new(-1);
static ECHO_TARGET: AtomicI32 = AtomicI32::new(-1);
/// The end of the one line the crash handler writes after the traceback (a leaked
/// `Box<[u8]>`, never freed: a handler may read it at any moment), or null for no line.
static ECHO_NOTE: AtomicPtr<Vec<u8>> = AtomicPtr::new(std::ptr::null_mut());

/// Makes the crash handler, when a fatal signal kills this process, copy the file open as
/// `source` (faulthandler's output, from its start) to `target` (a descriptor of the
/// user's stderr, duplicated before pytest captured it), then write one line to `target`:
/// `blackbox: <test> crashed with <signal> (pid <pid>); <note>`, when `note` is given.
/// Descriptors are the caller's, kept open for the process's life; -1 turns it off.
/// A forked child inherits the setting (and the descriptors).
pub fn set_crash_echo(source: i32, target: i32, note: Option<&str>) {
    let note = note.map(|n| Box::into_raw(Box::new(n.as_bytes().to_vec())));
    ECHO_SOURCE.store(source, Ordering::Relaxed);
    ECHO_TARGET.store(target, Ordering::Relaxed);
    // The old note is leaked on purpose: a handler on another thread may be reading it.
    ECHO_NOTE.store(note.unwrap_or(std::ptr::null_mut()), Ordering::Release);
}

/// # Safety
/// Async-signal-safe (pread, write, getpid); `base` is null or a live header mapping.
unsafe fn echo_crash(sig: i32, base: *mut u8) {
    let (source, target) = (
        ECHO_SOURCE.load(Ordering::Relaxed),
        ECHO_TARGET.load(Ordering::Relaxed),
    );
    if target < 0 {
        return;
    }
    let mut buf = [0u8; 1024];
    copy_from_start(source, target);
    let note = ECHO_NOTE.load(Ordering::Acquire);
    if note.is_null() {
        return;
    }
    write_all(target, b"blackbox: ");
    let mut wrote_test = false;
    if !base.is_null() {
        // SAFETY: the caller's; the slot holds at most TEST_SLOT bytes.
        unsafe {
            let len =
                (hdr_u32(base, OFF_CRASH_TEST_LEN).load(Ordering::Relaxed) as usize).min(TEST_SLOT);
            if len > 0 {
                write_all(
                    target,
                    std::slice::from_raw_parts(base.add(OFF_CRASH_TEST), len),
                );
                wrote_test = true;
            }
        }
    }
    if !wrote_test {
        write_all(target, b"pytest (between tests)");
    }
    write_all(target, b" crashed with ");
    write_all(target, fatal_signal_name(sig));
    write_all(target, b" (pid ");
    // SAFETY: getpid is async-signal-safe.
    let pid = unsafe { libc::getpid() };
    write_all(target, decimal(pid as u64, &mut buf));
    write_all(target, b"); ");
    // SAFETY: a non-null note is a leaked Box, never freed.
    write_all(target, unsafe { &*note });
    write_all(target, b"\n");
}

/// Copies the file open as `source` (if any), from its start, to `target`
/// (async-signal-safe: pread and write into a stack buffer).
fn copy_from_start(source: i32, target: i32) {
    if source < 0 {
        return;
    }
    let mut buf = [0u8; 1024];
    let mut off: libc::off_t = 0;
    loop {
        // SAFETY: reads into the stack buffer we own.
        let n = unsafe { libc::pread(source, buf.as_mut_ptr().cast(), buf.len(), off) };
        if n <= 0 {
            break;
        }
        write_all(target, &buf[..n as usize]);
        off += n as libc::off_t;
    }
}

/// Shows a timeout on the user's stderr as a crash is shown ([`set_crash_echo`]): the
/// tracebacks faulthandler just wrote into its file, then `blackbox: <line>` and the note.
/// Without an echo target, the line alone goes to descriptor 2.
pub(crate) fn echo_timeout(line: &str) {
    let echo = ECHO_TARGET.load(Ordering::Relaxed);
    let target = if echo < 0 { 2 } else { echo };
    if echo >= 0 {
        copy_from_start(ECHO_SOURCE.load(Ordering::Relaxed), target);
    }
    write_all(target, b"blackbox: ");
    write_all(target, line.as_bytes());
    let note = ECHO_NOTE.load(Ordering::Acquire);
    if !note.is_null() {
        write_all(target, b"; ");
        // SAFETY: a non-null note is a leaked Box, never freed.
        write_all(target, unsafe { &*note });
    }
    write_all(target, b"\n");
}

pub(crate) fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: writes from a slice we borrow.
        let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if n <= 0 {
            return;
        }
        bytes = &bytes[n as usize..];
    }
}

/// `n` in decimal, in the end of `buf`.
fn decimal(mut n: u64, buf: &mut [u8]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The name of a fatal signal, without allocating.
fn fatal_signal_name(sig: i32) -> &'static [u8] {
    match sig {
        libc::SIGSEGV => b"SIGSEGV",
        libc::SIGABRT => b"SIGABRT",
        libc::SIGBUS => b"SIGBUS",
        libc::SIGFPE => b"SIGFPE",
        libc::SIGILL => b"SIGILL",
        _ => b"a fatal signal",
    }
}

/// Whether [`on_fatal_signal`] is the handler of `sig` now (async-signal-safe: sigaction).
fn crash_handler_installed(sig: i32) -> bool {
    // SAFETY: sigaction only reads the disposition into the zeroed struct we own.
    unsafe {
        let mut now: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &raw mut now) == 0
            && now.sa_sigaction == on_fatal_signal as *const () as usize
    }
}

/// Installs a handler for the fatal signals that calls [`mark_crash`] and then the handler
/// that was installed before it (Python's faulthandler, say), or the default action. When
/// that handler returns and leaves ours installed (it dealt with the signal, as a JIT does
/// with its own faults), the mark is taken back; SIGABRT keeps it (docs/format.md).
/// Install it after faulthandler so both run. Safe to call more than once: a signal already
/// routed to this handler is left alone.
pub fn install_crash_handler() -> io::Result<()> {
    for &sig in &FATAL_SIGNALS {
        // SAFETY: sigaction with zeroed, then filled structs; the handler is async-signal-safe.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &raw mut old) != 0 {
                return Err(io::Error::last_os_error());
            }
            if old.sa_sigaction == on_fatal_signal as *const () as usize {
                continue;
            }
            PREVIOUS_HANDLERS[sig as usize].store(old.sa_sigaction as u64, Ordering::Relaxed);
            HANDLED[sig as usize].store(old.sa_flags as u32, Ordering::Relaxed);
            let mut new: libc::sigaction = std::mem::zeroed();
            new.sa_sigaction = on_fatal_signal as *const () as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_NODEFER;
            libc::sigemptyset(&raw mut new.sa_mask);
            if libc::sigaction(sig, &raw const new, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// # Safety
/// `base` must point at a live header mapping.
unsafe fn hdr_u32<'a>(base: *mut u8, off: usize) -> &'a AtomicU32 {
    // SAFETY: the offset is 4-aligned inside the page-aligned 4096-byte header.
    unsafe { AtomicU32::from_ptr(base.add(off).cast()) }
}

/// # Safety
/// `base` must point at a live header mapping.
unsafe fn hdr_u64<'a>(base: *mut u8, off: usize) -> &'a AtomicU64 {
    // SAFETY: the offset is 8-aligned inside the page-aligned 4096-byte header.
    unsafe { AtomicU64::from_ptr(base.add(off).cast()) }
}

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

// ---------------------------------------------------------------------------------------
// The writer
// ---------------------------------------------------------------------------------------

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
            _ => bounded::too_deep(self),
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
/// has one per run (see [`crate::writer::Recorder`]), and a forked child makes its own.
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

// ---------------------------------------------------------------------------------------
// The reader
// ---------------------------------------------------------------------------------------

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

/// Whether `name` is the name of a segment file.
pub fn is_segment_name(name: &std::ffi::OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"seg-") && b.ends_with(SEGMENT_SUFFIX.as_bytes())
}

/// Creates `path` (and missing parents) as directories of mode 0700. An existing directory is
/// used as it is; a symlink in its place is refused.
pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) if m.file_type().is_symlink() => {
            // Follow a symlinked store root the user made on purpose, but only to a directory.
            return match std::fs::metadata(path) {
                Ok(t) if t.is_dir() => Ok(()),
                _ => Err(Error::NotADirectory {
                    path: path.to_owned(),
                }),
            };
        }
        Ok(_) => {
            return Err(Error::NotADirectory {
                path: path.to_owned(),
            })
        }
        Err(_) => {}
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating", e))?;
        }
    }
    crate::private::make_dir(path).map(|_| ())
}

/// Opens a directory without following a symlink in its place (for listing run folders).
pub(crate) fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open with a NUL-terminated path; the fd is owned by the returned File.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Value;

    /// Writers register process-wide crash state: tests that create them take turns.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn tmp() -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("bbx-seg-{}-{:x}", std::process::id(), random_u64()));
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
}
