//! Opening `history.redb` (the file itself, read-only or writable), waiting while another
//! process holds it, and the errors that say what to do.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long a fold (or a read) waits for another process to close `history.redb`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// redb's page cache for one fold or read (a limit, not an allocation).
pub(super) const CACHE_BYTES: usize = 64 << 20;

pub(super) fn builder() -> redb::Builder {
    let mut b = redb::Builder::new();
    b.set_cache_size(CACHE_BYTES);
    b
}

/// Opens the file itself: never through a symlink (`O_NOFOLLOW`), created mode 0600, and
/// only a regular file (`O_NONBLOCK` keeps a FIFO from blocking the open).
pub(super) fn open_file(path: &Path, write: bool) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK);
    if write {
        o.write(true).create(true).mode(0o600);
    }
    let file = o.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::from_raw_os_error(libc::EISDIR));
    }
    Ok(file)
}

/// Opens (creating it if missing) for a fold: only a file of this user that others cannot
/// write ([`crate::private::check_file`]); the refusal comes back as an I/O error of kind
/// `PermissionDenied` carrying the [`Error::Refused`], which [`open_error`] unwraps.
pub(super) fn open_write(path: &Path) -> Result<redb::Database, redb::DatabaseError> {
    if matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
    {
        create_whole(path)?;
    }
    let file = open_file(path, true)?;
    crate::private::check_file(&file, path)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    builder().create_with_backend(redb::backends::FileBackend::new(file)?)
}

/// Makes a new, empty history at `path` all at once: written under a name of this
/// process's own, then linked into place (never over a file another session made
/// meanwhile). A session killed while creating it leaves no half-written history.redb,
/// which no later fold could open.
pub(super) fn create_whole(path: &Path) -> Result<(), redb::DatabaseError> {
    let name = path.file_name().map_or_else(
        || "history.redb".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let tmp = path.with_file_name(format!(".{name}.{}.new", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let made = (|| {
        let file = open_file(&tmp, true)?;
        drop(builder().create_with_backend(redb::backends::FileBackend::new(file)?)?);
        match std::fs::hard_link(&tmp, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e.into()),
            _ => Ok(()),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    made
}

/// Opens read-only; fails with `RepairAborted` when a writer died mid-fold. Only a file of
/// this user that others cannot write ([`crate::private::check_file_to_read`]; refused as
/// [`open_write`] refuses), so what another user planted is never read as this user's.
pub(super) fn open_read(path: &Path) -> Result<redb::ReadOnlyDatabase, redb::DatabaseError> {
    let file = open_file(path, false)?;
    crate::private::check_file_to_read(&file, path)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
    builder().open_read_only_with_backend(redb::backends::FileBackend::new(file)?)
}

pub(super) fn damaged(path: &Path, why: &str) -> Error {
    Error::History(format!(
        "{} is damaged or not a history file ({why}); it only holds the digest of past runs (the run \
         folders are untouched): move it aside or delete it, and the next fold starts a new history",
        path.display()
    ))
}

/// Runs `f`, turning a panic inside redb (which may panic on a file damaged outside redb)
/// into a clear error.
pub(super) fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("redb panicked");
        Err(damaged(path, why))
    })
}

pub(super) fn redb_error(path: &Path, action: &str, e: redb::Error) -> Error {
    match e {
        redb::Error::Corrupted(why) => damaged(path, &why),
        redb::Error::UpgradeRequired(v) => Error::History(format!(
            "{} is in redb file format {v}, which this blackbox cannot write; move it aside to start a new history",
            path.display()
        )),
        redb::Error::TableTypeMismatch { table, .. } => damaged(path, &format!("table {table:?} has unexpected types")),
        e => Error::History(format!("{action} {}: {e}", path.display())),
    }
}

/// Whether an open failed only because another process has the file open.
pub(super) fn is_busy(e: &redb::DatabaseError) -> bool {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            true
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => {
            io.kind() == std::io::ErrorKind::WouldBlock || io.raw_os_error() == Some(libc::EAGAIN)
        }
        _ => false,
    }
}

pub(super) fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Io(io))
            if io.get_ref().is_some_and(<dyn std::error::Error + Send + Sync>::is::<Error>) =>
        {
            *io.into_inner()
                .and_then(|inner| inner.downcast::<Error>().ok())
                .expect("an Error inside, checked")
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::NotFound => Error::History(format!(
            "no history at {} yet; it is written when a session ends (the plugin folds each run in)",
            path.display()
        )),
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => damaged(path, &io.to_string()),
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) if matches!(io.raw_os_error(), Some(libc::ELOOP | libc::EISDIR)) => {
            Error::History(format!(
                "{} is a symlink, a directory or another file that is not a plain file; history is never \
                 read or written through one: remove it (the next fold starts a new history)",
                path.display()
            ))
        }
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Error::io(path, "opening", io),
        redb::DatabaseError::RepairAborted => damaged(path, "it needs a repair that could not run"),
        e => redb_error(path, "opening", e.into()),
    }
}

/// Opens with `open`, retrying with backoff while another process holds the file, for up to
/// `wait`. Returns the handle, the attempts made and the time spent waiting.
pub(super) fn open_retrying<D>(
    path: &Path,
    wait: Duration,
    on_busy: Option<fn(u32)>,
    open: impl Fn(&Path) -> Result<D, redb::DatabaseError>,
) -> Result<(D, u32, Duration)> {
    let start = Instant::now();
    let deadline = start + wait;
    let mut delay = Duration::from_millis(2);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match open(path) {
            Ok(db) => {
                return Ok((
                    db,
                    attempts,
                    if attempts == 1 {
                        Duration::ZERO
                    } else {
                        start.elapsed()
                    },
                ))
            }
            Err(e) if is_busy(&e) => {
                let now = Instant::now();
                if now >= deadline {
                    return Err(Error::History(format!(
                        "{} stayed open in another process (another session folding its run, or a reader) \
                         for {:.1} s, {attempts} attempts; nothing was written. The run's folder keeps its \
                         records: fold it again once the other process is done, or allow a longer wait",
                        path.display(),
                        wait.as_secs_f64()
                    )));
                }
                if let Some(f) = on_busy {
                    f(attempts);
                }
                // Jitter so two waiters do not retry in lock step.
                let jitter = u64::from(
                    std::process::id()
                        .wrapping_mul(2_654_435_761)
                        .wrapping_add(attempts.wrapping_mul(40_503)),
                ) % 1000;
                let nap = (delay + delay.mul_f64(jitter as f64 / 2000.0)).min(deadline - now);
                std::thread::sleep(nap);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(e) => return Err(open_error(path, e)),
        }
    }
}
