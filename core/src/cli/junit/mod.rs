//! `blackbox junit -o FILE`: `JUnit` XML for any run, a dead one included, shaped as pytest's
//! junitxml writes it (`classname`/`name` from the nodeid, the failure's message and
//! longrepr, `<skipped type="pytest.skip">`), with what pytest cannot write after it died:
//! crashed and timed-out tests as `<failure>` with the crash story and the traceback.
//!
//! Two families, as pytest's `junit_family`: `xunit2` (the default) validates against the
//! xunit2 schema pytest's own tests use (`tests/data/junit-10.xsd`), which has no
//! `<properties>` in a `<testcase>` and no `<error>`: a test's properties are in the text
//! of its `<failure>`/`<skipped>`, and a setup or teardown error is a `<failure>` whose
//! message says so. `xunit1` is pytest's other shape: `<properties>` in each testcase,
//! `<error>` for errors, and a `file` attribute.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::args::Family;
use super::context::{list_run, resolve_run, warn_damage, Ctx, Failure};
use super::crash_text::{attachments_with_text, crash_sentence};
use crate::aggregate::{Aggregate, CrashView, RunView, TestView};
use crate::error::Error;
use crate::follower::Follower;
use crate::record::{Phase, Record, Value};
use crate::store::Store;

/// pytest's budget for the `message` attribute (`_pytest.junitxml.MESSAGE_ATTR_BUDGET`).
const MESSAGE_BUDGET: usize = 500;
/// The width pytest's `TerminalWriter` renders a longrepr at when it is not a terminal.
const TERMINAL_WIDTH: usize = 80;
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

// ---------------------------------------------------------------------------------------
// From a run to cases
// ---------------------------------------------------------------------------------------

/// A run read with its follower kept, to read the pytest reports its phases recorded.
pub(crate) struct Read {
    pub view: RunView,
    follower: Follower,
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

/// (message, text) of a failed report: `reprcrash.message` and `str(longrepr)`.
fn failure_of(report: Option<&Value>, fallback: &str) -> (String, String) {
    let Some(longrepr) = report.and_then(|r| get(r, "longrepr")) else {
        return (
            fallback.to_owned(),
            "blackbox: pytest's report of this phase was not recorded".to_owned(),
        );
    };
    let text = longrepr_text(longrepr);
    let message = get(longrepr, "reprcrash")
        .and_then(|c| get(c, "message"))
        .and_then(as_str)
        .map_or_else(|| text.clone(), str::to_owned);
    (message, text)
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

fn get<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v {
        Value::Dict(items) => items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Value::None)),
        _ => None,
    }
}

fn as_str(v: &Value) -> Option<&str> {
    match v {
        Value::Str(s) => Some(s),
        _ => None,
    }
}

fn list(v: Option<&Value>) -> &[Value] {
    match v {
        Some(Value::List(items)) => items,
        _ => &[],
    }
}

fn strs(v: Option<&Value>) -> impl Iterator<Item = &str> {
    list(v).iter().filter_map(as_str)
}

/// `str(report.longrepr)` from its serialized form (`pytest_report_to_serializable`):
/// pytest's `toterminal` of each traceback of the chain, at [`TERMINAL_WIDTH`].
pub(crate) fn longrepr_text(longrepr: &Value) -> String {
    let mut out = String::new();
    match longrepr {
        Value::Str(s) => return s.clone(),
        Value::List(items) => {
            return items.iter().map(python_str).collect::<Vec<_>>().join(", ");
        }
        Value::Dict(_) => {}
        other => return python_str(other),
    }
    let chain = list(get(longrepr, "chain"));
    if chain.is_empty() {
        if let Some(tb) = get(longrepr, "reprtraceback") {
            write_traceback(&mut out, tb);
        }
    }
    for element in chain {
        let parts = list(Some(element));
        if let Some(tb) = parts.first() {
            write_traceback(&mut out, tb);
        }
        if let Some(descr) = parts.get(2).and_then(as_str) {
            out.push('\n');
            out.push_str(descr);
            out.push('\n');
        }
    }
    for section in list(get(longrepr, "sections")) {
        let parts = list(Some(section));
        let (Some(name), Some(content)) = (
            parts.first().and_then(as_str),
            parts.get(1).and_then(as_str),
        ) else {
            continue;
        };
        let sep = parts.get(2).and_then(as_str).unwrap_or("-");
        out.push_str(&separator(sep, Some(name)));
        out.push('\n');
        for l in content.split('\n') {
            out.push_str(l);
            out.push('\n');
        }
    }
    out.trim().to_owned()
}

