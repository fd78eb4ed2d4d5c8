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
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    gzip.types.iter().any(|t| t.eq_ignore_ascii_case(&mime))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!wanted(&g, &response(&[json, ("content-encoding", "br")])));
        assert!(!wanted(&g, &response(&[("content-length", "5000")])));
        let off = GzipSettings {
            enabled: false,
            ..g
        };
        assert!(!wanted(&off, &response(&[json])));
    }
}
