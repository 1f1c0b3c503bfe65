#!/usr/bin/env bash
# Instructions per request, counted by callgrind (BENCHMARKS.md).
#
#   benches/callgrind.sh target/release/mosaic [PATH] [N]
#       PATH: /api/cart/items (the proxy route, default) or /products/42 (the page)
#       N:    measured requests (default 20000)
#
# Runs mosaic with ../shared/bench/mosaic-bench.toml under
# `valgrind --tool=callgrind` against the benchmark's nginx back ends
# (../shared/bench/backends.conf.tmpl on 127.0.0.1:7101-7107), sends 200
# warm-up requests, zeroes the counters, sends N requests over one keep-alive
# connection (benches/keepalive_load.py) and prints the instructions per
# request. Counts are exact and repeatable where timings on this VM are not;
# valgrind counts `rep stos`/`rep movs` per iteration, so a large memset or
# memcpy weighs more here than on the CPU. Needs nginx and valgrind.
#
# AUTH=1 measures the same routes behind an API key and a local rate limit:
# the page and the proxy route get `auth = "key"` and a per-consumer limit
# far above the load (every request passes), one consumer, and each request
# sends its key (issue 18: what the guard costs per request).
#
# DASHBOARDS=K keeps K dashboard streams (`curl -N /admin/events` on the
# admin listener) open while the requests are counted, so that their cost
# lands in the same total: the sampler's work divided over the requests.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"
MOSAIC=$(realpath "$1")
REQ_PATH=${2:-/api/cart/items}
N=${3:-20000}
BENCH=${BENCH_DIR:-$HERE/../../shared/bench}
RUN=$(mktemp -d /tmp/mosaic-callgrind.XXXXXX)
VG=""
STREAMS=()
cleanup() {
    ((${#STREAMS[@]})) && kill "${STREAMS[@]}" 2>/dev/null || true
    [[ -n $VG ]] && kill -INT "$VG" 2>/dev/null || true
    stop_backends "$RUN"
}
trap cleanup EXIT

require_tools "apt-get install nginx valgrind" nginx valgrind callgrind_control callgrind_annotate
require_free_ports
start_backends "$RUN" "$BENCH"

CONFIG=$BENCH/mosaic-bench.toml
if [[ ${AUTH:-0} == 1 ]]; then
    CONFIG=$RUN/mosaic-bench-auth.toml
    limit='rate_limit = { requests = 1000000, per = "1s", burst = 1000 }'
    sed -e "s|^deadline = \"1s\"|&\nauth = \"key\"\n$limit|" \
        -e "s|^rewrite = \"/cart/\"|&\nauth = \"key\"\n$limit|" "$BENCH/mosaic-bench.toml" >"$CONFIG"
    printf '\n[[auth.consumers]]\nname = "bench"\nkeys = ["bench-key-0123456789abcdef"]\n' >>"$CONFIG"
    export BENCH_HEADER="x-api-key: bench-key-0123456789abcdef"
fi

RUST_LOG=${RUST_LOG:-info} valgrind --tool=callgrind --dump-instr=no \
    --callgrind-out-file="$RUN/callgrind.out" \
    "$MOSAIC" run --config "$CONFIG" >"$RUN/gateway.log" 2>&1 &
VG=$!
for _ in $(seq 1 120); do
    curl -sf -o /dev/null -H "${BENCH_HEADER:-x-none: 1}" "http://127.0.0.1:8080$REQ_PATH" && break
    sleep 0.5
done
python3 "$HERE/keepalive_load.py" 200 "$REQ_PATH" >/dev/null
for _ in $(seq 1 "${DASHBOARDS:-0}"); do
    curl -sN -o "$RUN/events.$RANDOM" "http://127.0.0.1:9901/admin/events" &
    STREAMS+=($!)
done
# Let the streams connect and the sampler take its first readings.
((${#STREAMS[@]})) && sleep 3
callgrind_control -z "$VG" >/dev/null 2>&1
python3 "$HERE/keepalive_load.py" "$N" "$REQ_PATH"
callgrind_control -d "$VG" >/dev/null 2>&1
if ((${#STREAMS[@]})); then
    echo "dashboard streams: ${#STREAMS[@]} open, $(cat "$RUN"/events.* | grep -c '^event: snapshot') snapshots received"
    kill "${STREAMS[@]}" 2>/dev/null || true
    STREAMS=()
fi
kill -INT "$VG"
wait "$VG" || true
VG=""

# The dump taken after the N requests is the first numbered part.
total=$(callgrind_annotate --threshold=100 "$RUN/callgrind.out.1" 2>/dev/null \
    | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "profile: $RUN/callgrind.out.1 (callgrind_annotate --inclusive=yes shows where)"
python3 -c "print(f'RESULT path=$REQ_PATH requests=$N instructions_per_request={$total / $N:.0f}')"
