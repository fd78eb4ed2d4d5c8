//! The edge's HTTP/1 server session: every HTTP/1.0 and HTTP/1.1 request a client
//! connection carries, its head parsed here (httparse) into the `RequestHeader` the phases
//! read, its body read as the phases ask (a length, or chunked), its answer written as bytes
//! (a length, chunked with trailers for a client that takes them, or to the close), and an
//! upgrade turned into a tunnel over the same socket.
//!
//! A head that is not whole is read on by the gate ([`Head::Partial`]); one that is refused
//! ([`Head::Refused`]: malformed, or over the head limits) is answered by the gate with the
//! connection's close, since nothing after it can be trusted to be a request.

use super::{Compressor, Downstream};
use crate::chunked::{self, Decoder, Step};
use crate::config::HeadLimits;
use crate::upstream::h1::write_field;
use bytes::{Bytes, BytesMut};
use http::header;
use http::{HeaderName, HeaderValue, Method, StatusCode, Version};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::Stream;
use pingora::ErrorType;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Header fields parsed on the stack; a head with more is parsed again with room for the
/// most any config allows (`max_headers` is at most 256), one more to see it is over.
const FEW_FIELDS: usize = 64;
const MAX_FIELDS: usize = 257;

/// Fields of a request head whose places are kept on the stack while its map is made.
const PLACES_IN_PLACE: usize = 16;

/// How much a body read asks the socket for at least.
const BODY_READ: usize = 16 * 1024;

/// What the connection knows of itself (its TLS digest, the client's address), given by the
/// gate once for all its requests.
pub struct Conn {
    pub ssl: Option<Arc<SslDigest>>,
    pub peer: Option<IpAddr>,
}

/// How a request's body comes.
#[derive(Debug)]
enum Body {
    /// No body, or all of it read.
    Done,
    /// This many bytes of it left (never 0: that is `Done`).
    Length(u64),
    Chunked(Decoder),
}

/// A request head the session serves.
pub struct Request {
    pub head: Box<RequestHeader>,
    /// The head as it arrived.
    pub raw: Bytes,
    /// The client wants the connection closed after this request (HTTP/1.1
    /// `Connection: close`, HTTP/1.0 without `Connection: keep-alive`).
    pub close: bool,
    /// An HTTP/1.1 upgrade request (`Upgrade`, and `upgrade` in `Connection`).
    pub upgrade: bool,
    /// The client takes trailer fields (`TE: trailers`).
    pub te_trailers: bool,
    body: Body,
}

