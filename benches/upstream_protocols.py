#!/usr/bin/env python3
"""Upstream protocols side by side: the edge, nginx 1.22 and HAProxy 2.6 toward a TLS server
and toward a gRPC server, same backends, same machine, same run, rotating order, medians
(the method of compare.py, whose helpers it uses).

- "HTTP/1.1 to a TLS upstream": wrk (50 kept-alive connections) over cleartext HTTP/1.1 to
  the proxy, which forwards over TLS (certificate verified against a CA made here, SNI
  backend.test, 32 kept-alive upstream connections) to nginx answering a small JSON body.
- "gRPC unary over h2c": h2load (20 connections x 10 streams, prior knowledge) sends unary
  calls (a 5-byte message) to the proxy, which forwards them over cleartext HTTP/2 to a
  grpcio server (Debian's python3-grpcio) that echoes them.

CPU per request is the proxy's own processes' only. Run after `cargo build --release -p edge
-p services`; needs nginx, haproxy, wrk, h2load (nghttp2-client), openssl, python3-grpcio.
"""

import argparse
import datetime
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare  # noqa: E402  (the same machinery, measured the same way)
from compare import (EDGE, PROXIES, ROOT, Proxy, children, free_port, measure, raise_nofile,  # noqa: E402
                     render, run_wrk, wait_port, work_dir)

GRPC_PEER = os.path.join(ROOT, "tests/e2e/peers/grpc_peer.py")


def make_certs(work):
    """A CA and a server certificate for backend.test it signs."""
    def run(*argv):
        subprocess.run(argv, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{work}/ca.key",
        "-out", f"{work}/ca.pem", "-days", "2", "-subj", "/CN=bench CA")
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{work}/backend.key",
        "-out", f"{work}/backend.csr", "-subj", "/CN=backend.test")
    with open(f"{work}/ext.cnf", "w") as f:
        f.write("subjectAltName=DNS:backend.test\nbasicConstraints=CA:FALSE\n"
                "extendedKeyUsage=serverAuth\n")
    run("openssl", "x509", "-req", "-in", f"{work}/backend.csr", "-CA", f"{work}/ca.pem",
        "-CAkey", f"{work}/ca.key", "-CAcreateserial", "-out", f"{work}/backend.pem",
        "-days", "2", "-extfile", f"{work}/ext.cnf")


def backend_nginx_config(work, port):
    return f"""
worker_processes 2;
pid {work}/backend-nginx.pid;
error_log {work}/backend-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port} ssl http2;
        ssl_certificate {work}/backend.pem; ssl_certificate_key {work}/backend.key;
        location / {{ default_type application/json; return 200 '{{"instance":"tls-backend"}}'; }}
    }}
}}
"""


def nginx_config(work, http, grpc, tls_backend, grpc_backend):
    return f"""
worker_processes auto;
worker_rlimit_nofile 65535;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 16384; use epoll; }}
http {{
    access_log {work}/nginx-access.log;
    keepalive_timeout 65; keepalive_requests 1000;
    upstream tls_backend {{ server {tls_backend}; keepalive 32; }}
    upstream grpc_backend {{ server {grpc_backend}; keepalive 32; }}
    server {{
        listen {http};
        location / {{
            proxy_pass https://tls_backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {work}/ca.pem;
            proxy_ssl_name backend.test;
            proxy_ssl_server_name on;
            proxy_ssl_session_reuse on;
        }}
    }}
    server {{
        listen {grpc} http2;
        location / {{ grpc_pass grpc://grpc_backend; }}
    }}
}}
"""


def haproxy_config(work, http, grpc, tls_backend, grpc_backend):
    return f"""
global
    nbthread {os.cpu_count()}
    maxconn 30000
    no strict-limits
    log stdout format raw local0
defaults
    mode http
    log global
    option httplog
    option dontlognull
    option http-keep-alive
    timeout client 60s
    timeout server 60s
    timeout connect 60s
frontend tls_front
    bind 127.0.0.1:{http}
    default_backend tls_be
frontend grpc_front
    bind 127.0.0.1:{grpc} proto h2
    default_backend grpc_be
backend tls_be
    http-reuse always
    server s1 {tls_backend} ssl verify required ca-file {work}/ca.pem sni str(backend.test) verifyhost backend.test alpn http/1.1 pool-max-conn 32
backend grpc_be
    http-reuse always
    server s1 {grpc_backend} proto h2 pool-max-conn 32
"""


