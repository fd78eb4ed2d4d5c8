//! The one client the edge has toward servers: a connector ([`connect`]: an address ▸ a
//! connection; [`open`]: a server of an upstream ▸ a connection in the upstream's protocol,
//! over TLS when it has `tls`) and the exchanges on it ([`super::h1`], [`super::h2`]).
//! Forwarded requests use them directly (with the pools); the edge's own requests go through
//! [`ask`]: active health probes, OCSP fetches, and the CLI's calls to a running edge's admin
//! listener.

use super::exchange::Exchange as AnyExchange;
use super::h1::{self, Connection, Exchange, Upload};
use super::Upstream;
use crate::config::UpstreamProtocol;
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName};
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use std::net::SocketAddr;
use std::time::Duration;

/// Opens a connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Stream> {
    let tcp = connect_tcp(addr, timeout).await?;
    Ok(crate::tcp::Tcp::boxed(tcp, addr))
}

/// A new connection to a server, in the protocol it will carry.
pub enum Opened {
    /// HTTP/1.1 (`protocol = "http1"`, a websocket's connection, or `"auto"` when the server
    /// chose it).
    H1(Stream),
    /// HTTP/2, its handshake done.
    H2(super::h2::Connection),
}

/// Opens a connection to a server of `upstream` (`host`, as configured, at `addr`) within
/// `timeout` (the upstream's `connect_timeout` for requests), the TLS handshake included
/// when it has `tls` (as nginx bounds its upstream handshake). A handshake that fails (a certificate not trusted or not for the
/// name, a server refusing the client certificate, no h2 where `protocol = "h2"` needs it) is
/// a connect error naming the cause: the server saw no request.
pub async fn open(
    upstream: &Upstream,
    host: &str,
    addr: SocketAddr,
    upgrade: bool,
    timeout: Duration,
) -> Result<Opened> {
    let settings = &upstream.settings;
    let started = std::time::Instant::now();
    let tcp = connect_tcp(addr, timeout).await?;
    let stream = match &upstream.tls {
        None => {
            if settings.protocol == UpstreamProtocol::H2 && !upgrade {
                let stream = crate::tcp::Tcp::boxed(tcp, addr);
                let left = timeout.saturating_sub(started.elapsed());
                return Ok(Opened::H2(
                    super::h2::Connection::handshake(stream, left).await?,
                ));
            }
            return Ok(Opened::H1(crate::tcp::Tcp::boxed(tcp, addr)));
        }
        Some(Err(problem)) => {
            return Error::e_explain(
                ErrorType::ConnectError,
                format!(
                    "upstream `{}`: its TLS files cannot be used: {problem}",
                    upstream.name
                ),
            )
        }
        Some(Ok(tls)) => {
            let _ = tcp.set_nodelay(true);
            let left = timeout.saturating_sub(started.elapsed());
            let host = host_of(host);
            match tokio::time::timeout(left, tls.handshake(tcp, host, addr, upgrade)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    return Error::e_because(
                        ErrorType::ConnectError,
                        format!("the TLS handshake with {addr}"),
                        e,
                    )
                }
                Err(_) => {
                    return Error::e_explain(
                        ErrorType::ConnectTimedout,
                        format!("the TLS handshake with {addr}"),
                    )
                }
            }
        }
    };
    if matches!(
        stream.selected_alpn_proto(),
        Some(pingora::protocols::ALPN::H2)
    ) {
        let left = timeout.saturating_sub(started.elapsed());
        return Ok(Opened::H2(
            super::h2::Connection::handshake(stream, left).await?,
        ));
    }
    Ok(Opened::H1(stream))
}

/// The host of a `host[:port]` (the name a server's certificate is verified for).
fn host_of(host_port: &str) -> &str {
    if let Some(rest) = host_port.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host_port.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => host_port,
    }
}

/// A TCP connection to `addr` within `timeout`.
async fn connect_tcp(addr: SocketAddr, timeout: Duration) -> Result<tokio::net::TcpStream> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => Ok(tcp),
        Ok(Err(e)) => {
            let etype = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                ErrorType::ConnectRefused
            } else {
                ErrorType::ConnectError
            };
            Error::e_because(etype, format!("connecting to {addr}"), e)
        }
        Err(_) => Error::e_explain(ErrorType::ConnectTimedout, format!("connecting to {addr}")),
    }
}

/// A request of the edge's own.
pub struct Ask<'a> {
    pub method: &'a str,
    /// The request target (a path and query).
    pub target: &'a str,
    pub host: &'a str,
    /// More header fields.
    pub fields: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// A whole answer.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
    /// Its `grpc-status` (in the trailers, or a trailers-only head).
    pub grpc_status: Option<u8>,
}

/// Sends `ask` on `connection` and reads the answer whole (its body at most `max_body`
/// bytes), all within `timeout`. The connection comes back when it can carry another
/// request. A connection the server had closed while idle fails with an error whose `retry`
/// is `ReusedOnly` (nothing of an answer arrived): the caller may ask again on a new one.
pub async fn ask(
    connection: Connection,
    ask: &Ask<'_>,
    max_body: usize,
    timeout: Duration,
) -> Result<(Answer, Option<Connection>)> {
    within(timeout, exchange(connection, ask, max_body, timeout)).await
}

