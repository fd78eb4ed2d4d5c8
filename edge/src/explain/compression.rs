//! Whether the answer would be compressed: `[gzip]` and the codings the client accepts.

use super::*;

pub(super) fn compression(snapshot: &Snapshot, req: &RequestHeader) -> Compression {
    let gzip = &snapshot.config.gzip;
    // The codings in the client's order of preference, those it weighs 0 left out: what the
    // compressor is shown (`compress::preferred_codings`).
    let accepted: Vec<String> = req
        .headers
        .get(http::header::ACCEPT_ENCODING)
        .map(|v| {
            crate::compress::preferred_codings(v.as_bytes())
                .unwrap_or_else(|| String::from_utf8_lossy(v.as_bytes()).into_owned())
        })
        .unwrap_or_default()
        .split(',')
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| matches!(coding.as_str(), "gzip" | "br" | "zstd"))
        .collect();
    let says = if !gzip.enabled {
        "no: [gzip] is off".to_string()
    } else if accepted.is_empty() {
        "no: the client accepts none of gzip, br, zstd".to_string()
    } else {
        format!(
            "yes, for responses of {} of at least {} bytes without a Content-Encoding ({} preferred by the client)",
            crate::compress::types(gzip).join(", "),
            gzip.min_length,
            accepted.join(", ")
        )
    };
    Compression {
        enabled: gzip.enabled,
        accepted,
        min_length: gzip.min_length,
        types: crate::compress::types(gzip),
        says,
    }
}