/// `ReprTraceback.toterminal`.
fn write_traceback(out: &mut String, tb: &Value) {
    let entries = list(get(tb, "reprentries"));
    let style_of = |e: &Value| {
        get(e, "data")
            .and_then(|d| get(d, "style"))
            .and_then(as_str)
            .unwrap_or("long")
            .to_owned()
    };
    for (i, entry) in entries.iter().enumerate() {
        let style = style_of(entry);
        if style == "long" {
            out.push('\n');
        }
        write_entry(out, entry, &style);
        if let Some(next) = entries.get(i + 1) {
            if style == "long" || (style == "short" && style_of(next) == "long") {
                out.push_str(&separator("_ ", None));
                out.push('\n');
            }
        }
    }
    if let Some(extra) = get(tb, "extraline").and_then(as_str) {
        out.push_str(extra);
        out.push('\n');
    }
}

/// `ReprEntry.toterminal` / `ReprEntryNative.toterminal`.
fn write_entry(out: &mut String, entry: &Value, style: &str) {
    let Some(data) = get(entry, "data") else {
        return;
    };
    let lines: Vec<&str> = strs(get(data, "lines")).collect();
    if get(entry, "type").and_then(as_str) == Some("ReprEntryNative") {
        out.push_str(&lines.concat());
        return;
    }
    let line = |out: &mut String, s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    if style == "value" {
        for l in lines {
            line(out, l);
        }
        return;
    }
    let args = list(get(data, "reprfuncargs").and_then(|a| get(a, "args")));
    if !args.is_empty() {
        let mut so_far = String::new();
        for arg in args {
            let pair = list(Some(arg));
            let (Some(name), Some(value)) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let ns = format!("{} = {}", python_str(name), python_str(value));
            if ns.len() + so_far.len() + 2 > TERMINAL_WIDTH {
                if !so_far.is_empty() {
                    line(out, &so_far);
                }
                so_far = ns;
            } else if so_far.is_empty() {
                so_far = ns;
            } else {
                so_far.push_str(", ");
                so_far.push_str(&ns);
            }
        }
        if !so_far.is_empty() {
            line(out, &so_far);
        }
        line(out, "");
    }
    for l in &lines {
        line(out, l);
    }
    let locals: Vec<&str> = strs(get(data, "reprlocals").and_then(|l| get(l, "lines"))).collect();
    if !locals.is_empty() {
        line(out, "");
        for l in locals {
            line(out, l);
        }
    }
    if let Some(loc) = get(data, "reprfileloc") {
        if !lines.is_empty() {
            line(out, "");
        }
        let path = get(loc, "path").map(python_str).unwrap_or_default();
        let lineno = get(loc, "lineno").map(python_str).unwrap_or_default();
        let msg = get(loc, "message").and_then(as_str).unwrap_or("");
        let msg = msg.split('\n').next().unwrap_or("");
        line(out, &format!("{path}:{lineno}: {msg}"));
    }
}

/// `TerminalWriter.sep(sepchar, title)` at [`TERMINAL_WIDTH`].
fn separator(sepchar: &str, title: Option<&str>) -> String {
    let n = sepchar.chars().count().max(1);
    match title {
        None => sepchar.repeat(TERMINAL_WIDTH / n),
        Some(title) => {
            let count = (TERMINAL_WIDTH.saturating_sub(title.chars().count() + 2) / (2 * n)).max(1);
            let fill = sepchar.repeat(count);
            let mut line = format!("{fill} {title} {fill}");
            let tail = sepchar.trim_end();
            if line.chars().count() + tail.chars().count() <= TERMINAL_WIDTH {
                line.push_str(tail);
            }
            line
        }
    }
}

/// Python's `str()` of a plain value (what junitxml writes for a property).
pub(crate) fn python_str(v: &Value) -> String {
    match v {
        Value::Str(s) => s.clone(),
        other => python_repr(other),
    }
}

