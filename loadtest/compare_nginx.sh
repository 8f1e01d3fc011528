#!/usr/bin/env bash
# Load tests for llm-proxy: the proxy against nginx doing the same job
# (bearer-key check, key swap, keep-alive upstream pool, unbuffered
# pass-through) in front of the same mock upstream, and optionally against
# other LLM gateways.  Writes a table of medians and ratios into
# docs/benchmarks.md.
#
# Usage: loadtest/compare_nginx.sh [--with litellm,portkey,tensorzero|all] [--help]
#
# Phase 1, throughput / CPU cost, closed loop: the server under test
#   (llm-proxy, or the nginx worker) alone on SERVER_CORE (0); the mock
#   upstream and wrk on LOAD_CORE (1).  wrk -t1 -c$CONNECTIONS for $DURATION
#   per run, proxy, nginx and the routed proxy interleaved for $ROUNDS rounds.
# Phase 2, CPU per request at fixed offered loads ($RATES req/s): same
#   pinning; `llm-proxy benchmark --rate R` (open loop) on LOAD_CORE, proxy,
#   nginx and the routed proxy interleaved.  Also checks that the achieved
#   rate is the offered one.
# Routed target ($ROUTED=1): a second llm-proxy server (same pinning) with
#   one registered model; its requests name that model, so each one does the
#   model lookup, the body rewrite and the usage accounting.  The first
#   server ("proxy") has no model registered: the plain pass-through path.
# Observability targets ($OBSERVABILITY=1), in phases 1 and 2: "quiet", a
#   third llm-proxy server with events and metrics turned off
#   (EVENT_LOG=false METRICS_ENABLED=false), to price them on the plain
#   pass-through; "cached", a fourth whose requests opt in to the response
#   cache (Cache-Control: public, max-age) with one fixed body, so every
#   request after the first is a cache hit.
# Phase 3, added latency: everything on SERVER_CORE (the running mock is
#   re-pinned there with `taskset -a -p`, wrk is started there), wrk -t1 -c1
#   against the mock directly, via llm-proxy and via nginx, interleaved.
# Phase 4, streaming: same pinning as phase 3; `llm-proxy benchmark -c1`
#   sends $STREAM_REQUESTS paced SSE streams directly, via llm-proxy and via
#   nginx, interleaved: added time to first event and added inter-event gap.
# Phase 5, memory: VmRSS of llm-proxy and of nginx (master + worker) idle
#   and with $HOLD_CONNECTIONS open keep-alive connections.
# Phase 6, 1 vs 2 workers ($SCALING=1): a fresh 2-worker mock and two fresh
#   llm-proxy servers (1 worker on core 0, 2 workers on cores 0 and 1),
#   wrk -t$SCALE_WRK_THREADS -c$SCALE_CONNECTIONS free to run on both cores,
#   interleaved; reports which process used how much of the machine.
# Phase 7, other gateways (--with / GATEWAYS): LiteLLM (PyPI), Portkey's
#   gateway (npm), TensorZero (PyPI), installed on first use under
#   $GATEWAY_CACHE, each alone on SERVER_CORE in front of the same mock:
#   CPU per request at $GATEWAY_RATE req/s interleaved with llm-proxy at the
#   same rate, and closed-loop throughput as in phase 1.
#
# See loadtest/README.md for details.  Environment knobs (defaults):
#   LLM_PROXY_BIN=target/release/llm-proxy  (built with cargo if missing)
#   LLM_PROXY_REV=""  what to call the binary's source in the report
#                     (default: the checkout's commit, + dirty flag)
#   MOCK_PORT=19001 PROXY_PORT=19002 NGINX_PORT=19003
#   ROUNDS=3 DURATION=10s CONNECTIONS=32 WARMUP=2s (0 = no warm-up run)
#   SERVER_CORE=0 LOAD_CORE=1
#   ROUTED=1 (0 = skip the routed target) ROUTED_PORT=19009
#   OBSERVABILITY=1 (0 = skip the quiet and cached targets) QUIET_PORT=19010 CACHED_PORT=19011
#   MOCK_ARGS="" PROXY_ARGS=""   extra flags for `mock-upstream` / `server`
#   NGINX_BIN=nginx KEEP_WORKDIR=0 (1 = keep logs and raw output)
#   RATES="5000 15000" ("" = skip phase 2)  RATE_CONNECTIONS=$CONNECTIONS
#   STREAM_REQUESTS=100 STREAM_CHUNKS=20 STREAM_INTERVAL_MS=5
#   HOLD_CONNECTIONS=10000 (0 = skip the held measurement of phase 5) HOLD_SETTLE=3 (s)
#   SCALING=1 (0 = skip phase 6) SCALE_CONNECTIONS=64 SCALE_WRK_THREADS=2
#   SCALE_MOCK_PORT=19004 SCALE1_PORT=19005 SCALE2_PORT=19006
#   GATEWAYS="" (same as --with) GATEWAY_RATE=100
#   GATEWAY_CACHE=~/.cache/llm-proxy-loadtest LITELLM_PORT=19007 PORTKEY_PORT=19008
#   LITELLM_SPEC="litellm[proxy]" PORTKEY_SPEC=@portkey-ai/gateway TENSORZERO_SPEC=tensorzero
#   WRITE_DOCS=1 (0 = only print the Markdown) DOCS_FILE=docs/benchmarks.md
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)
ORIG_PWD=$PWD
SCRIPT_NAME=loadtest/compare_nginx.sh

