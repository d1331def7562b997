//! `blackbox run [--max-restarts N] -- pytest ARGS...`: a supervisor for the runs pytest does
//! not survive. It runs the command; when pytest dies (its run in the store has no session
//! end and no process left) with tests it never finished, it starts the command again with
//! `--blackbox-resume`, up to N times. Its exit status is pytest's over the whole logical
//! run. SIGINT and SIGTERM sent to the supervisor alone are passed on to pytest (a
//! terminal's Ctrl-C reaches both already); after one, nothing is restarted.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

use super::args::Family;
use super::context::{Ctx, Failure};
use super::junit;
use crate::aggregate::{signal_name, RunView};
use crate::store::Store;

/// Restarts unless `--max-restarts` says otherwise.
pub const DEFAULT_MAX_RESTARTS: usize = 3;
/// How long a run may stay live after its pytest exited (its xdist workers ending).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);
/// The shell's status for a command that is not found / cannot be executed.
const EXIT_NOT_FOUND: i32 = 127;
const EXIT_NOT_EXECUTABLE: i32 = 126;
/// pytest's exit codes (`pytest.ExitCode`).
const PYTEST_TESTS_FAILED: i32 = 1;
const PYTEST_NO_TESTS: i32 = 5;

/// The child being supervised, for the signal handler (0: none).
static CHILD: AtomicI32 = AtomicI32::new(0);
/// The last SIGINT or SIGTERM the supervisor received (0: none).
static INTERRUPTED: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    INTERRUPTED.store(sig, Ordering::SeqCst);
    // A signal a process sent (kill, a CI runner) goes to the supervisor alone: pass it on.
    // The terminal's (si_pid 0) went to the whole foreground group, pytest included.
    // SAFETY: `info` is the kernel's siginfo for this delivery (SA_SIGINFO).
    let sender = if info.is_null() {
        0
    } else {
        unsafe { (*info).si_pid() }
    };
    let child = CHILD.load(Ordering::SeqCst);
    if sender != 0 && child > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(child, sig) };
    }
}

fn install_forwarding() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction with our handler and SA_SIGINFO is a valid value.
        let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
        // SAFETY: sa is initialized; the old action is not wanted.
        unsafe {
            libc::sigemptyset(&raw mut sa.sa_mask);
            libc::sigaction(sig, &raw const sa, std::ptr::null_mut());
        }
    }
}

/// How one attempt ended, as the decision needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// pytest's exit code, or `128 + signal` when a signal ended it.
    pub status: i32,
    /// The run it recorded in the store; `None`: it recorded none (`-p no:blackbox`, a
    /// usage error, `--collect-only`), so there is nothing to resume.
    pub recorded: bool,
    /// Its pytest died before its session ended.
    pub died: bool,
    /// Tests it collected and did not finish.
    pub left: usize,
}

/// What the supervisor does after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Restart,
    /// Stop and exit with this status.
    Exit(i32),
}

/// Whether the logical run `id` (with the attempts it resumes) has a test that did not
/// pass: crashed, failed, an error or a timeout. Unreadable: assumed so.
fn logical_run_failed(store: &Store, id: &str) -> bool {
    junit::read_logical(store, id).map_or(true, |r| {
        r.view.tests.iter().any(|t| {
            t.crashed
                || matches!(
                    t.outcome.as_str(),
                    "failed" | "error" | "timeout" | "crashed"
                )
        })
    })
}

/// The restart decision: `restarts` done so far of at most `max`; `died_before`: an
/// earlier attempt of this logical run died and left a test that did not pass;
/// `interrupted`: the supervisor was sent SIGINT or SIGTERM.
pub(crate) fn decide(
    a: &Attempt,
    restarts: usize,
    max: usize,
    died_before: bool,
    interrupted: bool,
) -> Next {
    if interrupted || !a.recorded {
        return Next::Exit(a.status);
    }
    if a.died {
        if a.left > 0 && restarts < max {
            return Next::Restart;
        }
        // A test killed pytest: the logical run has a crashed test.
        return Next::Exit(PYTEST_TESTS_FAILED);
    }
    match a.status {
        // A test crashed in an earlier attempt: not every test passed.
        0 | PYTEST_NO_TESTS if died_before => Next::Exit(PYTEST_TESTS_FAILED),
        other => Next::Exit(other),
    }
}

