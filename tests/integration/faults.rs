//! Guests that fail, and bytes that must never run: each failure is a 5xx
//! response and the server goes on serving everyone else.

use std::time::{Duration, Instant};

use wasmgate::config::Toggle;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_is_a_500_and_the_server_goes_on() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    for path in ["/probe/trap", "/probe/panic"] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 500, "{path}: {}", reply.text());
        assert!(
            reply.text().contains("the function failed"),
            "{}",
            reply.text()
        );
        assert_still_serving(&server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_is_a_504_at_the_deadline_while_others_are_served() {
    // Generous enough that a busy CI machine still answers the echo below
    // within it while the loop spins.
    let server = TestServer::start_with(|s| s.timeout_ms = 3000).await;
    server.deploy("/probe", PROBE).await;
    server.get("/probe/echo").await; // compile outside the timed part

    let addr = server.addr;
    let started = Instant::now();
    let looping =
        tokio::spawn(
            async move { send(addr, "GET", "/probe/loop", &[], bytes::Bytes::new()).await },
        );
    // While one guest spins, others are answered.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_still_serving(&server).await;
    if looping.is_finished() {
        let reply = looping.await.unwrap();
        panic!(
            "the loop ended early after {:?}: {} {}",
            started.elapsed(),
            reply.status,
            reply.text()
        );
    }

    let reply = looping.await.unwrap();
    let took = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(
        reply.text().contains("did not finish within 3000ms"),
        "{}",
        reply.text()
    );
    assert!(
        took >= Duration::from_millis(2950),
        "not before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(6000),
        "soon after the deadline: {took:?}"
    );
    assert_still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_a_5xx_and_the_server_goes_on() {
    let server = TestServer::start_with(|s| s.memory_limit_mb = 32).await;
    server.deploy("/probe", PROBE).await;
    let reply = server.get("/probe/oom").await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(
        reply.text().contains("memory limit of 32 MiB"),
        "{}",
        reply.text()
    );
    assert_still_serving(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_altered_on_disk_is_never_executed() {
    // The module itself, not a precompiled artifact of it, is what is read.
    let server = TestServer::start_with(|s| s.precompiled = Toggle::Off).await;
    let report = server.deploy("/probe", PROBE).await;
    // Replace the stored bytes with another valid component of the same
    // length class: if it ran, it would answer "Hello from wasmgate".
    let path = server.data_dir.path().join(&report.key);
    std::fs::write(&path, HELLO).unwrap();
    let reply = server.get("/probe/echo").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(!reply.text().contains("Hello"), "the altered module ran");

    // Same length, one byte flipped.
    let mut altered = PROBE.to_vec();
    let last = altered.len() - 1;
    altered[last] ^= 0x01;
    std::fs::write(&path, &altered).unwrap();
    assert_eq!(server.get("/probe/echo").await.status, 502);

    // Restoring the right bytes heals the route: errors were not cached.
    std::fs::write(&path, PROBE).unwrap();
    assert_eq!(server.get("/probe/echo").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_missing_from_the_store_is_a_502() {
    // The module itself, not a precompiled artifact of it, is what is read.
    let server = TestServer::start_with(|s| s.precompiled = Toggle::Off).await;
    let report = server.deploy("/probe", PROBE).await;
    std::fs::remove_file(server.data_dir.path().join(&report.key)).unwrap();
    let reply = server.get("/probe/echo").await;
    assert_eq!(reply.status, 502, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_after_the_response_head_aborts_the_body_instead_of_ending_it() {
    let server = TestServer::start().await;
    server.deploy("/probe", PROBE).await;
    // The head (200) may or may not have reached the client; either way the
    // response must fail, not end as if it were complete.
    let result = send_for_result(server.addr, "/probe/big-then-trap").await;
    assert!(
        result.is_err(),
        "a cut-off response looked complete: {:?}",
        result.map(|(status, body)| (status, body.len()))
    );
    assert_still_serving(&server).await;
}
