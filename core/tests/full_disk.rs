//! A full disk: a store on a 1 MiB tmpfs, and a writer under a file-size limit
//! (`RLIMIT_FSIZE`, `SIGXFSZ` ignored). The write that does not fit fails with
//! `Error::StoreFull`, never SIGBUS, and everything committed before reads back intact.
//! A limit lowered below the space a segment already reserved raises no SIGXFSZ.

mod support;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use blackbox_core::{Durability, Error, Recorder, Role, Snapshot, Store};
use support::{ack, check_data_record, child_role, data_record, describe, spawn, TempDir};

const CHILD_TEST: &str = "child";

/// Entry point of the child processes (the tests below start this binary again).
#[test]
#[ignore = "a child process of the tests in this file; it does nothing on its own"]
fn child() {
    let role = child_role().expect("run by the tests in this file, with BBX_CHILD set");
    support::no_core_dumps();
    if role == "lowered" {
        return lowered_limit_child();
    }
    assert_eq!(role, "fill");
    if let Ok(limit) = std::env::var("BBX_FSIZE") {
        let limit: u64 = limit.parse().unwrap();
        let lim = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: plain calls on values we own.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &raw const lim), 0);
        }
    }
    let run_dir = PathBuf::from(std::env::var("BBX_RUN").unwrap());
    let mut rec = Recorder::new(&run_dir, Role::Main, None, Durability::Process);
    let mut seq = 0u64;
    let err = loop {
        match rec.record(&data_record(1, seq, None)) {
            Ok(()) => {
                ack(&format!("R {seq}"));
                seq += 1;
                assert!(seq < 1_000_000, "the store never filled up");
            }
            Err(e) => break e,
        }
    };
    let kind = if matches!(err, Error::StoreFull { .. }) {
        "StoreFull"
    } else {
        "other"
    };
    ack(&format!(
        "ERR {kind} {}",
        err.to_string().replace('\n', " ")
    ));
    // Later writes fail the same clean way (or fit, when smaller); the segment stays whole.
    for extra in 0..3 {
        match rec.record(&data_record(1, seq, None)) {
            Ok(()) => {
                ack(&format!("R {seq}"));
                seq += 1;
            }
            Err(Error::StoreFull { .. }) => ack(&format!("AGAIN {extra} StoreFull")),
            Err(e) => panic!("a later write failed otherwise: {e}"),
        }
    }
    ack("DONE");
}

/// A writer whose process lowers its file size limit far below the space its segment has
/// already reserved, with SIGXFSZ left at its default action (death): the records that fit
/// in the reserved space are still written, and nothing raises SIGXFSZ.
fn lowered_limit_child() {
    let run_dir = PathBuf::from(std::env::var("BBX_RUN").unwrap());
    let mut rec = Recorder::new(&run_dir, Role::Main, None, Durability::Process);
    let framed = |r: &blackbox_core::Record| (8 + r.encoded_len()).next_multiple_of(8) as u64;
    let mut seq = 0u64;
    // Until the segment has grown to 4 MiB: its tail is then just past 2 MiB.
    loop {
        let r = data_record(1, seq, None);
        rec.record(&r).unwrap();
        ack(&format!("R {seq}"));
        seq += 1;
        let seg = rec.segment_path().unwrap();
        if std::fs::metadata(seg).unwrap().len() >= 4 << 20 {
            break;
        }
    }
    let lim = libc::rlimit {
        rlim_cur: 4096,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a plain call on a value we own.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_FSIZE, &raw const lim) },
        0
    );
    // 1.5 MiB more stays inside the reserved 4 MiB: no growth, so no system call may fail.
    let mut bytes = 0;
    while bytes < 3 << 19 {
        let r = data_record(1, seq, None);
        rec.record(&r).unwrap();
        ack(&format!("R {seq}"));
        bytes += framed(&r);
        seq += 1;
    }
    ack("DONE");
}

#[test]
fn a_limit_lowered_below_the_reserved_space_kills_nothing() {
    let tmp = TempDir::new("full-lowered");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "lowered",
        &[("BBX_RUN", run_dir.display().to_string())],
        &tmp.path().join("c.log"),
    );
    let acks = s.rest_of_acks();
    let st = s.wait();
    assert!(
        st.success() && acks.last().map(String::as_str) == Some("DONE"),
        "the writer died: {}; log:\n{}",
        describe(st),
        s.log_text()
    );
    let acked = acks.len() as u64 - 1;
    let snap = Snapshot::read(&run, &run_dir).unwrap();
    assert!(
        snap.segments[0].damage.is_none(),
        "{:?}",
        snap.segments[0].damage
    );
    let data: Vec<u64> = snap.records[0][1..]
        .iter()
        .map(|r| check_data_record(r).1)
        .collect();
    assert_eq!(data, (0..acked).collect::<Vec<_>>());
}

