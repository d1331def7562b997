//! The command line, parsed by hand (no clap: the crate builds on 2 cores in seconds).
//!
//! `blackbox [OPTIONS] COMMAND [OPTIONS]`: options may come before or after the command,
//! as `--name VALUE` or `--name=VALUE`. Each option is checked against the command it is
//! given with, so `blackbox stats --html x` is a usage error, not silently ignored.

use std::ffi::{OsStr, OsString};
use std::fmt::{self, Write as _};
use std::path::PathBuf;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Command {
    Stats,
    Tests,
    Fixtures,
    Crashes,
    Dump,
    Runs,
    Check,
    Report,
    /// `show NODEID`: one test's whole story.
    Show,
    Flaky,
    History,
    Slower,
    Combine,
    // --- issue 14: after pytest dies (junit, run) ---
    /// `junit -o FILE`: `JUnit` XML for any run.
    Junit,
    /// `run -- pytest ARGS`: a supervisor that resumes a dead pytest.
    Run,
    // --- end issue 14 ---
    /// `help [COMMAND]`, `--help`, or no command at all.
    #[default]
    Help,
    Version,
}

impl Command {
    /// The commands that read a store, in the order `--help` lists them.
    pub const READERS: [Command; 15] = [
        Command::Stats,
        Command::Tests,
        Command::Fixtures,
        Command::Crashes,
        Command::Show,
        Command::Runs,
        Command::Dump,
        Command::Check,
        Command::Report,
        Command::Junit,
        Command::Flaky,
        Command::History,
        Command::Slower,
        Command::Combine,
        Command::Run,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Command::Stats => "stats",
            Command::Tests => "tests",
            Command::Fixtures => "fixtures",
            Command::Crashes => "crashes",
            Command::Dump => "dump",
            Command::Runs => "runs",
            Command::Check => "check",
            Command::Report => "report",
            Command::Show => "show",
            Command::Flaky => "flaky",
            Command::History => "history",
            Command::Slower => "slower",
            Command::Combine => "combine",
            Command::Junit => "junit",
            Command::Run => "run",
            Command::Help => "help",
            Command::Version => "version",
        }
    }

    pub fn parse(s: &str) -> Option<Command> {
        Command::READERS
            .into_iter()
            .chain([Command::Help, Command::Version])
            .find(|c| c.name() == s)
    }

    /// One line for `blackbox --help`.
    pub fn summary(self) -> &'static str {
        match self {
            Command::Stats => {
                "summary of a run: outcomes, slowest tests and fixtures, crashes, workers"
            }
            Command::Tests => "every test: crashes first, then failures, then slowest first",
            Command::Fixtures => {
                "fixture (and @timed) setup times over the whole run, slowest total first"
            }
            Command::Crashes => "processes that died: which test, worker, pid, signal and phase",
            Command::Dump => {
                "every record of a run, segment by segment (--jsonl for one JSON object a line)"
            }
            Command::Runs => "the runs in the store: id, start time, tests, crashes, live or not",
            Command::Check => {
                "verify every segment of every run; exit 1 naming file and offset of any damage"
            }
            Command::Report => {
                "write a self-contained HTML report: timeline, slowest fixtures, crashes"
            }
            Command::Show => {
                "one test's whole story: phases, properties, fixtures, crash, worker, history"
            }
            Command::Flaky => "tests that passed and failed over the last runs (history.redb)",
            Command::History => "one test across the last runs: outcome, duration, worker, crash",
            Command::Slower => "tests and fixtures whose median duration grew over the last runs",
            Command::Combine => "merge stores from several machines (CI shards) into --dir",
            Command::Junit => "write JUnit XML of a run, a dead or resumed one included",
            Command::Run => {
                "run pytest, and resume it with --blackbox-resume while it dies with tests left"
            }
            Command::Help => "show help for a command",
            Command::Version => "show the version",
        }
    }

    /// Longer text for `blackbox COMMAND --help`.
    fn details(self) -> &'static str {
        match self {
            Command::Stats => {
                "Reads the latest run (or --run ID) and prints its outcome counts, the tests that\n\
                               crashed, failed or did not finish, the slowest tests and fixtures, and the workers.\n\
                               --json prints the whole run (the schema is in docs/cli.md)."
            }
            Command::Tests => {
                "Lists tests: crashed, unfinished and running first, then failed and errors, then\n\
                               the rest slowest first. Filter with --outcome failed,crashed; cut with --limit N."
            }
            Command::Fixtures => {
                "Totals of fixture setup times across every process and worker of the run, and\n\
                                  of functions timed with @timed (scope `timed`), slowest total first."
            }
            Command::Crashes => {
                "Processes that died during the run: the test that ran, the worker and pid, the\n\
                                 signal (if the crash handler saw one) and the phase that died."
            }
            Command::Dump => {
                "Prints every committed record of the run, segment by segment, as it reads them.\n\
                              --jsonl (or --json) prints one JSON object per record: the record's fields and\n\
                              `kind`, plus `segment` (the file), `segment_pid` and `offset`."
            }
            Command::Runs => {
                "Lists the runs of the store, oldest first, with their start time, number of\n\
                              tests and crashes, and whether a process still writes to them."
            }
            Command::Check => {
                "Reads every segment of every run (or only --run ID) and verifies each record.\n\
                               Exits 0 when all is sound, 1 when a file is damaged or unreadable, naming the\n\
                               file, the offset where reading stopped and why. Other commands still read\n\
                               everything before the damage."
            }
            Command::Report => {
                "Writes one self-contained HTML file (no network access when opened): a timeline\n\
                                per worker with a bar per test, the slowest fixtures and the crash list.\n\
                                --html - writes it to standard output."
            }
            Command::Show => {
                "Shows one test: NODEID is its nodeid or a part of it that only one test has.\n\
                              Its phases with outcome and duration, its properties, the fixtures it set up\n\
                              with their times, its crash or timeout with the end of the traceback (--full:\n\
                              all of it), its worker and pid, and its outcomes in the runs history.redb keeps."
            }
            Command::Flaky => {
                "Reads history.redb (every finished run is folded into it) and lists the tests that\n\
                 both passed and failed (or errored, or crashed) within the last --last N runs\n\
                 (default 20): runs per outcome, the last flip, the runs it crashed in, and its\n\
                 outcomes as a strip, newest first."
            }
            Command::History => {
                "`blackbox history NODEID`: the test in each of the last --last N runs (default 20),\n\
                 newest first: outcome, duration, worker, signal, host and shard."
            }
            Command::Slower => {
                "Compares the newer half of the last --last N runs (default 20) with the older half:\n\
                 tests (runs where they passed) and fixtures (mean setup) whose median duration grew\n\
                 more than --threshold X times (default 1.5) and by at least 10 ms."
            }
            Command::Combine => {
                "`blackbox combine --dir TARGET SOURCE...`: copies each source store's runs into\n\
                 TARGET (created if missing) and folds them into its history, each run keeping its\n\
                 host and naming its shard after the source (its folder, or the parent of a\n\
                 .blackbox folder). Runs TARGET has are left alone: combining twice changes\n\
                 nothing. A damaged input is reported by path and skipped (exit 1 once the rest is in)."
            }
            Command::Junit => {
                "Writes the JUnit XML pytest would have written (-o FILE; `-` or none: standard\n\
                 output), also for a run whose pytest died: crashed and timed-out tests are\n\
                 <failure>s telling the signal or exit, phase, pid and worker, with their properties\n\
                 and the traceback; tests that never ran are <skipped>. A resumed run covers the\n\
                 whole logical run. --family xunit2 (default) validates against the xunit2 schema\n\
                 (a test's properties are then in its failure text); xunit1 writes <properties>\n\
                 and <error> in each testcase, as pytest's xunit1 does."
            }
            Command::Run => {
                "`blackbox run [--max-restarts N] -- pytest ARGS...`: runs the command; while pytest\n\
                 dies (a crash that kills it, a watchdog's kill, SIGKILL) with tests left, starts it\n\
                 again with --blackbox-resume, up to N times (default 3). Exits with pytest's status\n\
                 over the whole logical run: 0 only when every test passed, 1 when one failed or\n\
                 crashed; 2-5 as pytest's; 127 when the command is not found. With --junit-xml=F\n\
                 among the args, F covers the whole logical run at the end."
            }
            Command::Help => "`blackbox help COMMAND` shows the options of COMMAND.",
            Command::Version => "Prints the version of blackbox.",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColorChoice {
    /// When standard output is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    Always,
    Never,
}

/// `junit --family`: pytest's `junit_family`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    Xunit1,
    #[default]
    Xunit2,
}

