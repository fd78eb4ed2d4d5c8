#!/usr/bin/env python3
"""Upstream connections a burst costs: the edge and nginx, each with `keepalive 32`, in front
of one backend that answers every request after 50 ms and counts the connections it
accepts. Five bursts of 500 concurrent HTTP/1.1 requests (wrk-free: asyncio clients), 300 ms
apart; the table gives the connections each burst made the proxy open. nginx closes each
connection beyond its 32 idle ones when its request ends, so every burst opens them again;
the edge keeps a burst's surplus for a second (upstream/pool.rs).

Run after `cargo build --release -p edge`; needs nginx."""

import asyncio
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import EDGE, ROOT, free_port, raise_nofile, wait_port, work_dir  # noqa: E402

BURSTS, CONCURRENT, DELAY = 5, 500, 0.05


async def backend(port, accepted):
    async def handle(reader, writer):
        accepted[0] += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    return
                await asyncio.sleep(DELAY)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass
        finally:
            writer.close()
    return await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)


async def one(port):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /burst HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data.startswith(b"HTTP/1.1 200")


async def bursts(port, accepted):
    opened = []
    for _ in range(BURSTS):
        before = accepted[0]
        ok = await asyncio.gather(*(one(port) for _ in range(CONCURRENT)))
        if not all(ok):
            raise SystemExit(f"{ok.count(False)} requests failed")
        opened.append(accepted[0] - before)
        await asyncio.sleep(0.3)
    return opened


def main():
    raise_nofile()
    work = work_dir("edge-burst-")
    results = {}
    for proxy in ("edge", "nginx"):
        backend_port, port = free_port(), free_port()
        if proxy == "edge":
            with open(f"{work}/edge.toml", "w") as f:
                f.write(f"""[edge]
http_listen = ["127.0.0.1:{port}"]
admin_listen = "127.0.0.1:{free_port()}"
access_log = "off"
max_connections_per_client = 0
[upstreams.app]
servers = [{{ addr = "127.0.0.1:{backend_port}" }}]
keepalive = 32
[[routes]]
path = "/"
upstream = "app"
""")
            argv = [EDGE, "run", "--config", f"{work}/edge.toml", "--runtime-dir", work]
        else:
            with open(f"{work}/nginx.conf", "w") as f:
                f.write(f"""worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    upstream app {{ server 127.0.0.1:{backend_port}; keepalive 32; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://app; proxy_http_version 1.1;
                     proxy_set_header Connection ""; }}
    }}
}}
""")
            argv = ["nginx", "-p", work, "-c", f"{work}/nginx.conf", "-g", "daemon off;"]

        async def run():
            accepted = [0]
            server = await backend(backend_port, accepted)
            proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    preexec_fn=raise_nofile)
            try:
                await asyncio.to_thread(wait_port, port)
                await asyncio.sleep(0.5)
                return await bursts(port, accepted)
            finally:
                proc.terminate()
                proc.wait()
                server.close()
        results[proxy] = asyncio.run(run())
        print(proxy, results[proxy], file=sys.stderr)
    lines = [f"# Upstream connections per burst, {time.strftime('%Y-%m-%d %H:%M')}", "",
             f"{BURSTS} bursts of {CONCURRENT} concurrent requests 300 ms apart, a backend "
             f"answering after {int(DELAY * 1000)} ms, `keepalive 32` on both proxies: the "
             "connections each burst made the proxy open to the backend.", "",
             "| proxy | " + " | ".join(f"burst {i + 1}" for i in range(BURSTS)) + " | all |",
             "| --- |" + " ---: |" * (BURSTS + 1)]
    for proxy, opened in results.items():
        lines.append(f"| {proxy} | " + " | ".join(map(str, opened)) + f" | {sum(opened)} |")
    report = "\n".join(lines) + "\n"
    path = os.path.join(ROOT, "benches", "results", f"burst-{time.strftime('%Y-%m-%d-%H%M')}.md")
    with open(path, "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
