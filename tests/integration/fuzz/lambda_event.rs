//! Lambda events (`parse_event`, `to_gateway_request`): never a panic; a
//! valid event keeps its path, query and body.

use super::*;
use base64::Engine as _;
use http_body_util::BodyExt;
use serde_json::Value;
use wasmgate::front::lambda::{parse_event, to_gateway_request};

const EVENTS: &[&str] = &[
    include_str!("../../data/alb_request.json"),
    include_str!("../../data/apigw_v1_proxy_request.json"),
    include_str!("../../data/apigw_v2_binary_request.json"),
    include_str!("../../data/apigw_v2_proxy_request.json"),
    include_str!("../../data/lambda_function_url_request.json"),
];

/// Converts an event as the Lambda front does; `None` when it is refused.
fn convert(payload: &[u8]) -> Option<(http::request::Parts, Vec<u8>)> {
    let request = parse_event(payload).ok()?;
    let (request, _info) = to_gateway_request(request);
    let (parts, body) = request.into_parts();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let body = runtime
        .block_on(body.collect())
        .expect("an event body never fails")
        .to_bytes()
        .to_vec();
    assert!(parts.uri.path().starts_with('/'), "{}", parts.uri);
    Some((parts, body))
}

/// Every place in `value` (objects' members, arrays' items).
fn places(value: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                places(
                    item,
                    format!("{at}/{}", key.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                places(item, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The path as the client sent it, with the bytes a URI path cannot hold
/// escaped, and a `%` that starts no `%XX` escape; existing escapes kept.
fn uri_path(raw: &str) -> String {
    let mut path = String::new();
    let bytes = raw.as_bytes();
    for (i, &byte) in bytes.iter().enumerate() {
        let escape = byte == b'%'
            && bytes.len() > i + 2
            && bytes[i + 1].is_ascii_hexdigit()
            && bytes[i + 2].is_ascii_hexdigit();
        if byte == b'%' && !escape {
            path.push_str("%25");
        } else if byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%".contains(&byte) {
            path.push(byte as char);
        } else {
            path.push_str(&format!("%{byte:02X}"));
        }
    }
    path
}

/// Path segments as events may carry them: decoded (which triggers hand
/// over decoded paths differs), so a space, `%`, `?`, `#` or non-ASCII may
/// be in them.
fn decoded_segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 %é?#._~-]{0,6}"
}

/// Found by `a_rest_event_keeps_its_path_and_query_without_the_stage`:
/// lambda_http builds the URI from the (decoded) event path, so a `?` in
/// it started the query (`/a%3Fadmin=1` reached the guest as `/a` with
/// the query `admin=1`) and a `#` dropped the real one.
#[test]
fn a_question_mark_in_the_path_is_not_a_query() {
    for (raw_path, expected_path) in [("/a?admin=1", "/a%3Fadmin=1"), ("/a#b", "/a%23b")] {
        let mut event: Value = serde_json::from_str(EVENTS[1]).unwrap();
        event["path"] = raw_path.into();
        event["queryStringParameters"] = serde_json::json!({"q": "1"});
        event["multiValueQueryStringParameters"] = Value::Null;
        let (parts, _) = convert(event.to_string().as_bytes()).expect("a valid REST event");
        assert_eq!(parts.uri.path(), expected_path, "REST {raw_path}");
        assert_eq!(parts.uri.query(), Some("q=1"), "REST {raw_path}");

        let mut event: Value = serde_json::from_str(EVENTS[3]).unwrap();
        event["rawPath"] = raw_path.into();
        event["rawQueryString"] = "q=1".into();
        let (parts, _) = convert(event.to_string().as_bytes()).expect("a valid v2 event");
        assert_eq!(parts.uri.path(), expected_path, "v2 {raw_path}");
        assert_eq!(parts.uri.query(), Some("q=1"), "v2 {raw_path}");
    }
}

/// Found by the `lambda_event` fuzz target: an event that says its body is
/// base64 when it is not makes aws_lambda_events panic in lambda_http's
/// conversion. `parse_event` must refuse it (a 400), on every trigger.
#[test]
fn a_body_that_is_not_base64_is_refused() {
    for (i, body) in [(2, "not base64!"), (3, "%%%%"), (0, "YQ")] {
        let mut event: Value = serde_json::from_str(EVENTS[i]).unwrap();
        event["isBase64Encoded"] = true.into();
        event["body"] = body.into();
        assert!(
            parse_event(event.to_string().as_bytes()).is_err(),
            "event {i} with the body {body:?}"
        );
    }
}

fn replacement() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        Just(serde_json::json!({})),
        Just(serde_json::json!([])),
        Just(Value::from("a b")),
        Just(Value::from(":99999")),
        Just(Value::from("GET")),
    ]
}

