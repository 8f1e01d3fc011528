#!/usr/bin/env bash
# What translating a stream costs: the same Anthropic Messages stream from
# the mock upstream, relayed as it comes (an Anthropic client on
# /v1/messages) and translated event by event into Chat Completions chunks
# (an OpenAI client on /v1/chat/completions), through one deployment.
#
#   loadtest/translated_stream.sh BIN [BIN...]
#
# Per binary and mode:
# - instructions per request of the proxy (callgrind, one worker, REQUESTS
#   streams of CHUNKS deltas over one keep-alive connection, after as many
#   to warm up): repeatable, unlike CPU time on a shared machine;
# - time to first event at concurrency 1 (no valgrind, the mock pacing its
#   deltas PACE_MS apart), through the proxy and directly from the mock
#   (its /v1/messages): p50 and p99, and the proxy's added p50.
# Needs valgrind (callgrind_control), curl, python3; loopback only.
set -euo pipefail

REQUESTS=${REQUESTS:-500}
CHUNKS=${CHUNKS:-20}
PACE_MS=${PACE_MS:-2}
LATENCY_REQUESTS=${LATENCY_REQUESTS:-300}
MOCK_PORT=${MOCK_PORT:-19211}
PROXY_PORT=${PROXY_PORT:-19212}
MESSAGES_BODY='{"model":"claude","max_tokens":256,"stream":true,"messages":[{"role":"user","content":"hi"}]}'
CHAT_BODY='{"model":"claude","stream":true,"messages":[{"role":"user","content":"hi"}]}'

if [[ $# -eq 0 ]]; then
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
fi

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [[ -n ${KEEP_WORK:-} ]] || rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 600); do
        if curl -s -o /dev/null "http://127.0.0.1:$1/health"; then return 0; fi
        sleep 0.1
    done
    echo "port $1 did not answer" >&2
    exit 1
}

# As in instructions.sh: health checks keep a thread busy so that valgrind
# acts on callgrind_control.
control() {
    (while sleep 0.05; do curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/health"; done) &
    local poke=$!
    callgrind_control "$1" "$2" >/dev/null 2>&1
    kill "$poke"
    wait "$poke" 2>/dev/null || true
}

start_mock() { # BIN PACE
    "$1" mock-upstream --addr "127.0.0.1:$MOCK_PORT" --stream-chunks "$CHUNKS" \
        --chunk-interval-ms "$2" >"$work/mock.log" 2>&1 &
    MOCK_PID=$!
    pids+=("$MOCK_PID")
    wait_port "$MOCK_PORT"
}

stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# A data directory with a key, and the deployment `claude` at the mock's
# Messages API; prints the key.
prepare() { # BIN DIR
    local bin=$1 dir=$2 token management
    rm -rf "$dir" && mkdir -p "$dir"
    token=$("$bin" setup --openai-key sk-mock --config "$dir/.env" --db "$dir/data" \
        | sed -n 's/^Token: //p')
    management=$(sed -n 's/^MANAGEMENT_TOKEN=//p' "$dir/.env")
    OPENAI_API_URL=http://127.0.0.1:$MOCK_PORT EVENT_LOG=false WORKERS=1 \
        "$bin" server --config "$dir/.env" --addr "127.0.0.1:$PROXY_PORT" \
        >"$dir/register.log" 2>&1 &
    local plain=$!
    pids+=("$plain")
    wait_port "$PROXY_PORT"
    curl -sf --max-time 30 -o /dev/null "http://127.0.0.1:$PROXY_PORT/model/new" \
        -H "Authorization: Bearer $management" -H 'Content-Type: application/json' \
        -d "{\"model_name\":\"claude\",\"litellm_params\":{\"model\":\"anthropic/claude-x\",\"api_base\":\"http://127.0.0.1:$MOCK_PORT\",\"api_key\":\"sk-mock\"},\"model_info\":{\"input_cost_per_token\":0.000003,\"output_cost_per_token\":0.000015}}"
    stop "$plain"
    echo "$token"
}

bench() { # BIN URL TOKEN ENDPOINT BODY N OUT
    "$1" benchmark --base-url "$2" --token "$3" --endpoint "$4" --json "$5" \
        -H "anthropic-version: 2023-06-01" -r "$6" -c 1 --output json >"$7"
}

field() { # FILE PYTHON-EXPR over r
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print($2)" "$1"
}

mode_request() { # MODE -> "ENDPOINT BODY"
    case $1 in
        relay) echo "/v1/messages" ;;
        translated) echo "/v1/chat/completions" ;;
    esac
}
mode_body() {
    case $1 in
        relay) echo "$MESSAGES_BODY" ;;
        translated) echo "$CHAT_BODY" ;;
    esac
}

