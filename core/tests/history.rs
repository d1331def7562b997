//! `history.redb`: folding runs written with the real writer API, reading them back, batching,
//! pruning, idempotence, two processes folding at once, crashes mid-fold, damaged files.

#![allow(clippy::many_single_char_names)] // a, b, c name runs and tests as in the prose.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use blackbox_core::{fold_run, FoldOptions, FoldStats, History};
use blackbox_core::{Durability, Error, Phase, Record, Recorder, Role, Store, Value};
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};

const CHILD_ENV: &str = "BBX_HISTORY_CHILD";

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("bbx-history-{name}-{}-{nanos}", std::process::id()));
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn phase(nodeid: &str, phase: Phase, outcome: &str, duration_s: f64) -> Record {
    Record::TestPhase {
        nodeid: nodeid.into(),
        phase,
        outcome: outcome.into(),
        duration_s,
        mono_ns: blackbox_core::now_mono_ns(),
        report: None,
    }
}

fn nodeid(i: usize) -> String {
    format!("tests/test_big.py::test_{i:05}")
}

/// The outcome test `i` of a generated run gets.
fn outcome_of(i: usize) -> &'static str {
    match i % 10 {
        3 => "failed",
        7 => "skipped",
        _ => "passed",
    }
}

/// Writes a run of `n` generated tests (plus fixtures, a property per test, a crash
/// record when `crash` is set) into run folder `id`, as a pytest process would.
fn write_run(store: &Store, id: &str, n: usize, crash: bool) {
    let mut rec = Recorder::new(
        store.run_path(id).unwrap(),
        Role::Main,
        None,
        Durability::Process,
    );
    rec.record(&Record::RunStart {
        argv: vec!["pytest".into(), "-q".into(), "tests".into()],
        rootdir: "/src/project".into(),
        host: "ci-runner-7".into(),
        pid: 4242,
        wall_ns: 1_800_000_000_000_000_000,
    })
    .unwrap();
    for i in 0..n {
        let id = nodeid(i);
        rec.begin().unwrap();
        rec.start_test(&id).unwrap();
        rec.record(&Record::Fixture {
            name: "tmp_path".into(),
            scope: "function".into(),
            setup: true,
            test: Some(id.clone()),
            duration_s: 0.25,
            mono_ns: blackbox_core::now_mono_ns(),
        })
        .unwrap();
        rec.record(&phase(&id, Phase::Setup, "passed", 0.5))
            .unwrap();
        rec.record(&Record::PropertySet {
            test: Some(id.clone()),
            key: "i".into(),
            value: Value::Int(i as i64),
            mono_ns: blackbox_core::now_mono_ns(),
        })
        .unwrap();
        rec.record(&phase(&id, Phase::Call, outcome_of(i), 1.0 + i as f64))
            .unwrap();
        rec.record(&phase(&id, Phase::Teardown, "passed", 0.125))
            .unwrap();
        rec.end_test(&id).unwrap();
        rec.commit().unwrap();
    }
    if crash && n > 0 {
        rec.record(&Record::Crash {
            test: Some(nodeid(0)),
            pid: 999,
            worker: Some("gw1".into()),
            signal: 11,
            exit_code: None,
            phase: Some("call".into()),
            detail: "killed by SIGSEGV".into(),
            wall_ns: 1_800_000_000_500_000_000,
        })
        .unwrap();
    }
    rec.record(&Record::RunEnd {
        exit_status: 1,
        wall_ns: 1_800_000_001_000_000_000,
    })
    .unwrap();
    rec.close().unwrap();
}

fn quiet() -> FoldOptions {
    FoldOptions {
        wait: Duration::from_secs(30),
        ..FoldOptions::default()
    }
}

fn history_error(e: &Error) -> &str {
    match e {
        Error::History(m) => m,
        other => panic!("expected Error::History, got {other:?}"),
    }
}

/// Rows per table, read with redb directly (to see leftovers the API would not show).
fn raw_counts(path: &Path) -> [u64; 4] {
    let db = redb::ReadOnlyDatabase::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let runs: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
    let tests: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tests");
    let fixtures: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("fixtures");
    let crashes: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("crashes");
    [
        txn.open_table(runs).map_or(0, |t| t.len().unwrap()),
        txn.open_table(tests).map_or(0, |t| t.len().unwrap()),
        txn.open_table(fixtures).map_or(0, |t| t.len().unwrap()),
        txn.open_table(crashes).map_or(0, |t| t.len().unwrap()),
    ]
}

