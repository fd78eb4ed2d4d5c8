//! Whether the answer would be compressed: `[gzip]` and the codings the client accepts.

use super::*;

pub(super) fn compression(snapshot: &Snapshot, req: &RequestHeader) -> Compression {
    let gzip = &snapshot.config.gzip;
    let accepted: Vec<String> = req
        .headers
        .get_all(http::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| {
            let mut parts = item.split(';');
            let coding = parts.next()?.trim().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (matches!(coding.as_str(), "gzip" | "br" | "zstd") && !refused).then_some(coding)
        })
        .collect();
    let says = if !gzip.enabled {
        "no: [gzip] is off".to_string()
    } else if accepted.is_empty() {
        "no: the client accepts none of gzip, br, zstd".to_string()
    } else {
        format!(
            "yes, for responses of {} of at least {} bytes without a Content-Encoding ({} preferred by the client)",
            gzip.types.join(", "),
            gzip.min_length,
            accepted.join(", ")
        )
    };
    Compression {
        enabled: gzip.enabled,
        accepted,
        min_length: gzip.min_length,
        types: gzip.types.clone(),
        says,
    }
}
