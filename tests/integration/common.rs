//! Test helpers: a wasmgate server on 127.0.0.1 in this process, a minimal
//! HTTP/1.1 client, the fixtures, and the CLI binary.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use wasmgate::backend::{self, Backends};
use wasmgate::config::{BackendKind, Settings, Toggle};
use wasmgate::deploy::Deployer;
use wasmgate::front::listener::Listener;
use wasmgate::routes::RouteName;
use wasmgate::runtime::PoolingMode;

/// The test guest: behaviour chosen by the last path segment (see tests/guests/probe).
pub const PROBE: &[u8] = include_bytes!("../fixtures/probe.wasm");
/// The README's example function.
pub const HELLO: &[u8] = include_bytes!("../../examples/hello-rust/hello.wasm");
/// The WAGI test guest: a WASI preview1 command (see tests/guests/wagi-probe).
pub const WAGI_PROBE: &[u8] = include_bytes!("../fixtures/wagi-probe.wasm");
/// The isqrt example: a WAGI module importing `_Z7Q_rsqrtf` from `isqrt`,
/// the module that exports it, and the metadata binding one to the other.
pub const ISQRT_MAIN: &[u8] = include_bytes!("../../examples/isqrt/main.wasm");
pub const ISQRT_LIB: &[u8] = include_bytes!("../../examples/isqrt/isqrt.wasm");
pub const ISQRT_METADATA: &str = include_str!("../../examples/isqrt/metadata.json");
/// A valid component that is a wasi:cli command, not a wasi:http handler.
pub const CLI_COMMAND: &[u8] = include_bytes!("../fixtures/cli-command.wasm");

/// The admin token of [`TestServer::start_admin`].
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Settings for a test: a fresh data dir, a short deadline.
pub fn settings(data_dir: &Path) -> Settings {
    Settings {
        backend: BackendKind::Embedded,
        bucket: None,
        table: None,
        kv_table: None,
        data_dir: data_dir.to_path_buf(),
        route_ttl_ms: 2_000,
        memory_limit_mb: 64,
        // Generous: a cold compile counts against it, and CI machines are busy.
        timeout_ms: 20_000,
        max_concurrency: 64,
        route_max_concurrency: None,
        queue_timeout_ms: 1_000,
        cpu_lanes: None,
        guest_memory_mb: None,
        module_cache_size: 16,
        pooling: PoolingMode::Auto,
        precompiled: Toggle::On,
        max_body_bytes: wasmgate::config::DEFAULT_MAX_BODY_BYTES,
        max_header_bytes: 32 * 1024,
        max_headers: 100,
        max_field_bytes: 128 * 1024,
        stale_max_ms: wasmgate::config::DEFAULT_STALE_MAX_MS,
        backend_timeout_ms: 5_000,
        metrics_namespace: "wasmgate".into(),
        log: "warn".into(),
        log_format: wasmgate::config::LogFormat::Auto,
    }
}

