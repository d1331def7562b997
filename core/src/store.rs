//! A store: a directory of runs (one folder each) and `history.redb`.

use std::path::{Path, PathBuf};

use crate::aggregate::{Aggregate, RunView};
use crate::clock::wall_ns;
use crate::error::{Error, Result};
use crate::follower::Follower;
use crate::private;
use crate::private::{create_private_dir, open_dir_nofollow};
use crate::snapshot::Snapshot;

/// The file the controller folds finished runs into.
pub const HISTORY_FILE: &str = "history.redb";

/// What the store writes into its own `.gitignore`, as pytest does for `.pytest_cache`:
/// nothing in it belongs in version control.
pub const GITIGNORE: &str = "# Created by pytest-blackbox automatically.\n*\n";

/// A store directory. Cheap to clone; holds no open file.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens an existing store; fails with [`Error::NoStore`] when `root` does not exist.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        match std::fs::metadata(root) {
            Ok(m) if m.is_dir() => Ok(Store {
                root: root.to_owned(),
            }),
            Ok(_) => Err(Error::NotADirectory {
                path: root.to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Error::NoStore {
                path: root.to_owned(),
            }),
            Err(e) => Err(Error::io(root, "opening store", e)),
        }
    }

    /// Opens a store to write into, creating its directory (mode 0700) and its
    /// `.gitignore` when missing. A store directory that is not private to this user
    /// (owned by another, writable by others without the sticky bit) is refused with
    /// [`Error::Refused`]; see `private.rs`.
    pub fn create(root: impl AsRef<Path>) -> Result<Store> {
        let root = root.as_ref();
        create_private_dir(root)?;
        private::check_dir(root, "store directory", true)?;
        private::create_new_file(&root.join(".gitignore"), GITIGNORE.as_bytes())?;
        Store::open(root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn history_path(&self) -> PathBuf {
        self.root.join(HISTORY_FILE)
    }

    /// Starts a run: a new folder (mode 0700) whose name sorts by start time. Returns its id.
    /// The folder is always a new one (never something already at that name).
    pub fn new_run(&self) -> Result<String> {
        for _ in 0..16 {
            let id = new_run_id();
            if private::make_dir(&self.root.join(&id))? {
                return Ok(id);
            }
        }
        Err(Error::io(
            &self.root,
            "creating a run folder in",
            std::io::Error::other("run id collisions"),
        ))
    }

    /// The ids of every run, oldest first.
    pub fn runs(&self) -> Result<Vec<String>> {
        let dir = open_dir_nofollow(&self.root).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NoStore {
                    path: self.root.clone(),
                }
            } else {
                Error::io(&self.root, "listing", e)
            }
        })?;
        drop(dir);
        let mut ids = Vec::new();
        for entry in
            std::fs::read_dir(&self.root).map_err(|e| Error::io(&self.root, "listing", e))?
        {
            let entry = entry.map_err(|e| Error::io(&self.root, "listing", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if is_run_id(name) && entry.file_type().is_ok_and(|t| t.is_dir()) {
                ids.push(name.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The newest run's id.
    pub fn latest(&self) -> Result<String> {
        self.runs()?.pop().ok_or_else(|| Error::NoRuns {
            store: self.root.clone(),
        })
    }

    /// The run `wanted` names: its id, or a start of it that only one run has (what
    /// `--run` and `Store.run()` take); `None`: the latest.
    pub fn resolve_run(&self, wanted: Option<&str>) -> Result<String> {
        let Some(wanted) = wanted else {
            return self.latest();
        };
        let runs = self.runs()?;
        if runs.iter().any(|r| r == wanted) {
            return Ok(wanted.to_owned());
        }
        let matches: Vec<String> = if wanted.is_empty() {
            Vec::new()
        } else {
            runs.into_iter().filter(|r| r.starts_with(wanted)).collect()
        };
        match matches.len() {
            1 => Ok(matches.into_iter().next().unwrap_or_default()),
            0 => Err(Error::NoSuchRun {
                id: wanted.to_owned(),
                store: self.root.clone(),
            }),
            _ => Err(Error::AmbiguousRun {
                id: wanted.to_owned(),
                store: self.root.clone(),
                matches,
            }),
        }
    }

    /// The folder of run `id`, which must exist.
    pub fn run_path(&self, id: &str) -> Result<PathBuf> {
        let path = self.root.join(id);
        if !is_run_id(id) || !path.is_dir() {
            return Err(Error::NoSuchRun {
                id: id.to_owned(),
                store: self.root.clone(),
            });
        }
        Ok(path)
    }

    /// Every committed record of run `id`, read now.
    pub fn snapshot(&self, id: &str) -> Result<Snapshot> {
        Snapshot::read(id, &self.run_path(id)?)
    }

    /// The aggregate view of run `id` as it stands now (tests, fixtures, crashes,
    /// workers), read through a [`Follower`] without keeping the records: the fast path
    /// (the CLI and the Python `Store` read this way). [`snapshot`](Self::snapshot) keeps
    /// every record, for record-level access.
    pub fn view(&self, id: &str) -> Result<RunView> {
        Ok(Follower::new(id, &self.run_path(id)?).view(&mut Aggregate::default()))
    }

    /// `latest` as one logical run with the attempts it resumes (`--blackbox-resume`,
    /// [`crate::RunMeta::resumes`]), followed back while their folders are kept: see
    /// `merge_attempts` (aggregate/merge.rs). A run that resumes nothing comes back as it is.
    pub fn with_earlier_attempts(&self, latest: RunView) -> RunView {
        let earlier = self.earlier_attempts(&latest, |id| self.view(id).ok().map(|v| (v, ())));
        crate::aggregate::merge_attempts(latest, earlier.into_iter().map(|(v, ())| v).collect())
    }

    /// The attempts `latest` resumes, newest first, each read by `read` (its view and
    /// whatever else the caller keeps of it, such as the follower `blackbox junit` reads
    /// reports with); the walk stops at the first that cannot be read.
    pub fn earlier_attempts<T>(
        &self,
        latest: &RunView,
        mut read: impl FnMut(&str) -> Option<(RunView, T)>,
    ) -> Vec<(RunView, T)> {
        let mut earlier = Vec::new();
        let mut next = latest.run.resumes.clone();
        let mut seen = std::collections::HashSet::from([latest.run.id.clone()]);
        // Each attempt resumes an older run: ids only go down, and each is read once.
        while let Some(id) = next.take() {
            if id >= latest.run.id || !seen.insert(id.clone()) {
                break;
            }
            let Some((v, kept)) = read(&id) else { break };
            next.clone_from(&v.run.resumes);
            earlier.push((v, kept));
        }
        earlier
    }

    /// A follower of run `id`, reading only what is new on each poll.
    pub fn follow(&self, id: &str) -> Result<Follower> {
        Ok(Follower::new(id, &self.run_path(id)?))
    }

    /// Removes the folders of all but the newest `keep` runs; returns the ids removed.
    /// A run whose segments have a live writer is kept whatever its age.
    pub fn prune_runs(&self, keep: usize) -> Result<Vec<String>> {
        let runs = self.runs()?;
        let mut removed = Vec::new();
        if runs.len() <= keep {
            return Ok(removed);
        }
        for id in &runs[..runs.len() - keep] {
            let path = self.root.join(id);
            let live = Follower::new(id, &path).any_writer_alive();
            if !live {
                std::fs::remove_dir_all(&path)
                    .map_err(|e| Error::io(&path, "removing old run", e))?;
                removed.push(id.clone());
            }
        }
        Ok(removed)
    }
}

/// Removes the empty attachment files of the run folder `run_dir` (a `faulthandler-<pid>.txt`
/// that no crash wrote to): every regular file there of this user that is empty and is not
/// a segment. Returns the paths removed. Call it when the run's processes are done: a live
/// process's empty file may still receive its traceback.
pub fn remove_empty_attachments(run_dir: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::MetadataExt;
    let mut removed = Vec::new();
    let me = private::euid();
    for entry in std::fs::read_dir(run_dir).map_err(|e| Error::io(run_dir, "listing", e))? {
        let entry = entry.map_err(|e| Error::io(run_dir, "listing", e))?;
        let name = entry.file_name();
        if crate::segment::is_segment_name(&name) || name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        // symlink_metadata: a link is never followed, nor removed (it is not ours to judge).
        let Ok(m) = entry.metadata() else { continue };
        if m.is_file() && m.len() == 0 && m.uid() == me {
            let path = entry.path();
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, "removing", e)),
            }
        }
    }
    Ok(removed)
}

/// Whether `s` looks like a run id (`YYYYMMDD-HHMMSS.uuuuuu-xxxx`, UTC start time to the
/// microsecond, then 4 random hex digits): ids sort in start order, even for runs started
/// in the same second. Also what keeps `--run ../x` from leaving the store.
pub fn is_run_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 27
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
        && b[16..22].iter().all(u8::is_ascii_digit)
        && b[22] == b'-'
        && b[23..]
            .iter()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
}

