//! The crash text the commands share: what happened to a crash's process in one sentence,
//! and the end of its traceback (the thread the test ran on, its innermost frames).

use std::fmt::Write as _;
use std::path::Path;

use super::table::Note;
use super::text::plural;
use crate::aggregate::{signal_name, CrashView};
use crate::watchdog::TEST_THREAD_LINE;

/// Frames of a traceback shown unless `--full`.
pub(crate) const FRAMES_SHOWN: usize = 5;
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
