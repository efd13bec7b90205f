//! `ModuleKey`: the content address of a wasm module, and the object key it
//! is stored under: `application/wasm/{len}b/sha256-{hex}.wasm`.
//!
//! The key is derived from the bytes alone, so the same bytes always land at
//! the same key (a re-deploy uploads nothing) and any bytes can be checked
//! against the key they were fetched by before they are compiled.

use std::fmt;

use sha2::{Digest, Sha256};

/// The prefix every module key starts with (mirrors the bucket layout).
pub const KEY_PREFIX: &str = "application/wasm/";

/// Length and SHA-256 of a module: its identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModuleKey {
    len: u64,
    sha256: [u8; 32],
}

/// Why a string is not a module key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{key}` is not a module key ({reason}); expected application/wasm/{{len}}b/sha256-{{64 lowercase hex}}.wasm"
)]
pub struct KeyParseError {
    key: String,
    reason: &'static str,
}

/// Bytes that do not match the key they were stored under.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntegrityError {
    #[error("module {key} should be {expected} bytes long but is {actual}")]
    Length {
        key: String,
        expected: u64,
        actual: u64,
    },
    #[error("module {key} has SHA-256 {actual}, not the one in its key")]
    Digest { key: String, actual: String },
}

impl ModuleKey {
    /// The key of `bytes`.
    pub fn for_bytes(bytes: &[u8]) -> Self {
        ModuleKey {
            len: bytes.len() as u64,
            sha256: Sha256::digest(bytes).into(),
        }
    }

    /// Parses an object key, strictly: decimal length without leading zeros,
    /// 64 lowercase hex digits. Fails on anything else.
    pub fn parse(key: &str) -> Result<Self, KeyParseError> {
        let fail = |reason| KeyParseError {
            key: key.chars().take(200).collect(),
            reason,
        };
        let rest = key
            .strip_prefix(KEY_PREFIX)
            .ok_or_else(|| fail("missing the application/wasm/ prefix"))?;
        let (len, rest) = rest
            .split_once("b/")
            .ok_or_else(|| fail("missing the {len}b/ segment"))?;
        if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(fail("the length is not a decimal number"));
        }
        if len.len() > 1 && len.starts_with('0') {
            return Err(fail("the length has a leading zero"));
        }
        let len: u64 = len.parse().map_err(|_| fail("the length is too large"))?;
        let hex = rest
            .strip_prefix("sha256-")
            .and_then(|r| r.strip_suffix(".wasm"))
            .ok_or_else(|| fail("missing sha256-{hex}.wasm"))?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(fail("the digest is not 64 lowercase hex digits"));
        }
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(hex, &mut sha256).map_err(|_| fail("the digest is not hex"))?;
        Ok(ModuleKey { len, sha256 })
    }

    /// The module's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether this is the key of the empty module (never a valid one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The lowercase hex SHA-256.
    pub fn digest_hex(&self) -> String {
        hex::encode(self.sha256)
    }

    /// Checks `bytes` against this key. Fails when the length or the SHA-256
    /// differs: such bytes must never be compiled or run.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), IntegrityError> {
        if bytes.len() as u64 != self.len {
            return Err(IntegrityError::Length {
                key: self.to_string(),
                expected: self.len,
                actual: bytes.len() as u64,
            });
        }
        let actual: [u8; 32] = Sha256::digest(bytes).into();
        if actual != self.sha256 {
            return Err(IntegrityError::Digest {
                key: self.to_string(),
                actual: hex::encode(actual),
            });
        }
        Ok(())
    }
}

impl fmt::Display for ModuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{KEY_PREFIX}{}b/sha256-{}.wasm",
            self.len,
            hex::encode(self.sha256)
        )
    }
}

impl fmt::Debug for ModuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ModuleKey({self})")
    }
}

impl std::str::FromStr for ModuleKey {
    type Err = KeyParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModuleKey::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key from the reference document on immutable deploys.
    const EXAMPLE: &str = "application/wasm/388b/sha256-21ad2693870da89b201f445f75c6e3dac7b04ff91984d5ba17711857310939f9.wasm";

    #[test]
    fn key_of_bytes_has_the_documented_form() {
        let key = ModuleKey::for_bytes(b"abc");
        assert_eq!(
            key.to_string(),
            "application/wasm/3b/sha256-ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad.wasm"
        );
        assert_eq!(key.len(), 3);
    }

    #[test]
    fn parse_round_trips() {
        let key = ModuleKey::parse(EXAMPLE).unwrap();
        assert_eq!(key.to_string(), EXAMPLE);
        assert_eq!(key.len(), 388);
    }

    #[test]
    fn parse_rejects_near_misses() {
        let good_hex = "21ad2693870da89b201f445f75c6e3dac7b04ff91984d5ba17711857310939f9";
        for bad in [
            String::new(),
            format!("application/wasm/388/sha256-{good_hex}.wasm"),
            format!("application/wasm/0388b/sha256-{good_hex}.wasm"),
            format!("application/wasm/-1b/sha256-{good_hex}.wasm"),
            format!(
                "application/wasm/388b/sha256-{}.wasm",
                good_hex.to_uppercase()
            ),
            format!("application/wasm/388b/sha256-{}.wasm", &good_hex[1..]),
            format!("application/wasm/388b/sha512-{good_hex}.wasm"),
            format!("application/wasm/388b/sha256-{good_hex}.wat"),
            format!("/application/wasm/388b/sha256-{good_hex}.wasm"),
            format!("application/wasm/388b/sha256-{good_hex}.wasm/../x"),
            format!("application/wasm/99999999999999999999999b/sha256-{good_hex}.wasm"),
        ] {
            assert!(ModuleKey::parse(&bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn verify_catches_altered_bytes() {
        let key = ModuleKey::for_bytes(b"hello");
        assert!(key.verify(b"hello").is_ok());
        assert!(matches!(
            key.verify(b"hellO"),
            Err(IntegrityError::Digest { .. })
        ));
        assert!(matches!(
            key.verify(b"hello!"),
            Err(IntegrityError::Length { .. })
        ));
    }
}
