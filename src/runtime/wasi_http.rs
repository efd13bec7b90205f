//! The wasi:http executors: a component exporting
//! `wasi:http/incoming-handler@0.2.x` (WASI 0.2) or `wasi:http/handler@0.3.x`
//! (WASI 0.3), recognised by that export and run one fresh instance per
//! request, with its response body streamed back as the guest writes it.
//!
//! A 0.3 guest runs inside its store's event loop (`run_concurrent`): its
//! body streams, and any work it does after returning the response, move
//! only while that loop is polled, so the guest task keeps polling it until
//! the guest has no task left (or the deadline passes).

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame};

use http_body_util::BodyExt;
use wasmtime::Trap;
use wasmtime::component::Component;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p3::bindings::ServicePre;

use super::host::HostState;
use super::{Grants, GuestError, Invocation, LoadError, WasmEngine};
use crate::body::{Body, BoxError};

/// The export a WASI 0.2 HTTP component has.
const P2_EXPORT: &str = "wasi:http/incoming-handler@0.2";
/// The export a WASI 0.3 HTTP component has.
const P3_EXPORT: &str = "wasi:http/handler@0.3";

/// A compiled wasi:http component, pre-instantiated against wasmgate's linker.
pub struct HttpComponent {
    pre: Pre,
}

enum Pre {
    P2(ProxyPre<HostState>),
    P3(ServicePre<HostState>),
}

/// The guest task: how the instance ended (a 504 or 5xx is made from it).
type GuestTask = tokio::task::JoinHandle<Result<(), GuestError>>;

/// The request headers wasmgate sets for a component, which Spin SDK
/// routers and apps read (taken off the request first when a client sent
/// them, like every other `spin-*` or `x-wasmgate-*` header).
pub const ROUTE_HEADERS: [&str; 7] = [
    "spin-full-url",
    "spin-path-info",
    "spin-matched-route",
    "spin-base-path",
    "spin-client-addr",
    "x-wasmgate-route",
    "x-wasmgate-version",
];

/// The authority the client addressed: the URI's, else the Host header.
fn authority_of<B>(request: &http::Request<B>) -> Option<String> {
    request
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            request
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
}

/// The authority a request that names no usable host reaches a component
/// with (wasi:http has no request without one): HTTP/1.0 without `Host`, an
/// ALB health check, the console's test event.
pub const DEFAULT_AUTHORITY: &str = "localhost";

/// Gives `request` the URI authority [`DEFAULT_AUTHORITY`] when neither its
/// URI nor its `Host` header names a usable one.
fn ensure_authority<B>(request: &mut http::Request<B>, https: bool) {
    let usable = authority_of(request).is_some_and(|a| a.parse::<http::uri::Authority>().is_ok());
    if usable {
        return;
    }
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(if https {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = Some(http::uri::Authority::from_static(DEFAULT_AUTHORITY));
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
}

/// Sets the route headers on `request` (see [`ROUTE_HEADERS`]).
fn set_route_headers(request: &mut http::Request<Body>, invocation: &Invocation) {
    use http::HeaderValue;
    let headers = request.headers_mut();
    let forged: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            name.starts_with("spin-") || name.starts_with("x-wasmgate-")
        })
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    let uri = request.uri();
    let host = authority_of(request).unwrap_or_default();
    let scheme = if invocation.https { "https" } else { "http" };
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let (_, path_info) = super::wagi::split_path(uri.path(), &invocation.route_path);
    let path_info = if path_info.is_empty() {
        "/".to_string()
    } else {
        path_info
    };
    let wildcard = match invocation.route_path.as_str() {
        "/" => "/...".to_string(),
        prefix => format!("{prefix}/..."),
    };
    let values = [
        format!("{scheme}://{host}{path_and_query}"),
        path_info,
        wildcard,
        invocation.route_path.clone(),
        invocation.remote_addr.clone().unwrap_or_default(),
        invocation.route.clone(),
        invocation
            .version
            .map(|v| v.to_string())
            .unwrap_or_default(),
    ];
    let headers = request.headers_mut();
    for (name, value) in ROUTE_HEADERS.iter().zip(values) {
        if value.is_empty() {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(*name, value);
        }
    }
}

