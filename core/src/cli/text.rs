//! Text for a person: durations, counts and local times as people write them, terminal
//! widths, text cleaned of control characters, shortened, wrapped and joined to fit.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `850µs`, `12.3ms`, `1.24s`, `2m03s`, `1h02m`: three significant digits below a
/// minute, then minutes and seconds, then hours and minutes.
pub fn duration(seconds: f64) -> String {
    if !seconds.is_finite() || seconds < 0.0 {
        return "-".into();
    }
    if seconds == 0.0 {
        return "0s".into();
    }
    let sig3 = |v: f64, unit: &str| -> Option<String> {
        // The unit is right while the value rounds to below 1000.
        let s = if v < 9.995 {
            format!("{v:.2}{unit}")
        } else if v < 99.95 {
            format!("{v:.1}{unit}")
        } else if v < 999.5 {
            format!("{v:.0}{unit}")
        } else {
            return None;
        };
        Some(s)
    };
    if seconds < 1e-6 {
        return format!("{:.0}ns", seconds * 1e9);
    }
    if seconds < 1e-3 {
        if let Some(s) = sig3(seconds * 1e6, "µs") {
            return s;
        }
    }
    if seconds < 1.0 {
        if let Some(s) = sig3(seconds * 1e3, "ms") {
            return s;
        }
    }
    if seconds < 59.995 {
        if let Some(s) = sig3(seconds, "s") {
            return s;
        }
    }
    let whole = seconds.round() as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        let minutes = (seconds / 60.0).round() as u64;
        format!("{}h{:02}m", minutes / 60, minutes % 60)
    }
}

