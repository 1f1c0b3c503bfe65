# Shared by the load scripts in benches/ (sourced, not run): the tools they
# need, the ports they take, and the side-by-side benchmark's nginx back ends
# (backends.conf.tmpl: the seven demo-shop services on 127.0.0.1:7101-7107).

# require_tools HINT TOOL...: exits with HINT unless every TOOL is on PATH.
require_tools() {
    local hint=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$tool is needed ($hint)" >&2; exit 1; }
    done
}

# require_free_ports: exits unless the back ends' ports, mosaic's :8080 and
# its admin :9901 are free (a leftover gateway would answer in its place).
require_free_ports() {
    local port
    for port in 7101 7102 7103 7104 7105 7106 7107 8080 9901; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port is taken" >&2
            exit 1
        fi
    done
}

# start_backends RUN_DIR BENCH_DIR [PREFIX...]: one nginx worker serving
# BENCH_DIR/backends.conf.tmpl from RUN_DIR/backends, started under PREFIX
# (e.g. `taskset -c 1`).
start_backends() {
    local run=$1 bench=$2
    shift 2
    mkdir -p "$run/backends/logs" "$run/backends/tmp"
    sed -e "s/@BACKEND_WORKERS@/1/" "$bench/backends.conf.tmpl" >"$run/backends/nginx.conf"
    "$@" nginx -p "$run/backends" -c "$run/backends/nginx.conf" -g 'daemon on;'
}

# stop_backends RUN_DIR: stops what start_backends started, if it did.
stop_backends() {
    if [[ -f $1/backends/nginx.pid ]]; then kill "$(cat "$1/backends/nginx.pid")" 2>/dev/null || true; fi
}
