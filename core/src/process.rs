//! What a test process was given: the accelerators it may use and the memory cgroup that
//! can OOM-kill it. Read once per process, when its first test starts
//! ([`crate::Record::ProcessInfo`]), and again by whoever explains its death.

use std::path::{Path, PathBuf};

/// The variables that choose a process's accelerators (NVIDIA, AMD's HIP and `ROCr`,
/// Intel's Level Zero), as a conftest often sets them per xdist worker.
pub const DEVICE_VARIABLES: [&str; 4] = [
    "CUDA_VISIBLE_DEVICES",
    "HIP_VISIBLE_DEVICES",
    "ROCR_VISIBLE_DEVICES",
    "ZE_AFFINITY_MASK",
];

/// The [`DEVICE_VARIABLES`] set in this process's environment, in that order.
pub fn device_env() -> Vec<(String, String)> {
    DEVICE_VARIABLES
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| ((*name).to_owned(), v)))
        .collect()
}

/// This process's memory cgroup directory: cgroup v2's unified hierarchy where it has a
/// `memory.events`, else the v1 `memory` controller's directory; `None` without either.
pub fn memory_cgroup() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    memory_cgroup_in(&text, Path::new("/sys/fs/cgroup"))
}

/// [`memory_cgroup`] from the text of `/proc/<pid>/cgroup`, under the mount `root`.
pub fn memory_cgroup_in(proc_cgroup: &str, root: &Path) -> Option<PathBuf> {
    let mut v1 = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let rel = path.trim_start_matches('/');
        if controllers.is_empty() {
            let dir = root.join(rel);
            if dir.join("memory.events").is_file() {
                return Some(dir);
            }
            let unified = root.join("unified").join(rel);
            if unified.join("memory.events").is_file() {
                return Some(unified);
            }
        } else if controllers.split(',').any(|c| c == "memory") {
            let dir = root.join("memory").join(rel);
            if dir.join("memory.oom_control").is_file() {
                v1 = Some(dir);
            }
        }
    }
    v1
}

/// How many processes the OOM killer has killed in the cgroup `dir` so far: the
/// `oom_kill` counter of `memory.events` (v2) or `memory.oom_control` (v1).
pub fn oom_kills(dir: &Path) -> Option<u64> {
    ["memory.events", "memory.oom_control"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_v2_then_v1_memory_cgroups() {
        let root = std::env::temp_dir().join(format!("bbx-cgroup-{}", std::process::id()));
        let v2 = root.join("user.slice/job");
        let v1 = root.join("memory/process_api/abc");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::create_dir_all(&v1).unwrap();
        std::fs::write(
            v1.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        let text = "4:memory:/process_api/abc\n0::/user.slice/job\n";
        assert_eq!(memory_cgroup_in(text, &root), Some(v1.clone()));
        assert_eq!(oom_kills(&v1), Some(2));
        std::fs::write(
            v2.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(memory_cgroup_in(text, &root), Some(v2.clone()));
        assert_eq!(oom_kills(&v2), Some(1));
        assert_eq!(memory_cgroup_in("1:cpu:/\n", &root), None);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn device_env_lists_only_what_is_set() {
        // The test binary's environment is its own; only check the shape and order.
        let env = device_env();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        let mut expected: Vec<&str> = DEVICE_VARIABLES
            .iter()
            .copied()
            .filter(|n| std::env::var(n).is_ok())
            .collect();
        assert_eq!(names, std::mem::take(&mut expected));
    }
}
