//! `RouteCache`: request (host, path) → live route, cached for the route TTL.
//!
//! A miss asks the table for every candidate route in one round trip and
//! keeps the most specific. Misses ("no route here") are cached too, so a
//! flood of requests for unknown paths does not reach the table. A change
//! made by any process is served within the TTL; errors are never cached.
//!
//! When the table cannot be reached, the last answer read for a request
//! keeps serving, stale, for up to `WASMGATE_STALE_MAX_MS` after it was
//! read; the table is tried again every second meanwhile (by one request:
//! the others get the stale answer at once). A request with no answer to
//! fall back on fails (503). The fallback is by request path: a path not
//! asked for before the outage is not guessed at from the routes known,
//! since a more specific route this server never read may exist.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{LivePointer, RouteTable, TableError, candidates, most_specific, normalise_host};
use crate::gateway::STALE_RETRY;
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

/// A cached answer: fresh for the TTL, or stale (the table could not be
/// reached) and kept for a short while before the table is tried again.
#[derive(Clone)]
struct Cached {
    resolved: Resolved,
    ttl: Duration,
    stale: bool,
}

impl crate::gateway::OwnTtl for Cached {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// The TTL cache in front of a [`RouteTable`].
#[derive(Clone)]
pub struct RouteCache {
    table: Arc<dyn RouteTable>,
    ttl: Duration,
    entries: Option<moka::future::Cache<(String, String), Cached>>,
    /// The last answer read from the table for each request, and when:
    /// served when the table cannot be reached, until `stale_max` after.
    last_good: Option<moka::future::Cache<(String, String), (Resolved, Instant)>>,
    stale_max: Duration,
    /// Until when the table is taken to be unreachable (after a read
    /// failed): lookups with a stale answer to give skip it meanwhile, so
    /// one request per [`STALE_RETRY`] waits on the table, not one per path.
    outage_until: Arc<std::sync::Mutex<Option<Instant>>>,
    /// Preview lookups by (host, path, token).
    previews: Option<moka::future::Cache<(String, String, String), Resolved>>,
}

/// A preview token's form: 32 lowercase hex digits.
fn is_preview_token(token: &str) -> bool {
    token.len() == 32
        && token
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl RouteCache {
    /// A cache keeping answers for `ttl` (zero: no caching at all).
    pub fn new(table: Arc<dyn RouteTable>, ttl: Duration) -> Self {
        let entries = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES)
                .expire_after(crate::gateway::PerEntryTtl)
                .build()
        });
        let previews = (!ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(MAX_ENTRIES / 10)
                .time_to_live(ttl)
                .build()
        });
        RouteCache {
            table,
            ttl,
            entries,
            last_good: None,
            stale_max: Duration::ZERO,
            outage_until: Default::default(),
            previews,
        }
    }

    /// Serves the last answer read for up to `stale_max` after it was read
    /// when the table cannot be reached (zero: never; needs a TTL).
    pub fn with_stale(mut self, stale_max: Duration) -> Self {
        if !stale_max.is_zero() && self.entries.is_some() {
            self.last_good = Some(
                moka::future::Cache::builder()
                    .max_capacity(MAX_ENTRIES)
                    .time_to_live(stale_max)
                    .build(),
            );
            self.stale_max = stale_max;
        }
        self
    }

    /// The version whose preview token is `token`, on the most specific
    /// route serving `host` + `path` that has one. A malformed token is a
    /// miss without a lookup.
    pub async fn resolve_preview(
        &self,
        host: Option<&str>,
        path: &str,
        token: &str,
    ) -> Result<(Resolved, CacheOutcome), Arc<TableError>> {
        if !is_preview_token(token) {
            return Ok((Resolved::Missing, CacheOutcome::Hit));
        }
        let host = host.map(normalise_host).unwrap_or_default();
        let path = normalise_path(path);
        let fetch = async {
            let host = (!host.is_empty()).then_some(host.as_str());
            let candidates = candidates(host, &path);
            crate::metrics::METRICS.route_table_read();
            let found = self.table.lookup_preview(&candidates, token).await?;
            let best = most_specific(&candidates, found.iter().map(|v| (&v.route, v)));
            Ok::<_, TableError>(match best {
                Some(version) => Resolved::Found(Arc::new(LivePointer {
                    route: version.route.clone(),
                    module: version.module.clone(),
                    version: Some(version.number),
                    updated_at: version.created_at.clone(),
                    updated_by: version.created_by.clone(),
                    metadata: Some(version.metadata.clone()),
                    split: None,
                    bindings_version: Some(version.number),
                })),
                None => Resolved::Missing,
            })
        };
        let Some(previews) = &self.previews else {
            return Ok((fetch.await?, CacheOutcome::Miss));
        };
        let entry = previews
            .entry((host.clone(), path.clone(), token.to_string()))
            .or_try_insert_with(fetch)
            .await?;
        let outcome = if entry.is_fresh() {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Hit
        };
        Ok((entry.into_value(), outcome))
    }

    /// The table behind the cache.
    pub fn table(&self) -> &Arc<dyn RouteTable> {
        &self.table
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
        let key = (host, path);
        let entry = entries
            .entry(key.clone())
            .or_try_insert_with(self.fetch_or_stale(&key))
            .await?;
        let outcome = match entry.value() {
            Cached { stale: true, .. } => CacheOutcome::Stale,
            _ if entry.is_fresh() => CacheOutcome::Miss,
            _ => CacheOutcome::Hit,
        };
        Ok((entry.into_value().resolved, outcome))
    }

    /// Reads the table; when it cannot be reached, the last answer read for
    /// `key` if it is no older than `stale_max`.
    async fn fetch_or_stale(&self, key: &(String, String)) -> Result<Cached, TableError> {
        let in_outage = self
            .outage_until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|until| Instant::now() < until);
        if in_outage && let Some(stale) = self.stale(key).await {
            return Ok(stale);
        }
        match self.fetch(&key.0, &key.1).await {
            Ok(resolved) => {
                *self.outage_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if let Some(last_good) = &self.last_good {
                    last_good
                        .insert(key.clone(), (resolved.clone(), Instant::now()))
                        .await;
                }
                Ok(Cached {
                    resolved,
                    ttl: self.ttl,
                    stale: false,
                })
            }
            Err(TableError::Unavailable(why)) => {
                *self.outage_until.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(Instant::now() + STALE_RETRY);
                match self.stale(key).await {
                    Some(stale) => {
                        tracing::warn!(host = %key.0, path = %key.1, error = %why, "route table unreachable: serving the route as last read");
                        Ok(stale)
                    }
                    None => Err(TableError::Unavailable(why)),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The last answer read for `key`, if it is no older than `stale_max`,
    /// to be kept for [`STALE_RETRY`] at most.
    async fn stale(&self, key: &(String, String)) -> Option<Cached> {
        let (resolved, read_at) = self.last_good.as_ref()?.get(key).await?;
        let left = self.stale_max.saturating_sub(read_at.elapsed());
        if left.is_zero() {
            return None;
        }
        Some(Cached {
            resolved,
            ttl: STALE_RETRY.min(left).min(self.ttl),
            stale: true,
        })
    }

    async fn fetch(&self, host: &str, path: &str) -> Result<Resolved, TableError> {
        let host = (!host.is_empty()).then_some(host);
        let candidates = candidates(host, path);
        crate::metrics::METRICS.route_table_read();
        let found = self.table.lookup(&candidates).await?;
        let best = most_specific(&candidates, found.iter().map(|p| (&p.route, p)));
        Ok(match best {
            Some(pointer) if pointer.metadata.is_some() => {
                Resolved::Found(Arc::new(pointer.clone()))
            }
            Some(pointer) => Resolved::Found(Arc::new(self.set_by_hand(pointer).await?)),
            None => Resolved::Missing,
        })
    }

    /// A pointer whose metadata copy does not belong to it was changed by
    /// hand (or predates bindings): serve the version whose module it names,
    /// the one its `version` says when that matches, else the newest.
    async fn set_by_hand(&self, pointer: &LivePointer) -> Result<LivePointer, TableError> {
        crate::metrics::METRICS.route_table_read();
        let versions = self.table.versions(&pointer.route).await?;
        let matching = versions
            .iter()
            .find(|v| Some(v.number) == pointer.version && v.module == pointer.module)
            .or_else(|| versions.iter().rev().find(|v| v.module == pointer.module));
        let mut pointer = pointer.clone();
        match matching {
            // `version` stays as stored: conditional writes (ending a
            // rollout) compare against it.
            Some(version) => {
                tracing::debug!(route = %pointer.route, version = version.number, "live pointer set by hand: serving the bindings of the version with its module");
                pointer.bindings_version = Some(version.number);
                pointer.metadata = Some(version.metadata.clone());
            }
            None => {
                tracing::warn!(route = %pointer.route, module = %pointer.module, "the live pointer names a module no version was deployed with: serving it without bindings");
                pointer.bindings_version = None;
                pointer.metadata = Some(serde_json::json!({}));
            }
        }
        Ok(pointer)
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::routes::{
        ChangeNote, NewVersion, PointerChange, RouteName, SqliteRouteTable, Version,
    };

    /// The real SQLite table, counting lookups.
    struct Counting {
        inner: SqliteRouteTable,
        lookups: AtomicUsize,
        /// Lookups fail as if the table could not be reached.
        down: std::sync::atomic::AtomicBool,
    }

    #[async_trait]
    impl RouteTable for Counting {
        async fn lookup(&self, candidates: &[RouteName]) -> Result<Vec<LivePointer>, TableError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                return Err(TableError::Unavailable("down for the test".into()));
            }
            self.inner.lookup(candidates).await
        }
        async fn list(&self) -> Result<Vec<LivePointer>, TableError> {
            self.inner.list().await
        }
        async fn add_version(
            &self,
            route: &RouteName,
            version: NewVersion,
        ) -> Result<Version, TableError> {
            self.inner.add_version(route, version).await
        }
        async fn versions(&self, route: &RouteName) -> Result<Vec<Version>, TableError> {
            self.inner.versions(route).await
        }
        async fn flip(
            &self,
            route: &RouteName,
            expected: Option<&LivePointer>,
            to: &Version,
            note: ChangeNote,
        ) -> Result<LivePointer, TableError> {
            self.inner.flip(route, expected, to, note).await
        }
        async fn secrets(
            &self,
            route: &RouteName,
            version: u64,
        ) -> Result<crate::runtime::bindings::Secrets, TableError> {
            self.inner.secrets(route, version).await
        }
        async fn set_split(
            &self,
            route: &RouteName,
            expected: &LivePointer,
            split: Option<crate::routes::Split>,
            note: ChangeNote,
        ) -> Result<LivePointer, TableError> {
            self.inner.set_split(route, expected, split, note).await
        }
        async fn lookup_preview(
            &self,
            candidates: &[RouteName],
            token: &str,
        ) -> Result<Vec<Version>, TableError> {
            self.inner.lookup_preview(candidates, token).await
        }
        async fn history(&self, route: &RouteName) -> Result<Vec<PointerChange>, TableError> {
            self.inner.history(route).await
        }
        fn location(&self) -> String {
            self.inner.location()
        }
    }

    async fn table_with(routes: &[&str]) -> (tempfile::TempDir, Arc<Counting>) {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteRouteTable::open(dir.path().join("r.sqlite3")).unwrap();
        for (i, route) in routes.iter().enumerate() {
            let route = RouteName::parse(route).unwrap();
            let version = inner
                .add_version(
                    &route,
                    NewVersion {
                        module: crate::modules::ModuleKey::for_bytes(&[i as u8]),
                        actor: "t".into(),
                        metadata: serde_json::json!({}),
                        secrets: Default::default(),
                        preview_token: None,
                    },
                )
                .await
                .unwrap();
            let note = ChangeNote {
                actor: "t".into(),
                action: "deploy".into(),
                reason: None,
                from_version: None,
            };
            inner.flip(&route, None, &version, note).await.unwrap();
        }
        let table = Arc::new(Counting {
            inner,
            lookups: AtomicUsize::new(0),
            down: Default::default(),
        });
        (dir, table)
    }

    #[tokio::test]
    async fn one_lookup_per_miss_and_misses_are_cached_too() {
        let (_dir, table) = table_with(&["/a", "/a/b", "h.example/a"]).await;
        let cache = RouteCache::new(table.clone(), Duration::from_secs(60));

        let (found, outcome) = cache
            .resolve(Some("h.example:8080"), "/a/b/c")
            .await
            .unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert!(matches!(found, Resolved::Found(p) if p.route.to_string() == "h.example/a"));
        assert_eq!(
            table.lookups.load(Ordering::SeqCst),
            1,
            "every candidate in one lookup"
        );

        let (found, outcome) = cache.resolve(Some("other"), "/a/b/c").await.unwrap();
        assert!(matches!(found, Resolved::Found(p) if p.route.to_string() == "/a/b"));
        assert_eq!(outcome, CacheOutcome::Miss);

        let (found, _) = cache.resolve(Some("other"), "/nothing/here").await.unwrap();
        assert!(matches!(found, Resolved::Missing));
        let (found, outcome) = cache.resolve(Some("other"), "/nothing/here").await.unwrap();
        assert!(matches!(found, Resolved::Missing));
        assert_eq!(outcome, CacheOutcome::Hit, "a miss is cached");
        assert_eq!(table.lookups.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn answers_expire_after_the_ttl() {
        let (_dir, table) = table_with(&["/a"]).await;
        let cache = RouteCache::new(table.clone(), Duration::from_millis(100));
        cache.resolve(None, "/a").await.unwrap();
        cache.resolve(None, "/a").await.unwrap();
        assert_eq!(table.lookups.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let (_, outcome) = cache.resolve(None, "/a").await.unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        assert_eq!(table.lookups.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_unreachable_table_serves_the_last_answer_for_at_most_stale_max() {
        let (_dir, table) = table_with(&["/a"]).await;
        let cache = RouteCache::new(table.clone(), Duration::from_millis(50))
            .with_stale(Duration::from_millis(600));
        let (_, outcome) = cache.resolve(None, "/a").await.unwrap();
        assert_eq!(outcome, CacheOutcome::Miss);
        table.down.store(true, Ordering::SeqCst);

        tokio::time::sleep(Duration::from_millis(100)).await;
        let (found, outcome) = cache.resolve(None, "/a").await.unwrap();
        assert_eq!(outcome, CacheOutcome::Stale);
        assert!(matches!(found, Resolved::Found(p) if p.route.to_string() == "/a"));
        // Never read: nothing to fall back on.
        assert!(cache.resolve(None, "/b").await.is_err());

        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(
            cache.resolve(None, "/a").await.is_err(),
            "stale for at most stale_max"
        );

        table.down.store(false, Ordering::SeqCst);
        let (_, outcome) = cache.resolve(None, "/a").await.unwrap();
        assert_eq!(outcome, CacheOutcome::Miss, "errors are not cached");
    }
}
