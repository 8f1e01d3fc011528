#!/usr/bin/env bash
# Instructions per request of the proxy's own code, counted by callgrind.
#
# Wall-clock and CPU numbers drift on shared machines; instruction counts do
# not: the same binary, requests and settings give the same count whatever
# else the machine is doing. This script compares binaries by that count, for
# the plain pass-through (a project key, no model registered), the routed
# path (a registered model: body read, rewrite, usage accounting) and cache
# hits (the pass-through request opted in to the response cache with
# `benchmark --cache`: every request after the first is answered from it).
#
#   loadtest/instructions.sh BIN [BIN...]      # e.g. before and after a change
#   PATHS=pass-through loadtest/instructions.sh BIN [BIN...]   # one path only
#   KEEP=DIR loadtest/instructions.sh BIN...   # keep each run's callgrind dump in DIR,
#       for `callgrind_annotate --inclusive=yes DIR/<name>-<path>.cg`
#
# Per binary and path: one server (one worker) under
# `valgrind --tool=callgrind`, REQUESTS warm-up requests, counters zeroed,
# REQUESTS measured requests over one keep-alive connection, counters dumped.
# Prints the user-space instructions per request (kernel time is not counted:
# it is the same for every binary that makes the same system calls).
# Needs valgrind (callgrind_control), curl; loopback only.
set -euo pipefail

REQUESTS=${REQUESTS:-2000}
MOCK_PORT=${MOCK_PORT:-19201}
PROXY_PORT=${PROXY_PORT:-19202}
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
ROUTED_BODY='{"model":"bench-model","messages":[{"role":"user","content":"hi"}]}'

if [[ $# -eq 0 ]]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 1
fi

for port in "$MOCK_PORT" "$PROXY_PORT"; do
    if curl -s -o /dev/null "http://127.0.0.1:$port/"; then
        echo "port $port is taken: set MOCK_PORT / PROXY_PORT" >&2
        exit 1
    fi
done

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
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

# callgrind_control OPTION PID. valgrind acts on the command only when one of
# the server's threads runs: an idle worker may wait in the kernel for
# longer than vgdb does, so a few health checks keep one busy meanwhile
# (each a few thousand instructions, against millions measured).
control() {
    (while sleep 0.05; do curl -s -o /dev/null "http://127.0.0.1:$PROXY_PORT/health"; done) &
    local poke=$!
    callgrind_control "$1" "$2" >/dev/null 2>&1
    kill "$poke"
    wait "$poke" 2>/dev/null || true
}

# Measures one binary on one path; prints instructions per request.
measure() {
    local bin=$1 path=$2 dir=$work/run
    rm -rf "$dir" && mkdir -p "$dir"
    local token
    token=$("$bin" setup --openai-key sk-mock --config "$dir/.env" --db "$dir/data" \
        | sed -n 's/^Token: //p')
    local management
    management=$(sed -n 's/^MANAGEMENT_TOKEN=//p' "$dir/.env")
    local body=$BODY
    if [[ $path == routed ]]; then
        # The model is registered by the server run plainly first: under
        # valgrind, a management write (answered from the blocking pool)
        # does not come back.
        OPENAI_API_URL=http://127.0.0.1:$MOCK_PORT EVENT_LOG=false WORKERS=1 \
            "$bin" server --config "$dir/.env" --addr "127.0.0.1:$PROXY_PORT" \
            >"$dir/register.log" 2>&1 &
        local plain=$!
        pids+=("$plain")
        wait_port "$PROXY_PORT"
        curl -sf --max-time 30 -o /dev/null "http://127.0.0.1:$PROXY_PORT/model/new" \
            -H "Authorization: Bearer $management" -H 'Content-Type: application/json' \
            -d "{\"model_name\":\"bench-model\",\"litellm_params\":{\"model\":\"openai/gpt-4o-mini\",\"api_base\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"api_key\":\"sk-mock\"},\"model_info\":{\"input_cost_per_token\":0.00000015,\"output_cost_per_token\":0.0000006}}"
        kill -TERM "$plain"
        wait "$plain" 2>/dev/null || true
        body=$ROUTED_BODY
    fi
    OPENAI_API_URL=http://127.0.0.1:$MOCK_PORT EVENT_LOG=false WORKERS=1 \
        valgrind --tool=callgrind --callgrind-out-file="$dir/cg.out" \
        "$bin" server --config "$dir/.env" --addr "127.0.0.1:$PROXY_PORT" \
        >"$dir/server.log" 2>&1 &
    local server=$!
    pids+=("$server")
    wait_port "$PROXY_PORT"
    local run=("$bin" benchmark --base-url "http://127.0.0.1:$PROXY_PORT"
        --endpoint /v1/chat/completions --token "$token" -r "$REQUESTS" -c 1 --json "$body"
        --output json)
    [[ $path == cache-hit ]] && run+=(--cache)
    "${run[@]}" >"$dir/warmup.json"
    control -z "$server"
    "${run[@]}" >"$dir/measured.json"
    control -d "$server"
    # The counts are dumped: no need to wait for a drain under valgrind.
    kill -9 "$server"
    wait "$server" 2>/dev/null || true
    local ok
    ok=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["status"].get("200",0))' "$dir/measured.json" 2>/dev/null || echo "?")
    # The dump after zeroing is the highest-numbered part file.
    local dump
    dump=$(ls -v "$dir"/cg.out.* 2>/dev/null | grep -v '\.1$' | tail -1 || true)
    [[ -n $dump ]] || dump=$(ls -v "$dir"/cg.out* | tail -1)
    if [[ -n ${KEEP:-} ]]; then
        mkdir -p "$KEEP" && cp "$dump" "$KEEP/$(basename "$bin")-$path.cg"
    fi
    local total
    total=$(sed -n 's/^summary: //p; s/^totals: //p' "$dump" | head -1 | awk '{print $1}')
    printf '%-40s %-13s %14s %8s\n' "$bin" "$path" "$((total / REQUESTS))" "$ok/$REQUESTS"
}

first_bin=$1
"$first_bin" mock-upstream --addr "127.0.0.1:$MOCK_PORT" --api-key sk-mock >/dev/null 2>&1 &
pids+=("$!")
wait_port "$MOCK_PORT" 2>/dev/null || sleep 1

printf '%-40s %-13s %14s %8s\n' binary path 'instr/request' 'ok'
for path in ${PATHS:-pass-through routed cache-hit}; do
    for bin in "$@"; do
        measure "$bin" "$path"
    done
done
