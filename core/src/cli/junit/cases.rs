//! From a run to the `<testsuite>`: each test's case, its verdict read from the pytest
//! report its phase recorded, or from its crash.

use std::fmt::Write as _;
use std::path::Path;

use super::super::context::{list_run, Failure};
use super::super::crash_text::{attachments_with_text, crash_sentence};
use super::longrepr::{as_str, failure_of, get, longrepr_text, python_str};
use crate::aggregate::{Aggregate, CrashView, RunView, TestView};
use crate::follower::Follower;
use crate::record::{Phase, Record, Value};
use crate::store::Store;

/// Bytes of a traceback file put into a `<failure>` at most.
const TRACEBACK_BYTES: u64 = 256 << 10;

/// What a `<testcase>` holds besides its name and time.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    Passed,
    Failure {
        message: String,
        text: String,
    },
    /// A setup or teardown that failed.
    Error {
        message: String,
        text: String,
    },
    Skipped {
        /// `pytest.skip`, `pytest.xfail`, or none (not run).
        kind: Option<&'static str>,
        message: String,
        text: String,
    },
}

/// One `<testcase>`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Case {
    pub nodeid: String,
    pub time_s: f64,
    pub verdict: Verdict,
    /// Name and `str(value)`, as pytest's junitxml writes `user_properties`.
    pub properties: Vec<(String, String)>,
    /// Its process died in it, or it ran out of time: the verdict is the crash story.
    pub crashed: bool,
    /// Collected and never started.
    pub not_run: bool,
}

/// The `<testsuite>`.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Suite {
    pub started_wall_ns: Option<u64>,
    pub time_s: f64,
    pub hostname: String,
    pub cases: Vec<Case>,
}

/// A run read with its follower kept, to read the pytest reports its phases recorded.
pub(crate) struct Read {
    pub view: RunView,
    pub follower: Follower,
    /// The attempts before it whose tests `view` took (`--blackbox-resume`): attempt
    /// number, run id and follower, to read those tests' reports where they ran.
    earlier: Vec<(u32, String, Follower)>,
}

/// Run `id` as one logical run with the attempts it resumes (see
/// [`Store::with_earlier_attempts`]), each attempt's follower kept.
pub(crate) fn read_logical(store: &Store, id: &str) -> Result<Read, Failure> {
    let mut latest = read(store, id)?;
    let earlier = store.earlier_attempts(&latest.view, |prev| {
        read(store, prev).ok().map(|r| (r.view, r.follower))
    });
    let mut views = Vec::with_capacity(earlier.len());
    for (v, follower) in earlier {
        latest
            .earlier
            .push((v.run.attempt.max(1), v.run.id.clone(), follower));
        views.push(v);
    }
    latest.view = crate::aggregate::merge_attempts(latest.view, views);
    Ok(latest)
}

pub(crate) fn read(store: &Store, id: &str) -> Result<Read, Failure> {
    let dir = store.run_path(id)?;
    list_run(&dir)?;
    let mut follower = Follower::new(id, &dir);
    let mut agg = Aggregate::default();
    follower.poll_into(&mut agg);
    let view = agg.view(id, &follower.statuses());
    Ok(Read {
        view,
        follower,
        earlier: Vec::new(),
    })
}

impl Read {
    /// The serialized pytest report of `t`'s `phase`, where the plugin kept one.
    fn report(&self, t: &TestView, phase: Phase) -> Option<Value> {
        let p = t.phases.iter().rev().find(|p| p.phase == phase)?;
        let follower = self.earlier_of(t).map_or(&self.follower, |(_, _, f)| f);
        match follower.read_at(p.location.0, p.location.1)? {
            Record::TestPhase { report, .. } => report,
            _ => None,
        }
    }

    /// The earlier attempt `t` ran in; `None` when it ran in this run.
    fn earlier_of(&self, t: &TestView) -> Option<&(u32, String, Follower)> {
        self.earlier
            .iter()
            .find(|(attempt, _, _)| *attempt == t.attempt)
    }

    /// The id of the run (the attempt) `t` ran in.
    fn run_of(&self, t: &TestView) -> &str {
        self.earlier_of(t)
            .map_or(self.view.run.id.as_str(), |(_, id, _)| id.as_str())
    }

    /// The cases of this run, in the order its tests started (the view's), then those that
    /// never started, in collection order.
    pub(crate) fn cases(&self) -> Vec<Case> {
        self.view.tests.iter().map(|t| self.case(t)).collect()
    }

