//! The HTTP listener front (feature `http`): hyper 1.x on a TCP socket, for
//! Cloud Run (`$PORT`) and local use. On shutdown it stops accepting and
//! lets in-flight requests, streamed bodies included, finish within the
//! drain timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::admin::AdminApi;
use crate::body::BoxError;
use crate::gateway::{Gateway, HostPolicy, MAX_REQUEST_LINE, RequestInfo};

/// How long a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Where the Prometheus metrics are served (behind the admin token when one
/// is set).
pub const METRICS_PATH: &str = "/_wasmgate/metrics";

/// A bound listener, ready to serve.
pub struct Listener {
    tcp: TcpListener,
    gateway: Arc<Gateway>,
    admin: Option<Arc<AdminApi>>,
}

impl Listener {
    /// Binds `addr`. Fails when the address is taken or not ours.
    pub async fn bind(addr: SocketAddr, gateway: Arc<Gateway>) -> std::io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        Ok(Listener {
            tcp,
            gateway,
            admin: None,
        })
    }

    /// Serves the admin API under `/_wasmgate/` too.
    pub fn with_admin(mut self, admin: Arc<AdminApi>) -> Self {
        self.admin = Some(admin);
        self
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains: no new connections,
    /// in-flight requests get up to `drain_timeout` to complete. Returns
    /// whether everything drained in time.
    pub async fn serve(self, shutdown: impl Future<Output = ()>, drain_timeout: Duration) -> bool {
        let graceful = GracefulShutdown::new();
        let limits = self.gateway.limits();
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true)
            // Room for a request line the gateway answers 414 and headers
            // it answers 431; a head larger still is refused by hyper (431)
            // before it is buffered.
            .max_buf_size(MAX_REQUEST_LINE + limits.max_header_bytes + 64 * 1024);
        if limits.max_headers != 100 {
            // hyper's default is 100 and parses them on the stack; any other
            // count costs a heap allocation per request.
            http.max_headers(limits.max_headers + 1);
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(conn) => conn,
                        Err(error) => {
                            // EMFILE and friends: back off instead of spinning.
                            tracing::warn!(%error, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = stream.set_nodelay(true);
                    let gateway = self.gateway.clone();
                    let admin = self.admin.clone();
                    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                        let gateway = gateway.clone();
                        let admin = admin.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(
                                handle(&gateway, admin.as_deref(), request, peer).await,
                            )
                        }
                    });
                    let conn = http.serve_connection(TokioIo::new(stream), service);
                    let conn = graceful.watch(conn);
                    tokio::spawn(async move {
                        if let Err(error) = conn.await {
                            tracing::debug!(%peer, %error, "connection ended with an error");
                        }
                    });
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.tcp);
        tracing::info!(
            drain_timeout_ms = drain_timeout.as_millis() as u64,
            "shutting down: draining in-flight requests"
        );
        match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
            Ok(()) => true,
            Err(_) => {
                tracing::warn!("drain timeout passed with requests still in flight");
                false
            }
        }
    }
}

async fn handle(
    gateway: &Gateway,
    admin: Option<&AdminApi>,
    request: hyper::Request<Incoming>,
    peer: std::net::SocketAddr,
) -> hyper::Response<crate::body::Body> {
    let https = request
        .headers()
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    // RFC 9112 §3.2: an HTTP/1.1 request without a Host is a 400; HTTP/1.0
    // may leave it out (the any-host routes serve it).
    let host_policy = if request.version() >= http::Version::HTTP_11 {
        HostPolicy::Required
    } else {
        HostPolicy::Optional
    };
    let request = request.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync());
    if request.uri().path() == METRICS_PATH && request.method() == http::Method::GET {
        if let Some(admin) = admin
            && let Some(refused) = admin.refusal(&request, admin_client(&request, peer))
        {
            return refused;
        }
        let mut response = hyper::Response::new(crate::body::full(gateway.prometheus_metrics()));
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return response;
    }
    if let Some(admin) = admin
        && AdminApi::owns(request.uri().path())
    {
        let client = admin_client(&request, peer);
        return admin.handle(request, client).await;
    }
    gateway
        .handle(
            request,
            RequestInfo {
                https,
                remote_addr: Some(peer.ip().to_string()),
                host_policy,
                ..RequestInfo::default()
            },
        )
        .await
}

/// The address an admin request's refusals are counted against: the peer,
/// or on Cloud Run (`K_SERVICE` set), where every peer is Google's front
/// end, the client address that front end appended to `X-Forwarded-For`.
fn admin_client<B>(request: &hyper::Request<B>, peer: SocketAddr) -> std::net::IpAddr {
    static BEHIND_CLOUD_RUN: std::sync::LazyLock<bool> =
        std::sync::LazyLock::new(|| std::env::var_os("K_SERVICE").is_some());
    if *BEHIND_CLOUD_RUN
        && let Some(client) = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .next_back()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .and_then(|ip| ip.trim().parse().ok())
    {
        return client;
    }
    peer.ip()
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received"),
        () = term => tracing::info!("SIGTERM received"),
    }
}
