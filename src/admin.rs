//! The admin API under the reserved prefix `/_wasmgate/`: deploys uploaded
//! over HTTP (the form of Cloudflare's script upload), previews, promotes,
//! rollouts, rollbacks and reads, for CI systems and ops tools.
//!
//! It exists only when `WASMGATE_ADMIN_TOKEN` is set, and every call needs
//! `Authorization: Bearer <token>` (the scheme in any case, the token
//! compared in constant time); without it the answer is a bare 401 that
//! reveals nothing else. Each refusal is logged (the client's address and
//! why, never the token) and counted (`wasmgate_admin_auth_refusals_total`);
//! an address with 10 refusals in a minute gets 429s, its tokens unchecked,
//! until that minute is over.
//!
//! | call | does |
//! |---|---|
//! | `PUT /_wasmgate/scripts/{name}?route=R[&preview=true]` | multipart upload: a `metadata` part (JSON: `main_module` or `body_part`, `bindings`) and one part per module; stores each by digest, records the version, makes it live unless `preview` |
//! | `GET /_wasmgate/routes` | every route's live pointer (and rollout) |
//! | `GET /_wasmgate/history?route=R` | a route's versions and pointer changes |
//! | `POST /_wasmgate/rollback?route=R[&to=N]` | a rollback (ends a rollout without `to`) |
//! | `POST /_wasmgate/promote?route=R&version=N` | makes version N live |
//! | `POST /_wasmgate/rollout?route=R&to=N&percent=P[&sticky_header=H&max_error_rate=E&window=60s&min_requests=M]` | a weighted rollout |
//!
//! Answers are JSON; errors are `{"error": "..."}` with a 4xx or 5xx status.
//! The actor in the history is `?actor=`, else `admin-api`.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::body::{self, Body};
use crate::deploy::{DeployBundle, DeployError, Deployer, RolloutPlan, route_history};
use crate::routes::{RESERVED_PREFIX, RouteName, RouteTable, TableError};
use crate::runtime::bindings::DeployMetadata;

/// Size limits of an upload.
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Largest single part (a module), in bytes.
    pub part_bytes: u64,
    /// Largest whole request body, in bytes.
    pub total_bytes: u64,
}

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits {
            part_bytes: 64 << 20,
            total_bytes: 128 << 20,
        }
    }
}

/// Largest `metadata` part.
const MAX_METADATA_BYTES: usize = 1 << 20;

/// The admin API: the deploy operations behind a bearer token.
pub struct AdminApi {
    token: Vec<u8>,
    deployer: Deployer,
    table: Arc<dyn RouteTable>,
    limits: UploadLimits,
    failures: AuthFailures,
}

/// Refused token checks a client address may have in [`AUTH_WINDOW`]
/// before its admin requests are refused unchecked (429).
const MAX_AUTH_FAILURES: u32 = 10;
const AUTH_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past it, windows that are over are pruned,
/// and if none is over, the oldest window goes.
const MAX_TRACKED_CLIENTS: usize = 10_000;

/// Token refusals per client address, in fixed windows.
#[derive(Default)]
struct AuthFailures {
    by_client: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthFailures {
    /// The seconds left of `client`'s window when it is over its budget.
    fn blocked(&self, client: IpAddr) -> Option<u64> {
        let map = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = map.get(&client)?;
        let left = AUTH_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_AUTH_FAILURES).then(|| left.as_secs().max(1))
    }

    /// Records a refusal; returns the count in the client's window.
    fn record(&self, client: IpAddr) -> u32 {
        let mut map = self.by_client.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_TRACKED_CLIENTS && !map.contains_key(&client) {
            map.retain(|_, (since, _)| since.elapsed() < AUTH_WINDOW);
            if map.len() >= MAX_TRACKED_CLIENTS
                && let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, (since, _))| *since)
                    .map(|(k, _)| *k)
            {
                map.remove(&oldest);
            }
        }
        let entry = map.entry(client).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= AUTH_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
        entry.1
    }
}

/// An answer: status and JSON body.
struct Answer(StatusCode, serde_json::Value);

impl Answer {
    fn error(status: StatusCode, message: impl Into<String>) -> Self {
        Answer(status, json!({ "error": message.into() }))
    }
}

