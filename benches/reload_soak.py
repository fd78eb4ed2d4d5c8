#!/usr/bin/env python3
"""Full-scale reload soak (issue: live reload with zero dropped requests).

Sends requests without pause through the edge while its config file is rewritten every
100 ms for 30 s, alternating two valid files that move a route between upstreams and add and
remove servers, with an invalid file every tenth time; in the middle, a graceful binary
upgrade (a new edge with --upgrade, SIGQUIT to the old one). Reports requests, failures,
responses from a backend the config never routed to, and the time from a file write to the
new config serving (median, max). Exits non-zero on any failure.
Run: cargo build --release -p edge -p services && python3 benches/reload_soak.py"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from compare import work_dir  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EDGE = os.path.join(ROOT, "target/release/edge")
SERVICES = os.path.join(ROOT, "target/release/services")
DURATION = float(os.environ.get("SOAK_SECONDS", "30"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port):
    for _ in range(300):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing on {port}")


def main():
    work = work_dir("edge-soak-")
    backends = {}
    procs = []
    for name in ("a1", "a2", "b1", "never"):
        port = free_port()
        procs.append(subprocess.Popen([SERVICES, "content-manager", "--listen", f"127.0.0.1:{port}",
                                       "--instance", name], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"}))
        backends[name] = f"127.0.0.1:{port}"
        wait_port(port)
    http, admin = free_port(), free_port()
    head = f'[edge]\nhttp_listen = ["127.0.0.1:{http}"]\nadmin_listen = "127.0.0.1:{admin}"\naccess_log = "off"\n'
    config_a = head + f'''
[upstreams.up_a]
servers = [{{ addr = "{backends['a1']}" }}, {{ addr = "{backends['a2']}" }}]
[upstreams.up_b]
servers = [{{ addr = "{backends['b1']}" }}]
[[routes]]
path = "/api/"
upstream = "up_a"
[[routes]]
path = "/"
upstream = "up_b"
'''
    config_b = head + f'''
[upstreams.up_a]
servers = [{{ addr = "{backends['a2']}" }}]
[upstreams.up_b]
servers = [{{ addr = "{backends['b1']}" }}, {{ addr = "{backends['a1']}" }}]
[[routes]]
path = "/api/"
upstream = "up_b"
[[routes]]
path = "/"
upstream = "up_a"
'''
    invalid = head + f'''
[upstreams.up_c]
servers = [{{ addr = "{backends['never']}" }}]
[[routes]]
path = "/api/"
upstream = "up_c"
broken = yes
'''
    path = os.path.join(work, "upstreams.toml")
    with open(path, "w") as f:
        f.write(config_a)
    edge = subprocess.Popen([EDGE, "run", "--config", path, "--runtime-dir", work],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "edge.log"), "w"))
    wait_port(http)
    wait_port(admin)

    stop = threading.Event()
    # "retried": a kept-alive connection closed by the edge just as a request was sent on it
    # (the old process draining at the upgrade); the client resends on a new connection, as
    # HTTP clients do for idempotent requests (RFC 9112 section 9.3.1). Not a failure.
    counts = {"ok": 0, "failed": 0, "retried": 0}
    seen = set()
    lock = threading.Lock()

    def load():
        conn = None
        while not stop.is_set():
            reused = conn is not None
            try:
                if conn is None:
                    conn = socket.create_connection(("127.0.0.1", http), timeout=10)
                    reader = conn.makefile("rb")
                conn.sendall(b"GET /api/items HTTP/1.1\r\nHost: soak\r\n\r\n")
                status = reader.readline()
                if reused and not status:
                    raise ConnectionResetError("closed before answering")
                length, close = 0, False
                while True:
                    line = reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                    if name.lower() == "connection" and "close" in value.lower():
                        close = True
                body = reader.read(length)
                ok = status.startswith(b"HTTP/1.1 200")
                with lock:
                    counts["ok" if ok else "failed"] += 1
                    if ok:
                        seen.add(json.loads(body)["instance"])
                    else:
                        print("failed:", status, body[:200], file=sys.stderr)
                if close:
                    conn.close()
                    conn = None
            except (OSError, ValueError) as e:
                retry = reused and isinstance(e, (ConnectionResetError, BrokenPipeError))
                with lock:
                    counts["retried" if retry else "failed"] += 1
                if not retry:
                    print("failed:", e, file=sys.stderr)
                conn = None

    def generation():
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as r:
            return json.load(r)["reloads"]["generation"]

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    latencies, invalid_writes, n = [], 0, 0
    started = time.time()
    upgraded = None
    try:
        while time.time() - started < DURATION:
            n += 1
            if upgraded is None and time.time() - started > DURATION / 2:
                # Graceful binary upgrade in the middle of the storm.
                upgraded = subprocess.Popen([EDGE, "run", "--config", path, "--runtime-dir", work, "--upgrade"],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(0.5)
                edge.send_signal(signal.SIGQUIT)
                time.sleep(0.5)
            text = invalid if n % 10 == 0 else (config_b if n % 2 == 0 else config_a)
            invalid_writes += text is invalid
            try:
                before = generation()
            except OSError:
                before = None
            with open(path + ".tmp", "w") as f:
                f.write(text)
            t0 = time.time()
            os.rename(path + ".tmp", path)
            if text is not invalid and before is not None:
                while time.time() - t0 < 2:
                    try:
                        if generation() != before:
                            latencies.append((time.time() - t0) * 1000)
                            break
                    except OSError:
                        pass
                    time.sleep(0.002)
            time.sleep(max(0.0, 0.1 - (time.time() - t0)))
    finally:
        stop.set()
        for t in threads:
            t.join()
        for p in [edge, upgraded] + procs:
            if p is not None and p.poll() is None:
                p.kill()
    print(f"{counts['ok'] + counts['failed']} requests in {DURATION:.0f} s over {n} config writes "
          f"({invalid_writes} invalid) and one binary upgrade: {counts['failed']} failed, "
          f"{counts['retried']} resent after a kept-alive connection closed; "
          f"served by {sorted(seen)}")
    if latencies:
        print(f"file write to new config serving: median {statistics.median(latencies):.0f} ms, "
              f"max {max(latencies):.0f} ms over {len(latencies)} reloads")
    if counts["failed"] or "never" in seen:
        sys.exit(1)


if __name__ == "__main__":
    main()
