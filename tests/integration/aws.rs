//! The AWS backends (S3 modules, DynamoDB routes) against moto's server:
//! the `wasmgate` binary deploys, rolls back and serves exactly as it will
//! against AWS, and ops' raw edits of the table are followed.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use wasmgate::modules::ModuleKey;
use wasmgate::routes::{
    ChangeNote, DynamoRouteTable, NewVersion, RouteName, RouteTable, TableError, candidates,
    live_of, most_specific,
};

use crate::common::*;
use crate::moto::Moto;

const BUCKET: &str = "wasmgate-modules";
const TABLE: &str = "wasmgate-routes";

/// moto running with the bucket and table created, and a scratch dir.
struct Aws {
    moto: Moto,
    dir: tempfile::TempDir,
}

impl Aws {
    async fn start() -> Self {
        let moto = Moto::start();
        moto.create(BUCKET, TABLE).await;
        Aws {
            moto,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        self.moto.env(BUCKET, TABLE)
    }

    /// Runs the CLI against S3 + DynamoDB.
    fn cli(&self, args: &[&str]) -> std::process::Output {
        wasmgate(&self.dir.path().join("unused"))
            .envs(self.env())
            .args(args)
            .output()
            .unwrap()
    }

    fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.status.success(), "wasmgate {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> String {
        write_file(self.dir.path(), name, bytes)
            .to_str()
            .unwrap()
            .to_string()
    }

    fn serve(&self, ttl_ms: u64) -> ServeProcess {
        self.serve_with(ttl_ms, &[])
    }

