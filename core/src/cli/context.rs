//! The commands: each reads the store and writes a table, JSON, or a file.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};

use super::args::{ColorChoice, Command, Invocation};
use super::table::{
    clean, command_line, count, duration, join_fitted, local_time, plural, Cell, Column, Note,
    Painter, Style, Table, DEFAULT_WIDTH, MIN_WIDTH,
};
use super::{Env, Failure};
use crate::aggregate::{
    signal_name, Aggregate, CrashView, ExitView, FixtureStats, RunView, TestJson, TestView,
};
use crate::error::Damage;
use crate::error::Error;
use crate::follower::Follower;
use crate::segment::{is_segment_name, SegmentReader, SegmentStatus, HEADER_SIZE};
use crate::store::Store;

/// Rows per section of `stats` unless `--limit` says otherwise.
const STATS_ROWS: usize = 10;

/// What every command needs: the parsed line, where output goes and how it looks.
pub(crate) struct Ctx<'a> {
    pub inv: &'a Invocation,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub paint: Painter,
    /// The width tables fit; `None` (`--wide`): cut nothing.
    pub width: Option<usize>,
    /// `--dir`, `$BLACKBOX_DIR`, and where the search upward starts.
    given_dir: Option<PathBuf>,
    env_dir: Option<PathBuf>,
    cwd: PathBuf,
}

impl<'a> Ctx<'a> {
    pub fn new(
        inv: &'a Invocation,
        env: &Env,
        out: &'a mut dyn Write,
        err: &'a mut dyn Write,
    ) -> Ctx<'a> {
        let enabled = match inv.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => env.stdout_is_tty && !env.no_color,
        };
        let width = (!inv.wide).then(|| env.columns.map_or(DEFAULT_WIDTH, |c| c.max(MIN_WIDTH)));
        Ctx {
            inv,
            out,
            err,
            paint: Painter { enabled },
            width,
            given_dir: inv.dir.clone(),
            env_dir: env.blackbox_dir.clone(),
            cwd: env
                .cwd
                .clone()
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_else(|| PathBuf::from(".")),
        }
    }

    /// Where the command runs (the search for the store starts there).
    pub(crate) fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// `--dir`, from the current directory (combine's target; "." when none was given).
    pub(crate) fn given_dir(&self) -> PathBuf {
        self.cwd
            .join(self.given_dir.as_deref().unwrap_or_else(|| Path::new(".")))
    }

    /// The store, found as pytest finds its rootdir (see [`crate::locate`]).
    pub(crate) fn store(&self) -> Result<Store, Failure> {
        let (dir, _) = crate::locate::find_store(
            self.given_dir.as_deref(),
            self.env_dir.as_deref(),
            &self.cwd,
        )?;
        Ok(Store::open(&dir)?)
    }

    fn p<'t>(&self, text: &'t str, style: Style) -> std::borrow::Cow<'t, str> {
        self.paint.paint(text, Some(style))
    }

    /// A JSON object, one key a line and one list item a line (see [`write_doc`]).
    pub(super) fn json(&mut self, value: &Json) -> Result<(), Failure> {
        let parts: Vec<(&str, Part<'_>)> = match value {
            Json::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    Json::Array(items) => (k.as_str(), Part::Many(Box::new(items.iter().cloned()))),
                    other => (k.as_str(), Part::One(other.clone())),
                })
                .collect(),
            other => return write_value(self.out, other).map_err(Failure::Output),
        };
        write_doc(self.out, parts)
    }

    pub(super) fn warn(&mut self, line: &str) -> Result<(), Failure> {
        writeln!(self.err, "blackbox: warning: {}", clean(line))?;
        Ok(())
    }
}

/// One value of a JSON document, or a list written item by item.
enum Part<'a> {
    One(Json),
    Many(Box<dyn Iterator<Item = Json> + 'a>),
    /// Tests, each written straight from its view (`TestView::to_json`'s object).
    Tests(Box<dyn Iterator<Item = &'a TestView> + 'a>),
}

fn write_value(out: &mut dyn Write, value: &Json) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, value).map_err(std::io::Error::from)?;
    out.write_all(b"\n")
}

