//! Which responses get compressed: the `[gzip]` rules (nginx's gzip_types, gzip_min_length),
//! applied before Pingora's compression module, which then streams gzip (or brotli/zstd when
//! the client prefers them) and adds `Vary: Accept-Encoding`.

use crate::config::GzipSettings;
use pingora::http::ResponseHeader;

/// Whether `response` should be compressed under `gzip` (the client's Accept-Encoding is the
/// module's business).
pub fn wanted(gzip: &GzipSettings, response: &ResponseHeader) -> bool {
    if !gzip.enabled
        || response
            .headers
            .contains_key(http::header::CONTENT_ENCODING)
    {
        return false;
    }
    let header = |name| {
        response
            .headers
            .get(name)
            .and_then(|v: &http::HeaderValue| v.to_str().ok())
    };
    let too_short = header(http::header::CONTENT_LENGTH)
        .and_then(|v| v.trim().parse::<u64>().ok())
        .is_some_and(|len| len < gzip.min_length);
    if too_short {
        return false;
    }
    let Some(content_type) = header(http::header::CONTENT_TYPE) else {
        return false;
    };
    let mime = content_type.split(';').next().unwrap_or("").trim();
    mime.eq_ignore_ascii_case(ALWAYS) || gzip.types.iter().any(|t| t.eq_ignore_ascii_case(mime))
}

/// The type compressed whatever `types` lists, as nginx's gzip always compresses it
/// (`gzip_types` adds to it).
pub const ALWAYS: &str = "text/html";

/// The media types compressed under `gzip`: [`ALWAYS`], then the configured ones.
pub fn types(gzip: &GzipSettings) -> Vec<String> {
    let listed = gzip
        .types
        .iter()
        .filter(|t| !t.eq_ignore_ascii_case(ALWAYS));
    std::iter::once(ALWAYS.to_string())
        .chain(listed.cloned())
        .collect()
}

/// The codings an `Accept-Encoding` value asks for, most preferred first, in the form
/// Pingora's compressor reads (a plain list: it takes the first coding it knows and reads no
/// weights); `None` when the value can be read as it is (no weights, no `*`). A coding with
/// `q=0` is "not acceptable" (RFC 9110 12.5.3) and left out, as is one with a weight that is
/// not a number; `*` stands for the codings the edge can apply that are not named.
pub fn preferred_codings(accept: &[u8]) -> Option<String> {
    if !accept.iter().any(|&b| b == b';' || b == b'*') {
        return None;
    }
    let text = String::from_utf8_lossy(accept);
    let mut named: Vec<(String, f32)> = Vec::new();
    let mut any = None;
    for item in text.split(',') {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        if coding.is_empty() {
            continue;
        }
        let mut q = 1.0;
        for param in parts {
            if let Some((key, value)) = param.split_once('=') {
                if key.trim().eq_ignore_ascii_case("q") {
                    q = value.trim().parse::<f32>().unwrap_or(0.0);
                }
            }
        }
        if coding == "*" {
            any = Some(q);
        } else {
            named.push((coding, q));
        }
    }
    if let Some(q) = any {
        for coding in ["br", "zstd", "gzip"] {
            if !named.iter().any(|(c, _)| c == coding) {
                named.push((coding.to_string(), q));
            }
        }
    }
    named.retain(|(_, q)| *q > 0.0);
    // Stable: equal weights keep the client's order.
    named.sort_by(|a, b| b.1.total_cmp(&a.1));
    let list: Vec<&str> = named.iter().map(|(c, _)| c.as_str()).collect();
    Some(list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_weights_order_the_codings_and_zero_refuses_one() {
        let pref = |v: &str| preferred_codings(v.as_bytes());
        assert_eq!(pref("gzip"), None);
        assert_eq!(pref("gzip, br"), None, "no weights: read as it is");
        assert_eq!(pref("gzip;q=0, br").as_deref(), Some("br"));
        assert_eq!(
            pref("gzip;q=0.5, br;q=0.8, zstd").as_deref(),
            Some("zstd, br, gzip")
        );
        assert_eq!(pref("gzip;q=0, br;q=0").as_deref(), Some(""));
        assert_eq!(pref("GZIP;Q=0.000, br").as_deref(), Some("br"));
        assert_eq!(pref("*").as_deref(), Some("br, zstd, gzip"));
        assert_eq!(pref("gzip;q=0, *;q=0.5").as_deref(), Some("br, zstd"));
        assert_eq!(pref("br;q=0.9, *;q=0").as_deref(), Some("br"));
        assert_eq!(pref("gzip;q=nonsense, br").as_deref(), Some("br"));
        assert_eq!(
            pref("identity;q=1, gzip;q=0.5").as_deref(),
            Some("identity, gzip")
        );
    }

    fn gzip() -> GzipSettings {
        GzipSettings {
            enabled: true,
            min_length: 1024,
            level: 6,
            types: vec!["application/json".into(), "text/plain".into()],
        }
    }

    fn response(headers: &[(&'static str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).expect("header");
        for (k, v) in headers {
            r.insert_header(*k, *v).expect("insert");
        }
        r
    }

    #[test]
    fn types_lengths_and_encodings_decide() {
        let g = gzip();
        let json = ("content-type", "application/json; charset=utf-8");
        assert!(wanted(&g, &response(&[json, ("content-length", "32768")])));
        assert!(
            wanted(&g, &response(&[json])),
            "no length: streamed, compressed"
        );
        assert!(!wanted(&g, &response(&[json, ("content-length", "500")])));
        assert!(!wanted(&g, &response(&[("content-type", "image/png")])));
        // HTML whatever the list says, as nginx.
        let html = ("content-type", "text/html; charset=utf-8");
        assert!(wanted(&g, &response(&[html, ("content-length", "2000")])));
        assert_eq!(types(&g), ["text/html", "application/json", "text/plain"]);
        let shouted = ("content-type", " Application/JSON ;charset=utf-8");
        assert!(wanted(&g, &response(&[shouted])), "types match in any case");
        assert!(!wanted(&g, &response(&[json, ("content-encoding", "br")])));
        assert!(!wanted(&g, &response(&[("content-length", "5000")])));
        let off = GzipSettings {
            enabled: false,
            ..g
        };
        assert!(!wanted(&off, &response(&[json])));
    }
}
