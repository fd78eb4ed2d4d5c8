#!/usr/bin/env python3
"""The edge under attack for 60 s, against a normal client's latency.

Phase 1 measures a normal client alone (a keep-alive GET every 10 ms); phase 2 measures it
again while five attackers run at once, each from its own loopback address (so the
per-client connection cap applies to them, not to the normal client):

  slowloris    300 connections sending a request head one byte a second
  flood        400 idle connections held open (more than max_connections_per_client)
  malformed    smuggling, oversized heads and bodies, broken chunks, back to back
  rapid-reset  HTTP/2 streams opened and cancelled in a loop (CVE-2023-44487)
  big-bodies   uploads declared far over client_max_body_size

It reports the normal client's p50/p99/max and failures in both phases and the ratio of the
p99s (the target is at most 2x), plus what the attackers saw, as a Markdown table written to
benches/results/attack-<date>.md. Run through benches/attack.sh."""

import argparse
import datetime
import http.client
import multiprocessing
import os
import platform
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time

from compare import free_port, wait_port  # same directory: benches/

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE = os.path.join(ROOT, "target/release/edge")
SERVICES = os.path.join(ROOT, "target/release/services")


def connect(port, source, timeout=5.0):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0))


# ---------------------------------------------------------------- attackers


def slowloris(port, until, stats):
    head = b"GET /api/content/slow HTTP/1.1\r\nHost: edge.test\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"
    conns = []
    while time.time() < until:
        while len(conns) < 300:
            try:
                conns.append([connect(port, "127.0.0.2", 2), 0])
                stats["opened"] += 1
            except OSError:
                stats["refused"] += 1
                break
        alive = []
        for conn in conns:
            sock, sent = conn
            try:
                sock.send(head[sent % len(head):sent % len(head) + 1])
                conn[1] += 1
                alive.append(conn)
            except OSError:
                stats["cut_off"] += 1
                sock.close()
        conns = alive
        time.sleep(1)
    for sock, _ in conns:
        sock.close()


def flood(port, until, stats):
    held = []
    while time.time() < until:
        while len(held) < 400:
            try:
                sock = connect(port, "127.0.0.3", 2)
                sock.sendall(b"GET /api/content/hold HTTP/1.1\r\nHost: edge.test\r\n\r\n")
                status = sock.recv(64)[9:12]
                stats["status_" + status.decode(errors="replace")] += 1
                if status == b"200":
                    held.append(sock)
                else:
                    sock.close()
                    break
            except OSError:
                stats["errors"] += 1
                break
        time.sleep(0.5)
        # Keep-alive idles out eventually; see which are gone.
        alive = []
        for sock in held:
            try:
                sock.setblocking(False)
                data = sock.recv(1)
                sock.close() if data == b"" else alive.append(sock)
            except BlockingIOError:
                sock.setblocking(True)
                alive.append(sock)
            except OSError:
                sock.close()
        held = alive
    for sock in held:
        sock.close()


MALFORMED = [
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-A: one\r\n two\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    b"GET /../../etc/passwd HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 60000 + b"\r\n\r\n",
    b"POST /api/content/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
]


def malformed(port, until, stats):
    i = 0
    while time.time() < until:
        try:
            sock = connect(port, "127.0.0.4", 2)
            sock.sendall(MALFORMED[i % len(MALFORMED)])
            data = sock.recv(64)
            stats["status_" + (data[9:12].decode(errors="replace") or "closed")] += 1
            sock.close()
        except OSError:
            stats["errors"] += 1
        i += 1
        time.sleep(0.005)


def big_bodies(port, until, stats):
    while time.time() < until:
        try:
            sock = connect(port, "127.0.0.6", 2)
            sock.sendall(b"POST /api/content/upload HTTP/1.1\r\nHost: a\r\nContent-Length: 104857600\r\n\r\n"
                         + b"x" * 65536)
            data = sock.recv(64)
            stats["status_" + (data[9:12].decode(errors="replace") or "closed")] += 1
            sock.close()
        except OSError:
            stats["errors"] += 1
        time.sleep(0.01)


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def rapid_reset(port, until, stats):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    # :method GET, :scheme https, :path /, :authority edge.test (HPACK static indexes + literal).
    block = bytes([0x82, 0x87, 0x84, 0x41, 9]) + b"edge.test"
    while time.time() < until:
        try:
            raw = connect(port, "127.0.0.5", 5)
            sock = ctx.wrap_socket(raw, server_hostname="edge.test")
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0))
            stats["connections"] += 1
            stream = 1
            while time.time() < until:
                burst = b""
                for _ in range(50):
                    burst += h2_frame(1, 0x5, stream, block)  # HEADERS, END_STREAM|END_HEADERS
                    burst += h2_frame(3, 0, stream, (8).to_bytes(4, "big"))  # RST_STREAM CANCEL
                    stream += 2
                sock.sendall(burst)
                stats["streams"] += 50
                time.sleep(0.01)
        except (OSError, ssl.SSLError):
            stats["cut_off"] += 1
            time.sleep(0.05)


def run_attacker(fn, port, until, shared):
    stats = {}

    class Counter(dict):
        def __missing__(self, key):
            return 0

    stats = Counter()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        fn(port, until, stats)
    finally:
        shared.update(dict(stats))


