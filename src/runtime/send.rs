//! Sends a guest's outbound request over a connection to an address the
//! [`OutboundPolicy`](super::outbound::OutboundPolicy) checked: the name is
//! resolved once (by the caller), and the TCP connection is made to a
//! `SocketAddr`, never to a name, so nothing is looked up again.
//!
//! The rest is wasmtime-wasi-http 48.0.8's `default_send_request`
//! (src/default_send_request.rs, Apache-2.0 WITH LLVM-exception, the
//! Bytecode Alliance), kept as it is there: TLS with rustls and the webpki
//! roots, the server name from the request's host, an HTTP/1 handshake,
//! and the `RequestOptions` timeouts with the same 600 s defaults. Only the
//! connect changed: `TcpStream::connect(&authority)` resolved the name
//! itself.

use core::future::poll_fn;
use core::pin::{Pin, pin};
use core::task::{Poll, ready};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions};

trait TokioStream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {
    fn boxed(self) -> Box<dyn TokioStream>
    where
        Self: Sized,
    {
        Box::new(self)
    }
}
impl<T> TokioStream for T where T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

/// wasmtime's default for each of the `RequestOptions` timeouts.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The connect timeout the guest asked for, or wasmtime's default.
pub(crate) fn connect_timeout(options: Option<RequestOptions>) -> Duration {
    options
        .and_then(|r| r.connect_timeout)
        .unwrap_or(DEFAULT_TIMEOUT)
}

/// The TLS client configuration: webpki's roots, as wasmtime's. Built once.
static TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| {
    let root_cert_store = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(root_cert_store)
            .with_no_client_auth(),
    )
});

/// Connects to `addresses` one after the other until one answers, all
/// within `until`: the last error when none does.
pub(crate) async fn connect(
    addresses: &[SocketAddr],
    until: tokio::time::Instant,
) -> Result<TcpStream, Error> {
    let mut last = Error::Connect(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        "could not resolve to any addresses",
    ));
    for address in addresses {
        match tokio::time::timeout_at(until, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(error)) => last = Error::Connect(error),
            Err(_) => return Err(Error::ConnectionTimeout),
        }
    }
    Err(last)
}

/// Sends `req` over `stream` (already connected to a checked address):
/// TLS for `https` with `host` as the server name, then HTTP/1.
pub(crate) async fn send_over(
    mut req: Request<impl http_body::Body<Data = Bytes, Error = Error> + Send + 'static>,
    options: Option<RequestOptions>,
    stream: TcpStream,
    host: String,
) -> Result<
    (
        Response<impl http_body::Body<Data = Bytes, Error = Error>>,
        impl Future<Output = Result<(), Error>> + Send,
    ),
    Error,
> {
    let use_tls = req.uri().scheme() == Some(&http::uri::Scheme::HTTPS);
    let connect_timeout = connect_timeout(options);
    let first_byte_timeout = options
        .and_then(|r| r.first_byte_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);
    let between_bytes_timeout = options
        .and_then(|r| r.between_bytes_timeout)
        .unwrap_or(DEFAULT_TIMEOUT);

    let stream = if use_tls {
        let connector = tokio_rustls::TlsConnector::from(TLS.clone());
        let domain = tls_server_name(&host)?;
        let stream = connector
            .connect(domain, stream)
            .await
            .map_err(Error::Tls)?;
        stream.boxed()
    } else {
        stream.boxed()
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // at this point, the request contains the scheme and the authority, but
    // the http packet should only include those if addressing a proxy, so
    // remove them here, since SendRequest::send_request does not do it for us
    *req.uri_mut() = http::Uri::builder()
        .path_and_query(
            req.uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/"),
        )
        .build()
        .expect("comes from valid request");

    let send = async move {
        use core::task::Context;

        /// Wrapper around [hyper::body::Incoming] used to
        /// account for request option timeout configuration
        struct IncomingResponseBody {
            incoming: hyper::body::Incoming,
            timeout: tokio::time::Interval,
        }
        impl http_body::Body for IncomingResponseBody {
            type Data = <hyper::body::Incoming as http_body::Body>::Data;
            type Error = Error;

            fn poll_frame(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
                match Pin::new(&mut self.as_mut().incoming).poll_frame(cx) {
                    Poll::Ready(None) => Poll::Ready(None),
                    Poll::Ready(Some(Err(err))) => {
                        let err = if err.is_timeout() {
                            Error::HttpResponseTimeout
                        } else {
                            Error::from(err)
                        };
                        Poll::Ready(Some(Err(err)))
                    }
                    Poll::Ready(Some(Ok(frame))) => {
                        self.timeout.reset();
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Pending => {
                        ready!(self.timeout.poll_tick(cx));
                        Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
                    }
                }
            }
            fn is_end_stream(&self) -> bool {
                self.incoming.is_end_stream()
            }
            fn size_hint(&self) -> http_body::SizeHint {
                self.incoming.size_hint()
            }
        }

        let res = tokio::time::timeout(first_byte_timeout, sender.send_request(req))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)?
            .map_err(Error::from)?;
        // Tokio panics on an `interval` with a zero duration, so clamp it to a
        // 1ns timeout which is sort of effectively zero anyway.
        let between_bytes_timeout = if between_bytes_timeout == Duration::ZERO {
            Duration::new(0, 1)
        } else {
            between_bytes_timeout
        };
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        Ok(res.map(|incoming| IncomingResponseBody { incoming, timeout }))
    };
    let mut send = pin!(send);
    let mut conn = Some(conn);
    // Wait for response while driving connection I/O
    let res = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(Ok(res)) => Poll::Ready(Ok(res)),
        Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
        Poll::Pending => {
            // Response is not ready, poll `hyper` connection to drive I/O if it has not completed yet
            let Some(fut) = conn.as_mut() else {
                // `hyper` connection already completed
                return Poll::Pending;
            };
            let res = ready!(Pin::new(fut).poll(cx));
            // `hyper` connection completed, record that to prevent repeated poll
            conn = None;
            match res {
                // `hyper` connection has successfully completed, optimistically poll for response
                Ok(()) => send.as_mut().poll(cx),
                // `hyper` connection has failed, return the error
                Err(err) => Poll::Ready(Err(Error::from(err))),
            }
        }
    })
    .await?;
    Ok((res, async move {
        let Some(conn) = conn.take() else {
            // `hyper` connection has already completed
            return Ok(());
        };
        if let Err(err) = conn.await {
            if err.is_timeout() {
                return Err(Error::HttpResponseTimeout);
            }
            return Err(err.into());
        }
        Ok(())
    }))
}

/// The rustls server name for `host` (a name, or an address without
/// brackets), as wasmtime's `tls_server_name` makes it from the authority.
fn tls_server_name(
    host: &str,
) -> Result<rustls::pki_types::ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    use rustls::pki_types::ServerName;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ServerName::from(ip));
    }
    Ok(ServerName::try_from(host)?.to_owned())
}

#[cfg(test)]
mod tests {
    use super::tls_server_name;
    use rustls::pki_types::ServerName;

    #[test]
    fn server_names_are_the_request_host() {
        assert_eq!(
            tls_server_name("example.com").unwrap(),
            ServerName::try_from("example.com").unwrap()
        );
        assert_eq!(
            tls_server_name("::1").unwrap(),
            ServerName::from(std::net::Ipv6Addr::LOCALHOST)
        );
        assert_eq!(
            tls_server_name("127.0.0.1").unwrap(),
            ServerName::from(std::net::Ipv4Addr::LOCALHOST)
        );
    }
}
