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
mod check;
mod context;
mod crash_text;
mod dump;
mod history;
mod html;
mod json;
mod junit;
mod lists;
mod report;
mod run_tables;
mod show;
mod stats;
mod supervise;
mod table;
mod text;

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};

use context::{Ctx, Failure};

pub use args::{help, parse, ColorChoice, Command, Family, Invocation, UsageError, OUTCOMES};
pub use context::{Env, EXIT_ERROR, EXIT_OK, EXIT_USAGE};
pub use table::{DEFAULT_WIDTH, MIN_WIDTH};
pub use text::{command_line, duration, shorten_middle, wrap};

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
            let line = text::clean(&f.to_string()).into_owned();
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
        _ => dispatch(&mut Ctx::new(inv, env, out, err)),
    }
}

/// The command `cx.inv` names, run by the module of its name.
fn dispatch(cx: &mut Ctx<'_>) -> Result<i32, Failure> {
    match cx.inv.command {
        Command::Stats => stats::stats(cx),
        Command::Tests => lists::tests(cx),
        Command::Fixtures => lists::fixtures(cx),
        Command::Crashes => lists::crashes(cx),
        Command::Dump => dump::dump(cx),
        Command::Runs => lists::runs(cx),
        Command::Check => check::check(cx),
        Command::Report => report::report(cx),
        Command::Show => show::show(cx),
        Command::Flaky => history::flaky(cx),
        Command::History => history::history(cx),
        Command::Slower => history::slower(cx),
        Command::Combine => history::combine(cx),
        Command::Junit => junit::junit(cx),
        Command::Run => supervise::run(cx),
        Command::Help | Command::Version => unreachable!("handled before a store is opened"),
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
