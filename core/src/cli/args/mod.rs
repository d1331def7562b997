//! The command line, parsed by hand (no clap: the crate builds on 2 cores in seconds).
//!
//! `blackbox [OPTIONS] COMMAND [OPTIONS]`: options may come before or after the command,
//! as `--name VALUE` or `--name=VALUE`. Each option is checked against the command it is
//! given with, so `blackbox stats --html x` is a usage error, not silently ignored.

mod help;
mod invocation;
mod options;
mod parse;

pub use help::help;
pub use invocation::{ColorChoice, Command, Family, Invocation, UsageError, OUTCOMES};
pub use parse::parse;
