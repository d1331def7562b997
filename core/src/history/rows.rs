//! One run's rows, encoded and ready to write: built from a [`RunView`] or read from
//! another history file.

use std::borrow::Cow;
use std::path::Path;

use super::entries::OutcomeCounts;
use super::layout::{
    after, decode, decode_run, encode, encode_into, encode_run, read_table, CrashRow, FixtureRow,
    PhasesRef, RunRow, RunTail, TestRow, TestRowRef, CRASHES, FIXTURES, RUNS, TESTS,
};
use super::open::redb_error;
use serde_json::Value as Json;

use crate::aggregate::RunView;
use crate::error::{Error, Result};

pub(crate) struct Rows<'a> {
    pub(super) run_id: String,
    pub(super) run: Vec<u8>,
    /// (nodeid, row), sorted by nodeid: redb takes keys in order with less work.
    pub(super) tests: Vec<(Cow<'a, str>, Vec<u8>)>,
    pub(super) fixtures: Vec<(String, String, Vec<u8>)>,
    pub(super) crashes: Vec<Vec<u8>>,
}

impl<'a> Rows<'a> {
    pub(super) fn encode(view: &'a RunView, shard: Option<String>) -> Result<Rows<'a>> {
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
            scratch = encode_into(&row, scratch)?;
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

impl Rows<'_> {
    /// The rows of run `run_id` as history file `path` holds them, its shard set to `shard`
    /// unless it has one already (for `blackbox combine`).
    pub(super) fn read(
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
