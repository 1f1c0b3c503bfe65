#!/usr/bin/env bash
# Page throughput with every optional section in fresh cache, against the
# same page uncached (the target: at least 3x).
#
#   benches/fresh_cache.sh target/release/mosaic [ROUNDS]
#
# Backends: the side-by-side benchmark's nginx (../shared/bench/backends.conf.tmpl)
# when nginx is installed, else the demo services (`mosaic demo-service`), on
# 127.0.0.1:7101-7107. Like ../shared/bench/run.sh, mosaic is pinned to CPU 0
# and the backends and wrk to CPU 1. Each round runs the uncached config
# (../shared/bench/mosaic-bench.toml) then the cached one
# (benches/mosaic-bench-cached.toml), `wrk -t1 -c64 -d10s` each after a 3 s
# warm-up, and prints req/s and gateway CPU per page; the last line is
# `RESULT fresh_cache_rps_ratio=... fresh_cache_cost_ratio=...` (medians of the
# per-round ratios).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"
MOSAIC=$(realpath "$1")
ROUNDS=${2:-3}
BENCH=${BENCH_DIR:-$HERE/../../shared/bench}
UNCACHED=$BENCH/mosaic-bench.toml
CACHED=$HERE/mosaic-bench-cached.toml
RUN=$(mktemp -d /tmp/mosaic-fresh-cache.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    stop_backends "$RUN"
}
trap cleanup EXIT

require_tools "apt-get install wrk" wrk
require_free_ports

if command -v nginx >/dev/null && [[ -f $BENCH/backends.conf.tmpl ]]; then
    start_backends "$RUN" "$BENCH" taskset -c 1
    echo "backends: nginx ($BENCH/backends.conf.tmpl)"
else
    port=7101
    for service in catalog pricing reviews cart orders inventory recommendations; do
        taskset -c 1 "$MOSAIC" demo-service --service "$service" --listen "127.0.0.1:$port" \
            >"$RUN/$service.log" 2>&1 &
        PIDS+=($!)
        port=$((port + 1))
    done
    echo "backends: mosaic demo-service"
fi

# One measured run: prints "req/s cpu_us_per_page".
measure() {
    local config=$1
    RUST_LOG=warn taskset -c 0 "$MOSAIC" run --config "$config" >"$RUN/gateway.log" 2>&1 &
    local gw=$!
    for _ in $(seq 1 50); do
        curl -sf -o /dev/null http://127.0.0.1:8080/products/42 && break
        sleep 0.2
    done
    taskset -c 1 wrk -t1 -c64 -d3s http://127.0.0.1:8080/products/42 >/dev/null
    local t0 t1 n
    t0=$(awk '{print $14 + $15}' "/proc/$gw/stat")
    taskset -c 1 wrk -t1 -c64 -d10s http://127.0.0.1:8080/products/42 >"$RUN/wrk.txt"
    t1=$(awk '{print $14 + $15}' "/proc/$gw/stat")
    n=$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")
    kill -TERM "$gw"
    wait "$gw" || true
    python3 -c "print(f'{$n / 10:.0f} {($t1 - $t0) * 1e6 / 100 / $n:.1f}')"
}

ratios=()
for round in $(seq 1 "$ROUNDS"); do
    read -r rps_u cost_u < <(measure "$UNCACHED")
    read -r rps_c cost_c < <(measure "$CACHED")
    echo "round $round: uncached $rps_u req/s ${cost_u} us/page; cached $rps_c req/s ${cost_c} us/page"
    ratios+=("$rps_u $cost_u $rps_c $cost_c")
done
printf '%s\n' "${ratios[@]}" | python3 -c '
import sys, statistics
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
rps = statistics.median(r[2] / r[0] for r in rows)
cost = statistics.median(r[3] / r[1] for r in rows)
print(f"RESULT fresh_cache_rps_ratio={rps:.2f} fresh_cache_cost_ratio={cost:.3f}")
'
echo "run directory: $RUN"