/// Runs the filling child against `run_dir`; returns the number of acknowledged records.
fn fill(tmp: &Path, store: &Store, run: &str, env: &[(&str, String)]) -> u64 {
    let run_dir = store.run_path(run).unwrap();
    let mut e = vec![("BBX_RUN", run_dir.display().to_string())];
    e.extend(env.iter().cloned());
    let mut s = spawn(CHILD_TEST, "fill", &e, &tmp.join("c.log"));
    let mut acked = 0u64;
    let mut error = None;
    let mut done = false;
    for l in s.rest_of_acks() {
        if let Some(n) = l.strip_prefix("R ") {
            acked = n.parse::<u64>().unwrap() + 1;
        } else if let Some(msg) = l.strip_prefix("ERR ") {
            error = Some(msg.to_owned());
        } else if l == "DONE" {
            done = true;
        }
    }
    let st = s.wait();
    // No SIGBUS, no SIGXFSZ: the child ran to its end.
    assert!(
        st.success() && done,
        "the writer died: {}; log:\n{}",
        describe(st),
        s.log_text()
    );
    let error = error.expect("the store never reported it was full");
    eprintln!("after {acked} records: {error}");
    assert!(error.starts_with("StoreFull no room to grow "), "{error}");
    assert!(
        error.contains("seg-") && error.contains("what was committed before is kept"),
        "{error}"
    );

    let snap = Snapshot::read(run, &run_dir).unwrap();
    assert_eq!(snap.segments.len(), 1);
    assert!(
        snap.segments[0].damage.is_none(),
        "{:?}",
        snap.segments[0].damage
    );
    assert!(!snap.segments[0].alive);
    let data: Vec<u64> = snap.records[0][1..]
        .iter()
        .map(|r| check_data_record(r).1)
        .collect();
    assert_eq!(
        data,
        (0..acked).collect::<Vec<_>>(),
        "every acknowledged record, in order, intact"
    );
    acked
}

/// A tmpfs mounted for the test, detached on drop.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Result<Mount, std::io::Error> {
        std::fs::create_dir_all(at)?;
        let target = CString::new(at.as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size},mode=0700")).unwrap();
        // SAFETY: NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        if rc == 0 {
            Ok(Mount(at.to_owned()))
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let target = CString::new(self.0.as_os_str().as_bytes()).unwrap();
        // SAFETY: unmounts what we mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn a_full_tmpfs_gives_store_full_and_keeps_what_was_committed() {
    let tmp = TempDir::new("full-tmpfs");
    let mnt = tmp.path().join("mnt");
    let _mount = match Mount::tmpfs(&mnt, "1m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED a_full_tmpfs_gives_store_full_and_keeps_what_was_committed: cannot mount a tmpfs here ({e}); the RLIMIT_FSIZE test covers a full store");
            return;
        }
    };
    let store = Store::create(mnt.join("store")).unwrap();
    let run = store.new_run().unwrap();
    let acked = fill(tmp.path(), &store, &run, &[]);
    // The store filled most of the 1 MiB before refusing.
    let used: u64 = std::fs::read_dir(store.run_path(&run).unwrap())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!("{acked} records in a segment of {used} bytes on a 1 MiB tmpfs");
    assert!(
        used > 768 << 10,
        "the segment stopped growing at {used} bytes"
    );
}

#[test]
fn a_file_size_limit_gives_store_full_and_keeps_what_was_committed() {
    let tmp = TempDir::new("full-fsize");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let limit = 700u64 << 10;
    fill(
        tmp.path(),
        &store,
        &run,
        &[("BBX_FSIZE", limit.to_string())],
    );
    let seg = std::fs::read_dir(store.run_path(&run).unwrap())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let len = std::fs::metadata(&seg).unwrap().len();
    assert!(
        len <= limit && len > limit - (64 << 10),
        "segment of {len} bytes under a {limit}-byte limit"
    );
}

#[test]
fn a_store_made_on_a_full_disk_writes_its_gitignore_once_there_is_room() {
    let tmp = TempDir::new("full-gitignore");
    let mnt = tmp.path().join("mnt");
    let _mount = match Mount::tmpfs(&mnt, "2m") {
        Ok(m) => m,
        Err(e) => {
            eprintln!("SKIPPED a_store_made_on_a_full_disk_writes_its_gitignore_once_there_is_room: cannot mount a tmpfs here ({e})");
            return;
        }
    };
    let filler = mnt.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        for size in [65536, 4096, 1] {
            let chunk = vec![0u8; size];
            while f.write_all(&chunk).is_ok() {}
        }
    }
    let root = mnt.join("store");
    let err = Store::create(&root).expect_err("a full disk has no room for .gitignore");
    assert!(err.to_string().contains("No space left"), "{err}");
    assert!(
        !root.join(".gitignore").exists(),
        "an empty .gitignore is left behind, never to be written"
    );
    std::fs::remove_file(&filler).unwrap();
    Store::create(&root).unwrap();
    let ignore = std::fs::read_to_string(root.join(".gitignore")).unwrap();
    assert_eq!(ignore.lines().last(), Some("*"), "{ignore:?}");
}
