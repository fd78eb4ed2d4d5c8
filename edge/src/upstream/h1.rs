//! The edge's HTTP/1.1 client toward its servers: one request and its answer at a time on a
//! kept-alive connection, with the connection's buffers kept from one request to the next.
//!
//! A request head goes out as the bytes the caller wrote into the connection's own buffer (a
//! small whole body in the same write); an answer's head is parsed (httparse) straight into
//! the header map the client's response is built from, its values slices of the bytes read,
//! and its body comes back as slices of the read buffer, not copies. Per request this costs
//! one header map and no buffer allocation once the connection has carried a request,
//! where pingora-core's client session costs a session, a digest, a read buffer, a head with
//! its map of original name spellings and a copy of every body chunk.
//!
//! Framing follows RFC 9112 6.3, as pingora's and nginx's clients do: no body for a HEAD
//! request, 1xx, 204 and 304; chunked when it is the last transfer coding (Content-Length is
//! then ignored and dropped); another transfer coding, or neither field, reads to the close;
//! Content-Length values must agree. A connection is kept only when its answer ended where
//! its framing said, with nothing after it, and neither side asked for the close.
//!
//! Errors are pingora's error types, as the rest of the request path classifies them: a
//! close or a socket error before any answer byte is marked `ReusedOnly` (what a server that
//! closed a kept-alive connection looks like), timeouts are `ReadTimedout`/`WriteTimedout`,
//! a broken answer is `InvalidHTTPHeader`.

use crate::clock::{set_timer, Reused};
use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::StatusCode;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result, RetryType};
use std::future::Future;
use std::io;
use std::task::{ready, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod framing;
use crate::chunked::Step;
use framing::{bad_chunk, connection_only, parse, Head, Parsed, Reader};

/// The largest response head the edge reads (nginx's `proxy_buffer_size` is 4-8 KiB; an
/// answer with a larger head is a 502 there as here).
pub const MAX_HEAD: usize = 64 * 1024;

/// Header lines parsed on the stack; a head with more is parsed again with room for this
/// many.
const FEW_FIELDS: usize = 32;
const MAX_FIELDS: usize = 256;

/// What a read asks the socket for at least.
const READ_CHUNK: usize = 4096;
/// The most a body read asks for at once.
const BODY_CHUNK: usize = 64 * 1024;

/// A connection to a server, and what it has carried.
pub struct Connection {
    pub stream: Stream,
    /// Requests it has carried.
    pub served: u32,
    /// Bytes read and not yet consumed; empty between requests, its allocation kept.
    read: BytesMut,
    /// The request head being written; its allocation kept.
    write: Vec<u8>,
    /// The timer of the reads and writes that wait, made at the first and moved to each
    /// one's end (see [`within`]).
    timer: Reused,
    /// The field names of the server's answers so far.
    names: Names,
    /// Where the fields of the answer being read lie in `read` (kept: no list per answer).
    places: Vec<framing::Field>,
}

/// The field names a server's answers carry, as it spells them, with their parsed names: a
/// server sends the same fields in the same order answer after answer, and a name found here
/// is a compare, where parsing one is a table walk (and, for a name outside the standard
/// ones, an allocation).
#[derive(Default)]
struct Names(Vec<(Box<[u8]>, HeaderName)>);

/// The most names a connection keeps.
const NAMES_KEPT: usize = 32;

impl Names {
    /// The name spelled `raw`, the `at`th field of its head; `None` when it is not a name.
    fn name(&mut self, at: usize, raw: &[u8]) -> Option<HeaderName> {
        // Where it was in the last answer, then anywhere.
        let kept = match self.0.get(at) {
            Some((spelled, name)) if **spelled == *raw => Some(name),
            _ => self
                .0
                .iter()
                .find(|(spelled, _)| **spelled == *raw)
                .map(|(_, n)| n),
        };
        if let Some(name) = kept {
            return Some(name.clone());
        }
        let name = HeaderName::from_bytes(raw).ok()?;
        if self.0.len() < NAMES_KEPT {
            self.0.push((raw.into(), name.clone()));
        }
        Some(name)
    }
}

impl Connection {
    pub fn new(stream: Stream) -> Connection {
        Connection::with_served(stream, 0)
    }

    pub fn with_served(stream: Stream, served: u32) -> Connection {
        Connection {
            stream,
            served,
            read: BytesMut::new(),
            write: Vec::new(),
            timer: None,
            names: Names::default(),
            places: Vec::new(),
        }
    }
}

/// A response head as the edge relays it. The fields that concern only the connection it
/// came on (`Connection`, `Keep-Alive`, `Proxy-Connection`, `Trailer`) have been read by the
/// exchange and are not in `headers`, nor is a `Content-Length` that `Transfer-Encoding`
/// overrides.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    /// The reason phrase the server sent, if not the status's usual one (empty then).
    pub reason: Bytes,
    pub headers: HeaderMap,
}

