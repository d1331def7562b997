//! Where a reader finds the store, as pytest finds its rootdir: `--dir`, then
//! `$BLACKBOX_DIR`, then upward from the current directory the nearest `.blackbox`, or the
//! `blackbox_dir` ini value of a pytest config file there. The CLI and the Python `Store()`
//! both call [`find_store`], so they find the same store the plugin wrote to.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The store's default folder name under pytest's rootdir.
pub const STORE_DIR_NAME: &str = ".blackbox";

/// How [`find_store`] found the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Given (`--dir`, `Store(path)`).
    Given,
    /// `$BLACKBOX_DIR`.
    Env,
    /// A `.blackbox` folder in the directory or above it.
    Upward,
    /// The `blackbox_dir` ini value of the pytest config file of a directory on the way up.
    Ini,
}

/// The store directory: `given`, else `env` (`$BLACKBOX_DIR`), else the first directory
/// from `cwd` upward that has a `.blackbox` folder or a pytest config file setting
/// `blackbox_dir` (relative to that directory). Relative paths are taken from `cwd`.
/// Fails with [`Error::NoStoreFound`] when there is none.
pub fn find_store(
    given: Option<&Path>,
    env: Option<&Path>,
    cwd: &Path,
) -> Result<(PathBuf, Found)> {
    if let Some(p) = given {
        return Ok((cwd.join(p), Found::Given));
    }
    if let Some(p) = env.filter(|p| !p.as_os_str().is_empty()) {
        return Ok((cwd.join(p), Found::Env));
    }
    for dir in cwd.ancestors() {
        let candidate = dir.join(STORE_DIR_NAME);
        if candidate.is_dir() {
            return Ok((candidate, Found::Upward));
        }
        if let Some(value) = ini_blackbox_dir(dir) {
            let p = PathBuf::from(value);
            let p = if p.is_absolute() { p } else { dir.join(p) };
            if p.is_dir() {
                return Ok((p, Found::Ini));
            }
        }
    }
    Err(Error::NoStoreFound {
        from: cwd.to_owned(),
    })
}

/// The `blackbox_dir` value of the pytest config files of `dir`, in pytest's order
/// (`pytest.ini`, `.pytest.ini`, `pyproject.toml`, `tox.ini`, `setup.cfg`): the first file
/// that is a pytest config decides, as it decides the rootdir.
fn ini_blackbox_dir(dir: &Path) -> Option<String> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    for name in ["pytest.ini", ".pytest.ini"] {
        if let Some(text) = read(name) {
            // Any pytest.ini is the config, with or without a [pytest] section.
            return ini_value(&text, &["pytest"], "blackbox_dir");
        }
    }
    if let Some(text) = read("pyproject.toml") {
        if has_section(&text, &["tool.pytest.ini_options", "tool.pytest"]) {
            return ini_value(
                &text,
                &["tool.pytest.ini_options", "tool.pytest"],
                "blackbox_dir",
            );
        }
    }
    if let Some(text) = read("tox.ini") {
        if has_section(&text, &["pytest"]) {
            return ini_value(&text, &["pytest"], "blackbox_dir");
        }
    }
    if let Some(text) = read("setup.cfg") {
        if has_section(&text, &["tool:pytest"]) {
            return ini_value(&text, &["tool:pytest"], "blackbox_dir");
        }
    }
    None
}

fn section_name(line: &str) -> Option<&str> {
    let l = line.trim();
    l.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .map(str::trim)
}

fn has_section(text: &str, sections: &[&str]) -> bool {
    text.lines()
        .filter_map(section_name)
        .any(|s| sections.contains(&s))
}

/// `key = value` (or `key: value`) inside one of `sections` of an ini or TOML file; TOML
/// strings lose their quotes.
fn ini_value(text: &str, sections: &[&str], key: &str) -> Option<String> {
    let mut inside = false;
    for line in text.lines() {
        if let Some(s) = section_name(line) {
            inside = sections.contains(&s);
            continue;
        }
        if !inside {
            continue;
        }
        let l = line.trim();
        if l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let Some((k, v)) = l.split_once('=').or_else(|| l.split_once(':')) else {
            continue;
        };
        if k.trim() != key {
            continue;
        }
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.split_once('"').map(|(a, _)| a))
            .or_else(|| {
                v.strip_prefix('\'')
                    .and_then(|x| x.split_once('\'').map(|(a, _)| a))
            })
            .unwrap_or(v);
        return (!v.is_empty()).then(|| v.to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tmp(PathBuf);
    impl Drop for Tmp {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tmp(name: &str) -> Tmp {
        let p = std::env::temp_dir().join(format!("bbx-locate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("a/b/c")).unwrap();
        Tmp(p)
    }

    #[test]
    fn dir_then_env_then_the_nearest_store_upward() {
        let t = tmp("order");
        let deep = t.0.join("a/b/c");
        std::fs::create_dir(t.0.join(".blackbox")).unwrap();
        let (p, how) = find_store(None, None, &deep).unwrap();
        assert_eq!((p, how), (t.0.join(".blackbox"), Found::Upward));
        std::fs::create_dir(t.0.join("a/.blackbox")).unwrap();
        assert_eq!(
            find_store(None, None, &deep).unwrap().0,
            t.0.join("a/.blackbox")
        );
        let (p, how) = find_store(None, Some(Path::new("elsewhere")), &deep).unwrap();
        assert_eq!((p, how), (deep.join("elsewhere"), Found::Env));
        let given = find_store(Some(Path::new("/x")), Some(Path::new("y")), &deep).unwrap();
        assert_eq!(given, (PathBuf::from("/x"), Found::Given));
    }

    #[test]
    fn the_ini_of_the_rootdir_config_names_the_store() {
        let t = tmp("ini");
        let deep = t.0.join("a/b/c");
        std::fs::create_dir(t.0.join("a/results")).unwrap();
        std::fs::write(
            t.0.join("a/pyproject.toml"),
            "[project]\nname = \"x\"\n\n[tool.pytest.ini_options]\naddopts = \"-q\"\nblackbox_dir = \"results\"  # ours\n",
        )
        .unwrap();
        let (p, how) = find_store(None, None, &deep).unwrap();
        assert_eq!((p, how), (t.0.join("a/results"), Found::Ini));
        std::fs::write(
            t.0.join("a/b/tox.ini"),
            "[pytest]\nblackbox_dir = ../results\n",
        )
        .unwrap();
        assert_eq!(
            find_store(None, None, &deep).unwrap().0,
            t.0.join("a/b/../results")
        );
        std::fs::write(t.0.join("a/b/c/setup.cfg"), "[metadata]\nname = x\n").unwrap();
        assert_eq!(find_store(None, None, &deep).unwrap().1, Found::Ini);
    }

    #[test]
    fn nothing_found_says_where_the_search_started() {
        let t = tmp("none");
        let deep = t.0.join("a/b/c");
        // The temp dir's parents may hold a store of their own; only a miss is checked here.
        if let Err(e) = find_store(None, None, &deep) {
            assert!(e.to_string().contains(&*deep.to_string_lossy()), "{e}");
        }
    }
}
