//! Fork safety with real processes: a writer forks, parent and child keep writing through
//! the same `Recorder`, each into its own segment; the child never holds the parent's lock,
//! so the parent's segment reads as dead as soon as the parent dies, whatever the child does.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use blackbox_core::{
    install_crash_handler, Durability, Error, Record, Recorder, Role, SegmentReader, Snapshot,
    Store,
};
use support::{ack, check_data_record, child_role, data_record, spawn, TempDir};

const CHILD_TEST: &str = "child";
/// Records each side writes after the fork.
const AFTER_FORK: u64 = 3_000;
const BEFORE_FORK: u64 = 100;

fn pause_forever() -> ! {
    loop {
        // SAFETY: waits for a signal; the parent ends this process with SIGKILL.
        unsafe { libc::pause() };
    }
}

fn write_range(rec: &mut Recorder, w: u32, from: u64, to: u64, tag: &str) {
    for seq in from..to {
        rec.record(&data_record(w, seq, None)).unwrap();
        ack(&format!("{tag} {seq}"));
    }
}

fn block_usr1() {
    // SAFETY: signal-mask calls on structs we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &raw const set, std::ptr::null_mut());
    }
}

fn wait_usr1() {
    // SAFETY: as above; SIGUSR1 is blocked, so sigwaitinfo takes it when it comes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigaddset(&raw mut set, libc::SIGUSR1);
        while libc::sigwaitinfo(&raw const set, std::ptr::null_mut()) != libc::SIGUSR1 {}
    }
}

fn fork() -> i32 {
    // SAFETY: the child only uses this thread (the test harness's main thread waits on a
    // channel and holds no lock the child needs), and ends with _exit or SIGKILL.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    pid
}

/// Waits for child `pid` of this process (-1: any) and returns its wait status.
fn wait_child(pid: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waits for a child of this process, into a status we own.
    unsafe { libc::waitpid(pid, &raw mut status, 0) };
    status
}

fn exited_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

