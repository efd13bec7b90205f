//! A Spin SDK 7 HTTP component (`#[http_service]`, so it exports
//! `wasi:http/handler@0.3.0`) that routes with a router, the way Spin's
//! Rust examples do, to check that a generic host runs an unmodified Spin
//! component: it uses no Spin host interface, so it imports only wasi:*.
//!
//! Routes: `GET /` -> `root`, `GET /items` -> `items`, `GET /items/{id}` ->
//! `item <id>`, anything else 404 `not found: <path>`. Like the routers of
//! earlier Spin SDKs, it routes on the `spin-path-info` header (the path
//! below the component's route, set by Spin-compatible hosts) when the
//! request has one, and on the request path otherwise.
//!
//! SDK 7 dropped its own `spin_sdk::http::Router`; axum's `Router` is what
//! the SDK's examples use instead (examples/http-axum-router).
//!
//! Rebuild with `make fixtures` (needs `rustup target add wasm32-wasip2`).

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, Uri};
use axum::routing::get;
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;
use tower_service::Service;

#[http_service]
async fn handler(mut req: Request) -> impl IntoResponse {
    if let Some(uri) = path_info_uri(&req) {
        *req.uri_mut() = uri;
    }
    Router::new()
        .route("/", get(|| async { "root" }))
        .route("/items", get(|| async { "items" }))
        .route(
            "/items/{id}",
            get(|Path(id): Path<String>| async move { format!("item {id}") }),
        )
        .fallback(|uri: Uri| async move {
            (StatusCode::NOT_FOUND, format!("not found: {}", uri.path()))
        })
        .call(req)
        .await
}

/// The request's URI with its path replaced by `spin-path-info`, when the
/// request has that header (the query is kept).
fn path_info_uri(req: &Request) -> Option<Uri> {
    let info = req.headers().get("spin-path-info")?.to_str().ok()?;
    let path = if info.is_empty() { "/" } else { info };
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    path_and_query.parse().ok()
}
