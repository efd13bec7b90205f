//! Settings: every one a `WASMGATE_*` environment variable (or a flag),
//! parsed and validated once at start. A bad value stops the process with
//! an error that names the setting and the value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::runtime::PoolingMode;

/// Default of `WASMGATE_ROUTE_TTL_MS`.
pub const DEFAULT_ROUTE_TTL_MS: u64 = 2_000;
/// Default of `WASMGATE_TIMEOUT_MS`.
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// Default of `WASMGATE_MEMORY_LIMIT_MB`.
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 128;
/// Default of `WASMGATE_MAX_BODY_BYTES`: 10 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 << 20;
/// Default of `WASMGATE_STALE_MAX_MS`: 5 minutes.
pub const DEFAULT_STALE_MAX_MS: u64 = 300_000;
/// Default of `PORT`.
pub const DEFAULT_PORT: u16 = 8080;

/// Where routes and modules are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Module files under the data dir, routes in SQLite beside them.
    Embedded,
    /// Modules in S3, routes in DynamoDB.
    Aws,
}

/// A feature switched on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Toggle {
    On,
    Off,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// JSON when the log stream is not a terminal, text when it is.
    Auto,
    /// One JSON object per line, the event's fields at the top level.
    Json,
    /// Human-readable text.
    Text,
}

/// Settings shared by every command.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Settings (each also an environment variable)")]
pub struct Settings {
    /// Where routes and modules live: `embedded` (the data dir) or `aws`
    /// (S3 bucket + DynamoDB table, from the standard AWS environment).
    #[arg(long, env = "WASMGATE_BACKEND", value_enum, default_value_t = BackendKind::Embedded, global = true)]
    pub backend: BackendKind,

    /// The S3 bucket holding modules (with WASMGATE_BACKEND=aws).
    #[arg(long, env = "WASMGATE_BUCKET", global = true)]
    pub bucket: Option<String>,

    /// The DynamoDB table holding routes (with WASMGATE_BACKEND=aws).
    #[arg(long, env = "WASMGATE_TABLE", global = true)]
    pub table: Option<String>,

    /// The DynamoDB table of guests' wasi:keyvalue data (with
    /// WASMGATE_BACKEND=aws); the route table when unset. Its key schema is
    /// the route table's (`route` S partition, `rev` S sort).
    #[arg(long, env = "WASMGATE_KV_TABLE", global = true)]
    pub kv_table: Option<String>,

