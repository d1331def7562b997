//! The hang watchdog: one native thread per process (it needs no GIL), armed when a test
//! starts and disarmed when it ends, by [`crate::Recorder`] itself, with atomic stores only.
//!
//! When an armed test outlives its limit, the thread takes the recorder that armed it,
//! records a [`Record::Timeout`] (test, phase, limit, elapsed), writes into the dump file a
//! line naming the test's thread ([`TEST_THREAD_LINE`]), raises the dump signal on itself
//! (the Python side registers `faulthandler` for it, which writes every Python thread's
//! traceback without the GIL, before `raise` returns), says so on stderr and ends
//! the process with [`TIMEOUT_EXIT_STATUS`]: pytest-forked's parent or xdist's controller
//! then reports the test and goes on, and a plain pytest ends the same way.
//!
//! Concurrency contract. One word, [`STATE`], holds an arming generation and the state
//! (idle, armed, firing); the deadline, start and limit are written before the armed state
//! is published (release) and read after it is seen (acquire). The thread fires only by a
//! compare-exchange from the exact armed word it read, so a test that disarms (or a next
//! test that re-arms) at the last instant either wins, and nothing fires, or loses, and
//! then finds the state firing and waits for the end of the process: one report, never two.
//! The thread sleeps on its own schedule ([`TICK`]); arming costs no system call. After
//! `fork()` the child has no watchdog thread and is disarmed (atfork child handler); its
//! first arming starts its own thread.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError, Weak};
use std::time::Duration;

use crate::clock::{monotonic_ns, wall_ns};
use crate::record::{Phase, Record};
use crate::segment::{dying, process_id};

/// The exit status of a process the watchdog ends (that of coreutils' `timeout`).
pub const TIMEOUT_EXIT_STATUS: i32 = 124;
/// How often the thread looks at the clock while a test is armed (at most this late).
pub const TICK: Duration = Duration::from_millis(100);
/// The source of a limit the watchdog enforces.
pub const SOURCE_BLACKBOX: &str = "blackbox_timeout";
/// The source of a limit pytest-timeout enforces (told through its hooks).
pub const SOURCE_PYTEST_TIMEOUT: &str = "pytest-timeout";
/// Whose limit the watchdog enforces for the armed test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `--blackbox-timeout`, its ini value or marker.
    Blackbox,
    /// pytest-timeout's, whose timer runs in the process that forked this one
    /// (pytest-forked's parent): it cannot end this process. The watchdog acts
    /// [`FORKED_GRACE`] after its deadline.
    PytestTimeout,
}

/// How long after pytest-timeout's deadline the watchdog ends a forked child whose parent
/// runs pytest-timeout's timer: by then pytest-timeout has ended the parent (which gave up
/// on the test). Not sooner: a child ended first would let the parent go on, at random.
pub const FORKED_GRACE: Duration = Duration::from_secs(1);

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Blackbox => SOURCE_BLACKBOX,
            Source::PytestTimeout => SOURCE_PYTEST_TIMEOUT,
        }
    }
}

/// How long the firing thread waits for the recorder's lock before it goes on without the
/// record (another thread of the test holding it forever).
const LOCK_WAIT: Duration = Duration::from_secs(1);

const IDLE: u64 = 0;
const ARMED: u64 = 1;
const FIRING: u64 = 2;
const STATE_BITS: u64 = 3;