fn status_code(s: ExitStatus) -> i32 {
    s.code()
        .or_else(|| s.signal().map(|sig| 128 + sig))
        .unwrap_or(1)
}

/// The value of `--NAME=V` / `--NAME V` (any of `names`) in `args`, the last one given.
fn option_value(args: &[String], names: &[&str]) -> Option<String> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        for n in names {
            if let Some(v) = a.strip_prefix(n).and_then(|r| r.strip_prefix('=')) {
                found = Some(v.to_owned());
            } else if a == n {
                found = it.next().cloned();
            }
        }
    }
    found
}

/// `--junit-xml=F` among pytest's arguments.
pub(crate) fn junit_path(args: &[String]) -> Option<String> {
    option_value(args, &["--junit-xml", "--junitxml"])
}

/// `-o junit_family=X` / `--override-ini=junit_family=X` among pytest's arguments.
pub(crate) fn junit_family(args: &[String]) -> Option<Family> {
    let mut family = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let value = if let Some(v) = a.strip_prefix("--override-ini=") {
            Some(v.to_owned())
        } else if a == "-o" || a == "--override-ini" {
            it.next().cloned()
        } else {
            a.strip_prefix("-o").map(str::to_owned)
        };
        if let Some(f) = value
            .as_deref()
            .and_then(|v| v.strip_prefix("junit_family="))
            .and_then(Family::parse)
        {
            family = Some(f);
        }
    }
    family
}

fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// One line for the user: "pytest died (SIGSEGV in `test_suite.py::test_x`)".
fn death_story(view: &RunView, status: i32) -> String {
    let main = view
        .crashes
        .iter()
        .find(|c| c.pid.is_some() && c.pid == view.run.pid && c.kind != "child")
        .or_else(|| view.crashes.iter().find(|c| c.kind != "child"));
    let how = match main {
        Some(c) if c.timeout.is_some() => "a timeout".to_owned(),
        Some(c) => match (c.signal, c.exit_code) {
            (Some(sig), _) => signal_name(sig),
            (None, Some(code)) => format!("exit status {code}"),
            (None, None) if status > 128 => signal_name(status - 128),
            (None, None) => c.kind.clone(),
        },
        None if status > 128 => signal_name(status - 128),
        None => format!("exit status {status}"),
    };
    match main.and_then(|c| c.nodeid.as_deref()) {
        Some(test) => format!("{how} in {test}"),
        None => how,
    }
}

fn store_at(dir: Option<&Path>, cx: &Ctx<'_>) -> Option<Store> {
    match dir {
        Some(d) => Store::open(d).ok(),
        None => cx.store().ok(),
    }
}

fn run_ids(store: Option<&Store>) -> BTreeSet<String> {
    store
        .and_then(|s| s.runs().ok())
        .map(|r| r.into_iter().collect())
        .unwrap_or_default()
}