impl HttpComponent {
    pub(super) fn load(engine: &WasmEngine, bytes: &[u8]) -> Result<Self, LoadError> {
        let component = Component::new(engine.engine(), bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Self::link(engine, component)
    }

    /// Links a compiled (or deserialized) component: first what it exports
    /// (so a component that is no HTTP handler is told so, whatever it
    /// imports), then what it imports.
    pub(super) fn link(engine: &WasmEngine, component: Component) -> Result<Self, LoadError> {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        let p3 = if exports.iter().any(|name| name.starts_with(P2_EXPORT)) {
            false
        } else if exports.iter().any(|name| name.starts_with(P3_EXPORT)) {
            true
        } else {
            let found = if exports.is_empty() {
                "this component exports nothing".to_string()
            } else {
                format!(
                    "this component exports {}, not wasi:http/incoming-handler (0.2.x) or wasi:http/handler (0.3.x)",
                    exports.join(", ")
                )
            };
            return Err(LoadError::Unsupported { found });
        };
        let instance_pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(link_error)?;
        let unsupported = |export: &str| LoadError::Unsupported {
            found: format!(
                "this component exports {export} in a version or shape wasmgate does not run"
            ),
        };
        let pre = if p3 {
            Pre::P3(ServicePre::new(instance_pre).map_err(|_| unsupported("wasi:http/handler"))?)
        } else {
            Pre::P2(
                ProxyPre::new(instance_pre)
                    .map_err(|_| unsupported("wasi:http/incoming-handler"))?,
            )
        };
        Ok(HttpComponent { pre })
    }

    /// Which WASI the component speaks, for logs and deploy output.
    pub fn abi(&self) -> &'static str {
        match self.pre {
            Pre::P2(_) => "wasi:http 0.2 component",
            Pre::P3(_) => "wasi:http 0.3 component",
        }
    }

    fn component(&self) -> &Component {
        match &self.pre {
            Pre::P2(pre) => pre.instance_pre().component(),
            Pre::P3(pre) => pre.instance_pre().component(),
        }
    }

    /// The compiled component, as `Component::deserialize` takes it back.
    pub(super) fn serialize(&self) -> Result<Vec<u8>, String> {
        self.component().serialize().map_err(|e| format!("{e:#}"))
    }