log() { printf '[loadtest] %s\n' "$*" >&2; }
die() {
    printf '[loadtest] ERROR: %s\n' "$*" >&2
    exit 1
}
usage() { sed -n '2,/^set -euo pipefail/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# shell_word VALUE: VALUE quoted for a shell command line, only if needed.
shell_word() {
    if [[ $1 =~ ^[A-Za-z0-9_./:,=+@%-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

# The knobs the caller set, to print the exact command in the report.
KNOBS=(LLM_PROXY_BIN LLM_PROXY_REV MOCK_PORT PROXY_PORT NGINX_PORT ROUNDS DURATION CONNECTIONS WARMUP
    SERVER_CORE LOAD_CORE ROUTED ROUTED_PORT OBSERVABILITY QUIET_PORT CACHED_PORT MOCK_ARGS PROXY_ARGS NGINX_BIN KEEP_WORKDIR RATES RATE_CONNECTIONS
    STREAM_REQUESTS STREAM_CHUNKS STREAM_INTERVAL_MS HOLD_CONNECTIONS SCALING SCALE_CONNECTIONS
    SCALE_WRK_THREADS SCALE_MOCK_PORT SCALE1_PORT SCALE2_PORT GATEWAYS GATEWAY_RATE GATEWAY_CACHE
    LITELLM_PORT PORTKEY_PORT LITELLM_SPEC PORTKEY_SPEC TENSORZERO_SPEC WRITE_DOCS DOCS_FILE RUST_LOG)
COMMAND_LINE=""
for knob in "${KNOBS[@]}"; do
    if [[ -n ${!knob+x} ]]; then
        COMMAND_LINE+="$knob=$(shell_word "${!knob}") "
    fi
done
COMMAND_LINE+=$SCRIPT_NAME
for arg in "$@"; do COMMAND_LINE+=" $(shell_word "$arg")"; done

WITH=${GATEWAYS:-}
while (($# > 0)); do
    case $1 in
    --with)
        (($# >= 2)) || die "--with needs a list, e.g. --with litellm,portkey,tensorzero"
        WITH=$2
        shift 2
        ;;
    --with=*)
        WITH=${1#--with=}
        shift
        ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument '$1' (see --help)" ;;
    esac
done

DEFAULT_BIN=target/release/llm-proxy
BIN=${LLM_PROXY_BIN:-$DEFAULT_BIN}
MOCK_PORT=${MOCK_PORT:-19001}
PROXY_PORT=${PROXY_PORT:-19002}
NGINX_PORT=${NGINX_PORT:-19003}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
WARMUP=${WARMUP:-2s}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
ROUTED=${ROUTED:-1}
ROUTED_PORT=${ROUTED_PORT:-19009}
OBSERVABILITY=${OBSERVABILITY:-1}
QUIET_PORT=${QUIET_PORT:-19010}
CACHED_PORT=${CACHED_PORT:-19011}
MOCK_ARGS=${MOCK_ARGS:-}
PROXY_ARGS=${PROXY_ARGS:-}
NGINX_BIN=${NGINX_BIN:-nginx}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
RATES=${RATES-5000 15000}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-$CONNECTIONS}
STREAM_REQUESTS=${STREAM_REQUESTS:-100}
STREAM_CHUNKS=${STREAM_CHUNKS:-20}
STREAM_INTERVAL_MS=${STREAM_INTERVAL_MS:-5}
HOLD_CONNECTIONS=${HOLD_CONNECTIONS:-10000}
HOLD_SETTLE=${HOLD_SETTLE:-3}
SCALING=${SCALING:-1}
SCALE_CONNECTIONS=${SCALE_CONNECTIONS:-64}
SCALE_WRK_THREADS=${SCALE_WRK_THREADS:-2}
SCALE_MOCK_PORT=${SCALE_MOCK_PORT:-19004}
SCALE1_PORT=${SCALE1_PORT:-19005}
SCALE2_PORT=${SCALE2_PORT:-19006}
GATEWAY_RATE=${GATEWAY_RATE:-100}
GATEWAY_CACHE=${GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/llm-proxy-loadtest}
LITELLM_PORT=${LITELLM_PORT:-19007}
PORTKEY_PORT=${PORTKEY_PORT:-19008}
LITELLM_SPEC=${LITELLM_SPEC:-litellm[proxy]}
PORTKEY_SPEC=${PORTKEY_SPEC:-@portkey-ai/gateway}
TENSORZERO_SPEC=${TENSORZERO_SPEC:-tensorzero}
WRITE_DOCS=${WRITE_DOCS:-1}
DOCS_FILE=${DOCS_FILE:-$REPO_ROOT/docs/benchmarks.md}
[[ $DOCS_FILE == /* ]] || DOCS_FILE=$ORIG_PWD/$DOCS_FILE

CLIENT_KEY=sk-bench
UPSTREAM_KEY=sk-upstream
# Only for this run's throw-away stores; the management API listens on loopback.
MANAGEMENT_TOKEN=bench-management-$$-$RANDOM
CHAT_PATH=/v1/chat/completions
CHAT_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}'
# The routed target: the model registered on the second server, the upstream
# model name it is rewritten to, and its prices (per token, dollars).  The
# body has the same length as CHAT_BODY.
ROUTED_MODEL=bench-model
ROUTED_UPSTREAM_MODEL=gpt-4o-mini
ROUTED_INPUT_COST=0.00000015
ROUTED_OUTPUT_COST=0.0000006
ROUTED_BODY='{"model":"'$ROUTED_MODEL'","messages":[{"role":"user","content":"hi"}]}'
ROUTED_KEY="" # generated by the second server's POST /key/generate
# The cached target: a body of its own and the opt-in header of `benchmark --cache`.
CACHED_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi!"}]}'
CACHED_HEADER='Cache-Control: public, max-age=86400'
HOLD_SCRIPT=$SCRIPT_DIR/hold_connections.py
LUA_SCRIPT=$SCRIPT_DIR/chat.lua
NGINX_TEMPLATE=$SCRIPT_DIR/nginx.conf.template
GATEWAY_DIR=$SCRIPT_DIR/gateways
UPDATE_DOCS=$SCRIPT_DIR/update_docs.py
# Thresholds used in the report.
ACHIEVED_MIN=0.95  # achieved / offered rate below this = "could not keep up"
BUSY_SATURATED=95  # a core busier than this (%) counts as saturated
GAP_TOLERANCE_US=10 # "no added per-event gap" = added gap within this

WORKDIR=""
MOCK_PID=""
PROXY_PID=""
ROUTED_PID=""
QUIET_PID=""
CACHED_PID=""
NGINX_PID=""
NGINX_WORKERS=()
WRK_PID=""
HOLD_PID=""
EXTRA_PIDS=() # phase 6 and 7 processes (stopped with their children)
FAILURES=()
NOTES=() # things the report must mention (skipped gateways, saturation, ...)

# Targets: base URL, path, key, body, extra headers (newline-separated),
# processes whose CPU time is charged to it, display name.
declare -A T_BASE T_PATH T_KEY T_BODY T_HDRS T_PIDS T_NAME T_MOCK

# ---------------------------------------------------------------- cleanup --

is_running() {
    # kill -0 also succeeds on zombies, so look at the state field as well.
    local pid=$1 stat
    [[ -n $pid ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

stop_pid() {
    local pid=$1 i
    [[ -n $pid ]] || return 0
    if is_running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            is_running "$pid" || break
            sleep 0.1
        done
        if is_running "$pid"; then
            log "pid $pid ignored SIGTERM for 5s, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

descendants() {
    local child
    for child in $(pgrep -P "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

# stop_tree PID: SIGTERM to PID, then SIGKILL to whatever of its children
# (taken before) is still there.
stop_tree() {
    local pid=$1 kid
    local -a kids=()
    [[ -n $pid ]] || return 0
    mapfile -t kids < <(descendants "$pid")
    stop_pid "$pid"
    for kid in "${kids[@]}"; do
        if is_running "$kid"; then
            kill -KILL "$kid" 2>/dev/null || true
        fi
    done
}

show_log_tail() {
    local name=$1 file=$2
    if [[ -s $file ]]; then
        printf -- '----- last lines of %s (%s) -----\n' "$name" "$file" >&2
        tail -n 20 "$file" >&2 || true
    fi
}

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    set +e
    stop_pid "$WRK_PID"
    stop_pid "$HOLD_PID"
    for pid in "${EXTRA_PIDS[@]}"; do stop_tree "$pid"; done
    if [[ -n $NGINX_PID ]]; then
        # Remember the workers before the master goes, so none can be left.
        mapfile -t NGINX_WORKERS < <(pgrep -P "$NGINX_PID" 2>/dev/null)
        stop_pid "$NGINX_PID"
        for pid in "${NGINX_WORKERS[@]}"; do
            if is_running "$pid" && grep -q nginx "/proc/$pid/cmdline" 2>/dev/null; then
                kill -KILL "$pid" 2>/dev/null
            fi
        done
    fi
    stop_pid "$PROXY_PID"
    stop_pid "$ROUTED_PID"
    stop_pid "$QUIET_PID"
    stop_pid "$CACHED_PID"
    stop_pid "$MOCK_PID"
    if [[ -n $WORKDIR && -d $WORKDIR ]]; then
        if ((rc == 130 || rc == 143)); then
            log "interrupted; logs and raw output kept in $WORKDIR"
        elif ((rc != 0)); then
            show_log_tail "mock upstream" "$WORKDIR/mock.log"
            show_log_tail "llm-proxy" "$WORKDIR/proxy.log"
            show_log_tail "llm-proxy (routed)" "$WORKDIR/routed.log"
            show_log_tail "llm-proxy (quiet)" "$WORKDIR/quiet.log"
            show_log_tail "llm-proxy (cached)" "$WORKDIR/cached.log"
            show_log_tail "nginx" "$WORKDIR/nginx-error.log"
            log "logs and raw output kept in $WORKDIR"
        elif [[ $KEEP_WORKDIR == 1 ]]; then
            log "logs and raw output kept in $WORKDIR"
        else
            rm -rf -- "$WORKDIR"
        fi
    fi
    exit "$rc"
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ validation --

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

for var in MOCK_PORT PROXY_PORT NGINX_PORT ROUTED_PORT QUIET_PORT CACHED_PORT ROUNDS CONNECTIONS SERVER_CORE LOAD_CORE RATE_CONNECTIONS \
    STREAM_REQUESTS STREAM_CHUNKS STREAM_INTERVAL_MS HOLD_CONNECTIONS SCALE_CONNECTIONS SCALE_WRK_THREADS \
    SCALE_MOCK_PORT SCALE1_PORT SCALE2_PORT GATEWAY_RATE LITELLM_PORT PORTKEY_PORT; do
    is_uint "${!var}" || die "$var must be a non-negative integer, got '${!var}'"
done
((ROUNDS >= 1)) || die "ROUNDS must be >= 1"
((CONNECTIONS >= 1 && RATE_CONNECTIONS >= 1)) || die "CONNECTIONS and RATE_CONNECTIONS must be >= 1"
((SCALE_CONNECTIONS >= SCALE_WRK_THREADS && SCALE_WRK_THREADS >= 1)) ||
    die "need SCALE_CONNECTIONS >= SCALE_WRK_THREADS >= 1"
((STREAM_REQUESTS >= 1)) || die "STREAM_REQUESTS must be >= 1"
((GATEWAY_RATE >= 1)) || die "GATEWAY_RATE must be >= 1"
[[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "DURATION must look like 10, 10s, 1m (got '$DURATION')"
[[ $WARMUP =~ ^[0-9]+[smh]?$ ]] || die "WARMUP must look like 0, 2s, ... (got '$WARMUP')"
[[ $SCALING == 0 || $SCALING == 1 ]] || die "SCALING must be 0 or 1"
[[ $ROUTED == 0 || $ROUTED == 1 ]] || die "ROUTED must be 0 or 1"
[[ $OBSERVABILITY == 0 || $OBSERVABILITY == 1 ]] || die "OBSERVABILITY must be 0 or 1"
[[ $WRITE_DOCS == 0 || $WRITE_DOCS == 1 ]] || die "WRITE_DOCS must be 0 or 1"
((SERVER_CORE != LOAD_CORE)) || die "SERVER_CORE and LOAD_CORE must differ"
read -r -a RATE_LIST <<<"$RATES"
for rate in "${RATE_LIST[@]}"; do
    if ! is_uint "$rate" || ((rate < 1)); then
        die "RATES must be positive integers (req/s), got '$RATES'"
    fi
done

# seconds DURATION: wrk-style duration (10, 10s, 1m, 1h) in seconds.
seconds() {
    local v=${1%[smh]}
    case $1 in
    *m) echo $((v * 60)) ;;
    *h) echo $((v * 3600)) ;;
    *) echo "$v" ;;
    esac
}
DURATION_S=$(seconds "$DURATION")
((DURATION_S >= 1)) || die "DURATION must be at least 1s"
warmup_on() { [[ $(seconds "$WARMUP") != 0 ]]; }

# Gateways for phase 7.
GATEWAY_LIST=()
if [[ -n $WITH ]]; then
    for gw in ${WITH//,/ }; do
        case $gw in
        all) GATEWAY_LIST+=(litellm portkey tensorzero) ;;
        litellm | portkey | tensorzero) GATEWAY_LIST+=("$gw") ;;
        *) die "unknown gateway '$gw' in --with/GATEWAYS (known: litellm, portkey, tensorzero, all)" ;;
        esac
    done
    mapfile -t GATEWAY_LIST < <(printf '%s\n' "${GATEWAY_LIST[@]}" | awk '!seen[$0]++')
fi

for tool in wrk taskset curl getconf awk pgrep sed sort jq python3 sha256sum; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found (apt-get install -y wrk util-linux curl procps jq python3 coreutils)"
done
if ! command -v "$NGINX_BIN" >/dev/null 2>&1; then
    if [[ $NGINX_BIN == nginx && -x /usr/sbin/nginx ]]; then
        NGINX_BIN=/usr/sbin/nginx
    else
        die "'$NGINX_BIN' not found (apt-get install -y nginx)"
    fi
fi
for file in "$LUA_SCRIPT" "$NGINX_TEMPLATE" "$HOLD_SCRIPT" "$UPDATE_DOCS"; do
    [[ -r $file ]] || die "missing $file"
done
if [[ $WRITE_DOCS == 1 ]]; then
    [[ -w $DOCS_FILE ]] || die "DOCS_FILE=$DOCS_FILE is not a writable file (WRITE_DOCS=0 skips writing)"
fi

# Phase 5 holds $HOLD_CONNECTIONS connections: the client, llm-proxy and the
# mock inherit this shell's limit; nginx gets it from worker_rlimit_nofile.
# nginx counts upstream connections (up to one per request in flight) in
# worker_connections too; when short it closes idle clients ("reusing").
NOFILE_NEEDED=$((HOLD_CONNECTIONS + 4096))
NGINX_WORKER_CONNECTIONS=$((HOLD_CONNECTIONS + 2048))
((NGINX_WORKER_CONNECTIONS >= 4096)) || NGINX_WORKER_CONNECTIONS=4096
if (($(ulimit -n) < NOFILE_NEEDED)); then
    ulimit -n "$NOFILE_NEEDED" 2>/dev/null ||
        die "HOLD_CONNECTIONS=$HOLD_CONNECTIONS needs ulimit -n >= $NOFILE_NEEDED, the hard limit is $(ulimit -Hn) (lower HOLD_CONNECTIONS or raise the limit)"
fi

NPROC=$(nproc)
((SERVER_CORE < NPROC && LOAD_CORE < NPROC)) ||
    die "need cores $SERVER_CORE and $LOAD_CORE, this machine has $NPROC"
CLK_TCK=$(getconf CLK_TCK)
# Per-thread run time in ns (first field of /proc/PID/task/TID/schedstat).
HAVE_SCHEDSTAT=0
[[ -r /proc/self/schedstat ]] && HAVE_SCHEDSTAT=1

# The binary: an explicit LLM_PROXY_BIN is taken relative to the caller's
# directory; the default is relative to the repository root.
if [[ -n ${LLM_PROXY_BIN:-} ]]; then
    [[ $BIN == /* ]] || BIN=$ORIG_PWD/$BIN
    [[ -x $BIN ]] || die "LLM_PROXY_BIN=$BIN is not an executable file"
else
    BIN=$REPO_ROOT/$DEFAULT_BIN
    if [[ ! -x $BIN ]]; then
        log "$BIN not found, running cargo build --release"
        (cd "$REPO_ROOT" && cargo build --release) || die "cargo build --release failed"
        [[ -x $BIN ]] || die "cargo build --release did not produce $BIN"
    fi
fi

port_in_use() {
    # curl exit 7 = connection refused, i.e. nothing listens there.
    local rc=0
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$1/" || rc=$?
    ((rc != 7))
}
PORT_VARS=(MOCK_PORT PROXY_PORT NGINX_PORT)
((ROUTED == 1)) && PORT_VARS+=(ROUTED_PORT)
((OBSERVABILITY == 1)) && PORT_VARS+=(QUIET_PORT CACHED_PORT)
((SCALING == 1)) && PORT_VARS+=(SCALE_MOCK_PORT SCALE1_PORT SCALE2_PORT)
for gw in "${GATEWAY_LIST[@]}"; do
    case $gw in
    litellm) PORT_VARS+=(LITELLM_PORT) ;;
    portkey) PORT_VARS+=(PORTKEY_PORT) ;;
    esac
done
for var in "${PORT_VARS[@]}"; do
    if port_in_use "${!var}"; then
        die "$var=${!var} is already in use on 127.0.0.1 (set $var to a free port)"
    fi
done
declare -A SEEN_PORT=()
for var in "${PORT_VARS[@]}"; do
    [[ -z ${SEEN_PORT[${!var}]:-} ]] || die "$var and ${SEEN_PORT[${!var}]} are the same port (${!var})"
    SEEN_PORT[${!var}]=$var
done

# ------------------------------------------- other gateways: installation --

# Installed before anything starts, so that the measurements themselves
# never leave the loopback interface.  A gateway that cannot be installed
# or has no HTTP server is skipped with a note in the report.
declare -A GW_SKIP GW_VERSION GW_AUTH
gw_label() {
    case $1 in
    litellm) echo LiteLLM ;;
    portkey) echo "Portkey gateway" ;;
    tensorzero) echo TensorZero ;;
    esac
}

# pip_venv NAME SPEC: a venv under $GATEWAY_CACHE with SPEC installed
# (re-installed when SPEC changes).
pip_venv() {
    local name=$1 spec=$2 venv=$GATEWAY_CACHE/$1-venv
    if [[ -x $venv/bin/python && $(cat "$venv/.loadtest-spec" 2>/dev/null) == "$spec" ]]; then
        return 0
    fi
    log "installing $spec into $venv (pip; log in $GATEWAY_CACHE/$name-install.log)"
    rm -rf -- "$venv"
    python3 -m venv "$venv" >"$GATEWAY_CACHE/$name-install.log" 2>&1 &&
        "$venv/bin/pip" install "$spec" >>"$GATEWAY_CACHE/$name-install.log" 2>&1 ||
        return 1
    echo "$spec" >"$venv/.loadtest-spec"
}

install_gateway() {
    local gw=$1 venv=$GATEWAY_CACHE/$1-venv dir
    case $gw in
    litellm)
        if ! pip_venv litellm "$LITELLM_SPEC"; then
            GW_SKIP[$gw]="pip install '$LITELLM_SPEC' failed: $(tail -n 1 "$GATEWAY_CACHE/litellm-install.log")"
            return
        fi
        GW_VERSION[$gw]=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("litellm"))')
        GW_AUTH[$gw]="master key (checked without a database)"
        ;;
    portkey)
        if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
            GW_SKIP[$gw]="node/npm not found (apt-get install -y nodejs npm)"
            return
        fi
        dir=$GATEWAY_CACHE/portkey
        if [[ ! -f $dir/node_modules/@portkey-ai/gateway/build/start-server.js ||
            $(cat "$dir/.loadtest-spec" 2>/dev/null) != "$PORTKEY_SPEC" ]]; then
            log "installing $PORTKEY_SPEC into $dir (npm; log in $GATEWAY_CACHE/portkey-install.log)"
            mkdir -p "$dir"
            if ! npm install --prefix "$dir" --no-audit --no-fund "$PORTKEY_SPEC" >"$GATEWAY_CACHE/portkey-install.log" 2>&1; then
                GW_SKIP[$gw]="npm install $PORTKEY_SPEC failed: $(tail -n 1 "$GATEWAY_CACHE/portkey-install.log")"
                return
            fi
            echo "$PORTKEY_SPEC" >"$dir/.loadtest-spec"
        fi
        GW_VERSION[$gw]=$(jq -r .version "$dir/node_modules/@portkey-ai/gateway/package.json")
        GW_AUTH[$gw]="none (the client sends the provider key; routing headers)"
        ;;
    tensorzero)
        if ! pip_venv tensorzero "$TENSORZERO_SPEC"; then
            GW_SKIP[$gw]="pip install '$TENSORZERO_SPEC' failed: $(tail -n 1 "$GATEWAY_CACHE/tensorzero-install.log")"
            return
        fi
        GW_VERSION[$gw]=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("tensorzero"))')
        if ! "$venv/bin/python" -c 'import tensorzero, sys; sys.exit(0 if hasattr(tensorzero, "_start_http_gateway") else 1)' 2>/dev/null; then
            GW_SKIP[$gw]="the tensorzero ${GW_VERSION[$gw]} package from PyPI is only a client here (no HTTP gateway in it); TensorZero's standalone gateway ships as a Docker image or a build from source, which this machine cannot fetch"
            return
        fi
        GW_AUTH[$gw]="none (gateway auth needs Postgres)"
        ;;
    esac
}

if ((${#GATEWAY_LIST[@]} > 0)); then
    mkdir -p "$GATEWAY_CACHE"
    for gw in "${GATEWAY_LIST[@]}"; do
        install_gateway "$gw"
        if [[ -n ${GW_SKIP[$gw]:-} ]]; then
            log "WARNING: $(gw_label "$gw") will be skipped: ${GW_SKIP[$gw]}"
        else
            log "$(gw_label "$gw") ${GW_VERSION[$gw]} ready in $GATEWAY_CACHE"
        fi
    done
fi

if pgrep -x rustc >/dev/null 2>&1 || pgrep -x cargo >/dev/null 2>&1; then
    log "WARNING: cargo/rustc is running on this machine; numbers will be noisy"
    NOTES+=("cargo/rustc was running when the run started: numbers are noisy")
fi

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-bench.XXXXXX")
mkdir -p "$WORKDIR/run"

# ---------------------------------------------------------------- helpers --

# cpu_read PID...: "NS UTICKS STICKS": run time of all threads of the given
# processes in ns (schedstat; from the ticks if unavailable) and utime,
# stime (fields 14 and 15 of /proc/PID/stat, clock ticks, all threads
# including exited ones).
cpu_read() {
    local ns=0 user=0 sys=0 pid stat task run
    local -a f
    for pid in "$@"; do
        read -r stat <"/proc/$pid/stat" || die "cannot read /proc/$pid/stat (process gone?)"
        stat=${stat##*) } # drop "pid (comm) "; f[0] is then field 3
        read -r -a f <<<"$stat"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
        if ((HAVE_SCHEDSTAT)); then
            for task in /proc/"$pid"/task/*/schedstat; do
                run=0
                read -r run _ <"$task" 2>/dev/null || true
                ns=$((ns + run))
            done
        fi
    done
    ((HAVE_SCHEDSTAT)) || ns=$(((user + sys) * 1000000000 / CLK_TCK))
    echo "$ns $user $sys"
}

# cpu_delta "BEFORE" "AFTER" NPROCS: "NS UTICKS STICKS" spent in between.
# utime + stime are the same run time, scaled and cut to whole ticks (10 ms);
# the ns figure is used unless the ticks show more (a thread that exited
# during the run takes its schedstat with it).
cpu_delta() {
    local b_ns b_u b_s a_ns a_u a_s nprocs=$3 d_ns d_ticks tick_ns
    read -r b_ns b_u b_s <<<"$1"
    read -r a_ns a_u a_s <<<"$2"
    d_ns=$((a_ns - b_ns))
    d_ticks=$((a_u - b_u + a_s - b_s))
    tick_ns=$((d_ticks * 1000000000 / CLK_TCK))
    if ((tick_ns > d_ns + d_ns / 20 + 3 * nprocs * 1000000000 / CLK_TCK)); then
        log "  (schedstat shows less run time than utime+stime, a thread exited? using utime+stime)"
        d_ns=$tick_ns
    fi
    echo "$d_ns $((a_u - b_u)) $((a_s - b_s))"
}

# core_stat CORE|all: "BUSY TOTAL" jiffies of that core (or all) from /proc/stat.
core_stat() {
    local want=cpu$1 name rest
    local -a v
    [[ $1 == all ]] && want=cpu
    while read -r name rest; do
        if [[ $name == "$want" ]]; then
            read -r -a v <<<"$rest"
            # user nice system idle iowait irq softirq steal
            echo "$((v[0] + v[1] + v[2] + v[5] + v[6] + v[7])) $((v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7]))"
            return
        fi
    done </proc/stat
    echo "0 0"
}
# busy_pct "BEFORE" "AFTER": % busy in between.
busy_pct() {
    local bb bt ab at
    read -r bb bt <<<"$1"
    read -r ab at <<<"$2"
    awk -v b=$((ab - bb)) -v t=$((at - bt)) 'BEGIN { if (t > 0) printf "%.0f", 100 * b / t; else print "nan" }'
}
# child_ticks: utime + stime of this shell's reaped children (cutime + cstime,
# fields 16 and 17), i.e. includes wrk once it was waited for.
child_ticks() {
    local stat
    local -a f
    read -r stat <"/proc/$$/stat"
    stat=${stat##*) }
    read -r -a f <<<"$stat"
    echo $((f[13] + f[14]))
}

# http_code TARGET [KEY [OUTFILE]]: HTTP status of one chat request to a
# target ("000" = no answer).
http_code() {
    local target=$1 key=${2:-${T_KEY[$1]}} out=${3:-/dev/null} h
    local -a hdr=()
    while IFS= read -r h; do [[ -n $h ]] && hdr+=(-H "$h"); done <<<"${T_HDRS[$target]:-}"
    curl -s -o "$out" --max-time 10 -w '%{http_code}' \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $key" "${hdr[@]}" \
        --data "${T_BODY[$target]}" "${T_BASE[$target]}${T_PATH[$target]}" || true
}

# wait_ready NAME PID URL [HEADER]: poll URL until it answers 2xx.
wait_ready() {
    local name=$1 pid=$2 url=$3 header=${4:-X-Bench: 1} code i
    for ((i = 0; i < 300; i++)); do
        is_running "$pid" || die "$name (pid $pid) exited during start-up"
        code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' -H "$header" "$url" || true)
        if [[ $code == 2?? ]]; then
            return 0
        fi
        sleep 0.1
    done
    die "$name not ready after 30s (last status from $url: ${code:-none})"
}

check_alive() {
    is_running "$MOCK_PID" || die "mock upstream (pid $MOCK_PID) died"
    is_running "$PROXY_PID" || die "llm-proxy (pid $PROXY_PID) died"
    if [[ -n $ROUTED_PID ]]; then
        is_running "$ROUTED_PID" || die "llm-proxy, routed (pid $ROUTED_PID) died"
    fi
    if [[ -n $QUIET_PID ]]; then
        is_running "$QUIET_PID" || die "llm-proxy, quiet (pid $QUIET_PID) died"
        is_running "$CACHED_PID" || die "llm-proxy, cached (pid $CACHED_PID) died"
    fi
    is_running "$NGINX_PID" || die "nginx master (pid $NGINX_PID) died"
    local pid
    for pid in "${NGINX_WORKERS[@]}" "${EXTRA_PIDS[@]}"; do
        is_running "$pid" || die "process $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || echo gone)) died"
    done
}

# wrk_field FILE KEY: value of KEY=... on the WRK_RESULT line.
wrk_field() {
    local line
    line=$(grep -m1 '^WRK_RESULT ' "$1") || die "no WRK_RESULT line in $1 (wrk failed?): $(tail -n 5 "$1")"
    awk -v k="$2" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' <<<"$line"
}

# run_wrk CPUS CONNS DURATION TARGET OUTFILE [THREADS]
run_wrk() {
    local cpus=$1 conns=$2 dur=$3 target=$4 out=$5 threads=${6:-1} rc=0 h
    local body=${T_BODY[$target]}
    local -a hdr=()
    [[ $body == "$CHAT_BODY" ]] && body=""
    while IFS= read -r h; do [[ -n $h ]] && hdr+=("$h"); done <<<"${T_HDRS[$target]:-}"
    # In the background so that a signal to this script is handled at once
    # (bash runs traps only between foreground commands); cleanup kills it.
    taskset -c "$cpus" wrk -t"$threads" -c"$conns" -d"$dur" --latency -s "$LUA_SCRIPT" \
        "${T_BASE[$target]}${T_PATH[$target]}" -- "${T_KEY[$target]}" "$body" "${hdr[@]}" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    ((rc == 0)) || die "wrk exited with status $rc against $target: $(tail -n 5 "$out")"
}

# check_wrk LABEL FILE: record a failure if the run had errors or no requests.
check_wrk() {
    local label=$1 file=$2 requests errors non2xx socket timeouts bad
    requests=$(wrk_field "$file" requests)
    errors=$(wrk_field "$file" errors)
    non2xx=$(wrk_field "$file" non2xx)
    socket=$(wrk_field "$file" socket_errors)
    timeouts=$(wrk_field "$file" timeouts)
    bad=$(wrk_field "$file" first_bad_status)
    if ((requests == 0)); then
        FAILURES+=("$label: no request completed")
    fi
    if ((errors != 0)); then
        FAILURES+=("$label: $errors errors (non-2xx=$non2xx, first bad status=$bad, socket errors=$socket, timeouts=$timeouts) out of $requests requests")
    fi
    if ((requests == 0 || errors != 0)); then
        log "FAILED: ${FAILURES[-1]}"
    fi
}

# record PHASE TARGET METRIC VALUE / median PHASE TARGET METRIC
record() { echo "$4" >>"$WORKDIR/res.$1.$2.$3"; }
median() {
    [[ -f $WORKDIR/res.$1.$2.$3 ]] || {
        echo nan
        return
    }
    grep -v '^nan$' "$WORKDIR/res.$1.$2.$3" | sort -g |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# fmt VALUE DECIMALS
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "nan" || v == "") print "n/a"; else printf "%.*f\n", d, v }'; }
# fmt_int VALUE: integer with thousands separators.
fmt_int() {
    awk -v v="$1" 'BEGIN {
        if (v == "nan" || v == "") { print "n/a"; exit }
        s = sprintf("%.0f", v); neg = (substr(s, 1, 1) == "-"); if (neg) s = substr(s, 2)
        out = ""; while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        print (neg ? "-" : "") s out }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
diff_us() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan") print "n/a"; else printf "%+d\n", a - b }'; }
# le A B: A <= B (numbers; false if either is n/a)
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a != "nan" && a != "n/a" && b != "nan" && b != "n/a" && a + 0 <= b + 0) }'; }

# rss_kb PID...: sum of VmRSS (kB) over the given processes.
rss_kb() {
    local total=0 pid kb
    for pid in "$@"; do
        kb=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) ||
            die "cannot read /proc/$pid/status (process gone?)"
        total=$((total + ${kb:-0}))
    done
    echo "$total"
}
mb() { awk -v k="$1" 'BEGIN { if (k == "nan" || k == "") print "n/a"; else printf "%.1f\n", k / 1024 }'; }

# run_bench CPUS TARGET OUTFILE ARGS...: `llm-proxy benchmark` against a
# target, JSON report in OUTFILE.
run_bench() {
    local cpus=$1 target=$2 out=$3 rc=0 h
    shift 3
    local -a hdr=()
    while IFS= read -r h; do [[ -n $h ]] && hdr+=(-H "$h"); done <<<"${T_HDRS[$target]:-}"
    (
        cd "$WORKDIR/run"
        exec taskset -c "$cpus" "$BIN" benchmark --base-url "${T_BASE[$target]}" --endpoint "${T_PATH[$target]}" \
            --token "${T_KEY[$target]}" "${hdr[@]}" --output json "$@"
    ) >"$out" 2>"$out.err" &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    ((rc == 0)) || die "llm-proxy benchmark exited with status $rc against $target: $(tail -n 5 "$out.err")"
}

# run_stream CORE TARGET REQUESTS OUTFILE: paced SSE stream, one connection.
run_stream() {
    run_bench "$1" "$2" "$4" --json "$STREAM_BODY" \
        -H "x-mock-stream-chunks: $STREAM_CHUNKS" -H "x-mock-chunk-interval-ms: $STREAM_INTERVAL_MS" -r "$3" -c 1
}

# stream_fields FILE: "requests errors complete events ttfb_p50 fe_p50 fe_p99 gap_p50"
stream_fields() {
    jq -r '[.requests, .errors_total, (.streams.complete // 0), (.streams.events // 0),
            (.ttfb_us.p50 // "nan"), (.streams.first_event_us.p50 // "nan"),
            (.streams.first_event_us.p99 // "nan"), (.streams.mean_gap_us.p50 // "nan")] | @tsv' "$1" ||
        die "cannot read the benchmark JSON in $1: $(head -c 300 "$1")"
}

# check_stream LABEL FILE REQUESTS: record a failure unless every stream completed.
check_stream() {
    local label=$1 file=$2 n=$3 requests errors complete rest
    read -r requests errors complete rest <<<"$(stream_fields "$file")"
    if ((requests != n || errors != 0 || complete != n)); then
        FAILURES+=("$label: $requests requests, $errors errors, $complete complete streams (expected $n)")
        log "FAILED: ${FAILURES[-1]}"
    fi
}

# bench_fields FILE: "requests ok errors rps elapsed_s p50 p99" of an
# `llm-proxy benchmark --output json` report (ok = 2xx responses).
bench_fields() {
    jq -r '[.requests, ([(.status // {}) | to_entries[] | select(.key | test("^2")) | .value] | add // 0),
            (.errors_total + ([(.status // {}) | to_entries[] | select(.key | test("^2") | not) | .value] | add // 0)),
            .requests_per_sec, .elapsed_s, (.latency_us.p50 // "nan"), (.latency_us.p99 // "nan")] | @tsv' "$1" ||
        die "cannot read the benchmark JSON in $1: $(head -c 300 "$1")"
}

# set_target NAME DISPLAY BASE PATH KEY BODY PIDS [HEADERS]
set_target() {
    T_NAME[$1]=$2
    T_BASE[$1]=$3
    T_PATH[$1]=$4
    T_KEY[$1]=$5
    T_BODY[$1]=$6
    T_PIDS[$1]=$7
    T_HDRS[$1]=${8:-}
}

# measure_tp PHASE TARGET ROUND CPUS THREADS CONNS LABEL: one closed-loop
# wrk run with CPU accounting; records the metrics, prints one line.
measure_tp() {
    local phase=$1 target=$2 round=$3 cpus=$4 threads=$5 conns=$6 label=$7
    local out=$WORKDIR/$phase.$round.$target.txt
    local -a pids mock_pids
    read -r -a pids <<<"${T_PIDS[$target]}"
    read -r -a mock_pids <<<"${T_MOCK[$target]:-$MOCK_PID}"
    local before after m_before m_after c_before c_after l_before l_after a_before a_after
    local d_ns d_u d_s m_ns requests rps errors p50 p99 dur_us cpu_us usr_us sys_us cpu_pct mock_pct wrk_pct load_pct all_pct
    before=$(cpu_read "${pids[@]}")
    m_before=$(cpu_read "${mock_pids[@]}")
    c_before=$(child_ticks)
    l_before=$(core_stat "$LOAD_CORE")
    a_before=$(core_stat all)
    run_wrk "$cpus" "$conns" "$DURATION" "$target" "$out" "$threads"
    a_after=$(core_stat all)
    l_after=$(core_stat "$LOAD_CORE")
    c_after=$(child_ticks)
    m_after=$(cpu_read "${mock_pids[@]}")
    after=$(cpu_read "${pids[@]}")
    check_wrk "$label round $round $target" "$out"
    check_alive
    read -r d_ns d_u d_s <<<"$(cpu_delta "$before" "$after" "${#pids[@]}")"
    read -r m_ns _ <<<"$(cpu_delta "$m_before" "$m_after" "${#mock_pids[@]}")"
    requests=$(wrk_field "$out" requests)
    rps=$(wrk_field "$out" rps)
    errors=$(wrk_field "$out" errors)
    p50=$(wrk_field "$out" p50_us)
    p99=$(wrk_field "$out" p99_us)
    dur_us=$(wrk_field "$out" duration_us)
    read -r cpu_us usr_us sys_us cpu_pct mock_pct wrk_pct <<<"$(awk -v ns="$d_ns" -v u="$d_u" -v s="$d_s" -v n="$requests" \
        -v d="$dur_us" -v m="$m_ns" -v w=$((c_after - c_before)) -v hz="$CLK_TCK" 'BEGIN {
            c = (n > 0) ? ns / 1000 / n : "nan"
            uf = (u + s > 0) ? u / (u + s) : 0
            if (c == "nan") printf "nan nan nan "; else printf "%.2f %.2f %.2f ", c, c * uf, c * (1 - uf)
            if (d > 0) printf "%.0f %.0f %.0f\n", 100 * ns / 1000 / d, 100 * m / 1000 / d, 100 * w / hz / (d / 1e6)
            else print "nan nan nan" }')"
    load_pct=$(busy_pct "$l_before" "$l_after")
    all_pct=$(busy_pct "$a_before" "$a_after")
    local metric
    for metric in rps cpu_us usr_us sys_us cpu_pct mock_pct wrk_pct load_pct all_pct p50 p99; do
        record "$phase" "$target" "$metric" "${!metric}"
    done
    printf '%-5s %-10s %9s %9s %6s %7s %7s %8s %6s %6s %5s %5s %5s %5s %5s\n' \
        "$round" "$target" "$requests" "$(fmt "$rps" 0)" "$errors" "$p50" "$p99" "$cpu_us" "$usr_us" "$sys_us" \
        "$cpu_pct" "$wrk_pct" "$mock_pct" "$load_pct" "$all_pct"
}
tp_header() {
    printf '\n%-5s %-10s %9s %9s %6s %7s %7s %8s %6s %6s %5s %5s %5s %5s %5s\n' \
        round target requests req/s errors p50_us p99_us cpu_us/rq usr_us sys_us cpu% wrk% mock% load% all%
}

# measure_rate PHASE TARGET ROUND RATE LABEL: one open-loop run at RATE
# req/s for DURATION (generator on LOAD_CORE) with CPU accounting.
measure_rate() {
    local phase=$1 target=$2 round=$3 rate=$4 label=$5
    local out=$WORKDIR/$phase.$round.$target.json
    local -a pids
    read -r -a pids <<<"${T_PIDS[$target]}"
    local before after l_before l_after c_before c_after d_ns requests ok errors rps elapsed p50 p99
    local cpu_us cpu_pct gen_pct achieved load_pct
    before=$(cpu_read "${pids[@]}")
    c_before=$(child_ticks)
    l_before=$(core_stat "$LOAD_CORE")
    run_bench "$LOAD_CORE" "$target" "$out" --json "${T_BODY[$target]}" --rate "$rate" \
        --duration "${DURATION_S}s" -c "$RATE_CONNECTIONS"
    l_after=$(core_stat "$LOAD_CORE")
    c_after=$(child_ticks)
    after=$(cpu_read "${pids[@]}")
    check_alive
    read -r requests ok errors rps elapsed p50 p99 <<<"$(bench_fields "$out")"
    if ((ok == 0 || errors != 0)); then
        FAILURES+=("$label round $round $target: $requests requests, $ok 2xx, $errors errors or non-2xx")
        log "FAILED: ${FAILURES[-1]}"
    fi
    read -r d_ns _ <<<"$(cpu_delta "$before" "$after" "${#pids[@]}")"
    read -r cpu_us cpu_pct gen_pct achieved <<<"$(awk -v ns="$d_ns" -v n="$ok" -v e="$elapsed" -v rps="$rps" -v r="$rate" \
        -v w=$((c_after - c_before)) -v hz="$CLK_TCK" 'BEGIN {
            if (n > 0) printf "%.2f ", ns / 1000 / n; else printf "nan "
            if (e > 0) printf "%.1f %.0f ", 100 * ns / 1e9 / e, 100 * w / hz / e; else printf "nan nan "
            printf "%.3f\n", rps / r }')"
    load_pct=$(busy_pct "$l_before" "$l_after")
    local metric
    for metric in rps achieved cpu_us cpu_pct gen_pct load_pct p50 p99; do
        record "$phase" "$target" "$metric" "${!metric}"
    done
    printf '%-5s %-10s %8s %9s %9s %6s %9s %9s %9s %6s %5s %5s\n' "$round" "$target" "$rate" "$(fmt "$rps" 0)" \
        "$ok" "$errors" "$(fmt "$p50" 0)" "$(fmt "$p99" 0)" "$cpu_us" "$cpu_pct" "$gen_pct" "$load_pct"
}
rate_header() {
    printf '\n%-5s %-10s %8s %9s %9s %6s %9s %9s %9s %6s %5s %5s\n' \
        round target offered achieved ok errors p50_us p99_us cpu_us/rq cpu% gen% load%
}

# keep_up_note PHASE TARGET RATE: empty if the median achieved rate is within
# ACHIEVED_MIN of the offered one, else who could not keep up.
keep_up_note() {
    local phase=$1 target=$2 rate=$3 achieved load cpu
    achieved=$(median "$phase" "$target" achieved)
    load=$(median "$phase" "$target" load_pct)
    cpu=$(median "$phase" "$target" cpu_pct)
    if le "$ACHIEVED_MIN" "$achieved"; then
        return 0
    fi
    if le "$BUSY_SATURATED" "$load"; then
        echo "${T_NAME[$target]} at $rate req/s: only $(fmt_int "$(awk -v a="$achieved" -v r="$rate" 'BEGIN { print a * r }')") req/s achieved; the load core was ${load}% busy: the load generator could not keep up"
    elif le "$BUSY_SATURATED" "$cpu"; then
        echo "${T_NAME[$target]} at $rate req/s: only $(fmt_int "$(awk -v a="$achieved" -v r="$rate" 'BEGIN { print a * r }')") req/s achieved; the server used ${cpu}% of its core: the server could not keep up"
    else
        echo "${T_NAME[$target]} at $rate req/s: only $(fmt_int "$(awk -v a="$achieved" -v r="$rate" 'BEGIN { print a * r }')") req/s achieved (load core ${load}% busy, server ${cpu}% CPU)"
    fi
}

# ------------------------------------------------------------- start-up ---

read -r -a mock_extra <<<"$MOCK_ARGS"
read -r -a proxy_extra <<<"$PROXY_ARGS"

log "binary: $BIN"
log "work dir: $WORKDIR"

# start_mock NAME PORT WORKERS CPUS: sets STARTED_PID.
start_mock() {
    local name=$1 port=$2 workers=$3 cpus=$4
    # Both llm-proxy processes run in $WORKDIR: the server reads ./.env and
    # keeps its data directory relative to the working directory, and a
    # developer's .env must neither change the benchmark nor get a data/ dir.
    (
        cd "$WORKDIR/run"
        exec taskset -c "$cpus" "$BIN" mock-upstream --addr "127.0.0.1:$port" --workers "$workers" \
            --api-key "$UPSTREAM_KEY" "${mock_extra[@]}"
    ) >"$WORKDIR/$name.log" 2>&1 &
    STARTED_PID=$!
}

# start_proxy NAME PORT WORKERS CPUS PIN UPSTREAM_PORT [VAR=VALUE...]: sets
# STARTED_PID; the assignments are added to the server's environment.
start_proxy() {
    local name=$1 port=$2 workers=$3 cpus=$4 pin=$5 upstream=$6
    local -a settings=("${@:7}")
    local -a pin_flag=()
    ((pin)) && pin_flag=(--pin-cores)
    mkdir -p "$WORKDIR/$name"
    (
        cd "$WORKDIR/run"
        # Settings that could come from the caller's environment and change
        # what is measured; the command line below says it all.
        unset LISTEN_ADDR DATABASE_PATH API_CONFIG_PATH WORKERS UPSTREAM_CA_FILE \
            ENCRYPTION_KEY REQUIRE_ENCRYPTION_KEY OPENAI_API_KEY
        export MANAGEMENT_TOKEN
        export OPENAI_API_URL="http://127.0.0.1:$upstream"
        exec env "${settings[@]}" taskset -c "$cpus" "$BIN" server --addr "127.0.0.1:$port" \
            --db "$WORKDIR/$name/data" --workers "$workers" "${pin_flag[@]}" "${proxy_extra[@]}"
    ) >"$WORKDIR/$name.log" 2>&1 &
    STARTED_PID=$!
}

# The proxy authenticates clients against its key store: create a project
# holding the upstream key and import the client key into it (no request
# limit, so no quota lease is taken on the measured path).
manage_post() {
    local port=$1 path=$2 body=$3 out=$4 code
    code=$(curl -s -o "$out" --max-time 10 -w '%{http_code}' \
        -H "Authorization: Bearer $MANAGEMENT_TOKEN" -H 'Content-Type: application/json' \
        --data "$body" "http://127.0.0.1:$port$path" || true)
    [[ $code == 2?? ]] || die "POST $path on port $port answered ${code:-nothing}: $(head -c 300 "$out" 2>/dev/null)"
}
provision_keys() {
    local name=$1 port=$2 project_id
    manage_post "$port" /manage/projects "{\"name\":\"bench\",\"openai_api_key\":\"$UPSTREAM_KEY\"}" "$WORKDIR/$name.project.json"
    project_id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' "$WORKDIR/$name.project.json")
    [[ -n $project_id ]] || die "no project id in $(head -c 300 "$WORKDIR/$name.project.json")"
    manage_post "$port" /manage/tokens "{\"project_id\":\"$project_id\",\"token\":\"$CLIENT_KEY\",\"alias\":\"bench\"}" \
        "$WORKDIR/$name.token.json"
}

log "starting mock upstream on 127.0.0.1:$MOCK_PORT (core $LOAD_CORE)"
start_mock mock "$MOCK_PORT" 1 "$LOAD_CORE"
MOCK_PID=$STARTED_PID
wait_ready "mock upstream" "$MOCK_PID" "http://127.0.0.1:$MOCK_PORT/v1/models" \
    "Authorization: Bearer $UPSTREAM_KEY"

# --pin-cores pins worker i to core i, so only pass it when those are our cores.
pin_main=0
((SERVER_CORE == 0)) && pin_main=1
log "starting llm-proxy on 127.0.0.1:$PROXY_PORT (core $SERVER_CORE, 1 worker)"
start_proxy proxy "$PROXY_PORT" 1 "$SERVER_CORE" "$pin_main" "$MOCK_PORT"
PROXY_PID=$STARTED_PID
wait_ready "llm-proxy" "$PROXY_PID" "http://127.0.0.1:$PROXY_PORT/health"
log "creating the benchmark project and client key through the management API"
provision_keys proxy "$PROXY_PORT"

# The routed target: a second server, started and pinned like the first,
# with one model registered through the LiteLLM-style API (its deployment
# points at the same mock, with the upstream key) and a key from
# /key/generate.  That key has no project, so it can only use registered
# models: every request it makes goes through the routed path.
if ((ROUTED == 1)); then
    log "starting llm-proxy (routed) on 127.0.0.1:$ROUTED_PORT (core $SERVER_CORE, 1 worker)"
    start_proxy routed "$ROUTED_PORT" 1 "$SERVER_CORE" "$pin_main" "$MOCK_PORT"
    ROUTED_PID=$STARTED_PID
    wait_ready "llm-proxy (routed)" "$ROUTED_PID" "http://127.0.0.1:$ROUTED_PORT/health"
    log "registering model $ROUTED_MODEL and generating a key through the LiteLLM-style API"
    manage_post "$ROUTED_PORT" /model/new "{\"model_name\":\"$ROUTED_MODEL\",\"litellm_params\":{\"model\":\"openai/$ROUTED_UPSTREAM_MODEL\",\"api_base\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"api_key\":\"$UPSTREAM_KEY\"},\"model_info\":{\"input_cost_per_token\":$ROUTED_INPUT_COST,\"output_cost_per_token\":$ROUTED_OUTPUT_COST}}" \
        "$WORKDIR/routed.model.json"
    manage_post "$ROUTED_PORT" /key/generate '{}' "$WORKDIR/routed.key.json"
    ROUTED_KEY=$(jq -r '.key // empty' "$WORKDIR/routed.key.json")
    [[ -n $ROUTED_KEY ]] || die "no key in the answer of /key/generate: $(head -c 300 "$WORKDIR/routed.key.json")"
fi

# The observability targets: the same pass-through as "proxy", once with
# events and metrics off, once answered from the response cache.
if ((OBSERVABILITY == 1)); then
    log "starting llm-proxy (quiet: events and metrics off) on 127.0.0.1:$QUIET_PORT (core $SERVER_CORE, 1 worker)"
    start_proxy quiet "$QUIET_PORT" 1 "$SERVER_CORE" "$pin_main" "$MOCK_PORT" EVENT_LOG=false METRICS_ENABLED=false
    QUIET_PID=$STARTED_PID
    wait_ready "llm-proxy (quiet)" "$QUIET_PID" "http://127.0.0.1:$QUIET_PORT/health"
    provision_keys quiet "$QUIET_PORT"
    log "starting llm-proxy (cached) on 127.0.0.1:$CACHED_PORT (core $SERVER_CORE, 1 worker)"
    start_proxy cached "$CACHED_PORT" 1 "$SERVER_CORE" "$pin_main" "$MOCK_PORT"
    CACHED_PID=$STARTED_PID
    wait_ready "llm-proxy (cached)" "$CACHED_PID" "http://127.0.0.1:$CACHED_PORT/health"
    provision_keys cached "$CACHED_PORT"
fi

cpu_mask=1
for ((i = 0; i < SERVER_CORE; i++)); do cpu_mask+=0; done
sed -e "s|@WORKDIR@|$WORKDIR|g" \
    -e "s|@NGINX_PORT@|$NGINX_PORT|g" \
    -e "s|@MOCK_PORT@|$MOCK_PORT|g" \
    -e "s|@CPU_MASK@|$cpu_mask|g" \
    -e "s|@CLIENT_KEY@|$CLIENT_KEY|g" \
    -e "s|@UPSTREAM_KEY@|$UPSTREAM_KEY|g" \
    -e "s|@WORKER_CONNECTIONS@|$NGINX_WORKER_CONNECTIONS|g" \
    -e "s|@NOFILE@|$NOFILE_NEEDED|g" \
    "$NGINX_TEMPLATE" >"$WORKDIR/nginx.conf"
nginx_cmd=("$NGINX_BIN" -e "$WORKDIR/nginx-error.log" -p "$WORKDIR" -c "$WORKDIR/nginx.conf")
"${nginx_cmd[@]}" -t >"$WORKDIR/nginx-test.log" 2>&1 ||
    die "nginx -t rejected the rendered config: $(cat "$WORKDIR/nginx-test.log")"
log "starting nginx on 127.0.0.1:$NGINX_PORT (core $SERVER_CORE, 1 worker)"
taskset -c "$SERVER_CORE" "${nginx_cmd[@]}" >"$WORKDIR/nginx.out" 2>&1 &
NGINX_PID=$!
wait_ready "nginx" "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/v1/models" \
    "Authorization: Bearer $CLIENT_KEY"
mapfile -t NGINX_WORKERS < <(pgrep -P "$NGINX_PID")
((${#NGINX_WORKERS[@]} >= 1)) || die "nginx master $NGINX_PID has no worker process"

set_target direct "direct to mock" "http://127.0.0.1:$MOCK_PORT" "$CHAT_PATH" "$UPSTREAM_KEY" "$CHAT_BODY" ""
set_target proxy llm-proxy "http://127.0.0.1:$PROXY_PORT" "$CHAT_PATH" "$CLIENT_KEY" "$CHAT_BODY" "$PROXY_PID"
set_target nginx nginx "http://127.0.0.1:$NGINX_PORT" "$CHAT_PATH" "$CLIENT_KEY" "$CHAT_BODY" "$NGINX_PID ${NGINX_WORKERS[*]}"
# The targets of phases 1 and 2, in the order each round runs them.
CPU_TARGETS=(proxy nginx)
if ((ROUTED == 1)); then
    set_target routed "llm-proxy, routed" "http://127.0.0.1:$ROUTED_PORT" "$CHAT_PATH" "$ROUTED_KEY" "$ROUTED_BODY" "$ROUTED_PID"
    CPU_TARGETS+=(routed)
fi
if ((OBSERVABILITY == 1)); then
    set_target quiet "llm-proxy, events and metrics off" "http://127.0.0.1:$QUIET_PORT" "$CHAT_PATH" "$CLIENT_KEY" "$CHAT_BODY" "$QUIET_PID"
    set_target cached "llm-proxy, cache hits" "http://127.0.0.1:$CACHED_PORT" "$CHAT_PATH" "$CLIENT_KEY" "$CACHED_BODY" "$CACHED_PID" "$CACHED_HEADER"
    CPU_TARGETS+=(quiet cached)
fi

# Show where every thread may run.
show_affinity() {
    local name=$1 pid=$2 tid comm cpus
    for tid in /proc/"$pid"/task/*; do
        tid=${tid##*/}
        comm=$(cat "/proc/$pid/task/$tid/comm" 2>/dev/null || echo '?')
        cpus=$(taskset -pc "$tid" 2>/dev/null | sed 's/.*: //')
        log "  $name pid $pid tid $tid ($comm): cpus $cpus"
    done
}
log "CPU affinity:"
show_affinity mock "$MOCK_PID"
show_affinity llm-proxy "$PROXY_PID"
[[ -n $ROUTED_PID ]] && show_affinity llm-proxy-routed "$ROUTED_PID"
[[ -n $QUIET_PID ]] && show_affinity llm-proxy-quiet "$QUIET_PID"
[[ -n $CACHED_PID ]] && show_affinity llm-proxy-cached "$CACHED_PID"
show_affinity nginx-master "$NGINX_PID"
for pid in "${NGINX_WORKERS[@]}"; do show_affinity nginx-worker "$pid"; done

# ----------------------------------------------------------- sanity checks --

log "sanity checks"
code=$(http_code direct "$UPSTREAM_KEY" "$WORKDIR/direct.json")
[[ $code == 200 ]] || die "mock upstream answered $code to a chat request with the upstream key: $(head -c 300 "$WORKDIR/direct.json")"
code=$(http_code direct "$CLIENT_KEY")
if [[ $code == 401 || $code == 403 ]]; then
    log "  mock rejects the client key ($code): the key swap is exercised"
else
    log "  WARNING: mock answered $code to the client key; --api-key is not enforced, key swap not verified"
fi
for target in proxy nginx; do
    code=$(http_code "$target" "$CLIENT_KEY" "$WORKDIR/$target.json")
    [[ $code == 200 ]] || die "$target answered $code to a chat request: $(head -c 300 "$WORKDIR/$target.json")"
    code=$(http_code "$target" wrong-key)
    if [[ $code == 401 || $code == 403 ]]; then
        log "  $target rejects a wrong client key ($code)"
    else
        log "  WARNING: $target answered $code to a wrong client key (expected 401)"
    fi
done
log "  direct response: $(head -c 200 "$WORKDIR/direct.json")"
log "  proxy response:  $(head -c 200 "$WORKDIR/proxy.json")"

# The routed path must do all it is measured for: the mock only takes the
# upstream key (so a 200 means the deployment's key was sent) and names the
# model it was asked for in its answer (so the body was rewritten), and the
# answer's usage must be priced into x-litellm-response-cost.
if ((ROUTED == 1)); then
    code=$(curl -s -D "$WORKDIR/routed.head" -o "$WORKDIR/routed.json" --max-time 10 -w '%{http_code}' \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $ROUTED_KEY" \
        --data "$ROUTED_BODY" "${T_BASE[routed]}${T_PATH[routed]}" || true)
    [[ $code == 200 ]] || die "routed answered $code to a chat request for $ROUTED_MODEL: $(head -c 300 "$WORKDIR/routed.json")"
    model=$(jq -r '.model // empty' "$WORKDIR/routed.json")
    [[ $model == "$ROUTED_UPSTREAM_MODEL" ]] ||
        die "the mock was asked for model '$model' through the routed path, expected '$ROUTED_UPSTREAM_MODEL' (body not rewritten)"
    routed_cost=$(tr -d '\r' <"$WORKDIR/routed.head" | awk 'tolower($1) == "x-litellm-response-cost:" { print $2; exit }')
    [[ -n $routed_cost ]] ||
        die "the routed answer has no x-litellm-response-cost header (usage not accounted); head: $(tr -d '\r' <"$WORKDIR/routed.head" | tr '\n' ' ')"
    read -r prompt_tokens completion_tokens <<<"$(jq -r '[.usage.prompt_tokens // 0, .usage.completion_tokens // 0] | @tsv' "$WORKDIR/routed.json")"
    ROUTED_COST=$(awk -v p="$prompt_tokens" -v c="$completion_tokens" -v ip="$ROUTED_INPUT_COST" -v op="$ROUTED_OUTPUT_COST" \
        'BEGIN { printf "%.12g\n", p * ip + c * op }')
    awk -v a="$routed_cost" -v b="$ROUTED_COST" 'BEGIN { d = a - b; if (d < 0) d = -d; exit !(b > 0 && d <= b * 1e-9) }' ||
        die "x-litellm-response-cost is '$routed_cost', expected $ROUTED_COST for $prompt_tokens prompt + $completion_tokens completion tokens"
    log "  routed: $ROUTED_MODEL answered by $model, x-litellm-response-cost $routed_cost ($prompt_tokens + $completion_tokens tokens)"
    code=$(http_code routed wrong-key)
    if [[ $code == 401 || $code == 403 ]]; then
        log "  routed rejects a wrong client key ($code)"
    else
        log "  WARNING: routed answered $code to a wrong client key (expected 401)"
    fi
fi

# The observability targets must be what they are named: metrics answered
# by "proxy" and not by "quiet", and the cached target's second identical
# request answered from the cache.
if ((OBSERVABILITY == 1)); then
    code=$(http_code quiet "$CLIENT_KEY" "$WORKDIR/quiet.json")
    [[ $code == 200 ]] || die "quiet answered $code to a chat request: $(head -c 300 "$WORKDIR/quiet.json")"
    code=$(curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://127.0.0.1:$PROXY_PORT/metrics" || true)
    [[ $code == 200 ]] || die "llm-proxy answered $code to GET /metrics (metrics should be on)"
    code=$(curl -s -o /dev/null --max-time 10 -w '%{http_code}' "http://127.0.0.1:$QUIET_PORT/metrics" || true)
    [[ $code == 404 ]] || die "quiet answered $code to GET /metrics (metrics should be off)"
    for attempt in first second; do
        code=$(curl -s -D "$WORKDIR/cached.$attempt.head" -o "$WORKDIR/cached.$attempt.json" --max-time 10 -w '%{http_code}' \
            -H 'Content-Type: application/json' -H "Authorization: Bearer $CLIENT_KEY" -H "$CACHED_HEADER" \
            --data "$CACHED_BODY" "${T_BASE[cached]}${T_PATH[cached]}" || true)
        [[ $code == 200 ]] || die "cached answered $code to its $attempt request: $(head -c 300 "$WORKDIR/cached.$attempt.json")"
    done
    cache_status=$(tr -d '\r' <"$WORKDIR/cached.second.head" | awk 'tolower($1) == "x-proxy-cache:" { print tolower($2); exit }')
    [[ $cache_status == hit ]] ||
        die "the cached target's second request was not a cache hit (X-PROXY-CACHE: '${cache_status}'); head: $(tr -d '\r' <"$WORKDIR/cached.second.head" | tr '\n' ' ')"
    cmp -s "$WORKDIR/cached.first.json" "$WORKDIR/cached.second.json" ||
        die "the cache hit's body differs from the stored answer"
    log "  quiet serves with /metrics off; cached answers its second request from the cache"
fi

# Memory before any load (phase 5 reports it next to the later figures).
for target in proxy nginx; do
    read -r -a pids <<<"${T_PIDS[$target]}"
    printf -v "MEM_${target}_start" '%s' "$(rss_kb "${pids[@]}")"
done
RUN_STARTED=$(date +%s)

# ------------------------------------------------ phase 1: throughput/CPU --

echo
echo "== Phase 1: throughput and CPU per request, closed loop =="
echo "   server under test on core $SERVER_CORE; mock + wrk on core $LOAD_CORE;"
echo "   wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS round(s); targets in each round: ${CPU_TARGETS[*]}"
echo "   cpu% = server, wrk% = wrk, mock% = mock (% of one core); load% = core $LOAD_CORE busy, all% = machine busy"

if warmup_on; then
    for target in "${CPU_TARGETS[@]}"; do
        log "warm-up: $target for $WARMUP"
        run_wrk "$LOAD_CORE" "$CONNECTIONS" "$WARMUP" "$target" "$WORKDIR/warmup.$target.txt"
        check_wrk "warm-up $target" "$WORKDIR/warmup.$target.txt"
        check_alive
    done
fi

tp_header
for ((round = 1; round <= ROUNDS; round++)); do
    for target in "${CPU_TARGETS[@]}"; do
        measure_tp tp "$target" "$round" "$LOAD_CORE" 1 "$CONNECTIONS" throughput
    done
done

TP_METRICS=(rps cpu_us usr_us sys_us cpu_pct mock_pct wrk_pct load_pct all_pct p50 p99)
for target in "${CPU_TARGETS[@]}"; do
    for metric in "${TP_METRICS[@]}"; do
        printf -v "TP_${target}_${metric}" '%s' "$(median tp "$target" "$metric")"
    done
done
# shellcheck disable=SC2154 # TP_* are set through printf -v above
{
    echo
    echo "medians over $ROUNDS round(s):"
    for target in "${CPU_TARGETS[@]}"; do
        for metric in rps cpu_us cpu_pct usr_us sys_us p50 p99 load_pct; do
            var=TP_${target}_${metric}
            printf -v "v_$metric" '%s' "${!var}"
        done
        # shellcheck disable=SC2154 # v_* are set through printf -v above
        printf '  %-6s %10s req/s  %8s cpu_us/req (usr %s + sys %s)  %4s%% cpu  p50 %s us  p99 %s us  load core %s%% busy\n' \
            "$target" "$(fmt "$v_rps" 0)" "$(fmt "$v_cpu_us" 2)" "$(fmt "$v_usr_us" 2)" "$(fmt "$v_sys_us" 2)" \
            "$(fmt "$v_cpu_pct" 0)" "$(fmt "$v_p50" 0)" "$(fmt "$v_p99" 0)" "$(fmt "$v_load_pct" 0)"
    done
    echo "  ratio proxy/nginx: cpu_us/req $(ratio "$TP_proxy_cpu_us" "$TP_nginx_cpu_us"), req/s $(ratio "$TP_proxy_rps" "$TP_nginx_rps")"
    if ((ROUTED == 1)); then
        echo "  ratio routed/nginx: cpu_us/req $(ratio "$TP_routed_cpu_us" "$TP_nginx_cpu_us"), req/s $(ratio "$TP_routed_rps" "$TP_nginx_rps")"
        echo "  ratio routed/proxy: cpu_us/req $(ratio "$TP_routed_cpu_us" "$TP_proxy_cpu_us")"
    fi
    if ((OBSERVABILITY == 1)); then
        echo "  ratio proxy/quiet (events and metrics on/off): cpu_us/req $(ratio "$TP_proxy_cpu_us" "$TP_quiet_cpu_us")"
        echo "  ratio cached/nginx (cache hit): cpu_us/req $(ratio "$TP_cached_cpu_us" "$TP_nginx_cpu_us")"
    fi
}

# --------------------------------------- phase 2: CPU at fixed offered load --

if ((${#RATE_LIST[@]} > 0)); then
    echo
    echo "== Phase 2: CPU per request at fixed offered load =="
    echo "   server under test on core $SERVER_CORE; mock + llm-proxy benchmark --rate R -c$RATE_CONNECTIONS on core $LOAD_CORE;"
    echo "   rates: ${RATE_LIST[*]} req/s, $DURATION_S s per run, $ROUNDS round(s); gen% = load generator CPU"
    for rate in "${RATE_LIST[@]}"; do
        rate_header
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in "${CPU_TARGETS[@]}"; do
                measure_rate "rate$rate" "$target" "$round" "$rate" "rate $rate"
            done
        done
        for target in "${CPU_TARGETS[@]}"; do
            note=$(keep_up_note "rate$rate" "$target" "$rate")
            if [[ -n $note ]]; then
                log "NOTE: $note"
                NOTES+=("$note")
            fi
        done
        printf '  medians at %s req/s: proxy %s cpu_us/req, nginx %s cpu_us/req, ratio %s\n' "$rate" \
            "$(fmt "$(median "rate$rate" proxy cpu_us)" 2)" "$(fmt "$(median "rate$rate" nginx cpu_us)" 2)" \
            "$(ratio "$(median "rate$rate" proxy cpu_us)" "$(median "rate$rate" nginx cpu_us)")"
        if ((ROUTED == 1)); then
            printf '  medians at %s req/s: routed %s cpu_us/req, ratio routed/nginx %s, routed/proxy %s\n' "$rate" \
                "$(fmt "$(median "rate$rate" routed cpu_us)" 2)" \
                "$(ratio "$(median "rate$rate" routed cpu_us)" "$(median "rate$rate" nginx cpu_us)")" \
                "$(ratio "$(median "rate$rate" routed cpu_us)" "$(median "rate$rate" proxy cpu_us)")"
        fi
        if ((OBSERVABILITY == 1)); then
            printf '  medians at %s req/s: ratio proxy/quiet %s, cached/nginx %s\n' "$rate" \
                "$(ratio "$(median "rate$rate" proxy cpu_us)" "$(median "rate$rate" quiet cpu_us)")" \
                "$(ratio "$(median "rate$rate" cached cpu_us)" "$(median "rate$rate" nginx cpu_us)")"
        fi
    done
fi

# The routed server's accounting: its key's spend must be what the proxy
# counted for it, priced as in the sanity check (the ledger takes each
# worker's report once a second).  Then the server is stopped: the later
# phases run as they did without it.
if ((ROUTED == 1)); then
    sleep 2
    code=$(curl -s -o "$WORKDIR/routed.keyinfo.json" --max-time 10 -w '%{http_code}' \
        -H "Authorization: Bearer $MANAGEMENT_TOKEN" "http://127.0.0.1:$ROUTED_PORT/key/info?key=$ROUTED_KEY" || true)
    [[ $code == 200 ]] || die "GET /key/info on the routed server answered $code: $(head -c 300 "$WORKDIR/routed.keyinfo.json")"
    read -r ROUTED_ACCOUNTED ROUTED_SPEND <<<"$(jq -r '[.info.request_count // 0, .info.spend // 0] | @tsv' "$WORKDIR/routed.keyinfo.json")"
    # Requests the clients saw completed: wrk's count (all responses were
    # 2xx, or the run is already invalid) and the open-loop reports' 2xx.
    ROUTED_COMPLETED=1 # the sanity check
    for f in "$WORKDIR"/warmup.routed.txt "$WORKDIR"/tp.*.routed.txt; do
        if [[ -f $f ]]; then
            ROUTED_COMPLETED=$((ROUTED_COMPLETED + $(wrk_field "$f" requests)))
        fi
    done
    for f in "$WORKDIR"/rate*.routed.json; do
        if [[ -f $f ]]; then
            read -r _ ok _ <<<"$(bench_fields "$f")"
            ROUTED_COMPLETED=$((ROUTED_COMPLETED + ok))
        fi
    done
    log "routed key after phases 1-2: request_count $ROUTED_ACCOUNTED (clients saw $ROUTED_COMPLETED complete), spend \$$(fmt "$ROUTED_SPEND" 6)"
    if ! awk -v n="$ROUTED_ACCOUNTED" -v s="$ROUTED_SPEND" -v c="$ROUTED_COST" \
        'BEGIN { e = n * c; d = s - e; if (d < 0) d = -d; exit !(n > 0 && d <= e * 1e-6) }'; then
        FAILURES+=("routed: key spend \$$ROUTED_SPEND is not request_count $ROUTED_ACCOUNTED × \$$ROUTED_COST (usage accounting)")
        log "FAILED: ${FAILURES[-1]}"
    fi
    stop_pid "$ROUTED_PID"
    ROUTED_PID=""
fi

# ---------------------------------------------------- phase 3: latency ----

echo
echo "== Phase 3: added latency =="
echo "   mock, llm-proxy, nginx and wrk all on core $SERVER_CORE; wrk -t1 -c1 -d$DURATION, $ROUNDS round(s)"
# Re-pin every thread of the running mock (rather than starting a second
# one) so the proxy and nginx keep their upstream pools to the same process.
taskset -a -p -c "$SERVER_CORE" "$MOCK_PID" >"$WORKDIR/mock-repin.log" 2>&1 ||
    die "could not re-pin the mock to core $SERVER_CORE: $(cat "$WORKDIR/mock-repin.log")"
show_affinity mock "$MOCK_PID"

if warmup_on; then
    for target in direct proxy nginx; do
        run_wrk "$SERVER_CORE" 1 1s "$target" "$WORKDIR/warmup-lat.$target.txt"
        check_wrk "latency warm-up $target" "$WORKDIR/warmup-lat.$target.txt"
        check_alive
    done
fi

printf '\n%-5s %-6s %10s %10s %7s %8s %8s %8s\n' round target requests req/s errors p50_us p90_us p99_us
for ((round = 1; round <= ROUNDS; round++)); do
    for target in direct proxy nginx; do
        out=$WORKDIR/lat.$round.$target.txt
        run_wrk "$SERVER_CORE" 1 "$DURATION" "$target" "$out"
        check_wrk "latency round $round $target" "$out"
        check_alive
        record lat "$target" p50 "$(wrk_field "$out" p50_us)"
        record lat "$target" p99 "$(wrk_field "$out" p99_us)"
        record lat "$target" rps "$(wrk_field "$out" rps)"
        printf '%-5s %-6s %10s %10s %7s %8s %8s %8s\n' "$round" "$target" \
            "$(wrk_field "$out" requests)" "$(fmt "$(wrk_field "$out" rps)" 0)" "$(wrk_field "$out" errors)" \
            "$(wrk_field "$out" p50_us)" "$(wrk_field "$out" p90_us)" "$(wrk_field "$out" p99_us)"
    done
done

for target in direct proxy nginx; do
    for metric in p50 p99 rps; do
        printf -v "LAT_${target}_${metric}" '%s' "$(median lat "$target" "$metric")"
    done
done
# shellcheck disable=SC2154 # LAT_* are set through printf -v above
{
    echo
    echo "medians over $ROUNDS round(s):"
    printf '  %-6s p50 %6s us  p99 %6s us\n' direct "$(fmt "$LAT_direct_p50" 0)" "$(fmt "$LAT_direct_p99" 0)"
    for target in proxy nginx; do
        p50_var=LAT_${target}_p50
        p99_var=LAT_${target}_p99
        printf '  %-6s p50 %6s us  p99 %6s us  added p50 %s us  added p99 %s us\n' "$target" \
            "$(fmt "${!p50_var}" 0)" "$(fmt "${!p99_var}" 0)" \
            "$(diff_us "${!p50_var}" "$LAT_direct_p50")" "$(diff_us "${!p99_var}" "$LAT_direct_p99")"
    done
}

# ------------------------------------------------- phase 4: streaming -----

echo
echo "== Phase 4: streaming (paced SSE) =="
echo "   mock, llm-proxy, nginx and the client all on core $SERVER_CORE (as phase 3);"
echo "   llm-proxy benchmark -c1 -r$STREAM_REQUESTS, $STREAM_CHUNKS deltas $STREAM_INTERVAL_MS ms apart, $ROUNDS round(s)"

if warmup_on; then
    for target in direct proxy nginx; do
        run_stream "$SERVER_CORE" "$target" 5 "$WORKDIR/warmup-stream.$target.json"
        check_stream "stream warm-up $target" "$WORKDIR/warmup-stream.$target.json" 5
        check_alive
    done
fi

printf '\n%-5s %-6s %8s %6s %9s %9s %9s %9s %10s\n' round target requests errors events/st ttfb_p50 fe_p50 fe_p99 gap_p50
for ((round = 1; round <= ROUNDS; round++)); do
    for target in direct proxy nginx; do
        out=$WORKDIR/stream.$round.$target.json
        run_stream "$SERVER_CORE" "$target" "$STREAM_REQUESTS" "$out"
        check_stream "stream round $round $target" "$out" "$STREAM_REQUESTS"
        check_alive
        read -r requests errors complete events ttfb50 fe50 fe99 gap50 <<<"$(stream_fields "$out")"
        record st "$target" ttfb50 "$ttfb50"
        record st "$target" fe50 "$fe50"
        record st "$target" fe99 "$fe99"
        record st "$target" gap50 "$gap50"
        printf '%-5s %-6s %8s %6s %9s %9s %9s %9s %10s\n' "$round" "$target" "$requests" "$errors" \
            "$(awk -v e="$events" -v c="$complete" 'BEGIN { if (c > 0) printf "%.1f", e / c; else print "n/a" }')" \
            "$(fmt "$ttfb50" 0)" "$(fmt "$fe50" 0)" "$(fmt "$fe99" 0)" "$(fmt "$gap50" 0)"
    done
done

for target in direct proxy nginx; do
    for metric in ttfb50 fe50 fe99 gap50; do
        printf -v "ST_${target}_${metric}" '%s' "$(median st "$target" "$metric")"
    done
done
# shellcheck disable=SC2154 # ST_* are set through printf -v above
{
    echo
    echo "medians over $ROUNDS round(s) (first event = first SSE data: event; gap = per-stream mean gap, p50 over streams):"
    printf '  %-6s first event p50 %6s us  p99 %6s us  mean gap %7s us\n' direct \
        "$(fmt "$ST_direct_fe50" 0)" "$(fmt "$ST_direct_fe99" 0)" "$(fmt "$ST_direct_gap50" 0)"
    for target in proxy nginx; do
        fe50=ST_${target}_fe50 fe99=ST_${target}_fe99 gap50=ST_${target}_gap50
        printf '  %-6s first event p50 %6s us  p99 %6s us  mean gap %7s us  added: p50 %s us, p99 %s us, gap %s us\n' "$target" \
            "$(fmt "${!fe50}" 0)" "$(fmt "${!fe99}" 0)" "$(fmt "${!gap50}" 0)" \
            "$(diff_us "${!fe50}" "$ST_direct_fe50")" "$(diff_us "${!fe99}" "$ST_direct_fe99")" \
            "$(diff_us "${!gap50}" "$ST_direct_gap50")"
    done
}

# ---------------------------------------------------- phase 5: memory -----

echo
echo "== Phase 5: memory (VmRSS; nginx = master + worker) =="
for target in proxy nginx; do
    for when in idle opened held closed; do printf -v "MEM_${target}_${when}" nan; done
done
sleep 1
for target in proxy nginx; do
    read -r -a pids <<<"${T_PIDS[$target]}"
    printf -v "MEM_${target}_idle" '%s' "$(rss_kb "${pids[@]}")"
done
if ((HOLD_CONNECTIONS > 0)); then
    echo "   $HOLD_CONNECTIONS keep-alive connections, one request each, held open (client on core $LOAD_CORE, ulimit -n $(ulimit -n))"
    for target in proxy nginx; do
        read -r -a pids <<<"${T_PIDS[$target]}"
        port=$PROXY_PORT
        [[ $target == nginx ]] && port=$NGINX_PORT
        hold_out=$WORKDIR/hold.$target.out
        taskset -c "$LOAD_CORE" python3 "$HOLD_SCRIPT" --port "$port" --key "$CLIENT_KEY" \
            -n "$HOLD_CONNECTIONS" --timeout 120 >"$hold_out" 2>"$hold_out.err" &
        HOLD_PID=$!
        for ((i = 0; i < 1300; i++)); do
            grep -q '^READY ' "$hold_out" && break
            is_running "$HOLD_PID" || break
            sleep 0.1
        done
        ready=$(grep -m1 '^READY ' "$hold_out" || true)
        [[ -n $ready ]] || die "hold_connections.py against $target never got ready: $(tail -n 5 "$hold_out.err")"
        log "  $target: $ready"
        check_alive
        printf -v "MEM_${target}_opened" '%s' "$(rss_kb "${pids[@]}")"
        # Idle connections settle: llm-proxy gives an idle connection's read
        # buffer back after 500 ms and returns freed memory once a second.
        sleep "$HOLD_SETTLE"
        check_alive
        printf -v "MEM_${target}_held" '%s' "$(rss_kb "${pids[@]}")"
        hold_rc=0
        kill -TERM "$HOLD_PID" 2>/dev/null || true
        wait "$HOLD_PID" || hold_rc=$?
        HOLD_PID=""
        final=$(grep -m1 '^FINAL ' "$hold_out" || true)
        log "  $target: ${final:-no FINAL line}"
        if ((hold_rc != 0)) || [[ $ready != *"ok=$HOLD_CONNECTIONS failed=0"* ]]; then
            FAILURES+=("memory $target: $ready; ${final:-no FINAL line}; $(head -n 1 "$hold_out.err")")
            log "FAILED: ${FAILURES[-1]}"
        fi
        sleep 1
        printf -v "MEM_${target}_closed" '%s' "$(rss_kb "${pids[@]}")"
    done
fi
# shellcheck disable=SC2154 # MEM_* are set through printf -v above
{
    printf '\n%-6s %12s %12s %14s %14s %14s\n' server start_MB idle_MB opened_MB "held_MB" closed_MB
    for target in proxy nginx; do
        s=MEM_${target}_start i=MEM_${target}_idle o=MEM_${target}_opened h=MEM_${target}_held c=MEM_${target}_closed
        printf '%-6s %12s %12s %14s %14s %14s\n' "$target" "$(mb "${!s}")" "$(mb "${!i}")" "$(mb "${!o}")" "$(mb "${!h}")" "$(mb "${!c}")"
    done
    echo "  start = before any load; idle = after phases 1-4; opened = as the last of $HOLD_CONNECTIONS connections got its answer; held = ${HOLD_SETTLE} s later, still open; closed = 1 s after they closed"
}

# The rest runs with the mock back on the load core, as in phases 1 and 2.
taskset -a -p -c "$LOAD_CORE" "$MOCK_PID" >"$WORKDIR/mock-repin.log" 2>&1 ||
    die "could not re-pin the mock to core $LOAD_CORE: $(cat "$WORKDIR/mock-repin.log")"

# ------------------------------------------------ phase 6: 1 vs 2 workers --

if ((SCALING == 1)); then
    BOTH_CORES="$SERVER_CORE,$LOAD_CORE"
    echo
    echo "== Phase 6: 1 worker vs 2 workers, closed loop =="
    echo "   fresh mock (2 workers) and llm-proxy servers; 1 worker on core $SERVER_CORE, 2 workers on cores $BOTH_CORES;"
    echo "   wrk -t$SCALE_WRK_THREADS -c$SCALE_CONNECTIONS -d$DURATION and the mock free to run on cores $BOTH_CORES, $ROUNDS round(s)"
    log "starting the phase 6 mock (2 workers) on 127.0.0.1:$SCALE_MOCK_PORT (cores $BOTH_CORES)"
    start_mock scale-mock "$SCALE_MOCK_PORT" 2 "$BOTH_CORES"
    SCALE_MOCK_PID=$STARTED_PID
    EXTRA_PIDS+=("$SCALE_MOCK_PID")
    wait_ready "phase 6 mock" "$SCALE_MOCK_PID" "http://127.0.0.1:$SCALE_MOCK_PORT/v1/models" \
        "Authorization: Bearer $UPSTREAM_KEY"
    pin_both=0
    [[ $BOTH_CORES == 0,1 || $BOTH_CORES == 1,0 ]] && pin_both=1
    start_proxy scale1 "$SCALE1_PORT" 1 "$SERVER_CORE" "$pin_main" "$SCALE_MOCK_PORT"
    SCALE1_PID=$STARTED_PID
    EXTRA_PIDS+=("$SCALE1_PID")
    start_proxy scale2 "$SCALE2_PORT" 2 "$BOTH_CORES" "$pin_both" "$SCALE_MOCK_PORT"
    SCALE2_PID=$STARTED_PID
    EXTRA_PIDS+=("$SCALE2_PID")
    wait_ready "llm-proxy (1 worker)" "$SCALE1_PID" "http://127.0.0.1:$SCALE1_PORT/health"
    wait_ready "llm-proxy (2 workers)" "$SCALE2_PID" "http://127.0.0.1:$SCALE2_PORT/health"
    provision_keys scale1 "$SCALE1_PORT"
    provision_keys scale2 "$SCALE2_PORT"
    set_target w1 "llm-proxy, 1 worker" "http://127.0.0.1:$SCALE1_PORT" "$CHAT_PATH" "$CLIENT_KEY" "$CHAT_BODY" "$SCALE1_PID"
    set_target w2 "llm-proxy, 2 workers" "http://127.0.0.1:$SCALE2_PORT" "$CHAT_PATH" "$CLIENT_KEY" "$CHAT_BODY" "$SCALE2_PID"
    T_MOCK[w1]=$SCALE_MOCK_PID
    T_MOCK[w2]=$SCALE_MOCK_PID
    show_affinity scale-mock "$SCALE_MOCK_PID"
    show_affinity llm-proxy-1w "$SCALE1_PID"
    show_affinity llm-proxy-2w "$SCALE2_PID"
    for target in w1 w2; do
        code=$(http_code "$target" "$CLIENT_KEY" "$WORKDIR/$target.json")
        [[ $code == 200 ]] || die "$target answered $code to a chat request: $(head -c 300 "$WORKDIR/$target.json")"
        if warmup_on; then
            run_wrk "$BOTH_CORES" "$SCALE_CONNECTIONS" "$WARMUP" "$target" "$WORKDIR/warmup.$target.txt" "$SCALE_WRK_THREADS"
            check_wrk "scaling warm-up $target" "$WORKDIR/warmup.$target.txt"
            check_alive
        fi
    done
    tp_header
    for ((round = 1; round <= ROUNDS; round++)); do
        for target in w1 w2; do
            measure_tp scale "$target" "$round" "$BOTH_CORES" "$SCALE_WRK_THREADS" "$SCALE_CONNECTIONS" scaling
        done
    done
    for target in w1 w2; do
        for metric in "${TP_METRICS[@]}"; do
            printf -v "SC_${target}_${metric}" '%s' "$(median scale "$target" "$metric")"
        done
    done
    # shellcheck disable=SC2154 # SC_* are set through printf -v above
    {
        SC_RATIO=$(ratio "$SC_w2_rps" "$SC_w1_rps")
        # The load generator (wrk + mock) is the bottleneck when the machine
        # is saturated and the 2-worker proxy got clearly less than 2 cores.
        SC_BOTTLENECK=0
        if le "$BUSY_SATURATED" "$SC_w2_all_pct" && le "$SC_w2_cpu_pct" 180; then
            SC_BOTTLENECK=1
        fi
        echo
        printf '  medians: 1 worker %s req/s, 2 workers %s req/s, ratio %s\n' \
            "$(fmt "$SC_w1_rps" 0)" "$(fmt "$SC_w2_rps" 0)" "$SC_RATIO"
        printf '  2 workers: proxy %s%%, wrk %s%%, mock %s%% of one core; machine %s%% busy\n' \
            "$(fmt "$SC_w2_cpu_pct" 0)" "$(fmt "$SC_w2_wrk_pct" 0)" "$(fmt "$SC_w2_mock_pct" 0)" "$(fmt "$SC_w2_all_pct" 0)"
        if ((SC_BOTTLENECK)); then
            echo "  the machine was saturated and wrk + mock took the rest: the load generator is the bottleneck"
        fi
    }
    for pid in "$SCALE1_PID" "$SCALE2_PID" "$SCALE_MOCK_PID"; do stop_tree "$pid"; done
    EXTRA_PIDS=()
fi

# ---------------------------------------------- phase 7: other gateways ---

GW_DONE=()
# start_gateway GW: start it on SERVER_CORE in front of the main mock and
# define its target; returns 1 (with GW_SKIP set) if it does not come up.
start_gateway() {
    local gw=$1 dir=$WORKDIR/gw-$1 venv=$GATEWAY_CACHE/$1-venv pid base="" i code
    mkdir -p "$dir"
    case $gw in
    litellm)
        sed -e "s|@MOCK_PORT@|$MOCK_PORT|g" -e "s|@CLIENT_KEY@|$CLIENT_KEY|g" -e "s|@UPSTREAM_KEY@|$UPSTREAM_KEY|g" \
            "$GATEWAY_DIR/litellm.yaml.template" >"$dir/config.yaml"
        (
            cd "$dir"
            unset OPENAI_API_KEY OPENAI_API_BASE OPENAI_BASE_URL DATABASE_URL
            export LITELLM_LOG=ERROR LITELLM_LOCAL_MODEL_COST_MAP=True
            exec taskset -c "$SERVER_CORE" "$venv/bin/litellm" --config "$dir/config.yaml" --host 127.0.0.1 \
                --port "$LITELLM_PORT" --num_workers 1 --log_config "$GATEWAY_DIR/litellm-log.json"
        ) >"$WORKDIR/$gw.log" 2>&1 &
        pid=$!
        base=http://127.0.0.1:$LITELLM_PORT
        set_target "$gw" "LiteLLM ${GW_VERSION[$gw]}" "$base" "$CHAT_PATH" "$CLIENT_KEY" "$CHAT_BODY" ""
        ;;
    portkey)
        (
            cd "$dir"
            export NODE_ENV=production
            exec taskset -c "$SERVER_CORE" node "$GATEWAY_CACHE/portkey/node_modules/@portkey-ai/gateway/build/start-server.js" \
                --port="$PORTKEY_PORT" --headless
        ) >"$WORKDIR/$gw.log" 2>&1 &
        pid=$!
        base=http://127.0.0.1:$PORTKEY_PORT
        set_target "$gw" "Portkey gateway ${GW_VERSION[$gw]}" "$base" "$CHAT_PATH" "$UPSTREAM_KEY" "$CHAT_BODY" "" \
            "x-portkey-provider: openai"$'\n'"x-portkey-custom-host: http://127.0.0.1:$MOCK_PORT/v1"
        ;;
    tensorzero)
        sed -e "s|@MOCK_PORT@|$MOCK_PORT|g" "$GATEWAY_DIR/tensorzero.toml.template" >"$dir/tensorzero.toml"
        (
            cd "$dir"
            export MOCK_UPSTREAM_KEY=$UPSTREAM_KEY RUST_LOG=${RUST_LOG:-warn}
            exec taskset -c "$SERVER_CORE" "$venv/bin/python" "$GATEWAY_DIR/tensorzero_gateway.py" "$dir/tensorzero.toml"
        ) >"$WORKDIR/$gw.log" 2>&1 &
        pid=$!
        for ((i = 0; i < 300; i++)); do
            base=$(sed -n 's|^READY \(http://[^/]*\)/.*|\1|p' "$WORKDIR/$gw.log")
            [[ -n $base ]] && break
            is_running "$pid" || break
            sleep 0.1
        done
        set_target "$gw" "TensorZero ${GW_VERSION[$gw]}" "$base" /openai/v1/chat/completions "$CLIENT_KEY" \
            '{"model":"tensorzero::model_name::mock","messages":[{"role":"user","content":"hi"}]}' ""
        ;;
    esac
    EXTRA_PIDS+=("$pid")
    # Python gateways take a while to import; give them 2 minutes.
    for ((i = 0; i < 1200; i++)); do
        if ! is_running "$pid"; then
            GW_SKIP[$gw]="exited during start-up: $(tail -n 3 "$WORKDIR/$gw.log" | tr '\n' ' ')"
            return 1
        fi
        if [[ -n $base ]]; then
            code=$(http_code "$gw" "" "$WORKDIR/$gw.json")
            [[ $code == 200 ]] && break
        fi
        sleep 0.1
    done
    if [[ ${code:-} != 200 ]]; then
        GW_SKIP[$gw]="no 200 to a chat request after 120 s (last status ${code:-none}): $(head -c 200 "$WORKDIR/$gw.json" 2>/dev/null)"
        return 1
    fi
    sleep 1 # let start-up work settle before measuring CPU
    T_PIDS[$gw]="$pid $(descendants "$pid" | tr '\n' ' ')"
    return 0
}

if ((${#GATEWAY_LIST[@]} > 0)); then
    echo
    echo "== Phase 7: other gateways =="
    echo "   each gateway alone on core $SERVER_CORE in front of the same mock (core $LOAD_CORE); CPU per request at"
    echo "   $GATEWAY_RATE req/s (llm-proxy benchmark --rate, interleaved with llm-proxy at the same rate) and"
    echo "   closed-loop throughput with wrk -t1 -c$CONNECTIONS -d$DURATION on core $LOAD_CORE, $ROUNDS round(s)"
    for gw in "${GATEWAY_LIST[@]}"; do
        if [[ -n ${GW_SKIP[$gw]:-} ]]; then
            echo "   $(gw_label "$gw"): skipped: ${GW_SKIP[$gw]}"
            continue
        fi
        log "starting $(gw_label "$gw") ${GW_VERSION[$gw]} (core $SERVER_CORE)"
        if ! start_gateway "$gw"; then
            log "WARNING: $(gw_label "$gw") skipped: ${GW_SKIP[$gw]}"
            echo "   $(gw_label "$gw"): skipped: ${GW_SKIP[$gw]}"
            stop_tree "${EXTRA_PIDS[-1]}"
            EXTRA_PIDS=()
            continue
        fi
        gw_pid=${EXTRA_PIDS[-1]}
        show_affinity "$gw" "$gw_pid"
        log "  $gw response: $(head -c 200 "$WORKDIR/$gw.json")"
        if [[ $gw == litellm ]]; then
            code=$(http_code "$gw" sk-wrong-key)
            log "  $gw answers $code to a wrong client key"
            [[ $code == 4?? ]] || log "  WARNING: $gw accepted a wrong client key"
        fi
        read -r -a pids <<<"${T_PIDS[$gw]}"
        printf -v "GWMEM_${gw}_idle" '%s' "$(rss_kb "${pids[@]}")"
        if warmup_on; then
            run_wrk "$LOAD_CORE" "$CONNECTIONS" "$WARMUP" "$gw" "$WORKDIR/warmup.$gw.txt"
            check_wrk "$gw warm-up" "$WORKDIR/warmup.$gw.txt"
            check_alive
        fi
        echo
        echo "   $(gw_label "$gw") ${GW_VERSION[$gw]}: CPU per request at $GATEWAY_RATE req/s"
        rate_header
        for ((round = 1; round <= ROUNDS; round++)); do
            for target in proxy "$gw"; do
                measure_rate "gw_$gw" "$target" "$round" "$GATEWAY_RATE" "$gw at $GATEWAY_RATE req/s"
            done
        done
        for target in proxy "$gw"; do
            note=$(keep_up_note "gw_$gw" "$target" "$GATEWAY_RATE")
            if [[ -n $note ]]; then
                log "NOTE: $note"
                NOTES+=("$note")
            fi
        done
        echo
        echo "   $(gw_label "$gw") ${GW_VERSION[$gw]}: closed-loop throughput"
        tp_header
        for ((round = 1; round <= ROUNDS; round++)); do
            measure_tp "gwtp_$gw" "$gw" "$round" "$LOAD_CORE" 1 "$CONNECTIONS" "$gw throughput"
        done
        printf -v "GWMEM_${gw}_load" '%s' "$(rss_kb "${pids[@]}")"
        printf '  medians: %s %s cpu_us/req at %s req/s (llm-proxy %s, ratio %s); %s req/s closed loop\n' "$gw" \
            "$(fmt "$(median "gw_$gw" "$gw" cpu_us)" 1)" "$GATEWAY_RATE" "$(fmt "$(median "gw_$gw" proxy cpu_us)" 2)" \
            "$(ratio "$(median "gw_$gw" "$gw" cpu_us)" "$(median "gw_$gw" proxy cpu_us)")" \
            "$(fmt "$(median "gwtp_$gw" "$gw" rps)" 0)"
        stop_tree "$gw_pid"
        EXTRA_PIDS=()
        GW_DONE+=("$gw")
    done
fi
RUN_SECONDS=$(($(date +%s) - RUN_STARTED))

# ---------------------------------------------------------------- summary --

cpu_model=$(sed -n 's/^model name[[:space:]]*:[[:space:]]*//p' /proc/cpuinfo | head -n 1)
kernel=$(uname -r)
now=$(date -u '+%Y-%m-%d %H:%M UTC')
nginx_version=$("$NGINX_BIN" -v 2>&1 | sed 's|.*/||')
wrk_version=$(wrk -v 2>&1 | head -n 1 | awk '{ print $2 }' | sed 's|^debian/\(.*\)|\1 (Debian)|' || true)
mem_total=$(awk '/^MemTotal:/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo)
if [[ -n ${LLM_PROXY_REV:-} ]]; then
    proxy_rev=$LLM_PROXY_REV
else
    proxy_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
    dirty=$(git -C "$REPO_ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null | awk '{ print $2 }' | tr '\n' ' ')
    if [[ -n $dirty ]]; then
        proxy_rev+=" + uncommitted changes (${dirty% })"
    fi
fi
bin_sha=$(sha256sum "$BIN" | cut -c1-12)
bin_time=$(date -u -r "$BIN" '+%Y-%m-%d %H:%M UTC')
bin_note=""
newest_src=$(find "$REPO_ROOT/src" "$REPO_ROOT/Cargo.toml" "$REPO_ROOT/Cargo.lock" -type f -newer "$BIN" 2>/dev/null | head -n 1)
[[ -n $newest_src ]] && bin_note=" (older than ${newest_src#"$REPO_ROOT"/}: may not match the checkout)"
bin_show=$BIN
[[ $bin_show == "$REPO_ROOT"/* ]] && bin_show=${bin_show#"$REPO_ROOT"/}

SMOKE=0
((ROUNDS < 3 || DURATION_S < 10)) && SMOKE=1

# met VALUE_OK: "met" / "missed"
met() { if "$@"; then echo "**met**"; else echo "**missed**"; fi; }

# target_rows WHAT BASE_NAME TARGET BASE LIMIT SHOW_US: the targets-table rows
# "WHAT ≤ LIMIT× BASE_NAME", at each fixed rate and closed loop: TARGET's CPU
# per request over BASE's, and TARGET's own µs when SHOW_US is 1.
target_rows() {
    local what=$1 base_name=$2 target=$3 base=$4 limit=$5 show_us=$6 rate r us
    local tp_target=TP_${target}_cpu_us tp_base=TP_${base}_cpu_us
    for rate in "${RATE_LIST[@]}"; do
        r=$(ratio "$(median "rate$rate" "$target" cpu_us)" "$(median "rate$rate" "$base" cpu_us)")
        us=""
        ((show_us)) && us=" ($(fmt "$(median "rate$rate" "$target" cpu_us)" 2) µs)"
        echo "| $what ≤ ${limit}× $base_name at $(fmt_int "$rate") req/s | ${r}×$us | $(met le "$r" "$limit") |"
    done
    r=$(ratio "${!tp_target}" "${!tp_base}")
    us=""
    ((show_us)) && us=" ($(fmt "${!tp_target}" 2) µs)"
    echo "| $what ≤ ${limit}× $base_name, closed loop (phase 1) | ${r}×$us | $(met le "$r" "$limit") |"
}

SUMMARY=$WORKDIR/summary.md
# shellcheck disable=SC2154 # TP_* / LAT_* / ST_* / MEM_* / SC_* / GWMEM_* are set through printf -v above
{
    echo "## Latest load-test run (generated)"
    echo
    echo "_Written by \`$SCRIPT_NAME\` between the \`loadtest\` markers and replaced by every run (\`WRITE_DOCS=0\` leaves it alone); the sections after it are written by hand. See \`loadtest/README.md\` for what each phase does._"
    echo
    if ((SMOKE)); then
        echo "> **Smoke run** (ROUNDS=$ROUNDS, DURATION=$DURATION): it shows that every phase works. Its numbers are not results: one short round each, too noisy to quote or to judge the targets by. A full run is \`ROUNDS=3 DURATION=10s\` or more."
        echo
    fi
    echo "- **When:** $now; the measured part took $((RUN_SECONDS / 60)) min $((RUN_SECONDS % 60)) s."
    echo "- **Machine:** ${cpu_model:-unknown CPU}, $NPROC cores, $mem_total, Linux $kernel; nginx $nginx_version, wrk $wrk_version."
    echo "- **llm-proxy:** $proxy_rev; binary \`$bin_show\` (sha256 $bin_sha…, built $bin_time)$bin_note."
    echo "- **Command:** \`$COMMAND_LINE\`"
    echo "- **Settings:** ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS WARMUP=$WARMUP RATES=\"${RATES}\" RATE_CONNECTIONS=$RATE_CONNECTIONS STREAM_REQUESTS=$STREAM_REQUESTS STREAM_CHUNKS=$STREAM_CHUNKS STREAM_INTERVAL_MS=$STREAM_INTERVAL_MS HOLD_CONNECTIONS=$HOLD_CONNECTIONS SCALING=$SCALING SCALE_CONNECTIONS=$SCALE_CONNECTIONS SCALE_WRK_THREADS=$SCALE_WRK_THREADS GATEWAYS=\"${GATEWAY_LIST[*]}\" GATEWAY_RATE=$GATEWAY_RATE SERVER_CORE=$SERVER_CORE LOAD_CORE=$LOAD_CORE ROUTED=$ROUTED MOCK_ARGS=\"$MOCK_ARGS\" PROXY_ARGS=\"$PROXY_ARGS\"."
    order="A B A B"
    ((ROUTED == 1)) && order="phases 1 and 2: A B C A B C, with C the routed target; the others: A B A B"
    echo "- **Method:** medians over $ROUNDS interleaved round(s) ($order); non-streaming \`POST $CHAT_PATH\` (${#CHAT_BODY}-byte body) to \`llm-proxy mock-upstream\` on loopback; llm-proxy checks the client key against its key store and swaps in the project's upstream key, nginx does a fixed key check and swap. CPU = run time of all the server's threads (and processes) over the run, from \`/proc\`, ÷ completed requests."
    if ((ROUTED == 1)); then
        echo "- **Routed target (phases 1 and 2):** a second llm-proxy server, pinned like the first, with one model registered through \`POST /model/new\` (\`$ROUTED_MODEL\` → \`openai/$ROUTED_UPSTREAM_MODEL\` at the mock, with prices) and a key from \`POST /key/generate {}\`; its requests name \`$ROUTED_MODEL\` (same body size), so each does the model lookup, the body rewrite and the usage accounting (the whole answer read to put \`x-litellm-response-cost\` in the head). Checked before measuring: the mock was asked for \`$ROUTED_UPSTREAM_MODEL\` and the cost header is the answer's usage priced (\$$(fmt "$ROUTED_COST" 8) a request); after phase 2 the key's spend was \$$(fmt "$ROUTED_SPEND" 6) = $(fmt_int "$ROUTED_ACCOUNTED") requests × \$$(fmt "$ROUTED_COST" 8) ($(fmt_int "$ROUTED_COMPLETED") seen complete by the clients). The pass-through server (\`llm-proxy\`) has no model registered."
    fi
    if ((OBSERVABILITY == 1)); then
        echo "- **Observability targets (phases 1 and 2):** \`llm-proxy\` runs with its defaults, events (written to the event log in its data directory) and metrics on; \`events and metrics off\` is the same pass-through on a third server started with \`EVENT_LOG=false METRICS_ENABLED=false\`; \`cache hits\` is a fourth server whose requests carry \`$CACHED_HEADER\` with one fixed body, so all but the first are answered from the response cache (checked before measuring: \`X-PROXY-CACHE: hit\` and the stored body)."
    fi
    if ((${#NOTES[@]} > 0)); then
        echo "- **Notes:**"
        for note in "${NOTES[@]}"; do echo "  - $note"; done
    fi
    echo

    # ---- targets
    if ((ROUTED == 1)); then
        echo "### Targets (issues 4, 5 and 6)"
    else
        echo "### Targets (issue 4)"
    fi
    echo
    echo "| target | measured | result |"
    echo "| --- | --- | --- |"
    target_rows "CPU per request" nginx proxy nginx 0.9 0
    if ((ROUTED == 1)); then
        target_rows "routed path CPU per request" nginx routed nginx 1.2 1
    else
        echo "| routed path CPU per request ≤ 1.2× nginx | not measured (ROUTED=0) | — |"
    fi
    if ((OBSERVABILITY == 1)); then
        target_rows "events and metrics on: CPU per request" off proxy quiet 1.05 0
        target_rows "cache hit CPU per request" nginx cached nginx 0.5 1
    else
        echo "| events and metrics cost, cache hit cost | not measured (OBSERVABILITY=0) | — |"
    fi
    for gw in tensorzero litellm; do
        want=10
        [[ $gw == litellm ]] && want=50
        if [[ " ${GW_DONE[*]} " == *" $gw "* ]]; then
            r=$(ratio "$(median "gw_$gw" "$gw" cpu_us)" "$(median "gw_$gw" proxy cpu_us)")
            rmax=$(ratio "$(median "gwtp_$gw" "$gw" cpu_us)" "$TP_proxy_cpu_us")
            if le "$want" "$r" && le "$want" "$rmax"; then
                verdict="**met**"
            elif le "$want" "$r"; then
                verdict="**met at $(fmt_int "$GATEWAY_RATE") req/s, missed at full load**"
            elif le "$want" "$rmax"; then
                verdict="**missed at $(fmt_int "$GATEWAY_RATE") req/s, met at full load**"
            else
                verdict="**missed**"
            fi
            echo "| ≥ ${want}× cheaper than $(gw_label "$gw") (CPU per request) | ${r}× at $(fmt_int "$GATEWAY_RATE") req/s, ${rmax}× at full load | $verdict |"
        else
            echo "| ≥ ${want}× cheaper than $(gw_label "$gw") | not measured$([[ -n ${GW_SKIP[$gw]:-} ]] && echo " (skipped, see below)" || echo " (\`--with $gw\`)") | — |"
        fi
    done
    a50=$(diff_us "$LAT_proxy_p50" "$LAT_direct_p50")
    a99=$(diff_us "$LAT_proxy_p99" "$LAT_direct_p99")
    echo "| added latency p50 ≤ 25 µs (concurrency 1) | $a50 µs | $(met le "$a50" 25) |"
    echo "| added latency p99 ≤ 100 µs | $a99 µs | $(met le "$a99" 100) |"
    afe=$(diff_us "$ST_proxy_fe99" "$ST_direct_fe99")
    agap=$(diff_us "$ST_proxy_gap50" "$ST_direct_gap50")
    echo "| streaming: added time to first event p99 ≤ 100 µs | $afe µs | $(met le "$afe" 100) |"
    echo "| streaming: no added per-event gap (within ±$GAP_TOLERANCE_US µs) | $agap µs | $(met awk -v g="$agap" -v t="$GAP_TOLERANCE_US" 'BEGIN { exit !(g != "n/a" && g <= t && g >= -t) }') |"
    echo "| RSS ≤ 20 MB idle (after the load phases; $(mb "$MEM_proxy_start") MB before any load) | $(mb "$MEM_proxy_idle") MB | $(met le "$(mb "$MEM_proxy_idle")" 20) |"
    if ((HOLD_CONNECTIONS == 10000)); then
        echo "| RSS ≤ 80 MB with 10,000 open connections | $(mb "$MEM_proxy_held") MB | $(met le "$(mb "$MEM_proxy_held")" 80) |"
    elif ((HOLD_CONNECTIONS > 0)); then
        echo "| RSS ≤ 80 MB with 10,000 open connections | $(mb "$MEM_proxy_held") MB with $(fmt_int "$HOLD_CONNECTIONS") | not measured at 10,000 |"
    else
        echo "| RSS ≤ 80 MB with 10,000 open connections | not measured (HOLD_CONNECTIONS=0) | — |"
    fi
    if ((SCALING == 1)); then
        if le 1.8 "$SC_RATIO"; then
            verdict="**met**"
        elif ((SC_BOTTLENECK)); then
            verdict="**not testable here**: the load generator is the bottleneck (see below)"
        else
            verdict="**missed**"
        fi
        echo "| 2 workers ≥ 1.8× one worker's throughput | ${SC_RATIO}× | $verdict |"
    else
        echo "| 2 workers ≥ 1.8× one worker's throughput | not measured (SCALING=0) | — |"
    fi
    echo

    # ---- phase 1
    echo "### Throughput and CPU per request, closed loop (phase 1)"
    echo
    echo "Server alone on core $SERVER_CORE, one worker; mock and \`wrk -t1 -c$CONNECTIONS -d$DURATION\` on core $LOAD_CORE. req/s compares the servers only if their CPU % is near 100; when core $LOAD_CORE is saturated the load generator sets the pace."
    echo
    echo "| server | req/s | CPU µs / request (user + sys) | server CPU % | core $LOAD_CORE busy % (wrk % + mock %) | p50 µs | p99 µs |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    for target in "${CPU_TARGETS[@]}"; do
        rps=TP_${target}_rps cu=TP_${target}_cpu_us uu=TP_${target}_usr_us su=TP_${target}_sys_us cp=TP_${target}_cpu_pct
        lp=TP_${target}_load_pct wp=TP_${target}_wrk_pct mp=TP_${target}_mock_pct p5=TP_${target}_p50 p9=TP_${target}_p99
        echo "| ${T_NAME[$target]} | $(fmt_int "${!rps}") | $(fmt "${!cu}" 2) ($(fmt "${!uu}" 2) + $(fmt "${!su}" 2)) | $(fmt "${!cp}" 0) | $(fmt "${!lp}" 0) ($(fmt "${!wp}" 0) + $(fmt "${!mp}" 0)) | $(fmt "${!p5}" 0) | $(fmt "${!p9}" 0) |"
    done
    echo "| **ratio llm-proxy / nginx** | $(ratio "$TP_proxy_rps" "$TP_nginx_rps") | **$(ratio "$TP_proxy_cpu_us" "$TP_nginx_cpu_us")** | | | | |"
    if ((ROUTED == 1)); then
        echo "| **ratio routed / nginx** | $(ratio "$TP_routed_rps" "$TP_nginx_rps") | **$(ratio "$TP_routed_cpu_us" "$TP_nginx_cpu_us")** | | | | |"
        echo "| ratio routed / llm-proxy | $(ratio "$TP_routed_rps" "$TP_proxy_rps") | $(ratio "$TP_routed_cpu_us" "$TP_proxy_cpu_us") | | | | |"
    fi
    if ((OBSERVABILITY == 1)); then
        echo "| **ratio llm-proxy / events and metrics off** | $(ratio "$TP_proxy_rps" "$TP_quiet_rps") | **$(ratio "$TP_proxy_cpu_us" "$TP_quiet_cpu_us")** | | | | |"
        echo "| **ratio cache hits / nginx** | $(ratio "$TP_cached_rps" "$TP_nginx_rps") | **$(ratio "$TP_cached_cpu_us" "$TP_nginx_cpu_us")** | | | | |"
    fi
    echo

    # ---- phase 2
    if ((${#RATE_LIST[@]} > 0)); then
        echo "### CPU per request at fixed offered load (phase 2)"
        echo
        echo "Server alone on core $SERVER_CORE; mock and \`llm-proxy benchmark --rate R -c$RATE_CONNECTIONS --duration ${DURATION_S}s\` (open loop) on core $LOAD_CORE."
        echo
        echo "| offered req/s | server | achieved req/s | CPU µs / request | server CPU % | load core busy % | p50 µs | p99 µs |"
        echo "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"
        for rate in "${RATE_LIST[@]}"; do
            for target in "${CPU_TARGETS[@]}"; do
                echo "| $(fmt_int "$rate") | ${T_NAME[$target]} | $(fmt_int "$(median "rate$rate" "$target" rps)") | $(fmt "$(median "rate$rate" "$target" cpu_us)" 2) | $(fmt "$(median "rate$rate" "$target" cpu_pct)" 0) | $(fmt "$(median "rate$rate" "$target" load_pct)" 0) | $(fmt "$(median "rate$rate" "$target" p50)" 0) | $(fmt "$(median "rate$rate" "$target" p99)" 0) |"
            done
            echo "| $(fmt_int "$rate") | **ratio llm-proxy / nginx** | | **$(ratio "$(median "rate$rate" proxy cpu_us)" "$(median "rate$rate" nginx cpu_us)")** | | | | |"
            if ((ROUTED == 1)); then
                echo "| $(fmt_int "$rate") | **ratio routed / nginx** | | **$(ratio "$(median "rate$rate" routed cpu_us)" "$(median "rate$rate" nginx cpu_us)")** | | | | |"
                echo "| $(fmt_int "$rate") | ratio routed / llm-proxy | | $(ratio "$(median "rate$rate" routed cpu_us)" "$(median "rate$rate" proxy cpu_us)") | | | | |"
            fi
            if ((OBSERVABILITY == 1)); then
                echo "| $(fmt_int "$rate") | **ratio llm-proxy / events and metrics off** | | **$(ratio "$(median "rate$rate" proxy cpu_us)" "$(median "rate$rate" quiet cpu_us)")** | | | | |"
                echo "| $(fmt_int "$rate") | **ratio cache hits / nginx** | | **$(ratio "$(median "rate$rate" cached cpu_us)" "$(median "rate$rate" nginx cpu_us)")** | | | | |"
            fi
        done
        echo
    fi

    # ---- phase 3 and 4
    echo "### Added latency (phase 3)"
    echo
    echo "Mock, server and \`wrk -t1 -c1 -d$DURATION\` all on core $SERVER_CORE."
    echo
    echo "| path | p50 µs | p99 µs | added p50 µs | added p99 µs |"
    echo "| --- | ---: | ---: | ---: | ---: |"
    echo "| direct to mock | $(fmt "$LAT_direct_p50" 0) | $(fmt "$LAT_direct_p99" 0) | | |"
    echo "| via llm-proxy | $(fmt "$LAT_proxy_p50" 0) | $(fmt "$LAT_proxy_p99" 0) | $(diff_us "$LAT_proxy_p50" "$LAT_direct_p50") | $(diff_us "$LAT_proxy_p99" "$LAT_direct_p99") |"
    echo "| via nginx | $(fmt "$LAT_nginx_p50" 0) | $(fmt "$LAT_nginx_p99" 0) | $(diff_us "$LAT_nginx_p50" "$LAT_direct_p50") | $(diff_us "$LAT_nginx_p99" "$LAT_direct_p99") |"
    echo
    echo "### Streaming (phase 4)"
    echo
    echo "Paced SSE: $STREAM_CHUNKS deltas $STREAM_INTERVAL_MS ms apart; \`llm-proxy benchmark -c1 -r$STREAM_REQUESTS\`; mock, server and client all on core $SERVER_CORE; gap = per-stream mean inter-event gap, median over streams."
    echo
    echo "| path | first event p50 µs | first event p99 µs | mean gap µs | added first event p50 µs | added first event p99 µs | added gap µs |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
    echo "| direct to mock | $(fmt "$ST_direct_fe50" 0) | $(fmt "$ST_direct_fe99" 0) | $(fmt "$ST_direct_gap50" 0) | | | |"
    for target in proxy nginx; do
        fe50=ST_${target}_fe50 fe99=ST_${target}_fe99 gap50=ST_${target}_gap50
        echo "| via ${T_NAME[$target]} | $(fmt "${!fe50}" 0) | $(fmt "${!fe99}" 0) | $(fmt "${!gap50}" 0) | $(diff_us "${!fe50}" "$ST_direct_fe50") | $(diff_us "${!fe99}" "$ST_direct_fe99") | $(diff_us "${!gap50}" "$ST_direct_gap50") |"
    done
    echo

    # ---- phase 5
    echo "### Memory (phase 5)"
    echo
    echo "VmRSS; nginx = master + worker; $(fmt_int "$HOLD_CONNECTIONS") keep-alive connections that each completed one request, held open by \`loadtest/hold_connections.py\`."
    echo
    echo "| server | before any load MB | idle after phases 1–4 MB | $(fmt_int "$HOLD_CONNECTIONS") connections, just opened MB | held ${HOLD_SETTLE} s MB | 1 s after they close MB |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: |"
    for target in proxy nginx; do
        s=MEM_${target}_start i=MEM_${target}_idle o=MEM_${target}_opened h=MEM_${target}_held c=MEM_${target}_closed
        echo "| ${T_NAME[$target]} | $(mb "${!s}") | $(mb "${!i}") | $(mb "${!o}") | $(mb "${!h}") | $(mb "${!c}") |"
    done
    echo

    # ---- phase 6
    if ((SCALING == 1)); then
        echo "### One worker vs two workers (phase 6)"
        echo
        echo "Fresh 2-worker mock and llm-proxy servers (1 worker on core $SERVER_CORE; 2 workers on cores $BOTH_CORES); \`wrk -t$SCALE_WRK_THREADS -c$SCALE_CONNECTIONS -d$DURATION\` and the mock free to run on both cores. CPU % is of one core (the machine has $((NPROC * 100)) %)."
        echo
        echo "| llm-proxy | req/s | CPU µs / request | proxy CPU % | wrk CPU % | mock CPU % | machine busy % | p50 µs | p99 µs |"
        echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for target in w1 w2; do
            rps=SC_${target}_rps cu=SC_${target}_cpu_us cp=SC_${target}_cpu_pct wp=SC_${target}_wrk_pct
            mp=SC_${target}_mock_pct ap=SC_${target}_all_pct p5=SC_${target}_p50 p9=SC_${target}_p99
            echo "| ${T_NAME[$target]#llm-proxy, } | $(fmt_int "${!rps}") | $(fmt "${!cu}" 2) | $(fmt "${!cp}" 0) | $(fmt "${!wp}" 0) | $(fmt "${!mp}" 0) | $(fmt "${!ap}" 0) | $(fmt "${!p5}" 0) | $(fmt "${!p9}" 0) |"
        done
        echo "| **ratio 2 / 1** | **$SC_RATIO** | $(ratio "$SC_w2_cpu_us" "$SC_w1_cpu_us") | | | | | | |"
        echo
        if ((SC_BOTTLENECK)); then
            echo "The load generator is the bottleneck: the machine was $(fmt "$SC_w2_all_pct" 0) % busy and wrk ($(fmt "$SC_w2_wrk_pct" 0) %) plus the mock ($(fmt "$SC_w2_mock_pct" 0) %) took most of what the two workers could have used ($(fmt "$SC_w2_cpu_pct" 0) % of 200 %). On $NPROC cores this ratio says how far the proxy scales while sharing the cores with its load, not whether two workers reach 1.8× on their own cores; that needs a machine with spare cores for wrk and the mock."
        else
            echo "The load generator was not saturating the machine (machine $(fmt "$SC_w2_all_pct" 0) % busy, the 2-worker proxy at $(fmt "$SC_w2_cpu_pct" 0) %)."
        fi
        echo
    fi

    # ---- phase 7
    if ((${#GATEWAY_LIST[@]} > 0)); then
        echo "### Other gateways (phase 7)"
        echo
        echo "Each gateway alone on core $SERVER_CORE in front of the same mock (core $LOAD_CORE). CPU per request at a fixed $(fmt_int "$GATEWAY_RATE") req/s (\`llm-proxy benchmark --rate $GATEWAY_RATE -c$RATE_CONNECTIONS\` on core $LOAD_CORE), interleaved with llm-proxy at the same rate; throughput closed loop with \`wrk -t1 -c$CONNECTIONS\` on core $LOAD_CORE (llm-proxy's from phase 1). Installed from the package registries into \`$GATEWAY_CACHE\`; CPU includes every thread and child process."
        echo
        echo "| server | client auth | achieved req/s (of $(fmt_int "$GATEWAY_RATE")) | CPU µs / request at $(fmt_int "$GATEWAY_RATE") req/s | ratio to llm-proxy | p50 µs | max req/s | CPU % at max | CPU µs / request at max | ratio to llm-proxy | RSS idle / after load MB |"
        echo "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        for gw in "${GW_DONE[@]}"; do
            pc=$(median "gw_$gw" proxy cpu_us)
            gc=$(median "gw_$gw" "$gw" cpu_us)
            gmax=$(median "gwtp_$gw" "$gw" cpu_us)
            mi=GWMEM_${gw}_idle ml=GWMEM_${gw}_load
            echo "| llm-proxy (paired with $(gw_label "$gw")) | key store | $(fmt_int "$(median "gw_$gw" proxy rps)") | $(fmt "$pc" 2) | 1 | $(fmt "$(median "gw_$gw" proxy p50)" 0) | $(fmt_int "$TP_proxy_rps") | $(fmt "$TP_proxy_cpu_pct" 0) | $(fmt "$TP_proxy_cpu_us" 2) | 1 | |"
            echo "| ${T_NAME[$gw]} | ${GW_AUTH[$gw]} | $(fmt_int "$(median "gw_$gw" "$gw" rps)") | $(fmt "$gc" 1) | **$(ratio "$gc" "$pc")** | $(fmt "$(median "gw_$gw" "$gw" p50)" 0) | $(fmt_int "$(median "gwtp_$gw" "$gw" rps)") | $(fmt "$(median "gwtp_$gw" "$gw" cpu_pct)" 0) | $(fmt "$gmax" 1) | **$(ratio "$gmax" "$TP_proxy_cpu_us")** | $(mb "${!mi}") / $(mb "${!ml}") |"
        done
        for gw in "${GATEWAY_LIST[@]}"; do
            if [[ -n ${GW_SKIP[$gw]:-} ]]; then
                echo "| $(gw_label "$gw") ${GW_VERSION[$gw]:-} | skipped: ${GW_SKIP[$gw]} | | | | | | | | | |"
            fi
        done
        echo
        echo "Full load = closed loop, \`wrk -t1 -c$CONNECTIONS\` on core $LOAD_CORE (CPU % at max shows whether the gateway's core was the limit); llm-proxy's figures there are from phase 1. At a low fixed rate each request also pays for waking the server up, which weighs more for a cheap server than for an expensive one: read both ratios."
        echo
        echo "How each runs: LiteLLM \`litellm --config … --num_workers 1\` (uvicorn, access log off, master key, no database); Portkey \`node build/start-server.js --headless\` with \`x-portkey-provider: openai\` and \`x-portkey-custom-host\` pointing at the mock (the client's key goes upstream as is); TensorZero: the gateway built into the \`tensorzero\` PyPI package (\`loadtest/gateways/tensorzero_gateway.py\`), \`/openai/v1/chat/completions\` with model \`tensorzero::model_name::mock\`, observability off."
        echo
    fi
} >"$SUMMARY"

echo
echo "==================== summary (Markdown) ===================="
echo
cat "$SUMMARY"

if ((${#FAILURES[@]} > 0)); then
    {
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "!! BENCHMARK INVALID: ${#FAILURES[@]} run(s) had errors or non-2xx responses:"
        for f in "${FAILURES[@]}"; do echo "!!   $f"; done
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    } >&2
    ((WRITE_DOCS == 1)) && log "not writing $DOCS_FILE: the run is invalid"
    exit 1
fi
if ((WRITE_DOCS == 1)); then
    python3 "$UPDATE_DOCS" "$DOCS_FILE" "$SUMMARY" || die "could not update $DOCS_FILE"
    log "results written to $DOCS_FILE (between <!-- loadtest:begin --> and <!-- loadtest:end -->)"
fi
log "all runs completed without errors"
