//! The route table: which module serves which route, its versions, and the
//! history of every move of the live pointer.
//!
//! Each route has one live pointer (the object key of the module serving it)
//! and a numbered list of versions. A deploy adds version N+1 and flips the
//! pointer to it; a rollback flips it back. Every flip is checked against
//! the pointer value it read, so of two concurrent flips one wins and the
//! other gets [`TableError::Conflict`]: never a lost update.

mod cache;
#[cfg(feature = "aws")]
mod dynamodb;
mod embedded;
mod name;

use async_trait::async_trait;
use serde::Serialize;

pub use cache::{Resolved, RouteCache};
#[cfg(feature = "aws")]
pub use dynamodb::{DynamoRouteTable, LIVE_REV};
pub use embedded::SqliteRouteTable;
pub use name::{
    MAX_SEGMENTS, RESERVED_PREFIX, RouteName, RouteParseError, candidates, most_specific,
    normalise_host,
};

use crate::modules::ModuleKey;
use crate::runtime::bindings::Secrets;

/// Where a route points right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LivePointer {
    #[serde(serialize_with = "as_display")]
    pub route: RouteName,
    /// The object key of the live module (as stored; parsed when served).
    pub module: String,
    /// The live version number, when the pointer was set by wasmgate.
    pub version: Option<u64>,
    pub updated_at: String,
    pub updated_by: String,
    /// The live version's stored metadata (bindings, no secret values), as
    /// copied onto the pointer by the flip that set it; `None` when the
    /// pointer was changed by hand since (the version record then tells).
    #[serde(skip)]
    pub metadata: Option<serde_json::Value>,
}

/// One deployed version of a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    #[serde(serialize_with = "as_display")]
    pub route: RouteName,
    pub number: u64,
    pub module: String,
    pub created_at: String,
    pub created_by: String,
    /// Deploy metadata (JSON object), kept with the version.
    pub metadata: serde_json::Value,
}

/// A version about to be recorded.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub module: ModuleKey,
    pub actor: String,
    pub metadata: serde_json::Value,
    /// `secret_text` values, stored apart from the version record.
    pub secrets: Secrets,
}

/// Who moves the pointer, and why, for the history.
#[derive(Debug, Clone)]
pub struct ChangeNote {
    pub actor: String,
    /// `deploy`, `rollback`, ...
    pub action: String,
    pub reason: Option<String>,
}

/// One recorded move of a route's live pointer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PointerChange {
    pub at: String,
    pub actor: String,
    pub action: String,
    pub from_version: Option<u64>,
    pub from_module: Option<String>,
    pub to_version: Option<u64>,
    pub to_module: String,
    pub reason: Option<String>,
}

/// Why a route-table operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TableError {
    #[error(
        "conflict: the live pointer of {route} changed since it was read (expected {expected}, found {found}); nothing was changed, read it again and retry"
    )]
    Conflict {
        route: String,
        expected: String,
        found: String,
    },
    #[error("route table unavailable: {0}")]
    Unavailable(String),
    #[error("route table holds bad data: {0}")]
    Corrupt(String),
}

/// Storage of routes, versions and pointer history: SQLite (embedded
/// default) or DynamoDB. Implementations make `flip` atomic and conditional.
#[async_trait]
pub trait RouteTable: Send + Sync + 'static {
    /// The live pointers among `candidates`, in one round trip; routes
    /// without a live pointer are left out.
    async fn lookup(&self, candidates: &[RouteName]) -> Result<Vec<LivePointer>, TableError>;

    /// Every route's live pointer, sorted by route.
    async fn list(&self) -> Result<Vec<LivePointer>, TableError>;

    /// Records version N+1 of `route` (N = its highest version so far). Does
    /// not move the live pointer.
    async fn add_version(
        &self,
        route: &RouteName,
        version: NewVersion,
    ) -> Result<Version, TableError>;

    /// Every version of `route`, oldest first.
    async fn versions(&self, route: &RouteName) -> Result<Vec<Version>, TableError>;

    /// Points `route` at `to`, in one transaction, only if its live pointer
    /// is still `expected` (`None`: the route has no pointer yet), and
    /// records the change. Fails with `Conflict` otherwise, changing nothing.
    async fn flip(
        &self,
        route: &RouteName,
        expected: Option<&LivePointer>,
        to: &Version,
        note: ChangeNote,
    ) -> Result<LivePointer, TableError>;

    /// The `secret_text` values stored with version `version` of `route`.
    async fn secrets(&self, route: &RouteName, version: u64) -> Result<Secrets, TableError>;

    /// Pointer changes of `route`, oldest first.
    async fn history(&self, route: &RouteName) -> Result<Vec<PointerChange>, TableError>;

    /// Where the table is, for messages.
    fn location(&self) -> String;
}

/// The live pointer of exactly `route`, if it has one.
pub async fn live_of(
    table: &dyn RouteTable,
    route: &RouteName,
) -> Result<Option<LivePointer>, TableError> {
    Ok(table
        .lookup(std::slice::from_ref(route))
        .await?
        .into_iter()
        .next())
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn as_display<S: serde::Serializer>(value: &RouteName, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// How a pointer value reads in a conflict message.
fn describe(pointer: Option<(&str, Option<u64>)>) -> String {
    match pointer {
        None => "no live version".to_string(),
        Some((module, Some(v))) => format!("version {v} ({module})"),
        Some((module, None)) => format!("module {module}"),
    }
}