#[test]
fn fold_reads_back_exact_values() {
    let dir = TempDir::new("exact");
    let store = Store::create(&dir.0).unwrap();
    let id = store.new_run().unwrap();
    let mut rec = Recorder::new(
        store.run_path(&id).unwrap(),
        Role::Main,
        None,
        Durability::Process,
    );
    rec.record(&Record::RunStart {
        argv: vec!["pytest".into(), "-x".into()],
        rootdir: "/src/p".into(),
        host: "box".into(),
        pid: 77,
        wall_ns: 1_000_000_000,
    })
    .unwrap();
    let (a, b, c) = ("t.py::test_a", "t.py::test_b", "t.py::test_c");
    rec.start_test(a).unwrap();
    rec.record(&phase(a, Phase::Setup, "passed", 0.5)).unwrap();
    rec.record(&Record::PropertySet {
        test: Some(a.into()),
        key: "model".into(),
        value: Value::Str("resnet50".into()),
        mono_ns: blackbox_core::now_mono_ns(),
    })
    .unwrap();
    rec.record(&Record::PropertyAppend {
        test: Some(a.into()),
        key: "pcc".into(),
        value: Value::Float(0.25),
        mono_ns: blackbox_core::now_mono_ns(),
    })
    .unwrap();
    rec.record(&phase(a, Phase::Call, "passed", 1.5)).unwrap();
    rec.record(&phase(a, Phase::Teardown, "passed", 0.25))
        .unwrap();
    rec.end_test(a).unwrap();
    rec.start_test(b).unwrap();
    rec.record(&phase(b, Phase::Setup, "passed", 0.0)).unwrap();
    rec.record(&phase(b, Phase::Call, "failed", 2.0)).unwrap();
    rec.end_test(b).unwrap();
    rec.start_test(c).unwrap();
    rec.record(&phase(c, Phase::Setup, "passed", 0.0)).unwrap();
    for (d, setup) in [(0.5, true), (1.5, true), (0.75, false)] {
        rec.record(&Record::Fixture {
            name: "db".into(),
            scope: "session".into(),
            setup,
            test: Some(a.into()),
            duration_s: d,
            mono_ns: blackbox_core::now_mono_ns(),
        })
        .unwrap();
    }
    rec.record(&Record::Timed {
        name: "load_model".into(),
        test: Some(a.into()),
        duration_s: 3.0,
        mono_ns: blackbox_core::now_mono_ns(),
    })
    .unwrap();
    rec.record(&Record::Crash {
        test: Some(c.into()),
        pid: 4321,
        worker: Some("gw3".into()),
        signal: 6,
        exit_code: None,
        phase: Some("call".into()),
        detail: "killed by SIGABRT".into(),
        wall_ns: 2_000_000_000,
    })
    .unwrap();
    rec.record(&Record::Attachment {
        test: Some(c.into()),
        kind: "faulthandler".into(),
        path: "faulthandler-4321.txt".into(),
    })
    .unwrap();
    rec.record(&Record::RunEnd {
        exit_status: 3,
        wall_ns: 5_000_000_000,
    })
    .unwrap();
    rec.close().unwrap();
    drop(rec);

    let stats = fold_run(&store, &id, &quiet()).unwrap();
    assert_eq!((stats.tests, stats.fixtures, stats.crashes), (3, 2, 1));
    assert!(stats.kept && !stats.replaced && stats.pruned.is_empty());
    assert_eq!(stats.rows_written, 3 + 2 + 1 + 1);
    assert_eq!(stats.commits, 1);
    assert_eq!(stats.open_attempts, 1);

    let h = History::of_store(&store).unwrap();
    let runs = h.runs().unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    assert_eq!(r.id, id);
    assert_eq!(r.started_wall_ns, Some(1_000_000_000));
    assert_eq!(r.ended_wall_ns, Some(5_000_000_000));
    assert_eq!(r.exit_status, Some(3));
    assert_eq!(r.host.as_deref(), Some("box"));
    assert_eq!(r.pid, Some(77));
    assert_eq!(r.argv, vec!["pytest", "-x"]);
    assert_eq!(r.rootdir.as_deref(), Some("/src/p"));
    assert_eq!(
        (
            r.counts.tests,
            r.counts.passed,
            r.counts.failed,
            r.counts.crashed
        ),
        (3, 1, 1, 1)
    );
    assert_eq!(
        (r.counts.skipped, r.counts.errors, r.counts.other),
        (0, 0, 0)
    );
    assert_eq!((r.fixtures, r.crashes, r.segments), (2, 1, 1));
    assert!(r.problems.is_empty());
    assert_eq!(h.run(&id).unwrap().as_ref(), Some(r));
    assert_eq!(r.to_json()["failed"], 1);

    let tests = h.tests(&id).unwrap();
    let names: Vec<&str> = tests.iter().map(|t| t.nodeid.as_str()).collect();
    assert_eq!(names, vec![a, b, c], "start order");
    let ta = &tests[0];
    assert_eq!(ta.outcome, "passed");
    assert!((ta.duration_s - 2.25).abs() < 1e-12);
    assert_eq!(ta.pid, Some(std::process::id()));
    assert!(!ta.crashed && ta.signal.is_none() && ta.worker.is_none());
    assert_eq!(
        ta.phases,
        vec![
            ("setup".to_owned(), "passed".to_owned(), 0.5),
            ("call".to_owned(), "passed".to_owned(), 1.5),
            ("teardown".to_owned(), "passed".to_owned(), 0.25)
        ]
    );
    assert_eq!(
        ta.properties,
        serde_json::json!({"model": "resnet50", "pcc": [0.25]})
    );
    assert_eq!(tests[1].outcome, "failed");
    assert!((tests[1].duration_s - 2.0).abs() < 1e-12);
    let tc = &tests[2];
    assert_eq!(
        (tc.outcome.as_str(), tc.crashed, tc.signal, tc.pid),
        ("crashed", true, Some(6), Some(4321))
    );
    assert_eq!(tc.worker.as_deref(), Some("gw3"));
    assert_eq!(tc.to_json()["signal_name"], "SIGABRT");

    let fixtures = h.fixtures(&id).unwrap();
    assert_eq!(fixtures.len(), 2);
    assert_eq!(
        (fixtures[0].name.as_str(), fixtures[0].scope.as_str()),
        ("load_model", "timed")
    );
    assert_eq!((fixtures[0].setups, fixtures[0].total_s), (1, 3.0));
    let db = &fixtures[1];
    assert_eq!(
        (db.name.as_str(), db.scope.as_str(), db.setups, db.teardowns),
        ("db", "session", 2, 1)
    );
    assert_eq!(
        (db.total_s, db.mean_s, db.max_s, db.teardown_total_s),
        (2.0, 1.0, 1.5, 0.75)
    );

    let crashes = h.crashes(&id).unwrap();
    assert_eq!(crashes.len(), 1);
    let cr = &crashes[0];
    assert_eq!(cr.nodeid.as_deref(), Some(c));
    assert_eq!(
        (cr.pid, cr.signal, cr.exit_code),
        (Some(4321), Some(6), None)
    );
    assert_eq!(
        (cr.worker.as_deref(), cr.phase.as_deref()),
        (Some("gw3"), Some("call"))
    );
    assert_eq!(cr.detail, "killed by SIGABRT");
    assert_eq!(cr.attachments, vec!["faulthandler-4321.txt"]);

    // The history holds exactly what the run's own view says.
    let view = store.snapshot(&id).unwrap().view();
    for (t, v) in tests.iter().zip(&view.tests) {
        assert_eq!(
            (&t.nodeid, &t.outcome, t.duration_s, t.pid, &t.worker),
            (&v.nodeid, &v.outcome, v.duration_s, v.pid, &v.worker)
        );
    }
    // Less the time of death and the devices, which history does not keep.
    let kept: Vec<_> = view
        .crashes
        .iter()
        .cloned()
        .map(|mut c| {
            c.wall_ns = None;
            c.devices.clear();
            c
        })
        .collect();
    assert_eq!(kept, crashes);

    // The run as a whole, as the next session's start reads it: the view's meta, crashes
    // and counts, and no tests.
    let (summary, test_count) = h.run_summary(&id).unwrap().unwrap();
    assert_eq!(test_count, 3);
    assert_eq!(summary.run.id, view.run.id);
    assert_eq!(summary.run.exit_status, view.run.exit_status);
    assert_eq!(summary.run.argv, view.run.argv);
    assert_eq!(summary.run.host, view.run.host);
    assert!(!summary.run.live);
    assert_eq!(summary.crashes, crashes);
    assert_eq!(
        (summary.segments, summary.records),
        (view.segments, view.records)
    );
    assert!(summary.tests.is_empty());
    assert!(h.run_summary("20200101-000000-000000").unwrap().is_none());

    let trend = h.test_history(b, 10).unwrap();
    assert_eq!(trend.points.len(), 1);
    assert_eq!(trend.points[0].outcome.as_deref(), Some("failed"));
    assert_eq!(trend.points[0].duration_s, Some(2.0));

    let err = h.tests("20200101-000000-000000").unwrap_err();
    assert!(history_error(&err).contains("no run"), "{err}");
}

