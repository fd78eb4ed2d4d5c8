//! Criterion benches of the edge's per-request hot functions: route match, balance select,
//! client IP, rate-limit check, access-log line formatting, config validation + compile, the
//! request loop's own cost per request (no network: in-memory client and server
//! connections), and an upstream pool's take and put.
//! The `*_2_threads` benches run the same work split over two threads on shared state: if
//! they took as long per operation as one thread, the state would be serialising them.

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion};
use edge::config::{validate, Balance, UpstreamSettings};
use edge::route::Router;
use edge::snapshot::Snapshot;
use edge::upstream::{Attempts, Server, ServerState, Upstream};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

// The edge binary's allocator, so allocation-heavy paths (config compile) cost what they
// cost in production; wrapped to count allocations (`request_loop_small_get` reports them
// per request).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: Counting<mimalloc::MiMalloc> = Counting(mimalloc::MiMalloc);
#[cfg(not(feature = "mimalloc"))]
#[global_allocator]
static GLOBAL: Counting<std::alloc::System> = Counting(std::alloc::System);

/// Allocations (and reallocations) made, and the bytes they asked for.
static ALLOCATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static ALLOCATED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An allocator that counts what goes through it (two relaxed additions per call).
struct Counting<A>(A);

// SAFETY: every call is passed to the wrapped allocator unchanged; counting touches no
// memory of the allocation.
#[allow(unsafe_code)]
unsafe impl<A: std::alloc::GlobalAlloc> std::alloc::GlobalAlloc for Counting<A> {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: as above.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count(new);
        // SAFETY: as above.
        unsafe { self.0.realloc(ptr, layout, new) }
    }
}

fn count(bytes: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    ALLOCATIONS.fetch_add(1, Relaxed);
    ALLOCATED.fetch_add(bytes as u64, Relaxed);
}

fn router(routes: usize) -> Router<usize> {
    let mut r = Router::default();
    for i in 0..routes {
        r.add(None, &format!("/api/service{i}/v1/"), i);
    }
    r.add(None, "/", routes);
    r
}

fn bench_route(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_find");
    for n in [10, 1000, 3000] {
        let r = router(n);
        let hit = format!("/api/service{}/v1/items/42", n / 2);
        group.bench_with_input(BenchmarkId::new("hit", n), &hit, |b, path| {
            b.iter(|| r.find(black_box("example.com"), black_box(path)))
        });
        group.bench_with_input(
            BenchmarkId::new("fallback", n),
            &"/index.html",
            |b, path| b.iter(|| r.find(black_box("example.com"), black_box(path))),
        );
    }
    group.finish();
}

fn upstream(balance: Balance, n: usize) -> Upstream {
    let servers = (0..n)
        .map(|i| Server {
            label: format!("10.0.{}.{}:80", i / 250, i % 250 + 1),
            host: format!("10.0.{}.{}", i / 250, i % 250 + 1),
            addr: Some(
                format!("10.0.{}.{}:80", i / 250, i % 250 + 1)
                    .parse()
                    .expect("addr"),
            ),
            weight: 1 + (i % 3) as u32,
            max_fails: 1,
            fail_timeout: Duration::from_secs(10),
            state: Arc::new(ServerState::default()),
        })
        .collect();
    let settings = UpstreamSettings {
        balance,
        keepalive: 32,
        keepalive_requests: 1000,
        keepalive_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(60),
        send_timeout: Duration::from_secs(60),
        next_upstream_tries: 0,
        servers: Vec::new(),
        health: None,
        protocol: Default::default(),
        tls: None,
    };
    Upstream::new("bench".into(), settings, servers)
}

fn bench_balance(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance_select");
    let client: IpAddr = "203.0.113.77".parse().expect("ip");
    for balance in [Balance::RoundRobin, Balance::LeastConn, Balance::IpHash] {
        for n in [2, 100] {
            let u = upstream(balance, n);
            group.bench_function(BenchmarkId::new(balance.as_str(), n), |b| {
                b.iter(|| {
                    let mut attempts = Attempts::default();
                    black_box(u.select(black_box(client), &mut attempts))
                })
            });
        }
    }
    group.finish();
}

