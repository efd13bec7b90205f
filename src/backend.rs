//! Which route table and module store the settings select, and the engine
//! and gateway built on them: the embedded default (module files under the
//! data dir, routes in SQLite beside them) or AWS (S3 + DynamoDB).

use std::sync::Arc;
use std::time::Duration;

use crate::config::{BackendKind, Settings, Toggle};
use crate::deploy::Deployer;
use crate::gateway::{Gateway, GatewayOptions};
use crate::kv::{KvStore, SqliteKv};
use crate::modules::{FsModuleStore, ModuleStore};
use crate::routes::{RouteTable, SqliteRouteTable};
use crate::runtime::admission::{default_cpu_lanes, default_guest_memory_bytes};
use crate::runtime::{RuntimeLimits, WasmEngine, default_route_share};

/// The storage a process works against.
#[derive(Clone)]
pub struct Backends {
    pub table: Arc<dyn RouteTable>,
    pub store: Arc<dyn ModuleStore>,
    /// Guests' `wasi:keyvalue` data, in the route table's database.
    pub kv: Arc<dyn KvStore>,
}

impl Backends {
    /// The backends `settings.backend` names. Fails when the route database
    /// cannot be opened (embedded), or when the bucket or table name is
    /// missing (aws).
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        // Secret references are read with the AWS SDK on either backend.
        #[cfg(feature = "aws")]
        aws::set_backend_timeout(settings.backend_timeout());
        match settings.backend {
            BackendKind::Embedded => Self::embedded(settings),
            #[cfg(feature = "aws")]
            BackendKind::Aws => aws::open(settings).await,
            #[cfg(not(feature = "aws"))]
            BackendKind::Aws => anyhow::bail!(
                "WASMGATE_BACKEND=aws: this wasmgate was built without the `aws` feature"
            ),
        }
    }

    /// The embedded default under `settings.data_dir`.
    pub fn embedded(settings: &Settings) -> anyhow::Result<Self> {
        let table = SqliteRouteTable::open(settings.database_path())?;
        let kv = SqliteKv::open(settings.database_path())?;
        let store = FsModuleStore::open(settings.modules_dir());
        Ok(Backends {
            table: Arc::new(table),
            store: Arc::new(store),
            kv: Arc::new(kv),
        })
    }

    /// Deploy, rollback and history over these backends.
    pub fn deployer(&self, engine: Arc<WasmEngine>) -> Deployer {
        Deployer::new(self.table.clone(), self.store.clone(), engine)
    }

    /// The request path over these backends.
    pub fn gateway(&self, engine: Arc<WasmEngine>, settings: &Settings) -> Gateway {
        Gateway::new(
            self.table.clone(),
            self.store.clone(),
            self.kv.clone(),
            engine,
            crate::secrets::default_resolver(),
            GatewayOptions {
                route_ttl: settings.route_ttl(),
                module_cache_capacity: settings.module_cache_size,
                stale_max: settings.stale_max(),
                limits: settings.request_limits(),
                emf: None,
            },
        )
    }
}

/// The wasmtime engine configured by `settings`.
pub fn engine(settings: &Settings) -> anyhow::Result<Arc<WasmEngine>> {
    let max_concurrency = settings.max_concurrency as u32;
    Ok(Arc::new(WasmEngine::new(RuntimeLimits {
        pooling: settings.pooling,
        precompiled: settings.precompiled == Toggle::On,
        max_field_bytes: settings.max_field_bytes as usize,
        route_max_concurrency: settings
            .route_max_concurrency
            .map_or_else(|| default_route_share(max_concurrency), |n| n as u32),
        queue_timeout: Duration::from_millis(settings.queue_timeout_ms),
        cpu_lanes: settings
            .cpu_lanes
            .map_or_else(default_cpu_lanes, |n| n as u32),
        max_body_bytes: settings.max_body_bytes,
        guest_memory_bytes: settings
            .guest_memory_mb
            .map_or_else(default_guest_memory_bytes, |mb| {
                usize::try_from(mb << 20).unwrap_or(usize::MAX)
            }),
        ..RuntimeLimits::new(
            settings.memory_limit_bytes(),
            settings.timeout(),
            max_concurrency,
        )
    })?))
}

