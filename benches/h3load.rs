//! h3load: a small HTTP/3 load client for the benchmarks (Debian's h2load has no HTTP/3).
//!
//!   h3load URL --connect HOST:PORT [-c CONNECTIONS] [-m STREAMS] [-d SECONDS]
//!
//! Opens CONNECTIONS QUIC connections to HOST:PORT (SNI and `:authority` from URL, any
//! certificate accepted), keeps STREAMS GETs of URL in flight on each for SECONDS, reads every
//! body whole, and prints one JSON line: requests answered 2xx, other answers and errors,
//! seconds, requests/s, and the 50th and 99th percentile latency in milliseconds. One thread:
//! the load costs one core at most, as `h2load -t1` and `wrk -t1` do beside it.

use bytes::{Buf, Bytes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    url: http::Uri,
    connect: SocketAddr,
    connections: usize,
    streams: usize,
    seconds: f64,
}

fn args() -> Result<Args, String> {
    let mut url = None;
    let mut connect = None;
    let (mut connections, mut streams, mut seconds) = (10, 10, 5.0);
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--connect" => connect = Some(value()?.parse().map_err(|e| format!("{e}"))?),
            "-c" => connections = value()?.parse().map_err(|e| format!("-c: {e}"))?,
            "-m" => streams = value()?.parse().map_err(|e| format!("-m: {e}"))?,
            "-d" => seconds = value()?.parse().map_err(|e| format!("-d: {e}"))?,
            _ if url.is_none() => url = Some(arg.parse().map_err(|e| format!("URL: {e}"))?),
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    Ok(Args {
        url: url.ok_or("a URL is needed")?,
        connect: connect.ok_or("--connect HOST:PORT is needed")?,
        connections,
        streams,
        seconds,
    })
}

fn endpoint() -> quinn::Endpoint {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(edge::upstream::tls::AnyCertificate::new(
            provider,
        )))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("QUIC TLS");
    let mut endpoint =
        quinn::Endpoint::client("127.0.0.1:0".parse().expect("address")).expect("a UDP socket");
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    endpoint
}

/// What one stream's loop counted.
#[derive(Default)]
struct Counts {
    ok: u64,
    failed: u64,
    latencies_us: Vec<u32>,
}

async fn stream_loop(
    mut send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    url: http::Uri,
    until: Instant,
) -> Counts {
    let mut counts = Counts::default();
    while Instant::now() < until {
        let started = Instant::now();
        let request = http::Request::get(url.clone()).body(()).expect("request");
        let answered = async {
            let mut stream = send.send_request(request).await?;
            stream.finish().await?;
            let response = stream.recv_response().await?;
            while let Some(mut chunk) = stream.recv_data().await? {
                chunk.advance(chunk.remaining());
            }
            Ok::<_, h3::error::StreamError>(response.status())
        };
        match answered.await {
            Ok(status) if status.is_success() => {
                counts.ok += 1;
                let us = started.elapsed().as_micros().min(u32::MAX as u128) as u32;
                counts.latencies_us.push(us);
            }
            Ok(_) => counts.failed += 1,
            // The connection is over (a GOAWAY or an error): this stream's loop too.
            Err(e) => {
                counts.failed += 1;
                if !e.is_h3_no_error() {
                    eprintln!("h3load: {e}");
                }
                return counts;
            }
        }
    }
    counts
}

async fn run(args: Args) -> Result<String, String> {
    let endpoint = endpoint();
    let host = args.url.host().ok_or("the URL has no host")?.to_string();
    let until = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let quic = endpoint
            .connect(args.connect, &host)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| format!("QUIC handshake: {e}"))?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
            .await
            .map_err(|e| format!("HTTP/3 set-up: {e}"))?;
        tokio::task::spawn_local(
            async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await },
        );
        for _ in 0..args.streams {
            tasks.push(tokio::task::spawn_local(stream_loop(
                send.clone(),
                args.url.clone(),
                until,
            )));
        }
    }
    let mut all = Counts::default();
    for task in tasks {
        let counts = task.await.map_err(|e| e.to_string())?;
        all.ok += counts.ok;
        all.failed += counts.failed;
        all.latencies_us.extend(counts.latencies_us);
    }
    let seconds = started.elapsed().as_secs_f64();
    all.latencies_us.sort_unstable();
    let percentile = |p: f64| -> f64 {
        let n = all.latencies_us.len();
        if n == 0 {
            return f64::NAN;
        }
        let at = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        f64::from(all.latencies_us[at]) / 1000.0
    };
    Ok(format!(
        "{{\"requests\":{},\"failed\":{},\"seconds\":{:.3},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3}}}",
        all.ok,
        all.failed,
        seconds,
        all.ok as f64 / seconds,
        percentile(0.50),
        percentile(0.99),
    ))
}

fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(why) => {
            eprintln!(
                "h3load: {why}\nusage: h3load URL --connect HOST:PORT [-c N] [-m N] [-d SECONDS]"
            );
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(args)) {
        Ok(line) => println!("{line}"),
        Err(why) => {
            eprintln!("h3load: {why}");
            std::process::exit(1);
        }
    }
}