#[test]
fn folding_twice_replaces_the_run() {
    let dir = TempDir::new("twice");
    let store = Store::create(&dir.0).unwrap();
    let id = store.new_run().unwrap();
    write_run(&store, &id, 50, true);
    let opts = FoldOptions {
        batch: 7,
        ..quiet()
    };
    let first = fold_run(&store, &id, &opts).unwrap();
    let h = History::of_store(&store).unwrap();
    let (runs1, tests1, fix1, crash1) = (
        h.runs().unwrap(),
        h.tests(&id).unwrap(),
        h.fixtures(&id).unwrap(),
        h.crashes(&id).unwrap(),
    );
    let raw1 = raw_counts(h.path());

    let second = fold_run(&store, &id, &opts).unwrap();
    assert!(!first.replaced && second.replaced);
    assert_eq!(
        second.rows_deleted, first.rows_written,
        "every old row replaced"
    );
    assert_eq!(second.rows_written, first.rows_written);
    let runs2 = h.runs().unwrap();
    assert_eq!(runs2.len(), 1);
    let mut r2 = runs2[0].clone();
    r2.folded_wall_ns = runs1[0].folded_wall_ns;
    assert_eq!(r2, runs1[0]);
    assert_eq!(h.tests(&id).unwrap(), tests1);
    assert_eq!(h.fixtures(&id).unwrap(), fix1);
    assert_eq!(h.crashes(&id).unwrap(), crash1);
    assert_eq!(raw_counts(h.path()), raw1);
    assert_eq!(raw1, [1, 50, 1, 1]);

    // The run grows (a late record) and is folded again: no stale row survives.
    let mut rec = Recorder::new(
        store.run_path(&id).unwrap(),
        Role::Other,
        None,
        Durability::Process,
    );
    rec.start_test("late.py::test_late").unwrap();
    rec.record(&phase("late.py::test_late", Phase::Call, "passed", 0.5))
        .unwrap();
    rec.end_test("late.py::test_late").unwrap();
    rec.close().unwrap();
    drop(rec);
    fold_run(&store, &id, &opts).unwrap();
    assert_eq!(h.tests(&id).unwrap().len(), 51);
    assert_eq!(h.runs().unwrap()[0].counts.tests, 51);
    assert_eq!(raw_counts(h.path()), [1, 51, 1, 1]);
}

