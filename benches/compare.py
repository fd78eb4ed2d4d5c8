#!/usr/bin/env python3
"""Side-by-side load comparison: the edge against two anchors, nginx 1.22 and HAProxy 2.6
(Debian's), same backend, same machine, same run, the order of the three rotated each round.
Reports medians of requests/s, p99 latency, CPU microseconds per request of the proxy's own
processes (from /proc) and peak RSS, and for each the ratio of the edge to the better of the
two anchors. Run through benches/compare.sh, which installs the tools and builds the
binaries."""

import argparse
import atexit
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

PROXIES = ("edge", "nginx", "haproxy")  # the edge, then the anchors it is compared against
ANCHORS = ("nginx", "haproxy")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE = os.path.join(ROOT, "target/release/edge")
SERVICES = os.path.join(ROOT, "target/release/services")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def work_dir(prefix):
    """A scratch directory for one run (configs, certificates, access logs), removed when the
    run ends: a run's access logs reach gigabytes. EDGE_BENCH_KEEP=1 keeps it for a look."""
    path = tempfile.mkdtemp(prefix=prefix)
    if not os.environ.get("EDGE_BENCH_KEEP"):
        atexit.register(shutil.rmtree, path, True)
    return path


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def raise_nofile():
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = 65535 if hard == resource.RLIM_INFINITY else min(65535, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def children(pid):
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(entry))
            except OSError:
                pass
    return out


def cpu_ticks(pids):
    """The processes' CPU time so far, in clock ticks: (in user space, in the kernel)."""
    user = kernel = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user += int(fields[11])  # utime
            kernel += int(fields[12])  # stime
        except OSError:
            pass
    return user, kernel


def rss_bytes(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE
        except OSError:
            pass
    return total


class Proxy:
    def __init__(self, name, argv, http, https, pids, stdout=None):
        """`stdout`: a file to append the proxy's standard output to (HAProxy writes its access
        log there); discarded when None."""
        self.name, self.argv, self.http, self.https, self.pids_fn = name, argv, http, https, pids
        out = open(stdout, "ab") if stdout else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.DEVNULL,
                                         preexec_fn=raise_nofile)
        finally:
            if stdout:
                out.close()  # the child holds its own descriptor
        try:
            wait_port(http)
            wait_port(https)
        except SystemExit:
            self.proc.kill()
            raise SystemExit(f"{name} did not start: {' '.join(argv)}")
        time.sleep(0.5)

    def pids(self):
        return self.pids_fn(self.proc.pid)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def without_access_logs(name, text, work):
    """The same config with every proxy's access log off (`--logs off`): the request path
    alone, without the cost of each proxy's log line."""
    if name == "nginx.conf":
        out = text.replace(f"access_log {work}/nginx-access.log;", "access_log off;")
    elif name == "haproxy.cfg":
        dropped = ("log stdout format raw local0", "log global", "option httplog",
                   "option dontlognull")
        out = "\n".join(l for l in text.split("\n") if l.strip() not in dropped)
    else:
        out = text.replace(f'access_log = "{work}/edge-access.log"', 'access_log = "off"')
    assert out != text, f"no access log found to turn off in {name}"
    return out


def nginx_config(work, http, https, backend, cert, key):
    return f"""
worker_processes auto;
worker_rlimit_nofile 65535;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 16384; use epoll; multi_accept on; }}
http {{
    access_log {work}/nginx-access.log;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_timeout 65; keepalive_requests 100;
    gzip on; gzip_vary on; gzip_min_length 1024; gzip_comp_level 6;
    gzip_types text/plain text/css application/json application/javascript text/xml
               application/xml application/xml+rss text/javascript;
    limit_req_zone $binary_remote_addr zone=api:10m rate=10r/s;
    limit_req_zone $binary_remote_addr zone=bench:10m rate=100000r/s;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream content_manager {{
        least_conn;
        server {backend} max_fails=3 fail_timeout=30s weight=1;
        keepalive 32; keepalive_requests 100; keepalive_timeout 60s;
    }}
    server {{
        listen {http};
        listen {https} ssl http2;
        ssl_certificate {cert}; ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384;
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:SSL:10m; ssl_session_timeout 10m;
        add_header Strict-Transport-Security "max-age=31536000; includeSubDomains; preload" always;
        proxy_http_version 1.1;
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header Connection "";
        proxy_next_upstream error timeout;
        location /api/content/ {{ proxy_pass http://content_manager; }}
        location /limited/ {{ limit_req zone=bench burst=1000 nodelay; limit_req_status 429;
                             proxy_pass http://content_manager; }}
        location / {{ proxy_pass http://content_manager; }}
    }}
}}
"""


