//! Hardening: input limits answered before the work, graceful drain on
//! SIGTERM, JSON request logs, the metrics endpoint, and the outbound
//! allow-list, each through a real listener (in process or the binary).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_input_limit_is_answered_before_the_work_and_the_server_stays_up() {
    let server = TestServer::start_with(|s| s.max_body_bytes = 64 * 1024).await;
    server.deploy("/probe", PROBE).await;
    server
        .deploy_with("/small", PROBE, r#"{"max_body_bytes": 100}"#, &[])
        .await
        .unwrap();
    assert_still_serving(&server).await;

    // A declared 10 MB body is refused at once: 10 bytes of it are sent and
    // the answer comes without waiting for the rest.
    let started = Instant::now();
    let (status, text) = raw_exchange(
        server.addr,
        "POST /probe/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 10000000\r\n\r\n",
        b"0123456789",
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert!(
        text.contains("larger than the limit of 65536 bytes"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered without the rest of the body"
    );
    assert_still_serving(&server).await;

    // A chunked body with no declared length is cut off at the limit.
    let chunk = format!("{:x}\r\n{}\r\n", 16 * 1024, "a".repeat(16 * 1024));
    let (status, text) = raw_exchange(
        server.addr,
        "POST /probe/echo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n",
        format!("{}0\r\n\r\n", chunk.repeat(5)).as_bytes(),
    )
    .await;
    assert_eq!(status, 413, "{text}");
    assert_still_serving(&server).await;

    // Under the limit the body arrives whole.
    let ok = server
        .request("POST", "/probe/echo", &[], &[b'b'; 60 * 1024])
        .await;
    assert_eq!(ok.status, 200);
    assert!(ok.text().contains("body-length: 61440\n"));

    // A version's own limit wins over the server's.
    let small = server
        .request("POST", "/small/echo", &[], &[b'c'; 101])
        .await;
    assert_eq!(small.status, 413, "{}", small.text());
    let small = server
        .request("POST", "/small/echo", &[], &[b'c'; 100])
        .await;
    assert_eq!(small.status, 200, "{}", small.text());

    // A request line over 8 KiB.
    let long = format!("/probe/echo?q={}", "x".repeat(9 * 1024));
    let reply = server.get(&long).await;
    assert_eq!(reply.status, 414, "{}", reply.text());
    assert_still_serving(&server).await;

    // Headers over 32 KiB in all.
    let value = "v".repeat(1024);
    let many: Vec<(String, &str)> = (0..40)
        .map(|i| (format!("x-big-{i}"), value.as_str()))
        .collect();
    let headers: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    let reply = server.request("GET", "/probe/echo", &headers, b"").await;
    assert_eq!(reply.status, 431, "{}", reply.text());
    assert!(
        reply.text().contains("bytes of headers"),
        "{}",
        reply.text()
    );
    assert_still_serving(&server).await;

    // More than 100 headers.
    let many: Vec<String> = (0..150).map(|i| format!("x-h-{i}")).collect();
    let headers: Vec<(&str, &str)> = many.iter().map(|k| (k.as_str(), "1")).collect();
    let mut head = "GET /probe/echo HTTP/1.1\r\nhost: x\r\n".to_string();
    for (k, v) in &headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let (status, text) = raw_exchange(server.addr, &head, b"").await;
    assert_eq!(status, 431, "{text}");
    assert_still_serving(&server).await;

    // A head far past every limit is refused by the HTTP parser itself.
    let mut head = "GET /probe/echo HTTP/1.1\r\nhost: x\r\n".to_string();
    for i in 0..60 {
        head.push_str(&format!("x-huge-{i}: {}\r\n", "h".repeat(2048)));
    }
    head.push_str("\r\n");
    let (status, text) = raw_exchange(server.addr, &head, b"").await;
    assert_eq!(status, 431, "{text}");
    assert_still_serving(&server).await;

    let metrics = server.get("/_wasmgate/metrics").await.text();
    let refusals = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmgate_limit_refusals_total "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(
        refusals >= 5,
        "the gateway's refusals are counted: {metrics}"
    );
}

/// Starts `count` slow downloads and returns them once each has its head.
async fn start_downloads(
    addr: SocketAddr,
    path: &str,
    count: usize,
) -> Vec<tokio::task::JoinHandle<Result<Vec<u8>, String>>> {
    let mut tasks = Vec::new();
    let (heads_tx, mut heads_rx) = tokio::sync::mpsc::channel::<()>(count);
    for _ in 0..count {
        let path = path.to_string();
        let heads = heads_tx.clone();
        tasks.push(tokio::spawn(async move {
            let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
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
            if response.status() != 200 {
                return Err(format!("status {}", response.status()));
            }
            let _ = heads.send(()).await;
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("the body was cut off: {e}"))?;
            Ok(body.to_bytes().to_vec())
        }));
    }
    for _ in 0..count {
        tokio::time::timeout(Duration::from_secs(60), heads_rx.recv())
            .await
            .expect("every download started");
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_every_streamed_download_finish_whole_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    cli_ok(
        &data,
        &["deploy", probe.to_str().unwrap(), "--route", "/probe"],
    );
    let mut server = ServeProcess::start(
        &data,
        2_000,
        &[("WASMGATE_DRAIN_TIMEOUT_MS", "20000".to_string())],
    );
    // Warm: the first compile is not part of what is measured.
    let warm = send(server.addr, "GET", "/probe/echo", &[], Bytes::new()).await;
    assert_eq!(warm.status, 200);

    // 16 downloads of 20 chunks of 4 KiB, 100 ms apart: about 2 s each.
    let (chunks, size) = (20, 4096);
    let path = format!("/probe/slow?chunks={chunks}&size={size}&ms=100");
    let downloads = start_downloads(server.addr, &path, 16).await;

    let pid = server.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());

    // No new connection is taken once the drain has begun.
    let addr = server.addr;
    let refused = eventually(Duration::from_secs(5), || async move {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
    assert!(refused.is_some(), "the listener closed on SIGTERM");

    for download in downloads {
        let body = download.await.unwrap().expect("the download completed");
        assert_eq!(body.len(), chunks * size, "whole");
        assert!(
            body.chunks(16)
                .all(|c| c == &b"0123456789abcdef"[..c.len()]),
            "intact"
        );
    }
    let status = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.child.try_wait().unwrap() {
                return (status, server);
            }
            assert!(
                Instant::now() < deadline,
                "the server exited after draining"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let (status, server) = status;
    assert_eq!(status.code(), Some(0), "a drained shutdown exits 0");
    assert!(
        !server
            .log_lines_with(&["draining in-flight requests"])
            .is_empty(),
        "the drain is logged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_logs_are_json_lines_carrying_the_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    cli_ok(
        &data,
        &["deploy", probe.to_str().unwrap(), "--route", "/probe"],
    );
    // stdout is a pipe: JSON by default.
    let server = ServeProcess::start(&data, 2_000, &[]);
    let reply = send(
        server.addr,
        "GET",
        "/probe/echo",
        &[("x-request-id", "trace-json-0001")],
        Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["x-request-id"], "trace-json-0001");
    // Without one, an id is made and echoed.
    let other = send(server.addr, "GET", "/probe/echo", &[], Bytes::new()).await;
    let made = other.headers["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 32, "{made}");

    let found = eventually(Duration::from_secs(10), || async {
        !server.log_lines_with(&["trace-json-0001"]).is_empty()
            && !server.log_lines_with(&[&made]).is_empty()
    })
    .await;
    assert!(found.is_some(), "{:?}", server.log.lock().unwrap());
    let line = &server.log_lines_with(&["trace-json-0001"])[0];
    let event: Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(event["request_id"], "trace-json-0001", "{event}");
    assert_eq!(event["message"], "request", "{event}");
    assert_eq!(event["level"], "INFO", "{event}");
    assert_eq!(event["route"], "/probe", "{event}");
    assert_eq!(event["status"], 200, "{event}");
    assert_eq!(event["version"], 1, "{event}");
    assert!(
        event["module"]
            .as_str()
            .unwrap()
            .starts_with("application/wasm/"),
        "{event}"
    );
    assert!(event["duration_ms"].is_number(), "{event}");
    assert!(
        event["route_cache"].is_string() && event["module_cache"].is_string(),
        "{event}"
    );
    assert!(event["timestamp"].is_string(), "{event}");
    for line in server.log.lock().unwrap().iter() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }

    // WASMGATE_LOG_FORMAT=text overrides.
    let text = ServeProcess::start(&data, 2_000, &[("WASMGATE_LOG_FORMAT", "text".into())]);
    send(
        text.addr,
        "GET",
        "/probe/echo",
        &[("x-request-id", "trace-text-0001")],
        Bytes::new(),
    )
    .await;
    let found = eventually(Duration::from_secs(10), || async {
        !text
            .log_lines_with(&["request_id=trace-text-0001"])
            .is_empty()
    })
    .await;
    assert!(found.is_some(), "{:?}", text.log.lock().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_endpoint_is_behind_the_admin_token_when_there_is_one() {
    let admin = TestServer::start_admin(wasmgate::admin::UploadLimits::default()).await;
    admin.deploy("/probe", PROBE).await;
    assert_eq!(admin.get("/probe/echo").await.status, 200);
    let anonymous = admin.get("/_wasmgate/metrics").await;
    assert_eq!(anonymous.status, 401);
    assert!(
        !anonymous.text().contains("wasmgate_"),
        "{}",
        anonymous.text()
    );
    let wrong = admin
        .request(
            "GET",
            "/_wasmgate/metrics",
            &[("authorization", "Bearer nope-nope-nope-nope")],
            b"",
        )
        .await;
    assert_eq!(wrong.status, 401);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let scrape = admin
        .request(
            "GET",
            "/_wasmgate/metrics",
            &[("authorization", &bearer)],
            b"",
        )
        .await;
    assert_eq!(scrape.status, 200);
    assert!(
        scrape.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = scrape.text();
    for family in [
        "# TYPE wasmgate_requests_total counter",
        "# TYPE wasmgate_request_duration_seconds histogram",
        "wasmgate_request_duration_seconds_bucket{le=\"+Inf\"} ",
        "wasmgate_module_cache_total{outcome=\"miss\"} ",
        "wasmgate_route_cache_total{outcome=\"hit\"} ",
        "process_resident_memory_bytes ",
    ] {
        assert!(text.contains(family), "{family} in:\n{text}");
    }
    let ok = text
        .lines()
        .find_map(|l| l.strip_prefix("wasmgate_requests_total{class=\"2xx\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap();
    assert!(ok >= 1, "{text}");

    // Without an admin token, the endpoint is open (it serves no secrets).
    let open = TestServer::start().await;
    let scrape = open.get("/_wasmgate/metrics").await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.text().contains("wasmgate_requests_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_http_reaches_only_the_hosts_the_version_allows() {
    let (allowed, _) = upstream("127.0.0.1:0".parse().unwrap(), "allowed").await;
    let (other, _) = upstream("127.0.0.1:0".parse().unwrap(), "other").await;
    let server = TestServer::start().await;
    server.deploy("/closed", PROBE).await;
    let metadata = format!(
        r#"{{"allowed_outbound_hosts": ["http://127.0.0.1:{}"]}}"#,
        allowed.port()
    );
    server
        .deploy_with("/open", PROBE, &metadata, &[])
        .await
        .unwrap();

    let fetch = |route: &str, authority: String| {
        format!("/{route}/fetch?authority={authority}&path=/hello")
    };
    let reply = server.get(&fetch("open", allowed.to_string())).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.text(),
        "status: 200\nupstream allowed saw /hello",
        "the allowed host answers"
    );

    for (route, authority) in [
        ("open", other.to_string()),
        ("open", format!("localhost:{}", allowed.port())),
        ("closed", allowed.to_string()),
    ] {
        let reply = server.get(&fetch(route, authority.clone())).await;
        assert_eq!(reply.status, 200, "the guest handles the error itself");
        assert_eq!(
            reply.text(),
            "error: ErrorCode::HttpRequestDenied\n",
            "/{route} to {authority} is denied inside the guest"
        );
    }
    // https to the allowed host and port: the scheme is part of the grant.
    let reply = server
        .get(&format!(
            "/open/fetch?scheme=https&authority={allowed}&path=/"
        ))
        .await;
    assert_eq!(reply.text(), "error: ErrorCode::HttpRequestDenied\n");

    let metrics = server.get("/_wasmgate/metrics").await.text();
    assert!(
        metrics.contains("wasmgate_outbound_requests_total{outcome=\"denied\"}"),
        "{metrics}"
    );

    // A bad entry is refused at deploy, naming it.
    let dir = tempfile::tempdir().unwrap();
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    let metadata = write_file(
        dir.path(),
        "metadata.json",
        br#"{"allowed_outbound_hosts": ["https://*"]}"#,
    );
    let error = cli_err(
        &dir.path().join("data"),
        &[
            "deploy",
            probe.to_str().unwrap(),
            "--route",
            "/open",
            "--metadata",
            metadata.to_str().unwrap(),
        ],
    );
    assert!(error.contains("\"https://*\""), "{error}");
}
