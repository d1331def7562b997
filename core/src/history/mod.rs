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
//! | `marks`    | `&str` (`"pruned_through"`)          | `&str`: the newest run id pruning removed (added in layout 1 without a bump: older readers never open it) |
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
//!   without a `runs` row by a fold that failed half way. The newest id pruned goes into
//!   `marks`, so that [`fold_missing`] never folds a pruned run's folder back in (the size
//!   cap would prune it again, at every session's end).
//!
//! ```
//! use blackbox_core::{fold_run, FoldOptions, History};
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

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{json, Value as Json};

use crate::aggregate::{CrashView, FixtureStats, RunMeta, RunView};
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
/// The size `history.redb` is kept under unless told otherwise (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
const TESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tests");
const FIXTURES: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("fixtures");
const CRASHES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("crashes");
const MARKS: TableDefinition<&str, &str> = TableDefinition::new("marks");
const LAYOUT_KEY: &str = "layout_version";
/// In `marks`: the newest run id pruning ever removed (every older run is gone too).
const PRUNED_KEY: &str = "pruned_through";
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

/// Written after a [`RunRow`] in the same value (appended in layout 1 without a version
/// bump: readers of older files find no tail, and older readers never look past the row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct RunTail {
    /// The CI shard the run came from (`blackbox combine` names it after its source).
    shard: Option<String>,
}

/// The first fields of a [`TestRow`], borrowed: what the cross-run queries need, decoded
/// without allocating (postcard decodes a prefix of the fields and ignores the rest).
#[derive(Debug, Deserialize)]
struct TestHead<'a> {
    #[allow(dead_code)] // present to skip the field
    seq: u32,
    outcome: &'a str,
    duration_s: f64,
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

/// A [`TestRow`] borrowed from the view it is folded from: the same fields in the same
/// order, so the same bytes (postcard writes a `&str` as a `String`, a slice of tuples as a
/// `Vec` of them), without copying a string of the view.
#[derive(Serialize)]
struct TestRowRef<'a> {
    seq: u32,
    outcome: &'a str,
    duration_s: f64,
    worker: Option<&'a str>,
    pid: Option<u32>,
    crashed: bool,
    signal: Option<i32>,
    phases: PhasesRef<'a>,
    properties: &'a str,
}

/// [`TestRow::phases`] as the view holds them.
struct PhasesRef<'a>(&'a [crate::aggregate::PhaseView]);

impl Serialize for PhasesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|p| (p.phase.as_str(), p.outcome.as_str(), p.duration_s)),
        )
    }
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
    /// The CI shard it came from, when `blackbox combine` brought it in.
    pub shard: Option<String>,
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

/// A verdict against the test: it failed, errored, crashed or ran past its time limit.
fn is_failure(outcome: &str) -> bool {
    matches!(outcome, "failed" | "error" | "crashed" | "timeout")
}

/// The test did not end by itself: its process died (a crash), or it ran past its time
/// limit (a timeout). What `crashed_runs` counts: a recurring hang is a recurring crash.
fn is_crash(outcome: &str) -> bool {
    matches!(outcome, "crashed" | "timeout")
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

    /// Runs in which it failed, errored, crashed or timed out.
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
            "shard": self.shard,
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
    /// When the file grows past this many bytes, the oldest runs are pruned until the rest
    /// takes at most three quarters of it, and the file is compacted (0: no size cap). The
    /// newest run always stays.
    pub max_bytes: u64,
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
            max_bytes: DEFAULT_MAX_BYTES,
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
    /// The file was past [`FoldOptions::max_bytes`]: old runs were pruned (listed in
    /// `pruned`) and the file compacted.
    pub compacted: bool,
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
    let shard = read_shard(&store.run_path(run_id)?);
    let mut stats = fold_rows(&store.history_path(), &Rows::encode(&view, shard)?, opts)?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// Folds an already built view of a run into the history file `path` (created if missing).
pub fn fold_view(path: &Path, view: &RunView, opts: &FoldOptions) -> Result<FoldStats> {
    fold_rows(path, &Rows::encode(view, None)?, opts)
}

/// Folds every run folder of `store` that history does not hold yet: runs whose session
/// died before or during its fold (a fold killed at any point leaves the history as it was
/// before it). Skips `except` (the caller's own run), folders with a live writer (a session
/// still going), folders no newer than the newest run pruning removed (by `keep` or by the
/// size cap: folded once already, or older than what history keeps), and, once history
/// holds `keep` runs, folders older than all of them (for files written before the prune
/// mark). Returns what each fold did, oldest first.
pub fn fold_missing(
    store: &Store,
    except: Option<&str>,
    opts: &FoldOptions,
) -> Result<Vec<FoldStats>> {
    let path = store.history_path();
    let (held, pruned): (BTreeSet<String>, Option<String>) = if path.exists() {
        let history = History::open(&path)?.with_wait(opts.wait);
        let (ids, pruned) = history.read(|txn| {
            Ok((
                read_run_ids(&history.path, txn)?,
                read_mark(&history.path, txn)?,
            ))
        })?;
        (ids.into_iter().collect(), pruned)
    } else {
        (BTreeSet::new(), None)
    };
    // An older folder is one pruning removed, when history is full.
    let oldest = held
        .first()
        .cloned()
        .filter(|_| held.len() >= opts.keep.max(1));
    let mut done = Vec::new();
    for id in store.runs()? {
        if held.contains(&id)
            || Some(id.as_str()) == except
            || pruned.as_ref().is_some_and(|p| id <= *p)
            || oldest.as_ref().is_some_and(|o| id < *o)
        {
            continue;
        }
        if crate::follower::Follower::new(&id, &store.run_path(&id)?).any_writer_alive() {
            continue;
        }
        done.push(fold_run(store, &id, opts)?);
    }
    Ok(done)
}

/// The file in a run folder naming the CI shard the run came from (`blackbox combine`
/// writes it into the folders it copies).
pub const SHARD_FILE: &str = "shard";

/// The shard a run folder came from, if `blackbox combine` brought it in.
pub fn read_shard(run_dir: &Path) -> Option<String> {
    let file = open_file(&run_dir.join(SHARD_FILE), false).ok()?;
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(file, 4096), &mut text).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_owned())
}