impl AdminApi {
    /// The API, answering only requests bearing `token` (non-empty).
    pub fn new(
        token: &str,
        deployer: Deployer,
        table: Arc<dyn RouteTable>,
        limits: UploadLimits,
    ) -> Self {
        AdminApi {
            token: token.as_bytes().to_vec(),
            deployer,
            table,
            limits,
            failures: AuthFailures::default(),
        }
    }

    /// Whether `path` is the admin API's.
    pub fn owns(path: &str) -> bool {
        path == RESERVED_PREFIX || path.starts_with(&format!("{RESERVED_PREFIX}/"))
    }

    /// Answers one admin request from `client`.
    pub async fn handle(&self, request: Request<Body>, client: IpAddr) -> Response<Body> {
        if let Some(refused) = self.refusal(&request, client) {
            return refused;
        }
        let Answer(status, value) = self.route(request).await;
        let mut text = serde_json::to_string_pretty(&value).expect("BUG: JSON always serialises");
        text.push('\n');
        let mut response = Response::new(body::full(text));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }

    /// `None` when `request` from `client` bears the admin token; else the
    /// refusal to answer (401, or 429 for an address over its failure
    /// budget), logged and counted.
    pub fn refusal<B>(&self, request: &Request<B>, client: IpAddr) -> Option<Response<Body>> {
        if let Some(retry_after) = self.failures.blocked(client) {
            crate::metrics::METRICS.admin_refused();
            return Some(too_many_failures(retry_after));
        }
        let why = match self.check_token(request) {
            Ok(()) => return None,
            Err(why) => why,
        };
        crate::metrics::METRICS.admin_refused();
        let count = self.failures.record(client);
        // One line per refusal until the budget is spent, then one that
        // says so: a flood of wrong tokens is seen, not a flood of lines.
        if count < MAX_AUTH_FAILURES {
            tracing::warn!(client = %client, path = %request.uri().path(), reason = why, "admin API request refused");
        } else if count == MAX_AUTH_FAILURES {
            tracing::warn!(
                client = %client,
                refusals = count,
                window_secs = AUTH_WINDOW.as_secs(),
                "admin API: too many refused tokens from this address; refusing its requests until the window ends"
            );
        }
        Some(unauthorized())
    }

