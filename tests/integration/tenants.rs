//! Safe for untrusted tenants: the Host rules of RFC 9112, bodies that
//! fail on the way, an instance pool that is never mistaken for a guest
//! fault, and rollbacks after a hand flip of the pointer.

use std::time::{Duration, Instant};

use crate::common::*;

/// The listener's Host rules: one valid `Host` on HTTP/1.1, none allowed on
/// HTTP/1.0 (the any-host routes serve it), a trailing dot ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_checked_as_rfc_9112_asks() {
    let server = TestServer::start().await;
    server.deploy("/", PROBE).await;
    server.deploy("named.example/n", HELLO).await;
    let addr = server.addr;
    let get = |path: &str, headers: &str, version: &str| {
        format!("GET {path} HTTP/{version}\r\n{headers}Connection: close\r\n\r\n")
    };

    for (headers, why) in [
        ("Host: a.example\r\nHost: b.example\r\n", "two Host headers"),
        ("Host: a b.example\r\n", "a space"),
        ("Host: a.example/evil\r\n", "a slash"),
        ("Host: user@a.example\r\n", "userinfo"),
        ("Host: [not-v6]\r\n", "a bad IPv6 literal"),
        ("Host: a.example:80x\r\n", "a bad port"),
        ("", "no Host on HTTP/1.1"),
    ] {
        let (status, text) = raw_exchange(addr, &get("/echo", headers, "1.1"), b"").await;
        assert_eq!(status, 400, "{why}: {text}");
    }

    // HAProxy's default health check: HTTP/1.0, no Host.
    let (status, text) = raw_exchange(addr, &get("/echo", "", "1.0"), b"").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("path: /echo"), "{text}");

    // A fully qualified name is the same host.
    let (status, text) = raw_exchange(
        addr,
        &get("/n/x", "Host: Named.Example.:8080\r\n", "1.1"),
        b"",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("Hello from wasmgate"), "{text}");
    // Bracketed IPv6 with a port is a host.
    let (status, text) =
        raw_exchange(addr, &get("/echo", "Host: [::1]:8080\r\n", "1.1"), b"").await;
    assert_eq!(status, 200, "{text}");
}

/// hyper's framing error on a chunked body ends the request as a 400,
/// even when the guest took the failed read for the end of the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_body_is_a_400_not_a_truncated_200() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    let head = "POST /probe/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (status, text) = raw_exchange(server.addr, head, b"5\r\nhello\r\nZZ\r\nworld\r\n").await;
    assert_eq!(status, 400, "{text}");
    assert!(!text.contains("body: hello"), "{text}");
    // A well-formed one is served.
    let (status, text) = raw_exchange(server.addr, head, b"5\r\nhello\r\n0\r\n\r\n").await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("body: hello"), "{text}");
}

/// With few slots and many requests, an instance slot is only offered again
/// once the pool instance is back: no request fails as a "trap" of the
/// pool's concurrency limit, and whatever is refused is a 503 (the host's
/// capacity, which does not count against a rollout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_instance_pool_is_a_503_never_a_trap() {
    let server = TestServer::start_with(|s| {
        s.max_concurrency = 2;
        s.pooling = wasmgate::runtime::PoolingMode::On;
    })
    .await;
    server.deploy("/probe", PROBE).await;
    let addr = server.addr;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..25 {
                let reply = send(addr, "GET", "/probe/echo", &[], bytes::Bytes::new()).await;
                statuses.push((reply.status, reply.text()));
            }
            statuses
        }));
    }
    let mut ok = 0;
    for task in tasks {
        for (status, text) in task.await.unwrap() {
            assert!(
                status == 200 || status == 503,
                "{status}: {text} (a full pool is capacity, not a guest fault)"
            );
            assert!(!text.contains("concurrent limit"), "{text}");
            ok += usize::from(status == 200);
        }
    }
    assert!(ok > 0);
}

