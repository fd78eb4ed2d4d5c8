//! Reading what a server sent: a response head and the framing of the body after it, and
//! the chunk-size lines of a chunked body.

use http::header::{self, HeaderName};
use http::{StatusCode, Version};
use pingora::{Error, ErrorType, Result};

/// Where the answer's body reading stands.
#[derive(Debug)]
pub(super) enum Reader {
    /// No final head read yet.
    Head,
    /// The bytes left of a body of known length (never 0: that is `Done`).
    Length(u64),
    /// In a chunked body.
    Chunked(crate::chunked::Decoder),
    /// Read to the close.
    Close,
    Done,
}

pub(super) fn bad_chunk<T>(why: &'static str) -> Result<T> {
    Error::e_explain(ErrorType::InvalidHTTPHeader, why)
}

/// Fields that concern only the connection the head came on (RFC 9110 7.6.1).
pub(super) fn connection_only(name: &HeaderName) -> bool {
    *name == header::CONNECTION
        || matches!(name.as_str(), "keep-alive" | "proxy-connection" | "trailer")
}

/// A field's name and value as addresses in the read buffer (start, end).
pub(super) struct Field {
    pub(super) name: (usize, usize),
    pub(super) value: (usize, usize),
}

/// What a complete head says (its fields' places are in the list [`parse`] filled).
pub(super) struct Head {
    pub(super) len: usize,
    pub(super) status: StatusCode,
    pub(super) reason: (usize, usize),
    /// `Some` when Transfer-Encoding is present: whether chunked is its last coding.
    pub(super) chunked: Option<bool>,
    /// How the body that follows is read.
    pub(super) reader: Reader,
    pub(super) keepalive: bool,
    /// `Connection` names a field other than close and keep-alive (that field concerns only
    /// this connection and is not relayed).
    pub(super) nominates: bool,
}

pub(super) enum Parsed {
    Partial,
    TooMany,
    Complete(Head),
}

/// Where `part` lies, as addresses; an empty part is placed at the buffer's start, since the
/// parser may hand out an empty slice that is not in the buffer (a status line without a
/// reason phrase).
fn span(buffer: &[u8], part: &[u8]) -> (usize, usize) {
    if part.is_empty() {
        let start = buffer.as_ptr() as usize;
        return (start, start);
    }
    let start = part.as_ptr() as usize;
    (start, start + part.len())
}

/// Parses a response head at the start of `buffer` and decides its body's framing and
/// whether the connection may be kept after it. The places of a complete head's fields
/// (addresses into `buffer`) are put in `places`, emptied first: a list the connection keeps,
/// so that an answer allocates none.
pub(super) fn parse<'b>(
    buffer: &'b [u8],
    fields: &mut [std::mem::MaybeUninit<httparse::Header<'b>>],
    head_request: bool,
    places: &mut Vec<Field>,
) -> Result<Parsed> {
    let mut config = httparse::ParserConfig::default();
    config.allow_spaces_after_header_name_in_responses(true);
    let mut response = httparse::Response::new(&mut []);
    let len = match config.parse_response_with_uninit_headers(&mut response, buffer, fields) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Ok(Parsed::TooMany),
        Err(e) => {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                format!("a malformed response head ({e})"),
            )
        }
    };
    let code = response.code.unwrap_or(0);
    let Ok(status) = StatusCode::from_u16(code) else {
        return Error::e_explain(ErrorType::InvalidHTTPHeader, "a bad response status");
    };
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    places.clear();
    let mut head = Head {
        len,
        status,
        reason: span(buffer, response.reason.unwrap_or("").as_bytes()),
        chunked: None,
        reader: Reader::Done,
        keepalive: false,
        nominates: false,
    };
    let mut length: Option<u64> = None;
    let mut length_bad = false;
    let (mut close, mut keep_alive) = (false, false);
    for field in response.headers.iter() {
        let name = field.name.as_bytes();
        places.push(Field {
            name: span(buffer, name),
            value: span(buffer, field.value),
        });
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // The last coding of the last field is what frames the body.
            let last = field.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            head.chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"content-length") {
            for token in field.value.split(|&b| b == b',') {
                match parse_length(token.trim_ascii()) {
                    Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                    _ => length_bad = true,
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in field.value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                let (c, k) = (
                    token.eq_ignore_ascii_case(b"close"),
                    token.eq_ignore_ascii_case(b"keep-alive"),
                );
                close |= c;
                keep_alive |= k;
                head.nominates |= !c && !k && !token.is_empty();
            }
        }
    }
    // HTTP/1.1 keeps the connection unless told otherwise, HTTP/1.0 only when asked.
    head.keepalive = !close && (version == Version::HTTP_11 || keep_alive);
    if head.chunked.is_some() && version == Version::HTTP_10 {
        // RFC 9112 6.1: a transfer coding in an HTTP/1.0 message ends the connection.
        head.keepalive = false;
    }
    head.reader = if head_request || matches!(code, 100..=199 | 204 | 304) {
        Reader::Done
    } else {
        match (head.chunked, length) {
            (Some(true), _) => Reader::Chunked(crate::chunked::Decoder::new(super::MAX_HEAD)),
            (Some(false), _) => Reader::Close,
            (None, _) if length_bad => {
                return Error::e_explain(
                    ErrorType::InvalidHTTPHeader,
                    "a response Content-Length that is not one number",
                )
            }
            (None, Some(0)) => Reader::Done,
            (None, Some(n)) => Reader::Length(n),
            (None, None) => Reader::Close,
        }
    };
    if matches!(head.reader, Reader::Close) {
        head.keepalive = false;
    }
    Ok(Parsed::Complete(head))
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}