fn python_repr(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Int(i) => i.to_string(),
        Value::BigInt(s) => s.clone(),
        Value::Float(f) => python_float(*f),
        Value::Str(s) => {
            let mut out = String::from("'");
            for c in s.chars() {
                match c {
                    '\'' => out.push_str("\\'"),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\t' => out.push_str("\\t"),
                    '\r' => out.push_str("\\r"),
                    c if c.is_control() => {
                        let _ = write!(out, "\\x{:02x}", u32::from(c));
                    }
                    c => out.push(c),
                }
            }
            out.push('\'');
            out
        }
        Value::Bytes(b) => {
            let mut out = String::from("b'");
            for &byte in b {
                match byte {
                    b'\'' => out.push_str("\\'"),
                    b'\\' => out.push_str("\\\\"),
                    b'\n' => out.push_str("\\n"),
                    0x20..=0x7e => out.push(char::from(byte)),
                    _ => {
                        let _ = write!(out, "\\x{byte:02x}");
                    }
                }
            }
            out.push('\'');
            out
        }
        Value::List(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Dict(items) => format!(
            "{{{}}}",
            items
                .iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::Str(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Python's `repr(float)`: the shortest text that reads back, exponent from 1e16 and
/// below 1e-4 as Python writes it (`1e-05`, `1e+16`).
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf".into() } else { "-inf".into() };
    }
    let a = f.abs();
    if a != 0.0 && !(1e-4..1e16).contains(&a) {
        let s = format!("{f:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{f:?}")
}

// ---------------------------------------------------------------------------------------
// XML
// ---------------------------------------------------------------------------------------

/// pytest's `bin_xml_escape`: characters XML 1.0 cannot hold (controls but tab, newline
/// and carriage return; DEL; U+FFFE and U+FFFF) written visibly as `#xNN`.
pub(crate) fn bin_xml_escape(s: &str) -> std::borrow::Cow<'_, str> {
    let illegal = |c: char| {
        let i = u32::from(c);
        (i < 0x20 && !matches!(c, '\t' | '\n' | '\r')) || i == 0x7f || i == 0xfffe || i == 0xffff
    };
    if !s.chars().any(illegal) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if illegal(c) {
            let i = u32::from(c);
            if i <= 0xff {
                let _ = write!(out, "#x{i:02X}");
            } else {
                let _ = write!(out, "#x{i:04X}");
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Text content: `bin_xml_escape`d, then `&`, `<`, `>` escaped.
pub(crate) fn xml_text(s: &str) -> String {
    xml_escape(s, false)
}

/// An attribute value in double quotes: as [`xml_text`], plus `"` and the whitespace an
/// attribute would otherwise fold into spaces.
pub(crate) fn xml_attr(s: &str) -> String {
    xml_escape(s, true)
}

fn xml_escape(s: &str, attribute: bool) -> String {
    let s = bin_xml_escape(s);
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let entity = match c {
            '&' => "&amp;",
            '<' => "&lt;",
            '>' => "&gt;",
            '"' if attribute => "&quot;",
            '\n' if attribute => "&#10;",
            '\r' if attribute => "&#13;",
            '\t' if attribute => "&#09;",
            c => {
                out.push(c);
                continue;
            }
        };
        out.push_str(entity);
    }
    out
}

/// pytest's `shorten_message`: whole lines while they fit the budget, and a line saying
/// where the rest is.
pub(crate) fn shorten_message(msg: &str) -> String {
    let lines: Vec<&str> = if msg.is_empty() {
        vec![""]
    } else {
        msg.lines().collect()
    };
    let mut kept: Vec<&str> = Vec::new();
    let mut size = 0;
    for l in &lines {
        let n = l.chars().count();
        if !kept.is_empty() && size + n + 1 > MESSAGE_BUDGET {
            break;
        }
        kept.push(l);
        size += n + 1;
    }
    let mut short = kept.join("\n");
    let first_cut = short.chars().count() > MESSAGE_BUDGET;
    if first_cut {
        short = short.chars().take(MESSAGE_BUDGET).collect::<String>() + "...";
    }
    let remaining = lines.len() - kept.len();
    let note = if remaining > 0 {
        format!(
            "+{remaining} more line{}",
            if remaining > 1 { "s" } else { "" }
        )
    } else if first_cut {
        "truncated".to_owned()
    } else {
        return msg.to_owned();
    };
    format!("{short}\n[{note}; full report in element text]")
}

/// pytest's `mangle_test_address`: (classname, name) of a nodeid.
pub(crate) fn classname_and_name(nodeid: &str) -> (String, String) {
    let (path, params) = match nodeid.find('[') {
        Some(i) => (&nodeid[..i], &nodeid[i..]),
        None => (nodeid, ""),
    };
    let mut names: Vec<String> = path.split("::").map(str::to_owned).collect();
    let file = names[0].replace('/', ".");
    names[0] = file.strip_suffix(".py").map_or(file.clone(), str::to_owned);
    if let Some(last) = names.last_mut() {
        last.push_str(params);
    }
    let name = names.pop().unwrap_or_default();
    (names.join("."), name)
}

/// `2026-12-07T05:29:16.834229+00:00`: the local time with its offset, as pytest writes
/// `timestamp`.
fn iso_local(wall_ns: u64) -> String {
    let secs = (wall_ns / 1_000_000_000) as libc::time_t;
    let micros = (wall_ns % 1_000_000_000) / 1000;
    // SAFETY: localtime_r writes only into the tm we own; a zeroed tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals.
    if unsafe { libc::localtime_r(&raw const secs, &raw mut tm) }.is_null() {
        let (y, mo, d, h, mi, s) = crate::store::civil_from_unix(secs);
        return format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{micros:06}+00:00");
    }
    let off = tm.tm_gmtoff;
    let sign = if off < 0 { '-' } else { '+' };
    let off = off.abs();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{micros:06}{sign}{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        off / 3600,
        (off % 3600) / 60
    )
}

/// The counts of the `<testsuite>` element: (tests, failures, errors, skipped).
pub(crate) fn counts(cases: &[Case], family: Family) -> (usize, usize, usize, usize) {
    let (mut f, mut e, mut s) = (0, 0, 0);
    for c in cases {
        match (&c.verdict, family) {
            (Verdict::Failure { .. }, _) | (Verdict::Error { .. }, Family::Xunit2) => f += 1,
            (Verdict::Error { .. }, Family::Xunit1) => e += 1,
            (Verdict::Skipped { .. }, _) => s += 1,
            (Verdict::Passed, _) => {}
        }
    }
    (cases.len(), f, e, s)
}

/// Writes the document.
pub(crate) fn write_xml(suite: &Suite, family: Family, out: &mut dyn Write) -> std::io::Result<()> {
    let (tests, failures, errors, skipped) = counts(&suite.cases, family);
    write!(
        out,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<testsuites name=\"pytest tests\">\
         <testsuite name=\"pytest\" errors=\"{errors}\" failures=\"{failures}\" skipped=\"{skipped}\" \
         tests=\"{tests}\" time=\"{:.3}\"",
        suite.time_s.max(0.0)
    )?;
    if let Some(ns) = suite.started_wall_ns {
        write!(out, " timestamp=\"{}\"", xml_attr(&iso_local(ns)))?;
    }
    writeln!(out, " hostname=\"{}\">", xml_attr(&suite.hostname))?;
    for c in &suite.cases {
        write_case(out, c, family)?;
    }
    out.write_all(b"</testsuite></testsuites>\n")
}

fn write_case(out: &mut dyn Write, c: &Case, family: Family) -> std::io::Result<()> {
    let (classname, name) = classname_and_name(&c.nodeid);
    write!(
        out,
        "<testcase classname=\"{}\" name=\"{}\"",
        xml_attr(&classname),
        xml_attr(&name)
    )?;
    if family == Family::Xunit1 {
        let file = c.nodeid.split("::").next().unwrap_or_default();
        write!(out, " file=\"{}\"", xml_attr(file))?;
    }
    write!(out, " time=\"{:.3}\"", c.time_s.max(0.0))?;
    let props_inside = family == Family::Xunit1 && !c.properties.is_empty();
    if c.verdict == Verdict::Passed && !props_inside {
        return out.write_all(b" />\n");
    }
    out.write_all(b">")?;
    if props_inside {
        out.write_all(b"<properties>")?;
        for (k, v) in &c.properties {
            write!(
                out,
                "<property name=\"{}\" value=\"{}\" />",
                xml_attr(k),
                xml_attr(v)
            )?;
        }
        out.write_all(b"</properties>")?;
    }
    // xunit2 has no per-test <properties>: they go with the text of what went wrong.
    let with_props = |text: &str| -> String {
        if family == Family::Xunit1 || c.properties.is_empty() || text.contains("\nproperties:\n") {
            return text.to_owned();
        }
        let mut t = text.trim_end().to_owned();
        if !t.is_empty() {
            t.push_str("\n\n");
        }
        t.push_str("properties:\n");
        for (k, v) in &c.properties {
            let _ = writeln!(t, "  {k} = {v}");
        }
        t
    };
    match &c.verdict {
        Verdict::Passed => {}
        Verdict::Failure { message, text } => {
            write!(
                out,
                "<failure message=\"{}\">{}</failure>",
                xml_attr(&shorten_message(message)),
                xml_text(&with_props(text))
            )?;
        }
        Verdict::Error { message, text } => {
            let tag = if family == Family::Xunit1 {
                "error"
            } else {
                "failure"
            };
            write!(
                out,
                "<{tag} message=\"{}\">{}</{tag}>",
                xml_attr(&shorten_message(message)),
                xml_text(&with_props(text))
            )?;
        }
        Verdict::Skipped {
            kind,
            message,
            text,
        } => {
            out.write_all(b"<skipped")?;
            if let Some(kind) = kind {
                write!(out, " type=\"{kind}\"")?;
            }
            write!(out, " message=\"{}\"", xml_attr(message))?;
            let text = with_props(text);
            if text.is_empty() {
                out.write_all(b" />")?;
            } else {
                write!(out, ">{}</skipped>", xml_text(&text))?;
            }
        }
    }
    out.write_all(b"</testcase>\n")
}

/// Writes `xml` to `path` whole: into a temporary file beside it, then renamed over it, so
/// a reader (a CI step) never sees half a file.
pub(crate) fn write_file(path: &Path, xml: &[u8]) -> Result<(), Failure> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_owned();
        move |e| {
            Failure::from(Error::Io {
                path: p,
                action,
                source: e,
            })
        }
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io("creating the folder of", parent))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, xml).map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("renaming into place", path)(e)
    })
}