/// After the README's hand flip (only `module` changed), a rollback goes by
/// the version whose module is live: it names that version, and history
/// never records a move from a version to itself.
#[test]
fn a_rollback_after_a_hand_flip_starts_from_the_live_module() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hello = write_file(dir.path(), "hello.wasm", HELLO);
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    let wagi = write_file(dir.path(), "wagi.wasm", WAGI_PROBE);
    for file in [&hello, &probe, &wagi] {
        cli_ok(
            &data,
            &["deploy", file.to_str().unwrap(), "--route", "/app"],
        );
    }
    let key_of = |bytes: &[u8]| wasmgate::modules::ModuleKey::for_bytes(bytes).to_string();
    let hand_flip = |key: &str| {
        let db = rusqlite::Connection::open(data.join("routes.sqlite3")).unwrap();
        db.execute("UPDATE live SET module = ?1 WHERE route = '/app'", [key])
            .unwrap();
    };

    // v3 is live; by hand, v2's module. A plain rollback goes from v2 to
    // what preceded v2: v1.
    hand_flip(&key_of(PROBE));
    let text = cli_ok(&data, &["rollback", "/app"]);
    assert!(text.contains("version 1 is live"), "{text}");
    let history = cli_ok(&data, &["history", "/app"]);
    assert!(
        history.contains("rollback     v2 -> v1"),
        "from the version whose module was live: {history}"
    );

    // v1 is live; by hand, v3's module (the pointer still says v1). Back to
    // v1 is a move from v3, not "v1 -> v1", and not "already live".
    hand_flip(&key_of(WAGI_PROBE));
    let text = cli_ok(&data, &["rollback", "/app", "--to", "1"]);
    assert!(text.contains("version 1 is live"), "{text}");
    let history = cli_ok(&data, &["history", "/app"]);
    assert!(history.contains("rollback     v3 -> v1"), "{history}");
    for n in 1..=3 {
        assert!(
            !history.contains(&format!("v{n} -> v{n} ")),
            "no move from a version to itself: {history}"
        );
    }
    // Now v1 really is live.
    let out = run_cli(&data, &["rollback", "/app", "--to", "1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already live"), "{}", stderr(&out));
}

/// A storm of 64 looping requests on one route: the other routes keep
/// answering quickly (the loops take their turns on a CPU lane, and the
/// storm's route holds at most its share of the slots).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_storm_on_one_route_does_not_starve_the_others() {
    let server = TestServer::start_with(|s| s.timeout_ms = 6_000).await;
    server.deploy("/storm", PROBE).await;
    server.deploy("/other", HELLO).await;
    let addr = server.addr;
    // Warm: both compiled and cached.
    assert_eq!(server.get("/other/x").await.status, 200);
    assert_eq!(server.get("/storm/echo").await.status, 200);

    let storm: Vec<_> = (0..64)
        .map(|_| {
            tokio::spawn(async move {
                send(addr, "GET", "/storm/loop", &[], bytes::Bytes::new())
                    .await
                    .status
            })
        })
        .collect();
    // Until every loop has run its first 30 ms it competes like any guest.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let reply = server.get("/other/x").await;
        latencies.push(started.elapsed());
        assert_eq!(reply.status, 200, "{}", reply.text());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut statuses = Vec::new();
    for task in storm {
        statuses.push(task.await.unwrap());
    }
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let max = latencies[latencies.len() - 1];
    eprintln!("other route during a 64-loop storm: p50 {p50:?}, max {max:?}");
    assert!(
        p50 < Duration::from_millis(250),
        "p50 {p50:?} (max {max:?}): the storm starved the other route"
    );
    // The loops end as loops do: 504 at their deadline, or 503 for those
    // past the route's share of the slots.
    assert!(
        statuses.iter().all(|s| *s == 504 || *s == 503),
        "{statuses:?}"
    );
    assert!(statuses.contains(&504));
}

/// All slots busy: a request waits the queue timeout, not its whole
/// deadline, and gets a 503 with Retry-After.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_answers_503_after_the_queue_timeout() {
    let server = TestServer::start_with(|s| {
        s.max_concurrency = 1;
        s.queue_timeout_ms = 200;
        s.timeout_ms = 10_000;
    })
    .await;
    server.deploy("/probe", PROBE).await;
    assert_eq!(server.get("/probe/echo").await.status, 200);
    let addr = server.addr;
    let looping =
        tokio::spawn(
            async move { send(addr, "GET", "/probe/loop", &[], bytes::Bytes::new()).await },
        );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let reply = server.get("/probe/echo").await;
    let took = started.elapsed();
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(took < Duration::from_secs(5), "waited {took:?}");
    looping.abort();
}

/// The memory all guests share: a guest growing within its own limit but
/// past the shared budget gets a 503 (capacity), not a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_guest_memory_budget_is_a_503() {
    let server = TestServer::start_with(|s| {
        s.memory_limit_mb = 64;
        s.guest_memory_mb = Some(24);
    })
    .await;
    server.deploy("/probe", PROBE).await;
    let reply = server.get("/probe/oom").await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    // Given back: a small request still runs.
    assert_eq!(server.get("/probe/echo").await.status, 200);
}

/// A client sending its small body a byte at a time holds a connection,
/// not an instance slot, and gets a 408 once it falls under the minimum
/// rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_holds_no_slot_and_ends_in_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start_with(|s| s.max_concurrency = 1).await;
    server.deploy("/probe", PROBE).await;
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /probe/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nab")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The only slot is free for others meanwhile.
    let reply = server.get("/probe/echo").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // Past the body timeout (10 s, and 2 ms for the 2 bytes): 408.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "no answer to the slow client");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

