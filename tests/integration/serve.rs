//! The request path through the real listener: deploy, serve, routing, what
//! a guest sees, streaming.

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_serves_and_redeploy_skips_the_upload() {
    let server = TestServer::start().await;
    let first = server.deploy("/hello", HELLO).await;
    assert!(first.uploaded);
    assert_eq!(first.version, 1);
    assert!(first.live);
    assert!(
        first
            .key
            .starts_with(&format!("application/wasm/{}b/sha256-", HELLO.len()))
    );
    assert!(
        server.data_dir.path().join(&first.key).is_file(),
        "module stored at its key path"
    );

    let reply = server.get("/hello").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "Hello from wasmgate! You asked for /hello\n");
    assert!(reply.headers.contains_key("x-request-id"));

    let again = server.deploy("/hello", HELLO).await;
    assert!(!again.uploaded, "same bytes: nothing uploaded");
    assert_eq!(again.key, first.key);
    assert_eq!(again.version, 2);
    assert_eq!(server.get("/hello/there").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_sees_method_path_query_headers_and_body() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    let reply = server
        .request(
            "POST",
            "/probe/echo?x=1&y=two",
            &[
                ("x-test", "yes"),
                ("content-type", "text/plain"),
                ("x-request-id", "req-42"),
            ],
            b"hello body",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains("method: POST\n"), "{text}");
    assert!(
        text.contains("path: /probe/echo?x=1&y=two\n"),
        "the prefix is not stripped: {text}"
    );
    assert!(text.contains("header: x-test: yes\n"), "{text}");
    assert!(
        text.contains("header: content-type: text/plain\n"),
        "{text}"
    );
    assert!(
        text.contains("body-length: 10\nbody: hello body\n"),
        "{text}"
    );
    assert_eq!(
        reply.headers["x-request-id"], "req-42",
        "the client's request id is echoed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_sees_no_host_environment_and_no_files() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    assert!(
        std::env::var_os("PATH").is_some(),
        "the host has an environment to leak"
    );
    let env = server.get("/probe/env").await;
    assert_eq!(env.status, 200);
    assert_eq!(env.text(), "", "the guest sees no environment variables");

    let fs = server.get("/probe/fs").await;
    assert_eq!(fs.status, 200);
    let text = fs.text();
    assert!(
        !text.contains("allowed"),
        "the guest reached a file: {text}"
    );
    assert_eq!(text.matches("denied").count(), 8, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_are_404_and_prefixes_match_on_segment_boundaries() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;

    for path in ["/probe", "/probe/", "/probe/a/b?c=d"] {
        assert_eq!(server.get(path).await.status, 200, "{path}");
    }
    for path in ["/probeX", "/prob", "/", "/other/probe"] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(
            reply.text().starts_with("404 Not Found: no route for "),
            "{}",
            reply.text()
        );
        assert!(reply.body.len() < 200, "a short body");
        assert_eq!(reply.headers["content-type"], "text/plain; charset=utf-8");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_beats_any_host_and_longest_prefix_wins() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    server.deploy("/probe/deeper", HELLO).await;
    server.deploy("shop.example.com/", HELLO).await;

    let any_host = server.get("/probe/echo").await;
    assert!(
        any_host.text().starts_with("method: GET"),
        "{}",
        any_host.text()
    );
    let deeper = server.get("/probe/deeper/x").await;
    assert!(
        deeper.text().starts_with("Hello from wasmgate"),
        "{}",
        deeper.text()
    );
    let shop = server
        .request(
            "GET",
            "/probe/echo",
            &[("host", "Shop.Example.com:8080")],
            b"",
        )
        .await;
    assert!(
        shop.text().starts_with("Hello from wasmgate"),
        "{}",
        shop.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5mb_response_streams_back_whole() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    let size = 5 * 1024 * 1024;
    let reply = server.get(&format!("/probe/big?bytes={size}")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), size);
    let pattern = b"0123456789abcdef";
    assert!(
        reply.body.chunks(16).all(|c| c == &pattern[..c.len()]),
        "the body arrived intact"
    );
    // Streamed as the guest writes it, not buffered to learn its length.
    assert!(reply.headers.get("content-length").is_none());
    assert_eq!(reply.headers["transfer-encoding"], "chunked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_requests_each_get_their_own_instance() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    let mut tasks = Vec::new();
    for i in 0..32 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let path = format!("/probe/echo?n={i}");
            let reply = send(addr, "GET", &path, &[], bytes::Bytes::new()).await;
            (i, reply)
        }));
    }
    for task in tasks {
        let (i, reply) = task.await.unwrap();
        assert_eq!(reply.status, 200);
        assert!(reply.text().contains(&format!("path: /probe/echo?n={i}\n")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_gets_a_fresh_instance() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    for _ in 0..3 {
        // The guest counts requests in a global: a reused instance would say 2, 3...
        assert_eq!(server.get("/probe/count").await.text(), "handled 1\n");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_reaches_no_network() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    // A real listener the guest would reach if sockets or outbound HTTP were open.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = target.local_addr().unwrap().port();
    let reply = server.get(&format!("/probe/net?port={port}")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains("tcp: denied"), "{text}");
    assert!(
        text.contains("http: denied (ErrorCode::HttpRequestDenied)"),
        "{text}"
    );
}
