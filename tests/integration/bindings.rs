//! WAGI modules and deploy bindings, through the real listener: what a CGI
//! guest sees and how its output becomes a response, bindings as a
//! component's and a WAGI module's environment, `wasm_module` bindings
//! linking one module to another, refused metadata, and rollback restoring
//! a version's bindings.

use std::time::Duration;

use crate::common::*;

const GREETING: &str =
    r#"{"bindings": [{"type": "plain_text", "name": "GREETING", "text": "hello"}]}"#;

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wagi_module_sees_the_request_as_cgi() {
    let server = TestServer::start().await;
    let report = server
        .deploy_with("/cgi", WAGI_PROBE, GREETING, &[])
        .await
        .expect("deploy");
    assert_eq!(report.abi, "WAGI module");
    assert_eq!(report.bindings, vec!["GREETING:plain_text".to_string()]);

    let reply = server
        .request(
            "POST",
            "/cgi/echo/more%20stuff?status=201&x=1",
            &[
                ("x-custom", "abc"),
                ("content-type", "text/plain"),
                ("x-request-id", "wagi-1"),
            ],
            b"ping\nsecond line",
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    assert_eq!(reply.headers["x-wagi-probe"], "1");
    assert_eq!(reply.headers["content-type"], "text/plain");
    assert_eq!(reply.headers["x-request-id"], "wagi-1");
    let text = reply.text();
    let lines = lines(&text);
    let port = server.addr.port().to_string();
    for expected in [
        "REQUEST_METHOD=POST",
        "SCRIPT_NAME=/cgi",
        "PATH_INFO=/echo/more stuff",
        "X_RAW_PATH_INFO=/echo/more%20stuff",
        "QUERY_STRING=status=201&x=1",
        "SERVER_NAME=127.0.0.1",
        &format!("SERVER_PORT={port}"),
        "CONTENT_TYPE=text/plain",
        "CONTENT_LENGTH=16",
        "REMOTE_ADDR=127.0.0.1",
        "GATEWAY_INTERFACE=CGI/1.1",
        "HTTP_X_CUSTOM=abc",
        &format!("HTTP_HOST=127.0.0.1:{port}"),
        "GREETING=hello",
        "argv0=/cgi",
    ] {
        assert!(
            lines.contains(&expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    assert!(
        text.ends_with("stdin=ping\nsecond line"),
        "the body arrives whole on stdin: {text}"
    );
    for host_only in ["PATH=", "HOME=", "USER=", "CARGO"] {
        assert!(
            !lines.iter().any(|l| l.starts_with(host_only)),
            "the host's {host_only} leaked into the guest:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgi_output_maps_to_responses_and_failures_to_5xx() {
    let server = TestServer::start_with(|s| s.timeout_ms = 3_000).await;
    server.deploy("/cgi", WAGI_PROBE).await;

    let redirect = server.get("/cgi/redirect").await;
    assert_eq!(redirect.status, 302);
    assert_eq!(redirect.headers["location"], "/elsewhere");

    for (action, status) in [
        ("malformed", 502),
        ("empty", 502),
        ("exit1", 500),
        ("trap", 500),
        ("oom", 500),
        ("loop", 504),
    ] {
        let reply = server.get(&format!("/cgi/{action}")).await;
        assert_eq!(reply.status, status, "{action}: {}", reply.text());
        assert!(
            reply.text().contains("request id:"),
            "{action}: a plain error answer"
        );
    }

    let big = server.get("/cgi/big?bytes=3000000").await;
    assert_eq!(big.status, 200);
    assert_eq!(big.body.len(), 3_000_000);
    assert!(big.body.iter().all(|b| *b == b'x'));
    // Past the stdout cap the answer is an error, never a cut-off body.
    let too_big = server.get("/cgi/big?bytes=17000000").await;
    assert_eq!(too_big.status, 502, "{}", too_big.text());

    let ok = server.get("/cgi/stderr").await;
    assert_eq!((ok.status, ok.text().as_str()), (200, "ok"));
    assert_eq!(
        server.get("/cgi/echo").await.status,
        200,
        "every failure above left the server serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_wagi_limit_is_a_413() {
    let server = TestServer::start().await;
    server.deploy("/cgi", WAGI_PROBE).await;
    let body = vec![b'a'; wasmgate::config::DEFAULT_MAX_BODY_BYTES as usize + 1];
    // The 413 may come before the body is all sent: read it raw.
    let head = format!(
        "POST /cgi/echo HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    let (status, text) = raw_exchange(server.addr, &head, &body).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(server.get("/cgi/echo").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_sees_its_bindings_and_nothing_of_the_host() {
    let server = TestServer::start().await;
    let metadata = r#"{"main_module": "main", "bindings": [
        {"type": "plain_text", "name": "GREETING", "text": "hello"},
        {"type": "json", "name": "CONFIG", "json": {"retries": 3, "hosts": ["a", "b"]}},
        {"type": "secret_text", "name": "API_KEY", "text": "s3cr3t-value"}]}"#;
    let report = server
        .deploy_with("/probe", PROBE, metadata, &[])
        .await
        .expect("deploy");
    assert_eq!(report.abi, "wasi:http 0.2 component");

    let env = server.get("/probe/env").await;
    assert_eq!(env.status, 200);
    let text = env.text();
    let mut vars = lines(&text);
    vars.sort();
    assert_eq!(
        vars,
        vec![
            "API_KEY=s3cr3t-value",
            r#"CONFIG={"hosts":["a","b"],"retries":3}"#,
            "GREETING=hello",
        ],
        "exactly the bindings, none of the host's environment"
    );

    // The secret is stored apart: never in what history shows.
    let route = wasmgate::routes::RouteName::parse("/probe").unwrap();
    let backends = wasmgate::backend::Backends::open(&server.settings)
        .await
        .unwrap();
    let history = wasmgate::deploy::route_history(backends.table.as_ref(), &route)
        .await
        .unwrap();
    let shown = serde_json::to_string(&history).unwrap();
    assert!(shown.contains("API_KEY"), "{shown}");
    assert!(!shown.contains("s3cr3t-value"), "{shown}");
    let cli = cli_ok(server.data_dir.path(), &["history", "/probe"]);
    assert!(cli.contains("API_KEY:secret_text"), "{cli}");
    assert!(!cli.contains("s3cr3t-value"), "{cli}");
    let routes = cli_ok(server.data_dir.path(), &["routes"]);
    assert!(!routes.contains("s3cr3t-value"), "{routes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wasm_module_binding_links_the_isqrt_example() {
    let server = TestServer::start().await;
    let report = server
        .deploy_with(
            "/isqrt",
            ISQRT_MAIN,
            ISQRT_METADATA,
            &[("wasmprogram", ISQRT_LIB)],
        )
        .await
        .expect("deploy");
    assert_eq!(report.parts.len(), 1);
    assert_eq!(report.parts[0].name, "wasmprogram");
    assert!(report.parts[0].uploaded);
    assert!(
        server.data_dir.path().join(&report.parts[0].key).is_file(),
        "the part is stored by its own digest"
    );

    let reply = server.get("/isqrt?n=16").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let text = reply.text();
    let value: f64 = text
        .rsplit('=')
        .next()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("a number at the end of {text:?}"));
    assert!(
        (value - 0.25).abs() < 0.001,
        "Q_rsqrt(16) is about 1/4: {text}"
    );

    // The same part again: stored already, skipped.
    let again = server
        .deploy_with(
            "/isqrt",
            ISQRT_MAIN,
            ISQRT_METADATA,
            &[("wasmprogram", ISQRT_LIB)],
        )
        .await
        .unwrap();
    assert!(!again.parts[0].uploaded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deploys_leave_the_live_version_unchanged() {
    let server = TestServer::start().await;
    server
        .deploy_with("/cgi", WAGI_PROBE, GREETING, &[])
        .await
        .unwrap();
    let isqrt_binding = ISQRT_METADATA;
    /// What is refused, the main module, metadata, parts, and the message.
    type Case<'a> = (
        &'a str,
        &'a [u8],
        &'a str,
        Vec<(&'a str, &'a [u8])>,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "the part a binding names was not uploaded",
            ISQRT_MAIN,
            isqrt_binding,
            vec![],
            "was not uploaded",
        ),
        (
            "a module needs a binding it lacks",
            ISQRT_MAIN,
            "{}",
            vec![],
            "no wasm_module binding is named `isqrt`",
        ),
        (
            "an uploaded part no binding uses",
            WAGI_PROBE,
            "{}",
            vec![("extra", ISQRT_LIB)],
            "no wasm_module binding uses it",
        ),
        (
            "a wasm_module binding on a component",
            PROBE,
            r#"{"bindings": [{"type": "wasm_module", "name": "isqrt", "part": "wasmprogram"}]}"#,
            vec![("wasmprogram", ISQRT_LIB)],
            "for WAGI core modules",
        ),
        (
            "a binding the module never imports",
            WAGI_PROBE,
            isqrt_binding,
            vec![("wasmprogram", ISQRT_LIB)],
            "never imported",
        ),
        (
            "a part that is not a core module",
            ISQRT_MAIN,
            isqrt_binding,
            vec![("wasmprogram", HELLO)],
            "must be a core WebAssembly module",
        ),
        (
            "a core module without _start",
            ISQRT_LIB,
            "{}",
            vec![],
            "does not export `_start`",
        ),
    ];
    for (what, main, metadata, parts, expected) in cases {
        let error = server
            .deploy_with("/cgi", main, metadata, &parts)
            .await
            .expect_err(what)
            .to_string();
        assert!(error.contains(expected), "{what}: {error}");
        assert!(error.contains("refusing to deploy"), "{what}: {error}");
    }
    let backends = wasmgate::backend::Backends::open(&server.settings)
        .await
        .unwrap();
    let route = wasmgate::routes::RouteName::parse("/cgi").unwrap();
    let history = wasmgate::deploy::route_history(backends.table.as_ref(), &route)
        .await
        .unwrap();
    assert_eq!(history.versions.len(), 1, "no version was recorded");
    assert_eq!(history.live.unwrap().version, Some(1));
    assert!(
        server
            .get("/cgi/echo")
            .await
            .text()
            .contains("GREETING=hello")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_refuses_bad_metadata_with_a_clear_message() {
    let server = TestServer::start().await;
    let dir = server.data_dir.path();
    let wagi = write_file(dir, "wagi.wasm", WAGI_PROBE);
    let wagi = wagi.to_str().unwrap();
    cli_ok(dir, &["deploy", wagi, "--route", "/cgi"]);
    for (metadata, expected) in [
        (
            r#"{"bindings": [{"type": "queue", "name": "Q"}]}"#,
            "unknown variant `queue`",
        ),
        (
            r#"{"bindings": [{"type": "plain_text", "name": "A"}]}"#,
            "missing field `text`",
        ),
        (
            r#"{"bindings": [{"type": "wasm_module", "name": "isqrt", "part": "p"}]}"#,
            "was not uploaded",
        ),
        ("{not json", "not valid JSON"),
    ] {
        let path = write_file(dir, "metadata.json", metadata.as_bytes());
        let error = cli_err(
            dir,
            &[
                "deploy",
                wagi,
                "--route",
                "/cgi",
                "--metadata",
                path.to_str().unwrap(),
            ],
        );
        assert!(error.contains(expected), "{metadata}: {error}");
    }
    let history = cli_ok(dir, &["history", "/cgi"]);
    assert!(history.contains("* v1"), "{history}");
    assert!(!history.contains("v2"), "{history}");

    // The isqrt example, as the README gives it.
    let main = write_file(dir, "main.wasm", ISQRT_MAIN);
    let lib = write_file(dir, "isqrt.wasm", ISQRT_LIB);
    let metadata = write_file(dir, "isqrt.json", ISQRT_METADATA.as_bytes());
    let out = cli_ok(
        dir,
        &[
            "deploy",
            main.to_str().unwrap(),
            "--route",
            "/isqrt",
            "--metadata",
            metadata.to_str().unwrap(),
            "--part",
            &format!("wasmprogram={}", lib.to_str().unwrap()),
        ],
    );
    assert!(
        out.contains("part:    wasmprogram = application/wasm/"),
        "{out}"
    );
    assert!(out.contains("bindings: isqrt:wasm_module"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_bindings_of_the_earlier_version() {
    let server = TestServer::start_with(|s| s.route_ttl_ms = 100).await;
    let with = |text: &str| {
        format!(
            r#"{{"bindings": [{{"type": "plain_text", "name": "GREETING", "text": "{text}"}}, {{"type": "secret_text", "name": "TOKEN", "text": "token-{text}"}}]}}"#
        )
    };
    server
        .deploy_with("/probe", PROBE, &with("one"), &[])
        .await
        .unwrap();
    server
        .deploy_with("/probe", PROBE, &with("two"), &[])
        .await
        .unwrap();
    let env = server.get("/probe/env").await.text();
    assert!(
        env.contains("GREETING=two\n") && env.contains("TOKEN=token-two\n"),
        "{env}"
    );

    // Same module, other bindings: the rollback is a bindings change only.
    let out = cli_ok(server.data_dir.path(), &["rollback", "/probe"]);
    assert!(out.contains("version 1 is live"), "{out}");
    let restored = eventually(Duration::from_secs(10), || async {
        let env = server.get("/probe/env").await.text();
        env.contains("GREETING=one\n") && env.contains("TOKEN=token-one\n")
    })
    .await;
    assert!(restored.is_some(), "the earlier bindings came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_stderr_and_stdout_reach_the_log_with_the_request_id() {
    let data = tempfile::tempdir().unwrap();
    let wagi = write_file(data.path(), "wagi.wasm", WAGI_PROBE);
    let probe = write_file(data.path(), "probe.wasm", PROBE);
    cli_ok(
        data.path(),
        &["deploy", wagi.to_str().unwrap(), "--route", "/cgi"],
    );
    cli_ok(
        data.path(),
        &["deploy", probe.to_str().unwrap(), "--route", "/probe"],
    );
    let server = ServeProcess::start(data.path(), 1_000, &[]);

    let reply = send(
        server.addr,
        "GET",
        "/cgi/stderr",
        &[("x-request-id", "log-wagi-1")],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, 200);
    let logged = eventually(Duration::from_secs(5), || async {
        server.log_lines_with(&["log-wagi-1", "line one"]).len() == 1
            && server.log_lines_with(&["log-wagi-1", "line two"]).len() == 1
    })
    .await;
    assert!(
        logged.is_some(),
        "each stderr line is one log event with the request id: {:?}",
        server.log_lines_with(&["log-wagi-1"])
    );
    assert!(
        server
            .log_lines_with(&["log-wagi-1", "stderr"])
            .iter()
            .all(|l| !l.contains("Content-Type")),
        "stdout is the response, not the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_set_pointer_serves_the_bindings_of_the_version_with_that_module() {
    let server = TestServer::start_with(|s| s.route_ttl_ms = 100).await;
    let with = |text: &str| {
        format!(
            r#"{{"bindings": [{{"type": "plain_text", "name": "GREETING", "text": "{text}"}}]}}"#
        )
    };
    let v1 = server
        .deploy_with("/app", PROBE, &with("from-v1"), &[])
        .await
        .unwrap();
    server
        .deploy_with("/app", WAGI_PROBE, &with("from-v2"), &[])
        .await
        .unwrap();
    assert!(
        server
            .get("/app/echo")
            .await
            .text()
            .contains("GREETING=from-v2")
    );

    // What an operator does by hand: point the route at v1's module,
    // leaving `version` at 2.
    let db = rusqlite::Connection::open(server.data_dir.path().join("routes.sqlite3")).unwrap();
    db.execute(
        "UPDATE live SET module = ?1 WHERE route = '/app'",
        [&v1.key],
    )
    .unwrap();
    let followed = eventually(Duration::from_secs(10), || async {
        server.get("/app/env").await.text() == "GREETING=from-v1\n"
    })
    .await;
    assert!(
        followed.is_some(),
        "v1's module is served with v1's bindings"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_part_never_runs() {
    let server = TestServer::start().await;
    let report = server
        .deploy_with(
            "/isqrt",
            ISQRT_MAIN,
            ISQRT_METADATA,
            &[("wasmprogram", ISQRT_LIB)],
        )
        .await
        .unwrap();
    let part = server.data_dir.path().join(&report.parts[0].key);
    let mut tampered = ISQRT_LIB.to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    std::fs::write(&part, &tampered).unwrap();

    let reply = server.get("/isqrt?n=16").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    std::fs::write(&part, ISQRT_LIB).unwrap();
    assert_eq!(
        server.get("/isqrt?n=16").await.status,
        200,
        "failures are not cached"
    );
}
