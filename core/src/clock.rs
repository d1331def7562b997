//! The clocks records use: monotonic (comparable across processes) and wall (Unix ns).
//! Each is one `clock_gettime`, async-signal-safe.

/// The monotonic clock records use (`CLOCK_MONOTONIC`, comparable across processes).
pub fn now_mono_ns() -> u64 {
    monotonic_ns()
}

/// The wall clock records use (Unix ns).
pub fn now_wall_ns() -> u64 {
    wall_ns()
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
