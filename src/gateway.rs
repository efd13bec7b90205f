//! `Gateway`: the one service every front calls. It resolves the route,
//! gets the compiled module, runs a fresh instance and returns its response:
//!
//! ```text
//! front ─▶ Gateway::handle ─▶ RouteCache ─▶ ModuleCache ─▶ runtime ─▶ response
//!                                 │              │
//!                             RouteTable     ModuleStore
//! ```
//!
//! Every request is answered, never dropped: failures become responses in
//! `error.rs`. One log line per request records what happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::{HeaderValue, Request, Response};

use crate::body::Body;
use crate::error::GatewayError;
use crate::kv::KvStore;
use crate::modules::{CacheOutcome, ModuleCache, ModuleKey, ModuleStore};
use crate::routes::{ChangeNote, LivePointer, Resolved, RouteCache, RouteTable, Split, TableError};
use crate::runtime::bindings::{Binding, SecretRef, VersionSpec, environment};
use crate::runtime::outbound::OutboundPolicy;
use crate::runtime::{Grants, GuestError, Invocation, KvGrants, LoadedModule, WasmEngine};
use crate::secrets::{SECRET_TTL, SecretResolver};

/// The header carrying the request id, read from the client and echoed back.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The header whose value (a version's preview token) reaches that version.
pub const PREVIEW_HEADER: &str = "x-wasmgate-preview";

/// Longest request line (method, path and query, version) served: 414 past it.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Settings of the gateway itself.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// How long a route lookup (or a miss) is cached.
    pub route_ttl: Duration,
    /// Most compiled modules kept warm.
    pub module_cache_capacity: u64,
    /// How long routes and readied versions keep serving past their time
    /// while a backend cannot be reached.
    pub stale_max: Duration,
    pub limits: RequestLimits,
    /// Write one CloudWatch EMF line per request (on Lambda).
    pub emf: Option<crate::metrics::EmfSettings>,
}

/// Limits on what a request may send, checked before any work is done.
#[derive(Debug, Clone, Copy)]
pub struct RequestLimits {
    /// Largest body, unless the version says otherwise (413).
    pub max_body_bytes: u64,
    /// Largest total of header names and values (431).
    pub max_header_bytes: usize,
    /// Most headers (431).
    pub max_headers: usize,
}

impl Default for RequestLimits {
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: crate::config::DEFAULT_MAX_BODY_BYTES,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
        }
    }
}

impl RequestLimits {
    /// The first limit the request's head breaks, if any.
    pub fn check_head<B>(&self, request: &Request<B>) -> Result<(), GatewayError> {
        // METHOD SP request-target SP HTTP/1.1
        let target = request
            .uri()
            .path_and_query()
            .map_or(1, |pq| pq.as_str().len());
        let line = request.method().as_str().len() + target + 10;
        if line > MAX_REQUEST_LINE {
            return Err(GatewayError::UriTooLong(MAX_REQUEST_LINE));
        }
        let headers = request.headers();
        if headers.len() > self.max_headers {
            return Err(GatewayError::HeadersTooLarge(format!(
                "{} headers; at most {} are accepted",
                headers.len(),
                self.max_headers
            )));
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if bytes > self.max_header_bytes {
            return Err(GatewayError::HeadersTooLarge(format!(
                "{bytes} bytes of headers; at most {} are accepted",
                self.max_header_bytes
            )));
        }
        Ok(())
    }
}

/// Facts only the front knows about a request.
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    /// The front's request id (e.g. Lambda's); else `x-request-id`, else generated.
    pub request_id: Option<String>,
    /// Whether the client connected over HTTPS.
    pub https: bool,
    /// A deadline earlier than the configured timeout (e.g. Lambda's remaining time).
    pub deadline: Option<Instant>,
    /// The client's address (the peer, or what the Lambda event says).
    pub remote_addr: Option<String>,
    /// How the request's host is checked: see [`HostPolicy`].
    pub host_policy: HostPolicy,
}

