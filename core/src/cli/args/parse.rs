//! The parser: argv to an [`Invocation`], each option checked against its command, a
//! misspelling answered with the nearest name.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use super::invocation::{ColorChoice, Command, Family, Invocation, UsageError, OUTCOMES};
use super::options::{opt, Key, Opt, OPTS};

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

#[cfg(test)]
mod tests {
    use super::super::help::help;
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
