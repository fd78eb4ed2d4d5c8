//! The edge's own HTTP/1.1 server session, for the request most traffic is: a complete
//! HTTP/1.1 head without a body or an upgrade. Everything else goes to Pingora's session
//! ([`Head::Pingora`]), whose parser the framing checks were written against: a head that
//! needs more reads, one httparse refuses, a body (`Content-Length`, `Transfer-Encoding`),
//! `Expect`, `Upgrade`, CONNECT or a target that is not a path, HTTP/1.0.
//!
//! What it saves against Pingora's session, per request: the session objects and their
//! allocations (the session, its digest, the proxy session's cache and module contexts),
//! the head's map of original spellings, the response head built into a map and
//! serialised into a fresh buffer, and the 3.7 KB future that hands the connection back.
//! The head is parsed by httparse, as Pingora's is, into the same `RequestHeader`; the
//! response head is written as bytes with the `Date` and `Connection` fields Pingora adds;
//! compression is Pingora's compressor, driven here.

use super::{Compressor, Downstream};
use bytes::{Bytes, BytesMut};
use http::header;
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Stream;
use pingora::ErrorType;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The most header fields the own session takes; a head with more goes to Pingora's (which
/// takes 256).
const MAX_FIELDS: usize = 64;

/// What the connection knows of itself, found once for all its requests.
pub struct Conn {
    pub ssl: Option<Arc<SslDigest>>,
    pub peer: Option<IpAddr>,
}

impl Conn {
    pub fn of(stream: &Stream) -> Conn {
        Conn {
            ssl: stream.get_ssl_digest(),
            peer: stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip())),
        }
    }
}

/// A request head the own session serves.
pub struct Request {
    pub head: Box<RequestHeader>,
    /// The head as it arrived.
    pub raw: Bytes,
    /// The client asked to close after this request (`Connection: close`).
    pub close: bool,
}

/// What the bytes at the start of a connection's buffer are.
pub enum Head {
    /// A request the own session serves.
    Own(Request),
    /// Anything else, for Pingora's session.
    Pingora,
}

/// Reads the head at the start of `buf`; a head the own session serves is split off `buf`
/// (what follows it, a pipelined request, stays).
pub fn parse(buf: &mut BytesMut) -> Head {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        _ => return Head::Pingora,
    };
    if req.version != Some(1) {
        return Head::Pingora;
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Head::Pingora;
    };
    if method == "CONNECT" || !path.starts_with('/') {
        return Head::Pingora;
    }
    let mut close = false;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return Head::Pingora;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Head::Pingora;
                }
            }
        }
    }
    // Where each piece lies in the buffer, to take it from the frozen head without a copy.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let method = match Method::from_bytes(method.as_bytes()) {
        Ok(method) => method,
        Err(_) => return Head::Pingora,
    };
    let target = at(path.as_bytes());
    let mut places = [((0, 0), (0, 0)); MAX_FIELDS];
    let count = req.headers.len();
    for (place, field) in places.iter_mut().zip(req.headers.iter()) {
        *place = (at(field.name.as_bytes()), at(field.value));
    }
    let head = buf.split_to(len).freeze();
    let piece = |(start, len): (usize, usize)| start..start + len;
    let Ok(mut request) = RequestHeader::build_no_case(method, &head[piece(target)], Some(count))
    else {
        return pingora_after_all(buf, head);
    };
    request.set_version(Version::HTTP_11);
    for &(name, value) in &places[..count] {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[piece(name)]),
            HeaderValue::from_maybe_shared(head.slice(piece(value))),
        ) else {
            return pingora_after_all(buf, head);
        };
        if request.append_header(name, value).is_err() {
            return pingora_after_all(buf, head);
        }
    }
    Head::Own(Request {
        head: Box::new(request),
        raw: head,
        close,
    })
}

/// Puts a head back in front of the buffer for Pingora's session.
fn pingora_after_all(buf: &mut BytesMut, head: Bytes) -> Head {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(buf);
    *buf = whole;
    Head::Pingora
}

/// How the response body goes to the client.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Framing {
    /// No final head yet.
    Unset,
    /// No body (HEAD, 204, 304).
    None,
    /// `Content-Length`.
    Length,
    /// Chunked transfer coding.
    Chunked,
    /// Until the close.
    Close,
}

