//! The Lambda front: real event JSON (API Gateway v1 and v2, ALB, Function
//! URL, a binary body) through the conversion, and the `wasmgate` binary run
//! as a Lambda bootstrap against a Runtime API on 127.0.0.1.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use wasmgate::front::lambda::to_gateway_request;

use crate::common::*;

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}.json", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn converted(event: &Value) -> (http::Request<wasmgate::body::Body>, Bytes) {
    let request = lambda_http::request::from_str(&event.to_string()).expect("a valid event");
    let (request, _info) = to_gateway_request(request);
    let (parts, body) = request.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        http::Request::from_parts(parts, wasmgate::body::empty()),
        body,
    )
}

#[tokio::test]
async fn api_gateway_v1_loses_its_stage_and_keeps_query_and_headers() {
    let event = fixture("apigw_v1_proxy_request");
    assert_eq!(event["requestContext"]["stage"], "test");
    let (request, body) = converted(&event).await;
    assert_eq!(
        request.uri().path(),
        "/hello",
        "the stage is not in the path"
    );
    assert_eq!(request.uri().query(), Some("name=me"));
    assert_eq!(request.method(), "GET");
    assert!(request.headers().contains_key("host"));
    assert!(body.is_empty());
}

#[tokio::test]
async fn api_gateway_v2_and_function_urls_keep_the_raw_query_and_text_body() {
    for name in ["apigw_v2_proxy_request", "lambda_function_url_request"] {
        let event = fixture(name);
        let (request, body) = converted(&event).await;
        assert_eq!(request.uri().path(), "/my/path", "{name}");
        assert_eq!(
            request.uri().query(),
            Some("parameter1=value1&parameter1=value2&parameter2=value"),
            "{name}"
        );
        if name == "apigw_v2_proxy_request" {
            assert_eq!(&body[..], b"Hello from Lambda");
            assert_eq!(request.headers()["header1"], "value1");
        }
    }
}

#[test]
fn the_client_address_comes_from_the_event() {
    for (name, expected) in [
        ("apigw_v1_proxy_request", "192.168.100.1"),
        ("apigw_v2_proxy_request", "IP"),
        ("lambda_function_url_request", "65.78.31.245"),
        ("alb_request", "72.21.198.66"),
    ] {
        let event = fixture(name).to_string();
        let request = lambda_http::request::from_str(&event).expect("a valid event");
        let (_, info) = to_gateway_request(request);
        assert_eq!(info.remote_addr.as_deref(), Some(expected), "{name}");
    }
}

#[tokio::test]
async fn alb_events_convert() {
    let (request, body) = converted(&fixture("alb_request")).await;
    assert_eq!(request.uri().path(), "/");
    assert_eq!(request.uri().query(), Some("myKey=val2"));
    assert_eq!(&body[..], b"request_body");
}

#[tokio::test]
async fn a_base64_body_arrives_as_bytes() {
    let (_, body) = converted(&fixture("apigw_v2_binary_request")).await;
    assert_eq!(&body[..], &[0x00, 0x01, 0x02, 0xff, 0xfe]);
}

/// The trace id the Runtime API hands out with every invocation.
const TRACE_ID: &str = "Root=1-5759e988-bd862e3fe1be46a994272793";

/// A Lambda Runtime API (the public 2018-06-01 interface) on 127.0.0.1:
/// hands out queued events and records what the runtime answers.
#[derive(Default)]
struct RuntimeApi {
    queue: Mutex<VecDeque<(String, Value, u128)>>,
    responses: Mutex<HashMap<String, (http::HeaderMap, Bytes)>>,
    errors: Mutex<Vec<(String, Bytes)>>,
}

