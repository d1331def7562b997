//! A pytest report as the plugin serialized it, read back as pytest prints it: the
//! longrepr's text (`str(report.longrepr)`), a failure's message, `str()` of a value.

use std::fmt::Write as _;

use crate::record::Value;

/// The width pytest's `TerminalWriter` renders a longrepr at when it is not a terminal.
const TERMINAL_WIDTH: usize = 80;

/// (message, text) of a failed report: `reprcrash.message` and `str(longrepr)`.
pub(crate) fn failure_of(report: Option<&Value>, fallback: &str) -> (String, String) {
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

pub(crate) fn get<'v>(v: &'v Value, key: &str) -> Option<&'v Value> {
    match v {
        Value::Dict(items) => items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .filter(|v| !matches!(v, Value::None)),
        _ => None,
    }
}

pub(crate) fn as_str(v: &Value) -> Option<&str> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
