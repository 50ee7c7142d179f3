//! The mirror against an in-memory object store: whole downloads only, back-off, the cap, removals.

use super::*;
use crate::store::remote::relative;
use crate::store::Bucket;
use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};

fn iris(file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models/iris/2")
            .join(file),
    )
    .unwrap()
}

fn mirror(
    store: Arc<InMemory>,
    cache: &Path,
    max_bytes: u64,
) -> (Mirror, Arc<Metrics>, Arc<Registry>) {
    let metrics = Arc::new(Metrics::new().unwrap());
    let registry = Arc::new(Registry::default());
    let bucket = Bucket {
        url: "memory://test".into(),
        store,
        prefix: object_store::path::Path::from("repo"),
    };
    let settings = MirrorSettings {
        poll_interval: Duration::from_millis(100),
        settle: Duration::ZERO,
        max_bytes,
    };
    let mirror = Mirror::new(
        Box::new(bucket),
        cache,
        settings,
        Arc::clone(&metrics),
        Arc::clone(&registry),
    )
    .unwrap();
    (mirror, metrics, registry)
}

async fn put(store: &InMemory, key: &str, bytes: Vec<u8>) {
    store
        .put(
            &object_store::path::Path::from(key),
            PutPayload::from(bytes),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn only_whole_checked_versions_are_installed_and_failures_back_off() {
    let store = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let (mut mirror, metrics, registry) = mirror(Arc::clone(&store), cache.path(), 0);
    // A card naming the model's sha256, with half the model: refused, nothing installed.
    put(&store, "repo/m/1/card.toml", iris("card.toml")).await;
    let model = iris("model.onnx");
    put(
        &store,
        "repo/m/1/model.onnx",
        model[..model.len() / 2].to_vec(),
    )
    .await;
    let report = mirror.sync().await.unwrap();
    assert_eq!((report.changed, report.waiting), (false, true));
    assert!(!mirror.repository().join("m/1").exists());
    let status = registry.source_status();
    assert!(
        status.pending["m"][0].contains("checksum mismatch"),
        "{status:?}"
    );
    assert!(metrics
        .render()
        .contains("sluice_store_failures_total{operation=\"verify\"} 1"));
    // Backing off: the same objects are not fetched again at once.
    mirror.sync().await.unwrap();
    assert!(metrics
        .render()
        .contains("sluice_store_failures_total{operation=\"verify\"} 1"));
    // The whole model: installed at once (its objects changed), and the failure is gone.
    put(&store, "repo/m/1/model.onnx", model.clone()).await;
    let report = mirror.sync().await.unwrap();
    assert_eq!((report.changed, report.waiting), (true, false));
    assert_eq!(
        std::fs::read(mirror.repository().join("m/1/model.onnx")).unwrap(),
        model
    );
    assert!(registry.source_status().pending.is_empty());
    // Removed from the bucket: removed from the copy.
    store
        .delete(&object_store::path::Path::from("repo/m/1/model.onnx"))
        .await
        .unwrap();
    assert!(mirror.sync().await.unwrap().changed);
    assert!(!mirror.repository().join("m").exists());
}

#[tokio::test]
async fn the_copy_stays_under_its_cap() {
    let store = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let model = iris("model.onnx");
    let cap = model.len() as u64 + 10;
    let (mut mirror, metrics, registry) = mirror(Arc::clone(&store), cache.path(), cap);
    put(&store, "repo/a/1/model.onnx", model.clone()).await;
    assert!(mirror.sync().await.unwrap().changed);
    // A second model would pass the cap: not downloaded, reported, counted.
    put(&store, "repo/b/1/model.onnx", model.clone()).await;
    let report = mirror.sync().await.unwrap();
    assert_eq!((report.changed, report.waiting), (false, true));
    assert!(!mirror.repository().join("b").exists());
    let status = registry.source_status();
    assert!(
        status.pending["b"][0].contains("cache_max_bytes"),
        "{status:?}"
    );
    assert!(metrics
        .render()
        .contains("sluice_store_failures_total{operation=\"cache_full\"} 1"));
    // Replacing a (same size) is within the cap: the old copy's bytes are counted out.
    put(
        &store,
        "repo/a/1/model.onnx",
        model.iter().rev().copied().collect(),
    )
    .await;
    assert!(mirror.sync().await.unwrap().changed);
    // a leaves: room for b at once, in the same sync (no back-off once room was made).
    store
        .delete(&object_store::path::Path::from("repo/a/1/model.onnx"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(mirror.sync().await.unwrap().changed);
    assert!(mirror.repository().join("b/1/model.onnx").exists());
    assert!(mirror.cache.bytes() <= cap);
}

#[tokio::test]
async fn a_download_must_end_at_the_listed_size_with_the_listed_etag() {
    let store = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    put(&store, "repo/m/1/model.onnx", b"0123456789".to_vec()).await;
    let meta = store
        .head(&object_store::path::Path::from("repo/m/1/model.onnx"))
        .await
        .unwrap();
    let (mirror, _, _) = mirror(Arc::clone(&store), cache.path(), 0);
    let target = cache.path().join("download");
    let tag = |size: u64, tag: &str| layout::FileTag {
        size,
        tag: tag.into(),
    };
    let etag = meta.e_tag.unwrap();
    mirror
        .download("m/1/model.onnx", &tag(10, &etag), &target)
        .await
        .unwrap();
    // Cut short of what the listing said (or longer): not whole.
    let short = mirror
        .download("m/1/model.onnx", &tag(20, &etag), &target)
        .await;
    assert!(
        matches!(
            short,
            Err(FetchError::Incomplete {
                got: 10,
                expected: 20,
                ..
            })
        ),
        "{short:?}"
    );
    let long = mirror
        .download("m/1/model.onnx", &tag(5, &etag), &target)
        .await;
    assert!(
        matches!(long, Err(FetchError::Incomplete { .. })),
        "{long:?}"
    );
    // Replaced after the listing: another object than the one listed.
    let changed = mirror
        .download("m/1/model.onnx", &tag(10, "\"other\""), &target)
        .await;
    assert!(
        matches!(changed, Err(FetchError::Changed { .. })),
        "{changed:?}"
    );
    let gone = mirror
        .download("m/2/model.onnx", &tag(10, &etag), &target)
        .await;
    assert!(matches!(gone, Err(FetchError::Store { .. })), "{gone:?}");
}

#[test]
fn back_off_doubles_up_to_a_minute() {
    let waits: Vec<u64> = [1, 2, 3, 6, 7, 40].map(|n| backoff(n).as_secs()).to_vec();
    assert_eq!(waits, [1, 2, 4, 32, 60, 60]);
}

#[test]
fn keys_are_taken_relative_to_the_prefix() {
    let prefix = object_store::path::Path::from("team/models");
    let at = |s: &str| relative(&prefix, &object_store::path::Path::from(s));
    assert_eq!(
        at("team/models/iris/1/model.onnx").as_deref(),
        Some("iris/1/model.onnx")
    );
    assert_eq!(at("team/other/x"), None);
    let root = object_store::path::Path::from("");
    assert_eq!(
        relative(&root, &object_store::path::Path::from("a/1/model.onnx")).as_deref(),
        Some("a/1/model.onnx")
    );
}

#[tokio::test]
async fn the_first_copy_waits_for_versions_still_uploading() {
    let store = Arc::new(InMemory::new());
    let cache = tempfile::tempdir().unwrap();
    let (mut mirror, _, _) = mirror(Arc::clone(&store), cache.path(), 0);
    mirror.settings.settle = Duration::from_millis(300);
    // Uploaded just now: too fresh for the first sync, so start-up waits for it to settle.
    put(&store, "repo/m/1/model.onnx", iris("model.onnx")).await;
    let mirror = mirror.first_copy().await;
    assert!(mirror.repository().join("m/1/model.onnx").exists());
}
