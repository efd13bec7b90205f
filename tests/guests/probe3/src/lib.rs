//! The WASI 0.3 test guest: a component exporting `wasi:http/handler@0.3.0`
//! (written with the `wasip3` crate, 0.7.1+wasi-0.3.0) that also imports
//! `wasi:config/store@0.2.0-rc.1` and `wasi:keyvalue/{store,atomics,batch}
//! @0.2.0-draft` (bindings generated from the WIT vendored in /wit). Like
//! the wasi:http 0.2 probe, the last segment of the request path chooses
//! what it does, so the integration tests can drive every p3 code path of
//! the host (streamed bodies both ways, traps, fuel and memory limits,
//! config, key-value, environment, outbound requests) through one module.
//!
//! It is `no_std` so that it imports nothing but WASI 0.3 (plus config and
//! key-value): Rust's std on wasm32-wasip2 is built on wasi:cli and wasi:io
//! @0.2.x (its panic hook alone pulls in stderr). The environment therefore
//! comes from `wasi:cli/environment@0.3.0`, and work that outlives `handle`
//! (writing a response body) runs on [`detach`], not `wasip3::spawn`
//! (which needs std).
//!
//! Rebuild with `make fixtures` (needs `rustup target add wasm32-wasip2`).

#![no_std]

extern crate alloc;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::task::Wake;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Waker};

use wasip3::http::types::{ErrorCode, Fields, Method, Request, Response, Scheme};
use wasip3::{wit_future, wit_stream};
use wit_bindgen::{StreamReader, StreamResult};

#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// A panic is a trap (there is no stderr to print it on).
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    core::arch::wasm32::unreachable()
}

// memcmp, memcpy and friends, which std would link in: wasi-libc's, from
// the target's self-contained sysroot (they import nothing).
#[link(name = "c")]
unsafe extern "C" {}

/// The canonical ABI's allocator (on wasm32-wasip2 wit-bindgen leaves it
/// to wasi-libc, which std would bring): the global allocator's.
#[unsafe(export_name = "cabi_realloc")]
unsafe extern "C" fn cabi_realloc(
    old_ptr: *mut u8,
    old_len: usize,
    align: usize,
    new_len: usize,
) -> *mut u8 {
    use alloc::alloc::{Layout, alloc, realloc};
    if new_len == 0 {
        return align as *mut u8;
    }
    let ptr = unsafe {
        if old_len == 0 {
            alloc(Layout::from_size_align_unchecked(new_len, align))
        } else {
            realloc(
                old_ptr,
                Layout::from_size_align_unchecked(old_len, align),
                new_len,
            )
        }
    };
    if ptr.is_null() {
        core::arch::wasm32::unreachable();
    }
    ptr
}

wasip3::http::service::export!(Probe3);

/// wasi:config and wasi:keyvalue, generated from the repository's /wit.
mod wit {
    wit_bindgen::generate!({
        inline: "
            package wasmgate:probe3;

            world imports {
                include wasi:config/imports@0.2.0-rc.1;
                include wasi:keyvalue/imports@0.2.0-draft;
            }
        ",
        path: ["../../../wit/config", "../../../wit/keyvalue"],
        world: "wasmgate:probe3/imports",
        generate_all,
    });
}

use wit::wasi::config::store as config;
use wit::wasi::keyvalue::{atomics, batch, store as kv};

/// Runs `future` to completion in the background of the current
/// component-model task, which (wit-bindgen's executor) does not end while
/// a waitable it registered is pending: the future is polled when first
/// detached and then from its waker, which the stream and future events
/// wake. Enough for the stream/future I/O done here; the std-only
/// `wasip3::spawn` does the general job.
fn detach(future: impl Future<Output = ()> + 'static) {
    struct Detached {
        future: RefCell<Option<Pin<Box<dyn Future<Output = ()>>>>>,
        woken_while_polling: Cell<bool>,
    }
    // SAFETY: wasm32 here has a single thread.
    unsafe impl Send for Detached {}
    unsafe impl Sync for Detached {}
    impl Wake for Detached {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            let Ok(mut slot) = self.future.try_borrow_mut() else {
                self.woken_while_polling.set(true);
                return;
            };
            let waker = Waker::from(self.clone());
            let mut cx = Context::from_waker(&waker);
            loop {
                self.woken_while_polling.set(false);
                let Some(future) = slot.as_mut() else { return };
                if future.as_mut().poll(&mut cx).is_ready() {
                    *slot = None;
                    return;
                }
                if !self.woken_while_polling.get() {
                    return;
                }
            }
        }
    }
    Arc::new(Detached {
        future: RefCell::new(Some(Box::pin(future))),
        woken_while_polling: Cell::new(false),
    })
    .wake();
}