impl Family {
    /// `legacy` is pytest's name for `xunit1`.
    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "xunit1" | "legacy" => Some(Family::Xunit1),
            "xunit2" => Some(Family::Xunit2),
            _ => None,
        }
    }
}

/// The outcomes `--outcome` accepts (what [`crate::TestView::outcome`] holds).
pub const OUTCOMES: [&str; 9] = [
    "passed",
    "failed",
    "skipped",
    "error",
    "crashed",
    "running",
    "unfinished",
    "unknown",
    "not-run",
];

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Default)]
#[allow(clippy::struct_excessive_bools)] // one per flag of the command line
pub struct Invocation {
    pub command: Command,
    /// For [`Command::Help`]: the command to explain, if one was named.
    pub topic: Option<Command>,
    pub dir: Option<PathBuf>,
    pub run: Option<String>,
    pub json: bool,
    pub jsonl: bool,
    pub html: Option<PathBuf>,
    pub limit: Option<usize>,
    pub outcomes: Vec<String>,
    pub color: ColorChoice,
    /// `--wide`: tables cut nothing, whatever the terminal's width.
    pub wide: bool,
    /// `--all`: pytest's own fixtures too.
    pub all: bool,
    /// `--full`: whole tracebacks.
    pub full: bool,
    /// `show NODEID`: the test named.
    pub nodeid: Option<String>,
    /// `flaky`, `history`, `slower`: runs looked at (`--last N`).
    pub last: Option<usize>,
    /// `slower`: the growth that counts (`--threshold X`).
    pub threshold: Option<f64>,
    /// What follows the command: `history`'s NODEID, `combine`'s SOURCEs, `run`'s command.
    pub args: Vec<String>,
    // --- issue 14 ---
    /// `junit -o FILE`.
    pub output: Option<PathBuf>,
    /// `junit --family`.
    pub family: Option<Family>,
    /// `run --max-restarts N`.
    pub max_restarts: Option<usize>,
}

