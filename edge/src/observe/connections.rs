//! Client connections: TLS handshakes by version, counted once per connection, and the
//! connections open now, read from /proc when `/metrics` is scraped.
//!
//! Pingora 0.9.1 has no hook when a client connection opens or closes (that needs its
//! `connection_filter` feature), so a connection is seen at its first request: for HTTP/1 that
//! is the request not preceded by `on_connection_reuse`, for HTTP/2 the first stream that
//! carries a TLS digest not seen before (streams of one connection share it).

use pingora::protocols::tls::SslDigest;
use prometheus::IntCounterVec;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// `edge_tls_handshakes_total{version}`, registered with the request metrics.
pub static TLS_HANDSHAKES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    IntCounterVec::new(
        prometheus::Opts::new(
            "edge_tls_handshakes_total",
            "TLS connections by negotiated protocol version (counted at their first request)",
        ),
        &["version"],
    )
    .expect("valid metric")
});

/// HTTP/2 connections already counted, keyed by their shared TLS digest.
static H2_SEEN: LazyLock<Mutex<HashMap<usize, Weak<SslDigest>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Entries kept before dead connections are swept out of [`H2_SEEN`].
const H2_SWEEP_AT: usize = 1024;

/// Counts the handshake of a TLS connection at its first request.
pub fn first_request(digest: &Arc<SslDigest>) {
    TLS_HANDSHAKES
        .with_label_values(&[tls_version_name(&digest.version)])
        .inc();
}

/// rustls' version name ("TLSv1_3") in the config's spelling ("TLSv1.3").
pub fn tls_version_name(rustls_name: &str) -> &str {
    match rustls_name {
        "TLSv1_3" => "TLSv1.3",
        "TLSv1_2" => "TLSv1.2",
        other => other,
    }
}

/// Counts the handshake of an HTTP/2 connection the first time one of its streams is seen.
pub fn h2_stream(digest: &Arc<SslDigest>) {
    let key = Arc::as_ptr(digest) as usize;
    let mut seen = H2_SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(known) = seen.get(&key) {
        // The same live allocation is the same connection; a dead entry whose address was
        // reused is a new one.
        if known.strong_count() > 0 {
            return;
        }
    }
    if seen.len() >= H2_SWEEP_AT {
        seen.retain(|_, w| w.strong_count() > 0);
    }
    seen.insert(key, Arc::downgrade(digest));
    drop(seen);
    first_request(digest);
}

/// Established client connections of this process on each of `listeners` ("http", "https"
/// and their addresses), from /proc/self/fd and /proc/net/tcp{,6}.
pub fn open_connections(listeners: &[(&'static str, SocketAddr)]) -> Vec<(&'static str, u64)> {
    let mut counts: Vec<(&'static str, u64)> = Vec::new();
    for (name, _) in listeners {
        if !counts.iter().any(|(n, _)| n == name) {
            counts.push((name, 0));
        }
    }
    let inodes = own_socket_inodes();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for (port, inode) in established(&text) {
            if !inodes.contains(&inode) {
                continue;
            }
            if let Some((name, _)) = listeners.iter().find(|(_, a)| a.port() == port) {
                if let Some(entry) = counts.iter_mut().find(|(n, _)| n == name) {
                    entry.1 += 1;
                }
            }
        }
    }
    counts
}

/// Socket inodes of this process's open file descriptors.
fn own_socket_inodes() -> std::collections::HashSet<u64> {
    let mut inodes = std::collections::HashSet::new();
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return inodes;
    };
    for entry in dir.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse().ok())
            {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// (local port, inode) of each ESTABLISHED socket in a /proc/net/tcp table.
fn established(table: &str) -> impl Iterator<Item = (u16, u64)> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
        if fields.len() < 10 || fields[3] != "01" {
            return None;
        }
        let port = u16::from_str_radix(fields[1].rsplit(':').next()?, 16).ok()?;
        Some((port, fields[9].parse().ok()?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_established_sockets_from_a_proc_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0 100 0 0 10 0
   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 1002 1 0 20 4 30 10 -1
   2: 0100007F:C350 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0 20 4 30 10 -1
";
        let found: Vec<(u16, u64)> = established(table).collect();
        assert_eq!(found, vec![(8080, 1002), (50000, 1003)]);
    }

    #[test]
    fn counts_this_process_connections_per_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _a = std::net::TcpStream::connect(addr).expect("connect");
        let _b = std::net::TcpStream::connect(addr).expect("connect");
        let _accepted = (
            listener.accept().expect("accept"),
            listener.accept().expect("accept"),
        );
        let counts = open_connections(&[("http", addr)]);
        // Both ends live in this process; only the accepted ends have the listener's port.
        assert_eq!(counts, vec![("http", 2)]);
    }

    #[test]
    fn an_h2_connection_is_counted_once_across_streams() {
        let digest = Arc::new(SslDigest::new(
            "TLS_AES_128_GCM_SHA256",
            "TESTv9",
            None,
            None,
            Vec::new(),
        ));
        let before = TLS_HANDSHAKES.with_label_values(&["TESTv9"]).get();
        h2_stream(&digest);
        h2_stream(&digest.clone());
        assert_eq!(
            TLS_HANDSHAKES.with_label_values(&["TESTv9"]).get(),
            before + 1
        );
        let other = Arc::new(SslDigest::new(
            "TLS_AES_128_GCM_SHA256",
            "TESTv9",
            None,
            None,
            Vec::new(),
        ));
        h2_stream(&other);
        assert_eq!(
            TLS_HANDSHAKES.with_label_values(&["TESTv9"]).get(),
            before + 2
        );
    }
}