    /// Instantiates the component in a fresh store and hands it `request`.
    /// Returns once the guest has set its response (whose body keeps
    /// streaming from the guest task) or has failed.
    pub async fn run(
        &self,
        engine: &WasmEngine,
        request: http::Request<Body>,
        invocation: &Invocation,
        grants: &Grants,
    ) -> Result<http::Response<Body>, GuestError> {
        let permit = engine
            .acquire_slot(&invocation.route, invocation.deadline)
            .await?;
        let limits = engine.limits();
        let memory_limit = invocation.memory_limit_bytes;
        let state = HostState::new(
            &invocation.request_id,
            memory_limit,
            limits.max_field_bytes,
            grants,
            invocation.deadline,
            engine.admission().memory().for_route(&invocation.route),
        );
        let mut store = engine.new_store(state, invocation.deadline, &invocation.route);
        let memory_hit = store.data().limiter.hit_flag();
        let budget_hit = store.data().limiter.budget_flag();
        let budget = invocation.budget;
        let deadline = invocation.deadline;
        let mut request = request;
        ensure_authority(&mut request, invocation.https);
        set_route_headers(&mut request, invocation);
        let request = request.map(|body| {
            body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
        });
        let outcome =
            move |result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>| match result {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(classify(
                    error,
                    memory_hit.load(Ordering::Relaxed),
                    budget_hit.load(Ordering::Relaxed),
                    memory_limit,
                    budget,
                )),
                Err(_elapsed) => Err(GuestError::Timeout(budget)),
            };

        let (response, task) = match &self.pre {
            Pre::P2(pre) => {
                let scheme = if invocation.https {
                    Scheme::Https
                } else {
                    Scheme::Http
                };
                let (sender, receiver) = tokio::sync::oneshot::channel();
                let (req, out) = {
                    let mut view = store.data_mut().http();
                    let req = view
                        .new_incoming_request(scheme, request)
                        .map_err(|e| GuestError::BadRequest(format!("{e:#}")))?;
                    let out = view
                        .new_response_outparam(sender)
                        .map_err(|e| GuestError::ErrorCode(format!("{e:#}")))?;
                    (req, out)
                };
                let pre = pre.clone();
                // The guest runs in its own task so it can keep writing the
                // body after the response head has gone out.
                let mut slot = Slot {
                    store,
                    _permit: permit,
                };
                let task = tokio::spawn(async move {
                    let store = &mut slot.store;
                    let run = async {
                        let proxy = pre.instantiate_async(&mut *store).await?;
                        proxy
                            .wasi_http_incoming_handler()
                            .call_handle(&mut *store, req, out)
                            .await
                    };
                    let result = outcome(tokio::time::timeout_at(deadline.into(), run).await);
                    drop(slot);
                    result
                });
                let guard = AbortOnDrop(Some(task.abort_handle()));
                let response = match receiver.await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(code)) => Err(GuestError::ErrorCode(format!("{code:?}"))),
                    Err(_) => Err(GuestError::NoResponse),
                };
                guard.disarm();
                (response, task)
            }
            Pre::P3(pre) => {
                // 0.3 guests read the scheme and authority off the URI, and
                // the fronts give a path: make it absolute, as 0.2's
                // `new_incoming_request` does from the scheme and Host.
                let request = absolute_uri(request, invocation.https);
                let (sender, receiver) = tokio::sync::oneshot::channel();
                let pre = pre.clone();
                let mut slot = Slot {
                    store,
                    _permit: permit,
                };
                let task = tokio::spawn(async move {
                    let store = &mut slot.store;
                    let run = async {
                        let service = pre.instantiate_async(&mut *store).await?;
                        store
                            .run_concurrent(async move |accessor| {
                                // The incoming request's headers are checked
                                // with wasi:http's default rules (the hooks
                                // only govern what the guest sends).
                                let (request, request_io) =
                                    wasmtime_wasi_http::p3::Request::from_http(
                                        wasmtime_wasi_http::default_hooks(),
                                        request,
                                    );
                                let response = match service.handle(accessor, request).await? {
                                    Ok(response) => response,
                                    Err(code) => {
                                        _ = sender.send(Err(format!("{code:?}")));
                                        return Ok(());
                                    }
                                };
                                let response = accessor.with(|mut access| {
                                    response.into_http(&mut access, request_io)
                                })?;
                                _ = sender.send(Ok(response));
                                // Keep the event loop turning while the guest
                                // streams its body or finishes other work.
                                std::future::poll_fn(|cx| accessor.poll_no_interesting_tasks(cx))
                                    .await;
                                wasmtime::Result::<()>::Ok(())
                            })
                            .await?
                    };
                    let result = outcome(tokio::time::timeout_at(deadline.into(), run).await);
                    drop(slot);
                    result
                });
                let guard = AbortOnDrop(Some(task.abort_handle()));
                let response = match receiver.await {
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(code)) => Err(GuestError::ErrorCode(code)),
                    Err(_) => Err(GuestError::NoResponse),
                };
                guard.disarm();
                (response, task)
            }
        };
        match response {
            Ok(response) => {
                let request_id = invocation.request_id.clone();
                Ok(response.map(|body| {
                    GuestBody {
                        inner: body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
                        task: Some(task),
                        request_id,
                    }
                    .boxed_unsync()
                }))
            }
            // No response: the task says why (a trap, the deadline), else
            // the guest returned without one.
            Err(GuestError::NoResponse) => match task.await {
                Ok(Ok(())) => Err(GuestError::NoResponse),
                Ok(Err(error)) => Err(error),
                Err(join) => Err(GuestError::Trap(format!("the guest task failed: {join}"))),
            },
            Err(error) => Err(error),
        }
    }
}

