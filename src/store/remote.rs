//! What a [`Mirror`](super::mirror::Mirror) copies from: a [`Remote`] lists the repository's files as a bucket
//! listing does (keys relative to the repository, sizes, tags, times) and streams each one. A bucket is one; an
//! MLflow Model Registry, presented in the repository layout, is another.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use super::layout::Listed;
use super::Bucket;

/// One listing of a remote.
#[derive(Debug, Default)]
pub struct Listing {
    pub objects: Vec<Listed>,
    /// What the remote holds but cannot be served, per model: (model, what, why). Reported, never fetched.
    pub skipped: Vec<(String, String, String)>,
}

/// A file opened for reading.
pub struct Opened {
    /// Its tag as the remote sees it now, when it has one: it must still be the listed one.
    pub e_tag: Option<String>,
    pub body: BoxStream<'static, Result<Bytes, String>>,
}

pub trait Remote: Send + Sync {
    /// Where it is, for messages.
    fn url(&self) -> &str;
    /// Everything the repository holds now. `Err`: it could not be listed (nothing may be concluded).
    fn list(&self) -> BoxFuture<'_, Result<Listing, String>>;
    /// Starts reading the file at `key` (as listed).
    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Opened, String>>;
    /// Its cards are made by sluice and name no checksum: the copy writes the sha256 of the file it got into them.
    fn completes_cards(&self) -> bool {
        false
    }
}

impl Remote for Bucket {
    fn url(&self) -> &str {
        &self.url
    }

    fn list(&self) -> BoxFuture<'_, Result<Listing, String>> {
        Box::pin(async move {
            let prefix = &self.prefix;
            let mut stream = self.store.list(Some(prefix));
            let mut objects = Vec::new();
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| describe(&e))?;
                let Some(key) = relative(prefix, &meta.location) else {
                    continue;
                };
                objects.push(Listed {
                    key,
                    size: meta.size,
                    e_tag: meta.e_tag,
                    modified: meta.last_modified.into(),
                });
            }
            Ok(Listing {
                objects,
                skipped: Vec::new(),
            })
        })
    }

    fn open<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Opened, String>> {
        Box::pin(async move {
            let result = self
                .store
                .get(&self.location(key))
                .await
                .map_err(|e| describe(&e))?;
            Ok(Opened {
                e_tag: result.meta.e_tag.clone(),
                body: result.into_stream().map_err(|e| describe(&e)).boxed(),
            })
        })
    }
}

/// An error with its root cause, which `object_store`'s own message often leaves out ("error sending request").
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut root = error;
    while let Some(source) = root.source() {
        root = source;
    }
    let (top, cause) = (error.to_string(), root.to_string());
    if top.contains(&cause) {
        top
    } else {
        format!("{top}: {cause}")
    }
}

/// `location` relative to `prefix`, or `None` when it is not below it.
pub fn relative(
    prefix: &object_store::path::Path,
    location: &object_store::path::Path,
) -> Option<String> {
    let parts: Vec<_> = location.prefix_match(prefix)?.collect();
    let parts: Vec<&str> = parts.iter().map(AsRef::as_ref).collect();
    (!parts.is_empty()).then(|| parts.join("/"))
}
