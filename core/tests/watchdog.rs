//! The hang watchdog with real processes: each scenario runs in a forked child of this
//! test process (the watchdog ends the process it fires in), and the parent reads the
//! child's exit status and the run it wrote.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use blackbox_core::testing::watchdog;
use blackbox_core::{
    Durability, Phase, Record, Recorder, Role, RunView, Store, TIMEOUT_EXIT_STATUS,
};
use support::TempDir;

/// One scenario at a time: a child forked while another test thread holds a lock of the
/// watchdog's would inherit it held.
static SERIAL: Mutex<()> = Mutex::new(());

fn phase(nodeid: &str, p: Phase) -> Record {
    report(nodeid, p, "passed")
}

fn report(nodeid: &str, p: Phase, outcome: &str) -> Record {
    Record::TestPhase {
        nodeid: nodeid.into(),
        phase: p,
        outcome: outcome.into(),
        duration_s: 0.0,
        mono_ns: blackbox_core::now_mono_ns(),
        report: None,
    }
}

fn recorder(run_dir: &Path, limit_s: f64) -> std::sync::Arc<Mutex<Recorder>> {
    let r = Recorder::new(
        run_dir,
        Role::Worker,
        Some("gw0".into()),
        Durability::Process,
    )
    .into_shared();
    r.lock()
        .unwrap()
        .set_timeouts(Some(limit_s), HashMap::new());
    r
}

/// Runs `f` in a forked child (which must end with `_exit`); returns its wait status and
/// how long it lived.
fn in_child(f: impl FnOnce()) -> (i32, Duration) {
    in_child_then(|| {}, f)
}

/// [`in_child`], the parent running `meanwhile` once the child is forked.
fn in_child_then(meanwhile: impl FnOnce(), f: impl FnOnce()) -> (i32, Duration) {
    let t0 = Instant::now();
    // SAFETY: the child uses only this thread and ends with _exit; SERIAL keeps the other
    // test threads away from the watchdog's locks.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        f();
        // SAFETY: ends the child without the harness's exit path.
        unsafe { libc::_exit(0) };
    }
    meanwhile();
    let mut status = 0;
    // SAFETY: waits for our child into a status we own.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    (status, t0.elapsed())
}

fn exit_status(status: i32) -> Option<i32> {
    libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status))
}

fn run(tag: &str) -> (TempDir, Store, String) {
    let dir = TempDir::new(tag);
    let store = Store::create(dir.path()).unwrap();
    let id = store.new_run().unwrap();
    (dir, store, id)
}

/// One scenario's run, and the lock that keeps the scenarios one at a time.
struct Scenario {
    _serial: std::sync::MutexGuard<'static, ()>,
    _dir: TempDir,
    store: Store,
    id: String,
    run_dir: std::path::PathBuf,
}

fn scenario(tag: &str) -> Scenario {
    let serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (dir, store, id) = run(tag);
    let run_dir = store.run_path(&id).unwrap();
    Scenario {
        _serial: serial,
        _dir: dir,
        store,
        id,
        run_dir,
    }
}

