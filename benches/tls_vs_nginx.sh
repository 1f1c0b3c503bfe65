#!/usr/bin/env bash
# HTTPS cost: mosaic terminating TLS against nginx terminating TLS in front
# of the same back ends, with the same certificate (BENCHMARKS.md).
#
#   benches/tls_vs_nginx.sh target/release/mosaic [SECONDS] [ROUNDS]
#
# Both servers get one worker pinned to CPU 1; the load generators and the
# benchmark's nginx back ends (benches/fixtures/backends.conf.tmpl,
# 127.0.0.1:7101-7107) run on CPU 0. A fresh ECDSA P-256 certificate is made
# with openssl for each run. Measured, each for SECONDS (default 10), ROUNDS
# times (default 3), the servers in turn within a round:
#   proxy      GET /api/cart/items over HTTPS keep-alive (wrk, HTTP/1.1,
#              TLS 1.3, 16 connections): the server's CPU per request
#              (utime+stime from /proc over the run, divided by requests).
#              mosaic's route is benches/fixtures/mosaic-bench.toml's
#              `/api/` proxy; nginx's a `proxy_pass` to the same cart service
#              with a keep-alive upstream and no access log.
#   page       GET /products/42 over HTTPS keep-alive, and over plain HTTP
#              (mosaic only: nginx composes no page): what TLS adds per page.
#   handshake  full handshakes (openssl s_time -new: no session resumption,
#              one connection at a time, a GET of the proxy path on each):
#              handshakes per second and the server's CPU per handshake.
#   handshake-16  full handshakes from 16 connections at once (wrk with
#              `Connection: close`: a new connection, and a full handshake,
#              per request; wrk keeps no sessions): the rate the server
#              sustains, and its CPU per handshake.
# Prints one line per measurement and the ratios mosaic/nginx of the
# medians. Needs nginx, wrk and openssl (apt-get install nginx wrk openssl).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"
MOSAIC=$(realpath "${1:?usage: benches/tls_vs_nginx.sh target/release/mosaic [SECONDS] [ROUNDS]}")
SECONDS_PER_RUN=${2:-10}
ROUNDS=${3:-3}
BENCH=$HERE/fixtures
RUN=$(mktemp -d /tmp/mosaic-tls.XXXXXX)
GW=""
PLAIN=""
cleanup() {
    [[ -n $GW ]] && kill "$GW" 2>/dev/null || true
    [[ -n $PLAIN ]] && kill "$PLAIN" 2>/dev/null || true
    if [[ -f $RUN/front/nginx.pid ]]; then kill "$(cat "$RUN/front/nginx.pid")" 2>/dev/null || true; fi
    stop_backends "$RUN"
}
trap cleanup EXIT

require_tools "apt-get install nginx wrk openssl" nginx wrk openssl taskset
require_free_ports
for port in 8443 8444; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then echo "port $port is taken" >&2; exit 1; fi
done
start_backends "$RUN" "$BENCH" taskset -c 0

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null

# mosaic over HTTPS on :8443 (its admin on :9901), and the same config over
# plain HTTP on :8080 (admin :9902) for the page's TLS share.
sed -e 's/127.0.0.1:8080/127.0.0.1:8443/' "$BENCH/mosaic-bench.toml" >"$RUN/mosaic-tls.toml"
printf '\n[server.tls]\ncert = "%s"\nkey = "%s"\n' "$RUN/cert.pem" "$RUN/key.pem" >>"$RUN/mosaic-tls.toml"
sed -e 's/127.0.0.1:9901/127.0.0.1:9902/' "$BENCH/mosaic-bench.toml" >"$RUN/mosaic-plain.toml"
RUST_LOG=warn taskset -c 1 "$MOSAIC" run --config "$RUN/mosaic-tls.toml" >"$RUN/mosaic-tls.log" 2>&1 &
GW=$!
RUST_LOG=warn taskset -c 1 "$MOSAIC" run --config "$RUN/mosaic-plain.toml" >"$RUN/mosaic-plain.log" 2>&1 &
PLAIN=$!

