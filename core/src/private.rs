//! Files and folders private to the user who records: what the store refuses and how it
//! creates what it writes.
//!
//! The store holds what tests recorded (secrets, sometimes), and is written by every
//! process of a run, as whatever user runs pytest (root, often, in CI containers). So:
//! - a folder the store writes into must be owned by this user and not writable by group
//!   or others (unless sticky, as `/tmp` is): else another user could plant a symlink
//!   where a file will be created, or read what is recorded;
//! - files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`, mode exactly 0600 (folders
//!   0700) whatever the umask, and an existing file is only reused when it is a regular
//!   file of this user;
//! - what is refused is an [`Error::Refused`] naming the path, what is wrong and the fix.

use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use crate::error::{Error, Result};

/// The effective uid of this process: who owns what it creates.
pub fn euid() -> u32 {
    // SAFETY: geteuid always succeeds.
    unsafe { libc::geteuid() }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn refused(path: &Path, problem: String, fix: &str) -> Error {
    Error::Refused {
        path: path.to_owned(),
        problem,
        fix: fix.replace("{path}", &path.display().to_string()),
    }
}

/// What kind of file `m` is, in words, when it is not a regular file or a directory.
fn odd_kind(m: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = m.file_type();
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// Refuses `m` (of `path`) unless this user owns it and group and others cannot write it
/// (a sticky folder excepted: there only a file's owner may rename or remove it).
fn check_owner_and_mode(path: &Path, m: &Metadata, what: &str) -> Result<()> {
    let me = euid();
    if m.uid() != me {
        return Err(refused(
            path,
            format!(
                "this {what} is owned by uid {}, not by this user (uid {me}): that user could \
                 read what is recorded or plant links where it will be written",
                m.uid()
            ),
            "use a store directory of your own, or remove it (it is recreated privately)",
        ));
    }
    let mode = m.permissions().mode();
    let sticky = m.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(refused(
            path,
            format!(
                "this {what} is writable by other users (mode {:04o}): they could plant links \
                 or files in it",
                mode & 0o7777
            ),
            "`chmod go-w {path}`, or use a store directory of your own",
        ));
    }
    Ok(())
}

/// Checks a folder the store writes into: a directory (a symlink to one is followed only
/// when `follow`: a store root the user linked on purpose), owned by this user, not
/// writable by others.
pub fn check_dir(path: &Path, what: &str, follow: bool) -> Result<()> {
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, "checking", e))?;
    let m = if m.file_type().is_symlink() && follow {
        std::fs::metadata(path).map_err(|e| Error::io(path, "checking", e))?
    } else {
        m
    };
    if !m.is_dir() {
        return Err(refused(
            path,
            format!("{} is where a {what} should be", odd_kind(&m)),
            "remove it, or use another store directory",
        ));
    }
    check_owner_and_mode(path, &m, what)
}

/// Checks an open file of the store (history.redb): a regular file of this user that
/// others cannot write; it is made 0600 (others may have been able to read it, or the
/// umask left its owner unable to).
pub fn check_file(file: &File, path: &Path) -> Result<()> {
    let m = check_file_to_read(file, path)?;
    if m.permissions().mode() & 0o777 != 0o600 {
        set_mode(file, path, 0o600)?;
    }
    Ok(())
}

/// What [`check_file`] checks, for a file only read (its mode is left as it is): another
/// user's file could say anything (a planted history.redb, its notes printed as ours).
pub fn check_file_to_read(file: &File, path: &Path) -> Result<Metadata> {
    let m = file
        .metadata()
        .map_err(|e| Error::io(path, "checking", e))?;
    if !m.is_file() {
        return Err(refused(
            path,
            format!("{} is where a file should be", odd_kind(&m)),
            "remove it",
        ));
    }
    check_owner_and_mode(path, &m, "file")?;
    Ok(m)
}

