//! `ModuleCache`: compiled modules kept warm, keyed by digest.
//!
//! On a miss the module is fetched from the store, its length and SHA-256
//! are checked against the key, and only then is it compiled and linked.
//! Concurrent misses for one key share one fetch and one compile (moka's
//! `try_get_with`); failures are never cached, so the next request retries.

use std::sync::Arc;

use super::{ArtifactKey, IntegrityError, ModuleKey, ModuleStore, Precompiled, StoreError};
use crate::runtime::{LibraryModule, LoadError, LoadedModule, WasmEngine};

/// Whether a lookup found the module compiled already.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    /// Kept past its time because the backend could not be reached to
    /// refresh it (`WASMGATE_STALE_MAX_MS`).
    Stale,
}

impl CacheOutcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stale => "stale",
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
    /// Modules bound by `wasm_module` bindings, compiled as libraries.
    libraries: moka::future::Cache<ModuleKey, Arc<LibraryModule>>,
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
            libraries: moka::future::Cache::builder()
                .max_capacity(capacity)
                .build(),
        }
    }

    /// Compiled modules kept warm now.
    pub fn len(&self) -> u64 {
        self.compiled.entry_count() + self.libraries.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The compiled library module for `key` (a `wasm_module` binding),
    /// fetched, verified and compiled on a miss like a main module.
    pub async fn get_library(
        &self,
        key: &ModuleKey,
    ) -> Result<Arc<LibraryModule>, Arc<ModuleLoadError>> {
        if let Some(module) = self.libraries.get(key).await {
            return Ok(module);
        }
        let cache = self.clone();
        let key = *key;
        tokio::spawn(async move {
            cache
                .libraries
                .try_get_with(key, async {
                    let compile =
                        |engine: &WasmEngine, bytes: &[u8]| LibraryModule::load(engine, bytes);
                    Ok::<_, ModuleLoadError>(Arc::new(cache.fetch_and_compile(key, compile).await?))
                })
                .await
        })
        .await
        .map_err(|e| task_failed(&key, e))?
    }

    /// The compiled module for `key`, loading it on a miss. Fails when the
    /// object is missing, its bytes don't match the key, or it doesn't load.
    /// `precompiled` are the artifacts the version's deploy recorded: the
    /// one made by an engine like this one is loaded instead of compiling.
    pub async fn get(
        &self,
        key: &ModuleKey,
        precompiled: &[Precompiled],
    ) -> Result<(Arc<LoadedModule>, CacheOutcome), Arc<ModuleLoadError>> {
        if let Some(module) = self.compiled.get(key).await {
            return Ok((module, CacheOutcome::Hit));
        }
        // The load runs in its own task: a request that gives up (its
        // deadline passed, its client left) does not cancel it, so a slow
        // compile still lands in the cache for the next request.
        let cache = self.clone();
        let key = *key;
        let artifact = self.engine.artifact_id().and_then(|engine| {
            let artifact = ArtifactKey::new(key, engine);
            Precompiled::find(precompiled, &artifact).map(|record| (artifact, record.clone()))
        });
        tokio::spawn(async move {
            let entry = cache
                .compiled
                .entry(key)
                .or_try_insert_with(cache.load(key, artifact))
                .await?;
            let outcome = if entry.is_fresh() {
                CacheOutcome::Miss
            } else {
                CacheOutcome::Hit
            };
            Ok((entry.into_value(), outcome))
        })
        .await
        .map_err(|e| task_failed(&key, e))?
    }

    /// Fetches `key`, checks its bytes against it, and only then compiles
    /// them with `compile` on a blocking thread.
    async fn fetch_and_compile<T: Send + 'static>(
        &self,
        key: ModuleKey,
        compile: fn(&WasmEngine, &[u8]) -> Result<T, LoadError>,
    ) -> Result<T, ModuleLoadError> {
        let bytes = self.store.get(&key).await?;
        key.verify(&bytes)?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || compile(&engine, &bytes))
            .await
            .map_err(|e| ModuleLoadError::Load {
                key: key.to_string(),
                error: LoadError::Compile(format!("the compile task failed: {e}")),
            })?
            .map_err(|error| ModuleLoadError::Load {
                key: key.to_string(),
                error,
            })
    }

    /// Loads `key` from its artifact when there is one and it is sound,
    /// else fetches and compiles the module.
    async fn load(
        &self,
        key: ModuleKey,
        artifact: Option<(ArtifactKey, Precompiled)>,
    ) -> Result<Arc<LoadedModule>, ModuleLoadError> {
        let started = std::time::Instant::now();
        if let Some((artifact, record)) = artifact {
            match self.load_artifact(&artifact, record).await {
                Ok(loaded) => {
                    tracing::info!(
                        module = %key,
                        abi = loaded.abi(),
                        artifact = %artifact,
                        load_ms = started.elapsed().as_millis() as u64,
                        "module loaded from its precompiled artifact"
                    );
                    return Ok(Arc::new(loaded));
                }
                Err(error) => tracing::warn!(
                    module = %key,
                    artifact = %artifact,
                    %error,
                    "precompiled artifact not used; compiling the module"
                ),
            }
        }
        let compile = |engine: &WasmEngine, bytes: &[u8]| engine.load(bytes);
        let loaded = self.fetch_and_compile(key, compile).await?;
        tracing::info!(
            module = %key,
            abi = loaded.abi(),
            compile_ms = started.elapsed().as_millis() as u64,
            "module compiled"
        );
        Ok(Arc::new(loaded))
    }
}

