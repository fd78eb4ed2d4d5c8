//! The two heads a forwarded request crosses the edge with: the request head written for the
//! server ([`upstream_request`], bytes straight from the client's head) and the server's
//! answer made fit for the client ([`client_response`]).

use super::Body;
use crate::ctx::RequestCtx;
use crate::upstream::h1::{self, Upload};
use http::header;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::ErrorType;

/// A head from the server as the client gets it: its status, reason phrase and fields, as
/// HTTP/1.1 whatever the server spoke (an HTTP/1.0 status line would make a client
/// downgrade its next request), as nginx does.
pub(super) fn client_head(mut head: h1::Response) -> Result<Box<ResponseHeader>> {
    client_head_of(&mut head)
}

/// A server's 101 as the client gets it: its fields (`Upgrade` and the handshake's own, the
/// exchange dropped `Connection`), `Connection: upgrade`, and the edge's own fields.
pub(super) fn upgraded_head(
    mut head: h1::Response,
    ctx: &RequestCtx,
) -> Result<Box<ResponseHeader>> {
    for (name, value) in crate::respond::edge_fields(ctx) {
        head.headers.insert(name, value);
    }
    head.headers.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("upgrade"),
    );
    client_head_of(&mut head)
}

fn client_head_of(head: &mut h1::Response) -> Result<Box<ResponseHeader>> {
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = head.status;
    parts.version = http::Version::HTTP_11;
    parts.headers = std::mem::take(&mut head.headers);
    let mut out = Box::new(ResponseHeader::from(parts));
    out.set_reason_phrase(head.reason())?;
    Ok(out)
}

/// Request fields that end at the edge (RFC 9110 7.6.1, and the ones nginx also drops).
const HOP_BY_HOP: [&str; 11] = [
    "connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "expect",
    "keep-alive",
    "proxy-connection",
    "http2-settings",
];

fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.contains(&name)
}

