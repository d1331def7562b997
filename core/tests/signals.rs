//! Async-signal-safe crash marking with real signals: a child installs the crash handler,
//! starts a test and dies by a real `SIGSEGV` or by `abort()`; the segment header then holds
//! the signal, the time and the running test, and the process still dies by that signal.
//! A handler installed before ours still runs (`SA_SIGINFO` and plain ones), and a fault
//! that such a handler deals with on purpose (as a JIT does) leaves no crash mark.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use blackbox_core::{
    install_crash_handler, Durability, Recorder, Role, SegmentReader, Snapshot, Store,
};
use std::sync::atomic::{AtomicUsize, Ordering};

use support::{ack, child_role, describe, spawn, wait_for_parent, TempDir, ACK_FD};

const CHILD_TEST: &str = "child";
const NODEID: &str = "tests/test_native.py::test_segfaults[param-1]";

/// Writes `msg` to the acknowledgement pipe from a signal handler (write is
/// async-signal-safe; nothing is allocated).
fn signal_safe_ack(msg: &[u8]) {
    // SAFETY: writes a static buffer to an inherited descriptor.
    unsafe { libc::write(ACK_FD, msg.as_ptr().cast(), msg.len()) };
}

extern "C" fn earlier_siginfo_handler(
    sig: libc::c_int,
    info: *mut libc::siginfo_t,
    _ctx: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers (ours forwards it).
    let ok = !info.is_null() && unsafe { (*info).si_signo } == sig;
    signal_safe_ack(if ok {
        b"CHAINED siginfo ok\n"
    } else {
        b"CHAINED siginfo BAD\n"
    });
    // Like faulthandler: restore the default action and return; the faulting instruction
    // runs again and the process dies by the signal.
    // SAFETY: signal() is async-signal-safe.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

extern "C" fn earlier_plain_handler(sig: libc::c_int) {
    signal_safe_ack(if sig == libc::SIGABRT {
        b"CHAINED plain ok\n"
    } else {
        b"CHAINED plain BAD\n"
    });
    // Returning from a SIGABRT handler: abort() restores the default action and raises again.
}

fn install_earlier(sig: i32, siginfo: bool) {
    // SAFETY: sigaction with a zeroed, then filled struct.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        if siginfo {
            sa.sa_sigaction = earlier_siginfo_handler as *const () as usize;
            sa.sa_flags = libc::SA_SIGINFO;
        } else {
            sa.sa_sigaction = earlier_plain_handler as *const () as usize;
        }
        libc::sigemptyset(&raw mut sa.sa_mask);
        assert_eq!(libc::sigaction(sig, &raw const sa, std::ptr::null_mut()), 0);
    }
}

/// The page the "JIT" handler below owns: a fault there is expected, anything else is not.
static JIT_PAGE: AtomicUsize = AtomicUsize::new(0);