impl Response {
    /// The reason phrase, when there is one and it is text (an HTTP/2 answer has none).
    pub fn reason(&self) -> Option<&str> {
        std::str::from_utf8(&self.reason)
            .ok()
            .filter(|r| !r.is_empty())
    }
}

/// How the request body goes out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upload {
    /// Exactly this many bytes (0: no body).
    Length(u64),
    Chunked,
}

/// One request and its answer on `connection`.
pub struct Exchange {
    connection: Connection,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    upload: Upload,
    /// The request was HEAD: the answer has no body whatever it says.
    head_request: bool,
    reader: Reader,
    /// Both sides allow another request on the connection (known with the final head).
    keepalive: bool,
    /// The trailer fields of a chunked answer, once its body has been read to the end.
    trailers: Option<HeaderMap>,
}

impl Exchange {
    pub fn new(connection: Connection, read_timeout: Duration, write_timeout: Duration) -> Self {
        Exchange {
            connection,
            read_timeout,
            write_timeout,
            upload: Upload::Length(0),
            head_request: false,
            reader: Reader::Head,
            keepalive: false,
            trailers: None,
        }
    }

    /// The buffer to write the request head into (emptied).
    pub fn head_buffer(&mut self) -> &mut Vec<u8> {
        let buffer = &mut self.connection.write;
        buffer.clear();
        buffer
    }

    /// Sends the head written into [`Self::head_buffer`], and `body` with it when it is the
    /// whole body (one write for both). `upload` is the framing the head declared.
    pub async fn send_head(
        &mut self,
        upload: Upload,
        head_request: bool,
        body: Option<&[u8]>,
    ) -> Result<()> {
        self.upload = upload;
        self.head_request = head_request;
        if let Some(body) = body {
            self.connection.write.extend_from_slice(body);
            self.count_upload(body.len());
        }
        let timeout = self.write_timeout;
        let Connection {
            stream,
            write,
            timer,
            ..
        } = &mut self.connection;
        let sent = within(timer, timeout, async {
            stream.write_all(write).await?;
            stream.flush().await
        })
        .await;
        sent.map_err(|e| write_error(e, "writing the request head"))
    }

    fn count_upload(&mut self, len: usize) {
        if let Upload::Length(left) = &mut self.upload {
            *left = left.saturating_sub(len as u64);
        }
    }

    /// Sends a piece of the request body, in the framing the head declared (bytes past a
    /// declared length are not sent).
    pub async fn write_body(&mut self, bytes: &[u8]) -> Result<()> {
        let bytes = match self.upload {
            Upload::Length(left) => &bytes[..bytes.len().min(left as usize)],
            Upload::Chunked => bytes,
        };
        if bytes.is_empty() {
            return Ok(());
        }
        let chunked = self.upload == Upload::Chunked;
        self.count_upload(bytes.len());
        let timeout = self.write_timeout;
        let Connection { stream, timer, .. } = &mut self.connection;
        within(timer, timeout, async {
            if chunked {
                stream
                    .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
                    .await?;
                stream.write_all(bytes).await?;
                stream.write_all(b"\r\n").await?;
            } else {
                stream.write_all(bytes).await?;
            }
            stream.flush().await
        })
        .await
        .map_err(|e| write_error(e, "writing the request body"))
    }

    /// Ends the request body: the last chunk of a chunked one. A body shorter than its
    /// declared length is an error (the server would wait for the rest).
    pub async fn finish_body(&mut self) -> Result<()> {
        match self.upload {
            Upload::Length(0) => Ok(()),
            Upload::Length(left) => Error::e_explain(
                ErrorType::WriteError,
                format!("the request body ended {left} bytes short of its length"),
            ),
            Upload::Chunked => {
                self.upload = Upload::Length(0);
                let timeout = self.write_timeout;
                let Connection { stream, timer, .. } = &mut self.connection;
                within(timer, timeout, async {
                    stream.write_all(b"0\r\n\r\n").await?;
                    stream.flush().await
                })
                .await
                .map_err(|e| write_error(e, "ending the request body"))
            }
        }
    }