/// Generation (upper bits) and state (low two bits).
static STATE: AtomicU64 = AtomicU64::new(IDLE);
static DEADLINE_NS: AtomicU64 = AtomicU64::new(0);
static START_NS: AtomicU64 = AtomicU64::new(0);
static LIMIT_NS: AtomicU64 = AtomicU64::new(0);
/// The [`crate::Recorder::id`] that armed, so a nested session does not disarm its outer one's.
static ARMED_BY: AtomicU64 = AtomicU64::new(0);
/// The armed limit's [`Source`]: whether it is pytest-timeout's.
static PYTEST_TIMEOUT: AtomicBool = AtomicBool::new(false);
/// 0 setup, 1 call, 2 teardown: the phase running (the reports recorded so far).
static PHASE: AtomicU8 = AtomicU8::new(0);
/// The signal the Python side registered `faulthandler` for (0: none).
static DUMP_SIGNAL: AtomicI32 = AtomicI32::new(0);
/// The descriptor faulthandler dumps into for [`DUMP_SIGNAL`] (-1: none).
static DUMP_FD: AtomicI32 = AtomicI32::new(-1);
/// The thread that armed (the test's: `pthread_self`, which is what faulthandler prints as
/// a thread's id), named in the dump so that a reader picks its traceback.
static ARMED_THREAD: AtomicU64 = AtomicU64::new(0);
/// The process whose watchdog thread runs (0: none), as [`process_id`] gives it.
static THREAD_PID: AtomicU32 = AtomicU32::new(0);
static THREAD: Mutex<Option<std::thread::Thread>> = Mutex::new(None);
static STOP: AtomicBool = AtomicBool::new(false);
/// Whether the firing's timeout record is written: by the thread, or by the test's own
/// thread when it holds the recorder then (it ended the test at the last instant).
static RECORDED: AtomicBool = AtomicBool::new(false);
/// The test the firing named, for its line on stderr.
static FIRED_TEST: Mutex<Option<String>> = Mutex::new(None);
static ATFORK: Once = Once::new();
/// Recorders the thread may write into: `Recorder::into_shared` registers each.
static SINKS: Mutex<Vec<(u64, Sink)>> = Mutex::new(Vec::new());
/// A registered recorder, by its weak reference (a dropped recorder is forgotten).
type Sink = Weak<Mutex<dyn TimeoutSink>>;

/// What the thread writes its timeout record into when it fires: a [`crate::Recorder`]
/// (named by a trait so that the watchdog does not import the recorder that arms it).
pub(crate) trait TimeoutSink: Send {
    /// Writes `rec` (a [`Record::Timeout`]) and commits it, naming the running test.
    fn record_timeout(&mut self, rec: &mut Record);
}

extern "C" fn after_fork_in_child() {
    // Plain atomic stores: the child has no watchdog thread, and no inherited arming.
    let s = STATE.load(Ordering::Relaxed);
    STATE.store((s & !STATE_BITS) + 4, Ordering::Relaxed);
    THREAD_PID.store(0, Ordering::Relaxed);
    STOP.store(false, Ordering::Relaxed);
    RECORDED.store(false, Ordering::Relaxed);
}

pub(crate) fn register<S: TimeoutSink + 'static>(id: u64, recorder: &Arc<Mutex<S>>) {
    let mut sinks = SINKS.lock().unwrap_or_else(PoisonError::into_inner);
    sinks.retain(|(_, w)| w.strong_count() > 0);
    let sink: Weak<Mutex<S>> = Arc::downgrade(recorder);
    let sink: Sink = sink;
    sinks.push((id, sink));
}

/// The start of the line the watchdog writes into the dump before faulthandler's
/// tracebacks, ending in the id of the test's thread as faulthandler prints it
/// (`0x%016lx`): the dump's threads come newest first, and none is "Current thread".
pub const TEST_THREAD_LINE: &str = "Timeout: the test ran on Thread 0x";

/// Sets the signal the watchdog raises on its own thread to have every Python thread's
/// traceback written into `fd` (the Python side registers `faulthandler` for it there);
/// 0 (and -1) for none. The watchdog writes [`TEST_THREAD_LINE`] into `fd` first.
pub fn set_dump_signal(signal: i32, fd: i32) {
    DUMP_FD.store(if signal > 0 { fd } else { -1 }, Ordering::Relaxed);
    DUMP_SIGNAL.store(signal, Ordering::Relaxed);
}

/// Arms the watchdog for a test that started at `start_ns` (monotonic) with `limit_ns`, of
/// `source`. Atomic stores only, but for the first arming of a process, which starts its
/// thread.
pub(crate) fn arm(by: u64, start_ns: u64, limit_ns: u64, source: Source) -> std::io::Result<()> {
    ensure_thread()?;
    loop {
        let s = STATE.load(Ordering::Acquire);
        if s & STATE_BITS == FIRING {
            wait_for_the_end();
        }
        let grace = match source {
            Source::Blackbox => 0,
            Source::PytestTimeout => FORKED_GRACE.as_nanos() as u64,
        };
        DEADLINE_NS.store(
            start_ns.saturating_add(limit_ns).saturating_add(grace),
            Ordering::Relaxed,
        );
        START_NS.store(start_ns, Ordering::Relaxed);
        LIMIT_NS.store(limit_ns, Ordering::Relaxed);
        ARMED_BY.store(by, Ordering::Relaxed);
        PYTEST_TIMEOUT.store(source == Source::PytestTimeout, Ordering::Relaxed);
        // SAFETY: pthread_self reads the thread pointer: no system call.
        ARMED_THREAD.store(unsafe { libc::pthread_self() } as u64, Ordering::Relaxed);
        PHASE.store(0, Ordering::Relaxed);
        RECORDED.store(false, Ordering::Relaxed);
        let armed = (s & !STATE_BITS) + 4 + ARMED;
        if STATE
            .compare_exchange(s, armed, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return Ok(());
        }
    }
}

