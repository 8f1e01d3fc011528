#!/usr/bin/env bash
# What sharing the response cache between workers costs: CPU per cache hit
# and CPU per stored answer, for two builds of llm-proxy side by side, with
# 1, 2 and 4 workers; and how long a store takes to reach the other workers.
#
#   loadtest/cache_workers.sh AFTER_BIN [BEFORE_BIN]
#   ROUNDS=5 HITS=40000 STORE_SECONDS=4 WORKER_COUNTS="1 2 4" loadtest/cache_workers.sh ...
#
# Each turn starts a server (all its threads on core 0; the mock upstream and
# the load on core 1), then:
#   hits    `llm-proxy benchmark --cache` sends one fixed opted-in POST over
#           4 keep-alive connections, HITS times after a warm-up (every worker
#           holds the answer by then, with either build): all hits;
#   stores  wrk (loadtest/distinct_gets.lua) sends GETs whose queries never
#           repeat for STORE_SECONDS: every request a miss whose answer is
#           stored (and, with sharing, sent to every other worker).
# The server's utime+stime over each part (from /proc) is divided by the
# requests (hits by `benchmark`'s count, stores by the server's
# llm_proxy_cache_stores_total). Builds take turns in each round; prints each
# turn, then the medians and after/before ratios. With sharing, the store
# part also prints llm_proxy_cache_share_delay_seconds: the mean delay from a
# store to another worker holding it, and the share within 100 µs and 1 ms.
# Last, an idle measurement: 4 workers, 400 stores 2 ms apart from one
# client, and the same delay figures. Loopback only.
set -euo pipefail

AFTER=${1:?usage: loadtest/cache_workers.sh AFTER_BIN [BEFORE_BIN]}
BEFORE=${2:-}
ROUNDS=${ROUNDS:-5}
HITS=${HITS:-40000}
STORE_SECONDS=${STORE_SECONDS:-4}
WORKER_COUNTS=${WORKER_COUNTS:-"1 2 4"}
MOCK_PORT=${MOCK_PORT:-19301}
PROXY_PORT=${PROXY_PORT:-19302}
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"the same question"}]}'
here=$(cd "$(dirname "$0")" && pwd)

work=$(mktemp -d)
pids=()
server=
cleanup() {
    for pid in "${pids[@]}" $server; do kill "$pid" 2>/dev/null || true; done
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

taskset -c 1 "$AFTER" mock-upstream --addr "127.0.0.1:$MOCK_PORT" --api-key sk-mock >/dev/null 2>&1 &
pids+=("$!")
wait_port "$MOCK_PORT"

# One data directory per build (their stores need not share a format).
declare -A env_of key_of
for bin in "$AFTER" $BEFORE; do
    dir="$work/$(basename "$bin")-$RANDOM"
    mkdir -p "$dir"
    # The project's key from `setup`: pass-through, no model registered.
    key_of[$bin]=$("$bin" setup --openai-key sk-mock --config "$dir/.env" --db "$dir/data" |
        sed -n 's/^Token: //p')
    env_of[$bin]=$dir/.env
done

start() { # bin workers
    local bin=$1 workers=$2
    OPENAI_API_URL=http://127.0.0.1:$MOCK_PORT WORKERS=$workers \
        taskset -c 0 "$bin" server --config "${env_of[$bin]}" --addr "127.0.0.1:$PROXY_PORT" \
        >"$work/server.log" 2>&1 &
    server=$!
    wait_port "$PROXY_PORT"
}
stop() {
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=
}
ticks() { awk '{print $14 + $15}' "/proc/$server/stat"; }
hz=$(getconf CLK_TCK)
metric_sum() { # name: the sum of its samples
    curl -sf "http://127.0.0.1:$PROXY_PORT/metrics" |
        awk -v n="$1" '$1 ~ "^"n"[{ ]" || $1 == n {s += $NF} END {printf "%d\n", s}'
}
share_delay() { # mean µs, share within 100 µs, within 1 ms, count (or "-")
    curl -sf "http://127.0.0.1:$PROXY_PORT/metrics" | python3 -c '
import re, sys
buckets, total, seconds = {}, 0, 0.0
for line in sys.stdin:
    if not line.startswith("llm_proxy_cache_share_delay_seconds"):
        continue
    value = float(line.rsplit(" ", 1)[1])
    bound = re.search(r"le=\"([^\"]+)\"", line)
    if bound:
        buckets[bound.group(1)] = value
    elif line.startswith("llm_proxy_cache_share_delay_seconds_sum"):
        seconds = value
    elif line.startswith("llm_proxy_cache_share_delay_seconds_count"):
        total = value
if not total:
    print("- - - 0")
else:
    within = lambda bound: buckets.get(bound, 0) / total * 100
    mean = seconds / total * 1e6
    low, mid = within("0.0001"), within("0.001")
    print(f"{mean:.0f} {low:.1f}% {mid:.1f}% {total:.0f}")'
}
cpu_us() { python3 -c "print(f'{($2 - $1) * 1e6 / $hz / $3:.2f}')"; }

hits() { # bin: CPU µs per hit
    local bin=$1 before after
    # Warm-up on 64 connections: whichever build, every worker has seen the
    # answer (or been sent it) before the measured run.
    taskset -c 1 "$bin" benchmark --base-url "http://127.0.0.1:$PROXY_PORT" \
        --endpoint /v1/chat/completions --token "${key_of[$bin]}" -r 2000 -c 64 --cache \
        --json "$BODY" --output json >/dev/null
    before=$(ticks)
    taskset -c 1 "$bin" benchmark --base-url "http://127.0.0.1:$PROXY_PORT" \
        --endpoint /v1/chat/completions --token "${key_of[$bin]}" -r "$HITS" -c 4 --cache \
        --json "$BODY" --output json >"$work/hits.json"
    after=$(ticks)
    local hit
    hit=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["cache"]["hit"])' "$work/hits.json")
    [[ $hit == "$HITS" ]] || { echo "only $hit of $HITS were hits" >&2; exit 1; }
    cpu_us "$before" "$after" "$HITS"
}