/// One request on the own session.
pub struct Session<'c> {
    stream: &'c mut Stream,
    conn: &'c Conn,
    /// Bytes after this request's head: a pipelined request, and what arrives while the
    /// server answers.
    rest: &'c mut BytesMut,
    req: Box<RequestHeader>,
    raw: Bytes,
    keepalive: bool,
    status: Option<StatusCode>,
    framing: Framing,
    body_sent: usize,
    compression: Compressor,
    /// The client closed while the server was answering.
    closed: bool,
    /// The client takes trailer fields (`TE: trailers`).
    te_trailers: bool,
}

impl<'c> Session<'c> {
    /// A request [`parse`] found for the own session, without compression until
    /// [`Self::compress`]; the connection may carry another request after it unless
    /// `last` or the client asked to close.
    pub fn new(
        stream: &'c mut Stream,
        conn: &'c Conn,
        rest: &'c mut BytesMut,
        request: Request,
        last: bool,
    ) -> Session<'c> {
        Session {
            stream,
            conn,
            rest,
            te_trailers: takes_trailers(&request.head),
            keepalive: !last && !request.close,
            req: request.head,
            raw: request.raw,
            status: None,
            framing: Framing::Unset,
            body_sent: 0,
            compression: Compressor::default(),
            closed: false,
        }
    }

    /// Compresses the response at `level` (0: not at all) in the coding the client prefers.
    pub fn compress(&mut self, level: u32) {
        self.compression = Compressor::new(level, &self.req);
    }

    /// Whether the connection can carry the next request: keep-alive, a whole response sent.
    pub fn reusable(&self) -> bool {
        self.keepalive && !self.closed && self.framing != Framing::Unset
    }

    async fn send(&mut self, bytes: &[u8], flush: bool, what: &'static str) -> Result<()> {
        if !bytes.is_empty() {
            self.stream
                .write_all(bytes)
                .await
                .map_err(|e| write_failed(e, what))?;
        }
        if flush {
            self.stream
                .flush()
                .await
                .map_err(|e| write_failed(e, what))?;
        }
        Ok(())
    }
}

impl Session<'_> {
    /// One chunk of a chunked body (nothing for no bytes).
    async fn chunk(&mut self, data: &[u8], flush: bool) -> Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        self.body_sent += data.len();
        let mut size = [0u8; 18];
        let size = chunk_size(&mut size, data.len());
        self.send(size, false, "writing body").await?;
        self.send(data, false, "writing body").await?;
        self.send(b"\r\n", flush, "writing body").await
    }
}

/// Whether a request's `TE` names `trailers`: the client takes trailer fields after a
/// chunked body.
pub fn takes_trailers(req: &RequestHeader) -> bool {
    req.headers.get_all(header::TE).iter().any(|v| {
        v.as_bytes().split(|&b| b == b',').any(|t| {
            t.split(|&b| b == b';')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
        })
    })
}

/// A write toward the client failed: `WriteTimedout` when the connection's send clock ran out
/// (`send_timeout`), a `WriteError` otherwise.
fn write_failed(e: std::io::Error, what: &'static str) -> Box<Error> {
    let etype = if super::clocks::is_send_timeout(&e) {
        ErrorType::WriteTimedout
    } else {
        ErrorType::WriteError
    };
    Error::because(etype, what, e)
}

