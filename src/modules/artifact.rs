//! Precompiled artifacts: a module's code as one engine build compiled it,
//! stored beside the module so a cold server deserializes it (milliseconds)
//! instead of compiling (tens to hundreds of milliseconds).
//!
//! ```text
//! application/wasm/{len}b/sha256-{hex}.wasm                       the module
//! application/wasm/{len}b/sha256-{hex}.{engine}.cwasm             its code for one engine
//! ```
//!
//! `{engine}` is [`crate::runtime::WasmEngine::artifact_id`]: the CPU
//! architecture and a digest of wasmtime's version and settings, so a
//! server only ever picks an artifact its own engine made the same way.
//!
//! Deserializing code runs it without validation, so an artifact is trusted
//! only through its digest: the deploy that stores it records its length and
//! SHA-256 with the version ([`Precompiled`]), and a server loads the bytes
//! only when they match that record. Bytes that don't, a missing artifact,
//! or one for another engine: the server compiles the module instead.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ModuleKey;

/// Where the artifact of `module` made by engine `engine` is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactKey {
    module: ModuleKey,
    engine: String,
}

impl ArtifactKey {
    /// `engine` is an artifact id (`x86_64-1f2e3d4c5b6a7988`).
    pub fn new(module: ModuleKey, engine: &str) -> Self {
        ArtifactKey {
            module,
            engine: engine.to_string(),
        }
    }

    pub fn module(&self) -> &ModuleKey {
        &self.module
    }
}

impl fmt::Display for ArtifactKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let module = self.module.to_string();
        let stem = module
            .strip_suffix(".wasm")
            .expect("BUG: a module key ends in .wasm");
        write!(f, "{stem}.{}.cwasm", self.engine)
    }
}

/// An artifact as its deploy recorded it, in the version's metadata (and so
/// on the live pointer, which a server reads anyway).
/// Unknown fields are ignored, so that a server older than the deployer
/// still reads the version (and at worst compiles).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Precompiled {
    /// The artifact's object key ([`ArtifactKey`]).
    pub key: String,
    pub len: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// Artifact bytes that are not the ones recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the artifact {key} is {actual_len} bytes with SHA-256 {actual_sha256}, not the {len} bytes with SHA-256 {sha256} its deploy recorded"
)]
pub struct ArtifactMismatch {
    key: String,
    len: u64,
    sha256: String,
    actual_len: u64,
    actual_sha256: String,
}

impl Precompiled {
    /// The record of `bytes` stored under `key`.
    pub fn of(key: &ArtifactKey, bytes: &[u8]) -> Self {
        Precompiled {
            key: key.to_string(),
            len: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
        }
    }

    /// The record among `records` for `key`, if the deploy made one.
    pub fn find<'a>(records: &'a [Precompiled], key: &ArtifactKey) -> Option<&'a Precompiled> {
        let key = key.to_string();
        records.iter().find(|r| r.key == key)
    }

    /// Whether `bytes` are the ones recorded: same length, same SHA-256.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), ArtifactMismatch> {
        let actual = hex(&Sha256::digest(bytes));
        if bytes.len() as u64 == self.len && actual == self.sha256 {
            return Ok(());
        }
        Err(ArtifactMismatch {
            key: self.key.clone(),
            len: self.len,
            sha256: self.sha256.clone(),
            actual_len: bytes.len() as u64,
            actual_sha256: actual,
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_artifact_sits_beside_its_module() {
        let module = ModuleKey::for_bytes(b"\0asm\x01\0\0\0");
        let key = ArtifactKey::new(module, "x86_64-0123456789abcdef");
        let text = key.to_string();
        let stem = module.to_string();
        let stem = stem.strip_suffix(".wasm").unwrap();
        assert_eq!(text, format!("{stem}.x86_64-0123456789abcdef.cwasm"));
        assert!(text.starts_with(crate::modules::KEY_PREFIX));
        assert!(
            ModuleKey::parse(&text).is_err(),
            "an artifact key is never taken for a module key"
        );
    }

    #[test]
    fn only_the_recorded_bytes_verify() {
        let key = ArtifactKey::new(ModuleKey::for_bytes(b"m"), "x86_64-0123456789abcdef");
        let record = Precompiled::of(&key, b"code");
        assert_eq!(record.verify(b"code"), Ok(()));
        let err = record.verify(b"c0de").unwrap_err();
        assert!(err.to_string().contains("not the 4 bytes"), "{err}");
        assert!(record.verify(b"code!").is_err());
        assert_eq!(
            Precompiled::find(std::slice::from_ref(&record), &key),
            Some(&record)
        );
        let other = ArtifactKey::new(ModuleKey::for_bytes(b"m"), "aarch64-0123456789abcdef");
        assert_eq!(Precompiled::find(&[record], &other), None);
    }
}