/// A wasmgate listener running in this process on 127.0.0.1.
pub struct TestServer {
    pub addr: SocketAddr,
    pub data_dir: tempfile::TempDir,
    pub settings: Settings,
    pub deployer: Deployer,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<bool>>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// Starts a server whose settings `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Self {
        Self::start_full(tweak, None, None).await
    }

    /// Starts a server whose guests' outbound requests resolve names with
    /// `resolver` (the test seam; the system resolver otherwise), with
    /// settings `tweak` adjusts.
    pub async fn start_with_resolver(
        resolver: wasmgate::runtime::outbound::Resolver,
        tweak: impl FnOnce(&mut Settings),
    ) -> Self {
        Self::start_full(tweak, None, Some(resolver)).await
    }

    /// Starts a server with the admin API on, behind `ADMIN_TOKEN`, with
    /// uploads limited to `limits`.
    pub async fn start_admin(limits: wasmgate::admin::UploadLimits) -> Self {
        Self::start_full(|s| s.route_ttl_ms = 100, Some(limits), None).await
    }

    async fn start_full(
        tweak: impl FnOnce(&mut Settings),
        admin: Option<wasmgate::admin::UploadLimits>,
        resolver: Option<wasmgate::runtime::outbound::Resolver>,
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut settings = settings(data_dir.path());
        tweak(&mut settings);
        let backends = Backends::open(&settings)
            .await
            .expect("opening the backends");
        let engine = backend::engine(&settings).expect("engine");
        let mut gateway = backends.gateway(engine.clone(), &settings);
        if let Some(resolver) = resolver {
            gateway = gateway.with_outbound_resolver(resolver);
        }
        let gateway = Arc::new(gateway);
        let mut listener = Listener::bind("127.0.0.1:0".parse().unwrap(), gateway)
            .await
            .expect("bind");
        if let Some(limits) = admin {
            listener = listener.with_admin(Arc::new(wasmgate::admin::AdminApi::new(
                ADMIN_TOKEN,
                backends.deployer(engine.clone()),
                backends.table.clone(),
                limits,
            )));
        }
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(listener.serve(
            async {
                let _ = stopped.await;
            },
            Duration::from_secs(10),
        ));
        TestServer {
            addr,
            deployer: backends.deployer(engine),
            data_dir,
            settings,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Deploys `bytes` to `route` through the library (the CLI's code path).
    pub async fn deploy(&self, route: &str, bytes: &[u8]) -> wasmgate::deploy::DeployReport {
        self.deployer
            .deploy(
                &RouteName::parse(route).unwrap(),
                wasmgate::deploy::DeployBundle::module(Bytes::copy_from_slice(bytes)),
                "test",
            )
            .await
            .expect("deploy")
    }

    /// Deploys `bytes` with `metadata` (JSON) and `parts`.
    pub async fn deploy_with(
        &self,
        route: &str,
        bytes: &[u8],
        metadata: &str,
        parts: &[(&str, &[u8])],
    ) -> Result<wasmgate::deploy::DeployReport, wasmgate::deploy::DeployError> {
        let bundle = wasmgate::deploy::DeployBundle {
            main: Bytes::copy_from_slice(bytes),
            parts: parts
                .iter()
                .map(|(name, bytes)| (name.to_string(), Bytes::copy_from_slice(bytes)))
                .collect(),
            metadata: wasmgate::runtime::bindings::DeployMetadata::parse(metadata.as_bytes())
                .expect("test metadata parses"),
        };
        self.deployer
            .deploy(&RouteName::parse(route).unwrap(), bundle, "test")
            .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        send(self.addr, "GET", path, &[], Bytes::new()).await
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        send(
            self.addr,
            method,
            path,
            headers,
            Bytes::copy_from_slice(body),
        )
        .await
    }

    /// Stops accepting and drains; returns whether the drain completed.
    pub async fn stop(mut self) -> bool {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap()
    }
}

/// A response, whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request on a new connection and reads the whole response.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut request = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        request = request.header("host", addr.to_string());
    }
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request.body(Full::new(body)).unwrap();
    let response = sender.send_request(request).await.expect("send request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Writes `head` (and `body`) on a raw connection and reads what comes back
/// within 10 s: the status line's code and the whole text. Unlike [`send`],
/// an answer that comes before the body was all written (an early 413, the
/// connection closed after it) is read, not an error.
pub async fn raw_exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before it has read all of this.
    let _ = stream.write_all(body).await;
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    reply.extend_from_slice(&buf[..n]);
                    // One response is enough: stop at the end of a short body.
                    let text = String::from_utf8_lossy(&reply);
                    if let Some((head, rest)) = text.split_once("\r\n\r\n")
                        && head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|n| n.trim().parse::<usize>().ok())
                            .is_some_and(|n| rest.len() >= n)
                    {
                        break;
                    }
                }
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Sends one request and reads the whole response, reporting a connection
/// aborted before the response was complete instead of panicking.
pub async fn send_for_result(addr: SocketAddr, path: &str) -> Result<(u16, Bytes), String> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let request = http::Request::builder()
        .uri(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    Ok((status, body.to_bytes()))
}

/// Polls `f` until it returns true or `within` passes; returns how long it took.
pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while started.elapsed() < within {
        if f().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

/// The `wasmgate` binary built for these tests.
pub fn wasmgate(data_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wasmgate"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WASMGATE_DATA_DIR", data_dir)
        .env("WASMGATE_LOG", "warn")
        .env("USER", "tester");
    cmd
}