/// How strictly a front's requests must name their host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HostPolicy {
    /// HTTP/1.1 on the listener: exactly one valid `Host` (RFC 9112 §3.2),
    /// else 400.
    #[default]
    Required,
    /// HTTP/1.0 on the listener: at most one valid `Host`; none goes to the
    /// any-host routes (HAProxy's default health check sends none).
    Optional,
    /// Lambda events: the trigger (API Gateway, an ALB) has vetted the
    /// client's `Host`, and some events carry none (an ALB health check,
    /// the console's test event): whatever it is, or none, the routes
    /// decide (a value that names no route host reaches the any-host
    /// routes).
    Trigger,
}

/// A version ready to run: its compiled module and what it is granted.
struct Deployment {
    module: Arc<LoadedModule>,
    grants: Grants,
    /// When it was readied: it is readied again after [`SECRET_TTL`].
    readied: Instant,
}

/// A cache value that carries its own time to live.
pub(crate) trait OwnTtl {
    fn ttl(&self) -> Duration;
}

/// A readied version as cached: fresh for [`SECRET_TTL`], or kept stale
/// for a short while because readying it again failed for a backend.
#[derive(Clone)]
struct Ready {
    deployment: Arc<Deployment>,
    ttl: Duration,
    stale: bool,
}

impl OwnTtl for Ready {
    fn ttl(&self) -> Duration {
        self.ttl
    }
}

/// Expires each entry after its own [`OwnTtl::ttl`].
pub(crate) struct PerEntryTtl;

impl<K, V: OwnTtl> moka::Expiry<K, V> for PerEntryTtl {
    fn expire_after_create(&self, _key: &K, value: &V, _now: Instant) -> Option<Duration> {
        Some(value.ttl())
    }
}

/// How often a backend is tried again while a stale value is served.
pub(crate) const STALE_RETRY: Duration = Duration::from_secs(1);

/// Which deployment a pointer serves: route, the version whose bindings it
/// has, module key.
type DeploymentKey = (String, Option<u64>, String);

/// Route table + module cache + engine: everything a request needs.
pub struct Gateway {
    routes: RouteCache,
    modules: ModuleCache,
    /// Versions ready to run, kept for [`SECRET_TTL`] so that secrets read
    /// by reference are read again after it.
    deployments: moka::future::Cache<DeploymentKey, Ready>,
    /// The last readied form of each version, served for up to
    /// `stale_max` past [`SECRET_TTL`] when readying it again fails for a
    /// backend's reasons.
    last_ready: moka::future::Cache<DeploymentKey, Arc<Deployment>>,
    stale_max: Duration,
    limits: RequestLimits,
    emf: Option<crate::metrics::EmfSettings>,
    secrets: Arc<dyn SecretResolver>,
    kv: Arc<dyn KvStore>,
    rollouts: crate::rollout::RolloutMonitor,
    engine: Arc<WasmEngine>,
    started: std::time::SystemTime,
    /// Resolves the names of guests' outbound requests.
    resolver: crate::runtime::outbound::Resolver,
}

impl Gateway {
    pub fn new(
        table: Arc<dyn RouteTable>,
        store: Arc<dyn ModuleStore>,
        kv: Arc<dyn KvStore>,
        engine: Arc<WasmEngine>,
        secrets: Arc<dyn SecretResolver>,
        options: GatewayOptions,
    ) -> Self {
        let capacity = options.module_cache_capacity.saturating_mul(4);
        Gateway {
            routes: RouteCache::new(table, options.route_ttl).with_stale(options.stale_max),
            modules: ModuleCache::new(store, engine.clone(), options.module_cache_capacity),
            deployments: moka::future::Cache::builder()
                .max_capacity(capacity)
                .expire_after(PerEntryTtl)
                .build(),
            last_ready: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(SECRET_TTL + options.stale_max)
                .build(),
            stale_max: options.stale_max,
            limits: options.limits,
            emf: options.emf,
            secrets,
            kv,
            rollouts: Default::default(),
            engine,
            started: std::time::SystemTime::now(),
            resolver: Default::default(),
        }
    }

    /// For tests only: resolves the names of guests' outbound requests with
    /// `resolver` instead of the system's (so that a test name can stand
    /// for 127.0.0.1, or change its answer). Not a setting.
    #[doc(hidden)]
    pub fn with_outbound_resolver(mut self, resolver: crate::runtime::outbound::Resolver) -> Self {
        self.resolver = resolver;
        self
    }

