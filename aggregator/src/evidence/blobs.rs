//! The blob seam: a picture's bytes through the `object_store` crate. Local files by default
//! (`[evidence] dir`); an S3-compatible store is another `ObjectStore` behind the same three
//! calls (object_store's `aws` feature and a config section), with no change elsewhere.
//!
//! Keys are content-addressed ([`crate::store::evidence::original_key`]): writing the same
//! picture twice writes the same bytes under the same key, so a mover that crashed after the
//! write and before the store update simply writes again. `LocalFileSystem` writes to a
//! temporary file and renames it, so a reader never sees half a picture.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStore, PutPayload};

/// Where pictures' bytes live. Cheap to clone.
#[derive(Clone)]
pub struct Blobs(Arc<dyn ObjectStore>);

impl std::fmt::Debug for Blobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blobs({})", self.0)
    }
}

impl Blobs {
    /// Files under `dir` (created if missing).
    pub fn local(dir: &Path) -> Result<Blobs, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create evidence dir {}: {e}", dir.display()))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| format!("cannot use evidence dir {}: {e}", dir.display()))?;
        Ok(Blobs(Arc::new(fs)))
    }

    /// In memory (tests).
    pub fn in_memory() -> Blobs {
        Blobs(Arc::new(object_store::memory::InMemory::new()))
    }

    /// Writes `bytes` under `key` (replacing what is there).
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<(), object_store::Error> {
        self.0
            .put(&Key::from(key), PutPayload::from(bytes))
            .await
            .map(|_| ())
    }

    /// The bytes under `key`; none when there are none.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, object_store::Error> {
        match self.0.get(&Key::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `key`; nothing there is no error.
    pub async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        match self.0.delete(&Key::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_files_round_trip_and_delete_is_idempotent() {
        let dir = std::env::temp_dir().join(format!("fumegrid-blobs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let b = Blobs::local(&dir).expect("local");
        let key = crate::store::evidence::original_key(&"ab".repeat(32));
        assert_eq!(b.get(&key).await.expect("get"), None);
        b.put(&key, Bytes::from_static(b"jpeg")).await.expect("put");
        b.put(&key, Bytes::from_static(b"jpeg"))
            .await
            .expect("again");
        assert_eq!(
            b.get(&key).await.expect("get").as_deref(),
            Some(&b"jpeg"[..])
        );
        let file = dir.join("sha256/ab/ab").join("ab".repeat(32));
        assert_eq!(std::fs::read(&file).expect("a plain file"), b"jpeg");
        b.delete(&key).await.expect("delete");
        b.delete(&key).await.expect("delete again");
        assert_eq!(b.get(&key).await.expect("get"), None);
    }
}
