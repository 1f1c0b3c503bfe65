#!/usr/bin/env python3
"""N requests over one keep-alive connection, checking each is a 200.

    python3 benches/keepalive_load.py N [PATH] [PORT]   # defaults: /products/42 8080

Used to drive mosaic under `valgrind --tool=callgrind` (BENCHMARKS.md), where
a fixed number of identical requests makes instruction counts comparable.
BENCH_HEADER="name: value" adds that header to every request (an API key).
`BENCH_ACCEPT=text/event-stream` sends that `Accept` (a streamed page).
"""
import http.client, os, sys
n = int(sys.argv[1]); path = sys.argv[2] if len(sys.argv) > 2 else "/products/42"
port = int(sys.argv[3]) if len(sys.argv) > 3 else 8080
c = http.client.HTTPConnection("127.0.0.1", port)
header = os.environ.get("BENCH_HEADER", "")
headers = dict([header.split(": ", 1)]) if header else {}
if os.environ.get("BENCH_ACCEPT"):
    headers["Accept"] = os.environ["BENCH_ACCEPT"]
for i in range(n):
    c.request("GET", path, headers=headers)
    r = c.getresponse(); b = r.read()
    if r.status != 200: print("status", r.status, b[:200]); sys.exit(1)
print("ok", n, len(b))
