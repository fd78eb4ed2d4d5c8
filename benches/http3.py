#!/usr/bin/env python3
"""HTTP/3 side by side: the edge and Caddy 2.6 (Debian's; it serves HTTP/3 by default), each
in front of the same backend, over HTTP/3 (benches/h3load.rs, 10 connections x 10 streams)
and over HTTP/2 (h2load, the same shape), a small GET and a 32 KB GET, order rotated each
round, medians (the measuring of compare.py: CPU of the proxy's own process per request, its
peak RSS). Access logs are off for both. Run through benches/http3.sh."""

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import (EDGE, ROOT, SERVICES, Proxy, free_port, measure, raise_nofile,  # noqa: E402
                     wait_port, work_dir)

H3LOAD = os.path.join(ROOT, "target/release/examples/h3load")
CONNECTIONS, STREAMS = 10, 10


def edge_config(work, http, https, admin, backend, cert, key):
    return f"""
[edge]
http_listen = ["{http}"]
https_listen = ["{https}"]
admin_listen = "{admin}"
threads = 0
redirect_http_to_https = false
access_log = "off"
keepalive_requests = 100000
max_connections_per_client = 0
http3 = true

[tls]
certificates = [{{ cert = "{cert}", key = "{key}" }}]

[upstreams.content_manager]
keepalive = 32
servers = [{{ addr = "{backend}" }}]

[[routes]]
path = "/"
upstream = "content_manager"
"""


def caddy_config(http, https, backend, cert, key):
    return f"""{{
    admin off
    auto_https off
    http_port {http}
    https_port {https}
    servers {{
        protocols h1 h2 h3
    }}
}}
https://localhost:{https} {{
    tls {cert} {key}
    reverse_proxy {backend} {{
        transport http {{
            keepalive 60s
            keepalive_idle_conns 32
        }}
    }}
}}
"""


