//! Folding a run into `history.redb`: batches, pruning to the newest runs, the size cap.
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

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use redb::ReadableTable;

use super::layout::{
    after, check_layout_write, decode_run, CRASHES, FIXTURES, LAYOUT_KEY, LAYOUT_VERSION, MARKS,
    META, PRUNED_KEY, RUNS, TESTS,
};
use super::open::{guarded, open_file, open_retrying, open_write, redb_error, DEFAULT_WAIT};
use super::read::{read_mark, read_run_ids, History};
use super::rows::Rows;
use crate::aggregate::RunView;
use crate::error::{Error, Result};
use crate::store::Store;

/// Runs kept in history unless told otherwise.
pub const DEFAULT_KEEP: usize = 200;
/// Row operations per transaction unless told otherwise.
pub const DEFAULT_BATCH: usize = 5_000;

/// The size `history.redb` is kept under unless told otherwise (256 MiB).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

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
pub(super) fn cap_size(
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

/// The open write transaction of a fold, committed every `batch` row operations.
pub(super) struct Batches<'a> {
    pub(super) db: &'a redb::Database,
    pub(super) txn: Option<redb::WriteTransaction>,
    pub(super) ops: usize,
    pub(super) batch: usize,
    pub(super) on_commit: Option<fn(&FoldStats)>,
    pub(super) stats: &'a mut FoldStats,
    pub(super) path: &'a Path,
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

/// Writes `rows` (when given) and prunes to the newest `keep` runs, in batches, the run's
/// listing last.
pub(super) fn fold_into(b: &mut Batches<'_>, rows: Option<&Rows>, keep: usize) -> Result<()> {
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
