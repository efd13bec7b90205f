//! Modules: immutable wasm bytes, stored under their content address
//! ([`ModuleKey`]), and the cache of compiled modules in front of the store.
//!
//! A [`ModuleStore`] only ever adds objects: the bytes under a key never
//! change, so a deploy of bytes already stored uploads nothing, and every
//! earlier version stays available for a rollback.

mod artifact;
mod cache;
mod fs;
mod key;
#[cfg(feature = "aws")]
mod s3;

use async_trait::async_trait;
use bytes::Bytes;

pub use artifact::{ArtifactKey, ArtifactMismatch, Precompiled};
pub use cache::{CacheOutcome, ModuleCache, ModuleLoadError};
pub use fs::FsModuleStore;
pub use key::{IntegrityError, KEY_PREFIX, KeyParseError, ModuleKey};
#[cfg(feature = "aws")]
pub use s3::S3ModuleStore;

/// What a put did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The bytes were written under their key.
    Uploaded,
    /// An object with this key was already stored; nothing was written.
    AlreadyStored,
}

/// Why a store operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("module {0} is not in the module store")]
    NotFound(String),
    #[error("the module stored under {key} is corrupt ({reason}); remove it and deploy again")]
    Corrupt { key: String, reason: String },
    #[error("module store unavailable: {0}")]
    Unavailable(String),
    #[error("module store access denied: {0}")]
    Denied(String),
}

/// Where module bytes live: a folder (embedded default) or a bucket.
#[async_trait]
pub trait ModuleStore: Send + Sync + 'static {
    /// The stored bytes under `key`, unverified (the caller verifies).
    /// Fails with `NotFound` when there is no such object.
    async fn get(&self, key: &ModuleKey) -> Result<Bytes, StoreError>;

    /// Stores `bytes` under `key` unless an object is already there; never
    /// overwrites. `bytes` must be the bytes of `key`.
    async fn put(&self, key: &ModuleKey, bytes: Bytes) -> Result<PutOutcome, StoreError>;

    /// The precompiled artifact under `key`, unverified (the caller checks
    /// it against its [`Precompiled`] record). Fails with `Corrupt` when the
    /// stored object is not `len` bytes long, `NotFound` when there is none.
    async fn get_artifact(&self, key: &ArtifactKey, len: u64) -> Result<Bytes, StoreError>;

    /// Stores an artifact under `key` unless an object is already there;
    /// never overwrites. `AlreadyStored` says nothing of the stored bytes:
    /// the deploy reads them back and compares.
    async fn put_artifact(&self, key: &ArtifactKey, bytes: Bytes)
    -> Result<PutOutcome, StoreError>;

    /// Where the store is, for messages (`/srv/.wasmgate/modules`, `s3://bucket`).
    fn location(&self) -> String;
}
