//! `SqliteKv`: the key-value store of the embedded default, a table in the
//! route database (its own connection, so guests' reads and writes never
//! wait behind a route lookup's lock).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{KeyPage, KvError, KvStore, overflow, parse_counter};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (
    namespace   TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
";

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Keys and values in the embedded database file.
#[derive(Clone)]
pub struct SqliteKv {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteKv {
    /// Opens the store in the database at `path` (the route table's file,
    /// which must already exist in WAL mode), creating its table if needed.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, KvError> {
        let path = path.as_ref();
        let fail = |e: rusqlite::Error| {
            KvError::Unavailable(format!(
                "opening the key-value table in {}: {e}",
                path.display()
            ))
        };
        let conn = Connection::open(path).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        conn.execute_batch(SCHEMA).map_err(fail)?;
        Ok(SqliteKv {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `work` on the connection off the async workers.
    async fn with<R: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<R, KvError> + Send + 'static,
    ) -> Result<R, KvError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            work(&mut conn)
        })
        .await
        .map_err(|e| KvError::Unavailable(format!("the key-value task failed: {e}")))?
    }
}

fn unavailable(e: rusqlite::Error) -> KvError {
    KvError::Unavailable(e.to_string())
}

#[async_trait]
impl KvStore for SqliteKv {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.with(move |conn| {
            conn.query_row(
                "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2",
                params![namespace, key],
                |row| row.get(0),
            )
            .optional()
            .map_err(unavailable)
        })
        .await
    }

    async fn set(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        let (namespace, key, value) = (namespace.to_string(), key.to_string(), value.to_vec());
        self.with(move |conn| {
            conn.execute(
                "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                params![namespace, key, value],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM kv WHERE namespace = ?1 AND key = ?2",
                params![namespace, key],
            )
            .map(drop)
            .map_err(unavailable)
        })
        .await
    }

    async fn exists(&self, namespace: &str, key: &str) -> Result<bool, KvError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.with(move |conn| {
            conn.query_row(
                "SELECT COUNT(*) > 0 FROM kv WHERE namespace = ?1 AND key = ?2",
                params![namespace, key],
                |row| row.get(0),
            )
            .map_err(unavailable)
        })
        .await
    }

    async fn list(&self, namespace: &str, offset: u64, limit: usize) -> Result<KeyPage, KvError> {
        let namespace = namespace.to_string();
        self.with(move |conn| {
            let mut statement = conn
                .prepare_cached(
                    // BINARY collation: byte order, along the primary key.
                    "SELECT key FROM kv WHERE namespace = ?1
                     ORDER BY key LIMIT ?2 OFFSET ?3",
                )
                .map_err(unavailable)?;
            let offset = i64::try_from(offset).unwrap_or(i64::MAX);
            let mut keys = statement
                .query_map(params![namespace, limit as i64 + 1, offset], |row| {
                    row.get::<_, String>(0)
                })
                .map_err(unavailable)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable)?;
            let more = keys.len() > limit;
            keys.truncate(limit);
            Ok(KeyPage { keys, more })
        })
        .await
    }

    async fn increment(&self, namespace: &str, key: &str, delta: u64) -> Result<u64, KvError> {
        let (namespace, key) = (namespace.to_string(), key.to_string());
        self.with(move |conn| {
            // The write lock first: another process's increment waits for
            // this one to commit, so none is lost.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(unavailable)?;
            let current: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT value FROM kv WHERE namespace = ?1 AND key = ?2",
                    params![namespace, key],
                    |row| row.get(0),
                )
                .optional()
                .map_err(unavailable)?;
            let current = match current {
                Some(value) => parse_counter(&key, &value)?,
                None => 0,
            };
            let sum = current.checked_add(delta).ok_or_else(|| overflow(&key))?;
            tx.execute(
                "INSERT INTO kv (namespace, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value",
                params![namespace, key, sum.to_string().into_bytes()],
            )
            .map_err(unavailable)?;
            tx.commit().map_err(unavailable)?;
            Ok(sum)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, SqliteKv) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.sqlite3");
        crate::routes::SqliteRouteTable::open(&path).unwrap();
        let kv = SqliteKv::open(&path).unwrap();
        (dir, kv)
    }

    #[tokio::test]
    async fn namespaces_hold_their_own_keys() {
        let (_dir, kv) = store();
        kv.set("a", "k", b"one").await.unwrap();
        kv.set("b", "k", b"two").await.unwrap();
        assert_eq!(
            kv.get("a", "k").await.unwrap().as_deref(),
            Some(&b"one"[..])
        );
        assert_eq!(
            kv.get("b", "k").await.unwrap().as_deref(),
            Some(&b"two"[..])
        );
        assert!(kv.exists("a", "k").await.unwrap());
        kv.delete("a", "k").await.unwrap();
        assert!(!kv.exists("a", "k").await.unwrap());
        assert!(kv.exists("b", "k").await.unwrap());
        kv.set("a", "empty", b"").await.unwrap();
        assert_eq!(kv.get("a", "empty").await.unwrap(), Some(Vec::new()));
    }

    #[tokio::test]
    async fn list_pages_in_byte_order_and_increment_counts() {
        let (_dir, kv) = store();
        for key in ["b", "a", "c", "B"] {
            kv.set("n", key, b"x").await.unwrap();
        }
        let first = kv.list("n", 0, 3).await.unwrap();
        assert_eq!(first.keys, ["B", "a", "b"]);
        assert!(first.more);
        let second = kv.list("n", 3, 3).await.unwrap();
        assert_eq!(second.keys, ["c"]);
        assert!(!second.more);

        assert_eq!(kv.increment("n", "hits", 2).await.unwrap(), 2);
        assert_eq!(kv.increment("n", "hits", 3).await.unwrap(), 5);
        assert_eq!(
            kv.get("n", "hits").await.unwrap().as_deref(),
            Some(&b"5"[..])
        );
        let refused = kv.increment("n", "a", 1).await.unwrap_err();
        assert!(
            refused.to_string().contains("not a decimal number"),
            "{refused}"
        );
        kv.set("n", "max", u64::MAX.to_string().as_bytes())
            .await
            .unwrap();
        assert!(kv.increment("n", "max", 1).await.is_err());
        assert_eq!(
            kv.get("n", "max").await.unwrap().unwrap(),
            u64::MAX.to_string().into_bytes(),
            "a refused increment changes nothing"
        );
    }
}