/// Writes an object whose lists are produced one item at a time: a run of 100k tests never
/// exists as one JSON tree. Layout: one key a line, one list item a line (grep-friendly,
/// and any JSON parser reads it).
fn write_doc(out: &mut dyn Write, parts: Vec<(&str, Part<'_>)>) -> Result<(), Failure> {
    let json_err = |e: serde_json::Error| Failure::Output(e.into());
    out.write_all(b"{")?;
    for (i, (key, part)) in parts.into_iter().enumerate() {
        out.write_all(if i == 0 { b"\n  " } else { b",\n  " })?;
        serde_json::to_writer(&mut *out, key).map_err(json_err)?;
        out.write_all(b": ")?;
        match part {
            Part::One(v) => serde_json::to_writer(&mut *out, &v).map_err(json_err)?,
            Part::Many(items) => {
                out.write_all(b"[")?;
                let mut empty = true;
                for item in items {
                    out.write_all(if empty { b"\n    " } else { b",\n    " })?;
                    serde_json::to_writer(&mut *out, &item).map_err(json_err)?;
                    empty = false;
                }
                out.write_all(if empty { b"]" } else { b"\n  ]" })?;
            }
            Part::Tests(items) => {
                out.write_all(b"[")?;
                let mut empty = true;
                for t in items {
                    out.write_all(if empty { b"\n    " } else { b",\n    " })?;
                    serde_json::to_writer(&mut *out, &TestJson(t)).map_err(json_err)?;
                    empty = false;
                }
                out.write_all(if empty { b"]" } else { b"\n  ]" })?;
            }
        }
    }
    out.write_all(b"\n}\n")?;
    Ok(())
}

pub(crate) fn dispatch(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    match cx.inv.command {
        Command::Stats => stats(cx),
        Command::Tests => tests(cx),
        Command::Fixtures => fixtures(cx),
        Command::Crashes => crashes(cx),
        Command::Dump => dump(cx),
        Command::Runs => runs(cx),
        Command::Check => check(cx),
        Command::Report => report(cx),
        Command::Show => super::show::show(cx),
        Command::Flaky => super::history::flaky(cx),
        Command::History => super::history::history(cx),
        Command::Slower => super::history::slower(cx),
        Command::Combine => super::history::combine(cx),
        Command::Junit => super::junit::junit(cx),
        Command::Run => super::supervise::run(cx),
        Command::Help | Command::Version => unreachable!("handled before a store is opened"),
    }
}

// ---------------------------------------------------------------------------------------
// Reading a run
// ---------------------------------------------------------------------------------------

/// The run `--run` names (its id, or a unique start of it), else the latest.
pub(crate) fn resolve_run(store: &Store, wanted: Option<&str>) -> Result<String, Failure> {
    Ok(store.resolve_run(wanted)?)
}

/// A run read now: the view and the segments' state.
pub(crate) struct Loaded {
    pub view: RunView,
    pub statuses: Vec<SegmentStatus>,
}

/// Fails when the run folder cannot be listed: a follower would see an empty run.
pub(crate) fn list_run(dir: &Path) -> Result<(), Failure> {
    std::fs::read_dir(dir).map(drop).map_err(|e| Error::Io {
        path: dir.to_owned(),
        action: "listing run folder",
        source: e,
    })?;
    Ok(())
}

/// A segment a newer blackbox wrote cannot be half-read: that is an error, not damage.
fn refuse_unsupported(statuses: &[SegmentStatus]) -> Result<(), Failure> {
    for s in statuses {
        if s.damage.as_ref().is_some_and(|d| d.offset == 0) {
            if let Err(e @ Error::UnsupportedVersion { .. }) = SegmentReader::open(&s.path) {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

pub(crate) fn load_id(store: &Store, id: &str) -> Result<Loaded, Failure> {
    let dir = store.run_path(id)?;
    list_run(&dir)?;
    let mut follower = Follower::new(id, &dir);
    let mut agg = Aggregate::default();
    follower.poll_into(&mut agg);
    let statuses = follower.statuses();
    refuse_unsupported(&statuses)?;
    let view = agg.view(id, &statuses);
    drop_later(agg);
    drop_later(follower);
    Ok(Loaded { view, statuses })
}

/// Frees a large value on another thread: freeing a million-record aggregate costs a tenth
/// of a `stats`, and nobody waits for it (the process may exit first, which is fine).
fn drop_later<T: Send + 'static>(value: T) {
    // When no thread can start, `spawn` drops the closure, and the value with it, right here.
    let _ = std::thread::Builder::new()
        .name("blackbox-drop".into())
        .spawn(move || drop(value));
}

/// Reads the run the command line names, warning (one line) about damage.
fn load(cx: &mut Ctx<'_>) -> Result<Loaded, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let mut loaded = load_id(&store, &id)?;
    // A resumed run reads as its whole logical run (issue 14).
    if loaded.view.run.resumes.is_some() {
        loaded.view = store.with_earlier_attempts(std::mem::take(&mut loaded.view));
    }
    warn_damage(
        cx,
        &id,
        loaded.statuses.iter().filter_map(|s| s.damage.as_ref()),
    )?;
    Ok(loaded)
}

pub(crate) fn warn_damage<'d>(
    cx: &mut Ctx<'_>,
    id: &str,
    damage: impl Iterator<Item = &'d Damage>,
) -> Result<(), Failure> {
    let damage: Vec<&Damage> = damage.collect();
    let Some(first) = damage.first() else {
        return Ok(());
    };
    let what = if damage.len() == 1 {
        "a damaged segment".to_owned()
    } else {
        format!("{} damaged segments", damage.len())
    };
    let line = format!(
        "run {id} has {what}; everything before the damage was read; {first}{} (`blackbox check` lists all)",
        if damage.len() > 1 { " and more" } else { "" }
    );
    cx.warn(&line)
}

// ---------------------------------------------------------------------------------------
// Orders and small helpers
// ---------------------------------------------------------------------------------------

/// Crashes first, then tests that never finished, then failures, then the rest.
fn rank(outcome: &str) -> u8 {
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
fn sorted_tests<'v>(tests: &'v [TestView], outcomes: &[String]) -> Vec<&'v TestView> {
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
fn sorted_fixtures(view: &RunView, all: bool) -> Vec<&FixtureStats> {
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
fn take<T>(v: Vec<T>, limit: Option<usize>) -> Vec<T> {
    match limit {
        Some(n) if n > 0 => v.into_iter().take(n).collect(),
        _ => v,
    }
}

fn opt_str(s: Option<&str>) -> &str {
    s.unwrap_or("-")
}

fn pid_str(pid: Option<u32>) -> String {
    pid.map_or_else(|| "-".into(), |p| p.to_string())
}

fn outcome_cell(t: &TestView) -> Cell {
    let text = match (t.crashed, t.signal) {
        (true, Some(sig)) => format!("{} {}", t.outcome, signal_name(sig)),
        _ => t.outcome.clone(),
    };
    Cell::styled(text, Style::of_outcome(&t.outcome))
}

fn test_table(tests: &[&TestView]) -> Table {
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

fn fixture_table(fixtures: &[&FixtureStats]) -> Table {
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
fn crash_table(crashes: &[&CrashView], frames: Option<bool>) -> Table {
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
        let mut notes = vec![Note::Text(super::show::crash_sentence(c))];
        let inline = frames.map(|full| super::show::traceback_notes(c, full));
        match inline {
            Some(tb) if !tb.is_empty() => notes.extend(tb),
            _ => {
                for a in super::show::attachments_with_text(c) {
                    notes.push(Note::Text(format!("traceback: {a}")));
                }
            }
        }
        table.push_with_notes(row, notes);
    }
    table
}

/// `live`, `exit 0`, or `no end record` for a run whose session never ended.
fn run_state(view: &RunView) -> (String, Option<Style>) {
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
fn run_json(view: &RunView) -> Json {
    view.to_json_without_lists()["run"].take()
}

/// `RunView::to_json` of a view with the same run but no tests, fixtures, crashes or
/// workers: the run object without serializing every test.
trait WithoutLists {
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

fn section(cx: &mut Ctx<'_>, title: &str, shown: usize, total: usize) -> Result<(), Failure> {
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

// ---------------------------------------------------------------------------------------
// stats
// ---------------------------------------------------------------------------------------

fn stats(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    if cx.inv.json {
        // The shape of `RunView::to_json`, its lists streamed (a test checks they agree).
        let all = view.to_json_without_lists();
        let parts: Vec<(&str, Part<'_>)> = vec![
            (
                "crashes",
                Part::Many(Box::new(view.crashes.iter().map(CrashView::to_json))),
            ),
            (
                "exits",
                Part::Many(Box::new(view.exits.iter().map(ExitView::to_json))),
            ),
            (
                "fixtures",
                Part::Many(Box::new(view.fixtures.iter().map(FixtureStats::to_json))),
            ),
            (
                "problems",
                Part::Many(Box::new(
                    view.problems.iter().map(|p| Json::String(p.clone())),
                )),
            ),
            ("run", Part::One(all["run"].clone())),
            ("tests", Part::Tests(Box::new(view.tests.iter()))),
            (
                "timed",
                Part::Many(Box::new(view.timed.iter().map(FixtureStats::to_json))),
            ),
            (
                "workers",
                Part::Many(Box::new(
                    view.workers
                        .iter()
                        .map(crate::aggregate::WorkerView::to_json),
                )),
            ),
        ];
        write_doc(cx.out, parts)?;
        drop_later(view);
        return Ok(0);
    }
    let limit = match cx.inv.limit {
        None => STATS_ROWS,
        Some(0) => usize::MAX,
        Some(n) => n,
    };
    let width = cx.width;
    let paint = cx.paint;

    // Header: which run, how it ended, where, when.
    let (state, state_style) = run_state(&view);
    let mut head = vec![
        format!("run {}", view.run.id),
        paint.paint(&state, state_style).into_owned(),
    ];
    if let Some(h) = &view.run.host {
        head.push(format!("host {}", clean(h)));
    }
    if let Some(r) = &view.run.resumes {
        head.push(format!(
            "attempt {} (resumes {})",
            view.run.attempt,
            clean(r)
        ));
    }
    head.push(plural(view.segments as u64, "process", "processes"));
    head.push(plural(view.records, "record", "records"));
    for line in join_fitted(&head, width) {
        writeln!(cx.out, "{line}")?;
    }
    let mut when = Vec::new();
    if let Some(start) = view.run.started_wall_ns {
        when.push(format!("started {}", local_time(start)));
        let end = view
            .run
            .ended_wall_ns
            .or_else(|| view.run.live.then(crate::clock::now_wall_ns));
        if let Some(end) = end {
            let verb = if view.run.ended_wall_ns.is_some() {
                "took"
            } else {
                "running for"
            };
            when.push(format!(
                "{verb} {}",
                duration(end.saturating_sub(start) as f64 / 1e9)
            ));
        }
    }
    if !view.run.argv.is_empty() {
        when.push(clean(&command_line(&view.run.argv)).into_owned());
    }
    for line in join_fitted(&when, width) {
        writeln!(cx.out, "{line}")?;
    }

    // Outcome counts, in a fixed order.
    let mut by_outcome: HashMap<&str, u64> = HashMap::new();
    for t in &view.tests {
        *by_outcome.entry(t.outcome.as_str()).or_default() += 1;
    }
    let order = [
        "passed",
        "failed",
        "error",
        "skipped",
        "crashed",
        "unfinished",
        "running",
        "unknown",
    ];
    let mut parts: Vec<String> = Vec::new();
    let never_ran = by_outcome.remove("not-run").unwrap_or(0);
    for o in order {
        if let Some(&n) = by_outcome.get(o) {
            parts.push(
                paint
                    .paint(&format!("{} {o}", count(n)), Style::of_outcome(o))
                    .into_owned(),
            );
        }
    }
    let mut others: Vec<(&&str, &u64)> = by_outcome
        .iter()
        .filter(|(o, _)| !order.contains(o))
        .collect();
    others.sort();
    for (o, n) in others {
        parts.push(format!("{} {}", count(*n), clean(o)));
    }
    if never_ran > 0 {
        parts.push(
            paint
                .paint(
                    &format!("{} never ran", count(never_ran)),
                    Style::of_outcome("not-run"),
                )
                .into_owned(),
        );
    }
    let total = view.tests.len();
    if total == 0 {
        writeln!(cx.out, "tests: none recorded yet")?;
    } else {
        writeln!(
            cx.out,
            "tests {}: {}",
            count(total as u64),
            parts.join(" · ")
        )?;
    }

    // Only what is shown gets sorted: a run of 100k tests has few that did not pass.
    let bad_outcomes: Vec<String> = [
        "crashed",
        "timeout",
        "unfinished",
        "running",
        "failed",
        "error",
    ]
    .map(String::from)
    .into();
    let bad = sorted_tests(&view.tests, &bad_outcomes);
    if !bad.is_empty() {
        section(
            cx,
            "crashed, unfinished and failed",
            bad.len().min(limit),
            bad.len(),
        )?;
        let shown: Vec<&TestView> = bad.into_iter().take(limit).collect();
        test_table(&shown).write(cx.out, width, 2, paint)?;
    }
    if total > 0 {
        let slowest_first = |a: &&TestView, b: &&TestView| {
            b.duration_s
                .total_cmp(&a.duration_s)
                .then_with(|| a.nodeid.cmp(&b.nodeid))
        };
        let mut slow: Vec<&TestView> = view
            .tests
            .iter()
            .filter(|t| t.outcome != "not-run")
            .collect();
        if limit < slow.len() {
            slow.select_nth_unstable_by(limit, slowest_first);
            slow.truncate(limit);
        }
        slow.sort_by(slowest_first);
        section(cx, "slowest tests", slow.len(), total)?;
        test_table(&slow).write(cx.out, width, 2, paint)?;
    }
    let fixtures = sorted_fixtures(&view, cx.inv.all);
    if !fixtures.is_empty() {
        let n = fixtures.len();
        let shown: Vec<&FixtureStats> = fixtures.into_iter().take(limit).collect();
        section(cx, "slowest fixtures", shown.len(), n)?;
        fixture_table(&shown).write(cx.out, width, 2, paint)?;
    }
    if !view.crashes.is_empty() {
        let shown: Vec<&CrashView> = view.crashes.iter().take(limit).collect();
        section(cx, "crashes", shown.len(), view.crashes.len())?;
        crash_table(&shown, None).write(cx.out, width, 2, paint)?;
    }
    if !view.workers.is_empty() {
        section(cx, "workers", view.workers.len(), view.workers.len())?;
        let mut table = Table::new(vec![
            Column::left("WORKER"),
            Column::right("TESTS"),
            Column::right("CRASHES"),
            Column::left("STATE"),
            Column::shrinking("PIDS"),
        ]);
        for w in &view.workers {
            let pids = if w.pids.len() > 8 {
                format!(
                    "{} … ({} processes)",
                    w.pids[..4]
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(" "),
                    w.pids.len()
                )
            } else {
                w.pids
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            table.push(vec![
                Cell::new(&w.id),
                Cell::new(count(w.tests)),
                Cell::styled(count(w.crashes), (w.crashes > 0).then_some(Style::Red)),
                Cell::styled(
                    if w.alive { "running" } else { "ended" },
                    w.alive.then_some(Style::Cyan),
                ),
                Cell::new(pids),
            ]);
        }
        table.write(cx.out, width, 2, paint)?;
    }
    if !view.problems.is_empty() {
        section(cx, "damage", view.problems.len(), view.problems.len())?;
        for p in &view.problems {
            writeln!(cx.out, "  {}", cx.p(&clean(p), Style::Red))?;
        }
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// tests, fixtures, crashes
// ---------------------------------------------------------------------------------------

fn tests(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let matching = sorted_tests(&view.tests, &cx.inv.outcomes);
    let n = matching.len();
    let shown = take(matching, cx.inv.limit);
    if cx.inv.json {
        let parts = vec![
            ("run", Part::One(run_json(&view))),
            ("tests", Part::Tests(Box::new(shown.iter().copied()))),
        ];
        write_doc(cx.out, parts)?;
        return Ok(0);
    }
    if shown.is_empty() {
        let what = if cx.inv.outcomes.is_empty() {
            String::new()
        } else {
            format!(" {}", cx.inv.outcomes.join("/"))
        };
        writeln!(cx.out, "no{what} tests in run {}", view.run.id)?;
        return Ok(0);
    }
    test_table(&shown).write(cx.out, cx.width, 0, cx.paint)?;
    if shown.len() < n {
        writeln!(
            cx.out,
            "{}",
            cx.p(
                &format!(
                    "{} of {} tests shown (--limit)",
                    count(shown.len() as u64),
                    count(n as u64)
                ),
                Style::Dim
            )
        )?;
    }
    Ok(0)
}

fn fixtures(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let all = sorted_fixtures(&view, cx.inv.all);
    let n = all.len();
    let shown = take(all, cx.inv.limit);
    if cx.inv.json {
        let fixture_rows: std::collections::HashSet<*const FixtureStats> =
            view.fixtures.iter().map(std::ptr::from_ref).collect();
        let (fixtures, timed): (Vec<&&FixtureStats>, Vec<&&FixtureStats>) = shown
            .iter()
            .partition(|f| fixture_rows.contains(&std::ptr::from_ref(**f)));
        cx.json(&json!({
            "run": run_json(&view),
            "fixtures": fixtures.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
            "timed": timed.iter().map(|f| f.to_json()).collect::<Vec<_>>(),
        }))?;
        return Ok(0);
    }
    if shown.is_empty() {
        writeln!(cx.out, "no fixture timings in run {}", view.run.id)?;
        return Ok(0);
    }
    fixture_table(&shown).write(cx.out, cx.width, 0, cx.paint)?;
    if shown.len() < n {
        writeln!(
            cx.out,
            "{}",
            cx.p(
                &format!(
                    "{} of {} fixtures shown (--limit)",
                    count(shown.len() as u64),
                    count(n as u64)
                ),
                Style::Dim
            )
        )?;
    }
    Ok(0)
}

fn crashes(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let n = view.crashes.len();
    let shown = take(view.crashes.iter().collect::<Vec<_>>(), cx.inv.limit);
    if cx.inv.json {
        cx.json(&json!({
            "run": run_json(&view),
            "crashes": shown.iter().map(|c| c.to_json()).collect::<Vec<_>>(),
        }))?;
        return Ok(0);
    }
    if shown.is_empty() {
        writeln!(cx.out, "no crashes in run {}", view.run.id)?;
        return Ok(0);
    }
    crash_table(&shown, Some(cx.inv.full)).write(cx.out, cx.width, 0, cx.paint)?;
    if shown.len() < n {
        writeln!(
            cx.out,
            "{}",
            cx.p(
                &format!(
                    "{} of {} crashes shown (--limit)",
                    count(shown.len() as u64),
                    count(n as u64)
                ),
                Style::Dim
            )
        )?;
    }
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// runs
// ---------------------------------------------------------------------------------------

fn runs(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let ids = store.runs()?;
    // The newest runs are the ones asked about: --limit keeps the last N.
    let ids: Vec<String> = match cx.inv.limit {
        Some(n) if n > 0 && n < ids.len() => ids[ids.len() - n..].to_vec(),
        _ => ids,
    };
    let mut rows: Vec<(String, Result<RunView, String>)> = Vec::with_capacity(ids.len());
    for id in ids {
        let view = load_id(&store, &id)
            .map(|l| l.view)
            .map_err(|f| f.to_string());
        rows.push((id, view));
    }
    if cx.inv.json {
        let runs: Vec<Json> = rows
            .iter()
            .map(|(id, v)| match v {
                Ok(v) => {
                    let mut r = run_json(v);
                    r["tests"] = json!(v.tests.len());
                    r["crashes"] = json!(v.crashes.len());
                    r["problems"] = json!(v.problems);
                    r
                }
                Err(e) => json!({"id": id, "error": e}),
            })
            .collect();
        cx.json(&json!({"store": store.root().to_string_lossy(), "runs": runs}))?;
        return Ok(0);
    }
    if rows.is_empty() {
        writeln!(
            cx.out,
            "no runs in {} yet; run pytest with the plugin first",
            store.root().display()
        )?;
        return Ok(0);
    }
    let mut table = Table::new(vec![
        Column::left("RUN"),
        Column::left("STARTED"),
        Column::right("TESTS"),
        Column::right("CRASHES"),
        Column::left("STATE"),
        Column::shrinking("HOST"),
    ]);
    for (id, v) in &rows {
        match v {
            Ok(v) => {
                let (state, style) = run_state(v);
                let state = if v.problems.is_empty() {
                    state
                } else {
                    format!("{state}, damaged")
                };
                table.push(vec![
                    Cell::new(id),
                    Cell::new(v.run.started_wall_ns.map_or_else(|| "-".into(), local_time)),
                    Cell::new(count(v.tests.len() as u64)),
                    Cell::styled(
                        count(v.crashes.len() as u64),
                        (!v.crashes.is_empty()).then_some(Style::Red),
                    ),
                    Cell::styled(
                        state,
                        if v.problems.is_empty() {
                            style
                        } else {
                            Some(Style::Red)
                        },
                    ),
                    Cell::new(opt_str(v.run.host.as_deref())),
                ]);
            }
            Err(e) => table.push(vec![
                Cell::new(id),
                Cell::new("-"),
                Cell::new("-"),
                Cell::new("-"),
                Cell::styled(format!("unreadable: {e}"), Some(Style::Red)),
                Cell::new("-"),
            ]),
        }
    }
    table.write(cx.out, cx.width, 0, cx.paint)?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------

struct Checked {
    id: String,
    segments: usize,
    records: u64,
    problems: Vec<Damage>,
}

fn check_run(store: &Store, id: &str) -> Checked {
    let mut c = Checked {
        id: id.to_owned(),
        segments: 0,
        records: 0,
        problems: Vec::new(),
    };
    let dir = match store.run_path(id) {
        Ok(d) => d,
        Err(e) => {
            c.problems.push(Damage {
                path: store.root().join(id),
                offset: 0,
                reason: e.to_string(),
            });
            return c;
        }
    };
    if let Err(e) = std::fs::read_dir(&dir) {
        c.problems.push(Damage {
            path: dir,
            offset: 0,
            reason: format!("cannot list the run folder: {e}"),
        });
        return c;
    }
    let mut follower = Follower::new(id, &dir);
    // Streaming into a throwaway aggregate verifies every frame without holding the run.
    follower.poll_into(&mut Aggregate::default());
    c.records = follower.records_read();
    let statuses = follower.statuses();
    c.segments = statuses.len();
    c.problems = statuses.into_iter().filter_map(|s| s.damage).collect();
    c
}

fn check(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let ids = match cx.inv.run.as_deref() {
        Some(r) => vec![resolve_run(&store, Some(r))?],
        None => store.runs()?,
    };
    let checked: Vec<Checked> = ids.iter().map(|id| check_run(&store, id)).collect();
    let damaged: usize = checked.iter().map(|c| c.problems.len()).sum();
    let damaged_runs = checked.iter().filter(|c| !c.problems.is_empty()).count();
    let code = i32::from(damaged > 0);
    if cx.inv.json {
        let runs: Vec<Json> = checked
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "segments": c.segments,
                    "records": c.records,
                    "problems": c.problems.iter().map(|d| json!({
                        "path": d.path.to_string_lossy(),
                        "offset": d.offset,
                        "reason": d.reason,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        cx.json(&json!({"store": store.root().to_string_lossy(), "ok": code == 0, "runs": runs}))?;
        return Ok(code);
    }
    for c in &checked {
        let verdict = if c.problems.is_empty() {
            cx.p("ok", Style::Green)
        } else {
            cx.p("DAMAGED", Style::BoldRed)
        };
        writeln!(
            cx.out,
            "{}  {verdict}  {}, {}",
            c.id,
            plural(c.segments as u64, "segment", "segments"),
            plural(c.records, "record", "records")
        )?;
        for d in &c.problems {
            writeln!(cx.out, "  {}", clean(&d.to_string()))?;
        }
    }
    let segments: usize = checked.iter().map(|c| c.segments).sum();
    let records: u64 = checked.iter().map(|c| c.records).sum();
    let runs = checked.len();
    if damaged == 0 {
        writeln!(
            cx.out,
            "{}: {}, {}, {} in {}",
            cx.p("no damage", Style::Green),
            plural(runs as u64, "run", "runs"),
            plural(segments as u64, "segment", "segments"),
            plural(records, "record", "records"),
            store.root().display()
        )?;
    } else {
        writeln!(
            cx.out,
            "{}: {} damaged or unreadable in {} of {}; the records before each damage are still read",
            cx.p("damage found", Style::BoldRed),
            plural(damaged as u64, "file", "files"),
            count(damaged_runs as u64),
            plural(runs as u64, "run", "runs")
        )?;
    }
    Ok(code)
}

// ---------------------------------------------------------------------------------------
// dump
// ---------------------------------------------------------------------------------------

/// Records `dump` reads at a time from one segment.
const DUMP_CHUNK: usize = 4096;

fn write_dump_line(
    cx: &mut Ctx<'_>,
    jsonl: bool,
    segment: &str,
    pid: u32,
    offset: u64,
    rec: &crate::Record,
) -> Result<(), Failure> {
    let mut obj = rec.to_json();
    if jsonl {
        if let Json::Object(map) = &mut obj {
            map.insert("segment".into(), Json::String(segment.to_owned()));
            map.insert("segment_pid".into(), json!(pid));
            map.insert("offset".into(), json!(offset));
        }
        serde_json::to_writer(&mut *cx.out, &obj).map_err(|e| Failure::Output(e.into()))?;
        cx.out.write_all(b"\n")?;
    } else {
        if let Json::Object(map) = &mut obj {
            map.remove("kind");
        }
        let fields = serde_json::to_string(&obj).unwrap_or_default();
        writeln!(
            cx.out,
            "  {offset:>10}  {:<16} {}",
            rec.kind(),
            clean(&fields)
        )?;
    }
    Ok(())
}

/// Streams every record, segment by segment, in chunks: memory never holds a whole segment,
/// let alone the whole run.
fn dump(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let dir = store.run_path(&id)?;
    let entries = std::fs::read_dir(&dir).map_err(|e| Error::Io {
        path: dir.clone(),
        action: "listing run folder",
        source: e,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| is_segment_name(&e.file_name()))
        .map(|e| e.path())
        .collect();
    // First pass: refuse a newer format before printing anything; order by creation.
    let mut order: Vec<(u64, PathBuf)> = Vec::with_capacity(paths.len());
    let mut damage: Vec<Damage> = Vec::new();
    for p in paths.drain(..) {
        match SegmentReader::open(&p) {
            Ok(r) => order.push((r.info().created_wall_ns, p)),
            Err(e @ Error::UnsupportedVersion { .. }) => return Err(e.into()),
            Err(Error::Damaged(d)) => damage.push(d),
            Err(e) => damage.push(Damage {
                path: p,
                offset: 0,
                reason: e.to_string(),
            }),
        }
    }
    order.sort();
    let jsonl = cx.inv.jsonl || cx.inv.json;
    for (_, path) in order {
        let reader = match SegmentReader::open(&path) {
            Ok(r) => r,
            Err(e) => {
                damage.push(Damage {
                    path,
                    offset: 0,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let info = reader.info();
        let path_text = path.to_string_lossy().into_owned();
        if !jsonl {
            // A forked child ends with os._exit, never closing its segment: when its test
            // was over (no test in the header's slot, no crash mark) it finished.
            let forked = matches!(
                reader.read_range(HEADER_SIZE, 1).records.first(),
                Some((
                    _,
                    crate::Record::Process {
                        role: crate::Role::Forked,
                        ..
                    }
                ))
            );
            let finished_child =
                forked && reader.crash_mark().is_none() && reader.current_test().is_none();
            let state = if reader.writer_alive() {
                "writer alive"
            } else if info.closed_cleanly {
                "closed cleanly"
            } else if finished_child {
                "closed (forked child, its test finished)"
            } else {
                "writer died"
            };
            let mut head = format!("{}  pid {}  {state}", path_text, info.pid);
            if let Some(m) = reader.crash_mark() {
                let _ = write!(head, "  crashed: {}", signal_name(m.signal));
            }
            writeln!(cx.out, "{}", cx.p(&clean(&head), Style::Bold))?;
        }
        // Chunks of records: memory holds one chunk, whatever the size of the segment.
        let mut next = HEADER_SIZE;
        loop {
            let batch = reader.read_range(next, DUMP_CHUNK);
            for (offset, rec) in &batch.records {
                write_dump_line(cx, jsonl, &path_text, info.pid, *offset, rec)?;
            }
            if let Some(d) = batch.damage {
                if !jsonl {
                    writeln!(
                        cx.out,
                        "  {}",
                        cx.p(&clean(&format!("stopped: {d}")), Style::Red)
                    )?;
                }
                damage.push(d);
                break;
            }
            if batch.records.is_empty() || batch.next <= next {
                break;
            }
            next = batch.next;
        }
    }
    warn_damage(cx, &id, damage.iter())?;
    Ok(0)
}

// ---------------------------------------------------------------------------------------
// report
// ---------------------------------------------------------------------------------------

fn report(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let Loaded { view, .. } = load(cx)?;
    let store = cx.store()?;
    // The runs up to this one: an older run's report shows nothing that came after it.
    let path = store.history_path();
    let strips = if path.exists() {
        crate::history::History::open(&path)
            .map(|h| h.with_wait(super::show::HISTORY_WAIT))
            .and_then(|h| {
                h.strips_upto(
                    &view.run.id,
                    super::html::HISTORY_RUNS,
                    &super::html::history_wanted(&view),
                )
            })
            // Unreadable (busy, damaged, refused): no strips, the rest of the page is there.
            .unwrap_or_default()
    } else {
        crate::history::Strips::default()
    };
    let html = super::html::render(&view, crate::clock::now_mono_ns(), &strips);
    let target = cx.inv.html.clone().expect("the parser requires --html");
    if target.as_os_str() == "-" {
        cx.out.write_all(html.as_bytes())?;
        return Ok(0);
    }
    std::fs::write(&target, html.as_bytes()).map_err(|e| Error::Io {
        path: target.clone(),
        action: "writing report",
        source: e,
    })?;
    writeln!(
        cx.out,
        "wrote {}: {}, {}, {} (run {})",
        clean(&target.to_string_lossy()),
        plural(view.tests.len() as u64, "test", "tests"),
        plural(view.crashes.len() as u64, "crash", "crashes"),
        plural(
            (view.fixtures.len() + view.timed.len()) as u64,
            "fixture",
            "fixtures"
        ),
        view.run.id
    )?;
    Ok(0)
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