/// The phase `done` was reported: the next one runs (for the timeout's story).
pub(crate) fn phase_done(by: u64, done: Phase) {
    if ARMED_BY.load(Ordering::Relaxed) == by {
        let next = match done {
            Phase::Setup => 1,
            Phase::Call | Phase::Teardown => 2,
        };
        PHASE.store(next, Ordering::Relaxed);
    }
}

/// Disarms, if `by` armed. Returns `false` when the thread already fires for this test:
/// the caller (which holds the recorder the thread waits for) then records the timeout
/// with [`fired_record`], if the thread has not, and waits for the end of the process
/// (the test ran past its limit; it is reported once, as a timeout).
#[must_use]
pub(crate) fn disarm(by: u64) -> bool {
    loop {
        let s = STATE.load(Ordering::Acquire);
        match s & STATE_BITS {
            ARMED if ARMED_BY.load(Ordering::Relaxed) == by => {
                if STATE
                    .compare_exchange(s, s & !STATE_BITS, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
                {
                    return true;
                }
            }
            FIRING if ARMED_BY.load(Ordering::Relaxed) == by => return false,
            _ => return true,
        }
    }
}

/// The timeout record of the firing in progress, when no one has written it yet (the one
/// who gets it writes it, filled by [`crate::Recorder`] with the running test).
pub(crate) fn fired_record() -> Option<Record> {
    RECORDED
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok()
        .then(|| timeout_record(monotonic_ns()))
}

/// Notes the test the firing named (for its line on stderr).
pub(crate) fn note_fired_test(test: Option<&str>) {
    *FIRED_TEST.lock().unwrap_or_else(PoisonError::into_inner) = test.map(str::to_owned);
}

fn timeout_record(now: u64) -> Record {
    let phase = match PHASE.load(Ordering::Relaxed) {
        0 => Phase::Setup,
        1 => Phase::Call,
        _ => Phase::Teardown,
    };
    Record::Timeout {
        test: None,
        phase: Some(phase.as_str().to_owned()),
        limit_s: LIMIT_NS.load(Ordering::Relaxed) as f64 / 1e9,
        elapsed_s: now.saturating_sub(START_NS.load(Ordering::Relaxed)) as f64 / 1e9,
        source: armed_source().as_str().to_owned(),
        fatal: true,
        wall_ns: wall_ns(),
    }
}

fn armed_source() -> Source {
    if PYTEST_TIMEOUT.load(Ordering::Relaxed) {
        Source::PytestTimeout
    } else {
        Source::Blackbox
    }
}

/// Whether a test is armed now (for tests and the binding).
pub fn armed() -> bool {
    STATE.load(Ordering::Acquire) & STATE_BITS == ARMED
}

/// Whether this process has a watchdog thread now.
pub fn thread_running() -> bool {
    THREAD_PID.load(Ordering::Relaxed) == process_id()
}

/// The test's own thread, when it finds the watchdog firing: never returns.
pub(crate) fn wait_for_the_end() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn ensure_thread() -> std::io::Result<()> {
    let pid = process_id();
    if THREAD_PID.load(Ordering::Acquire) == pid {
        return Ok(());
    }
    ATFORK.call_once(|| {
        // SAFETY: registers a handler that only makes atomic stores.
        unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
    });
    let mut slot = THREAD.lock().unwrap_or_else(PoisonError::into_inner);
    if THREAD_PID.load(Ordering::Acquire) == pid {
        return Ok(());
    }
    STOP.store(false, Ordering::Relaxed);
    let handle = std::thread::Builder::new()
        .name("blackbox-watchdog".into())
        .spawn(watch)?;
    *slot = Some(handle.thread().clone());
    THREAD_PID.store(pid, Ordering::Release);
    Ok(())
}

/// Before a `fork()` (the Python side calls it from `os.register_at_fork`): the thread
/// ends, so the process forks with no thread of ours (Python 3.12+ warns otherwise). The
/// next arming, or [`after_fork_in_parent`] while a test is armed, starts it again.
pub fn before_fork() {
    let mut slot = THREAD.lock().unwrap_or_else(PoisonError::into_inner);
    if THREAD_PID.load(Ordering::Acquire) != process_id() {
        return;
    }
    if let Some(t) = slot.take() {
        STOP.store(true, Ordering::Release);
        t.unpark();
        // The thread clears THREAD_PID as it leaves.
        while THREAD_PID.load(Ordering::Acquire) != 0 {
            std::thread::yield_now();
        }
    }
}

/// After a `fork()`, in the parent: an armed test gets its thread back.
pub fn after_fork_in_parent() -> std::io::Result<()> {
    if armed() {
        ensure_thread()?;
    }
    Ok(())
}

fn watch() {
    block_everything_but_dump();
    loop {
        if STOP.load(Ordering::Acquire) {
            THREAD_PID.store(0, Ordering::Release);
            return;
        }
        let s = STATE.load(Ordering::Acquire);
        let mut nap = TICK;
        if s & STATE_BITS == ARMED {
            let deadline = DEADLINE_NS.load(Ordering::Relaxed);
            let now = monotonic_ns();
            if now >= deadline {
                if !dying()
                    && STATE
                        .compare_exchange(
                            s,
                            (s & !STATE_BITS) | FIRING,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    fire(now);
                }
            } else {
                nap = nap.min(Duration::from_nanos(deadline - now));
            }
        }
        std::thread::park_timeout(nap);
    }
}

/// Signals meant for the process (a ^C, a SIGTERM) go to its other threads, not to this one.
fn block_everything_but_dump() {
    // SAFETY: signal-mask calls on a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&raw mut set);
        for sig in crate::segment::FATAL_SIGNALS {
            libc::sigdelset(&raw mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
    }
}

fn fire(now: u64) -> ! {
    let by = ARMED_BY.load(Ordering::Relaxed);
    let sink = SINKS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .find(|(id, _)| *id == by)
        .and_then(|(_, w)| w.upgrade());
    if let Some(sink) = sink {
        let waited_from = std::time::Instant::now();
        // Until someone recorded it: this thread, or the test's, which holds the recorder
        // when it ended the test at the last instant (and then waits for the end).
        while !RECORDED.load(Ordering::Acquire) && waited_from.elapsed() < LOCK_WAIT {
            let mut r = match sink.try_lock() {
                Ok(r) => r,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
            };
            if RECORDED
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                r.record_timeout(&mut timeout_record(now));
            }
            break;
        }
    }
    let where_ = FIRED_TEST
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
        .unwrap_or_else(|| "an unknown test".into());
    let limit_s = LIMIT_NS.load(Ordering::Relaxed) as f64 / 1e9;
    let phase = match PHASE.load(Ordering::Relaxed) {
        0 => Phase::Setup,
        1 => Phase::Call,
        _ => Phase::Teardown,
    };
    let line = format!(
        "{where_} timed out after {limit_s:?} s in {} ({}); \
         ending process {} with status {TIMEOUT_EXIT_STATUS}",
        phase.as_str(),
        armed_source().as_str(),
        process_id(),
    );
    let sig = DUMP_SIGNAL.load(Ordering::Relaxed);
    let fd = DUMP_FD.load(Ordering::Relaxed);
    if sig > 0 && fd >= 0 {
        let mark = format!(
            "{TEST_THREAD_LINE}{:016x} (pytest-blackbox's watchdog ended it; every thread \
             follows, newest first)\n\n",
            ARMED_THREAD.load(Ordering::Relaxed)
        );
        crate::segment::write_all(fd, mark.as_bytes());
    }
    // SAFETY: the signal goes to this thread, with it unblocked: faulthandler's handler
    // writes the tracebacks before raise returns. _exit(2) needs nothing.
    unsafe {
        if sig > 0 {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&raw mut set);
            libc::sigaddset(&raw mut set, sig);
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &raw const set, std::ptr::null_mut());
            libc::raise(sig);
        }
    }
    crate::segment::echo_timeout(&line);
    // SAFETY: ends the process at once, as os._exit does.
    unsafe { libc::_exit(TIMEOUT_EXIT_STATUS) }
}

/// A timeout's story: "timed out after 2.0 s in call (`blackbox_timeout`)".
pub fn timeout_story(limit_s: f64, phase: Option<&str>, source: &str) -> String {
    let phase = phase.map(|p| format!(" in {p}")).unwrap_or_default();
    format!("timed out after {limit_s:?} s{phase} ({source})")
}
