//! `blackbox combine`: stores written on several machines (CI shards) merged into one.
//!
//! Each run folder of a source is copied into the target (into a hidden folder first, then
//! renamed, so a combine killed half way leaves no half run) with a `shard` file naming
//! its source, and folded into the target's history; runs that only the source's history
//! still holds (their folders pruned) are copied row by row. A run already in the target
//! is left alone, so combining twice changes nothing. A source that is not a store (or
//! cannot be read), a run with a damaged segment and a damaged source history are reported
//! by path and skipped; a damaged run folder whose run the source's history holds comes in
//! from there.

use std::collections::BTreeSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::follower::Follower;
use crate::history::{self, FoldOptions, History, SHARD_FILE};
use crate::private::create_private_dir;
use crate::store::Store;

/// What combining one source did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Combined {
    pub shard: String,
    /// Run folders copied (and folded into the target's history).
    pub copied: Vec<String>,
    /// Runs brought in from the source's history alone (their folders were pruned).
    pub from_history: Vec<String>,
    /// Runs the target held already.
    pub already: Vec<String>,
    /// What was skipped, one line each, naming the path and why.
    pub skipped: Vec<String>,
}

/// The shard a source is named after: its folder's name, or its parent's when it is a
/// `.blackbox` folder (`artifacts/shard-1/.blackbox` is `shard-1`).
pub fn shard_name(source: &Path) -> String {
    let abs = std::path::absolute(source).unwrap_or_else(|_| source.to_owned());
    let mut parts = abs.components().rev().filter_map(|c| match c {
        std::path::Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
        _ => None,
    });
    match parts.next() {
        Some(name) if name == ".blackbox" => parts.next().unwrap_or(name),
        Some(name) => name,
        None => abs.display().to_string(),
    }
}

/// The store `source` names: the folder itself, or the `.blackbox` inside it (an artifact
/// folder holding the store its job wrote). A folder with neither a run folder, nor
/// `history.redb`, nor the store's own `.gitignore` is not a store, and is refused: a
/// wrong path must not combine as "0 runs copied".
pub fn source_store(source: &Path) -> Result<Store> {
    let inner = source.join(".blackbox");
    let root = if inner.is_dir() {
        inner
    } else {
        source.to_owned()
    };
    let store = Store::open(&root)?;
    let own_gitignore = std::fs::read(root.join(".gitignore"))
        .is_ok_and(|text| text == crate::store::GITIGNORE.as_bytes());
    if own_gitignore || store.history_path().exists() || !store.runs()?.is_empty() {
        return Ok(store);
    }
    Err(Error::NotAStore { path: root })
}

/// Merges store `source` (or the `.blackbox` inside it: [`source_store`]) into `target`
/// (see the module doc).
pub fn combine(target: &Store, source: &Path, opts: &FoldOptions) -> Result<Combined> {
    let src = source_store(source)?;
    if std::fs::canonicalize(src.root()).ok() == std::fs::canonicalize(target.root()).ok() {
        return Err(Error::History(format!(
            "{} is the target store itself; name the stores to combine into it",
            source.display()
        )));
    }
    let mut done = Combined {
        shard: shard_name(source),
        ..Combined::default()
    };
    let target_history = target.history_path();
    let mut held: BTreeSet<String> = if target_history.exists() {
        History::open(&target_history)?
            .run_ids()?
            .into_iter()
            .collect()
    } else {
        BTreeSet::new()
    };
    // Run folders with damaged segments, and what is wrong: said once the source's history
    // was read, which may hold the run whole.
    let mut damaged: Vec<(String, String)> = Vec::new();
    for id in src.runs()? {
        let from = src.run_path(&id)?;
        let to = target.root().join(&id);
        // In the target already: its folder, or its rows alone (brought in from a history).
        if to.exists() || held.contains(&id) {
            if !held.contains(&id) {
                history::fold_run(target, &id, opts)?;
                held.insert(id.clone());
            }
            done.already.push(id);
            continue;
        }
        let mut follower = Follower::new(&id, &from);
        if follower.any_writer_alive() {
            done.skipped.push(format!(
                "{}: a process still writes to this run; combine it once its session ended",
                from.display()
            ));
            continue;
        }
        let view = follower.view(&mut crate::aggregate::Aggregate::default());
        if !view.problems.is_empty() {
            damaged.push((
                id,
                format!("{}: damaged: {}", from.display(), view.problems.join("; ")),
            ));
            continue;
        }
        copy_run(&from, target.root(), &id, &done.shard)?;
        history::fold_run(target, &id, opts)?;
        held.insert(id.clone());
        done.copied.push(id);
    }
    let source_history = src.history_path();
    if source_history.exists() {
        let imported = (|| -> Result<()> {
            let h = History::open(&source_history)?;
            for id in h.run_ids()? {
                if !held.contains(&id) {
                    history::import_run(&h, &target_history, &id, &done.shard, opts)?;
                    held.insert(id.clone());
                    done.from_history.push(id);
                } else if !done.already.contains(&id) && !done.copied.contains(&id) {
                    done.already.push(id);
                }
            }
            Ok(())
        })();
        if let Err(e) = imported {
            done.skipped
                .push(format!("{}: not combined: {e}", source_history.display()));
        }
    }
    for (id, line) in damaged {
        done.skipped.push(if done.from_history.contains(&id) {
            format!(
                "{line}; the folder was not copied, the run came in from the source's history.redb"
            )
        } else {
            format!("{line}; not combined")
        });
    }
    Ok(done)
}

/// Copies run folder `from` into `root/id` through a hidden folder renamed at the end,
/// adding a `shard` file unless the run has one.
fn copy_run(from: &Path, root: &Path, id: &str, shard: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = root.join(format!(".combine-{id}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, "removing", e))?;
    }
    create_private_dir(&tmp)?;
    let entries = std::fs::read_dir(from).map_err(|e| Error::io(from, "listing", e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(from, "listing", e))?;
        // Plain files only: a symlink or a folder in a run folder is not ours.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let src = entry.path();
        let dst = tmp.join(entry.file_name());
        let mut input = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&src)
            .map_err(|e| Error::io(&src, "reading", e))?;
        let mut output = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&dst)
            .map_err(|e| Error::io(&dst, "writing", e))?;
        std::io::copy(&mut input, &mut output).map_err(|e| Error::io(&dst, "writing", e))?;
    }
    // Unless the run has one (it came through an earlier combine): private, as every file.
    crate::private::create_new_file(&tmp.join(SHARD_FILE), format!("{shard}\n").as_bytes())?;
    let to = root.join(id);
    std::fs::rename(&tmp, &to).map_err(|e| Error::io(&to, "creating", e))
}