#[test]
fn prune_keeps_the_newest_runs() {
    let dir = TempDir::new("prune");
    let store = Store::create(&dir.0).unwrap();
    // Run ids sort in start order: `old` is older than the five others.
    let old = store.new_run().unwrap();
    let ids: Vec<String> = (1..=5).map(|_| store.new_run().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]) && old < ids[0]);
    for (i, id) in ids.iter().enumerate() {
        write_run(&store, id, 10 + i, i % 2 == 0);
    }
    let opts = FoldOptions {
        keep: 3,
        batch: 4,
        ..quiet()
    };
    let mut pruned = Vec::new();
    for id in &ids {
        let s = fold_run(&store, id, &opts).unwrap();
        assert!(s.kept);
        pruned.extend(s.pruned);
    }
    assert_eq!(pruned, vec![ids[0].clone(), ids[1].clone()]);
    let h = History::of_store(&store).unwrap();
    let listed: Vec<String> = h.runs().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(
        listed,
        vec![ids[4].clone(), ids[3].clone(), ids[2].clone()],
        "newest first"
    );
    assert_eq!(
        raw_counts(h.path()),
        [3, (12 + 13 + 14) as u64, 3, 2],
        "no row of a pruned run is left"
    );
    assert!(history_error(&h.tests(&ids[0]).unwrap_err()).contains("pruned"));

    // An old run folded into a full history is pruned at once, and leaves nothing behind.
    write_run(&store, &old, 3, false);
    let s = fold_run(&store, &old, &opts).unwrap();
    assert!(!s.kept);
    assert_eq!(s.pruned, vec![old.clone()]);
    assert_eq!(raw_counts(h.path()), [3, 39, 3, 2]);

    // Trend over the kept runs: test 0 crashed where a crash was recorded (runs 3 and 5).
    let trend = h.test_history(&nodeid(0), 10).unwrap();
    let outcomes: Vec<Option<&str>> = trend.points.iter().map(|p| p.outcome.as_deref()).collect();
    assert_eq!(
        outcomes,
        vec![Some("crashed"), Some("passed"), Some("crashed")]
    );
    assert!(trend.is_flaky());
    assert_eq!((trend.passes(), trend.failures(), trend.flips()), (1, 2, 2));
    // Test 12 ran only in the runs with 13 and 14 tests.
    let t12 = h.test_history(&nodeid(12), 2).unwrap();
    let o12: Vec<Option<&str>> = t12.points.iter().map(|p| p.outcome.as_deref()).collect();
    assert_eq!(o12, vec![Some("passed"), Some("passed")]);
    let t13 = h.test_history(&nodeid(13), 3).unwrap();
    assert_eq!(
        t13.points
            .iter()
            .map(|p| p.outcome.as_deref())
            .collect::<Vec<_>>(),
        vec![Some("failed"), None, None]
    );
    assert_eq!(t13.ran(), 1);
    assert!(!t13.is_flaky());

    // Only test 0 passed in one kept run and failed in another.
    let flaky = h.flaky(10).unwrap();
    assert_eq!(flaky, vec![trend.clone()]);
    assert!(h.flaky(1).unwrap().is_empty());

    // Keeping fewer prunes more on the next fold, from every table.
    fold_run(
        &store,
        &ids[4],
        &FoldOptions {
            keep: 1,
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(raw_counts(h.path()), [1, 14, 1, 1]);
}

#[test]
fn a_big_run_folds_in_batches() {
    const N: usize = 20_000;
    let dir = TempDir::new("big");
    let store = Store::create(&dir.0).unwrap();
    let id = store.new_run().unwrap();
    let t = Instant::now();
    write_run(&store, &id, N, true);
    let wrote = t.elapsed();
    let opts = FoldOptions {
        batch: 5_000,
        ..quiet()
    };
    let stats = fold_run(&store, &id, &opts).unwrap();
    // 20,000 tests + 1 fixture + 1 crash + the run row, 5,000 row operations per commit.
    let ops = N as u64 + 1 + 1 + 1;
    assert_eq!(stats.rows_written, ops);
    assert_eq!(u64::from(stats.commits), ops.div_ceil(5_000));
    assert_eq!(stats.commits, 5);
    let t2 = Instant::now();
    let again = fold_run(&store, &id, &opts).unwrap();
    let refold = t2.elapsed();
    assert_eq!(again.rows_deleted, ops);
    assert_eq!(u64::from(again.commits), (2 * ops).div_ceil(5_000));
    let t4 = Instant::now();
    let view = store.snapshot(&id).unwrap().view();
    let viewed = t4.elapsed();
    let third = blackbox_core::fold_view(&store.history_path(), &view, &opts).unwrap();
    assert_eq!(
        (third.commits, third.rows_deleted, third.rows_written),
        (again.commits, ops, ops)
    );
    let h = History::of_store(&store).unwrap();
    let t3 = Instant::now();
    let tests = h.tests(&id).unwrap();
    let read = t3.elapsed();
    assert_eq!(tests.len(), N);
    for i in [0, 3, 7, 12_345, N - 1] {
        let t = &tests[i];
        assert_eq!(t.nodeid, nodeid(i));
        let expect = if i == 0 { "crashed" } else { outcome_of(i) };
        assert_eq!(t.outcome, expect);
        assert_eq!(t.properties, serde_json::json!({ "i": i }));
    }
    let r = &h.runs().unwrap()[0];
    assert_eq!(
        (
            r.counts.tests,
            r.counts.failed,
            r.counts.skipped,
            r.counts.crashed
        ),
        (N as u64, 2_000, 2_000, 1)
    );
    assert_eq!(raw_counts(h.path()), [1, N as u64, 1, 1]);
    eprintln!(
        "20k-test run: written in {wrote:?}; fold {:?} ({} commits); re-fold {refold:?} ({} commits); \
         of which reading the run {viewed:?} and the database work {:?}; read back {read:?}; history.redb {} KiB",
        stats.elapsed,
        stats.commits,
        again.commits,
        third.elapsed,
        std::fs::metadata(h.path()).unwrap().len() / 1024
    );
}

#[test]
fn a_busy_history_waits_then_fails_clearly() {
    let dir = TempDir::new("busy");
    let store = Store::create(&dir.0).unwrap();
    let id = store.new_run().unwrap();
    write_run(&store, &id, 3, false);
    fold_run(&store, &id, &quiet()).unwrap();
    let holder = redb::Database::create(store.history_path()).unwrap();
    let t = Instant::now();
    let err = fold_run(
        &store,
        &id,
        &FoldOptions {
            wait: Duration::from_millis(300),
            ..quiet()
        },
    )
    .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(300));
    let msg = history_error(&err);
    assert!(
        msg.contains("stayed open in another process") && msg.contains("fold it again"),
        "{msg}"
    );
    drop(holder);
    let h = History::of_store(&store)
        .unwrap()
        .with_wait(Duration::from_millis(100));
    assert_eq!(h.runs().unwrap().len(), 1);
    let holder = redb::Database::create(store.history_path()).unwrap();
    assert!(history_error(&h.runs().unwrap_err()).contains("stayed open"));
    drop(holder);
    let s = fold_run(&store, &id, &quiet()).unwrap();
    assert!(s.replaced && s.open_attempts == 1);
}