pub(crate) fn fold_rows(path: &Path, rows: &Rows, opts: &FoldOptions) -> Result<FoldStats> {
    let started = Instant::now();
    let mut stats = FoldStats {
        run_id: rows.run_id.clone(),
        tests: rows.tests.len(),
        fixtures: rows.fixtures.len(),
        crashes: rows.crashes.len(),
        ..FoldStats::default()
    };
    guarded(path, || {
        let (mut db, attempts, waited) = open_retrying(path, opts.wait, opts.on_busy, open_write)?;
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
        fold_into(&mut batches, Some(rows), opts.keep.max(1))?;
        drop(batches);
        cap_size(&mut db, path, opts, &mut stats)?;
        db.close()
            .map_err(|e| redb_error(path, "closing", e.into()))
    })?;
    stats.elapsed = started.elapsed();
    Ok(stats)
}

/// When the file is larger than [`FoldOptions::max_bytes`], prunes the oldest runs until
/// what is left takes at most three quarters of it, and compacts the file to that size.
fn cap_size(
    db: &mut redb::Database,
    path: &Path,
    opts: &FoldOptions,
    stats: &mut FoldStats,
) -> Result<()> {
    let len = std::fs::metadata(path).map_or(0, |m| m.len());
    if opts.max_bytes == 0 || len <= opts.max_bytes {
        return Ok(());
    }
    let st = |e: redb::StorageError| redb_error(path, "reading", e.into());
    // Rows of each run, newest first, and the bytes the live pages take.
    let (sizes, used) = {
        let txn = db
            .begin_write()
            .map_err(|e| redb_error(path, "starting a transaction on", e.into()))?;
        let db_stats = txn.stats().map_err(st)?;
        let used = db_stats.allocated_pages() * db_stats.page_size() as u64;
        let mut sizes: Vec<u64> = Vec::new();
        {
            let runs = txn
                .open_table(RUNS)
                .map_err(|e| redb_error(path, "opening a table of", e.into()))?;
            for entry in runs.iter().map_err(st)?.rev() {
                let (_, v) = entry.map_err(st)?;
                let (row, _) = decode_run(path, v.value())?;
                sizes.push(row.counts.tests + row.fixtures + row.crashes + 1);
            }
        }
        txn.abort()
            .map_err(|e| redb_error(path, "ending a transaction on", e.into()))?;
        (sizes, used)
    };
    let rows: u64 = sizes.iter().sum();
    let per_row = used as f64 / rows.max(1) as f64;
    let target = opts.max_bytes as f64 * 0.75;
    let mut keep = 0;
    let mut total = 0.0;
    for n in &sizes {
        total += *n as f64 * per_row;
        if keep > 0 && total > target {
            break;
        }
        keep += 1;
    }
    if keep < sizes.len() {
        let mut pruning = FoldStats::default();
        let mut batches = Batches {
            db,
            txn: None,
            ops: 0,
            batch: opts.batch.max(1),
            on_commit: None,
            stats: &mut pruning,
            path,
        };
        fold_into(&mut batches, None, keep)?;
        drop(batches);
        stats.pruned.extend(pruning.pruned);
        stats.rows_deleted += pruning.rows_deleted;
        stats.commits += pruning.commits;
    }
    // Freed pages are reused by later folds; compaction gives them back to the disk.
    db.compact()
        .map_err(|e| Error::History(format!("compacting {}: {e}", path.display())))?;
    stats.compacted = true;
    Ok(())
}

pub(crate) struct Rows<'a> {
    run_id: String,
    run: Vec<u8>,
    /// (nodeid, row), sorted by nodeid: redb takes keys in order with less work.
    tests: Vec<(Cow<'a, str>, Vec<u8>)>,
    fixtures: Vec<(String, String, Vec<u8>)>,
    crashes: Vec<Vec<u8>>,
}

fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(row).map_err(|e| Error::Encode(format!("history row: {e}")))
}

