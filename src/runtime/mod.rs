//! The runtime: turns verified module bytes into a compiled, pre-instantiated
//! handle ([`LoadedModule`]) and runs one fresh instance per request.
//!
//! ```text
//! bytes ──load──▶ LoadedModule (compiled once, cached by digest)
//!                    │
//! request ──run──▶ fresh Store + instance ──▶ response (streamed)
//! ```
//!
//! A guest gets nothing by default: no host environment, no files, no
//! sockets, no outbound HTTP. Every instance runs under the memory limit and
//! the wall-clock deadline of [`RuntimeLimits`].

pub mod admission;
pub mod bindings;
mod engine;
mod host;
pub mod outbound;
mod send;
mod wagi;
mod wasi_config;
mod wasi_http;
pub mod wasi_keyvalue;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use engine::{EPOCH_TICK, PoolingMode, RuntimeLimits, WasmEngine, default_route_share};
pub use host::MAX_GUEST_LOG_BYTES;
pub use wagi::{LibraryModule, MAX_WAGI_OUTPUT, WagiModule, parse_cgi};
pub use wasi_config::ConfigValues;
pub use wasi_http::HttpComponent;
pub use wasi_keyvalue::KvGrants;

use wasmtime::component::Component;
use wasmtime::{Engine, Precompiled};

use crate::body::Body;

/// The guest ABIs wasmgate runs, as named in error messages.
pub const ACCEPTED_EXPORTS: &str = "a component exporting wasi:http/incoming-handler (WASI 0.2.x) or wasi:http/handler (WASI 0.3.x), as built for `wasmtime serve`, \
     or a WASI preview1 core module exporting `_start` (run as a WAGI/CGI script)";

/// What a component may import, as named in error messages.
pub const PROVIDED_IMPORTS: &str = "wasi:http, wasi:cli, wasi:clocks, wasi:random, wasi:io, \
     wasi:filesystem and wasi:sockets (0.2.x and 0.3.x; no files or sockets are granted), \
     wasi:config/store (0.2.0-rc.1, 0.2.0-draft-2024-09-27) and wasi:keyvalue (0.2.0-draft)";

/// A module compiled and linked, ready to instantiate per request.
pub enum LoadedModule {
    /// A wasi:http component: 0.2 (`wasi:http/incoming-handler`) or 0.3
    /// (`wasi:http/handler`).
    WasiHttp(HttpComponent),
    /// A WASI preview1 command module (`_start`), run as a CGI script.
    Wagi(WagiModule),
}

impl LoadedModule {
    /// The ABI, for logs and deploy output.
    pub fn abi(&self) -> &'static str {
        match self {
            LoadedModule::WasiHttp(component) => component.abi(),
            LoadedModule::Wagi(_) => "WAGI module",
        }
    }

    /// The compiled code, for [`WasmEngine::load_precompiled`] on an engine
    /// with the same [`WasmEngine::artifact_id`].
    pub fn serialize(&self) -> Result<Vec<u8>, String> {
        match self {
            LoadedModule::WasiHttp(component) => component.serialize(),
            LoadedModule::Wagi(module) => module.serialize(),
        }
    }

    /// Checks `modules` (the version's `wasm_module` bindings) against what
    /// this module imports, instantiating it once without running it: the
    /// deploy-time proof that the version links.
    pub async fn check_link(
        &self,
        engine: &WasmEngine,
        modules: &[(String, Arc<LibraryModule>)],
    ) -> Result<(), String> {
        match self {
            LoadedModule::WasiHttp(_) if modules.is_empty() => Ok(()),
            LoadedModule::WasiHttp(_) => Err(
                "wasm_module bindings are for WAGI core modules; a component links its \
                 dependencies at build time (compose it, e.g. with `wac plug`)"
                    .into(),
            ),
            LoadedModule::Wagi(module) => module.check_link(engine, modules).await,
        }
    }

    /// Runs one fresh instance on `request`.
    pub async fn run(
        &self,
        engine: &WasmEngine,
        request: http::Request<Body>,
        invocation: &Invocation,
        grants: &Grants,
    ) -> Result<http::Response<Body>, GuestError> {
        match self {
            LoadedModule::WasiHttp(component) => {
                component.run(engine, request, invocation, grants).await
            }
            LoadedModule::Wagi(module) => module.run(engine, request, invocation, grants).await,
        }
    }
}

/// What a version grants its guest: environment variables from its
/// bindings, and the modules bound to a WAGI module's imports.
#[derive(Default)]
pub struct Grants {
    pub env: Vec<(String, String)>,
    pub modules: Vec<(String, Arc<LibraryModule>)>,
    /// Where the guest may send wasi:http requests.
    pub outbound: Arc<outbound::OutboundPolicy>,
    /// What the names of outbound requests are resolved with.
    pub resolver: outbound::Resolver,
    /// The version's own request body limit, if it sets one.
    pub max_body_bytes: Option<u64>,
    /// The version's own memory cap per instance, if it sets one.
    pub memory_limit_bytes: Option<usize>,
    /// The version's own deadline per request, if it sets one.
    pub timeout: Option<Duration>,
    /// What `wasi:config/store` answers: the same values as `env`.
    pub config: ConfigValues,
    /// The key-value namespaces `wasi:keyvalue` opens.
    pub kv: Arc<KvGrants>,
}

