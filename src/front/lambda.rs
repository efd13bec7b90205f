//! The Lambda front (feature `lambda`): API Gateway REST (v1) and HTTP API
//! (v2), ALB and Function URL events become plain `http` requests for the
//! [`Gateway`], and its responses go back as Lambda expects. It translates,
//! nothing else: routing, limits and errors are the gateway's.
//!
//! - The path is the one the client asked for: the REST API stage is not in it.
//! - Binary bodies round-trip: base64 in the event becomes bytes for the
//!   guest, and a non-text response goes back base64-encoded.
//! - Every failure is an HTTP response (404, 500, 504...), never a failed
//!   invocation. The guest's deadline is kept short of the invocation's.
//! - Invocations are served concurrently where Lambda sends them
//!   (`AWS_LAMBDA_MAX_CONCURRENCY`, Lambda Managed Instances), by one shared
//!   gateway; `WASMGATE_LAMBDA_INVOKE_MODE=response-stream` streams responses
//!   (Function URLs with `InvokeMode: RESPONSE_STREAM`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use lambda_http::lambda_runtime::{MetadataPrelude, StreamResponse};
use lambda_http::request::LambdaRequest;
use lambda_http::{Body as LambdaBody, LambdaEvent, RequestExt, Service, service_fn};
use serde::Deserialize;
use std::panic::AssertUnwindSafe;

use crate::body::{self, Body};
use crate::error::GatewayError;
use crate::gateway::{Gateway, HostPolicy, REQUEST_ID_HEADER, RequestInfo};

/// How responses go back to Lambda.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InvokeMode {
    /// The whole response in one reply (API Gateway, ALB, Function URLs in BUFFERED mode).
    Buffered,
    /// Streamed as the guest writes it (Function URLs with `InvokeMode: RESPONSE_STREAM`).
    ResponseStream,
}

/// Kept back from the invocation deadline, so the answer (a 504 at worst)
/// reaches Lambda before Lambda ends the invocation.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(300);

/// Largest body a buffered response may carry: Lambda caps the payload at
/// 6 MB, and binary bodies grow by a third in base64.
const MAX_BUFFERED_BODY: usize = 4 * 1024 * 1024;

/// Runs the Lambda runtime loop until the runtime API goes away. Fails only
/// when the runtime cannot start (e.g. `AWS_LAMBDA_RUNTIME_API` unreachable).
///
/// Every event gets an HTTP answer: one that is not an API Gateway, ALB or
/// Function URL event, or that cannot become an HTTP request, is a 400, so
/// a stray test invoke or a fuzzed payload never fails the invocation.
pub async fn run(gateway: Arc<Gateway>, mode: InvokeMode) -> Result<(), lambda_http::Error> {
    match mode {
        InvokeMode::Buffered => {
            let adapter = lambda_http::Adapter::from(service_fn(move |request| {
                let gateway = gateway.clone();
                async move { Ok::<_, Infallible>(buffered(&gateway, request).await) }
            }));
            let service = service_fn(move |event: LambdaEvent<Event>| {
                let mut adapter = adapter.clone();
                async move {
                    let LambdaEvent { payload, context } = event;
                    let request = match payload {
                        Event::Http(mut request) => {
                            prepare_event(&mut request);
                            *request
                        }
                        Event::Malformed(why) => {
                            return Ok(Reply::Raw(malformed_reply(&context, &why).await));
                        }
                    };
                    // The adapter turns the event into a request before it
                    // returns a future; lambda_http panics on an event whose
                    // URI cannot be built.
                    let call =
                        converting(|| adapter.call(LambdaEvent::new(request, context.clone())));
                    match call {
                        Ok(future) => future.await.map(Reply::Http),
                        Err(_) => Ok(Reply::Raw(malformed_reply(&context, UNCONVERTIBLE).await)),
                    }
                }
            });
            lambda_http::lambda_runtime::run_concurrent(service).await
        }
        InvokeMode::ResponseStream => {
            let service = service_fn(move |event: LambdaEvent<Event>| {
                let gateway = gateway.clone();
                async move {
                    let LambdaEvent { payload, context } = event;
                    let response = match payload {
                        Event::Http(request) => match to_http(*request) {
                            Ok(mut request) => {
                                if let Some(trace) = context.xray_trace_id.as_deref()
                                    && let Ok(value) = HeaderValue::from_str(trace)
                                {
                                    request.headers_mut().insert("x-amzn-trace-id", value);
                                }
                                streamed(&gateway, request.with_lambda_context(context)).await
                            }
                            Err(why) => malformed_response(&context, &why).map(EndOnError::new),
                        },
                        Event::Malformed(why) => {
                            malformed_response(&context, &why).map(EndOnError::new)
                        }
                    };
                    Ok::<_, Infallible>(stream_response(response))
                }
            });
            lambda_http::lambda_runtime::run_concurrent(service).await
        }
    }
}