impl<'a> Rows<'a> {
    fn encode(view: &'a RunView, shard: Option<String>) -> Result<Rows<'a>> {
        if !crate::store::is_run_id(&view.run.id) {
            return Err(Error::History(format!(
                "{:?} is not a run id; nothing was folded",
                view.run.id
            )));
        }
        let mut counts = OutcomeCounts::default();
        let mut tests = Vec::with_capacity(view.tests.len());
        // Each row is encoded into this buffer, then copied out at its size.
        let mut scratch = Vec::new();
        // History keeps what ran: a test that never started has no outcome to compare.
        let ran = view.tests.iter().filter(|t| t.outcome != "not-run");
        for (seq, t) in ran.enumerate() {
            counts.add(&t.outcome);
            let props = if t.properties.is_empty() {
                Cow::Borrowed("{}")
            } else {
                let props: serde_json::Map<String, Json> = t
                    .properties
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_json()))
                    .collect();
                Cow::Owned(Json::Object(props).to_string())
            };
            let row = TestRowRef {
                seq: u32::try_from(seq).unwrap_or(u32::MAX),
                outcome: &t.outcome,
                duration_s: t.duration_s,
                worker: t.worker.as_deref(),
                pid: t.pid,
                crashed: t.crashed,
                signal: t.signal,
                phases: PhasesRef(&t.phases),
                properties: &props,
            };
            scratch.clear();
            scratch = postcard::to_extend(&row, scratch)
                .map_err(|e| Error::Encode(format!("history row: {e}")))?;
            tests.push((
                Cow::Borrowed(t.nodeid.as_str()),
                scratch.as_slice().to_vec(),
            ));
        }
        // A view lists its tests in start order; a nodeid that ran twice (an attempt of a
        // resumed run) keeps its last row, as inserting them in start order did.
        tests.reverse();
        tests.sort_by(|a, b| a.0.cmp(&b.0));
        tests.dedup_by(|later, first| later.0 == first.0);
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
        let run = encode_run(
            &RunRow {
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
                folded_wall_ns: crate::clock::now_wall_ns(),
            },
            &RunTail { shard },
        )?;
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

/// Writes `rows` (when given) and prunes to the newest `keep` runs, in batches, the run's
/// listing last.
fn fold_into(b: &mut Batches<'_>, rows: Option<&Rows>, keep: usize) -> Result<()> {
    let path = b.path;
    let run_id = rows.map_or("", |r| r.run_id.as_str());
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
    if rows.is_some() {
        all.insert(run_id);
    }
    let kept: BTreeSet<&str> = all.iter().rev().take(keep).copied().collect();
    b.stats.replaced = rows.is_some() && existing.iter().any(|id| id == run_id);
    b.stats.kept = rows.is_some() && kept.contains(run_id);
    b.stats.pruned = all
        .iter()
        .filter(|id| !kept.contains(**id))
        .map(|s| (*s).to_owned())
        .collect();
    // Rows of these runs stay; every other row (the folded run's old rows, pruned runs,
    // leftovers of a failed fold) goes.
    let stay: BTreeSet<&str> = kept
        .iter()
        .copied()
        .filter(|id| rows.is_none() || *id != run_id)
        .collect();

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
    if let (true, Some(rows)) = (b.stats.kept, rows) {
        insert_all!(TESTS, &rows.tests, _i, (nodeid, v) => ((run_id, nodeid.as_ref()), v.as_slice()));
        insert_all!(FIXTURES, &rows.fixtures, _i, (name, scope, v) => ((run_id, name.as_str(), scope.as_str()), v.as_slice()));
        insert_all!(CRASHES, &rows.crashes, i, v => ((run_id, u32::try_from(i).unwrap_or(u32::MAX)), v.as_slice()));
    }

    // 4. List the run, in the last, durable commit.
    {
        let kept = b.stats.kept;
        // Pruned ids are all older than the kept ones: the last is the newest pruned.
        let newest_pruned = b.stats.pruned.last().cloned();
        let txn = b.txn()?;
        if let (true, Some(rows)) = (kept, rows) {
            let mut runs = txn.open_table(RUNS).map_err(tb)?;
            runs.insert(run_id, rows.run.as_slice()).map_err(st)?;
        }
        let mut meta = txn.open_table(META).map_err(tb)?;
        meta.insert(LAYOUT_KEY, LAYOUT_VERSION).map_err(st)?;
        if let Some(newest) = newest_pruned {
            let mut marks = txn.open_table(MARKS).map_err(tb)?;
            let before = marks
                .get(PRUNED_KEY)
                .map_err(st)?
                .map(|g| g.value().to_owned());
            if before.as_ref().is_none_or(|m| *m < newest) {
                marks.insert(PRUNED_KEY, newest.as_str()).map_err(st)?;
            }
        }
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

/// Opens (creating it if missing) for a fold: only a file of this user that others cannot
/// write ([`crate::private::check_file`]); the refusal comes back as an I/O error of kind
/// `PermissionDenied` carrying the [`Error::Refused`], which [`open_error`] unwraps.
fn open_write(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        create_whole(path)?;
    }
    let file = open_file(path, true)?;
    crate::private::check_file(&file, path)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    builder().create_with_backend(redb::backends::FileBackend::new(file)?)
}

/// Makes a new, empty history at `path` all at once: written under a name of this
/// process's own, then linked into place (never over a file another session made
/// meanwhile). A session killed while creating it leaves no half-written history.redb,
/// which no later fold could open.
fn create_whole(path: &Path) -> Result<(), redb::DatabaseError> {
    let name = path.file_name().map_or_else(
        || "history.redb".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = path.with_file_name(format!(".{name}.{}.new", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let made = (|| {
        let file = open_file(&tmp, true)?;
        drop(builder().create_with_backend(redb::backends::FileBackend::new(file)?)?);
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    made
}

/// Opens read-only; fails with `RepairAborted` when a writer died mid-fold. Only a file of
/// this user that others cannot write ([`crate::private::check_file_to_read`]; refused as
/// [`open_write`] refuses), so what another user planted is never read as this user's.
fn open_read(path: &Path) -> Result<redb::ReadOnlyDatabase, redb::DatabaseError> {
    let file = open_file(path, false)?;
    crate::private::check_file_to_read(&file, path)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    builder().open_read_only_with_backend(redb::backends::FileBackend::new(file)?)
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
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.get_ref().is_some_and(<dyn std::error::Error + Send + Sync>::is::<Error>) =>
        {
            *io.into_inner()
                .and_then(|inner| inner.downcast::<Error>().ok())
                .expect("an Error inside, checked")
        }
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
                out.push(run_from_row(k.value(), decode_run(path, v.value())?));
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
                out.push((row.seq, test_from_row(path, k.value().1, row)?));
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

    /// Run `run_id` as a view of what history keeps of a run as a whole (its meta,
    /// crashes, problems, segment and record counts; no tests or fixtures), with its test
    /// count: what the next session's start needs of a run its pytest folded. `None` when
    /// history does not hold it.
    pub fn run_summary(&self, run_id: &str) -> Result<Option<(RunView, u64)>> {
        let Some(run) = self.run(run_id)? else {
            return Ok(None);
        };
        let crashes = if run.crashes > 0 {
            self.crashes(run_id)?
        } else {
            Vec::new()
        };
        let view = RunView {
            run: RunMeta {
                id: run.id,
                started_wall_ns: run.started_wall_ns,
                ended_wall_ns: run.ended_wall_ns,
                exit_status: run.exit_status,
                host: run.host,
                pid: run.pid,
                argv: run.argv,
                rootdir: run.rootdir,
                live: false,
                ..RunMeta::default()
            },
            crashes,
            problems: run.problems,
            segments: usize::try_from(run.segments).unwrap_or(usize::MAX),
            records: run.records,
            ..RunView::default()
        };
        Ok(Some((view, run.counts.tests)))
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
                    timeout: None,
                });
            }
            Ok(out)
        })
    }

    /// `nodeid`'s outcome in each of the newest `k` runs in history, newest first (`None`
    /// where it did not run).
    pub fn test_history(&self, nodeid: &str, k: usize) -> Result<TestHistory> {
        self.test_history_in(nodeid, None, k)
    }

    /// [`History::test_history`] over the newest `k` runs no newer than `run_id` (it
    /// included when history holds it): what a report of that run shows, never an outcome
    /// that came after it.
    pub fn test_history_upto(&self, nodeid: &str, run_id: &str, k: usize) -> Result<TestHistory> {
        self.test_history_in(nodeid, Some(run_id), k)
    }

    fn test_history_in(&self, nodeid: &str, upto: Option<&str>, k: usize) -> Result<TestHistory> {
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
            let listed = match upto {
                Some(upto) => runs.range(..=upto),
                None => runs.range::<&str>(..),
            };
            for entry in listed
                .map_err(|e| redb_error(path, "reading", e.into()))?
                .rev()
                .take(k)
            {
                let (key, v) = entry.map_err(|e| redb_error(path, "reading", e.into()))?;
                let run_id = key.value();
                let (run, _) = decode_run(path, v.value())?;
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

    /// Every test that both passed and failed (or errored, crashed, timed out) within the
    /// newest `k` runs, with its outcomes there (as [`History::test_history`] gives them); most flips
    /// first, then by nodeid. One pass over those runs' tests.
    pub fn flaky(&self, k: usize) -> Result<Vec<TestHistory>> {
        let w = self.read(|txn| Window::read(&self.path, txn, k, None, None))?;
        Ok(w.flaky())
    }

    /// What `blackbox flaky` prints: the newest `k` runs, and every test that both passed
    /// and failed (or errored, crashed, timed out) within them, most flips first.
    pub fn flaky_report(&self, k: usize) -> Result<FlakyReport> {
        let w = self.read(|txn| Window::read(&self.path, txn, k, None, None))?;
        let mut tests: Vec<FlakyTest> = w
            .tests
            .iter()
            .map(|(nodeid, slots)| FlakyTest::new(&w.trend(nodeid, slots)))
            .filter(|t| t.history.is_flaky())
            .collect();
        tests.sort_by(|a, b| {
            b.history
                .flips()
                .cmp(&a.history.flips())
                .then_with(|| a.history.nodeid.cmp(&b.history.nodeid))
        });
        Ok(FlakyReport {
            last: k,
            runs: w.runs,
            tests,
        })
    }

    /// What the HTML report of run `run_id` shows of history: over the newest `k` runs up to
    /// that one (it included when history holds it; never a newer run, so an older run's
    /// report shows no outcome that came after it), the outcomes of each of `nodeids`, and
    /// every flaky test (most flips first, as [`History::flaky`]). One pass over the runs.
    pub fn strips_upto(&self, run_id: &str, k: usize, nodeids: &[&str]) -> Result<Strips> {
        let w = self.read(|txn| Window::read(&self.path, txn, k, None, Some(run_id)))?;
        let none = vec![None; w.runs.len()];
        let tests = nodeids
            .iter()
            .map(|n| {
                let slots = w.tests.get(*n).map_or(none.as_slice(), Vec::as_slice);
                ((*n).to_owned(), w.trend(n, slots))
            })
            .collect();
        Ok(Strips {
            tests,
            flaky: w.flaky(),
        })
    }

    /// How many tests of `current` (a run not yet folded) are flaky over it and the newest
    /// `k - 1` runs in history, and over how many runs that is. For the terminal summary,
    /// at the end of every session: it reads only what can make a test flaky. A test that
    /// passed now is flaky if it failed in an earlier run, and only the runs whose counts
    /// show a failure are read for that; one that did not pass now needs a pass, looked up
    /// by its key in each run (or found in the same read of a run with failures).
    pub fn flaky_in(&self, current: &RunView, k: usize) -> Result<(usize, usize)> {
        let path = self.path.as_path();
        let rd = |e: redb::StorageError| redb_error(path, "reading", e.into());
        let head = |bytes: &[u8]| -> Result<(bool, bool)> {
            let head: TestHead<'_> = postcard::from_bytes(bytes)
                .map_err(|e| damaged(path, &format!("undecodable tests row: {e}")))?;
            Ok((head.outcome == "passed", is_failure(head.outcome)))
        };
        // The tests of `current` that did not pass: they need a pass in the window.
        let unpassed: HashSet<&str> = current
            .tests
            .iter()
            .filter(|t| t.outcome != "passed")
            .map(|t| t.nodeid.as_str())
            .collect();
        let (window, passed_before, failed_before) = self.read(|txn| {
            let mut window: Vec<OutcomeCounts> = Vec::new();
            let mut passed_before: HashSet<String> = HashSet::new();
            let mut failed_before: HashSet<String> = HashSet::new();
            let (Some(runs), Some(tests)) =
                (read_table(path, txn, RUNS)?, read_table(path, txn, TESTS)?)
            else {
                return Ok((window, passed_before, failed_before));
            };
            let mut ids = Vec::new();
            for entry in runs.range::<&str>(..).map_err(rd)?.rev() {
                if ids.len() >= k.saturating_sub(1) {
                    break;
                }
                let (key, v) = entry.map_err(rd)?;
                if key.value() != current.run.id {
                    ids.push(key.value().to_owned());
                    window.push(decode_run(path, v.value())?.0.counts);
                }
            }
            for (id, counts) in ids.iter().zip(&window) {
                let failures = counts.failed + counts.errors + counts.crashed + counts.other;
                // Looking each unpassed test up costs more than reading a run of few tests.
                let scan = failures > 0 || unpassed.len().saturating_mul(8) > counts.tests as usize;
                if scan {
                    let upper = after(id);
                    for entry in tests
                        .range((id.as_str(), "")..(upper.as_str(), ""))
                        .map_err(rd)?
                    {
                        let (key, v) = entry.map_err(rd)?;
                        let (passed, failed) = head(v.value())?;
                        let nodeid = key.value().1;
                        if failed && !failed_before.contains(nodeid) {
                            failed_before.insert(nodeid.to_owned());
                        }
                        if passed && unpassed.contains(nodeid) && !passed_before.contains(nodeid) {
                            passed_before.insert(nodeid.to_owned());
                        }
                    }
                } else if counts.passed > 0 {
                    for nodeid in &unpassed {
                        if passed_before.contains(*nodeid) {
                            continue;
                        }
                        if let Some(v) = tests.get((id.as_str(), *nodeid)).map_err(rd)? {
                            if head(v.value())?.0 {
                                passed_before.insert((*nodeid).to_owned());
                            }
                        }
                    }
                }
            }
            Ok((window, passed_before, failed_before))
        })?;
        let flaky = current
            .tests
            .iter()
            .filter(|t| {
                let passed = t.outcome == "passed" || passed_before.contains(&t.nodeid);
                passed && (is_failure(&t.outcome) || failed_before.contains(&t.nodeid))
            })
            .count();
        Ok((flaky, window.len() + 1))
    }

    /// `nodeid` in each of the newest `k` runs, newest first: the whole row where it ran,
    /// `None` where it did not.
    pub fn test_runs(&self, nodeid: &str, k: usize) -> Result<TestRuns> {
        let path = self.path.as_path();
        let rd = |e: redb::StorageError| redb_error(path, "reading", e.into());
        self.read(|txn| {
            let mut runs = Vec::new();
            let Some(table) = read_table(path, txn, RUNS)? else {
                return Ok(TestRuns {
                    nodeid: nodeid.to_owned(),
                    last: k,
                    runs,
                });
            };
            let tests = read_table(path, txn, TESTS)?;
            for entry in table.iter().map_err(rd)?.rev().take(k) {
                let (key, v) = entry.map_err(rd)?;
                let run = RunRef::new(key.value(), decode_run(path, v.value())?);
                let row = match &tests {
                    Some(t) => t.get((run.id.as_str(), nodeid)).map_err(rd)?,
                    None => None,
                };
                let test = match row {
                    Some(g) => Some(test_from_row(
                        path,
                        nodeid,
                        decode(path, "tests", g.value())?,
                    )?),
                    None => None,
                };
                runs.push((run, test));
            }
            Ok(TestRuns {
                nodeid: nodeid.to_owned(),
                last: k,
                runs,
            })
        })
    }

    /// Tests and fixtures whose median duration grew by more than `threshold` times (and by
    /// at least [`SLOWER_MIN_DELTA_S`]) from the older half of the newest `k` runs to the
    /// newer half. A test counts only in runs where it passed; a fixture by its mean setup.
    pub fn slower(&self, k: usize, threshold: f64) -> Result<SlowerReport> {
        let path = self.path.as_path();
        let (w, fixtures) = self.read(|txn| {
            let w = Window::read(path, txn, k, None, None)?;
            let mut fixtures: HashMap<(String, String), Vec<Option<f64>>> = HashMap::new();
            if let Some(table) = read_table(path, txn, FIXTURES)? {
                let rd = |e: redb::StorageError| redb_error(path, "reading", e.into());
                for (i, run) in w.runs.iter().enumerate() {
                    let upper = after(&run.id);
                    for entry in table
                        .range((run.id.as_str(), "", "")..(upper.as_str(), "", ""))
                        .map_err(rd)?
                    {
                        let (key, v) = entry.map_err(rd)?;
                        let (_, name, scope) = key.value();
                        let row: FixtureRow = decode(path, "fixtures", v.value())?;
                        fixtures
                            .entry((name.to_owned(), scope.to_owned()))
                            .or_insert_with(|| vec![None; w.runs.len()])[i] =
                            (row.setups > 0).then_some(row.mean_s);
                    }
                }
            }
            Ok((w, fixtures))
        })?;
        let recent_n = w.runs.len() / 2;
        let mut items = Vec::new();
        let mut judge =
            |kind: &'static str, name: &str, scope: Option<&str>, d: Vec<Option<f64>>| {
                if let Some(item) = Slower::judge(&w.runs, recent_n, &d, threshold) {
                    items.push(Slower {
                        kind,
                        name: name.to_owned(),
                        scope: scope.map(str::to_owned),
                        ..item
                    });
                }
            };
        for (nodeid, slots) in &w.tests {
            let durations = slots
                .iter()
                .map(|s| s.and_then(|(o, d)| (w.outcomes[usize::from(o)] == "passed").then_some(d)))
                .collect();
            judge("test", nodeid, None, durations);
        }
        for ((name, scope), durations) in fixtures {
            judge("fixture", &name, Some(&scope), durations);
        }
        items.sort_by(|a, b| {
            b.ratio
                .total_cmp(&a.ratio)
                .then_with(|| a.name.cmp(&b.name))
        });
        let (recent, baseline) = w.runs.split_at(recent_n);
        Ok(SlowerReport {
            threshold,
            last: k,
            recent: recent.to_vec(),
            baseline: baseline.to_vec(),
            items,
        })
    }

    /// The ids of every run in history, oldest first (keys only).
    pub fn run_ids(&self) -> Result<Vec<String>> {
        self.read(|txn| read_run_ids(&self.path, txn))
    }

    /// The newest run id pruning ever removed from this history (by the run count or the
    /// size cap); every older run is gone too. `None` when nothing was pruned (or the file
    /// was last pruned by a blackbox that kept no mark).
    pub fn pruned_through(&self) -> Result<Option<String>> {
        self.read(|txn| read_mark(&self.path, txn))
    }
}

fn read_run_ids(path: &Path, txn: &redb::ReadTransaction) -> Result<Vec<String>> {
    let rd = |e: redb::StorageError| redb_error(path, "reading", e.into());
    let Some(runs) = read_table(path, txn, RUNS)? else {
        return Ok(Vec::new());
    };
    let mut ids = Vec::new();
    for entry in runs.iter().map_err(rd)? {
        ids.push(entry.map_err(rd)?.0.value().to_owned());
    }
    Ok(ids)
}

fn read_mark(path: &Path, txn: &redb::ReadTransaction) -> Result<Option<String>> {
    let Some(marks) = read_table(path, txn, MARKS)? else {
        return Ok(None);
    };
    Ok(marks
        .get(PRUNED_KEY)
        .map_err(|e| redb_error(path, "reading", e.into()))?
        .map(|g| g.value().to_owned()))
}

// ---------------------------------------------------------------------------------------
// Across runs: what `blackbox flaky`, `history NODEID` and `slower` print.

/// A slower test or fixture must have grown by at least this much (seconds), so that the
/// jitter of a test taking microseconds is not a slowdown.
pub const SLOWER_MIN_DELTA_S: f64 = 0.01;

/// A run as the cross-run answers name it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRef {
    pub id: String,
    pub started_wall_ns: Option<u64>,
    pub host: Option<String>,
    pub shard: Option<String>,
}

impl RunRef {
    fn new(id: &str, (row, tail): (RunRow, RunTail)) -> RunRef {
        RunRef {
            id: id.to_owned(),
            started_wall_ns: row.started_wall_ns,
            host: row.host,
            shard: tail.shard,
        }
    }

    pub fn to_json(&self) -> Json {
        json!({
            "id": self.id,
            "started": self.started_wall_ns.map(|n| n as f64 / 1e9),
            "host": self.host,
            "shard": self.shard,
        })
    }
}

/// The newest runs and, per test, its (outcome, duration) in each: read once, decoding only
/// the head of each row.
struct Window {
    /// Newest first.
    runs: Vec<RunRef>,
    /// Outcome names, indexed by the `u8` of a slot.
    outcomes: Vec<String>,
    /// nodeid -> one slot per run of `runs`.
    tests: BTreeMap<String, Vec<Option<(u8, f64)>>>,
}

impl Window {
    /// The newest `k` runs but `skip`, no newer than `upto` (when given).
    #[allow(clippy::many_single_char_names)] // k runs, w the window, n its width, o an outcome
    fn read(
        path: &Path,
        txn: &redb::ReadTransaction,
        k: usize,
        skip: Option<&str>,
        upto: Option<&str>,
    ) -> Result<Window> {
        let rd = |e: redb::StorageError| redb_error(path, "reading", e.into());
        let mut w = Window {
            runs: Vec::new(),
            outcomes: Vec::new(),
            tests: BTreeMap::new(),
        };
        let (Some(runs), Some(tests)) =
            (read_table(path, txn, RUNS)?, read_table(path, txn, TESTS)?)
        else {
            return Ok(w);
        };
        let listed = match upto {
            Some(upto) => runs.range(..=upto),
            None => runs.range::<&str>(..),
        };
        for entry in listed.map_err(rd)?.rev() {
            if w.runs.len() >= k {
                break;
            }
            let (key, v) = entry.map_err(rd)?;
            if Some(key.value()) != skip {
                w.runs
                    .push(RunRef::new(key.value(), decode_run(path, v.value())?));
            }
        }
        let n = w.runs.len();
        let mut index: HashMap<String, Vec<Option<(u8, f64)>>> = HashMap::new();
        for (i, run) in w.runs.iter().enumerate() {
            let upper = after(&run.id);
            for entry in tests
                .range((run.id.as_str(), "")..(upper.as_str(), ""))
                .map_err(rd)?
            {
                let (key, v) = entry.map_err(rd)?;
                let bytes = v.value();
                let head: TestHead<'_> = postcard::from_bytes(bytes)
                    .map_err(|e| damaged(path, &format!("undecodable tests row: {e}")))?;
                let o = if let Some(known) = w.outcomes.iter().position(|o| o == head.outcome) {
                    known
                } else {
                    w.outcomes.push(head.outcome.to_owned());
                    w.outcomes.len() - 1
                };
                let o = u8::try_from(o).unwrap_or(u8::MAX);
                let nodeid = key.value().1;
                let slots = match index.get_mut(nodeid) {
                    Some(s) => s,
                    None => index
                        .entry(nodeid.to_owned())
                        .or_insert_with(|| vec![None; n]),
                };
                slots[i] = Some((o, head.duration_s));
            }
        }
        w.tests = index.into_iter().collect();
        Ok(w)
    }

    /// Every test that both passed and failed in the window, most flips first.
    fn flaky(&self) -> Vec<TestHistory> {
        let mut out: Vec<TestHistory> = self
            .tests
            .iter()
            .map(|(nodeid, slots)| self.trend(nodeid, slots))
            .filter(TestHistory::is_flaky)
            .collect();
        out.sort_by(|a, b| {
            b.flips()
                .cmp(&a.flips())
                .then_with(|| a.nodeid.cmp(&b.nodeid))
        });
        out
    }

    fn trend(&self, nodeid: &str, slots: &[Option<(u8, f64)>]) -> TestHistory {
        TestHistory {
            nodeid: nodeid.to_owned(),
            points: self
                .runs
                .iter()
                .zip(slots)
                .map(|(run, slot)| TrendPoint {
                    run_id: run.id.clone(),
                    started_wall_ns: run.started_wall_ns,
                    outcome: slot.map(|(o, _)| self.outcomes[usize::from(o)].clone()),
                    duration_s: slot.map(|(_, d)| d),
                })
                .collect(),
        }
    }
}

/// What [`History::strips_upto`] gives the HTML report.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Strips {
    /// Each test asked for, by nodeid.
    pub tests: HashMap<String, TestHistory>,
    /// Every test flaky over those runs, most flips first.
    pub flaky: Vec<TestHistory>,
}

/// A change of a test's verdict (passed, or failed/error/crashed/timeout) between two consecutive
/// runs in which it ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Flip {
    /// The newer of the two runs: where the new outcome showed first.
    pub run_id: String,
    pub from: String,
    pub to: String,
}