/// A command line that does not parse: exit status 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    /// The command whose `--help` to point at.
    pub command: Option<Command>,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.command {
            Some(c) if c != Command::Help && c != Command::Version => {
                write!(
                    f,
                    "{}; `blackbox {c} --help` lists its options",
                    self.message
                )
            }
            _ => write!(f, "{}; `blackbox --help` lists the commands", self.message),
        }
    }
}

impl std::error::Error for UsageError {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
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

struct Opt {
    key: Key,
    long: &'static str,
    short: Option<char>,
    /// The metavariable when the option takes a value.
    value: Option<&'static str>,
    help: &'static str,
    /// Commands that take it; empty: every command.
    commands: &'static [Command],
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

const OPTS: &[Opt] = &[
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

fn opt(key: Key) -> &'static Opt {
    OPTS.iter()
        .find(|o| o.key == key)
        .expect("every key has an entry")
}

fn utf8(arg: &OsStr) -> Result<&str, UsageError> {
    arg.to_str().ok_or_else(|| UsageError {
        message: format!("argument {} is not valid UTF-8", arg.to_string_lossy()),
        command: None,
    })
}

/// Parses the arguments that follow the program name.
pub fn parse<S: AsRef<OsStr>>(argv: &[S]) -> Result<Invocation, UsageError> {
    parse_line(argv).map_err(|mut e| {
        // Point at the command's own help when the line names one.
        if e.command.is_none() {
            e.command = argv
                .iter()
                .filter_map(|a| a.as_ref().to_str().and_then(Command::parse))
                .find(|c| Command::READERS.contains(c));
        }
        e
    })
}

fn parse_line<S: AsRef<OsStr>>(argv: &[S]) -> Result<Invocation, UsageError> {
    let mut inv = Invocation::default();
    // `--help` wins over anything else on the line, even a mistake.
    let before_dashdash = argv.iter().map(AsRef::as_ref).take_while(|a| *a != "--");
    if before_dashdash.clone().any(|a| a == "--help" || a == "-h") {
        inv.topic = before_dashdash
            .filter_map(|a| a.to_str().and_then(Command::parse))
            .find(|c| *c != Command::Help);
        return Ok(inv);
    }
    let mut positionals: Vec<&str> = Vec::new();
    let mut given: Vec<(Key, String)> = Vec::new();
    let mut i = 0;
    let mut only_positionals = false;
    let usage = |message: String| UsageError {
        message,
        command: None,
    };
    while i < argv.len() {
        let raw = argv[i].as_ref();
        i += 1;
        // A path value may be any bytes; everything else must be text.
        let arg = raw.to_string_lossy();
        if only_positionals || arg == "-" || !arg.starts_with('-') {
            positionals.push(utf8(raw)?);
            // `blackbox run pytest -x`: from the command on, every argument is the command's.
            only_positionals |= positionals.len() == 2 && positionals[0] == "run";
            continue;
        }
        if arg == "--" {
            only_positionals = true;
            continue;
        }
        let (o, spelled, inline): (&Opt, String, Option<OsString>) = if let Some(body) =
            arg.strip_prefix("--")
        {
            let (name, inline) = match body.split_once('=') {
                Some((n, _)) => {
                    // Keep the value's original bytes (a path may not be UTF-8).
                    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(raw);
                    let value = &bytes[2 + n.len() + 1..];
                    (
                        n.to_owned(),
                        Some(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(value).to_owned()),
                    )
                }
                None => (body.to_owned(), None),
            };
            let Some(o) = OPTS.iter().find(|o| o.long == name) else {
                return Err(usage(unknown_option(&format!("--{name}"))));
            };
            (o, format!("--{name}"), inline)
        } else {
            let mut chars = arg[1..].chars();
            let c = chars.next().unwrap_or('-');
            let rest: String = chars.collect();
            let Some(o) = OPTS.iter().find(|o| o.short == Some(c)) else {
                return Err(usage(unknown_option(&arg)));
            };
            let inline = (!rest.is_empty()).then(|| OsString::from(rest));
            (o, format!("-{c}"), inline)
        };
        let value: Option<OsString> = match (o.value, inline) {
            (None, Some(_)) => return Err(usage(format!("{spelled} takes no value"))),
            (None, None) => None,
            (Some(_), Some(v)) => Some(v),
            (Some(meta), None) => match argv.get(i) {
                Some(v)
                    if !(v.as_ref().to_string_lossy().starts_with("--")
                        && v.as_ref().len() > 2) =>
                {
                    i += 1;
                    Some(v.as_ref().to_owned())
                }
                _ => return Err(usage(format!("{spelled} needs a value ({spelled} {meta})"))),
            },
        };
        let text = || -> Result<String, UsageError> {
            Ok(utf8(value.as_deref().unwrap_or_default())?.to_owned())
        };
        match o.key {
            Key::Dir => inv.dir = value.map(PathBuf::from),
            Key::Run => inv.run = Some(text()?),
            Key::Json => inv.json = true,
            Key::Jsonl => inv.jsonl = true,
            Key::Html => inv.html = value.map(PathBuf::from),
            Key::Limit => {
                let v = text()?;
                let n = v.parse::<usize>().map_err(|_| {
                    usage(format!("{spelled} takes a whole number of rows, not {v:?}"))
                })?;
                inv.limit = Some(n);
            }
            Key::Outcome => {
                for part in text()?.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    if !OUTCOMES.contains(&part) {
                        return Err(usage(format!(
                            "unknown outcome {part:?} for --outcome (one of: {})",
                            OUTCOMES.join(", ")
                        )));
                    }
                    inv.outcomes.push(part.to_owned());
                }
            }
            Key::Last => {
                let v = text()?;
                inv.last = Some(v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                    usage(format!(
                        "{spelled} takes a number of runs (1 or more), not {v:?}"
                    ))
                })?);
            }
            Key::Threshold => {
                let v = text()?;
                inv.threshold = Some(
                    v.parse::<f64>()
                        .ok()
                        .filter(|x| x.is_finite() && *x >= 1.0)
                        .ok_or_else(|| {
                            usage(format!("{spelled} takes a ratio of 1 or more (1.5: half as slow again), not {v:?}"))
                        })?,
                );
            }
            Key::Color => {
                inv.color = match text()?.as_str() {
                    "auto" => ColorChoice::Auto,
                    "always" => ColorChoice::Always,
                    "never" => ColorChoice::Never,
                    other => {
                        return Err(usage(format!(
                            "--color takes auto, always or never, not {other:?}"
                        )))
                    }
                }
            }
            Key::Wide => inv.wide = true,
            Key::All => inv.all = true,
            Key::Full => inv.full = true,
            Key::Output => inv.output = value.map(PathBuf::from),
            Key::Family => {
                let v = text()?;
                inv.family = Some(Family::parse(&v).ok_or_else(|| {
                    usage(format!(
                        "--family takes xunit2, xunit1 or legacy, not {v:?}"
                    ))
                })?);
            }
            Key::MaxRestarts => {
                let v = text()?;
                inv.max_restarts = Some(v.parse::<usize>().map_err(|_| {
                    usage(format!(
                        "{spelled} takes a whole number of restarts, not {v:?}"
                    ))
                })?);
            }
            Key::Help | Key::Version => {}
        }
        given.push((o.key, spelled));
    }

    let wants_help = given.iter().any(|(k, _)| *k == Key::Help);
    let wants_version = given.iter().any(|(k, _)| *k == Key::Version);
    let mut rest = positionals.into_iter();
    let command = match rest.next() {
        None => None,
        Some(name) => Some(Command::parse(name).ok_or_else(|| usage(unknown_command(name)))?),
    };
    if wants_help || command == Some(Command::Help) || (command.is_none() && !wants_version) {
        let topic = match command {
            Some(Command::Help) => match rest.next() {
                Some(name) => {
                    Some(Command::parse(name).ok_or_else(|| usage(unknown_command(name)))?)
                }
                None => None,
            },
            other => other,
        };
        inv.command = Command::Help;
        inv.topic = topic;
        return Ok(inv);
    }
    if wants_version || command == Some(Command::Version) {
        inv.command = Command::Version;
        return Ok(inv);
    }
    let command = command.expect("handled above");
    inv.command = command;
    let in_command = |message: String| UsageError {
        message,
        command: Some(command),
    };
    inv.args = rest.map(str::to_owned).collect();
    let wanted = match command {
        Command::History => Some((1, 1, "the test: blackbox history NODEID")),
        Command::Show => Some((1, 1, "the test: blackbox show NODEID (or a part of it)")),
        Command::Combine => Some((
            1,
            usize::MAX,
            "the stores to merge: blackbox combine --dir TARGET SOURCE...",
        )),
        Command::Run => Some((
            1,
            usize::MAX,
            "the command to run: blackbox run -- pytest ARGS...",
        )),
        _ => None,
    };
    match wanted {
        None if !inv.args.is_empty() => {
            return Err(in_command(format!(
                "unexpected argument {:?} after `{command}`",
                inv.args[0]
            )));
        }
        Some((min, max, what)) if inv.args.len() < min || inv.args.len() > max => {
            return Err(in_command(format!("`{command}` needs {what}")));
        }
        _ => {}
    }
    if command == Command::Show {
        inv.nodeid = inv.args.first().cloned();
    }
    if command == Command::Combine && inv.dir.is_none() {
        return Err(in_command(
            "`combine` needs the store to write: blackbox combine --dir TARGET SOURCE...".into(),
        ));
    }
    for (key, spelled) in &given {
        let o = opt(*key);
        if !o.commands.is_empty() && !o.commands.contains(&command) {
            return Err(in_command(format!(
                "{spelled} is not an option of `{command}`"
            )));
        }
    }
    if command == Command::Report && inv.html.is_none() {
        return Err(in_command(
            "`report` needs the file to write: blackbox report --html FILE".into(),
        ));
    }
    Ok(inv)
}

