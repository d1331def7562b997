//! Reading one run back: its listing, tests, fixtures, crashes, summary.

use std::path::{Path, PathBuf};
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable};

use super::entries::{HistoryRun, HistoryTest};
use super::layout::{
    after, check_layout, decode, decode_run, read_table, CrashRow, FixtureRow, RunRow, RunTail,
    TestRow, CRASHES, FIXTURES, LAYOUT_KEY, MARKS, META, PRUNED_KEY, RUNS, TESTS,
};
use super::open::{
    damaged, guarded, open_error, open_read, open_retrying, open_write, redb_error, DEFAULT_WAIT,
};
use crate::aggregate::{CrashView, FixtureStats, RunMeta, RunView};
use crate::error::{Error, Result};
use crate::store::Store;

/// The history file of a store, read one query at a time: each call opens `history.redb`
/// read-only (waiting while a fold holds it), reads, and closes it again, so a `History`
/// kept around never blocks a fold.
#[derive(Debug, Clone)]
pub struct History {
    pub(super) path: PathBuf,
    pub(super) wait: Duration,
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

    pub(super) fn read<T>(&self, f: impl FnOnce(&redb::ReadTransaction) -> Result<T>) -> Result<T> {
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

pub(super) fn read_run_ids(path: &Path, txn: &redb::ReadTransaction) -> Result<Vec<String>> {
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

pub(super) fn read_mark(path: &Path, txn: &redb::ReadTransaction) -> Result<Option<String>> {
    let Some(marks) = read_table(path, txn, MARKS)? else {
        return Ok(None);
    };
    Ok(marks
        .get(PRUNED_KEY)
        .map_err(|e| redb_error(path, "reading", e.into()))?
        .map(|g| g.value().to_owned()))
}

pub(super) fn test_from_row(path: &Path, nodeid: &str, row: TestRow) -> Result<HistoryTest> {
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

pub(super) fn get_run(
    path: &Path,
    txn: &redb::ReadTransaction,
    run_id: &str,
) -> Result<Option<HistoryRun>> {
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

pub(super) fn require_run(path: &Path, txn: &redb::ReadTransaction, run_id: &str) -> Result<()> {
    if get_run(path, txn, run_id)?.is_none() {
        return Err(Error::History(format!(
            "no run {run_id:?} in {}; it was never folded in, or pruned (the history keeps the newest runs)",
            path.display()
        )));
    }
    Ok(())
}

pub(super) fn run_from_row(id: &str, (r, tail): (RunRow, RunTail)) -> HistoryRun {
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
