//! What memory the process may use: the memory limit of its cgroup (v2 `memory.max`, v1
//! `memory.limit_in_bytes`, the smallest on the way up to the root), and how much it holds now (resident set).

use std::path::{Path, PathBuf};

/// A limit at or above this is no limit (cgroup v1 writes about 2^63 for "none").
const NO_LIMIT: u64 = 1 << 60;

/// The memory limit of this process's cgroup, if it has one.
pub fn cgroup_limit() -> Option<u64> {
    let membership = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_in(Path::new("/sys/fs/cgroup"), &membership)
}

/// [`cgroup_limit`] for a cgroup filesystem mounted at `root` and a `/proc/<pid>/cgroup` text.
fn cgroup_limit_in(root: &Path, membership: &str) -> Option<u64> {
    let mut limits = Vec::new();
    for line in membership.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if controllers.is_empty() {
            // v2: the unified hierarchy.
            limits.extend(walk_up(root, path, "memory.max"));
        } else if controllers.split(',').any(|c| c == "memory") {
            limits.extend(walk_up(&root.join("memory"), path, "memory.limit_in_bytes"));
        }
    }
    limits.into_iter().min()
}

/// The smallest limit in `file` from the group at `path` up to the hierarchy's root. Inside a container the path
/// may name a group that is not visible (the container's root is mounted instead), which reads as no file.
fn walk_up(mount: &Path, path: &str, file: &str) -> Option<u64> {
    let mut group = PathBuf::from(path);
    let mut smallest: Option<u64> = None;
    loop {
        if let Some(limit) = read_limit(&mount.join(&group).join(file)) {
            smallest = Some(smallest.map_or(limit, |s| s.min(limit)));
        }
        if !group.pop() {
            return smallest;
        }
    }
}

fn read_limit(file: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(file).ok()?;
    let value = text.trim().parse::<u64>().ok()?; // "max" (v2's no limit) does not parse
    (value < NO_LIMIT).then_some(value)
}

/// The process's resident set size in bytes (`VmRSS`), when the system reports it.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib = line.split_whitespace().nth(1)?.parse::<u64>().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, relative: &str, value: &str) {
        let file = root.join(relative);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(file, value).unwrap();
    }

    #[test]
    fn limits_are_read_from_v1_and_v2_groups_and_their_parents() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // v2: the group's own limit, or a parent's smaller one; "max" is none.
        write(root, "a/b/memory.max", "max\n");
        assert_eq!(cgroup_limit_in(root, "0::/a/b\n"), None);
        write(root, "a/memory.max", "536870912\n");
        assert_eq!(cgroup_limit_in(root, "0::/a/b\n"), Some(512 << 20));
        write(root, "a/b/memory.max", "268435456\n");
        assert_eq!(cgroup_limit_in(root, "0::/a/b\n"), Some(256 << 20));
        // v1: the memory controller's line; its "no limit" is a huge number.
        write(
            root,
            "memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(root, "memory/pod/memory.limit_in_bytes", "1073741824\n");
        let v1 = "12:cpu,cpuacct:/pod\n4:memory:/pod\n1:name=systemd:/pod\n";
        assert_eq!(cgroup_limit_in(root, v1), Some(1 << 30));
        assert_eq!(cgroup_limit_in(root, "4:memory:/\n"), None);
        assert_eq!(cgroup_limit_in(root, "garbage"), None);
    }

    #[test]
    fn the_resident_size_is_known_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(resident_bytes().unwrap() > 1 << 20);
        }
    }
}
