//! What a bucket listing means for the local copy: the objects under the repository prefix grouped into the units
//! the cache installs whole, and the plan that turns what the cache holds into what the bucket holds.
//!
//! Pure: no I/O, no clock (the caller passes "now"), so every decision is unit-tested here.
//!
//! Units follow the repository layout: a version directory (`<model>/<version>/…`, every file below it, installed
//! together and only once its `model.onnx` is listed), a model's `model.toml`, and a file at the top of the
//! repository (the routing file). Anything else in the bucket (other files, non-integer directories) is left alone.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// A unit of the cache: installed and removed whole.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Unit {
    /// `<model>/<version>/`, with every file below it.
    Version { model: String, version: u64 },
    /// `<model>/model.toml`.
    ModelConfig { model: String },
    /// A file at the top of the repository, e.g. `routing.toml`.
    Root { file: String },
}

impl Unit {
    /// The unit's path relative to the repository root (a directory for a version).
    pub fn relative(&self) -> String {
        match self {
            Unit::Version { model, version } => format!("{model}/{version}"),
            Unit::ModelConfig { model } => format!("{model}/model.toml"),
            Unit::Root { file } => file.clone(),
        }
    }
}

impl std::fmt::Display for Unit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.relative())
    }
}

/// One object as listed, its key relative to the repository prefix.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub e_tag: Option<String>,
    pub modified: SystemTime,
}

/// What identifies one file's content: size and ETag (no ETag: size and modification time).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileTag {
    pub size: u64,
    pub tag: String,
}

/// A unit's files (relative to the unit: the file name below a version directory, empty for a single-file unit)
/// and their tags.
pub type Files = BTreeMap<String, FileTag>;

/// A unit as the bucket holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    pub files: Files,
    /// The newest modification time among its objects.
    pub newest: SystemTime,
}

/// Groups a listing into units. Keys that fit no unit are ignored; a version without `model.onnx` is left out (it
/// is not whole yet, or not a model).
pub fn group(listing: &[Listed]) -> BTreeMap<Unit, Wanted> {
    let mut units: BTreeMap<Unit, Wanted> = BTreeMap::new();
    for object in listing {
        let Some((unit, name)) = classify(&object.key) else {
            continue;
        };
        let tag = FileTag {
            size: object.size,
            tag: object.e_tag.clone().unwrap_or_else(|| {
                let since = object
                    .modified
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default();
                format!("mtime:{}", since.as_nanos())
            }),
        };
        let wanted = units.entry(unit).or_insert_with(|| Wanted {
            files: Files::new(),
            newest: SystemTime::UNIX_EPOCH,
        });
        wanted.files.insert(name, tag);
        wanted.newest = wanted.newest.max(object.modified);
    }
    units.retain(|unit, wanted| match unit {
        Unit::Version { .. } => wanted.files.contains_key("model.onnx"),
        _ => true,
    });
    units
}

/// The unit a key belongs to and the file's name within it.
fn classify(key: &str) -> Option<(Unit, String)> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.starts_with('.') || *p == "..")
    {
        return None;
    }
    match parts.as_slice() {
        [file] => Some((
            Unit::Root {
                file: (*file).to_owned(),
            },
            String::new(),
        )),
        [model, "model.toml"] => Some((
            Unit::ModelConfig {
                model: (*model).to_owned(),
            },
            String::new(),
        )),
        [model, version, rest @ ..] if !rest.is_empty() => {
            let version = version.parse::<u64>().ok()?;
            Some((
                Unit::Version {
                    model: (*model).to_owned(),
                    version,
                },
                rest.join("/"),
            ))
        }
        _ => None,
    }
}

/// What one sync does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Units to download and install (new or changed), with the files they should hold.
    pub fetch: Vec<(Unit, Files)>,
    /// Units changed too recently: still being uploaded, looked at again later.
    pub waiting: Vec<Unit>,
    /// Units the cache holds that the bucket no longer has.
    pub remove: Vec<Unit>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.fetch.is_empty() && self.waiting.is_empty() && self.remove.is_empty()
    }
}

