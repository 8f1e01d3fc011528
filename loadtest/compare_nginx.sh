#!/usr/bin/env bash
# Compare llm-proxy with nginx doing the same job (bearer-key check, key
# swap, keep-alive upstream pool, unbuffered pass-through) in front of the
# same mock upstream.
#
# Phase 1, throughput / CPU cost: the server under test (llm-proxy, or the
#   nginx worker) alone on SERVER_CORE (0); the mock upstream and wrk on
#   LOAD_CORE (1).  wrk -t1 -c$CONNECTIONS for $DURATION per run, proxy and
#   nginx interleaved for $ROUNDS rounds.  The server's utime+stime is read
#   from /proc/PID/stat before and after each run, giving CPU µs per request.
# Phase 2, added latency: everything on SERVER_CORE (the running mock is
#   re-pinned there with `taskset -a -p`, wrk is started there), wrk -t1 -c1
#   against the mock directly, via llm-proxy and via nginx, interleaved.
#   Added latency = (via X) - (direct), for the medians of p50 and p99.
# Phase 3, streaming: same pinning as phase 2; `llm-proxy benchmark -c1`
#   (also on SERVER_CORE) sends $STREAM_REQUESTS streamed requests whose
#   mock stream is paced ($STREAM_CHUNKS deltas, $STREAM_INTERVAL_MS ms
#   apart), directly, via llm-proxy and via nginx, interleaved.  Added time
#   to first event (p50, p99) and added mean inter-event gap, from medians.
# Phase 4, memory: VmRSS of llm-proxy and of nginx (master + worker) idle
#   and with $HOLD_CONNECTIONS open keep-alive connections, each having
#   completed one request (loadtest/hold_connections.py, on LOAD_CORE).
#
# See loadtest/README.md for details.  Environment knobs (defaults):
#   LLM_PROXY_BIN=target/release/llm-proxy  (built with cargo if missing)
#   MOCK_PORT=19001 PROXY_PORT=19002 NGINX_PORT=19003
#   ROUNDS=3 DURATION=10s CONNECTIONS=32 WARMUP=2s (0 = no warm-up run)
#   SERVER_CORE=0 LOAD_CORE=1
#   MOCK_ARGS="" PROXY_ARGS=""   extra flags for `mock-upstream` / `server`
#   NGINX_BIN=nginx KEEP_WORKDIR=0 (1 = keep logs and raw wrk output)
#   STREAM_REQUESTS=100 STREAM_CHUNKS=20 STREAM_INTERVAL_MS=5
#   HOLD_CONNECTIONS=10000 (0 = skip phase 4)
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd -- "$SCRIPT_DIR/.." && pwd)
ORIG_PWD=$PWD

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
MOCK_ARGS=${MOCK_ARGS:-}
PROXY_ARGS=${PROXY_ARGS:-}
NGINX_BIN=${NGINX_BIN:-nginx}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
STREAM_REQUESTS=${STREAM_REQUESTS:-100}
STREAM_CHUNKS=${STREAM_CHUNKS:-20}
STREAM_INTERVAL_MS=${STREAM_INTERVAL_MS:-5}
HOLD_CONNECTIONS=${HOLD_CONNECTIONS:-10000}

CLIENT_KEY=sk-bench
UPSTREAM_KEY=sk-upstream
# Only for this run's throw-away store; the management API listens on loopback.
MANAGEMENT_TOKEN=bench-management-$$-$RANDOM
CHAT_PATH=/v1/chat/completions
CHAT_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
STREAM_BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"stream":true}'
HOLD_SCRIPT=$SCRIPT_DIR/hold_connections.py
LUA_SCRIPT=$SCRIPT_DIR/chat.lua
NGINX_TEMPLATE=$SCRIPT_DIR/nginx.conf.template

WORKDIR=""
MOCK_PID=""
PROXY_PID=""
NGINX_PID=""
NGINX_WORKERS=()
WRK_PID=""
HOLD_PID=""
FAILURES=()