fn bench_client_ip(c: &mut Criterion) {
    let trusted = vec!["10.0.0.0/8".parse().expect("cidr")];
    let peer: IpAddr = "10.1.2.3".parse().expect("ip");
    c.bench_function("client_ip_trusted_xff", |b| {
        b.iter(|| {
            edge::client::client_ip(
                black_box(peer),
                Some(black_box(b"198.51.100.1, 10.9.9.9")),
                &trusted,
            )
        })
    });
}

/// `upstreams` upstreams of 3 servers, each with `routes_each` routes.
fn big_config(upstreams: usize, routes_each: usize) -> String {
    let mut text = String::new();
    for i in 0..upstreams {
        text.push_str(&format!(
            "[upstreams.u{i}]\nservers = [{{ addr = \"10.0.{}.1:80\" }}, {{ addr = \"10.0.{}.2:80\" }}, {{ addr = \"10.0.{}.3:80\" }}]\n",
            i % 250, i % 250, i % 250
        ));
        for r in 0..routes_each {
            text.push_str(&format!(
                "[[routes]]\npath = \"/u{i}/r{r}/\"\nupstream = \"u{i}\"\n"
            ));
        }
    }
    text
}

fn bench_config(c: &mut Criterion) {
    let mut group = c.benchmark_group("config");
    group.sample_size(10);
    for (name, routes_each) in [
        ("validate_and_compile_1000x3", 1),
        ("validate_and_compile_1000x3_3000_routes", 3),
    ] {
        let text = big_config(1000, routes_each);
        group.bench_function(name, |b| {
            b.iter(|| {
                let v = validate("bench.toml", black_box(&text)).expect("valid");
                black_box(Snapshot::compile("bench.toml", v.config, None))
            })
        });
    }
    // A reload: the same compile with the running snapshot to keep state from.
    let text = big_config(1000, 3);
    let running = Snapshot::compile(
        "bench.toml",
        validate("bench.toml", &text).expect("valid").config,
        None,
    );
    group.bench_function("reload_1000x3_3000_routes", |b| {
        b.iter(|| {
            let v = validate("bench.toml", black_box(&text)).expect("valid");
            black_box(Snapshot::compile("bench.toml", v.config, Some(&running)))
        })
    });
    group.finish();
}

