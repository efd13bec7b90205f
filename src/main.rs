//! The `wasmgate` command: serve functions, deploy them, roll them back.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use clap::{Parser, Subcommand};

use wasmgate::backend::{self, Backends};
use wasmgate::config::{BackendKind, LogFormat, ServeSettings, Settings};
use wasmgate::deploy::{DeployBundle, RouteHistory};
use wasmgate::routes::RouteName;
use wasmgate::runtime::PoolingMode;
use wasmgate::runtime::bindings::{DeployMetadata, VersionSpec};

/// Serve WebAssembly (wasi:http) functions, deploy them by content address,
/// and roll them back with one command.
///
/// Quick start (no cloud needed; state lives in ./.wasmgate):
///
///   wasmgate deploy examples/hello-rust/hello.wasm --route /hello
///   wasmgate serve &
///   curl localhost:8080/hello
///
/// Every option is also an environment variable (WASMGATE_*), shown in each
/// command's --help.
#[derive(Parser)]
#[command(name = "wasmgate", version, max_term_width = 100, verbatim_doc_comment)]
struct Cli {
    #[command(flatten)]
    settings: Settings,

    /// How the Lambda front answers: buffered, or response-stream (for
    /// Function URLs with InvokeMode RESPONSE_STREAM).
    #[cfg(feature = "lambda")]
    #[arg(long, env = "WASMGATE_LAMBDA_INVOKE_MODE", value_enum, global = true,
          default_value_t = wasmgate::front::lambda::InvokeMode::Buffered)]
    lambda_invoke_mode: wasmgate::front::lambda::InvokeMode,

    /// With no command and AWS_LAMBDA_RUNTIME_API set (as Lambda's
    /// provided.al2023 runtime does), wasmgate runs as the function's bootstrap.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve every deployed route over HTTP.
    Serve {
        #[command(flatten)]
        serve: ServeSettings,
    },
    /// Store a module and make it the live version of a route.
    ///
    /// The module is a component exporting wasi:http/incoming-handler, or a
    /// WASI preview1 core module exporting `_start` (run as WAGI/CGI).
    /// Bytes already stored are not uploaded again. With --metadata, the
    /// version carries bindings (Cloudflare's upload metadata form):
    ///
    ///   {"main_module": "main", "bindings": [
    ///     {"type": "plain_text", "name": "GREETING", "text": "hello"},
    ///     {"type": "wasm_module", "name": "isqrt", "part": "wasmprogram"}]}
    ///
    /// and --part NAME=FILE gives each part a wasm_module binding names.
    #[command(verbatim_doc_comment)]
    Deploy {
        /// The .wasm file to deploy (the main module).
        file: PathBuf,
        /// The route to serve it on: `/path` or `host/path`.
        #[arg(long)]
        route: RouteName,
        /// A JSON file of deploy metadata: main_module (or body_part) and bindings.
        #[arg(long, value_name = "FILE")]
        metadata: Option<PathBuf>,
        /// A module a wasm_module binding names, as NAME=FILE (repeatable).
        #[arg(long = "part", value_name = "NAME=FILE", value_parser = parse_part)]
        parts: Vec<(String, PathBuf)>,
        /// Record the version without making it live: it is reachable only
        /// with its preview token (printed) until `wasmgate promote`.
        #[arg(long)]
        preview: bool,
        /// Who is deploying, for the history [default: the AWS identity
        /// with the aws backend, else $USER].
        #[arg(long, env = "WASMGATE_ACTOR")]
        actor: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make an earlier version of a route live again; during a rollout,
    /// end the rollout (the live version stays).
    Rollback {
        /// The route, as deployed: `/path` or `host/path`.
        route: RouteName,
        /// The version to make live [default: the one live before the current one].
        #[arg(long)]
        to: Option<u64>,
        /// Who is rolling back, for the history [default: the AWS identity
        /// with the aws backend, else $USER].
        #[arg(long, env = "WASMGATE_ACTOR")]
        actor: Option<String>,
    },
    /// Make version N of a route live (after a preview or a rollout),
    /// ending any rollout.
    Promote {
        /// The route: `/path` or `host/path`.
        route: RouteName,
        /// The version to make live.
        version: u64,
        /// Who is promoting, for the history [default: the AWS identity
        /// with the aws backend, else $USER].
        #[arg(long, env = "WASMGATE_ACTOR")]
        actor: Option<String>,
    },
    /// Send a share of a route's requests to version N, the rest to the
    /// live version. `promote` or `rollback` ends it.
    Rollout {
        /// The route: `/path` or `host/path`.
        route: RouteName,
        /// The candidate version.
        #[arg(long)]
        to: u64,
        /// Its share of requests, in percent (above 0, below 100).
        #[arg(long)]
        percent: f64,
        /// Keep each client on one version: the hash of this request
        /// header's value picks it (else each request is drawn at random).
        #[arg(long, value_name = "HEADER")]
        sticky_header: Option<String>,
        /// End the rollout on its own when more than this percentage of the
        /// candidate's answers are 5xx (counted by each server).
        #[arg(long, value_name = "PERCENT")]
        max_error_rate: Option<f64>,
        /// The window the error rate is measured over.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        window: std::time::Duration,
        /// Fewest candidate requests in the window before it can trip.
        #[arg(long, default_value_t = wasmgate::routes::DEFAULT_MIN_REQUESTS)]
        min_requests: u64,
        /// Who is rolling out, for the history [default: the AWS identity
        /// with the aws backend, else $USER].
        #[arg(long, env = "WASMGATE_ACTOR")]
        actor: Option<String>,
    },
    /// Show a route's versions and the history of its live pointer.
    History {
        /// The route: `/path` or `host/path`.
        route: RouteName,
        /// Print it as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List every route and its live version.
    Routes {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command.is_none() && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        let _ = <Cli as clap::CommandFactory>::command().print_help();
        return ExitCode::from(2);
    }
    // Servers log to stdout (where platforms collect it); the CLI to stderr.
    let output = match cli.command {
        None => LogOutput::Stdout,
        Some(Command::Serve { .. }) => LogOutput::StdoutBatched,
        Some(_) => LogOutput::Stderr,
    };
    // Dropped last, after the runtime: writes the lines still pending.
    let _log_flush = init_logging(&cli.settings.log, cli.settings.log_format, output);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = cli.settings.clone();
    let on_lambda = cli.command.is_none();
    let backends = Backends::open(&settings).await.map_err(|error| {
        if on_lambda && settings.backend == BackendKind::Embedded {
            error.context(
                "on Lambda, set WASMGATE_BACKEND=aws with WASMGATE_BUCKET and WASMGATE_TABLE \
                 (the embedded default needs a writable WASMGATE_DATA_DIR)",
            )
        } else {
            error
        }
    })?;
    // The CLI compiles a module only to check it: no instance pool needed.
    let cli_engine = || {
        let mut settings = settings.clone();
        settings.pooling = PoolingMode::Off;
        backend::engine(&settings)
    };
    let Some(command) = cli.command else {
        return serve_lambda(&settings, backends, &cli).await;
    };
    match command {
        Command::Serve { serve } => serve_http(&settings, &serve, backends).await,
        Command::Deploy {
            file,
            route,
            metadata,
            parts,
            preview,
            actor,
            json,
        } => {
            let bundle = read_bundle(&file, metadata.as_deref(), parts)?;
            let engine = cli_engine()?;
            let actor = actor_of(actor, &settings).await;
            let report = backends
                .deployer(engine)
                .deploy_as(&route, bundle, &actor, preview)
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            println!("module:  {}", report.key);
            if report.uploaded {
                println!("stored:  uploaded to {}", backends.store.location());
            } else {
                println!("stored:  skipped, already stored");
            }
            for part in &report.parts {
                let how = if part.uploaded {
                    "uploaded"
                } else {
                    "skipped, already stored"
                };
                println!("part:    {} = {} ({how})", part.name, part.key);
            }
            match &report.artifact {
                Some(artifact) => println!("code:    {artifact} (precompiled)"),
                None => println!("code:    none precompiled; servers will compile the module"),
            }
            if !report.bindings.is_empty() {
                println!("bindings: {}", report.bindings.join(", "));
            }
            println!("route:   {} ({})", report.route, report.abi);
            match (&report.preview_token, report.live) {
                (_, true) => println!("version: {} (live)", report.version),
                (Some(token), false) => {
                    println!("version: {} (preview, not live)", report.version);
                    println!(
                        "preview: curl -H '{}: {token}' http://HOST{}",
                        wasmgate::gateway::PREVIEW_HEADER,
                        report.route.find('/').map_or("/", |i| &report.route[i..])
                    );
                    println!(
                        "promote: wasmgate promote {} {}",
                        report.route, report.version
                    );
                }
                (None, false) => println!("version: {} (not live)", report.version),
            }
            Ok(())
        }
        Command::Rollback { route, to, actor } => {
            let engine = cli_engine()?;
            let actor = actor_of(actor, &settings).await;
            let report = backends
                .deployer(engine)
                .rollback(&route, to, &actor)
                .await?;
            print_flip(&report);
            Ok(())
        }
        Command::Promote {
            route,
            version,
            actor,
        } => {
            let engine = cli_engine()?;
            let actor = actor_of(actor, &settings).await;
            let report = backends
                .deployer(engine)
                .promote(&route, version, &actor)
                .await?;
            print_flip(&report);
            Ok(())
        }
        Command::Rollout {
            route,
            to,
            percent,
            sticky_header,
            max_error_rate,
            window,
            min_requests,
            actor,
        } => {
            let engine = cli_engine()?;
            let actor = actor_of(actor, &settings).await;
            let plan = wasmgate::deploy::RolloutPlan {
                to,
                percent,
                sticky_header,
                max_error_rate,
                window_secs: window.as_secs(),
                min_requests,
            };
            let report = backends
                .deployer(engine)
                .rollout(&route, plan, &actor)
                .await?;
            let live = report
                .live_version
                .map_or_else(|| "the live module".to_string(), |v| format!("v{v}"));
            println!(
                "{}: {}, the rest to {live}; servers follow within the route TTL",
                report.route,
                report.split.describe()
            );
            println!(
                "end it: wasmgate promote {} {} | wasmgate rollback {}",
                report.route, report.split.version, report.route
            );
            Ok(())
        }
        Command::History { route, json } => {
            let history = wasmgate::deploy::route_history(backends.table.as_ref(), &route).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&history)?);
            } else {
                print_history(&history);
            }
            Ok(())
        }
        Command::Routes { json } => {
            let routes = backends.table.list().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&routes)?);
                return Ok(());
            }
            if routes.is_empty() {
                println!("no routes yet: deploy one with `wasmgate deploy FILE --route /path`");
            }
            for live in routes {
                let version = live
                    .version
                    .map_or_else(|| "-".to_string(), |v| format!("v{v}"));
                println!(
                    "{:<32} {:>6}  {}  {}",
                    live.route.to_string(),
                    version,
                    live.updated_at,
                    live.module
                );
                if let Some(split) = &live.split {
                    println!("{:<32} rollout: {}", "", split.describe());
                }
            }
            Ok(())
        }
    }
}