log() { printf '[compare_nginx] %s\n' "$*" >&2; }
die() {
    printf '[compare_nginx] ERROR: %s\n' "$*" >&2
    exit 1
}

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
    stop_pid "$MOCK_PID"
    if [[ -n $WORKDIR && -d $WORKDIR ]]; then
        if ((rc == 130 || rc == 143)); then
            log "interrupted; logs and raw wrk output kept in $WORKDIR"
        elif ((rc != 0)); then
            show_log_tail "mock upstream" "$WORKDIR/mock.log"
            show_log_tail "llm-proxy" "$WORKDIR/proxy.log"
            show_log_tail "nginx" "$WORKDIR/nginx-error.log"
            log "logs and raw wrk output kept in $WORKDIR"
        elif [[ $KEEP_WORKDIR == 1 ]]; then
            log "logs and raw wrk output kept in $WORKDIR"
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

for var in MOCK_PORT PROXY_PORT NGINX_PORT ROUNDS CONNECTIONS SERVER_CORE LOAD_CORE \
    STREAM_REQUESTS STREAM_CHUNKS STREAM_INTERVAL_MS HOLD_CONNECTIONS; do
    is_uint "${!var}" || die "$var must be a non-negative integer, got '${!var}'"
done
((ROUNDS >= 1)) || die "ROUNDS must be >= 1"
((CONNECTIONS >= 1)) || die "CONNECTIONS must be >= 1"
((STREAM_REQUESTS >= 1)) || die "STREAM_REQUESTS must be >= 1"
[[ $DURATION =~ ^[0-9]+[smh]?$ ]] || die "DURATION must look like 10, 10s, 1m (got '$DURATION')"
[[ $WARMUP =~ ^[0-9]+[smh]?$ ]] || die "WARMUP must look like 0, 2s, ... (got '$WARMUP')"
((SERVER_CORE != LOAD_CORE)) || die "SERVER_CORE and LOAD_CORE must differ"

for tool in wrk taskset curl getconf awk pgrep sed sort jq python3; do
    command -v "$tool" >/dev/null 2>&1 ||
        die "'$tool' not found (apt-get install -y wrk util-linux curl procps jq python3)"
done
if ! command -v "$NGINX_BIN" >/dev/null 2>&1; then
    if [[ $NGINX_BIN == nginx && -x /usr/sbin/nginx ]]; then
        NGINX_BIN=/usr/sbin/nginx
    else
        die "'$NGINX_BIN' not found (apt-get install -y nginx)"
    fi
fi
[[ -r $LUA_SCRIPT ]] || die "missing $LUA_SCRIPT"
[[ -r $NGINX_TEMPLATE ]] || die "missing $NGINX_TEMPLATE"
[[ -r $HOLD_SCRIPT ]] || die "missing $HOLD_SCRIPT"

# Phase 4 holds $HOLD_CONNECTIONS connections: the client, llm-proxy and the
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
for var in MOCK_PORT PROXY_PORT NGINX_PORT; do
    if port_in_use "${!var}"; then
        die "$var=${!var} is already in use on 127.0.0.1 (set $var to a free port)"
    fi
done

if pgrep -x rustc >/dev/null 2>&1 || pgrep -x cargo >/dev/null 2>&1; then
    log "WARNING: cargo/rustc is running on this machine; numbers will be noisy"
fi

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/llm-proxy-bench.XXXXXX")

# ---------------------------------------------------------------- helpers --

