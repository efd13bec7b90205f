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
#[derive(Debug, Clone, PartialEq, Serialize)]
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
    /// A weighted rollout in progress, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<Split>,
    /// The version whose bindings `metadata` holds (and whose secrets the
    /// server reads): `version`, unless a hand edit made the pointer name
    /// another version's module.
    #[serde(skip)]
    pub bindings_version: Option<u64>,
}

/// A weighted rollout: `percent` of the route's requests go to a candidate
/// version, the rest to the live one. Kept on the live pointer (item / row),
/// so every server reads it with the pointer; ended by a rollback, a
/// promote, or the auto-rollback.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Split {
    /// Names this rollout: the conditional end of one rollout never ends
    /// another that replaced it.
    pub id: String,
    /// The candidate version and its module key.
    pub version: u64,
    pub module: String,
    /// Share of requests sent to the candidate, 0 < percent < 100.
    pub percent: f64,
    /// With it, the hash of this header's value picks the version, so one
    /// client stays on one; without it, each request is drawn at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky_header: Option<String>,
    /// Auto-rollback: past this share of 5xx answers (percent) among the
    /// candidate's requests in `window_secs`, with at least `min_requests`
    /// of them, the split ends on its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    #[serde(default = "default_window")]
    pub window_secs: u64,
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// The candidate's stored metadata (bindings), copied like the live one's.
    #[serde(default)]
    pub metadata: serde_json::Value,
}

/// The auto-rollback window and minimum requests when none are given.
pub const DEFAULT_WINDOW_SECS: u64 = 60;
pub const DEFAULT_MIN_REQUESTS: u64 = 20;

fn default_window() -> u64 {
    DEFAULT_WINDOW_SECS
}

fn default_min_requests() -> u64 {
    DEFAULT_MIN_REQUESTS
}

impl Split {
    /// "20% to v3 (sticky on x-user; auto-rollback past 5% 5xx in 60s)".
    pub fn describe(&self) -> String {
        let mut text = format!("{}% to v{}", self.percent, self.version);
        let mut extras = Vec::new();
        if let Some(header) = &self.sticky_header {
            extras.push(format!("sticky on {header}"));
        }
        if let Some(rate) = self.max_error_rate {
            extras.push(format!(
                "auto-rollback past {rate}% 5xx in {}s (min {} requests)",
                self.window_secs, self.min_requests
            ));
        }
        if !extras.is_empty() {
            text.push_str(&format!(" ({})", extras.join("; ")));
        }
        text
    }
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
    /// The token that reaches this version before it goes live (the
    /// `x-wasmgate-preview` request header): set by a preview deploy,
    /// cleared by the flip that makes the version live.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_token: Option<String>,
}

/// A version about to be recorded.
#[derive(Debug, Clone)]
pub struct NewVersion {
    pub module: ModuleKey,
    pub actor: String,
    pub metadata: serde_json::Value,
    /// `secret_text` values, stored apart from the version record.
    pub secrets: Secrets,
    /// A preview deploy's token (see [`new_preview_token`]); it stops
    /// working when the version goes live.
    pub preview_token: Option<String>,
}

/// Who moves the pointer, and why, for the history.
#[derive(Debug, Clone)]
pub struct ChangeNote {
    pub actor: String,
    /// `deploy`, `rollback`, ...
    pub action: String,
    pub reason: Option<String>,
    /// The version whose module is live, as the caller worked it out from
    /// the version records; recorded as the change's `from_version` in
    /// place of the pointer's own, which a hand edit of `module` alone
    /// leaves naming another version. `None`: the pointer's.
    pub from_version: Option<u64>,
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
    /// is still `expected` (module, version and rollout; `None`: the route
    /// has no pointer yet), ending any rollout, clearing `to`'s preview
    /// token, and records the change. Fails with `Conflict` otherwise,
    /// changing nothing.
    async fn flip(
        &self,
        route: &RouteName,
        expected: Option<&LivePointer>,
        to: &Version,
        note: ChangeNote,
    ) -> Result<LivePointer, TableError>;

    /// Starts, replaces or (with `None`) ends the weighted split of
    /// `route`, only if its live pointer is still `expected` (module,
    /// version and split id), and records the change. Fails with
    /// `Conflict` otherwise, changing nothing.
    async fn set_split(
        &self,
        route: &RouteName,
        expected: &LivePointer,
        split: Option<Split>,
        note: ChangeNote,
    ) -> Result<LivePointer, TableError>;

    /// The versions among `candidates`' whose preview token is `token`, in
    /// one round trip.
    async fn lookup_preview(
        &self,
        candidates: &[RouteName],
        token: &str,
    ) -> Result<Vec<Version>, TableError>;

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

/// A fresh preview token: 128 bits from the OS's random source, as 32 hex
/// digits.
pub fn new_preview_token() -> String {
    random_hex::<16>()
}

/// `N` random bytes from the OS, as hex.
pub fn random_hex<const N: usize>() -> String {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    hex::encode(bytes)
}

/// The current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

fn as_display<S: serde::Serializer>(value: &RouteName, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// Where traffic moves when the split of `current` becomes `split`, as the
/// (from, to) of its history record, each (version, module): a rollout
/// moves it from the live version to the candidate, its end moves it back.
fn split_move(
    current: &LivePointer,
    split: Option<&Split>,
) -> ((Option<u64>, String), (Option<u64>, String)) {
    let live = (current.version, current.module.clone());
    match (split, &current.split) {
        (Some(new), _) => (live, (Some(new.version), new.module.clone())),
        (None, Some(old)) => ((Some(old.version), old.module.clone()), live),
        (None, None) => (live.clone(), live),
    }
}

/// How a pointer with its split reads in a conflict message.
fn describe_split(pointer: Option<&LivePointer>) -> String {
    match pointer {
        None => "no live version".to_string(),
        Some(p) => {
            let base = describe(Some((p.module.as_str(), p.version)));
            match &p.split {
                Some(split) => format!(
                    "{base} with a rollout of {} ({})",
                    split.describe(),
                    split.id
                ),
                None => format!("{base} without a rollout"),
            }
        }
    }
}

/// How a pointer value reads in a conflict message.
fn describe(pointer: Option<(&str, Option<u64>)>) -> String {
    match pointer {
        None => "no live version".to_string(),
        Some((module, Some(v))) => format!("version {v} ({module})"),
        Some((module, None)) => format!("module {module}"),
    }
}
