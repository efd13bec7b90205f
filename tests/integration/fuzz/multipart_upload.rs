//! Admin uploads (`admin::parse_upload`): within the limits, truncation
//! refused, well-formed uploads round-trip.

use super::*;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use wasmgate::admin::{UploadError, UploadLimits, parse_upload};
use wasmgate::deploy::DeployBundle;

/// Parses `body`, fed in pieces cut at `cuts`, with a deadline: a parser
/// that waits for input that will never come is a bug too.
fn parse(
    content_type: &str,
    declared: Option<u64>,
    body: &[u8],
    cuts: &[Index],
    limits: UploadLimits,
) -> Result<DeployBundle, UploadError> {
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Some(declared) = declared {
        headers.insert(header::CONTENT_LENGTH, declared.into());
    }
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(body.len() + 1)).collect();
    points.extend([0, body.len()]);
    points.sort_unstable();
    points.dedup();
    let chunks: Vec<Result<Bytes, std::io::Error>> = points
        .windows(2)
        .map(|w| Ok(Bytes::copy_from_slice(&body[w[0]..w[1]])))
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            parse_upload(&headers, futures::stream::iter(chunks), limits),
        )
        .await
        .expect("the upload parser hangs on a complete body")
    })
}

fn part_name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 é._-]{1,8}".prop_filter("not metadata", |n| n != "metadata")
}

proptest! {
    #![proptest_config(cases(500))]

    #[test]
    fn arbitrary_bodies_never_panic_nor_pass_the_limits(
        body in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..400),
            "(--B|\r\n|Content-Disposition: form-data; name=\"[a-z]{1,8}\"|[a-z{}\":]{0,9}){0,24}"
                .prop_map(String::into_bytes),
        ],
        cuts in prop::collection::vec(any::<Index>(), 0..6),
        part_bytes in 0u64..200,
        total_bytes in 0u64..500,
    ) {
        let limits = UploadLimits { part_bytes, total_bytes };
        if let Ok(bundle) = parse("multipart/form-data; boundary=B", None, &body, &cuts, limits) {
            prop_assert!(bundle.main.len() as u64 <= part_bytes);
            prop_assert!(bundle.parts.values().all(|p| p.len() as u64 <= part_bytes));
            prop_assert!(body.len() as u64 <= total_bytes);
        }
    }

    #[test]
    fn a_well_formed_upload_round_trips(
        parts in prop::collection::btree_map(part_name(), prop::collection::vec(any::<u8>(), 0..200), 1..5),
        boundary in "[A-Za-z0-9]{16,40}",
        cuts in prop::collection::vec(any::<Index>(), 0..8),
        main_index in any::<Index>(),
        declared in any::<bool>(),
        part_bytes in 0u64..300,
        total_bytes in 0u64..2000,
        truncate in prop::option::of(any::<Index>()),
    ) {
        let main = parts.keys().nth(main_index.index(parts.len())).unwrap().clone();
        let metadata = serde_json::json!({"main_module": main}).to_string();
        let mut body = Vec::new();
        for (name, bytes) in std::iter::once(("metadata", metadata.as_bytes()))
            .chain(parts.iter().map(|(n, b)| (n.as_str(), b.as_slice())))
        {
            body.extend_from_slice(format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{name}.wasm\"\r\nContent-Type: application/wasm\r\n\r\n"
            ).as_bytes());
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        prop_assume!(!parts.values().any(|b| b.windows(boundary.len()).any(|w| w == boundary.as_bytes())));
        // Cut short anywhere before the closing `--boundary--` ends.
        if let Some(at) = truncate {
            body.truncate(at.index(body.len() - 2));
        }

        let limits = UploadLimits { part_bytes, total_bytes };
        let result = parse(
            &format!("multipart/form-data; boundary={boundary}"),
            declared.then_some(body.len() as u64),
            &body,
            &cuts,
            limits,
        );
        if truncate.is_some() {
            prop_assert!(result.is_err(), "a truncated upload was accepted: {:?}", result);
            return Ok(());
        }
        let fits = body.len() as u64 <= total_bytes
            && metadata.len() as u64 <= part_bytes
            && parts.values().all(|b| b.len() as u64 <= part_bytes);
        if fits {
            let bundle = result.map_err(|e| TestCaseError::fail(e.to_string()))?;
            let mut expected = parts.clone();
            let main_bytes = expected.remove(&main).unwrap();
            prop_assert_eq!(bundle.main.as_ref(), &main_bytes[..]);
            let got: BTreeMap<String, Vec<u8>> =
                bundle.parts.iter().map(|(n, b)| (n.clone(), b.to_vec())).collect();
            prop_assert_eq!(got, expected);
            prop_assert_eq!(bundle.metadata.main_module, Some(main));
        } else {
            let error = result.expect_err("over the limits, yet accepted");
            prop_assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", error);
        }
    }

    #[test]
    fn any_content_type_is_handled(content_type in any::<String>(), declared in prop::option::of(any::<u64>())) {
        let result = parse(&content_type, declared, b"", &[], UploadLimits::default());
        prop_assert!(result.is_err());
    }
}
