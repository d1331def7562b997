//! What a reader gets of a run: [`RunView`] and its parts (tests, fixtures, crashes, exits,
//! workers), with what they tell of themselves; their JSON is in `json.rs`.

use crate::record::{Phase, Value};

/// The run as a whole.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMeta {
    pub id: String,
    pub started_wall_ns: Option<u64>,
    pub ended_wall_ns: Option<u64>,
    pub exit_status: Option<i32>,
    pub host: Option<String>,
    pub pid: Option<u32>,
    pub argv: Vec<String>,
    pub rootdir: Option<String>,
    /// Some writer of the run still holds its lock.
    pub live: bool,
    /// The run this session resumes (`--blackbox-resume`): the previous attempt.
    pub resumes: Option<String>,
    /// This session's number in its logical run: 1, or more for a resume.
    pub attempt: u32,
    /// A resume that runs the tests that crashed in `resumes` again (`=retry`).
    pub retry: bool,
}

impl RunMeta {
    /// Its pytest died: no process of it is alive and its session never ended.
    pub fn died(&self) -> bool {
        !self.live && self.ended_wall_ns.is_none()
    }
}

/// One phase of a test as reported.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseView {
    pub phase: Phase,
    pub outcome: String,
    pub duration_s: f64,
    /// Where the record is: (segment index, frame offset), for [`crate::Follower::read_at`].
    pub location: (usize, u64),
}

/// One test across every process that touched it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestView {
    pub nodeid: String,
    /// `passed`, `failed`, `skipped`, `error` (setup or teardown failed), `crashed`,
    /// `running` (its process is alive and in it), `unfinished` (its process ended
    /// without finishing it, on purpose) or `not-run` (collected, never started, and the
    /// run is over).
    pub outcome: String,
    pub duration_s: f64,
    pub worker: Option<String>,
    pub pid: Option<u32>,
    pub crashed: bool,
    pub signal: Option<i32>,
    /// The test ran out of time (its outcome is then `timeout`).
    pub timeout: Option<TimeoutView>,
    pub phases: Vec<PhaseView>,
    pub properties: Vec<(String, Value)>,
    pub start_mono_ns: u64,
    pub end_mono_ns: Option<u64>,
    /// The latest time any record of this test carries: where a timeline bar of a test
    /// that never ended (crashed, unfinished) stops.
    pub last_mono_ns: u64,
    /// The attempt of the logical run it ran in ([`RunMeta::attempt`]).
    pub attempt: u32,
}

impl TestView {
    /// A test collected in `attempt` that never started: nothing but its name.
    pub fn not_run(nodeid: String, attempt: u32) -> TestView {
        TestView {
            nodeid,
            outcome: "not-run".into(),
            duration_s: 0.0,
            worker: None,
            pid: None,
            crashed: false,
            signal: None,
            timeout: None,
            phases: Vec::new(),
            properties: Vec::new(),
            start_mono_ns: 0,
            end_mono_ns: None,
            last_mono_ns: 0,
            attempt,
        }
    }

    /// The run did not finish it: never started, or in the middle of it when its process
    /// died (what `--blackbox-resume` runs).
    pub fn not_finished(&self) -> bool {
        self.crashed || matches!(self.outcome.as_str(), "not-run" | "unfinished" | "running")
    }
}

/// Setup and teardown times of one fixture (or one `timed` name), over the whole run.
#[derive(Debug, Clone, PartialEq)]
pub struct FixtureStats {
    pub name: String,
    pub scope: String,
    pub setups: u64,
    pub teardowns: u64,
    /// Setup time, summed.
    pub total_s: f64,
    pub mean_s: f64,
    pub max_s: f64,
    pub teardown_total_s: f64,
}

