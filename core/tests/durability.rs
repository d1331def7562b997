//! Durability levels. `Durability::System` syncs the new frames, then the header, before a
//! commit returns: the kernel's page cache (cachestat(2)) shows no dirty or in-flight page
//! of the segment after each commit. `Durability::Process` leaves that to the kernel, so
//! its pages are still dirty (the contrast shows the measurement means something). Both
//! read back the same.

mod support;

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use blackbox_core::{Durability, Record, Recorder, Role, SegmentReader, Snapshot, Store};
use support::{check_data_record, data_record, TempDir};

/// `struct cachestat` of the kernel, field for field.
#[repr(C)]
#[derive(Default, Debug)]
#[allow(clippy::struct_field_names)]
struct CacheStat {
    nr_cache: u64,
    nr_dirty: u64,
    nr_writeback: u64,
    nr_evicted: u64,
    nr_recently_evicted: u64,
}

#[repr(C)]
struct CacheStatRange {
    off: u64,
    len: u64,
}

const SYS_CACHESTAT: libc::c_long = 451;

/// Page-cache state of the whole file, or why it cannot be had here.
fn cachestat(path: &Path) -> Result<CacheStat, String> {
    let f = File::open(path).unwrap();
    let range = CacheStatRange { off: 0, len: 0 };
    let mut cs = CacheStat::default();
    // SAFETY: cachestat(2) reads the range and fills the struct we own.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            f.as_raw_fd(),
            &raw const range,
            &raw mut cs,
            0,
        )
    };
    if rc == 0 {
        Ok(cs)
    } else {
        Err(format!(
            "cachestat(2) is not available: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn on_tmpfs(path: &Path) -> bool {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: statfs fills the struct we own.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::statfs(c.as_ptr(), &raw mut s) == 0 && s.f_type == libc::TMPFS_MAGIC }
}

/// Writes singles and transactions at `durability`; returns, per commit, the dirty and
/// in-flight pages of the segment right after it (when cachestat works), and checks that
/// everything reads back.
fn write_and_read(durability: Durability) -> Result<Vec<u64>, String> {
    let tmp = TempDir::new("durability");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    if on_tmpfs(&run_dir) {
        return Err("the temp dir is a tmpfs: its pages are never written back".into());
    }
    let mut rec = Recorder::new(&run_dir, Role::Main, None, durability);
    let mut unsynced = Vec::new();
    let mut probe = Ok(());
    let mut seq = 0u64;
    for round in 0..12 {
        if round % 3 == 2 {
            rec.begin().unwrap();
            for i in 0..4 {
                rec.record(&data_record(1, seq, Some((i, 4)))).unwrap();
                seq += 1;
            }
            rec.commit().unwrap();
        } else {
            rec.record(&data_record(1, seq, None)).unwrap();
            seq += 1;
        }
        match cachestat(rec.segment_path().unwrap()) {
            Ok(cs) => unsynced.push(cs.nr_dirty + cs.nr_writeback),
            Err(e) => probe = Err(e),
        }
    }
    rec.close().unwrap();
    let seg = rec.segment_path().unwrap().to_owned();
    let r = SegmentReader::open(&seg).unwrap();
    assert_eq!(r.info().durability, durability);
    assert!(r.info().closed_cleanly);
    let header = std::fs::read(&seg).unwrap();
    assert_eq!(
        u32::from_le_bytes(header[40..44].try_into().unwrap()),
        u32::from(durability == Durability::System)
    );
    drop(rec);
    let snap = Snapshot::read(&run, &run_dir).unwrap();
    assert!(snap.segments[0].damage.is_none() && snap.segments[0].closed_cleanly);
    let data: Vec<u64> = snap.records[0]
        .iter()
        .filter(|r| matches!(r, Record::PropertySet { .. }))
        .map(|r| check_data_record(r).1)
        .collect();
    assert_eq!(data, (0..seq).collect::<Vec<_>>());
    probe.map(|()| unsynced)
}

#[test]
fn system_durability_leaves_no_dirty_page_after_a_commit() {
    match write_and_read(Durability::System) {
        Ok(unsynced) => assert!(unsynced.iter().all(|&n| n == 0), "dirty or in-flight pages after System commits: {unsynced:?}"),
        Err(why) => eprintln!("SKIPPED the page-cache check of system_durability_leaves_no_dirty_page_after_a_commit: {why}"),
    }
}

#[test]
fn process_durability_leaves_the_writeback_to_the_kernel() {
    match write_and_read(Durability::Process) {
        // The kernel writes dirty pages back after about 30 s (or under memory pressure):
        // right after a commit, they are still dirty.
        Ok(unsynced) => assert!(unsynced.iter().any(|&n| n > 0), "no dirty page after Process commits: {unsynced:?}"),
        Err(why) => eprintln!("SKIPPED the page-cache check of process_durability_leaves_the_writeback_to_the_kernel: {why}"),
    }
}