fn unknown_option(spelled: &str) -> String {
    let name = spelled.trim_start_matches('-');
    let near = OPTS
        .iter()
        .filter(|_| !name.is_empty())
        .map(|o| {
            (
                if o.long.starts_with(name) {
                    0
                } else {
                    edit_distance(o.long, name)
                },
                o.long,
            )
        })
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, long)| format!("--{long}"));
    match near {
        Some(n) => format!("unknown option {spelled} (did you mean {n}?)"),
        None => format!("unknown option {spelled}"),
    }
}

fn unknown_command(name: &str) -> String {
    let near = Command::READERS
        .into_iter()
        .find(|c| edit_distance(c.name(), name) <= 2);
    match near {
        Some(c) => format!("unknown command {name:?} (did you mean `{c}`?)"),
        None => format!(
            "unknown command {name:?} (commands: {})",
            Command::READERS.map(Command::name).join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The help text: the list of commands, or one command's options.
pub fn help(topic: Option<Command>) -> String {
    let mut s = String::new();
    match topic {
        None | Some(Command::Help) => {
            s.push_str("blackbox: read what pytest-blackbox recorded about a test run\n\n");
            s.push_str(
                "usage: blackbox COMMAND [--dir DIR] [--run ID] [--json] [OPTIONS]\n\ncommands:\n",
            );
            for c in Command::READERS {
                let _ = writeln!(s, "  {:<10}{}", c.name(), c.summary());
            }
            s.push_str("\noptions:\n");
            for o in OPTS {
                push_opt(&mut s, o);
            }
            s.push_str(
                "\nThe store is --dir, else $BLACKBOX_DIR, else the nearest .blackbox from here upward\n\
                 (or the blackbox_dir ini value of a pytest config there); the run is the latest\n\
                 unless --run names one. Exit status: 0 ok, 1 error (or damage found by `check`),\n\
                 2 usage. `blackbox help COMMAND` shows a command's options.\n",
            );
        }
        Some(Command::Version) => s.push_str("usage: blackbox --version\n"),
        Some(c) => {
            let takes_value = |o: &&Opt| o.commands.contains(&c) || o.commands.is_empty();
            let opts: Vec<&Opt> = OPTS
                .iter()
                .filter(takes_value)
                .filter(|o| o.key != Key::Version)
                .collect();
            let mut usage = format!("usage: blackbox {c}");
            if c == Command::Show {
                usage.push_str(" NODEID");
            }
            let tail = if c == Command::Run {
                " -- pytest ARGS..."
            } else {
                ""
            };
            for o in &opts {
                match (o.key, o.value) {
                    (Key::Help, _) => {}
                    (Key::Html, Some(v)) => {
                        let _ = write!(usage, " --html {v}");
                    }
                    (_, Some(v)) => {
                        let _ = write!(usage, " [--{} {v}]", o.long);
                    }
                    (_, None) => {
                        let _ = write!(usage, " [--{}]", o.long);
                    }
                }
            }
            s.push_str(&usage);
            s.push_str(tail);
            s.push_str("\n\n");
            s.push_str(c.summary());
            s.push_str(".\n\n");
            s.push_str(c.details());
            s.push_str("\n\noptions:\n");
            for o in opts {
                push_opt(&mut s, o);
            }
        }
    }
    s
}

fn push_opt(s: &mut String, o: &Opt) {
    let mut left = String::new();
    if let Some(c) = o.short {
        let _ = write!(left, "-{c}, ");
    }
    let _ = write!(left, "--{}", o.long);
    if let Some(v) = o.value {
        left.push(' ');
        left.push_str(v);
    }
    let _ = writeln!(s, "  {left:<18}{}", o.help);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(args: &[&str]) -> Invocation {
        parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn err(args: &[&str]) -> String {
        parse(args).expect_err("should not parse").to_string()
    }

    #[test]
    fn commands_and_options_in_any_order() {
        let a = ok(&[
            "--dir",
            "/s",
            "stats",
            "--run=20261122-024420-abcdef",
            "--json",
        ]);
        assert_eq!(a.command, Command::Stats);
        assert_eq!(a.dir, Some(PathBuf::from("/s")));
        assert_eq!(a.run.as_deref(), Some("20261122-024420-abcdef"));
        assert!(a.json);
        let b = ok(&[
            "tests",
            "-n",
            "5",
            "--outcome",
            "failed,crashed",
            "--outcome=error",
            "--color",
            "never",
        ]);
        assert_eq!((b.command, b.limit), (Command::Tests, Some(5)));
        assert_eq!(b.outcomes, ["failed", "crashed", "error"]);
        assert_eq!(b.color, ColorChoice::Never);
        assert_eq!(ok(&["tests", "-n3"]).limit, Some(3));
        let r = ok(&["report", "--html", "out.html"]);
        assert_eq!(r.html, Some(PathBuf::from("out.html")));
        assert_eq!(
            ok(&["report", "--html", "-"]).html,
            Some(PathBuf::from("-"))
        );
        assert!(ok(&["dump", "--jsonl"]).jsonl);
    }

    #[test]
    fn help_and_version() {
        assert_eq!(ok(&[]).command, Command::Help);
        assert_eq!(ok(&["--help"]).topic, None);
        let h = ok(&["stats", "--help", "--bogus-is-not-reached"]);
        assert_eq!((h.command, h.topic), (Command::Help, Some(Command::Stats)));
        let h = ok(&["help", "report"]);
        assert_eq!((h.command, h.topic), (Command::Help, Some(Command::Report)));
        assert_eq!(ok(&["-h"]).command, Command::Help);
        assert_eq!(ok(&["--version"]).command, Command::Version);
        assert_eq!(ok(&["-V"]).command, Command::Version);
        assert!(help(None).contains("report"));
        assert!(help(Some(Command::Report)).contains("--html FILE"));
        assert!(!help(Some(Command::Stats)).contains("--html"));
    }

    #[test]
    fn usage_errors_say_what_and_where_to_look() {
        let e = err(&["stats", "--jsn"]);
        assert!(
            e.contains("unknown option --jsn (did you mean --json?)"),
            "{e}"
        );
        assert!(e.contains("`blackbox stats --help`"), "{e}");
        assert!(err(&["--bogus"]).contains("`blackbox --help`"));
        let e = err(&["stats", "--html", "x"]);
        assert!(
            e.contains("--html is not an option of `stats`")
                && e.contains("`blackbox stats --help`"),
            "{e}"
        );
        assert!(err(&["stat"]).contains("did you mean `stats`"));
        assert!(err(&["frobnicate"]).contains("commands: stats, tests"));
        assert!(err(&["report"]).contains("--html FILE"));
        assert!(err(&["stats", "--dir"]).contains("--dir needs a value"));
        assert!(err(&["stats", "--run", "--json"]).contains("--run needs a value"));
        assert!(err(&["stats", "--json=yes"]).contains("--json takes no value"));
        assert!(err(&["tests", "-n", "ten"]).contains("whole number"));
        assert!(err(&["tests", "--outcome", "exploded"]).contains("unknown outcome"));
        assert!(err(&["stats", "extra"]).contains("unexpected argument"));
        assert!(err(&["-x"]).contains("unknown option -x"));
        assert!(err(&["runs", "--run", "x"]).contains("not an option of `runs`"));
        assert!(err(&["help", "nope"]).contains("unknown command"));
    }

    #[test]
    fn non_utf8_paths_pass_through() {
        use std::os::unix::ffi::OsStrExt;
        let dir = OsStr::from_bytes(b"/tmp/\xff");
        let a = parse(&[OsStr::new("stats"), OsStr::new("--dir"), dir]).unwrap();
        assert_eq!(a.dir.unwrap().as_os_str(), dir);
        let mut eq = b"--dir=".to_vec();
        eq.extend_from_slice(b"/tmp/\xff");
        let a = parse(&[OsStr::new("stats"), OsStr::from_bytes(&eq)]).unwrap();
        assert_eq!(a.dir.unwrap().as_os_str(), dir);
        assert!(parse(&[OsStr::from_bytes(b"st\xffats")])
            .unwrap_err()
            .message
            .contains("UTF-8"));
    }
}
