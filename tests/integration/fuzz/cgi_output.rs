//! WAGI guests' CGI output (`parse_cgi`): final statuses, no framing
//! headers, and well-formed output round-trips byte for byte.

use super::*;
use http::header;
use wasmgate::runtime::parse_cgi;

const DROPPED: &[&str] = &[
    "connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "content-length",
];

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z][A-Za-z0-9-]{0,12}",
        1 => prop::sample::select(vec![
            "Location", "Content-Type", "Connection", "Transfer-Encoding",
            "Content-Length", "Keep-Alive", "Set-Cookie",
        ])
        .prop_map(str::to_string),
    ]
    .prop_filter("Status is not a header", |n| {
        !n.eq_ignore_ascii_case("status")
    })
}

/// A header value as HTTP allows it (RFC 9110 field-value): visible
/// ASCII and obs-text bytes (0x80-0xFF), with spaces and tabs inside.
fn header_value() -> impl Strategy<Value = Vec<u8>> {
    let edge = || prop_oneof![4 => 0x21u8..=0x7e, 1 => 0x80u8..=0xff];
    let inner = prop_oneof![1 => Just(b' '), 1 => Just(b'\t'), 8 => edge()];
    prop_oneof![
        1 => Just(Vec::new()),
        6 => (edge(), prop::collection::vec(inner, 0..20), edge()).prop_map(|(a, mut v, b)| {
            v.insert(0, a);
            v.push(b);
            v
        }),
        2 => "[!-~]{1,20}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #![proptest_config(cases(2000))]

    #[test]
    fn arbitrary_output_never_panics_and_never_frames(output in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(response) = parse_cgi(&output) {
            prop_assert!((200..=599).contains(&response.status().as_u16()));
            for name in DROPPED {
                prop_assert!(!response.headers().contains_key(*name));
            }
            prop_assert!(output.ends_with(response.body()));
        }
    }

    #[test]
    fn well_formed_output_round_trips(
        status in prop::option::of(200u16..=599),
        reason in "( [A-Za-z ]{0,10})?",
        headers in prop::collection::vec((header_name(), header_value()), 0..12),
        crlf in any::<bool>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let eol = if crlf { "\r\n" } else { "\n" };
        let mut output = Vec::new();
        if let Some(status) = status {
            output.extend_from_slice(format!("Status: {status}{reason}{eol}").as_bytes());
        }
        for (name, value) in &headers {
            output.extend_from_slice(format!("{name}: ").as_bytes());
            output.extend_from_slice(value);
            output.extend_from_slice(eol.as_bytes());
        }
        output.extend_from_slice(eol.as_bytes());
        output.extend_from_slice(&body);

        if status.is_none() && headers.is_empty() {
            // A blank first line: no headers at all.
            prop_assert!(parse_cgi(&output).is_err());
            return Ok(());
        }
        let response = parse_cgi(&output).map_err(TestCaseError::fail)?;
        let kept: Vec<(String, Vec<u8>)> = headers
            .iter()
            .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
            .filter(|(n, _)| !DROPPED.contains(&n.as_str()))
            .collect();
        let expected_status = status.unwrap_or(
            if kept.iter().any(|(n, _)| n == "location") { 302 } else { 200 },
        );
        prop_assert_eq!(response.status().as_u16(), expected_status);
        let got: Vec<(String, Vec<u8>)> = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        // The header map groups by name, keeping each name's order.
        let mut expected = kept.clone();
        let order: Vec<&String> = {
            let mut seen = Vec::new();
            for (n, _) in &kept {
                if !seen.contains(&n) { seen.push(n); }
            }
            seen
        };
        expected.sort_by_key(|(n, _)| order.iter().position(|o| *o == n));
        let mut got_sorted = got.clone();
        got_sorted.sort_by_key(|(n, _)| order.iter().position(|o| *o == n));
        prop_assert_eq!(got_sorted, expected);
        prop_assert_eq!(response.body().as_ref(), &body[..]);
        prop_assert!(!response.headers().contains_key(header::CONTENT_LENGTH));
    }
}