/// One flaky test of [`History::flaky_report`].
#[derive(Debug, Clone, PartialEq)]
pub struct FlakyTest {
    /// Its outcome in each run looked at, newest first.
    pub history: TestHistory,
    /// Runs per outcome.
    pub outcomes: BTreeMap<String, usize>,
    pub last_flip: Option<Flip>,
    /// The runs in which it crashed or timed out, newest first.
    pub crashed_runs: Vec<String>,
}

impl FlakyTest {
    fn new(history: &TestHistory) -> FlakyTest {
        let mut outcomes = BTreeMap::new();
        for o in history.outcomes() {
            *outcomes.entry(o.to_owned()).or_insert(0) += 1;
        }
        let judged: Vec<(&str, &str)> = history
            .points
            .iter()
            .filter_map(|p| Some((p.run_id.as_str(), p.outcome.as_deref()?)))
            .filter(|(_, o)| *o == "passed" || is_failure(o))
            .collect();
        let last_flip = judged
            .windows(2)
            .find(|w| (w[0].1 == "passed") != (w[1].1 == "passed"))
            .map(|w| Flip {
                run_id: w[0].0.to_owned(),
                from: w[1].1.to_owned(),
                to: w[0].1.to_owned(),
            });
        FlakyTest {
            outcomes,
            last_flip,
            crashed_runs: history
                .points
                .iter()
                .filter(|p| p.outcome.as_deref().is_some_and(is_crash))
                .map(|p| p.run_id.clone())
                .collect(),
            history: history.clone(),
        }
    }

