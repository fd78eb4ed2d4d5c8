//! The one client the edge has toward servers: a connector ([`connect`]: an address ▸ a
//! connection) and the HTTP/1.1 exchange on it ([`super::h1`]). Forwarded requests use them
//! directly (with the pool); the edge's own requests go through [`ask`]: active health
//! probes, OCSP fetches, and the CLI's calls to a running edge's admin listener.

use super::h1::{self, Connection, Exchange, Upload};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName};
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};
use std::net::SocketAddr;
use std::time::Duration;

/// Opens a connection to `addr` within `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Stream> {
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => Ok(crate::tcp::Tcp::boxed(tcp, addr)),
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
    match tokio::time::timeout(timeout, exchange(connection, ask, max_body, timeout)).await {
        Ok(done) => done,
        Err(_) => Error::e_explain(
            ErrorType::ReadTimedout,
            format!("no whole answer within {}s", timeout.as_secs_f64()),
        ),
    }
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
    let head = loop {
        let head = up.read_response().await?;
        if !head.status.is_informational() {
            break head;
        }
    };
    let mut body = BytesMut::new();
    while let Some(piece) = up.read_body().await? {
        if body.len() + piece.len() > max_body {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("an answer body over {max_body} bytes"),
            );
        }
        body.extend_from_slice(&piece);
    }
    let answer = Answer {
        status: head.status.as_u16(),
        body: body.freeze(),
    };
    Ok((answer, up.into_reusable()))
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
