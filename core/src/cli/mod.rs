//! The `blackbox` command line: tables, JSON and an HTML report of what a store holds.
//!
//! [`run`] is the whole program: it takes the arguments (without the program name), what it
//! needs to know about the environment ([`Env`]) and the two output streams, and returns the
//! exit status. It never exits the process, so the `blackbox` binary and the Python console
//! script (through the extension module) run the same code. Exit status: [`EXIT_OK`],
//! [`EXIT_ERROR`] (also: damage found by `check`), [`EXIT_USAGE`]. Every error is one line
//! on the error stream saying what is wrong and what to do. `docs/cli.md` documents the
//! commands and their JSON.
//!
//! ```
//! use blackbox_core::cli::{run, Env};
//!
//! let (mut out, mut err) = (Vec::new(), Vec::new());
//! let env = Env { blackbox_dir: Some("/nonexistent/.blackbox".into()), ..Env::default() };
//! assert_eq!(run(&["stats"], &env, &mut out, &mut err), 1);
//! assert!(String::from_utf8(err).unwrap().starts_with("blackbox: no blackbox store at"));
//! ```

mod args;
mod context;
mod history;
mod html;
mod junit;
mod show;
mod supervise;
mod table;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;

pub use args::{help, parse, ColorChoice, Command, Invocation, UsageError, OUTCOMES};
pub use junit::Family;
pub use table::{command_line, duration, shorten_middle, wrap, DEFAULT_WIDTH, MIN_WIDTH};

pub const EXIT_OK: i32 = 0;
/// An error, or damage found by `check`.
pub const EXIT_ERROR: i32 = 1;
/// The command line does not parse.
pub const EXIT_USAGE: i32 = 2;

/// What the CLI needs to know about where it runs.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// Whether standard output is a terminal (colour is on only then, by default).
    pub stdout_is_tty: bool,
    /// `NO_COLOR` is set to something (<https://no-color.org>).
    pub no_color: bool,
    /// `BLACKBOX_DIR`: the store when `--dir` is not given.
    pub blackbox_dir: Option<PathBuf>,
    /// The width tables fit: `COLUMNS`, else the terminal's; unknown (a pipe): tables
    /// are [`DEFAULT_WIDTH`] wide. `--wide` cuts nothing whatever this says.
    pub columns: Option<usize>,
    /// The current directory, where the search for the store starts (`None`: the
    /// process's own).
    pub cwd: Option<PathBuf>,
}

impl Env {
    /// The environment of this process: stdout's terminal, `NO_COLOR`, `BLACKBOX_DIR`,
    /// `COLUMNS` (as pytest and most tools read it: it wins over the terminal's size).
    pub fn from_process() -> Env {
        let stdout_is_tty = io::stdout().is_terminal();
        let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let columns = set("COLUMNS")
            .and_then(|c| c.to_str().and_then(|c| c.trim().parse::<usize>().ok()))
            .filter(|&c| c > 0)
            .or_else(|| stdout_is_tty.then(terminal_columns).flatten());
        Env {
            stdout_is_tty,
            no_color: set("NO_COLOR").is_some(),
            blackbox_dir: set("BLACKBOX_DIR").map(PathBuf::from),
            columns,
            cwd: None,
        }
    }
}

fn terminal_columns() -> Option<usize> {
    // SAFETY: TIOCGWINSZ fills the winsize we own; a failure leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on our own stdout descriptor.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &raw mut ws) };
    (rc == 0 && ws.ws_col > 0).then(|| usize::from(ws.ws_col))
}

/// Why a command did not complete.
#[derive(Debug)]
pub(crate) enum Failure {
    Usage(UsageError),
    /// One line for the user: what is wrong and what to do.
    Error(String),
    /// Writing the output failed (a closed pipe is not an error).
    Output(io::Error),
}

impl From<crate::Error> for Failure {
    fn from(e: crate::Error) -> Failure {
        Failure::Error(e.to_string())
    }
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Failure {
        Failure::Output(e)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(u) => u.fmt(f),
            Failure::Error(e) => f.write_str(e),
            Failure::Output(e) => write!(f, "cannot write the output: {e}"),
        }
    }
}

/// Runs the command line `argv` (the arguments after the program name) and returns the
/// exit status. Output goes to `out`, errors and warnings to `err`.
pub fn run<S: AsRef<OsStr>>(
    argv: &[S],
    env: &Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let result = match parse(argv) {
        Err(u) => Err(Failure::Usage(u)),
        Ok(inv) => execute(&inv, env, out, err),
    };
    let result = result.and_then(|code| out.flush().map(|()| code).map_err(Failure::Output));
    match result {
        Ok(code) => code,
        // `blackbox dump | head`: the reader has what it wanted.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_OK,
        Err(f) => {
            let line = table::clean(&f.to_string()).into_owned();
            let _ = writeln!(err, "blackbox: {line}");
            let _ = err.flush();
            match f {
                Failure::Usage(_) => EXIT_USAGE,
                _ => EXIT_ERROR,
            }
        }
    }
}

fn execute(
    inv: &Invocation,
    env: &Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<i32, Failure> {
    match inv.command {
        Command::Help => {
            out.write_all(help(inv.topic).as_bytes())?;
            Ok(EXIT_OK)
        }
        Command::Version => {
            writeln!(out, "blackbox {}", env!("CARGO_PKG_VERSION"))?;
            Ok(EXIT_OK)
        }
        _ => context::dispatch(&mut context::Ctx::new(inv, env, out, err)),
    }
}

/// The `blackbox` program: arguments and environment of this process, buffered stdout.
/// Returns the exit status for the caller to exit with.
pub fn main_from_env() -> i32 {
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    let env = Env::from_process();
    let stdout = io::stdout();
    let mut out = io::BufWriter::with_capacity(64 << 10, stdout.lock());
    let stderr = io::stderr();
    let mut err = stderr.lock();
    run(&argv, &env, &mut out, &mut err)
}
