//! `history.redb`: finished runs folded into one durable database, for trends across runs.
//!
//! At the end of a session the controller calls [`fold_run`] (or [`fold_view`] when it
//! already holds the run's [`RunView`]); the CLI and the Python package read it back with
//! [`History`]. The run folders stay the source of truth: the history is a digest of them
//! that outlives their pruning, and it can always be rebuilt by folding runs again.
//!
//! # Table layout (layout version 1)
//!
//! Every value is one [postcard](https://docs.rs/postcard)-encoded row struct; the struct
//! field order below *is* the layout. A change to any row bumps [`LAYOUT_VERSION`].
//!
//! | table      | key                                  | value                                                   |
//! |------------|--------------------------------------|---------------------------------------------------------|
//! | `meta`     | `&str` (`"layout_version"`)          | `u64`                                                   |
//! | `runs`     | `&str` run id                        | `RunRow`: started, ended, exit status, host, pid, argv, rootdir, outcome counts, fixtures, crashes, records, segments, problems, folded-at |
//! | `tests`    | `(&str, &str)` (run id, nodeid)      | `TestRow`: seq, outcome, duration, worker, pid, crashed, signal, phases, properties (JSON object text) |
//! | `fixtures` | `(&str, &str, &str)` (run id, name, scope) | `FixtureRow`: setups, teardowns, total, mean, max, teardown total (`timed` calls use scope `"timed"`) |
//! | `crashes`  | `(&str, u32)` (run id, index)        | `CrashRow`: nodeid, worker, pid, signal, exit code, phase, detail, attachments |
//!
//! Run ids sort by start time, so the `runs` table read backwards is newest first, and every
//! row of one run is one contiguous key range in each table.
//!
//! # Folding
//!
//! * The run is read and encoded *before* the database is opened, and the database is
//!   closed when the fold returns: nobody holds `history.redb` longer than one fold.
//! * redb lets one process at a time open the file. A fold that finds it open elsewhere
//!   (`DatabaseAlreadyOpen`) waits and retries with backoff up to [`FoldOptions::wait`],
//!   then fails with an [`Error::History`] that says what to do. Readers do the same.
//! * Rows are written in transactions of at most [`FoldOptions::batch`] row operations
//!   (inserts and deletes). Every commit but the last is [`redb::Durability::None`] (no
//!   fsync); the last one is durable (and records redb's allocator state, so the next open
//!   needs no repair) and makes every earlier commit durable with it. If the process dies
//!   mid-fold the non-durable commits are lost and the history is as it was before. (A fold
//!   that fails with an error instead leaves its commits in place when redb closes the
//!   file: the run is then not listed, and the next fold deletes its unlisted rows.)
//! * The `runs` row of the folded run is removed in the first transaction and written in
//!   the last, so a listed run is always complete. Folding a run that is already there
//!   replaces all its rows (folding is idempotent).
//! * Pruning keeps the newest [`FoldOptions::keep`] runs (by id, i.e. start time, counting
//!   the folded run) and deletes every row of the others from every table, also rows left
//!   without a `runs` row by a fold that failed half way.
//!
//! ```
//! use blackbox_core::history::{fold_run, FoldOptions, History};
//! use blackbox_core::{Durability, Record, Recorder, Role, Store};
//!
//! let dir = std::env::temp_dir().join(format!("bbx-history-doc-{}", std::process::id()));
//! let store = Store::create(&dir)?;
//! let run = store.new_run()?;
//! let mut rec = Recorder::new(store.run_path(&run)?, Role::Main, None, Durability::Process);
//! rec.start_test("t.py::test_a")?;
//! rec.end_test("t.py::test_a")?;
//! rec.record(&Record::RunEnd { exit_status: 0, wall_ns: blackbox_core::now_wall_ns() })?;
//! drop(rec);
//!
//! let stats = fold_run(&store, &run, &FoldOptions::default())?;
//! assert_eq!((stats.tests, stats.commits), (1, 1));
//! let history = History::of_store(&store)?;
//! assert_eq!(history.runs()?[0].id, run);
//! assert_eq!(history.test_history("t.py::test_a", 10)?.points.len(), 1);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), blackbox_core::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::aggregate::{CrashView, FixtureStats, RunView};
use crate::error::{Error, Result};
use crate::store::Store;

/// The version of the table layout this module writes and reads.
pub const LAYOUT_VERSION: u64 = 1;
/// Runs kept in history unless told otherwise.
pub const DEFAULT_KEEP: usize = 200;
/// Row operations per transaction unless told otherwise.
pub const DEFAULT_BATCH: usize = 5_000;
/// How long a fold (or a read) waits for another process to close `history.redb`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const TESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tests");
const FIXTURES: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("fixtures");
const CRASHES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("crashes");
const LAYOUT_KEY: &str = "layout_version";
/// redb's page cache for one fold or read (a limit, not an allocation).
const CACHE_BYTES: usize = 64 << 20;

