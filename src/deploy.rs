//! Deploy, rollback, history and routes: the operations that change or show
//! what is live, shared by the CLI (and later the upload API).
//!
//! A deploy checks the bytes compile to something wasmgate runs before it
//! writes anything, stores them under their content address (skipping an
//! upload that exists), records version N+1 and flips the live pointer with
//! a conditional write. A rollback is the same flip, to an earlier version.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

use crate::modules::{ArtifactKey, ModuleKey, ModuleStore, Precompiled, PutOutcome, StoreError};
use crate::routes::{
    ChangeNote, LivePointer, NewVersion, PointerChange, RouteName, RouteTable, Split, TableError,
    Version, live_of, new_preview_token, random_hex,
};
use crate::runtime::bindings::{Binding, DeployMetadata, MetadataError};
use crate::runtime::{LibraryModule, LoadError, LoadedModule, WasmEngine};

/// Why a deploy or a rollback was refused or failed. Nothing went live.
///
/// The refusals carry their cause in their message and not as a `source`:
/// printed with its chain (`{:#}`), a refusal says it once.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("refusing to deploy: {0}")]
    Invalid(LoadError),
    #[error("refusing to deploy: {0}")]
    Metadata(MetadataError),
    #[error("refusing to deploy: part {part:?}: {error}")]
    Part { part: String, error: LoadError },
    #[error("refusing to deploy: {0}")]
    Bindings(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("route {route} has no version {wanted}; {have}")]
    NoSuchVersion {
        route: String,
        wanted: u64,
        have: String,
    },
    #[error("route {0} has never been deployed")]
    UnknownRoute(String),
    #[error("nothing to roll back to: {0}")]
    NothingToRollBack(String),
    #[error("version {version} is already live on {route}")]
    AlreadyLive { route: String, version: u64 },
    #[error("refusing to roll out: {0}")]
    BadRollout(String),
    #[error(
        "version {version} of {route} was recorded but did not go live: {source}. Make it live with `wasmgate promote {route} {version}`"
    )]
    RecordedNotLive {
        route: String,
        version: u64,
        source: TableError,
    },
}

impl From<LoadError> for DeployError {
    fn from(error: LoadError) -> Self {
        DeployError::Invalid(error)
    }
}

impl From<MetadataError> for DeployError {
    fn from(error: MetadataError) -> Self {
        DeployError::Metadata(error)
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub route: String,
    /// The object key the module is stored under.
    pub key: String,
    /// `true` when the bytes were written, `false` when already stored.
    pub uploaded: bool,
    pub version: u64,
    pub live: bool,
    /// The ABI the module was recognised as.
    pub abi: String,
    /// The precompiled artifact recorded with the version (its object key),
    /// if one was stored.
    pub artifact: Option<String>,
    /// The parts stored for `wasm_module` bindings.
    pub parts: Vec<StoredPart>,
    /// The version's bindings, as `name:type` (no values).
    pub bindings: Vec<String>,
    /// With a preview deploy: reaches the version with the
    /// `x-wasmgate-preview` header until it goes live.
    pub preview_token: Option<String>,
}

/// A part stored for a `wasm_module` binding.
#[derive(Debug, Clone, Serialize)]
pub struct StoredPart {
    pub name: String,
    pub key: String,
    pub uploaded: bool,
}

/// What a deploy stores: the main module, the parts its `wasm_module`
/// bindings name (by part name), and its metadata.
#[derive(Debug, Clone, Default)]
pub struct DeployBundle {
    pub main: Bytes,
    pub parts: BTreeMap<String, Bytes>,
    pub metadata: DeployMetadata,
}

impl DeployBundle {
    /// A bare module: no bindings.
    pub fn module(main: Bytes) -> Self {
        DeployBundle {
            main,
            ..DeployBundle::default()
        }
    }
}

/// What a rollback or a promote did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    pub route: String,
    pub from_version: Option<u64>,
    pub to_version: u64,
    pub module: String,
    /// The candidate of the rollout this ended, if one was in progress.
    pub ended_rollout: Option<u64>,
}

/// The history actions that move the live pointer (a rollout only splits
/// traffic beside it).
const MOVES: [&str; 3] = ["deploy", "rollback", "promote"];

/// A weighted rollout to start: see [`Split`].
#[derive(Debug, Clone)]
pub struct RolloutPlan {
    pub to: u64,
    pub percent: f64,
    pub sticky_header: Option<String>,
    pub max_error_rate: Option<f64>,
    pub window_secs: u64,
    pub min_requests: u64,
}