# ---------------------------------------------------------------- the normal client


def normal_client(port, seconds):
    latencies, failures = [], 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    end = time.time() + seconds
    while time.time() < end:
        started = time.perf_counter()
        try:
            conn.request("GET", "/api/content/normal", headers={"Host": "edge.test"})
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                failures += 1
            else:
                latencies.append((time.perf_counter() - started) * 1000)
        except (OSError, http.client.HTTPException):
            failures += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        time.sleep(0.01)
    conn.close()
    return latencies, failures


def summary(latencies):
    if not latencies:
        return 0, 0, 0
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds under attack")
    parser.add_argument("--baseline", type=int, default=20, help="seconds unattacked")
    args = parser.parse_args()
    for binary in (EDGE, SERVICES):
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: run benches/attack.sh")

    work = tempfile.mkdtemp(prefix="edge-attack-")
    cert, key = os.path.join(work, "edge.crt"), os.path.join(work, "edge.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=edge.test"], check=True, capture_output=True)
    backend, http_port, https_port, admin = free_port(), free_port(), free_port(), free_port()
    config = os.path.join(work, "upstreams.toml")
    with open(config, "w") as f:
        f.write(f"""[edge]
http_listen = ["127.0.0.1:{http_port}"]
https_listen = ["127.0.0.1:{https_port}"]
admin_listen = "127.0.0.1:{admin}"
redirect_http_to_https = false
access_log = "off"
[tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
[upstreams.content]
servers = [{{ addr = "127.0.0.1:{backend}" }}]
[[routes]]
path = "/"
upstream = "content"
""")
    procs = [
        subprocess.Popen([SERVICES, "content-manager", "--listen", f"127.0.0.1:{backend}"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        subprocess.Popen([EDGE, "run", "--config", config, "--runtime-dir", work],
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "edge.log"), "w")),
    ]
    try:
        wait_port(backend, timeout=20)
        wait_port(http_port, timeout=20)
        wait_port(https_port, timeout=20)
        time.sleep(0.5)

        print(f"baseline: {args.baseline} s", file=sys.stderr)
        quiet, quiet_failures = normal_client(http_port, args.baseline)

        print(f"under attack: {args.duration} s", file=sys.stderr)
        until = time.time() + args.duration
        manager = multiprocessing.Manager()
        attackers = []
        for name, fn, port in [("slowloris", slowloris, http_port), ("flood", flood, http_port),
                               ("malformed", malformed, http_port),
                               ("rapid-reset", rapid_reset, https_port),
                               ("big-bodies", big_bodies, http_port)]:
            shared = manager.dict()
            proc = multiprocessing.Process(target=run_attacker, args=(fn, port, until, shared))
            proc.start()
            attackers.append((name, proc, shared))
        time.sleep(2)  # let the attacks build up
        attacked, attacked_failures = normal_client(http_port, args.duration - 4)
        for _, proc, _ in attackers:
            proc.join(timeout=30)
        alive = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                f"http://127.0.0.1:{http_port}/api/content/after"],
                               capture_output=True, text=True).stdout
        edge_alive = procs[1].poll() is None
        metrics = subprocess.run(["curl", "-s", f"http://127.0.0.1:{admin}/metrics"],
                                 capture_output=True, text=True).stdout
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    q50, q99, qmax = summary(quiet)
    a50, a99, amax = summary(attacked)
    ratio = a99 / q99 if q99 else float("inf")
    interesting = [line for line in metrics.splitlines()
                   if line.startswith(("edge_client_header_timeouts_total",
                                       "edge_client_connections_refused_total",
                                       "edge_client_connections{"))]
    now = datetime.datetime.now()
    out = [
        f"# The edge under attack, {now:%Y-%m-%d %H:%M}",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}. "
        f"Normal client: one keep-alive GET every 10 ms; {args.baseline} s alone, then "
        f"{args.duration} s with all attackers running (each from its own loopback address).",
        "",
        "| normal client | requests | failed | p50 ms | p99 ms | max ms |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| unattacked | {len(quiet)} | {quiet_failures} | {q50:.2f} | {q99:.2f} | {qmax:.2f} |",
        f"| under attack | {len(attacked)} | {attacked_failures} | {a50:.2f} | {a99:.2f} | {amax:.2f} |",
        "",
        f"**p99 under attack / unattacked: {ratio:.2f}** (target: at most 2). "
        f"After the attack the edge {'is running' if edge_alive else 'HAD EXITED'} and answers "
        f"a new request with {alive or 'nothing'}.",
        "",
        "| attacker | what it saw |",
        "| --- | --- |",
    ]
    for name, _, shared in attackers:
        seen = ", ".join(f"{k} {v}" for k, v in sorted(dict(shared).items())) or "nothing"
        out.append(f"| {name} | {seen} |")
    out += ["", "Edge counters after the run:", "", "```", *interesting, "```", ""]
    text = "\n".join(out)
    os.makedirs(os.path.join(ROOT, "benches/results"), exist_ok=True)
    path = os.path.join(ROOT, f"benches/results/attack-{now:%Y-%m-%d-%H%M}.md")
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print(f"written to {path}", file=sys.stderr)
    return 0 if ratio <= 2 and attacked_failures == 0 and edge_alive else 1


if __name__ == "__main__":
    sys.exit(main())
