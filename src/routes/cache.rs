//! `RouteCache`: request (host, path) → live route, cached for the route TTL.
//!
//! A miss asks the table for every candidate route in one round trip and
//! keeps the most specific. Misses ("no route here") are cached too, so a
//! flood of requests for unknown paths does not reach the table. A change
//! made by any process is served within the TTL; errors are never cached.

use std::sync::Arc;
use std::time::Duration;

use super::{LivePointer, RouteTable, TableError, candidates, most_specific, normalise_host};
use crate::modules::CacheOutcome;

/// Most (host, path) entries kept.
const MAX_ENTRIES: u64 = 50_000;

/// The outcome of a lookup.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The most specific live route for the request.
    Found(Arc<LivePointer>),
    /// No route serves this host and path.
    Missing,
}

/// The TTL cache in front of a [`RouteTable`].
#[derive(Clone)]
pub struct RouteCache {
    table: Arc<dyn RouteTable>,
    entries: Option<moka::future::Cache<(String, String), Resolved>>,
}

impl RouteCache {
    /// A cache keeping answers for `ttl` (zero: no caching at all).
    pub fn new(table: Arc<dyn RouteTable>, ttl: Duration) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .time_to_live(ttl)
                .build()
        });
        RouteCache { table, entries }
    }

    /// The route serving `host` + `path`. Fails only when the table cannot
    /// be read (and the answer is not cached).
    pub async fn resolve(
        &self,
        host: Option<&str>,
        path: &str,
    ) -> Result<(Resolved, CacheOutcome), Arc<TableError>> {
        let host = host.map(normalise_host).unwrap_or_default();
        let path = normalise_path(path);
        let Some(entries) = &self.entries else {
            let found = self.fetch(&host, &path).await?;
            return Ok((found, CacheOutcome::Miss));
        };
        let entry = entries
            .entry((host.clone(), path.clone()))
            .or_try_insert_with(self.fetch(&host, &path))
            .await?;
        let outcome = if entry.is_fresh() {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Hit
        };
        Ok((entry.into_value(), outcome))
    }

    async fn fetch(&self, host: &str, path: &str) -> Result<Resolved, TableError> {
        let host = (!host.is_empty()).then_some(host);
        let candidates = candidates(host, path);
        let found = self.table.lookup(&candidates).await?;
        let best = most_specific(&candidates, found.iter().map(|p| (&p.route, p)));
        Ok(match best {
            Some(pointer) => Resolved::Found(Arc::new(pointer.clone())),
            None => Resolved::Missing,
        })
    }
}

/// The path's non-empty segments, as `/a/b` (the cache key and lookup input).
fn normalise_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}