const UNCONVERTIBLE: &str = "the event cannot be turned into an HTTP request (a bad path or query, or a body marked base64 that is not)";

/// An invocation payload: an HTTP event from API Gateway (v1 or v2), an ALB
/// or a Function URL, or why it is none of them.
pub enum Event {
    Http(Box<LambdaRequest>),
    Malformed(String),
}

impl<'de> Deserialize<'de> for Event {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
        Ok(match serde_json::from_str::<LambdaRequest>(raw.get()) {
            Ok(request) => Event::Http(Box::new(request)),
            Err(error) => Event::Malformed(error.to_string()),
        })
    }
}

/// Parses an invocation payload into the request lambda_http would make of
/// it, or says why it is not an HTTP event. Never panics.
pub fn parse_event(payload: &[u8]) -> Result<lambda_http::Request, String> {
    let request =
        serde_json::from_slice::<LambdaRequest>(payload).map_err(|error| error.to_string())?;
    to_http(request)
}

/// lambda_http's conversion, which panics on an event whose URI it cannot
/// build: that is a malformed event, answered, not a failed invocation.
fn to_http(mut request: LambdaRequest) -> Result<lambda_http::Request, String> {
    prepare_event(&mut request);
    converting(|| lambda_http::Request::from(request)).map_err(|()| UNCONVERTIBLE.to_string())
}

