//! The wasi:http executor: a component exporting
//! `wasi:http/incoming-handler`, run as `wasmtime serve` runs it, one fresh
//! instance per request, with its response body streamed back as the guest
//! writes it.

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

use super::host::HostState;
use super::{Grants, GuestError, Invocation, LoadError, WasmEngine};
use crate::body::{Body, BoxError};

/// A compiled wasi:http component, pre-instantiated against wasmgate's linker.
pub struct HttpComponent {
    pre: ProxyPre<HostState>,
}

impl HttpComponent {
    pub(super) fn load(engine: &WasmEngine, bytes: &[u8]) -> Result<Self, LoadError> {
        let component = Component::new(engine.engine(), bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        Self::link(engine, component)
    }

    /// Links a compiled (or deserialized) component.
    pub(super) fn link(engine: &WasmEngine, component: Component) -> Result<Self, LoadError> {
        let instance_pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = ProxyPre::new(instance_pre).map_err(|_| LoadError::Unsupported {
            found: "this component does not export wasi:http/incoming-handler (0.2.x)".into(),
        })?;
        Ok(HttpComponent { pre })
    }

    /// The compiled component, as `Component::deserialize` takes it back.
    pub(super) fn serialize(&self) -> Result<Vec<u8>, String> {
        self.pre
            .instance_pre()
            .component()
            .serialize()
            .map_err(|e| format!("{e:#}"))
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
        let permit = tokio::time::timeout_at(invocation.deadline.into(), engine.acquire_slot())
            .await
            .map_err(|_| GuestError::Busy(engine.limits().max_concurrency))?;
        let state = HostState::new(
            &invocation.request_id,
            engine.limits().memory_limit_bytes,
            &grants.env,
            grants.outbound.clone(),
        );
        let mut store = engine.new_store(state, invocation.deadline);
        let memory_hit = store.data().limiter.hit_flag();
        let memory_limit = engine.limits().memory_limit_bytes;
        let budget = invocation.budget;

        let scheme = if invocation.https {
            Scheme::Https
        } else {
            Scheme::Http
        };
        let request = request.map(|body| {
            body.map_err(|e| wasmtime_wasi_http::Error::InternalError(Some(e.to_string())))
        });
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

        let pre = self.pre.clone();
        let deadline = invocation.deadline;
        // The guest runs in its own task so it can keep writing the body
        // after the response head has gone out.
        let task = tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            match tokio::time::timeout_at(deadline.into(), run).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(error)) => Err(classify(
                    error,
                    memory_hit.load(Ordering::Relaxed),
                    memory_limit,
                    budget,
                )),
                Err(_elapsed) => Err(GuestError::Timeout(budget)),
            }
        });

        match receiver.await {
            Ok(Ok(response)) => {
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
            Ok(Err(code)) => Err(GuestError::ErrorCode(format!("{code:?}"))),
            // The guest dropped the outparam: the task says why.
            Err(_) => match task.await {
                Ok(Ok(())) => Err(GuestError::NoResponse),
                Ok(Err(error)) => Err(error),
                Err(join) => Err(GuestError::Trap(format!("the guest task failed: {join}"))),
            },
        }
    }
}

/// The guest's response body. It ends only once the guest has returned,
/// and fails (so the connection is aborted, not ended cleanly) when the guest
/// trapped or ran out of time after sending the head: a cut-off body must
/// never look complete.
struct GuestBody {
    inner: Body,
    task: Option<tokio::task::JoinHandle<Result<(), GuestError>>>,
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
    memory_limit: usize,
    budget: std::time::Duration,
) -> GuestError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => GuestError::Timeout(budget),
        _ if memory_hit => GuestError::MemoryLimit(memory_limit),
        _ => GuestError::Trap(format!("{error:#}")),
    }
}
