//! The `wasmgate` binary as users run it: deploy, rollback, history, routes,
//! refusals, and a server in one process following changes made by another.

use std::time::Duration;

use wasmgate::modules::ModuleKey;

use crate::common::*;

#[test]
fn deploy_rollback_history_and_routes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hello = write_file(dir.path(), "hello.wasm", HELLO);
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    let hello = hello.to_str().unwrap();
    let probe = probe.to_str().unwrap();

    let text = cli_ok(&data, &["deploy", hello, "--route", "/app"]);
    assert!(
        text.contains(&format!(
            "module:  application/wasm/{}b/sha256-",
            HELLO.len()
        )),
        "{text}"
    );
    assert!(text.contains("stored:  uploaded"), "{text}");
    assert!(text.contains("version: 1 (live)"), "{text}");

    let text = cli_ok(&data, &["deploy", hello, "--route", "/app"]);
    assert!(text.contains("stored:  skipped, already stored"), "{text}");
    assert!(text.contains("version: 2 (live)"), "{text}");

    let text = cli_ok(
        &data,
        &["deploy", probe, "--route", "/app", "--actor", "alice"],
    );
    assert!(text.contains("version: 3 (live)"), "{text}");

    let text = cli_ok(&data, &["history", "/app"]);
    assert!(text.contains("live:  v3"), "{text}");
    assert!(text.contains("* v3"), "{text}");
    assert!(text.contains("alice"), "{text}");
    let version_lines = text
        .lines()
        .filter(|l| l.starts_with("    v") || l.starts_with("  * v"))
        .count();
    assert_eq!(version_lines, 3, "{text}");

    // Default rollback: to the version live before the current one.
    let text = cli_ok(&data, &["rollback", "/app"]);
    assert!(text.contains("version 2 is live (was 3)"), "{text}");
    let text = cli_ok(&data, &["rollback", "/app", "--to", "1"]);
    assert!(text.contains("version 1 is live (was 2)"), "{text}");

    let err = cli_err(&data, &["rollback", "/app", "--to", "9"]);
    assert!(
        err.contains("route /app has no version 9; versions: 1-3"),
        "{err}"
    );
    let err = cli_err(&data, &["rollback", "/app", "--to", "1"]);
    assert!(err.contains("already live"), "{err}");

    let text = cli_ok(&data, &["routes"]);
    assert!(text.contains("/app") && text.contains("v1"), "{text}");

    let text = cli_ok(&data, &["history", "/app"]);
    assert!(
        text.contains("rollback") && text.contains("v3 -> v2"),
        "{text}"
    );

    let err = cli_err(&data, &["history", "/nope"]);
    assert!(err.contains("has never been deployed"), "{err}");
}

#[test]
fn a_bad_deploy_is_refused_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hello = write_file(dir.path(), "hello.wasm", HELLO);
    assert!(
        run_cli(
            &data,
            &["deploy", hello.to_str().unwrap(), "--route", "/app"]
        )
        .status
        .success()
    );
    let before_history = stdout(&run_cli(&data, &["history", "/app"]));
    let stored_before = count_files(&data.join("application"));

    let cases: [(&str, &[u8]); 4] = [
        ("garbage.wasm", b"this is not wasm at all"),
        ("core.wasm", b"\0asm\x01\0\0\0"),
        ("command.wasm", CLI_COMMAND),
        ("truncated.wasm", &HELLO[..HELLO.len() / 2]),
    ];
    for (name, bytes) in cases {
        let file = write_file(dir.path(), name, bytes);
        let out = run_cli(
            &data,
            &["deploy", file.to_str().unwrap(), "--route", "/app"],
        );
        assert!(!out.status.success(), "{name} was accepted");
        let err = stderr(&out);
        assert!(err.contains("refusing to deploy"), "{name}: {err}");
        if name != "truncated.wasm" {
            assert!(
                err.contains("wasi:http/incoming-handler"),
                "{name}: the message names what is expected: {err}"
            );
        }
    }
    assert_eq!(
        stdout(&run_cli(&data, &["history", "/app"])),
        before_history,
        "nothing changed"
    );
    assert_eq!(
        count_files(&data.join("application")),
        stored_before,
        "nothing stored"
    );

    let out = run_cli(
        &data,
        &["deploy", hello.to_str().unwrap(), "--route", "/_wasmgate/x"],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("reserved"), "{}", stderr(&out));
}