/// Runs the CLI and returns its output.
pub fn run_cli(data_dir: &Path, args: &[&str]) -> Output {
    wasmgate(data_dir)
        .args(args)
        .output()
        .expect("running wasmgate")
}

/// Writes `bytes` to a file in `dir` and returns its path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs the CLI, asserts it succeeded, and returns its stdout.
pub fn cli_ok(data_dir: &Path, args: &[&str]) -> String {
    let out = run_cli(data_dir, args);
    assert!(
        out.status.success(),
        "wasmgate {args:?} failed: {}",
        stderr(&out)
    );
    stdout(&out)
}

/// Runs the CLI, asserts it failed, and returns its stderr.
pub fn cli_err(data_dir: &Path, args: &[&str]) -> String {
    let out = run_cli(data_dir, args);
    assert!(
        !out.status.success(),
        "wasmgate {args:?} succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// Asserts that `server` still answers the probe guest deployed at `/probe`
/// (after a fault or a refusal).
pub async fn assert_still_serving(server: &TestServer) {
    let reply = server.get("/probe/echo?alive=1").await;
    assert_eq!(
        reply.status,
        200,
        "the server still serves: {}",
        reply.text()
    );
}

/// The precompiled artifact a `wasmgate deploy` printed (`code: KEY
/// (precompiled)`); panics when it printed none.
pub fn artifact_of(deploy_output: &str) -> String {
    deploy_output
        .lines()
        .find_map(|l| l.strip_prefix("code:    "))
        .and_then(|l| l.strip_suffix(" (precompiled)"))
        .unwrap_or_else(|| panic!("no artifact in {deploy_output}"))
        .to_string()
}

/// A `wasmgate serve` child process, killed on drop.
pub struct ServeProcess {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    /// Every line the server logged to stdout so far.
    pub log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl ServeProcess {
    /// Starts `wasmgate serve` on a free port with `env` added.
    pub fn start(data: &std::path::Path, ttl_ms: u64, env: &[(&str, String)]) -> Self {
        let mut child = wasmgate(data)
            .args(["serve", "--addr", "127.0.0.1:0"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("WASMGATE_ROUTE_TTL_MS", ttl_ms.to_string())
            .env("WASMGATE_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            // JSON lines when stdout is a pipe (the default), text with
            // WASMGATE_LOG_FORMAT=text.
            if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
                && let Some(addr) = event["addr"].as_str()
            {
                break addr.parse().unwrap();
            }
            if let Some(rest) = line.split("addr=").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining the log so the child never blocks on a full pipe.
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        ServeProcess { child, addr, log }
    }

    /// The log lines that contain every one of `needles`, once there is at
    /// least one (lines reach the log through a pipe and a thread); empty
    /// after 5 s without one.
    pub fn wait_for_log(&self, needles: &[&str]) -> Vec<String> {
        let until = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let lines = self.log_lines_with(needles);
            if !lines.is_empty() || std::time::Instant::now() > until {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The log lines that contain every one of `needles`.
    pub fn log_lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|line| needles.iter().all(|n| line.contains(n)))
            .cloned()
            .collect()
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP server on `bind` answering `upstream {name} saw {path}`,
/// and the number of connections it accepted.
pub async fn upstream(
    bind: SocketAddr,
    name: &'static str,
) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| async move {
                        let text = format!("upstream {name} saw {}", request.uri().path());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(text),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, accepted)
}

/// `wasmgate deploy` of `wasm` to `route` in `data` with `metadata` (JSON),
/// both written to files under `dir` first, as a user would.
pub fn cli_deploy_with_metadata(dir: &Path, data: &Path, wasm: &[u8], route: &str, metadata: &str) {
    let module = write_file(dir, "module.wasm", wasm);
    let metadata = write_file(dir, "metadata.json", metadata.as_bytes());
    cli_ok(
        data,
        &[
            "deploy",
            module.to_str().unwrap(),
            "--route",
            route,
            "--metadata",
            metadata.to_str().unwrap(),
        ],
    );
}