fn set_mode(file: &File, path: &Path, mode: libc::mode_t) -> Result<()> {
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(file.as_raw_fd(), mode) } != 0 {
        return Err(Error::io(
            path,
            "setting the mode of",
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Opens `path` without following a symlink there; `O_NONBLOCK` keeps a FIFO from blocking.
fn open_nofollow(path: &Path, flags: libc::c_int) -> io::Result<File> {
    let c = c_path(path)?;
    // SAFETY: open with a NUL-terminated path; the fd is owned by the returned File.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// Creates the file `path` for writing, mode exactly 0600, never through a symlink. An
/// existing file is reused (emptied) only when it is a regular file of this user with one
/// link (`faulthandler-<pid>.txt` of an earlier process of the same pid); a symlink, FIFO,
/// foreign file or hard link in its place is refused by name.
pub fn create_file(path: &Path) -> Result<File> {
    match open_nofollow(path, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL) {
        Ok(f) => {
            set_mode(&f, path, 0o600)?;
            return Ok(f);
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(Error::io(path, "creating", e)),
    }
    let m = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, "checking", e))?;
    if !m.is_file() {
        return Err(refused(
            path,
            format!("{} is where a file should be", odd_kind(&m)),
            "remove it",
        ));
    }
    let f = open_nofollow(path, libc::O_RDWR).map_err(|e| Error::io(path, "opening", e))?;
    let m = f.metadata().map_err(|e| Error::io(path, "checking", e))?;
    check_owner_and_mode(path, &m, "file")?;
    if !m.is_file() || m.nlink() != 1 {
        return Err(refused(
            path,
            format!("this file has {} links (another name shares it)", m.nlink()),
            "remove it",
        ));
    }
    f.set_len(0).map_err(|e| Error::io(path, "emptying", e))?;
    set_mode(&f, path, 0o600)?;
    Ok(f)
}

/// Writes `contents` to `path` unless something is there already (which is left alone):
/// created as [`create_file`] creates. Returns whether it wrote. A file it created but
/// could not fill (a full disk) is removed again: left empty, it would be "something
/// there" to every later call, which would never write it.
pub fn create_new_file(path: &Path, contents: &[u8]) -> Result<bool> {
    use std::io::Write;
    match open_nofollow(path, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL) {
        Ok(mut f) => {
            let written = set_mode(&f, path, 0o600).and_then(|()| {
                f.write_all(contents)
                    .map_err(|e| Error::io(path, "writing", e))
            });
            if written.is_err() {
                // Ours (O_EXCL): no one else's file goes.
                let _ = std::fs::remove_file(path);
            }
            written.map(|()| true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::io(path, "creating", e)),
    }
}

/// Makes the directory `path`, mode exactly 0700 whatever the umask. Returns false when
/// something already exists there (which is neither touched nor followed).
pub fn make_dir(path: &Path) -> Result<bool> {
    let c = c_path(path).map_err(|e| Error::io(path, "creating", e))?;
    // SAFETY: mkdir with a NUL-terminated path.
    if unsafe { libc::mkdir(c.as_ptr(), 0o700) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::AlreadyExists {
            return Ok(false);
        }
        return Err(Error::io(path, "creating", e));
    }
    // The umask may have taken bits of 0700 away (a folder of mode 0 cannot even be
    // opened to fchmod it); mkdir never gave more.
    // SAFETY: chmod with a NUL-terminated path.
    if unsafe { libc::chmod(c.as_ptr(), 0o700) } != 0 {
        return Err(Error::io(
            path,
            "setting the mode of",
            io::Error::last_os_error(),
        ));
    }
    Ok(true)
}

/// Creates `path` (and missing parents) as directories of mode 0700. An existing directory is
/// used as it is; a symlink in its place is refused.
pub(crate) fn create_private_dir(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) if m.file_type().is_symlink() => {
            // Follow a symlinked store root the user made on purpose, but only to a directory.
            return match std::fs::metadata(path) {
                Ok(t) if t.is_dir() => Ok(()),
                _ => Err(Error::NotADirectory {
                    path: path.to_owned(),
                }),
            };
        }
        Ok(_) => {
            return Err(Error::NotADirectory {
                path: path.to_owned(),
            })
        }
        Err(_) => {}
    }
    if let Some(parent) = path.parent() {
        if !parent.as_os_str().is_empty() && !parent.exists() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, "creating", e))?;
        }
    }
    make_dir(path).map(|_| ())
}

/// Opens a directory without following a symlink in its place (for listing run folders).
pub(crate) fn open_dir_nofollow(path: &Path) -> io::Result<File> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: open with a NUL-terminated path; the fd is owned by the returned File.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { File::from_raw_fd(fd) })
}
