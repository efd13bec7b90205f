//! Admin upload parsing (multipart/form-data, boundary `B`): any body, cut
//! into chunks, is refused or gives a bundle within the limits.
//!
//! Input: part limit (u16 LE), total limit (u16 LE), chunk size (1 byte),
//! then the body, so a seed is a real upload behind five bytes (see
//! `fuzz/corpus/multipart_upload/`).
#![no_main]

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;
use wasmgate::admin::{UploadLimits, parse_upload};

fuzz_target!(|data: &[u8]| {
    let [p0, p1, t0, t1, cut, body @ ..] = data else {
        return;
    };
    let limits = UploadLimits {
        part_bytes: u16::from_le_bytes([*p0, *p1]).into(),
        total_bytes: u16::from_le_bytes([*t0, *t1]).into(),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("multipart/form-data; boundary=B"),
    );
    let chunks: Vec<Result<Bytes, std::io::Error>> = body
        .chunks(usize::from(*cut % 64) + 1)
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    let parsed = parse_upload(&headers, futures::stream::iter(chunks), limits);
    if let Ok(bundle) = futures::executor::block_on(parsed) {
        assert!(body.len() as u64 <= limits.total_bytes);
        assert!(bundle.main.len() as u64 <= limits.part_bytes);
        assert!(
            bundle
                .parts
                .values()
                .all(|p| p.len() as u64 <= limits.part_bytes)
        );
    }
});