    fn serve_with(&self, ttl_ms: u64, env: &[(&'static str, String)]) -> ServeProcess {
        let mut all = self.env();
        all.extend_from_slice(env);
        ServeProcess::start(&self.dir.path().join("unused"), ttl_ms, &all)
    }

    async fn live_item(&self, route: &str) -> std::collections::HashMap<String, AttributeValue> {
        self.moto
            .dynamodb()
            .await
            .get_item()
            .table_name(TABLE)
            .key("route", AttributeValue::S(route.into()))
            .key("rev", AttributeValue::S("live".into()))
            .send()
            .await
            .unwrap()
            .item
            .expect("the live item exists")
    }
}

fn s(item: &std::collections::HashMap<String, AttributeValue>, name: &str) -> String {
    item[name].as_s().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_to_s3_and_dynamodb_then_serve_skip_and_roll_back() {
    let aws = Aws::start().await;
    let hello = aws.file("hello.wasm", HELLO);
    let probe = aws.file("probe.wasm", PROBE);
    let key = ModuleKey::for_bytes(HELLO).to_string();

    let text = aws.cli_ok(&["deploy", &hello, "--route", "/app"]);
    assert!(
        text.contains(&key) && text.contains("uploaded to s3://wasmgate-modules"),
        "{text}"
    );
    let head = aws
        .moto
        .s3()
        .await
        .head_object()
        .bucket(BUCKET)
        .key(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/wasm"));
    assert_eq!(head.content_length(), Some(HELLO.len() as i64));
    let live = aws.live_item("/app").await;
    assert_eq!(s(&live, "module"), key);
    assert_eq!(live["version"].as_n().unwrap(), "1");

    let text = aws.cli_ok(&["deploy", &hello, "--route", "/app"]);
    assert!(
        text.contains("skipped, already stored") && text.contains("version: 2 (live)"),
        "{text}"
    );
    let text = aws.cli_ok(&["deploy", &probe, "--route", "/app"]);
    assert!(text.contains("version: 3 (live)"), "{text}");
    // The probe's precompiled code went beside it, and its record onto the
    // live item, where every server reads it with the route.
    let artifact = artifact_of(&text);
    let head = aws
        .moto
        .s3()
        .await
        .head_object()
        .bucket(BUCKET)
        .key(&artifact)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/octet-stream"));
    let live = aws.live_item("/app").await;
    assert!(
        live.values().any(|v| format!("{v:?}").contains(&artifact)),
        "the live item records {artifact}: {live:?}"
    );

    let server = aws.serve(2_000);
    let reply = send(
        server.addr,
        "GET",
        "/app/echo?q=1",
        &[],
        bytes::Bytes::new(),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply.text().contains("path: /app/echo?q=1"),
        "{}",
        reply.text()
    );
    assert_eq!(
        server
            .wait_for_log(&["module loaded from its precompiled artifact", &artifact])
            .len(),
        1
    );

    let text = aws.cli_ok(&["rollback", "/app"]);
    assert!(text.contains("version 2 is live (was 3)"), "{text}");
    let text = aws.cli_ok(&["history", "/app"]);
    assert!(text.contains("* v2") && text.contains("v3 -> v2"), "{text}");
    let text = aws.cli_ok(&["routes"]);
    assert!(text.contains("/app") && text.contains("v2"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_s3_object_is_never_run() {
    let aws = Aws::start().await;
    let probe = aws.file("probe.wasm", PROBE);
    aws.cli_ok(&["deploy", &probe, "--route", "/probe"]);
    // Overwrite the object (no condition) with the same bytes but one bit.
    let key = ModuleKey::for_bytes(PROBE).to_string();
    let mut altered = PROBE.to_vec();
    altered[PROBE.len() / 2] ^= 0x01;
    aws.moto
        .s3()
        .await
        .put_object()
        .bucket(BUCKET)
        .key(&key)
        .body(altered.into())
        .send()
        .await
        .unwrap();

    // The deploy's precompiled artifact is the module's code, checked
    // against its own digest: served from it, the damaged module is not
    // even read. Without artifacts the server must compile the module, and
    // refuses it.
    let server = aws.serve(2_000);
    let reply = send(server.addr, "GET", "/probe/echo", &[], bytes::Bytes::new()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(server);
    let server = aws.serve_with(2_000, &[("WASMGATE_PRECOMPILED", "off".into())]);
    let reply = send(server.addr, "GET", "/probe/echo", &[], bytes::Bytes::new()).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(
        reply.text().contains("could not be loaded"),
        "{}",
        reply.text()
    );

    // And a deploy of the right bytes refuses to call the damaged object stored.
    let out = aws.cli(&["deploy", &probe, "--route", "/probe"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_flip_with_update_item_is_followed_within_the_ttl() {
    let aws = Aws::start().await;
    aws.cli_ok(&["deploy", &aws.file("hello.wasm", HELLO), "--route", "/app"]);
    aws.cli_ok(&["deploy", &aws.file("probe.wasm", PROBE), "--route", "/app"]);
    const TTL_MS: u64 = 1_000;
    let server = aws.serve(TTL_MS);
    let reply = send(server.addr, "GET", "/app/echo", &[], bytes::Bytes::new()).await;
    assert!(reply.text().starts_with("method: GET"), "{}", reply.text());

    // The README's raw rollback: one update-item on the live item.
    let hello_key = ModuleKey::for_bytes(HELLO).to_string();
    aws.moto
        .dynamodb()
        .await
        .update_item()
        .table_name(TABLE)
        .key("route", AttributeValue::S("/app".into()))
        .key("rev", AttributeValue::S("live".into()))
        .update_expression("SET #m = :k")
        .condition_expression("attribute_exists(#r)")
        .expression_attribute_names("#m", "module")
        .expression_attribute_names("#r", "route")
        .expression_attribute_values(":k", AttributeValue::S(hello_key.clone()))
        .send()
        .await
        .unwrap();
    let addr = server.addr;
    let took = eventually(Duration::from_millis(TTL_MS + 3_000), || async move {
        let reply = send(addr, "GET", "/app/echo", &[], bytes::Bytes::new()).await;
        reply.text().starts_with("Hello from wasmgate")
    })
    .await
    .expect("the server never followed the hand flip");
    assert!(
        took <= Duration::from_millis(TTL_MS + 500),
        "followed after {took:?}"
    );

    let text = aws.cli_ok(&["history", "/app"]);
    assert!(text.contains(&format!("live:  v2  {hello_key}")), "{text}");
    assert!(text.contains("set by hand"), "{text}");
    // The CLI can still roll back from a hand-set pointer.
    let text = aws.cli_ok(&["rollback", "/app", "--to", "2"]);
    assert!(text.contains("version 2 is live"), "{text}");
}

async fn tables(aws: &Aws, n: usize) -> Vec<DynamoRouteTable> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(DynamoRouteTable::new(aws.moto.dynamodb().await, TABLE));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flips_from_the_same_read_on_dynamodb_one_wins_the_others_conflict() {
    let aws = Aws::start().await;
    let route = RouteName::parse("/api").unwrap();
    let handles = tables(&aws, 5).await;
    let mut versions = Vec::new();
    for i in 0..5u8 {
        let version = NewVersion {
            module: ModuleKey::for_bytes(&[i]),
            actor: "setup".into(),
            metadata: serde_json::json!({}),
            secrets: Default::default(),
            preview_token: None,
        };
        versions.push(handles[0].add_version(&route, version).await.unwrap());
    }
    assert_eq!(
        versions.iter().map(|v| v.number).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    let note = |actor: &str| ChangeNote {
        actor: actor.into(),
        action: "rollback".into(),
        reason: None,
        from_version: None,
    };
    handles[0]
        .flip(&route, None, &versions[0], note("setup"))
        .await
        .unwrap();
    let err = handles[1]
        .flip(&route, None, &versions[1], note("late"))
        .await
        .unwrap_err();
    assert!(matches!(err, TableError::Conflict { .. }), "{err}");

    // Four writers read the same pointer, then all flip with what they read.
    // The flips are sent one after another: moto's TransactWriteItems
    // restores a table snapshot on a failed condition without a lock, so
    // truly simultaneous transactions can undo each other there (real
    // DynamoDB serialises them). What is under test is our condition: it
    // lets exactly one flip from a stale read through.
    let mut reads = Vec::new();
    for table in &handles[1..] {
        reads.push(live_of(table, &route).await.unwrap());
    }
    assert!(
        reads.iter().all(|r| r == &reads[0]),
        "everyone read the same pointer"
    );
    let mut wins = 0;
    for ((table, read), version) in handles[1..].iter().zip(&reads).zip(&versions[1..]) {
        match table
            .flip(&route, read.as_ref(), version, note("racer"))
            .await
        {
            Ok(_) => wins += 1,
            Err(TableError::Conflict { .. }) => {}
            Err(other) => panic!("{other}"),
        }
    }
    assert_eq!(wins, 1, "exactly one of four flips from the same read wins");
    let table = DynamoRouteTable::new(aws.moto.dynamodb().await, TABLE);
    assert_eq!(
        table.history(&route).await.unwrap().len(),
        2,
        "only two changes were recorded"
    );
}

/// Counts the DynamoDB operations a client sends.
#[derive(Debug, Clone, Default)]
struct CountOperations(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl aws_sdk_dynamodb::config::Intercept for CountOperations {
    fn name(&self) -> &'static str {
        "CountOperations"
    }

    fn read_before_execution(
        &self,
        _context: &aws_sdk_dynamodb::config::interceptors::BeforeSerializationInterceptorContextRef<
            '_,
        >,
        _cfg: &mut aws_sdk_dynamodb::config::ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_batch_lookup_finds_the_most_specific_route() {
    let aws = Aws::start().await;
    let counter = CountOperations::default();
    let config = aws_sdk_dynamodb::config::Builder::from(&aws.moto.sdk_config().await)
        .interceptor(counter.clone())
        .build();
    let table = DynamoRouteTable::new(aws_sdk_dynamodb::Client::from_conf(config), TABLE);
    for (i, name) in ["/a", "/a/b", "h.example/a", "/z"].iter().enumerate() {
        let route = RouteName::parse(name).unwrap();
        let version = NewVersion {
            module: ModuleKey::for_bytes(&[i as u8]),
            actor: "t".into(),
            metadata: serde_json::json!({}),
            secrets: Default::default(),
            preview_token: None,
        };
        let version = table.add_version(&route, version).await.unwrap();
        let note = ChangeNote {
            actor: "t".into(),
            action: "deploy".into(),
            reason: None,
            from_version: None,
        };
        table.flip(&route, None, &version, note).await.unwrap();
    }
    // The deepest request yields the most candidates (66): still one batch.
    let deep = format!("/a/b{}", "/x".repeat(40));
    let cands = candidates(Some("h.example"), &deep);
    assert_eq!(cands.len(), 66);
    let before = counter.0.load(std::sync::atomic::Ordering::SeqCst);
    let found = table.lookup(&cands).await.unwrap();
    let operations = counter.0.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(operations, 1, "66 candidates, one BatchGetItem");
    let mut names: Vec<String> = found.iter().map(|p| p.route.to_string()).collect();
    names.sort();
    assert_eq!(names, ["/a", "/a/b", "h.example/a"]);
    let best = most_specific(&cands, found.iter().map(|p| (&p.route, p))).unwrap();
    assert_eq!(best.route.to_string(), "h.example/a");

    let cands = candidates(Some("other.example"), &deep);
    let found = table.lookup(&cands).await.unwrap();
    let best = most_specific(&cands, found.iter().map(|p| (&p.route, p))).unwrap();
    assert_eq!(best.route.to_string(), "/a/b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_backends_down_warm_routes_serve_and_a_cold_miss_is_503() {
    let mut aws = Aws::start().await;
    aws.cli_ok(&[
        "deploy",
        &aws.file("hello.wasm", HELLO),
        "--route",
        "/hello",
    ]);
    // Routes are read again every 300 ms; one server may serve them stale
    // for a minute, the other for 6 s (each read of the dead table takes up
    // to a second or two of SDK retries).
    let mut env = aws.env();
    env.push(("WASMGATE_STALE_MAX_MS", "60000".into()));
    let patient = ServeProcess::start(&aws.dir.path().join("unused"), 300, &env);
    let mut env = aws.env();
    env.push(("WASMGATE_STALE_MAX_MS", "6000".into()));
    let strict = ServeProcess::start(&aws.dir.path().join("unused"), 300, &env);
    for server in [&patient, &strict] {
        let warm = send(server.addr, "GET", "/hello", &[], bytes::Bytes::new()).await;
        assert_eq!(warm.status, 200);
    }
    // Read again just before the outage: both start it with a fresh read.
    tokio::time::sleep(Duration::from_millis(400)).await;
    for server in [&patient, &strict] {
        let warm = send(server.addr, "GET", "/hello", &[], bytes::Bytes::new()).await;
        assert_eq!(warm.status, 200);
    }

    aws.moto.kill();
    let outage = std::time::Instant::now();
    // Past the route TTL: every lookup now fails to reach DynamoDB.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for server in [&strict, &patient] {
        let warm = send(
            server.addr,
            "GET",
            "/hello",
            &[("x-request-id", "stale-1")],
            bytes::Bytes::new(),
        )
        .await;
        assert_eq!(
            warm.status,
            200,
            "a route read before the outage keeps serving: {}\n{}",
            warm.text(),
            server.log.lock().unwrap().join("\n")
        );
        let cold = send(server.addr, "GET", "/other", &[], bytes::Bytes::new()).await;
        assert_eq!(cold.status, 503, "{}", cold.text());
        assert_eq!(cold.headers["retry-after"], "1");
    }
    let stale_logged = eventually(Duration::from_secs(5), || async {
        !patient
            .log_lines_with(&["stale-1", "\"route_cache\":\"stale\""])
            .is_empty()
    })
    .await;
    assert!(stale_logged.is_some(), "{:?}", patient.log.lock().unwrap());

    // Past 6 s of staleness the strict server stops; the patient one goes on.
    let wait = Duration::from_millis(7_500).saturating_sub(outage.elapsed());
    tokio::time::sleep(wait).await;
    let expired = send(strict.addr, "GET", "/hello", &[], bytes::Bytes::new()).await;
    assert_eq!(
        expired.status,
        503,
        "stale for at most WASMGATE_STALE_MAX_MS: {}",
        expired.text()
    );
    let kept = send(patient.addr, "GET", "/hello", &[], bytes::Bytes::new()).await;
    assert_eq!(kept.status, 200, "{}", kept.text());
}

#[test]
fn aws_backend_without_bucket_or_table_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = wasmgate(dir.path())
        .env("WASMGATE_BACKEND", "aws")
        .arg("routes")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs WASMGATE_BUCKET"),
        "{}",
        stderr(&out)
    );
    let out = wasmgate(dir.path())
        .env("WASMGATE_BACKEND", "aws")
        .env("WASMGATE_BUCKET", "b")
        .arg("routes")
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("needs WASMGATE_TABLE"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_stored_apart_and_secret_refs_are_read_from_ssm_and_secrets_manager() {
    let aws = Aws::start().await;
    let config = aws.moto.sdk_config().await;
    aws_sdk_ssm::Client::new(&config)
        .put_parameter()
        .name("/prod/db-pass")
        .value("from-ssm")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();
    aws_sdk_secretsmanager::Client::new(&config)
        .create_secret()
        .name("prod/api")
        .secret_string("from-secrets-manager")
        .send()
        .await
        .unwrap();

    let probe = aws.file("probe.wasm", PROBE);
    let metadata = aws.file(
        "metadata.json",
        br#"{"bindings": [
            {"type": "secret_text", "name": "STORED", "text": "stored-secret"},
            {"type": "secret_text", "name": "DB_PASS", "secret_ref": "ssm:/prod/db-pass"},
            {"type": "secret_text", "name": "API", "secret_ref": "secretsmanager:prod/api"},
            {"type": "plain_text", "name": "GREETING", "text": "hi"}]}"#,
    );
    aws.cli_ok(&["deploy", &probe, "--route", "/p", "--metadata", &metadata]);

    // The version record and the live item name the secrets, never hold them.
    let dynamodb = aws.moto.dynamodb().await;
    let get = |rev: &'static str| {
        dynamodb
            .get_item()
            .table_name(TABLE)
            .key("route", AttributeValue::S("/p".into()))
            .key("rev", AttributeValue::S(rev.into()))
            .send()
    };
    let version = get("v00000001").await.unwrap().item.unwrap();
    let live = aws.live_item("/p").await;
    for item in [&version, &live] {
        let metadata = s(item, "metadata");
        assert!(metadata.contains("STORED"), "{metadata}");
        assert!(!metadata.contains("stored-secret"), "{metadata}");
    }
    let secrets = get("secret#v00000001").await.unwrap().item.unwrap();
    let values = secrets["values"].as_m().unwrap();
    assert_eq!(values["STORED"].as_s().unwrap(), "stored-secret");
    let history = aws.cli_ok(&["history", "/p"]);
    assert!(!history.contains("stored-secret"), "{history}");

    let server = aws.serve(200);
    let (status, body) = send_for_result(server.addr, "/p/env").await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    for expected in [
        "STORED=stored-secret\n",
        "DB_PASS=from-ssm\n",
        "API=from-secrets-manager\n",
        "GREETING=hi\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?}: {text}");
    }

    // A reference to a secret that does not exist: the deploy passes (the
    // server reads it), the request is a 502 that names no secret.
    let missing = aws.file(
        "missing.json",
        br#"{"bindings": [{"type": "secret_text", "name": "X", "secret_ref": "ssm:/nope"}]}"#,
    );
    aws.cli_ok(&["deploy", &probe, "--route", "/q", "--metadata", &missing]);
    let (status, body) = send_for_result(server.addr, "/q/env").await.unwrap();
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(!String::from_utf8_lossy(&body).contains("/nope"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previews_rollouts_and_auto_rollback_on_dynamodb() {
    let aws = Aws::start().await;
    let hello = aws.file("hello.wasm", HELLO);
    let probe = aws.file("probe.wasm", PROBE);
    aws.cli_ok(&["deploy", &hello, "--route", "/r", "--actor", "ops"]);
    let text = aws.cli_ok(&["deploy", &probe, "--route", "/r", "--preview"]);
    let token = text
        .split("x-wasmgate-preview: ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap_or_else(|| panic!("a preview token in {text}"))
        .to_string();

    // The preview copy is its own item, found in one read by its token.
    let dynamodb = aws.moto.dynamodb().await;
    let preview = dynamodb
        .get_item()
        .table_name(TABLE)
        .key("route", AttributeValue::S("/r".into()))
        .key("rev", AttributeValue::S(format!("preview#{token}")))
        .send()
        .await
        .unwrap()
        .item
        .expect("the preview item");
    assert_eq!(preview["version"].as_n().unwrap(), "2");

    let server = aws.serve(100);
    let get = |headers: Vec<(&'static str, String)>, path: &'static str| {
        let addr = server.addr;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            send(addr, "GET", path, &headers, bytes::Bytes::new()).await
        }
    };
    let live = get(vec![], "/r/echo").await;
    assert!(
        live.text().starts_with("Hello from wasmgate!"),
        "{}",
        live.text()
    );
    let previewed = get(vec![("x-wasmgate-preview", token.clone())], "/r/echo").await;
    assert!(
        previewed.text().contains("method: GET"),
        "{}",
        previewed.text()
    );
    assert!(!previewed.text().contains(&token));

    // A rollout with auto-rollback: the split is on the live item.
    aws.cli_ok(&[
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
        "--sticky-header",
        "X-User",
    ]);
    let item = aws.live_item("/r").await;
    assert_eq!(item["split_version"].as_n().unwrap(), "2");
    assert_eq!(item["split_percent"].as_n().unwrap(), "50");
    assert_eq!(s(&item, "split_sticky_header"), "x-user");
    assert_eq!(item["split_max_error_rate"].as_n().unwrap(), "5");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut failures = 0;
    for user in 0..120 {
        let reply = get(vec![("x-user", format!("u{user}"))], "/r/status?code=500").await;
        failures += usize::from(reply.status == 500);
    }
    assert!(failures >= 10, "the candidate got traffic: {failures}");
    tokio::time::sleep(Duration::from_millis(400)).await;
    for user in 0..40 {
        let reply = get(vec![("x-user", format!("u{user}"))], "/r/status?code=500").await;
        assert_eq!(reply.status, 200, "the rollout ended");
    }
    let item = aws.live_item("/r").await;
    assert!(!item.contains_key("split_id"), "{item:?}");
    let history: serde_json::Value =
        serde_json::from_str(&aws.cli_ok(&["history", "/r", "--json"])).unwrap();
    let actions: Vec<&str> = history["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["deploy", "rollout", "auto-rollback"], "{history}");
    assert_eq!(history["changes"][0]["actor"], "ops");

    // Promote the preview version: live, and still one read per lookup.
    aws.cli_ok(&["promote", "/r", "2"]);
    let item = aws.live_item("/r").await;
    assert_eq!(item["version"].as_n().unwrap(), "2");
    let preview = dynamodb
        .get_item()
        .table_name(TABLE)
        .key("route", AttributeValue::S("/r".into()))
        .key("rev", AttributeValue::S(format!("preview#{token}")))
        .send()
        .await
        .unwrap();
    assert!(
        preview.item.is_none(),
        "a live version's token stops working"
    );
}