/// What the bytes at the start of a connection's buffer are.
pub enum Head {
    /// A whole request head, split off the buffer (its body and what follows stay).
    Request(Request),
    /// Not whole yet: the gate reads more into the buffer and asks again.
    Partial,
    /// Not a request the edge reads: the status to answer with, and why.
    Refused(u16, &'static str),
}

/// Reads the request head at the start of `buf`, within `limits`.
pub fn parse(buf: &mut BytesMut, limits: &HeadLimits) -> Head {
    match parse_in::<FEW_FIELDS>(buf, limits) {
        Err(httparse::Error::TooManyHeaders) => match parse_in::<MAX_FIELDS>(buf, limits) {
            Err(httparse::Error::TooManyHeaders) => {
                Head::Refused(431, "more header fields than max_headers")
            }
            Err(_) => Head::Refused(400, "a malformed request head"),
            Ok(head) => head,
        },
        Err(_) => Head::Refused(400, "a malformed request head"),
        Ok(head) => head,
    }
}

/// [`parse`] with room for `N` header fields (on the stack).
fn parse_in<const N: usize>(
    buf: &mut BytesMut,
    limits: &HeadLimits,
) -> Result<Head, httparse::Error> {
    // Not initialised: the parser writes each field it hands back.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; N];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut fields)? {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(partial(buf, limits)),
    };
    let version = match req.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return Ok(Head::Refused(400, "a malformed request line"));
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Ok(Head::Refused(400, "a malformed method"));
    };
    let mut close = version == Version::HTTP_10;
    let (mut upgrade_token, mut upgrade_field) = (false, false);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut te_trailers = false;
    for field in req.headers.iter() {
        let name = field.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::HTTP_10 {
                    close = false;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    upgrade_token = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            upgrade_field = true;
        } else if name.eq_ignore_ascii_case(b"te") {
            te_trailers |= names_trailers(field.value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Whether the body can be read is the framing check's business (`request::framing`
            // refuses any coding but one `chunked`): read as chunked, nothing more is taken
            // for granted.
            chunked = true;
        } else if name.eq_ignore_ascii_case(b"content-length") {
            length = std::str::from_utf8(field.value)
                .ok()
                .and_then(|v| v.split(',').next())
                .and_then(|v| v.trim().parse().ok())
                .or(length);
        }
    }
    // Where each piece lies in the buffer, to take it from the frozen head without a copy.
    let base = buf.as_ptr() as usize;
    let at = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    let target = at(target.as_bytes());
    let count = req.headers.len();
    // A usual head's places on the stack, a larger one's on the heap: room for all `N` was
    // 2 KiB zeroed for every request.
    let mut few = [((0, 0), (0, 0)); PLACES_IN_PLACE];
    let mut many = Vec::new();
    let places = match count {
        0..=PLACES_IN_PLACE => &mut few[..count],
        _ => {
            many.resize(count, ((0, 0), (0, 0)));
            &mut many[..]
        }
    };
    for (place, field) in places.iter_mut().zip(req.headers.iter()) {
        *place = (at(field.name.as_bytes()), at(field.value));
    }
    let head = buf.split_to(len).freeze();
    let piece = |(start, len): (usize, usize)| start..start + len;
    let mut fields = crate::spare::header_map(count);
    for &(name, value) in places.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[piece(name)]),
            HeaderValue::from_maybe_shared(head.slice(piece(value))),
        ) else {
            return Ok(Head::Refused(400, "a malformed header field"));
        };
        fields.append(name, value);
    }
    let Some(request) = request_head(method, &head, piece(target), version, fields) else {
        return Ok(Head::Refused(400, "a malformed request target"));
    };
    let body = if chunked {
        Body::Chunked(Decoder::new(limits.head))
    } else {
        match length {
            None | Some(0) => Body::Done,
            Some(n) => Body::Length(n),
        }
    };
    Ok(Head::Request(Request {
        head: request,
        raw: head,
        close,
        upgrade: upgrade_token && upgrade_field && version == Version::HTTP_11,
        te_trailers,
        body,
    }))
}

/// The request head as the phases read it. An origin-form target (`/path?query`, the usual
/// one) becomes the `Uri` as a slice of `head`, and the fields go in as they are; any other
/// target (absolute-form, `*`, one with a fragment) is read by Pingora's target parser, which
/// keeps such a target's bytes for the line that goes upstream. The target is text (httparse
/// refuses one that is not). `None`: not a target.
fn request_head(
    method: Method,
    head: &Bytes,
    target: std::ops::Range<usize>,
    version: Version,
    fields: http::HeaderMap,
) -> Option<Box<RequestHeader>> {
    let raw = &head[target.clone()];
    if raw.first() == Some(&b'/') && !raw.contains(&b'#') {
        // What Pingora's parser makes of such a target (a `Uri` of its path and query, the
        // target written from it), without copying it and without entering each field
        // through its map of original spellings (a name parsed twice per field).
        let path = http::uri::PathAndQuery::from_maybe_shared(head.slice(target)).ok()?;
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = method;
        parts.uri = http::Uri::from(path);
        parts.version = version;
        parts.headers = fields;
        return Some(Box::new(RequestHeader::from(parts)));
    }
    let mut request = RequestHeader::build_no_case(method, raw, Some(fields.len())).ok()?;
    request.set_version(version);
    let mut last = None;
    for (name, value) in fields {
        // The map hands a repeated name once, then `None` for its further values.
        let name = match name {
            Some(name) => last.insert(name).clone(),
            None => last.clone()?,
        };
        request.append_header(name, value).ok()?;
    }
    Some(Box::new(request))
}