/// `Some` when the fields have a Transfer-Encoding: whether chunked is the last coding of the
/// last one, the coding that frames the body (RFC 9112 6.3).
pub fn ends_chunked(headers: &http::HeaderMap) -> Option<bool> {
    let value = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()?;
    let last = value
        .as_bytes()
        .rsplit(|&b| b == b',')
        .next()
        .unwrap_or(b"");
    Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Writes a response head as Pingora's session does: for a final head, `Date` and
/// `Connection` set by the edge (replacing the server's); the status line; the fields in
/// their usual spelling (`Content-Type`), or as the edge spelled those it wrote itself.
fn write_head(out: &mut Vec<u8>, head: &mut ResponseHeader, keepalive: Option<bool>) {
    if let Some(keepalive) = keepalive {
        let connection = if keepalive { "keep-alive" } else { "close" };
        // Neither insert can fail: both values are valid.
        let _ = head.insert_header(
            header::DATE,
            pingora::protocols::http::date::get_cached_date(),
        );
        let _ = head.insert_header(header::CONNECTION, connection);
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    if let Some(reason) = head.get_reason_phrase() {
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    head.header_to_h1_wire(out);
    out.extend_from_slice(b"\r\n");
}

impl Downstream for Session<'_> {
    fn req_header(&self) -> &RequestHeader {
        &self.req
    }

    fn raw_head(&self) -> Option<Bytes> {
        Some(self.raw.clone())
    }

    fn ssl_digest(&self) -> Option<&SslDigest> {
        self.conn.ssl.as_deref()
    }

    fn peer_ip(&self) -> Option<IpAddr> {
        self.conn.peer
    }

    fn set_keepalive_off(&mut self) {
        self.keepalive = false;
    }

    fn is_upgrade_req(&self) -> bool {
        false
    }

    fn response_status(&self) -> Option<StatusCode> {
        self.status
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        0
    }

    fn compression_off(&mut self) {
        self.compression.off();
    }

    fn is_body_empty(&mut self) -> bool {
        true
    }

    async fn write_head(&mut self, mut head: Box<ResponseHeader>, end: bool) -> Result<()> {
        if self.framing != Framing::Unset {
            return Ok(());
        }
        let status = head.status;
        let mut out = Vec::with_capacity(512);
        if status.is_informational() {
            write_head(&mut out, &mut head, None);
            self.status = Some(status);
            return self.send(&out, true, "writing response header").await;
        }
        self.compression.head(&mut head, end);
        self.framing = if self.req.method == Method::HEAD
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            Framing::None
        } else if head.headers.contains_key(header::CONTENT_LENGTH) {
            Framing::Length
        } else if ends_chunked(&head.headers) == Some(true) {
            Framing::Chunked
        } else {
            Framing::Close
        };
        if self.framing == Framing::Close {
            self.keepalive = false;
        }
        write_head(&mut out, &mut head, Some(self.keepalive));
        self.status = Some(status);
        // A head without a length goes out at once: its body may come slowly.
        let flush = self.framing != Framing::Length;
        self.send(&out, flush, "writing response header").await
    }

    async fn write_body(&mut self, mut body: Option<Bytes>, end: bool) -> Result<()> {
        body = self.compression.body(body, end);
        let data = body.unwrap_or_default();
        if data.is_empty() && !end {
            return Ok(());
        }
        match self.framing {
            Framing::Unset | Framing::None => {}
            Framing::Length | Framing::Close => {
                self.body_sent += data.len();
                self.send(&data, true, "writing body").await?;
            }
            Framing::Chunked => {
                self.chunk(&data, !end).await?;
                if end {
                    self.send(b"0\r\n\r\n", true, "writing body").await?;
                }
            }
        }
        Ok(())
    }

    async fn write_trailers(&mut self, trailers: http::HeaderMap) -> Result<()> {
        if self.framing != Framing::Chunked || !self.te_trailers {
            return self.write_body(None, true).await;
        }
        // What the compressor still holds goes before the last chunk and the trailers.
        let tail = self.compression.body(None, true).unwrap_or_default();
        self.chunk(&tail, false).await?;
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(b"0\r\n");
        for (name, value) in &trailers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        self.send(&out, true, "writing trailers").await
    }

    async fn write_continue(&mut self) -> Result<()> {
        Ok(())
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        Ok(None)
    }

    async fn watch_idle(&mut self) -> Result<()> {
        // Read straight into `rest`: a buffer here would be part of every request's future.
        match self.stream.read_buf(self.rest).await {
            Ok(0) => {
                self.closed = true;
                Error::e_explain(
                    ErrorType::ConnectionClosed,
                    if self.status.is_none() {
                        "Prematurely before response header is sent"
                    } else {
                        "Prematurely before response body is complete"
                    },
                )
            }
            Ok(_) => {
                // A pipelined request: it waits for this one's answer.
                std::future::pending().await
            }
            Err(e) => {
                self.closed = true;
                Error::e_because(ErrorType::ReadError, "during HTTP body-or-idle state", e)
            }
        }
    }
}

/// `len` in hexadecimal (upper case, as Pingora writes it) with the line end, as a chunk
/// starts.
fn chunk_size(out: &mut [u8; 18], mut len: usize) -> &[u8] {
    let mut at = 16;
    loop {
        at -= 1;
        out[at] = b"0123456789ABCDEF"[len & 0xf];
        len >>= 4;
        if len == 0 {
            break;
        }
    }
    out[16] = b'\r';
    out[17] = b'\n';
    &out[at..]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn own(text: &[u8]) -> (Box<RequestHeader>, Bytes, bool, BytesMut) {
        let mut buf = BytesMut::from(text);
        match parse(&mut buf) {
            Head::Own(r) => (r.head, r.raw, r.close, buf),
            Head::Pingora => panic!("not own: {}", String::from_utf8_lossy(text)),
        }
    }

    fn pingoras(text: &[u8]) {
        let mut buf = BytesMut::from(text);
        assert!(
            matches!(parse(&mut buf), Head::Pingora),
            "{}",
            String::from_utf8_lossy(text)
        );
        assert_eq!(&buf[..], text, "the bytes are left for Pingora, whole");
    }

    #[test]
    fn a_plain_get_is_parsed_into_the_head_pingora_would_build() {
        let (req, raw, close, rest) = own(
            b"GET /api/x?y=1 HTTP/1.1\r\nHost: a.example\r\nX-Custom: v\r\nAccept: */*\r\n\r\nGET /next",
        );
        assert_eq!(req.method, Method::GET);
        assert_eq!(req.uri.path(), "/api/x");
        assert_eq!(req.raw_path(), b"/api/x?y=1");
        assert_eq!(req.version, Version::HTTP_11);
        assert_eq!(req.headers["host"], "a.example");
        assert_eq!(req.headers["x-custom"], "v");
        assert!(!close);
        assert!(raw.ends_with(b"\r\n\r\n"));
        assert_eq!(&rest[..], b"GET /next", "a pipelined request stays");
        let (_, _, close, _) = own(b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n");
        assert!(close);
    }

    #[test]
    fn what_the_own_session_does_not_serve_goes_to_pingora_untouched() {
        pingoras(b"GET / HTTP/1.1\r\nHost: a\r\n"); // not whole yet
        pingoras(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n");
        pingoras(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
        pingoras(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        pingoras(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
        pingoras(b"PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n");
        pingoras(b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n");
        pingoras(b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n");
        pingoras(b"GET / HTTP/1.1\r\nHost a\r\n\r\n"); // malformed: Pingora answers it
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        pingoras(&many);
    }

    #[test]
    fn chunk_sizes_are_hexadecimal_lines() {
        let mut out = [0u8; 18];
        assert_eq!(chunk_size(&mut out, 0), b"0\r\n");
        assert_eq!(chunk_size(&mut out, 255), b"FF\r\n");
        assert_eq!(chunk_size(&mut out, 0x1_0000), b"10000\r\n");
        assert_eq!(chunk_size(&mut out, usize::MAX).len(), 18);
    }

    #[test]
    fn a_head_is_written_with_the_edges_date_and_connection() {
        // As a server's answer reaches the session: a map without original spellings.
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts
            .headers
            .insert("content-length", HeaderValue::from_static("2"));
        parts
            .headers
            .insert("date", HeaderValue::from_static("yesterday"));
        parts
            .headers
            .insert("connection", HeaderValue::from_static("whatever"));
        let mut head = ResponseHeader::from(parts);
        let mut out = Vec::new();
        write_head(&mut out, &mut head, Some(true));
        let text = String::from_utf8(out).expect("text");
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nDate: "),
            "{text}"
        );
        assert!(
            text.ends_with("\r\nConnection: keep-alive\r\n\r\n"),
            "{text}"
        );
        assert!(
            !text.contains("yesterday") && !text.contains("whatever"),
            "{text}"
        );
        let mut head = ResponseHeader::build(103, None).expect("head");
        head.insert_header("link", "</a.css>").expect("field");
        let mut out = Vec::new();
        write_head(&mut out, &mut head, None);
        assert_eq!(out, b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n");
    }
}