thread_local! {
    static CONVERTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs lambda_http's event conversion, catching the panic it raises on an
/// event it cannot convert.
fn converting<T>(convert: impl FnOnce() -> T) -> Result<T, ()> {
    CONVERTING.with(|c| c.set(true));
    let result = std::panic::catch_unwind(AssertUnwindSafe(convert));
    CONVERTING.with(|c| c.set(false));
    result.map_err(|_| ())
}

/// Whether this thread is inside lambda_http's event conversion, where a
/// panic means a malformed event (answered 400), not a bug: the panic hook
/// logs it quietly.
pub fn in_event_conversion() -> bool {
    CONVERTING.with(|c| c.get())
}

/// What wasmgate changes in an event before lambda_http converts it: the
/// path's delimiters escaped ([`escape_path`]) and every value of a
/// repeated header kept ([`keep_multi_value_headers`]).
fn prepare_event(request: &mut LambdaRequest) {
    escape_path(request);
    keep_multi_value_headers(request);
    drop_unusable_hosts(request);
}

/// Leaves out a `Host` header or `requestContext.domainName` that is no
/// host name (a trigger never sends one; a hand-written test event may:
/// the docs' `{dns_suffix}` placeholder). lambda_http would panic building
/// the URI from it; without it the event goes to the any-host routes.
fn drop_unusable_hosts(request: &mut LambdaRequest) {
    fn check(headers: &mut http::HeaderMap) {
        let unusable = headers
            .get(header::HOST)
            .is_some_and(|v| !v.to_str().is_ok_and(crate::gateway::valid_host_header));
        if unusable {
            headers.remove(header::HOST);
        }
    }
    fn check_name(name: &mut Option<String>) {
        if name
            .as_deref()
            .is_some_and(|n| !crate::gateway::valid_host_header(n) && !n.starts_with("*."))
        {
            *name = None;
        }
    }
    match request {
        LambdaRequest::ApiGatewayV1(event) => {
            check(&mut event.headers);
            check(&mut event.multi_value_headers);
            check_name(&mut event.request_context.domain_name);
        }
        LambdaRequest::ApiGatewayV2(event) => {
            check(&mut event.headers);
            check_name(&mut event.request_context.domain_name);
        }
        LambdaRequest::Alb(event) => {
            check(&mut event.headers);
            check(&mut event.multi_value_headers);
        }
        _ => {}
    }
}

/// API Gateway REST APIs (and ALBs with multi-value headers on) send each
/// header in `multiValueHeaders` with all its values, and REST APIs also in
/// `headers` with its last one. lambda_http 1.3.2 takes `multiValueHeaders`
/// and then `extend`s it with `headers`, which replaces every value of a
/// name by the last: `Accept: a` + `Accept: b` would reach the guest as `b`.
/// Dropping from `headers` each name `multiValueHeaders` has (but `Host`)
/// keeps them all, in order. (`lambda_http_alone_keeps_only_the_last_value` in the tests
/// fails when lambda_http fixes this, so this can go then.)
fn keep_multi_value_headers(request: &mut LambdaRequest) {
    fn keep(headers: &mut http::HeaderMap, multi: &http::HeaderMap) {
        if multi.is_empty() {
            return;
        }
        // `Host` stays: lambda_http builds the URI from it, and a request
        // has one.
        for name in multi.keys().filter(|name| *name != header::HOST) {
            headers.remove(name);
        }
    }
    match request {
        LambdaRequest::ApiGatewayV1(event) => {
            keep(&mut event.headers, &event.multi_value_headers);
        }
        LambdaRequest::Alb(event) => keep(&mut event.headers, &event.multi_value_headers),
        _ => {}
    }
}

/// Escapes what would end the event's path when lambda_http builds the URI
/// from it: `?` and `#` (a `/a%3Fadmin=1` must not reach the guest as `/a`
/// with the query `admin=1`), and a `%` that does not start an escape.
/// Whether a trigger hands over the path decoded or as sent differs between
/// API Gateway's REST and HTTP APIs, ALBs and Function URLs; this is right
/// for both: an escape already there is kept, a character that can only be
/// there decoded is escaped.
fn escape_path(request: &mut LambdaRequest) {
    fn escape(path: &mut Option<String>) {
        let Some(raw) = path.as_mut() else { return };
        if !raw.contains(['?', '#', '%']) {
            return;
        }
        *raw = escape_delimiters(raw);
    }
    match request {
        LambdaRequest::ApiGatewayV1(event) => escape(&mut event.path),
        LambdaRequest::ApiGatewayV2(event) => escape(&mut event.raw_path),
        LambdaRequest::Alb(event) => escape(&mut event.path),
        _ => {}
    }
}

/// `?` and `#` escaped, and each `%` not followed by two hex digits.
fn escape_delimiters(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = String::with_capacity(raw.len() + 8);
    for (i, c) in raw.char_indices() {
        match c {
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            '%' if !starts_escape(&bytes[i..]) => out.push_str("%25"),
            c => out.push(c),
        }
    }
    out
}

/// Whether `bytes` begins with `%XX`, XX two hex digits.
fn starts_escape(bytes: &[u8]) -> bool {
    bytes.len() >= 3 && bytes[1].is_ascii_hexdigit() && bytes[2].is_ascii_hexdigit()
}

/// Drops header values a Lambda HTTP response cannot carry: the response
/// is JSON, and aws_lambda_events fails to serialise a value that is not
/// UTF-8, which would fail the invocation instead of answering it.
fn drop_non_utf8_headers(headers: &mut http::HeaderMap, request_id: &str) {
    let bad: Vec<http::HeaderName> = headers
        .iter()
        .filter(|(_, value)| value.to_str().is_err())
        .map(|(name, _)| name.clone())
        .collect();
    for name in bad {
        tracing::warn!(request_id = %request_id, header = %name, "dropped a response header whose value is not UTF-8 (a Lambda response is JSON)");
        let kept: Vec<HeaderValue> = headers
            .get_all(&name)
            .iter()
            .filter(|v| v.to_str().is_ok())
            .cloned()
            .collect();
        headers.remove(&name);
        for value in kept {
            headers.append(name.clone(), value);
        }
    }
}

/// What the buffered runtime posts back: lambda_http's response for the
/// event's trigger, or a plain 400 for a malformed event.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Reply<R> {
    Http(R),
    Raw(serde_json::Value),
}

/// The 400 for a malformed event, as the JSON every HTTP trigger accepts
/// (buffered mode): the same answer as [`malformed_response`].
async fn malformed_reply(context: &lambda_http::Context, why: &str) -> serde_json::Value {
    let (parts, body) = malformed_response(context, why).into_parts();
    let text = collect_limited(body, MAX_BUFFERED_BODY)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.into())))
        .collect();
    serde_json::json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "isBase64Encoded": false,
        "body": text,
    })
}

