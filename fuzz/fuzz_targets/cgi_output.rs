//! CGI output parsing (WAGI guests' stdout): never panics; what it accepts
//! has a final status, none of the framing headers the host sets, and the
//! bytes after the headers as its body.
#![no_main]

use libfuzzer_sys::fuzz_target;
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

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = parse_cgi(data) {
        assert!((200..=599).contains(&response.status().as_u16()));
        for name in DROPPED {
            assert!(!response.headers().contains_key(*name), "{name} kept");
        }
        assert!(data.ends_with(response.body()));
    }
});
