"""Instructions per request of edge binaries (callgrind), for A/B comparisons of the request
path on a noisy machine. See benches/instructions.sh."""

import argparse
import glob
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as c  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=["h1", "h2"], default="h1",
                   help="h1: kept-alive HTTP/1.1 GETs (h2load --h1 -c50); "
                        "h2: HTTP/2 over TLS, 50 connections of 10 streams (their 50 TLS "
                        "handshakes are counted too: 10,000 requests or more)")
    p.add_argument("--requests", type=int, default=20000,
                   help="requests counted (one binary from run to run: usually within 0.3%% "
                        "at 20,000, 0.6%% at 5,000; compare alternating pairs)")
    p.add_argument("--logs", choices=["on", "off"], default="off")
    p.add_argument("--keep", help="a directory to keep each callgrind profile in")
    p.add_argument("--locked", type=int, nargs="?", const=15, metavar="TOP",
                   help="also count the locked read-modify-writes per request (atomic "
                        "increments, compare-exchanges: one instruction each, about twenty "
                        "cycles each), and name the TOP functions that make them")
    p.add_argument("binaries", nargs="*", default=[c.EDGE])
    args = p.parse_args()

    c.raise_nofile()
    work = c.work_dir("edge-instructions-")
    cert, key = f"{work}/b.crt", f"{work}/b.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", cert, "-days", "2", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    backend_port = c.free_port()
    backend = subprocess.Popen(
        [c.SERVICES, "content-manager", "--listen", f"127.0.0.1:{backend_port}", "--instance", "b"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=c.raise_nofile)
    try:
        c.wait_port(backend_port)
        for binary in args.binaries:
            done, per_request, locked = count(binary, args, work, cert, key, backend_port)
            print(f"{binary}: {args.mode}, logs {args.logs}, {done} requests, "
                  f"{per_request:,.0f} instructions per request", flush=True)
            if locked is not None:
                total, by_function = locked
                print(f"  of them locked read-modify-writes: {total / done:.1f} per request")
                for function, n in by_function.most_common(args.locked):
                    print(f"    {n / done:5.1f}  {function[:110]}")
    finally:
        backend.terminate()


def count(binary, args, work, cert, key, backend_port):
    http, https, admin = c.free_port(), c.free_port(), c.free_port()
    config = c.edge_config(work, f"127.0.0.1:{http}", f"127.0.0.1:{https}", f"127.0.0.1:{admin}",
                           f"127.0.0.1:{backend_port}", cert, key)
    if args.logs == "off":
        config = config.replace(f'access_log = "{work}/edge-access.log"', 'access_log = "off"')
    with open(f"{work}/edge.toml", "w") as f:
        f.write(config)
    out = f"{work}/callgrind.out"
    for old in glob.glob(out + "*"):
        os.unlink(old)
    # Counting starts after a warm-up (connections to the backend pooled, buffers grown).
    per_instruction = ["--dump-instr=yes", "--compress-pos=no", "--compress-strings=no"]
    edge = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
        + (per_instruction if args.locked is not None else [])
        + [binary, "run", "--config", f"{work}/edge.toml", "--runtime-dir", work],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=c.raise_nofile)
    try:
        c.wait_port(http, timeout=120)
        time.sleep(2)
        if args.mode == "h1":
            load = ["h2load", "--h1", "-c50", "-t1", f"http://127.0.0.1:{http}/api/content/x"]
        else:
            load = ["h2load", "-c50", "-m10", "-t1", f"https://127.0.0.1:{https}/api/content/x"]
        subprocess.run(load[:1] + ["-n2000"] + load[1:], capture_output=True)
        subprocess.run(["callgrind_control", "-i", "on", str(edge.pid)], capture_output=True)
        report = subprocess.run(load[:1] + [f"-n{args.requests}"] + load[1:],
                                capture_output=True, text=True).stdout
        subprocess.run(["callgrind_control", "-i", "off", str(edge.pid)], capture_output=True)
    finally:
        edge.terminate()
        edge.wait()
    done = int(re.search(r"(\d+) succeeded", report).group(1))
    total = 0
    locked = None
    if args.locked is not None:
        locked = locked_counts(binary, glob.glob(out + "*"))
    for profile in glob.glob(out + "*"):
        with open(profile) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    total = max(total, int(line.split()[1]))
        if args.keep:
            os.makedirs(args.keep, exist_ok=True)
            name = os.path.basename(binary.rstrip("/")) + "-" + os.path.basename(profile)
            os.replace(profile, os.path.join(args.keep, name))
    return done, total / done, locked


def locked_addresses(path):
    """Addresses of the instructions in `path` that lock the bus: a `lock` prefix, or `xchg`
    with memory (locked without one)."""
    listing = subprocess.run(["objdump", "-d", "--no-show-raw-insn", path],
                             capture_output=True, text=True).stdout
    found = set()
    for line in listing.splitlines():
        m = re.match(r"\s+([0-9a-f]+):\s+(lock |xchg\s.*\()", line)
        if m:
            found.add(int(m.group(1), 16))
    return found


def locked_counts(binary, profiles):
    """Executions of locked instructions in the edge binary and libc, from callgrind's
    per-instruction profile (addresses are the objects' own, as objdump lists them)."""
    import collections
    libc = "/lib/x86_64-linux-gnu/libc.so.6"
    objects = {os.path.realpath(binary): locked_addresses(binary),
               os.path.realpath(libc): locked_addresses(libc)}
    total, by_function = 0, collections.Counter()
    for profile in profiles:
        addresses, function, call_cost = set(), "", False
        with open(profile) as f:
            for line in f:
                if line.startswith("ob="):
                    addresses = objects.get(os.path.realpath(line[3:].strip()), set())
                elif line.startswith("fn="):
                    function = line[3:].strip()
                elif line.startswith("calls="):
                    call_cost = True  # the next cost line is the call's, not this line's
                elif line.startswith("0x"):
                    if call_cost:
                        call_cost = False
                        continue
                    fields = line.split()
                    if int(fields[0], 16) in addresses:
                        total += int(fields[-1])
                        by_function[function] += int(fields[-1])
    return total, by_function


if __name__ == "__main__":
    main()
