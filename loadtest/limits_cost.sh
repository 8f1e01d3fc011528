#!/usr/bin/env bash
# CPU per request of a rate-limited key against an unlimited one, on the
# routed path, in one run of one server.
#
#   loadtest/limits_cost.sh [BIN]        # default target/release/llm-proxy
#   ROUNDS=5 REQUESTS=20000 loadtest/limits_cost.sh
#
# One server (one worker, pinned to core 0) in front of the mock upstream;
# two keys: one without limits, one with rpm, tpm and parallel limits high
# enough never to refuse (what is measured is the cost of enforcing them).
# The keys take turns, ROUNDS times each, REQUESTS requests over 4 keep-alive
# connections per turn (load generator and mock on core 1); the server's
# utime+stime over each turn (from /proc) is divided by the requests.
# Prints each turn and the medians; loopback only.
set -euo pipefail

BIN=${1:-target/release/llm-proxy}
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-40000}
MOCK_PORT=${MOCK_PORT:-19311}
PROXY_PORT=${PROXY_PORT:-19312}
BODY='{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 1 300); do
        if curl -s -o /dev/null "http://127.0.0.1:$1/health"; then return 0; fi
        sleep 0.1
    done
    echo "port $1 did not answer" >&2
    exit 1
}

taskset -c 1 "$BIN" mock-upstream --addr "127.0.0.1:$MOCK_PORT" --api-key sk-mock >/dev/null 2>&1 &
pids+=("$!")
"$BIN" setup --openai-key sk-mock --config "$work/.env" --db "$work/data" >/dev/null
management=$(sed -n 's/^MANAGEMENT_TOKEN=//p' "$work/.env")
OPENAI_API_URL=http://127.0.0.1:$MOCK_PORT EVENT_LOG=false WORKERS=1 \
    taskset -c 0 "$BIN" server --config "$work/.env" --addr "127.0.0.1:$PROXY_PORT" \
    >"$work/server.log" 2>&1 &
server=$!
pids+=("$server")
wait_port "$MOCK_PORT"
wait_port "$PROXY_PORT"

manage() {
    curl -sf --max-time 30 "http://127.0.0.1:$PROXY_PORT$1" \
        -H "Authorization: Bearer $management" -H 'Content-Type: application/json' -d "$2"
}
manage /model/new "{\"model_name\":\"bench-model\",\"litellm_params\":{\"model\":\"openai/gpt-4o-mini\",\"api_base\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"api_key\":\"sk-mock\"},\"model_info\":{\"input_cost_per_token\":0.00000015,\"output_cost_per_token\":0.0000006}}" >/dev/null
key_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'; }
unlimited=$(manage /key/generate '{}' | key_of)
limited=$(manage /key/generate '{"rpm_limit":1000000000,"tpm_limit":1000000000000,"max_parallel_requests":1000}' | key_of)

ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
hz=$(getconf CLK_TCK)
run() {
    local key=$1 before after
    before=$(ticks)
    taskset -c 1 "$BIN" benchmark --base-url "http://127.0.0.1:$PROXY_PORT" \
        --endpoint /v1/chat/completions --token "$key" -r "$REQUESTS" -c 4 \
        --json "$BODY" --output json >"$work/run.json"
    after=$(ticks)
    local ok
    ok=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["status"].get("200",0))' "$work/run.json")
    [[ $ok == "$REQUESTS" ]] || { echo "only $ok of $REQUESTS answered 200" >&2; exit 1; }
    # µs of CPU per request.
    python3 -c "print(f'{($after - $before) * 1e6 / $hz / $REQUESTS:.1f}')"
}

# A warm-up turn each, not counted.
run "$unlimited" >/dev/null
run "$limited" >/dev/null
plain=() capped=()
printf '%-6s %14s %14s\n' round 'unlimited µs' 'limited µs'
for round in $(seq 1 "$ROUNDS"); do
    a=$(run "$unlimited")
    b=$(run "$limited")
    plain+=("$a") capped+=("$b")
    printf '%-6s %14s %14s\n' "$round" "$a" "$b"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${plain[@]}")
mc=$(median "${capped[@]}")
printf 'median %13s %14s   ratio %s\n' "$mp" "$mc" "$(python3 -c "print(round($mc/$mp, 3) if $mp else 'n/a')")"