impl RolloutPlan {
    fn check(&self) -> Result<(), String> {
        if !(self.percent > 0.0 && self.percent < 100.0) {
            return Err(format!(
                "--percent {} must be above 0 and below 100 (use promote for 100, rollback for 0)",
                self.percent
            ));
        }
        if let Some(header) = &self.sticky_header
            && http::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            return Err(format!("--sticky-header {header:?} is not a header name"));
        }
        if let Some(rate) = self.max_error_rate
            && !(rate > 0.0 && rate < 100.0)
        {
            return Err(format!(
                "--max-error-rate {rate} must be a percentage above 0 and below 100"
            ));
        }
        if !(1..=3600).contains(&self.window_secs) {
            return Err(format!(
                "--window {}s must be between 1s and 1h",
                self.window_secs
            ));
        }
        if self.min_requests == 0 {
            return Err("--min-requests must be at least 1".into());
        }
        Ok(())
    }
}

/// What a rollout did.
#[derive(Debug, Clone, Serialize)]
pub struct RolloutReport {
    pub route: String,
    pub live_version: Option<u64>,
    pub split: Split,
}

/// A route's versions, its live pointer and the pointer's history.
#[derive(Debug, Clone, Serialize)]
pub struct RouteHistory {
    pub route: String,
    pub live: Option<LivePointer>,
    pub versions: Vec<Version>,
    pub changes: Vec<PointerChange>,
}

/// The operations on routes, over any table and store.
#[derive(Clone)]
pub struct Deployer {
    table: Arc<dyn RouteTable>,
    store: Arc<dyn ModuleStore>,
    engine: Arc<WasmEngine>,
}

impl Deployer {
    pub fn new(
        table: Arc<dyn RouteTable>,
        store: Arc<dyn ModuleStore>,
        engine: Arc<WasmEngine>,
    ) -> Self {
        Deployer {
            table,
            store,
            engine,
        }
    }

    /// Deploys `bundle` to `route` and makes it live. Checks everything
    /// before writing anything: the metadata, that the main module and each
    /// part compile to something wasmgate runs, and that the main module's
    /// imports are exactly what its `wasm_module` bindings provide. Fails
    /// with `RecordedNotLive` when another change to the route landed first.
    pub async fn deploy(
        &self,
        route: &RouteName,
        bundle: DeployBundle,
        actor: &str,
    ) -> Result<DeployReport, DeployError> {
        self.deploy_as(route, bundle, actor, false).await
    }

