//! Guests of today's ecosystem, built from source under tests/guests: a
//! WASI 0.3 component (wasip3), a wstd component, a Spin SDK 7 app; and the
//! interfaces they use: wasi:config, wasi:keyvalue, the route headers,
//! outbound denial, and the refusals of what wasmgate cannot run.

use bytes::Bytes;

use crate::common::*;

/// WASI 0.3: wasip3 0.7.1 (`make fixtures`).
pub const PROBE3: &[u8] = include_bytes!("../fixtures/probe3.wasm");
/// WASI 0.2, written with wstd.
pub const WSTD_FETCH: &[u8] = include_bytes!("../fixtures/wstd-fetch.wasm");
/// A Spin SDK 7 router app (WASI 0.3).
pub const SPIN_ROUTER: &[u8] = include_bytes!("../fixtures/spin-router.wasm");

const CONFIG_METADATA: &str = r#"{"bindings": [
    {"type": "plain_text", "name": "GREETING", "text": "hello"},
    {"type": "json", "name": "CONFIG", "json": {"retries": 3}},
    {"type": "secret_text", "name": "API_KEY", "text": "s3cr3t"},
    {"type": "kv_namespace", "name": "CACHE", "namespace_id": "ns-a"}]}"#;

fn kv_metadata(namespace: &str) -> String {
    format!(
        r#"{{"bindings": [{{"type": "kv_namespace", "name": "CACHE", "namespace_id": "{namespace}"}}]}}"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasi_03_component_streams_reads_config_and_fails_cleanly() {
    let server = TestServer::start_with(|s| s.timeout_ms = 3_000).await;
    let report = server
        .deploy_with("/p3", PROBE3, CONFIG_METADATA, &[])
        .await
        .expect("a WASI 0.3 component deploys");
    assert_eq!(report.abi, "wasi:http 0.3 component");
    // A 0.2 component beside it, through the same gateway.
    assert_eq!(
        server.deploy("/probe", PROBE).await.abi,
        "wasi:http 0.2 component"
    );

    // The body streams in and out (1 MiB, over the 64 KiB chunks).
    let body: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let echoed = server.request("POST", "/p3/echo", &[], &body).await;
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.body.len(), body.len());
    assert!(echoed.body == body, "the echo is byte for byte");
    let streamed = server.get("/p3/stream?chunks=20&size=10000").await;
    assert_eq!((streamed.status, streamed.body.len()), (200, 200_000));

    // wasi:config: the version's plain_text, json and secret_text bindings.
    assert_eq!(server.get("/p3/config?key=GREETING").await.text(), "hello");
    assert_eq!(
        server.get("/p3/config?key=CONFIG").await.text(),
        r#"{"retries":3}"#
    );
    assert_eq!(server.get("/p3/config?key=API_KEY").await.text(), "s3cr3t");
    assert_eq!(server.get("/p3/config?key=NOPE").await.status, 404);
    let all = server.get("/p3/config-all").await.text();
    assert!(all.contains("GREETING") && !all.contains("CACHE"), "{all}");
    // ... and in its environment, as before.
    assert_eq!(server.get("/p3/env?key=GREETING").await.text(), "hello");

    // Trap, loop and memory bomb: each its own 5xx, the server unhurt.
    assert_eq!(server.get("/p3/trap").await.status, 500);
    let looped = server.get("/p3/loop").await;
    assert_eq!(looped.status, 504, "{}", looped.text());
    let bomb = server.get("/p3/memory").await;
    assert!(bomb.status >= 500, "{}: {}", bomb.status, bomb.text());
    assert!(bomb.text().contains("memory"), "{}", bomb.text());
    assert_eq!(server.get("/p3/after").await.text(), "probe3 /p3/after");
    assert_still_serving(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_03_body_over_the_limit_is_413() {
    let server = TestServer::start_with(|s| s.max_body_bytes = 4096).await;
    server.deploy("/p3", PROBE3).await;
    let reply = server
        .request("POST", "/p3/echo", &[], &[b'x'; 10_000])
        .await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn components_see_where_they_are_mounted_and_clients_cannot_forge_it() {
    let server = TestServer::start().await;
    server.deploy("/app", PROBE3).await;
    let reply = server
        .request(
            "GET",
            "/app/items/headers?x=1",
            &[("spin-path-info", "/forged"), ("x-wasmgate-version", "99")],
            b"",
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let header = |name: &str| -> Vec<String> {
        seen[name]
            .as_array()
            .map(|values| {
                values
                    .iter()
                    .map(|v| v.as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(header("spin-path-info"), ["/items/headers"]);
    assert_eq!(header("spin-base-path"), ["/app"]);
    assert_eq!(header("spin-matched-route"), ["/app/..."]);
    assert_eq!(header("x-wasmgate-route"), ["/app"]);
    assert_eq!(header("x-wasmgate-version"), ["1"]);
    assert_eq!(
        header("spin-full-url"),
        [format!("http://{}/app/items/headers?x=1", server.addr)]
    );
    assert_eq!(header("spin-client-addr"), ["127.0.0.1"]);
    // The path itself is not rewritten.
    assert_eq!(seen["path_with_query"], "/app/items/headers?x=1");
    // A 0.3 guest gets the scheme and authority, as a 0.2 one does.
    assert_eq!(seen["scheme"], "http");
    assert_eq!(seen["authority"], server.addr.to_string());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spin_sdk_router_app_routes_under_its_prefix() {
    let server = TestServer::start().await;
    let report = server.deploy("/app", SPIN_ROUTER).await;
    assert_eq!(report.abi, "wasi:http 0.3 component");
    assert_eq!(server.get("/app/items/1").await.text(), "item 1");
    assert_eq!(server.get("/app/items").await.text(), "items");
    assert_eq!(server.get("/app").await.text(), "root");
    assert_eq!(server.get("/app/").await.text(), "root");
    assert_eq!(server.get("/app/nope").await.status, 404);
    server.stop().await;
}

/// `/route/kv?...` on `server`: (status, body).
async fn kv(server: &TestServer, route: &str, query: &str) -> (u16, String) {
    let reply = server.get(&format!("{route}/kv?{query}")).await;
    (reply.status, reply.text())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyvalue_on_the_embedded_default_isolates_namespaces() {
    let server = TestServer::start().await;
    server
        .deploy_with("/a", PROBE3, &kv_metadata("ns-a"), &[])
        .await
        .unwrap();
    server
        .deploy_with("/b", PROBE3, &kv_metadata("ns-b"), &[])
        .await
        .unwrap();
    // A version with no binding: every name is unknown to it.
    server.deploy("/none", PROBE3).await;
    exercise_keyvalue(&server).await;
    server.stop().await;
}

/// The keyvalue operations on `server`, whose `/a` and `/b` bind CACHE to
/// two namespaces and `/none` binds nothing.
async fn exercise_keyvalue(server: &TestServer) {
    assert_eq!(kv(server, "/a", "store=CACHE&op=get&key=k").await.0, 404);
    assert_eq!(
        kv(server, "/a", "store=CACHE&op=set&key=k&value=one").await,
        (200, "ok".into())
    );
    // Kept between requests (fresh instances), and per namespace.
    assert_eq!(
        kv(server, "/a", "store=CACHE&op=get&key=k").await,
        (200, "one".into())
    );
    assert_eq!(kv(server, "/b", "store=CACHE&op=get&key=k").await.0, 404);
    assert_eq!(
        kv(server, "/a", "store=CACHE&op=exists&key=k").await.1,
        "true"
    );
    assert_eq!(
        kv(server, "/b", "store=CACHE&op=exists&key=k").await.1,
        "false"
    );
    // No other name opens anything, and nothing without a binding.
    assert_eq!(
        kv(server, "/a", "store=OTHER&op=get&key=k").await,
        (500, "error: no-such-store".into())
    );
    assert_eq!(
        kv(server, "/none", "store=CACHE&op=get&key=k").await,
        (500, "error: no-such-store".into())
    );
    for delta in [1, 2, 3] {
        kv(
            server,
            "/a",
            &format!("store=CACHE&op=increment&key=n&delta={delta}"),
        )
        .await;
    }
    assert_eq!(
        kv(server, "/a", "store=CACHE&op=get&key=n").await,
        (200, "6".into())
    );
    assert_eq!(
        kv(server, "/a", "store=CACHE&op=increment&key=k&delta=1")
            .await
            .0,
        500,
        "a value that is no number cannot be incremented"
    );
    assert_eq!(
        kv(server, "/a", "store=CACHE&op=set-many&keys=x,y&values=1,2")
            .await
            .0,
        200
    );
    let many = kv(server, "/a", "store=CACHE&op=get-many&keys=x,y,z").await;
    assert_eq!(many.0, 200, "{}", many.1);
    assert!(many.1.contains('x') && many.1.contains('y'), "{}", many.1);
    let listed: serde_json::Value =
        serde_json::from_str(&kv(server, "/a", "store=CACHE&op=list").await.1).unwrap();
    assert_eq!(listed["keys"], serde_json::json!(["k", "n", "x", "y"]));
    assert!(listed["cursor"].is_null());
    kv(server, "/a", "store=CACHE&op=delete&key=k").await;
    kv(server, "/a", "store=CACHE&op=delete-many&keys=x,y").await;
    let listed: serde_json::Value =
        serde_json::from_str(&kv(server, "/a", "store=CACHE&op=list").await.1).unwrap();
    assert_eq!(listed["keys"], serde_json::json!(["n"]));
    let too_big = format!(
        "store=CACHE&op=set&key=big&size={}",
        wasmgate::kv::MAX_VALUE_BYTES + 1
    );
    let refused = kv(server, "/a", &too_big).await;
    assert_eq!(refused.0, 500, "{}", refused.1);
    assert!(refused.1.contains("at most"), "{}", refused.1);
    let fits = format!(
        "store=CACHE&op=set&key=fits&size={}",
        wasmgate::kv::MAX_VALUE_BYTES
    );
    assert_eq!(kv(server, "/a", &fits).await, (200, "ok".into()));
    assert_eq!(
        kv(server, "/a", "store=CACHE&op=exists&key=big").await.1,
        "false"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keys_pages_through_a_thousand_and_more() {
    let server = TestServer::start().await;
    server
        .deploy_with("/a", PROBE3, &kv_metadata("paged"), &[])
        .await
        .unwrap();
    let kv = wasmgate::kv::SqliteKv::open(server.settings.database_path()).unwrap();
    use wasmgate::kv::KvStore as _;
    for i in 0..1005 {
        kv.set("paged", &format!("key{i:05}"), b"x").await.unwrap();
    }
    let first: serde_json::Value =
        serde_json::from_str(&server.get("/a/kv?store=CACHE&op=list").await.text()).unwrap();
    assert_eq!(
        first["keys"].as_array().unwrap().len(),
        wasmgate::kv::LIST_PAGE
    );
    assert_eq!(first["cursor"], 1000);
    let second: serde_json::Value = serde_json::from_str(
        &server
            .get("/a/kv?store=CACHE&op=list&cursor=1000")
            .await
            .text(),
    )
    .unwrap();
    assert_eq!(second["keys"].as_array().unwrap().len(), 5);
    assert_eq!(second["keys"][0], "key01000");
    assert!(second["cursor"].is_null());
    server.stop().await;
}

/// Two `wasmgate serve` processes on `env`, each sent `per_server`
/// increments of one counter, `in_flight` at a time (1: the two take
/// turns); returns what the counter holds.
async fn increments_from_two_servers(
    data: &std::path::Path,
    env: &[(&str, String)],
    per_server: usize,
    in_flight: usize,
) -> String {
    let servers = [
        ServeProcess::start(data, 100, env),
        ServeProcess::start(data, 100, env),
    ];
    if in_flight == 1 {
        for _ in 0..per_server {
            for server in &servers {
                let path = "/a/kv?store=CACHE&op=increment&key=hits&delta=1";
                let reply = send(server.addr, "GET", path, &[], Bytes::new()).await;
                assert_eq!(reply.status, 200, "{}", reply.text());
            }
        }
    }
    let mut tasks = Vec::new();
    for server in servers.iter().filter(|_| in_flight > 1) {
        for worker in 0..in_flight {
            let addr = server.addr;
            tasks.push(tokio::spawn(async move {
                for _ in (worker..per_server).step_by(in_flight) {
                    let reply = send(
                        addr,
                        "GET",
                        "/a/kv?store=CACHE&op=increment&key=hits&delta=1",
                        &[],
                        Bytes::new(),
                    )
                    .await;
                    assert_eq!(reply.status, 200, "{}", reply.text());
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let reply = send(
        servers[0].addr,
        "GET",
        "/a/kv?store=CACHE&op=get&key=hits",
        &[],
        Bytes::new(),
    )
    .await;
    reply.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn increments_from_two_servers_sharing_sqlite_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_file(dir.path(), "probe3.wasm", PROBE3);
    let metadata = write_file(dir.path(), "kv.json", kv_metadata("shared").as_bytes());
    cli_ok(
        dir.path(),
        &[
            "deploy",
            module.to_str().unwrap(),
            "--route",
            "/a",
            "--metadata",
            metadata.to_str().unwrap(),
        ],
    );
    assert_eq!(
        increments_from_two_servers(dir.path(), &[], 100, 8).await,
        "200"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_outbound_request_is_http_request_denied_to_every_guest() {
    let server = TestServer::start().await;
    server.deploy("/wstd", WSTD_FETCH).await;
    server.deploy("/p3", PROBE3).await;
    let target = "http://127.0.0.1:9/anything";
    for path in [
        format!("/wstd/fetch?url={target}"),
        format!("/wstd/post?url={target}"),
        format!("/p3/fetch?url={target}"),
        format!("/p3/post-fetch?url={target}"),
    ] {
        let reply = server.get(&path).await;
        assert!(
            reply.text().contains("HTTP-request-denied")
                || reply.text().contains("HttpRequestDenied"),
            "{path}: {} {}",
            reply.status,
            reply.text()
        );
    }
    server.stop().await;
}

/// A component that exports an instance named like the 0.2 handler and
/// imports Spin's variables interface.
fn component_importing_spin_variables() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (import "fermyon:spin/variables@2.0.0" (instance
                (export "get" (func (param "name" string) (result string)))))
            (instance $handler)
            (export "wasi:http/incoming-handler@0.2.0" (instance $handler)))"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_it_once_and_name_the_missing_import() {
    let dir = tempfile::tempdir().unwrap();
    let spin = write_file(
        dir.path(),
        "spin.wasm",
        &component_importing_spin_variables(),
    );
    let err = cli_err(
        dir.path(),
        &["deploy", spin.to_str().unwrap(), "--route", "/s"],
    );
    assert!(
        err.contains(
            "this component imports fermyon:spin/variables@2.0.0, which wasmgate does not provide"
        ),
        "{err}"
    );
    assert_eq!(err.matches("refusing to deploy").count(), 1, "{err}");

    let cli = write_file(dir.path(), "cli.wasm", CLI_COMMAND);
    let err = cli_err(
        dir.path(),
        &["deploy", cli.to_str().unwrap(), "--route", "/c"],
    );
    assert!(err.contains("wasi:cli/run"), "names what it exports: {err}");
    assert!(
        err.contains("wasi:http/handler (0.3.x)"),
        "names what was expected: {err}"
    );
    assert_eq!(err.matches("refusing to deploy").count(), 1, "{err}");

    // A key-value namespace is for components only.
    let wagi = write_file(dir.path(), "wagi.wasm", WAGI_PROBE);
    let metadata = write_file(dir.path(), "kv.json", kv_metadata("x").as_bytes());
    let err = cli_err(
        dir.path(),
        &[
            "deploy",
            wagi.to_str().unwrap(),
            "--route",
            "/w",
            "--metadata",
            metadata.to_str().unwrap(),
        ],
    );
    assert!(err.contains("a WAGI module cannot open it"), "{err}");

    // Nothing became live.
    let routes = cli_ok(dir.path(), &["routes"]);
    assert!(!routes.contains("/s") && !routes.contains("/c"), "{routes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_and_json_name_the_abi() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_file(dir.path(), "probe3.wasm", PROBE3);
    let json = cli_ok(
        dir.path(),
        &[
            "deploy",
            module.to_str().unwrap(),
            "--route",
            "/p3",
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["abi"], "wasi:http 0.3 component");
    let history = cli_ok(dir.path(), &["history", "/p3"]);
    assert!(
        history.contains("abi: wasi:http 0.3 component"),
        "{history}"
    );
}

#[cfg(feature = "aws")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyvalue_on_dynamodb_isolates_namespaces_and_increments_add_up_across_servers() {
    let moto = crate::moto::Moto::start();
    moto.create("kv-modules", "kv-routes").await;
    let dir = tempfile::tempdir().unwrap();
    let env = moto.env("kv-modules", "kv-routes");
    let module = write_file(dir.path(), "probe3.wasm", PROBE3);
    for (route, namespace) in [("/a", "ns-a"), ("/b", "ns-b")] {
        let metadata = write_file(dir.path(), "kv.json", kv_metadata(namespace).as_bytes());
        let out = wasmgate(dir.path())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .args(["deploy", module.to_str().unwrap(), "--route", route])
            .args(["--metadata", metadata.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    {
        let server = ServeProcess::start(dir.path(), 100, &env);
        let get = |path: &'static str| send(server.addr, "GET", path, &[], Bytes::new());
        assert_eq!(
            get("/a/kv?store=CACHE&op=set&key=k&value=one").await.text(),
            "ok"
        );
        assert_eq!(get("/a/kv?store=CACHE&op=get&key=k").await.text(), "one");
        assert_eq!(get("/b/kv?store=CACHE&op=get&key=k").await.status, 404);
        assert_eq!(
            get("/a/kv?store=CACHE&op=exists&key=k").await.text(),
            "true"
        );
        assert_eq!(
            get("/a/kv?store=OTHER&op=get&key=k").await.text(),
            "error: no-such-store"
        );
        // A value set as decimal bytes becomes a counter.
        get("/a/kv?store=CACHE&op=set&key=n&value=40").await;
        assert_eq!(
            get("/a/kv?store=CACHE&op=increment&key=n&delta=2")
                .await
                .text(),
            "42"
        );
        assert_eq!(get("/a/kv?store=CACHE&op=get&key=n").await.text(), "42");
        assert_eq!(
            get("/a/kv?store=CACHE&op=increment&key=k&delta=1")
                .await
                .status,
            500
        );
        let listed: serde_json::Value =
            serde_json::from_str(&get("/a/kv?store=CACHE&op=list").await.text()).unwrap();
        assert_eq!(listed["keys"], serde_json::json!(["k", "n"]));
        get("/a/kv?store=CACHE&op=delete&key=k").await;
        assert_eq!(
            get("/a/kv?store=CACHE&op=exists&key=k").await.text(),
            "false"
        );
        // A guest's key named like a route's live item is no route.
        get("/a/kv?store=CACHE&op=set&key=live&value=x").await;
    }
    let routes = wasmgate(dir.path())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .args(["routes"])
        .output()
        .unwrap();
    assert!(routes.status.success(), "{}", stderr(&routes));
    let listed = stdout(&routes);
    assert!(
        listed.contains("/a") && listed.contains("/b") && !listed.contains("kv#"),
        "{listed}"
    );
    // The documented layout, as ops would read it.
    let item = moto
        .dynamodb()
        .await
        .get_item()
        .table_name("kv-routes")
        .key(
            "route",
            aws_sdk_dynamodb::types::AttributeValue::S("kv#ns-a".into()),
        )
        .key(
            "rev",
            aws_sdk_dynamodb::types::AttributeValue::S("n".into()),
        )
        .send()
        .await
        .unwrap()
        .item
        .expect("the counter's item");
    assert_eq!(item["counter"].as_n().unwrap(), "42");
    // moto applies updates without a lock (its server is threaded), so a
    // race between writers here would test moto, not wasmgate: it lost one
    // of 120 increments with 16 in flight. The servers take turns, one
    // request at a time: every increment from either lands on the one
    // counter. Contention is tested on SQLite; on DynamoDB it rests on
    // `ADD` being atomic, as DynamoDB documents it.
    assert_eq!(
        increments_from_two_servers(dir.path(), &env, 30, 1).await,
        "60"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_and_javascript_examples_deploy_and_answer() {
    // Built by outsiders' toolchains: Go 1.23 (GOOS=wasip1) and
    // componentize-js 0.23 (StarlingMonkey).
    let go = include_bytes!("../../examples/wagi-go/hello.wasm");
    let js = include_bytes!("../../examples/hello-js/hello.wasm");
    let server = TestServer::start().await;
    let metadata = r#"{"bindings": [{"type": "plain_text", "name": "GREETING", "text": "hi"}]}"#;
    assert_eq!(
        server
            .deploy_with("/go", go, metadata, &[])
            .await
            .unwrap()
            .abi,
        "WAGI module"
    );
    let reply = server
        .request("POST", "/go/items/7?q=1", &[], b"ping")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains("hello from Go POST /items/7"), "{text}");
    assert!(
        text.contains("query: q=1") && text.contains("greeting: hi"),
        "{text}"
    );
    assert!(text.contains("body (4 bytes): ping"), "{text}");

    assert_eq!(
        server
            .deploy_with("/js", js, metadata, &[])
            .await
            .unwrap()
            .abi,
        "wasi:http 0.2 component"
    );
    let reply = server.get("/js").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains("Hello from JavaScript!"),
        "{}",
        reply.text()
    );
    assert!(reply.text().contains("greeting: hi"), "{}", reply.text());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wasi_03_rust_example_answers_and_echoes() {
    let example = include_bytes!("../../examples/hello-p3/hello.wasm");
    let server = TestServer::start().await;
    let metadata = r#"{"bindings": [{"type": "plain_text", "name": "GREETING", "text": "hola"}]}"#;
    server
        .deploy_with("/p3", example, metadata, &[])
        .await
        .unwrap();
    let text = server.get("/p3/a/b").await.text();
    assert!(text.contains("hello from a WASI 0.3 component"), "{text}");
    assert!(text.contains("GREETING: hola"), "{text}");
    let echoed = server.request("POST", "/p3/echo", &[], b"ping").await;
    assert_eq!((echoed.status, echoed.text().as_str()), (200, "ping"));
    server.stop().await;
}