async fn exchange(
    connection: Connection,
    ask: &Ask<'_>,
    max_body: usize,
    timeout: Duration,
) -> Result<(Answer, Option<Connection>)> {
    let mut up = Exchange::new(connection, timeout, timeout);
    let out = up.head_buffer();
    out.extend_from_slice(ask.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(ask.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    h1::write_field(out, &header::HOST, ask.host.as_bytes());
    for (name, value) in ask.fields {
        let name = HeaderName::from_bytes(name.as_bytes())
            .or_else(|_| Error::e_explain(ErrorType::InternalError, "a bad header name"))?;
        h1::write_field(out, &name, value.as_bytes());
    }
    if !ask.body.is_empty() || ask.method == "POST" || ask.method == "PUT" {
        let mut digits = itoa::Buffer::new();
        h1::write_field(
            out,
            &header::CONTENT_LENGTH,
            digits.format(ask.body.len()).as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    let body = (!ask.body.is_empty()).then_some(ask.body);
    up.send_head(
        Upload::Length(ask.body.len() as u64),
        ask.method == "HEAD",
        body,
    )
    .await?;
    let mut up = AnyExchange::H1(up);
    let answer = whole_answer(&mut up, max_body).await?;
    let kept = match up {
        AnyExchange::H1(up) => up.into_reusable(),
        AnyExchange::H2(_) => None,
    };
    Ok((answer, kept))
}

/// The answer's final head and its whole body (at most `max_body` bytes), with the
/// `grpc-status` its trailers or its trailers-only head carry: on either protocol.
async fn whole_answer(up: &mut AnyExchange, max_body: usize) -> Result<Answer> {
    let head = loop {
        let head = up.read_response().await?;
        if !head.status.is_informational() {
            break head;
        }
    };
    let mut body = BytesMut::new();
    if !up.is_body_done() {
        while let Some(piece) = up.read_body().await? {
            if body.len() + piece.len() > max_body {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    format!("an answer body over {max_body} bytes"),
                );
            }
            body.extend_from_slice(&piece);
        }
    }
    let trailers = up.take_trailers();
    Ok(Answer {
        status: head.status.as_u16(),
        body: body.freeze(),
        grpc_status: trailers
            .as_ref()
            .and_then(crate::grpc::status)
            .or_else(|| crate::grpc::status(&head.headers)),
    })
}

/// `exchange` within `timeout`, or a read timeout that says so.
async fn within<T>(
    timeout: Duration,
    exchange: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(done) => done,
        Err(_) => Error::e_explain(
            ErrorType::ReadTimedout,
            format!("no whole answer within {}s", timeout.as_secs_f64()),
        ),
    }
}

/// Sends `ask` on a stream of an HTTP/2 `connection` (`scheme` as the server is reached) and
/// reads the answer whole (its body at most `max_body` bytes) and its trailers, all within
/// `timeout`.
pub async fn ask_h2(
    connection: &super::h2::Connection,
    scheme: &str,
    ask: &Ask<'_>,
    max_body: usize,
    timeout: Duration,
) -> Result<Answer> {
    let exchange = async {
        let uri = http::Uri::builder()
            .scheme(scheme)
            .authority(ask.host)
            .path_and_query(ask.target)
            .build()
            .map_err(|e| Error::because(ErrorType::InternalError, "a request target", e))?;
        let mut request = http::Request::new(());
        *request.method_mut() = http::Method::from_bytes(ask.method.as_bytes())
            .map_err(|e| Error::because(ErrorType::InternalError, "a method", e))?;
        *request.uri_mut() = uri;
        *request.version_mut() = http::Version::HTTP_2;
        for (name, value) in ask.fields {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| Error::because(ErrorType::InternalError, "a header name", e))?;
            let value = http::HeaderValue::from_str(value)
                .map_err(|e| Error::because(ErrorType::InternalError, "a header value", e))?;
            request.headers_mut().append(name, value);
        }
        let mut up = super::h2::Exchange::start(
            connection.clone(),
            request,
            ask.body.is_empty(),
            timeout,
            timeout,
        )
        .await?;
        if !ask.body.is_empty() {
            up.write_body(Bytes::copy_from_slice(ask.body), true)
                .await?;
        }
        whole_answer(&mut AnyExchange::H2(up), max_body).await
    };
    within(timeout, exchange).await
}

/// Sends `ask` to `addr` on a new connection, within `timeout` in all (connect included).
pub async fn ask_once(
    addr: SocketAddr,
    ask: &Ask<'_>,
    max_body: usize,
    timeout: Duration,
) -> Result<Answer> {
    let started = std::time::Instant::now();
    let stream = connect(addr, timeout).await?;
    let left = timeout.saturating_sub(started.elapsed());
    Ok(self::ask(Connection::new(stream), ask, max_body, left)
        .await?
        .0)
}