impl ModuleCache {
    /// Fetches the artifact and deserializes it, but only once its bytes
    /// are the ones its deploy recorded.
    async fn load_artifact(
        &self,
        artifact: &ArtifactKey,
        record: Precompiled,
    ) -> Result<LoadedModule, String> {
        let bytes = self
            .store
            .get_artifact(artifact, record.len)
            .await
            .map_err(|e| e.to_string())?;
        record.verify(&bytes).map_err(|e| e.to_string())?;
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || {
            // SAFETY: `bytes` have the length and SHA-256 the deploy recorded
            // for the artifact it serialized and stored (checked just above),
            // and the record came from the route table with the version.
            unsafe { engine.load_precompiled(&bytes) }
        })
        .await
        .map_err(|e| format!("the load task failed: {e}"))?
        .map_err(|e| e.to_string())
    }
}

/// A load task that panicked or was cancelled.
fn task_failed(key: &ModuleKey, error: tokio::task::JoinError) -> Arc<ModuleLoadError> {
    Arc::new(ModuleLoadError::Load {
        key: key.to_string(),
        error: LoadError::Compile(format!("the load task failed: {error}")),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use bytes::Bytes;

    use super::*;
    use crate::modules::{FsModuleStore, PutOutcome};
    use crate::runtime::{PoolingMode, RuntimeLimits};

    const PROBE: &[u8] = include_bytes!("../../tests/fixtures/probe.wasm");

    /// A real file store that counts fetches.
    struct Counting {
        inner: FsModuleStore,
        gets: AtomicUsize,
        artifact_gets: AtomicUsize,
    }

    #[async_trait]
    impl ModuleStore for Counting {
        async fn get(&self, key: &ModuleKey) -> Result<Bytes, StoreError> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get(key).await
        }
        async fn put(&self, key: &ModuleKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
            self.inner.put(key, bytes).await
        }
        async fn get_artifact(&self, key: &ArtifactKey, len: u64) -> Result<Bytes, StoreError> {
            self.artifact_gets.fetch_add(1, Ordering::SeqCst);
            self.inner.get_artifact(key, len).await
        }
        async fn put_artifact(
            &self,
            key: &ArtifactKey,
            bytes: Bytes,
        ) -> Result<PutOutcome, StoreError> {
            self.inner.put_artifact(key, bytes).await
        }
        fn location(&self) -> String {
            self.inner.location()
        }
    }

    fn engine() -> Arc<WasmEngine> {
        Arc::new(
            WasmEngine::new(RuntimeLimits {
                pooling: PoolingMode::Off,
                ..RuntimeLimits::new(64 << 20, Duration::from_secs(5), 8)
            })
            .unwrap(),
        )
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_cold_requests_share_one_fetch_and_one_compile() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting {
            inner: FsModuleStore::new(dir.path()),
            gets: AtomicUsize::new(0),
            artifact_gets: AtomicUsize::new(0),
        });
        let key = ModuleKey::for_bytes(PROBE);
        store.put(&key, Bytes::from_static(PROBE)).await.unwrap();
        let cache = ModuleCache::new(store.clone(), engine(), 4);

        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.get(&key, &[]).await.map(|(_, outcome)| outcome) })
            })
            .collect();
        let mut misses = 0;
        for task in tasks {
            if task.await.unwrap().unwrap() == CacheOutcome::Miss {
                misses += 1;
            }
        }
        assert_eq!(
            store.gets.load(Ordering::SeqCst),
            1,
            "one fetch for sixteen cold requests"
        );
        assert_eq!(misses, 1, "one of them loaded it, the rest waited for it");
        assert_eq!(cache.get(&key, &[]).await.unwrap().1, CacheOutcome::Hit);
    }

    #[tokio::test]
    async fn failures_are_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Counting {
            inner: FsModuleStore::new(dir.path()),
            gets: AtomicUsize::new(0),
            artifact_gets: AtomicUsize::new(0),
        });
        let key = ModuleKey::for_bytes(PROBE);
        let cache = ModuleCache::new(store.clone(), engine(), 4);
        let err = cache.get(&key, &[]).await.err().expect("not stored yet");
        assert!(matches!(
            err.as_ref(),
            ModuleLoadError::Store(StoreError::NotFound(_))
        ));
        store.put(&key, Bytes::from_static(PROBE)).await.unwrap();
        assert_eq!(cache.get(&key, &[]).await.unwrap().1, CacheOutcome::Miss);
        assert_eq!(store.gets.load(Ordering::SeqCst), 2);
    }

    fn counting(dir: &std::path::Path) -> Arc<Counting> {
        Arc::new(Counting {
            inner: FsModuleStore::new(dir),
            gets: AtomicUsize::new(0),
            artifact_gets: AtomicUsize::new(0),
        })
    }

    /// What a deploy stores: the module, and its artifact with its record.
    async fn deploy_like(store: &Counting, engine: &WasmEngine) -> (ModuleKey, Precompiled) {
        let key = ModuleKey::for_bytes(PROBE);
        store.put(&key, Bytes::from_static(PROBE)).await.unwrap();
        let code = engine.load(PROBE).unwrap().serialize().unwrap();
        let artifact = ArtifactKey::new(key, engine.artifact_id().unwrap());
        store
            .put_artifact(&artifact, Bytes::from(code.clone()))
            .await
            .unwrap();
        (key, Precompiled::of(&artifact, &code))
    }

    #[tokio::test]
    async fn a_recorded_artifact_is_loaded_instead_of_the_module() {
        let dir = tempfile::tempdir().unwrap();
        let store = counting(dir.path());
        let engine = engine();
        let (key, record) = deploy_like(&store, &engine).await;
        let cache = ModuleCache::new(store.clone(), engine, 4);
        let (module, outcome) = cache.get(&key, &[record]).await.unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(module.abi(), "wasi:http 0.2 component");
        assert_eq!(store.artifact_gets.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.gets.load(Ordering::SeqCst),
            0,
            "the module was not fetched"
        );
    }

    #[tokio::test]
    async fn an_artifact_that_is_not_the_recorded_one_is_never_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let store = counting(dir.path());
        let engine = engine();
        let (key, record) = deploy_like(&store, &engine).await;
        // Same length, one byte changed: only the digest tells.
        let path = dir.path().join(&record.key);
        let mut code = std::fs::read(&path).unwrap();
        let middle = code.len() / 2;
        code[middle] ^= 0xff;
        std::fs::write(&path, code).unwrap();

        let cache = ModuleCache::new(store.clone(), engine, 4);
        let (module, _) = cache.get(&key, &[record]).await.unwrap();
        assert_eq!(module.abi(), "wasi:http 0.2 component");
        assert_eq!(store.artifact_gets.load(Ordering::SeqCst), 1);
        assert_eq!(
            store.gets.load(Ordering::SeqCst),
            1,
            "compiled from the verified module instead"
        );
    }

    #[tokio::test]
    async fn an_artifact_of_another_engine_or_a_missing_one_means_a_compile() {
        let dir = tempfile::tempdir().unwrap();
        let store = counting(dir.path());
        let engine = engine();
        let (key, record) = deploy_like(&store, &engine).await;
        let foreign = Precompiled {
            key: ArtifactKey::new(key, "riscv64-0123456789abcdef").to_string(),
            ..record.clone()
        };
        let cache = ModuleCache::new(store.clone(), engine.clone(), 4);
        cache.get(&key, &[foreign]).await.unwrap();
        assert_eq!(
            store.artifact_gets.load(Ordering::SeqCst),
            0,
            "not even fetched"
        );
        assert_eq!(store.gets.load(Ordering::SeqCst), 1);

        std::fs::remove_file(dir.path().join(&record.key)).unwrap();
        let cache = ModuleCache::new(store.clone(), engine, 4);
        cache.get(&key, &[record]).await.unwrap();
        assert_eq!(store.artifact_gets.load(Ordering::SeqCst), 1);
        assert_eq!(store.gets.load(Ordering::SeqCst), 2);
    }
}
