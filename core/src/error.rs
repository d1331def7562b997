//! Errors: one enum for the store, each message saying what happened and what to do.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Where and why reading a segment stopped early. Everything before `offset` was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub path: PathBuf,
    pub offset: u64,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: at offset {}: {}",
            self.path.display(),
            self.offset,
            self.reason
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An I/O call failed on `path`.
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The disk (or a quota or file-size limit) has no room for the segment to grow.
    StoreFull {
        path: PathBuf,
        wanted: u64,
        source: io::Error,
    },
    /// A segment reached the largest size one process may write.
    SegmentFull { path: PathBuf, limit: u64 },
    /// One record is larger than a frame may hold.
    RecordTooLarge { size: usize, limit: usize },
    /// A file is not a valid segment (foreign, damaged, hostile).
    Damaged(Damage),
    /// A segment of a format this version cannot read.
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    /// A writer inherited through `fork()` was used; the child must open its own.
    Inherited { path: PathBuf },
    /// The store directory does not exist.
    NoStore { path: PathBuf },
    /// A directory named as a store holds nothing of one (no run folder, no history.redb).
    NotAStore { path: PathBuf },
    /// The store has no run with this id.
    NoSuchRun { id: String, store: PathBuf },
    /// The store holds no run yet.
    NoRuns { store: PathBuf },
    /// Something that must be a directory is not (or is a symlink to something else).
    NotADirectory { path: PathBuf },
    /// A path of the store is not private to this user (owned by another, writable by
    /// others, a symlink or a FIFO where a file should be): it is not written.
    Refused {
        path: PathBuf,
        problem: String,
        fix: String,
    },
    /// A transaction is open: commit or roll back before this call.
    TransactionOpen,
    /// A record could not be encoded.
    Encode(String),
    /// `history.redb` failed.
    History(String),
    /// No store in the directory a reader started from nor in any above it.
    NoStoreFound { from: PathBuf },
    /// A run id prefix that more than one run starts with.
    AmbiguousRun {
        id: String,
        store: PathBuf,
        matches: Vec<String>,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, action: &'static str, source: io::Error) -> Error {
        Error::Io {
            path: path.to_owned(),
            action,
            source,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { path, action, source } => write!(f, "{action} {}: {source}", path.display()),
            Error::StoreFull { path, wanted, source } => write!(
                f,
                "no room to grow {} to {wanted} bytes ({source}); free disk space or point \
                 BLACKBOX_DIR/--blackbox-dir at a larger filesystem; what was committed before is kept",
                path.display()
            ),
            Error::SegmentFull { path, limit } => write!(
                f,
                "{} reached the {limit}-byte limit of one process's segment; record less per process",
                path.display()
            ),
            Error::RecordTooLarge { size, limit } => write!(
                f,
                "a record of {size} bytes exceeds the {limit}-byte limit; store large data in a file and record its path"
            ),
            Error::Damaged(d) => write!(f, "damaged segment {d}"),
            Error::UnsupportedVersion { path, found, supported } => write!(
                f,
                "{} has format version {found}, this blackbox reads version {supported}; \
                 read it with the blackbox version that wrote it, or upgrade",
                path.display()
            ),
            Error::Inherited { path } => write!(
                f,
                "this process was forked from the writer of {}; it must open its own segment",
                path.display()
            ),
            Error::NoStore { path } => write!(
                f,
                "no blackbox store at {}; run pytest with the plugin first, or pass --dir / set BLACKBOX_DIR",
                path.display()
            ),
            Error::NotAStore { path } => write!(
                f,
                "not a blackbox store: {} holds no run folder, no history.redb and no .blackbox; \
                 name a store directory (.blackbox, or a session's --blackbox-dir) or a folder that holds one",
                path.display()
            ),
            Error::NoSuchRun { id, store } => write!(
                f,
                "no run {id:?} in {}; `blackbox runs` lists the runs there",
                store.display()
            ),
            Error::NoRuns { store } => write!(
                f,
                "the store {} holds no run yet; run pytest with the plugin first",
                store.display()
            ),
            Error::NotADirectory { path } => write!(
                f,
                "{} is not a directory; remove it or choose another store directory",
                path.display()
            ),
            Error::Refused { path, problem, fix } => write!(
                f,
                "refusing to record into {}: {problem}; {fix}",
                path.display()
            ),
            Error::TransactionOpen => write!(f, "a transaction is open; commit or roll it back first"),
            Error::Encode(why) => write!(f, "cannot encode record: {why}"),
            Error::History(why) => write!(f, "history.redb: {why}"),
            Error::NoStoreFound { from } => write!(
                f,
                "no blackbox store (.blackbox) in {} or any directory above it; run pytest with \
                 the plugin first, or pass --dir / set BLACKBOX_DIR",
                from.display()
            ),
            Error::AmbiguousRun { id, store, matches } => write!(
                f,
                "run id {id:?} matches {} runs in {} ({}{}); give more of it",
                matches.len(),
                store.display(),
                matches.iter().take(3).map(String::as_str).collect::<Vec<_>>().join(", "),
                if matches.len() > 3 { ", …" } else { "" }
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::StoreFull { source, .. } => Some(source),
            _ => None,
        }
    }
}
