//! `blackbox show NODEID`: one test's whole story, and the crash text other commands share
//! (the end of a traceback, inline).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value as Json};

use super::context::{load_id, resolve_run, warn_damage, Ctx, Loaded};
use super::table::{clean, count, duration, plural, wrap, Cell, Column, Note, Style, Table};
use super::Failure;
use crate::aggregate::{signal_name, CrashView, RunView, TestJson, TestView};
use crate::history::{History, TestHistory};
use crate::record::Record;
use crate::segment::SegmentStatus;
use crate::segment::{SegmentReader, HEADER_SIZE};
use crate::store::Store;
use crate::watchdog::TEST_THREAD_LINE;

/// Frames of a traceback shown unless `--full`.
pub(crate) const FRAMES_SHOWN: usize = 5;
/// Runs of history `show` lists.
const HISTORY_RUNS: usize = 10;
/// How long `show` waits for a fold that holds history.redb.
pub(crate) const HISTORY_WAIT: Duration = Duration::from_secs(2);
/// Bytes of a traceback file read at most.
const TRACEBACK_BYTES: u64 = 256 << 10;

/// A crash's traceback: the file it is in and the lines to show.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Traceback {
    pub path: String,
    pub lines: Vec<String>,
    /// Frames left out (`--full` shows them).
    pub hidden: usize,
}

/// The attachments of `c` that hold something (an `os._exit` leaves an empty
/// faulthandler file: not worth a line).
pub(crate) fn attachments_with_text(c: &CrashView) -> Vec<&str> {
    c.attachments
        .iter()
        .filter(|p| read_text(Path::new(p)).is_some_and(|t| !t.trim().is_empty()))
        .map(String::as_str)
        .collect()
}

fn read_text(path: &Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(TRACEBACK_BYTES).read_to_end(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf).into_owned())
}

/// The traceback of `c`: its first attachment with text. faulthandler writes the most
/// recent call first, so "the last frames" are the first ones of the thread that crashed
/// or hung ([`test_thread`]); `full` keeps every line.
pub(crate) fn traceback(c: &CrashView, full: bool) -> Option<Traceback> {
    let path = attachments_with_text(c).into_iter().next()?;
    let text = read_text(Path::new(path))?;
    let file = c.nodeid.as_deref().and_then(|n| n.split("::").next());
    Some(Traceback {
        path: path.to_owned(),
        ..traceback_of(&text, full, file)
    })
}

fn traceback_of(text: &str, full: bool, test_file: Option<&str>) -> Traceback {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    if full {
        return Traceback {
            path: String::new(),
            lines: lines
                .iter()
                .filter(|l| !l.is_empty())
                .map(|l| (*l).to_owned())
                .collect(),
            hidden: 0,
        };
    }
    let mut out: Vec<String> = Vec::new();
    // The error line ("Fatal Python error: Segmentation fault", "Timeout (0:00:02)!"); the
    // watchdog's line naming the test's thread is left out: that thread's block follows.
    if let Some(first) = lines.iter().find(|l| !l.is_empty()) {
        if !first.starts_with(' ') && !is_thread_line(first) && !first.starts_with(TEST_THREAD_LINE)
        {
            out.push((*first).to_owned());
        }
    }
    let Some(start) = test_thread(&lines, test_file) else {
        // Not faulthandler's layout: its last lines.
        let body: Vec<&str> = lines.iter().copied().filter(|l| !l.is_empty()).collect();
        let from = body.len().saturating_sub(FRAMES_SHOWN + 3);
        return Traceback {
            path: String::new(),
            lines: body[from..].iter().map(|l| (*l).to_owned()).collect(),
            hidden: from,
        };
    };
    out.push(lines[start].to_owned());
    let frames = frames_of(&lines, start);
    out.extend(frames.iter().take(FRAMES_SHOWN).map(|l| (*l).to_owned()));
    Traceback {
        path: String::new(),
        lines: out,
        hidden: frames.len().saturating_sub(FRAMES_SHOWN),
    }
}

/// The frames of the thread whose header is `lines[start]`.
fn frames_of<'l>(lines: &[&'l str], start: usize) -> Vec<&'l str> {
    lines[start + 1..]
        .iter()
        .copied()
        .take_while(|l| l.starts_with(' '))
        .collect()
}