#[allow(clippy::many_single_char_names)] // y, m, d, h: the calendar's own names
fn new_run_id() -> String {
    let ns = wall_ns();
    let (y, mo, d, h, mi, s) = civil_from_unix((ns / 1_000_000_000) as i64);
    let mut r = 0u32;
    // SAFETY: getrandom fills the 4 bytes we own.
    if unsafe { libc::getrandom((&raw mut r).cast(), 4, 0) } != 4 {
        r = (ns as u32) ^ std::process::id();
    }
    let micros = (ns / 1_000) % 1_000_000;
    format!(
        "{y:04}{mo:02}{d:02}-{h:02}{mi:02}{s:02}.{micros:06}-{:04x}",
        r & 0xffff
    )
}

/// UTC calendar date and time of a Unix time (Howard Hinnant's days-from-civil, inverted).
#[allow(clippy::many_single_char_names)] // the published algorithm's names
pub fn civil_from_unix(t: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        ((secs % 3600) / 60) as u32,
        (secs % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_sort_and_validate() {
        let id = new_run_id();
        assert!(is_run_id(&id), "{id}");
        assert!(is_run_id("20261122-024420.123456-abcd"));
        assert!(!is_run_id("../20261122-024420.123456-abcd"));
        assert!(!is_run_id("20261122-024420.123456-ABCD"));
        let later = new_run_id();
        assert!(later > id, "{later} sorts after {id}");
        assert_eq!(civil_from_unix(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil_from_unix(1_795_315_460), (2026, 11, 22, 2, 44, 20));
    }
}
