#!/usr/bin/env bash
# Memory soak: a mixed load on one llm-proxy server for $DURATION seconds,
# sampling its memory (/proc/PID/status: VmRSS, RssAnon, RssFile) and the
# size of a /metrics scrape every $SAMPLE seconds.  Prints one CSV line per
# sample (and writes it to $OUT, default soak.csv) and a summary line.
#
# The server ($WORKERS workers) runs alone on SERVER_CORE (0); the mock
# upstream, the load generators and the sampler on LOAD_CORE (1).
#
# The load, all at once, open loop (`llm-proxy benchmark --rate`):
#   chat JSON of a registered model, chat streams, embeddings, model
#   listings, cache opt-in POSTs of one body, requests with an invalid key;
# and from loadtest/soak_driver.py, keep-alive, as fast as it goes:
#   cache opt-in POSTs of distinct bodies, many distinct valid keys
#   ($KEYS), invalid keys, request ids, paths and model names, and a
#   /metrics scrape each round.
#
# Usage: loadtest/soak.sh            (5 minutes)
#        DURATION=60 loadtest/soak.sh
# Knobs (defaults): LLM_PROXY_BIN=target/release/llm-proxy DURATION=300
#   SAMPLE=10 WORKERS=2 KEYS=2000 SERVER_CORE=0 LOAD_CORE=1
#   MOCK_PORT=19101 PROXY_PORT=19102 OUT=soak.csv
#   RATE_CHAT=400 RATE_STREAM=50 RATE_EMBED=200 RATE_MODELS=100
#   RATE_CACHED=200 RATE_BADKEY=100
#   PROXY_ENV="HTTP_CACHE_MAX_BYTES=16MB"  extra settings of the server
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${LLM_PROXY_BIN:-target/release/llm-proxy}
DURATION=${DURATION:-300}
SAMPLE=${SAMPLE:-10}
WORKERS=${WORKERS:-2}
KEYS=${KEYS:-2000}
SERVER_CORE=${SERVER_CORE:-0}
LOAD_CORE=${LOAD_CORE:-1}
MOCK_PORT=${MOCK_PORT:-19101}
PROXY_PORT=${PROXY_PORT:-19102}
OUT=${OUT:-soak.csv}
PROXY_ENV=${PROXY_ENV:-HTTP_CACHE_MAX_BYTES=16MB}
MGMT=soak-management-token-0123456789
BASE="http://127.0.0.1:$PROXY_PORT"

[ -x "$BIN" ] || cargo build --release --bin llm-proxy
WORK=$(mktemp -d /tmp/llm-proxy-soak.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    sleep 1
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then echo "logs in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

wait_port() {
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    exit 1
}

taskset -c "$LOAD_CORE" "$BIN" mock-upstream --addr "127.0.0.1:$MOCK_PORT" \
    --stream-chunks 16 >"$WORK/mock.log" 2>&1 &
PIDS+=($!)
wait_port "$MOCK_PORT"

# shellcheck disable=SC2086
env -i PATH="$PATH" MANAGEMENT_TOKEN="$MGMT" OPENAI_API_URL="http://127.0.0.1:$MOCK_PORT" \
    LOG_LEVEL=warn $PROXY_ENV \
    taskset -c "$SERVER_CORE" "$BIN" server --addr "127.0.0.1:$PROXY_PORT" \
    --workers "$WORKERS" --db "$WORK/data" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_port "$PROXY_PORT"

# A project, $KEYS keys (sk-soak-0 ... ), one registered model.
taskset -c "$LOAD_CORE" python3 loadtest/soak_driver.py seed --base "$BASE" \
    --management-token "$MGMT" --mock "http://127.0.0.1:$MOCK_PORT" --keys "$KEYS"

CHAT='{"model":"soak-routed","messages":[{"role":"user","content":"Hello there"}]}'
STREAM='{"model":"soak-routed","stream":true,"messages":[{"role":"user","content":"Hello"}]}'
EMBED='{"model":"text-embedding-3-small","input":["one","two"]}'
CACHED='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"cached"}]}'
load() {
    local rate=$1 endpoint=$2 token=$3
    shift 3
    taskset -c "$LOAD_CORE" "$BIN" benchmark --base-url "$BASE" --endpoint "$endpoint" \
        --token "$token" --duration "${DURATION}s" --rate "$rate" -c 4 "$@" \
        >"$WORK/load-${endpoint//\//_}-$rate.log" 2>&1 &
    PIDS+=($!)
}
load "${RATE_CHAT:-400}" /v1/chat/completions sk-soak-0 --json "$CHAT"
load "${RATE_STREAM:-50}" /v1/chat/completions sk-soak-1 --json "$STREAM"
load "${RATE_EMBED:-200}" /v1/embeddings sk-soak-2 --json "$EMBED"
load "${RATE_MODELS:-100}" /v1/models sk-soak-3 --method get
load "${RATE_CACHED:-200}" /v1/chat/completions sk-soak-4 --json "$CACHED" --cache
load "${RATE_BADKEY:-100}" /v1/chat/completions sk-not-a-key --json "$CHAT"

taskset -c "$LOAD_CORE" python3 loadtest/soak_driver.py drive --base "$BASE" \
    --keys "$KEYS" --duration "$DURATION" --sample "$SAMPLE" --pid "$SERVER_PID" \
    --out "$OUT"