    /// Reads the next response head: an informational one (1xx, read again for the final
    /// one) or the final one, after which the body can be read.
    pub async fn read_response(&mut self) -> Result<Response> {
        if !matches!(self.reader, Reader::Head) {
            return Error::e_explain(ErrorType::InternalError, "the final head was already read");
        }
        let mut first = self.connection.read.is_empty();
        loop {
            if !self.connection.read.is_empty() {
                if let Some(response) = self.parse_head()? {
                    return Ok(response);
                }
                if self.connection.read.len() > MAX_HEAD {
                    return Error::e_explain(
                        ErrorType::InvalidHTTPHeader,
                        format!("response head larger than {MAX_HEAD} bytes"),
                    );
                }
            }
            let got = self.fill(READ_CHUNK).await.map_err(|e| match e {
                Filled::Error(e) if e.kind() == io::ErrorKind::TimedOut => {
                    Error::explain(ErrorType::ReadTimedout, "while reading the response head")
                }
                Filled::Error(e) => {
                    let os_error = e.raw_os_error().is_some();
                    let mut error =
                        Error::because(ErrorType::ReadError, "while reading the response head", e);
                    if os_error && first {
                        error.retry = RetryType::ReusedOnly;
                    }
                    error
                }
                Filled::Closed => {
                    let mut error = Error::explain(
                        ErrorType::ConnectionClosed,
                        "the server closed the connection before a response head",
                    );
                    if first {
                        error.retry = RetryType::ReusedOnly;
                    }
                    error
                }
            })?;
            debug_assert!(got > 0);
            first = false;
        }
    }

