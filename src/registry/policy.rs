//! Pure decisions of the registry, kept free of I/O so they can be unit-tested: which versions a version policy
//! keeps loaded, which version is the default, and whether a new signature is compatible with the current one.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{IoKind, IoSpec, Signature};
use crate::repository::VersionPolicy;

/// Where one version on disk stands, for the version policy: only versions that are loaded, or may still load,
/// can be selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionState {
    /// Loaded (and warmed up), compatible with the default.
    Ready,
    /// Loaded, but the schema guard found it incompatible with the default: it answers when named, and does not
    /// count towards `latest`.
    Incompatible,
    /// Not loaded yet (or its file changed): a load will be tried.
    Loadable,
    /// Its file is still being written.
    Waiting,
    /// Its last load failed and its files have not changed since.
    Failed,
    /// Its directory holds no `model.onnx`.
    Missing,
}

impl VersionState {
    fn selectable(self) -> bool {
        matches!(
            self,
            VersionState::Ready | VersionState::Incompatible | VersionState::Loadable
        )
    }
}

impl VersionPolicy {
    /// The versions to keep loaded, or to load, among `states` (every version on disk), plus every selectable
    /// version in `keep`. A version that failed, is still being written or has no file is never selected, so a bad
    /// upload leaves the versions that served before selected: `latest = k` means the k newest versions that load
    /// and are compatible (a loadable version counts as if it will load; when it fails, the caller asks again).
    pub fn select(
        &self,
        states: &BTreeMap<u64, VersionState>,
        keep: &BTreeSet<u64>,
    ) -> BTreeSet<u64> {
        let selectable = |v: &u64| states.get(v).is_some_and(|s| s.selectable());
        let mut chosen = BTreeSet::new();
        match self {
            VersionPolicy::Latest(n) => {
                let mut counted = 0;
                for (version, state) in states.iter().rev() {
                    if counted >= *n {
                        break;
                    }
                    match state {
                        VersionState::Ready | VersionState::Loadable => counted += 1,
                        VersionState::Incompatible => {}
                        _ => continue,
                    }
                    chosen.insert(*version);
                }
            }
            VersionPolicy::All => chosen.extend(states.keys().filter(|v| selectable(v))),
            VersionPolicy::Specific(list) => chosen.extend(list.iter().filter(|v| selectable(v))),
        }
        chosen.extend(keep.iter().filter(|v| selectable(v)));
        chosen
    }
}

/// What the default-version choice needs to know about one loaded version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub version: u64,
    /// The schema guard found it incompatible with the default it was loaded against (and no force was given).
    pub incompatible: bool,
}

/// The default version: the operator's choice (`pinned`) when it is loaded, else the newest loaded version that
/// the schema guard did not flag. `loaded` must be ascending.
pub fn choose_default(loaded: &[Candidate], pinned: Option<u64>) -> Option<u64> {
    if let Some(p) = pinned.filter(|p| loaded.iter().any(|c| c.version == *p)) {
        return Some(p);
    }
    loaded
        .iter()
        .rev()
        .find(|c| !c.incompatible)
        .map(|c| c.version)
}

/// Why `new` cannot replace `current` for existing clients, or `None` when it can.
///
/// Incompatible: an input or output removed or renamed, a datatype changed, a rank changed, a fixed dimension changed
/// to another fixed value, or a new input that clients do not send. A fixed dimension becoming dynamic, and new
/// outputs, are compatible.
pub fn incompatibility(current: &Signature, new: &Signature) -> Option<String> {
    let mut problems = Vec::new();
    compare(&current.inputs, &new.inputs, "input", &mut problems);
    compare(&current.outputs, &new.outputs, "output", &mut problems);
    for spec in &new.inputs {
        if !current.inputs.iter().any(|c| c.name == spec.name) {
            problems.push(format!("new required input '{}'", spec.name));
        }
    }
    (!problems.is_empty()).then(|| problems.join("; "))
}

