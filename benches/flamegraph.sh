#!/usr/bin/env bash
# A CPU flame graph of mosaic under load (BENCHMARKS.md, "where the CPU goes").
#
#   benches/flamegraph.sh target/release/mosaic [PATH] [SECONDS]
#       PATH:    /products/42 (the page, default) or /api/cart/items (the proxy route)
#       SECONDS: how long perf samples (default 5)
#
# Runs mosaic with ../shared/bench/mosaic-bench.toml against the benchmark's
# nginx back ends (../shared/bench/backends.conf.tmpl on 127.0.0.1:7101-7107),
# pinned as the side-by-side harness pins it (mosaic on CPU 0, back ends and
# wrk on CPU 1), drives it with `wrk -t1 -c64`, samples it with
# `perf record --call-graph dwarf` (release builds keep no frame pointers, so
# DWARF unwinding is what reaches the Rust frames) and renders the stacks with
# inferno. Kernel frames are included: most of a page's CPU is the loopback
# TCP work of `sendto`. Prints where the SVG and the folded stacks are.
# Needs nginx, wrk, perf and inferno (`cargo install inferno`).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"
MOSAIC=$(realpath "$1")
REQ_PATH=${2:-/products/42}
SECONDS_SAMPLED=${3:-5}
BENCH=${BENCH_DIR:-$HERE/../../shared/bench}
RUN=$(mktemp -d /tmp/mosaic-flamegraph.XXXXXX)
GW=""
cleanup() {
    [[ -n $GW ]] && kill -TERM "$GW" 2>/dev/null || true
    stop_backends "$RUN"
}
trap cleanup EXIT

PATH="$PATH:$HOME/.cargo/bin"
require_tools "apt-get install nginx wrk linux-perf; cargo install inferno" \
    nginx wrk perf inferno-collapse-perf inferno-flamegraph
require_free_ports
PIN_GW=() PIN_REST=()
if (($(nproc) >= 2)) && command -v taskset >/dev/null; then
    PIN_GW=(taskset -c 0) PIN_REST=(taskset -c 1)
fi
start_backends "$RUN" "$BENCH" "${PIN_REST[@]}"

"${PIN_GW[@]}" "$MOSAIC" run --config "$BENCH/mosaic-bench.toml" >"$RUN/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 1 120); do
    curl -sf -o /dev/null "http://127.0.0.1:8080$REQ_PATH" && break
    sleep 0.5
done
curl -sf -o /dev/null "http://127.0.0.1:8080$REQ_PATH" || { echo "mosaic does not answer $REQ_PATH (log: $RUN/gateway.log)" >&2; exit 1; }

# Load for the warm-up, the sampled seconds and a margin.
"${PIN_REST[@]}" wrk -t1 -c64 -d"$((SECONDS_SAMPLED + 4))s" "http://127.0.0.1:8080$REQ_PATH" >"$RUN/wrk.txt" 2>&1 &
WRK=$!
sleep 2
perf record -q -F 499 --call-graph dwarf,16384 -p "$GW" -o "$RUN/perf.data" -- sleep "$SECONDS_SAMPLED" 2>"$RUN/perf.log"
wait "$WRK"
perf script -i "$RUN/perf.data" 2>/dev/null | inferno-collapse-perf >"$RUN/stacks.folded"
inferno-flamegraph --title "mosaic $REQ_PATH ($(grep -o 'Requests/sec: *[0-9.]*' "$RUN/wrk.txt"))" \
    <"$RUN/stacks.folded" >"$RUN/flamegraph.svg"
echo "flame graph: $RUN/flamegraph.svg"
echo "folded stacks: $RUN/stacks.folded (grep a function, sum the last column for its share)"
grep 'Requests/sec' "$RUN/wrk.txt"
