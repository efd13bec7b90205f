//! The WAGI executor: a WASI preview1 core module exporting `_start`, run
//! as a CGI script (RFC 3875), one fresh instance per request.
//!
//! ```text
//! request ──▶ env: REQUEST_METHOD, PATH_INFO, ... HTTP_*, bindings
//!             stdin: the body (read whole, up to the body limit)
//!             argv: [SCRIPT_NAME]
//!                 │  _start
//!                 ▼
//! stdout ──▶ "Status: 201\nContent-Type: ...\n\n<body>" ──▶ response
//! stderr ──▶ the log, one event per line, tagged with the request id
//! ```
//!
//! The module runs under the same memory limit, deadline and isolation as a
//! component: no host environment, no files, no sockets. Its imports from a
//! module other than `wasi_snapshot_preview1` are satisfied by the
//! instances of its `wasm_module` bindings, instantiated in the same store.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use http_body_util::BodyExt;
use wasmtime::{Extern, ExternType, Instance, InstancePre, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryInputPipe;

use super::admission::Reservation;
use super::engine::Limited;
use super::host::{GuestLog, LogBudget, MemoryLimiter};
use super::wasi_http::classify;
use super::{Grants, GuestError, Invocation, LoadError, WasmEngine};
use crate::body::{self, Body};

/// The import module of WASI preview1.
const WASI_P1: &str = "wasi_snapshot_preview1";
/// Largest output (headers and body) a WAGI module may write to stdout.
pub const MAX_WAGI_OUTPUT: usize = 16 << 20;
/// Largest header section of the CGI output, and most header lines.
const MAX_CGI_HEADER_BYTES: usize = 64 << 10;
const MAX_CGI_HEADERS: usize = 100;

/// Store state of a WAGI instance.
pub struct WagiState {
    pub(crate) wasi: WasiP1Ctx,
    limiter: MemoryLimiter,
}

impl Limited for WagiState {
    fn limiter(&mut self) -> &mut MemoryLimiter {
        &mut self.limiter
    }
}

/// A compiled WAGI command module.
pub struct WagiModule {
    module: Module,
    /// When every import is WASI's: instantiation needs no per-request linking.
    pre: Option<InstancePre<WagiState>>,
    /// Import modules other than WASI's: each must be a `wasm_module` binding.
    bound_imports: BTreeSet<String>,
}

/// A core module bound to a WAGI module by a `wasm_module` binding.
pub struct LibraryModule {
    pre: InstancePre<WagiState>,
}

impl LibraryModule {
    /// Compiles `bytes` as a core module that imports nothing but WASI
    /// preview1 (blocking).
    pub fn load(engine: &WasmEngine, bytes: &[u8]) -> Result<Self, LoadError> {
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] != [1, 0, 0, 0] {
            return Err(LoadError::Unsupported {
                found: "a wasm_module binding must be a core WebAssembly module, and this is a component"
                    .into(),
            });
        }
        let module = Module::new(engine.engine(), bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let pre = engine.p1_linker.instantiate_pre(&module).map_err(|e| {
            LoadError::Link(format!(
                "a bound module may import only WASI preview1 functions: {e:#}"
            ))
        })?;
        Ok(LibraryModule { pre })
    }

    fn exports(&self) -> impl Iterator<Item = (&str, ExternType)> {
        self.pre.module().exports().map(|e| (e.name(), e.ty()))
    }
}

impl WagiModule {
    /// The compiled module, as `Module::deserialize` takes it back.
    pub(super) fn serialize(&self) -> Result<Vec<u8>, String> {
        self.module.serialize().map_err(|e| format!("{e:#}"))
    }

    /// Checks that `module` is a WASI command (`_start: () -> ()`) and that
    /// its WASI imports are ones wasmgate provides.
    pub(super) fn load(engine: &WasmEngine, module: Module) -> Result<Self, LoadError> {
        match module.get_export("_start") {
            Some(ExternType::Func(ty)) if ty.params().len() == 0 && ty.results().len() == 0 => {}
            Some(_) => {
                return Err(LoadError::Unsupported {
                    found: "this core module's `_start` export is not a function taking and returning nothing".into(),
                });
            }
            None => {
                return Err(LoadError::Unsupported {
                    found: "this core module does not export `_start` (a library module can only be bound to another module with a wasm_module binding)".into(),
                });
            }
        }
        let bound_imports: BTreeSet<String> = module
            .imports()
            .map(|i| i.module().to_string())
            .filter(|m| m != WASI_P1)
            .collect();
        let pre = if bound_imports.is_empty() {
            Some(
                engine
                    .p1_linker
                    .instantiate_pre(&module)
                    .map_err(|e| LoadError::Link(link_message(e)))?,
            )
        } else {
            // Check the WASI imports now; the bound ones are checked against
            // their modules at deploy and at each instantiation.
            let mut linker = engine.p1_linker.clone();
            linker
                .define_unknown_imports_as_traps(&module)
                .map_err(|e| LoadError::Link(link_message(e)))?;
            linker
                .instantiate_pre(&module)
                .map_err(|e| LoadError::Link(link_message(e)))?;
            None
        };
        Ok(WagiModule {
            module,
            pre,
            bound_imports,
        })
    }

    /// Checks the module's imports against `modules` (the version's
    /// `wasm_module` bindings): every non-WASI import module is bound, every
    /// imported item is exported by its binding with the same kind, and
    /// every binding is imported. Types are checked at instantiation.
    pub fn check_bindings(&self, modules: &[(String, Arc<LibraryModule>)]) -> Result<(), String> {
        for import in self.module.imports() {
            if import.module() == WASI_P1 {
                continue;
            }
            let Some((_, library)) = modules.iter().find(|(name, _)| name == import.module())
            else {
                return Err(format!(
                    "the module imports `{}` from module `{}`, but no wasm_module binding is named `{}`",
                    import.name(),
                    import.module(),
                    import.module()
                ));
            };
            let found = library
                .exports()
                .find(|(name, _)| *name == import.name())
                .map(|(_, ty)| ty);
            match (found, import.ty()) {
                (None, _) => {
                    return Err(format!(
                        "the module imports `{}` from `{}`, which the module bound as `{}` does not export",
                        import.name(),
                        import.module(),
                        import.module()
                    ));
                }
                (Some(have), want) if kind(&have) != kind(&want) => {
                    return Err(format!(
                        "the module imports `{}` from `{}` as a {}, but the bound module exports a {}",
                        import.name(),
                        import.module(),
                        kind(&want),
                        kind(&have)
                    ));
                }
                _ => {}
            }
        }
        if let Some((name, _)) = modules
            .iter()
            .find(|(name, _)| !self.bound_imports.contains(name))
        {
            return Err(format!(
                "wasm_module binding `{name}` is never imported by the main module (it imports from: {})",
                if self.bound_imports.is_empty() {
                    "WASI only".to_string()
                } else {
                    self.bound_imports
                        .iter()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
        Ok(())
    }

    /// Instantiates the module with its bindings in a throwaway store
    /// without running it: the deploy-time proof that it links.
    pub async fn check_link(
        &self,
        engine: &WasmEngine,
        modules: &[(String, Arc<LibraryModule>)],
    ) -> Result<(), String> {
        self.check_bindings(modules)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let state = WagiState {
            wasi: WasiCtxBuilder::new().build_p1(),
            limiter: MemoryLimiter::new(
                engine.limits().memory_limit_bytes,
                engine.admission().memory().for_route(""),
            ),
        };
        let mut store = engine.new_store(state, deadline, "");
        self.instantiate(engine, &mut store, modules)
            .await
            .map(drop)
            .map_err(link_message)
    }

    async fn instantiate(
        &self,
        engine: &WasmEngine,
        store: &mut Store<WagiState>,
        modules: &[(String, Arc<LibraryModule>)],
    ) -> wasmtime::Result<Instance> {
        if let Some(pre) = &self.pre {
            return pre.instantiate_async(store).await;
        }
        let mut instances = Vec::with_capacity(self.bound_imports.len());
        for (name, library) in modules {
            if self.bound_imports.contains(name) {
                instances.push((name, library.pre.instantiate_async(&mut *store).await?));
            }
        }
        let mut imports: Vec<Extern> = Vec::new();
        for import in self.module.imports() {
            let found = if import.module() == WASI_P1 {
                Some(
                    engine
                        .p1_linker
                        .get(&mut *store, import.module(), import.name())?,
                )
            } else {
                instances
                    .iter()
                    .find(|(name, _)| *name == import.module())
                    .and_then(|(_, instance)| instance.get_export(&mut *store, import.name()))
            };
            imports.push(found.ok_or_else(|| {
                wasmtime::format_err!(
                    "import `{}` from `{}` is not provided",
                    import.name(),
                    import.module()
                )
            })?);
        }
        Instance::new_async(store, &self.module, &imports).await
    }

    /// Runs one fresh instance as a CGI script for `request`.
    pub async fn run(
        &self,
        engine: &WasmEngine,
        request: http::Request<Body>,
        invocation: &Invocation,
        grants: &Grants,
    ) -> Result<http::Response<Body>, GuestError> {
        let deadline = invocation.deadline;
        let budget = invocation.budget;
        let (parts, body) = request.into_parts();
        // A body still arriving at the deadline is the client's slowness.
        let memory = engine.admission().memory().for_route(&invocation.route);
        let mut body_hold = memory.hold();
        let body = tokio::time::timeout_at(
            deadline.into(),
            read_body(&parts, body, invocation.max_body_bytes, &mut body_hold),
        )
        .await
        .map_err(|_| GuestError::RequestTimeout)??;
        let permit = engine.acquire_slot(&invocation.route, deadline).await?;

        let env = cgi_environment(&parts, body.len(), invocation, &grants.env);
        let stdout = CgiOutput::default();
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&[invocation.route_path.as_str()])
            .envs(&env)
            .stdin(MemoryInputPipe::new(body))
            .stdout(stdout.clone())
            .stderr(GuestLog::new(
                &LogBudget::new(&invocation.request_id),
                "stderr",
            ));
        let memory_limit = invocation.memory_limit_bytes;
        let state = WagiState {
            wasi: wasi.build_p1(),
            limiter: MemoryLimiter::new(memory_limit, memory.clone()),
        };
        let mut store = engine.new_store(state, deadline, &invocation.route);
        let memory_hit = store.data().limiter.hit_flag();
        let budget_hit = store.data().limiter.budget_flag();

        let run = async {
            let instance = match self.instantiate(engine, &mut store, &grants.modules).await {
                Ok(instance) => instance,
                // A start function that trapped, ran out of time or memory
                // is the guest's failure; anything else is a link failure.
                Err(error)
                    if error.is::<wasmtime::Trap>()
                        || error.is::<wasmtime::PoolConcurrencyLimitError>()
                        || memory_hit.load(Ordering::Relaxed)
                        || budget_hit.load(Ordering::Relaxed) =>
                {
                    return Err(classify(
                        error,
                        memory_hit.load(Ordering::Relaxed),
                        budget_hit.load(Ordering::Relaxed),
                        memory_limit,
                        budget,
                    ));
                }
                Err(error) => return Err(GuestError::Link(link_message(error))),
            };
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .map_err(|e| GuestError::Link(format!("{e:#}")))?;
            match start.call_async(&mut store, ()).await {
                Ok(()) => Ok(()),
                Err(error) => match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                    Some(exit) if exit.0 == 0 => Ok(()),
                    _ if stdout.overflowed() => Err(too_much_output()),
                    Some(exit) => Err(GuestError::Exit(exit.0)),
                    None => Err(classify(
                        error,
                        memory_hit.load(Ordering::Relaxed),
                        budget_hit.load(Ordering::Relaxed),
                        memory_limit,
                        budget,
                    )),
                },
            }
        };
        match tokio::time::timeout_at(deadline.into(), run).await {
            Ok(outcome) => outcome?,
            Err(_) => return Err(GuestError::Timeout(budget)),
        }
        drop(store);
        drop(permit);
        // Writes past the cap fail inside the guest, and a guest that
        // ignores that (printf does) exits 0: never answer a cut-off body.
        if stdout.overflowed() {
            return Err(too_much_output());
        }
        let output = stdout.contents();
        let response = parse_cgi(&output).map_err(GuestError::BadOutput)?;
        Ok(response.map(body::full))
    }
}

fn too_much_output() -> GuestError {
    GuestError::BadOutput(format!(
        "the function wrote more than {} MiB to stdout",
        MAX_WAGI_OUTPUT >> 20
    ))
}

/// A WAGI module's stdout: kept in memory up to [`MAX_WAGI_OUTPUT`]; a
/// write past it fails in the guest and marks the output as overflowed,
/// so that a guest ignoring the error cannot answer a cut-off body.
#[derive(Clone, Default)]
struct CgiOutput {
    inner: Arc<std::sync::Mutex<CgiBuffer>>,
}

#[derive(Default)]
struct CgiBuffer {
    bytes: bytes::BytesMut,
    overflowed: bool,
}

impl CgiOutput {
    fn lock(&self) -> std::sync::MutexGuard<'_, CgiBuffer> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    fn contents(&self) -> Bytes {
        self.lock().bytes.clone().freeze()
    }
}

impl wasmtime_wasi::cli::IsTerminal for CgiOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for CgiOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for CgiOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut output = self.lock();
        if output.bytes.len() + buf.len() > MAX_WAGI_OUTPUT {
            output.overflowed = true;
            return std::task::Poll::Ready(Err(std::io::Error::other(
                "stdout is over wasmgate's CGI output limit",
            )));
        }
        output.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

fn kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}

fn link_message(error: wasmtime::Error) -> String {
    format!("{error:#}")
}

/// Reads the whole request body, refusing one over `limit` before reading
/// it when its length is declared.
/// Reads the whole body (a CGI guest's stdin), up to `limit`, holding its
/// bytes from the memory budget all guests share: a hundred uploads
/// buffered at once are a 503 when the budget is spent, not the host's
/// memory.
async fn read_body(
    parts: &http::request::Parts,
    body: Body,
    limit: u64,
    hold: &mut Reservation,
) -> Result<Bytes, GuestError> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(GuestError::PayloadTooLarge(limit));
    }
    let mut body = body;
    let mut buffer = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            GuestError::BadRequest(format!("the request body could not be read: {error}"))
        })?;
        if let Ok(data) = frame.into_data() {
            if buffer.len() + data.len() > limit {
                return Err(GuestError::PayloadTooLarge(limit));
            }
            if !hold.grow(data.len()) {
                return Err(GuestError::MemoryBudget);
            }
            buffer.extend_from_slice(&data);
        }
    }
    Ok(buffer.freeze())
}

