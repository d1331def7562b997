//! Crash safety with real processes: writers commit records and acknowledge each commit
//! over a pipe, and are `SIGKILLed` at random moments. Afterwards every acknowledged record
//! reads back intact, no half-written record or transaction is ever visible (to a reader
//! following live, nor after the deaths), and every dead writer reads as dead.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use blackbox_core::{Durability, Follower, Record, Recorder, Role, SegmentReader, Snapshot, Store};
use support::{
    ack, check_data_record, child_role, data_record, spawn, wait_for_parent, Rng, Spawned, TempDir,
};

const CHILD_TEST: &str = "child";

/// Entry point of the child processes (the tests below start this binary again).
#[test]
#[ignore = "a child process of the tests in this file; it does nothing on its own"]
fn child() {
    let role = child_role().expect("run by the tests in this file, with BBX_CHILD set");
    support::no_core_dumps();
    let var = |k: &str| std::env::var(k).unwrap_or_else(|_| panic!("{k} is not set"));
    let run_dir = PathBuf::from(var("BBX_RUN"));
    let id: u32 = var("BBX_WRITER").parse().unwrap();
    match role.as_str() {
        "writer" => {
            let limit: u64 = var("BBX_LIMIT").parse().unwrap();
            let mut rng = Rng::new(var("BBX_WSEED").parse().unwrap());
            let mut rec = Recorder::new(
                &run_dir,
                Role::Other,
                Some(format!("w{id}")),
                Durability::Process,
            );
            let mut seq = 0u64;
            while seq < limit {
                if rng.below(6) == 0 {
                    let k = 2 + rng.below(5) as u32;
                    rec.begin().unwrap();
                    for i in 0..k {
                        rec.record(&data_record(id, seq + u64::from(i), Some((i, k))))
                            .unwrap();
                    }
                    rec.commit().unwrap();
                    ack(&format!("T {seq} {k}"));
                    seq += u64::from(k);
                } else {
                    rec.record(&data_record(id, seq, None)).unwrap();
                    ack(&format!("R {seq}"));
                    seq += 1;
                }
            }
            ack("END");
            wait_for_parent();
        }
        "txn_open" => {
            // Five committed transactions, then one left open (large enough that the
            // segment grows inside it) while the parent looks and kills.
            let mut rec = Recorder::new(
                &run_dir,
                Role::Other,
                Some(format!("w{id}")),
                Durability::Process,
            );
            let mut seq = 0u64;
            for _ in 0..5 {
                rec.begin().unwrap();
                for i in 0..3 {
                    rec.record(&data_record(id, seq + i, Some((i as u32, 3))))
                        .unwrap();
                }
                rec.commit().unwrap();
                ack(&format!("T {seq} 3"));
                seq += 3;
            }
            rec.begin().unwrap();
            let k = 40u32;
            let mut bytes = 0;
            for i in 0..k {
                let r = data_record(id, seq + u64::from(i), Some((i, k)));
                if let Record::PropertySet {
                    value: blackbox_core::Value::Bytes(b),
                    ..
                } = &r
                {
                    bytes += b.len();
                }
                rec.record(&r).unwrap();
            }
            ack(&format!("OPEN {seq} {k} {bytes}"));
            wait_for_parent();
            // Never reached in the test: the parent kills this process first.
            rec.commit().unwrap();
            ack("COMMITTED");
            wait_for_parent();
        }
        other => panic!("unknown child role {other}"),
    }
}

fn env(run_dir: &Path, id: u32, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut v = vec![
        ("BBX_RUN", run_dir.display().to_string()),
        ("BBX_WRITER", id.to_string()),
    ];
    v.extend(extra.iter().cloned());
    v
}

/// What one segment holds, checked record by record: (writer, pid, number of data records).
fn check_segment(path: &Path, records: &[Record]) -> (u32, u32, u64) {
    let (pid, worker) = match records.first() {
        Some(Record::Process {
            pid, worker, role, ..
        }) => {
            assert_eq!(*role, Role::Other);
            (*pid, worker.clone().expect("worker id"))
        }
        other => panic!(
            "{}: first record is not the process record: {other:?}",
            path.display()
        ),
    };
    let w: u32 = worker.strip_prefix('w').unwrap().parse().unwrap();
    let mut next = 0u64;
    let mut open_txn: Option<(u64, u32)> = None;
    for rec in &records[1..] {
        let (rw, seq, txn) = check_data_record(rec);
        assert_eq!(rw, w, "{}: a record of another writer", path.display());
        assert_eq!(seq, next, "{}: records are not contiguous", path.display());
        match txn {
            Some((i, k)) => {
                if i == 0 {
                    assert!(open_txn.is_none());
                    open_txn = Some((seq, k));
                }
                let (first, kk) = open_txn.expect("transaction part without its start");
                assert_eq!((seq - first, kk), (u64::from(i), k));
                if i + 1 == k {
                    open_txn = None;
                }
            }
            None => assert!(
                open_txn.is_none(),
                "{}: a record inside an unfinished transaction",
                path.display()
            ),
        }
        next += 1;
    }
    assert!(
        open_txn.is_none(),
        "{}: part of a transaction is visible: {open_txn:?}",
        path.display()
    );
    (w, pid, next)
}