/// The run `id` once no process writes to it any more: the workers of a dead xdist
/// controller may outlive it by a moment. Gives up waiting after [`SETTLE`].
fn settled(store: &Store, id: &str) -> Option<junit::Read> {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let r = junit::read(store, id).ok()?;
        if !r.view.run.live || std::time::Instant::now() >= deadline {
            return Some(r);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

pub(crate) fn run(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    let max = cx.inv.max_restarts.unwrap_or(DEFAULT_MAX_RESTARTS);
    let mut command: Vec<String> = cx.inv.args.clone();
    let cwd = cx.cwd().to_owned();
    // The store pytest writes to: its own --blackbox-dir, else ours (handed to it), else
    // found as the CLI finds it once pytest made it.
    let store_dir: Option<PathBuf> = match option_value(&command[1..], &["--blackbox-dir"]) {
        Some(d) => Some(cwd.join(expand_home(&d))),
        None => cx.inv.dir.as_ref().map(|d| {
            let d = cwd.join(d);
            command.push(format!("--blackbox-dir={}", d.display()));
            d
        }),
    };
    let junit_file = junit_path(&command[1..]).map(|p| cwd.join(expand_home(&p)));
    let family = junit_family(&command[1..]).unwrap_or_default();
    let resume_flag = "--blackbox-resume";
    let mut args: Vec<String> = command[1..].to_vec();
    install_forwarding();

    let mut restarts = 0;
    let mut died_before = false;
    let mut last_run: Option<(Store, String)> = None;
    let mut attempts_runs = 0;
    loop {
        let before = run_ids(store_at(store_dir.as_deref(), cx).as_ref());
        let mut child = match std::process::Command::new(&command[0])
            .args(&args)
            .current_dir(&cwd)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                let (code, what) = match e.kind() {
                    io::ErrorKind::NotFound => (EXIT_NOT_FOUND, "command not found".to_owned()),
                    io::ErrorKind::PermissionDenied => {
                        (EXIT_NOT_EXECUTABLE, "permission denied".to_owned())
                    }
                    _ => (EXIT_NOT_FOUND, e.to_string()),
                };
                // What the supervisor says never replaces pytest's status (a closed stderr
                // included): its writes to stderr are not checked.
                let _ = writeln!(cx.err, "blackbox run: {}: {what}", command[0]);
                return Ok(code);
            }
        };
        CHILD.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
        let status = child.wait();
        CHILD.store(0, Ordering::SeqCst);
        let status =
            status_code(status.map_err(|e| Failure::Error(format!("waiting for pytest: {e}")))?);

        // The run this attempt recorded: the newest run of the store that was not there before.
        let store = store_at(store_dir.as_deref(), cx);
        let new_run = store.as_ref().and_then(|s| {
            let after = run_ids(Some(s));
            after.difference(&before).last().cloned()
        });
        let read = match (&store, &new_run) {
            (Some(s), Some(id)) => settled(s, id),
            _ => None,
        };
        let attempt = match &read {
            None => Attempt {
                status,
                recorded: false,
                died: false,
                left: 0,
            },
            Some(r) => {
                let run = &r.view.run;
                Attempt {
                    status,
                    recorded: true,
                    died: !run.live && run.ended_wall_ns.is_none(),
                    // What a resume runs: never started, or ended before it finished (the
                    // test that crashed is reported, not run again).
                    left: r
                        .view
                        .tests
                        .iter()
                        .filter(|t| {
                            !t.crashed
                                && matches!(
                                    t.outcome.as_str(),
                                    "not-run" | "unfinished" | "running"
                                )
                        })
                        .count(),
                }
            }
        };
        if let (Some(s), Some(id)) = (store, new_run) {
            attempts_runs += 1;
            last_run = Some((s, id));
        }
        // After the settling wait, so that a signal sent during it stops the restart too.
        let interrupted = INTERRUPTED.load(Ordering::SeqCst) != 0;
        // An earlier attempt died: whether the logical run still holds a test that did not
        // pass (a crash reported failed; not when --blackbox-resume=retry ran it again and
        // it passed, nor when pytest died between tests).
        let failed_before = died_before
            && !attempt.died
            && last_run
                .as_ref()
                .is_none_or(|(s, id)| logical_run_failed(s, id));
        let next = decide(&attempt, restarts, max, failed_before, interrupted);
        died_before |= attempt.died;
        match next {
            Next::Restart => {
                restarts += 1;
                if !args.iter().any(|a| a.starts_with(resume_flag)) {
                    args.push(resume_flag.to_owned());
                }
                let story = read.as_ref().map_or_else(
                    || format!("exit status {status}"),
                    |r| death_story(&r.view, status),
                );
                let _ = writeln!(
                    cx.err,
                    "blackbox run: pytest died ({story}) with {} left; attempt {} of {}: {} {}",
                    super::text::plural(attempt.left as u64, "test", "tests"),
                    restarts + 1,
                    max + 1,
                    command[0],
                    args.join(" ")
                );
                let _ = cx.err.flush();
            }
            Next::Exit(code) => {
                if let (Some(path), Some((s, id))) = (&junit_file, &last_run) {
                    // pytest wrote F only for its last session, if it lived to the end.
                    if attempts_runs > 1 || attempt.died {
                        let written = junit::logical_suite(s, id).and_then(|suite| {
                            let mut xml = Vec::new();
                            junit::write_xml(&suite, family, &mut xml)?;
                            junit::write_file(path, &xml)?;
                            Ok(suite.cases.len())
                        });
                        // A file that cannot be written is said, and pytest's status stays.
                        let _ = match written {
                            Ok(cases) => writeln!(
                                cx.err,
                                "blackbox run: {} covers the whole run ({} in {})",
                                path.display(),
                                super::text::plural(cases as u64, "test", "tests"),
                                super::text::plural(attempts_runs as u64, "attempt", "attempts"),
                            ),
                            Err(e) => writeln!(
                                cx.err,
                                "blackbox run: cannot write {} for the whole run: {e}",
                                path.display()
                            ),
                        };
                    }
                }
                return Ok(code);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(status: i32) -> Attempt {
        Attempt {
            status,
            recorded: true,
            died: false,
            left: 0,
        }
    }

    fn died(left: usize) -> Attempt {
        Attempt {
            status: 128 + libc::SIGSEGV,
            recorded: true,
            died: true,
            left,
        }
    }

    #[test]
    fn a_dead_pytest_with_tests_left_is_restarted_while_restarts_remain() {
        assert_eq!(decide(&died(7), 0, 3, false, false), Next::Restart);
        assert_eq!(decide(&died(7), 2, 3, true, false), Next::Restart);
        // Out of restarts, or --max-restarts 0: the crash is the run's failure.
        assert_eq!(decide(&died(7), 3, 3, true, false), Next::Exit(1));
        assert_eq!(decide(&died(7), 0, 0, false, false), Next::Exit(1));
        // The crash was in the last test: nothing to resume.
        assert_eq!(decide(&died(0), 0, 3, false, false), Next::Exit(1));
    }

    #[test]
    fn the_status_is_pytests_over_the_whole_logical_run() {
        assert_eq!(decide(&ended(0), 0, 3, false, false), Next::Exit(0));
        assert_eq!(decide(&ended(1), 0, 3, false, false), Next::Exit(1));
        // An earlier attempt died: not every test passed, whatever the last one says.
        assert_eq!(decide(&ended(0), 1, 3, true, false), Next::Exit(1));
        assert_eq!(decide(&ended(5), 1, 3, true, false), Next::Exit(1));
        // Interrupted, internal error, usage error pass through.
        for code in [2, 3, 4] {
            assert_eq!(decide(&ended(code), 1, 3, true, false), Next::Exit(code));
        }
        assert_eq!(decide(&ended(5), 0, 3, false, false), Next::Exit(5));
    }

    #[test]
    fn nothing_is_restarted_after_an_interruption_or_without_a_recorded_run() {
        assert_eq!(
            decide(&died(7), 0, 3, false, true),
            Next::Exit(128 + libc::SIGSEGV)
        );
        let unrecorded = Attempt {
            recorded: false,
            ..died(7)
        };
        assert_eq!(decide(&unrecorded, 0, 3, false, false), Next::Exit(139));
    }

    #[test]
    fn junit_file_and_family_are_read_as_pytest_reads_them() {
        let a = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            junit_path(&a(&["-x", "--junit-xml=out/j.xml"])).as_deref(),
            Some("out/j.xml")
        );
        assert_eq!(
            junit_path(&a(&["--junitxml", "j.xml", "tests"])).as_deref(),
            Some("j.xml")
        );
        assert_eq!(junit_path(&a(&["--", "--junitxml=x"])), None);
        assert_eq!(
            junit_family(&a(&["-o", "junit_family=xunit1"])),
            Some(Family::Xunit1)
        );
        assert_eq!(
            junit_family(&a(&["-ojunit_family=legacy"])),
            Some(Family::Xunit1)
        );
        assert_eq!(
            junit_family(&a(&["--override-ini=junit_family=xunit2"])),
            Some(Family::Xunit2)
        );
        assert_eq!(
            junit_family(&a(&["-o", "console_output_style=classic"])),
            None
        );
    }
}
