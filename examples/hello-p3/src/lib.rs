//! A WASI 0.3 HTTP function: a component exporting `wasi:http/handler@0.3.0`,
//! written with the `wasip3` crate (0.7.1, WASI 0.3.0) and its `http-compat`
//! layer, so the handler works with plain `http::Request`/`http::Response`.
//!
//! - `POST /echo` streams the request body back as it arrives (frame by
//!   frame, never held whole in memory).
//! - Any other `GET` (or `HEAD`) answers `hello from a WASI 0.3 component`
//!   and the path asked for, plus the `GREETING` setting when there is one,
//!   read through `wasi:config/store` (a `plain_text` binding on wasmgate,
//!   `-Sconfig-var=GREETING=...` on `wasmtime serve`).
//! - Anything else is `405 Method Not Allowed`.
//!
//! The route prefix a host deploys the function under is not stripped from
//! the request path, so the function routes on `spin-path-info` (the path
//! below the route, which wasmgate and Spin send) when the request has it.
//!
//! Build: `cargo build --release --target wasm32-wasip2`.

use http::{Method, Request, Response, StatusCode, header};
use wasip3::http::types::{self, ErrorCode};
use wasip3::http_compat::{IncomingRequestBody, http_from_wasi_request, http_into_wasi_response};

/// Bindings for `wasi:config/store@0.2.0-rc.1`, from the WIT in `wit/`.
mod config {
    wit_bindgen::generate!({ path: "wit", world: "wasi:config/imports" });
    pub use self::wasi::config::store::get;
}

struct Hello;

wasip3::http::service::export!(Hello);

impl wasip3::exports::http::handler::Guest for Hello {
    async fn handle(request: types::Request) -> Result<types::Response, ErrorCode> {
        let request = http_from_wasi_request(request)?;
        match (request.method(), path_info(&request).as_str()) {
            (&Method::POST, "/echo") => http_into_wasi_response(echo(request)),
            (&Method::GET | &Method::HEAD, _) => http_into_wasi_response(hello(&request)),
            _ => http_into_wasi_response(text(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed\n".to_string(),
            )),
        }
    }
}

/// The greeting, with the path as the caller sent it (route prefix included).
fn hello(request: &Request<IncomingRequestBody>) -> Response<String> {
    let mut body = format!(
        "hello from a WASI 0.3 component: {}\n",
        request.uri().path()
    );
    match config::get("GREETING") {
        Ok(Some(greeting)) => body.push_str(&format!("GREETING: {greeting}\n")),
        Ok(None) => {}
        Err(e) => body.push_str(&format!("(wasi:config failed: {e:?})\n")),
    }
    text(StatusCode::OK, body)
}

/// The request body, streamed back: the response goes out at once and its
/// body is copied from the request's as each frame arrives.
fn echo(request: Request<IncomingRequestBody>) -> Response<IncomingRequestBody> {
    let content_type = request.headers().get(header::CONTENT_TYPE).cloned();
    let mut response = Response::new(request.into_body());
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

fn text(status: StatusCode, body: String) -> Response<String> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The path below the route the function is deployed at: `spin-path-info`
/// when the host sends it, else the request path.
fn path_info<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get("spin-path-info")
        .and_then(|v| v.to_str().ok())
        .filter(|p| !p.is_empty())
        .unwrap_or(request.uri().path())
        .to_string()
}