    /// Writes one CloudWatch EMF line per request to stdout (on Lambda).
    pub fn with_emf(mut self, emf: crate::metrics::EmfSettings) -> Self {
        self.emf = Some(emf);
        self
    }

    /// The input limits requests are held to.
    pub fn limits(&self) -> RequestLimits {
        self.limits
    }

    /// The Prometheus text of this process's metrics.
    pub fn prometheus_metrics(&self) -> String {
        crate::metrics::METRICS.prometheus(&crate::metrics::Gauges {
            instances_running: self.engine.instances_running(),
            modules_cached: self.modules.len(),
            start_time_seconds: self
                .started
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        })
    }

    /// Ends the rollout on `live` after its candidate failed too often: a
    /// write conditional on the rollout's id, so of the servers that trip
    /// together exactly one lands it; the others find it ended.
    fn end_rollout(&self, live: Arc<LivePointer>, reason: String) {
        let table = self.routes.table().clone();
        tracing::warn!(route = %live.route, %reason, "ending a rollout");
        tokio::spawn(async move {
            let note = ChangeNote {
                actor: "wasmgate (auto-rollback)".into(),
                action: "auto-rollback".into(),
                reason: Some(reason),
                from_version: None,
            };
            match table.set_split(&live.route, &live, None, note).await {
                Ok(_) => tracing::warn!(route = %live.route, "rollout ended by auto-rollback"),
                Err(TableError::Conflict { .. }) => {
                    tracing::info!(route = %live.route, "rollout already ended or changed elsewhere")
                }
                Err(error) => {
                    tracing::error!(route = %live.route, %error, "could not end the rollout; this server sends it no more traffic")
                }
            }
        });
    }

