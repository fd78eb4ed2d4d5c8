//! Who the client is: its IP (socket peer, or `X-Forwarded-For` from trusted proxies) and the
//! request id that follows the request through logs and backends.

use ipnet::IpNet;
use std::io::Write;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

/// `IpNet::contains` that also matches IPv4-mapped IPv6 clients against IPv4 networks.
pub fn net_contains(net: &IpNet, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpNet::V4(n), IpAddr::V6(v6)) => v6.to_ipv4_mapped().is_some_and(|v4| n.contains(&v4)),
        _ => net.contains(&ip),
    }
}

/// The client's address. When the socket peer is a trusted proxy, `X-Forwarded-For` is read
/// from the right: the first address that is not itself a trusted proxy is the client (nginx's
/// `real_ip_recursive on`). An unparsable entry stops the walk at the last good address.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&[u8]>, trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|n| net_contains(n, ip));
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer) {
        return peer;
    }
    let Some(header) = forwarded_for.and_then(|h| std::str::from_utf8(h).ok()) else {
        return peer;
    };
    let mut client = peer;
    for entry in header.rsplit(',') {
        match entry.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client) {
                    return client;
                }
            }
            Err(_) => return client,
        }
    }
    client
}

/// IPv4-mapped IPv6 addresses as plain IPv4, so that limits and ip_hash see one client.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A request id: the client's `X-Request-Id` when it is sane (1 to 128 visible ASCII
/// characters of `[A-Za-z0-9._:-]`), otherwise a new one.
pub fn request_id(incoming: Option<&[u8]>) -> RequestId {
    match incoming {
        Some(id) if valid_request_id(id) => RequestId::of(id),
        _ => new_request_id(),
    }
}

/// The longest request id taken from a client.
const REQUEST_ID_MAX: usize = 128;

/// A request id in place (every request has one: no allocation for it), read as a `&str`.
#[derive(Clone)]
pub struct RequestId {
    buf: [u8; REQUEST_ID_MAX],
    len: u8,
}

