//! The per-request host state a guest's `Store` carries: its WASI context
//! (no environment, no files, no sockets), its wasi:http context (outbound
//! requests only where the version allows them), the memory
//! limiter, and guest stdout/stderr routed to the log.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Grants;
use super::admission::MemoryBudget;
use super::outbound::{Denial, OutboundPolicy, Resolver};
use super::send;
use super::wasi_config::{ConfigValues, ConfigView};
use super::wasi_keyvalue::{KvGrants, KvView};

/// What one guest instance may do, fixed before it starts.
pub struct HostState {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: OutboundHooks,
    config: ConfigValues,
    kv: Arc<KvGrants>,
    pub(crate) limiter: MemoryLimiter,
}

impl HostState {
    /// A guest context with nothing granted but what `grants` holds (the
    /// version's bindings as environment and `wasi:config`, its key-value
    /// namespaces, the wasi:http requests its allow-list lets out): no host
    /// environment, no preopened directories, no sockets, stdin closed,
    /// stdout and stderr going to the log tagged with `request_id`.
    pub fn new(
        request_id: &str,
        memory_limit: usize,
        field_size_limit: usize,
        grants: &Grants,
        deadline: std::time::Instant,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let log_budget = LogBudget::new(request_id);
        let mut wasi = WasiCtx::builder();
        wasi.envs(&grants.env)
            .stdout(GuestLog::new(&log_budget, "stdout"))
            .stderr(GuestLog::new(&log_budget, "stderr"))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(field_size_limit);
        HostState {
            table: ResourceTable::new(),
            wasi: wasi.build(),
            http,
            hooks: OutboundHooks {
                policy: grants.outbound.clone(),
                resolver: grants.resolver.clone(),
                request_id: request_id.to_string(),
                deadline,
            },
            config: grants.config.clone(),
            kv: grants.kv.clone(),
            limiter: MemoryLimiter::new(memory_limit, budget),
        }
    }

    pub(crate) fn config(&mut self) -> ConfigView<'_> {
        ConfigView(&self.config)
    }

    pub(crate) fn keyvalue(&mut self) -> KvView<'_> {
        KvView {
            grants: &self.kv,
            request_id: &self.hooks.request_id,
            table: &mut self.table,
        }
    }
}

impl super::engine::Limited for HostState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outbound HTTP (`wasi:http/outgoing-handler`): sent when the version's
/// [`OutboundPolicy`] grants the scheme, host and port and then the
/// addresses the host resolves to, else refused with wasi:http's
/// `HTTP-request-denied`, logged with the reason and counted.
struct OutboundHooks {
    policy: Arc<OutboundPolicy>,
    resolver: Resolver,
    request_id: String,
    /// The request's deadline, which bounds a denied request's drain.
    deadline: std::time::Instant,
}

type SendResult = Result<
    (
        http::Response<wasmtime_wasi_http::WasiBody>,
        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        _ = fut;
        let uri = request.uri();
        let admitted = self.policy.admit(
            uri.scheme_str().unwrap_or(""),
            uri.host().unwrap_or(""),
            uri.port_u16(),
        );
        let denied = Denied {
            policy: self.policy.clone(),
            request_id: self.request_id.clone(),
            deadline: self.deadline,
        };
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(denial) => return Box::new(async move { Err(denied.deny(request, &denial)) }),
        };
        let resolver = self.resolver.clone();
        Box::new(async move {
            use http_body_util::BodyExt;
            // One lookup (none for an address), its answers checked, the
            // connection made to those that passed: nothing is resolved
            // again between the check and the connect. The connect timeout
            // bounds the lookup and the connect together, as wasmtime's.
            let until = tokio::time::Instant::now() + send::connect_timeout(options);
            let resolved = match admitted.ip {
                Some(ip) => vec![ip],
                None => {
                    tokio::time::timeout_at(until, resolver.lookup(&admitted.host, admitted.port))
                        .await
                        .map_err(|_| wasmtime_wasi_http::Error::ConnectionTimeout)?
                        .map_err(wasmtime_wasi_http::Error::Connect)?
                }
            };
            let mut refused = Vec::new();
            let mut addresses = Vec::new();
            for ip in resolved {
                match denied.policy.permits_address(&admitted, ip) {
                    Ok(()) => addresses.push(std::net::SocketAddr::new(ip, admitted.port)),
                    Err(class) => refused.push((ip, class)),
                }
            }
            if addresses.is_empty() && !refused.is_empty() {
                return Err(denied.deny(request, &Denial::AddressRefused(refused)));
            }
            crate::metrics::METRICS.outbound(true);
            tracing::debug!(
                request_id = %denied.request_id,
                uri = %request.uri(),
                addresses = ?addresses,
                refused = ?refused,
                "guest outbound HTTP request"
            );
            let stream = send::connect(&addresses, until).await?;
            let (response, io) = send::send_over(request, options, stream, admitted.host).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as Box<dyn Future<Output = _> + Send>,
            ))
        })
    }
}