fn bench_limiter(c: &mut Criterion) {
    use edge::ratelimit::LocalStore;
    let rate = edge::units::parse_rate("10r/s").expect("rate");
    let mut group = c.benchmark_group("limiter_check");
    let one = LocalStore::new(160_000);
    let client: IpAddr = "203.0.113.1".parse().expect("ip");
    let mut now = 0u64;
    group.bench_function("local_1_client", |b| {
        b.iter(|| {
            now += 1;
            black_box(one.check(black_box(client), rate, 20, now))
        })
    });
    let many = LocalStore::new(160_000);
    let clients: Vec<IpAddr> = (0..100_000u32)
        .map(|n| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + n)))
        .collect();
    for (i, ip) in clients.iter().enumerate() {
        many.check(*ip, rate, 20, i as u64 / 1000);
    }
    let mut i = 0usize;
    group.bench_function("local_100k_clients", |b| {
        b.iter(|| {
            i = (i + 7919) % clients.len();
            now += 1;
            black_box(many.check(black_box(clients[i]), rate, 20, now))
        })
    });
    // Two threads checking their own clients against one store.
    let shared = LocalStore::new(160_000);
    group.bench_function("local_100k_clients_2_threads", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            std::thread::scope(|scope| {
                for t in 0..2u64 {
                    let (shared, clients) = (&shared, &clients);
                    scope.spawn(move || {
                        for n in 0..iters / 2 {
                            let ip = clients[((n * 7919 + t * 50_000) as usize) % clients.len()];
                            black_box(shared.check(ip, rate, 20, n));
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
    group.finish();
}

fn bench_least_conn_threads(c: &mut Criterion) {
    let u = upstream(Balance::LeastConn, 100);
    let client: IpAddr = "203.0.113.77".parse().expect("ip");
    c.bench_function("balance_select/least_conn_100_2_threads", |b| {
        b.iter_custom(|iters| {
            let started = std::time::Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    let u = &u;
                    scope.spawn(move || {
                        for _ in 0..iters / 2 {
                            let mut attempts = Attempts::default();
                            black_box(u.select(client, &mut attempts));
                        }
                    });
                }
            });
            started.elapsed()
        })
    });
}

fn bench_access_log(c: &mut Criterion) {
    use edge::observe::access_log::Entry;
    let entry = Entry {
        timestamp: "2026-11-28T23:48:00.123Z",
        request_id: "0123456789abcdef0123456789abcdef",
        client_ip: "203.0.113.7".parse().expect("ip"),
        method: "GET",
        host: "content.example.com",
        path: "/api/content/articles/42",
        protocol: "HTTP/1.1",
        status: 200,
        bytes_sent: 1834,
        duration_ms: 1.834,
        upstream: Some("content_manager"),
        server: Some("content-manager:8000"),
        upstream_duration_ms: Some(1.2),
        upstream_protocol: Some("HTTP/1.1"),
        grpc_status: None,
        route: Some("/api/content/"),
        limit: Some("passed"),
        tls_version: Some("TLSv1.3"),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
    };
    let mut line = Vec::with_capacity(1024);
    c.bench_function("access_log_line", |b| {
        b.iter(|| {
            line.clear();
            black_box(&entry).write_json(&mut line);
            black_box(line.len())
        })
    });
}

/// A kept-alive in-memory connection that answers every request head with a small JSON body,
/// as a backend would.
fn fake_backend(mut server: tokio::io::DuplexStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let mut buf = vec![0u8; 8192];
        let mut have = Vec::new();
        loop {
            let Ok(n) = server.read(&mut buf).await else {
                return;
            };
            if n == 0 {
                return;
            }
            have.extend_from_slice(&buf[..n]);
            while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                have.drain(..end + 4);
                let answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
                if server.write_all(answer).await.is_err() {
                    return;
                }
            }
        }
    });
}

/// The edge's state for the request-loop benches: an edge on a one-route config whose
/// upstream's pool is refilled with in-memory connections to [`fake_backend`].
struct LoopBench {
    runtime: tokio::runtime::Runtime,
    snapshot: Arc<arc_swap::ArcSwap<Snapshot>>,
    edge: edge::proxy::EdgeProxy,
}

const SMALL_GET: &[u8] =
    b"GET /api/items/42 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n";

impl LoopBench {
    fn new() -> LoopBench {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let text = "[edge]\naccess_log = \"off\"\n[upstreams.app]\nservers = [{ addr = \"127.0.0.1:9\" }]\n\
                    [[routes]]\npath = \"/api/\"\nupstream = \"app\"\n";
        let config = validate("bench.toml", text).expect("valid").config;
        let snapshot = Arc::new(arc_swap::ArcSwap::from_pointee(Snapshot::compile(
            "bench.toml",
            config,
            None,
        )));
        let edge = edge::proxy::EdgeProxy::new(snapshot.clone());
        LoopBench {
            runtime,
            snapshot,
            edge,
        }
    }

    /// A pooled upstream connection to an in-memory backend whenever the pool is empty
    /// (keepalive_requests retires a connection after 1,000 requests).
    fn refill(&self) {
        let pool = &self.snapshot.load().upstreams["app"].servers[0].state.pool;
        if pool.is_empty() {
            let (edge_side, backend_side) = tokio::io::duplex(64 * 1024);
            fake_backend(backend_side);
            pool.put(
                edge::upstream::h1::Connection::new(Box::new(edge_side)),
                32,
                0,
                Duration::from_secs(60),
                std::time::Instant::now(),
            );
        }
    }
}

