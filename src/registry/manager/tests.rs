//! The manager's decisions on a real repository of real models: which version is the default, what is held back,
//! what keeps serving when its files go bad or go away. (`models/iris`: version 1 names its outputs differently from
//! versions 2 and 3, which share a signature.)

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::RepositoryManager;
use crate::metrics::Metrics;
use crate::registry::{ModelEntry, Registry};

fn iris(version: u32) -> Vec<u8> {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    std::fs::read(models.join(format!("iris/{version}/model.onnx"))).unwrap()
}

/// Model `m` with `files` as its versions, and a `model.toml` of `config`.
fn repository(config: &str, files: &[(u64, Vec<u8>)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let model = root.path().join("m");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(model.join("model.toml"), config).unwrap();
    for (version, bytes) in files {
        put(root.path(), *version, bytes);
    }
    root
}

fn put(root: &Path, version: u64, bytes: &[u8]) {
    let dir = root.join("m").join(version.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), bytes).unwrap();
}

fn manager_of(root: &Path) -> RepositoryManager {
    RepositoryManager::new(
        Arc::new(Registry::new(false)),
        Arc::new(Metrics::new().unwrap()),
        crate::runtime::test_environment(),
        root.to_owned(),
        Duration::ZERO,
    )
}

async fn entry(manager: &RepositoryManager) -> ModelEntry {
    manager.reconcile().await.unwrap();
    manager.registry().snapshot().get("m").unwrap().clone()
}

fn loaded(entry: &ModelEntry) -> Vec<u64> {
    entry
        .versions
        .iter()
        .filter(|(_, s)| s.model.is_some())
        .map(|(v, _)| *v)
        .collect()
}

#[tokio::test]
async fn the_newest_compatible_version_is_the_default_unless_one_is_pinned() {
    let root = repository("version_policy = \"all\"", &[(1, iris(2)), (2, iris(3))]);
    let manager = manager_of(root.path());
    let m = entry(&manager).await;
    assert_eq!((m.default, loaded(&m)), (Some(2), vec![1, 2]));

    let pinned = repository(
        "version_policy = \"all\"\ndefault_version = 1",
        &[(1, iris(2)), (2, iris(3))],
    );
    let m = entry(&manager_of(pinned.path())).await;
    assert_eq!(m.default, Some(1));
}

#[tokio::test]
async fn an_incompatible_new_version_is_held_back_unless_forced() {
    // Version 2 is iris v1, whose outputs are named differently from version 1's (iris v2).
    for force in [false, true] {
        let config = format!("version_policy = \"all\"\nforce = {force}");
        let root = repository(&config, &[(1, iris(2))]);
        let manager = manager_of(root.path());
        assert_eq!(entry(&manager).await.default, Some(1));
        put(root.path(), 2, &iris(1));
        let m = entry(&manager).await;
        assert!(
            m.versions[&2].model.is_some(),
            "it loads and answers when named"
        );
        if force {
            assert_eq!(m.default, Some(2));
        } else {
            assert_eq!(m.default, Some(1));
            assert!(m.versions[&2].incompatible.is_some());
        }
    }
}

#[tokio::test]
async fn a_corrupt_new_version_leaves_the_one_that_served() {
    let root = repository("", &[(1, iris(3))]);
    let manager = manager_of(root.path());
    assert_eq!(entry(&manager).await.default, Some(1));

    put(root.path(), 2, b"not an onnx model");
    let m = entry(&manager).await;
    // `latest = 1` counts only versions that load: version 1 stays selected and the default.
    assert_eq!((m.default, loaded(&m)), (Some(1), vec![1]));
    let failed = &m.versions[&2];
    assert!(failed.model.is_none());
    assert!(failed.reason.as_deref().is_some_and(|r| !r.is_empty()));
}

#[tokio::test]
async fn a_default_whose_files_are_removed_serves_until_a_successor_is_ready() {
    let root = repository("", &[(1, iris(3))]);
    let manager = manager_of(root.path());
    entry(&manager).await;

    std::fs::remove_dir_all(root.path().join("m/1")).unwrap();
    let m = entry(&manager).await;
    assert_eq!(m.default, Some(1));
    assert!(m.versions[&1].model.is_some() && m.versions[&1].files_removed);

    put(root.path(), 2, &iris(3));
    let m = entry(&manager).await;
    assert_eq!((m.default, loaded(&m)), (Some(2), vec![2]));
    assert!(
        !m.versions.contains_key(&1),
        "the orphan goes once replaced"
    );
}

#[tokio::test]
async fn the_version_policy_unloads_what_it_no_longer_selects() {
    let root = repository(
        "version_policy = { latest = 2 }",
        &[(1, iris(2)), (2, iris(3))],
    );
    let manager = manager_of(root.path());
    assert_eq!(loaded(&entry(&manager).await), vec![1, 2]);

    put(root.path(), 3, &iris(3));
    let m = entry(&manager).await;
    assert_eq!((m.default, loaded(&m)), (Some(3), vec![2, 3]));
    assert_eq!(
        m.versions[&1].reason.as_deref(),
        Some("not selected by the version policy")
    );
}
