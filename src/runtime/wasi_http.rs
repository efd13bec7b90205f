//! The wasi:http executor: a component exporting
//! `wasi:http/incoming-handler`, run as `wasmtime serve` runs it, one fresh
//! instance per request, with its response body streamed back as the guest
//! writes it.

use std::sync::atomic::Ordering;

use http_body_util::BodyExt;
use wasmtime::Trap;
use wasmtime::component::Component;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;

use super::host::HostState;
use super::{GuestError, Invocation, LoadError, WasmEngine};
use crate::body::{Body, BoxError};

/// A compiled wasi:http component, pre-instantiated against wasmgate's linker.
pub struct HttpComponent {
    pre: ProxyPre<HostState>,
}

impl HttpComponent {
    pub(super) fn load(engine: &WasmEngine, bytes: &[u8]) -> Result<Self, LoadError> {
        let component = Component::new(engine.engine(), bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let instance_pre = engine
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = ProxyPre::new(instance_pre).map_err(|_| LoadError::Unsupported {
            found: "this component does not export wasi:http/incoming-handler".into(),
        })?;
        Ok(HttpComponent { pre })
    }

    /// Instantiates the component in a fresh store and hands it `request`.
    /// Returns once the guest has set its response (whose body keeps
    /// streaming from the guest task) or has failed.
    pub async fn run(
        &self,
        engine: &WasmEngine,
        request: http::Request<Body>,
        invocation: &Invocation,
    ) -> Result<http::Response<Body>, GuestError> {
        let permit = tokio::time::timeout_at(invocation.deadline.into(), engine.acquire_slot())
            .await
            .map_err(|_| GuestError::Busy(engine.limits().max_concurrency))?;
        let mut store = engine.new_store(&invocation.request_id, invocation.deadline);
        let memory_hit = store.data().limiter.hit_flag();
        let memory_limit = engine.limits().memory_limit_bytes;
        let timeout = engine.limits().timeout;

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
                .map_err(|e| GuestError::ErrorCode(format!("bad request: {e:#}")))?;
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
                    timeout,
                )),
                Err(_elapsed) => Err(GuestError::Timeout(timeout)),
            }
        });

        match receiver.await {
            Ok(Ok(response)) => {
                Ok(response.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()))
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

/// Sorts a wasmtime error into timeout, memory, or trap.
fn classify(
    error: wasmtime::Error,
    memory_hit: bool,
    memory_limit: usize,
    timeout: std::time::Duration,
) -> GuestError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => GuestError::Timeout(timeout),
        _ if memory_hit => GuestError::MemoryLimit(memory_limit),
        _ => GuestError::Trap(format!("{error:#}")),
    }
}
