//! Across runs: what `blackbox flaky`, `history NODEID` and `slower` print, and the
//! terminal summary's flaky note.

use std::collections::{BTreeMap, HashMap, HashSet};

use redb::ReadableTable;
use serde_json::{json, Value as Json};

use super::entries::{is_crash, is_failure, HistoryTest, OutcomeCounts, TestHistory, TrendPoint};
use super::layout::{
    after, decode, decode_run, read_table, FixtureRow, TestHead, TestRow, FIXTURES, RUNS, TESTS,
};
use super::open::{damaged, redb_error};
use super::read::{test_from_row, History};
use super::window::{RunRef, Window};
use crate::aggregate::RunView;
use crate::error::Result;
use crate::store::Store;

impl History {
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
}

/// A slower test or fixture must have grown by at least this much (seconds), so that the
/// jitter of a test taking microseconds is not a slowdown.
pub const SLOWER_MIN_DELTA_S: f64 = 0.01;

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

pub(super) fn median(mut v: Vec<f64>) -> Option<f64> {
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