#[test]
fn a_damaged_history_is_a_clear_error() {
    let dir = TempDir::new("damaged");
    let store = Store::create(&dir.0).unwrap();
    let id = store.new_run().unwrap();
    write_run(&store, &id, 200, true);
    let path = store.history_path();

    // Not a database at all.
    std::fs::write(
        &path,
        b"this is not a redb file, it is a text file that happens to be here".repeat(200),
    )
    .unwrap();
    let err = fold_run(&store, &id, &quiet()).unwrap_err();
    assert!(
        history_error(&err).contains(&path.display().to_string()),
        "{err}"
    );
    let err = History::open(&path).unwrap_err();
    assert!(history_error(&err).contains("move it aside"), "{err}");

    // A real history with its pages overwritten.
    std::fs::remove_file(&path).unwrap();
    fold_run(&store, &id, &quiet()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    for b in &mut bytes[4096..len] {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).unwrap();
    let read = History::open(&path).and_then(|h| h.tests(&id));
    assert!(read.is_err(), "garbage pages must not read back as tests");
    let err = read.unwrap_err();
    assert!(history_error(&err).contains("damaged"), "{err}");
    let err = fold_run(&store, &id, &quiet()).unwrap_err();
    assert!(history_error(&err).contains("damaged"), "{err}");

    // Cut short.
    std::fs::remove_file(&path).unwrap();
    fold_run(&store, &id, &quiet()).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len as u64 / 3).unwrap();
    drop(f);
    let res = History::open(&path).and_then(|h| h.tests(&id));
    assert!(res.is_err());
    let err = fold_run(&store, &id, &quiet()).unwrap_err();
    assert!(matches!(err, Error::History(_)), "{err}");

    // A planted symlink is neither followed nor replaced; a directory is refused.
    std::fs::remove_file(&path).unwrap();
    let victim = dir.0.join("victim.txt");
    std::fs::write(&victim, b"keep me").unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    let err = fold_run(&store, &id, &quiet()).unwrap_err();
    assert!(history_error(&err).contains("symlink"), "{err}");
    assert!(history_error(&History::open(&path).unwrap_err()).contains("symlink"));
    assert_eq!(std::fs::read(&victim).unwrap(), b"keep me");
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_symlink());
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = fold_run(&store, &id, &quiet()).unwrap_err();
    assert!(history_error(&err).contains("not a plain file"), "{err}");
    std::fs::remove_dir(&path).unwrap();
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let err = fold_run(&store, &id, &quiet()).unwrap_err();
    assert!(history_error(&err).contains("not a plain file"), "{err}");
    assert!(history_error(&History::open(&path).unwrap_err()).contains("not a plain file"));
    std::fs::remove_file(&path).unwrap();

    // A new history is private to its owner.
    fold_run(&store, &id, &quiet()).unwrap();
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    // Missing.
    std::fs::remove_file(&path).unwrap();
    let err = History::open(&path).unwrap_err();
    assert!(history_error(&err).contains("no history"), "{err}");
}

#[test]
fn a_newer_layout_is_refused() {
    let dir = TempDir::new("layout");
    let store = Store::create(&dir.0).unwrap();
    let id = store.new_run().unwrap();
    write_run(&store, &id, 2, false);
    fold_run(&store, &id, &quiet()).unwrap();
    let db = redb::Database::create(store.history_path()).unwrap();
    let txn = db.begin_write().unwrap();
    txn.open_table(TableDefinition::<&str, u64>::new("meta"))
        .unwrap()
        .insert("layout_version", 99)
        .unwrap();
    txn.commit().unwrap();
    drop(db);
    let err = fold_run(&store, &id, &quiet()).unwrap_err();
    assert!(history_error(&err).contains("layout version 99"), "{err}");
    let err = History::of_store(&store).unwrap_err();
    assert!(history_error(&err).contains("layout version 99"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Child processes: this test binary run again with `--exact child_process` and CHILD_ENV.

fn spawn_child(
    mode: &str,
    store: &Store,
    run: &str,
) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, mode)
        .env("BBX_HISTORY_STORE", store.root())
        .env("BBX_HISTORY_RUN", run)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdin, stdout)
}

/// Reads the child's stdout up to the line holding `@@{tag}`; returns it from there.
fn expect_line(out: &mut BufReader<ChildStdout>, tag: &str) -> String {
    let want = format!("@@{tag}");
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "child ended before {want}"
        );
        // The harness may have written `test child_process ... ` on the same line.
        if let Some(at) = line.find(&want) {
            return line[at..].trim_end().to_owned();
        }
    }
}