def haproxy_config(work, http, https, backend, cert, key):
    """HAProxy 2.6's equivalent of `nginx_config` (same listeners, TLS, headers, gzip, rate limit,
    keepalive on both sides, access log to a file). HAProxy takes the certificate and key in
    one PEM, written here into `work`. HAProxy logs to its standard output, which `Proxy` sends
    to {work}/haproxy-access.log."""
    pem = f"{work}/haproxy.pem"
    with open(os.open(pem, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        for part in (cert, key):
            with open(part) as f:
                out.write(f.read())
    workers = os.cpu_count()  # nginx's `worker_processes auto`
    types = ("text/html text/plain text/css application/json application/javascript text/xml "
             "application/xml application/xml+rss text/javascript")  # nginx: text/html + gzip_types
    hsts = "max-age=31536000; includeSubDomains; preload"
    return f"""
global
    # One process, one thread per core (nginx: one worker process per core).
    nbthread {workers}
    # 10,000 idle connections plus the load. HAProxy wants 2 fds per connection (60,018 here)
    # and refuses to start when RLIMIT_NOFILE cannot be raised that far (the script raises it
    # to at most 65535, and the hard limit may be lower: 20,000 on the bench VM); with "no
    # strict-limits" it warns and runs within the limit, which is enough: an idle client
    # connection holds one fd, the backend connections are pooled.
    maxconn 30000
    no strict-limits
    # The access log: one raw line per request written to fd 1, which is a file (nginx writes
    # its access_log with one write() per request; a syslog socket would need a reader).
    log stdout format raw local0
    # nginx: ssl_session_timeout 10m. The session cache stays at HAProxy's default (20,000
    # sessions; nginx's shared:SSL:10m holds about 40,000): HAProxy's cache is resident in
    # full from the start (5 MB more RSS for 40,000), nginx's zone only as it fills.
    tune.ssl.lifetime 600

defaults
    mode http
    log global
    option httplog
    # nginx logs nothing for a connection that closes without sending a request.
    option dontlognull
    maxconn 30000
    option http-keep-alive
    # nginx: keepalive_timeout 65; the 60 s client/proxy read, send and connect timeouts.
    timeout http-keep-alive 65s
    timeout http-request 60s
    timeout client 60s
    timeout server 60s
    timeout connect 60s

frontend bench
    bind 127.0.0.1:{http}
    # TLS 1.2 and 1.3 (nginx: ssl_protocols TLSv1.2 TLSv1.3); the cipher list applies to 1.2;
    # prefer-client-ciphers is nginx's ssl_prefer_server_ciphers off; h2 through ALPN.
    bind 127.0.0.1:{https} ssl crt {pem} alpn h2,http/1.1 ssl-min-ver TLSv1.2 ciphers ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384 prefer-client-ciphers

    # nginx's keepalive_requests 100: HAProxy 2.6 has no per-connection request cap for
    # clients, so a session variable counts the connection's requests and the 100th response
    # carries "Connection: close", on which HAProxy's HTTP/1 layer closes the connection after
    # it. HTTP/2 has no such header and 2.6 no limit on streams per connection (nginx sends a
    # GOAWAY after 100); h2load makes exactly 100 requests per connection here anyway.
    http-request set-var(sess.requests) var(sess.requests,0),add(1)
    http-after-response set-header Connection close if {{ fc_http_major 1 }} {{ var(sess.requests) -m int ge 100 }}

    # nginx: Host kept, X-Real-IP, X-Forwarded-For appended, X-Forwarded-Proto.
    option forwardfor
    http-request set-header X-Real-IP %[src]
    http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]

    # nginx: limit_req zone=bench (rate=100000r/s, per client address) burst=1000 nodelay,
    # status 429. The table is looked up and updated on every /limited/ request, as nginx's
    # zone is; the limit (rate plus burst over the last second) is never reached in the bench.
    http-request track-sc0 src table limit_bench if {{ path_beg /limited/ }}
    http-request deny deny_status 429 if {{ path_beg /limited/ }} {{ sc_http_req_rate(0) gt 101000 }}

    # nginx adds this with `always` (also to its own error responses): http-after-response
    # applies to HAProxy's own responses (the 429) too. On the TLS port only, as the edge does
    # (nginx's add_header in its one server block applies to both ports).
    http-after-response set-header Strict-Transport-Security "{hsts}" if {{ ssl_fc }}

    # nginx: gzip on, the same types. HAProxy 2.6 has no minimum length (nginx's
    # gzip_min_length 1024; only the 32 KB scenario asks for gzip) and Debian's build
    # compresses with libslz, which has no levels (nginx: zlib level 6). HAProxy adds
    # "Vary: Accept-Encoding" to compressed responses itself (gzip_vary on).
    compression algo gzip
    compression type {types}

    default_backend content_manager

backend content_manager
    # nginx: least_conn; idle upstream connections shared by all clients (http-reuse safe, the
    # default, would give the first request of each client connection a fresh one).
    balance leastconn
    http-reuse always
    # nginx: keepalive 32 idle connections per worker, keepalive_timeout 60s (HAProxy instead
    # closes half of the idle connections every pool-purge-delay). nginx's keepalive_requests
    # 100 has no equivalent: HAProxy 2.6 does not apply "max-reuse" to HTTP/1 server
    # connections (tried: no backend connection closed), so they stay open until purged.
    # No "check": nginx has no active checks. Its max_fails/fail_timeout are passive; HAProxy's
    # passive equivalent ("observe", "error-limit", "on-error") works only with "check" on.
    server content_manager {backend} pool-max-conn {32 * workers} pool-purge-delay 60s

backend limit_bench
    # nginx's 10m zone holds about 160,000 addresses.
    stick-table type ip size 160k expire 60s store http_req_rate(1s)
"""


def edge_config(work, http, https, admin, backend, cert, key):
    return f"""
[edge]
http_listen = ["{http}"]
https_listen = ["{https}"]
admin_listen = "{admin}"
threads = 0
redirect_http_to_https = false
access_log = "{work}/edge-access.log"
keepalive_timeout = "65s"
keepalive_requests = 100
# Every load generator here is one client address (loopback); nginx has no per-client cap.
max_connections_per_client = 0

[tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
ciphers = ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384"]

[zones.api]
rate = "10r/s"
[zones.bench]
rate = "100000r/s"

[upstreams.content_manager]
balance = "least_conn"
keepalive = 32
keepalive_requests = 100
keepalive_timeout = "60s"
servers = [{{ addr = "{backend}", max_fails = 3, fail_timeout = "30s" }}]

[[routes]]
path = "/api/content/"
upstream = "content_manager"
[[routes]]
path = "/limited/"
upstream = "content_manager"
limit = [{{ zone = "bench", burst = 1000, nodelay = true }}]
limit_status = 429
[[routes]]
path = "/"
upstream = "content_manager"
"""


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_P99 = re.compile(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_TOTAL = re.compile(r"(\d+) requests in")


def run_wrk(url, duration, connections, headers=()):
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        argv += ["-H", h]
    out = subprocess.run(argv + [url], capture_output=True, text=True).stdout
    rps = float(WRK_RPS.search(out).group(1))
    total = int(WRK_TOTAL.search(out).group(1))
    m = WRK_P99.search(out)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    p99 = float(m.group(1)) * scale[m.group(2)] if m else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx responses\n{out}")
    return rps, p99, total


def run_h2load(url, duration, connections):
    # Each connection makes 100 requests, the keepalive_requests limit the edge and nginx
    # apply (nginx closes an h2 connection after it, and h2load does not reconnect; HAProxy 2.6
    # has no such limit on h2, so the same count keeps the runs alike); rounds repeat
    # until `duration` has passed.
    started, ok, latencies = time.time(), 0, []
    while time.time() - started < duration:
        argv = ["h2load", f"-n{connections * 100}", f"-c{connections}", "-m10", "-t1", url]
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        done = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
        non_2xx = sum(int(n) for n in re.findall(r"(\d+) [345]xx", out))
        if non_2xx or done != connections * 100:
            raise SystemExit(f"{url}: {non_2xx} non-2xx, {done} of {connections * 100} done\n{out}")
        ok += done
    return ok / (time.time() - started), float("nan"), ok


def measure(proxy, load):
    """Runs `load` against `proxy`, sampling its processes' CPU and peak RSS."""
    pids = proxy.pids()
    peak = [rss_bytes(pids)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes(pids))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample)
    sampler.start()
    before = cpu_ticks(pids)
    rps, p99, total = load()
    after = cpu_ticks(pids)
    done.set()
    sampler.join()
    user, kernel = ((a - b) * 1_000_000 / CLK_TCK / max(total, 1) for a, b in zip(after, before))
    return {"rps": rps, "p99": p99, "cpu": user + kernel, "user": user, "kernel": kernel,
            "rss": peak[0] / 2**20}


# The system calls `--syscalls` counts (every one is in `total`).
SYSCALLS = ("read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
            "epoll_wait", "epoll_pwait", "epoll_ctl", "futex", "setsockopt", "getsockopt",
            "accept4", "close", "clock_gettime", "sched_yield")


# The kernel's TCP counters `--syscalls` also reports per request (the whole machine's: on
# loopback every segment is counted once out and once in): segments sent, and of the segments
# received those that carried only an acknowledgment; and the acknowledgments the kernel
# delayed. Each segment is a pass through the loopback and the peer's TCP receive path, which
# the sender's CPU pays.
TCP_COUNTERS = ("TcpOutSegs", "TcpExtTCPPureAcks", "TcpExtDelayedACKs")


def tcp_counters():
    out = subprocess.run(["nstat", "-az", *TCP_COUNTERS], capture_output=True, text=True).stdout
    found = {f[0]: int(f[1]) for f in (line.split() for line in out.splitlines()) if len(f) > 1
             and f[0] in TCP_COUNTERS}
    return {name: found.get(name, 0) for name in TCP_COUNTERS}


def count_syscalls(proxy, load):
    """Runs `load` against `proxy` with `perf stat` counting its processes' system calls (the
    kernel's tracepoints, all threads); per request, by name, and in total; and the times its
    threads were switched out (each a sleep and a wake-up, or a preemption) and the page faults
    they took (a fault is kernel time too: an allocator that gives pages back takes them again)."""
    pids = ",".join(str(p) for p in proxy.pids())
    events = (["raw_syscalls:sys_enter"] + [f"syscalls:sys_enter_{n}" for n in SYSCALLS]
              + ["context-switches", "page-faults"])
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-p", pids] +
                            [a for e in events for a in ("-e", e)],
                            stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    segments_before = tcp_counters()
    try:
        _, _, total = load()
    finally:
        segments_after = tcp_counters()
        stat.send_signal(signal.SIGINT)
        err = stat.communicate()[1]
    counts = {f"tcp: {name}": segments_after[name] - segments_before[name] for name in TCP_COUNTERS}
    for line in err.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[0].strip().isdigit():
            name = fields[2].split(":")[-1].replace("sys_enter_", "")
            counts["total" if name == "sys_enter" else name] = int(fields[0])
    return {name: n / max(total, 1) for name, n in counts.items()}


def syscall_table(scenario, per_proxy):
    names = list(per_proxy)
    calls = sorted({c for counts in per_proxy.values() for c in counts},
                   key=lambda c: (c != "total", -max(p.get(c, 0) for p in per_proxy.values())))
    lines = [f"System calls per request, {scenario} (perf stat on the proxies' processes)", "",
             "| syscall | " + " | ".join(LABELS[n] for n in names) + " |",
             "| --- |" + " ---: |" * len(names)]
    for c in calls:
        if all(per_proxy[n].get(c, 0) < 0.005 for n in names):
            continue
        lines.append(f"| {c} | " + " | ".join(f"{per_proxy[n].get(c, 0):.2f}" for n in names) + " |")
    return "\n".join(lines)


def idle_connections(proxy, count):
    """Opens `count` keepalive connections that each make one request, then idle; reports the
    proxy's RSS while they are open."""
    socks = []
    request = f"GET /api/content/idle HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    try:
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", proxy.http))
            s.sendall(request)
            socks.append(s)
        for s in socks:
            s.settimeout(10)
            s.recv(65536)
        time.sleep(1.0)
        rss = rss_bytes(proxy.pids()) / 2**20
        return {"rps": float("nan"), "p99": float("nan"), "cpu": float("nan"), "rss": rss}
    finally:
        for s in socks:
            s.close()


def h2_frame(kind, flags, stream, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def idle_h2_connections(proxy, count):
    """Opens `count` HTTP/2 connections over TLS that each make one request (stream 1), then
    idle; reports the proxy's RSS while they are open."""
    import ssl
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    path, authority = b"/api/content/idle", b"bench"
    block = (b"\x82\x87" + b"\x44" + bytes([len(path)]) + path
             + b"\x41" + bytes([len(authority)]) + authority)
    request = (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0)
               + h2_frame(1, 0x5, 1, block))
    socks = []
    try:
        for _ in range(count):
            raw = socket.create_connection(("127.0.0.1", proxy.https))
            s = context.wrap_socket(raw, server_hostname="localhost")
            if s.selected_alpn_protocol() != "h2":
                raise SystemExit(f"{proxy.name}: no h2 (ALPN {s.selected_alpn_protocol()})")
            s.sendall(request)
            socks.append(s)
            if len(socks) % 500 == 0:
                for t in socks[-500:]:
                    answered_h2(t)
        for t in socks[len(socks) - len(socks) % 500:]:
            answered_h2(t)
        time.sleep(1.0)
        rss = rss_bytes(proxy.pids()) / 2**20
        return {"rps": float("nan"), "p99": float("nan"), "cpu": float("nan"), "rss": rss}
    finally:
        for s in socks:
            s.close()


def answered_h2(s):
    """Reads an HTTP/2 connection's frames until stream 1's answer has ended, acknowledging the
    server's SETTINGS."""
    s.settimeout(10)
    data = b""
    while True:
        while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
            length = int.from_bytes(data[:3], "big")
            kind, flags = data[3], data[4]
            stream = int.from_bytes(data[5:9], "big") & 0x7FFFFFFF
            data = data[9 + length:]
            if kind == 4 and not flags & 0x1:
                s.sendall(h2_frame(4, 0x1, 0))
            if stream == 1 and kind in (0, 1) and flags & 0x1:
                return
            if kind == 7:
                raise SystemExit("GOAWAY before the answer")
        chunk = s.recv(65536)
        if not chunk:
            raise SystemExit("closed before the answer")
        data += chunk


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--only")
    ap.add_argument("--logs", choices=("on", "off"), default="on",
                    help="every proxy's access log on (the default) or off")
    ap.add_argument("--syscalls", action="store_true",
                    help="count each proxy's system calls per request (perf stat) instead")
    ap.add_argument("--proxies", default=",".join(PROXIES),
                    help="comma-separated subset of " + ", ".join(PROXIES) + " to run")
    ap.add_argument("--edge", default=EDGE,
                    help="the edge binary to run (an older build, for an A/B of two commits)")
    args = ap.parse_args()
    names = [n for n in PROXIES if n in args.proxies.split(",")]
    if not names:
        raise SystemExit(f"--proxies: none of {', '.join(PROXIES)}")
    raise_nofile()

    work = work_dir("edge-bench-")
    cert, key = f"{work}/bench.crt", f"{work}/bench.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    backend_port = free_port()
    backend = subprocess.Popen([SERVICES, "content-manager", "--listen", f"127.0.0.1:{backend_port}",
                                "--instance", "bench"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"},
                               preexec_fn=raise_nofile)
    wait_port(backend_port)
    backend_addr = f"127.0.0.1:{backend_port}"

    ports = {name: (free_port(), free_port()) for name in PROXIES}
    admin = free_port()
    configs = {
        "nginx.conf": nginx_config(work, *ports["nginx"], backend_addr, cert, key),
        "haproxy.cfg": haproxy_config(work, *ports["haproxy"], backend_addr, cert, key),
        "edge.toml": edge_config(work, f"127.0.0.1:{ports['edge'][0]}",
                                 f"127.0.0.1:{ports['edge'][1]}", f"127.0.0.1:{admin}",
                                 backend_addr, cert, key),
    }
    if args.logs == "off":
        configs = {name: without_access_logs(name, text, work) for name, text in configs.items()}
    for name, text in configs.items():
        with open(f"{work}/{name}", "w") as f:
            f.write(text)

    starts = {
        "edge": lambda: Proxy(
            "edge", [args.edge, "run", "--config", f"{work}/edge.toml", "--runtime-dir", work],
            *ports["edge"], lambda pid: [pid]),
        "nginx": lambda: Proxy(
            "nginx", ["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g", "daemon off;"],
            *ports["nginx"], lambda pid: [pid] + children(pid)),
        # -db: foreground, one process (no master-worker), its threads are in its /proc stat.
        "haproxy": lambda: Proxy(
            "haproxy", ["haproxy", "-f", f"{work}/haproxy.cfg", "-db"], *ports["haproxy"],
            lambda pid: [pid], stdout=f"{work}/haproxy-access.log"),
    }
    proxies = {}
    d = args.duration
    scenarios = {
        "HTTP/1.1 keepalive, small GET": lambda p: run_wrk(
            f"http://127.0.0.1:{p.http}/api/content/bench", d, 50),
        "HTTPS keepalive, small GET": lambda p: run_wrk(
            f"https://127.0.0.1:{p.https}/api/content/bench", d, 50),
        "HTTPS new connection per request (handshakes/s)": lambda p: run_wrk(
            f"https://127.0.0.1:{p.https}/api/content/bench", d, 20, ["Connection: close"]),
        "HTTP/2 (h2load)": lambda p: run_h2load(
            f"https://127.0.0.1:{p.https}/api/content/bench", d, 50),
        "32 KB JSON, gzipped": lambda p: run_wrk(
            f"http://127.0.0.1:{p.http}/api/content/bench?bytes=32768", d, 50,
            ["Accept-Encoding: gzip"]),
        "rate-limited route, limit not reached": lambda p: run_wrk(
            f"http://127.0.0.1:{p.http}/limited/bench", d, 50),
    }

    def order(r):
        """The proxies in round r's order: rotated by one each round, so none is always first."""
        k = r % len(names)
        return names[k:] + names[:k]

    results = {}
    try:
        for who in names:
            proxies[who] = starts[who]()
        if args.syscalls:
            for name, load in scenarios.items():
                if args.only and args.only.lower() not in name.lower():
                    continue
                per_proxy = {who: count_syscalls(proxies[who], lambda: load(proxies[who]))
                             for who in names}
                print(syscall_table(name, per_proxy) + "\n")
            return
        for name, load in scenarios.items():
            if args.only and args.only.lower() not in name.lower():
                continue
            for r in range(args.rounds):
                for who in order(r):
                    m = measure(proxies[who], lambda: load(proxies[who]))
                    results.setdefault(name, {}).setdefault(who, []).append(m)
                    print(f"{name} [{who}] round {r + 1}: {m['rps']:.0f} req/s, p99 {m['p99']:.2f} ms, "
                          f"{m['cpu']:.1f} us CPU/req, {m['rss']:.1f} MB", file=sys.stderr)
        idle_rows = {
            "10,000 idle keepalive connections (RSS)": idle_connections,
            "10,000 idle HTTP/2 connections over TLS (RSS)": idle_h2_connections,
        }
        for name, hold in idle_rows.items():
            if args.only and args.only.lower() not in name.lower():
                continue
            for r in range(args.rounds):
                for who in order(r):
                    m = hold(proxies[who], 10_000)
                    results.setdefault(name, {}).setdefault(who, []).append(m)
                    print(f"{name} [{who}] round {r + 1}: {m['rss']:.1f} MB", file=sys.stderr)
    finally:
        for p in proxies.values():
            p.stop()
        backend.terminate()

    report = render(results, args, names)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    suffix = "-logs-off" if args.logs == "off" else ""
    path = os.path.join(ROOT, "benches", "results", f"compare-{stamp}{suffix}.md")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(report)
    print(report)
    print(f"written to {os.path.relpath(path, ROOT)}", file=sys.stderr)


LABELS = {"edge": "edge", "nginx": "nginx", "haproxy": "HAProxy"}
# (key, name in the table, format, whether higher is better)
METRICS = (("rps", "req/s", "{:.0f}", True), ("cpu", "CPU µs/req", "{:.1f}", False),
           ("user", "of it user space", "{:.1f}", False), ("kernel", "of it kernel", "{:.1f}", False),
           ("p99", "p99 ms", "{:.2f}", False), ("rss", "RSS MB", "{:.1f}", False))


def version(name):
    """The first line of the proxy's version output (nginx prints it to stderr)."""
    argv = {"nginx": ["nginx", "-v"], "haproxy": ["haproxy", "-v"]}[name]
    try:
        out = subprocess.run(argv, capture_output=True, text=True)
    except OSError:
        return f"{name}: not found"
    lines = (out.stdout.strip() or out.stderr.strip()).splitlines()
    return lines[0].split(" - ")[0] if lines else f"{name}: no version"  # haproxy: "HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://..."


def render(results, args, names=PROXIES):
    def med(runs, key):
        values = [r[key] for r in runs if r.get(key, float("nan")) == r.get(key, float("nan"))]
        return statistics.median(values) if values else float("nan")

    def cell(v, fmt):
        return "-" if v != v else fmt.format(v)

    def ratio(a, b):
        return "-" if a != a or b != b or b == 0 else f"{a / b:.2f}"

    anchors = [n for n in ANCHORS if n in names]
    versions = "; ".join(version(n) for n in anchors)
    lines = [
        f"# edge vs nginx and HAProxy, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"{versions}; {args.rounds} rounds of {args.duration} s in rotating order, medians; "
        f"access logs {args.logs} for every proxy. "
        "CPU is the proxy's own processes (nginx master + workers, the HAProxy process and its "
        "threads, the edge process) per request, and its two parts, in user space (the proxy's "
        "own code and libraries) and in the kernel (system calls, the loopback TCP stack); RSS is their peak resident memory during the "
        "run. \"better anchor\" is the better of nginx and HAProxy for that metric (higher "
        "req/s; lower CPU, p99 and RSS); the ratio is edge / better anchor, so above 1 is better "
        "for the edge in req/s, below 1 in the others.",
        "",
        "| scenario | metric | " + " | ".join(LABELS[n] for n in names)
        + " | better anchor | edge / better |",
        "| --- | --- | " + " | ".join("---:" for _ in names) + " | --- | ---: |",
    ]
    for name, by in results.items():
        first = True
        for key, label, fmt, higher in METRICS:
            values = {n: med(by.get(n, []), key) for n in names}
            if all(v != v for v in values.values()):
                continue  # e.g. p99 from h2load, everything but RSS for idle connections
            known = [n for n in anchors if values[n] == values[n]]
            best = (max if higher else min)(known, key=lambda n: values[n]) if known else None
            row = [name if first else "", label] + [cell(values[n], fmt) for n in names]
            row += [f"{LABELS[best]} {cell(values[best], fmt)}" if best else "-",
                    ratio(values.get("edge", float("nan")),
                          values[best] if best else float("nan"))]
            lines.append("| " + " | ".join(row) + " |")
            first = False
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
