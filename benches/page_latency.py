#!/usr/bin/env python3
"""Latency of N pages over one keep-alive connection, in microseconds.

    python3 benches/page_latency.py N PATTERN [IDS] [PORT]

PATTERN holds `{id}`, cycled over 1..IDS (default 1: the same page each
time). Prints `RESULT n=.. p50_us=.. p90_us=.. p99_us=..` and exits 1 on any
status but 200. The client's own cost is in every figure alike, so compare
two runs of this script, not a run with another client.
"""
import http.client, sys, time
n = int(sys.argv[1]); pattern = sys.argv[2]
ids = int(sys.argv[3]) if len(sys.argv) > 3 else 1
port = int(sys.argv[4]) if len(sys.argv) > 4 else 8080
c = http.client.HTTPConnection("127.0.0.1", port)
took = []
for i in range(n):
    path = pattern.replace("{id}", str(i % ids + 1))
    t = time.perf_counter()
    c.request("GET", path)
    r = c.getresponse(); b = r.read()
    took.append(time.perf_counter() - t)
    if r.status != 200: print("status", r.status, b[:200]); sys.exit(1)
took.sort()
q = lambda p: int(took[min(len(took) - 1, int(p * len(took)))] * 1e6)
print(f"RESULT n={n} p50_us={q(0.5)} p90_us={q(0.9)} p99_us={q(0.99)}")
