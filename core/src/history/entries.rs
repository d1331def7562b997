//! What a read of the history gives back: a run, a test in a run, a test's trend.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json};

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
    pub(super) fn add(&mut self, outcome: &str) {
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

/// One test's outcome in one run of [`History::test_history`](super::History::test_history).
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
pub(super) fn is_failure(outcome: &str) -> bool {
    matches!(outcome, "failed" | "error" | "crashed" | "timeout")
}

/// The test did not end by itself: its process died (a crash), or it ran past its time
/// limit (a timeout). What `crashed_runs` counts: a recurring hang is a recurring crash.
pub(super) fn is_crash(outcome: &str) -> bool {
    matches!(outcome, "crashed" | "timeout")
}

impl TestHistory {
    pub(super) fn outcomes(&self) -> impl Iterator<Item = &str> {
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