    /// Serves one request. Always answers: errors become plain-text responses.
    pub async fn handle(&self, request: Request<Body>, info: RequestInfo) -> Response<Body> {
        let started = Instant::now();
        let request_id = info
            .request_id
            .clone()
            .or_else(|| {
                request
                    .headers()
                    .get(REQUEST_ID_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty() && v.len() <= 128)
                    .map(str::to_string)
            })
            .unwrap_or_else(new_request_id);
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let mut trace = Trace::default();

        let served = match self.limits.check_head(&request) {
            Ok(()) => self.serve(request, &info, &request_id, &mut trace).await,
            Err(error) => Err(error),
        };
        let mut response = match served {
            Ok(response) => response,
            Err(error) => {
                if error.is_limit() {
                    crate::metrics::METRICS.limit_refused();
                }
                trace.host_fault = error.is_host_fault();
                if error.status().is_server_error() {
                    tracing::warn!(request_id = %request_id, error = %error, "request failed");
                }
                error.into_response(&request_id)
            }
        };
        if let Ok(value) = HeaderValue::from_str(&request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
        if let Some((live, split)) = &trace.rollout
            && !trace.host_fault
            && let Some(reason) = self
                .rollouts
                .record(split, response.status().is_server_error())
        {
            self.end_rollout(live.clone(), reason);
        }
        let sample = crate::metrics::RequestSample {
            status: response.status().as_u16(),
            duration: started.elapsed(),
            route_cache: trace.route_cache,
            module_cache: trace.module_cache,
        };
        let cold_start = crate::metrics::METRICS.request(&sample);
        if let Some(emf) = &self.emf {
            let line = crate::metrics::emf_line(
                emf,
                &sample,
                cold_start,
                &request_id,
                trace.route.as_deref(),
            );
            // One write of a whole line: lines of concurrent requests
            // (and log lines) never interleave.
            use std::io::Write as _;
            let _ = std::io::stdout()
                .lock()
                .write_all(format!("{line}\n").as_bytes());
        }
        tracing::info!(
            target: "wasmgate::request",
            request_id = %request_id,
            method = %method,
            path = %path,
            route = trace.route.as_deref().unwrap_or("-"),
            version = trace.version,
            module = trace.module.as_deref().unwrap_or("-"),
            status = response.status().as_u16(),
            // Whole microseconds: 0.083, not 0.08247399999999999.
            duration_ms = sample.duration.as_micros() as f64 / 1000.0,
            rollout = if trace.rollout.is_some() { "candidate" } else { "-" },
            route_cache = trace.route_cache.map(|c| c.as_str()).unwrap_or("-"),
            module_cache = trace.module_cache.map(|c| c.as_str()).unwrap_or("-"),
            "request"
        );
        response
    }

    async fn serve(
        &self,
        request: Request<Body>,
        info: &RequestInfo,
        request_id: &str,
        trace: &mut Trace,
    ) -> Result<Response<Body>, GatewayError> {
        let started = Instant::now();
        let timeout_deadline = started + self.engine.limits().timeout;
        let deadline = info
            .deadline
            .map_or(timeout_deadline, |d| d.min(timeout_deadline));
        let budget = deadline.saturating_duration_since(started);
        // The lookup, fetch and compile count against the deadline too: on
        // Lambda an answer must leave before the invocation ends.
        let (pointer, deployment, request) = tokio::time::timeout_at(
            deadline.into(),
            self.prepare(request, info.host_policy, trace),
        )
        .await
        .map_err(|_| GatewayError::Guest(GuestError::Timeout(budget)))??;
        // The version's own limits, never above the server's.
        let grants = &deployment.grants;
        let (deadline, budget) = match grants.timeout {
            Some(timeout) if started + timeout < deadline => (started + timeout, timeout),
            _ => (deadline, budget),
        };
        let memory_limit = grants
            .memory_limit_bytes
            .map_or(self.engine.limits().memory_limit_bytes, |m| {
                m.min(self.engine.limits().memory_limit_bytes)
            });
        let max_body = grants
            .max_body_bytes
            .map_or(self.limits.max_body_bytes, |m| {
                m.min(self.limits.max_body_bytes)
            });
        let too_large = || GatewayError::Guest(GuestError::PayloadTooLarge(max_body as usize));
        let watch = Arc::new(crate::body::BodyWatch::default());
        let request = request.map(|body| crate::body::limited(body, max_body, watch.clone()));
        // Before the guest takes an instance slot, the client shows it is
        // sending: a small body is read whole, a larger or chunked one to
        // its first piece.
        let request = match tokio::time::timeout_at(deadline.into(), pre_read(request)).await {
            Ok(Ok(request)) => request,
            Ok(Err(())) if watch.too_large() => return Err(too_large()),
            Ok(Err(())) if watch.too_slow() => {
                return Err(GatewayError::Guest(GuestError::RequestTimeout));
            }
            Ok(Err(())) => {
                return Err(GatewayError::BadRequest(
                    "the request body is malformed or ended early".into(),
                ));
            }
            Err(_) => return Err(GatewayError::Guest(GuestError::RequestTimeout)),
        };
        let invocation = Invocation {
            request_id: request_id.to_string(),
            deadline,
            budget,
            https: info.https,
            route: pointer.route.to_string(),
            route_path: pointer.route.prefix().to_string(),
            version: pointer.version,
            remote_addr: info.remote_addr.clone(),
            max_body_bytes: max_body,
            memory_limit_bytes: memory_limit,
        };
        let answer = deployment
            .module
            .run(&self.engine, request, &invocation, &deployment.grants)
            .await;
        // However the guest took the failed read, the client sent too much.
        if watch.too_large() {
            return Err(too_large());
        }
        // A body that failed on the way (bad chunked framing, cut short)
        // is the client's error, even if the guest took it for the end.
        if watch.broken() {
            drop(answer);
            return Err(GatewayError::BadRequest(
                "the request body is malformed or ended early".into(),
            ));
        }
        if watch.too_slow() {
            drop(answer);
            return Err(GatewayError::Guest(GuestError::RequestTimeout));
        }
        Ok(answer?)
    }

    /// Finds the route and the compiled module for `request`.
    async fn prepare(
        &self,
        request: Request<Body>,
        host_policy: HostPolicy,
        trace: &mut Trace,
    ) -> Result<(Arc<LivePointer>, Arc<Deployment>, Request<Body>), GatewayError> {
        let host = request_host(&request, host_policy)?;

        // The preview token reaches a version on purpose only; the guest
        // never sees it.
        let mut request = request;
        let preview = request.headers_mut().remove(PREVIEW_HEADER);
        let (resolved, route_cache) = match &preview {
            Some(token) => self
                .routes
                .resolve_preview(
                    host.as_deref(),
                    request.uri().path(),
                    token.to_str().unwrap_or(""),
                )
                .await
                .map_err(GatewayError::Table)?,
            None => self
                .routes
                .resolve(host.as_deref(), request.uri().path())
                .await
                .map_err(GatewayError::Table)?,
        };
        trace.route_cache = Some(route_cache);
        let mut pointer = match resolved {
            Resolved::Found(pointer) => pointer,
            Resolved::Missing if preview.is_some() => {
                return Err(GatewayError::NoRoute(format!(
                    "{} with this preview token",
                    request.uri().path()
                )));
            }
            Resolved::Missing => {
                return Err(GatewayError::NoRoute(request.uri().path().to_string()));
            }
        };
        if let Some(split) = &pointer.split
            && !self.rollouts.tripped(&split.id)
            && crate::rollout::to_candidate(split, request.headers())
        {
            trace.rollout = Some((pointer.clone(), split.clone()));
            pointer = Arc::new(LivePointer {
                module: split.module.clone(),
                version: Some(split.version),
                metadata: Some(split.metadata.clone()),
                split: None,
                bindings_version: Some(split.version),
                ..(*pointer).clone()
            });
        }
        trace.route = Some(pointer.route.to_string());
        trace.version = pointer.version;
        trace.module = Some(pointer.module.clone());

        // A declared body over the version's limit is refused before its
        // module is fetched or compiled, and before the body is read.
        let max_body = pointer
            .metadata
            .as_ref()
            .and_then(|m| m.get("max_body_bytes"))
            .and_then(serde_json::Value::as_u64)
            .map_or(self.limits.max_body_bytes, |m| {
                m.min(self.limits.max_body_bytes)
            });
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max_body) {
            return Err(GatewayError::Guest(GuestError::PayloadTooLarge(
                max_body as usize,
            )));
        }

        let id: DeploymentKey = (
            pointer.route.to_string(),
            pointer.bindings_version,
            pointer.module.clone(),
        );
        if let Some(ready) = self.deployments.get(&id).await {
            trace.module_cache = Some(if ready.stale {
                CacheOutcome::Stale
            } else {
                CacheOutcome::Hit
            });
            return Ok((pointer, ready.deployment, request));
        }
        // Concurrent cold requests for one version share one readying: one
        // read of its secrets, not one per request.
        let compiled_here = AtomicBool::new(false);
        let ready = self
            .deployments
            .entry(id.clone())
            .or_try_insert_with(async {
                match self.deploy(&pointer).await {
                    Ok((deployment, outcome)) => {
                        compiled_here.store(outcome == CacheOutcome::Miss, Ordering::Relaxed);
                        self.last_ready.insert(id.clone(), deployment.clone()).await;
                        Ok(Ready {
                            deployment,
                            ttl: SECRET_TTL,
                            stale: false,
                        })
                    }
                    Err(error) if error.is_host_fault() => {
                        self.stale_deployment(&id, &error).await.ok_or(error)
                    }
                    Err(error) => Err(error),
                }
            })
            .await
            .map_err(|error| (*error).clone())?
            .into_value();
        trace.module_cache = Some(if ready.stale {
            CacheOutcome::Stale
        } else if compiled_here.load(Ordering::Relaxed) {
            CacheOutcome::Miss
        } else {
            CacheOutcome::Hit
        });
        Ok((pointer, ready.deployment, request))
    }