struct Probe3;

impl wasip3::exports::http::handler::Guest for Probe3 {
    async fn handle(request: Request) -> Result<Response, ErrorCode> {
        let path_with_query = request.get_path_with_query().unwrap_or_default();
        let (path, query) = match path_with_query.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (path_with_query.clone(), String::new()),
        };
        let action = path.rsplit('/').next().unwrap_or_default();
        let param = |name: &str| query_param(&query, name);
        Ok(match action {
            "echo" => echo(request),
            "headers" => headers(&request),
            "stream" => {
                let chunks = param("chunks").and_then(|v| v.parse().ok()).unwrap_or(10);
                let size = param("size").and_then(|v| v.parse().ok()).unwrap_or(1024);
                stream(chunks, size)
            }
            "trap" => core::arch::wasm32::unreachable(),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = core::hint::black_box(n.wrapping_add(1));
                }
            }
            "memory" => {
                // 1 MiB at a time, every page written so it is really
                // committed, every block kept reachable: grows until the
                // host's limit stops it.
                let mut blocks: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = vec![0u8; 1 << 20];
                    for i in (0..block.len()).step_by(4096) {
                        block[i] = 1;
                    }
                    blocks.push(core::hint::black_box(block));
                }
            }
            "config" => {
                let key = param("key").unwrap_or_default();
                match config::get(&key) {
                    Ok(Some(value)) => text(200, value),
                    Ok(None) => text(404, "no such key"),
                    Err(e) => text(500, format!("error: {}", config_error(&e))),
                }
            }
            "config-all" => match config::get_all() {
                Ok(pairs) => {
                    let fields: Vec<String> = pairs
                        .iter()
                        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
                        .collect();
                    json(200, format!("{{{}}}", fields.join(",")))
                }
                Err(e) => text(500, format!("error: {}", config_error(&e))),
            },
            "env" => {
                let key = param("key").unwrap_or_default();
                let vars = wasip3::cli::environment::get_environment();
                match vars.into_iter().find(|(k, _)| *k == key) {
                    Some((_, value)) => text(200, value),
                    None => text(404, "no such variable"),
                }
            }
            "kv" => match keyvalue(&param) {
                Ok((status, body)) => bytes_response(status, "text/plain; charset=utf-8", body),
                Err(e) => text(500, format!("error: {}", kv_error(&e))),
            },
            "fetch" => {
                let url = param("url").unwrap_or_default();
                fetch(Method::Get, &url, None).await
            }
            "post-fetch" => {
                let url = param("url").unwrap_or_default();
                fetch(Method::Post, &url, Some(64 << 10)).await
            }
            _ => text(200, format!("probe3 {path}")),
        })
    }
}

/// A response with `headers` and `body` (none: empty), trailers none.
fn response(status: u16, headers: Fields, body: Option<StreamReader<u8>>) -> Response {
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    // Dropping the writer sends the default, `Ok(None)`: no trailers.
    drop(trailers_tx);
    let (response, _transmitted) = Response::new(headers, body, trailers_rx);
    response.set_status_code(status).expect("valid status");
    response
}

/// A response whose body is `bytes`, written after `handle` has returned.
fn bytes_response(status: u16, content_type: &str, bytes: Vec<u8>) -> Response {
    let headers = Fields::new();
    headers
        .set("content-type", &[content_type.as_bytes().to_vec()])
        .expect("valid header");
    let (mut body_tx, body_rx) = wit_stream::new();
    detach(async move {
        body_tx.write_all(bytes).await;
    });
    response(status, headers, Some(body_rx))
}

fn text(status: u16, body: impl Into<String>) -> Response {
    bytes_response(
        status,
        "text/plain; charset=utf-8",
        body.into().into_bytes(),
    )
}

fn json(status: u16, body: String) -> Response {
    bytes_response(status, "application/json", body.into_bytes())
}

