//! The test guest: one wasi:http component whose behaviour is chosen by the
//! last segment of the request path, so the integration tests can exercise
//! every outcome (echo, environment, files, trap, loop, memory bomb, large
//! streamed body) through a single deployed module.
//!
//! Rebuild with `make fixtures` (needs `rustup target add wasm32-wasip2`).

use std::io::{Read as _, Write as _};
use std::sync::atomic::{AtomicU32, Ordering};

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Probe);

/// Requests this instance has handled: always 1 when each request gets a
/// fresh instance.
static HANDLED: AtomicU32 = AtomicU32::new(0);

struct Probe;

impl wasip2::exports::http::incoming_handler::Guest for Probe {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path_with_query = request.path_with_query().unwrap_or_default();
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_with_query.clone(), String::new()),
        };
        let action = path.rsplit('/').next().unwrap_or_default().to_string();
        let handled = HANDLED.fetch_add(1, Ordering::SeqCst) + 1;
        match action.as_str() {
            "count" => send(response_out, 200, &format!("handled {handled}\n")),
            "big-then-trap" => {
                // Send the head and part of the body, then fail.
                let response = OutgoingResponse::new(Fields::new());
                let body = response.body().expect("body");
                ResponseOutparam::set(response_out, Ok(response));
                let mut out = body.write().expect("writable");
                out.write_all(&[b'x'; 64 * 1024]).expect("write");
                out.flush().expect("flush");
                core::arch::wasm32::unreachable()
            }
            "net" => {
                let mut text = String::new();
                let port = query_param(&query, "port").unwrap_or("80");
                match std::net::TcpStream::connect(format!("127.0.0.1:{port}")) {
                    Ok(_) => text.push_str("tcp: allowed\n"),
                    Err(_) => text.push_str("tcp: denied\n"),
                }
                text.push_str(&format!("http: {}\n", outbound_http(port)));
                send(response_out, 200, &text);
            }
            "fetch" => {
                // GET http://{authority}{path} through wasi:http and answer
                // with what came back (or the error code).
                let authority = query_param(&query, "authority").unwrap_or("127.0.0.1");
                let target = query_param(&query, "path").unwrap_or("/");
                let scheme = query_param(&query, "scheme").unwrap_or("http");
                send(response_out, 200, &fetch(scheme, authority, target));
            }
            "slow" => {
                // `chunks` writes of `size` bytes, `ms` apart: a long download.
                let chunks: usize = query_param(&query, "chunks")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(10);
                let size: usize = query_param(&query, "size")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1024);
                let ms: u64 = query_param(&query, "ms")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(100);
                send_slowly(response_out, chunks, size, ms);
            }
            "trap" => core::arch::wasm32::unreachable(),
            "panic" => panic!("the probe was asked to panic"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = core::hint::black_box(n.wrapping_add(1));
                }
            }
            "oom" => {
                // Grow until the host refuses; keep every block reachable.
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = vec![0u8; 8 << 20];
                    block[0] = 1;
                    blocks.push(core::hint::black_box(block));
                }
            }
            "big" => {
                let total: usize = query_param(&query, "bytes")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(5 << 20);
                send_streamed(response_out, total);
            }
            "env" => {
                let mut text = String::new();
                for (k, v) in std::env::vars() {
                    text.push_str(&format!("{k}={v}\n"));
                }
                send(response_out, 200, &text);
            }
            "fs" => {
                let mut text = String::new();
                for p in ["/", ".", "/etc/passwd", "/proc/self/environ"] {
                    match std::fs::read_dir(p) {
                        Ok(_) => text.push_str(&format!("readdir {p}: allowed\n")),
                        Err(_) => text.push_str(&format!("readdir {p}: denied\n")),
                    }
                    match std::fs::read(p) {
                        Ok(_) => text.push_str(&format!("read {p}: allowed\n")),
                        Err(_) => text.push_str(&format!("read {p}: denied\n")),
                    }
                }
                send(response_out, 200, &text);
            }
            "status" => {
                let code = query_param(&query, "code")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(200);
                send(response_out, code, &format!("status {code}\n"));
            }
            _ => echo(request, &path_with_query, response_out),
        }
    }
}