    fn case(&self, t: &TestView) -> Case {
        let properties: Vec<(String, String)> = t
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), python_str(v)))
            .collect();
        let crash = self
            .view
            .crashes
            .iter()
            .find(|c| c.nodeid.as_deref() == Some(t.nodeid.as_str()) && c.kind != "child");
        let failed = |phase: Phase| {
            t.phases
                .iter()
                .find(|p| p.phase == phase && p.outcome == "failed")
                .map(|_| self.report(t, phase))
        };
        // A timeout that only failed the test (pytest-timeout's signal method) has pytest's
        // own report; one that ended the process has the crash story.
        let crashed = t.crashed || crash.is_some() || t.timeout.as_ref().is_some_and(|to| to.fatal);
        let not_run = t.outcome == "not-run";
        let verdict = if crashed {
            crash_verdict(t, crash, self.run_of(t), &properties)
        } else if let Some(report) = failed(Phase::Call) {
            let (message, text) = failure_of(report.as_ref(), "failed");
            Verdict::Failure { message, text }
        } else if let Some((phase, report)) = [Phase::Setup, Phase::Teardown]
            .into_iter()
            .find_map(|ph| failed(ph).map(|r| (ph, r)))
        {
            let (reason, text) = failure_of(report.as_ref(), "failed");
            Verdict::Error {
                message: format!("failed on {} with \"{reason}\"", phase.as_str()),
                text,
            }
        } else if let Some(p) = t.phases.iter().find(|p| p.outcome == "skipped") {
            skipped_of(self.report(t, p.phase).as_ref())
        } else {
            match t.outcome.as_str() {
                "passed" => Verdict::Passed,
                "not-run" => Verdict::Skipped {
                    kind: None,
                    message: format!(
                        "not run: {} before it started (run {})",
                        // A session that ended (-x, pytest.exit) left it as one that died.
                        if self.view.run.ended_wall_ns.is_some() {
                            "the session ended"
                        } else {
                            "pytest died"
                        },
                        self.view.run.id
                    ),
                    text: String::new(),
                },
                "running" => Verdict::Skipped {
                    kind: None,
                    message: format!("still running when read (run {} is live)", self.view.run.id),
                    text: String::new(),
                },
                other => Verdict::Failure {
                    message: format!("{other}: the test did not finish"),
                    text: format!(
                        "blackbox: the test's process ended before its reports were all made \
                         (outcome {other}, run {})",
                        self.view.run.id
                    ),
                },
            }
        };
        Case {
            nodeid: t.nodeid.clone(),
            time_s: t.duration_s,
            verdict,
            properties,
            crashed,
            not_run,
        }
    }

    /// The suite of this run alone.
    pub(crate) fn suite(&self) -> Suite {
        let run = &self.view.run;
        let cases = self.cases();
        let end = run
            .ended_wall_ns
            .or_else(|| self.view.crashes.iter().filter_map(|c| c.wall_ns).max());
        let time_s = match (run.started_wall_ns, end) {
            (Some(s), Some(e)) if e >= s => (e - s) as f64 / 1e9,
            _ => cases.iter().map(|c| c.time_s).sum(),
        };
        Suite {
            started_wall_ns: run.started_wall_ns,
            time_s,
            hostname: run.host.clone().unwrap_or_default(),
            cases,
        }
    }
}

/// A crashed or timed-out test: a `<failure>` telling how its process ended, in which
/// phase, which pid and worker, its properties and the traceback blackbox kept.
fn crash_verdict(
    t: &TestView,
    crash: Option<&CrashView>,
    run_id: &str,
    properties: &[(String, String)],
) -> Verdict {
    let what = match (crash, &t.timeout) {
        (Some(c), _) => crash_sentence(c),
        (None, Some(to)) => to.story(),
        (None, None) => "the test's process died".to_owned(),
    };
    let phase = crash
        .and_then(|c| c.phase.clone())
        .or_else(|| t.timeout.as_ref().and_then(|to| to.phase.clone()));
    let verb = if t.timeout.is_some() {
        "timed out"
    } else {
        "crashed"
    };
    let mut message = if what.starts_with(verb) {
        what.clone()
    } else {
        format!("{verb}: {what}")
    };
    if let Some(p) = phase.as_deref().filter(|p| !what.contains(p)) {
        let _ = write!(message, " in {p}");
    }
    let pid = crash.and_then(|c| c.pid).or(t.pid);
    if let Some(pid) = pid {
        let _ = write!(message, " (pid {pid})");
    }
    let worker = crash
        .and_then(|c| c.worker.clone())
        .or_else(|| t.worker.clone())
        .unwrap_or_else(|| "main".into());
    let mut text = format!("blackbox: {message}\n");
    match pid {
        Some(pid) => {
            let _ = writeln!(text, "pid {pid}, worker {worker}, run {run_id}");
        }
        None => {
            let _ = writeln!(text, "worker {worker}, run {run_id}");
        }
    }
    if !properties.is_empty() {
        text.push_str("properties:\n");
        for (k, v) in properties {
            let _ = writeln!(text, "  {k} = {v}");
        }
    }
    match crash.and_then(|c| attachments_with_text(c).into_iter().next()) {
        Some(path) => {
            let _ = writeln!(text, "traceback ({path}):");
            text.push_str(read_text(Path::new(path)).trim_end());
            text.push('\n');
        }
        None => text.push_str("no Python traceback was written"),
    }
    Verdict::Failure {
        message,
        text: text.trim_end().to_owned(),
    }
}

fn read_text(path: &Path) -> String {
    use std::io::Read as _;
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(TRACEBACK_BYTES).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// A skipped (or xfailed) report as pytest's `append_skipped` writes it.
fn skipped_of(report: Option<&Value>) -> Verdict {
    if let Some(reason) = report.and_then(|r| get(r, "wasxfail")).and_then(as_str) {
        return Verdict::Skipped {
            kind: Some("pytest.xfail"),
            message: reason.strip_prefix("reason: ").unwrap_or(reason).to_owned(),
            text: String::new(),
        };
    }
    match report.and_then(|r| get(r, "longrepr")) {
        Some(Value::List(items)) if items.len() == 3 => {
            let path = python_str(&items[0]);
            let line = python_str(&items[1]);
            let reason = python_str(&items[2]);
            let reason = reason
                .strip_prefix("Skipped: ")
                .unwrap_or(&reason)
                .to_owned();
            Verdict::Skipped {
                kind: Some("pytest.skip"),
                text: format!("{path}:{line}: {reason}"),
                message: reason,
            }
        }
        other => Verdict::Skipped {
            kind: Some("pytest.skip"),
            message: other.map(longrepr_text).unwrap_or_default(),
            text: String::new(),
        },
    }
}
