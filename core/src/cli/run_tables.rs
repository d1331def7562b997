//! What the commands that show one run share: its tests, fixtures and crashes as tables,
//! in the order a person reads them, the run's state, and the head of its JSON.

use serde_json::Value as Json;

use super::context::{Ctx, Failure};
use super::crash_text::{attachments_with_text, crash_sentence, traceback_notes};
use super::table::{Cell, Column, Note, Style, Table};
use super::text::{count, duration};
use crate::aggregate::{signal_name, CrashView, FixtureStats, RunView, TestView};

/// Crashes first, then tests that never finished, then failures, then the rest.
pub(crate) fn rank(outcome: &str) -> u8 {
    match outcome {
        "crashed" | "timeout" => 0,
        "unfinished" => 1,
        "running" => 2,
        "failed" | "error" => 3,
        "not-run" => 5,
        _ => 4,
    }
}

/// Tests in the order a person reads them: crashes, unfinished, failures, then slowest first.
pub(crate) fn sorted_tests<'v>(tests: &'v [TestView], outcomes: &[String]) -> Vec<&'v TestView> {
    let mut v: Vec<&TestView> = tests
        .iter()
        .filter(|t| outcomes.is_empty() || outcomes.contains(&t.outcome))
        .collect();
    v.sort_by(|a, b| {
        rank(&a.outcome)
            .cmp(&rank(&b.outcome))
            .then_with(|| b.duration_s.total_cmp(&a.duration_s))
            .then_with(|| a.nodeid.cmp(&b.nodeid))
    });
    v
}

/// Fixtures and timed functions, slowest setup total first; pytest's own fixtures only
/// with `all` or when they cost a share of the run ([`crate::stock::is_shown`]).
pub(crate) fn sorted_fixtures(view: &RunView, all: bool) -> Vec<&FixtureStats> {
    let test_time = crate::stock::test_time(view);
    let mut v: Vec<&FixtureStats> = view
        .fixtures
        .iter()
        .chain(&view.timed)
        .filter(|f| crate::stock::is_shown(f, test_time, all))
        .collect();
    v.sort_by(|a, b| {
        b.total_s
            .total_cmp(&a.total_s)
            .then_with(|| a.name.cmp(&b.name))
    });
    v
}

/// `--limit`: `None` keeps everything (and so does 0).
pub(crate) fn take<T>(v: Vec<T>, limit: Option<usize>) -> Vec<T> {
    match limit {
        Some(n) if n > 0 => v.into_iter().take(n).collect(),
        _ => v,
    }
}

pub(crate) fn opt_str(s: Option<&str>) -> &str {
    s.unwrap_or("-")
}

pub(crate) fn pid_str(pid: Option<u32>) -> String {
    pid.map_or_else(|| "-".into(), |p| p.to_string())
}

pub(crate) fn outcome_cell(t: &TestView) -> Cell {
    let text = match (t.crashed, t.signal) {
        (true, Some(sig)) => format!("{} {}", t.outcome, signal_name(sig)),
        _ => t.outcome.clone(),
    };
    Cell::styled(text, Style::of_outcome(&t.outcome))
}

pub(crate) fn test_table(tests: &[&TestView]) -> Table {
    // A resumed run's tests ran in several attempts: which one, in a column of its own.
    let attempts = tests.iter().any(|t| t.attempt > 1);
    let mut columns = vec![
        Column::left("OUTCOME"),
        Column::right("DURATION"),
        Column::left("WORKER"),
        Column::right("PID"),
        Column::shrinking("TEST"),
    ];
    if attempts {
        columns.insert(0, Column::right("ATTEMPT"));
    }
    let mut table = Table::new(columns);
    for t in tests {
        let mut row = Vec::with_capacity(6);
        if attempts {
            row.push(Cell::new(t.attempt.to_string()));
        }
        row.extend([
            outcome_cell(t),
            // No phase report: nothing measured (a crash before the first report), but for
            // a timeout, which measured its test (one in setup reports no phase).
            Cell::new(if t.phases.is_empty() && t.timeout.is_none() {
                "-".into()
            } else {
                duration(t.duration_s)
            }),
            Cell::new(match t.worker.as_deref() {
                _ if t.outcome == "not-run" => "-",
                w => w.unwrap_or("main"),
            }),
            Cell::new(pid_str(t.pid)),
            Cell::new(&t.nodeid),
        ]);
        table.push(row);
    }
    table
}