/// The CGI meta-variables for `parts` (RFC 3875 section 4.1), then every
/// header as `HTTP_*`, then the version's bindings.
fn cgi_environment(
    parts: &http::request::Parts,
    body_len: usize,
    invocation: &Invocation,
    bindings: &[(String, String)],
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::with_capacity(24 + parts.headers.len());
    let mut set = |name: &str, value: String| env.push((name.to_string(), value));
    let host_header = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let (server_name, port) = split_host_port(&host_header);
    let default_port = if invocation.https { "443" } else { "80" };
    let (script_name, raw_path_info) = split_path(parts.uri.path(), &invocation.route_path);
    let query = parts.uri.query().unwrap_or("").to_string();
    let scheme = if invocation.https { "https" } else { "http" };

    set("GATEWAY_INTERFACE", "CGI/1.1".into());
    set(
        "SERVER_SOFTWARE",
        concat!("wasmgate/", env!("CARGO_PKG_VERSION")).into(),
    );
    set("SERVER_PROTOCOL", format!("{:?}", parts.version));
    set("SERVER_NAME", server_name.to_string());
    set("SERVER_PORT", port.unwrap_or(default_port).to_string());
    set("REQUEST_METHOD", parts.method.as_str().to_string());
    set("SCRIPT_NAME", script_name.clone());
    set("PATH_INFO", percent_decode(&raw_path_info));
    set("X_RAW_PATH_INFO", raw_path_info);
    set("QUERY_STRING", query.clone());
    set("X_MATCHED_ROUTE", invocation.route.clone());
    set(
        "X_FULL_URL",
        format!(
            "{scheme}://{host_header}{}{}{}",
            parts.uri.path(),
            if query.is_empty() { "" } else { "?" },
            query
        ),
    );
    let remote = invocation.remote_addr.clone().unwrap_or_default();
    set("REMOTE_ADDR", remote.clone());
    set("REMOTE_HOST", remote);
    set("CONTENT_LENGTH", body_len.to_string());
    if let Some(ty) = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    {
        set("CONTENT_TYPE", ty);
    } else {
        set("CONTENT_TYPE", String::new());
    }
    for name in parts.headers.keys() {
        if name == header::CONTENT_TYPE || name == header::CONTENT_LENGTH {
            continue;
        }
        let separator = if name == header::COOKIE { "; " } else { ", " };
        let value = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect::<Vec<_>>()
            .join(separator);
        let var = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        set(&var, value);
    }
    env.extend(bindings.iter().cloned());
    env
}

