//! The chunked transfer coding (RFC 9112 7.1), read without I/O: a [`Decoder`] takes what
//! a buffer holds and says what it found, or that it needs more bytes. The upstream exchange
//! reads answers with it and the HTTP/1.1 client session request bodies; each brings its own
//! reads and its own errors. A leaf: it imports nothing of the edge.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The longest chunk-size line (with extensions) read.
pub const MAX_CHUNK_LINE: usize = 4096;

/// What the next step of decoding found.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Bytes of the body (a slice of the buffer, not a copy).
    Data(Bytes),
    /// The buffer holds no whole next piece: read more into it and ask again.
    More,
    /// The body ended, with the trailer fields that came after its last chunk.
    End(Option<HeaderMap>),
}

/// Where decoding stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: the bytes of it left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines up to an empty one, this many bytes of them read.
    Trailers(usize),
    Done,
}

/// A chunked body being decoded.
#[derive(Debug)]
pub struct Decoder {
    state: State,
    /// The most trailer bytes taken.
    max_trailers: usize,
    trailers: Option<HeaderMap>,
}

impl Decoder {
    /// A body whose trailer section may be up to `max_trailers` bytes.
    pub fn new(max_trailers: usize) -> Decoder {
        Decoder {
            state: State::Size,
            max_trailers,
            trailers: None,
        }
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The next step, from the bytes at the start of `buf` (what it uses is taken off). An
    /// error says why the coding is broken.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Step, &'static str> {
        loop {
            match self.state {
                State::Done => return Ok(Step::End(None)),
                State::Size => {
                    let Some(line) = line(buf, "a chunk-size line too long")? else {
                        return Ok(Step::More);
                    };
                    let size = chunk_size(&buf[..line])?;
                    buf.advance(line + 2);
                    self.state = match size {
                        0 => State::Trailers(0),
                        n => State::Data(n),
                    };
                }
                State::Data(left) => {
                    if buf.is_empty() {
                        return Ok(Step::More);
                    }
                    let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let data = buf.split_to(take).freeze();
                    self.state = match left - take as u64 {
                        0 => State::DataEnd,
                        rest => State::Data(rest),
                    };
                    return Ok(Step::Data(data));
                }
                State::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(Step::More);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err("a chunk's data is not followed by CRLF");
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers(read) => {
                    let Some(line) = line(buf, "a trailer line too long")? else {
                        return Ok(Step::More);
                    };
                    let read = read + line + 2;
                    if read > self.max_trailers {
                        return Err("trailer fields larger than a head may be");
                    }
                    if line == 0 {
                        buf.advance(2);
                        self.state = State::Done;
                        return Ok(Step::End(self.trailers.take()));
                    }
                    let field = buf.split_to(line + 2);
                    if let Some((name, value)) = trailer_field(&field[..line]) {
                        self.trailers
                            .get_or_insert_with(HeaderMap::new)
                            .append(name, value);
                    }
                    self.state = State::Trailers(read);
                }
            }
        }
    }
}

/// The length of the CRLF-ended line at the start of `buf` (without its CRLF), once it is
/// all there; `None` while it is not.
fn line(buf: &[u8], too_long: &'static str) -> Result<Option<usize>, &'static str> {
    match memchr(b'\n', buf) {
        Some(end) if end == 0 || buf[end - 1] != b'\r' => {
            Err("a chunked body line not ended by CRLF")
        }
        Some(end) => Ok(Some(end - 1)),
        None if buf.len() > MAX_CHUNK_LINE => Err(too_long),
        None => Ok(None),
    }
}

/// The size of a chunk from its chunk-size line (hex digits, then optional extensions after
/// `;`, which are ignored).
pub fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let rest = &line[digits..];
    let rest_ok = rest.is_empty() || rest.trim_ascii_start().first() == Some(&b';');
    if digits == 0 || digits > 15 || !rest_ok {
        return Err("a bad chunk-size line");
    }
    let text = std::str::from_utf8(&line[..digits]).map_err(|_| "a bad chunk size")?;
    u64::from_str_radix(text, 16).map_err(|_| "a bad chunk size")
}

pub fn memchr(byte: u8, bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == byte)
}