fn say(tag: &str) {
    println!("@@{tag}");
    std::io::stdout().flush().unwrap();
}

fn busy_once(attempts: u32) {
    if attempts == 1 {
        say("BUSY");
    }
}

fn abort_on_second_commit(stats: &FoldStats) {
    if stats.commits == 2 {
        std::process::abort();
    }
}

/// The child side; a no-op when run as a normal test.
#[test]
fn child_process() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = Store::open(std::env::var("BBX_HISTORY_STORE").unwrap()).unwrap();
    let run = std::env::var("BBX_HISTORY_RUN").unwrap();
    say("READY");
    let mut go = String::new();
    std::io::stdin().read_line(&mut go).unwrap();
    match mode.as_str() {
        "fold" => {
            let s = fold_run(
                &store,
                &run,
                &FoldOptions {
                    batch: 1_000,
                    on_busy: Some(busy_once),
                    ..quiet()
                },
            )
            .unwrap();
            say(&format!(
                "STATS {} {} {}",
                s.open_attempts,
                s.commits,
                s.waited.as_millis()
            ));
        }
        "abort-mid-fold" => {
            fold_run(
                &store,
                &run,
                &FoldOptions {
                    batch: 10,
                    on_commit: Some(abort_on_second_commit),
                    ..quiet()
                },
            )
            .unwrap();
            unreachable!("aborted on the second commit");
        }
        "fold-missing" => {
            let opts = FoldOptions {
                batch: 25,
                ..quiet()
            };
            blackbox_core::fold_missing(&store, None, &opts).unwrap();
            say("DONE");
        }
        "abort-after-fold" => {
            fold_run(&store, &run, &quiet()).unwrap();
            std::process::abort();
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn two_processes_folding_at_once_both_get_in() {
    let dir = TempDir::new("two");
    let store = Store::create(&dir.0).unwrap();
    let a = store.new_run().unwrap();
    let b = store.new_run().unwrap();
    write_run(&store, &a, 5_000, false);
    write_run(&store, &b, 5_000, true);
    let (mut ca, mut ia, mut oa) = spawn_child("fold", &store, &a);
    let (mut cb, mut ib, mut ob) = spawn_child("fold", &store, &b);
    expect_line(&mut oa, "READY");
    expect_line(&mut ob, "READY");
    // Hold the file (as a third session would) until both children have been turned away
    // at least once, then let them race each other for it.
    let holder = redb::Database::create(store.history_path()).unwrap();
    ia.write_all(b"go\n").unwrap();
    ib.write_all(b"go\n").unwrap();
    expect_line(&mut oa, "BUSY");
    expect_line(&mut ob, "BUSY");
    drop(holder);
    let sa = expect_line(&mut oa, "STATS");
    let sb = expect_line(&mut ob, "STATS");
    assert!(ca.wait().unwrap().success());
    assert!(cb.wait().unwrap().success());
    eprintln!("child a: {sa}; child b: {sb} (attempts, commits, waited ms)");
    for s in [&sa, &sb] {
        let attempts: u32 = s.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(attempts >= 2, "{s}");
    }
    let h = History::of_store(&store).unwrap();
    let ids: Vec<String> = h.runs().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![b.clone(), a.clone()]);
    assert_eq!(h.tests(&a).unwrap().len(), 5_000);
    assert_eq!(h.tests(&b).unwrap().len(), 5_000);
    assert_eq!(h.crashes(&b).unwrap().len(), 1);
    assert_eq!(raw_counts(h.path()), [2, 10_000, 2, 1]);
}

#[test]
fn a_crash_mid_fold_leaves_the_history_as_it_was() {
    let dir = TempDir::new("crash");
    let store = Store::create(&dir.0).unwrap();
    let a = store.new_run().unwrap();
    let b = store.new_run().unwrap();
    write_run(&store, &a, 20, false);
    write_run(&store, &b, 100, true);
    fold_run(&store, &a, &quiet()).unwrap();

    let (mut child, mut stdin, mut out) = spawn_child("abort-mid-fold", &store, &b);
    expect_line(&mut out, "READY");
    stdin.write_all(b"go\n").unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child must have died mid-fold");

    // Two non-durable commits of b were made, then the process died: they are gone.
    let h = History::of_store(&store).unwrap();
    let ids: Vec<String> = h.runs().unwrap().into_iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![a.clone()]);
    assert_eq!(h.tests(&a).unwrap().len(), 20);
    assert_eq!(raw_counts(h.path()), [1, 20, 1, 0]);
    let s = fold_run(&store, &b, &quiet()).unwrap();
    assert!(!s.replaced);
    assert_eq!(h.runs().unwrap().len(), 2);

    // A fold that returned survives the process dying right after.
    let c = store.new_run().unwrap();
    write_run(&store, &c, 30, false);
    let (mut child, mut stdin, mut out) = spawn_child("abort-after-fold", &store, &c);
    expect_line(&mut out, "READY");
    stdin.write_all(b"go\n").unwrap();
    assert!(!child.wait().unwrap().success());
    assert_eq!(h.tests(&c).unwrap().len(), 30);
    assert_eq!(raw_counts(h.path()), [3, 150, 3, 1]);
}