async fn serve_http(
    settings: &Settings,
    serve: &ServeSettings,
    backends: Backends,
) -> anyhow::Result<()> {
    let engine = backend::engine(settings)?;
    let gateway = Arc::new(backends.gateway(engine.clone(), settings));
    let addr = serve.listen_addr();
    let mut listener = wasmgate::front::listener::Listener::bind(addr, gateway)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    match serve.admin_token.as_deref().filter(|t| !t.is_empty()) {
        Some(token) => {
            anyhow::ensure!(
                token.len() >= 16,
                "WASMGATE_ADMIN_TOKEN must be at least 16 characters (e.g. `openssl rand -hex 32`)"
            );
            let admin = wasmgate::admin::AdminApi::new(
                token,
                backends.deployer(engine.clone()),
                backends.table.clone(),
                wasmgate::admin::UploadLimits {
                    part_bytes: serve.admin_max_part_mb << 20,
                    total_bytes: serve.admin_max_upload_mb << 20,
                },
            );
            listener = listener.with_admin(Arc::new(admin));
            tracing::info!("admin API enabled under /_wasmgate/");
        }
        None => tracing::info!("admin API off (set WASMGATE_ADMIN_TOKEN to enable it)"),
    }
    tracing::info!(
        addr = %listener.local_addr()?,
        data_dir = %settings.data_dir.display(),
        pooling = engine.pooling(),
        "wasmgate listening"
    );
    let drained = listener
        .serve(
            wasmgate::front::listener::shutdown_signal(),
            serve.drain_timeout(),
        )
        .await;
    tracing::info!(drained, "wasmgate stopped");
    Ok(())
}

