//! The `wasmgate` binary as users run it: deploy, rollback, history, routes,
//! refusals, and a server in one process following changes made by another.

use std::time::Duration;

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

#[test]
fn sigterm_stops_the_server_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeProcess::start(&dir.path().join("data"), 2_000, &[]);
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
