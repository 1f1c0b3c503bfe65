#!/usr/bin/env python3
"""Resident memory of mosaic holding many idle keep-alive client connections.

Starts `MOSAIC run --config CONFIG`, reads its resident size (VmRSS), opens
N client connections that each make one keep-alive request (by default an
unmatched path: a complete exchange that leaves the connection idle and open;
`--path /products/42` composes a page first, with the seven back ends of the
config running), reads VmRSS again, checks that every connection is still
open, and prints one RESULT line. Connections are opened `--batch` at a time
(500 by default), each batch's requests in flight together.

    ulimit -n 30000   # the script raises its own soft limit; mosaic inherits it
    python3 benches/idle_connections.py target/release/mosaic \
        --config ../shared/bench/mosaic-bench.toml --connections 10000

Issue 6's target: resident size under 64 MiB with 10,000 idle connections.
"""

import argparse
import resource
import selectors
import socket
import subprocess
import sys
import time



def request_for(path):
    return f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_listening(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit("mosaic did not start listening")


def open_idle(port, count, request, batch):
    """Opens `count` connections, one request each, answers read; returns them."""
    sel = selectors.DefaultSelector()
    conns = []
    for start in range(0, count, batch):
        pending = {}
        for _ in range(min(batch, count - start)):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            s.setblocking(False)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
        deadline = time.time() + 30
        while pending and time.time() < deadline:
            for key, _ in sel.select(timeout=1):
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    sys.exit("a connection was closed before its answer")
                pending[s] += data
                head, sep, body = pending[s].partition(b"\r\n\r\n")
                if sep:
                    length = 0
                    for line in head.split(b"\r\n")[1:]:
                        name, _, value = line.partition(b":")
                        if name.strip().lower() == b"content-length":
                            length = int(value)
                    if len(body) >= length:
                        sel.unregister(s)
                        del pending[s]
                        conns.append(s)
        if pending:
            sys.exit(f"{len(pending)} answers did not arrive")
    return conns


def still_open(conns):
    """Connections the gateway has not closed (no EOF waiting)."""
    open_count = 0
    for s in conns:
        try:
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            open_count += 1
        except OSError:
            continue
    return open_count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mosaic")
    parser.add_argument("--config", required=True)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument(
        "--path",
        default="/idle-check",
        help="what each connection asks for before it goes idle (/products/42 composes a page)",
    )
    parser.add_argument(
        "--batch", type=int, default=500, help="connections opened (and requests in flight) at once"
    )
    parser.add_argument("--hold", type=float, default=5.0, help="seconds to hold them idle")
    args = parser.parse_args()

    want = args.connections * 2 + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    gateway = subprocess.Popen(
        [args.mosaic, "run", "--config", args.config],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={"RUST_LOG": "warn", "PATH": "/usr/bin:/bin"},
    )
    try:
        wait_listening(args.port, time.time() + 30)
        time.sleep(0.5)
        before = rss_kib(gateway.pid)
        conns = open_idle(args.port, args.connections, request_for(args.path), args.batch)
        time.sleep(args.hold)
        after = rss_kib(gateway.pid)
        alive = still_open(conns)
        print(f"rss before: {before / 1024:.1f} MiB")
        print(f"rss with {len(conns)} idle connections ({alive} still open after {args.hold}s): "
              f"{after / 1024:.1f} MiB ({(after - before) * 1024 / max(len(conns), 1):.0f} bytes each)")
        print(f"RESULT idle_connections={len(conns)} open={alive} rss_mib={after / 1024:.1f} "
              f"rss_before_mib={before / 1024:.1f}")
        for s in conns:
            s.close()
        return 0 if alive == len(conns) else 1
    finally:
        gateway.terminate()
        gateway.wait(timeout=15)


if __name__ == "__main__":
    sys.exit(main())