# Sums of utime and of stime (fields 14 and 15 of /proc/PID/stat, clock
# ticks) over the given processes, as "USER SYS".  /proc/PID/stat covers all
# threads of the process.
cpu_ticks() {
    local user=0 sys=0 pid stat
    local -a f
    for pid in "$@"; do
        stat=$(cat "/proc/$pid/stat") || die "cannot read /proc/$pid/stat (process gone?)"
        stat=${stat##*) } # drop "pid (comm) "; f[0] is then field 3
        read -r -a f <<<"$stat"
        user=$((user + f[11]))
        sys=$((sys + f[12]))
    done
    echo "$user $sys"
}

# http_code URL KEY [OUTFILE]: HTTP status of one chat request ("000" = no
# answer).
http_code() {
    local url=$1 key=$2 out=${3:-/dev/null}
    curl -s -o "$out" --max-time 5 -w '%{http_code}' \
        -H 'Content-Type: application/json' -H "Authorization: Bearer $key" \
        --data "$CHAT_BODY" "$url" || true
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
    is_running "$NGINX_PID" || die "nginx master (pid $NGINX_PID) died"
    local pid
    for pid in "${NGINX_WORKERS[@]}"; do
        is_running "$pid" || die "nginx worker (pid $pid) died or was respawned"
    done
}

# wrk_field FILE KEY: value of KEY=... on the WRK_RESULT line.
wrk_field() {
    local line
    line=$(grep -m1 '^WRK_RESULT ' "$1") || die "no WRK_RESULT line in $1 (wrk failed?): $(tail -n 5 "$1")"
    awk -v k="$2" '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) { print kv[2]; exit } } }' <<<"$line"
}

# run_wrk CORE CONNS DURATION URL KEY OUTFILE
run_wrk() {
    local core=$1 conns=$2 dur=$3 url=$4 key=$5 out=$6 rc=0
    # In the background so that a signal to this script is handled at once
    # (bash runs traps only between foreground commands); cleanup kills it.
    taskset -c "$core" wrk -t1 -c"$conns" -d"$dur" --latency -s "$LUA_SCRIPT" "$url" -- "$key" >"$out" 2>&1 &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    ((rc == 0)) || die "wrk exited with status $rc against $url: $(tail -n 5 "$out")"
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
    sort -g "$WORKDIR/res.$1.$2.$3" |
        awk '{ a[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
# fmt VALUE DECIMALS
fmt() { awk -v v="$1" -v d="$2" 'BEGIN { if (v == "nan") print "n/a"; else printf "%.*f\n", d, v }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f\n", a / b }'; }
diff_us() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+d\n", a - b }'; }

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

# run_stream CORE TARGET REQUESTS OUTFILE: `llm-proxy benchmark` with a paced
# SSE stream, one connection, JSON report in OUTFILE.
run_stream() {
    local core=$1 target=$2 n=$3 out=$4 rc=0 base
    base=http://127.0.0.1:$MOCK_PORT
    case $target in
    proxy) base=http://127.0.0.1:$PROXY_PORT ;;
    nginx) base=http://127.0.0.1:$NGINX_PORT ;;
    esac
    (
        cd "$WORKDIR/run"
        exec taskset -c "$core" "$BIN" benchmark --base-url "$base" --endpoint "$CHAT_PATH" \
            --token "$(key_of "$target")" --json "$STREAM_BODY" \
            -H "x-mock-stream-chunks: $STREAM_CHUNKS" -H "x-mock-chunk-interval-ms: $STREAM_INTERVAL_MS" \
            -r "$n" -c 1 --output json
    ) >"$out" 2>"$out.err" &
    WRK_PID=$!
    wait "$WRK_PID" || rc=$?
    WRK_PID=""
    ((rc == 0)) || die "llm-proxy benchmark exited with status $rc against $target: $(tail -n 5 "$out.err")"
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

url_of() {
    case $1 in
    direct) echo "http://127.0.0.1:$MOCK_PORT$CHAT_PATH" ;;
    proxy) echo "http://127.0.0.1:$PROXY_PORT$CHAT_PATH" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT$CHAT_PATH" ;;
    esac
}
key_of() {
    if [[ $1 == direct ]]; then echo "$UPSTREAM_KEY"; else echo "$CLIENT_KEY"; fi
}
# Processes whose CPU time is charged to a target.
pids_of() {
    case $1 in
    proxy) echo "$PROXY_PID" ;;
    nginx) echo "$NGINX_PID ${NGINX_WORKERS[*]}" ;;
    esac
}