    /// Like [`Deployer::deploy`]; with `preview`, the version is recorded but
    /// the live pointer is left alone: the version is reachable only with
    /// its preview token until it is promoted.
    pub async fn deploy_as(
        &self,
        route: &RouteName,
        bundle: DeployBundle,
        actor: &str,
        preview: bool,
    ) -> Result<DeployReport, DeployError> {
        let DeployBundle {
            main,
            parts,
            metadata,
        } = bundle;
        metadata.check_parts(parts.keys().map(String::as_str))?;
        check_caps(&metadata, self.engine.limits()).map_err(MetadataError::Shape)?;

        let engine = self.engine.clone();
        let checked = main.clone();
        let loaded = tokio::task::spawn_blocking(move || engine.load(&checked))
            .await
            .map_err(|e| LoadError::Compile(format!("the compile task failed: {e}")))??;
        let mut libraries: Vec<(String, Arc<LibraryModule>)> = Vec::new();
        for (name, part) in metadata.module_parts() {
            let engine = self.engine.clone();
            let bytes = parts[part].clone();
            let library = tokio::task::spawn_blocking(move || LibraryModule::load(&engine, &bytes))
                .await
                .map_err(|e| LoadError::Compile(format!("the compile task failed: {e}")))?
                .map_err(|error| DeployError::Part {
                    part: part.to_string(),
                    error,
                })?;
            libraries.push((name.to_string(), Arc::new(library)));
        }
        loaded
            .check_link(&self.engine, &libraries)
            .await
            .map_err(DeployError::Bindings)?;
        if matches!(loaded, LoadedModule::Wagi(_))
            && let Some(binding) = metadata
                .bindings
                .iter()
                .find(|b| matches!(b, Binding::KvNamespace { .. }))
        {
            return Err(DeployError::Bindings(format!(
                "binding {:?} is a kv_namespace, which wasi:keyvalue components use; a WAGI module cannot open it",
                binding.name()
            )));
        }

        let key = ModuleKey::for_bytes(&main);
        let mut stored_parts = Vec::new();
        let mut part_keys = BTreeMap::new();
        for (name, bytes) in parts {
            let part_key = ModuleKey::for_bytes(&bytes);
            let outcome = self.store.put(&part_key, bytes).await?;
            part_keys.insert(name.clone(), part_key.to_string());
            stored_parts.push(StoredPart {
                name,
                key: part_key.to_string(),
                uploaded: outcome == PutOutcome::Uploaded,
            });
        }
        let stored = self.store.put(&key, main).await?;
        let artifact = self.store_artifact(&key, &loaded).await;
        let (mut spec, secrets) = metadata.into_stored(&part_keys);
        spec.precompiled.extend(artifact.clone());
        spec.abi = Some(loaded.abi().to_string());
        let bindings = spec.bindings.iter().map(|b| b.label()).collect();
        let expected = live_of(self.table.as_ref(), route).await?;
        let version = self
            .table
            .add_version(
                route,
                NewVersion {
                    module: key,
                    actor: actor.to_string(),
                    metadata: spec.to_stored(),
                    secrets,
                    preview_token: preview.then(new_preview_token),
                },
            )
            .await?;
        let report = DeployReport {
            route: route.to_string(),
            key: key.to_string(),
            uploaded: stored == PutOutcome::Uploaded,
            version: version.number,
            live: !preview,
            abi: loaded.abi().to_string(),
            artifact: artifact.map(|a| a.key),
            parts: stored_parts,
            bindings,
            preview_token: version.preview_token.clone(),
        };
        if preview {
            return Ok(report);
        }
        let note = ChangeNote {
            actor: actor.to_string(),
            action: "deploy".into(),
            reason: expected
                .as_ref()
                .and_then(|l| l.split.as_ref())
                .map(|s| format!("ended the rollout of {}", s.describe())),
            from_version: None,
        };
        self.table
            .flip(route, expected.as_ref(), &version, note)
            .await
            .map_err(|source| DeployError::RecordedNotLive {
                route: route.to_string(),
                version: version.number,
                source,
            })?;
        Ok(report)
    }

    /// Stores the code the deploy's check compiled as the module's artifact
    /// for this engine ([`ArtifactKey`]) and returns its record. Best
    /// effort: without an artifact, cold servers compile the module, which
    /// is slower but not wrong, so a failure here is logged and the deploy
    /// goes on without one.
    async fn store_artifact(&self, key: &ModuleKey, loaded: &LoadedModule) -> Option<Precompiled> {
        let artifact = ArtifactKey::new(*key, self.engine.artifact_id()?);
        match self.put_artifact(&artifact, loaded).await {
            Ok(record) => Some(record),
            Err(reason) => {
                tracing::warn!(%artifact, %reason, "no precompiled artifact for this version; servers will compile the module");
                None
            }
        }
    }

    async fn put_artifact(
        &self,
        artifact: &ArtifactKey,
        loaded: &LoadedModule,
    ) -> Result<Precompiled, String> {
        let bytes = Bytes::from(loaded.serialize()?);
        let outcome = self.store.put_artifact(artifact, bytes.clone()).await;
        match outcome.map_err(|e| e.to_string())? {
            PutOutcome::Uploaded => {}
            // One engine id compiles one module to the same bytes every
            // time, so a sound artifact already stored is exactly ours. One
            // that is not is never recorded, and so never loaded.
            PutOutcome::AlreadyStored => {
                let stored = self
                    .store
                    .get_artifact(artifact, bytes.len() as u64)
                    .await
                    .map_err(|e| format!("the artifact already stored is unreadable: {e}"))?;
                if stored != bytes {
                    return Err("the artifact already stored differs from this compile".into());
                }
            }
        }
        Ok(Precompiled::of(artifact, &bytes))
    }

