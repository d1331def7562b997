//! Fork safety: the process-wide state a child must drop right after `fork()`, so that it
//! never writes into its parent's segment, and the pid kept without a system call per write.

use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU32, AtomicU64, Ordering};
use std::sync::Once;

use super::crash_handler::CRASH_HEADER;
use super::layout::MAX_SEGMENT;

/// Bumped in every child right after `fork()` (`pthread_atfork`), so a writer notices it was
/// inherited with one relaxed load instead of a `getpid()` per write.
static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);
/// Descriptors of this process's open segments: the atfork child handler points them at
/// /dev/null so the child holds no reference to the parent's lock.
const FD_SLOTS: usize = 64;
pub(super) static WRITER_FDS: [AtomicI32; FD_SLOTS] = [const { AtomicI32::new(-1) }; FD_SLOTS];
/// The mapping of the segment in the same slot of [`WRITER_FDS`], or null. A mapping holds
/// the open file, and so its lock, as firmly as a descriptor does: the atfork child handler
/// replaces it with an inaccessible anonymous mapping of the same size at the same address
/// (the inherited writer's drop later unmaps that).
pub(super) static WRITER_MAPS: [AtomicPtr<u8>; FD_SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; FD_SLOTS];
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

pub(super) fn register_atfork() {
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