    /// The last readied form of `id`, when readying it again failed for a
    /// backend's reasons and it is no more than `stale_max` past its time:
    /// cached for [`STALE_RETRY`], after which the backend is tried again.
    async fn stale_deployment(&self, id: &DeploymentKey, error: &GatewayError) -> Option<Ready> {
        let deployment = self.last_ready.get(id).await?;
        let left = (SECRET_TTL + self.stale_max).saturating_sub(deployment.readied.elapsed());
        if left.is_zero() {
            return None;
        }
        tracing::warn!(route = %id.0, module = %id.2, %error, stale_for_at_most_ms = left.as_millis() as u64, "serving the version as last readied: a backend is unreachable");
        Some(Ready {
            deployment,
            ttl: STALE_RETRY.min(left),
            stale: true,
        })
    }

    /// Readies the version `pointer` serves: its main module, the modules
    /// its `wasm_module` bindings name, and its environment (secrets read).
    async fn deploy(
        &self,
        pointer: &LivePointer,
    ) -> Result<(Arc<Deployment>, CacheOutcome), GatewayError> {
        let route = pointer.route.to_string();
        let bad_pointer = |key: &str| GatewayError::BadPointer {
            route: route.clone(),
            key: key.to_string(),
        };
        let spec = match &pointer.metadata {
            Some(metadata) => VersionSpec::from_stored(metadata).map_err(|e| {
                GatewayError::Table(Arc::new(TableError::Corrupt(format!("{route}: {e}"))))
            })?,
            None => VersionSpec::default(),
        };
        let key = ModuleKey::parse(&pointer.module).map_err(|_| bad_pointer(&pointer.module))?;
        let (module, outcome) = self
            .modules
            .get(&key, &spec.precompiled)
            .await
            .map_err(GatewayError::Module)?;
        let mut modules = Vec::new();
        for (name, part) in spec.modules() {
            let key = ModuleKey::parse(&part).map_err(|_| bad_pointer(&part))?;
            let library = self
                .modules
                .get_library(&key)
                .await
                .map_err(GatewayError::Module)?;
            modules.push((name, library));
        }
        let stored = match pointer.bindings_version {
            Some(version) if spec.has_stored_secrets() => self
                .routes
                .table()
                .secrets(&pointer.route, version)
                .await
                .map_err(|e| GatewayError::Table(Arc::new(e)))?,
            _ => Default::default(),
        };
        let mut resolved = BTreeMap::new();
        for binding in &spec.bindings {
            if let Binding::SecretText {
                name,
                secret_ref: Some(reference),
                ..
            } = binding
            {
                let reference = SecretRef::parse(reference).map_err(GatewayError::Bindings)?;
                let value = self
                    .secrets
                    .resolve(&reference)
                    .await
                    .map_err(GatewayError::Secret)?;
                resolved.insert(name.clone(), value);
            }
        }
        let env = environment(&spec, &stored, &resolved)
            .map_err(|e| GatewayError::Bindings(format!("{route}: {e}")))?;
        let outbound = OutboundPolicy::parse(&spec.allowed_outbound_hosts)
            .map_err(|e| GatewayError::Bindings(format!("{route}: {e}")))?
            .allowing_private_networks(spec.allow_private_networks);
        let kv = KvGrants {
            store: Some(self.kv.clone()),
            namespaces: spec
                .kv_namespaces()
                .map(|(name, id)| (name.to_string(), id.to_string()))
                .collect(),
        };
        Ok((
            Arc::new(Deployment {
                module,
                grants: Grants {
                    config: Arc::new(env.iter().cloned().collect()),
                    env,
                    modules,
                    outbound: Arc::new(outbound),
                    resolver: self.resolver.clone(),
                    max_body_bytes: spec.max_body_bytes,
                    memory_limit_bytes: spec
                        .memory_limit_mb
                        .map(|mb| usize::try_from(mb << 20).unwrap_or(usize::MAX)),
                    timeout: spec.timeout_ms.map(Duration::from_millis),
                    kv: Arc::new(kv),
                },
                readied: Instant::now(),
            }),
            outcome,
        ))
    }
}