def run_h3(port, path, duration):
    out = subprocess.run([H3LOAD, f"https://localhost{path}", "--connect", f"127.0.0.1:{port}",
                          "-c", str(CONNECTIONS), "-m", str(STREAMS), "-d", str(duration)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"h3load failed: {out.stderr}")
    r = json.loads(out.stdout)
    if r["failed"] > CONNECTIONS * STREAMS:
        raise SystemExit(f"h3load: {r['failed']} requests failed")
    return r["rps"], r["p99_ms"], r["requests"]


def run_h2(port, path, duration):
    started, ok = time.time(), 0
    n = CONNECTIONS * STREAMS * 100
    while time.time() - started < duration:
        argv = ["h2load", f"-n{n}", f"-c{CONNECTIONS}", f"-m{STREAMS}", "-t1",
                f"https://localhost:{port}{path}"]
        out = subprocess.run(argv, capture_output=True, text=True).stdout
        done = int(re.search(r"status codes: (\d+) 2xx", out).group(1))
        if done != n:
            raise SystemExit(f"h2load: {done} of {n} done\n{out}")
        ok += done
    return ok / (time.time() - started), float("nan"), ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--edge", default=EDGE)
    args = ap.parse_args()
    raise_nofile()
    work = work_dir("edge-h3-")
    cert, key = f"{work}/bench.crt", f"{work}/bench.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    backend_port = free_port()
    backend = subprocess.Popen([SERVICES, "content-manager", "--listen",
                                f"127.0.0.1:{backend_port}", "--instance", "bench"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "RUST_LOG": "warn"}, preexec_fn=raise_nofile)
    wait_port(backend_port)
    backend_addr = f"127.0.0.1:{backend_port}"
    ports = {name: (free_port(), free_port()) for name in ("edge", "caddy")}
    with open(f"{work}/edge.toml", "w") as f:
        f.write(edge_config(work, f"127.0.0.1:{ports['edge'][0]}",
                            f"127.0.0.1:{ports['edge'][1]}", f"127.0.0.1:{free_port()}",
                            backend_addr, cert, key))
    with open(f"{work}/Caddyfile", "w") as f:
        f.write(caddy_config(*ports["caddy"], backend_addr, cert, key))
    starts = {
        "edge": lambda: Proxy("edge", [args.edge, "run", "--config", f"{work}/edge.toml",
                                       "--runtime-dir", work], *ports["edge"], lambda pid: [pid]),
        "caddy": lambda: Proxy("caddy", ["caddy", "run", "--config", f"{work}/Caddyfile",
                                         "--adapter", "caddyfile"],
                               ports["caddy"][1], ports["caddy"][1], lambda pid: [pid]),
    }
    d = args.duration
    small, large = "/api/content/bench", "/api/content/bench?bytes=32768"
    scenarios = {
        "small GET": {"h3": lambda p: run_h3(p.https, small, d),
                      "h2": lambda p: run_h2(p.https, small, d)},
        "32 KB GET": {"h3": lambda p: run_h3(p.https, large, d),
                      "h2": lambda p: run_h2(p.https, large, d)},
    }
    runs = [(who, proto) for who in ("edge", "caddy") for proto in ("h3", "h2")]
    results, proxies = {}, {}
    try:
        for who in starts:
            proxies[who] = starts[who]()
        for name, loads in scenarios.items():
            for r in range(args.rounds):
                k = r % len(runs)
                for who, proto in runs[k:] + runs[:k]:
                    m = measure(proxies[who], lambda: loads[proto](proxies[who]))
                    results.setdefault(name, {}).setdefault((who, proto), []).append(m)
                    print(f"{name} [{who} {proto}] round {r + 1}: {m['rps']:.0f} req/s, "
                          f"p99 {m['p99']:.2f} ms, {m['cpu']:.1f} us CPU/req", file=sys.stderr)
    finally:
        for p in proxies.values():
            p.stop()
        backend.terminate()
    report = render(results, args)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H%M")
    path = os.path.join(ROOT, "benches", "results", f"http3-{stamp}.md")
    with open(path, "w") as f:
        f.write(report)
    print(report)
    print(f"written to {os.path.relpath(path, ROOT)}", file=sys.stderr)


def render(results, args):
    def med(runs, key):
        values = [r[key] for r in runs if r[key] == r[key]]
        return statistics.median(values) if values else float("nan")

    def cell(v, fmt):
        return "-" if v != v else fmt.format(v)

    def ratio(a, b):
        return "-" if a != a or b != b or b == 0 else f"{a / b:.2f}"

    caddy = subprocess.run(["caddy", "version"], capture_output=True, text=True).stdout.split()
    lines = [
        f"# HTTP/3: edge vs Caddy, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"{os.cpu_count()} cores; Caddy {caddy[0] if caddy else '?'}; {args.rounds} rounds of "
        f"{args.duration} s in rotating order, medians; {CONNECTIONS} connections x {STREAMS} "
        "streams (h3load over HTTP/3, h2load over HTTP/2); access logs off. CPU is the proxy "
        "process's per request.",
        "",
        "| scenario | metric | edge h3 | edge h2 | Caddy h3 | Caddy h2 | edge h3 / Caddy h3 "
        "| edge h3 / edge h2 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    metrics = [("rps", "req/s", "{:.0f}"), ("cpu", "CPU µs/req", "{:.1f}"),
               ("p99", "p99 ms", "{:.2f}"), ("rss", "peak RSS MB", "{:.0f}")]
    for name, by in results.items():
        for i, (key, label, fmt) in enumerate(metrics):
            v = {k: med(by.get(k, []), key) for k in
                 [("edge", "h3"), ("edge", "h2"), ("caddy", "h3"), ("caddy", "h2")]}
            row = [name if i == 0 else "", label] + [cell(x, fmt) for x in v.values()]
            row += [ratio(v[("edge", "h3")], v[("caddy", "h3")]),
                    ratio(v[("edge", "h3")], v[("edge", "h2")])]
            lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
