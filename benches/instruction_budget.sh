#!/usr/bin/env bash
# The performance gate in CI: instructions per page and per proxied request,
# counted by callgrind (benches/callgrind.sh), against a budget.
#
#   benches/instruction_budget.sh target/release/mosaic
#
# Wall-clock speed cannot be asserted on a shared VM (BENCHMARKS.md: the same
# build's cost moves by 10-20 % within an hour), but instruction counts for a
# fixed input are repeatable to ~0.2 %. The budgets sit a few per cent above
# the counts BENCHMARKS.md records with each change to them, so that a
# compiler or dependency update passes and a design regression fails:
# building JSON values to check section bodies, an actor hop or a new client
# per call, or headers through a map per call each cost more than that.
# When a change needs more instructions on purpose, raise the budget in the
# same commit and say why there and in BENCHMARKS.md.
#
# Inputs: the harness's back ends and mosaic config, frozen in
# benches/fixtures/. Needs nginx, valgrind and python3.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
MOSAIC=${1:?usage: benches/instruction_budget.sh target/release/mosaic}

PAGE_BUDGET=167000
PROXY_BUDGET=33000

measure() { # path requests -> instructions per request
    BENCH_DIR="$HERE/fixtures" "$HERE/callgrind.sh" "$MOSAIC" "$1" "$2" \
        | awk -F'instructions_per_request=' '/^RESULT/ {print $2}'
}

failed=0
check() { # name path requests budget
    local got
    got=$(measure "$2" "$3")
    if [[ -z $got ]]; then
        echo "instruction budget: could not measure $1 ($2)" >&2
        failed=1
    elif ((got > $4)); then
        echo "instruction budget: $1 costs $got instructions per request, over its budget of $4" >&2
        failed=1
    else
        echo "instruction budget: $1 $got instructions per request (budget $4)"
    fi
}
check page /products/42 2000 "$PAGE_BUDGET"
check proxy /api/cart/items 5000 "$PROXY_BUDGET"
exit "$failed"