/// `host:port` → (`host`, `Some(port)`), with IPv6 brackets kept.
fn split_host_port(host: &str) -> (&str, Option<&str>) {
    match host.rsplit_once(':') {
        Some((name, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!name.starts_with('[') || name.ends_with(']')) =>
        {
            (name, Some(port))
        }
        _ => (host, None),
    }
}

/// Splits the request path into SCRIPT_NAME (the route's prefix, as the
/// client wrote it) and PATH_INFO (the rest), by path segments: the route
/// `/api` on `/api/users/7` gives (`/api`, `/users/7`); the route `/` gives
/// (``, the whole path).
pub(super) fn split_path(path: &str, route_path: &str) -> (String, String) {
    let prefix_segments = route_path.split('/').filter(|s| !s.is_empty()).count();
    if prefix_segments == 0 {
        return (String::new(), path.to_string());
    }
    let mut seen = 0;
    for (index, _) in path.match_indices('/') {
        let segment_end = path[index + 1..]
            .find('/')
            .map_or(path.len(), |i| index + 1 + i);
        if segment_end > index + 1 {
            seen += 1;
            if seen == prefix_segments {
                return (
                    path[..segment_end].to_string(),
                    path[segment_end..].to_string(),
                );
            }
        }
    }
    (path.to_string(), String::new())
}

/// Decodes `%XX` escapes (RFC 3875 PATH_INFO is decoded). Invalid UTF-8 is
/// replaced; a decoded NUL, which no environment can hold, keeps the raw form.
fn percent_decode(raw: &str) -> String {
    if !raw.contains('%') {
        return raw.to_string();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex_digit(bytes[i + 1]), hex_digit(bytes[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    if out.contains(&0) {
        return raw.to_string();
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Parses CGI output: header lines (`Name: value`, LF or CRLF), a blank
/// line, then the body. `Status: NNN reason` sets the status (default 200),
/// a `Location` without a `Status` makes a 302. Hop-by-hop headers and
/// `Content-Length` (the body's real length is sent) are dropped.
pub fn parse_cgi(output: &[u8]) -> Result<http::Response<Bytes>, String> {
    if output.is_empty() {
        return Err("the function wrote nothing to stdout (a CGI response needs headers, a blank line and the body)".into());
    }
    let mut response = http::Response::new(Bytes::new());
    let mut status: Option<StatusCode> = None;
    let mut position = 0;
    let mut line_number = 0;
    loop {
        let Some(end) = output[position..].iter().position(|b| *b == b'\n') else {
            return Err(format!(
                "the output has no blank line ending its headers (after {line_number} header lines)"
            ));
        };
        let mut line = &output[position..position + end];
        position += end + 1;
        if position > MAX_CGI_HEADER_BYTES {
            return Err(format!(
                "the output's headers exceed {} KiB",
                MAX_CGI_HEADER_BYTES >> 10
            ));
        }
        if let Some(stripped) = line.strip_suffix(b"\r") {
            line = stripped;
        }
        if line.is_empty() {
            if line_number == 0 {
                return Err("the output starts with a blank line: it has no headers (send at least Content-Type, Location or Status)".into());
            }
            break;
        }
        line_number += 1;
        if line_number > MAX_CGI_HEADERS {
            return Err(format!(
                "the output has more than {MAX_CGI_HEADERS} header lines"
            ));
        }
        // Bytes, not text: a value may carry obs-text (0x80-0xFF), which
        // goes out as the guest wrote it.
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Err(format!(
                "output line {line_number} is not a `Name: value` header: {:?}",
                truncate(&String::from_utf8_lossy(line))
            ));
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"status") {
            let value = String::from_utf8_lossy(value);
            let value = value.as_ref();
            let code = value.split_whitespace().next().unwrap_or("");
            let parsed = code
                .parse::<u16>()
                .ok()
                .filter(|c| (200..=599).contains(c))
                .and_then(|c| StatusCode::from_u16(c).ok());
            match parsed {
                Some(code) => status = Some(code),
                None => {
                    return Err(format!(
                        "output line {line_number}: `Status: {}` is not a final status code (200-599)",
                        truncate(value)
                    ));
                }
            }
            continue;
        }
        let name = HeaderName::from_bytes(name.trim_ascii_end()).map_err(|_| {
            format!(
                "output line {line_number}: {:?} is not a valid header name",
                truncate(&String::from_utf8_lossy(name))
            )
        })?;
        let value = HeaderValue::from_bytes(value).map_err(|_| {
            format!("output line {line_number}: the value of {name} is not a valid header value")
        })?;
        if is_hop_by_hop(&name) || name == header::CONTENT_LENGTH {
            continue;
        }
        response.headers_mut().append(name, value);
    }
    let status = status.unwrap_or(if response.headers().contains_key(header::LOCATION) {
        StatusCode::FOUND
    } else {
        StatusCode::OK
    });
    *response.status_mut() = status;
    *response.body_mut() = Bytes::copy_from_slice(&output[position..]);
    Ok(response)
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name == header::TRAILER
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn truncate(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_headers_and_body() {
        let r = parse_cgi(
            b"Status: 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello\n",
        )
        .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["content-type"], "text/plain");
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert_eq!(r.body().as_ref(), b"hello\n");

        let r = parse_cgi(b"Content-Type: text/html\n\n").unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.body().is_empty());
    }

    #[test]
    fn location_without_status_is_a_302() {
        let r = parse_cgi(b"Location: /elsewhere\n\n").unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(r.headers()["location"], "/elsewhere");
        let r = parse_cgi(b"Status: 301\nLocation: /x\n\n").unwrap();
        assert_eq!(r.status(), 301);
    }

    #[test]
    fn drops_framing_headers_the_host_sets() {
        let r =
            parse_cgi(b"Content-Length: 99\nTransfer-Encoding: chunked\nX-Ok: 1\n\nab").unwrap();
        assert!(r.headers().get("content-length").is_none());
        assert!(r.headers().get("transfer-encoding").is_none());
        assert_eq!(r.headers()["x-ok"], "1");
    }

    #[test]
    fn header_values_go_out_byte_for_byte() {
        // Found by the property tests: obs-text bytes became U+FFFD, and a
        // value ending in a Unicode space (NEL, U+0085) lost it.
        let r = parse_cgi(b"X-Latin1: caf\xe9\nX-Nel: a\xc2\x85\nX-Pad: \t a b \t\n\n").unwrap();
        assert_eq!(r.headers()["x-latin1"].as_bytes(), b"caf\xe9");
        assert_eq!(r.headers()["x-nel"].as_bytes(), b"a\xc2\x85");
        assert_eq!(r.headers()["x-pad"].as_bytes(), b"a b");
    }

    #[test]
    fn refuses_malformed_output() {
        for (output, expected) in [
            (&b""[..], "wrote nothing"),
            (b"Content-Type: text/plain", "no blank line"),
            (
                b"Content-Type: text/plain\nbody without blank line",
                "no blank line",
            ),
            (b"\nbody", "starts with a blank line"),
            (
                b"this is not a header line\n\nbody\n",
                "not a `Name: value` header",
            ),
            (b"Status: 99\n\n", "not a final status code"),
            (b"Status: 103 Early Hints\n\n", "not a final status code"),
            (b"Status: abc\n\n", "not a final status code"),
            (b"Bad Name: x\n\n", "not a valid header name"),
        ] {
            let error = parse_cgi(output).expect_err(&String::from_utf8_lossy(output));
            assert!(error.contains(expected), "{error}");
        }
        let many = "X: 1\n".repeat(MAX_CGI_HEADERS + 1) + "\n";
        assert!(
            parse_cgi(many.as_bytes())
                .unwrap_err()
                .contains("more than")
        );
    }

    #[test]
    fn splits_script_name_and_path_info_by_segments() {
        assert_eq!(
            split_path("/api/users/7", "/api"),
            ("/api".into(), "/users/7".into())
        );
        assert_eq!(split_path("/api", "/api"), ("/api".into(), "".into()));
        assert_eq!(split_path("/api/", "/api"), ("/api".into(), "/".into()));
        assert_eq!(
            split_path("//api//x", "/api"),
            ("//api".into(), "//x".into())
        );
        assert_eq!(split_path("/a/b/c", "/a/b"), ("/a/b".into(), "/c".into()));
        assert_eq!(split_path("/x/y", "/"), ("".into(), "/x/y".into()));
    }

    #[test]
    fn decodes_path_info() {
        assert_eq!(percent_decode("/a%20b/%C3%A9"), "/a b/é");
        assert_eq!(percent_decode("/100%"), "/100%");
        assert_eq!(percent_decode("/%zz"), "/%zz");
        assert_eq!(percent_decode("/a%00b"), "/a%00b");
    }

    #[test]
    fn splits_host_and_port() {
        assert_eq!(
            split_host_port("example.com:8080"),
            ("example.com", Some("8080"))
        );
        assert_eq!(split_host_port("example.com"), ("example.com", None));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some("80")));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
    }
}