    /// Whether `request` bears the admin token, else why not.
    fn check_token<B>(&self, request: &Request<B>) -> Result<(), &'static str> {
        let value = request
            .headers()
            .get(header::AUTHORIZATION)
            .ok_or("no Authorization header")?;
        let (scheme, presented) = value.as_bytes().split_at(
            value
                .as_bytes()
                .iter()
                .position(|b| *b == b' ')
                .ok_or("not a Bearer token")?,
        );
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return Err("not a Bearer token");
        }
        let presented = presented.trim_ascii();
        if !self.token.is_empty() && bool::from(presented.ct_eq(&self.token)) {
            Ok(())
        } else {
            Err("wrong token")
        }
    }

    async fn route(&self, request: Request<Body>) -> Answer {
        let path = request.uri().path()[RESERVED_PREFIX.len()..].to_string();
        let query = Query::parse(request.uri().query());
        let method = request.method().clone();
        let actor = query
            .get("actor")
            .filter(|a| !a.trim().is_empty())
            .unwrap_or("admin-api")
            .to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match (segments.as_slice(), &method) {
            (["scripts", name], &Method::PUT) => {
                let name = name.to_string();
                self.upload(&name, request, &query, &actor).await
            }
            (["routes"], &Method::GET) => match self.table.list().await {
                Ok(routes) => Answer(StatusCode::OK, json!(routes)),
                Err(error) => table_error(error),
            },
            (["history"], &Method::GET) => {
                let route = match query.route() {
                    Ok(route) => route,
                    Err(answer) => return answer,
                };
                match route_history(self.table.as_ref(), &route).await {
                    Ok(history) => Answer(StatusCode::OK, json!(history)),
                    Err(error) => deploy_error(error),
                }
            }
            (["rollback"], &Method::POST) => {
                let route = match query.route() {
                    Ok(route) => route,
                    Err(answer) => return answer,
                };
                let to = match query.number("to") {
                    Ok(to) => to,
                    Err(answer) => return answer,
                };
                match self.deployer.rollback(&route, to, &actor).await {
                    Ok(report) => Answer(StatusCode::OK, json!(report)),
                    Err(error) => deploy_error(error),
                }
            }
            (["promote"], &Method::POST) => {
                let route = match query.route() {
                    Ok(route) => route,
                    Err(answer) => return answer,
                };
                let version = match query.number("version") {
                    Ok(Some(version)) => version,
                    Ok(None) => {
                        return Answer::error(StatusCode::BAD_REQUEST, "give ?version=N");
                    }
                    Err(answer) => return answer,
                };
                match self.deployer.promote(&route, version, &actor).await {
                    Ok(report) => Answer(StatusCode::OK, json!(report)),
                    Err(error) => deploy_error(error),
                }
            }
            (["rollout"], &Method::POST) => {
                let route = match query.route() {
                    Ok(route) => route,
                    Err(answer) => return answer,
                };
                let plan = match query.rollout_plan() {
                    Ok(plan) => plan,
                    Err(answer) => return answer,
                };
                match self.deployer.rollout(&route, plan, &actor).await {
                    Ok(report) => Answer(StatusCode::OK, json!(report)),
                    Err(error) => deploy_error(error),
                }
            }
            (
                ["scripts", _]
                | ["routes"]
                | ["history"]
                | ["rollback"]
                | ["promote"]
                | ["rollout"],
                _,
            ) => Answer::error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed here"),
            ),
            _ => Answer::error(
                StatusCode::NOT_FOUND,
                format!("no admin call at {RESERVED_PREFIX}{path}"),
            ),
        }
    }

    /// `PUT /_wasmgate/scripts/{name}`: the multipart upload.
    async fn upload(
        &self,
        name: &str,
        request: Request<Body>,
        query: &Query,
        actor: &str,
    ) -> Answer {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Answer::error(
                StatusCode::BAD_REQUEST,
                format!("script name {name:?} must be 1-64 letters, digits, - or _"),
            );
        }
        let route = match query.route() {
            Ok(route) => route,
            Err(answer) => return answer,
        };
        let preview = match query.get("preview") {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Answer::error(
                    StatusCode::BAD_REQUEST,
                    format!("preview={other:?}: give true or false"),
                );
            }
        };
        let mut bundle = match self.read_upload(request).await {
            Ok(bundle) => bundle,
            Err(answer) => return answer,
        };
        bundle.metadata.script = Some(name.to_string());
        match self
            .deployer
            .deploy_as(&route, bundle, actor, preview)
            .await
        {
            Ok(report) => Answer(
                StatusCode::OK,
                json!({
                    "name": name,
                    "route": report.route,
                    "version": report.version,
                    "live": report.live,
                    "preview_token": report.preview_token,
                    "abi": report.abi,
                    "artifact": report.artifact,
                    "bindings": report.bindings,
                    "modules": std::iter::once(json!({
                        "part": "main",
                        "key": report.key,
                        "uploaded": report.uploaded,
                    }))
                    .chain(report.parts.iter().map(|p| json!({
                        "part": p.name,
                        "key": p.key,
                        "uploaded": p.uploaded,
                    })))
                    .collect::<Vec<_>>(),
                    "uploaded": std::iter::once((&report.key, report.uploaded))
                        .chain(report.parts.iter().map(|p| (&p.key, p.uploaded)))
                        .filter(|(_, u)| *u).map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                    "skipped": std::iter::once((&report.key, report.uploaded))
                        .chain(report.parts.iter().map(|p| (&p.key, p.uploaded)))
                        .filter(|(_, u)| !*u).map(|(k, _)| k.clone()).collect::<Vec<_>>(),
                }),
            ),
            Err(error) => deploy_error(error),
        }
    }

    /// Reads the multipart body into a bundle (see [`parse_upload`]).
    async fn read_upload(&self, request: Request<Body>) -> Result<DeployBundle, Answer> {
        let (parts, body) = request.into_parts();
        parse_upload(&parts.headers, body_stream(body), self.limits)
            .await
            .map_err(|error| Answer::error(error.status, error.message))
    }
}

/// Why an upload was refused: the status to answer with, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct UploadError {
    pub status: StatusCode,
    pub message: String,
}

impl UploadError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        UploadError {
            status,
            message: message.into(),
        }
    }
}

