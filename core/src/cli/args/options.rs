//! Every option: its spellings, its value, its help line and the commands that take it.

use super::invocation::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Key {
    Dir,
    Run,
    Json,
    Jsonl,
    Html,
    Limit,
    Outcome,
    Color,
    Wide,
    All,
    Full,
    Last,
    Threshold,
    Help,
    Version,
    // issue 14
    Output,
    Family,
    MaxRestarts,
}

pub(crate) struct Opt {
    pub key: Key,
    pub long: &'static str,
    pub short: Option<char>,
    /// The metavariable when the option takes a value.
    pub value: Option<&'static str>,
    pub help: &'static str,
    /// Commands that take it; empty: every command.
    pub commands: &'static [Command],
}

use Command as C;

const DATA: &[Command] = &[
    C::Stats,
    C::Tests,
    C::Fixtures,
    C::Crashes,
    C::Dump,
    C::Runs,
    C::Check,
    C::Report,
    C::Show,
    C::Flaky,
    C::History,
    C::Slower,
    C::Combine,
    C::Junit,
    C::Run,
];

pub(crate) const OPTS: &[Opt] = &[
    Opt {
        key: Key::Dir,
        long: "dir",
        short: None,
        value: Some("DIR"),
        help: "the store directory (default: $BLACKBOX_DIR, else the nearest .blackbox upward)",
        commands: DATA,
    },
    Opt {
        key: Key::Run,
        long: "run",
        short: None,
        value: Some("ID"),
        help: "the run to read: its id or a unique start of it (default: the latest)",
        commands: &[C::Stats, C::Tests, C::Fixtures, C::Crashes, C::Dump, C::Check, C::Report, C::Show, C::Junit],
    },
    Opt {
        key: Key::Json,
        long: "json",
        short: None,
        value: None,
        help: "print JSON (schema: docs/cli.md) instead of a table",
        commands: &[C::Stats, C::Tests, C::Fixtures, C::Crashes, C::Dump, C::Runs, C::Check, C::Show, C::Flaky, C::History, C::Slower],
    },
    Opt {
        key: Key::Jsonl,
        long: "jsonl",
        short: None,
        value: None,
        help: "one JSON object per record",
        commands: &[C::Dump],
    },
    Opt {
        key: Key::Html,
        long: "html",
        short: None,
        value: Some("FILE"),
        help: "the HTML file to write (`-`: standard output)",
        commands: &[C::Report],
    },
    Opt {
        key: Key::Limit,
        long: "limit",
        short: Some('n'),
        value: Some("N"),
        help: "show at most N rows (stats: per section, default 10; 0: all)",
        commands: &[C::Stats, C::Tests, C::Fixtures, C::Crashes, C::Runs, C::Flaky, C::Slower],
    },
    Opt {
        key: Key::Last,
        long: "last",
        short: None,
        value: Some("N"),
        help: "look at the last N runs of history (default 20)",
        commands: &[C::Flaky, C::History, C::Slower],
    },
    Opt {
        key: Key::Threshold,
        long: "threshold",
        short: None,
        value: Some("X"),
        help: "slower: a median grown more than X times (default 1.5)",
        commands: &[C::Slower],
    },
    Opt {
        key: Key::Outcome,
        long: "outcome",
        short: None,
        value: Some("LIST"),
        help: "only tests with these outcomes, comma-separated (passed, failed, skipped, error, crashed, running, unfinished, not-run)",
        commands: &[C::Tests],
    },
    Opt {
        key: Key::Color,
        long: "color",
        short: None,
        value: Some("WHEN"),
        help: "auto (default: when stdout is a terminal and NO_COLOR is unset), always or never",
        commands: DATA,
    },
    Opt {
        key: Key::Wide,
        long: "wide",
        short: None,
        value: None,
        help: "cut nothing: tables as wide as their widest cell, whatever the terminal",
        commands: &[
            C::Stats,
            C::Tests,
            C::Fixtures,
            C::Crashes,
            C::Runs,
            C::Show,
            C::Flaky,
            C::History,
            C::Slower,
        ],
    },
    Opt {
        key: Key::All,
        long: "all",
        short: None,
        value: None,
        help: "list pytest's own fixtures (tmp_path, request, ...) too, however fast",
        commands: &[C::Stats, C::Fixtures],
    },
    Opt {
        key: Key::Full,
        long: "full",
        short: None,
        value: None,
        help: "whole tracebacks, not their last frames",
        commands: &[C::Crashes, C::Show],
    },
    // --- issue 14: junit, run ---
    Opt {
        key: Key::Output,
        long: "output",
        short: Some('o'),
        value: Some("FILE"),
        help: "junit: the XML file to write (`-`: standard output, the default)",
        commands: &[C::Junit],
    },
    Opt {
        key: Key::Family,
        long: "family",
        short: None,
        value: Some("NAME"),
        help: "junit: xunit2 (default; valid against the xunit2 schema), xunit1 or legacy",
        commands: &[C::Junit],
    },
    Opt {
        key: Key::MaxRestarts,
        long: "max-restarts",
        short: None,
        value: Some("N"),
        help: "run: start pytest again at most N times after it died (default 3; 0: never)",
        commands: &[C::Run],
    },
    // --- end issue 14 ---
    Opt {
        key: Key::Help,
        long: "help",
        short: Some('h'),
        value: None,
        help: "show this help",
        commands: &[],
    },
    Opt {
        key: Key::Version,
        long: "version",
        short: Some('V'),
        value: None,
        help: "show the version",
        commands: &[],
    },
];

pub(crate) fn opt(key: Key) -> &'static Opt {
    OPTS.iter()
        .find(|o| o.key == key)
        .expect("every key has an entry")
}