/// The client's half of one small GET: the request out, the whole answer in.
async fn small_get(client: &mut tokio::io::DuplexStream, answer: &mut [u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    client.write_all(SMALL_GET).await.expect("write");
    let mut got = 0;
    while !answer[..got].ends_with(b"{}") {
        got += client.read(&mut answer[got..]).await.expect("read");
    }
}

/// One small GET through the edge's request loop on its HTTP/1 session, end to end but for
/// the network: the client's head read and parsed, admit (checks, route), a server picked,
/// the pooled upstream connection taken, the request written, the answer read and relayed,
/// the connection put back, metrics.
fn bench_request_loop(c: &mut Criterion) {
    use edge::downstream::h1;
    use tokio::io::AsyncReadExt;
    let bench = LoopBench::new();
    let (mut client, edge_client) = bench
        .runtime
        .block_on(async { tokio::io::duplex(64 * 1024) });
    let mut stream: pingora::protocols::Stream = Box::new(edge_client);
    let conn = h1::Conn {
        ssl: None,
        peer: Some(std::net::IpAddr::from([127, 0, 0, 1])),
    };
    let limits = edge::config::HeadLimits {
        uri: 8192,
        head: 32768,
        fields: 100,
    };
    let mut answer = vec![0u8; 4096];
    // What one kept-alive small GET allocates, counted over 1,000 of them after a warm-up
    // (the client's and the in-memory backend's side included: they allocate nothing per
    // request but the backend's head buffer drain).
    let mut one = |n: u64| {
        bench.runtime.block_on(async {
            for _ in 0..n {
                bench.refill();
                let serve = async {
                    let mut buf = bytes::BytesMut::with_capacity(4096);
                    while !buf.ends_with(b"\r\n\r\n") {
                        stream.read_buf(&mut buf).await.expect("read");
                    }
                    let h1::Head::Request(request) = h1::parse(&mut buf, &limits) else {
                        panic!("a small GET is read whole");
                    };
                    let mut session = h1::Session::new(
                        &mut stream,
                        &conn,
                        &mut buf,
                        request,
                        false,
                        Duration::from_secs(60),
                    );
                    let served = bench.edge.serve(&mut session).await;
                    served == edge::proxy::Served::Whole && session.reusable()
                };
                let (reusable, ()) = tokio::join!(serve, small_get(&mut client, &mut answer));
                assert!(reusable, "kept alive");
            }
        })
    };
    one(100);
    let (calls, bytes) = {
        use std::sync::atomic::Ordering::Relaxed;
        let before = (ALLOCATIONS.load(Relaxed), ALLOCATED.load(Relaxed));
        one(1000);
        (
            ALLOCATIONS.load(Relaxed) - before.0,
            ALLOCATED.load(Relaxed) - before.1,
        )
    };
    eprintln!(
        "request_loop_small_get: {:.1} allocations and {} bytes allocated per request",
        calls as f64 / 1000.0,
        bytes / 1000
    );
    c.bench_function("request_loop_small_get", |b| {
        b.iter_custom(|iterations| {
            let started = std::time::Instant::now();
            one(iterations);
            started.elapsed()
        })
    });
}

/// Taking a kept-alive connection from a server's pool and putting it back.
fn bench_pool(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = edge::upstream::pool::Pool::default();
    let _peers = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut peers = Vec::new();
        for _ in 0..8 {
            let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            peers.push(listener.accept().await.expect("accept").0);
            pool.put(
                edge::upstream::h1::Connection::new(Box::new(
                    pingora::protocols::l4::stream::Stream::from(client),
                )),
                32,
                0,
                Duration::from_secs(60),
                std::time::Instant::now(),
            );
        }
        peers
    });
    let _guard = runtime.enter();
    c.bench_function("pool_take_put", |b| {
        b.iter(|| {
            // As a request does: one reading of the clock for the take and the put.
            let now = std::time::Instant::now();
            let connection = pool
                .take(Duration::from_secs(60), now)
                .expect("a connection");
            pool.put(connection, 32, 0, Duration::from_secs(60), now);
        })
    });
}

criterion_group!(
    benches,
    bench_route,
    bench_balance,
    bench_client_ip,
    bench_config,
    bench_limiter,
    bench_least_conn_threads,
    bench_access_log,
    bench_request_loop,
    bench_pool
);
criterion_main!(benches);
