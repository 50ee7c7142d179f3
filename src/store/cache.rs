//! The local copy of a bucket repository (`models.cache_dir`): the tree the registry loads from, the downloads in
//! progress, and a manifest of what each installed unit holds.
//!
//! ```text
//! <cache_dir>/repository/     <model>/<version>/model.onnx …, <model>/model.toml, routing.toml: what loads
//! <cache_dir>/staging/        downloads in progress, and units on their way out (emptied at start)
//! <cache_dir>/manifest.json   unit → files with their size and ETag, so a restart downloads only what changed
//! <cache_dir>/lock            held (flock) while a sluice uses the cache: two processes never share one
//! ```
//!
//! A unit appears in `repository/` in one step: a new version directory by `rename`, a changed one by exchanging
//! it with its replacement (`renameat2(RENAME_EXCHANGE)`), so a scan sees the old files or the new ones, never a
//! mix and never a gap. What the manifest does not list is removed at start.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::layout::{Files, Unit};

/// The cache directory, locked for this process.
pub struct Cache {
    root: PathBuf,
    held: BTreeMap<Unit, Files>,
    next_staging: AtomicU64,
    /// Kept open: the lock lasts as long as the file is.
    _lock: fs::File,
}

impl Cache {
    /// Opens (creating) `root`, locks it, empties its staging area, and keeps the units the manifest lists and the
    /// tree still holds; everything else in the tree is removed.
    pub fn open(root: &Path) -> io::Result<Cache> {
        fs::create_dir_all(Cache::tree(root))?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join("lock"))?;
        if rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return Err(io::Error::other(format!(
                "{} is in use by another process (each sluice needs a cache directory of its own)",
                root.display()
            )));
        }
        let staging = root.join("staging");
        if staging.exists() {
            fs::remove_dir_all(&staging)?;
        }
        fs::create_dir_all(&staging)?;
        let mut cache = Cache {
            root: root.to_path_buf(),
            held: BTreeMap::new(),
            next_staging: AtomicU64::new(0),
            _lock: lock,
        };
        let listed = cache.read_manifest();
        cache.held = listed
            .into_iter()
            .filter(|(unit, _)| cache.path(unit).exists())
            .collect();
        cache.remove_unlisted()?;
        cache.write_manifest()?;
        Ok(cache)
    }

    /// The tree the registry loads from.
    pub fn repository(&self) -> PathBuf {
        Cache::tree(&self.root)
    }

    /// The tree the registry loads from, for the cache at `root`.
    pub fn tree(root: &Path) -> PathBuf {
        root.join("repository")
    }

    /// Every unit installed, with its files.
    pub fn held(&self) -> &BTreeMap<Unit, Files> {
        &self.held
    }

    /// Where `unit` lives in the tree.
    pub fn path(&self, unit: &Unit) -> PathBuf {
        self.repository().join(unit.relative())
    }

    /// A fresh path in the staging area.
    pub fn staging_path(&self) -> PathBuf {
        let n = self.next_staging.fetch_add(1, Ordering::Relaxed);
        self.root.join("staging").join(n.to_string())
    }

    /// Puts the staged `from` (a directory for a version, a file otherwise) in place of `unit`, in one step.
    pub fn install(&mut self, unit: &Unit, from: &Path, files: Files) -> io::Result<()> {
        let target = self.path(unit);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        match unit {
            Unit::Version { .. } if target.exists() => {
                exchange(from, &target)?;
                fs::remove_dir_all(from)?;
            }
            _ => fs::rename(from, &target)?,
        }
        self.held.insert(unit.clone(), files);
        self.write_manifest()
    }

    /// Removes `unit` from the tree (a version directory leaves in one step), and its model's directory once it is
    /// empty.
    pub fn remove(&mut self, unit: &Unit) -> io::Result<()> {
        let target = self.path(unit);
        match unit {
            Unit::Version { .. } => {
                let away = self.staging_path();
                match fs::rename(&target, &away) {
                    Ok(()) => fs::remove_dir_all(&away)?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
            _ => match fs::remove_file(&target) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            },
        }
        if let Unit::Version { model, .. } | Unit::ModelConfig { model } = unit {
            // Fails (and stays) while the directory holds anything.
            let _ = fs::remove_dir(self.repository().join(model));
        }
        self.held.remove(unit);
        self.write_manifest()
    }

    /// Bytes the installed units hold.
    pub fn bytes(&self) -> u64 {
        self.held
            .values()
            .flat_map(|files| files.values())
            .map(|f| f.size)
            .sum()
    }

    fn read_manifest(&self) -> Vec<(Unit, Files)> {
        fs::read(self.root.join("manifest.json"))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    fn write_manifest(&self) -> io::Result<()> {
        let entries: Vec<(&Unit, &Files)> = self.held.iter().collect();
        let text = serde_json::to_vec(&entries).map_err(io::Error::other)?;
        let staged = self.staging_path();
        fs::write(&staged, text)?;
        fs::rename(&staged, self.root.join("manifest.json"))
    }

    /// Removes from the tree whatever no listed unit accounts for (a crash between a download and the manifest, a
    /// version removed while sluice was down).
    fn remove_unlisted(&self) -> io::Result<()> {
        let repository = self.repository();
        for entry in fs::read_dir(&repository)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if !path.is_dir() {
                if !self.held.contains_key(&Unit::Root { file: name }) {
                    fs::remove_file(&path)?;
                }
                continue;
            }
            for inner in fs::read_dir(&path)? {
                let inner = inner?;
                let file = inner.file_name().to_string_lossy().into_owned();
                let unit = match file.parse::<u64>() {
                    Ok(version) if inner.path().is_dir() => Unit::Version {
                        model: name.clone(),
                        version,
                    },
                    _ if file == "model.toml" => Unit::ModelConfig {
                        model: name.clone(),
                    },
                    _ => Unit::Root {
                        file: String::new(),
                    },
                };
                if !self.held.contains_key(&unit) {
                    remove_any(&inner.path())?;
                }
            }
            let _ = fs::remove_dir(&path);
        }
        Ok(())
    }
}