#[test]
fn a_bad_setting_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = wasmgate(dir.path())
        .env("WASMGATE_ROUTE_TTL_MS", "soon")
        .arg("routes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("'soon'") && err.contains("WASMGATE_ROUTE_TTL_MS"),
        "{err}"
    );

    let out = wasmgate(dir.path())
        .env("WASMGATE_MEMORY_LIMIT_MB", "0")
        .arg("routes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("'0'") && err.contains("WASMGATE_MEMORY_LIMIT_MB"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_from_another_process_is_served_within_the_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let hello = write_file(dir.path(), "hello.wasm", HELLO);
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    assert!(
        run_cli(
            &data,
            &["deploy", hello.to_str().unwrap(), "--route", "/app"]
        )
        .status
        .success()
    );
    assert!(
        run_cli(
            &data,
            &["deploy", probe.to_str().unwrap(), "--route", "/app"]
        )
        .status
        .success()
    );

    const TTL_MS: u64 = 1_000;
    let server = ServeProcess::start(&data, TTL_MS, &[]);
    let reply = send(server.addr, "GET", "/app/echo", &[], bytes::Bytes::new()).await;
    assert!(
        reply.text().starts_with("method: GET"),
        "version 2 (probe) is live: {}",
        reply.text()
    );

    let out = run_cli(&data, &["rollback", "/app"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let addr = server.addr;
    let took = eventually(Duration::from_millis(TTL_MS + 3_000), || async move {
        let reply = send(addr, "GET", "/app/echo", &[], bytes::Bytes::new()).await;
        reply.text().starts_with("Hello from wasmgate")
    })
    .await
    .expect("the server never followed the rollback");
    assert!(
        took <= Duration::from_millis(TTL_MS + 500),
        "followed after {took:?}, TTL is {TTL_MS}ms"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_server_loads_the_deploys_precompiled_code_and_only_if_untampered() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    let probe = probe.to_str().unwrap();
    let text = cli_ok(&data, &["deploy", probe, "--route", "/app"]);
    let artifact = artifact_of(&text);
    let module = ModuleKey::for_bytes(PROBE).to_string();
    assert!(
        artifact.starts_with(module.strip_suffix(".wasm").unwrap()) && artifact.ends_with(".cwasm"),
        "the artifact sits beside {module}: {artifact}"
    );
    // A second deploy of the same bytes finds the artifact stored, checks it
    // is its own, and records it again.
    let text = cli_ok(&data, &["deploy", probe, "--route", "/other"]);
    assert!(
        text.contains(&format!("code:    {artifact} (precompiled)")),
        "{text}"
    );

    let served = |server: &ServeProcess| {
        let addr = server.addr;
        async move {
            let reply = send(addr, "GET", "/app/echo", &[], bytes::Bytes::new()).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    };
    let server = ServeProcess::start(&data, 2_000, &[]);
    served(&server).await;
    assert_eq!(
        server
            .wait_for_log(&["module loaded from its precompiled artifact", &artifact])
            .len(),
        1
    );
    assert!(server.log_lines_with(&["module compiled"]).is_empty());
    drop(server);

    let off = ServeProcess::start(&data, 2_000, &[("WASMGATE_PRECOMPILED", "off".into())]);
    served(&off).await;
    assert_eq!(off.wait_for_log(&["module compiled"]).len(), 1);
    drop(off);

    // One byte changed, length kept: the digest recorded at deploy no longer
    // matches, so the bytes are never deserialized; the module is compiled.
    let path = data.join(&artifact);
    let mut code = std::fs::read(&path).unwrap();
    let middle = code.len() / 2;
    code[middle] ^= 0x5a;
    std::fs::write(&path, &code).unwrap();
    let server = ServeProcess::start(&data, 2_000, &[]);
    served(&server).await;
    let refused = server.wait_for_log(&["precompiled artifact not used", "SHA-256"]);
    assert_eq!(refused.len(), 1, "{:?}", server.log.lock().unwrap());
    assert_eq!(server.wait_for_log(&["module compiled"]).len(), 1);
    drop(server);

    // A deploy over the tampered artifact cannot replace it (stored objects
    // are immutable) and does not record it.
    let text = cli_ok(&data, &["deploy", probe, "--route", "/app"]);
    assert!(
        text.contains("code:    none precompiled"),
        "a foreign artifact is never recorded: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_request_reads_the_route_table_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    for route in ["/a", "/a/b", "/c", "api.example.com/a"] {
        cli_ok(
            &data,
            &["deploy", probe.to_str().unwrap(), "--route", route],
        );
    }
    let server = ServeProcess::start(&data, 60_000, &[]);
    let addr = server.addr;
    let reads = || async move {
        let reply = send(addr, "GET", "/_wasmgate/metrics", &[], bytes::Bytes::new()).await;
        let text = reply.text();
        text.lines()
            .find_map(|l| l.strip_prefix("wasmgate_route_table_reads_total "))
            .unwrap_or_else(|| panic!("no route table reads in {text}"))
            .parse::<u64>()
            .unwrap()
    };
    let before = reads().await;
    // Four cold paths, each with several candidate routes (host and
    // prefixes), one of them matching none; then the same four again.
    for path in ["/a/b/c/d", "/a/x", "/c/y/z", "/nothing/here"] {
        for _ in 0..2 {
            let reply = send(addr, "GET", path, &[], bytes::Bytes::new()).await;
            assert!(
                reply.status == 200 || reply.status == 404,
                "{path}: {}",
                reply.status
            );
        }
    }
    assert_eq!(
        reads().await - before,
        4,
        "one round trip per cold path, none when warm"
    );
}

/// ...and loses no log line on the way out: `serve` writes its lines in
/// batches from a thread of its own, which must have written every one
/// (a request line per request, then the last line) when the process ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_cleanly_with_every_log_line_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(&dir.path().join("data"), 2_000, &[]);
    const REQUESTS: usize = 300;
    for i in 0..REQUESTS {
        let path = format!("/nothing/{i}");
        let reply = send(server.addr, "GET", &path, &[], bytes::Bytes::new()).await;
        assert_eq!(reply.status, 404);
    }
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(
        !server.wait_for_log(&["wasmgate stopped"]).is_empty(),
        "no last line"
    );
    let logged: std::collections::BTreeSet<String> = server
        .log_lines_with(&["\"message\":\"request\""])
        .iter()
        .map(|line| {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["status"], 404, "{line}");
            event["path"].as_str().unwrap().to_string()
        })
        .collect();
    let sent: std::collections::BTreeSet<String> =
        (0..REQUESTS).map(|i| format!("/nothing/{i}")).collect();
    assert_eq!(logged, sent, "a request line per request");
}

fn count_files(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            if e.path().is_dir() {
                count_files(&e.path())
            } else {
                1
            }
        })
        .sum()
}
