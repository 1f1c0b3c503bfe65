#!/usr/bin/env bash
# Time to the first section event of a streamed page (issue 19; target
# < 1 ms p50 on loopback), against the JSON page of the same route.
#
#   benches/stream_first_event.sh target/release/mosaic [N]
#
# Back ends: the benchmark's nginx (benches/fixtures/backends.conf.tmpl) on
# 127.0.0.1:7101-7107. Two configs, N requests each over one keep-alive
# connection after 200 warm-up pages:
# - `cached`: benches/mosaic-bench-cached.toml, six optional sections in
#   fresh cache and the required product live: the head (and with it the
#   hits) waits for the product's call;
# - `all_cached`: the same with the product cached too: every section is
#   ready at once, so the first event measures the stream itself.
# For each: `benches/stream_first_event.py` (first section event, page
# event, end), then the JSON page through the same raw-socket client (the
# baseline: `stream_first_event.py ... json`).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"
MOSAIC=$(realpath "$1")
N=${2:-5000}
RUN=$(mktemp -d /tmp/mosaic-stream.XXXXXX)
GW=""
cleanup() {
    [[ -n $GW ]] && kill "$GW" 2>/dev/null || true
    stop_backends "$RUN"
}
trap cleanup EXIT

require_tools "apt-get install nginx" nginx python3 curl
require_free_ports
start_backends "$RUN" "$HERE/fixtures"

CACHED=$HERE/mosaic-bench-cached.toml
ALL_CACHED=$RUN/all-cached.toml
sed -e '/^\[backends.catalog\]/a cache = { ttl = "1h", stale_if_error = "1h", max_entries = 10000 }' \
    "$CACHED" >"$ALL_CACHED"

for run in cached:"$CACHED" all_cached:"$ALL_CACHED"; do
    name=${run%%:*} config=${run#*:}
    RUST_LOG=warn "$MOSAIC" run --config "$config" >"$RUN/gateway-$name.log" 2>&1 &
    GW=$!
    for _ in $(seq 1 50); do
        curl -sf -o /dev/null http://127.0.0.1:8080/products/42 && break
        sleep 0.2
    done
    python3 "$HERE/page_latency.py" 200 /products/42 >/dev/null
    stream=$(python3 "$HERE/stream_first_event.py" "$N" /products/42 | sed -n 's/^RESULT //p')
    page=$(python3 "$HERE/stream_first_event.py" "$N" /products/42 8080 json | sed -n 's/^RESULT //p')
    echo "RESULT config=$name stream: $stream | json page: $page"
    kill "$GW"; wait "$GW" 2>/dev/null || true
    GW=""
done