fn remove_any(path: &Path) -> io::Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

/// Swaps two existing paths atomically (Linux `renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::super::layout::FileTag;
    use super::*;

    fn files(tag: &str) -> Files {
        Files::from([(
            "model.onnx".to_owned(),
            FileTag {
                size: 3,
                tag: tag.into(),
            },
        )])
    }

    fn stage_version(cache: &Cache, content: &str) -> PathBuf {
        let dir = cache.staging_path();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("model.onnx"), content).unwrap();
        dir
    }

    #[test]
    fn units_install_replace_and_leave_in_one_step() {
        let root = tempfile::tempdir().unwrap();
        let mut cache = Cache::open(root.path()).unwrap();
        let unit = Unit::Version {
            model: "m".into(),
            version: 1,
        };
        let staged = stage_version(&cache, "old");
        cache.install(&unit, &staged, files("a")).unwrap();
        let model = cache.path(&unit).join("model.onnx");
        assert_eq!(fs::read_to_string(&model).unwrap(), "old");
        let staged = stage_version(&cache, "new");
        cache.install(&unit, &staged, files("b")).unwrap();
        assert_eq!(fs::read_to_string(&model).unwrap(), "new");
        assert!(!staged.exists(), "the old files went with the staging path");
        assert_eq!(cache.bytes(), 3);
        cache.remove(&unit).unwrap();
        assert!(!cache.repository().join("m").exists());
        assert!(cache.held().is_empty());
    }

    #[test]
    fn a_reopened_cache_keeps_listed_units_and_drops_the_rest() {
        let root = tempfile::tempdir().unwrap();
        let unit = Unit::Version {
            model: "m".into(),
            version: 1,
        };
        {
            let mut cache = Cache::open(root.path()).unwrap();
            let staged = stage_version(&cache, "x");
            cache.install(&unit, &staged, files("a")).unwrap();
            // Left by a crash: in the tree, not in the manifest; and a half-done download.
            fs::create_dir_all(cache.repository().join("m/2")).unwrap();
            fs::create_dir_all(cache.repository().join("stray/1")).unwrap();
            fs::write(cache.staging_path(), "partial").unwrap();
            assert!(
                Cache::open(root.path()).is_err(),
                "a second process is refused"
            );
        }
        let cache = Cache::open(root.path()).unwrap();
        assert_eq!(cache.held().keys().collect::<Vec<_>>(), [&unit]);
        assert!(cache.path(&unit).join("model.onnx").exists());
        assert!(!cache.repository().join("m/2").exists());
        assert!(!cache.repository().join("stray").exists());
        assert_eq!(
            fs::read_dir(root.path().join("staging")).unwrap().count(),
            0
        );
    }
}
