//! `ModuleCache`: compiled modules kept warm, keyed by digest.
//!
//! On a miss the module is fetched from the store, its length and SHA-256
//! are checked against the key, and only then is it compiled and linked.
//! Concurrent misses for one key share one fetch and one compile (moka's
//! `try_get_with`); failures are never cached, so the next request retries.

use std::sync::Arc;

use super::{IntegrityError, ModuleKey, ModuleStore, StoreError};
use crate::runtime::{LoadError, LoadedModule, WasmEngine};

/// Whether a lookup found the module compiled already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
}

impl CacheOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
        }
    }
}

/// Why a module could not be made ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModuleLoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("refusing to run tampered bytes: {0}")]
    Integrity(#[from] IntegrityError),
    #[error("module {key}: {error}")]
    Load { key: String, error: LoadError },
}

/// Compiled, pre-instantiated modules by key, in front of a [`ModuleStore`].
#[derive(Clone)]
pub struct ModuleCache {
    store: Arc<dyn ModuleStore>,
    engine: Arc<WasmEngine>,
    compiled: moka::future::Cache<ModuleKey, Arc<LoadedModule>>,
}

impl ModuleCache {
    /// A cache holding at most `capacity` compiled modules.
    pub fn new(store: Arc<dyn ModuleStore>, engine: Arc<WasmEngine>, capacity: u64) -> Self {
        ModuleCache {
            store,
            engine,
            compiled: moka::future::Cache::builder()
                .max_capacity(capacity)
                .build(),
        }
    }

    /// The compiled module for `key`, loading it on a miss. Fails when the
    /// object is missing, its bytes don't match the key, or it doesn't load.
    pub async fn get(
        &self,
        key: &ModuleKey,
    ) -> Result<(Arc<LoadedModule>, CacheOutcome), Arc<ModuleLoadError>> {
        let entry = self
            .compiled
            .entry(*key)
            .or_try_insert_with(self.load(*key))
            .await?;
        let outcome = if entry.is_fresh() {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Hit
        };
        Ok((entry.into_value(), outcome))
    }

    async fn load(&self, key: ModuleKey) -> Result<Arc<LoadedModule>, ModuleLoadError> {
        let bytes = self.store.get(&key).await?;
        key.verify(&bytes)?;
        let engine = self.engine.clone();
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&bytes))
            .await
            .map_err(|e| ModuleLoadError::Load {
                key: key.to_string(),
                error: LoadError::Compile(format!("the compile task failed: {e}")),
            })?
            .map_err(|error| ModuleLoadError::Load {
                key: key.to_string(),
                error,
            })?;
        tracing::info!(
            module = %key,
            abi = loaded.abi(),
            compile_ms = started.elapsed().as_millis() as u64,
            "module compiled"
        );
        Ok(Arc::new(loaded))
    }
}