/// Tries an outbound wasi:http request to 127.0.0.1:`port`.
fn outbound_http(port: &str) -> String {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(&format!("127.0.0.1:{port}")));
    let _ = request.set_path_with_query(Some("/"));
    match outgoing_handler::handle(request, None) {
        Err(code) => format!("denied ({code:?})"),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(_))) => "allowed".to_string(),
                Some(Ok(Err(code))) => format!("denied ({code:?})"),
                other => format!("failed ({other:?})"),
            }
        }
    }
}

/// GET `scheme://authority/path` through `wasi:http/outgoing-handler`:
/// `status: N` and the body, or `error: ...` with the wasi:http error code.
fn fetch(scheme: &str, authority: &str, path: &str) -> String {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let scheme = match scheme {
        "https" => Scheme::Https,
        _ => Scheme::Http,
    };
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return format!("error: {code:?}\n"),
    };
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return format!("error: {code:?}\n"),
        other => return format!("error: {other:?}\n"),
    };
    let mut text = format!("status: {}\n", response.status());
    let mut body = Vec::new();
    if let Ok(incoming) = response.consume() {
        if let Ok(mut stream) = incoming.stream() {
            let _ = stream.read_to_end(&mut body);
        }
    }
    text.push_str(&String::from_utf8_lossy(&body));
    text
}

/// Streams `chunks` chunks of `size` bytes of `0123456789abcdef`, sleeping
/// `ms` between them.
fn send_slowly(response_out: ResponseOutparam, chunks: usize, size: usize, ms: u64) {
    let headers = Fields::new();
    headers
        .set("content-type", &[b"application/octet-stream".to_vec()])
        .expect("valid header");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("body");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = body.write().expect("writable");
    let chunk: Vec<u8> = b"0123456789abcdef".iter().copied().cycle().take(size).collect();
    for i in 0..chunks {
        if i > 0 {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        out.write_all(&chunk).expect("write");
        out.flush().expect("flush");
    }
    drop(out);
    OutgoingBody::finish(body, None).expect("finish");
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Answers with what the guest saw: method, path and query, headers, body.
fn echo(request: IncomingRequest, path_with_query: &str, response_out: ResponseOutparam) {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(m) => m,
    };
    let mut text = format!("method: {method}\npath: {path_with_query}\n");
    for (name, value) in request.headers().entries() {
        text.push_str(&format!(
            "header: {name}: {}\n",
            String::from_utf8_lossy(&value)
        ));
    }
    let mut body = Vec::new();
    if let Ok(incoming) = request.consume() {
        if let Ok(mut stream) = incoming.stream() {
            let _ = stream.read_to_end(&mut body);
        }
    }
    text.push_str(&format!("body-length: {}\n", body.len()));
    text.push_str("body: ");
    text.push_str(&String::from_utf8_lossy(&body));
    text.push('\n');
    send(response_out, 200, &text);
}

fn send(response_out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::new();
    headers
        .set("content-type", &[b"text/plain; charset=utf-8".to_vec()])
        .expect("valid header");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let body = response.body().expect("body");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = body.write().expect("writable");
    out.write_all(text.as_bytes()).expect("write");
    out.flush().expect("flush");
    drop(out);
    OutgoingBody::finish(body, None).expect("finish");
}

/// Streams `total` bytes of a repeating pattern (`0123456789abcdef`) in
/// 64 KiB writes, without holding the whole body at once.
fn send_streamed(response_out: ResponseOutparam, total: usize) {
    let headers = Fields::new();
    headers
        .set("content-type", &[b"application/octet-stream".to_vec()])
        .expect("valid header");
    let response = OutgoingResponse::new(headers);
    let body = response.body().expect("body");
    ResponseOutparam::set(response_out, Ok(response));
    let mut out = body.write().expect("writable");
    let pattern = b"0123456789abcdef";
    let chunk: Vec<u8> = pattern.iter().copied().cycle().take(64 << 10).collect();
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len());
        out.write_all(&chunk[..n]).expect("write");
        left -= n;
    }
    out.flush().expect("flush");
    drop(out);
    OutgoingBody::finish(body, None).expect("finish");
}
