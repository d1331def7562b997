//! The fatal-signal handler: it marks the crash slot of this process's newest segment
//! (signal, time, running test) with plain atomic stores, chains to the handler installed
//! before it, and can echo faulthandler's traceback to the user's stderr.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};

use crate::clock::wall_ns;

use super::layout::{
    hdr_u32, hdr_u64, OFF_CRASH_NS, OFF_CRASH_SIGNAL, OFF_CRASH_TEST, OFF_CRASH_TEST_LEN, OFF_TEST,
    OFF_TEST_LEN, TEST_SLOT,
};

/// The process is ending on its own (closed recorder, `os._exit`, a fatal signal): the
/// watchdog stays quiet.
static DYING: AtomicBool = AtomicBool::new(false);

/// Tells the watchdog this process is ending on its own: it will not fire.
pub(crate) fn note_dying() {
    DYING.store(true, Ordering::Relaxed);
}

/// A fatal signal was dealt with by the handler it chained to (a runtime's own fault):
/// the process goes on after all.
fn note_alive() {
    DYING.store(false, Ordering::Relaxed);
}

/// Whether the process is ending on its own ([`note_dying`]).
pub(crate) fn dying() -> bool {
    DYING.load(Ordering::Relaxed)
}

/// The header page of the segment the crash handler marks (the newest writer of this
/// process), or null.
pub(super) static CRASH_HEADER: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());

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
        hdr_u64(base, OFF_CRASH_NS).store(wall_ns(), Ordering::Relaxed);
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
    note_dying();
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
            note_alive();
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