    /// Where the embedded default keeps modules (same key layout as the S3
    /// bucket) and the SQLite route database.
    #[arg(
        long,
        env = "WASMGATE_DATA_DIR",
        default_value = ".wasmgate",
        global = true
    )]
    pub data_dir: PathBuf,

    /// How long a route lookup is cached; a change made elsewhere is served
    /// within this time. 0 disables the cache.
    #[arg(long, env = "WASMGATE_ROUTE_TTL_MS", default_value_t = DEFAULT_ROUTE_TTL_MS,
          value_parser = number("WASMGATE_ROUTE_TTL_MS", "milliseconds", 0, 3_600_000), global = true)]
    pub route_ttl_ms: u64,

    /// Most memory one guest instance may use, per linear memory, in MiB.
    #[arg(long, env = "WASMGATE_MEMORY_LIMIT_MB", default_value_t = DEFAULT_MEMORY_LIMIT_MB,
          value_parser = number("WASMGATE_MEMORY_LIMIT_MB", "MiB", 1, 4096), global = true)]
    pub memory_limit_mb: u64,

    /// Wall-clock budget of one request, in milliseconds (504 past it).
    #[arg(long, env = "WASMGATE_TIMEOUT_MS", default_value_t = DEFAULT_TIMEOUT_MS,
          value_parser = number("WASMGATE_TIMEOUT_MS", "milliseconds", 1, 900_000), global = true)]
    pub timeout_ms: u64,

    /// Most guest instances running at once; more requests wait for a slot.
    #[arg(long, env = "WASMGATE_MAX_CONCURRENCY", default_value_t = 256,
          value_parser = number("WASMGATE_MAX_CONCURRENCY", "instances", 1, 10_000), global = true)]
    pub max_concurrency: u64,

    /// Most instance slots one route holds at once, so a storm on one
    /// route leaves slots for the others [default: three quarters of
    /// WASMGATE_MAX_CONCURRENCY].
    #[arg(long, env = "WASMGATE_ROUTE_MAX_CONCURRENCY",
          value_parser = number("WASMGATE_ROUTE_MAX_CONCURRENCY", "instances", 1, 10_000), global = true)]
    pub route_max_concurrency: Option<u64>,

    /// Longest a request waits for an instance slot before its 503 (never
    /// past its deadline).
    #[arg(long, env = "WASMGATE_QUEUE_TIMEOUT_MS", default_value_t = 1_000,
          value_parser = number("WASMGATE_QUEUE_TIMEOUT_MS", "milliseconds", 0, 900_000), global = true)]
    pub queue_timeout_ms: u64,

    /// Guests that have run over about 30 ms go on only on one of these lanes,
    /// in turn, so loops cannot take every CPU [default: the CPUs less one,
    /// at least 1].
    #[arg(long, env = "WASMGATE_CPU_LANES",
          value_parser = number("WASMGATE_CPU_LANES", "lanes", 1, 1024), global = true)]
    pub cpu_lanes: Option<u64>,

    /// All guests' memory together (linear memories, and WAGI request
    /// bodies buffered for stdin), in MiB; a growth past it fails and the
    /// request is a 503 [default: three quarters of the container's memory:
    /// the cgroup limit, else AWS_LAMBDA_FUNCTION_MEMORY_SIZE, else the
    /// machine's].
    #[arg(long, env = "WASMGATE_GUEST_MEMORY_MB",
          value_parser = number("WASMGATE_GUEST_MEMORY_MB", "MiB", 1, 16 << 20), global = true)]
    pub guest_memory_mb: Option<u64>,

    /// Most compiled modules kept warm in memory.
    #[arg(long, env = "WASMGATE_MODULE_CACHE_SIZE", default_value_t = 64,
          value_parser = number("WASMGATE_MODULE_CACHE_SIZE", "modules", 1, 100_000), global = true)]
    pub module_cache_size: u64,

    /// Pooling instance allocator: auto (use it when the host allows), on, off.
    #[arg(long, env = "WASMGATE_POOLING", value_enum, default_value_t = PoolingMode::Auto, global = true)]
    pub pooling: PoolingMode,

    /// Largest request body, in bytes (413 past it, refused before it is
    /// read when its length is declared). A version's `max_body_bytes`
    /// overrides it.
    #[arg(long, env = "WASMGATE_MAX_BODY_BYTES", default_value_t = DEFAULT_MAX_BODY_BYTES,
          value_parser = number("WASMGATE_MAX_BODY_BYTES", "bytes", 1, 1 << 30), global = true)]
    pub max_body_bytes: u64,

    /// Largest total size of a request's header names and values (431 past it).
    #[arg(long, env = "WASMGATE_MAX_HEADER_BYTES", default_value_t = 32 * 1024,
          value_parser = number("WASMGATE_MAX_HEADER_BYTES", "bytes", 1024, 1 << 20), global = true)]
    pub max_header_bytes: u64,

    /// wasi:http's limit on one set of fields (a request's or response's
    /// headers, or trailers) as a guest builds or reads them, in bytes of
    /// their in-memory form; a guest past it gets wasi:http's
    /// `size-exceeded` error.
    #[arg(long, env = "WASMGATE_MAX_FIELD_BYTES", default_value_t = 128 * 1024,
          value_parser = number("WASMGATE_MAX_FIELD_BYTES", "bytes", 1024, 16 << 20), global = true)]
    pub max_field_bytes: u64,

    /// Most headers a request may carry (431 past it).
    #[arg(long, env = "WASMGATE_MAX_HEADERS", default_value_t = 100,
          value_parser = number("WASMGATE_MAX_HEADERS", "headers", 1, 10_000), global = true)]
    pub max_headers: u64,

    /// How long cached routes and readied versions keep serving past their
    /// time while the route table, module store or secret store cannot be
    /// reached. 0: never serve stale.
    #[arg(long, env = "WASMGATE_STALE_MAX_MS", default_value_t = DEFAULT_STALE_MAX_MS,
          value_parser = number("WASMGATE_STALE_MAX_MS", "milliseconds", 0, 86_400_000), global = true)]
    pub stale_max_ms: u64,

    /// Per-attempt timeout of route-table and secret reads (2 attempts);
    /// module downloads get 30 s per attempt.
    #[arg(long, env = "WASMGATE_BACKEND_TIMEOUT_MS", default_value_t = 1_000,
          value_parser = number("WASMGATE_BACKEND_TIMEOUT_MS", "milliseconds", 50, 60_000), global = true)]
    pub backend_timeout_ms: u64,

    /// CloudWatch namespace of the metrics written on Lambda (EMF).
    #[arg(
        long,
        env = "WASMGATE_METRICS_NAMESPACE",
        default_value = "wasmgate",
        global = true
    )]
    pub metrics_namespace: String,

    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `wasmgate=debug`.
    #[arg(long, env = "WASMGATE_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log lines as JSON (one object per line) or text; `auto`: JSON unless
    /// the log stream is a terminal.
    #[arg(long, env = "WASMGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto, global = true)]
    pub log_format: LogFormat,

    /// Precompiled artifacts: deploys store the module's compiled code
    /// beside it (`…sha256-{hex}.{engine}.cwasm`, digest recorded with the
    /// version), and a cold server loads that instead of compiling. `off`:
    /// deploys store none and servers always compile.
    #[arg(long, env = "WASMGATE_PRECOMPILED", value_enum, default_value_t = Toggle::On, global = true)]
    pub precompiled: Toggle,
}