// ---------------------------------------------------------------------------------------
// Rows: the on-disk layout. Field order matters (postcard); see the module doc.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunRow {
    started_wall_ns: Option<u64>,
    ended_wall_ns: Option<u64>,
    exit_status: Option<i32>,
    host: Option<String>,
    pid: Option<u32>,
    argv: Vec<String>,
    rootdir: Option<String>,
    counts: OutcomeCounts,
    fixtures: u64,
    crashes: u64,
    records: u64,
    segments: u64,
    problems: Vec<String>,
    folded_wall_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TestRow {
    /// Position in the run, in start order.
    seq: u32,
    outcome: String,
    duration_s: f64,
    worker: Option<String>,
    pid: Option<u32>,
    crashed: bool,
    signal: Option<i32>,
    /// (phase, outcome, `duration_s`)
    phases: Vec<(String, String, f64)>,
    /// The merged properties as one JSON object, in text.
    properties: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct FixtureRow {
    setups: u64,
    teardowns: u64,
    total_s: f64,
    mean_s: f64,
    max_s: f64,
    teardown_total_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CrashRow {
    nodeid: Option<String>,
    worker: Option<String>,
    pid: Option<u32>,
    signal: Option<i32>,
    exit_code: Option<i32>,
    phase: Option<String>,
    detail: String,
    attachments: Vec<String>,
}

// ---------------------------------------------------------------------------------------
// Public read types.

/// How many tests of a run ended how.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutcomeCounts {
    pub tests: u64,
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// Setup or teardown failed.
    pub errors: u64,
    pub crashed: u64,
    /// `running`, `unfinished`, `unknown` or anything else.
    pub other: u64,
}

impl OutcomeCounts {
    fn add(&mut self, outcome: &str) {
        self.tests += 1;
        match outcome {
            "passed" => self.passed += 1,
            "failed" => self.failed += 1,
            "skipped" => self.skipped += 1,
            "error" => self.errors += 1,
            "crashed" => self.crashed += 1,
            _ => self.other += 1,
        }
    }
}

/// One run as the history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryRun {
    pub id: String,
    pub started_wall_ns: Option<u64>,
    pub ended_wall_ns: Option<u64>,
    pub exit_status: Option<i32>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub argv: Vec<String>,
    pub rootdir: Option<String>,
    pub counts: OutcomeCounts,
    /// Fixture (and `timed`) rows kept for the run.
    pub fixtures: u64,
    pub crashes: u64,
    pub records: u64,
    pub segments: u64,
    /// Damaged segments the run had when it was folded.
    pub problems: Vec<String>,
    /// When it was folded (Unix ns).
    pub folded_wall_ns: u64,
}

/// One test of one run as the history keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryTest {
    pub nodeid: String,
    pub outcome: String,
    pub duration_s: f64,
    pub worker: Option<String>,
    pub pid: Option<u32>,
    pub crashed: bool,
    pub signal: Option<i32>,
    /// (phase, outcome, `duration_s`) in phase order.
    pub phases: Vec<(String, String, f64)>,
    /// The merged properties, as a JSON object (what `TestView::to_json` gives).
    pub properties: Json,
}

/// One test's outcome in one run of [`History::test_history`].
#[derive(Debug, Clone, PartialEq)]
pub struct TrendPoint {
    pub run_id: String,
    pub started_wall_ns: Option<u64>,
    /// `None` when the test did not run in that run.
    pub outcome: Option<String>,
    pub duration_s: Option<f64>,
}

/// A test's outcomes over the last runs, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct TestHistory {
    pub nodeid: String,
    pub points: Vec<TrendPoint>,
}

fn is_failure(outcome: &str) -> bool {
    matches!(outcome, "failed" | "error" | "crashed")
}

impl TestHistory {
    fn outcomes(&self) -> impl Iterator<Item = &str> {
        self.points.iter().filter_map(|p| p.outcome.as_deref())
    }

    /// Runs (of those looked at) in which the test ran.
    pub fn ran(&self) -> usize {
        self.outcomes().count()
    }

    pub fn passes(&self) -> usize {
        self.outcomes().filter(|o| *o == "passed").count()
    }

    /// Runs in which it failed, errored or crashed.
    pub fn failures(&self) -> usize {
        self.outcomes().filter(|o| is_failure(o)).count()
    }

    /// How often it went from passing to failing or back, between consecutive runs in which
    /// it ran (skips are ignored).
    pub fn flips(&self) -> usize {
        let verdicts: Vec<bool> = self
            .outcomes()
            .filter(|o| *o == "passed" || is_failure(o))
            .map(|o| o == "passed")
            .collect();
        verdicts.windows(2).filter(|w| w[0] != w[1]).count()
    }

    /// It both passed and failed within the runs looked at.
    pub fn is_flaky(&self) -> bool {
        self.passes() > 0 && self.failures() > 0
    }

    pub fn to_json(&self) -> Json {
        json!({
            "nodeid": self.nodeid,
            "runs": self.points.iter().map(|p| json!({
                "run": p.run_id,
                "started": p.started_wall_ns.map(|n| n as f64 / 1e9),
                "outcome": p.outcome,
                "duration_s": p.duration_s,
            })).collect::<Vec<_>>(),
            "ran": self.ran(),
            "passes": self.passes(),
            "failures": self.failures(),
            "flips": self.flips(),
            "flaky": self.is_flaky(),
        })
    }
}

impl HistoryRun {
    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id,
            "started": self.started_wall_ns.map(|n| n as f64 / 1e9),
            "ended": self.ended_wall_ns.map(|n| n as f64 / 1e9),
            "exit_status": self.exit_status,
            "host": self.host,
            "pid": self.pid,
            "argv": self.argv,
            "rootdir": self.rootdir,
            "tests": self.counts.tests,
            "passed": self.counts.passed,
            "failed": self.counts.failed,
            "skipped": self.counts.skipped,
            "errors": self.counts.errors,
            "crashed": self.counts.crashed,
            "other": self.counts.other,
            "fixtures": self.fixtures,
            "crashes": self.crashes,
            "records": self.records,
            "segments": self.segments,
            "problems": self.problems,
            "folded": self.folded_wall_ns as f64 / 1e9,
        })
    }
}