fn seg_name(rec: &Recorder) -> String {
    rec.segment_path()
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// Entry point of the child processes (the tests below start this binary again).
#[test]
#[ignore = "a child process of the tests in this file; it does nothing on its own"]
fn child() {
    let role = child_role().expect("run by the tests in this file, with BBX_CHILD set");
    support::no_core_dumps();
    let run_dir = PathBuf::from(std::env::var("BBX_RUN").unwrap());
    let mut rec = Recorder::new(
        &run_dir,
        Role::Worker,
        Some("gw0".into()),
        Durability::Process,
    );
    match role.as_str() {
        // Parent and child write at once after the fork.
        "both_write" => {
            write_range(&mut rec, 1, 0, BEFORE_FORK, "P");
            let parent_seg = seg_name(&rec);
            if fork() == 0 {
                // SAFETY: getpid always succeeds.
                let me = unsafe { libc::getpid() };
                assert_eq!(
                    rec.segment_path(),
                    None,
                    "the inherited segment is not the child's"
                );
                write_range(&mut rec, 2, 0, AFTER_FORK, "G");
                assert_ne!(seg_name(&rec), parent_seg);
                ack(&format!("G_DONE {me} {}", seg_name(&rec)));
                pause_forever();
            }
            write_range(&mut rec, 1, BEFORE_FORK, BEFORE_FORK + AFTER_FORK, "P");
            assert_eq!(seg_name(&rec), parent_seg);
            ack(&format!("P_DONE {} {parent_seg}", std::process::id()));
            pause_forever();
        }
        // The child waits (without writing) until the parent is dead, then writes.
        "child_waits" => {
            write_range(&mut rec, 1, 0, BEFORE_FORK, "P");
            let parent_seg = seg_name(&rec);
            block_usr1();
            if fork() == 0 {
                // SAFETY: getpid always succeeds.
                let me = unsafe { libc::getpid() };
                ack(&format!("G_FORKED {me}"));
                wait_usr1();
                write_range(&mut rec, 2, 0, 500, "G");
                ack(&format!("G_DONE {me} {}", seg_name(&rec)));
                pause_forever();
            }
            ack(&format!("P_DONE {} {parent_seg}", std::process::id()));
            pause_forever();
        }
        // A fork inside a transaction: the child may not commit the rest as a whole.
        "fork_in_txn" => {
            write_range(&mut rec, 1, 0, 10, "P");
            rec.begin().unwrap();
            rec.record(&data_record(1, 10, Some((0, 2)))).unwrap();
            if fork() == 0 {
                let r = rec.record(&data_record(1, 11, Some((1, 2))));
                assert!(matches!(r, Err(Error::Inherited { .. })), "{r:?}");
                let r = rec.commit();
                assert!(matches!(r, Err(Error::Inherited { .. })), "{r:?}");
                // The transaction is over; the child's next write opens its own segment.
                rec.record(&data_record(2, 0, None)).unwrap();
                ack(&format!("G_DONE {} {}", std::process::id(), seg_name(&rec)));
                // SAFETY: ends the forked child without running the harness's exit path.
                unsafe { libc::_exit(0) };
            }
            let status = wait_child(-1);
            assert!(exited_ok(status), "forked child failed: {status:#x}");
            rec.record(&data_record(1, 11, Some((1, 2)))).unwrap();
            rec.commit().unwrap();
            ack(&format!("P_DONE {} {}", std::process::id(), seg_name(&rec)));
            pause_forever();
        }
        // Crashes of forked children mark their own segment, never the parent's.
        "crash_in_child" => {
            install_crash_handler().unwrap();
            rec.start_test("t.py::parent_test").unwrap();
            for (i, write_first) in [false, true].into_iter().enumerate() {
                let pid = fork();
                if pid == 0 {
                    if write_first {
                        rec.start_test("t.py::child_test").unwrap();
                    }
                    // SAFETY: a deliberate fault on an address no mapping covers.
                    unsafe {
                        std::ptr::write_volatile(
                            std::ptr::with_exposed_provenance_mut::<u8>(0x10),
                            1,
                        );
                    };
                    unreachable!();
                }
                let status = wait_child(pid);
                assert!(libc::WIFSIGNALED(status), "child {i}: {status:#x}");
                ack(&format!("G_DIED {i} {pid} {}", libc::WTERMSIG(status)));
            }
            ack(&format!("P_DONE {} {}", std::process::id(), seg_name(&rec)));
            pause_forever();
        }
        other => panic!("unknown child role {other}"),
    }
}

struct Seg {
    pid: u32,
    ppid: u32,
    role: Role,
    worker: Option<String>,
    /// (writer, seq) of each data record, in order.
    data: Vec<(u32, u64)>,
}

fn read_seg(path: &Path) -> Seg {
    let r = SegmentReader::open(path).unwrap();
    let b = r.read_from(0);
    assert!(b.damage.is_none(), "{:?}", b.damage);
    let Some((
        _,
        Record::Process {
            pid,
            ppid,
            role,
            worker,
            ..
        },
    )) = b.records.first()
    else {
        panic!("{}: no process record", path.display())
    };
    let data = b.records[1..]
        .iter()
        .filter(|(_, r)| matches!(r, Record::PropertySet { .. }))
        .map(|(_, r)| {
            let (w, s, _) = check_data_record(r);
            (w, s)
        })
        .collect();
    Seg {
        pid: *pid,
        ppid: *ppid,
        role: *role,
        worker: worker.clone(),
        data,
    }
}

fn alive(path: &Path) -> bool {
    SegmentReader::open(path).unwrap().writer_alive()
}

/// Makes this process the reaper of orphans, so a forked grandchild whose parent was
/// killed can be waited for here.
fn become_subreaper() {
    // SAFETY: prctl with integer arguments.
    assert_eq!(
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
}

fn kill_and_reap_orphan(pid: i32) {
    // SAFETY: a process of this test; we are its reaper once its parent died.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    // SAFETY: as above.
    let r = unsafe { libc::waitpid(pid, &raw mut status, 0) };
    if r == pid {
        assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    } else {
        // Reaped elsewhere (no subreaper): wait for its exit through a pidfd.
        support::wait_exit(pid);
    }
}

fn field(line: &str, i: usize) -> &str {
    line.split(' ').nth(i).unwrap()
}

#[test]
fn parent_and_child_write_at_once_into_their_own_segments() {
    become_subreaper();
    let tmp = TempDir::new("fork-both");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "both_write",
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    let (mut p_done, mut g_done) = (None, None);
    let (mut p_acks, mut g_acks) = (0u64, 0u64);
    // Interleaved acknowledgements show both wrote at once.
    let mut switches = 0;
    let mut last = ' ';
    while p_done.is_none() || g_done.is_none() {
        let l = s
            .next_ack()
            .unwrap_or_else(|| panic!("writer ended early; log:\n{}", s.log_text()));
        let who = l.chars().next().unwrap();
        if l.starts_with("P_DONE") {
            p_done = Some(l);
        } else if l.starts_with("G_DONE") {
            g_done = Some(l);
        } else {
            if who == 'P' {
                p_acks += 1;
            } else {
                g_acks += 1;
            }
            if p_acks > BEFORE_FORK && who != last {
                switches += 1;
            }
            last = who;
        }
    }
    let (p_done, g_done) = (p_done.unwrap(), g_done.unwrap());
    assert_eq!((p_acks, g_acks), (BEFORE_FORK + AFTER_FORK, AFTER_FORK));
    let (ppid_, pseg) = (
        field(&p_done, 1).parse::<u32>().unwrap(),
        run_dir.join(field(&p_done, 2)),
    );
    let (gpid, gseg) = (
        field(&g_done, 1).parse::<i32>().unwrap(),
        run_dir.join(field(&g_done, 2)),
    );
    eprintln!("{switches} switches between parent and child acknowledgements");

    let snap = Snapshot::read(&run, &run_dir).unwrap();
    assert_eq!(snap.segments.len(), 2, "one segment each");
    let p = read_seg(&pseg);
    let g = read_seg(&gseg);
    assert_eq!(
        (p.pid, p.role, p.worker.as_deref()),
        (ppid_, Role::Worker, Some("gw0"))
    );
    assert_eq!(
        (g.pid, g.ppid, g.role, g.worker.as_deref()),
        (gpid as u32, ppid_, Role::Forked, Some("gw0"))
    );
    assert_eq!(
        p.data,
        (0..BEFORE_FORK + AFTER_FORK)
            .map(|s| (1, s))
            .collect::<Vec<_>>()
    );
    assert_eq!(g.data, (0..AFTER_FORK).map(|s| (2, s)).collect::<Vec<_>>());
    assert!(alive(&pseg) && alive(&gseg));

    // The parent dies, the child lives: the parent's segment is dead at once.
    s.kill_and_reap();
    assert!(
        !alive(&pseg),
        "the forked child holds its parent's segment lock"
    );
    assert!(alive(&gseg));
    kill_and_reap_orphan(gpid);
    assert!(!alive(&gseg));
    for st in Snapshot::read(&run, &run_dir).unwrap().segments {
        assert!(!st.alive && st.damage.is_none());
    }
    // Both segments still read back whole.
    assert_eq!(read_seg(&pseg).data.len() as u64, BEFORE_FORK + AFTER_FORK);
    assert_eq!(read_seg(&gseg).data.len() as u64, AFTER_FORK);
}

#[test]
fn a_child_that_has_not_written_does_not_hold_the_parent_lock() {
    become_subreaper();
    let tmp = TempDir::new("fork-wait");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "child_waits",
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    // The two come in either order.
    let (mut forked, mut p_done) = (None, None);
    while forked.is_none() || p_done.is_none() {
        let l = s
            .next_ack()
            .unwrap_or_else(|| panic!("writer ended early; log:\n{}", s.log_text()));
        if l.starts_with("G_FORKED") {
            forked = Some(l);
        } else if l.starts_with("P_DONE") {
            p_done = Some(l);
        }
    }
    let (forked, p_done) = (forked.unwrap(), p_done.unwrap());
    let gpid: i32 = field(&forked, 1).parse().unwrap();
    let pseg = run_dir.join(field(&p_done, 2));
    assert!(alive(&pseg));
    assert_eq!(
        Snapshot::read(&run, &run_dir).unwrap().segments.len(),
        1,
        "the child has no segment yet"
    );

    s.kill_and_reap();
    assert!(
        !alive(&pseg),
        "a forked child that never wrote holds its parent's segment lock"
    );

    // Now the orphan writes: its own segment, the parent's untouched.
    // SAFETY: a process of this test.
    unsafe { libc::kill(gpid, libc::SIGUSR1) };
    let g_done = s.expect_ack("G_DONE");
    let gseg = run_dir.join(field(&g_done, 2));
    let g = read_seg(&gseg);
    assert_eq!((g.pid, g.role), (gpid as u32, Role::Forked));
    assert_eq!(g.data, (0..500).map(|s| (2, s)).collect::<Vec<_>>());
    assert_eq!(
        read_seg(&pseg).data,
        (0..BEFORE_FORK).map(|s| (1, s)).collect::<Vec<_>>()
    );
    assert!(alive(&gseg) && !alive(&pseg));
    kill_and_reap_orphan(gpid);
    assert!(!alive(&gseg));
}

#[test]
fn a_fork_inside_a_transaction_cannot_commit_half_of_it() {
    let tmp = TempDir::new("fork-txn");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "fork_in_txn",
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    let g_done = s.expect_ack("G_DONE");
    let p_done = s.expect_ack("P_DONE");
    let g = read_seg(&run_dir.join(field(&g_done, 2)));
    let p = read_seg(&run_dir.join(field(&p_done, 2)));
    // The child's segment has only what it wrote after the transaction ended.
    assert_eq!(g.data, vec![(2, 0)]);
    // The parent's transaction committed whole, once.
    assert_eq!(p.data, (0..12).map(|s| (1, s)).collect::<Vec<_>>());
    s.kill_and_reap();
}

#[test]
fn a_crashing_forked_child_marks_its_own_segment_only() {
    let tmp = TempDir::new("fork-crash");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "crash_in_child",
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    let d0 = s.expect_ack("G_DIED 0");
    let d1 = s.expect_ack("G_DIED 1");
    let p_done = s.expect_ack("P_DONE");
    for d in [&d0, &d1] {
        assert_eq!(field(d, 3).parse::<i32>().unwrap(), libc::SIGSEGV, "{d}");
    }
    let pseg = run_dir.join(field(&p_done, 2));
    let snap = Snapshot::read(&run, &run_dir).unwrap();
    // The parent's segment and the one of the child that wrote before crashing.
    assert_eq!(snap.segments.len(), 2);
    for st in &snap.segments {
        if st.path == pseg {
            assert_eq!(
                st.crash, None,
                "a child's crash marked its parent's segment"
            );
            assert!(st.alive);
            assert_eq!(st.current_test.as_deref(), Some("t.py::parent_test"));
        } else {
            let m = st.crash.as_ref().expect("the crashed child's mark");
            assert_eq!(m.signal, libc::SIGSEGV);
            assert_eq!(m.test.as_deref(), Some("t.py::child_test"));
            assert_eq!(st.pid, field(&d1, 2).parse::<u32>().unwrap());
            assert!(!st.alive);
        }
    }
    let st = s.kill_and_reap();
    assert_eq!(st.signal(), Some(libc::SIGKILL));
}

/// `process_id()` keeps the pid it read, and a forked child reads its own (the atfork
/// handler forgets the parent's), also two forks down.
#[test]
fn process_id_is_each_process_own_after_forks() {
    let parent = std::process::id();
    assert_eq!(blackbox_core::process_id(), parent);
    assert_eq!(blackbox_core::process_id(), parent); // kept
    let pid = fork();
    if pid == 0 {
        let mut code = 1;
        let me = std::process::id();
        if blackbox_core::process_id() == me && me != parent {
            let grandchild = fork();
            if grandchild == 0 {
                let ok =
                    blackbox_core::process_id() == std::process::id() && std::process::id() != me;
                // SAFETY: ends the grandchild at once.
                unsafe { libc::_exit(i32::from(!ok)) };
            }
            code = if exited_ok(wait_child(grandchild)) {
                0
            } else {
                2
            };
        }
        // SAFETY: ends the child at once, without the test harness's exit path.
        unsafe { libc::_exit(code) };
    }
    let status = wait_child(pid);
    assert!(exited_ok(status), "child status {status:#x}");
    assert_eq!(blackbox_core::process_id(), parent);
}