def edge_config(work, http, admin, tls_backend, grpc_backend):
    return f"""
[edge]
http_listen = ["{http}"]
admin_listen = "{admin}"
http2_cleartext = true
access_log = "{work}/edge-access.log"
keepalive_requests = 1000
max_connections_per_client = 0

[upstreams.tls_backend]
servers = [{{ addr = "{tls_backend}" }}]
keepalive = 32
tls = {{ server_name = "backend.test", ca = "{work}/ca.pem" }}

[upstreams.grpc_backend]
servers = [{{ addr = "{grpc_backend}" }}]
keepalive = 32
protocol = "h2"

[[routes]]
path = "/test.Echo/"
upstream = "grpc_backend"
[[routes]]
path = "/"
upstream = "tls_backend"
"""


def run_grpc(url, duration, body):
    """Unary calls with h2load (prior knowledge h2c), repeated until `duration` has passed."""
    started, ok = time.time(), 0
    while time.time() - started < duration:
        argv = ["h2load", "-n2000", "-c20", "-m10", "-t1", "-d", body,
                "-H", "content-type: application/grpc", "-H", "te: trailers", url]
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        import re
        done = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
        if done != 2000:
            raise SystemExit(f"{url}: {done} of 2000 done\n{out}")
        ok += done
    return ok / (time.time() - started), float("nan"), ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--edge", default=EDGE)
    args = ap.parse_args()
    raise_nofile()
    work = work_dir("edge-upstreams-")
    make_certs(work)
    body = f"{work}/call.bin"
    with open(body, "wb") as f:
        f.write(b"\x00\x00\x00\x00\x05hello")

    tls_port, grpc_port = free_port(), None
    with open(f"{work}/backend.conf", "w") as f:
        f.write(backend_nginx_config(work, tls_port))
    backend = subprocess.Popen(["nginx", "-p", work, "-c", f"{work}/backend.conf", "-g",
                                "daemon off;"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    grpc = subprocess.Popen(["/usr/bin/python3", GRPC_PEER, "serve", work],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env={k: v for k, v in os.environ.items() if "proxy" not in k})
    grpc_port = int(grpc.stdout.readline())
    wait_port(tls_port)
    tls_backend, grpc_backend = f"127.0.0.1:{tls_port}", f"127.0.0.1:{grpc_port}"

    ports = {name: (free_port(), free_port()) for name in PROXIES}
    ports["edge"] = (ports["edge"][0], ports["edge"][0])  # h2c on the same plain listener
    with open(f"{work}/nginx.conf", "w") as f:
        f.write(nginx_config(work, *ports["nginx"], tls_backend, grpc_backend))
    with open(f"{work}/haproxy.cfg", "w") as f:
        f.write(haproxy_config(work, *ports["haproxy"], tls_backend, grpc_backend))
    admin = free_port()
    with open(f"{work}/edge.toml", "w") as f:
        f.write(edge_config(work, f"127.0.0.1:{ports['edge'][0]}", f"127.0.0.1:{admin}",
                            tls_backend, grpc_backend))
    starts = {
        "edge": lambda: Proxy("edge", [args.edge, "run", "--config", f"{work}/edge.toml",
                                       "--runtime-dir", work], *ports["edge"], lambda pid: [pid]),
        "nginx": lambda: Proxy("nginx", ["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g",
                                         "daemon off;"], *ports["nginx"],
                               lambda pid: [pid] + children(pid)),
        "haproxy": lambda: Proxy("haproxy", ["haproxy", "-f", f"{work}/haproxy.cfg", "-db"],
                                 *ports["haproxy"], lambda pid: [pid],
                                 stdout=f"{work}/haproxy-access.log"),
    }
    d = args.duration
    scenarios = {
        "HTTP/1.1 to a TLS upstream": lambda p: run_wrk(
            f"http://127.0.0.1:{p.http}/tls/bench", d, 50),
        "gRPC unary over h2c": lambda p: run_grpc(
            f"http://127.0.0.1:{p.https}/test.Echo/Unary", d, body),
    }
    names = list(PROXIES)
    proxies, results = {}, {}
    try:
        for who in names:
            proxies[who] = starts[who]()
        for name, load in scenarios.items():
            for r in range(args.rounds):
                k = r % len(names)
                for who in names[k:] + names[:k]:
                    m = measure(proxies[who], lambda: load(proxies[who]))
                    results.setdefault(name, {}).setdefault(who, []).append(m)
                    print(f"{name} [{who}] round {r + 1}: {m['rps']:.0f} req/s, "
                          f"p99 {m['p99']:.2f} ms, {m['cpu']:.1f} us CPU/req", file=sys.stderr)
    finally:
        for p in proxies.values():
            p.stop()
        backend.terminate()
        grpc.kill()
    report = render(results, args, names).replace(
        "# edge vs nginx and HAProxy", "# Upstream protocols: edge vs nginx and HAProxy", 1)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    path = os.path.join(ROOT, "benches", "results", f"upstream-protocols-{stamp}.md")
    with open(path, "w") as f:
        f.write(report)
    print(report)
    print(f"written to {os.path.relpath(path, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