/// Writes the request head sent upstream into `out`: the client's, without its hop-by-hop
/// fields (those the standard names and those its `Connection` nominates) and `Expect` (the
/// edge answered it), with the forwarding headers, as HTTP/1.1, and framed for the body the
/// edge holds; the framing is returned.
///
/// Written as bytes straight from the client's head: no second header map is built for it
/// (a map built and then serialised cost 1.9% of a small request's CPU, a cloned one 4.6%).
/// Names go upstream in their usual spelling ([`h1::write_field`]): HTTP field names are
/// case-insensitive (RFC 9110 5.1). The target goes as the client sent it.
///
/// HTTP/1.1 requires a Host on every request (RFC 9112 3.2, and nginx as a server refuses
/// one without): an HTTP/1.0 request that named no host gets the host of its absolute-form
/// target, or else `server_host`, the server's configured name, as a client of that server
/// would send.
pub fn upstream_request(
    req: &RequestHeader,
    ctx: &RequestCtx,
    body: &Body,
    upgrade: bool,
    server_host: &str,
    out: &mut Vec<u8>,
) -> Result<Upload> {
    let target = req.raw_path();
    if target
        .iter()
        .any(|&b| matches!(b, 0x00 | b'\n' | b'\r' | b' '))
    {
        return Error::e_explain(
            ErrorType::InvalidHTTPHeader,
            "a request target with a byte HTTP/1.1 forbids there",
        );
    }
    // Most requests carry no hop-by-hop field: one pass over the names finds out.
    let has_hop_by_hop = req.headers.keys().any(|name| hop_by_hop(name.as_str()));
    let nominated: Vec<String> = if has_hop_by_hop {
        req.headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|name| std::str::from_utf8(name.trim_ascii()).ok())
            .filter(|name| !name.is_empty())
            .map(str::to_ascii_lowercase)
            .filter(|name| {
                !matches!(
                    name.as_str(),
                    "host" | "x-forwarded-for" | "x-forwarded-proto"
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    // A body the edge holds or streams goes with the framing the edge writes for it.
    let reframed = !matches!(body, Body::Empty);
    // HTTP/2 and HTTP/3 carry the host in `:authority` (the codec has checked that a Host
    // beside it agrees) and may split `Cookie` into several fields: HTTP/1.1 wants one Host
    // and one Cookie (RFC 9113 8.3.1, 8.2.3; RFC 9114 4.2.1).
    let h2 = req.version >= http::Version::HTTP_2;
    let authority = req.uri.authority().filter(|_| h2);
    let cookies = h2 && req.headers.get_all(header::COOKIE).iter().nth(1).is_some();
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(authority) = authority {
        h1::write_field(out, &header::HOST, authority.as_str().as_bytes());
    }
    // Whether a Host goes out (seen on the way: a lookup in the map cost 0.5% of a small
    // request's instructions).
    let mut host_written = authority.is_some();
    // The client's own X-Forwarded-For (its first field), found on the way: the edge's
    // goes after it.
    let mut prior_forwarded_for = None;
    for (name, value) in &req.headers {
        if *name == crate::ctx::X_FORWARDED_FOR && prior_forwarded_for.is_none() {
            prior_forwarded_for = Some(value);
        }
        // An upgrade keeps its `Upgrade` (and the fields its `Connection` names, as the
        // handshake's own): the edge writes `Connection: upgrade` after them.
        let kept_for_upgrade = upgrade
            && *name != header::CONNECTION
            && (*name == header::UPGRADE || nominated.iter().any(|n| n == name.as_str()));
        let dropped = (has_hop_by_hop
            && !kept_for_upgrade
            && (hop_by_hop(name.as_str()) || nominated.iter().any(|n| n == name.as_str())))
            || crate::ctx::FORWARDING.contains(name)
            || (reframed && name == header::CONTENT_LENGTH)
            || (authority.is_some() && name == header::HOST)
            || (cookies && name == header::COOKIE);
        if !dropped {
            host_written |= name == header::HOST;
            h1::write_field(out, name, value.as_bytes());
        }
    }
    if !host_written {
        h1::write_field(out, &header::HOST, named_host(req, server_host).as_bytes());
    }
    if cookies {
        let mut joined = Vec::new();
        for (i, value) in req.headers.get_all(header::COOKIE).iter().enumerate() {
            if i > 0 {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(value.as_bytes());
        }
        h1::write_field(out, &header::COOKIE, &joined);
    }
    let length = match body {
        Body::Empty => None,
        Body::Whole(bytes) => Some(bytes.len() as u64),
        Body::Streaming(_) => crate::request::declared_length(req),
    };
    let upload = match (body, length) {
        (Body::Empty, _) => Upload::Length(0),
        (_, Some(length)) => {
            let mut digits = itoa::Buffer::new();
            h1::write_field(
                out,
                &header::CONTENT_LENGTH,
                digits.format(length).as_bytes(),
            );
            Upload::Length(length)
        }
        (_, None) => {
            h1::write_field(out, &header::TRANSFER_ENCODING, b"chunked");
            Upload::Chunked
        }
    };
    ctx.write_forwarding(prior_forwarded_for, out);
    if ctx.early_data {
        // RFC 8470 5.1: the server learns the request may be a replay.
        out.extend_from_slice(b"Early-Data: 1\r\n");
    }
    if upgrade {
        out.extend_from_slice(b"Connection: upgrade\r\n");
    } else if has_hop_by_hop && crate::downstream::h1::takes_trailers(req) {
        // A client that takes trailers gets them relayed: the server may send them.
        out.extend_from_slice(b"TE: trailers\r\nConnection: TE\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(upload)
}

/// The host a request names (its Host, or its absolute-form target's), or `server_host` when
/// it names none (HTTP/1.0 allows that; HTTP/1.1 and HTTP/2 toward the server do not).
fn named_host<'r>(req: &'r RequestHeader, server_host: &'r str) -> &'r str {
    match crate::request::host(req) {
        Ok(host) if !host.is_empty() => host,
        _ => server_host,
    }
}

/// RFC 8470's field on a request that came in TLS early data.
const EARLY_DATA: http::HeaderName = http::HeaderName::from_static("early-data");

/// The request head sent upstream over HTTP/2: the client's method, target and fields
/// without the hop-by-hop ones (HTTP/2 carries none: `TE` only as `trailers`), the host as
/// `:authority` (with `scheme`), the forwarding headers, and the body's length when the edge
/// holds it whole.
pub fn upstream_h2_request(
    req: &RequestHeader,
    ctx: &RequestCtx,
    body: &Body,
    scheme: &str,
    server_host: &str,
) -> Result<http::Request<()>> {
    let host = match req.uri.authority() {
        Some(authority) => authority.as_str(),
        None => named_host(req, server_host),
    };
    // An absolute-form target (HTTP/1.1's, to a proxy) goes as its path: `:path` carries no
    // scheme or authority (RFC 9113 8.3.1).
    let raw = std::str::from_utf8(req.raw_path()).unwrap_or("/");
    let target = match raw.starts_with('/') || raw == "*" {
        true => raw,
        false => req.uri.path_and_query().map_or("/", |p| p.as_str()),
    };
    let uri = http::Uri::builder()
        .scheme(scheme)
        .authority(host)
        .path_and_query(target)
        .build()
        .map_err(|e| {
            Error::because(
                ErrorType::InvalidHTTPHeader,
                "a request target HTTP/2 cannot carry",
                e,
            )
        })?;
    let forwarding = ctx.forwarding_headers(req.headers.get(crate::ctx::X_FORWARDED_FOR));
    let nominated: Vec<String> = req
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|name| std::str::from_utf8(name.trim_ascii()).ok())
        .map(str::to_ascii_lowercase)
        .collect();
    let mut headers = http::HeaderMap::with_capacity(req.headers.len() + forwarding.len());
    for (name, value) in &req.headers {
        let dropped = *name == header::HOST
            || (hop_by_hop(name.as_str()) && *name != header::TE)
            || (*name == header::TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers"))
            || nominated.iter().any(|n| n == name.as_str())
            || forwarding.iter().any(|(set, _)| set == name)
            || (!matches!(body, Body::Empty) && *name == header::CONTENT_LENGTH);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    if let Body::Whole(bytes) = body {
        headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from(bytes.len()));
    } else if let (Body::Streaming(_), Some(length)) = (body, crate::request::declared_length(req))
    {
        headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
    }
    for (name, value) in forwarding {
        headers.insert(name, value);
    }
    if ctx.early_data {
        headers.insert(EARLY_DATA, http::HeaderValue::from_static("1"));
    }
    let mut request = http::Request::new(());
    *request.method_mut() = req.method.clone();
    *request.uri_mut() = uri;
    *request.version_mut() = http::Version::HTTP_2;
    *request.headers_mut() = headers;
    Ok(request)
}

/// The upstream's response head made fit for the client: the edge's own fields are added
/// ([`crate::respond::edge_fields`]; the exchange has already left out the hop-by-hop
/// ones, and the client side sets its own `Connection`), and a body without a length is
/// sent chunked to an HTTP/1.1 client, so its connection can be kept. The flag is `false`
/// when the body has no length the client can read, so only the close can end it (an
/// HTTP/1.0 client).
///
/// The map is the one the server's head was parsed into, moved, not copied.
pub(super) fn client_response(
    mut upstream: h1::Response,
    no_body: bool,
    client_http11: bool,
    ctx: &RequestCtx,
) -> Result<(Box<ResponseHeader>, bool)> {
    let headers = &mut upstream.headers;
    for (name, value) in crate::respond::edge_fields(ctx) {
        headers.insert(name, value);
    }
    let framed = if no_body || headers.contains_key(header::CONTENT_LENGTH) {
        true
    } else if client_http11 {
        // Relayed chunked; a coding the server applied (`gzip`) stays, with chunked after it
        // as the coding the body now travels in.
        let coded = match crate::downstream::h1::ends_chunked(headers) {
            Some(true) => None,
            Some(false) => headers
                .get(header::TRANSFER_ENCODING)
                .map(|v| [v.as_bytes(), b", chunked"].concat()),
            None => Some(b"chunked".to_vec()),
        };
        if let Some(coding) = coded {
            let value = http::HeaderValue::from_bytes(&coding).map_err(|_| {
                Error::explain(ErrorType::InvalidHTTPHeader, "a bad Transfer-Encoding")
            })?;
            headers.insert(header::TRANSFER_ENCODING, value);
        }
        true
    } else {
        // HTTP/1.0 has no chunked coding: the body goes as it is, ended by the close.
        headers.remove(header::TRANSFER_ENCODING);
        false
    };
    Ok((client_head(upstream)?, framed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    fn ctx() -> RequestCtx {
        let text = "[upstreams.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\n[[routes]]\npath = \"/\"\nupstream = \"app\"\n";
        let config = crate::config::validate("test.toml", text)
            .expect("valid")
            .config;
        let snapshot = crate::snapshot::Snapshot::compile("test.toml", config, None);
        RequestCtx::new(Arc::new(snapshot))
    }

    fn head_for(fields: &[(&str, &str)], body: &Body) -> (String, Upload) {
        let mut req = RequestHeader::build("POST", b"/up", None).expect("head");
        for (name, value) in fields {
            req.append_header(name.to_string(), *value).expect("field");
        }
        let mut out = Vec::new();
        let upload =
            upstream_request(&req, &ctx(), body, false, "app.internal", &mut out).expect("written");
        (String::from_utf8(out).expect("text"), upload)
    }

    /// HTTP/1.1 and HTTP/2 toward a server need a host; HTTP/1.0 from a client may name
    /// none. The server gets the absolute-form target's host, or its own configured name.
    #[test]
    fn a_request_that_names_no_host_gets_one_upstream() {
        let request = |target: &[u8], host: Option<&str>| {
            let mut req = RequestHeader::build("GET", target, None).expect("head");
            req.set_version(http::Version::HTTP_10);
            if let Some(host) = host {
                req.append_header("host", host).expect("host");
            }
            req
        };
        let h1 = |req: &RequestHeader| {
            let mut out = Vec::new();
            upstream_request(
                req,
                &ctx(),
                &Body::Empty,
                false,
                "app.internal:8080",
                &mut out,
            )
            .expect("written");
            String::from_utf8(out).expect("text")
        };
        let h2 = |req: &RequestHeader| {
            upstream_h2_request(req, &ctx(), &Body::Empty, "http", "app.internal:8080")
                .expect("written")
                .uri()
                .clone()
        };
        let bare = request(b"/x?a=1", None);
        assert!(
            h1(&bare).contains("\r\nHost: app.internal:8080\r\n"),
            "{}",
            h1(&bare)
        );
        assert_eq!(h2(&bare), "http://app.internal:8080/x?a=1");
        let absolute = request(b"http://a.example/x?a=1", None);
        assert!(h1(&absolute).contains("\r\nHost: a.example\r\n"));
        assert_eq!(
            h2(&absolute),
            "http://a.example/x?a=1",
            "no scheme in :path"
        );
        // A client's own Host goes as it is, once.
        let named = request(b"/x", Some("b.example"));
        assert_eq!(h1(&named).matches("Host: ").count(), 1);
        assert!(h1(&named).contains("\r\nHost: b.example\r\n"));
        assert_eq!(h2(&named), "http://b.example/x");
    }

    #[test]
    fn the_forwarding_fields_written_as_bytes_are_the_ones_http2_upstreams_get() {
        let mut ctx = ctx();
        ctx.tls = true;
        // A client named by a trusted proxy, and a client that is the peer.
        let pairs = [("10.0.0.7", "203.0.113.9"), ("10.0.0.7", "10.0.0.7")];
        let priors = [None, Some(http::HeaderValue::from_static("198.51.100.1"))];
        for ((peer, client), prior) in pairs
            .iter()
            .flat_map(|p| priors.iter().map(move |v| (p, v)))
        {
            ctx.peer_ip = peer.parse().expect("ip");
            ctx.client_ip = client.parse().expect("ip");
            let mut written = Vec::new();
            ctx.write_forwarding(prior.as_ref(), &mut written);
            let mut expected = Vec::new();
            for (name, value) in ctx.forwarding_headers(prior.as_ref()) {
                h1::write_field(&mut expected, &name, value.as_bytes());
            }
            assert_eq!(
                String::from_utf8_lossy(&written),
                String::from_utf8_lossy(&expected)
            );
        }
        // A client's own are replaced, not passed beside the edge's.
        let (head, _) = head_for(
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-real-ip", "5.6.7.8"),
                ("x-forwarded-proto", "gopher"),
            ],
            &Body::Empty,
        );
        assert_eq!(
            head.matches("X-Forwarded-For").count() + head.matches("x-forwarded-for").count(),
            1,
            "{head}"
        );
        assert!(
            head.contains("1.2.3.4, "),
            "the prior hops are kept: {head}"
        );
        assert!(
            !head.contains("5.6.7.8") && !head.contains("gopher"),
            "{head}"
        );
        // Of two fields, the first carries the chain on (as a map lookup of it did).
        let (head, _) = head_for(
            &[
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "9.9.9.9"),
            ],
            &Body::Empty,
        );
        let chain = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("x-forwarded-for:"))
            .collect::<Vec<_>>();
        assert_eq!(chain.len(), 1, "{head}");
        assert!(chain[0].contains("1.2.3.4, "), "{head}");
        assert!(!head.contains("9.9.9.9"), "{head}");
    }

    #[test]
    fn a_body_goes_upstream_with_the_one_framing_the_edge_writes_for_it() {
        let streaming = Body::Streaming(Bytes::from_static(b"first part"));
        // Identical lengths in a list (framing lets them through) become one length.
        let (head, upload) = head_for(&[("content-length", "20000, 20000")], &streaming);
        assert_eq!(upload, Upload::Length(20000));
        assert_eq!(
            head.matches("Content-Length: 20000\r\n").count(),
            1,
            "{head}"
        );
        assert!(
            !head.contains("20000, 20000") && !head.contains("chunked"),
            "{head}"
        );
        // A chunked body of unknown length streams chunked.
        let (head, upload) = head_for(&[("transfer-encoding", "chunked")], &streaming);
        assert_eq!(upload, Upload::Chunked);
        assert_eq!(
            head.matches("Transfer-Encoding: chunked\r\n").count(),
            1,
            "{head}"
        );
        assert!(!head.contains("Content-Length"), "{head}");
        // A whole body is sent with its length, whatever the client declared.
        let whole = Body::Whole(Bytes::from_static(b"abc"));
        let (head, upload) = head_for(&[("transfer-encoding", "chunked")], &whole);
        assert_eq!(upload, Upload::Length(3));
        assert!(
            head.contains("Content-Length: 3\r\n") && !head.contains("chunked"),
            "{head}"
        );
        // No body: the client's own fields go as they were.
        let (head, upload) = head_for(&[("content-length", "0")], &Body::Empty);
        assert_eq!(upload, Upload::Length(0));
        assert!(
            head.starts_with("POST /up HTTP/1.1\r\n") && head.contains("Content-Length: 0\r\n")
        );
        assert!(head.ends_with("\r\n\r\n"));
    }
}