    /// Parses a complete head at the start of the read buffer, if there is one.
    fn parse_head(&mut self) -> Result<Option<Response>> {
        let parsed = {
            // Not initialised: the parser writes each field it hands back (1 KiB of stores
            // per answer otherwise).
            let mut few = [const { std::mem::MaybeUninit::uninit() }; FEW_FIELDS];
            let connection = &mut self.connection;
            match parse(
                &connection.read,
                &mut few,
                self.head_request,
                &mut connection.places,
            )? {
                Parsed::TooMany => {
                    let mut many = vec![std::mem::MaybeUninit::uninit(); MAX_FIELDS];
                    let places = &mut connection.places;
                    parse(&connection.read, &mut many, self.head_request, places)?
                }
                parsed => parsed,
            }
        };
        match parsed {
            Parsed::Partial => Ok(None),
            // Whole, but larger than the edge reads (it may have come in one read).
            Parsed::Complete(head) if head.len > MAX_HEAD => Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("response head larger than {MAX_HEAD} bytes"),
            ),
            Parsed::Complete(head) => self.take_head(head).map(Some),
            Parsed::TooMany => Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("response head with more than {MAX_FIELDS} fields"),
            ),
        }
    }

    /// Takes the head's bytes off the read buffer and builds the response from them.
    fn take_head(&mut self, head: Head) -> Result<Response> {
        let bytes = self.connection.read.split_to(head.len).freeze();
        let base = bytes.as_ptr() as usize;
        let connection = &mut self.connection;
        let mut headers = crate::spare::header_map(connection.places.len() + RESPONSE_ROOM);
        let upgrade = head.status == StatusCode::SWITCHING_PROTOCOLS;
        // A response without a body carries no framing of one (RFC 9110 8.6, RFC 9112 6.1;
        // a 304's Content-Length describes the representation and stays).
        let bodiless = head.status.is_informational() || head.status == StatusCode::NO_CONTENT;
        let unframed = bodiless || head.status == StatusCode::NOT_MODIFIED;
        // A final answer goes out with the edge's own `Date` (as nginx's does): the server's
        // is not kept to be skipped.
        let final_head = !head.status.is_informational();
        // Fields `Connection` names concern only the connection to the server (rare: found
        // only when framing saw such a name).
        let nominated: Vec<HeaderName> = if head.nominates && !upgrade {
            connection
                .places
                .iter()
                .filter(|f| {
                    bytes[f.name.0 - base..f.name.1 - base].eq_ignore_ascii_case(b"connection")
                })
                .flat_map(|f| bytes[f.value.0 - base..f.value.1 - base].split(|&b| b == b','))
                .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
                .collect()
        } else {
            Vec::new()
        };
        for (at, field) in connection.places.iter().enumerate() {
            let name = &bytes[field.name.0 - base..field.name.1 - base];
            let Some(name) = connection.names.name(at, name) else {
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "a bad response field name");
            };
            let dropped = connection_only(&name)
                || (name == header::CONTENT_LENGTH && (head.chunked.is_some() || bodiless))
                || (name == header::TRANSFER_ENCODING && unframed)
                || (name == header::UPGRADE && !upgrade)
                || (name == header::DATE && final_head)
                || nominated.contains(&name);
            if dropped {
                continue;
            }
            let value = bytes.slice(field.value.0 - base..field.value.1 - base);
            let Ok(value) = HeaderValue::from_maybe_shared(value) else {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "a bad response field value",
                );
            };
            headers.append(name, value);
        }
        // The usual phrase ("OK") is the status's own: kept as none, which writes the same.
        let reason = head.reason.0 - base..head.reason.1 - base;
        let reason = match head.status.canonical_reason() {
            Some(usual) if usual.as_bytes() == &bytes[reason.clone()] => Bytes::new(),
            _ => bytes.slice(reason),
        };
        let response = Response {
            status: head.status,
            reason,
            headers,
        };
        if !response.status.is_informational() || response.status == StatusCode::SWITCHING_PROTOCOLS
        {
            self.reader = head.reader;
            self.keepalive = head.keepalive;
        }
        Ok(response)
    }

    /// Whether the answer's body has been read to its end.
    pub fn is_body_done(&self) -> bool {
        matches!(self.reader, Reader::Done)
    }

    /// The next piece of the answer's body, `None` at its end.
    pub async fn read_body(&mut self) -> Result<Option<Bytes>> {
        loop {
            match &mut self.reader {
                Reader::Head => {
                    return Error::e_explain(ErrorType::InternalError, "no response head read")
                }
                Reader::Done => return Ok(None),
                Reader::Length(left) => {
                    let left = *left;
                    let piece = self.piece(left, "the body ended before its length").await?;
                    self.reader = match left - piece.len() as u64 {
                        0 => Reader::Done,
                        rest => Reader::Length(rest),
                    };
                    return Ok(Some(piece));
                }
                Reader::Close => {
                    if self.connection.read.is_empty() {
                        match self.fill(BODY_CHUNK).await {
                            Ok(_) => {}
                            Err(Filled::Closed) => {
                                self.reader = Reader::Done;
                                self.keepalive = false;
                                return Ok(None);
                            }
                            Err(Filled::Error(e)) => return Err(body_error(e)),
                        }
                    }
                    return Ok(Some(self.connection.read.split().freeze()));
                }
                Reader::Chunked(decoder) => {
                    let step = decoder.next(&mut self.connection.read);
                    match step.or_else(bad_chunk)? {
                        Step::Data(piece) => return Ok(Some(piece)),
                        Step::More => {
                            self.fill_body(READ_CHUNK, "the body ended inside its chunked framing")
                                .await?
                        }
                        Step::End(trailers) => {
                            self.trailers = trailers;
                            self.reader = Reader::Done;
                            return Ok(None);
                        }
                    }
                }
            }
        }
    }

    /// The trailer fields the answer ended with (a chunked body, read to its end), once.
    pub fn take_trailers(&mut self) -> Option<HeaderMap> {
        self.trailers.take()
    }

    /// Up to `left` bytes of body: what the buffer holds, or what one read brings.
    async fn piece(&mut self, left: u64, closed: &'static str) -> Result<Bytes> {
        if self.connection.read.is_empty() {
            let want = usize::try_from(left)
                .unwrap_or(BODY_CHUNK)
                .clamp(1, BODY_CHUNK);
            self.fill_body(want, closed).await?;
        }
        let take = self
            .connection
            .read
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        Ok(self.connection.read.split_to(take).freeze())
    }

    async fn fill_body(&mut self, want: usize, closed: &'static str) -> Result<()> {
        match self.fill(want).await {
            Ok(_) => Ok(()),
            Err(Filled::Closed) => Error::e_explain(ErrorType::ConnectionClosed, closed),
            Err(Filled::Error(e)) => Err(body_error(e)),
        }
    }

    /// One read of at least room for `want` bytes, within `read_timeout`.
    async fn fill(&mut self, want: usize) -> Result<usize, Filled> {
        let Connection {
            stream,
            read,
            timer,
            ..
        } = &mut self.connection;
        read.reserve(want.max(READ_CHUNK));
        match within(timer, self.read_timeout, stream.read_buf(read)).await {
            Ok(0) => Err(Filled::Closed),
            Ok(n) => Ok(n),
            Err(e) => Err(Filled::Error(e)),
        }
    }

    /// The connection after a 101 Switching Protocols: its socket, and what the server sent
    /// after the head (the first bytes of the new protocol).
    pub fn into_upgraded(self) -> (Stream, Bytes) {
        let Connection { stream, read, .. } = self.connection;
        (stream, read.freeze())
    }

    /// The connection, when it can carry another request: the answer was read to the end its
    /// framing gave, nothing followed it, and neither side asked for the close.
    pub fn into_reusable(self) -> Option<Connection> {
        let done = matches!(self.reader, Reader::Done);
        if !(done && self.keepalive && self.connection.read.is_empty()) {
            return None;
        }
        let mut connection = self.connection;
        connection.served += 1;
        Some(connection)
    }
}