/// The 400 for a malformed event: the gateway's error response (error.rs
/// decides status and text), tagged with the invocation's request id.
fn malformed_response(context: &lambda_http::Context, why: &str) -> http::Response<Body> {
    tracing::warn!(request_id = %context.request_id, reason = %why, "malformed Lambda event");
    let mut response = GatewayError::BadRequest(format!(
        "not an API Gateway, ALB or Function URL event: {why}"
    ))
    .into_response(&context.request_id);
    if let Ok(value) = HeaderValue::from_str(&context.request_id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// A response as Lambda's streaming protocol wants it: status, headers and
/// cookies in the prelude, then the body's bytes.
fn stream_response(response: http::Response<EndOnError>) -> StreamResponse<BodyBytes> {
    let (parts, body) = response.into_parts();
    let mut headers = parts.headers;
    let cookies = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|c| String::from_utf8_lossy(c.as_bytes()).into_owned())
        .collect();
    headers.remove(header::SET_COOKIE);
    StreamResponse {
        metadata_prelude: MetadataPrelude {
            status_code: parts.status,
            headers,
            cookies,
        },
        stream: BodyBytes(body),
    }
}

/// A response body as the stream of byte chunks the runtime sends.
pub struct BodyBytes(EndOnError);

impl futures::Stream for BodyBytes {
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match std::task::ready!(Pin::new(&mut self.0).poll_frame(cx)) {
                None => return Poll::Ready(None),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                Some(Err(never)) => match never {},
            }
        }
    }
}

/// Serves one event and returns the whole response (buffered mode).
pub async fn buffered(
    gateway: &Gateway,
    request: lambda_http::Request,
) -> http::Response<LambdaBody> {
    let (request, info) = to_gateway_request(request);
    let request_id = info.request_id.clone().unwrap_or_default();
    let response = gateway.handle(request, info).await;
    let (mut parts, body) = response.into_parts();
    drop_non_utf8_headers(&mut parts.headers, &request_id);
    match collect_limited(body, MAX_BUFFERED_BODY).await {
        Ok(bytes) => {
            // lambda_http treats a response without a content type as text and
            // would mangle binary bytes: name them.
            if !parts.headers.contains_key(header::CONTENT_TYPE)
                && std::str::from_utf8(&bytes).is_err()
            {
                parts.headers.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
            }
            let body = to_lambda_body(bytes, &parts_content_type(&parts));
            http::Response::from_parts(parts, body)
        }
        Err(why) => {
            tracing::warn!(request_id = %request_id, "{why}");
            let mut response = http::Response::new(LambdaBody::Text(format!(
                "502 Bad Gateway: {why}\nrequest id: {request_id}\n"
            )));
            *response.status_mut() = http::StatusCode::BAD_GATEWAY;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    }
}

/// The whole body, or why not: too large for a buffered response, or the
/// function failed while writing it.
async fn collect_limited(mut body: Body, max: usize) -> Result<Bytes, String> {
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| format!("the function failed while writing its response: {e}"))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > max {
                return Err(
                    "the response is larger than a buffered Lambda response may be (6 MB); \
                     use a Function URL with InvokeMode RESPONSE_STREAM and \
                     WASMGATE_LAMBDA_INVOKE_MODE=response-stream"
                        .to_string(),
                );
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(collected.freeze())
}

/// Serves one request and streams the response (response-stream mode).
pub async fn streamed(
    gateway: &Gateway,
    request: lambda_http::Request,
) -> http::Response<EndOnError> {
    let (request, info) = to_gateway_request(request);
    gateway.handle(request, info).await.map(EndOnError::new)
}

fn parts_content_type(parts: &http::response::Parts) -> String {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// Text bodies stay text; everything else is binary (and base64 on the wire).
fn to_lambda_body(bytes: Bytes, content_type: &str) -> LambdaBody {
    if bytes.is_empty() {
        return LambdaBody::Empty;
    }
    let textual = content_type.is_empty()
        || content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/javascript")
        || content_type.starts_with("application/xml");
    match (textual, String::from_utf8(bytes.to_vec())) {
        (true, Ok(text)) => LambdaBody::Text(text),
        _ => LambdaBody::Binary(bytes.to_vec()),
    }
}

/// An event, as the gateway sees it: the client's path (without the REST API
/// stage) and query, its headers and body bytes, plus the invocation's
/// request id and deadline.
pub fn to_gateway_request(request: lambda_http::Request) -> (http::Request<Body>, RequestInfo) {
    let path = encode_path(request.raw_http_path());
    let context = request.lambda_context_ref().cloned();
    let remote_addr = source_ip(&request);
    let (mut parts, body) = request.into_parts();

    let path_and_query = match parts.uri.query() {
        Some(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path,
    };
    // No Host header: the event's `requestContext.domainName`, which
    // lambda_http put in the URI, when it is a host name.
    if !parts.headers.contains_key(header::HOST)
        && let Some(authority) = parts.uri.authority()
        && crate::gateway::valid_host_header(authority.as_str())
        && let Ok(host) = HeaderValue::from_str(authority.as_str())
    {
        parts.headers.insert(header::HOST, host);
    }
    let https = parts
        .headers
        .get("x-forwarded-proto")
        .is_none_or(|proto| proto.as_bytes().eq_ignore_ascii_case(b"https"));
    // `encode_path` leaves only URI-safe bytes, so this parses; should it
    // not, the request lands on the reserved prefix (a 404), never on `/`.
    parts.uri = path_and_query
        .parse()
        .unwrap_or_else(|_| http::Uri::from_static("/_wasmgate/unparseable-path"));

    let body = match body {
        LambdaBody::Empty => body::empty(),
        LambdaBody::Text(text) => body::full(text),
        LambdaBody::Binary(bytes) => body::full(bytes),
        _ => body::empty(),
    };
    let info = RequestInfo {
        request_id: context
            .as_ref()
            .map(|c| c.request_id.clone())
            .filter(|id| !id.is_empty()),
        https,
        deadline: context.as_ref().and_then(|c| deadline_instant(c.deadline)),
        remote_addr,
        host_policy: HostPolicy::Trigger,
    };
    (http::Request::from_parts(parts, body), info)
}

/// The client's IP: API Gateway's `sourceIp`; behind an ALB, the last
/// address of `X-Forwarded-For` (the ALB appends the address it saw; any
/// before it came from the client and cannot be trusted).
fn source_ip(request: &lambda_http::Request) -> Option<String> {
    use lambda_http::request::RequestContext;
    let from_context = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(context)) => context.identity.source_ip.clone(),
        Some(RequestContext::ApiGatewayV2(context)) => context.http.source_ip.clone(),
        _ => None,
    };
    from_context.filter(|ip| !ip.is_empty()).or_else(|| {
        request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|ip| ip.trim().to_string())
            .filter(|ip| !ip.is_empty())
    })
}