# ---------------------------------------------------------------- start-up --

read -r -a mock_extra <<<"$MOCK_ARGS"
read -r -a proxy_extra <<<"$PROXY_ARGS"

log "binary: $BIN"
log "work dir: $WORKDIR"

log "starting mock upstream on 127.0.0.1:$MOCK_PORT (core $LOAD_CORE)"
# Both llm-proxy processes run in $WORKDIR: the server reads ./.env and
# keeps its data directory (./data) relative to the working directory, and a
# developer's .env must neither change the benchmark nor get a data/ dir.
mkdir -p "$WORKDIR/run"
(
    cd "$WORKDIR/run"
    exec taskset -c "$LOAD_CORE" "$BIN" mock-upstream --addr "127.0.0.1:$MOCK_PORT" \
        --api-key "$UPSTREAM_KEY" "${mock_extra[@]}"
) >"$WORKDIR/mock.log" 2>&1 &
MOCK_PID=$!
wait_ready "mock upstream" "$MOCK_PID" "http://127.0.0.1:$MOCK_PORT/v1/models" \
    "Authorization: Bearer $UPSTREAM_KEY"

# --pin-cores pins worker 0 to core 0, so only pass it when that is our core.
pin_flag=()
if ((SERVER_CORE == 0)); then
    pin_flag=(--pin-cores)
fi
log "starting llm-proxy on 127.0.0.1:$PROXY_PORT (core $SERVER_CORE, 1 worker)"
(
    cd "$WORKDIR/run"
    # Settings that could come from the caller's environment and change
    # what is measured; the command line below says it all.
    unset LISTEN_ADDR DATABASE_PATH API_CONFIG_PATH WORKERS UPSTREAM_CA_FILE \
        ENCRYPTION_KEY REQUIRE_ENCRYPTION_KEY OPENAI_API_KEY
    export MANAGEMENT_TOKEN=$MANAGEMENT_TOKEN
    export OPENAI_API_URL="http://127.0.0.1:$MOCK_PORT"
    exec taskset -c "$SERVER_CORE" "$BIN" server --addr "127.0.0.1:$PROXY_PORT" \
        --db "$WORKDIR/run/data" --workers 1 "${pin_flag[@]}" "${proxy_extra[@]}"
) >"$WORKDIR/proxy.log" 2>&1 &
PROXY_PID=$!
wait_ready "llm-proxy" "$PROXY_PID" "http://127.0.0.1:$PROXY_PORT/health"

# The proxy authenticates clients against its key store: create a project
# holding the upstream key and import the client key into it (no request
# limit, so no quota lease is taken on the measured path).
manage_post() {
    local path=$1 body=$2 out=$3 code
    code=$(curl -s -o "$out" --max-time 10 -w '%{http_code}' \
        -H "Authorization: Bearer $MANAGEMENT_TOKEN" -H 'Content-Type: application/json' \
        --data "$body" "http://127.0.0.1:$PROXY_PORT$path" || true)
    [[ $code == 2?? ]] || die "POST $path answered ${code:-nothing}: $(head -c 300 "$out" 2>/dev/null)"
}
log "creating the benchmark project and client key through the management API"
manage_post /manage/projects "{\"name\":\"bench\",\"openai_api_key\":\"$UPSTREAM_KEY\"}" "$WORKDIR/project.json"
project_id=$(sed -n 's/.*"id":"\([^"]*\)".*/\1/p' "$WORKDIR/project.json")
[[ -n $project_id ]] || die "no project id in $(head -c 300 "$WORKDIR/project.json")"
manage_post /manage/tokens "{\"project_id\":\"$project_id\",\"token\":\"$CLIENT_KEY\",\"alias\":\"bench\"}" \
    "$WORKDIR/token.json"

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
show_affinity nginx-master "$NGINX_PID"
for pid in "${NGINX_WORKERS[@]}"; do show_affinity nginx-worker "$pid"; done

# ----------------------------------------------------------- sanity checks --

