//! The smallest useful wasmgate function: a wasi:http component that greets
//! the caller and tells them which path they asked for.
//!
//! Build: `make examples` (needs `rustup target add wasm32-wasip2`), then
//! `wasmgate deploy examples/hello-rust/hello.wasm --route /hello`.

use std::io::Write as _;

use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_else(|| "/".to_string());

        let headers = Fields::new();
        headers
            .set("content-type", &[b"text/plain; charset=utf-8".to_vec()])
            .expect("content-type is a valid header");
        let response = OutgoingResponse::new(headers);
        let body = response.body().expect("a new response has a body");
        ResponseOutparam::set(response_out, Ok(response));

        let mut out = body.write().expect("the body stream is writable once");
        let greeting = format!("Hello from wasmgate! You asked for {path}\n");
        out.write_all(greeting.as_bytes())
            .expect("writing to the response body");
        out.flush().expect("flushing the response body");
        drop(out);
        OutgoingBody::finish(body, None).expect("finishing the response body");
    }
}
