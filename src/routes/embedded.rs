//! `SqliteRouteTable`: the embedded route table, one SQLite file in WAL mode,
//! shared safely by the server and the CLI running in other processes.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions, which take SQLite's write
//! lock before reading, so the check of the expected pointer and the write
//! of the new one cannot interleave with another process's flip.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    ChangeNote, LivePointer, NewVersion, PointerChange, RouteName, RouteTable, Secrets, Split,
    TableError, Version, describe_split, now_rfc3339, split_move,
};

/// How long a writer waits for another process's transaction to finish.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS live (
    route       TEXT PRIMARY KEY,
    module      TEXT NOT NULL,
    version     INTEGER,
    updated_at  TEXT NOT NULL,
    updated_by  TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    route       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    module      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    created_by  TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    PRIMARY KEY (route, version)
);
CREATE TABLE IF NOT EXISTS changes (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    route        TEXT NOT NULL,
    at           TEXT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    from_version INTEGER,
    from_module  TEXT,
    to_version   INTEGER,
    to_module    TEXT NOT NULL,
    reason       TEXT
);
CREATE INDEX IF NOT EXISTS changes_by_route ON changes (route, id);
-- secret_text binding values, apart from the version records (schema 2).
CREATE TABLE IF NOT EXISTS secrets (
    route       TEXT NOT NULL,
    version     INTEGER NOT NULL,
    name        TEXT NOT NULL,
    value       TEXT NOT NULL,
    PRIMARY KEY (route, version, name)
);
";

/// The schema this wasmgate writes. 2 added `live.split`,
/// `versions.preview_token` and the `secrets` table; an older wasmgate
/// refuses a schema-2 file (its flips would not clear a rollout).
const SCHEMA_VERSION: i64 = 2;

/// Routes, versions and history in a SQLite database file.
#[derive(Clone)]
pub struct SqliteRouteTable {
    conn: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl SqliteRouteTable {
    /// Opens (creating if needed) the database at `path`. Fails when the file
    /// cannot be opened or is not a wasmgate database.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, TableError> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| TableError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let fail = |e: rusqlite::Error| {
            TableError::Unavailable(format!("opening {}: {e}", path.display()))
        };
        let conn = Connection::open(&path).map_err(fail)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(fail)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(fail)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(TableError::Unavailable(format!(
                "{} cannot use WAL mode (got {mode}); put the data dir on a local filesystem",
                path.display()
            )));
        }
        conn.execute_batch("PRAGMA synchronous = NORMAL;")
            .map_err(fail)?;
        // Create or migrate in one write transaction: two processes opening
        // an old file at once must not both add a column.
        let mut conn = conn;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(fail)?;
        if version > SCHEMA_VERSION {
            return Err(TableError::Corrupt(format!(
                "{} has schema version {version}, newer than this wasmgate understands ({SCHEMA_VERSION}): upgrade wasmgate",
                path.display()
            )));
        }
        if version < SCHEMA_VERSION {
            tx.execute_batch(SCHEMA).map_err(fail)?;
            // Columns added since schema 1: add them to older files.
            for (table, column) in [("live", "split"), ("versions", "preview_token")] {
                let present: bool = tx
                    .query_row(
                        &format!(
                            "SELECT COUNT(*) > 0 FROM pragma_table_info('{table}') WHERE name = ?1"
                        ),
                        [column],
                        |row| row.get(0),
                    )
                    .map_err(fail)?;
                if !present {
                    tx.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} TEXT"))
                        .map_err(fail)?;
                }
            }
            tx.execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS versions_by_preview ON versions (preview_token);
                 PRAGMA user_version = {SCHEMA_VERSION};"
            ))
            .map_err(fail)?;
        }
        tx.commit().map_err(fail)?;
        Ok(SqliteRouteTable {
            conn: Arc::new(Mutex::new(conn)),
            path,
        })
    }

    async fn with_conn<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, rusqlite::Error> + Send + 'static,
    ) -> Result<R, TableError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| TableError::Unavailable(format!("database task failed: {e}")))?
        .map_err(sql_error)
    }
}

fn sql_error(e: rusqlite::Error) -> TableError {
    if let rusqlite::Error::ToSqlConversionFailure(inner) = &e
        && let Some(conflict) = inner.downcast_ref::<ConflictSignal>()
    {
        return conflict.0.clone();
    }
    TableError::Unavailable(format!("database error: {e}"))
}

/// Carries a conflict out of a transaction closure through rusqlite's error.
#[derive(Debug)]
struct ConflictSignal(TableError);

impl std::fmt::Display for ConflictSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ConflictSignal {}