/// What the request log line reports.
#[derive(Default)]
struct Trace {
    /// Set when the request went to a rollout's candidate: the live pointer
    /// and its split, for the auto-rollback count.
    rollout: Option<(Arc<LivePointer>, Split)>,
    /// The answer failed for the host's reasons, not the function's.
    host_fault: bool,
    route: Option<String>,
    version: Option<u64>,
    module: Option<String>,
    route_cache: Option<CacheOutcome>,
    module_cache: Option<CacheOutcome>,
}

/// Largest request body read whole before the guest gets a slot.
const PRE_READ_BYTES: u64 = 64 * 1024;

/// `request` once its client has shown it is sending: a body declared at
/// most [`PRE_READ_BYTES`] long is read whole (a client sending it a byte
/// a second holds a connection, never an instance slot); any other body is
/// read to its first piece, which goes back in front of the rest (a
/// streaming client's first message starts its guest). `Err` when the body
/// failed (the watch on it says why).
async fn pre_read(request: Request<Body>) -> Result<Request<Body>, ()> {
    use http_body_util::BodyExt;
    let declared = request
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let (parts, mut body) = request.into_parts();
    if http_body::Body::is_end_stream(&body) {
        return Ok(Request::from_parts(parts, body));
    }
    if declared.is_some_and(|n| n <= PRE_READ_BYTES) {
        let mut whole = bytes::BytesMut::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(drop)?;
            match frame.into_data() {
                Ok(data) => whole.extend_from_slice(&data),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        let body = http_body_util::Full::new(whole.freeze())
            .map_err(|never| match never {})
            .boxed_unsync();
        let body = match trailers {
            Some(trailers) => body
                .with_trailers(async move { Some(Ok(trailers)) })
                .boxed_unsync(),
            None => body,
        };
        return Ok(Request::from_parts(parts, body));
    }
    let first = match body.frame().await {
        None => return Ok(Request::from_parts(parts, crate::body::empty())),
        Some(frame) => frame.map_err(drop)?,
    };
    let first = futures::stream::once(async move { Ok::<_, crate::body::BoxError>(first) });
    let rest = http_body_util::BodyStream::new(body);
    let body =
        http_body_util::StreamBody::new(futures::StreamExt::chain(first, rest)).boxed_unsync();
    Ok(Request::from_parts(parts, body))
}

/// The host a request is for: the URI's authority when the request line
/// (absolute form) or HTTP/2 gave one, which wins over `Host` (RFC 9112
/// §3.2.2); else its `Host` header. `None` when it names none (no header,
/// or an empty one): the any-host routes serve it, unless the policy
/// requires a host.
///
/// On the listener a second `Host` header, or a value that is not
/// `host[:port]` (a space, `/`, `@`, a bad IPv6 literal), is a 400: a proxy
/// in front and wasmgate must never disagree on which host a request is for.
pub fn request_host<B>(
    request: &Request<B>,
    policy: HostPolicy,
) -> Result<Option<String>, GatewayError> {
    let mut values = request.headers().get_all(http::header::HOST).iter();
    let header = values.next();
    if values.next().is_some() && policy != HostPolicy::Trigger {
        return Err(GatewayError::BadRequest(
            "the request has more than one Host header".into(),
        ));
    }
    let host = match request.uri().authority() {
        Some(authority) => Some(authority.as_str().to_string()),
        None => match header {
            Some(value) => {
                let text = String::from_utf8_lossy(value.as_bytes());
                if policy != HostPolicy::Trigger && !valid_host_header(&text) {
                    return Err(GatewayError::BadRequest(
                        "the Host header is not a host name or address with an optional port"
                            .into(),
                    ));
                }
                Some(text.into_owned()).filter(|v| !v.is_empty())
            }
            None => None,
        },
    };
    if host.is_none() && policy == HostPolicy::Required {
        return Err(GatewayError::BadRequest(
            "the request has no Host header (HTTP/1.1 requires one)".into(),
        ));
    }
    Ok(host)
}

/// Whether `value` is a `Host` field value (RFC 9110 §7.2): empty, or a
/// DNS-style name, an IPv4 address or a bracketed IPv6 address, with an
/// optional port. Stricter than RFC 3986's reg-name on purpose: routes
/// name DNS hosts, and sub-delimiters or escapes in a host only ever come
/// from a client probing for a parser that reads them differently.
pub fn valid_host_header(value: &str) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        if address.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        match after {
            "" => return true,
            _ => match after.strip_prefix(':') {
                Some(port) => ("ipv6", port),
                None => return false,
            },
        }
    } else {
        match value.split_once(':') {
            Some((host, port)) => (host, port),
            None => (value, ""),
        }
    };
    let host_ok = host == "ipv6"
        || (host.len() <= 254
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    host_ok && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit())
}

/// A random 128-bit id, as 32 hex digits.
pub fn new_request_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = std::collections::hash_map::RandomState::new();
    let mut words = [0u64; 2];
    for (i, word) in words.iter_mut().enumerate() {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_usize(i);
        *word = hasher.finish();
    }
    format!("{:016x}{:016x}", words[0], words[1])
}