/// A process that died while (or between) running tests.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashView {
    pub nodeid: Option<String>,
    pub worker: Option<String>,
    pub pid: Option<u32>,
    pub signal: Option<i32>,
    pub exit_code: Option<i32>,
    /// The phase that died: `setup`, `call` or `teardown`.
    pub phase: Option<String>,
    pub detail: String,
    /// Files in the run folder for this crash (faulthandler output).
    pub attachments: Vec<String>,
    /// How the process ended: `timeout` (its test ran past its time limit: see `timeout`),
    /// `signal` (a fatal signal its handler saw, or that a parent
    /// read), `exit` (`os._exit` in the middle of a test), `killed` (no handler ran:
    /// SIGKILL, the OOM killer, power loss) or `child` (a process the test forked died: the
    /// test itself did not; `nodeid` names it, and it is not counted as crashed).
    pub kind: String,
    /// When it died (Unix ns), where known.
    pub wall_ns: Option<u64>,
    /// The accelerator variables the dead process had (see `process.rs`).
    pub devices: Vec<(String, String)>,
    /// The process was ended because its test ran out of time (`kind` is `timeout`).
    pub timeout: Option<TimeoutView>,
}

/// A process that ended itself (`os._exit`) outside any phase of a test: no crash.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitView {
    /// The test whose report came last before the exit; `None` between tests.
    pub nodeid: Option<String>,
    pub phase: Option<Phase>,
    pub code: i32,
    pub worker: Option<String>,
    pub pid: Option<u32>,
}

/// A test that ran past its time limit (a [`Record::Timeout`](crate::Record::Timeout)).
#[derive(Debug, Clone, PartialEq)]
pub struct TimeoutView {
    pub phase: Option<String>,
    pub limit_s: f64,
    pub elapsed_s: f64,
    /// `blackbox_timeout` or `pytest-timeout`.
    pub source: String,
    /// The process ended with it (else only the test failed).
    pub fatal: bool,
}

impl TimeoutView {
    /// "timed out after 2.0 s in call (`blackbox_timeout`)".
    pub fn story(&self) -> String {
        crate::watchdog::timeout_story(self.limit_s, self.phase.as_deref(), &self.source)
    }
}

/// One xdist worker (or the main process), over all its processes: the children it
/// forked (pytest-forked) count as its own.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerView {
    /// `gw0`…, or the role (`main`, `controller`) for processes outside xdist workers.
    pub id: String,
    pub pids: Vec<u32>,
    pub tests: u64,
    pub crashes: u64,
    pub alive: bool,
    /// Of `pids`, the children forked to run a test.
    pub forked: u64,
    /// The accelerator variables its processes had (the first process that set any).
    pub devices: Vec<(String, String)>,
}

/// Everything [`Aggregate::view`](crate::Aggregate::view) derives.
#[derive(Debug, Clone, Default)]
pub struct RunView {
    pub run: RunMeta,
    /// In the order they started.
    pub tests: Vec<TestView>,
    /// Slowest total first.
    pub fixtures: Vec<FixtureStats>,
    /// Calls timed with the `timed` decorator, slowest total first.
    pub timed: Vec<FixtureStats>,
    pub crashes: Vec<CrashView>,
    /// Processes that ended themselves between tests or after a test's report.
    pub exits: Vec<ExitView>,
    pub workers: Vec<WorkerView>,
    /// Damaged or unreadable segments, as "path: at offset N: reason".
    pub problems: Vec<String>,
    pub segments: usize,
    pub records: u64,
    /// How many tests the session collected
    /// ([`Record::Collected`](crate::Record::Collected)); `None` when it recorded no
    /// collection (it died before, or an older version wrote it).
    pub collected: Option<u64>,
}

impl CrashView {
    /// `timeout`, or the signal's name, for a table's column; `None` when neither.
    pub fn cause(&self) -> Option<String> {
        if self.timeout.is_some() {
            Some("timeout".into())
        } else {
            self.signal.map(signal_name)
        }
    }
}

/// The [`CrashView::kind`] of a death an observer saw: a signal (SIGKILL: `killed`), an
/// exit status, or nothing known (`killed`).
pub(crate) fn crash_kind(signal: Option<i32>, exit_code: Option<i32>) -> &'static str {
    match (signal, exit_code) {
        (Some(libc::SIGKILL), _) | (None, None) => "killed",
        (Some(_), _) => "signal",
        (None, Some(_)) => "exit",
    }
}

/// `SIGSEGV` for 11, and so on; `signal N` for others.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}