log "sanity checks"
code=$(http_code "$(url_of direct)" "$UPSTREAM_KEY" "$WORKDIR/direct.json")
[[ $code == 200 ]] || die "mock upstream answered $code to a chat request with the upstream key: $(head -c 300 "$WORKDIR/direct.json")"
code=$(http_code "$(url_of direct)" "$CLIENT_KEY")
if [[ $code == 401 || $code == 403 ]]; then
    log "  mock rejects the client key ($code): the key swap is exercised"
else
    log "  WARNING: mock answered $code to the client key; --api-key is not enforced, key swap not verified"
fi
for target in proxy nginx; do
    code=$(http_code "$(url_of "$target")" "$CLIENT_KEY" "$WORKDIR/$target.json")
    [[ $code == 200 ]] || die "$target answered $code to a chat request: $(head -c 300 "$WORKDIR/$target.json")"
    code=$(http_code "$(url_of "$target")" wrong-key)
    if [[ $code == 401 || $code == 403 ]]; then
        log "  $target rejects a wrong client key ($code)"
    else
        log "  WARNING: $target answered $code to a wrong client key (expected 401)"
    fi
done
log "  direct response: $(head -c 200 "$WORKDIR/direct.json")"
log "  proxy response:  $(head -c 200 "$WORKDIR/proxy.json")"

# Memory before any load (phase 4 reports it next to the later figures).
for target in proxy nginx; do
    read -r -a pids <<<"$(pids_of "$target")"
    printf -v "MEM_${target}_start" '%s' "$(rss_kb "${pids[@]}")"
done

# ------------------------------------------------ phase 1: throughput/CPU --

echo
echo "== Phase 1: throughput and CPU per request =="
echo "   server under test on core $SERVER_CORE; mock + wrk on core $LOAD_CORE;"
echo "   wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS round(s), CLK_TCK=$CLK_TCK"

if [[ $WARMUP != 0 && $WARMUP != 0[smh] ]]; then
    for target in proxy nginx; do
        log "warm-up: $target for $WARMUP"
        run_wrk "$LOAD_CORE" "$CONNECTIONS" "$WARMUP" "$(url_of "$target")" "$(key_of "$target")" "$WORKDIR/warmup.$target.txt"
        check_wrk "warm-up $target" "$WORKDIR/warmup.$target.txt"
        check_alive
    done
fi

printf '\n%-5s %-6s %10s %10s %7s %8s %8s %8s %6s %11s %7s %7s\n' \
    round target requests req/s errors p50_us p99_us cpu_tick cpu% cpu_us/req usr_us sys_us
for ((round = 1; round <= ROUNDS; round++)); do
    for target in proxy nginx; do
        out=$WORKDIR/tp.$round.$target.txt
        read -r -a pids <<<"$(pids_of "$target")"
        read -r user_before sys_before <<<"$(cpu_ticks "${pids[@]}")"
        run_wrk "$LOAD_CORE" "$CONNECTIONS" "$DURATION" "$(url_of "$target")" "$(key_of "$target")" "$out"
        read -r user_after sys_after <<<"$(cpu_ticks "${pids[@]}")"
        check_wrk "throughput round $round $target" "$out"
        check_alive
        requests=$(wrk_field "$out" requests)
        rps=$(wrk_field "$out" rps)
        errors=$(wrk_field "$out" errors)
        p50=$(wrk_field "$out" p50_us)
        p99=$(wrk_field "$out" p99_us)
        dur_us=$(wrk_field "$out" duration_us)
        user_ticks=$((user_after - user_before))
        sys_ticks=$((sys_after - sys_before))
        ticks=$((user_ticks + sys_ticks))
        per_req() { awk -v t="$1" -v hz="$CLK_TCK" -v n="$requests" 'BEGIN { if (n > 0) printf "%.2f", t * 1e6 / hz / n; else print "nan" }'; }
        cpu_per_req=$(per_req "$ticks")
        usr_per_req=$(per_req "$user_ticks")
        sys_per_req=$(per_req "$sys_ticks")
        cpu_pct=$(awk -v t="$ticks" -v hz="$CLK_TCK" -v d="$dur_us" 'BEGIN { if (d > 0) printf "%.0f", 100 * t / hz / (d / 1e6); else print "nan" }')
        record tp "$target" rps "$rps"
        record tp "$target" cpu_us "$cpu_per_req"
        record tp "$target" cpu_pct "$cpu_pct"
        record tp "$target" usr_us "$usr_per_req"
        record tp "$target" sys_us "$sys_per_req"
        record tp "$target" p50 "$p50"
        record tp "$target" p99 "$p99"
        printf '%-5s %-6s %10s %10s %7s %8s %8s %8s %6s %11s %7s %7s\n' \
            "$round" "$target" "$requests" "$(fmt "$rps" 0)" "$errors" "$p50" "$p99" "$ticks" "$cpu_pct" "$cpu_per_req" \
            "$usr_per_req" "$sys_per_req"
    done