# nginx terminating TLS on :8444: one worker, the same certificate.
mkdir -p "$RUN/front/logs" "$RUN/front/tmp"
cat >"$RUN/front/nginx.conf" <<EOF
worker_processes 1;
pid $RUN/front/nginx.pid;
error_log $RUN/front/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $RUN/front/tmp/body;
    proxy_temp_path $RUN/front/tmp/proxy;
    fastcgi_temp_path $RUN/front/tmp/fastcgi;
    uwsgi_temp_path $RUN/front/tmp/uwsgi;
    scgi_temp_path $RUN/front/tmp/scgi;
    keepalive_requests 10000000;
    upstream cart { server 127.0.0.1:7104; keepalive 64; }
    server {
        listen 127.0.0.1:8444 ssl http2;
        ssl_certificate $RUN/cert.pem;
        ssl_certificate_key $RUN/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        location /api/ {
            proxy_pass http://cart/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
taskset -c 1 nginx -p "$RUN/front" -c "$RUN/front/nginx.conf" -e "$RUN/front/logs/error.log" -g 'daemon on;'

for _ in $(seq 1 60); do
    curl -sfk -o /dev/null https://127.0.0.1:8443/api/cart/items \
        && curl -sf -o /dev/null http://127.0.0.1:8080/products/42 \
        && curl -sfk -o /dev/null https://127.0.0.1:8444/api/cart/items && break
    sleep 0.5
done
cmp <(curl -sfk https://127.0.0.1:8443/api/cart/items) <(curl -sfk https://127.0.0.1:8444/api/cart/items) \
    || { echo "mosaic and nginx answer the proxy path differently" >&2; exit 1; }

# cpu_ticks PID...: utime+stime of the processes and their threads, in
# clock ticks (nginx: the master and its worker).
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        for child in $pid $(pgrep -P "$pid" || true); do
            read -r -a f <"/proc/$child/stat"
            total=$((total + f[13] + f[14]))
        done
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)
NGINX_PID=$(cat "$RUN/front/nginx.pid")

# load NAME PID URL [WRK_ARGS...]: wrk for SECONDS_PER_RUN; prints NAME,
# req/s, CPU µs per request.
load() {
    local name=$1 pid=$2 url=$3 before after requests
    shift 3
    taskset -c 0 wrk -t1 -c16 -d2s "$@" "$url" >/dev/null # warm-up
    before=$(cpu_ticks "$pid")
    requests=$(taskset -c 0 wrk -t1 -c16 -d"${SECONDS_PER_RUN}s" "$@" "$url" \
        | awk '/requests in/ {print $1}')
    after=$(cpu_ticks "$pid")
    python3 -c "print(f'$name rps={$requests/$SECONDS_PER_RUN:.0f} cpu_us_per_request={($after-$before)/$HZ*1e6/$requests:.1f}')"
}

# handshakes NAME PID PORT: full handshakes for SECONDS_PER_RUN.
handshakes() {
    local name=$1 pid=$2 port=$3 before after count
    before=$(cpu_ticks "$pid")
    count=$(taskset -c 0 openssl s_time -connect "127.0.0.1:$port" -new -www /api/cart/items \
        -time "$SECONDS_PER_RUN" 2>/dev/null | awk '/connections in/ && /real/ {print $1; exit}')
    after=$(cpu_ticks "$pid")
    python3 -c "print(f'$name handshakes_per_s={$count/$SECONDS_PER_RUN:.0f} cpu_us_per_handshake={($after-$before)/$HZ*1e6/max($count,1):.0f}')"
}

results=$RUN/results.txt
for round in $(seq 1 "$ROUNDS"); do
    echo "== round $round"
    load proxy/mosaic "$GW" https://127.0.0.1:8443/api/cart/items | tee -a "$results"
    load proxy/nginx "$NGINX_PID" https://127.0.0.1:8444/api/cart/items | tee -a "$results"
    load page/mosaic-https "$GW" https://127.0.0.1:8443/products/42 | tee -a "$results"
    load page/mosaic-http "$PLAIN" http://127.0.0.1:8080/products/42 | tee -a "$results"
    handshakes handshake/mosaic "$GW" 8443 | tee -a "$results"
    handshakes handshake/nginx "$NGINX_PID" 8444 | tee -a "$results"
    load handshake-16/mosaic "$GW" https://127.0.0.1:8443/api/cart/items -H 'Connection: close' | tee -a "$results"
    load handshake-16/nginx "$NGINX_PID" https://127.0.0.1:8444/api/cart/items -H 'Connection: close' | tee -a "$results"
done

python3 - "$results" <<'EOF'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *fields = line.split()
    for field in fields:
        key, value = field.split("=")
        rows.setdefault((name, key), []).append(float(value))
med = {k: statistics.median(v) for k, v in rows.items()}
print("== medians")
for (name, key), value in sorted(med.items()):
    print(f"{name} {key}={value:.1f}")
print("== ratios (mosaic / nginx)")
print(f"proxy CPU per request: {med[('proxy/mosaic','cpu_us_per_request')] / med[('proxy/nginx','cpu_us_per_request')]:.2f}x")
print(f"full handshakes per second: {med[('handshake/mosaic','handshakes_per_s')] / med[('handshake/nginx','handshakes_per_s')]:.2f}x")
print(f"CPU per handshake: {med[('handshake/mosaic','cpu_us_per_handshake')] / med[('handshake/nginx','cpu_us_per_handshake')]:.2f}x")
print(f"full handshakes per second, 16 at once: {med[('handshake-16/mosaic','rps')] / med[('handshake-16/nginx','rps')]:.2f}x")
print(f"CPU per handshake, 16 at once: {med[('handshake-16/mosaic','cpu_us_per_request')] / med[('handshake-16/nginx','cpu_us_per_request')]:.2f}x")
print(f"page over HTTPS / over HTTP (CPU per page): {med[('page/mosaic-https','cpu_us_per_request')] / med[('page/mosaic-http','cpu_us_per_request')]:.2f}x")
EOF