/// `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Local date and time of a Unix time in nanoseconds: `2026-11-22 02:44:20`.
pub fn local_time(wall_ns: u64) -> String {
    let secs = (wall_ns / 1_000_000_000) as libc::time_t;
    // SAFETY: localtime_r writes only into the tm we own; a zeroed tm is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals.
    let ok = !unsafe { libc::localtime_r(&raw const secs, &raw mut tm) }.is_null();
    if !ok {
        let (y, mo, d, h, mi, s) = crate::store::civil_from_unix(secs);
        return format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC");
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// Text from a record, safe to print on a terminal: control characters (an escape
/// sequence hidden in a nodeid or a property) are shown escaped, never sent.
pub fn clean(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Columns a character takes on a terminal: 0 for combining marks, 2 for wide East Asian
/// characters and most emoji, 1 otherwise (close enough to `wcwidth` for alignment).
fn char_width(c: char) -> usize {
    let u = c as u32;
    match u {
        0x0300..=0x036F | 0x200B..=0x200F | 0xFE00..=0xFE0F => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// Columns `s` takes on a terminal.
pub fn width(s: &str) -> usize {
    s.chars().map(char_width).sum()
}

/// `s` cut to at most `max` columns by replacing its middle with `…` (the file and the
/// test name, at either end of a nodeid, are what a reader needs).
pub fn shorten_middle(s: &str, max: usize) -> Cow<'_, str> {
    if width(s) <= max {
        return Cow::Borrowed(s);
    }
    if max == 0 {
        return Cow::Borrowed("");
    }
    let budget = max - 1;
    let head_budget = budget * 2 / 5;
    let tail_budget = budget - head_budget;
    let mut head = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = char_width(c);
        if used + w > head_budget {
            break;
        }
        used += w;
        head.push(c);
    }
    let mut tail: Vec<char> = Vec::new();
    let mut used = 0;
    for c in s.chars().rev() {
        let w = char_width(c);
        if used + w > tail_budget {
            break;
        }
        used += w;
        tail.push(c);
    }
    head.push('…');
    head.extend(tail.into_iter().rev());
    Cow::Owned(head)
}

/// `text` broken at spaces into lines of at most `max` columns: a sentence keeps its end.
/// A word longer than a line (a path) is cut in its middle.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let max = max.max(1);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let mut word = shorten_middle(word, max);
        let room = max.saturating_sub(width(&line) + 1);
        // A path that does not fit the rest of the line is cut there rather than moved to
        // a line of its own (`traceback: /run/…/faulthandler-4711.txt`).
        if !line.is_empty() && word.contains('/') && width(&word) > room && room >= 24 {
            word = Cow::Owned(shorten_middle(&word, room).into_owned());
        }
        let needed = if line.is_empty() {
            width(&word)
        } else {
            width(&line) + 1 + width(&word)
        };
        if needed > max && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// Parts joined by ` · ` on as few lines as fit `max` columns (`None`: one line): a line
/// breaks between parts, never inside one unless it alone is too wide (cut in its middle).
pub fn join_fitted(parts: &[String], max: Option<usize>) -> Vec<String> {
    const SEP: &str = " · ";
    let Some(max) = max else {
        return vec![parts.join(SEP)];
    };
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for part in parts {
        let part = shorten_middle(part, max);
        if !line.is_empty() && width(&line) + width(SEP) + width(&part) > max {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push_str(SEP);
        }
        line.push_str(&part);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// The command line a run was started with, as the user typed it: pytest records
/// `sys.argv`, whose first item is the path of the program (`.../bin/pytest`) or, for
/// `python -m pytest`, of `pytest/__main__.py`. Arguments holding spaces or shell
/// characters are quoted.
pub fn command_line(argv: &[String]) -> String {
    let Some((first, rest)) = argv.split_first() else {
        return String::new();
    };
    let program = first.rsplit('/').next().unwrap_or(first);
    let parent = first.rsplit('/').nth(1).filter(|_| first.contains('/'));
    let head = match (program, parent) {
        ("__main__.py", Some(pkg)) => format!("python -m {pkg}"),
        ("-c", _) => "python -c …".to_owned(),
        ("", _) => first.clone(),
        (p, _) => p.to_owned(),
    };
    let mut out = head;
    for a in rest {
        out.push(' ');
        out.push_str(&shell_quote(a));
    }
    out
}

/// `a` as a shell word: unchanged when it is safe, else in single quotes.
fn shell_quote(a: &str) -> Cow<'_, str> {
    let safe = !a.is_empty()
        && a.chars().all(|c| {
            c.is_alphanumeric()
                || matches!(
                    c,
                    '-' | '_' | '.' | '/' | ':' | '=' | ',' | '+' | '@' | '%' | '[' | ']'
                )
        });
    if safe {
        Cow::Borrowed(a)
    } else {
        Cow::Owned(format!("'{}'", a.replace('\'', "'\\''")))
    }
}

/// `1 run`, `3 runs`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// One letter per outcome, newest first: P passed, F failed, E error, C crashed, T timeout,
/// s skipped, `.` did not run, `?` anything else.
pub fn strip<'a>(outcomes: impl IntoIterator<Item = Option<&'a str>>) -> String {
    outcomes
        .into_iter()
        .map(|o| match o {
            Some("passed") => 'P',
            Some("failed") => 'F',
            Some("error") => 'E',
            Some("crashed") => 'C',
            Some("timeout") => 'T',
            Some("skipped") => 's',
            None => '.',
            Some(_) => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_person_writes_them() {
        let cases = [
            (0.0, "0s"),
            (0.000_000_5, "500ns"),
            (0.000_85, "850µs"),
            (0.000_012_34, "12.3µs"),
            (0.0123, "12.3ms"),
            (0.001_234, "1.23ms"),
            (0.9996, "1.00s"),
            (0.999_49, "999ms"),
            (1.2449, "1.24s"),
            (12.34, "12.3s"),
            (59.996, "1m00s"),
            (123.0, "2m03s"),
            (3599.4, "59m59s"),
            (3720.0, "1h02m"),
            (f64::NAN, "-"),
        ];
        for (s, want) in cases {
            assert_eq!(duration(s), want, "{s}");
        }
    }

    #[test]
    fn counts_and_cleaning() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1_234_567), "1,234,567");
        assert_eq!(clean("a\x1b[31mb\nc"), "a\\u{1b}[31mb\\nc");
        assert!(matches!(clean("plain"), Cow::Borrowed(_)));
    }

    #[test]
    fn shortening_keeps_both_ends() {
        let id = "tests/integration/test_models.py::TestResnet::test_forward[batch=64-dtype=bf16]";
        let s = shorten_middle(id, 40);
        assert_eq!(width(&s), 40);
        assert!(
            s.starts_with("tests/integ") && s.ends_with("dtype=bf16]") && s.contains('…'),
            "{s}"
        );
        assert_eq!(shorten_middle("short", 40), "short");
        let wide = "测试".repeat(20);
        assert!(width(&shorten_middle(&wide, 21)) <= 21);
    }
}