    /// Makes an earlier version live again: `to`, or by default the version
    /// that was live before the current one. During a rollout, a rollback
    /// without `to` ends the rollout and leaves the live version as it is.
    /// Fails when there is no such version, when it is already live, or on
    /// a concurrent change.
    pub async fn rollback(
        &self,
        route: &RouteName,
        to: Option<u64>,
        actor: &str,
    ) -> Result<RollbackReport, DeployError> {
        let live = live_of(self.table.as_ref(), route).await?;
        if to.is_none()
            && let Some(current) = &live
            && let Some(split) = &current.split
        {
            // Its own action: ending a split moves no pointer, so a later
            // rollback must not take it for one (and go to the candidate).
            let note = ChangeNote {
                actor: actor.to_string(),
                action: "end-rollout".into(),
                reason: Some(format!(
                    "rollback: ended the rollout of {}",
                    split.describe()
                )),
                from_version: None,
            };
            self.table.set_split(route, current, None, note).await?;
            return Ok(RollbackReport {
                route: route.to_string(),
                from_version: current.version,
                to_version: current.version.unwrap_or_default(),
                module: current.module.clone(),
                ended_rollout: Some(split.version),
            });
        }
        self.flip_to(route, live, to, actor, "rollback").await
    }

    /// Makes version `number` live, ending any rollout: the move after a
    /// preview or a rollout of it.
    pub async fn promote(
        &self,
        route: &RouteName,
        number: u64,
        actor: &str,
    ) -> Result<RollbackReport, DeployError> {
        let live = live_of(self.table.as_ref(), route).await?;
        self.flip_to(route, live, Some(number), actor, "promote")
            .await
    }

    async fn flip_to(
        &self,
        route: &RouteName,
        live: Option<LivePointer>,
        to: Option<u64>,
        actor: &str,
        action: &str,
    ) -> Result<RollbackReport, DeployError> {
        let versions = self.table.versions(route).await?;
        if versions.is_empty() && live.is_none() {
            return Err(DeployError::UnknownRoute(route.to_string()));
        }
        // After a hand edit of the pointer's `module` alone, its `version`
        // names another version: go by the module that is live.
        let from = live.as_ref().and_then(|l| live_version(l, &versions));
        let wanted = match to {
            Some(n) => n,
            None => self.previous_version(route, live.as_ref(), from).await?,
        };
        let target = versions
            .iter()
            .find(|v| v.number == wanted)
            .ok_or_else(|| DeployError::NoSuchVersion {
                route: route.to_string(),
                wanted,
                have: describe_versions(&versions),
            })?;
        if let Some(current) = &live
            && from == Some(wanted)
            && current.module == target.module
            && current.split.is_none()
        {
            return Err(DeployError::AlreadyLive {
                route: route.to_string(),
                version: wanted,
            });
        }
        let ended_rollout = live
            .as_ref()
            .and_then(|l| l.split.as_ref())
            .map(|s| s.version);
        let note = ChangeNote {
            actor: actor.to_string(),
            action: action.into(),
            reason: live
                .as_ref()
                .and_then(|l| l.split.as_ref())
                .map(|s| format!("ended the rollout of {}", s.describe())),
            from_version: from,
        };
        self.table.flip(route, live.as_ref(), target, note).await?;
        Ok(RollbackReport {
            route: route.to_string(),
            from_version: from.or(live.and_then(|l| l.version)),
            to_version: wanted,
            module: target.module.clone(),
            ended_rollout,
        })
    }

    /// Sends `plan.percent`% of `route`'s requests to version `plan.to`, the
    /// rest to the live version, replacing any rollout in progress. The
    /// split is a conditional write on the live pointer.
    pub async fn rollout(
        &self,
        route: &RouteName,
        plan: RolloutPlan,
        actor: &str,
    ) -> Result<RolloutReport, DeployError> {
        plan.check().map_err(DeployError::BadRollout)?;
        let live = live_of(self.table.as_ref(), route).await?.ok_or_else(|| {
            DeployError::BadRollout(format!(
                "{route} has no live version to split traffic with; deploy one first"
            ))
        })?;
        let versions = self.table.versions(route).await?;
        let target = versions
            .iter()
            .find(|v| v.number == plan.to)
            .ok_or_else(|| DeployError::NoSuchVersion {
                route: route.to_string(),
                wanted: plan.to,
                have: describe_versions(&versions),
            })?;
        if live.version == Some(plan.to) && live.module == target.module {
            return Err(DeployError::BadRollout(format!(
                "version {} is the live version of {route}; roll out another one",
                plan.to
            )));
        }
        let split = Split {
            id: random_hex::<8>(),
            version: target.number,
            module: target.module.clone(),
            percent: plan.percent,
            sticky_header: plan.sticky_header.map(|h| h.to_ascii_lowercase()),
            max_error_rate: plan.max_error_rate,
            window_secs: plan.window_secs,
            min_requests: plan.min_requests,
            metadata: target.metadata.clone(),
        };
        let note = ChangeNote {
            actor: actor.to_string(),
            action: "rollout".into(),
            reason: Some(split.describe()),
            from_version: None,
        };
        let pointer = self
            .table
            .set_split(route, &live, Some(split.clone()), note)
            .await?;
        Ok(RolloutReport {
            route: route.to_string(),
            live_version: pointer.version,
            split,
        })
    }