/// The counter `name`, as the metrics endpoint would show it (the counters
/// are the process's: tests running beside this one only add to them).
fn counter(name: &str) -> u64 {
    let text = wasmgate::metrics::METRICS.prometheus(&Default::default());
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

/// A guest writing 8 MiB to stderr logs 1 MiB of it; the rest is dropped
/// and counted, and the request is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_log_flood_is_capped_per_request() {
    let server = TestServer::start().await;
    server.deploy("/wagi", WAGI_PROBE).await;
    let name = "wasmgate_guest_log_dropped_bytes_total";
    let before = counter(name);
    let reply = server.get("/wagi/flood?bytes=8388600").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "flooded");
    let dropped = counter(name) - before;
    let cap = wasmgate::runtime::MAX_GUEST_LOG_BYTES as u64;
    assert!(dropped >= 8_388_600 - cap, "dropped {dropped}");
}

/// Wrong admin tokens are counted, and an address that keeps sending them
/// is refused with 429s; the scheme is case-insensitive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_admin_tokens_are_counted_and_rate_limited() {
    let admin = TestServer::start_admin(wasmgate::admin::UploadLimits::default()).await;
    let good = format!("Bearer {ADMIN_TOKEN}");
    let lower = format!("bearer {ADMIN_TOKEN}");
    let name = "wasmgate_admin_auth_refusals_total";
    let before = counter(name);
    let routes = |auth: String| async move {
        send(
            admin.addr,
            "GET",
            "/_wasmgate/routes",
            &[("authorization", &auth)],
            bytes::Bytes::new(),
        )
        .await
    };
    assert_eq!(
        routes(lower.clone()).await.status,
        200,
        "bearer in any case"
    );
    let mut statuses = Vec::new();
    for i in 0..12 {
        statuses.push(routes(format!("Bearer wrong-{i}")).await.status);
    }
    assert_eq!(statuses[..10], [401; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429; 2], "{statuses:?}");
    let blocked = routes(good.clone()).await;
    assert_eq!(blocked.status, 429, "the address is over its budget");
    assert!(blocked.headers.contains_key("retry-after"));
    let after = counter(name);
    assert!(after >= before + 13, "{before} -> {after}");
}

/// A version's own deadline and memory cap, under the server's: a version
/// with `timeout_ms: 500` gets its 504 at about half a second while another
/// route keeps the server's deadline; one with `memory_limit_mb: 16` is
/// stopped at 16 MiB. Asking for more than the server allows is refused
/// at deploy, naming the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_sets_its_own_limits_under_the_servers() {
    let server = TestServer::start_with(|s| {
        s.timeout_ms = 5_000;
        s.memory_limit_mb = 64;
    })
    .await;
    server
        .deploy_with(
            "/tight",
            PROBE,
            r#"{"timeout_ms": 500, "memory_limit_mb": 16}"#,
            &[],
        )
        .await
        .unwrap();
    server.deploy("/loose", PROBE).await;
    assert_eq!(server.get("/tight/echo").await.status, 200);
    assert_eq!(server.get("/loose/echo").await.status, 200);

    let started = Instant::now();
    let reply = server.get("/tight/loop").await;
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("500ms"), "{}", reply.text());
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(2_500),
        "{took:?}"
    );
    let started = Instant::now();
    let reply = server.get("/loose/loop").await;
    assert_eq!(reply.status, 504);
    assert!(started.elapsed() >= Duration::from_millis(4_500));

    let reply = server.get("/tight/oom").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.text().contains("16 MiB"), "{}", reply.text());
    let reply = server.get("/loose/oom").await;
    assert!(reply.text().contains("64 MiB"), "{}", reply.text());

    for (metadata, cap) in [
        (
            r#"{"timeout_ms": 6000}"#,
            "cap of 5000 (WASMGATE_TIMEOUT_MS)",
        ),
        (
            r#"{"memory_limit_mb": 128}"#,
            "cap of 64 (WASMGATE_MEMORY_LIMIT_MB)",
        ),
        (
            r#"{"max_body_bytes": 1073741824}"#,
            "(WASMGATE_MAX_BODY_BYTES)",
        ),
    ] {
        let error = server
            .deploy_with("/greedy", PROBE, metadata, &[])
            .await
            .expect_err("refused");
        assert!(error.to_string().contains(cap), "{error}");
    }
}

/// The limits are part of the version's record: `history --json` shows
/// them, and the text history names them.
#[test]
fn history_shows_a_versions_limits() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    cli_deploy_with_metadata(
        dir.path(),
        &data,
        PROBE,
        "/app",
        r#"{"timeout_ms": 750, "memory_limit_mb": 32, "max_body_bytes": 1000}"#,
    );
    let json: serde_json::Value =
        serde_json::from_str(&cli_ok(&data, &["history", "/app", "--json"])).unwrap();
    let spec = &json["versions"][0]["metadata"];
    assert_eq!(spec["timeout_ms"], 750, "{json}");
    assert_eq!(spec["memory_limit_mb"], 32, "{json}");
    assert_eq!(spec["max_body_bytes"], 1000, "{json}");
    let text = cli_ok(&data, &["history", "/app"]);
    assert!(
        text.contains("limits: memory 32 MiB, timeout 750 ms, body 1000 bytes"),
        "{text}"
    );
}
