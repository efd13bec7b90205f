//! The key-value store behind `wasi:keyvalue`: namespaces of keys and byte
//! values, kept in the route table's own database so that a deployment needs
//! nothing more than it already has.
//!
//! | backend | where | layout |
//! |---|---|---|
//! | embedded | `routes.sqlite3` in the data dir | table `kv (namespace, key, value)` |
//! | aws | the route table (or `WASMGATE_KV_TABLE`) | item `route` = `kv#{namespace}`, `rev` = the key; `value` (B), or `counter` (N) once `increment` has touched it |
//!
//! A guest reaches a namespace only through a `kv_namespace` binding of its
//! version (see [`crate::runtime::bindings`]); the runtime checks keys and
//! values against [`MAX_KEY_BYTES`] and [`MAX_VALUE_BYTES`] before a backend
//! sees them, so both backends accept exactly the same data.
//!
//! `increment` is atomic across servers: a SQLite write transaction, or a
//! conditional DynamoDB update (never a read-modify-write that can lose an
//! update). A value is a counter when it is a decimal `u64` (what
//! `increment` writes and `get` returns).

mod sqlite;
pub use sqlite::SqliteKv;

#[cfg(feature = "aws")]
mod dynamodb;
#[cfg(feature = "aws")]
pub use dynamodb::DynamoKv;

use async_trait::async_trait;

/// Longest key, in bytes (DynamoDB's sort key limit).
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes: DynamoDB's 400 KB item limit, less the key and
/// the item's other attributes, rounded down. The same on both backends.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Keys per `list-keys` page.
pub const LIST_PAGE: usize = 1000;

/// Why a key-value operation failed. The guest sees the message as
/// `error::other`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KvError {
    /// What the guest asked for cannot be done (too large, not a number).
    #[error("{0}")]
    Invalid(String),
    /// The database did not answer or failed.
    #[error("the key-value store is unavailable: {0}")]
    Unavailable(String),
}

/// One page of `list-keys`: keys in byte order from the offset, and whether
/// more follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPage {
    pub keys: Vec<String>,
    pub more: bool,
}

/// Namespaced keys and values. Implementations make `increment` atomic.
#[async_trait]
pub trait KvStore: Send + Sync + 'static {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvError>;
    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError>;
    async fn exists(&self, namespace: &str, key: &str) -> Result<bool, KvError>;
    /// Up to `limit` keys in byte order, after skipping `offset` of them.
    async fn list(&self, namespace: &str, offset: u64, limit: usize) -> Result<KeyPage, KvError>;
    /// Adds `delta` to the counter at `key` (0 when absent) and returns the
    /// sum. Fails, changing nothing, when the value is not a decimal `u64`
    /// or the sum would overflow.
    async fn increment(&self, namespace: &str, key: &str, delta: u64) -> Result<u64, KvError>;
}

/// Reads a stored value as a counter.
fn parse_counter(key: &str, value: &[u8]) -> Result<u64, KvError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .ok_or_else(|| {
            KvError::Invalid(format!(
                "the value of {key:?} is not a decimal number, so it cannot be incremented"
            ))
        })
}

fn overflow(key: &str) -> KvError {
    KvError::Invalid(format!("incrementing {key:?} would overflow a u64"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_decimal_u64s() {
        assert_eq!(parse_counter("k", b"42").unwrap(), 42);
        assert!(parse_counter("k", b"-1").is_err());
        assert!(parse_counter("k", b"x").is_err());
        assert!(parse_counter("k", b"18446744073709551616").is_err());
    }
}
