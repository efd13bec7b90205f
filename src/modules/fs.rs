//! `FsModuleStore`: modules as files under a folder, at the same key path
//! they have in the S3 bucket (`{root}/application/wasm/{len}b/sha256-{hex}.wasm`).
//!
//! A put writes a temporary file and hard-links it into place, which fails
//! when the target exists: an object is never overwritten, and two
//! concurrent deploys of the same bytes both succeed with one file. A
//! process killed mid-write leaves its `.tmp-{pid}-{n}` file behind: opening
//! the store sweeps those of processes that are gone, and any older than an
//! hour.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use super::{ArtifactKey, ModuleKey, ModuleStore, PutOutcome, StoreError};

/// Modules stored as files under `root`.
#[derive(Debug, Clone)]
pub struct FsModuleStore {
    root: PathBuf,
}

impl FsModuleStore {
    /// A store rooted at `root` (created on the first put).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FsModuleStore { root: root.into() }
    }

    /// A store rooted at `root`, with the temporary files of killed writers
    /// swept first ([`sweep_temp_files`]).
    pub fn open(root: impl Into<PathBuf>) -> Self {
        let store = Self::new(root);
        let swept = sweep_temp_files(&store.root, std::time::Duration::from_secs(3600));
        if swept > 0 {
            tracing::info!(files = swept, root = %store.root.display(), "swept temporary files left by killed deploys");
        }
        store
    }

    /// The file that holds `key`.
    pub fn path_of(&self, key: &ModuleKey) -> PathBuf {
        self.root.join(key.to_string())
    }
}