#[cfg(feature = "lambda")]
async fn serve_lambda(settings: &Settings, backends: Backends, cli: &Cli) -> anyhow::Result<()> {
    let engine = backend::engine(settings)?;
    // On Lambda, metrics are EMF lines on stdout: CloudWatch makes them
    // metrics with no agent and no API call.
    let emf = wasmgate::metrics::EmfSettings {
        namespace: settings.metrics_namespace.clone(),
        function_name: std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default(),
    };
    let gateway = Arc::new(backends.gateway(engine.clone(), settings).with_emf(emf));
    tracing::info!(pooling = engine.pooling(), mode = ?cli.lambda_invoke_mode, "wasmgate running as a Lambda function");
    wasmgate::front::lambda::run(gateway, cli.lambda_invoke_mode)
        .await
        .map_err(|e| anyhow::anyhow!("the Lambda runtime stopped: {e}"))
}

#[cfg(not(feature = "lambda"))]
async fn serve_lambda(_: &Settings, _: Backends, _: &Cli) -> anyhow::Result<()> {
    anyhow::bail!(
        "AWS_LAMBDA_RUNTIME_API is set but this wasmgate was built without the `lambda` feature"
    )
}

fn print_history(history: &RouteHistory) {
    println!("route {}", history.route);
    match &history.live {
        Some(live) => {
            let version = live
                .version
                .map_or_else(|| "(no version)".to_string(), |v| format!("v{v}"));
            println!("live:  {version}  {}", live.module);
            let matches_its_version = history
                .versions
                .iter()
                .any(|v| Some(v.number) == live.version && v.module == live.module);
            if !matches_its_version {
                match history
                    .versions
                    .iter()
                    .rev()
                    .find(|v| v.module == live.module)
                {
                    Some(v) => {
                        println!("       (set by hand: this is the module of v{})", v.number)
                    }
                    None => {
                        println!("       (set by hand: this module matches no recorded version)")
                    }
                }
            }
        }
        None => println!("live:  none"),
    }
    println!();
    println!("versions:");
    for v in &history.versions {
        let live = history
            .live
            .as_ref()
            .is_some_and(|l| l.version == Some(v.number) && l.module == v.module);
        println!(
            "  {} v{:<4} {}  {:<12} {}",
            if live { "*" } else { " " },
            v.number,
            v.created_at,
            v.created_by,
            v.module
        );
        // Names and types only: secret values are never stored here.
        match VersionSpec::from_stored(&v.metadata) {
            Ok(spec) => {
                if let Some(abi) = &spec.abi {
                    println!("           abi: {abi}");
                }
                if !spec.bindings.is_empty() {
                    println!("           bindings: {}", spec.summary());
                }
                let mut limits = Vec::new();
                if let Some(mb) = spec.memory_limit_mb {
                    limits.push(format!("memory {mb} MiB"));
                }
                if let Some(ms) = spec.timeout_ms {
                    limits.push(format!("timeout {ms} ms"));
                }
                if let Some(bytes) = spec.max_body_bytes {
                    limits.push(format!("body {bytes} bytes"));
                }
                if !limits.is_empty() {
                    println!("           limits: {}", limits.join(", "));
                }
            }
            Err(error) => println!("           bindings: unreadable ({error})"),
        }
    }
    println!();
    println!("pointer changes:");
    for c in &history.changes {
        let from = c
            .from_version
            .map_or_else(|| "-".to_string(), |v| format!("v{v}"));
        let to = c
            .to_version
            .map_or_else(|| "-".to_string(), |v| format!("v{v}"));
        let reason = c
            .reason
            .as_deref()
            .map(|r| format!("  ({r})"))
            .unwrap_or_default();
        println!(
            "  {}  {:<9} {from:>5} -> {to:<5} by {}{reason}",
            c.at, c.action, c.actor
        );
    }
}