/// Follows the run while the writers run: every record it sees must be whole, in order,
/// and no segment may ever read as damaged. Returns the number of polls.
fn follow_live(run_dir: &Path, stop: &AtomicBool) -> u64 {
    let mut f = Follower::new("live", run_dir);
    let mut expect: HashMap<usize, u64> = HashMap::new();
    let mut polls = 0;
    loop {
        let last = stop.load(Ordering::Acquire);
        for (seg, recs) in f.poll() {
            for (_, rec) in recs {
                if let Record::Process { .. } = rec {
                    assert!(!expect.contains_key(&seg), "a second process record");
                    expect.insert(seg, 0);
                    continue;
                }
                let (_, seq, _) = check_data_record(&rec);
                let e = expect
                    .get_mut(&seg)
                    .expect("data before the process record");
                assert_eq!(seq, *e, "live reader: records out of order");
                *e += 1;
            }
        }
        for s in f.statuses() {
            assert!(s.damage.is_none(), "live reader saw damage: {:?}", s.damage);
        }
        polls += 1;
        if last {
            return polls;
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

enum Kill {
    AfterAcks(u64),
    AfterMicros(u64),
}

struct Outcome {
    id: u32,
    pid: u32,
    /// Records acknowledged: every seq below this must be visible.
    acked: u64,
}

fn run_writer(mut s: Spawned, id: u32, plan: &Kill) -> Outcome {
    let pid = s.pid() as u32;
    let mut acked = 0u64;
    let take = |line: &str, acked: &mut u64| {
        let mut p = line.split(' ');
        match p.next() {
            Some("R") => *acked = p.next().unwrap().parse::<u64>().unwrap() + 1,
            Some("T") => {
                let seq: u64 = p.next().unwrap().parse().unwrap();
                let k: u64 = p.next().unwrap().parse().unwrap();
                *acked = seq + k;
            }
            Some("END") => {}
            _ => panic!("unexpected acknowledgement {line:?}"),
        }
    };
    std::thread::scope(|scope| {
        match *plan {
            Kill::AfterAcks(n) => {
                while acked < n {
                    match s.next_ack() {
                        Some(l) if l == "END" => break,
                        Some(l) => take(&l, &mut acked),
                        None => panic!(
                            "writer {id} ended before it was killed; log:\n{}",
                            s.log_text()
                        ),
                    }
                }
                s.kill();
            }
            Kill::AfterMicros(us) => {
                let pid = s.pid();
                scope.spawn(move || {
                    std::thread::sleep(Duration::from_micros(us));
                    // SAFETY: our child; it is reaped only after this thread ends.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                });
            }
        }
        // Everything in the pipe was acknowledged before the kill landed.
        while let Some(l) = s.next_ack() {
            take(&l, &mut acked);
        }
    });
    let st = s.wait();
    assert_eq!(
        st.signal(),
        Some(libc::SIGKILL),
        "writer {id}: {}; log:\n{}",
        support::describe(st),
        s.log_text()
    );
    Outcome { id, pid, acked }
}

#[test]
fn sigkilled_writers_lose_nothing_they_acknowledged() {
    let started = Instant::now();
    let mut rng = Rng::seeded("sigkilled_writers_lose_nothing_they_acknowledged");
    let tmp = TempDir::new("crash");
    let store = Store::create(tmp.path().join("store")).unwrap();
    // 100 rounds take about 10 s in release on 2 cores; a debug build generates and checks
    // records several times slower, so it runs a quarter of them. BBX_ROUNDS overrides.
    let default_rounds = if cfg!(debug_assertions) { 25 } else { 100 };
    let rounds = std::env::var("BBX_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_rounds);
    let writers_per_round = 3u32;
    let (mut kills, mut records, mut acked_total, mut leftovers, mut polls, mut empty) =
        (0, 0u64, 0u64, 0, 0u64, 0);
    let mut empty_segments = 0;
    for round in 0..rounds {
        let run = store.new_run().unwrap();
        let run_dir = store.run_path(&run).unwrap();
        let plans: Vec<Kill> = (0..writers_per_round)
            .map(|_| match rng.below(4) {
                0 => Kill::AfterMicros(rng.below(15_000)),
                1 => Kill::AfterAcks(rng.below(20)),
                _ => Kill::AfterAcks(rng.below(1_500)),
            })
            .collect();
        let stop = AtomicBool::new(false);
        let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
            let live = scope.spawn(|| follow_live(&run_dir, &stop));
            let handles: Vec<_> = plans
                .iter()
                .enumerate()
                .map(|(i, plan)| {
                    let id = round * writers_per_round + i as u32;
                    let e = env(
                        &run_dir,
                        id,
                        &[
                            ("BBX_LIMIT", "100000".into()),
                            ("BBX_WSEED", rng.next().to_string()),
                        ],
                    );
                    let log = tmp.path().join(format!("w{id}.log"));
                    let s = spawn(CHILD_TEST, "writer", &e, &log);
                    scope.spawn(move || run_writer(s, id, plan))
                })
                .collect();
            let out = handles.into_iter().map(|h| h.join().unwrap()).collect();
            stop.store(true, Ordering::Release);
            polls += live.join().unwrap();
            out
        });
        kills += outcomes.len();

        // After the deaths: a fresh reader of the whole run.
        let snap = Snapshot::read(&run, &run_dir).unwrap();
        let mut by_writer: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
        for (i, st) in snap.segments.iter().enumerate() {
            assert!(st.damage.is_none(), "round {round}: {:?}", st.damage);
            assert!(
                !st.alive,
                "round {round}: {} reads as alive after its writer was killed",
                st.path.display()
            );
            assert!(!st.closed_cleanly);
            assert!(!SegmentReader::open(&st.path).unwrap().writer_alive());
            if snap.records[i].is_empty() {
                // Killed between publishing its segment and committing its first record.
                let o = outcomes
                    .iter()
                    .find(|o| o.pid == st.pid)
                    .expect("an empty segment of an unknown pid");
                assert_eq!(
                    o.acked, 0,
                    "round {round}: writer {} acknowledged records, its segment is empty",
                    o.id
                );
                by_writer.insert(o.id, (o.pid, 0));
                empty_segments += 1;
                continue;
            }
            let (w, pid, n) = check_segment(&st.path, &snap.records[i]);
            assert_eq!(st.pid, pid);
            assert!(
                by_writer.insert(w, (pid, n)).is_none(),
                "round {round}: writer {w} has two segments"
            );
            records += n;
        }
        for o in &outcomes {
            acked_total += o.acked;
            if let Some(&(pid, n)) = by_writer.get(&o.id) {
                assert_eq!(pid, o.pid);
                assert!(
                    n >= o.acked,
                    "round {round}: writer {} acknowledged {} records, {n} are visible",
                    o.id,
                    o.acked
                );
            } else {
                assert_eq!(
                    o.acked, 0,
                    "round {round}: writer {} acknowledged records but has no segment",
                    o.id
                );
                empty += 1;
            }
        }
        // Nothing but segments, and the temporary file of a writer killed while creating one.
        for e in std::fs::read_dir(&run_dir).unwrap() {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name.starts_with(".new-seg-") {
                leftovers += 1;
            } else {
                assert!(
                    blackbox_core::is_segment_name(name.as_ref()),
                    "stray file {name}"
                );
            }
        }
        // Keep the disk use of the test small.
        std::fs::remove_dir_all(&run_dir).unwrap();
    }
    eprintln!(
        "{rounds} rounds, {kills} writers killed ({empty} had no segment yet, {leftovers} of them killed while creating it; \
         {empty_segments} between creating it and their first commit), \
         {acked_total} records acknowledged, {records} read back, {polls} live polls, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(records >= acked_total && acked_total > 0);
}

#[test]
fn a_transaction_open_at_death_is_invisible() {
    let tmp = TempDir::new("txn");
    let store = Store::create(tmp.path().join("store")).unwrap();
    let run = store.new_run().unwrap();
    let run_dir = store.run_path(&run).unwrap();
    let mut s = spawn(
        CHILD_TEST,
        "txn_open",
        &env(&run_dir, 7, &[]),
        &tmp.path().join("child.log"),
    );
    let open = s.expect_ack("OPEN ");
    let seq: u64 = open.split(' ').nth(1).unwrap().parse().unwrap();
    let bytes: u64 = open.split(' ').nth(3).unwrap().parse().unwrap();
    assert_eq!(seq, 15);
    assert!(
        bytes > 64 << 10,
        "the open transaction should make the segment grow ({bytes} bytes)"
    );

    let pid = s.pid() as u32;
    let check = |alive: bool| {
        let snap = Snapshot::read(&run, &run_dir).unwrap();
        assert_eq!(snap.segments.len(), 1);
        let st = &snap.segments[0];
        assert!(st.damage.is_none(), "{:?}", st.damage);
        assert_eq!(st.alive, alive);
        let (w, p, n) = check_segment(&st.path, &snap.records[0]);
        assert_eq!((w, p), (7, pid));
        // The five committed transactions, none of the open one.
        assert_eq!(n, 15);
    };
    check(true);
    s.kill_and_reap();
    check(false);
    assert!(s.rest_of_acks().is_empty());
}