#[test]
fn a_fold_killed_at_any_point_is_folded_by_the_next_session() {
    const ROUNDS: usize = 50;
    let dir = TempDir::new("kill");
    let store = Store::create(&dir.0).unwrap();
    let first = store.new_run().unwrap();
    write_run(&store, &first, 40, false);
    fold_run(&store, &first, &quiet()).unwrap();
    // How long a child's fold of one run takes, to spread the kills over it.
    let probe = store.new_run().unwrap();
    write_run(&store, &probe, 400, true);
    let (mut child, mut stdin, mut out) = spawn_child("fold-missing", &store, &probe);
    expect_line(&mut out, "READY");
    let t = Instant::now();
    stdin.write_all(b"go\n").unwrap();
    expect_line(&mut out, "DONE");
    let fold_time = t.elapsed();
    assert!(child.wait().unwrap().success());
    let mut seed = u64::from(std::process::id()) ^ 0x9e37_79b9_7f4a_7c15;
    let (mut killed_before_done, mut done_before_kill) = (0, 0);
    let mut ids = vec![first.clone(), probe.clone()];
    for round in 0..ROUNDS {
        let id = store.new_run().unwrap();
        write_run(&store, &id, 400, round % 3 == 0);
        ids.push(id.clone());
        let (mut child, mut stdin, mut out) = spawn_child("fold-missing", &store, &id);
        expect_line(&mut out, "READY");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = fold_time.mul_f64((seed % 1000) as f64 / 800.0);
        stdin.write_all(b"go\n").unwrap();
        std::thread::sleep(delay);
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().unwrap();
        if status.success() {
            done_before_kill += 1;
        } else {
            killed_before_done += 1;
        }
        // The next session: folds what history misses, exactly once.
        let folded = blackbox_core::fold_missing(&store, None, &quiet()).unwrap();
        assert!(folded.len() <= 1, "round {round}: {folded:?}");
        assert!(blackbox_core::fold_missing(&store, None, &quiet())
            .unwrap()
            .is_empty());
        let h = History::of_store(&store).unwrap();
        let mut listed: Vec<String> = h.runs().unwrap().into_iter().map(|r| r.id).collect();
        listed.sort();
        assert_eq!(listed, ids, "round {round}: every run in history once");
        assert_eq!(h.tests(&id).unwrap().len(), 400, "round {round}");
        let crashes = (0..=round).filter(|r| r % 3 == 0).count() as u64 + 1;
        assert_eq!(
            raw_counts(h.path()),
            [
                ids.len() as u64,
                40 + 400 * (ids.len() as u64 - 1),
                ids.len() as u64,
                crashes
            ],
            "round {round}: no row twice, none left over"
        );
    }
    eprintln!(
        "{ROUNDS} rounds, fold of a 400-test run {fold_time:?}: killed mid-way {killed_before_done}, \
         finished before the kill {done_before_kill}"
    );
    assert!(killed_before_done >= 5, "the kills must land inside folds");
}

#[test]
fn the_size_cap_prunes_the_oldest_runs() {
    let dir = TempDir::new("cap");
    let store = Store::create(&dir.0).unwrap();
    let opts = FoldOptions {
        max_bytes: 1 << 20,
        ..quiet()
    };
    let mut ids = Vec::new();
    let mut compacted = 0;
    for _ in 0..12 {
        let id = store.new_run().unwrap();
        write_run(&store, &id, 1_000, false);
        let s = fold_run(&store, &id, &opts).unwrap();
        compacted += usize::from(s.compacted);
        ids.push(id);
        let len = std::fs::metadata(store.history_path()).unwrap().len();
        assert!(len <= (1 << 20) + (600 << 10), "{len} bytes");
    }
    assert!(compacted >= 1);
    let h = History::of_store(&store).unwrap();
    let kept: Vec<String> = h.runs().unwrap().into_iter().map(|r| r.id).collect();
    assert!(kept.len() < 12 && !kept.is_empty(), "{}", kept.len());
    assert_eq!(kept[0], ids[11], "the newest stays");
    let mut expect: Vec<String> = ids[12 - kept.len()..].to_vec();
    expect.reverse();
    assert_eq!(kept, expect, "the oldest go first");
    assert_eq!(raw_counts(h.path())[1], 1_000 * kept.len() as u64);
    eprintln!(
        "1 MiB cap, 1,000-test runs: {} kept, {compacted} compactions",
        kept.len()
    );
}