proptest! {
    #![proptest_config(cases(1000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = convert(&bytes);
    }

    #[test]
    fn mutated_real_events_never_panic(
        event in any::<Index>(),
        place in any::<Index>(),
        value in replacement(),
        byte_edits in prop::collection::vec((any::<Index>(), any::<u8>()), 0..3),
    ) {
        let mut event: Value = serde_json::from_str(EVENTS[event.index(EVENTS.len())]).unwrap();
        let mut all = Vec::new();
        places(&event, String::new(), &mut all);
        let at = &all[place.index(all.len())];
        if let Some(slot) = event.pointer_mut(at) {
            *slot = value;
        }
        let mut bytes = event.to_string().into_bytes();
        for (at, byte) in byte_edits {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = convert(&bytes);
    }

    #[test]
    fn a_v2_event_keeps_its_path_query_and_body(
        segments in prop::collection::vec(decoded_segment(), 0..5),
        query in "([a-z0-9]{1,5}=[a-zA-Z0-9%+._~-]{0,6}(&[a-z0-9]{1,5}=[a-zA-Z0-9%+._~-]{0,6}){0,3})?",
        body in prop::collection::vec(any::<u8>(), 0..128),
        binary in any::<bool>(),
        method in prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ) {
        let raw_path = format!("/{}", segments.join("/"));
        let text = String::from_utf8_lossy(&body).into_owned();
        let mut event: Value = serde_json::from_str(EVENTS[3]).unwrap();
        event["rawPath"] = raw_path.clone().into();
        event["requestContext"]["http"]["path"] = raw_path.clone().into();
        event["requestContext"]["http"]["method"] = method.into();
        event["rawQueryString"] = query.clone().into();
        event["isBase64Encoded"] = binary.into();
        event["body"] = if binary {
            base64::engine::general_purpose::STANDARD.encode(&body).into()
        } else {
            text.clone().into()
        };

        let (parts, got) = convert(event.to_string().as_bytes())
            .ok_or_else(|| TestCaseError::fail("a valid v2 event was refused"))?;
        prop_assert_eq!(parts.uri.path(), uri_path(&raw_path));
        prop_assert_eq!(parts.uri.query(), (!query.is_empty()).then_some(query.as_str()));
        prop_assert_eq!(parts.method.as_str(), method);
        prop_assert_eq!(
            parts.headers.get(http::header::HOST).map(|h| h.to_str().unwrap()),
            Some("id.execute-api.us-east-1.amazonaws.com")
        );
        let expected_body = if binary { body } else { text.into_bytes() };
        prop_assert_eq!(got, expected_body);
    }

    #[test]
    fn a_rest_event_keeps_its_path_and_query_without_the_stage(
        segments in prop::collection::vec(decoded_segment(), 0..5),
        query in prop::collection::btree_map("[a-z0-9]{1,5}", "[a-zA-Z0-9]{0,6}", 0..4),
    ) {
        let raw_path = format!("/{}", segments.join("/"));
        let mut event: Value = serde_json::from_str(EVENTS[1]).unwrap();
        event["path"] = raw_path.clone().into();
        event["queryStringParameters"] = serde_json::json!(query);
        event["multiValueQueryStringParameters"] = Value::Null;

        let (parts, _) = convert(event.to_string().as_bytes())
            .ok_or_else(|| TestCaseError::fail("a valid REST event was refused"))?;
        prop_assert_eq!(parts.uri.path(), uri_path(&raw_path));
        let mut pairs: Vec<&str> = parts.uri.query().unwrap_or("").split('&').filter(|p| !p.is_empty()).collect();
        pairs.sort_unstable();
        let mut expected: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        expected.sort_unstable();
        prop_assert_eq!(pairs, expected);
    }
}
