//! Property tests: the stable, bounded counterparts of the cargo-fuzz targets
//! in `fuzz/` (module keys, routes, deploy metadata, CGI output, multipart
//! uploads, Lambda events). Each runs a bounded number of random cases in
//! `make test`; `PROPTEST_CASES=100000 cargo test --test integration fuzz`
//! runs longer. Each checks what the parser promises, not only that it does
//! not panic.

use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;

/// `n` cases, or `PROPTEST_CASES` when set; no regression files (what a
/// run finds becomes a unit test next to the code).
fn cases(n: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

mod cgi_output;
mod deploy_metadata;
#[cfg(feature = "lambda")]
mod lambda_event;
mod module_key;
#[cfg(feature = "http")]
mod multipart_upload;
mod route_match;
