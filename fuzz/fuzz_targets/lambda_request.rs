//! Lambda event → gateway request, what a function relies on: an invocation
//! payload is refused with a reason, or becomes a request whose URI is an
//! origin-form path starting with '/', whose header values are valid field
//! values, and whose body is the event's `body` (base64-decoded when
//! `isBase64Encoded`). `lambda_event` checks only the path; this target
//! also reads the same JSON on its own and compares the body. Seeds: the
//! same events (fuzz/seeds/lambda_request is a link to
//! fuzz/seeds/lambda_event).
#![no_main]

use base64::Engine;
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use wasmgate::front::lambda::{in_event_conversion, parse_event, to_gateway_request};

/// The body the event says it carries: `None` when the payload is not a
/// JSON object (serde also reads a struct from an array) or its body is
/// not valid base64, where only "refused or some request" is checked.
fn event_body(data: &[u8]) -> Option<Vec<u8>> {
    let event: serde_json::Value = serde_json::from_slice(data).ok()?;
    let event = event.as_object()?;
    let encoded = event
        .get("isBase64Encoded")
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false);
    match event.get("body") {
        None | Some(serde_json::Value::Null) => Some(Vec::new()),
        Some(serde_json::Value::String(body)) if encoded => {
            base64::engine::general_purpose::STANDARD.decode(body).ok()
        }
        Some(serde_json::Value::String(body)) => Some(body.clone().into_bytes()),
        Some(_) => None,
    }
}

fuzz_target!(
    init: {
        // `parse_event` catches the panics of lambda_http's conversion (a
        // URI it cannot build, a body that is not base64) and answers 400,
        // as the server's own hook does. Any other panic aborts.
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !in_event_conversion() {
                fuzzer_hook(info);
            }
        }));
    },
    |data: &[u8]| {
        let Ok(request) = parse_event(data) else {
            return;
        };
        let (request, _info) = to_gateway_request(request);
        let uri = request.uri();
        assert!(uri.scheme().is_none() && uri.authority().is_none(), "{uri}");
        assert!(uri.path().starts_with('/'), "{uri}");
        for (name, value) in request.headers() {
            assert!(!name.as_str().is_empty());
            assert!(
                value
                    .as_bytes()
                    .iter()
                    .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f)),
                "{name}: {value:?}"
            );
        }
        let body = futures::executor::block_on(request.into_body().collect())
            .expect("a full body")
            .to_bytes();
        if let Some(expected) = event_body(data) {
            assert_eq!(&body[..], &expected[..], "the body is not the event's");
        }
    }
);
