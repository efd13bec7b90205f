//! Operations: the admin upload API, previews, promote, weighted rollouts
//! with sticky clients, auto-rollback, and the JSON outputs, through the real
//! listener and the real binary.

use std::time::Duration;

use serde_json::Value;
use wasmgate::admin::UploadLimits;

use crate::common::*;

const BEARER: &str = "Bearer test-admin-token-0123456789";

/// A multipart/form-data body of `parts` (name, bytes), and its content type.
fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "wasmgate-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        body.extend_from_slice(
            format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{name}\"\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(b"Content-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(server: &TestServer, query: &str, parts: &[(&str, &[u8])]) -> (u16, Value) {
    let (content_type, body) = multipart(parts);
    let reply = server
        .request(
            "PUT",
            &format!("/_wasmgate/scripts/app?{query}"),
            &[("authorization", BEARER), ("content-type", &content_type)],
            &body,
        )
        .await;
    (reply.status, json_of(&reply))
}

async fn admin(server: &TestServer, method: &str, path: &str) -> (u16, Value) {
    let reply = server
        .request(method, path, &[("authorization", BEARER)], b"")
        .await;
    (reply.status, json_of(&reply))
}

fn json_of(reply: &Reply) -> Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text()))
}

const SEED_METADATA: &str = r#"{"body_part": "script", "bindings": [{"name": "isqrt", "type": "wasm_module", "part": "wasmprogram"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_the_token_and_reveals_nothing_without_it() {
    let server = TestServer::start_admin(UploadLimits::default()).await;
    let (content_type, body) = multipart(&[
        ("metadata", SEED_METADATA.as_bytes()),
        ("script", ISQRT_MAIN),
    ]);
    for auth in [
        None,
        Some("Bearer wrong-token-0123456789"),
        Some("test-admin-token-0123456789"),
    ] {
        let mut headers = vec![("content-type", content_type.as_str())];
        if let Some(auth) = auth {
            headers.push(("authorization", auth));
        }
        let reply = server
            .request(
                "PUT",
                "/_wasmgate/scripts/app?route=/isqrt",
                &headers,
                &body,
            )
            .await;
        assert_eq!(reply.status, 401, "{auth:?}");
        assert_eq!(
            reply.text(),
            "401 Unauthorized\n",
            "nothing else is revealed"
        );
        let reply = server
            .request("GET", "/_wasmgate/nothing-here", &headers, b"")
            .await;
        assert_eq!(
            reply.status, 401,
            "unknown calls look the same without the token"
        );
    }
    let (status, _) = admin(&server, "GET", "/_wasmgate/history?route=/isqrt").await;
    assert_eq!(status, 404, "nothing was deployed");

    // Without WASMGATE_ADMIN_TOKEN there is no admin API at all.
    let plain = TestServer::start().await;
    let reply = plain
        .request(
            "GET",
            "/_wasmgate/routes",
            &[("authorization", BEARER)],
            b"",
        )
        .await;
    assert_eq!(reply.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_upload_with_a_wasm_module_binding_serves() {
    let server = TestServer::start_admin(UploadLimits::default()).await;
    let parts: [(&str, &[u8]); 3] = [
        ("metadata", SEED_METADATA.as_bytes()),
        ("wasmprogram", ISQRT_LIB),
        ("script", ISQRT_MAIN),
    ];
    let (status, answer) = upload(&server, "route=/isqrt", &parts).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["version"], 1);
    assert_eq!(answer["live"], true);
    assert_eq!(answer["name"], "app");
    assert_eq!(answer["uploaded"].as_array().unwrap().len(), 2, "{answer}");
    assert!(answer["skipped"].as_array().unwrap().is_empty());
    let keys: Vec<&str> = answer["modules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["key"].as_str().unwrap())
        .collect();
    assert!(
        keys.iter().all(|k| k.starts_with("application/wasm/")),
        "{keys:?}"
    );

    let reply = server.get("/isqrt?n=4").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains("Q_rsqrt(4) = 0.49"),
        "{}",
        reply.text()
    );

    let (status, again) = upload(&server, "route=/isqrt", &parts).await;
    assert_eq!(status, 200);
    assert_eq!(again["version"], 2);
    assert!(again["uploaded"].as_array().unwrap().is_empty(), "{again}");
    assert_eq!(again["skipped"].as_array().unwrap().len(), 2);

    let (status, history) = admin(&server, "GET", "/_wasmgate/history?route=/isqrt").await;
    assert_eq!(status, 200);
    assert_eq!(history["versions"].as_array().unwrap().len(), 2);
    assert_eq!(history["versions"][0]["metadata"]["script"], "app");
    let (status, routes) = admin(&server, "GET", "/_wasmgate/routes").await;
    assert_eq!(status, 200);
    assert_eq!(routes[0]["route"], "/isqrt");
    assert_eq!(routes[0]["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_uploads_are_4xx_and_change_nothing() {
    let server = TestServer::start_admin(UploadLimits {
        part_bytes: 350_000,
        total_bytes: 1 << 20,
    })
    .await;
    server.deploy("/app", HELLO).await;
    let big = vec![0u8; 400_000];
    /// What is wrong, the query, the parts, the status, the error's words.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a [u8])>, u16, &'a str);
    let cases: [Case; 8] = [
        (
            "no metadata",
            "route=/app",
            vec![("script", PROBE)],
            400,
            "no `metadata` part",
        ),
        (
            "metadata naming a missing part",
            "route=/app",
            vec![
                ("metadata", SEED_METADATA.as_bytes()),
                ("script", ISQRT_MAIN),
            ],
            400,
            "was not uploaded",
        ),
        (
            "main_module naming a missing part",
            "route=/app",
            vec![
                ("metadata", br#"{"main_module": "main"}"#),
                ("script", PROBE),
            ],
            400,
            "no part \"main\" was uploaded",
        ),
        (
            "an oversized part",
            "route=/app",
            vec![("metadata", b"{}"), ("script", &big)],
            413,
            "over the",
        ),
        (
            "bad JSON",
            "route=/app",
            vec![("metadata", b"{nope"), ("script", PROBE)],
            400,
            "not valid JSON",
        ),
        (
            "an unknown binding type",
            "route=/app",
            vec![
                (
                    "metadata",
                    br#"{"bindings": [{"type": "d1", "name": "DB"}]}"#,
                ),
                ("script", PROBE),
            ],
            400,
            "unknown variant",
        ),
        (
            "no route",
            "",
            vec![("metadata", b"{}"), ("script", PROBE)],
            400,
            "give the route",
        ),
        (
            "not a module",
            "route=/app",
            vec![("metadata", b"{}"), ("script", b"not wasm at all")],
            400,
            "not a WebAssembly binary",
        ),
    ];
    for (what, query, parts, status, message) in cases {
        let (got, answer) = upload(&server, query, &parts).await;
        assert_eq!(got, status, "{what}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(message), "{what}: {error}");
    }
    let reply = server
        .request(
            "PUT",
            "/_wasmgate/scripts/app?route=/app",
            &[
                ("authorization", BEARER),
                ("content-type", "application/wasm"),
            ],
            PROBE,
        )
        .await;
    assert_eq!(reply.status, 415, "{}", reply.text());

    let (_, history) = admin(&server, "GET", "/_wasmgate/history?route=/app").await;
    assert_eq!(
        history["versions"].as_array().unwrap().len(),
        1,
        "no version was added"
    );
    let stored = walk_files(&server.data_dir.path().join("application"));
    assert_eq!(stored, 2, "only HELLO (and its precompiled code) is stored");
    assert!(
        server
            .get("/app")
            .await
            .text()
            .starts_with("Hello from wasmgate!")
    );
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preview_is_reachable_with_its_token_only_and_promote_makes_it_live() {
    let server = TestServer::start_admin(UploadLimits::default()).await;
    server.deploy("/p", HELLO).await;
    let (status, answer) = upload(
        &server,
        "route=/p&preview=true",
        &[("metadata", b"{}"), ("script", PROBE)],
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["live"], false);
    assert_eq!(answer["version"], 2);
    let token = answer["preview_token"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);

    // Ordinary traffic stays on v1.
    for _ in 0..10 {
        assert!(
            server
                .get("/p/echo")
                .await
                .text()
                .starts_with("Hello from wasmgate!")
        );
    }
    // The token reaches v2, and the guest does not see it.
    let reply = server
        .request(
            "GET",
            "/p/echo",
            &[("x-wasmgate-preview", &token), ("x-other", "1")],
            b"",
        )
        .await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    assert!(text.contains("method: GET"), "the probe answered: {text}");
    assert!(text.contains("header: x-other: 1"), "{text}");
    assert!(
        !text.contains("wasmgate-preview") && !text.contains(&token),
        "{text}"
    );
    // A wrong or malformed token reaches nothing.
    for bad in ["0123456789abcdef0123456789abcdef", "garbage"] {
        let reply = server
            .request("GET", "/p/echo", &[("x-wasmgate-preview", bad)], b"")
            .await;
        assert_eq!(reply.status, 404, "{bad}");
    }

    let (status, answer) = admin(&server, "POST", "/_wasmgate/promote?route=/p&version=2").await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["to_version"], 2);
    let live = eventually(Duration::from_secs(10), || async {
        server.get("/p/echo").await.text().contains("method: GET")
    })
    .await;
    assert!(live.is_some(), "v2 is live after promote");
    let (status, _) = admin(&server, "POST", "/_wasmgate/promote?route=/p&version=2").await;
    assert_eq!(status, 409, "already live");
    // A token reaches its version only until it goes live: like any
    // change, within the route TTL (the token's lookup may have been cached
    // just before the promote, and the live pointer read just after).
    let gone = eventually(Duration::from_secs(10), || async {
        server
            .request("GET", "/p/echo", &[("x-wasmgate-preview", &token)], b"")
            .await
            .status
            == 404
    })
    .await;
    assert!(gone.is_some(), "the token still reaches v2 after promote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_after_an_ended_rollout_goes_to_the_version_live_before() {
    let server = TestServer::start_with(|s| s.route_ttl_ms = 100).await;
    server.deploy("/r", HELLO).await;
    server.deploy("/r", PROBE).await;
    let dir = server.data_dir.path();
    let wagi = write_file(dir, "wagi.wasm", WAGI_PROBE);
    cli_ok(
        dir,
        &[
            "deploy",
            wagi.to_str().unwrap(),
            "--route",
            "/r",
            "--preview",
        ],
    );
    cli_ok(dir, &["rollout", "/r", "--to", "3", "--percent", "10"]);
    let out = cli_ok(dir, &["rollback", "/r"]);
    assert!(
        out.contains("rollout of v3 ended; version 2 stays live"),
        "{out}"
    );
    // The version live before v2 is v1, not the rejected candidate.
    let out = cli_ok(dir, &["rollback", "/r"]);
    assert!(out.contains("version 1 is live (was 2)"), "{out}");

    // And a flip from a read taken before a rollout started is a conflict,
    // not a silent end of that rollout.
    let route = wasmgate::routes::RouteName::parse("/r").unwrap();
    let backends = wasmgate::backend::Backends::open(&server.settings)
        .await
        .unwrap();
    let stale = wasmgate::routes::live_of(backends.table.as_ref(), &route)
        .await
        .unwrap()
        .unwrap();
    cli_ok(dir, &["rollout", "/r", "--to", "2", "--percent", "10"]);
    let versions = backends.table.versions(&route).await.unwrap();
    let note = wasmgate::routes::ChangeNote {
        actor: "test".into(),
        action: "promote".into(),
        reason: None,
        from_version: None,
    };
    let error = backends
        .table
        .flip(&route, Some(&stale), &versions[1], note)
        .await
        .unwrap_err();
    assert!(
        matches!(error, wasmgate::routes::TableError::Conflict { .. }),
        "{error}"
    );
    let routes: Value = serde_json::from_str(&cli_ok(dir, &["routes", "--json"])).unwrap();
    assert_eq!(
        routes[0]["split"]["version"], 2,
        "the rollout survived: {routes}"
    );
}

/// How many of `n` GETs of `path` (with `headers`) the probe answered
/// (the rest went to HELLO).
async fn probe_share(server: &TestServer, path: &str, headers: &[(&str, &str)], n: usize) -> usize {
    let mut probe = 0;
    for _ in 0..n {
        let reply = server.request("GET", path, headers, b"").await;
        assert_eq!(reply.status, 200);
        if !reply.text().starts_with("Hello from wasmgate!") {
            probe += 1;
        }
    }
    probe
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_splits_traffic_keeps_sticky_clients_and_rollback_ends_it() {
    let server = TestServer::start_admin(UploadLimits::default()).await;
    server.deploy("/r", HELLO).await;
    server.deploy("/r", PROBE).await;
    let dir = server.data_dir.path();
    cli_ok(dir, &["rollback", "/r", "--to", "1"]);

    let out = cli_ok(
        dir,
        &[
            "rollout",
            "/r",
            "--to",
            "2",
            "--percent",
            "20",
            "--actor",
            "alice",
        ],
    );
    assert!(out.contains("20% to v2"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let share = probe_share(&server, "/r/echo", &[], 400).await;
    // Binomial(400, 0.2): mean 80, sd 8; the band is about ±5 sd.
    assert!(
        (40..=120).contains(&share),
        "{share} of 400 went to the candidate at 20%"
    );

    // The split lives on the live row, as a raw read shows.
    let db = rusqlite::Connection::open(dir.join("routes.sqlite3")).unwrap();
    let split: String = db
        .query_row("SELECT split FROM live WHERE route = '/r'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let split: Value = serde_json::from_str(&split).unwrap();
    assert_eq!(
        (split["version"].as_u64(), split["percent"].as_f64()),
        (Some(2), Some(20.0))
    );

    // Sticky: a header's value decides, so a client stays on one version.
    let (status, _) = admin(
        &server,
        "POST",
        "/_wasmgate/rollout?route=/r&to=2&percent=50&sticky_header=x-user",
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sides = [0, 0];
    for user in 0..30 {
        let user = format!("user-{user}");
        let share = probe_share(&server, "/r/echo", &[("x-user", &user)], 6).await;
        assert!(
            share == 0 || share == 6,
            "{user} moved between versions: {share} of 6"
        );
        sides[usize::from(share == 6)] += 1;
    }
    assert!(
        sides[0] > 0 && sides[1] > 0,
        "users on both sides: {sides:?}"
    );

    // A rollback during a rollout ends it; v1 stays live.
    let out = cli_ok(dir, &["rollback", "/r"]);
    assert!(out.contains("rollout of v2 ended"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe_share(&server, "/r/echo", &[], 50).await, 0);

    let history = cli_ok(dir, &["history", "/r", "--json"]);
    let history: Value = serde_json::from_str(&history).unwrap();
    let actions: Vec<&str> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "deploy",
            "deploy",
            "rollback",
            "rollout",
            "rollout",
            "end-rollout"
        ]
    );
    assert_eq!(history["changes"][3]["actor"], "alice");
    assert_eq!(history["changes"][4]["actor"], "admin-api");
    assert!(history["live"]["split"].is_null(), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_ends_a_rollout_with_its_candidate_live() {
    let server = TestServer::start_with(|s| s.route_ttl_ms = 100).await;
    server.deploy("/r", HELLO).await;
    server.deploy("/r", PROBE).await;
    let dir = server.data_dir.path();
    cli_ok(dir, &["rollback", "/r", "--to", "1"]);
    cli_ok(dir, &["rollout", "/r", "--to", "2", "--percent", "10"]);
    let out = cli_ok(dir, &["promote", "/r", "2"]);
    assert!(
        out.contains("version 2 is live") && out.contains("rollout of v2 ended"),
        "{out}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe_share(&server, "/r/echo", &[], 30).await, 30);
    let routes: Value = serde_json::from_str(&cli_ok(dir, &["routes", "--json"])).unwrap();
    assert_eq!(routes[0]["version"], 2);
    assert!(routes[0].get("split").is_none(), "{routes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_rollback_fires_once_across_servers_on_a_failing_candidate() {
    let data = tempfile::tempdir().unwrap();
    let hello = write_file(data.path(), "hello.wasm", HELLO);
    let probe = write_file(data.path(), "probe.wasm", PROBE);
    cli_ok(
        data.path(),
        &["deploy", hello.to_str().unwrap(), "--route", "/r"],
    );
    cli_ok(
        data.path(),
        &["deploy", probe.to_str().unwrap(), "--route", "/r"],
    );
    cli_ok(data.path(), &["rollback", "/r", "--to", "1"]);
    // Two servers on one table, as two containers.
    let servers = [
        ServeProcess::start(data.path(), 100, &[]),
        ServeProcess::start(data.path(), 100, &[]),
    ];
    let out = cli_ok(
        data.path(),
        &[
            "rollout",
            "/r",
            "--to",
            "2",
            "--percent",
            "50",
            "--max-error-rate",
            "5",
            "--min-requests",
            "10",
        ],
    );
    assert!(out.contains("auto-rollback past 5%"), "{out}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // v1 (HELLO) answers 200 everywhere; v2 (the probe) answers 500 here.
    let mut failures = 0;
    for round in 0..200 {
        let server = &servers[round % 2];
        let (status, _) = send_for_result(server.addr, "/r/status?code=500")
            .await
            .unwrap();
        if status == 500 {
            failures += 1;
        }
    }
    assert!(failures >= 10, "the candidate got traffic: {failures}");
    // Both servers tripped; after the route TTL every request is on v1.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for server in &servers {
        for _ in 0..20 {
            let (status, _) = send_for_result(server.addr, "/r/status?code=500")
                .await
                .unwrap();
            assert_eq!(status, 200, "the rollout is over");
        }
    }
    let history: Value =
        serde_json::from_str(&cli_ok(data.path(), &["history", "/r", "--json"])).unwrap();
    let ends: Vec<&Value> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "auto-rollback")
        .collect();
    assert_eq!(ends.len(), 1, "exactly one change: {history}");
    let reason = ends[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("failed with a 5xx") && reason.contains("5% limit"),
        "{reason}"
    );
    assert_eq!(history["live"]["version"], 1);
    assert!(history["live"]["split"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_previews_and_prints_json_with_the_actor() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path();
    let hello = write_file(dir, "hello.wasm", HELLO);
    let probe = write_file(dir, "probe.wasm", PROBE);
    let out = wasmgate(dir)
        .env("USER", "ci-user")
        .env_remove("WASMGATE_ACTOR")
        .args(["deploy", hello.to_str().unwrap(), "--route", "/j", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["version"].as_u64(), report["live"].as_bool()),
        (Some(1), Some(true))
    );

    let text = cli_ok(
        dir,
        &[
            "deploy",
            probe.to_str().unwrap(),
            "--route",
            "/j",
            "--preview",
        ],
    );
    assert!(text.contains("version: 2 (preview, not live)"), "{text}");
    assert!(text.contains("x-wasmgate-preview: "), "{text}");
    assert!(text.contains("promote: wasmgate promote /j 2"), "{text}");

    let history: Value = serde_json::from_str(&cli_ok(dir, &["history", "/j", "--json"])).unwrap();
    assert_eq!(history["route"], "/j");
    assert_eq!(history["live"]["version"], 1, "the preview is not live");
    assert_eq!(history["versions"][0]["created_by"], "ci-user");
    assert_eq!(history["changes"][0]["actor"], "ci-user");
    assert!(history["versions"][1]["preview_token"].as_str().is_some());
    let routes: Value = serde_json::from_str(&cli_ok(dir, &["routes", "--json"])).unwrap();
    assert_eq!(routes.as_array().unwrap().len(), 1);
    assert_eq!(routes[0]["route"], "/j");
}