/// The event's path as a URI path: bytes outside RFC 3986's path characters
/// (a space, non-ASCII) and a `%` that starts no escape are percent-encoded;
/// existing escapes are kept.
fn encode_path(raw: &str) -> String {
    if raw.is_empty() {
        return "/".to_string();
    }
    let mut out = String::with_capacity(raw.len());
    if !raw.starts_with('/') {
        out.push('/');
    }
    let bytes = raw.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        if byte == b'%' && !starts_escape(&bytes[i..]) {
            out.push_str("%25");
        } else if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The instant to stop the guest: the invocation deadline (epoch ms) less
/// [`DEADLINE_MARGIN`]. `None` when Lambda gave no deadline.
fn deadline_instant(deadline_ms: u64) -> Option<Instant> {
    if deadline_ms == 0 {
        return None;
    }
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_millis() as u64;
    let left =
        Duration::from_millis(deadline_ms.saturating_sub(now_ms)).saturating_sub(DEADLINE_MARGIN);
    Some(Instant::now() + left)
}

/// A response body that ends, instead of failing, when the guest's stream
/// fails: lambda_http would otherwise write the error into the body as text.
pub struct EndOnError {
    inner: Body,
    done: bool,
}

impl EndOnError {
    fn new(inner: Body) -> Self {
        EndOnError { inner, done: false }
    }
}

impl HttpBody for EndOnError {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
            Poll::Ready(Some(Err(error))) => {
                tracing::warn!(%error, "the streamed response failed; ending it early");
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Ready(None) => {
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_are_escaped_and_escapes_kept() {
        assert_eq!(escape_delimiters("/a?admin=1#x"), "/a%3Fadmin=1%23x");
        assert_eq!(escape_delimiters("/files/a%20b"), "/files/a%20b");
        assert_eq!(escape_delimiters("/100%"), "/100%25");
        assert_eq!(escape_delimiters("/50%off"), "/50%25off");
        assert_eq!(encode_path("/100%/a b/%2F"), "/100%25/a%20b/%2F");
    }

    #[test]
    fn non_utf8_header_values_are_dropped_from_buffered_responses() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-ok", HeaderValue::from_static("fine"));
        headers.append("x-mixed", HeaderValue::from_static("kept"));
        headers.append("x-mixed", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        headers.insert("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        drop_non_utf8_headers(&mut headers, "req");
        assert_eq!(headers["x-ok"], "fine");
        assert!(!headers.contains_key("x-latin1"));
        let mixed: Vec<_> = headers.get_all("x-mixed").iter().collect();
        assert_eq!(mixed, ["kept"]);
    }
}
