//! A wasi:http 0.2 component written the way wstd's own examples are
//! (`#[wstd::http_server]`, wstd's `Client` for outbound requests), so the
//! integration tests can see how a guest built on that crate reports an
//! outbound request the host refuses (does the error text say
//! `HTTP-request-denied`?) and that it serves plain routes.
//!
//! - `GET .../fetch?url=U`: GET `U`; 200 `status: N`, or 502 with the error.
//! - `GET .../post?url=U`: POST a 64 KiB body to `U`; the same answers.
//! - anything else: 200 `wstd <path>`.
//!
//! Rebuild with `make fixtures` (needs `rustup target add wasm32-wasip2`).

use wstd::http::{Body, Client, Error, Method, Request, Response, StatusCode, Uri};

#[wstd::http_server]
async fn main(request: Request<Body>) -> Result<Response<Body>, Error> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or_default().to_string();
    let url = query_param(&query, "url").unwrap_or_default();
    match path.rsplit('/').next().unwrap_or_default() {
        "fetch" => Ok(outbound(Method::GET, &url, Body::empty()).await),
        "post" => {
            let body: Body = "p".repeat(64 << 10).into();
            Ok(outbound(Method::POST, &url, body).await)
        }
        _ => Ok(Response::new(format!("wstd {path}").into())),
    }
}

/// Sends `method url` with `body` through wstd's `Client`: 200 `status: N`,
/// or 502 with the error as wstd gives it (Display, then Debug).
async fn outbound(method: Method, url: &str, body: Body) -> Response<Body> {
    let result = async {
        let uri: Uri = url.parse()?;
        let request = Request::builder().method(method).uri(uri).body(body)?;
        let response = Client::new().send(request).await?;
        Ok::<_, Error>(response.status())
    }
    .await;
    match result {
        Ok(status) => Response::new(format!("status: {}", status.as_u16()).into()),
        Err(e) => Response::builder()
            .status(StatusCode::BAD_GATEWAY)
            .body(format!("error: {e}\ndebug: {e:?}\n").into())
            .expect("valid response"),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| percent_decode(v))
}

/// `%XX` escapes decoded (`+` stays `+`: the values are URLs).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(hi << 4 | lo);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