    pub fn to_json(&self) -> Json {
        let h = &self.history;
        json!({
            "nodeid": h.nodeid,
            "ran": h.ran(),
            "outcomes": self.outcomes,
            "flips": h.flips(),
            "last_flip": self.last_flip.as_ref().map(|f| json!({"run": f.run_id, "from": f.from, "to": f.to})),
            "crashed": self.crashed_runs.len(),
            "crashed_runs": self.crashed_runs,
            "strip": h.points.iter().map(|p| p.outcome.as_deref()).collect::<Vec<_>>(),
        })
    }
}

/// What `blackbox flaky` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct FlakyReport {
    /// The runs asked for (`--last`; fewer when history holds fewer).
    pub last: usize,
    /// The runs looked at, newest first.
    pub runs: Vec<RunRef>,
    pub tests: Vec<FlakyTest>,
}

impl FlakyReport {
    pub fn to_json(&self) -> Json {
        json!({
            "runs": self.runs.iter().map(RunRef::to_json).collect::<Vec<_>>(),
            "last": self.last,
            "tests": self.tests.iter().map(FlakyTest::to_json).collect::<Vec<_>>(),
        })
    }
}

/// One test in each of the newest runs ([`History::test_runs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct TestRuns {
    pub nodeid: String,
    /// The runs asked for (`--last`).
    pub last: usize,
    /// Newest first; `None` where the test did not run.
    pub runs: Vec<(RunRef, Option<HistoryTest>)>,
}