/// What a refusal needs: it is logged, counted, and the request's body
/// drained.
struct Denied {
    policy: Arc<OutboundPolicy>,
    request_id: String,
    deadline: std::time::Instant,
}

impl Denied {
    fn deny(
        &self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        denial: &Denial,
    ) -> wasmtime_wasi_http::Error {
        crate::metrics::METRICS.outbound(false);
        tracing::warn!(
            request_id = %self.request_id,
            uri = %request.uri(),
            reason = %denial.reason(),
            address = %denial.addresses(),
            allowed = %self.policy,
            "guest outbound HTTP request denied by the version's allowed_outbound_hosts"
        );
        // The guest may still be writing the request's body (wstd and
        // most clients write it before they wait for the answer): read
        // it to its end and drop it, so those writes succeed and the
        // guest learns of the denial from the answer, as
        // `HTTP-request-denied`, not from a body stream cut under it.
        // Bounded by the request's deadline: a body the guest forwards
        // from the client must not be read on past it.
        let mut body = request.into_body();
        let deadline = self.deadline;
        tokio::spawn(async move {
            use http_body_util::BodyExt;
            let drain = async { while let Some(Ok(_)) = body.frame().await {} };
            let _ = tokio::time::timeout_at(deadline.into(), drain).await;
        });
        wasmtime_wasi_http::Error::HttpRequestDenied
    }
}

