#!/usr/bin/env bash
# What the shared cache tier (Redis) costs a page (issue 17's targets).
#
#   benches/shared_tier.sh target/release/mosaic
#
# The benchmark's product page (seven sections, nginx back ends on
# 127.0.0.1:7101-7107, benches/fixtures/) with every backend cached
# (`ttl = "1h"`), against the machine's Redis on 127.0.0.1:6379:
#
# 1. instructions per page when every section hits the local tier, without
#    `[redis]` and with it (callgrind, benches/callgrind.sh): a local hit
#    must not touch Redis, so the two should match to the noise (~0.2 %);
# 2. latency (one keep-alive client, benches/page_latency.py) of pages whose
#    sections all hit locally, and of pages whose sections that name the
#    product id (six of seven; the cart is one key) miss locally (local
#    `max_entries = 1`, 2,000 product ids) and hit the shared tier: the
#    difference is what a shared hit adds, which should be one Redis round
#    trip per page, not six; the MGET count (INFO commandstats) says how
#    many round trips were made.
# Needs nginx, valgrind, python3, redis-cli.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=benches/lib.sh
source "$HERE/lib.sh"
MOSAIC=$(realpath "${1:?usage: benches/shared_tier.sh target/release/mosaic}")
require_tools "apt-get install nginx valgrind redis-tools" nginx valgrind redis-cli python3
RUN=$(mktemp -d /tmp/mosaic-shared-tier.XXXXXX)
PREFIX="mosaic-bench:$$:"
GW=""
cleanup() {
    [[ -n $GW ]] && kill "$GW" 2>/dev/null || true
    stop_backends "$RUN"
    redis-cli --scan --pattern "${PREFIX}*" | xargs -r redis-cli unlink >/dev/null || true
}
trap cleanup EXIT

# variant DIR EXTRA_CACHE_KEYS WITH_REDIS: a bench dir with every backend cached.
variant() {
    mkdir -p "$1"
    cp "$HERE/fixtures/backends.conf.tmpl" "$1/"
    sed -e "s/^instances = \(.*\)$/instances = \1\ncache = { ttl = \"1h\"$2 }/" \
        "$HERE/fixtures/mosaic-bench.toml" >"$1/mosaic-bench.toml"
    if [[ $3 == yes ]]; then
        printf '\n[redis]\nurl = "redis://127.0.0.1:6379/0"\nprefix = "%s"\ntimeout = "25ms"\n' "$PREFIX" >>"$1/mosaic-bench.toml"
    fi
}
variant "$RUN/local" "" no
variant "$RUN/redis" "" yes
variant "$RUN/shared-hits" ", max_entries = 1" yes
"$MOSAIC" check --config "$RUN/redis/mosaic-bench.toml" >/dev/null

count() { # dir -> instructions per page, all sections local hits
    BENCH_DIR="$1" "$HERE/callgrind.sh" "$MOSAIC" /products/42 5000 \
        | awk -F'instructions_per_request=' '/^RESULT/ {print $2}'
}
without=$(count "$RUN/local")
with=$(count "$RUN/redis")
echo "RESULT local hits: ${without} instructions per page without [redis], ${with} with it"

require_free_ports
start_backends "$RUN" "$RUN/shared-hits"
"$MOSAIC" run --config "$RUN/shared-hits/mosaic-bench.toml" >"$RUN/gateway.log" 2>&1 &
GW=$!
for _ in $(seq 1 100); do
    curl -sf -o /dev/null http://127.0.0.1:9901/admin/redis \
        && curl -sf http://127.0.0.1:9901/admin/redis | grep -q '"up":true' && break
    sleep 0.1
done
# Fill the shared tier with 2,000 pages (their writes land after each page).
python3 "$HERE/page_latency.py" 2000 "/products/{id}" 2000 >/dev/null
sleep 1
python3 "$HERE/page_latency.py" 2000 /products/42 >/dev/null
local_hits=$(python3 "$HERE/page_latency.py" 20000 /products/42)
mget() { redis-cli info commandstats | awk -F'[=,]' '/^cmdstat_mget:/ {print $2}'; }
before=$(mget)
shared_hits=$(python3 "$HERE/page_latency.py" 4000 "/products/{id}" 2000)
after=$(mget)
sources=$(curl -s http://127.0.0.1:8080/products/1500 | python3 -c 'import json,sys; m=json.load(sys.stdin)["_mosaic"]["sections"]; print(sorted({(v["source"], v.get("tier")) for v in m.values()}))')
echo "RESULT local-hit pages:  $local_hits"
echo "RESULT shared-hit pages: $shared_hits (MGETs: $((after - before)) for 4000 pages; a page's sections: $sources)"