/// Copies the request body into the response body one chunk at a time, as
/// it arrives, then forwards the request's trailers.
fn echo(request: Request) -> Response {
    let headers = Fields::new();
    for value in request.get_headers().get("content-type") {
        let _ = headers.append("content-type", &value);
    }
    let (consumed_tx, consumed_rx) = wit_future::new(|| Ok(()));
    drop(consumed_tx);
    let (mut body_in, trailers_in) = Request::consume_body(request, consumed_rx);
    let (mut body_tx, body_rx) = wit_stream::new();
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    detach(async move {
        let mut buf = Vec::with_capacity(16 << 10);
        loop {
            let (result, chunk) = body_in.read(buf).await;
            match result {
                StreamResult::Complete(_) => {
                    let rest = body_tx.write_all(chunk).await;
                    if !rest.is_empty() {
                        return; // the client went away
                    }
                    buf = Vec::with_capacity(16 << 10);
                }
                StreamResult::Dropped | StreamResult::Cancelled => break,
            }
        }
        drop(body_tx);
        let trailers = trailers_in.await;
        let _ = trailers_tx.write(trailers).await;
    });
    let (response, _transmitted) = Response::new(headers, Some(body_rx), trailers_rx);
    response
}

/// All request headers (name -> array of values) and the request line's
/// parts, as JSON.
fn headers(request: &Request) -> Response {
    let mut names: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in request.get_headers().copy_all() {
        let value = String::from_utf8_lossy(&value).into_owned();
        match names.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value),
            None => names.push((name, vec![value])),
        }
    }
    let mut fields: Vec<String> = names
        .iter()
        .map(|(name, values)| {
            let values: Vec<String> = values.iter().map(|v| json_string(v)).collect();
            format!("{}:[{}]", json_string(name), values.join(","))
        })
        .collect();
    let method = match request.get_method() {
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
    let scheme = match request.get_scheme() {
        Some(Scheme::Http) => json_string("http"),
        Some(Scheme::Https) => json_string("https"),
        Some(Scheme::Other(s)) => json_string(&s),
        None => "null".to_string(),
    };
    let opt = |v: Option<String>| v.map_or("null".to_string(), |v| json_string(&v));
    fields.push(format!("\"method\":{}", json_string(&method)));
    fields.push(format!(
        "\"path_with_query\":{}",
        opt(request.get_path_with_query())
    ));
    fields.push(format!("\"authority\":{}", opt(request.get_authority())));
    fields.push(format!("\"scheme\":{scheme}"));
    json(200, format!("{{{}}}", fields.join(",")))
}

/// `chunks` writes of `size` bytes of `x`, each one written (and so
/// delivered) before the next is made.
fn stream(chunks: usize, size: usize) -> Response {
    let headers = Fields::new();
    headers
        .set("content-type", &[b"application/octet-stream".to_vec()])
        .expect("valid header");
    let (mut body_tx, body_rx) = wit_stream::new();
    detach(async move {
        for _ in 0..chunks {
            let rest = body_tx.write_all(vec![b'x'; size]).await;
            if !rest.is_empty() {
                return;
            }
        }
    });
    response(200, headers, Some(body_rx))
}