/// A head not whole yet: read on, unless it is already over the limits (414 for a request
/// line longer than a target may be, 431 for the head).
fn partial(buf: &[u8], limits: &HeadLimits) -> Head {
    let first_line = chunked::memchr(b'\n', buf);
    if first_line.is_none() && buf.len() > limits.uri + 32 {
        return Head::Refused(414, "the request target is longer than max_uri_size");
    }
    if buf.len() > limits.head {
        return Head::Refused(431, "the request head is larger than max_header_size");
    }
    Head::Partial
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
    /// A tunnel after 101 Switching Protocols: bytes both ways until either side closes.
    Upgraded,
}

/// One request on a client connection.
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
    upgrade: bool,
    body: Body,
    body_read: usize,
    /// `client_body_timeout`: the longest one body read may wait.
    body_timeout: Duration,
    /// Set when the process shuts down: an answer written after that says `close`.
    shutdown: Option<&'c AtomicBool>,
}

/// The request's field map serves a later request's head on this thread ([`crate::spare`]).
impl Drop for Session<'_> {
    fn drop(&mut self) {
        // An empty head in its place (no allocation: an empty map allocates nothing).
        let empty = RequestHeader::from(http::Request::new(()).into_parts().0);
        let req = std::mem::replace(&mut *self.req, empty);
        crate::spare::give_back(http::request::Parts::from(req).headers);
    }
}

impl<'c> Session<'c> {
    /// A request [`parse`] found, its body (and what follows it) in `rest`, without
    /// compression until [`Downstream::compress`]; the connection may carry another request
    /// after it unless `last` or the client asked to close. A body read waits at most
    /// `body_timeout` for the client.
    pub fn new(
        stream: &'c mut Stream,
        conn: &'c Conn,
        rest: &'c mut BytesMut,
        request: Request,
        last: bool,
        body_timeout: Duration,
    ) -> Session<'c> {
        Session {
            stream,
            conn,
            rest,
            te_trailers: request.te_trailers,
            keepalive: !last && !request.close,
            req: request.head,
            raw: request.raw,
            status: None,
            framing: Framing::Unset,
            body_sent: 0,
            compression: Compressor::default(),
            closed: false,
            upgrade: request.upgrade,
            body: request.body,
            body_read: 0,
            body_timeout,
            shutdown: None,
        }
    }

    /// The connection closes after this request if `shutdown` (the server's shutdown flag) is
    /// set by the time its answer's head goes out (the head says so), not only if it was set
    /// when the request came.
    pub fn closing_at(mut self, shutdown: &'c AtomicBool) -> Session<'c> {
        self.shutdown = Some(shutdown);
        self
    }

    /// Whether the connection can carry the next request: keep-alive, a whole response sent,
    /// the request's body all read (what follows it is the next request), no tunnel.
    pub fn reusable(&self) -> bool {
        self.keepalive
            && !self.closed
            && matches!(
                self.framing,
                Framing::None | Framing::Length | Framing::Chunked
            )
            && matches!(self.body, Body::Done)
    }

    /// Whether some of the request's body is still to be read.
    pub fn body_left(&self) -> bool {
        !matches!(self.body, Body::Done) && !self.closed
    }

    /// Reads what is left of a request body the answer did not need, and drops it, so that
    /// the client sees the answer rather than a reset, and a kept-alive connection finds its
    /// next request (nginx's discarded body, and its lingering close): for at most
    /// `LINGER` in all and `LINGER_READ` between two reads.
    pub async fn discard_body(&mut self) {
        if !self.body_left() {
            return;
        }
        self.body_timeout = self.body_timeout.min(LINGER_READ);
        let deadline = tokio::time::Instant::now() + LINGER;
        let discarded = tokio::time::timeout_at(deadline, async {
            while let Ok(Some(_)) = self.read_body().await {}
        });
        if discarded.await.is_err() || !matches!(self.body, Body::Done) {
            self.keepalive = false;
        }
    }

    /// One read of the client's body into `rest`, within `client_body_timeout`.
    async fn fill(&mut self) -> Result<()> {
        self.rest.reserve(BODY_READ);
        let read = self.stream.read_buf(self.rest);
        match pingora::prelude::fast_timeout::fast_timeout(self.body_timeout, read).await {
            Ok(Ok(0)) => {
                self.closed = true;
                Error::e_explain(
                    ErrorType::ConnectionClosed,
                    "the client closed before its body was whole",
                )
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                self.closed = true;
                Error::e_because(ErrorType::ReadError, "reading the request body", e)
            }
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                "client_body_timeout: the client sent no more of its request body",
            ),
        }
        .map_err(|e| e.into_down())
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
        let size = chunked::size_line(&mut size, data.len());
        self.send(size, false, "writing body").await?;
        self.send(data, false, "writing body").await?;
        self.send(b"\r\n", flush, "writing body").await
    }
}

