#!/usr/bin/env python3
"""Time to the first `section` event of a streamed page, in microseconds.

    python3 benches/stream_first_event.py N PATH [PORT] [json]

Sends N `GET PATH` with `Accept: text/event-stream` over one keep-alive
connection (raw socket, TCP_NODELAY) and times, from the request's last
byte: the first complete `event: section` block (`first`), the `page` event
(`page`) and the last chunk (`end`). Prints
`RESULT n=.. first_p50_us=.. first_p90_us=.. first_p99_us=.. page_p50_us=.. end_p50_us=..`
and exits 1 on any status but 200 or a response that is not an event
stream. With `json`, the baseline through the same client: the JSON page
(`Accept: application/json`), timed to its last byte:
`RESULT n=.. json_p50_us=.. json_p90_us=.. json_p99_us=..`.
"""
import socket, sys, time

n = int(sys.argv[1]); path = sys.argv[2]
port = int(sys.argv[3]) if len(sys.argv) > 3 else 8080
json_page = len(sys.argv) > 4 and sys.argv[4] == "json"
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
accept = "application/json" if json_page else "text/event-stream"
request = f"GET {path} HTTP/1.1\r\nhost: bench\r\naccept: {accept}\r\n\r\n".encode()
buf = b""

def fill():
    global buf
    data = s.recv(65536)
    if not data:
        print("connection closed"); sys.exit(1)
    buf += data

def q(xs, p):
    xs = sorted(xs)
    return int(xs[min(len(xs) - 1, int(p * len(xs)))] * 1e6)

if json_page:
    took = []
    for _ in range(n):
        t = time.perf_counter()
        s.sendall(request)
        while b"\r\n\r\n" not in buf:
            fill()
        head, buf = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 200"):
            print("status:", head[:300]); sys.exit(1)
        length = int(next(l.split(b":", 1)[1] for l in head.split(b"\r\n")
                          if l.lower().startswith(b"content-length:")))
        while len(buf) < length:
            fill()
        buf = buf[length:]
        took.append(time.perf_counter() - t)
    print(f"RESULT n={n} json_p50_us={q(took, .5)} json_p90_us={q(took, .9)} json_p99_us={q(took, .99)}")
    sys.exit(0)

first, page, end = [], [], []
for _ in range(n):
    t = time.perf_counter()
    s.sendall(request)
    while b"\r\n\r\n" not in buf:
        fill()
    head, buf = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200") or b"text/event-stream" not in head.lower():
        print("not a stream:", head[:300]); sys.exit(1)
    events, t_first, t_page = b"", None, None
    while True:
        while b"\r\n" not in buf:
            fill()
        size_line, rest = buf.split(b"\r\n", 1)
        size = int(size_line, 16)
        while len(rest) < size + 2:
            fill(); size_line, rest = buf.split(b"\r\n", 1)
        chunk, buf = rest[:size], rest[size + 2:]
        now = time.perf_counter()
        if size == 0:
            break
        events += chunk
        if t_first is None and b"event: section\n" in events and b"\n\n" in events:
            t_first = now
        if t_page is None and b"event: page\n" in events:
            t_page = now
    first.append(t_first - t); page.append(t_page - t); end.append(now - t)

print(f"RESULT n={n} first_p50_us={q(first, .5)} first_p90_us={q(first, .9)} "
      f"first_p99_us={q(first, .99)} page_p50_us={q(page, .5)} end_p50_us={q(end, .5)}")