impl Settings {
    pub fn route_ttl(&self) -> Duration {
        Duration::from_millis(self.route_ttl_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn stale_max(&self) -> Duration {
        Duration::from_millis(self.stale_max_ms)
    }

    pub fn backend_timeout(&self) -> Duration {
        Duration::from_millis(self.backend_timeout_ms)
    }

    /// The gateway's input limits.
    pub fn request_limits(&self) -> crate::gateway::RequestLimits {
        crate::gateway::RequestLimits {
            max_body_bytes: self.max_body_bytes,
            max_header_bytes: self.max_header_bytes as usize,
            max_headers: self.max_headers as usize,
        }
    }

    pub fn memory_limit_bytes(&self) -> usize {
        (self.memory_limit_mb as usize) << 20
    }

    /// The folder module files live under.
    pub fn modules_dir(&self) -> PathBuf {
        self.data_dir.clone()
    }

    /// The SQLite route database.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("routes.sqlite3")
    }
}

/// A parser for a whole number in `min..=max` whose error names the
/// environment variable, so a bad value is easy to find wherever it was set.
fn number(
    env: &'static str,
    unit: &'static str,
    min: u64,
    max: u64,
) -> impl Fn(&str) -> Result<u64, String> + Clone + Send + Sync + 'static {
    move |text| match text.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{env} (or its flag) must be a whole number of {unit} from {min} to {max}"
        )),
    }
}

/// Settings of `wasmgate serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeSettings {
    /// Address to listen on [default: 0.0.0.0:$PORT].
    #[arg(long, env = "WASMGATE_ADDR")]
    pub addr: Option<SocketAddr>,

    /// Port to listen on when no --addr is given (Cloud Run sets it).
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "WASMGATE_DRAIN_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = number("WASMGATE_DRAIN_TIMEOUT_MS", "milliseconds", 0, 3_600_000))]
    pub drain_timeout_ms: u64,

    /// Enables the admin API under /_wasmgate/ (uploads, promote,
    /// rollouts): every call must bear `Authorization: Bearer <token>`.
    #[arg(long, env = "WASMGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest module part of an admin upload.
    #[arg(long, env = "WASMGATE_ADMIN_MAX_PART_MB", default_value_t = 64,
          value_parser = number("WASMGATE_ADMIN_MAX_PART_MB", "MiB", 1, 4096))]
    pub admin_max_part_mb: u64,

    /// Largest whole admin upload.
    #[arg(long, env = "WASMGATE_ADMIN_MAX_UPLOAD_MB", default_value_t = 128,
          value_parser = number("WASMGATE_ADMIN_MAX_UPLOAD_MB", "MiB", 1, 8192))]
    pub admin_max_upload_mb: u64,
}

impl ServeSettings {
    pub fn listen_addr(&self) -> SocketAddr {
        self.addr
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], self.port)))
    }

    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms)
    }
}
