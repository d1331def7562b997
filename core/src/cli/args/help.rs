//! `blackbox --help` and `blackbox COMMAND --help`.

use std::fmt::Write as _;

use super::invocation::Command;
use super::options::{Key, Opt, OPTS};

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