done

for target in proxy nginx; do
    for metric in rps cpu_us cpu_pct usr_us sys_us p50 p99; do
        printf -v "TP_${target}_${metric}" '%s' "$(median tp "$target" "$metric")"
    done
done
# shellcheck disable=SC2154 # TP_* are set through printf -v above
{
    echo
    echo "medians over $ROUNDS round(s):"
    for target in proxy nginx; do
        for metric in rps cpu_us cpu_pct usr_us sys_us p50 p99; do
            var=TP_${target}_${metric}
            printf -v "v_$metric" '%s' "${!var}"
        done
        # shellcheck disable=SC2154 # v_* are set through printf -v above
        printf '  %-6s %10s req/s  %8s cpu_us/req (usr %s + sys %s)  %4s%% cpu  p50 %s us  p99 %s us\n' \
            "$target" "$(fmt "$v_rps" 0)" "$(fmt "$v_cpu_us" 2)" "$(fmt "$v_usr_us" 2)" "$(fmt "$v_sys_us" 2)" \
            "$(fmt "$v_cpu_pct" 0)" "$(fmt "$v_p50" 0)" "$(fmt "$v_p99" 0)"
    done
    echo "  ratio proxy/nginx: cpu_us/req $(ratio "$TP_proxy_cpu_us" "$TP_nginx_cpu_us"), req/s $(ratio "$TP_proxy_rps" "$TP_nginx_rps")"
}

# ---------------------------------------------------- phase 2: latency ----

echo
echo "== Phase 2: added latency =="
echo "   mock, llm-proxy, nginx and wrk all on core $SERVER_CORE; wrk -t1 -c1 -d$DURATION, $ROUNDS round(s)"
# Re-pin every thread of the running mock (rather than starting a second
# one) so the proxy and nginx keep their upstream pools to the same process.
taskset -a -p -c "$SERVER_CORE" "$MOCK_PID" >"$WORKDIR/mock-repin.log" 2>&1 ||
    die "could not re-pin the mock to core $SERVER_CORE: $(cat "$WORKDIR/mock-repin.log")"
show_affinity mock "$MOCK_PID"

if [[ $WARMUP != 0 && $WARMUP != 0[smh] ]]; then
    for target in direct proxy nginx; do
        run_wrk "$SERVER_CORE" 1 1s "$(url_of "$target")" "$(key_of "$target")" "$WORKDIR/warmup-lat.$target.txt"
        check_wrk "latency warm-up $target" "$WORKDIR/warmup-lat.$target.txt"
        check_alive
    done
fi

printf '\n%-5s %-6s %10s %10s %7s %8s %8s %8s\n' round target requests req/s errors p50_us p90_us p99_us
for ((round = 1; round <= ROUNDS; round++)); do
    for target in direct proxy nginx; do
        out=$WORKDIR/lat.$round.$target.txt
        run_wrk "$SERVER_CORE" 1 "$DURATION" "$(url_of "$target")" "$(key_of "$target")" "$out"
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

# ------------------------------------------------- phase 3: streaming -----