fn compare(current: &[IoSpec], new: &[IoSpec], what: &str, problems: &mut Vec<String>) {
    for old in current {
        let Some(spec) = new.iter().find(|s| s.name == old.name) else {
            problems.push(format!("{what} '{}' removed or renamed", old.name));
            continue;
        };
        match (&old.kind, &spec.kind) {
            (
                IoKind::Tensor {
                    datatype: d0,
                    shape: s0,
                },
                IoKind::Tensor {
                    datatype: d1,
                    shape: s1,
                },
            ) => {
                if d0 != d1 {
                    problems.push(format!("{what} '{}' datatype {d0} -> {d1}", old.name));
                } else if s0.len() != s1.len() {
                    problems.push(format!(
                        "{what} '{}' shape {s0:?} -> {s1:?} (rank changed)",
                        old.name
                    ));
                } else if s0.iter().zip(s1).any(|(a, b)| *a >= 0 && *b >= 0 && a != b) {
                    problems.push(format!(
                        "{what} '{}' shape {s0:?} -> {s1:?} (fixed dimension changed)",
                        old.name
                    ));
                }
            }
            (IoKind::Other { onnx_type: a }, IoKind::Other { onnx_type: b }) if a == b => {}
            _ => problems.push(format!("{what} '{}' changed kind", old.name)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn set(v: &[u64]) -> BTreeSet<u64> {
        v.iter().copied().collect()
    }

    fn states(list: &[(u64, VersionState)]) -> BTreeMap<u64, VersionState> {
        list.iter().copied().collect()
    }

    #[test]
    fn policies_select_versions() {
        use VersionState::*;
        let disk = states(&[(1, Ready), (2, Loadable), (5, Ready)]);
        assert_eq!(VersionPolicy::default().select(&disk, &set(&[])), set(&[5]));
        assert_eq!(
            VersionPolicy::Latest(2).select(&disk, &set(&[])),
            set(&[2, 5])
        );
        assert_eq!(VersionPolicy::All.select(&disk, &set(&[])), set(&[1, 2, 5]));
        assert_eq!(
            VersionPolicy::Specific(vec![1, 9]).select(&disk, &set(&[])),
            set(&[1])
        );
        // A version something refers to stays loaded whatever the policy says, if it is on disk.
        assert_eq!(
            VersionPolicy::Latest(1).select(&disk, &set(&[1, 7])),
            set(&[1, 5])
        );
    }

    #[test]
    fn policies_choose_among_versions_that_load() {
        use VersionState::*;
        // A corrupt newest version: latest = 1 keeps the one that served.
        let corrupt = states(&[(1, Ready), (2, Failed)]);
        assert_eq!(
            VersionPolicy::Latest(1).select(&corrupt, &set(&[])),
            set(&[1])
        );
        let two = states(&[(1, Ready), (2, Ready), (3, Failed)]);
        assert_eq!(
            VersionPolicy::Latest(2).select(&two, &set(&[])),
            set(&[1, 2])
        );
        // Still being written, or no file yet: the older version stays until the newer one is ready.
        for state in [Waiting, Missing] {
            let settling = states(&[(1, Ready), (2, state)]);
            assert_eq!(
                VersionPolicy::Latest(1).select(&settling, &set(&[])),
                set(&[1])
            );
        }
        // An incompatible version stays loaded for callers that name it but does not count.
        let guarded = states(&[(1, Ready), (2, Incompatible)]);
        assert_eq!(
            VersionPolicy::Latest(1).select(&guarded, &set(&[])),
            set(&[1, 2])
        );
        // specific and all skip what failed; a failed pin is not selected either.
        let mixed = states(&[(1, Ready), (2, Failed), (3, Waiting)]);
        assert_eq!(
            VersionPolicy::Specific(vec![2, 3]).select(&mixed, &set(&[])),
            set(&[])
        );
        assert_eq!(VersionPolicy::All.select(&mixed, &set(&[2])), set(&[1]));
    }

    #[test]
    fn default_is_pinned_or_newest_compatible() {
        let c = |version, incompatible| Candidate {
            version,
            incompatible,
        };
        let loaded = [c(1, false), c(2, false), c(3, true)];
        assert_eq!(choose_default(&loaded, None), Some(2));
        assert_eq!(choose_default(&loaded, Some(1)), Some(1));
        assert_eq!(choose_default(&loaded, Some(3)), Some(3));
        assert_eq!(choose_default(&loaded, Some(9)), Some(2));
        assert_eq!(choose_default(&[], None), None);
    }

    fn sig(inputs: &[(&str, DataType, &[i64])], outputs: &[(&str, DataType, &[i64])]) -> Signature {
        let specs = |list: &[(&str, DataType, &[i64])]| {
            list.iter()
                .map(|(n, d, s)| IoSpec {
                    name: n.to_string(),
                    kind: IoKind::Tensor {
                        datatype: *d,
                        shape: s.to_vec(),
                    },
                })
                .collect()
        };
        Signature {
            inputs: specs(inputs),
            outputs: specs(outputs),
        }
    }

    #[test]
    fn schema_guard_flags_breaking_changes_only() {
        use DataType::*;
        let base = sig(&[("x", Fp32, &[-1, 4])], &[("y", Int64, &[-1])]);
        assert_eq!(incompatibility(&base, &base), None);
        let added_output = sig(
            &[("x", Fp32, &[-1, 4])],
            &[("y", Int64, &[-1]), ("p", Fp32, &[-1, 3])],
        );
        assert_eq!(incompatibility(&base, &added_output), None);
        let relaxed = sig(&[("x", Fp32, &[-1, -1])], &[("y", Int64, &[-1])]);
        assert_eq!(incompatibility(&base, &relaxed), None);
        let cases = [
            (
                sig(&[("z", Fp32, &[-1, 4])], &[("y", Int64, &[-1])]),
                "input 'x' removed or renamed",
            ),
            (
                sig(&[("x", Fp64, &[-1, 4])], &[("y", Int64, &[-1])]),
                "input 'x' datatype FP32 -> FP64",
            ),
            (
                sig(&[("x", Fp32, &[-1, 5])], &[("y", Int64, &[-1])]),
                "fixed dimension changed",
            ),
            (
                sig(&[("x", Fp32, &[4])], &[("y", Int64, &[-1])]),
                "rank changed",
            ),
            (
                sig(&[("x", Fp32, &[-1, 4])], &[("label", Int64, &[-1])]),
                "output 'y' removed or renamed",
            ),
            (
                sig(
                    &[("x", Fp32, &[-1, 4]), ("k", Int64, &[-1])],
                    &[("y", Int64, &[-1])],
                ),
                "new required input 'k'",
            ),
        ];
        for (new, want) in cases {
            let got = incompatibility(&base, &new).unwrap_or_default();
            assert!(got.contains(want), "{got:?} lacks {want:?}");
        }
    }
}