fn route_of(text: String) -> rusqlite::Result<RouteName> {
    RouteName::parse(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn live_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<LivePointer> {
    let metadata: Option<String> = row.get(5)?;
    let split: Option<String> = row.get(6)?;
    let route = route_of(row.get(0)?)?;
    let version = row.get::<_, Option<i64>>(2)?.map(|v| v as u64);
    let split = match split {
        None => None,
        Some(text) => match serde_json::from_str::<Split>(&text) {
            Ok(split) => Some(split),
            Err(error) => {
                tracing::error!(%route, %error, "ignoring an unreadable split on the live row");
                None
            }
        },
    };
    Ok(LivePointer {
        route,
        module: row.get(1)?,
        version,
        updated_at: row.get(3)?,
        updated_by: row.get(4)?,
        // The join matched only if the version's module is the live one.
        bindings_version: metadata.is_some().then_some(version).flatten(),
        metadata: metadata.and_then(|m| serde_json::from_str(&m).ok()),
        split,
    })
}

fn version_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Version> {
    let metadata: String = row.get(5)?;
    Ok(Version {
        route: route_of(row.get(0)?)?,
        number: row.get::<_, i64>(1)? as u64,
        module: row.get(2)?,
        created_at: row.get(3)?,
        created_by: row.get(4)?,
        metadata: serde_json::from_str(&metadata).unwrap_or(serde_json::Value::Null),
        preview_token: row.get(6)?,
    })
}

const VERSION_COLUMNS: &str =
    "route, version, module, created_at, created_by, metadata, preview_token";

/// The live row, with the metadata of the version it points at when that
/// version's module is the live one (a hand edit may have made them differ).
const LIVE_SELECT: &str =
    "SELECT l.route, l.module, l.version, l.updated_at, l.updated_by, v.metadata, l.split
     FROM live l LEFT JOIN versions v
       ON v.route = l.route AND v.version = l.version AND v.module = l.module";

#[async_trait]
impl RouteTable for SqliteRouteTable {
    async fn lookup(&self, candidates: &[RouteName]) -> Result<Vec<LivePointer>, TableError> {
        if candidates.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
        self.with_conn(move |conn| {
            let placeholders = vec!["?"; names.len()].join(",");
            let mut stmt =
                conn.prepare_cached(&format!("{LIVE_SELECT} WHERE l.route IN ({placeholders})"))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(names.iter()), live_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn list(&self) -> Result<Vec<LivePointer>, TableError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare_cached(&format!("{LIVE_SELECT} ORDER BY l.route"))?;
            let rows = stmt.query_map([], live_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn add_version(
        &self,
        route: &RouteName,
        version: NewVersion,
    ) -> Result<Version, TableError> {
        let route = route.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let name = route.to_string();
            let next: i64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE route = ?1",
                [&name],
                |row| row.get(0),
            )?;
            let created_at = now_rfc3339();
            let module = version.module.to_string();
            let metadata = version.metadata.to_string();
            tx.execute(
                "INSERT INTO versions (route, version, module, created_at, created_by, metadata, preview_token) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![name, next, module, created_at, version.actor, metadata, version.preview_token],
            )?;
            for (secret, value) in &version.secrets {
                tx.execute(
                    "INSERT INTO secrets (route, version, name, value) VALUES (?1, ?2, ?3, ?4)",
                    params![name, next, secret, value],
                )?;
            }
            tx.commit()?;
            Ok(Version {
                route,
                number: next as u64,
                module,
                created_at,
                created_by: version.actor,
                metadata: version.metadata,
                preview_token: version.preview_token,
            })
        })
        .await
    }

    async fn versions(&self, route: &RouteName) -> Result<Vec<Version>, TableError> {
        let name = route.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE route = ?1 ORDER BY version"
            ))?;
            let rows = stmt.query_map([name], version_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn flip(
        &self,
        route: &RouteName,
        expected: Option<&LivePointer>,
        to: &Version,
        note: ChangeNote,
    ) -> Result<LivePointer, TableError> {
        let route = route.clone();
        let expected = expected.cloned();
        let to = to.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let name = route.to_string();
            let found = tx
                .query_row(&format!("{LIVE_SELECT} WHERE l.route = ?1"), [&name], live_from_row)
                .optional()?;
            // The same pointer, and the same rollout (or none): a rollout
            // started since the read must not be wiped unseen.
            fn same(p: &LivePointer) -> (&str, Option<u64>, Option<&str>) {
                (p.module.as_str(), p.version, p.split.as_ref().map(|s| s.id.as_str()))
            }
            if found.as_ref().map(same) != expected.as_ref().map(same) {
                let conflict = TableError::Conflict {
                    route: name,
                    expected: describe_split(expected.as_ref()),
                    found: describe_split(found.as_ref()),
                };
                return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(ConflictSignal(conflict))));
            }
            let current = found.map(|p| (p.module, p.version));
            let at = now_rfc3339();
            tx.execute(
                "INSERT INTO live (route, module, version, updated_at, updated_by, split) VALUES (?1, ?2, ?3, ?4, ?5, NULL)
                 ON CONFLICT (route) DO UPDATE SET module = excluded.module, version = excluded.version,
                     updated_at = excluded.updated_at, updated_by = excluded.updated_by, split = NULL",
                params![name, to.module, to.number as i64, at, note.actor],
            )?;
            tx.execute(
                "INSERT INTO changes (route, at, actor, action, from_version, from_module, to_version, to_module, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    name,
                    at,
                    note.actor,
                    note.action,
                    note.from_version
                        .or(current.as_ref().and_then(|(_, v)| *v))
                        .map(|v| v as i64),
                    current.as_ref().map(|(m, _)| m.clone()),
                    to.number as i64,
                    to.module,
                    note.reason,
                ],
            )?;
            // A preview token reaches a version only until it goes live.
            tx.execute(
                "UPDATE versions SET preview_token = NULL WHERE route = ?1 AND version = ?2",
                params![name, to.number as i64],
            )?;
            tx.commit()?;
            Ok(LivePointer {
                route,
                module: to.module,
                version: Some(to.number),
                updated_at: at,
                updated_by: note.actor,
                metadata: Some(to.metadata),
                split: None,
                bindings_version: Some(to.number),
            })
        })
        .await
    }

    async fn set_split(
        &self,
        route: &RouteName,
        expected: &LivePointer,
        split: Option<Split>,
        note: ChangeNote,
    ) -> Result<LivePointer, TableError> {
        let route = route.clone();
        let expected = expected.clone();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let name = route.to_string();
            let current = tx
                .query_row(
                    &format!("{LIVE_SELECT} WHERE l.route = ?1"),
                    [&name],
                    live_from_row,
                )
                .optional()?;
            let matches = current.as_ref().is_some_and(|c| {
                c.module == expected.module
                    && c.version == expected.version
                    && c.split.as_ref().map(|s| &s.id) == expected.split.as_ref().map(|s| &s.id)
            });
            let Some(mut current) = current.filter(|_| matches) else {
                let found = tx
                    .query_row(
                        &format!("{LIVE_SELECT} WHERE l.route = ?1"),
                        [&name],
                        live_from_row,
                    )
                    .optional()?;
                let conflict = TableError::Conflict {
                    route: name,
                    expected: describe_split(Some(&expected)),
                    found: describe_split(found.as_ref()),
                };
                return Err(rusqlite::Error::ToSqlConversionFailure(Box::new(ConflictSignal(conflict))));
            };
            let at = now_rfc3339();
            let text = split
                .as_ref()
                .map(|s| serde_json::to_string(s).expect("BUG: a split serialises"));
            tx.execute(
                "UPDATE live SET split = ?2, updated_at = ?3, updated_by = ?4 WHERE route = ?1",
                params![name, text, at, note.actor],
            )?;
            let (from, to) = split_move(&current, split.as_ref());
            tx.execute(
                "INSERT INTO changes (route, at, actor, action, from_version, from_module, to_version, to_module, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    name,
                    at,
                    note.actor,
                    note.action,
                    from.0.map(|v| v as i64),
                    from.1,
                    to.0.map(|v| v as i64),
                    to.1,
                    note.reason,
                ],
            )?;
            tx.commit()?;
            current.split = split;
            current.updated_at = at;
            current.updated_by = note.actor;
            Ok(current)
        })
        .await
    }

    async fn lookup_preview(
        &self,
        candidates: &[RouteName],
        token: &str,
    ) -> Result<Vec<Version>, TableError> {
        if candidates.is_empty() || token.is_empty() {
            return Ok(Vec::new());
        }
        let mut args: Vec<String> = candidates.iter().map(|c| c.to_string()).collect();
        args.push(token.to_string());
        self.with_conn(move |conn| {
            let placeholders = vec!["?"; args.len() - 1].join(",");
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE route IN ({placeholders}) AND preview_token = ?"
            ))?;
            let rows = stmt.query_map(rusqlite::params_from_iter(args.iter()), version_from_row)?;
            rows.collect()
        })
        .await
    }

    async fn secrets(&self, route: &RouteName, version: u64) -> Result<Secrets, TableError> {
        let name = route.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT name, value FROM secrets WHERE route = ?1 AND version = ?2",
            )?;
            let rows = stmt.query_map(params![name, version as i64], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })?;
            rows.collect()
        })
        .await
    }

    async fn history(&self, route: &RouteName) -> Result<Vec<PointerChange>, TableError> {
        let name = route.to_string();
        self.with_conn(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT at, actor, action, from_version, from_module, to_version, to_module, reason
                 FROM changes WHERE route = ?1 ORDER BY id",
            )?;
            let rows = stmt.query_map([name], |row| {
                Ok(PointerChange {
                    at: row.get(0)?,
                    actor: row.get(1)?,
                    action: row.get(2)?,
                    from_version: row.get::<_, Option<i64>>(3)?.map(|v| v as u64),
                    from_module: row.get(4)?,
                    to_version: row.get::<_, Option<i64>>(5)?.map(|v| v as u64),
                    to_module: row.get(6)?,
                    reason: row.get(7)?,
                })
            })?;
            rows.collect()
        })
        .await
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