/// Room in a response's map for the fields the edge adds (request id, HSTS, framing,
/// compression's).
pub const RESPONSE_ROOM: usize = 4;

/// Runs `io` within `limit`, on the connection's `timer`. An operation the socket does at
/// once sets no timer. One that waits moves the connection's one timer to its end
/// ([`set_timer`]: a store while each wait ends later than the last). A timer per wait
/// (tokio's, or Pingora's `fast_timeout`: two allocations and a lock per wait, 1.3% of the
/// CPU of a small request) was registered each time, and a tokio timer earlier than the
/// driver's next wake-up also woke it through its eventfd.
async fn within<T>(
    timer: &mut Reused,
    limit: Duration,
    io: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    let mut io = std::pin::pin!(io);
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = io.as_mut().poll(cx) {
            return Poll::Ready(done);
        }
        if !armed {
            armed = true;
            set_timer(timer, tokio::time::Instant::now() + limit);
        }
        if let Some(timer) = timer {
            ready!(timer.as_mut().poll(cx));
        }
        Poll::Ready(Err(io::ErrorKind::TimedOut.into()))
    })
    .await
}

/// Writes a field line `name: value` (a request head toward a server, an answer head toward a
/// client, `downstream::h1`); names in their usual spelling
/// (title case for the common standard ones, the lower case of `http` for the rest: field
/// names are case-insensitive, RFC 9110 5.1).
pub fn write_field(out: &mut Vec<u8>, name: &HeaderName, value: &[u8]) {
    out.extend_from_slice(spelling(name).as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// [`write_field`] with a value in parts, written one after the other.
pub fn write_field_parts(out: &mut Vec<u8>, name: &HeaderName, parts: &[&[u8]]) {
    out.extend_from_slice(spelling(name).as_bytes());
    out.extend_from_slice(b": ");
    for part in parts {
        out.extend_from_slice(part);
    }
    out.extend_from_slice(b"\r\n");
}

fn spelling(name: &HeaderName) -> &str {
    match *name {
        header::HOST => "Host",
        header::CONTENT_LENGTH => "Content-Length",
        header::CONTENT_TYPE => "Content-Type",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::CONNECTION => "Connection",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::DATE => "Date",
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        _ => name.as_str(),
    }
}

/// Why a read gave nothing.
enum Filled {
    Closed,
    Error(io::Error),
}

fn body_error(e: io::Error) -> Box<Error> {
    if e.kind() == io::ErrorKind::TimedOut {
        Error::explain(ErrorType::ReadTimedout, "while reading the response body")
    } else {
        Error::because(ErrorType::ReadError, "while reading the response body", e)
    }
}

fn write_error(e: io::Error, what: &'static str) -> Box<Error> {
    if e.kind() == io::ErrorKind::TimedOut {
        Error::explain(ErrorType::WriteTimedout, what)
    } else {
        Error::because(ErrorType::WriteError, what, e)
    }
}

#[cfg(test)]
mod tests;