/// Per-request facts the runtime needs.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// Tags the guest's log lines.
    pub request_id: String,
    /// The instant the guest is interrupted (504).
    pub deadline: Instant,
    /// How long the guest was given (for the 504 message).
    pub budget: Duration,
    /// Whether the client reached us over HTTPS (as the front knows it).
    pub https: bool,
    /// The matched route (`host/path` or `/path`), and its path part.
    pub route: String,
    pub route_path: String,
    /// The version being served (a rollout's candidate when it got the
    /// request); `None` for a pointer set by hand without one.
    pub version: Option<u64>,
    /// The client's address, as the front knows it.
    pub remote_addr: Option<String>,
    /// The request body limit that applies (a WAGI module's stdin is
    /// buffered up to it).
    pub max_body_bytes: u64,
    /// The version's memory cap for the whole instance, in bytes (its
    /// `memory_limit_mb`, else `WASMGATE_MEMORY_LIMIT_MB`).
    pub memory_limit_bytes: usize,
}

/// Why bytes cannot be served.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(
        "not a WebAssembly binary (it does not start with \\0asm); expected {ACCEPTED_EXPORTS}"
    )]
    NotWasm,
    #[error("{found}; wasmgate runs {ACCEPTED_EXPORTS}")]
    Unsupported { found: String },
    #[error("the module does not compile: {0}")]
    Compile(String),
    #[error("the component does not link: {0}")]
    Link(String),
    #[error(
        "this component imports {import}, which wasmgate does not provide; wasmgate provides {PROVIDED_IMPORTS}"
    )]
    Import { import: String },
    #[error(
        "this component imports {import}, which wasmgate provides in another shape or version ({detail}); wasmgate provides {PROVIDED_IMPORTS}"
    )]
    ImportMismatch { import: String, detail: String },
}

/// How a guest run failed. Each maps to one HTTP status in `error.rs`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuestError {
    #[error("the function ran past its deadline of {}ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the function exceeded its memory limit of {} MiB", .0 >> 20)]
    MemoryLimit(usize),
    #[error("the function trapped: {0}")]
    Trap(String),
    #[error("the function returned without setting a response")]
    NoResponse,
    #[error("the function answered with an error: {0}")]
    ErrorCode(String),
    #[error("all {0} instance slots stayed busy until the deadline")]
    Busy(u32),
    /// The pooling allocator had no instance left: the host's capacity,
    /// never the guest's fault.
    #[error("the instance pool is exhausted: {0}")]
    PoolExhausted(String),
    /// A growth within the guest's own limit found the memory all guests
    /// share spent (`WASMGATE_GUEST_MEMORY_MB`): capacity, not a fault.
    #[error("the memory all guests share (WASMGATE_GUEST_MEMORY_MB) is spent")]
    MemoryBudget,
    #[error("the request cannot be handed to the function: {0}")]
    BadRequest(String),
    #[error("the request body is larger than the limit of {0} bytes")]
    PayloadTooLarge(usize),
    #[error("the request body did not arrive before the deadline")]
    RequestTimeout,
    #[error("the function exited with status {0}")]
    Exit(i32),
    #[error("the function's CGI output is malformed: {0}")]
    BadOutput(String),
    #[error("the function's module does not link: {0}")]
    Link(String),
}

impl WasmEngine {
    /// Compiles and links `bytes` (which the caller has verified). Blocking:
    /// call it from `spawn_blocking` in async code. Fails with a message that
    /// names what was expected when the bytes are not something wasmgate runs.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedModule, LoadError> {
        const COMPONENT_LAYER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
        const MODULE_LAYER: [u8; 4] = [0x01, 0x00, 0x00, 0x00];
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err(LoadError::NotWasm);
        }
        if bytes[4..8] == COMPONENT_LAYER {
            HttpComponent::load(self, bytes).map(LoadedModule::WasiHttp)
        } else if bytes[4..8] == MODULE_LAYER {
            let module = wasmtime::Module::new(self.engine(), bytes)
                .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
            WagiModule::load(self, module).map(LoadedModule::Wagi)
        } else {
            Err(LoadError::Unsupported {
                found: "this WebAssembly binary has an unknown version".into(),
            })
        }
    }

    /// Loads code made by [`LoadedModule::serialize`], without compiling.
    /// Blocking, like [`WasmEngine::load`]. Fails when the bytes are not an
    /// artifact or were made by an incompatible engine (wasmtime checks its
    /// version and settings).
    ///
    /// # Safety
    ///
    /// `bytes` must be what `serialize` made: wasmtime maps them as
    /// executable code without validating them, so tampered bytes can do
    /// anything. The module cache calls this only with bytes whose SHA-256
    /// matches the digest the deploy recorded for the artifact it stored.
    pub unsafe fn load_precompiled(&self, bytes: &[u8]) -> Result<LoadedModule, LoadError> {
        let failed = |e: wasmtime::Error| LoadError::Compile(format!("{e:#}"));
        match Engine::detect_precompiled(bytes) {
            Some(Precompiled::Component) => {
                // SAFETY: the caller vouches for the bytes (see above).
                let component =
                    unsafe { Component::deserialize(self.engine(), bytes) }.map_err(failed)?;
                HttpComponent::link(self, component).map(LoadedModule::WasiHttp)
            }
            Some(Precompiled::Module) => {
                // SAFETY: as above.
                let module = unsafe { wasmtime::Module::deserialize(self.engine(), bytes) }
                    .map_err(failed)?;
                WagiModule::load(self, module).map(LoadedModule::Wagi)
            }
            None => Err(LoadError::Compile(
                "not an artifact precompiled by wasmtime".into(),
            )),
        }
    }
}
