//! Request errors, and the one place they become HTTP responses.
//!
//! Every failure on the request path is a [`GatewayError`]; its status and
//! short public message are decided here and nowhere else. Details (trap
//! messages, store errors) go to the log, tagged with the request id.

use std::sync::Arc;

use http::{HeaderValue, Response, StatusCode, header};

use crate::body::{self, Body};
use crate::modules::{ModuleLoadError, StoreError};
use crate::routes::TableError;
use crate::runtime::GuestError;
use crate::secrets::SecretError;

/// A request that could not be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("the request line is longer than {0} bytes")]
    UriTooLong(usize),
    #[error("the request headers are too large: {0}")]
    HeadersTooLarge(String),
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("route {route} points at `{key}`, which is not a module key")]
    BadPointer { route: String, key: String },
    #[error(transparent)]
    Module(Arc<ModuleLoadError>),
    #[error(transparent)]
    Table(Arc<TableError>),
    #[error(transparent)]
    Guest(#[from] GuestError),
    #[error("the version's bindings cannot be served: {0}")]
    Bindings(String),
    #[error(transparent)]
    Secret(SecretError),
}

impl GatewayError {
    /// Whether the failure is the host's (capacity, an unreachable
    /// backend), not the function's: such answers do not count against a
    /// rollout's candidate.
    pub fn is_host_fault(&self) -> bool {
        match self {
            GatewayError::Guest(
                GuestError::Busy(_) | GuestError::PoolExhausted(_) | GuestError::MemoryBudget,
            ) => true,
            GatewayError::Table(e) => matches!(e.as_ref(), TableError::Unavailable(_)),
            GatewayError::Module(e) => {
                matches!(
                    e.as_ref(),
                    ModuleLoadError::Store(StoreError::Unavailable(_))
                )
            }
            GatewayError::Secret(SecretError::Unavailable { .. }) => true,
            _ => false,
        }
    }

    /// Whether an input limit refused the request (413, 414, 431).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            GatewayError::UriTooLong(_)
                | GatewayError::HeadersTooLarge(_)
                | GatewayError::Guest(GuestError::PayloadTooLarge(_))
        )
    }

    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest(_) => StatusCode::BAD_REQUEST,
            GatewayError::UriTooLong(_) => StatusCode::URI_TOO_LONG,
            GatewayError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::NoRoute(_) => StatusCode::NOT_FOUND,
            GatewayError::BadPointer { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Module(e) => match e.as_ref() {
                ModuleLoadError::Store(StoreError::Unavailable(_)) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                ModuleLoadError::Store(_)
                | ModuleLoadError::Integrity(_)
                | ModuleLoadError::Load { .. } => StatusCode::BAD_GATEWAY,
            },
            GatewayError::Table(e) => match e.as_ref() {
                TableError::Corrupt(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            },
            GatewayError::Bindings(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Secret(SecretError::Unavailable { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::Secret(_) => StatusCode::BAD_GATEWAY,
            GatewayError::Guest(e) => match e {
                GuestError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                GuestError::Busy(_) | GuestError::PoolExhausted(_) | GuestError::MemoryBudget => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                GuestError::BadRequest(_) => StatusCode::BAD_REQUEST,
                GuestError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
                GuestError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
                GuestError::BadOutput(_) | GuestError::Link(_) => StatusCode::BAD_GATEWAY,
                GuestError::MemoryLimit(_)
                | GuestError::Trap(_)
                | GuestError::NoResponse
                | GuestError::Exit(_)
                | GuestError::ErrorCode(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
        }
    }

    /// What the client is told: short, and free of guest or store internals.
    fn public_message(&self) -> String {
        match self {
            GatewayError::BadRequest(why) => why.clone(),
            error @ (GatewayError::UriTooLong(_) | GatewayError::HeadersTooLarge(_)) => {
                error.to_string()
            }
            GatewayError::NoRoute(what) => format!("no route for {what}"),
            GatewayError::BadPointer { .. } | GatewayError::Module(_) => {
                "the function's module could not be loaded".to_string()
            }
            GatewayError::Table(_) => "the route table is unavailable, retry shortly".to_string(),
            GatewayError::Bindings(_) | GatewayError::Secret(_) => {
                "the function's bindings could not be resolved".to_string()
            }
            GatewayError::Guest(GuestError::Timeout(after)) => {
                format!("the function did not finish within {}ms", after.as_millis())
            }
            GatewayError::Guest(GuestError::MemoryLimit(limit)) => {
                format!(
                    "the function exceeded its memory limit of {} MiB",
                    limit >> 20
                )
            }
            GatewayError::Guest(GuestError::BadRequest(why)) => why.clone(),
            GatewayError::Guest(
                error @ (GuestError::PayloadTooLarge(_) | GuestError::RequestTimeout),
            ) => error.to_string(),
            GatewayError::Guest(GuestError::BadOutput(_)) => {
                "the function's response was malformed".to_string()
            }
            GatewayError::Guest(
                GuestError::Busy(_) | GuestError::PoolExhausted(_) | GuestError::MemoryBudget,
            ) => "the server is at capacity, retry shortly".to_string(),
            GatewayError::Guest(_) => "the function failed".to_string(),
        }
    }

    /// The plain-text response for this error.
    pub fn into_response(self, request_id: &str) -> Response<Body> {
        let status = self.status();
        let text = format!(
            "{} {}: {}\nrequest id: {request_id}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or(""),
            self.public_message()
        );
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body is not read: this connection is done.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}