/// `NAME=FILE`, for --part.
fn parse_part(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("{text:?} is not NAME=FILE")),
    }
}

/// Reads the main module, the metadata and the parts of a deploy.
fn read_bundle(
    file: &std::path::Path,
    metadata: Option<&std::path::Path>,
    parts: Vec<(String, PathBuf)>,
) -> anyhow::Result<DeployBundle> {
    let read = |path: &std::path::Path| {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    };
    let metadata = match metadata {
        Some(path) => DeployMetadata::parse(&read(path)?)
            .with_context(|| format!("refusing to deploy: {}", path.display()))?,
        None => DeployMetadata::default(),
    };
    let mut bundle = DeployBundle {
        main: Bytes::from(read(file)?),
        parts: Default::default(),
        metadata,
    };
    for (name, path) in parts {
        let bytes = Bytes::from(read(&path)?);
        if bundle.parts.insert(name.clone(), bytes).is_some() {
            anyhow::bail!("refusing to deploy: --part {name} is given twice");
        }
    }
    Ok(bundle)
}

fn print_flip(report: &wasmgate::deploy::RollbackReport) {
    if let Some(candidate) = report.ended_rollout
        && report.from_version == Some(report.to_version)
    {
        println!(
            "{}: rollout of v{candidate} ended; version {} stays live; servers follow within the route TTL",
            report.route, report.to_version
        );
        return;
    }
    let from = report
        .from_version
        .map_or_else(|| "-".to_string(), |v| v.to_string());
    println!(
        "{}: version {} is live (was {from}); servers follow within the route TTL",
        report.route, report.to_version
    );
    if let Some(candidate) = report.ended_rollout {
        println!("rollout of v{candidate} ended");
    }
    println!("module:  {}", report.module);
}