#[cfg(feature = "aws")]
pub use aws::{
    caller_identity as aws_caller_identity, http_client as aws_http_client,
    sdk_config as aws_sdk_config,
};

#[cfg(feature = "aws")]
mod aws {
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::Context as _;
    use aws_config::BehaviorVersion;
    use aws_config::retry::RetryConfig;
    use aws_config::timeout::TimeoutConfig;
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};

    use super::Backends;
    use crate::config::Settings;
    use crate::kv::DynamoKv;
    use crate::modules::S3ModuleStore;
    use crate::routes::DynamoRouteTable;

    /// The HTTPS client every AWS SDK client uses: rustls with ring (no
    /// C toolchain needed beyond ring's own, no aws-lc build).
    pub fn http_client() -> aws_sdk_s3::config::SharedHttpClient {
        aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https()
    }

    /// `WASMGATE_BACKEND_TIMEOUT_MS`, once [`Backends::open`] has read it.
    static BACKEND_TIMEOUT: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

    /// Sets the per-attempt timeout of every SDK client made after it (the
    /// first call wins: one process, one setting).
    pub fn set_backend_timeout(timeout: Duration) {
        let _ = BACKEND_TIMEOUT.set(timeout);
    }

    /// The shared AWS configuration: the standard environment (region,
    /// credentials, `AWS_ENDPOINT_URL`), the rustls client, and timeouts
    /// and retries sized for the request path: a route or secret read that
    /// does not answer within `WASMGATE_BACKEND_TIMEOUT_MS` is tried once
    /// more, then fails, and the caller serves what it has (stale) or a 503.
    pub async fn sdk_config() -> aws_config::SdkConfig {
        let attempt = *BACKEND_TIMEOUT.get_or_init(|| Duration::from_secs(1));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(attempt.min(Duration::from_secs(1)))
            .operation_attempt_timeout(attempt)
            .operation_timeout(attempt * 3)
            .build();
        aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .load()
            .await
    }

    /// The ARN of the AWS identity the credentials belong to (STS
    /// GetCallerIdentity), for the history; `None` when it cannot be read.
    pub async fn caller_identity() -> Option<String> {
        let config = sdk_config().await;
        let sts = aws_sdk_sts::Client::new(&config);
        let call = sts.get_caller_identity().send();
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(identity)) => identity.arn,
            Ok(Err(error)) => {
                tracing::debug!(error = %aws_sdk_sts::error::DisplayErrorContext(&error), "no AWS identity for the history");
                None
            }
            Err(_) => None,
        }
    }

    /// S3 + DynamoDB, configured from the standard AWS environment (region,
    /// credentials, `AWS_ENDPOINT_URL` for S3/DynamoDB-compatible servers).
    pub(super) async fn open(settings: &Settings) -> anyhow::Result<Backends> {
        let bucket = settings.bucket.clone().filter(|b| !b.is_empty()).context(
            "WASMGATE_BACKEND=aws needs WASMGATE_BUCKET: the S3 bucket that holds the modules",
        )?;
        let table = settings.table.clone().filter(|t| !t.is_empty()).context(
            "WASMGATE_BACKEND=aws needs WASMGATE_TABLE: the DynamoDB table that holds the routes",
        )?;
        let config = sdk_config().await;
        anyhow::ensure!(
            config.region().is_some(),
            "WASMGATE_BACKEND=aws needs an AWS region: set AWS_REGION (Lambda sets it for you)"
        );
        // A custom endpoint (moto, MinIO, LocalStack) rarely serves
        // virtual-hosted bucket names: address buckets by path there.
        // Module downloads and uploads move megabytes: they get 30 s per
        // attempt and three attempts; a cold request is bounded by its own
        // deadline anyway.
        let s3_config = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(config.endpoint_url().is_some())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build();
        let s3 = aws_sdk_s3::Client::from_conf(s3_config);
        let dynamodb = aws_sdk_dynamodb::Client::new(&config);
        let kv_table = settings
            .kv_table
            .clone()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| table.clone());
        Ok(Backends {
            kv: Arc::new(DynamoKv::new(dynamodb.clone(), kv_table)),
            table: Arc::new(DynamoRouteTable::new(dynamodb, table)),
            store: Arc::new(S3ModuleStore::new(s3, bucket)),
        })
    }
}