/// A trailer field line as it may be relayed: a valid name and value, and not one a trailer
/// must not carry (framing, routing, the connection's own; RFC 9110 6.5.1). Others are
/// dropped, as a recipient may.
fn trailer_field(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = memchr(b':', line)?;
    let name = HeaderName::from_bytes(&line[..colon]).ok()?;
    let forbidden = name == header::CONNECTION
        || name == header::CONTENT_LENGTH
        || name == header::TRANSFER_ENCODING
        || name == header::HOST
        || name == header::TE
        || name == header::TRAILER
        || name == header::CONTENT_ENCODING
        || name == header::CONTENT_TYPE
        || matches!(name.as_str(), "keep-alive" | "proxy-connection");
    if forbidden {
        return None;
    }
    let value = HeaderValue::from_bytes(line[colon + 1..].trim_ascii()).ok()?;
    Some((name, value))
}

/// `len` in hexadecimal (upper case) with the line end, as a chunk starts.
pub fn size_line(out: &mut [u8; 18], mut len: usize) -> &[u8] {
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

    /// Decodes `body` fed `step` bytes at a time: the data, the trailers, or the error.
    fn decode(body: &[u8], step: usize) -> Result<(Vec<u8>, Option<HeaderMap>), &'static str> {
        let mut decoder = Decoder::new(1024);
        let mut buf = BytesMut::new();
        let mut fed = 0;
        let mut data = Vec::new();
        loop {
            match decoder.next(&mut buf)? {
                Step::Data(d) => data.extend_from_slice(&d),
                Step::End(trailers) => {
                    assert!(decoder.is_done());
                    return Ok((data, trailers));
                }
                Step::More => {
                    if fed >= body.len() {
                        return Err("ran out");
                    }
                    let end = (fed + step).min(body.len());
                    buf.extend_from_slice(&body[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn a_body_is_decoded_whatever_the_reads_and_its_trailers_kept() {
        let body = b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\ngrpc-status:  0 \r\n\
            Content-Length: 5\r\nbad line\r\n\r\n";
        for step in [1, 2, 3, 7, 1000] {
            let (data, trailers) = decode(body, step).expect("decodes");
            assert_eq!(data, b"hello world", "step {step}");
            let trailers = trailers.expect("trailers");
            assert_eq!(trailers["x-trailer"], "t");
            assert_eq!(trailers["grpc-status"], "0");
            assert_eq!(trailers.len(), 2, "{trailers:?}");
        }
        assert_eq!(decode(b"0\r\n\r\n", 1), Ok((Vec::new(), None)));
    }

    #[test]
    fn broken_codings_are_refused() {
        assert!(decode(b"zz\r\nabc\r\n0\r\n\r\n", 100).is_err());
        assert!(decode(b"3\r\nabcX\r\n0\r\n\r\n", 100).is_err());
        assert!(decode(b"3\nabc\r\n0\r\n\r\n", 100).is_err());
        assert!(decode(b"1234567890ABCDEF0\r\n", 100).is_err());
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_CHUNK_LINE + 1));
        assert!(decode(&long, 10_000).is_err());
        let mut trailers = b"0\r\n".to_vec();
        for n in 0..40 {
            trailers.extend_from_slice(format!("x-{n}: {}\r\n", "v".repeat(40)).as_bytes());
        }
        trailers.extend_from_slice(b"\r\n");
        assert!(decode(&trailers, 100).is_err(), "over the trailer bound");
    }

    #[test]
    fn chunk_sizes_are_hexadecimal_lines() {
        let mut out = [0u8; 18];
        assert_eq!(size_line(&mut out, 0), b"0\r\n");
        assert_eq!(size_line(&mut out, 255), b"FF\r\n");
        assert_eq!(size_line(&mut out, 0x1_0000), b"10000\r\n");
        assert_eq!(size_line(&mut out, usize::MAX).len(), 18);
        assert_eq!(chunk_size(b"1a ; x=y"), Ok(26));
        assert_eq!(chunk_size(b"A;name=value"), Ok(10));
        assert_eq!(chunk_size(b"0"), Ok(0));
        for bad in [&b""[..], b"-1", b"1 2", b"g", b"1234567890abcdef0", b" 1"] {
            assert!(chunk_size(bad).is_err(), "{bad:?}");
        }
    }
}
