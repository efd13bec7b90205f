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

/// What became of a request body on its way to the guest, whatever the
/// guest made of it: the gateway answers 413 or 400 from this, not from
/// the guest's answer (a guest may take a failed read for the end).
#[derive(Debug, Default)]
pub struct BodyWatch(std::sync::atomic::AtomicU8);

const BODY_TOO_LARGE: u8 = 1;
const BODY_BROKEN: u8 = 2;
const BODY_TOO_SLOW: u8 = 3;

/// How long a client has for its request body: [`BODY_TIMEOUT`] to begin
/// with, and one more second for every [`BODY_MIN_RATE`] bytes it sends (the
/// rule of Apache's mod_reqtimeout, `body=10,MinRate=1000`). A client
/// that sends slower gets a 408: a byte a second cannot hold a guest's
/// instance slot for the whole deadline.
pub const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bytes a second that keep a request body's read timeout moving.
pub const BODY_MIN_RATE: u64 = 1000;

impl BodyWatch {
    /// More than the limit came through.
    pub fn too_large(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == BODY_TOO_LARGE
    }

    /// The client's body failed: bad chunked framing, a connection cut
    /// before the length it announced.
    pub fn broken(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == BODY_BROKEN
    }

    /// The client sent its body slower than [`BODY_MIN_RATE`] allows.
    pub fn too_slow(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed) == BODY_TOO_SLOW
    }

    fn set(&self, what: u8) {
        let _ = self.0.compare_exchange(
            0,
            what,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// `body`, failing once more than `limit` bytes have come through, or when
/// it comes slower than [`BODY_MIN_RATE`] allows; `watch` records that, and
/// a failure of `body` itself, so the caller can answer 413, 408 or 400
/// whatever the reader made of the error.
pub fn limited(body: Body, limit: u64, watch: std::sync::Arc<BodyWatch>) -> Body {
    Limited {
        inner: body,
        left: limit,
        limit,
        watch,
        allowance: BODY_TIMEOUT,
        waiting_since: None,
        timeout: Box::pin(tokio::time::sleep(BODY_TIMEOUT)),
    }
    .boxed_unsync()
}

/// The request body came slower than [`BODY_MIN_RATE`] allows.
#[derive(Debug, thiserror::Error)]
#[error("the request body came too slowly (under {BODY_MIN_RATE} bytes a second)")]
pub struct BodyTooSlow;

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
    watch: std::sync::Arc<BodyWatch>,
    /// How much longer the client may keep the reader waiting: time spent
    /// waiting for it is taken off, each byte it sends adds to it. Time the
    /// guest takes before it reads is not the client's.
    allowance: std::time::Duration,
    waiting_since: Option<tokio::time::Instant>,
    timeout: std::pin::Pin<Box<tokio::time::Sleep>>,
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
        let polled = std::pin::Pin::new(&mut this.inner).poll_frame(cx);
        if !polled.is_pending()
            && let Some(since) = this.waiting_since.take()
        {
            this.allowance = this.allowance.saturating_sub(since.elapsed());
        }
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > this.left {
                        this.watch.set(BODY_TOO_LARGE);
                        this.left = 0;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                            limit: this.limit,
                        }))));
                    }
                    this.left -= len;
                    this.allowance += std::time::Duration::from_millis(len * 1000 / BODY_MIN_RATE);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.watch.set(BODY_BROKEN);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Pending => {
                if this.waiting_since.is_none() {
                    let now = tokio::time::Instant::now();
                    this.waiting_since = Some(now);
                    this.timeout.as_mut().reset(now + this.allowance);
                }
                if this.timeout.as_mut().poll(cx).is_ready() {
                    this.watch.set(BODY_TOO_SLOW);
                    return Poll::Ready(Some(Err(Box::new(BodyTooSlow))));
                }
                Poll::Pending
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
