//! Lambda event → request: any invocation payload is either refused or
//! becomes a request with a path the gateway can route. Seeds:
//! `fuzz/seeds/lambda_event/` (the events of tests/data and the peer
//! fixtures, see fuzz/README.md).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::front::lambda::{in_event_conversion, parse_event, to_gateway_request};

fuzz_target!(
    init: {
        // `parse_event` catches the panics of lambda_http's conversion (a
        // URI it cannot build; a body marked base64 that is not, which
        // panics in aws_lambda_events, not in lambda_http) and answers 400.
        // Ignore exactly those, as the server's own hook does; any other
        // panic still aborts through libfuzzer-sys's hook.
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !in_event_conversion() {
                fuzzer_hook(info);
            }
        }));
    },
    |data: &[u8]| {
        if let Ok(request) = parse_event(data) {
            let (request, _info) = to_gateway_request(request);
            let path = request.uri().path();
            assert!(path.starts_with('/'), "{path:?}");
        }
    }
);