echo
echo "== Phase 3: streaming (paced SSE) =="
echo "   mock, llm-proxy, nginx and the client all on core $SERVER_CORE (as phase 2);"
echo "   llm-proxy benchmark -c1 -r$STREAM_REQUESTS, $STREAM_CHUNKS deltas $STREAM_INTERVAL_MS ms apart, $ROUNDS round(s)"

if [[ $WARMUP != 0 && $WARMUP != 0[smh] ]]; then
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

# ---------------------------------------------------- phase 4: memory -----

echo
echo "== Phase 4: memory (VmRSS; nginx = master + worker) =="
for target in proxy nginx; do
    for when in idle held closed; do printf -v "MEM_${target}_${when}" nan; done
done
sleep 1
for target in proxy nginx; do
    read -r -a pids <<<"$(pids_of "$target")"
    printf -v "MEM_${target}_idle" '%s' "$(rss_kb "${pids[@]}")"
done
if ((HOLD_CONNECTIONS > 0)); then
    echo "   $HOLD_CONNECTIONS keep-alive connections, one request each, held open (client on core $LOAD_CORE, ulimit -n $(ulimit -n))"
    for target in proxy nginx; do
        read -r -a pids <<<"$(pids_of "$target")"
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
        sleep 1
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
    printf '\n%-6s %12s %12s %14s %14s\n' server start_MB idle_MB "held_MB" closed_MB
    for target in proxy nginx; do
        s=MEM_${target}_start i=MEM_${target}_idle h=MEM_${target}_held c=MEM_${target}_closed
        printf '%-6s %12s %12s %14s %14s\n' "$target" "$(mb "${!s}")" "$(mb "${!i}")" "$(mb "${!h}")" "$(mb "${!c}")"
    done
    echo "  start = before any load; idle = after phases 1-3; held = with $HOLD_CONNECTIONS connections open; closed = 1 s after they closed"
}

# ---------------------------------------------------------------- summary --

