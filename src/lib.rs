//! # wasmgate
//!
//! One binary that serves WebAssembly functions: on AWS Lambda, on Cloud
//! Run, or on a laptop with no cloud at all. A request is routed by host and
//! path prefix to the module that is live for it, the module is fetched by
//! its content address, verified, compiled once and kept warm, and each
//! request runs in a fresh instance.
//!
//! ```text
//!   front (listener | lambda)
//!     │  http::Request<Body>
//!     ▼
//!   Gateway ──▶ RouteCache ──▶ RouteTable   (SQLite | DynamoDB): route → module key
//!     │
//!     ├──────▶ ModuleCache ──▶ ModuleStore  (folder | S3): key → bytes, SHA-256 checked
//!     │            │ compiled once, by digest
//!     ▼            ▼
//!   runtime: fresh wasmtime instance per request ──▶ http::Response<Body> (streamed)
//! ```
//!
//! Two guest kinds run, recognised by their exports: wasi:http components,
//! WASI 0.2 or 0.3 ([`runtime::HttpComponent`]), and WAGI modules, WASI
//! preview1 commands run as CGI scripts ([`runtime::WagiModule`]). A version
//! may carry bindings ([`runtime::bindings`]): settings (plain, JSON, secret)
//! a guest reads from its environment or `wasi:config`, modules linked to a
//! WAGI module's imports, and `wasi:keyvalue` namespaces ([`kv`]); secrets
//! by reference are read by [`secrets`].
//!
//! Deploys are immutable: bytes are stored at
//! `application/wasm/{len}b/sha256-{hex}.wasm` and a deploy or rollback is a
//! conditional flip of the route's live pointer ([`deploy`]).
//!
//! ## Settings
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `WASMGATE_BACKEND` | `embedded` | `embedded` or `aws` (S3 + DynamoDB) |
//! | `WASMGATE_BUCKET`, `WASMGATE_TABLE` | | the bucket and table, with `aws` |
//! | `WASMGATE_DATA_DIR` | `.wasmgate` | embedded default: module files and `routes.sqlite3` |
//! | `WASMGATE_ROUTE_TTL_MS` | `2000` | route cache TTL; changes are served within it |
//! | `WASMGATE_TIMEOUT_MS` | `30000` | per-request deadline (504 past it) |
//! | `WASMGATE_MEMORY_LIMIT_MB` | `128` | per-instance memory limit |
//! | `WASMGATE_MAX_CONCURRENCY` | `256` | most instances alive at once |
//! | `WASMGATE_MODULE_CACHE_SIZE` | `64` | compiled modules kept warm |
//! | `WASMGATE_POOLING` | `auto` | pooling allocator: `auto`, `on`, `off` |
//! | `WASMGATE_ADDR` / `PORT` | `0.0.0.0:8080` | listener address |
//! | `WASMGATE_DRAIN_TIMEOUT_MS` | `10000` | time in-flight requests get after SIGTERM |
//! | `WASMGATE_ADMIN_TOKEN` | | enables the admin API under `/_wasmgate/` (bearer token, 16+ characters) |
//! | `WASMGATE_ADMIN_MAX_PART_MB`, `WASMGATE_ADMIN_MAX_UPLOAD_MB` | `64`, `128` | admin upload limits per module and in all |
//! | `WASMGATE_ACTOR` | | who the CLI records in the history |
//! | `WASMGATE_LAMBDA_INVOKE_MODE` | `buffered` | Lambda: `buffered` or `response-stream` |
//! | `WASMGATE_MAX_BODY_BYTES` | `10485760` | largest request body (413); a version's `max_body_bytes` overrides it |
//! | `WASMGATE_MAX_HEADER_BYTES`, `WASMGATE_MAX_HEADERS` | `32768`, `100` | header limits (431) |
//! | `WASMGATE_MAX_FIELD_BYTES` | `131072` | wasi:http's per-fields limit inside a component |
//! | `WASMGATE_KV_TABLE` | the route table | with `aws`: the DynamoDB table of `wasi:keyvalue` data ([`kv`]) |
//! | `WASMGATE_STALE_MAX_MS` | `300000` | how long cached routes and versions serve while a backend is down |
//! | `WASMGATE_BACKEND_TIMEOUT_MS` | `1000` | per-attempt timeout of route and secret reads |
//! | `WASMGATE_METRICS_NAMESPACE` | `wasmgate` | CloudWatch namespace of the EMF lines (Lambda) |
//! | `WASMGATE_LOG` | `info` | log filter |
//! | `WASMGATE_LOG_FORMAT` | `auto` | `json`, `text`, or `auto` (JSON unless a terminal) |

#[cfg(feature = "http")]
pub mod admin;
pub mod backend;
pub mod body;
pub mod config;
pub mod deploy;
pub mod error;
pub mod front;
pub mod gateway;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod modules;
pub mod rollout;
pub mod routes;
pub mod runtime;
pub mod secrets;