stores() { # bin: CPU µs per stored answer
    local bin=$1 before after s0 s1
    s0=$(metric_sum llm_proxy_cache_stores_total)
    before=$(ticks)
    taskset -c 1 wrk -t1 -c4 -d"${STORE_SECONDS}s" -s "$here/distinct_gets.lua" \
        "http://127.0.0.1:$PROXY_PORT" -- "${key_of[$bin]}" >/dev/null
    after=$(ticks)
    s1=$(metric_sum llm_proxy_cache_stores_total)
    cpu_us "$before" "$after" $((s1 - s0))
}

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A results
printf '%-6s %-8s %-8s %10s %12s   %s\n' round build workers 'hit µs' 'store µs' 'share delay: mean µs, ≤100µs, ≤1ms, count'
for round in $(seq 1 "$ROUNDS"); do
    for workers in $WORKER_COUNTS; do
        for bin in $BEFORE "$AFTER"; do
            label=after
            [[ $bin == "$BEFORE" ]] && label=before
            start "$bin" "$workers"
            h=$(hits "$bin")
            s=$(stores "$bin")
            d=$(share_delay 2>/dev/null || echo "- - - -")
            stop
            results[$label-$workers-hit]+="$h "
            results[$label-$workers-store]+="$s "
            printf '%-6s %-8s %-8s %10s %12s   %s\n' "$round" "$label" "$workers" "$h" "$s" "$d"
        done
    done
done

echo
printf '%-8s %-8s %10s %12s\n' median workers 'hit µs' 'store µs'
for workers in $WORKER_COUNTS; do
    for label in before after; do
        [[ -n ${results[$label-$workers-hit]:-} ]] || continue
        # shellcheck disable=SC2086
        printf '%-8s %-8s %10s %12s\n' "$label" "$workers" \
            "$(median ${results[$label-$workers-hit]})" "$(median ${results[$label-$workers-store]})"
    done
    if [[ -n $BEFORE ]]; then
        # shellcheck disable=SC2086
        python3 -c "
hb, ha, sb, sa = $(median ${results[before-$workers-hit]}), $(median ${results[after-$workers-hit]}), $(median ${results[before-$workers-store]}), $(median ${results[after-$workers-store]})
print(f'ratio    $workers        {ha / hb:10.3f} {sa / sb:12.3f}   (after / before)')"
    fi
done

echo
echo "idle: 4 workers, 400 stores 2 ms apart from one client"
start "$AFTER" 4
python3 - "$PROXY_PORT" "${key_of[$AFTER]}" <<'PY'
import http.client, sys, time
port, key = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port)
for n in range(400):
    conn.request("GET", f"/v1/models?idle={n}", headers={"Authorization": f"Bearer {key}"})
    conn.getresponse().read()
    time.sleep(0.002)
PY
sleep 1
echo "share delay: mean µs, ≤100µs, ≤1ms, count: $(share_delay)"
stop