cpu_model=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
kernel=$(uname -r)
today=$(date -u +%Y-%m-%d)
nginx_version=$("$NGINX_BIN" -v 2>&1 | sed 's|.*/||')
wrk_version=$(wrk -v 2>&1 | head -n 1 | awk '{ print $2 }' || true)
proxy_rev=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null || echo "no commit")
if [[ -n $(git -C "$REPO_ROOT" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
    proxy_rev+=" (+ local changes)"
fi

# shellcheck disable=SC2154 # TP_* / LAT_* are set through printf -v above
cat <<EOF

==================== summary (Markdown, paste into docs/benchmarks.md) ====================

### llm-proxy vs nginx, ${today}

Machine: ${NPROC} cores, ${cpu_model:-unknown CPU}, Linux ${kernel}.
llm-proxy ${proxy_rev}, nginx ${nginx_version}, wrk ${wrk_version}.
Run: \`ROUNDS=${ROUNDS} DURATION=${DURATION} CONNECTIONS=${CONNECTIONS} loadtest/compare_nginx.sh\`; medians over ${ROUNDS} interleaved round(s).
Request: non-streaming \`POST ${CHAT_PATH}\` (${#CHAT_BODY}-byte body) to the built-in mock upstream; both servers check the client key and swap it for the upstream key.

**Throughput and CPU cost** (server on core ${SERVER_CORE}, one worker; mock and \`wrk -t1 -c${CONNECTIONS}\` on core ${LOAD_CORE}):

| server | req/s | CPU µs / request | server CPU % | p50 µs | p99 µs |
| --- | ---: | ---: | ---: | ---: | ---: |
| llm-proxy | $(fmt "$TP_proxy_rps" 0) | $(fmt "$TP_proxy_cpu_us" 2) | $(fmt "$TP_proxy_cpu_pct" 0) | $(fmt "$TP_proxy_p50" 0) | $(fmt "$TP_proxy_p99" 0) |
| nginx | $(fmt "$TP_nginx_rps" 0) | $(fmt "$TP_nginx_cpu_us" 2) | $(fmt "$TP_nginx_cpu_pct" 0) | $(fmt "$TP_nginx_p50" 0) | $(fmt "$TP_nginx_p99" 0) |
| ratio llm-proxy / nginx | $(ratio "$TP_proxy_rps" "$TP_nginx_rps") | $(ratio "$TP_proxy_cpu_us" "$TP_nginx_cpu_us") | | | |

**Added latency** (mock, server and \`wrk -t1 -c1\` all on core ${SERVER_CORE}):

| path | p50 µs | p99 µs | added p50 µs | added p99 µs |
| --- | ---: | ---: | ---: | ---: |
| direct to mock | $(fmt "$LAT_direct_p50" 0) | $(fmt "$LAT_direct_p99" 0) | | |
| via llm-proxy | $(fmt "$LAT_proxy_p50" 0) | $(fmt "$LAT_proxy_p99" 0) | $(diff_us "$LAT_proxy_p50" "$LAT_direct_p50") | $(diff_us "$LAT_proxy_p99" "$LAT_direct_p99") |
| via nginx | $(fmt "$LAT_nginx_p50" 0) | $(fmt "$LAT_nginx_p99" 0) | $(diff_us "$LAT_nginx_p50" "$LAT_direct_p50") | $(diff_us "$LAT_nginx_p99" "$LAT_direct_p99") |

**Streaming** (paced SSE: ${STREAM_CHUNKS} deltas ${STREAM_INTERVAL_MS} ms apart; \`llm-proxy benchmark -c1 -r${STREAM_REQUESTS}\`, mock, server and client all on core ${SERVER_CORE}; gap = per-stream mean inter-event gap, median over streams):

| path | first event p50 µs | first event p99 µs | mean gap µs | added first event p50 µs | added first event p99 µs | added gap µs |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
| direct to mock | $(fmt "$ST_direct_fe50" 0) | $(fmt "$ST_direct_fe99" 0) | $(fmt "$ST_direct_gap50" 0) | | | |
| via llm-proxy | $(fmt "$ST_proxy_fe50" 0) | $(fmt "$ST_proxy_fe99" 0) | $(fmt "$ST_proxy_gap50" 0) | $(diff_us "$ST_proxy_fe50" "$ST_direct_fe50") | $(diff_us "$ST_proxy_fe99" "$ST_direct_fe99") | $(diff_us "$ST_proxy_gap50" "$ST_direct_gap50") |
| via nginx | $(fmt "$ST_nginx_fe50" 0) | $(fmt "$ST_nginx_fe99" 0) | $(fmt "$ST_nginx_gap50" 0) | $(diff_us "$ST_nginx_fe50" "$ST_direct_fe50") | $(diff_us "$ST_nginx_fe99" "$ST_direct_fe99") | $(diff_us "$ST_nginx_gap50" "$ST_direct_gap50") |

**Memory** (VmRSS; nginx = master + worker; ${HOLD_CONNECTIONS} keep-alive connections that each completed one request, held open by \`loadtest/hold_connections.py\`):

| server | before any load MB | idle after phases 1–3 MB | ${HOLD_CONNECTIONS} connections MB | after they close MB |
| --- | ---: | ---: | ---: | ---: |
| llm-proxy | $(mb "$MEM_proxy_start") | $(mb "$MEM_proxy_idle") | $(mb "$MEM_proxy_held") | $(mb "$MEM_proxy_closed") |
| nginx | $(mb "$MEM_nginx_start") | $(mb "$MEM_nginx_idle") | $(mb "$MEM_nginx_held") | $(mb "$MEM_nginx_closed") |

EOF

if ((${#FAILURES[@]} > 0)); then
    {
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        echo "!! BENCHMARK INVALID: ${#FAILURES[@]} run(s) had errors or non-2xx responses:"
        for f in "${FAILURES[@]}"; do echo "!!   $f"; done
        echo "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
    } >&2
    exit 1
fi
log "all runs completed without errors"
