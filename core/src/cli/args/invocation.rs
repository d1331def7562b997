//! What a command line says: the command, its options' values ([`Invocation`]), or why
//! it does not parse ([`UsageError`]); and each command's name and help text.

use std::fmt;
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
    pub(crate) fn details(self) -> &'static str {
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