/// Who is acting, for the history: `--actor`, else the AWS identity (with
/// the aws backend), else the OS user.
async fn actor_of(actor: Option<String>, settings: &Settings) -> String {
    if let Some(actor) = actor.filter(|a| !a.trim().is_empty()) {
        return actor;
    }
    #[cfg(feature = "aws")]
    if settings.backend == BackendKind::Aws
        && let Some(arn) = backend::aws_caller_identity().await
    {
        return arn;
    }
    let _ = settings;
    actor_or_user(None)
}

fn actor_or_user(actor: Option<String>) -> String {
    actor
        .filter(|a| !a.trim().is_empty())
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Where a process's log lines go.
#[derive(Clone, Copy, PartialEq)]
enum LogOutput {
    /// Lambda: each line written at once (a container is frozen between
    /// invocations, and serves one request at a time).
    Stdout,
    /// `serve`: a line per request, gathered and written in batches by a
    /// thread of its own (`wasmgate::logging`).
    StdoutBatched,
    /// The CLI: its stdout is the command's output.
    Stderr,
}

/// Logs go to stdout for `serve` and on Lambda (where platforms collect
/// them) and to stderr for the CLI (so its stdout stays the command's
/// output). JSON lines, one event each with its fields at the top level
/// (what CloudWatch Logs Insights and Cloud Logging query as-is), unless
/// the stream is a terminal or `WASMGATE_LOG_FORMAT` says otherwise.
///
/// Returns the guard that writes `serve`'s pending lines when dropped.
fn init_logging(
    filter: &str,
    format: LogFormat,
    output: LogOutput,
) -> Option<wasmgate::logging::FlushOnDrop> {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|error| {
        eprintln!("warning: WASMGATE_LOG={filter:?} is not a valid filter ({error}); using `info`");
        tracing_subscriber::EnvFilter::new("info")
    });
    let terminal = if output == LogOutput::Stderr {
        std::io::stderr().is_terminal()
    } else {
        std::io::stdout().is_terminal()
    };
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Json => true,
        LogFormat::Text => false,
    };
    let batched = match output {
        LogOutput::StdoutBatched => {
            match wasmgate::logging::BatchedWriter::spawn(std::io::stdout()) {
                Ok(batched) => Some(batched),
                Err(error) => {
                    eprintln!(
                        "warning: starting the log writer thread: {error}; writing lines one by one"
                    );
                    None
                }
            }
        }
        _ => None,
    };
    let (batched, flush_guard) = batched.unzip();
    let writer = match (&batched, output) {
        (Some(batched), _) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(batched.clone()),
        (None, LogOutput::Stderr) => {
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr)
        }
        (None, _) => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stdout),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder.event_format(wasmgate::logging::JsonLines).init();
    } else {
        builder.with_ansi(terminal).init();
    }
    // A panic anywhere (a bug) is logged as an event like any other, so it
    // is found by the same queries; the default hook's text would be
    // neither JSON nor tagged.
    std::panic::set_hook(Box::new(move |info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        #[cfg(feature = "lambda")]
        if wasmgate::front::lambda::in_event_conversion() {
            // A malformed event, caught and answered 400 (and logged then).
            tracing::debug!(panic = %message, %location, "lambda_http could not convert an event");
            return;
        }
        if tracing::enabled!(tracing::Level::ERROR) {
            tracing::error!(panic = %message, %location, "panic");
            // The process may be about to end: the line must not wait.
            if let Some(batched) = &batched {
                let _ = batched.flush();
            }
        } else {
            eprintln!("panic at {location}: {message}");
        }
    }));
    flush_guard
}