pub(crate) fn fixture_table(fixtures: &[&FixtureStats]) -> Table {
    let mut table = Table::new(vec![
        Column::right("TOTAL"),
        Column::right("SETUPS"),
        Column::right("MEAN"),
        Column::right("MAX"),
        Column::right("TEARDOWN"),
        Column::left("SCOPE"),
        Column::shrinking("FIXTURE"),
    ]);
    for f in fixtures {
        table.push(vec![
            Cell::new(duration(f.total_s)),
            Cell::new(count(f.setups)),
            Cell::new(duration(f.mean_s)),
            Cell::new(duration(f.max_s)),
            Cell::new(if f.teardowns == 0 {
                "-".into()
            } else {
                duration(f.teardown_total_s)
            }),
            Cell::new(&f.scope),
            Cell::new(&f.name),
        ]);
    }
    table
}

/// Crashes, each with what happened on a line of its own: the sentence, then (with
/// `frames`) the last frames of its traceback, else the file the traceback is in.
pub(crate) fn crash_table(crashes: &[&CrashView], frames: Option<bool>) -> Table {
    // What ended the process: a signal's name, `timeout`, or `-` (an exit: the sentence says).
    let mut table = Table::new(vec![
        Column::left("CAUSE"),
        Column::left("WORKER"),
        Column::right("PID"),
        Column::left("PHASE"),
        Column::shrinking("TEST"),
    ]);
    for c in crashes {
        let row = vec![
            Cell::styled(
                c.cause().unwrap_or_else(|| "-".into()),
                Some(Style::BoldRed),
            ),
            Cell::new(c.worker.as_deref().unwrap_or("main")),
            Cell::new(pid_str(c.pid)),
            Cell::new(opt_str(c.phase.as_deref())),
            Cell::new(c.nodeid.as_deref().unwrap_or("(between tests)")),
        ];
        let mut notes = vec![Note::Text(crash_sentence(c))];
        let inline = frames.map(|full| traceback_notes(c, full));
        match inline {
            Some(tb) if !tb.is_empty() => notes.extend(tb),
            _ => {
                for a in attachments_with_text(c) {
                    notes.push(Note::Text(format!("traceback: {a}")));
                }
            }
        }
        table.push_with_notes(row, notes);
    }
    table
}

/// `live`, `exit 0`, or `no end record` for a run whose session never ended.
pub(crate) fn run_state(view: &RunView) -> (String, Option<Style>) {
    if view.run.live {
        ("live".into(), Some(Style::Cyan))
    } else {
        match view.run.exit_status {
            Some(0) => ("exit 0".into(), Some(Style::Green)),
            Some(code) => (format!("exit {code}"), Some(Style::Red)),
            None if view.segments == 0 => ("empty".into(), Some(Style::Dim)),
            None => ("no end record".into(), Some(Style::Magenta)),
        }
    }
}

/// The part of `RunView::to_json` every command's JSON starts with.
pub(crate) fn run_json(view: &RunView) -> Json {
    view.to_json_without_lists()["run"].take()
}

/// `RunView::to_json` of a view with the same run but no tests, fixtures, crashes or
/// workers: the run object without serializing every test.
pub(crate) trait WithoutLists {
    fn to_json_without_lists(&self) -> Json;
}

impl WithoutLists for RunView {
    fn to_json_without_lists(&self) -> Json {
        RunView {
            run: self.run.clone(),
            segments: self.segments,
            records: self.records,
            collected: self.collected,
            ..RunView::default()
        }
        .to_json()
    }
}

pub(crate) fn section(
    cx: &mut Ctx<'_>,
    title: &str,
    shown: usize,
    total: usize,
) -> Result<(), Failure> {
    let head = if shown < total {
        format!(
            "{title} ({} of {})",
            count(shown as u64),
            count(total as u64)
        )
    } else {
        format!("{title} ({})", count(total as u64))
    };
    writeln!(cx.out, "\n{}", cx.p(&head, Style::Bold))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test(nodeid: &str, outcome: &str, d: f64) -> TestView {
        TestView {
            outcome: outcome.into(),
            duration_s: d,
            crashed: outcome == "crashed",
            ..TestView::not_run(nodeid.into(), 1)
        }
    }

    #[test]
    fn tests_sort_crashes_then_failures_then_slowest() {
        let tests = vec![
            test("a", "passed", 1.0),
            test("b", "failed", 0.1),
            test("c", "crashed", 0.0),
            test("d", "passed", 3.0),
            test("e", "error", 0.5),
            test("f", "unfinished", 0.2),
        ];
        let order: Vec<&str> = sorted_tests(&tests, &[])
            .iter()
            .map(|t| t.nodeid.as_str())
            .collect();
        assert_eq!(order, ["c", "f", "e", "b", "d", "a"]);
        let only: Vec<&str> = sorted_tests(&tests, &["passed".into()])
            .iter()
            .map(|t| t.nodeid.as_str())
            .collect();
        assert_eq!(only, ["d", "a"]);
    }
}