impl RequestId {
    /// `id` must be visible ASCII of at most [`REQUEST_ID_MAX`] bytes (longer is cut).
    fn of(id: &[u8]) -> RequestId {
        let mut buf = [0u8; REQUEST_ID_MAX];
        let len = id.len().min(REQUEST_ID_MAX);
        buf[..len].copy_from_slice(&id[..len]);
        RequestId {
            buf,
            len: len as u8,
        }
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII is ever stored (`of`'s callers check it).
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The id's bytes, without the text check `as_str` makes (the heads it goes into take
    /// bytes: twice per request).
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }
}

impl Default for RequestId {
    fn default() -> RequestId {
        RequestId::of(b"")
    }
}

impl std::ops::Deref for RequestId {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for RequestId {
    fn eq(&self, other: &RequestId) -> bool {
        self.as_str() == other.as_str()
    }
}

fn valid_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

static ID_PREFIX: LazyLock<u64> = LazyLock::new(|| {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // Mix the start time with the pid so that replicas started together differ.
    (nanos ^ ((std::process::id() as u64) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
});
static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How many numbers a thread takes from the process's counter at once.
const ID_BLOCK: u64 = 1024;

/// The next number of this thread's block of the process's counter, taking a new block when
/// it runs out: one write to the shared counter per [`ID_BLOCK`] requests, not one per request
/// by each thread in turn.
fn next_id_number() -> u64 {
    thread_local! {
        /// The next number and the end of this thread's block.
        static BLOCK: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
    }
    BLOCK.with(|block| {
        let (mut next, mut end) = block.get();
        if next == end {
            next = ID_COUNTER.fetch_add(ID_BLOCK, Ordering::Relaxed) + 1;
            end = next + ID_BLOCK;
        }
        block.set((next + 1, end));
        next
    })
}

/// 32 hex digits: a per-process random prefix and a counter (unique, cheap, not a secret).
pub fn new_request_id() -> RequestId {
    let n = next_id_number();
    static PREFIX: LazyLock<[u8; 16]> = LazyLock::new(|| hex16(*ID_PREFIX));
    let mut id = [0u8; 32];
    id[..16].copy_from_slice(&*PREFIX);
    id[16..].copy_from_slice(&hex16(n.wrapping_mul(0xD6E8_FEB8_6659_FD93)));
    RequestId::of(&id)
}

/// `value` as 16 lower-case hex digits, most significant first: eight digits at a time in a
/// word (each nibble spread to a byte, then made a digit), where a table lookup per digit
/// was 120 instructions of every request.
fn hex16(value: u64) -> [u8; 16] {
    fn eight(half: u32) -> [u8; 8] {
        let mut x = u64::from(half);
        x = (x | (x << 16)) & 0x0000_FFFF_0000_FFFF;
        x = (x | (x << 8)) & 0x00FF_00FF_00FF_00FF;
        x = (x | (x << 4)) & 0x0F0F_0F0F_0F0F_0F0F;
        // Byte k holds nibble k; those of 10 and more take the letters' offset.
        let letters = ((x + 0x0606_0606_0606_0606) >> 4) & 0x0101_0101_0101_0101;
        (x + 0x3030_3030_3030_3030 + letters * (b'a' - b'0' - 10) as u64).to_be_bytes()
    }
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&eight((value >> 32) as u32));
    out[8..].copy_from_slice(&eight(value as u32));
    out
}

/// An address as text, on the stack (the longest IPv6 form is 45 bytes).
pub struct IpText {
    buf: [u8; 48],
}

impl Default for IpText {
    fn default() -> IpText {
        IpText { buf: [0; 48] }
    }
}

impl IpText {
    pub fn format(&mut self, ip: IpAddr) -> &[u8] {
        let len = match ip {
            IpAddr::V4(v4) => {
                // Four decimal octets without the formatting machinery.
                let mut n = 0;
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.buf[n] = b'.';
                        n += 1;
                    }
                    if octet >= 100 {
                        self.buf[n] = b'0' + octet / 100;
                        n += 1;
                    }
                    if octet >= 10 {
                        self.buf[n] = b'0' + octet / 10 % 10;
                        n += 1;
                    }
                    self.buf[n] = b'0' + octet % 10;
                    n += 1;
                }
                n
            }
            IpAddr::V6(v6) => {
                let mut cursor = std::io::Cursor::new(&mut self.buf[..]);
                let _ = write!(cursor, "{v6}");
                cursor.position() as usize
            }
        };
        &self.buf[..len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn hex_digits_are_written_as_format_writes_them() {
        let mut value = 0x0123_4567_89ab_cdefu64;
        for _ in 0..10_000 {
            let ours = hex16(value);
            assert_eq!(
                std::str::from_utf8(&ours),
                Ok(format!("{value:016x}").as_str())
            );
            value = value.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
        }
        for edge in [
            0,
            u64::MAX,
            0x0a0a_0a0a_0a0a_0a0a,
            0x9999_9999_9999_9999,
            1 << 63,
        ] {
            assert_eq!(hex16(edge), format!("{edge:016x}").as_bytes());
        }
    }

    #[test]
    fn request_ids_are_32_hex_digits_after_the_process_prefix() {
        let (a, b) = (new_request_id(), new_request_id());
        for id in [&a, &b] {
            assert_eq!(id.len(), 32);
            assert!(id
                .bytes()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
            assert_eq!(id[..16], format!("{:016x}", *ID_PREFIX));
        }
        assert_ne!(a, b);
    }

    /// Numbers are unique across threads and across each thread's blocks.
    #[test]
    fn request_id_numbers_are_unique_across_threads_and_blocks() {
        let taken: Vec<Vec<u64>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..3 * ID_BLOCK).map(|_| next_id_number()).collect()))
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect()
        });
        let mut all: Vec<u64> = taken.concat();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a number was given twice");
        assert!(!all.contains(&0));
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted = ["10.0.0.0/8".parse().expect("cidr")];
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some(b"1.2.3.4"), &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("10.1.1.1"), None, &[]), ip("10.1.1.1"));
    }

    #[test]
    fn trusted_peer_walks_forwarded_for_from_the_right() {
        let trusted = ["10.0.0.0/8".parse().expect("cidr")];
        let xff = b"6.6.6.6, 198.51.100.7, 10.2.2.2";
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some(xff), &trusted),
            ip("198.51.100.7")
        );
        assert_eq!(
            client_ip(
                ip("10.1.1.1"),
                Some(b"10.3.3.3, garbage, 10.2.2.2"),
                &trusted
            ),
            ip("10.2.2.2")
        );
        assert_eq!(
            client_ip(ip("::ffff:10.1.1.1"), Some(b"192.0.2.1"), &trusted),
            ip("192.0.2.1")
        );
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_made_otherwise() {
        assert_eq!(request_id(Some(b"abc-123")).as_str(), "abc-123");
        let longest = [b'a'; 128];
        assert_eq!(request_id(Some(&longest)).as_str().len(), 128);
        let made = request_id(Some(b"bad id\n"));
        assert_eq!(made.len(), 32);
        assert_ne!(new_request_id(), new_request_id());
        assert_eq!(request_id(None).len(), 32);
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.9",
            "255.255.255.255",
            "::1",
            "2001:db8::8a2e:370:7334",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("address");
            let mut text = IpText::default();
            assert_eq!(text.format(ip), ip.to_string().as_bytes());
        }
    }
}