/// Whether a request's `TE` names `trailers`: the client takes trailer fields after a
/// chunked body.
pub fn takes_trailers(req: &RequestHeader) -> bool {
    req.headers
        .get_all(header::TE)
        .iter()
        .any(|v| names_trailers(v.as_bytes()))
}

/// Whether a `TE` value names `trailers`.
fn names_trailers(value: &[u8]) -> bool {
    value.split(|&b| b == b',').any(|t| {
        t.split(|&b| b == b';')
            .next()
            .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"))
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
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    if let Some(reason) = head.get_reason_phrase() {
        out.extend_from_slice(reason.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    match keepalive {
        // An interim head: its fields as they are.
        None => head.header_to_h1_wire(out),
        // Fields with their original spellings kept: Pingora writes them in step with those.
        Some(keepalive) if head.has_case() => {
            let connection = connection_value(keepalive);
            // Neither insert can fail: both are values already.
            let _ = head.insert_header(header::DATE, date());
            let _ = head.insert_header(header::CONNECTION, connection);
            head.header_to_h1_wire(out);
        }
        // The usual final head: its fields (the common names in title case, as the request
        // heads toward servers are written), then the edge's `Date` and `Connection` in place
        // of any the head has, written without entering them in the map (each insert went
        // through Pingora's case map and parsed the name again: 370 instructions).
        Some(keepalive) => {
            for (name, value) in head.headers.iter() {
                if name != header::DATE && name != header::CONNECTION {
                    write_field(out, name, value.as_bytes());
                }
            }
            write_field(out, &header::DATE, date().as_bytes());
            let connection = connection_value(keepalive);
            write_field(out, &header::CONNECTION, connection.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The date a final head carries (cached per second).
fn date() -> HeaderValue {
    pingora::protocols::http::date::get_cached_date()
}

/// `Connection` as a final head carries it. Static values: a `&str` would be converted (and
/// copied into an allocation) for every answer.
fn connection_value(keepalive: bool) -> HeaderValue {
    HeaderValue::from_static(if keepalive { "keep-alive" } else { "close" })
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
        self.upgrade
    }

    fn response_status(&self) -> Option<StatusCode> {
        self.status
    }

    fn body_bytes_sent(&self) -> usize {
        self.body_sent
    }

    fn body_bytes_read(&self) -> usize {
        self.body_read
    }

    fn compression_off(&mut self) {
        self.compression.off();
    }

    fn is_body_empty(&mut self) -> bool {
        matches!(self.body, Body::Done) && self.body_read == 0
    }

    fn compress(&mut self, level: u32) {
        self.compression = Compressor::new(level, &self.req);
    }

    async fn write_head(&mut self, mut head: Box<ResponseHeader>, end: bool) -> Result<()> {
        if self.framing != Framing::Unset {
            return Ok(());
        }
        let status = head.status;
        // (A head is copied into the connection's gathering buffer as it is sent: its own
        // buffer goes back to the thread then.)
        let mut out = crate::spare::head_buffer();
        if status.is_informational() {
            // An interim head as the server sent it; after a 101 the connection is a tunnel
            // (its fields, `Connection: upgrade` among them, were set for it).
            if status == StatusCode::SWITCHING_PROTOCOLS {
                self.framing = Framing::Upgraded;
                self.keepalive = false;
            }
            write_head(&mut out, &mut head, None);
            self.status = Some(status);
            let sent = self.send(&out, true, "writing response header").await;
            crate::spare::give_back_head_buffer(out);
            return sent;
        }
        self.compression.head(&mut head, end);
        if self.shutdown.is_some_and(|s| s.load(Ordering::Acquire)) {
            self.keepalive = false;
        }
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
        crate::spare::give_back(http::response::Parts::from(*head).headers);
        self.status = Some(status);
        // A head without a length goes out at once: its body may come slowly.
        let flush = self.framing != Framing::Length;
        let sent = self.send(&out, flush, "writing response header").await;
        crate::spare::give_back_head_buffer(out);
        sent
    }

    async fn write_body(&mut self, mut body: Option<Bytes>, end: bool) -> Result<()> {
        body = self.compression.body(body, end);
        let data = body.unwrap_or_default();
        if data.is_empty() && !end {
            return Ok(());
        }
        match self.framing {
            Framing::Unset | Framing::None | Framing::Upgraded => {}
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
        self.send(
            b"HTTP/1.1 100 Continue\r\n\r\n",
            true,
            "writing 100 Continue",
        )
        .await
        .map_err(|e| e.into_down())
    }

    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            match &mut self.body {
                Body::Done => return Ok(None),
                Body::Length(left) => {
                    if self.rest.is_empty() {
                        self.fill().await?;
                        continue;
                    }
                    let take = self
                        .rest
                        .len()
                        .min(usize::try_from(*left).unwrap_or(usize::MAX));
                    let data = self.rest.split_to(take).freeze();
                    *left -= take as u64;
                    if *left == 0 {
                        self.body = Body::Done;
                    }
                    self.body_read += take;
                    return Ok(Some(data));
                }
                Body::Chunked(decoder) => match decoder.next(self.rest) {
                    Ok(Step::Data(data)) => {
                        self.body_read += data.len();
                        return Ok(Some(data));
                    }
                    Ok(Step::More) => self.fill().await?,
                    // Request trailers are not relayed (the body goes upstream reframed).
                    Ok(Step::End(_)) => {
                        self.body = Body::Done;
                        return Ok(None);
                    }
                    Err(why) => {
                        // The rest of the connection cannot be read as requests.
                        self.keepalive = false;
                        return Error::e_explain(ErrorType::InvalidHTTPHeader, why)
                            .map_err(|e| e.into_down());
                    }
                },
            }
        }
    }

    async fn tunnel(
        &mut self,
        mut upstream: Stream,
        from_upstream: Bytes,
        idle: Duration,
    ) -> Result<()> {
        self.keepalive = false;
        self.framing = Framing::Upgraded;
        if !from_upstream.is_empty() {
            self.send(&from_upstream, true, "relaying the upgraded connection")
                .await?;
        }
        if !self.rest.is_empty() {
            let early = self.rest.split();
            upstream
                .write_all(&early)
                .await
                .or_err(ErrorType::WriteError, "relaying to the upgraded server")?;
        }
        crate::websocket::relay(self.stream, &mut upstream, idle).await;
        Ok(())
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

/// After an answer that did not need all of the request's body, the rest is read and dropped
/// for at most this long in all, and this long between two reads.
const LINGER: Duration = Duration::from_secs(30);
const LINGER_READ: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            uri: 8192,
            head: 32768,
            fields: 100,
        }
    }

    fn request(text: &[u8]) -> (Request, BytesMut) {
        let mut buf = BytesMut::from(text);
        match parse(&mut buf, &limits()) {
            Head::Request(r) => (r, buf),
            Head::Partial => panic!("partial: {}", String::from_utf8_lossy(text)),
            Head::Refused(status, why) => {
                panic!("{status} {why}: {}", String::from_utf8_lossy(text))
            }
        }
    }

    fn refused(text: &[u8]) -> u16 {
        match parse(&mut BytesMut::from(text), &limits()) {
            Head::Refused(status, _) => status,
            _ => panic!("taken: {}", String::from_utf8_lossy(text)),
        }
    }

    #[test]
    fn te_trailers_is_read_with_the_head_as_the_map_would_say() {
        for (te, takes) in [
            ("trailers", true),
            ("gzip, Trailers;q=1", true),
            ("gzip", false),
            ("trailersx", false),
        ] {
            let text = format!("GET / HTTP/1.1\r\nHost: a\r\nTE: {te}\r\n\r\n");
            let (req, _) = request(text.as_bytes());
            assert_eq!(req.te_trailers, takes, "{te}");
            assert_eq!(takes_trailers(&req.head), takes, "{te}");
        }
        let (req, _) = request(b"GET / HTTP/1.1\r\nHost: a\r\nTE: gzip\r\nTE: trailers\r\n\r\n");
        assert!(req.te_trailers, "any of its fields");
        let (req, _) = request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(!req.te_trailers);
    }

    #[test]
    fn every_form_of_target_reads_as_pingoras_parser_reads_it() {
        // (A target that is not UTF-8 never gets here: httparse refuses it.)
        let targets: [&[u8]; 7] = [
            b"/api/x?y=1",
            b"/",
            b"/a#frag",
            b"/caf\xc3\xa9",
            b"http://a.example/p?q",
            b"*",
            b"/%2e%2e/x",
        ];
        for target in targets {
            let mut text = b"OPTIONS ".to_vec();
            text.extend_from_slice(target);
            text.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\nX: 1\r\nX: 2\r\nY: 3\r\n\r\n");
            let (req, _) = request(&text);
            let mut expected =
                RequestHeader::build_no_case(Method::OPTIONS, target, None).expect("target");
            expected.set_version(Version::HTTP_11);
            let shown = String::from_utf8_lossy(target);
            assert_eq!(req.head.raw_path(), expected.raw_path(), "{shown}");
            assert_eq!(req.head.uri, expected.uri, "{shown}");
            assert_eq!(req.head.method, Method::OPTIONS);
            assert_eq!(req.head.version, Version::HTTP_11);
            let xs: Vec<_> = req.head.headers.get_all("x").iter().collect();
            assert_eq!(xs, ["1", "2"], "{shown}");
            assert_eq!(req.head.headers["y"], "3");
            assert_eq!(req.head.headers.len(), 4, "{shown}");
        }
    }

    #[test]
    fn a_plain_get_is_parsed_into_the_head_the_phases_read() {
        let (req, rest) = request(
            b"GET /api/x?y=1 HTTP/1.1\r\nHost: a.example\r\nX-Custom: v\r\nAccept: */*\r\n\r\nGET /next",
        );
        let head = &req.head;
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/api/x");
        assert_eq!(head.raw_path(), b"/api/x?y=1");
        assert_eq!(head.version, Version::HTTP_11);
        assert_eq!(head.headers["host"], "a.example");
        assert_eq!(head.headers["x-custom"], "v");
        assert!(!req.close && !req.upgrade);
        assert!(matches!(req.body, Body::Done));
        assert!(req.raw.ends_with(b"\r\n\r\n"));
        assert_eq!(&rest[..], b"GET /next", "a pipelined request stays");
        let (req, _) = request(b"HEAD / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n");
        assert!(req.close);
    }

    #[test]
    fn every_request_shape_is_read_and_its_body_framed() {
        let (req, rest) = request(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi");
        assert!(matches!(req.body, Body::Length(2)));
        assert_eq!(&rest[..], b"hi", "the body stays for the session");
        let (req, _) = request(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert!(matches!(req.body, Body::Chunked(_)));
        let (req, _) = request(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n");
        assert!(req.close, "HTTP/1.0 closes unless asked to keep alive");
        assert_eq!(req.head.version, Version::HTTP_10);
        let (req, _) = request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert!(!req.close);
        let (req, _) = request(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        );
        assert!(req.upgrade);
        let (req, _) = request(b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n");
        assert!(
            !req.upgrade,
            "Upgrade without Connection: upgrade is no upgrade"
        );
        let (req, _) = request(b"GET http://a/x HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(req.head.uri.path(), "/x");
        // Either side of the fields whose places stay on the stack, and beyond `FEW_FIELDS`.
        for count in [PLACES_IN_PLACE, PLACES_IN_PLACE + 1, FEW_FIELDS + 1] {
            let mut head = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..count {
                head.extend_from_slice(format!("X-{i}: value {i}\r\n").as_bytes());
            }
            head.extend_from_slice(b"\r\n");
            let (req, _) = request(&head);
            assert_eq!(req.head.headers.len(), count);
            let last = format!("value {}", count - 1);
            assert_eq!(req.head.headers[format!("x-{}", count - 1)], last.as_str());
            assert_eq!(req.head.headers["x-0"], "value 0");
        }
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        let (req, _) = request(&many);
        assert_eq!(
            req.head.headers.len(),
            200,
            "max_headers is checked by the phases"
        );
    }

    #[test]
    fn a_head_in_pieces_is_partial_until_whole_and_refused_past_the_limits() {
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: a\r\n"[..]);
        assert!(matches!(parse(&mut buf, &limits()), Head::Partial));
        buf.extend_from_slice(b"\r\n");
        assert!(matches!(parse(&mut buf, &limits()), Head::Request(_)));
        let long_target = [b"GET /".as_slice(), &[b'a'; 9000]].concat();
        assert_eq!(refused(&long_target), 414);
        let mut big = b"GET / HTTP/1.1\r\n".to_vec();
        while big.len() <= 32768 {
            big.extend_from_slice(
                b"X-Big: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        assert_eq!(refused(&big), 431);
        let mut over = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_FIELDS {
            over.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        over.extend_from_slice(b"\r\n");
        assert_eq!(refused(&over), 431);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost a\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX: a\r\n two\r\n\r\n"),
            400,
            "obs-fold"
        );
        assert_eq!(
            refused(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\r\n\r\n"),
            400
        );
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), 400);
    }

    /// The final head written for a server's answer of 200 with `fields` (in order, repeats
    /// kept), as the session gets it: a map without original spellings.
    fn answer_written(fields: &[(&'static str, &'static str)], keepalive: bool) -> String {
        let (mut parts, ()) = http::Response::new(()).into_parts();
        for &(name, value) in fields {
            parts.headers.append(name, HeaderValue::from_static(value));
        }
        let mut head = ResponseHeader::from(parts);
        let mut out = Vec::new();
        write_head(&mut out, &mut head, Some(keepalive));
        String::from_utf8(out).expect("text")
    }

    #[test]
    fn a_head_is_written_with_the_edges_date_and_connection() {
        // As a server's answer reaches the session: a map without original spellings.
        let text = answer_written(
            &[
                ("content-length", "2"),
                ("date", "yesterday"),
                ("connection", "whatever"),
            ],
            true,
        );
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
        // Every value of a repeated field on a line of its own; names the table does not
        // title as the map holds them.
        let text = answer_written(
            &[
                ("set-cookie", "a=1"),
                ("set-cookie", "b=2"),
                ("x-served-by", "b"),
            ],
            false,
        );
        assert!(
            text.starts_with(
                "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nx-served-by: b\r\nDate: "
            ),
            "{text}"
        );
        assert!(text.ends_with("\r\nConnection: close\r\n\r\n"), "{text}");
        // A head with its original spellings (the edge's own answers may have them).
        let mut head = ResponseHeader::build(200, None).expect("head");
        head.insert_header("X-Custom", "1").expect("field");
        head.insert_header("Date", "yesterday").expect("field");
        let mut out = Vec::new();
        write_head(&mut out, &mut head, Some(true));
        let text = String::from_utf8(out).expect("text");
        assert!(text.contains("\r\nX-Custom: 1\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: keep-alive\r\n"), "{text}");
        assert_eq!(text.matches("Date: ").count(), 1, "{text}");
        assert!(!text.contains("yesterday"), "{text}");
        let mut head = ResponseHeader::build(103, None).expect("head");
        head.insert_header("link", "</a.css>").expect("field");
        let mut out = Vec::new();
        write_head(&mut out, &mut head, None);
        assert_eq!(out, b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n");
    }
}
