//! nginx directives the import accounts for without carrying them: what the edge does instead.
//!
//! Directives the import carries are handled in [`super::translate`]; a directive that is in
//! neither place is reported as having no equivalent.

use super::Kind;

/// `(directive, kind, why)`.
const KNOWN: &[(&str, Kind, &str)] = &[
    // The process and its event loop.
    ("user", Kind::ByDefault, "the edge runs as the user that starts it"),
    ("pid", Kind::ByDefault, "the edge writes its pid file into --runtime-dir"),
    ("daemon", Kind::ByDefault, "the edge runs in the foreground, for a service manager or container"),
    ("worker_rlimit_nofile", Kind::Differs, "the edge keeps the open-file limit it is started with: raise it with ulimit -n or the service manager (LimitNOFILE=)"),
    ("worker_connections", Kind::Differs, "the edge has no per-worker connection cap; max_connections_per_client (default 256) caps each client"),
    ("multi_accept", Kind::ByDefault, "each worker accepts what its listener has ready"),
    ("use", Kind::ByDefault, "the edge uses epoll on Linux"),
    ("accept_mutex", Kind::ByDefault, "each worker has its own SO_REUSEPORT listener"),
    ("worker_aio_requests", Kind::ByDefault, "the edge serves no files, so it has no file AIO"),
    ("aio", Kind::ByDefault, "the edge serves no files"),
    ("sendfile", Kind::ByDefault, "the edge serves no files"),
    ("tcp_nopush", Kind::ByDefault, "the edge writes each response head and body in as few writes as it can"),
    ("tcp_nodelay", Kind::ByDefault, "the edge sets TCP_NODELAY on every connection"),
    ("error_log", Kind::ByDefault, "the edge logs to stderr as JSON lines; RUST_LOG sets the level"),
    ("log_format", Kind::Differs, "the edge's access log is one JSON object per line with fixed fields (docs/observability.md)"),
    ("server_tokens", Kind::ByDefault, "the edge does not announce a version"),
    ("types", Kind::ByDefault, "the edge serves no files, so it needs no MIME types"),
    ("default_type", Kind::ByDefault, "the edge serves no files, so it needs no MIME types"),
    ("types_hash_max_size", Kind::ByDefault, "the edge serves no files, so it needs no MIME types"),
    ("server_names_hash_bucket_size", Kind::ByDefault, "the edge sizes its host index itself"),
    ("server_names_hash_max_size", Kind::ByDefault, "the edge sizes its host index itself"),
    ("variables_hash_max_size", Kind::ByDefault, "the edge has no variables"),
    ("reset_timedout_connection", Kind::ByDefault, "the edge closes timed-out connections at once"),
    ("lingering_close", Kind::ByDefault, "the edge drains what a client sent before closing"),
    ("ignore_invalid_headers", Kind::ByDefault, "the edge answers 400 to a header it cannot parse"),
    ("underscores_in_headers", Kind::ByDefault, "the edge passes header names with underscores"),
    ("http2", Kind::ByDefault, "the edge offers HTTP/2 by ALPN on every TLS listener"),
    // Proxying.
    ("proxy_http_version", Kind::ByDefault, "the edge speaks HTTP/1.1 with kept-alive connections to upstreams"),
    ("proxy_buffering", Kind::ByDefault, "the edge streams responses to the client with back-pressure"),
    ("proxy_buffer_size", Kind::ByDefault, "the edge sizes its response buffers itself"),
    ("proxy_buffers", Kind::ByDefault, "the edge sizes its response buffers itself"),
    ("proxy_busy_buffers_size", Kind::ByDefault, "the edge sizes its response buffers itself"),
    ("proxy_request_buffering", Kind::Differs, "the edge reads bodies up to client_body_buffer_size whole before sending them upstream and streams larger ones"),
    ("proxy_redirect", Kind::Differs, "the edge passes Location headers unchanged (it does not rewrite paths either)"),
    ("proxy_intercept_errors", Kind::NoEquivalent, "the edge passes upstream error responses through"),
    ("proxy_ignore_client_abort", Kind::Differs, "a client that hangs up ends its upstream request and is logged 499"),
    ("proxy_cache", Kind::NoEquivalent, "the edge has no response cache"),
    ("proxy_cache_path", Kind::NoEquivalent, "the edge has no response cache"),
    ("proxy_cache_valid", Kind::NoEquivalent, "the edge has no response cache"),
    ("proxy_cache_key", Kind::NoEquivalent, "the edge has no response cache"),
    ("proxy_hide_header", Kind::NoEquivalent, "the edge passes response headers unchanged"),
    ("proxy_pass_header", Kind::ByDefault, "the edge passes response headers unchanged"),
    ("proxy_next_upstream_timeout", Kind::NoEquivalent, "the edge bounds retries by next_upstream_tries, not by time"),
    ("chunked_transfer_encoding", Kind::ByDefault, "the edge frames bodies as the client's protocol needs"),
    ("limit_req_log_level", Kind::ByDefault, "the edge logs each rejection in its access log with status 429 (or limit_status)"),
    ("limit_conn", Kind::NoEquivalent, "the edge caps connections per client address for every listener (max_connections_per_client), not per zone"),
    ("limit_conn_zone", Kind::NoEquivalent, "the edge caps connections per client address for every listener (max_connections_per_client), not per zone"),
    ("limit_conn_status", Kind::NoEquivalent, "the edge caps connections per client address for every listener (max_connections_per_client), not per zone"),
    // Serving files and rewriting: the edge only proxies.
    ("root", Kind::NoEquivalent, "the edge serves no files"),
    ("alias", Kind::NoEquivalent, "the edge serves no files"),
    ("index", Kind::NoEquivalent, "the edge serves no files"),
    ("try_files", Kind::NoEquivalent, "the edge serves no files"),
    ("autoindex", Kind::NoEquivalent, "the edge serves no files"),
    ("expires", Kind::NoEquivalent, "the edge passes caching headers unchanged"),
    ("rewrite", Kind::NoEquivalent, "the edge does not rewrite request paths"),
    ("if", Kind::NoEquivalent, "the edge has no conditional configuration"),
    ("set", Kind::NoEquivalent, "the edge has no variables"),
    ("error_page", Kind::Differs, "the edge answers its own errors with small JSON bodies that carry the request id"),
    ("auth_basic", Kind::NoEquivalent, "the edge does not authenticate clients"),
    ("auth_basic_user_file", Kind::NoEquivalent, "the edge does not authenticate clients"),
    ("auth_request", Kind::NoEquivalent, "the edge does not authenticate clients"),
    ("satisfy", Kind::NoEquivalent, "the edge does not authenticate clients"),
    ("sub_filter", Kind::NoEquivalent, "the edge does not rewrite bodies"),
    // TLS.
    ("ssl_prefer_server_ciphers", Kind::ByDefault, "rustls picks among the offered AEAD suites itself; all are strong"),
    ("ssl_session_cache", Kind::Differs, "rustls keeps its own in-process session cache and issues session tickets; its size is not configurable"),
    ("ssl_session_timeout", Kind::Differs, "rustls keeps its own in-process session cache and issues session tickets; its lifetime is not configurable"),
    ("ssl_session_tickets", Kind::Differs, "the edge issues TLS 1.3 session tickets"),
    ("ssl_dhparam", Kind::ByDefault, "the edge offers no finite-field DHE suites, so it needs no DH parameters"),
    ("ssl_ecdh_curve", Kind::ByDefault, "rustls offers X25519, P-256 and P-384"),
    ("ssl_stapling_responder", Kind::NoEquivalent, "the edge asks the responder the certificate names (or reads ocsp = FILE)"),
    ("ssl_trusted_certificate", Kind::Differs, "the edge verifies OCSP responses with the issuer that follows the leaf in the certificate file: keep the chain there"),
    ("ssl_client_certificate", Kind::NoEquivalent, "the edge does not verify client certificates"),
    ("ssl_verify_client", Kind::NoEquivalent, "the edge does not verify client certificates"),
    ("ssl_buffer_size", Kind::ByDefault, "rustls sizes its TLS records itself"),
    ("http3", Kind::ByDefault, "the edge serves HTTP/3 on every QUIC listener (`[edge] http3`)"),
    ("http3_hq", Kind::NoEquivalent, "the edge speaks HTTP/3 over QUIC, not HTTP/0.9 over QUIC"),
    ("http3_max_concurrent_streams", Kind::Differs, "the edge bounds a QUIC connection's streams with http2_max_concurrent_streams"),
    ("http3_stream_buffer_size", Kind::ByDefault, "the edge sizes QUIC stream windows itself (256 KiB a stream, 2 MiB a connection)"),
    ("quic_retry", Kind::ByDefault, "the edge sends a Retry when more than 64 QUIC handshakes are under way (a flood), not to every client"),
    ("quic_gso", Kind::ByDefault, "the edge uses UDP GSO where the kernel has it, and falls back where it fails"),
    ("quic_host_key", Kind::ByDefault, "the edge makes its stateless-reset and token keys at start"),
    ("quic_active_connection_id_limit", Kind::ByDefault, "the edge keeps QUIC's connection ids itself"),
    ("quic_bpf", Kind::ByDefault, "the edge has one QUIC socket per address, which follows migrating clients without BPF"),
    // Compression.
    ("gzip_vary", Kind::ByDefault, "the edge always adds Vary: Accept-Encoding to what it compresses"),
    ("gzip_proxied", Kind::Differs, "the edge compresses every eligible response, whether or not the request came through a proxy (nginx's `gzip_proxied any`)"),
    ("gzip_buffers", Kind::ByDefault, "the edge compresses as it streams"),
    ("gzip_http_version", Kind::ByDefault, "the edge compresses for HTTP/1.0 clients too, without chunking"),
    ("gzip_disable", Kind::NoEquivalent, "the edge compresses for every client that accepts gzip"),
    ("gzip_static", Kind::NoEquivalent, "the edge serves no files"),
    // nginx's ACME module (acme_issuer and acme_certificate are carried).
    ("acme_shared_zone", Kind::ByDefault, "the edge's ACME state needs no shared memory zone"),
    ("ssl_certificate_cache", Kind::ByDefault, "the edge parses each certificate once, when it loads or obtains it"),
    // Upstream blocks.
    ("zone", Kind::ByDefault, "the edge's workers share each upstream's state"),
    ("keepalive_time", Kind::NoEquivalent, "the edge retires upstream connections by keepalive_requests and keepalive_timeout, not by age"),
    ("ntlm", Kind::NoEquivalent, "the edge does not pin upstream connections to clients"),
    ("random", Kind::NoEquivalent, "the edge balances round_robin, least_conn or ip_hash"),
    ("hash", Kind::NoEquivalent, "the edge balances round_robin, least_conn or ip_hash"),
    ("least_time", Kind::NoEquivalent, "the edge balances round_robin, least_conn or ip_hash"),
    ("sticky", Kind::NoEquivalent, "the edge keeps clients on a server only by ip_hash"),
];

/// What the edge does about `name`, if the table knows it.
pub fn lookup(name: &str) -> Option<(Kind, &'static str)> {
    KNOWN
        .iter()
        .find(|(known, _, _)| *known == name)
        .map(|(_, kind, why)| (*kind, *why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_directive_is_listed_once() {
        let mut names: Vec<&str> = KNOWN.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "a directive is listed twice");
        assert_eq!(lookup("sendfile").map(|(k, _)| k), Some(Kind::ByDefault));
        assert_eq!(
            lookup("proxy_cache").map(|(k, _)| k),
            Some(Kind::NoEquivalent)
        );
        assert!(
            lookup("proxy_pass").is_none(),
            "carried directives are not in the table"
        );
    }
}