results=()
for bin in "$@"; do
    dir=$work/run
    # Instructions: an unpaced stream.
    start_mock "$bin" 0
    token=$(prepare "$bin" "$dir")
    for mode in relay translated; do
        OPENAI_API_URL=http://127.0.0.1:$MOCK_PORT EVENT_LOG=false WORKERS=1 \
            valgrind --tool=callgrind --callgrind-out-file="$dir/cg-$mode.out" \
            "$bin" server --config "$dir/.env" --addr "127.0.0.1:$PROXY_PORT" \
            >"$dir/server-$mode.log" 2>&1 &
        server=$!
        pids+=("$server")
        wait_port "$PROXY_PORT"
        endpoint=$(mode_request "$mode")
        body=$(mode_body "$mode")
        url=http://127.0.0.1:$PROXY_PORT
        bench "$bin" "$url" "$token" "$endpoint" "$body" "$REQUESTS" "$dir/warmup.json"
        control -z "$server"
        bench "$bin" "$url" "$token" "$endpoint" "$body" "$REQUESTS" "$dir/measured.json"
        control -d "$server"
        kill -9 "$server"
        wait "$server" 2>/dev/null || true
        ok=$(field "$dir/measured.json" 'r["status"].get("200",0)')
        dump=$(ls -v "$dir"/cg-"$mode".out.* 2>/dev/null | grep -v '\.1$' | tail -1 || true)
        [[ -n $dump ]] || dump=$(ls -v "$dir"/cg-"$mode".out* | tail -1)
        total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1; exit}')
        results+=("$(printf '%-40s %-11s instructions/request %8d  (%s/%s ok)' \
            "$bin" "$mode" "$((total / REQUESTS))" "$ok" "$REQUESTS")")
    done
    stop "$MOCK_PID"

    # Time to first event: a paced stream, no valgrind.
    start_mock "$bin" "$PACE_MS"
    OPENAI_API_URL=http://127.0.0.1:$MOCK_PORT EVENT_LOG=false WORKERS=1 \
        "$bin" server --config "$dir/.env" --addr "127.0.0.1:$PROXY_PORT" \
        >"$dir/server-latency.log" 2>&1 &
    server=$!
    pids+=("$server")
    wait_port "$PROXY_PORT"
    bench "$bin" "http://127.0.0.1:$MOCK_PORT" sk-mock /v1/messages \
        "$MESSAGES_BODY" "$LATENCY_REQUESTS" "$dir/direct.json"
    direct=$(field "$dir/direct.json" 'r["streams"]["first_event_us"]["p50"]')
    for mode in relay translated; do
        bench "$bin" "http://127.0.0.1:$PROXY_PORT" "$token" "$(mode_request "$mode")" \
            "$(mode_body "$mode")" "$LATENCY_REQUESTS" "$dir/latency-$mode.json"
        read -r p50 p99 < <(field "$dir/latency-$mode.json" \
            'r["streams"]["first_event_us"]["p50"], r["streams"]["first_event_us"]["p99"]' | tr -d '(),')
        results+=("$(printf '%-40s %-11s first event p50 %6sus p99 %6sus, added p50 %6sus (direct p50 %sus)' \
            "$bin" "$mode" "$p50" "$p99" "$(python3 -c "print(round($p50 - $direct, 1))")" "$direct")")
    done
    stop "$server"
    stop "$MOCK_PID"
done
printf '%s\n' "${results[@]}"