/// `kv?store=S&op=OP&key=K...`: (status, body) or the store's error.
fn keyvalue(param: &dyn Fn(&str) -> Option<String>) -> Result<(u16, Vec<u8>), kv::Error> {
    let store = param("store").unwrap_or_default();
    let op = param("op").unwrap_or_default();
    let key = param("key").unwrap_or_default();
    let list = |name: &str| -> Vec<String> {
        param(name)
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default()
    };
    let ok = || Ok((200, b"ok".to_vec()));
    let bucket = kv::open(&store)?;
    match op.as_str() {
        "get" => match bucket.get(&key)? {
            Some(value) => Ok((200, value)),
            None => Ok((404, b"no such key".to_vec())),
        },
        "set" => {
            // `size=N`: a value of N bytes, too long for a query string.
            let value = match param("size").and_then(|n| n.parse::<usize>().ok()) {
                Some(size) => alloc::vec![b'v'; size],
                None => param("value").unwrap_or_default().into_bytes(),
            };
            bucket.set(&key, &value)?;
            ok()
        }
        "delete" => {
            bucket.delete(&key)?;
            ok()
        }
        "exists" => Ok((200, bucket.exists(&key)?.to_string().into_bytes())),
        "list" => {
            let cursor = param("cursor").and_then(|c| c.parse().ok());
            let page = bucket.list_keys(cursor)?;
            let keys: Vec<String> = page.keys.iter().map(|k| json_string(k)).collect();
            let cursor = page.cursor.map_or("null".to_string(), |c| c.to_string());
            let body = format!("{{\"keys\":[{}],\"cursor\":{cursor}}}", keys.join(","));
            Ok((200, body.into_bytes()))
        }
        "increment" => {
            let delta = param("delta").and_then(|d| d.parse().ok()).unwrap_or(1);
            let value = atomics::increment(&bucket, &key, delta)?;
            Ok((200, value.to_string().into_bytes()))
        }
        "get-many" => {
            let found = batch::get_many(&bucket, &list("keys"))?;
            let fields: Vec<String> = found
                .into_iter()
                .flatten()
                .map(|(k, v)| {
                    format!(
                        "{}:{}",
                        json_string(&k),
                        json_string(&String::from_utf8_lossy(&v))
                    )
                })
                .collect();
            Ok((200, format!("{{{}}}", fields.join(",")).into_bytes()))
        }
        "set-many" => {
            let pairs: Vec<(String, Vec<u8>)> = list("keys")
                .into_iter()
                .zip(list("values").into_iter().map(String::into_bytes))
                .collect();
            batch::set_many(&bucket, &pairs)?;
            ok()
        }
        "delete-many" => {
            batch::delete_many(&bucket, &list("keys"))?;
            ok()
        }
        other => Ok((400, format!("unknown op: {other}").into_bytes())),
    }
}

fn kv_error(e: &kv::Error) -> String {
    match e {
        kv::Error::NoSuchStore => "no-such-store".to_string(),
        kv::Error::AccessDenied => "access-denied".to_string(),
        kv::Error::Other(msg) => format!("other: {msg}"),
    }
}

fn config_error(e: &config::Error) -> String {
    match e {
        config::Error::Upstream(msg) => format!("upstream: {msg}"),
        config::Error::Io(msg) => format!("io: {msg}"),
    }
}

/// An outbound request to `url` through `wasi:http/client`; with
/// `body_len`, a body of that many bytes streamed from here while the
/// request is in flight. 200 `status: N\n<body>`, or 502 `error: <code>`.
async fn fetch(method: Method, url: &str, body_len: Option<usize>) -> Response {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (Scheme::Https, rest),
        Some(("http", rest)) => (Scheme::Http, rest),
        Some((other, rest)) => (Scheme::Other(other.to_string()), rest),
        None => (Scheme::Http, url),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let headers = Fields::new();
    let body = body_len.map(|len| {
        let _ = headers.set("content-type", &[b"application/octet-stream".to_vec()]);
        let _ = headers.set("content-length", &[len.to_string().into_bytes()]);
        let (mut body_tx, body_rx) = wit_stream::new();
        detach(async move {
            let mut left = len;
            while left > 0 {
                let n = left.min(16 << 10);
                if !body_tx.write_all(vec![b'p'; n]).await.is_empty() {
                    return; // the host dropped the body: refused or reset
                }
                left -= n;
            }
        });
        body_rx
    });
    let (trailers_tx, trailers_rx) = wit_future::new(|| Ok(None));
    drop(trailers_tx);
    let (request, _transmitted) = Request::new(headers, body, trailers_rx, None);
    let _ = request.set_method(&method);
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(&path));
    let response = match wasip3::http::client::send(request).await {
        Ok(response) => response,
        Err(code) => return text(502, format!("error: {}", error_code(&code))),
    };
    let status = response.get_status_code();
    let (done_tx, done_rx) = wit_future::new(|| Ok(()));
    drop(done_tx);
    let (body, trailers) = Response::consume_body(response, done_rx);
    let body = body.collect().await;
    if let Err(code) = trailers.await {
        return text(502, format!("error: {}", error_code(&code)));
    }
    let mut out = format!("status: {status}\n").into_bytes();
    out.extend_from_slice(&body);
    bytes_response(200, "text/plain; charset=utf-8", out)
}

/// The wasi:http error code as text; the denial spelled as the WIT does.
fn error_code(code: &ErrorCode) -> String {
    match code {
        ErrorCode::HttpRequestDenied => "HTTP-request-denied".to_string(),
        other => format!("{other:?}"),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// `%XX` escapes decoded (and nothing else: `+` stays `+`, since values are
/// often URLs).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