#[test]
fn runs_the_size_cap_pruned_are_not_folded_again() {
    let dir = TempDir::new("cap-missing");
    let store = Store::create(&dir.0).unwrap();
    let opts = FoldOptions {
        max_bytes: 1 << 20,
        ..quiet()
    };
    // Twelve sessions that all died before their fold: the next one folds them all.
    let mut ids = Vec::new();
    for _ in 0..12 {
        let id = store.new_run().unwrap();
        write_run(&store, &id, 1_000, false);
        ids.push(id);
    }
    let first = blackbox_core::fold_missing(&store, None, &opts).unwrap();
    let folded: Vec<&str> = first.iter().map(|s| s.run_id.as_str()).collect();
    assert_eq!(folded, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let h = History::of_store(&store).unwrap();
    let kept = h.run_ids().unwrap();
    assert!(kept.len() < 12 && kept.last() == ids.last(), "{kept:?}");
    // Every run below the kept ones was pruned; the mark names the newest of them.
    let pruned_through = &ids[11 - kept.len()];
    assert_eq!(h.pruned_through().unwrap().as_ref(), Some(pruned_through));
    assert_eq!(kept, ids[12 - kept.len()..].to_vec());

    // The next sessions fold nothing: the pruned runs' folders are not folded back in.
    for _ in 0..2 {
        let again = blackbox_core::fold_missing(&store, None, &opts).unwrap();
        let again: Vec<&str> = again.iter().map(|s| s.run_id.as_str()).collect();
        assert!(again.is_empty(), "folded again: {again:?}");
        assert_eq!(h.run_ids().unwrap(), kept);
    }
    // A new run folds once, and pruning moves the mark on.
    let id = store.new_run().unwrap();
    write_run(&store, &id, 1_000, false);
    let once = blackbox_core::fold_missing(&store, None, &opts).unwrap();
    assert_eq!(
        once.iter().map(|s| s.run_id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    assert!(blackbox_core::fold_missing(&store, None, &opts)
        .unwrap()
        .is_empty());
    let mark = h.pruned_through().unwrap().unwrap();
    assert!(mark.as_str() >= pruned_through.as_str());
    assert!(h.run_ids().unwrap().iter().all(|k| *k > mark));
}

#[test]
fn runs_the_run_count_pruned_are_not_folded_again() {
    let dir = TempDir::new("keep-missing");
    let store = Store::create(&dir.0).unwrap();
    let opts = FoldOptions { keep: 3, ..quiet() };
    let ids: Vec<String> = (0..5)
        .map(|_| {
            let id = store.new_run().unwrap();
            write_run(&store, &id, 10, false);
            id
        })
        .collect();
    assert_eq!(
        blackbox_core::fold_missing(&store, None, &opts)
            .unwrap()
            .len(),
        5
    );
    let h = History::of_store(&store).unwrap();
    assert_eq!(h.run_ids().unwrap(), ids[2..].to_vec());
    assert_eq!(h.pruned_through().unwrap().as_ref(), Some(&ids[1]));
    // With a larger keep, history is no longer full: the mark still keeps the pruned out.
    let wider = FoldOptions {
        keep: 10,
        ..quiet()
    };
    assert!(blackbox_core::fold_missing(&store, None, &wider)
        .unwrap()
        .is_empty());
}

/// Writes a run whose test `i` ends with `outcomes[i]` (in its call phase).
fn write_outcomes(store: &Store, id: &str, outcomes: &[&str]) {
    let mut rec = Recorder::new(
        store.run_path(id).unwrap(),
        Role::Main,
        None,
        Durability::Process,
    );
    for (i, outcome) in outcomes.iter().enumerate() {
        let id = nodeid(i);
        rec.start_test(&id).unwrap();
        rec.record(&phase(&id, Phase::Setup, "passed", 0.1))
            .unwrap();
        rec.record(&phase(&id, Phase::Call, outcome, 0.2)).unwrap();
        rec.record(&phase(&id, Phase::Teardown, "passed", 0.1))
            .unwrap();
        rec.end_test(&id).unwrap();
    }
    rec.record(&Record::RunEnd {
        exit_status: 0,
        wall_ns: blackbox_core::now_wall_ns(),
    })
    .unwrap();
    rec.close().unwrap();
}

/// The terminal summary's flaky note counts what a test's outcomes over the window say,
/// however it reads them: runs without a failure (a pass looked up by key for the tests
/// that did not pass now) and runs with one (read whole), failures older than the window
/// left out.
#[test]
fn the_flaky_note_counts_each_test_over_the_window() {
    let dir = TempDir::new("flaky-note");
    let store = Store::create(&dir.0).unwrap();
    let n = 40;
    // (test, outcome) where a run is not all passes; oldest run first, the last not folded.
    let runs: [&[(usize, &str)]; 7] = [
        &[(1, "failed")],                                // out of the window
        &[(2, "failed")],                                // out of the window
        &[],                                             // no failure
        &[(5, "failed"), (6, "skipped")],                // a failure
        &[(7, "skipped")],                               // no failure
        &[],                                             // no failure
        &[(3, "failed"), (6, "skipped"), (7, "failed")], // this run
    ];
    let k = 5;
    let mut matrix = Vec::new();
    for changes in runs {
        let mut outcomes = vec!["passed"; n];
        for &(i, o) in changes {
            outcomes[i] = o;
        }
        let id = store.new_run().unwrap();
        write_outcomes(&store, &id, &outcomes);
        matrix.push((id, outcomes));
    }
    let (current, rest) = matrix.split_last().unwrap();
    for (id, _) in rest {
        fold_run(&store, id, &quiet()).unwrap();
    }
    let window = &matrix[matrix.len() - k..];
    let flaky: Vec<usize> = (0..n)
        .filter(|&i| {
            let seen = |o: &str| window.iter().any(|(_, outcomes)| outcomes[i] == o);
            seen("passed") && seen("failed")
        })
        .collect();
    assert_eq!(flaky, [3, 5, 7]); // test 1 and 2 failed before the window, 6 never failed
    let view = store.view(&current.0).unwrap();
    let note = blackbox_core::flaky_note(&store, &view, k).unwrap();
    assert_eq!(
        note.as_deref(),
        Some(
            format!(
                "3 flaky over the last {k} runs: blackbox flaky --dir {}",
                dir.0.display()
            )
            .as_str()
        )
    );
    // A run of only passes: none is flaky, whatever failed before.
    let id = store.new_run().unwrap();
    write_outcomes(&store, &id, &vec!["passed"; n]);
    let view = store.view(&id).unwrap();
    assert_eq!(blackbox_core::flaky_note(&store, &view, 3).unwrap(), None);
    let note = blackbox_core::flaky_note(&store, &view, k).unwrap();
    assert!(
        note.unwrap().starts_with("1 flaky over the last 5 runs"),
        "test 5 failed in the window"
    );
}