/// Caps the instance's linear memories, together, at `limit` bytes (and its
/// tables likewise), takes their growth from the budget all guests share,
/// and remembers which of the two the guest ran into, so a resulting trap
/// can be reported as what it is.
pub(crate) struct MemoryLimiter {
    limit: usize,
    memory_total: usize,
    table_total: usize,
    hit: Arc<AtomicBool>,
    budget: Arc<MemoryBudget>,
    budget_hit: Arc<AtomicBool>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: usize, budget: Arc<MemoryBudget>) -> Self {
        MemoryLimiter {
            limit,
            memory_total: 0,
            table_total: 0,
            hit: Arc::new(AtomicBool::new(false)),
            budget,
            budget_hit: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that turns true once the guest asked for more than its limit.
    pub(crate) fn hit_flag(&self) -> Arc<AtomicBool> {
        self.hit.clone()
    }

    /// A flag that turns true once a growth within the guest's own limit
    /// found the shared budget spent: the host's capacity, not the guest's
    /// fault.
    pub(crate) fn budget_flag(&self) -> Arc<AtomicBool> {
        self.budget_hit.clone()
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.release(self.memory_total);
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_total
            .saturating_sub(current)
            .saturating_add(desired);
        if total > self.limit || maximum.is_some_and(|max| desired > max) {
            self.hit.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        if !self.budget.reserve(total.saturating_sub(self.memory_total)) {
            self.budget_hit.store(true, Ordering::Relaxed);
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold one pointer per element: cap them by the same budget.
        let total = self
            .table_total
            .saturating_sub(current)
            .saturating_add(desired);
        let bytes = total.saturating_mul(std::mem::size_of::<usize>());
        if bytes > self.limit || maximum.is_some_and(|max| desired > max) {
            return Ok(false);
        }
        self.table_total = total;
        Ok(true)
    }
}

/// Guest stdout or stderr: each complete line becomes one log event tagged
/// with the request id; a partial line is logged when the stream closes.
#[derive(Clone)]
pub(crate) struct GuestLog {
    inner: Arc<GuestLogInner>,
}

struct GuestLogInner {
    request_id: String,
    stream: &'static str,
    pending: Mutex<Vec<u8>>,
    budget: Arc<LogBudget>,
}

/// Longest line kept whole; longer output is logged in pieces of this size.
const MAX_GUEST_LOG_LINE: usize = 16 * 1024;

/// Most a request's guest may log, stdout and stderr together: a guest
/// writing a GiB to stderr must not write a GiB of logs (and their
/// ingestion bill). Past it, output is dropped, counted
/// (`wasmgate_guest_log_dropped_bytes_total`) and said once per request.
pub const MAX_GUEST_LOG_BYTES: usize = 1024 * 1024;

/// What is left of a request's log cap, shared by its streams.
pub(crate) struct LogBudget {
    request_id: String,
    left: std::sync::atomic::AtomicUsize,
    dropped: std::sync::atomic::AtomicU64,
}

impl LogBudget {
    pub(crate) fn new(request_id: &str) -> Arc<Self> {
        Arc::new(LogBudget {
            request_id: request_id.to_string(),
            left: std::sync::atomic::AtomicUsize::new(MAX_GUEST_LOG_BYTES),
            dropped: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many of `wanted` bytes may still be logged; the rest is dropped.
    fn take(&self, wanted: usize) -> usize {
        let granted = match self
            .left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                Some(left - left.min(wanted))
            }) {
            Ok(left) | Err(left) => left.min(wanted),
        };
        let dropped = (wanted - granted) as u64;
        if dropped > 0 {
            if self.dropped.fetch_add(dropped, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    request_id = %self.request_id,
                    cap_bytes = MAX_GUEST_LOG_BYTES,
                    "the guest's output reached the log cap of a request; the rest is dropped"
                );
            }
            crate::metrics::METRICS.guest_log_dropped(dropped);
        }
        granted
    }
}

impl Drop for LogBudget {
    fn drop(&mut self) {
        let dropped = *self.dropped.get_mut();
        if dropped > 0 {
            tracing::warn!(
                request_id = %self.request_id,
                dropped_bytes = dropped,
                "guest output dropped past the log cap"
            );
        }
    }
}

impl GuestLog {
    /// The `stream` of a request whose streams share `budget`.
    pub(crate) fn new(budget: &Arc<LogBudget>, stream: &'static str) -> Self {
        GuestLog {
            inner: Arc::new(GuestLogInner {
                request_id: budget.request_id.clone(),
                stream,
                pending: Mutex::new(Vec::new()),
                budget: budget.clone(),
            }),
        }
    }

    fn write(&self, bytes: &[u8]) {
        let granted = self.inner.budget.take(bytes.len());
        let mut bytes = &bytes[..granted];
        let mut pending = self
            .inner
            .pending
            .lock()
            .expect("BUG: guest log lock poisoned");
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    pending.extend_from_slice(&bytes[..i]);
                    self.inner.emit(&pending);
                    pending.clear();
                    bytes = &bytes[i + 1..];
                }
                None => {
                    pending.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
            if pending.len() >= MAX_GUEST_LOG_LINE {
                self.inner.emit(&pending);
                pending.clear();
            }
        }
    }
}

impl GuestLogInner {
    fn emit(&self, line: &[u8]) {
        let line = String::from_utf8_lossy(line);
        tracing::info!(
            target: "wasmgate::guest",
            request_id = %self.request_id,
            stream = self.stream,
            "{line}"
        );
    }
}

impl Drop for GuestLogInner {
    fn drop(&mut self) {
        let pending = self
            .pending
            .get_mut()
            .map(std::mem::take)
            .unwrap_or_default();
        if !pending.is_empty() {
            self.emit(&pending);
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestLog {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