impl TestRuns {
    /// The same runs as a [`TestHistory`] (outcomes and durations only).
    pub fn trend(&self) -> TestHistory {
        TestHistory {
            nodeid: self.nodeid.clone(),
            points: self
                .runs
                .iter()
                .map(|(r, t)| TrendPoint {
                    run_id: r.id.clone(),
                    started_wall_ns: r.started_wall_ns,
                    outcome: t.as_ref().map(|t| t.outcome.clone()),
                    duration_s: t.as_ref().map(|t| t.duration_s),
                })
                .collect(),
        }
    }

    pub fn to_json(&self) -> Json {
        let trend = self.trend();
        json!({
            "nodeid": self.nodeid,
            "last": self.last,
            "ran": trend.ran(),
            "passes": trend.passes(),
            "failures": trend.failures(),
            "flips": trend.flips(),
            "flaky": trend.is_flaky(),
            "runs": self.runs.iter().map(|(r, t)| {
                let mut j = r.to_json();
                j["run"] = j["id"].take();
                if let Json::Object(m) = &mut j {
                    m.remove("id");
                }
                let test = t.as_ref().map(HistoryTest::to_json);
                for key in ["outcome", "duration_s", "worker", "pid", "crashed", "signal", "signal_name", "phases"] {
                    j[key] = test.as_ref().map_or(Json::Null, |t| t[key].clone());
                }
                j
            }).collect::<Vec<_>>(),
        })
    }
}