/// The suite of the logical run `id` ends: that run and the runs it resumes.
pub(crate) fn logical_suite(store: &Store, id: &str) -> Result<Suite, Failure> {
    Ok(read_logical(store, id)?.suite())
}

pub(crate) fn junit(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let read = read_logical(&store, &id)?;
    let statuses = read.follower.statuses();
    warn_damage(cx, &id, statuses.iter().filter_map(|s| s.damage.as_ref()))?;
    let suite = read.suite();
    let mut xml = Vec::new();
    write_xml(&suite, cx.inv.family.unwrap_or_default(), &mut xml)?;
    match cx.inv.output.as_deref() {
        Some(p) if p != Path::new("-") => write_file(p, &xml)?,
        _ => cx.out.write_all(&xml)?,
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_attributes_escape_markup_and_the_characters_xml_cannot_hold() {
        assert_eq!(xml_text("a<b>&c"), "a&lt;b&gt;&amp;c");
        assert_eq!(
            xml_attr("say \"hi\"\n\tnow"),
            "say &quot;hi&quot;&#10;&#09;now"
        );
        // pytest's bin_xml_escape: visible, not an entity (XML 1.0 has none for them).
        assert_eq!(
            xml_text("bell\x07 nul\0 esc\x1b del\x7f"),
            "bell#x07 nul#x00 esc#x1B del#x7F"
        );
        assert_eq!(xml_attr("\u{fffe}\u{ffff}"), "#xFFFE#xFFFF");
        // Kept as they are: tab, newline, CR in text; any other Unicode.
        assert_eq!(xml_text("a\tb\nc\rd é 😀"), "a\tb\nc\rd é 😀");
        assert_eq!(xml_attr("\r"), "&#13;");
    }

    #[test]
    fn names_follow_pytests_mangle_test_address() {
        assert_eq!(
            classname_and_name("tests/test_a.py::TestX::test_y[1-a/b::c]"),
            ("tests.test_a.TestX".into(), "test_y[1-a/b::c]".into())
        );
        assert_eq!(
            classname_and_name("test_a.py::test_b"),
            ("test_a".into(), "test_b".into())
        );
    }

    #[test]
    fn long_messages_are_shortened_as_pytest_does() {
        assert_eq!(shorten_message("short"), "short");
        let many = (0..100)
            .map(|i| format!("line {i:03}"))
            .collect::<Vec<_>>()
            .join("\n");
        let s = shorten_message(&many);
        assert!(s.starts_with("line 000\nline 001"), "{s}");
        assert!(
            s.ends_with("more lines; full report in element text]"),
            "{s}"
        );
        let long = "x".repeat(600);
        assert!(shorten_message(&long).ends_with("...\n[truncated; full report in element text]"));
    }

    #[test]
    fn property_values_read_as_pythons_str() {
        assert_eq!(python_str(&Value::Float(0.99)), "0.99");
        assert_eq!(python_str(&Value::Float(1.0)), "1.0");
        assert_eq!(python_str(&Value::Float(1e-5)), "1e-05");
        assert_eq!(python_str(&Value::Float(1e16)), "1e+16");
        assert_eq!(python_str(&Value::Bool(true)), "True");
        assert_eq!(
            python_str(&Value::List(vec![
                Value::Int(1),
                Value::Str("a'b".into()),
                Value::None
            ])),
            "[1, 'a\\'b', None]"
        );
        assert_eq!(
            python_str(&Value::Dict(vec![("k".into(), Value::Float(0.5))])),
            "{'k': 0.5}"
        );
    }

    #[test]
    fn a_serialized_longrepr_reads_as_pytest_prints_it() {
        let s = |t: &str| Value::Str(t.into());
        let entry = |lines: &[&str], path: &str, line: i64, msg: &str| {
            Value::Dict(vec![
                ("type".into(), s("ReprEntry")),
                (
                    "data".into(),
                    Value::Dict(vec![
                        (
                            "lines".into(),
                            Value::List(lines.iter().map(|l| s(l)).collect()),
                        ),
                        (
                            "reprfuncargs".into(),
                            Value::Dict(vec![("args".into(), Value::List(vec![]))]),
                        ),
                        ("reprlocals".into(), Value::None),
                        (
                            "reprfileloc".into(),
                            Value::Dict(vec![
                                ("path".into(), s(path)),
                                ("lineno".into(), Value::Int(line)),
                                ("message".into(), s(msg)),
                            ]),
                        ),
                        ("style".into(), s("long")),
                    ]),
                ),
            ])
        };
        let longrepr = Value::Dict(vec![
            (
                "reprcrash".into(),
                Value::Dict(vec![("message".into(), s("assert 1 == 2"))]),
            ),
            (
                "reprtraceback".into(),
                Value::Dict(vec![
                    (
                        "reprentries".into(),
                        Value::List(vec![
                            entry(&["    def test_a():", ">       helper()"], "t.py", 3, ""),
                            entry(
                                &[
                                    "    def helper():",
                                    ">       assert 1 == 2",
                                    "E       assert 1 == 2",
                                ],
                                "t.py",
                                6,
                                "AssertionError",
                            ),
                        ]),
                    ),
                    ("extraline".into(), Value::None),
                    ("style".into(), s("long")),
                ]),
            ),
            ("sections".into(), Value::List(vec![])),
            ("chain".into(), Value::None),
        ]);
        let text = longrepr_text(&longrepr);
        let want = format!(
            "def test_a():\n>       helper()\n\nt.py:3: \n{}\n\n    def helper():\n>       assert 1 == 2\nE       assert 1 == 2\n\nt.py:6: AssertionError",
            "_ ".repeat(40)
        );
        assert_eq!(text, want);
        let (message, _) = failure_of(Some(&Value::Dict(vec![("longrepr".into(), longrepr)])), "x");
        assert_eq!(message, "assert 1 == 2");
        assert_eq!(longrepr_text(&s("plain text")), "plain text");
    }

    #[test]
    fn counts_follow_the_family() {
        let case = |verdict| Case {
            nodeid: "t.py::x".into(),
            time_s: 0.0,
            verdict,
            properties: vec![],
            crashed: false,
            not_run: false,
        };
        let err = Verdict::Error {
            message: "m".into(),
            text: "t".into(),
        };
        let cases = vec![case(Verdict::Passed), case(err)];
        assert_eq!(counts(&cases, Family::Xunit1), (2, 0, 1, 0));
        assert_eq!(counts(&cases, Family::Xunit2), (2, 1, 0, 0));
    }
}