    /// The version that was live before the current one: where the most
    /// recent change that made the current pointer live came from.
    async fn previous_version(
        &self,
        route: &RouteName,
        live: Option<&LivePointer>,
        live_version: Option<u64>,
    ) -> Result<u64, DeployError> {
        let Some(live) = live else {
            return Err(DeployError::NothingToRollBack(format!(
                "{route} has no live version"
            )));
        };
        let changes = self.table.history(route).await?;
        changes
            .iter()
            .rev()
            .filter(|c| MOVES.contains(&c.action.as_str()))
            .find(|c| c.to_module == live.module && c.to_version == live_version)
            .and_then(|c| c.from_version)
            .ok_or_else(|| {
                DeployError::NothingToRollBack(format!(
                    "no recorded change made the current pointer of {route} live (it was set by hand, or \
                     this is the first version); pick a version with --to N (see `wasmgate history {route}`)"
                ))
            })
    }
}

/// A version may ask for less than the server's limits, never more: each
/// of its limits above the server's cap is refused, the cap named.
fn check_caps(
    metadata: &DeployMetadata,
    limits: &crate::runtime::RuntimeLimits,
) -> Result<(), String> {
    let memory_cap = (limits.memory_limit_bytes >> 20) as u64;
    if let Some(mb) = metadata.memory_limit_mb
        && mb > memory_cap
    {
        return Err(format!(
            "asks for memory_limit_mb {mb}, above the server's cap of {memory_cap} (WASMGATE_MEMORY_LIMIT_MB)"
        ));
    }
    let timeout_cap = limits.timeout.as_millis() as u64;
    if let Some(ms) = metadata.timeout_ms
        && ms > timeout_cap
    {
        return Err(format!(
            "asks for timeout_ms {ms}, above the server's cap of {timeout_cap} (WASMGATE_TIMEOUT_MS)"
        ));
    }
    if let Some(bytes) = metadata.max_body_bytes
        && bytes > limits.max_body_bytes
    {
        return Err(format!(
            "asks for max_body_bytes {bytes}, above the server's cap of {} (WASMGATE_MAX_BODY_BYTES)",
            limits.max_body_bytes
        ));
    }
    Ok(())
}

/// The version whose module is live: the pointer's `version` when that
/// version holds the live module; after a hand edit of `module` alone (the
/// README's `update-item`), the newest version that holds it; `None` when
/// no version does.
pub fn live_version(live: &LivePointer, versions: &[Version]) -> Option<u64> {
    if let Some(number) = live.version
        && versions
            .iter()
            .any(|v| v.number == number && v.module == live.module)
    {
        return Some(number);
    }
    versions
        .iter()
        .filter(|v| v.module == live.module)
        .map(|v| v.number)
        .max()
}

/// Versions, live pointer and pointer history of `route`: a read, so it
/// needs no engine. Fails when the route has never been deployed.
pub async fn route_history(
    table: &dyn RouteTable,
    route: &RouteName,
) -> Result<RouteHistory, DeployError> {
    let live = live_of(table, route).await?;
    let versions = table.versions(route).await?;
    let changes = table.history(route).await?;
    if live.is_none() && versions.is_empty() {
        return Err(DeployError::UnknownRoute(route.to_string()));
    }
    Ok(RouteHistory {
        route: route.to_string(),
        live,
        versions,
        changes,
    })
}

/// "versions: 1-6" or "versions: 1, 3, 4" or "it has no versions".
fn describe_versions(versions: &[Version]) -> String {
    let numbers: Vec<u64> = versions.iter().map(|v| v.number).collect();
    match (numbers.first(), numbers.last()) {
        (None, _) | (_, None) => "it has no versions".to_string(),
        (Some(first), Some(last)) if (last - first + 1) as usize == numbers.len() => {
            if first == last {
                format!("versions: {first}")
            } else {
                format!("versions: {first}-{last}")
            }
        }
        _ => format!(
            "versions: {}",
            numbers
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}