fn timeouts(store: &Store, id: &str) -> Vec<Record> {
    store
        .snapshot(id)
        .unwrap()
        .iter()
        .filter(|(_, r)| matches!(r, Record::Timeout { .. }))
        .map(|(_, r)| r.clone())
        .collect()
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn a_hung_test_is_recorded_and_its_process_ended() {
    let sc = scenario("wd-fire");
    let (store, id, run_dir) = (&sc.store, &sc.id, &sc.run_dir);
    let (status, lived) = in_child(|| {
        let r = recorder(run_dir, 0.3);
        let mut g = r.lock().unwrap();
        g.start_test("t.py::test_hangs").unwrap();
        g.record(&phase("t.py::test_hangs", Phase::Setup)).unwrap();
        g.phase_done(Phase::Setup);
        drop(g);
        sleep_ms(10_000);
    });
    assert_eq!(
        exit_status(status),
        Some(TIMEOUT_EXIT_STATUS),
        "{status:#x}"
    );
    assert!(lived < Duration::from_millis(2300), "lived {lived:?}");
    let view: RunView = store.view(id).unwrap();
    assert_eq!(view.crashes.len(), 1, "{:?}", view.crashes);
    let c = &view.crashes[0];
    assert_eq!(c.kind, "timeout");
    assert_eq!(c.nodeid.as_deref(), Some("t.py::test_hangs"));
    assert_eq!(c.phase.as_deref(), Some("call"));
    assert_eq!(c.detail, "timed out after 0.3 s in call (blackbox_timeout)");
    let t = c.timeout.as_ref().unwrap();
    assert!((t.limit_s - 0.3).abs() < 1e-9);
    assert!(t.elapsed_s >= 0.3 && t.elapsed_s < 1.0, "{t:?}");
    let test = &view.tests[0];
    assert_eq!(test.outcome, "timeout");
    assert!(test.timeout.as_ref().is_some_and(|t| t.fatal));
    let json = view.to_json();
    assert_eq!(json["crashes"][0]["kind"], "timeout");
    assert_eq!(json["tests"][0]["timeout"]["source"], "blackbox_timeout");
}

#[test]
fn tests_in_time_and_a_fixture_setup_hang() {
    let sc = scenario("wd-intime");
    let (store, id, run_dir) = (&sc.store, &sc.id, &sc.run_dir);
    let (status, _) = in_child(|| {
        let r = recorder(run_dir, 0.25);
        let mut g = r.lock().unwrap();
        for i in 0..200 {
            let n = format!("t.py::test_{i}");
            g.start_test(&n).unwrap();
            for p in [Phase::Setup, Phase::Call, Phase::Teardown] {
                g.record(&phase(&n, p)).unwrap();
                g.phase_done(p);
            }
            g.end_test(&n).unwrap();
        }
        assert!(watchdog::thread_running() && !watchdog::armed());
        drop(g);
        // Long past every limit: nothing was armed any more.
        sleep_ms(600);
        let mut g = r.lock().unwrap();
        g.start_test("t.py::test_fixture_hangs").unwrap();
        drop(g);
        sleep_ms(10_000);
    });
    assert_eq!(
        exit_status(status),
        Some(TIMEOUT_EXIT_STATUS),
        "{status:#x}"
    );
    let view = store.view(id).unwrap();
    assert_eq!(view.tests.len(), 201);
    assert_eq!(
        view.tests.iter().filter(|t| t.outcome == "passed").count(),
        200
    );
    assert_eq!(view.crashes.len(), 1);
    assert_eq!(
        view.crashes[0].detail,
        "timed out after 0.25 s in setup (blackbox_timeout)"
    );
    assert_eq!(timeouts(store, id).len(), 1);
}

/// Tests that end right around their limit: each is either in time (no record, the
/// process goes on) or a timeout (one record, the process ended), never both, never two.
#[test]
fn a_test_that_ends_at_the_last_instant_is_reported_once_or_not_at_all() {
    let _g = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut fired = 0;
    let mut in_time = 0;
    for k in 0..16u64 {
        let (_d, store, id) = run("wd-edge");
        let run_dir = store.run_path(&id).unwrap();
        let (status, _) = in_child(|| {
            let r = recorder(&run_dir, 0.1);
            let mut g = r.lock().unwrap();
            g.start_test("t.py::test_edge").unwrap();
            drop(g);
            // 97 to 112 ms: around the 100 ms limit and the thread's wake-ups.
            std::thread::sleep(Duration::from_micros(97_000 + k * 1_000));
            let mut g = r.lock().unwrap();
            g.end_test("t.py::test_edge").unwrap();
            g.start_test("t.py::test_next").unwrap();
            g.end_test("t.py::test_next").unwrap();
            g.close().unwrap();
            drop(g);
            sleep_ms(250);
        });
        let n = timeouts(&store, &id).len();
        match exit_status(status) {
            Some(0) => {
                assert_eq!(n, 0, "in time, yet recorded as a timeout");
                in_time += 1;
            }
            Some(TIMEOUT_EXIT_STATUS) => {
                assert_eq!(n, 1, "one timeout record");
                let view = store.view(&id).unwrap();
                assert_eq!(view.crashes.len(), 1);
                assert_eq!(view.crashes[0].nodeid.as_deref(), Some("t.py::test_edge"));
                fired += 1;
            }
            other => panic!("child ended with {other:?} ({status:#x})"),
        }
    }
    eprintln!("last instant: {in_time} in time, {fired} timed out");
    assert_eq!(in_time + fired, 16);
}

/// A test that ends past its limit while its thread holds the recorder (the watchdog
/// thread waits for it): the test's thread records the timeout itself, once, and the
/// process ends without waiting out the watchdog's patience.
#[test]
fn a_late_end_while_holding_the_recorder_is_one_timeout() {
    let sc = scenario("wd-held");
    let (store, id, run_dir) = (&sc.store, &sc.id, &sc.run_dir);
    let (status, lived) = in_child(|| {
        let r = recorder(run_dir, 0.1);
        let mut g = r.lock().unwrap();
        g.start_test("t.py::test_held").unwrap();
        sleep_ms(350);
        // The watchdog fired meanwhile: end_test waits for the end of the process.
        g.end_test("t.py::test_held").unwrap();
    });
    assert_eq!(
        exit_status(status),
        Some(TIMEOUT_EXIT_STATUS),
        "{status:#x}"
    );
    assert!(lived < Duration::from_millis(900), "lived {lived:?}");
    assert_eq!(timeouts(store, id).len(), 1);
    let view = store.view(id).unwrap();
    assert_eq!(view.crashes.len(), 1, "{:?}", view.crashes);
    assert_eq!(view.crashes[0].kind, "timeout");
    assert_eq!(view.crashes[0].nodeid.as_deref(), Some("t.py::test_held"));
}

/// A child forked in the middle of an armed test inherits neither the arming nor a
/// thread; its own first test starts its own watchdog.
#[test]
fn fork_in_an_armed_test() {
    let sc = scenario("wd-fork");
    let (store, id, run_dir) = (&sc.store, &sc.id, &sc.run_dir);
    let (status, _) = in_child(|| {
        let r = recorder(run_dir, 0.4);
        r.lock().unwrap().start_test("t.py::test_forks").unwrap();
        assert!(watchdog::armed() && watchdog::thread_running());
        let (grandchild, _) = in_child_then(
            || r.lock().unwrap().end_test("t.py::test_forks").unwrap(),
            || {
                assert!(!watchdog::armed(), "the child inherited an armed watchdog");
                assert!(
                    !watchdog::thread_running(),
                    "the child has a watchdog thread"
                );
                // Past the parent's deadline: nothing kills this process.
                sleep_ms(700);
                let mut g = r.lock().unwrap();
                g.set_timeouts(Some(0.2), HashMap::new());
                g.start_test("t.py::test_in_child").unwrap();
                drop(g);
                assert!(watchdog::thread_running());
                sleep_ms(10_000);
            },
        );
        // Fork happened; the parent's test ends in time while it waits for the child.
        assert!(!watchdog::armed(), "the parent's test was ended in time");
        r.lock().unwrap().close().unwrap();
        assert_eq!(
            exit_status(grandchild),
            Some(TIMEOUT_EXIT_STATUS),
            "{grandchild:#x}"
        );
    });
    assert_eq!(exit_status(status), Some(0), "{status:#x}");
    let view = store.view(id).unwrap();
    let mut hung: Vec<_> = view
        .crashes
        .iter()
        .map(|c| (c.nodeid.clone().unwrap_or_default(), c.detail.clone()))
        .collect();
    hung.sort();
    assert_eq!(
        hung,
        [(
            "t.py::test_in_child".to_owned(),
            "timed out after 0.2 s in setup (blackbox_timeout)".to_owned()
        )]
    );
}

/// A process already ending on its own (an exit recorded, a closed recorder, a fatal
/// signal) is not ended again as a timeout.
#[test]
fn a_dying_process_is_not_ended_as_a_timeout() {
    let sc = scenario("wd-dying");
    let (store, id, run_dir) = (&sc.store, &sc.id, &sc.run_dir);
    let (status, _) = in_child(|| {
        let r = recorder(run_dir, 0.1);
        let mut g = r.lock().unwrap();
        g.start_test("t.py::test_exits").unwrap();
        g.record(&Record::Exit {
            test: Some("t.py::test_exits".into()),
            code: 3,
            wall_ns: 0,
        })
        .unwrap();
        drop(g);
        // The exit path runs on (atexit handlers, say) past the limit.
        sleep_ms(400);
        // SAFETY: ends the child as os._exit(3) would.
        unsafe { libc::_exit(3) };
    });
    assert_eq!(exit_status(status), Some(3), "{status:#x}");
    assert!(timeouts(store, id).is_empty());
    let (status, _) = in_child(|| {
        let r = recorder(run_dir, 0.1);
        let mut g = r.lock().unwrap();
        g.start_test("t.py::test_interrupted").unwrap();
        // The session ends in the middle of the test (KeyboardInterrupt, pytest.exit).
        g.close().unwrap();
        drop(g);
        sleep_ms(400);
    });
    assert_eq!(exit_status(status), Some(0), "{status:#x}");
    assert!(timeouts(store, id).is_empty());
}

/// pytest-timeout's timer: a failed call past its limit (the `signal` method) and an exit
/// past it (the `thread` method) are recorded as timeouts with its limit.
#[test]
fn pytest_timeout_limits_are_recorded() {
    let sc = scenario("wd-pt");
    let (store, id, run_dir) = (&sc.store, &sc.id, &sc.run_dir);
    let (status, _) = in_child(|| {
        let r = Recorder::new(run_dir, Role::Main, None, Durability::Process).into_shared();
        let mut g = r.lock().unwrap();
        g.external_timer("t.py::test_signal", Some(0.05));
        g.start_test("t.py::test_signal").unwrap();
        g.record(&phase("t.py::test_signal", Phase::Setup)).unwrap();
        sleep_ms(60);
        g.record(&report("t.py::test_signal", Phase::Call, "failed"))
            .unwrap();
        g.external_timer("t.py::test_signal", None);
        g.end_test("t.py::test_signal").unwrap();
        // Failed before its limit: no timeout.
        g.external_timer("t.py::test_fails", Some(5.0));
        g.start_test("t.py::test_fails").unwrap();
        g.record(&report("t.py::test_fails", Phase::Setup, "failed"))
            .unwrap();
        g.end_test("t.py::test_fails").unwrap();
        g.external_timer("t.py::test_thread", Some(0.05));
        g.start_test("t.py::test_thread").unwrap();
        sleep_ms(60);
        g.record(&Record::Exit {
            test: Some("t.py::test_thread".into()),
            code: 1,
            wall_ns: 0,
        })
        .unwrap();
        // SAFETY: as pytest-timeout's os._exit(1).
        unsafe { libc::_exit(1) };
    });
    assert_eq!(exit_status(status), Some(1), "{status:#x}");
    let view = store.view(id).unwrap();
    let outcome = |n: &str| {
        let t = view.tests.iter().find(|t| t.nodeid == n).unwrap();
        (
            t.outcome.clone(),
            t.timeout.as_ref().map(|t| (t.fatal, t.source.clone())),
        )
    };
    let pt = Some("pytest-timeout".to_owned());
    assert_eq!(
        outcome("t.py::test_signal"),
        ("timeout".into(), pt.clone().map(|s| (false, s)))
    );
    assert_eq!(outcome("t.py::test_fails"), ("error".into(), None));
    assert_eq!(
        outcome("t.py::test_thread"),
        ("timeout".into(), pt.map(|s| (true, s)))
    );
    assert_eq!(view.crashes.len(), 1, "{:?}", view.crashes);
    assert_eq!(view.crashes[0].kind, "timeout");
    assert_eq!(
        view.crashes[0].detail,
        "timed out after 0.05 s in setup (pytest-timeout)"
    );
}

/// pytest-timeout's protocol-wide timer runs in pytest-forked's parent, where it ends the
/// parent, not the test: the forked child, which inherited the timer's limit, is ended by
/// its own watchdog just after that deadline (`FORKED_GRACE`), as pytest-timeout's
/// timeout, instead of running on, orphaned, to pass.
#[test]
fn pytest_timeout_in_the_forking_parent_ends_the_forked_child() {
    let sc = scenario("wd-pt-forked");
    let (store, id, run_dir) = (&sc.store, &sc.id, &sc.run_dir);
    let (status, _) = in_child(|| {
        let r = Recorder::new(run_dir, Role::Main, None, Durability::Process).into_shared();
        let mut g = r.lock().unwrap();
        g.start_test("t.py::test_before").unwrap();
        g.end_test("t.py::test_before").unwrap();
        g.external_timer("t.py::test_hangs", Some(0.3));
        drop(g);
        // Not armed here: pytest-timeout's own timer acts in this process.
        assert!(!watchdog::armed());
        let (child, lived) = in_child(|| {
            let mut g = r.lock().unwrap();
            g.start_test("t.py::test_hangs").unwrap();
            g.record(&phase("t.py::test_hangs", Phase::Setup)).unwrap();
            g.phase_done(Phase::Setup);
            drop(g);
            sleep_ms(10_000);
        });
        assert_eq!(exit_status(child), Some(TIMEOUT_EXIT_STATUS), "{child:#x}");
        let grace = watchdog::FORKED_GRACE;
        assert!(
            lived >= Duration::from_millis(300) + grace,
            "lived {lived:?}"
        );
        assert!(
            lived < Duration::from_millis(2300) + grace,
            "lived {lived:?}"
        );
        r.lock().unwrap().close().unwrap();
    });
    assert_eq!(exit_status(status), Some(0), "{status:#x}");
    let view = store.view(id).unwrap();
    assert_eq!(view.crashes.len(), 1, "{:?}", view.crashes);
    let c = &view.crashes[0];
    assert_eq!(
        (c.kind.as_str(), c.nodeid.as_deref(), c.detail.as_str()),
        (
            "timeout",
            Some("t.py::test_hangs"),
            "timed out after 0.3 s in call (pytest-timeout)"
        )
    );
    let t = c.timeout.as_ref().unwrap();
    assert!(t.fatal && t.source == "pytest-timeout", "{t:?}");
    let grace = watchdog::FORKED_GRACE.as_secs_f64();
    assert!(
        t.elapsed_s >= 0.3 + grace && t.elapsed_s < 1.0 + grace,
        "{t:?}"
    );
    assert_eq!(timeouts(store, id).len(), 1);
}
