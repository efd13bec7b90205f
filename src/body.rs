//! The one body type that crosses the gateway, in both directions: a boxed,
//! streaming `http_body::Body` of `Bytes`. Fronts convert to and from it at
//! the edge; the runtime streams guest output through it.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

/// Any error a body can fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming request or response body.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes`, sent in one frame.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// `body`, failing once more than `limit` bytes have come through; the
/// flag turns true then, so the caller can answer 413 whatever the reader
/// made of the error.
pub fn limited(
    body: Body,
    limit: u64,
    tripped: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Body {
    Limited {
        inner: body,
        left: limit,
        limit,
        tripped,
    }
    .boxed_unsync()
}

/// The request body was larger than the limit.
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

struct Limited {
    inner: Body,
    left: u64,
    limit: u64,
    tripped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Limited {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.left {
                        this.tripped
                            .store(true, std::sync::atomic::Ordering::Relaxed);
                        this.left = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                    this.left -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