/// A test or fixture that got slower ([`History::slower`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Slower {
    /// `test` or `fixture`.
    pub kind: &'static str,
    /// The nodeid, or the fixture's name.
    pub name: String,
    /// A fixture's scope (`timed` for `@timed` functions).
    pub scope: Option<String>,
    pub baseline_median_s: f64,
    pub recent_median_s: f64,
    pub ratio: f64,
    /// The runs whose durations were compared, newest first.
    pub baseline_runs: Vec<String>,
    pub recent_runs: Vec<String>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len().is_multiple_of(2) {
        f64::midpoint(v[m - 1], v[m])
    } else {
        v[m]
    })
}

impl Slower {
    /// Compares the medians of `durations` (one per run of `runs`) over the newest
    /// `recent_n` runs and the rest.
    fn judge(
        runs: &[RunRef],
        recent_n: usize,
        durations: &[Option<f64>],
        threshold: f64,
    ) -> Option<Slower> {
        let side = |range: std::ops::Range<usize>| -> (Vec<f64>, Vec<String>) {
            range
                .filter_map(|i| Some((durations.get(i).copied()??, runs[i].id.clone())))
                .unzip()
        };
        let (recent, recent_runs) = side(0..recent_n);
        let (baseline, baseline_runs) = side(recent_n..runs.len());
        let (r, b) = (median(recent)?, median(baseline)?);
        let ratio = if b > 0.0 { r / b } else { f64::INFINITY };
        (ratio > threshold && r - b >= SLOWER_MIN_DELTA_S).then(|| Slower {
            kind: "test",
            name: String::new(),
            scope: None,
            baseline_median_s: b,
            recent_median_s: r,
            ratio,
            baseline_runs,
            recent_runs,
        })
    }

    pub fn to_json(&self) -> Json {
        json!({
            "kind": self.kind,
            "name": self.name,
            "scope": self.scope,
            "baseline_median_s": self.baseline_median_s,
            "recent_median_s": self.recent_median_s,
            "ratio": if self.ratio.is_finite() { json!(self.ratio) } else { Json::Null },
            "baseline_runs": self.baseline_runs,
            "recent_runs": self.recent_runs,
        })
    }
}