/// The header line of the thread the test ran on: the one the watchdog named (its dump
/// has no "Current thread": it fired on a thread of its own), else faulthandler's
/// `Current thread`, else the oldest thread with a frame in the test's file, else the last
/// one listed (the oldest thread: the main one, where pytest runs its tests).
fn test_thread(lines: &[&str], test_file: Option<&str>) -> Option<usize> {
    let named = lines.iter().find_map(|l| {
        let hex = l.strip_prefix(TEST_THREAD_LINE)?;
        let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
        (!hex.is_empty()).then_some(hex)
    });
    if let Some(hex) = named {
        let header = format!("Thread 0x{hex} ");
        let current = format!("Current thread 0x{hex} ");
        if let Some(i) = lines
            .iter()
            .position(|l| l.starts_with(&header) || l.starts_with(&current))
        {
            return Some(i);
        }
    }
    if let Some(i) = lines.iter().position(|l| l.starts_with("Current thread")) {
        return Some(i);
    }
    let threads: Vec<usize> = (0..lines.len())
        .filter(|&i| is_thread_line(lines[i]))
        .collect();
    let in_file = |i: &&usize| {
        test_file.is_some_and(|f| {
            let quoted = format!("/{f}\"");
            frames_of(lines, **i)
                .iter()
                .any(|l| l.contains(&quoted) || l.contains(&format!("File \"{f}\"")))
        })
    };
    // The oldest with such a frame: threads the test started are newer than its own.
    threads
        .iter()
        .rev()
        .find(in_file)
        .or_else(|| threads.last())
        .copied()
}

fn is_thread_line(l: &str) -> bool {
    (l.starts_with("Thread 0x") || l.starts_with("Current thread")) && l.ends_with(':')
}

/// The traceback of `c` as lines under a table row.
pub(crate) fn traceback_notes(c: &CrashView, full: bool) -> Vec<Note> {
    let Some(tb) = traceback(c, full) else {
        return Vec::new();
    };
    let mut notes: Vec<Note> = tb.lines.into_iter().map(Note::Code).collect();
    if tb.hidden > 0 {
        notes.push(Note::Text(format!(
            "… {} (--full shows them)",
            plural(tb.hidden as u64, "more frame", "more frames")
        )));
    }
    notes
}

/// What happened to the process of a crash, in one sentence.
pub(crate) fn crash_sentence(c: &CrashView) -> String {
    if let Some(t) = &c.timeout {
        if !c.detail.contains("timed out") {
            return t.story();
        }
    }
    let mut s = c.detail.clone();
    if let Some(code) = c.exit_code {
        if !s.contains(&format!("status {code}")) {
            let _ = write!(s, " (exit status {code})");
        }
    }
    if s.is_empty() {
        s = c.signal.map_or_else(
            || "the process died".into(),
            |sig| format!("killed by {}", signal_name(sig)),
        );
    }
    s
}

/// The test `wanted` names: its nodeid, else the one test whose nodeid contains it.
fn find_test<'v>(view: &'v RunView, wanted: &str) -> Result<&'v TestView, Failure> {
    if let Some(t) = view.tests.iter().find(|t| t.nodeid == wanted) {
        return Ok(t);
    }
    let found: Vec<&TestView> = view
        .tests
        .iter()
        .filter(|t| t.nodeid.contains(wanted))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(Failure::Error(format!(
            "no test of run {} matches {wanted:?}; `blackbox tests` lists them",
            view.run.id
        ))),
        many => {
            let shown: Vec<&str> = many.iter().take(5).map(|t| t.nodeid.as_str()).collect();
            Err(Failure::Error(format!(
                "{} tests of run {} match {wanted:?} ({}{}); give more of the nodeid",
                count(many.len() as u64),
                view.run.id,
                shown.join(", "),
                if many.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            )))
        }
    }
}

/// One fixture as a test used it.
#[derive(Debug, Default)]
struct FixtureUse {
    setups: u64,
    setup_s: f64,
    teardown_s: Option<f64>,
}

/// The fixtures whose records name `nodeid`, by (name, scope), read from the segments that
/// hold the test's records (every segment when it reported no phase).
fn fixtures_of(t: &TestView, statuses: &[SegmentStatus]) -> BTreeMap<(String, String), FixtureUse> {
    let mut segs: Vec<usize> = t.phases.iter().map(|p| p.location.0).collect();
    segs.sort_unstable();
    segs.dedup();
    if segs.is_empty() {
        segs = (0..statuses.len()).collect();
    }
    let mut out: BTreeMap<(String, String), FixtureUse> = BTreeMap::new();
    for seg in segs {
        let Some(st) = statuses.get(seg) else {
            continue;
        };
        let Ok(reader) = SegmentReader::open(&st.path) else {
            continue;
        };
        let mut next = HEADER_SIZE;
        loop {
            let batch = reader.read_range(next, 4096);
            for (_, rec) in &batch.records {
                if let Record::Fixture {
                    name,
                    scope,
                    setup,
                    test: Some(test),
                    duration_s,
                    ..
                } = rec
                {
                    if *test != t.nodeid {
                        continue;
                    }
                    let u = out.entry((name.clone(), scope.clone())).or_default();
                    if *setup {
                        u.setups += 1;
                        u.setup_s += duration_s;
                    } else {
                        *u.teardown_s.get_or_insert(0.0) += duration_s;
                    }
                }
            }
            if batch.damage.is_some() || batch.records.is_empty() || batch.next <= next {
                break;
            }
            next = batch.next;
        }
    }
    out
}

