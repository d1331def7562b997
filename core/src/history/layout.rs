//! The table layout of `history.redb` (layout version 1) and the encoding of its rows.
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

use std::path::Path;

use redb::{ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use super::entries::OutcomeCounts;
use super::open::{damaged, redb_error};
use crate::error::{Error, Result};

/// The version of the table layout this module writes and reads.
pub const LAYOUT_VERSION: u64 = 1;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const RUNS: TableDefinition<&str, &[u8]> = TableDefinition::new("runs");
pub(super) const TESTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("tests");
pub(super) const FIXTURES: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("fixtures");
pub(super) const CRASHES: TableDefinition<(&str, u32), &[u8]> = TableDefinition::new("crashes");
pub(super) const MARKS: TableDefinition<&str, &str> = TableDefinition::new("marks");
pub(super) const LAYOUT_KEY: &str = "layout_version";
/// In `marks`: the newest run id pruning ever removed (every older run is gone too).
pub(super) const PRUNED_KEY: &str = "pruned_through";

// ---------------------------------------------------------------------------------------
// Rows: the on-disk layout. Field order matters (postcard); see the module doc.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunRow {
    pub(super) started_wall_ns: Option<u64>,
    pub(super) ended_wall_ns: Option<u64>,
    pub(super) exit_status: Option<i32>,
    pub(super) host: Option<String>,
    pub(super) pid: Option<u32>,
    pub(super) argv: Vec<String>,
    pub(super) rootdir: Option<String>,
    pub(super) counts: OutcomeCounts,
    pub(super) fixtures: u64,
    pub(super) crashes: u64,
    pub(super) records: u64,
    pub(super) segments: u64,
    pub(super) problems: Vec<String>,
    pub(super) folded_wall_ns: u64,
}

/// Written after a [`RunRow`] in the same value (appended in layout 1 without a version
/// bump: readers of older files find no tail, and older readers never look past the row).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct RunTail {
    /// The CI shard the run came from (`blackbox combine` names it after its source).
    pub(super) shard: Option<String>,
}

/// The first fields of a [`TestRow`], borrowed: what the cross-run queries need, decoded
/// without allocating (postcard decodes a prefix of the fields and ignores the rest).
#[derive(Debug, Deserialize)]
pub(super) struct TestHead<'a> {
    #[allow(dead_code)] // present to skip the field
    pub(super) seq: u32,
    pub(super) outcome: &'a str,
    pub(super) duration_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct TestRow {
    /// Position in the run, in start order.
    pub(super) seq: u32,
    pub(super) outcome: String,
    pub(super) duration_s: f64,
    pub(super) worker: Option<String>,
    pub(super) pid: Option<u32>,
    pub(super) crashed: bool,
    pub(super) signal: Option<i32>,
    /// (phase, outcome, `duration_s`)
    pub(super) phases: Vec<(String, String, f64)>,
    /// The merged properties as one JSON object, in text.
    pub(super) properties: String,
}

/// A [`TestRow`] borrowed from the view it is folded from: the same fields in the same
/// order, so the same bytes (postcard writes a `&str` as a `String`, a slice of tuples as a
/// `Vec` of them), without copying a string of the view.
#[derive(Serialize)]
pub(super) struct TestRowRef<'a> {
    pub(super) seq: u32,
    pub(super) outcome: &'a str,
    pub(super) duration_s: f64,
    pub(super) worker: Option<&'a str>,
    pub(super) pid: Option<u32>,
    pub(super) crashed: bool,
    pub(super) signal: Option<i32>,
    pub(super) phases: PhasesRef<'a>,
    pub(super) properties: &'a str,
}

/// [`TestRow::phases`] as the view holds them.
pub(super) struct PhasesRef<'a>(pub(super) &'a [crate::aggregate::PhaseView]);

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
pub(super) struct FixtureRow {
    pub(super) setups: u64,
    pub(super) teardowns: u64,
    pub(super) total_s: f64,
    pub(super) mean_s: f64,
    pub(super) max_s: f64,
    pub(super) teardown_total_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct CrashRow {
    pub(super) nodeid: Option<String>,
    pub(super) worker: Option<String>,
    pub(super) pid: Option<u32>,
    pub(super) signal: Option<i32>,
    pub(super) exit_code: Option<i32>,
    pub(super) phase: Option<String>,
    pub(super) detail: String,
    pub(super) attachments: Vec<String>,
}

pub(super) fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(row).map_err(|e| row_error(&e))
}

/// `row` appended to `buf` (a scratch buffer a caller reuses across rows).
pub(super) fn encode_into<T: Serialize>(row: &T, buf: Vec<u8>) -> Result<Vec<u8>> {
    postcard::to_extend(row, buf).map_err(|e| row_error(&e))
}

fn row_error(e: &postcard::Error) -> Error {
    Error::Encode(format!("history row: {e}"))
}

pub(super) fn decode<T: DeserializeOwned>(path: &Path, what: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| damaged(path, &format!("undecodable {what} row: {e}")))
}

/// Opens a table for reading; `None` when no fold has created it yet.
pub(super) fn read_table<K: redb::Key + 'static, V: redb::Value + 'static>(
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

pub(super) fn check_layout_write(txn: &redb::WriteTransaction, path: &Path) -> Result<()> {
    let meta = txn
        .open_table(META)
        .map_err(|e| redb_error(path, "opening a table of", e.into()))?;
    let found = meta
        .get(LAYOUT_KEY)
        .map_err(|e| redb_error(path, "reading", e.into()))?
        .map(|g| g.value());
    check_layout(path, found)
}

pub(super) fn check_layout(path: &Path, found: Option<u64>) -> Result<()> {
    match found {
        None | Some(LAYOUT_VERSION) => Ok(()),
        Some(v) => Err(Error::History(format!(
            "{} has table layout version {v}, this blackbox uses version {LAYOUT_VERSION}; read it with the \
             blackbox version that wrote it, or move it aside to start a new history (the run folders are untouched)",
            path.display()
        ))),
    }
}

/// The smallest string greater than `run` (no string lies strictly between `run` and
/// `run + "\0"`): the keys whose first element is `run` are exactly those from `(run, min)`
/// up to, not including, `(after(run), min)`.
pub(super) fn after(run: &str) -> String {
    format!("{run}\0")
}

/// A `runs` value: the row, then (in files written since shards exist) its tail.
pub(super) fn decode_run(path: &Path, bytes: &[u8]) -> Result<(RunRow, RunTail)> {
    let (row, rest) = postcard::take_from_bytes::<RunRow>(bytes)
        .map_err(|e| damaged(path, &format!("undecodable runs row: {e}")))?;
    let tail = if rest.is_empty() {
        RunTail::default()
    } else {
        decode(path, "runs", rest)?
    };
    Ok((row, tail))
}

pub(super) fn encode_run(row: &RunRow, tail: &RunTail) -> Result<Vec<u8>> {
    let mut bytes = encode(row)?;
    bytes.extend(encode(tail)?);
    Ok(bytes)
}
