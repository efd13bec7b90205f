"""A wasi:http handler in Python, built with componentize-py (see README.md).

GET  <anything>        -> "hello from Python <path>" (+ "greeting: ..." if GREETING is set)
POST <prefix>/echo     -> the request body, streamed back as it arrives

wasmgate does not strip the route prefix, so with `--route /py` the echo path
is /py/echo; under `wasmtime serve` it is /echo.
"""

import os

from componentize_py_types import Ok, Err
from wit_world import exports
from wit_world.imports.streams import StreamError_Closed
from wit_world.imports.types import (
    Fields,
    IncomingBody,
    IncomingRequest,
    Method_Post,
    OutgoingBody,
    OutgoingResponse,
    ResponseOutparam,
)

# wasi:io output streams take at most 4096 bytes per blocking_write_and_flush.
CHUNK = 4096


def write_all(stream, data: bytes) -> None:
    for i in range(0, len(data), CHUNK):
        stream.blocking_write_and_flush(data[i : i + CHUNK])


def respond(response_out: ResponseOutparam, status: int, body: bytes) -> None:
    headers = Fields.from_list(
        [
            ("content-type", b"text/plain; charset=utf-8"),
            ("content-length", str(len(body)).encode()),
        ]
    )
    response = OutgoingResponse(headers)
    response.set_status_code(status)
    out_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))
    with out_body.write() as stream:
        write_all(stream, body)
    OutgoingBody.finish(out_body, None)


def echo(request: IncomingRequest, response_out: ResponseOutparam) -> None:
    content_type = b"application/octet-stream"
    for key, value in request.headers().entries():
        if key.lower() == "content-type":
            content_type = value
    response = OutgoingResponse(Fields.from_list([("content-type", content_type)]))
    out_body = response.body()
    ResponseOutparam.set(response_out, Ok(response))

    in_body = request.consume()
    with in_body.stream() as source, out_body.write() as sink:
        while True:
            try:
                chunk = source.blocking_read(CHUNK)
            except Err as e:
                if isinstance(e.value, StreamError_Closed):
                    break
                raise
            write_all(sink, chunk)
    IncomingBody.finish(in_body)
    OutgoingBody.finish(out_body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request: IncomingRequest, response_out: ResponseOutparam) -> None:
        target = request.path_with_query() or "/"
        path = target.split("?", 1)[0]

        if isinstance(request.method(), Method_Post) and (
            path == "/echo" or path.endswith("/echo")
        ):
            echo(request, response_out)
            return

        text = f"hello from Python {path}\n"
        greeting = os.environ.get("GREETING")  # a deploy binding
        if greeting is not None:
            text += f"greeting: {greeting}\n"
        respond(response_out, 200, text.encode())
