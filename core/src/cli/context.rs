//! What every command shares: where it runs ([`Env`]), the parsed line and where its
//! output goes ([`Ctx`]), how it fails ([`Failure`]), and the run it reads: `--run`
//! resolved, the run read now, its damage said in one warning line. It uses no command.

use std::fmt;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value as Json;

use super::args::{ColorChoice, Invocation, UsageError};
use super::json::{write_doc, write_value, Part};
use super::table::{Painter, Style, DEFAULT_WIDTH, MIN_WIDTH};
use super::text::clean;
use crate::aggregate::{Aggregate, RunView};
use crate::error::{Damage, Error};
use crate::follower::Follower;
use crate::segment::{SegmentReader, SegmentStatus};
use crate::store::Store;

/// How long a command waits for a fold that holds history.redb.
pub(crate) const HISTORY_WAIT: Duration = Duration::from_secs(2);

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

/// What every command needs: the parsed line, where output goes and how it looks.
pub(crate) struct Ctx<'a> {
    pub inv: &'a Invocation,
    pub out: &'a mut dyn Write,
    pub err: &'a mut dyn Write,
    pub paint: Painter,
    /// The width tables fit; `None` (`--wide`): cut nothing.
    pub width: Option<usize>,
    /// `--dir`, `$BLACKBOX_DIR`, and where the search upward starts.
    given_dir: Option<PathBuf>,
    env_dir: Option<PathBuf>,
    cwd: PathBuf,
}

impl<'a> Ctx<'a> {
    pub fn new(
        inv: &'a Invocation,
        env: &Env,
        out: &'a mut dyn Write,
        err: &'a mut dyn Write,
    ) -> Ctx<'a> {
        let enabled = match inv.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => env.stdout_is_tty && !env.no_color,
        };
        let width = (!inv.wide).then(|| env.columns.map_or(DEFAULT_WIDTH, |c| c.max(MIN_WIDTH)));
        Ctx {
            inv,
            out,
            err,
            paint: Painter { enabled },
            width,
            given_dir: inv.dir.clone(),
            env_dir: env.blackbox_dir.clone(),
            cwd: env
                .cwd
                .clone()
                .or_else(|| std::env::current_dir().ok())
                .unwrap_or_else(|| PathBuf::from(".")),
        }
    }

    /// Where the command runs (the search for the store starts there).
    pub(crate) fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// `--dir`, from the current directory (combine's target; "." when none was given).
    pub(crate) fn given_dir(&self) -> PathBuf {
        self.cwd
            .join(self.given_dir.as_deref().unwrap_or_else(|| Path::new(".")))
    }

    /// The store, found as pytest finds its rootdir (see [`crate::locate`]).
    pub(crate) fn store(&self) -> Result<Store, Failure> {
        let (dir, _) = crate::locate::find_store(
            self.given_dir.as_deref(),
            self.env_dir.as_deref(),
            &self.cwd,
        )?;
        Ok(Store::open(&dir)?)
    }

    pub(crate) fn p<'t>(&self, text: &'t str, style: Style) -> std::borrow::Cow<'t, str> {
        self.paint.paint(text, Some(style))
    }

    /// A JSON object, one key a line and one list item a line (see [`write_doc`]).
    pub(crate) fn json(&mut self, value: &Json) -> Result<(), Failure> {
        let parts: Vec<(&str, Part<'_>)> = match value {
            Json::Object(map) => map
                .iter()
                .map(|(k, v)| match v {
                    Json::Array(items) => (k.as_str(), Part::Many(Box::new(items.iter().cloned()))),
                    other => (k.as_str(), Part::One(other.clone())),
                })
                .collect(),
            other => return write_value(self.out, other).map_err(Failure::Output),
        };
        Ok(write_doc(self.out, parts)?)
    }

    pub(crate) fn warn(&mut self, line: &str) -> Result<(), Failure> {
        writeln!(self.err, "blackbox: warning: {}", clean(line))?;
        Ok(())
    }
}

/// The run `--run` names (its id, or a unique start of it), else the latest.
pub(crate) fn resolve_run(store: &Store, wanted: Option<&str>) -> Result<String, Failure> {
    Ok(store.resolve_run(wanted)?)
}

/// A run read now: the view and the segments' state.
pub(crate) struct Loaded {
    pub view: RunView,
    pub statuses: Vec<SegmentStatus>,
}

/// Fails when the run folder cannot be listed: a follower would see an empty run.
pub(crate) fn list_run(dir: &Path) -> Result<(), Failure> {
    std::fs::read_dir(dir).map(drop).map_err(|e| Error::Io {
        path: dir.to_owned(),
        action: "listing run folder",
        source: e,
    })?;
    Ok(())
}

/// A segment a newer blackbox wrote cannot be half-read: that is an error, not damage.
fn refuse_unsupported(statuses: &[SegmentStatus]) -> Result<(), Failure> {
    for s in statuses {
        if s.damage.as_ref().is_some_and(|d| d.offset == 0) {
            if let Err(e @ Error::UnsupportedVersion { .. }) = SegmentReader::open(&s.path) {
                return Err(e.into());
            }
        }
    }
    Ok(())
}

pub(crate) fn load_id(store: &Store, id: &str) -> Result<Loaded, Failure> {
    let dir = store.run_path(id)?;
    list_run(&dir)?;
    let mut follower = Follower::new(id, &dir);
    let mut agg = Aggregate::default();
    follower.poll_into(&mut agg);
    let statuses = follower.statuses();
    refuse_unsupported(&statuses)?;
    let view = agg.view(id, &statuses);
    drop_later(agg);
    drop_later(follower);
    Ok(Loaded { view, statuses })
}

/// Frees a large value on another thread: freeing a million-record aggregate costs a tenth
/// of a `stats`, and nobody waits for it (the process may exit first, which is fine).
pub(crate) fn drop_later<T: Send + 'static>(value: T) {
    // When no thread can start, `spawn` drops the closure, and the value with it, right here.
    let _ = std::thread::Builder::new()
        .name("blackbox-drop".into())
        .spawn(move || drop(value));
}

/// Reads the run the command line names, warning (one line) about damage.
pub(crate) fn load(cx: &mut Ctx<'_>) -> Result<Loaded, Failure> {
    let store = cx.store()?;
    let id = resolve_run(&store, cx.inv.run.as_deref())?;
    let mut loaded = load_id(&store, &id)?;
    // A resumed run reads as its whole logical run (issue 14).
    if loaded.view.run.resumes.is_some() {
        loaded.view = store.with_earlier_attempts(std::mem::take(&mut loaded.view));
    }
    warn_damage(
        cx,
        &id,
        loaded.statuses.iter().filter_map(|s| s.damage.as_ref()),
    )?;
    Ok(loaded)
}

pub(crate) fn warn_damage<'d>(
    cx: &mut Ctx<'_>,
    id: &str,
    damage: impl Iterator<Item = &'d Damage>,
) -> Result<(), Failure> {
    let damage: Vec<&Damage> = damage.collect();
    let Some(first) = damage.first() else {
        return Ok(());
    };
    let what = if damage.len() == 1 {
        "a damaged segment".to_owned()
    } else {
        format!("{} damaged segments", damage.len())
    };
    let line = format!(
        "run {id} has {what}; everything before the damage was read; {first}{} (`blackbox check` lists all)",
        if damage.len() > 1 { " and more" } else { "" }
    );
    cx.warn(&line)
}