impl HistoryTest {
    pub fn to_json(&self) -> Json {
        json!({
            "nodeid": self.nodeid,
            "outcome": self.outcome,
            "duration_s": self.duration_s,
            "worker": self.worker,
            "pid": self.pid,
            "crashed": self.crashed,
            "signal": self.signal,
            "signal_name": self.signal.map(crate::aggregate::signal_name),
            "phases": self.phases.iter().map(|(p, o, d)| json!({"phase": p, "outcome": o, "duration_s": d})).collect::<Vec<_>>(),
            "properties": self.properties,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Folding.

/// How to fold a run into history.
#[derive(Debug, Clone)]
pub struct FoldOptions {
    /// Runs kept in history, newest by id (start time); at least 1.
    pub keep: usize,
    /// Row operations (inserts and deletes) per transaction; at least 1.
    pub batch: usize,
    /// How long to wait for another process to close `history.redb` before failing.
    pub wait: Duration,
    /// Called after every commit with the fold's progress so far (for progress output).
    pub on_commit: Option<fn(&FoldStats)>,
    /// Called each time `history.redb` was found open in another process, with the number
    /// of attempts so far, before waiting to retry (to tell the user why the fold waits).
    pub on_busy: Option<fn(u32)>,
}

impl Default for FoldOptions {
    fn default() -> Self {
        FoldOptions {
            keep: DEFAULT_KEEP,
            batch: DEFAULT_BATCH,
            wait: DEFAULT_WAIT,
            on_commit: None,
            on_busy: None,
        }
    }
}

/// What a fold did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FoldStats {
    pub run_id: String,
    pub tests: usize,
    /// Fixture rows, `timed` names included.
    pub fixtures: usize,
    pub crashes: usize,
    /// The run was in history already; its rows were replaced.
    pub replaced: bool,
    /// The run is among the newest `keep` and was written (false: it was older than all
    /// of them, so pruning would remove it at once).
    pub kept: bool,
    /// Runs removed from history by pruning (the folded run itself when `kept` is false).
    pub pruned: Vec<String>,
    pub rows_written: u64,
    pub rows_deleted: u64,
    /// Transactions committed; the last one durable.
    pub commits: u32,
    /// Times `history.redb` was opened before it was free (1: at once).
    pub open_attempts: u32,
    /// Time spent waiting for another process to close `history.redb`.
    pub waited: Duration,
    /// The whole fold, reading the run included.
    pub elapsed: Duration,
}

/// Folds run `run_id` of `store` into `<store>/history.redb`.
pub fn fold_run(store: &Store, run_id: &str, opts: &FoldOptions) -> Result<FoldStats> {
    let started = Instant::now();
    let view = store.view(run_id)?;
    let mut stats = fold_view(&store.history_path(), &view, opts)?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Folds an already built view of a run into the history file `path` (created if missing).
pub fn fold_view(path: &Path, view: &RunView, opts: &FoldOptions) -> Result<FoldStats> {
    let started = Instant::now();
    let rows = Rows::encode(view)?;
    let mut stats = FoldStats {
        run_id: view.run.id.clone(),
        tests: rows.tests.len(),
        fixtures: rows.fixtures.len(),
        crashes: rows.crashes.len(),
        ..FoldStats::default()
    };
    guarded(path, || {
        let (db, attempts, waited) = open_retrying(path, opts.wait, opts.on_busy, open_write)?;
        stats.open_attempts = attempts;
        stats.waited = waited;
        let mut batches = Batches {
            db: &db,
            txn: None,
            ops: 0,
            batch: opts.batch.max(1),
            on_commit: opts.on_commit,
            stats: &mut stats,
            path,
        };
        fold_into(&mut batches, &rows, opts.keep.max(1))?;
        drop(batches);
        db.close()
            .map_err(|e| redb_error(path, "closing", e.into()))
    })?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

struct Rows {
    run_id: String,
    run: Vec<u8>,
    tests: Vec<(String, Vec<u8>)>,
    fixtures: Vec<(String, String, Vec<u8>)>,
    crashes: Vec<Vec<u8>>,
}

fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(row).map_err(|e| Error::Encode(format!("history row: {e}")))
}

impl Rows {
    fn encode(view: &RunView) -> Result<Rows> {
        if !crate::store::is_run_id(&view.run.id) {
            return Err(Error::History(format!(
                "{:?} is not a run id; nothing was folded",
                view.run.id
            )));
        }
        let mut counts = OutcomeCounts::default();
        let mut tests = Vec::with_capacity(view.tests.len());
        for (seq, t) in view.tests.iter().enumerate() {
            counts.add(&t.outcome);
            let props = Json::Object(
                t.properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect(),
            );
            let row = TestRow {
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
                outcome: t.outcome.clone(),
                duration_s: t.duration_s,
                worker: t.worker.clone(),
                pid: t.pid,
                crashed: t.crashed,
                signal: t.signal,
                phases: t
                    .phases
                    .iter()
                    .map(|p| (p.phase.as_str().to_owned(), p.outcome.clone(), p.duration_s))
                    .collect(),
                properties: props.to_string(),
            };
            tests.push((t.nodeid.clone(), encode(&row)?));
        }
        let mut fixtures = Vec::with_capacity(view.fixtures.len() + view.timed.len());
        for f in view.fixtures.iter().chain(&view.timed) {
            let row = FixtureRow {
                setups: f.setups,
                teardowns: f.teardowns,
                total_s: f.total_s,
                mean_s: f.mean_s,
                max_s: f.max_s,
                teardown_total_s: f.teardown_total_s,
            };
            fixtures.push((f.name.clone(), f.scope.clone(), encode(&row)?));
        }
        let crashes = view
            .crashes
            .iter()
            .map(|c| {
                encode(&CrashRow {
                    nodeid: c.nodeid.clone(),
                    worker: c.worker.clone(),
                    pid: c.pid,
                    signal: c.signal,
                    exit_code: c.exit_code,
                    phase: c.phase.clone(),
                    detail: c.detail.clone(),
                    attachments: c.attachments.clone(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let r = &view.run;
        let run = encode(&RunRow {
            started_wall_ns: r.started_wall_ns,
            ended_wall_ns: r.ended_wall_ns,
            exit_status: r.exit_status,
            host: r.host.clone(),
            pid: r.pid,
            argv: r.argv.clone(),
            rootdir: r.rootdir.clone(),
            counts,
            fixtures: fixtures.len() as u64,
            crashes: crashes.len() as u64,
            records: view.records,
            segments: view.segments as u64,
            problems: view.problems.clone(),
            folded_wall_ns: crate::writer::now_wall_ns(),
        })?;
        Ok(Rows {
            run_id: r.id.clone(),
            run,
            tests,
            fixtures,
            crashes,
        })
    }
}

/// The open write transaction of a fold, committed every `batch` row operations.
struct Batches<'a> {
    db: &'a redb::Database,
    txn: Option<redb::WriteTransaction>,
    ops: usize,
    batch: usize,
    on_commit: Option<fn(&FoldStats)>,
    stats: &'a mut FoldStats,
    path: &'a Path,
}

impl Batches<'_> {
    fn txn(&mut self) -> Result<&redb::WriteTransaction> {
        if self.txn.is_none() {
            let mut txn = self
                .db
                .begin_write()
                .map_err(|e| redb_error(self.path, "starting a transaction on", e.into()))?;
            // Made durable by the last commit of the fold (see the module doc).
            txn.set_durability(redb::Durability::None)
                .map_err(|e| redb_error(self.path, "setting durability on", e.into()))?;
            self.txn = Some(txn);
            self.ops = 0;
        }
        Ok(self.txn.as_ref().expect("begun above"))
    }

    /// Row operations the open transaction may still take.
    fn room(&self) -> usize {
        self.batch.saturating_sub(self.ops).max(1)
    }

    /// Counts `n` operations done in the open transaction; commits it when full.
    fn spent(&mut self, n: usize) -> Result<()> {
        self.ops += n;
        if self.ops >= self.batch {
            self.commit(false)?;
        }
        Ok(())
    }

    fn commit(&mut self, durable: bool) -> Result<()> {
        let Some(mut txn) = self.txn.take() else {
            return Ok(());
        };
        if durable {
            txn.set_durability(redb::Durability::Immediate)
                .map_err(|e| redb_error(self.path, "setting durability on", e.into()))?;
            // Record the allocator state: the next open (read-only ones included) needs no repair.
            txn.set_quick_repair(true);
        }
        txn.commit()
            .map_err(|e| redb_error(self.path, "committing to", e.into()))?;
        self.ops = 0;
        self.stats.commits += 1;
        if let Some(f) = self.on_commit {
            f(self.stats);
        }
        Ok(())
    }
}

/// The smallest string greater than `run` (no string lies strictly between `run` and
/// `run + "\0"`): the keys whose first element is `run` are exactly those from `(run, min)`
/// up to, not including, `(after(run), min)`.
fn after(run: &str) -> String {
    format!("{run}\0")
}

fn fold_into(b: &mut Batches<'_>, rows: &Rows, keep: usize) -> Result<()> {
    let path = b.path;
    let run_id = rows.run_id.as_str();
    let st = |e: redb::StorageError| redb_error(path, "reading", e.into());
    let tb = |e: redb::TableError| redb_error(path, "opening a table of", e.into());

    // Layout check and the runs present.
    let existing: Vec<String> = {
        let txn = b.txn()?;
        check_layout_write(txn, path)?;
        let runs = txn.open_table(RUNS).map_err(tb)?;
        let mut ids = Vec::new();
        for entry in runs.iter().map_err(st)? {
            ids.push(entry.map_err(st)?.0.value().to_owned());
        }
        ids
    };
    let mut all: BTreeSet<&str> = existing.iter().map(String::as_str).collect();
    all.insert(run_id);
    let kept: BTreeSet<&str> = all.iter().rev().take(keep).copied().collect();
    b.stats.replaced = existing.iter().any(|id| id == run_id);
    b.stats.kept = kept.contains(run_id);
    b.stats.pruned = all
        .iter()
        .filter(|id| !kept.contains(**id))
        .map(|s| (*s).to_owned())
        .collect();
    // Rows of these runs stay; every other row (the folded run's old rows, pruned runs,
    // leftovers of a failed fold) goes.
    let stay: BTreeSet<&str> = kept.iter().copied().filter(|id| *id != run_id).collect();

    // 1. Unlist the folded run and the pruned runs first.
    let unlist: Vec<&str> = existing
        .iter()
        .map(String::as_str)
        .filter(|id| !stay.contains(id))
        .collect();
    let mut done = 0;
    while done < unlist.len() {
        let n = {
            let room = b.room();
            let txn = b.txn()?;
            let mut runs = txn.open_table(RUNS).map_err(tb)?;
            let mut n = 0;
            for id in unlist.iter().skip(done).take(room) {
                runs.remove(*id).map_err(st)?;
                n += 1;
            }
            n
        };
        done += n;
        b.stats.rows_deleted += n as u64;
        b.spent(n)?;
    }

    // 2. Delete the rows of every run that does not stay, table by table, in batches.
    // `$lo` is the smallest key of run `$r` (the bounds of a run's range are `$lo` of the
    // run and of `after(run)`).
    macro_rules! purge {
        ($def:expr, $r:ident => $lo:expr) => {{
            let ids: Vec<String> = {
                let txn = b.txn()?;
                let table = txn.open_table($def).map_err(tb)?;
                let mut ids = Vec::new();
                let mut from = String::new();
                loop {
                    let lower = {
                        let $r = from.as_str();
                        $lo
                    };
                    let first = table.range(lower..).map_err(st)?.next();
                    let Some(entry) = first else { break };
                    let id = entry.map_err(st)?.0.value().0.to_owned();
                    from = after(&id);
                    ids.push(id);
                }
                ids
            };
            for id in ids.iter().filter(|id| !stay.contains(id.as_str())) {
                let upper_id = after(id);
                loop {
                    let room = b.room();
                    let n = {
                        let txn = b.txn()?;
                        let mut table = txn.open_table($def).map_err(tb)?;
                        let lower = {
                            let $r = id.as_str();
                            $lo
                        };
                        let upper = {
                            let $r = upper_id.as_str();
                            $lo
                        };
                        let mut n = 0usize;
                        for item in table
                            .extract_from_if(lower..upper, |_, _| true)
                            .map_err(st)?
                            .take(room)
                        {
                            item.map_err(st)?;
                            n += 1;
                        }
                        n
                    };
                    b.stats.rows_deleted += n as u64;
                    b.spent(n)?;
                    if n < room {
                        break;
                    }
                }
            }
        }};
    }
    purge!(TESTS, r => (r, ""));
    purge!(FIXTURES, r => (r, "", ""));
    purge!(CRASHES, r => (r, 0u32));

    // 3. Write the run's rows, `$key` being the key of item `$item` at index `$i`.
    macro_rules! insert_all {
        ($def:expr, $items:expr, $i:ident, $item:pat => $key:expr) => {{
            let items = $items;
            let mut start = 0;
            while start < items.len() {
                let room = b.room();
                let end = (start + room).min(items.len());
                {
                    let txn = b.txn()?;
                    let mut table = txn.open_table($def).map_err(tb)?;
                    for ($i, $item) in items.iter().enumerate().take(end).skip(start) {
                        let (key, value) = $key;
                        table.insert(key, value).map_err(st)?;
                    }
                }
                b.stats.rows_written += (end - start) as u64;
                b.spent(end - start)?;
                start = end;
            }
        }};
    }
    if b.stats.kept {
        insert_all!(TESTS, &rows.tests, _i, (nodeid, v) => ((run_id, nodeid.as_str()), v.as_slice()));
        insert_all!(FIXTURES, &rows.fixtures, _i, (name, scope, v) => ((run_id, name.as_str(), scope.as_str()), v.as_slice()));
        insert_all!(CRASHES, &rows.crashes, i, v => ((run_id, u32::try_from(i).unwrap_or(u32::MAX)), v.as_slice()));
    }

    // 4. List the run, in the last, durable commit.
    {
        let kept = b.stats.kept;
        let txn = b.txn()?;
        if kept {
            let mut runs = txn.open_table(RUNS).map_err(tb)?;
            runs.insert(run_id, rows.run.as_slice()).map_err(st)?;
        }
        let mut meta = txn.open_table(META).map_err(tb)?;
        meta.insert(LAYOUT_KEY, LAYOUT_VERSION).map_err(st)?;
    }
    if b.stats.kept {
        b.stats.rows_written += 1;
    }
    b.commit(true)
}

fn check_layout_write(txn: &redb::WriteTransaction, path: &Path) -> Result<()> {
    let meta = txn
        .open_table(META)
        .map_err(|e| redb_error(path, "opening a table of", e.into()))?;
    let found = meta
        .get(LAYOUT_KEY)
        .map_err(|e| redb_error(path, "reading", e.into()))?
        .map(|g| g.value());
    check_layout(path, found)
}

fn check_layout(path: &Path, found: Option<u64>) -> Result<()> {
    match found {
        None | Some(LAYOUT_VERSION) => Ok(()),
        Some(v) => Err(Error::History(format!(
            "{} has table layout version {v}, this blackbox uses version {LAYOUT_VERSION}; read it with the \
             blackbox version that wrote it, or move it aside to start a new history (the run folders are untouched)",
            path.display()
        ))),
    }
}

// ---------------------------------------------------------------------------------------
// Opening, waiting, errors.

fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// Opens the file itself: never through a symlink (`O_NOFOLLOW`), created mode 0600, and
/// only a regular file (`O_NONBLOCK` keeps a FIFO from blocking the open).
fn open_file(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    if write {
        o.write(true).create(true).mode(0o600);
    }
    let file = o.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    Ok(file)
}

/// Opens (creating it if missing) for a fold.
fn open_write(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    builder().create_with_backend(redb::backends::FileBackend::new(open_file(path, true)?)?)
}

/// Opens read-only; fails with `RepairAborted` when a writer died mid-fold.
fn open_read(path: &Path) -> Result<redb::ReadOnlyDatabase, redb::DatabaseError> {
    builder()
        .open_read_only_with_backend(redb::backends::FileBackend::new(open_file(path, false)?)?)
}

fn damaged(path: &Path, why: &str) -> Error {
    Error::History(format!(
        "{} is damaged or not a history file ({why}); it only holds the digest of past runs (the run \
         folders are untouched): move it aside or delete it, and the next fold starts a new history",
        path.display()
    ))
}

/// Runs `f`, turning a panic inside redb (which may panic on a file damaged outside redb)
/// into a clear error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("redb panicked");
        Err(damaged(path, why))
    })
}

fn redb_error(path: &Path, action: &str, e: redb::Error) -> Error {
    match e {
        redb::Error::Corrupted(why) => damaged(path, &why),
        redb::Error::UpgradeRequired(v) => Error::History(format!(
            "{} is in redb file format {v}, which this blackbox cannot write; move it aside to start a new history",
            path.display()
        )),
        redb::Error::TableTypeMismatch { table, .. } => damaged(path, &format!("table {table:?} has unexpected types")),
        e => Error::History(format!("{action} {}: {e}", path.display())),
    }
}

/// Whether an open failed only because another process has the file open.
fn is_busy(e: &redb::DatabaseError) -> bool {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            true
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.raw_os_error() == Some(libc::EAGAIN)
        }
        _ => false,
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::NotFound => Error::History(format!(
            "no history at {} yet; it is written when a session ends (the plugin folds each run in)",
            path.display()
        )),
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => damaged(path, &io.to_string()),
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if matches!(io.raw_os_error(), Some(libc::ELOOP | libc::EISDIR)) => {
            Error::History(format!(
                "{} is a symlink, a directory or another file that is not a plain file; history is never \
                 read or written through one: remove it (the next fold starts a new history)",
                path.display()
            ))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Error::io(path, "opening", io),
        redb::DatabaseError::RepairAborted => damaged(path, "it needs a repair that could not run"),
        e => redb_error(path, "opening", e.into()),
    }
}

/// Opens with `open`, retrying with backoff while another process holds the file, for up to
/// `wait`. Returns the handle, the attempts made and the time spent waiting.
fn open_retrying<D>(
    path: &Path,
    wait: Duration,
    on_busy: Option<fn(u32)>,
    open: impl Fn(&Path) -> Result<D, redb::DatabaseError>,
) -> Result<(D, u32, Duration)> {
    let start = Instant::now();
    let deadline = start + wait;
    let mut delay = Duration::from_millis(2);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match open(path) {
            Ok(db) => {
                return Ok((
                    db,
                    attempts,
                    if attempts == 1 {
                        Duration::ZERO
                    } else {
                        start.elapsed()
                    },
                ))
            }
            Err(e) if is_busy(&e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::History(format!(
                        "{} stayed open in another process (another session folding its run, or a reader) \
                         for {:.1} s, {attempts} attempts; nothing was written. The run's folder keeps its \
                         records: fold it again once the other process is done, or allow a longer wait",
                        path.display(),
                        wait.as_secs_f64()
                    )));
                }
                if let Some(f) = on_busy {
                    f(attempts);
                }
                // Jitter so two waiters do not retry in lock step.
                let jitter = u64::from(
                    std::process::id()
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(attempts.wrapping_mul(40_503)),
                ) % 1000;
                let nap = (delay + delay.mul_f64(jitter as f64 / 2000.0)).min(deadline - now);
                std::thread::sleep(nap);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(open_error(path, e)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading.

/// The history file of a store, read one query at a time: each call opens `history.redb`
/// read-only (waiting while a fold holds it), reads, and closes it again, so a `History`
/// kept around never blocks a fold.
#[derive(Debug, Clone)]
pub struct History {
    path: PathBuf,
    wait: Duration,
}

fn decode<T: DeserializeOwned>(path: &Path, what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| damaged(path, &format!("undecodable {what} row: {e}")))
}

/// Opens a table for reading; `None` when no fold has created it yet.
fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    path: &Path,
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(redb_error(path, "opening a table of", e.into())),
    }
}

impl History {
    /// Opens the history file at `path` (checking that it is one this version reads).
    pub fn open(path: impl AsRef<Path>) -> Result<History> {
        let h = History {
            path: path.as_ref().to_owned(),
            wait: DEFAULT_WAIT,
        };
        h.read(|_| Ok(()))?;
        Ok(h)
    }

    /// The history of `store` (`<store>/history.redb`).
    pub fn of_store(store: &Store) -> Result<History> {
        History::open(store.history_path())
    }

    /// How long each read waits for a fold in another process to finish (default 60 s).
    #[must_use]
    pub fn with_wait(mut self, wait: Duration) -> History {
        self.wait = wait;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
        let path = self.path.as_path();
        guarded(path, || {
            let (db, _, _) = open_retrying(path, self.wait, None, |p| {
                match open_read(p) {
                    // A writer died mid-fold: only a writable open repairs the file.
                    Err(redb::DatabaseError::RepairAborted) => {
                        open_write(p)?.close()?;
                        open_read(p)
                    }
                    r => r,
                }
            })?;
            let txn = db
                .begin_read()
                .map_err(|e| redb_error(path, "reading", e.into()))?;
            let meta = read_table(path, &txn, META)?;
            let found = match &meta {
                Some(m) => m
                    .get(LAYOUT_KEY)
                    .map_err(|e| redb_error(path, "reading", e.into()))?
                    .map(|g| g.value()),
                None => None,
            };
            check_layout(path, found)?;
            let out = f(&txn)?;
            drop(txn);
            db.close().map_err(|e| open_error(path, e))?;
            Ok(out)
        })
    }

    /// Every run in history, newest first.
    pub fn runs(&self) -> Result<Vec<HistoryRun>> {
        let path = self.path.as_path();
        self.read(|txn| {
            let Some(runs) = read_table(path, txn, RUNS)? else {
                return Ok(Vec::new());
            };
            let mut out = Vec::new();
            for entry in runs
                .iter()
                .map_err(|e| redb_error(path, "reading", e.into()))?
                .rev()
            {
                let (k, v) = entry.map_err(|e| redb_error(path, "reading", e.into()))?;
                out.push(run_from_row(k.value(), decode(path, "runs", v.value())?));
            }
            Ok(out)
        })
    }

    /// One run, if it is in history.
    pub fn run(&self, run_id: &str) -> Result<Option<HistoryRun>> {
        let path = self.path.as_path();
        self.read(|txn| get_run(path, txn, run_id))
    }

    /// The tests of run `run_id`, in the order they started.
    pub fn tests(&self, run_id: &str) -> Result<Vec<HistoryTest>> {
        let path = self.path.as_path();
        self.read(|txn| {
            require_run(path, txn, run_id)?;
            let Some(table) = read_table(path, txn, TESTS)? else {
                return Ok(Vec::new());
            };
            let upper = after(run_id);
            let mut out: Vec<(u32, HistoryTest)> = Vec::new();
            for entry in table
                .range((run_id, "")..(upper.as_str(), ""))
                .map_err(|e| redb_error(path, "reading", e.into()))?
            {
                let (k, v) = entry.map_err(|e| redb_error(path, "reading", e.into()))?;
                let row: TestRow = decode(path, "tests", v.value())?;
                let properties = serde_json::from_str(&row.properties)
                    .map_err(|e| damaged(path, &format!("properties are not JSON: {e}")))?;
                out.push((
                    row.seq,
                    HistoryTest {
                        nodeid: k.value().1.to_owned(),
                        outcome: row.outcome,
                        duration_s: row.duration_s,
                        worker: row.worker,
                        pid: row.pid,
                        crashed: row.crashed,
                        signal: row.signal,
                        phases: row.phases,
                        properties,
                    },
                ));
            }
            out.sort_by_key(|(seq, _)| *seq);
            Ok(out.into_iter().map(|(_, t)| t).collect())
        })
    }

    /// Fixture (and `timed`, scope `"timed"`) statistics of run `run_id`, slowest total first.
    pub fn fixtures(&self, run_id: &str) -> Result<Vec<FixtureStats>> {
        let path = self.path.as_path();
        self.read(|txn| {
            require_run(path, txn, run_id)?;
            let Some(table) = read_table(path, txn, FIXTURES)? else {
                return Ok(Vec::new());
            };
            let upper = after(run_id);
            let mut out = Vec::new();
            for entry in table
                .range((run_id, "", "")..(upper.as_str(), "", ""))
                .map_err(|e| redb_error(path, "reading", e.into()))?
            {
                let (k, v) = entry.map_err(|e| redb_error(path, "reading", e.into()))?;
                let (_, name, scope) = k.value();
                let row: FixtureRow = decode(path, "fixtures", v.value())?;
                out.push(FixtureStats {
                    name: name.to_owned(),
                    scope: scope.to_owned(),
                    setups: row.setups,
                    teardowns: row.teardowns,
                    total_s: row.total_s,
                    mean_s: row.mean_s,
                    max_s: row.max_s,
                    teardown_total_s: row.teardown_total_s,
                });
            }
            out.sort_by(|a, b| {
                (b.total_s + b.teardown_total_s)
                    .total_cmp(&(a.total_s + a.teardown_total_s))
                    .then_with(|| a.name.cmp(&b.name))
                    .then_with(|| a.scope.cmp(&b.scope))
            });
            Ok(out)
        })
    }

    /// The crashes of run `run_id`, in the order the run's view listed them.
    pub fn crashes(&self, run_id: &str) -> Result<Vec<CrashView>> {
        let path = self.path.as_path();
        self.read(|txn| {
            require_run(path, txn, run_id)?;
            let Some(table) = read_table(path, txn, CRASHES)? else {
                return Ok(Vec::new());
            };
            let upper = after(run_id);
            let mut out = Vec::new();
            for entry in table
                .range((run_id, 0u32)..(upper.as_str(), 0u32))
                .map_err(|e| redb_error(path, "reading", e.into()))?
            {
                let (_, v) = entry.map_err(|e| redb_error(path, "reading", e.into()))?;
                let row: CrashRow = decode(path, "crashes", v.value())?;
                out.push(CrashView {
                    nodeid: row.nodeid,
                    worker: row.worker,
                    pid: row.pid,
                    signal: row.signal,
                    exit_code: row.exit_code,
                    phase: row.phase,
                    // The kind is not a column: a child's death says so in its detail.
                    kind: if row.detail.starts_with("child process of ") {
                        "child".into()
                    } else {
                        crate::aggregate::crash_kind(row.signal, row.exit_code).into()
                    },
                    detail: row.detail,
                    attachments: row.attachments,
                    wall_ns: None,
                    devices: Vec::new(),
                });
            }
            Ok(out)
        })
    }

    /// `nodeid`'s outcome in each of the newest `k` runs in history, newest first (`None`
    /// where it did not run).
    pub fn test_history(&self, nodeid: &str, k: usize) -> Result<TestHistory> {
        let path = self.path.as_path();
        self.read(|txn| {
            let mut points = Vec::new();
            let Some(runs) = read_table(path, txn, RUNS)? else {
                return Ok(TestHistory {
                    nodeid: nodeid.to_owned(),
                    points,
                });
            };
            let tests = read_table(path, txn, TESTS)?;
            for entry in runs
                .iter()
                .map_err(|e| redb_error(path, "reading", e.into()))?
                .rev()
                .take(k)
            {
                let (key, v) = entry.map_err(|e| redb_error(path, "reading", e.into()))?;
                let run_id = key.value();
                let run: RunRow = decode(path, "runs", v.value())?;
                let test: Option<TestRow> = match &tests {
                    Some(t) => match t
                        .get((run_id, nodeid))
                        .map_err(|e| redb_error(path, "reading", e.into()))?
                    {
                        Some(g) => Some(decode(path, "tests", g.value())?),
                        None => None,
                    },
                    None => None,
                };
                points.push(TrendPoint {
                    run_id: run_id.to_owned(),
                    started_wall_ns: run.started_wall_ns,
                    duration_s: test.as_ref().map(|t| t.duration_s),
                    outcome: test.map(|t| t.outcome),
                });
            }
            Ok(TestHistory {
                nodeid: nodeid.to_owned(),
                points,
            })
        })
    }

    /// Every test that both passed and failed (or errored, or crashed) within the newest `k`
    /// runs, with its outcomes there (as [`History::test_history`] gives them); most flips
    /// first, then by nodeid. One pass over those runs' tests.
    pub fn flaky(&self, k: usize) -> Result<Vec<TestHistory>> {
        let path = self.path.as_path();
        let rd = |e: redb::StorageError| redb_error(path, "reading", e.into());
        self.read(|txn| {
            let (Some(runs), Some(tests)) =
                (read_table(path, txn, RUNS)?, read_table(path, txn, TESTS)?)
            else {
                return Ok(Vec::new());
            };
            let mut newest: Vec<(String, Option<u64>)> = Vec::new();
            for entry in runs.iter().map_err(rd)?.rev().take(k) {
                let (key, v) = entry.map_err(rd)?;
                let run: RunRow = decode(path, "runs", v.value())?;
                newest.push((key.value().to_owned(), run.started_wall_ns));
            }
            // nodeid -> (outcome, duration) per run of `newest`
            let mut seen: BTreeMap<String, Vec<Option<(String, f64)>>> = BTreeMap::new();
            for (i, (run_id, _)) in newest.iter().enumerate() {
                let upper = after(run_id);
                for entry in tests
                    .range((run_id.as_str(), "")..(upper.as_str(), ""))
                    .map_err(rd)?
                {
                    let (key, v) = entry.map_err(rd)?;
                    let row: TestRow = decode(path, "tests", v.value())?;
                    let slots = seen
                        .entry(key.value().1.to_owned())
                        .or_insert_with(|| vec![None; newest.len()]);
                    slots[i] = Some((row.outcome, row.duration_s));
                }
            }
            let mut out: Vec<TestHistory> = seen
                .into_iter()
                .map(|(nodeid, slots)| TestHistory {
                    nodeid,
                    points: newest
                        .iter()
                        .zip(slots)
                        .map(|((run_id, started), slot)| TrendPoint {
                            run_id: run_id.clone(),
                            started_wall_ns: *started,
                            duration_s: slot.as_ref().map(|s| s.1),
                            outcome: slot.map(|s| s.0),
                        })
                        .collect(),
                })
                .filter(TestHistory::is_flaky)
                .collect();
            out.sort_by(|a, b| {
                b.flips()
                    .cmp(&a.flips())
                    .then_with(|| a.nodeid.cmp(&b.nodeid))
            });
            Ok(out)
        })
    }
}

fn get_run(path: &Path, txn: &redb::ReadTransaction, run_id: &str) -> Result<Option<HistoryRun>> {
    let Some(runs) = read_table(path, txn, RUNS)? else {
        return Ok(None);
    };
    match runs
        .get(run_id)
        .map_err(|e| redb_error(path, "reading", e.into()))?
    {
        Some(v) => Ok(Some(run_from_row(run_id, decode(path, "runs", v.value())?))),
        None => Ok(None),
    }
}

fn require_run(path: &Path, txn: &redb::ReadTransaction, run_id: &str) -> Result<()> {
    if get_run(path, txn, run_id)?.is_none() {
        return Err(Error::History(format!(
            "no run {run_id:?} in {}; it was never folded in, or pruned (the history keeps the newest runs)",
            path.display()
        )));
    }
    Ok(())
}

fn run_from_row(id: &str, r: RunRow) -> HistoryRun {
    HistoryRun {
        id: id.to_owned(),
        started_wall_ns: r.started_wall_ns,
        ended_wall_ns: r.ended_wall_ns,
        exit_status: r.exit_status,
        host: r.host,
        pid: r.pid,
        argv: r.argv,
        rootdir: r.rootdir,
        counts: r.counts,
        fixtures: r.fixtures,
        crashes: r.crashes,
        records: r.records,
        segments: r.segments,
        problems: r.problems,
        folded_wall_ns: r.folded_wall_ns,
    }
}
