//! The newest runs and each test's outcome and duration in them, read once: what the
//! cross-run answers are computed from.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde_json::{json, Value as Json};

use super::entries::{TestHistory, TrendPoint};
use super::layout::{after, decode_run, read_table, RunRow, RunTail, TestHead, RUNS, TESTS};
use super::open::{damaged, redb_error};
use crate::error::Result;

/// A run as the cross-run answers name it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRef {
    pub id: String,
    pub started_wall_ns: Option<u64>,
    pub host: Option<String>,
    pub shard: Option<String>,
}

impl RunRef {
    pub(super) fn new(id: &str, (row, tail): (RunRow, RunTail)) -> RunRef {
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
pub(super) struct Window {
    /// Newest first.
    pub(super) runs: Vec<RunRef>,
    /// Outcome names, indexed by the `u8` of a slot.
    pub(super) outcomes: Vec<String>,
    /// nodeid -> one slot per run of `runs`.
    pub(super) tests: BTreeMap<String, Vec<Option<(u8, f64)>>>,
}

impl Window {
    /// The newest `k` runs but `skip`, no newer than `upto` (when given).
    #[allow(clippy::many_single_char_names)] // k runs, w the window, n its width, o an outcome
    pub(super) fn read(
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
    pub(super) fn flaky(&self) -> Vec<TestHistory> {
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

    pub(super) fn trend(&self, nodeid: &str, slots: &[Option<(u8, f64)>]) -> TestHistory {
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