/// What `blackbox slower` prints.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowerReport {
    pub threshold: f64,
    /// The runs asked for (`--last`).
    pub last: usize,
    /// The newer half of the runs looked at, newest first.
    pub recent: Vec<RunRef>,
    /// The older half.
    pub baseline: Vec<RunRef>,
    /// Slowest growth first.
    pub items: Vec<Slower>,
}

impl SlowerReport {
    pub fn to_json(&self) -> Json {
        json!({
            "threshold": self.threshold,
            "last": self.last,
            "recent": self.recent.iter().map(RunRef::to_json).collect::<Vec<_>>(),
            "baseline": self.baseline.iter().map(RunRef::to_json).collect::<Vec<_>>(),
            "slower": self.items.iter().map(Slower::to_json).collect::<Vec<_>>(),
        })
    }
}

fn test_from_row(path: &Path, nodeid: &str, row: TestRow) -> Result<HistoryTest> {
    let properties = serde_json::from_str(&row.properties)
        .map_err(|e| damaged(path, &format!("properties are not JSON: {e}")))?;
    Ok(HistoryTest {
        nodeid: nodeid.to_owned(),
        outcome: row.outcome,
        duration_s: row.duration_s,
        worker: row.worker,
        pid: row.pid,
        crashed: row.crashed,
        signal: row.signal,
        phases: row.phases,
        properties,
    })
}

fn get_run(path: &Path, txn: &redb::ReadTransaction, run_id: &str) -> Result<Option<HistoryRun>> {
    let Some(runs) = read_table(path, txn, RUNS)? else {
        return Ok(None);
    };
    match runs
        .get(run_id)
        .map_err(|e| redb_error(path, "reading", e.into()))?
    {
        Some(v) => Ok(Some(run_from_row(run_id, decode_run(path, v.value())?))),
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

fn run_from_row(id: &str, (r, tail): (RunRow, RunTail)) -> HistoryRun {
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
        shard: tail.shard,
    }
}

/// A `runs` value: the row, then (in files written since shards exist) its tail.
fn decode_run(path: &Path, bytes: &[u8]) -> Result<(RunRow, RunTail)> {
    let (row, rest) = postcard::take_from_bytes::<RunRow>(bytes)
        .map_err(|e| damaged(path, &format!("undecodable runs row: {e}")))?;
    let tail = if rest.is_empty() {
        RunTail::default()
    } else {
        decode(path, "runs", rest)?
    };
    Ok((row, tail))
}

fn encode_run(row: &RunRow, tail: &RunTail) -> Result<Vec<u8>> {
    let mut bytes = encode(row)?;
    bytes.extend(encode(tail)?);
    Ok(bytes)
}

impl Rows<'_> {
    /// The rows of run `run_id` as history file `path` holds them, its shard set to `shard`
    /// unless it has one already (for `blackbox combine`).
    fn read(
        path: &Path,
        txn: &redb::ReadTransaction,
        run_id: &str,
        shard: &str,
    ) -> Result<Rows<'static>> {
        let rd = |e: redb::StorageError| redb_error(path, "reading", e.into());
        let upper = after(run_id);
        let runs = read_table(path, txn, RUNS)?;
        let Some(run) = runs
            .as_ref()
            .map(|t| t.get(run_id))
            .transpose()
            .map_err(rd)?
            .flatten()
        else {
            return Err(Error::History(format!(
                "no run {run_id:?} in {}",
                path.display()
            )));
        };
        let (row, mut tail) = decode_run(path, run.value())?;
        tail.shard.get_or_insert_with(|| shard.to_owned());
        let mut rows = Rows {
            run_id: run_id.to_owned(),
            run: encode_run(&row, &tail)?,
            tests: Vec::new(),
            fixtures: Vec::new(),
            crashes: Vec::new(),
        };
        if let Some(t) = read_table(path, txn, TESTS)? {
            for e in t.range((run_id, "")..(upper.as_str(), "")).map_err(rd)? {
                let (k, v) = e.map_err(rd)?;
                let _: TestRow = decode(path, "tests", v.value())?;
                rows.tests
                    .push((Cow::Owned(k.value().1.to_owned()), v.value().to_vec()));
            }
        }
        if let Some(t) = read_table(path, txn, FIXTURES)? {
            for e in t
                .range((run_id, "", "")..(upper.as_str(), "", ""))
                .map_err(rd)?
            {
                let (k, v) = e.map_err(rd)?;
                let _: FixtureRow = decode(path, "fixtures", v.value())?;
                let (_, name, scope) = k.value();
                rows.fixtures
                    .push((name.to_owned(), scope.to_owned(), v.value().to_vec()));
            }
        }
        if let Some(t) = read_table(path, txn, CRASHES)? {
            for e in t
                .range((run_id, 0u32)..(upper.as_str(), 0u32))
                .map_err(rd)?
            {
                let (_, v) = e.map_err(rd)?;
                let _: CrashRow = decode(path, "crashes", v.value())?;
                rows.crashes.push(v.value().to_vec());
            }
        }
        Ok(rows)
    }
}

/// Copies run `run_id` from history `source` into the history file `target`, naming its
/// shard `shard` unless it has one (what `blackbox combine` does for runs whose folders the
/// source store no longer has).
pub fn import_run(
    source: &History,
    target: &Path,
    run_id: &str,
    shard: &str,
    opts: &FoldOptions,
) -> Result<FoldStats> {
    let rows = source.read(|txn| Rows::read(&source.path, txn, run_id, shard))?;
    fold_rows(target, &rows, opts)
}

/// The terminal summary's line about the run `view` shows (not yet folded): how many of
/// its tests are flaky over it and the newest `k - 1` runs in history, and the command
/// that lists them; `None` when none is, or the store has no history yet. The view is the
/// one the session's reader already built, not a second read of the run.
pub fn flaky_note(store: &Store, view: &RunView, k: usize) -> Result<Option<String>> {
    let path = store.history_path();
    if !path.exists() {
        return Ok(None);
    }
    let history = History::open(&path)?;
    let (flaky, runs) = history.flaky_in(view, k)?;
    Ok((flaky > 0).then(|| {
        format!(
            "{flaky} flaky over the last {runs} runs: blackbox flaky --dir {}",
            store.root().display()
        )
    }))
}