/// Reads a multipart upload (`headers` give its content type and declared
/// length) into a bundle: the `metadata` part, the main module (the part
/// `main_module` names, or the only part no binding names) and the parts its
/// bindings name. Fails (415, 413 or 400) when the body is not multipart, is
/// over `limits`, is malformed, or its parts and metadata do not fit together.
pub async fn parse_upload<S>(
    headers: &http::HeaderMap,
    body: S,
    limits: UploadLimits,
) -> Result<DeployBundle, UploadError>
where
    S: futures::Stream<Item = Result<Bytes, std::io::Error>> + Send,
{
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let boundary = multer::parse_boundary(content_type).map_err(|_| {
        UploadError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the upload must be multipart/form-data with a boundary (curl -F ...)",
        )
    })?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.total_bytes) {
        return Err(too_large(limits));
    }
    let constraints = multer::Constraints::new().size_limit(
        multer::SizeLimit::new()
            .whole_stream(limits.total_bytes)
            .per_field(limits.part_bytes),
    );
    let mut multipart = multer::Multipart::with_constraints(body, boundary, constraints);
    let mut metadata: Option<Bytes> = None;
    let mut parts: BTreeMap<String, Bytes> = BTreeMap::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return Err(multipart_error(error, limits)),
        };
        let Some(name) = field.name().map(str::to_string).filter(|n| !n.is_empty()) else {
            return Err(UploadError::new(
                StatusCode::BAD_REQUEST,
                "a part has no name (each part needs Content-Disposition: form-data; name=...)",
            ));
        };
        let bytes = field
            .bytes()
            .await
            .map_err(|error| multipart_error(error, limits))?;
        if name == "metadata" {
            if bytes.len() > MAX_METADATA_BYTES {
                return Err(UploadError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the metadata part is over {} KiB", MAX_METADATA_BYTES >> 10),
                ));
            }
            if metadata.replace(bytes).is_some() {
                return Err(UploadError::new(
                    StatusCode::BAD_REQUEST,
                    "the metadata part is given twice",
                ));
            }
        } else if parts.insert(name.clone(), bytes).is_some() {
            return Err(UploadError::new(
                StatusCode::BAD_REQUEST,
                format!("part {name:?} is given twice"),
            ));
        }
    }
    let metadata = metadata.ok_or_else(|| {
        UploadError::new(
            StatusCode::BAD_REQUEST,
            "the upload has no `metadata` part (JSON: {\"main_module\": \"...\", \"bindings\": [...]})",
        )
    })?;
    let metadata = DeployMetadata::parse(&metadata).map_err(|error| {
        UploadError::new(
            StatusCode::BAD_REQUEST,
            format!("refusing to deploy: {error}"),
        )
    })?;
    let bound: Vec<&str> = metadata.module_parts().map(|(_, part)| part).collect();
    let main_name = match &metadata.main_module {
        Some(main) => main.clone(),
        None => {
            let unbound: Vec<&String> = parts
                .keys()
                .filter(|p| !bound.contains(&p.as_str()))
                .collect();
            match unbound.as_slice() {
                [only] => (*only).clone(),
                [] => {
                    return Err(UploadError::new(
                        StatusCode::BAD_REQUEST,
                        "the upload has no module part besides the metadata",
                    ));
                }
                _ => {
                    return Err(UploadError::new(
                        StatusCode::BAD_REQUEST,
                        "several module parts: name the main one with main_module in the metadata",
                    ));
                }
            }
        }
    };
    let main = parts.remove(&main_name).ok_or_else(|| {
        UploadError::new(
            StatusCode::BAD_REQUEST,
            format!("the metadata names main_module {main_name:?}, but no part {main_name:?} was uploaded"),
        )
    })?;
    Ok(DeployBundle {
        main,
        parts,
        metadata,
    })
}

/// The body as a stream of data chunks, for multer.
fn body_stream(
    body: Body,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    futures::stream::unfold(body, |mut body| async move {
        loop {
            match body.frame().await? {
                Ok(frame) => {
                    if let Ok(data) = frame.into_data() {
                        return Some((Ok(data), body));
                    }
                }
                Err(error) => {
                    return Some((Err(std::io::Error::other(error.to_string())), body));
                }
            }
        }
    })
}

/// The bare 401: it says nothing of what is behind it.
/// The 429 for an address that spent its failure budget.
fn too_many_failures(retry_after: u64) -> Response<Body> {
    let mut response = Response::new(body::full("429 Too Many Requests\n"));
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    if let Ok(value) = HeaderValue::from_str(&retry_after.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

pub fn unauthorized() -> Response<Body> {
    let mut response = Response::new(body::full("401 Unauthorized\n"));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"wasmgate\""),
    );
    response
}