/// A guest's store and the instance slot it holds. The store goes first
/// (fields drop in order), whether the task ends or is aborted: its pool
/// instance must be back before the slot is offered again, or the next
/// request finds the pool full (wasmtime's "maximum concurrent limit").
struct Slot {
    store: wasmtime::Store<HostState>,
    _permit: super::admission::SlotPermit,
}

/// Stops the guest task when the request is dropped (the client went away)
/// before the response head is handed over; from then on [`GuestBody`]
/// does it.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// `request` with its URI made absolute: the scheme the client used and
/// its Host header as the authority (the URI is kept when it has no usable
/// Host).
fn absolute_uri<B>(mut request: http::Request<B>, https: bool) -> http::Request<B> {
    if request.uri().authority().is_some() {
        return request;
    }
    let Some(host) = authority_of(&request).and_then(|h| h.parse::<http::uri::Authority>().ok())
    else {
        return request;
    };
    let mut parts = request.uri().clone().into_parts();
    parts.scheme = Some(if https {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    });
    parts.authority = Some(host);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = http::Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    request
}

/// A link failure, naming the import nothing provides.
fn link_error(error: wasmtime::Error) -> LoadError {
    let text = format!("{error:#}");
    // wasmtime: "component imports instance `NAME`, but a matching
    // implementation was not found in the linker: CAUSE"
    let named = text.strip_prefix("component imports ").and_then(|rest| {
        let (kind, rest) = rest.split_once(" `")?;
        let (name, rest) = rest.split_once('`')?;
        let cause = rest
            .split_once("linker: ")
            .map(|(_, cause)| cause.to_string());
        Some((kind.to_string(), name.to_string(), cause))
    });
    match named {
        // Nothing of that name: wasmtime then reports the first function
        // of it as missing.
        Some((_, name, cause))
            if cause
                .as_deref()
                .is_none_or(|c| c.contains("implementation is missing")) =>
        {
            LoadError::Import { import: name }
        }
        Some((kind, name, Some(cause))) => LoadError::ImportMismatch {
            import: name,
            detail: format!("{kind}: {cause}"),
        },
        _ => LoadError::Link(text),
    }
}

/// The guest's response body. It ends only once the guest has returned,
/// and fails (so the connection is aborted, not ended cleanly) when the guest
/// trapped or ran out of time after sending the head: a cut-off body must
/// never look complete.
struct GuestBody {
    inner: Body,
    task: Option<GuestTask>,
    request_id: String,
}

impl HttpBody for GuestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        let Some(task) = self.task.as_mut() else {
            return Poll::Ready(None);
        };
        let outcome = match Pin::new(task).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(outcome) => outcome,
        };
        self.task = None;
        let error = match outcome {
            Ok(Ok(())) => return Poll::Ready(None),
            Ok(Err(error)) => error,
            Err(join) => GuestError::Trap(format!("the guest task failed: {join}")),
        };
        tracing::warn!(
            request_id = %self.request_id,
            %error,
            "the function failed after sending its response head; aborting the response"
        );
        Poll::Ready(Some(Err(Box::new(error))))
    }

    fn is_end_stream(&self) -> bool {
        self.task.is_none() && self.inner.is_end_stream()
    }
}

impl Drop for GuestBody {
    fn drop(&mut self) {
        // The client went away: stop the guest rather than let it run on.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Sorts a wasmtime error into timeout, memory, or trap.
pub(super) fn classify(
    error: wasmtime::Error,
    memory_hit: bool,
    budget_hit: bool,
    memory_limit: usize,
    budget: std::time::Duration,
) -> GuestError {
    if error.is::<wasmtime::PoolConcurrencyLimitError>() {
        return GuestError::PoolExhausted(format!("{error:#}"));
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => GuestError::Timeout(budget),
        _ if memory_hit => GuestError::MemoryLimit(memory_limit),
        _ if budget_hit => GuestError::MemoryBudget,
        _ => GuestError::Trap(format!("{error:#}")),
    }
}