/// Like a JIT's fault handler: a fault on its own page is expected (it makes the page
/// writable and returns, and the faulting write runs again and succeeds); any other fault
/// is not its business, so it restores the default action and returns, like the Rust
/// runtime and wasm engines do, and the repeated fault kills the process.
extern "C" fn jit_handler(sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let page = JIT_PAGE.load(Ordering::Relaxed);
    // SAFETY: the kernel passes a valid siginfo for SA_SIGINFO handlers (ours forwards it).
    let addr = unsafe { (*info).si_addr() } as usize;
    if page != 0 && (page..page + 4096).contains(&addr) {
        // SAFETY: the page is ours (mapped in `child`); mprotect is a plain syscall.
        unsafe {
            libc::mprotect(
                page as *mut libc::c_void,
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        signal_safe_ack(b"JIT handled its fault\n");
    } else {
        // SAFETY: signal() is async-signal-safe.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

fn segfault() -> ! {
    // SAFETY: a deliberate write to an address no mapping covers (the zero page, just past
    // null so the write itself is not a null-pointer precondition failure): a real SIGSEGV.
    unsafe { std::ptr::write_volatile(std::ptr::with_exposed_provenance_mut::<u64>(0x10), 1) };
    unreachable!("the write above faults");
}

/// Entry point of the child processes (the tests below start this binary again).
#[test]
#[ignore = "a child process of the tests in this file; it does nothing on its own"]
fn child() {
    let role = child_role().expect("run by the tests in this file, with BBX_CHILD set");
    support::no_core_dumps();
    let run_dir = PathBuf::from(std::env::var("BBX_RUN").unwrap());
    match role.as_str() {
        "segv_chained" => install_earlier(libc::SIGSEGV, true),
        "abort_chained" => install_earlier(libc::SIGABRT, false),
        "jit" => {
            // SAFETY: a fresh inaccessible anonymous page, and sigaction with a filled struct.
            unsafe {
                let page = libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                );
                assert_ne!(page, libc::MAP_FAILED);
                JIT_PAGE.store(page as usize, Ordering::Relaxed);
                let mut sa: libc::sigaction = std::mem::zeroed();
                sa.sa_sigaction = jit_handler as *const () as usize;
                sa.sa_flags = libc::SA_SIGINFO;
                libc::sigemptyset(&raw mut sa.sa_mask);
                assert_eq!(
                    libc::sigaction(libc::SIGSEGV, &raw const sa, std::ptr::null_mut()),
                    0
                );
            }
        }
        _ => {}
    }
    install_crash_handler().unwrap();
    // A second install must not chain the handler to itself.
    install_crash_handler().unwrap();
    if role == "abort_echo" {
        // What faulthandler would have written, and the user's stderr: the handler copies
        // the one to the other, then writes its line.
        use std::os::fd::IntoRawFd;
        let source = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(run_dir.join("fh.txt"))
            .unwrap();
        std::io::Write::write_all(&mut &source, b"Fatal Python error: Aborted\n  File x\n")
            .unwrap();
        let target = std::fs::File::create(run_dir.join("stderr.txt")).unwrap();
        blackbox_core::set_crash_echo(
            source.into_raw_fd(),
            target.into_raw_fd(),
            Some("its story: blackbox crashes --dir D"),
        );
    }
    let mut rec = Recorder::new(&run_dir, Role::Main, None, Durability::Process);
    rec.start_test(NODEID).unwrap();
    ack(&format!("READY {}", rec.segment_path().unwrap().display()));
    match role.as_str() {
        "segv" | "segv_chained" => segfault(),
        "jit" => {
            let page = JIT_PAGE.load(Ordering::Relaxed) as *mut u64;
            // SAFETY: the write faults once (the page is PROT_NONE), the JIT handler makes
            // the page writable, and the write runs again.
            unsafe { std::ptr::write_volatile(page, 42) };
            // SAFETY: as above, now readable.
            let back = unsafe { std::ptr::read_volatile(page) };
            ack(&format!("SURVIVED {back}"));
            // The parent looks at the segment of the living process, then lets it crash.
            wait_for_parent();
            segfault()
        }
        // SAFETY: abort never returns.
        "abort" | "abort_chained" | "abort_echo" => unsafe { libc::abort() },
        other => panic!("unknown child role {other}"),
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Runs a child in `role`, which must die by `signal`; checks the crash mark and returns
/// the acknowledgements it sent after READY.
fn crash_child(role: &str, signal: i32) -> Vec<String> {
    let tmp = TempDir::new(&format!("sig-{role}"));
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let before = wall_ns();
    let mut s = spawn(
        CHILD_TEST,
        role,
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    let ready = s.expect_ack("READY ");
    let seg = Path::new(ready.strip_prefix("READY ").unwrap()).to_owned();
    let rest = s.rest_of_acks();
    let st = s.wait();
    let after = wall_ns();
    assert_eq!(
        st.signal(),
        Some(signal),
        "{role}: the child died by {}, not by signal {signal}; log:\n{}",
        describe(st),
        s.log_text()
    );

    let r = SegmentReader::open(&seg).unwrap();
    let mark = r
        .crash_mark()
        .unwrap_or_else(|| panic!("{role}: no crash mark"));
    assert_eq!(mark.signal, signal);
    assert_eq!(mark.test.as_deref(), Some(NODEID));
    assert!(
        (before..=after).contains(&mark.wall_ns),
        "{role}: crash time {} outside [{before}, {after}]",
        mark.wall_ns
    );
    assert!(!r.writer_alive());
    assert!(!r.info().closed_cleanly);
    // What the process committed before it died is there, and the follower reports the mark.
    let snap = Snapshot::read(&run, &run_dir).unwrap();
    assert_eq!(snap.segments.len(), 1);
    assert_eq!(snap.segments[0].crash.as_ref(), Some(&mark));
    assert!(snap.records[0].iter().any(
        |rec| matches!(rec, blackbox_core::Record::TestStart { nodeid, .. } if nodeid == NODEID)
    ));
    rest
}

#[test]
fn a_real_segfault_is_marked_and_still_kills() {
    // Rust's runtime installs its own SIGSEGV handler (stack-overflow detection) before the
    // test runs: ours chains to it, it restores the default action, and the fault repeats.
    assert!(crash_child("segv", libc::SIGSEGV).is_empty());
}

#[test]
fn abort_is_marked_and_still_kills() {
    assert!(crash_child("abort", libc::SIGABRT).is_empty());
}

#[test]
fn a_dying_process_shows_the_traceback_and_one_line_on_the_users_stderr() {
    let tmp = TempDir::new("sig-echo");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "abort_echo",
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    s.expect_ack("READY ");
    let pid = s.child.id();
    let st = s.wait();
    assert_eq!(st.signal(), Some(libc::SIGABRT), "{}", describe(st));
    let shown = std::fs::read_to_string(run_dir.join("stderr.txt")).unwrap();
    assert_eq!(
        shown,
        format!(
            "Fatal Python error: Aborted\n  File x\nblackbox: {NODEID} crashed with SIGABRT \
             (pid {pid}); its story: blackbox crashes --dir D\n"
        )
    );
}

#[test]
fn an_earlier_siginfo_handler_still_runs() {
    assert_eq!(
        crash_child("segv_chained", libc::SIGSEGV),
        vec!["CHAINED siginfo ok".to_owned()]
    );
}

#[test]
fn an_earlier_plain_handler_still_runs() {
    assert_eq!(
        crash_child("abort_chained", libc::SIGABRT),
        vec!["CHAINED plain ok".to_owned()]
    );
}

#[test]
fn a_fault_an_earlier_handler_deals_with_leaves_no_mark() {
    let tmp = TempDir::new("sig-jit");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "jit",
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    let ready = s.expect_ack("READY ");
    let seg = Path::new(ready.strip_prefix("READY ").unwrap()).to_owned();
    assert_eq!(s.expect_ack("JIT "), "JIT handled its fault");
    assert_eq!(s.expect_ack("SURVIVED "), "SURVIVED 42");
    let r = SegmentReader::open(&seg).unwrap();
    assert_eq!(r.crash_mark(), None, "a handled fault marked the segment");
    assert!(r.writer_alive());
    // A real fault after it: the JIT handler gives up, and the process dies marked.
    s.tell("crash");
    let rest = s.rest_of_acks();
    let st = s.wait();
    assert_eq!(
        st.signal(),
        Some(libc::SIGSEGV),
        "the child died by {}; log:\n{}",
        describe(st),
        s.log_text()
    );
    assert!(rest.is_empty(), "{rest:?}");
    let mark = r.crash_mark().expect("the real fault is marked");
    assert_eq!(mark.signal, libc::SIGSEGV);
    assert_eq!(mark.test.as_deref(), Some(NODEID));
}
