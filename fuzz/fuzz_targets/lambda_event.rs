//! Lambda event → request: any invocation payload is either refused or
//! becomes a request with a path the gateway can route. Seeds:
//! `fuzz/corpus/lambda_event/` (the real events of tests/data).
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasmgate::front::lambda::{parse_event, to_gateway_request};

fuzz_target!(
    init: {
        // `parse_event` catches the panic lambda_http raises on an event whose
        // URI it cannot build (and answers 400). Ignore those; any other
        // panic still aborts through libfuzzer-sys's hook.
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let caught_by_parse_event = info
                .location()
                .is_some_and(|l| l.file().contains("lambda_http"));
            if !caught_by_parse_event {
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