#[async_trait]
impl ModuleStore for FsModuleStore {
    async fn get(&self, key: &ModuleKey) -> Result<Bytes, StoreError> {
        let path = self.path_of(key);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Bytes::from(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(StoreError::NotFound(key.to_string()))
            }
            Err(e) => Err(StoreError::Unavailable(format!(
                "reading {}: {e}",
                path.display()
            ))),
        }
    }

    async fn put(&self, key: &ModuleKey, bytes: Bytes) -> Result<PutOutcome, StoreError> {
        let path = self.path_of(key);
        let key = *key;
        tokio::task::spawn_blocking(move || {
            put_file(&path, &bytes, |path| check_existing(path, &key))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("writing a module: {e}")))?
    }

    async fn get_artifact(&self, key: &ArtifactKey, len: u64) -> Result<Bytes, StoreError> {
        let path = self.root.join(key.to_string());
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(key.to_string()));
            }
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "reading {}: {e}",
                    path.display()
                )));
            }
        };
        if bytes.len() as u64 != len {
            return Err(StoreError::Corrupt {
                key: key.to_string(),
                reason: format!("the file is {} bytes, its record says {len}", bytes.len()),
            });
        }
        Ok(Bytes::from(bytes))
    }

    async fn put_artifact(
        &self,
        key: &ArtifactKey,
        bytes: Bytes,
    ) -> Result<PutOutcome, StoreError> {
        let path = self.root.join(key.to_string());
        tokio::task::spawn_blocking(move || {
            put_file(&path, &bytes, |_| Ok(PutOutcome::AlreadyStored))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("writing an artifact: {e}")))?
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

/// Writes `bytes` at `path` unless a file is there already, in which case
/// `existing` says what it is.
fn put_file(
    path: &Path,
    bytes: &[u8],
    existing: impl Fn(&Path) -> Result<PutOutcome, StoreError>,
) -> Result<PutOutcome, StoreError> {
    let io = |what: &str, e: std::io::Error| {
        StoreError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    if path.exists() {
        return existing(path);
    }
    let dir = path.parent().expect("BUG: a module path has a parent");
    std::fs::create_dir_all(dir).map_err(|e| io("creating the folder of", e))?;
    let tmp = dir.join(format!(".tmp-{}-{}", std::process::id(), unique_suffix()));
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::hard_link(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    match result {
        Ok(()) => Ok(PutOutcome::Uploaded),
        // Another deploy of the same bytes won the race.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => existing(path),
        Err(e) => Err(io("writing", e)),
    }
}

/// An existing object is only "already stored" when its bytes match its key.
fn check_existing(path: &Path, key: &ModuleKey) -> Result<PutOutcome, StoreError> {
    let existing = std::fs::read(path)
        .map_err(|e| StoreError::Unavailable(format!("reading {}: {e}", path.display())))?;
    match key.verify(&existing) {
        Ok(()) => Ok(PutOutcome::AlreadyStored),
        Err(e) => Err(StoreError::Corrupt {
            key: key.to_string(),
            reason: format!("{e}; file {}", path.display()),
        }),
    }
}

/// Removes the `.tmp-{pid}-{n}` files under `root` (a few levels deep, as
/// the store lays them out) whose writer is gone (no `/proc/{pid}`, on
/// Linux) or which are older than `max_age` (a reused pid, or no `/proc`).
/// Returns how many it removed; what it cannot read is left alone.
pub fn sweep_temp_files(root: &Path, max_age: std::time::Duration) -> usize {
    fn writer_gone(name: &str) -> bool {
        let Some(pid) = name
            .strip_prefix(".tmp-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            return false;
        };
        pid != std::process::id()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
    }
    fn walk(dir: &Path, depth: usize, max_age: std::time::Duration, swept: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() && depth > 0 {
                walk(&entry.path(), depth - 1, max_age, swept);
            } else if kind.is_file() && name.starts_with(".tmp-") {
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > max_age);
                if (old || writer_gone(&name)) && std::fs::remove_file(entry.path()).is_ok() {
                    *swept += 1;
                }
            }
        }
    }
    let mut swept = 0;
    walk(root, 5, max_age, &mut swept);
    swept
}

fn unique_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    (nanos << 16) ^ COUNTER.fetch_add(1, Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_files_of_gone_writers_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("application/wasm/10b");
        std::fs::create_dir_all(&folder).unwrap();
        // No process has pid 4194304 (past Linux's pid_max).
        let gone = folder.join(".tmp-4194304-17");
        let mine = folder.join(format!(".tmp-{}-18", std::process::id()));
        let module = folder.join("sha256-00.wasm");
        for file in [&gone, &mine, &module] {
            std::fs::write(file, b"x").unwrap();
        }
        let swept = sweep_temp_files(dir.path(), std::time::Duration::from_secs(3600));
        assert_eq!(swept, usize::from(Path::new("/proc/self").exists()));
        assert!(mine.exists(), "a live writer's file stays");
        assert!(module.exists(), "modules are never touched");
        // Past the age bound, whoever wrote it.
        std::thread::sleep(std::time::Duration::from_millis(20));
        sweep_temp_files(dir.path(), std::time::Duration::from_millis(1));
        assert!(!mine.exists() && !gone.exists());
        assert!(module.exists());
    }

    #[tokio::test]
    async fn put_then_get_and_skip_on_second_put() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsModuleStore::new(dir.path());
        let bytes = Bytes::from_static(b"\0asm not really");
        let key = ModuleKey::for_bytes(&bytes);
        assert_eq!(
            store.put(&key, bytes.clone()).await.unwrap(),
            PutOutcome::Uploaded
        );
        assert_eq!(
            store.put(&key, bytes.clone()).await.unwrap(),
            PutOutcome::AlreadyStored
        );
        assert_eq!(store.get(&key).await.unwrap(), bytes);
        assert!(dir.path().join(key.to_string()).is_file());
    }

    #[tokio::test]
    async fn a_corrupt_existing_object_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsModuleStore::new(dir.path());
        let key = ModuleKey::for_bytes(b"good");
        store.put(&key, Bytes::from_static(b"good")).await.unwrap();
        std::fs::write(store.path_of(&key), b"evil").unwrap();
        let err = store
            .put(&key, Bytes::from_static(b"good"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_object_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsModuleStore::new(dir.path());
        let err = store.get(&ModuleKey::for_bytes(b"nope")).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound(_)));
    }
}