/// Compares the bucket (`wanted`) with the cache (`held`). A unit whose newest object is younger than `settle` is
/// still being uploaded and waits; anything the bucket no longer has is removed.
pub fn plan(
    wanted: &BTreeMap<Unit, Wanted>,
    held: &BTreeMap<Unit, Files>,
    now: SystemTime,
    settle: Duration,
) -> Plan {
    let mut plan = Plan::default();
    for (unit, want) in wanted {
        if held.get(unit) == Some(&want.files) {
            continue;
        }
        let age = now.duration_since(want.newest).unwrap_or_default();
        if age < settle {
            plan.waiting.push(unit.clone());
        } else {
            plan.fetch.push((unit.clone(), want.files.clone()));
        }
    }
    plan.remove = held
        .keys()
        .filter(|unit| !wanted.contains_key(unit))
        .cloned()
        .collect();
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn listed(key: &str, size: u64, tag: &str, secs: u64) -> Listed {
        Listed {
            key: key.into(),
            size,
            e_tag: Some(tag.into()),
            modified: at(secs),
        }
    }

    fn version(model: &str, version: u64) -> Unit {
        Unit::Version {
            model: model.into(),
            version,
        }
    }

    #[test]
    fn listings_group_into_the_repository_layout() {
        let units = group(&[
            listed("routing.toml", 10, "r", 1),
            listed("iris/model.toml", 5, "m", 1),
            listed("iris/README.md", 5, "x", 1),
            listed("iris/1/model.onnx", 100, "a", 1),
            listed("iris/1/card.toml", 20, "b", 3),
            listed("iris/1/data/weights.bin", 7, "w", 2),
            listed("iris/2/card.toml", 20, "c", 1),
            listed("iris/notes/model.onnx", 1, "n", 1),
            listed("iris/.tmp/1/model.onnx", 1, "n", 1),
            listed("iris//model.onnx", 1, "n", 1),
        ]);
        let keys: Vec<String> = units.keys().map(Unit::relative).collect();
        // iris/2 has no model.onnx yet; notes, hidden and empty segments fit no unit.
        assert_eq!(keys, ["iris/1", "iris/model.toml", "routing.toml"]);
        let v1 = &units[&version("iris", 1)];
        let names: Vec<&str> = v1.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["card.toml", "data/weights.bin", "model.onnx"]);
        assert_eq!(v1.newest, at(3));
    }

    #[test]
    fn missing_etags_fall_back_to_the_modification_time() {
        let mut object = listed("m/1/model.onnx", 4, "", 9);
        object.e_tag = None;
        let units = group(&[object]);
        let tag = &units[&version("m", 1)].files["model.onnx"];
        assert_eq!(tag.tag, format!("mtime:{}", 9_000_000_000u64));
    }

    #[test]
    fn plans_fetch_changed_units_wait_for_fresh_ones_and_remove_gone_ones() {
        let wanted = group(&[
            listed("a/1/model.onnx", 1, "same", 10),
            listed("a/2/model.onnx", 1, "new", 10),
            listed("b/1/model.onnx", 1, "changed", 10),
            listed("c/1/model.onnx", 1, "fresh", 99),
        ]);
        let tag = |t: &str| {
            Files::from([(
                "model.onnx".to_owned(),
                FileTag {
                    size: 1,
                    tag: t.into(),
                },
            )])
        };
        let held = BTreeMap::from([
            (version("a", 1), tag("same")),
            (version("b", 1), tag("old")),
            (version("d", 1), tag("gone")),
        ]);
        let plan = plan(&wanted, &held, at(100), Duration::from_secs(5));
        let fetched: Vec<&Unit> = plan.fetch.iter().map(|(u, _)| u).collect();
        assert_eq!(fetched, [&version("a", 2), &version("b", 1)]);
        assert_eq!(plan.fetch[1].1, tag("changed"));
        assert_eq!(plan.waiting, [version("c", 1)]);
        assert_eq!(plan.remove, [version("d", 1)]);
    }

    #[test]
    fn an_unchanged_bucket_plans_nothing() {
        let wanted = group(&[listed("a/1/model.onnx", 1, "t", 1)]);
        let held: BTreeMap<Unit, Files> = wanted
            .iter()
            .map(|(u, w)| (u.clone(), w.files.clone()))
            .collect();
        assert!(plan(&wanted, &held, at(100), Duration::ZERO).is_empty());
    }
}