/// The test's outcomes in history.redb over the `runs` runs up to `run_id`, newest first;
/// `Err` says why there are none.
pub(crate) fn test_history(
    store: &Store,
    nodeid: &str,
    run_id: &str,
    runs: usize,
) -> Result<TestHistory, String> {
    let path = store.history_path();
    if !path.exists() {
        return Err("no history.redb yet (a session folds its run there when it ends)".into());
    }
    History::open(&path)
        .map(|h| h.with_wait(HISTORY_WAIT))
        .and_then(|h| h.test_history_upto(nodeid, run_id, runs))
        .map_err(|e| e.to_string())
}

fn value_text(v: &crate::Value) -> String {
    match v {
        crate::Value::Str(s) => s.clone(),
        other => other.to_json().to_string(),
    }
}

pub(crate) fn show(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let Loaded { view, statuses } = load_id(&store, &id)?;
    warn_damage(cx, &id, statuses.iter().filter_map(|s| s.damage.as_ref()))?;
    let wanted = cx.inv.nodeid.clone().unwrap_or_default();
    let t = find_test(&view, &wanted)?;
    // The death of the test's own process (a child the test forked dying is not its crash).
    let crash = view
        .crashes
        .iter()
        .find(|c| c.nodeid.as_deref() == Some(t.nodeid.as_str()) && c.kind != "child");
    let fixtures = fixtures_of(t, &statuses);
    let history = test_history(&store, &t.nodeid, &view.run.id, HISTORY_RUNS);
    let tb = crash.and_then(|c| traceback(c, cx.inv.full));
    if cx.inv.json {
        let run = json!({"id": view.run.id});
        let fixtures: Vec<Json> = fixtures
            .iter()
            .map(|((name, scope), u)| {
                json!({"name": name, "scope": scope, "setups": u.setups,
                       "setup_s": u.setup_s, "teardown_s": u.teardown_s})
            })
            .collect();
        let test = serde_json::to_value(TestJson(t)).unwrap_or(Json::Null);
        let doc = json!({
            "run": run,
            "test": test,
            "fixtures": fixtures,
            "crash": crash.map(|c| {
                let mut j = c.to_json();
                j["traceback"] = tb.as_ref().map_or(Json::Null, |tb| json!({
                    "path": tb.path, "lines": tb.lines, "hidden_frames": tb.hidden}));
                j
            }),
            "history": history.as_ref().map_or(Json::Null, TestHistory::to_json),
        });
        serde_json::to_writer_pretty(&mut *cx.out, &doc).map_err(|e| Failure::Output(e.into()))?;
        writeln!(cx.out)?;
        return Ok(0);
    }
    let width = cx.width;
    let paint = cx.paint;
    let outcome = match t.signal {
        Some(sig) => format!("{} ({})", t.outcome, signal_name(sig)),
        None => t.outcome.clone(),
    };
    writeln!(
        cx.out,
        "{}",
        paint.paint(&clean(&t.nodeid), Some(Style::Bold))
    )?;
    let mut head = vec![
        paint
            .paint(&outcome, Style::of_outcome(&t.outcome))
            .into_owned(),
        if t.phases.is_empty() && t.timeout.is_none() {
            "no phase reported".to_owned()
        } else {
            format!("took {}", duration(t.duration_s))
        },
        format!("worker {}", t.worker.as_deref().unwrap_or("main")),
    ];
    if let Some(pid) = t.pid {
        head.push(format!("pid {pid}"));
    }
    head.push(format!("run {}", view.run.id));
    for line in super::table::join_fitted(&head, width) {
        writeln!(cx.out, "  {line}")?;
    }

    writeln!(cx.out, "\n{}", paint.paint("phases", Some(Style::Bold)))?;
    if t.phases.is_empty() && crash.and_then(|c| c.phase.as_ref()).is_none() {
        writeln!(
            cx.out,
            "  none reported (the process died before the first report)"
        )?;
    } else {
        let mut table = Table::new(vec![
            Column::left("PHASE"),
            Column::left("OUTCOME"),
            Column::right("DURATION"),
        ]);
        for p in &t.phases {
            table.push(vec![
                Cell::new(p.phase.as_str()),
                Cell::styled(&p.outcome, Style::of_outcome(&p.outcome)),
                Cell::new(duration(p.duration_s)),
            ]);
        }
        if let Some(c) = crash {
            if let Some(phase) = &c.phase {
                if !t.phases.iter().any(|p| p.phase.as_str() == phase) {
                    let ended = if c.timeout.is_some() {
                        "timed out"
                    } else {
                        "crashed"
                    };
                    table.push(vec![
                        Cell::new(phase),
                        Cell::styled(ended, Some(Style::BoldRed)),
                        Cell::new("-"),
                    ]);
                }
            }
        }
        table.write(cx.out, width, 2, paint)?;
    }

    if let Some(c) = crash {
        writeln!(cx.out, "\n{}", paint.paint("crash", Some(Style::BoldRed)))?;
        let mut what = crash_sentence(c);
        if let Some(p) = c.phase.as_deref().filter(|p| !what.contains(p)) {
            what = format!("{what}, in {p}");
        }
        let room = width.map(|w| w.saturating_sub(2));
        for l in room.map_or_else(|| vec![what.clone()], |r| wrap(&what, r)) {
            writeln!(cx.out, "  {}", clean(&l))?;
        }
        match &tb {
            Some(tb) => {
                let mut notes: Vec<Note> = tb.lines.iter().cloned().map(Note::Code).collect();
                if tb.hidden > 0 {
                    notes.push(Note::Text(format!(
                        "… {} (--full shows them)",
                        plural(tb.hidden as u64, "more frame", "more frames")
                    )));
                }
                notes.push(Note::Text(format!("traceback: {}", tb.path)));
                super::table::write_notes(cx.out, &notes, width, 2, paint)?;
            }
            None => writeln!(cx.out, "  no Python traceback was written")?,
        }
    }

    writeln!(
        cx.out,
        "\n{}",
        paint.paint(
            &format!("properties ({})", count(t.properties.len() as u64)),
            Some(Style::Bold)
        )
    )?;
    for (k, v) in &t.properties {
        let line = format!("{k} = {}", value_text(v));
        let notes = [Note::Text(line)];
        super::table::write_notes(
            cx.out,
            &notes,
            width,
            2,
            super::table::Painter { enabled: false },
        )?;
    }

    writeln!(
        cx.out,
        "\n{}",
        paint.paint(
            &format!("fixtures ({})", count(fixtures.len() as u64)),
            Some(Style::Bold)
        )
    )?;
    if !fixtures.is_empty() {
        let mut table = Table::new(vec![
            Column::right("SETUP"),
            Column::right("TEARDOWN"),
            Column::left("SCOPE"),
            Column::shrinking("FIXTURE"),
        ]);
        let mut rows: Vec<(&(String, String), &FixtureUse)> = fixtures.iter().collect();
        rows.sort_by(|a, b| b.1.setup_s.total_cmp(&a.1.setup_s));
        for ((name, scope), u) in rows {
            table.push(vec![
                Cell::new(duration(u.setup_s)),
                Cell::new(u.teardown_s.map_or_else(|| "-".into(), duration)),
                Cell::new(scope),
                Cell::new(name),
            ]);
        }
        table.write(cx.out, width, 2, paint)?;
    }

    writeln!(cx.out, "\n{}", paint.paint("history", Some(Style::Bold)))?;
    match &history {
        Err(why) => writeln!(cx.out, "  {}", clean(why))?,
        Ok(h) if h.points.is_empty() => writeln!(cx.out, "  no run in history.redb yet")?,
        Ok(h) => {
            // The strip of `blackbox flaky`; `blackbox history NODEID` has a row per run.
            let strip = super::history::strip(h.points.iter().map(|p| p.outcome.as_deref()));
            writeln!(
                cx.out,
                "  {strip}  (newest first; P passed, F failed, E error, C crashed, s skipped, . not run)"
            )?;
            writeln!(
                cx.out,
                "  {}, {}, {} in the last {}; `blackbox history` lists each run",
                plural(h.ran() as u64, "run", "runs"),
                plural(h.passes() as u64, "pass", "passes"),
                plural(h.failures() as u64, "failure", "failures"),
                plural(h.points.len() as u64, "run", "runs"),
            )?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAULTHANDLER: &str = "Fatal Python error: Segmentation fault\n\n\
        Thread 0x00007f0000000001 (most recent call first):\n  File \"/usr/lib/python3.11/threading.py\", line 320 in wait\n\n\
        Current thread 0x00007f0000000002 (most recent call first):\n\
        \x20 File \"/usr/lib/python3.11/ctypes/__init__.py\", line 519 in string_at\n\
        \x20 File \"/src/tests/test_native.py\", line 12 in test_segfault\n\
        \x20 File \"/venv/_pytest/python.py\", line 157 in pytest_pyfunc_call\n\
        \x20 File \"/venv/pluggy/_callers.py\", line 103 in _multicall\n\
        \x20 File \"/venv/pluggy/_manager.py\", line 120 in _hookexec\n\
        \x20 File \"/venv/pluggy/_hooks.py\", line 512 in __call__\n\
        \x20 File \"/venv/_pytest/python.py\", line 1671 in runtest\n\n\
        Extension modules: _cffi_backend (total: 1)\n";

    #[test]
    fn a_faulthandler_traceback_shows_the_crashing_threads_innermost_frames() {
        let tb = traceback_of(FAULTHANDLER, false, None);
        assert_eq!(tb.lines[0], "Fatal Python error: Segmentation fault");
        assert!(tb.lines[1].starts_with("Current thread"));
        assert!(tb.lines[2].ends_with("in string_at"));
        assert!(tb.lines[3].ends_with("in test_segfault"));
        assert_eq!(tb.lines.len(), 2 + FRAMES_SHOWN);
        assert_eq!(tb.hidden, 2);
        let full = traceback_of(FAULTHANDLER, true, None);
        assert_eq!(full.hidden, 0);
        assert!(full.lines.iter().any(|l| l.contains("threading.py")));
        assert!(full.lines.iter().any(|l| l.ends_with("in runtest")));
    }

    /// The watchdog's dump: its line naming the test's thread, then faulthandler's threads,
    /// newest first, none of them "Current thread" (it fired on a thread of its own).
    fn watchdog_dump(mark: bool) -> String {
        let head = if mark {
            format!("{TEST_THREAD_LINE}00007f0000000003 (pytest-blackbox's watchdog ended it)\n\n")
        } else {
            String::new()
        };
        head + "Thread 0x00007f0000000001 (most recent call first):\n\
            \x20 File \"/venv/execnet/gateway_base.py\", line 534 in read\n\n\
            Thread 0x00007f0000000002 (most recent call first):\n\
            \x20 File \"/src/tests/test_suite.py\", line 9 in other\n\n\
            Thread 0x00007f0000000003 (most recent call first):\n\
            \x20 File \"/src/tests/test_suite.py\", line 15 in test_deadlock\n\
            \x20 File \"/venv/_pytest/python.py\", line 157 in pytest_pyfunc_call\n\n\
            Thread 0x00007f0000000004 (most recent call first):\n\
            \x20 File \"/usr/lib/python3.11/threading.py\", line 320 in wait\n"
    }

    #[test]
    fn a_timeout_shows_the_thread_the_watchdog_names() {
        let tb = traceback_of(&watchdog_dump(true), false, Some("tests/test_suite.py"));
        assert_eq!(
            tb.lines[..2],
            [
                "Thread 0x00007f0000000003 (most recent call first):",
                "  File \"/src/tests/test_suite.py\", line 15 in test_deadlock",
            ]
        );
        // Not the first thread listed (the newest), nor the first with a frame in the file.
        assert!(!tb
            .lines
            .iter()
            .any(|l| l.contains("in read") || l.contains("in other")));
    }

    #[test]
    fn without_the_watchdogs_line_the_oldest_thread_in_the_tests_file_else_the_last() {
        let dump = watchdog_dump(false);
        // The oldest thread with a frame in the file: not the helper the test started.
        let tb = traceback_of(&dump, false, Some("tests/test_suite.py"));
        assert_eq!(
            tb.lines[0],
            "Thread 0x00007f0000000003 (most recent call first):"
        );
        let tb = traceback_of(&dump, false, Some("tests/test_other.py"));
        assert_eq!(
            tb.lines[0],
            "Thread 0x00007f0000000004 (most recent call first):"
        );
        let tb = traceback_of(&dump, false, None);
        assert_eq!(
            tb.lines[0],
            "Thread 0x00007f0000000004 (most recent call first):"
        );
    }

    #[test]
    fn other_text_keeps_its_last_lines() {
        let text = (0..20)
            .map(|i| format!("line {i}"))
            .collect::<Vec<_>>()
            .join("\n");
        let tb = traceback_of(&text, false, None);
        assert_eq!(tb.lines.last().map(String::as_str), Some("line 19"));
        assert_eq!(tb.hidden + tb.lines.len(), 20);
    }
}