impl RuntimeApi {
    async fn start() -> (Arc<Self>, std::net::SocketAddr) {
        let api = Arc::new(RuntimeApi::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let api = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let api = api.clone();
                        async move { Ok::<_, std::convert::Infallible>(api.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (api, addr)
    }

    fn push(&self, id: &str, event: Value) {
        self.push_with_deadline(id, event, 30_000);
    }

    /// Queues an event whose invocation ends `deadline_ms` after it is handed out.
    fn push_with_deadline(&self, id: &str, event: Value, deadline_ms: u128) {
        self.queue
            .lock()
            .unwrap()
            .push_back((id.to_string(), event, deadline_ms));
    }

    async fn handle(
        &self,
        request: hyper::Request<hyper::body::Incoming>,
    ) -> hyper::Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        if path == "/2018-06-01/runtime/invocation/next" {
            // Long poll: wait for an event.
            loop {
                let next = self.queue.lock().unwrap().pop_front();
                if let Some((id, event, deadline_ms)) = next {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        + deadline_ms;
                    return hyper::Response::builder()
                        .header("lambda-runtime-aws-request-id", id)
                        .header("lambda-runtime-deadline-ms", deadline.to_string())
                        .header(
                            "lambda-runtime-invoked-function-arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:wasmgate",
                        )
                        .header("lambda-runtime-trace-id", TRACE_ID)
                        .body(Full::new(Bytes::from(event.to_string())))
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let headers = request.headers().clone();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let parts: Vec<&str> = path.split('/').collect();
        match parts.as_slice() {
            ["", "2018-06-01", "runtime", "invocation", id, "response"] => {
                self.responses
                    .lock()
                    .unwrap()
                    .insert(id.to_string(), (headers, body));
            }
            ["", "2018-06-01", "runtime", "invocation", id, "error"] => {
                self.errors.lock().unwrap().push((id.to_string(), body));
            }
            _ => self.errors.lock().unwrap().push((path, body)),
        }
        hyper::Response::builder()
            .status(202)
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    async fn response(&self, id: &str) -> (http::HeaderMap, Bytes) {
        for _ in 0..600 {
            if let Some(found) = self.responses.lock().unwrap().remove(id) {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "no response for {id}; errors: {:?}",
            self.errors.lock().unwrap()
        );
    }
}

/// A data dir with the probe deployed at /probe (embedded default).
fn probe_deployed() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    cli_ok(
        &data,
        &["deploy", probe.to_str().unwrap(), "--route", "/probe"],
    );
    (dir, data)
}

/// `wasmgate` with no command, as Lambda's provided.al2023 starts `bootstrap`.
fn bootstrap(
    data: &std::path::Path,
    api: std::net::SocketAddr,
    extra: &[(&str, &str)],
) -> KillOnDrop {
    let child = wasmgate(data)
        .env("AWS_LAMBDA_RUNTIME_API", api.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "wasmgate")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_MAX_CONCURRENCY", "4")
        .envs(extra.iter().copied())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    KillOnDrop(child)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn v2_event(method: &str, path: &str, query: &str, body: Option<&[u8]>) -> Value {
    let mut event = fixture("apigw_v2_proxy_request");
    event["rawPath"] = json!(path);
    event["rawQueryString"] = json!(query);
    event["requestContext"]["http"]["path"] = json!(path);
    event["requestContext"]["http"]["method"] = json!(method);
    event["queryStringParameters"] = json!({});
    match body {
        Some(bytes) => {
            event["body"] = json!(base64::engine::general_purpose::STANDARD.encode(bytes));
            event["isBase64Encoded"] = json!(true);
        }
        None => {
            event["body"] = Value::Null;
            event["isBase64Encoded"] = json!(false);
        }
    }
    event
}

/// The body of a buffered Lambda HTTP response, decoded.
fn decoded_body(response: &Value) -> Vec<u8> {
    let body = response["body"].as_str().unwrap_or_default();
    if response["isBase64Encoded"] == json!(true) {
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    } else {
        body.as_bytes().to_vec()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_as_a_lambda_bootstrap_for_every_event_kind() {
    let (_dir, data) = probe_deployed();

    let (api, addr) = RuntimeApi::start().await;
    let _runtime = bootstrap(&data, addr, &[("WASMGATE_TIMEOUT_MS", "4000")]);

    let mut v1 = fixture("apigw_v1_proxy_request");
    v1["path"] = json!("/probe/echo");
    v1["requestContext"]["path"] = json!("/test/probe/echo");
    api.push("v1", v1);
    let mut alb = fixture("alb_request");
    alb["path"] = json!("/probe/echo");
    api.push("alb", alb);
    let mut url = fixture("lambda_function_url_request");
    url["rawPath"] = json!("/probe/big");
    url["rawQueryString"] = json!("bytes=1000");
    url["requestContext"]["http"]["path"] = json!("/probe/big");
    api.push("url", url);
    api.push(
        "binary",
        v2_event("POST", "/probe/echo", "x=1", Some(&[0, 1, 2, 0xff, 0xfe])),
    );
    api.push("trap", v2_event("GET", "/probe/trap", "", None));
    api.push("loop", v2_event("GET", "/probe/loop", "", None));
    api.push("missing", v2_event("GET", "/nothing/here", "", None));

    let json_of =
        |(_, body): (http::HeaderMap, Bytes)| -> Value { serde_json::from_slice(&body).unwrap() };

    let v1 = json_of(api.response("v1").await);
    assert_eq!(v1["statusCode"], 200, "{v1}");
    let text = String::from_utf8(decoded_body(&v1)).unwrap();
    assert!(
        text.contains("path: /probe/echo?name=me\n"),
        "no stage in the path: {text}"
    );

    let alb = json_of(api.response("alb").await);
    assert_eq!(alb["statusCode"], 200, "{alb}");
    let text = String::from_utf8(decoded_body(&alb)).unwrap();
    assert!(
        text.contains("path: /probe/echo?myKey=val2\n") && text.contains("body: request_body"),
        "{text}"
    );

    let url = json_of(api.response("url").await);
    assert_eq!(url["statusCode"], 200, "{url}");
    assert_eq!(
        url["isBase64Encoded"], true,
        "binary goes back base64: {url}"
    );
    let bytes = decoded_body(&url);
    assert_eq!(bytes.len(), 1000);
    assert!(
        bytes
            .chunks(16)
            .all(|c| c == &b"0123456789abcdef"[..c.len()])
    );

    let binary = json_of(api.response("binary").await);
    let text = String::from_utf8_lossy(&decoded_body(&binary)).into_owned();
    assert!(
        text.contains("method: POST\npath: /probe/echo?x=1\n"),
        "{text}"
    );
    assert!(
        text.contains("body-length: 5\n"),
        "the base64 body arrived as 5 bytes: {text}"
    );

    let trap = json_of(api.response("trap").await);
    assert_eq!(
        trap["statusCode"], 500,
        "a trap is an HTTP 500, not a failed invocation: {trap}"
    );
    let timeout = json_of(api.response("loop").await);
    assert_eq!(timeout["statusCode"], 504, "{timeout}");
    let missing = json_of(api.response("missing").await);
    assert_eq!(missing["statusCode"], 404, "{missing}");
    assert!(
        api.errors.lock().unwrap().is_empty(),
        "no invocation failed: {:?}",
        api.errors.lock().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_stream_mode_streams_the_prelude_then_the_body() {
    let (_dir, data) = probe_deployed();
    let (api, addr) = RuntimeApi::start().await;
    let _runtime = bootstrap(
        &data,
        addr,
        &[("WASMGATE_LAMBDA_INVOKE_MODE", "response-stream")],
    );

    let size = 3 * 1024 * 1024;
    let mut url = fixture("lambda_function_url_request");
    url["rawPath"] = json!("/probe/big");
    url["rawQueryString"] = json!(format!("bytes={size}"));
    url["requestContext"]["http"]["path"] = json!("/probe/big");
    api.push("stream", url);

    let (headers, body) = api.response("stream").await;
    assert_eq!(
        headers["lambda-runtime-function-response-mode"],
        "streaming"
    );
    let split = body
        .windows(8)
        .position(|w| w == [0u8; 8])
        .expect("prelude separator");
    let prelude: Value = serde_json::from_slice(&body[..split]).unwrap();
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    let payload = &body[split + 8..];
    assert_eq!(payload.len(), size);
    assert!(
        payload
            .chunks(16)
            .all(|c| c == &b"0123456789abcdef"[..c.len()])
    );
}

#[tokio::test]
async fn a_path_with_a_space_is_percent_encoded_not_rerouted() {
    let mut event = fixture("apigw_v1_proxy_request");
    event["path"] = json!("/probe/a b/caf\u{e9}");
    let (request, _) = converted(&event).await;
    assert_eq!(request.uri().path(), "/probe/a%20b/caf%C3%A9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_deadline_stays_inside_the_invocation_deadline() {
    let (_dir, data) = probe_deployed();
    let (api, addr) = RuntimeApi::start().await;
    // WASMGATE_TIMEOUT_MS is the default 30 s, but this invocation has 1.5 s.
    let _runtime = bootstrap(&data, addr, &[]);
    let started = std::time::Instant::now();
    api.push_with_deadline("short", v2_event("GET", "/probe/loop", "", None), 1_500);
    let (_, body) = api.response("short").await;
    let took = started.elapsed();
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(response["statusCode"], 504, "{response}");
    assert!(
        took < Duration::from_millis(1_500),
        "answered before the invocation ended: {took:?}"
    );
    assert!(api.errors.lock().unwrap().is_empty());
}

/// Events that are not HTTP events, or that lambda_http cannot turn into a
/// request, in both invoke modes: each is answered with a 400, the runtime
/// stays up, and the next event is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_event_is_a_400_and_the_runtime_goes_on() {
    let (_dir, data) = probe_deployed();
    for mode in ["buffered", "response-stream"] {
        let (api, addr) = RuntimeApi::start().await;
        let _runtime = bootstrap(&data, addr, &[("WASMGATE_LAMBDA_INVOKE_MODE", mode)]);

        api.push("not-http", json!({"hello": "world"}));
        api.push("array", json!([1, 2, 3]));
        let mut bad_host = v2_event("GET", "/probe/echo", "", None);
        bad_host["headers"]["host"] = json!("bad host");
        api.push("bad-host", bad_host);
        api.push("bad-query", v2_event("GET", "/probe/echo", "a b=c d", None));
        api.push("ok", v2_event("GET", "/probe/echo", "", None));

        // Buffered: the JSON reply; streamed: the prelude before the 8 zero bytes.
        let status_and_body = |(_, body): (http::HeaderMap, Bytes)| -> (Value, String) {
            if mode == "buffered" {
                let reply: Value = serde_json::from_slice(&body).unwrap();
                let text = String::from_utf8(decoded_body(&reply)).unwrap();
                (reply["statusCode"].clone(), text)
            } else {
                let split = body.windows(8).position(|w| w == [0u8; 8]).unwrap();
                let prelude: Value = serde_json::from_slice(&body[..split]).unwrap();
                let text = String::from_utf8_lossy(&body[split + 8..]).into_owned();
                (prelude["statusCode"].clone(), text)
            }
        };
        for id in ["not-http", "array", "bad-query"] {
            let (status, text) = status_and_body(api.response(id).await);
            assert_eq!(status, 400, "{mode} {id}: {text}");
            assert!(
                text.contains("400 Bad Request") && text.contains(&format!("request id: {id}")),
                "{mode} {id}: {text}"
            );
        }
        let (status, text) = status_and_body(api.response("ok").await);
        assert_eq!(status, 200, "{mode}: {text}");
        assert!(text.contains("path: /probe/echo"), "{mode}: {text}");
        // A Host that is no host name is left out (the trigger would never
        // send one): the any-host routes serve the event.
        let (status, text) = status_and_body(api.response("bad-host").await);
        assert_eq!(status, 200, "{mode}: {text}");
        assert!(
            text.contains("spin-full-url: https://id.execute-api.us-east-1.amazonaws.com/"),
            "{mode}: the domainName instead: {text}"
        );
        assert!(
            api.errors.lock().unwrap().is_empty(),
            "{mode}: no invocation failed: {:?}",
            api.errors.lock().unwrap()
        );
    }
}

/// On Lambda every request writes one CloudWatch EMF line to stdout, and
/// the first request of the process is its cold start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_invocation_writes_an_emf_metrics_line() {
    use std::io::BufRead as _;
    let (_dir, data) = probe_deployed();
    let (api, addr) = RuntimeApi::start().await;
    let mut child = wasmgate(&data)
        .env("AWS_LAMBDA_RUNTIME_API", addr.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "wasmgate-emf")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("WASMGATE_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            sink.lock().unwrap().push(line);
        }
    });
    let _runtime = KillOnDrop(child);

    api.push("emf-1", v2_event("GET", "/probe/echo", "", None));
    api.push("emf-2", v2_event("GET", "/probe/trap", "", None));
    api.response("emf-1").await;
    api.response("emf-2").await;
    let emf = |id: &str| -> Option<Value> {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("\"_aws\""))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == id)
    };
    for _ in 0..100 {
        if emf("emf-2").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = emf("emf-1").expect("an EMF line for emf-1");
    let declared = &first["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(declared["Namespace"], "wasmgate");
    assert_eq!(declared["Dimensions"], json!([["FunctionName"]]));
    assert_eq!(first["FunctionName"], "wasmgate-emf");
    assert_eq!(first["Requests"], 1);
    assert_eq!(first["Errors"], 0);
    assert_eq!(first["ColdStart"], 1, "{first}");
    assert_eq!(first["ModuleCacheMiss"], 1, "{first}");
    assert!(first["_aws"]["Timestamp"].as_u64().unwrap() > 1_600_000_000_000);
    let second = emf("emf-2").expect("an EMF line for emf-2");
    assert_eq!(second["Errors"], 1, "a trap is an error: {second}");
    assert_eq!(second["ColdStart"], 0);
    assert_eq!(second["ModuleCacheHit"], 1, "{second}");
}

/// The 34 request events of aws-lambda-rust-runtime's own tests
/// (tests/data/lambda-events/, see SOURCES.txt there) through the real
/// bootstrap, against the probe on `/` for every host: each is served, and
/// the guest sees what the event says (expected.json, per event: method,
/// path, query, every header value in order, body) in the response shape of
/// its trigger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_peer_request_event_is_served_as_it_says() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    cli_ok(&data, &["deploy", probe.to_str().unwrap(), "--route", "/"]);
    let (api, addr) = RuntimeApi::start().await;
    let _runtime = bootstrap(&data, addr, &[]);

    let events = format!("{}/tests/data/lambda-events", env!("CARGO_MANIFEST_DIR"));
    let expected: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(format!("{events}/expected.json")).unwrap())
            .unwrap();
    assert_eq!(expected.len(), 34, "one expectation per event");
    for name in expected.keys() {
        let event: Value =
            serde_json::from_str(&std::fs::read_to_string(format!("{events}/{name}")).unwrap())
                .unwrap();
        api.push(name, event);
    }
    let mut failures = Vec::new();
    for (name, want) in &expected {
        let (_, body) = api.response(name).await;
        let reply: Value = serde_json::from_slice(&body).unwrap();
        if let Err(why) = check_peer_reply(want, &reply) {
            failures.push(format!("{name}: {why}\n  reply: {reply}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 34 events:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(api.errors.lock().unwrap().is_empty());
}

/// What the probe's echo says of the request, parsed.
struct Echo {
    method: String,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
    body: String,
}

fn parse_echo(text: &str) -> Option<Echo> {
    let method = text.strip_prefix("method: ")?.lines().next()?.to_string();
    let target = text.lines().nth(1)?.strip_prefix("path: ")?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    let headers = text
        .lines()
        .filter_map(|l| l.strip_prefix("header: "))
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    let body = text
        .split_once("\nbody: ")?
        .1
        .strip_suffix('\n')?
        .to_string();
    Some(Echo {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn check_peer_reply(want: &Value, reply: &Value) -> Result<(), String> {
    if reply["statusCode"] != 200 {
        return Err(format!("status {}", reply["statusCode"]));
    }
    // The response in the shape the trigger takes back.
    let content_type = match want["trigger"].as_str().unwrap() {
        "v1" => {
            // REST: all headers in multiValueHeaders, `headers` empty.
            if reply["headers"].as_object().is_some_and(|h| !h.is_empty()) {
                return Err("a REST response carries its headers in multiValueHeaders".into());
            }
            reply["multiValueHeaders"]["content-type"][0].clone()
        }
        "v2" => {
            if !reply["cookies"].is_array() {
                return Err("an HTTP API response has a cookies list".into());
            }
            reply["headers"]["content-type"].clone()
        }
        "alb" => {
            if reply["statusDescription"] != "200 OK" {
                return Err("an ALB response has its statusDescription".into());
            }
            if reply["multiValueHeaders"]["content-type"][0] != reply["headers"]["content-type"] {
                return Err("an ALB response has both header forms".into());
            }
            reply["headers"]["content-type"].clone()
        }
        other => panic!("trigger {other}"),
    };
    if content_type != "text/plain; charset=utf-8" {
        return Err(format!("content type {content_type}"));
    }
    let text = String::from_utf8(decoded_body(reply)).map_err(|e| e.to_string())?;
    let echo = parse_echo(&text).ok_or_else(|| format!("not an echo: {text}"))?;
    if echo.method != want["method"] {
        return Err(format!("method {}", echo.method));
    }
    if echo.path != want["path"] {
        return Err(format!("path {}", echo.path));
    }
    match (&want["query"], &want["query_pairs"]) {
        (Value::String(raw), _) => {
            let got = echo.query.clone().unwrap_or_default();
            if &got != raw {
                return Err(format!("query {got:?}"));
            }
        }
        (_, Value::Array(pairs)) => {
            // REST and ALB events give parameters, not the raw query: the
            // same parameters, each name's values in order.
            let got: Vec<(String, String)> =
                form_urlencoded::parse(echo.query.clone().unwrap_or_default().as_bytes())
                    .into_owned()
                    .collect();
            let want: Vec<(String, String)> = pairs
                .iter()
                .map(|p| (p[0].as_str().unwrap().into(), p[1].as_str().unwrap().into()))
                .collect();
            let by_name = |pairs: &[(String, String)]| {
                let mut map = std::collections::BTreeMap::<String, Vec<String>>::new();
                for (k, v) in pairs {
                    map.entry(k.clone()).or_default().push(v.clone());
                }
                map
            };
            if by_name(&got) != by_name(&want) {
                return Err(format!("query parameters {got:?}"));
            }
        }
        _ => panic!("no query expectation"),
    }
    // wasi:http hands a guest the host as the request's authority, never
    // as a header (`host` is one it forbids): the route header
    // `spin-full-url` shows it, `localhost` for an event without one.
    let want_host = want["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "host")
        .map_or("localhost", |h| h[1].as_str().unwrap());
    let full_url = echo
        .headers
        .iter()
        .find(|(n, _)| n == "spin-full-url")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let authority = full_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .unwrap_or_default();
    // A Host that is no authority (a fixture's `{dns_suffix}` placeholder)
    // reaches the guest as `localhost` too.
    let want_host = if want_host.parse::<http::uri::Authority>().is_ok() {
        want_host
    } else {
        "localhost"
    };
    if !authority.eq_ignore_ascii_case(want_host) {
        return Err(format!("authority {authority:?}, not {want_host:?}"));
    }
    let mut names: Vec<&str> = want["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h[0].as_str().unwrap())
        // What wasi:http keeps from a guest: hop-by-hop headers and `host`.
        .filter(|name| {
            ![
                "host",
                "connection",
                "keep-alive",
                "proxy-connection",
                "transfer-encoding",
                "upgrade",
                "http2-settings",
            ]
            .contains(name)
        })
        .collect();
    names.dedup();
    for name in names {
        let want_values: Vec<&str> = if name == "x-amzn-trace-id" {
            // Lambda's own: the invocation's trace id replaces the event's.
            vec![TRACE_ID]
        } else {
            want["headers"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|h| h[0] == name)
                .map(|h| h[1].as_str().unwrap())
                .collect()
        };
        let got: Vec<&str> = echo
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        if got != want_values {
            return Err(format!("header {name}: {got:?}, not {want_values:?}"));
        }
    }
    if echo.body != want["body"] {
        return Err(format!("body {:?}", echo.body));
    }
    Ok(())
}

/// API Gateway REST sends every header in `multiValueHeaders` and again,
/// with its last value, in `headers`: all values reach the guest, in order.
#[tokio::test]
async fn every_value_of_a_repeated_rest_header_reaches_the_guest() {
    let mut event = fixture("apigw_v1_proxy_request");
    event["headers"]["Accept"] = json!("text/html");
    event["multiValueHeaders"] = json!({
        "Accept": ["application/json", "text/html"],
        "Host": ["example.com"],
        "X-Forwarded-Proto": ["https"],
    });
    event["headers"]["Host"] = json!("example.com");
    let request = wasmgate::front::lambda::parse_event(event.to_string().as_bytes()).unwrap();
    let (request, _) = to_gateway_request(request);
    let accept: Vec<_> = request.headers().get_all("accept").iter().collect();
    assert_eq!(accept, ["application/json", "text/html"]);
    assert_eq!(request.headers().get_all("host").iter().count(), 1);
    // The other headers of `headers` (not in multiValueHeaders) stay.
    assert!(
        request.headers().len() > 3,
        "{:?}",
        request.headers().keys()
    );
}

/// lambda_http 1.3.2 itself keeps only the last value of a REST header that
/// is in both `headers` and `multiValueHeaders`: wasmgate works around it
/// (`keep_multi_value_headers`). When this fails, lambda_http has changed:
/// the workaround can go.
#[test]
fn lambda_http_alone_keeps_only_the_last_value_of_a_rest_header() {
    let mut event = fixture("apigw_v1_proxy_request");
    event["headers"]["Accept"] = json!("text/html");
    event["multiValueHeaders"] = json!({"Accept": ["application/json", "text/html"]});
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let accept: Vec<_> = request.headers().get_all("accept").iter().collect();
    assert_eq!(accept, ["text/html"]);
}

/// An ALB health check and the console's test events carry no Host: the
/// any-host routes serve them, and a route for a named host does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_without_a_host_reach_the_any_host_routes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let probe = write_file(dir.path(), "probe.wasm", PROBE);
    let hello = write_file(dir.path(), "hello.wasm", HELLO);
    cli_ok(
        &data,
        &["deploy", probe.to_str().unwrap(), "--route", "/v1"],
    );
    cli_ok(
        &data,
        &[
            "deploy",
            hello.to_str().unwrap(),
            "--route",
            "named.example/",
        ],
    );
    let (api, addr) = RuntimeApi::start().await;
    let _runtime = bootstrap(&data, addr, &[]);
    let peer = |name: &str| -> Value {
        let path = format!(
            "{}/tests/data/lambda-events/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    api.push("alb", peer("alb_no_host"));
    let mut rest = peer("apigw_no_host");
    rest["path"] = json!("/elsewhere");
    api.push("rest", rest);
    let alb: Value = serde_json::from_slice(&api.response("alb").await.1).unwrap();
    assert_eq!(alb["statusCode"], 200, "{alb}");
    let text = String::from_utf8(decoded_body(&alb)).unwrap();
    assert!(text.contains("path: /v1/health/\n"), "{text}");
    assert!(
        text.contains("header: spin-full-url: https://localhost/v1/health/\n"),
        "{text}"
    );
    // No any-host route for /elsewhere: a 404, not a 400, and never the
    // named host's route.
    let rest: Value = serde_json::from_slice(&api.response("rest").await.1).unwrap();
    assert_eq!(rest["statusCode"], 404, "{rest}");
}
