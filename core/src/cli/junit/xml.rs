//! The XML pytest's junitxml writes: escaped text and attributes, its names and message,
//! a suite in either family, and the file written whole or not at all.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::super::args::Family;
use super::super::context::Failure;
use super::cases::{Case, Suite, Verdict};
use crate::error::Error;

/// pytest's budget for the `message` attribute (`_pytest.junitxml.MESSAGE_ATTR_BUDGET`).
const MESSAGE_BUDGET: usize = 500;

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