fn too_large(limits: UploadLimits) -> UploadError {
    UploadError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!(
            "the upload is over the limits: {} per part, {} in all",
            size(limits.part_bytes),
            size(limits.total_bytes)
        ),
    )
}

/// "64 MiB", "200 KiB", "512 bytes".
fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

fn multipart_error(error: multer::Error, limits: UploadLimits) -> UploadError {
    match error {
        multer::Error::FieldSizeExceeded { field_name, .. } => UploadError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "part {:?} is over the {} limit per part",
                field_name.unwrap_or_default(),
                size(limits.part_bytes)
            ),
        ),
        multer::Error::StreamSizeExceeded { .. } => too_large(limits),
        other => UploadError::new(
            StatusCode::BAD_REQUEST,
            format!("the multipart body is malformed: {other}"),
        ),
    }
}

fn table_error(error: TableError) -> Answer {
    let status = match error {
        TableError::Conflict { .. } => StatusCode::CONFLICT,
        TableError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        TableError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Answer::error(status, error.to_string())
}

fn deploy_error(error: DeployError) -> Answer {
    let status = match &error {
        DeployError::Invalid(_)
        | DeployError::Metadata(_)
        | DeployError::Part { .. }
        | DeployError::Bindings(_)
        | DeployError::BadRollout(_) => StatusCode::BAD_REQUEST,
        DeployError::UnknownRoute(_) | DeployError::NoSuchVersion { .. } => StatusCode::NOT_FOUND,
        DeployError::NothingToRollBack(_)
        | DeployError::AlreadyLive { .. }
        | DeployError::RecordedNotLive { .. } => StatusCode::CONFLICT,
        DeployError::Table(TableError::Conflict { .. }) => StatusCode::CONFLICT,
        DeployError::Table(TableError::Corrupt(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        DeployError::Table(TableError::Unavailable(_)) | DeployError::Store(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    Answer::error(status, error.to_string())
}

/// A request's query pairs, decoded.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(query: Option<&str>) -> Self {
        Query(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn route(&self) -> Result<RouteName, Answer> {
        let text = self.get("route").ok_or_else(|| {
            Answer::error(
                StatusCode::BAD_REQUEST,
                "give the route: ?route=/path or ?route=host/path",
            )
        })?;
        RouteName::parse(text).map_err(|e| Answer::error(StatusCode::BAD_REQUEST, e.to_string()))
    }

    fn number(&self, name: &str) -> Result<Option<u64>, Answer> {
        self.get(name)
            .map(|v| {
                v.parse::<u64>().map_err(|_| {
                    Answer::error(
                        StatusCode::BAD_REQUEST,
                        format!("{name}={v:?} is not a whole number"),
                    )
                })
            })
            .transpose()
    }

    fn rollout_plan(&self) -> Result<RolloutPlan, Answer> {
        let bad = |what: String| Answer::error(StatusCode::BAD_REQUEST, what);
        let to = self
            .number("to")?
            .ok_or_else(|| bad("give the candidate version: ?to=N".into()))?;
        let percent = self
            .get("percent")
            .ok_or_else(|| bad("give the share: ?percent=P".into()))?;
        let percent = percent
            .parse::<f64>()
            .map_err(|_| bad(format!("percent={percent:?} is not a number")))?;
        let max_error_rate = self
            .get("max_error_rate")
            .map(|v| {
                v.parse::<f64>()
                    .map_err(|_| bad(format!("max_error_rate={v:?} is not a number")))
            })
            .transpose()?;
        let window_secs = match self.get("window") {
            None => crate::routes::DEFAULT_WINDOW_SECS,
            Some(v) => humantime::parse_duration(v)
                .map_err(|e| bad(format!("window={v:?}: {e}")))?
                .as_secs(),
        };
        Ok(RolloutPlan {
            to,
            percent,
            sticky_header: self.get("sticky_header").map(str::to_string),
            max_error_rate,
            window_secs,
            min_requests: self
                .number("min_requests")?
                .unwrap_or(crate::routes::DEFAULT_MIN_REQUESTS),
        })
    }
}
