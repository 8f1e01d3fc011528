#!/usr/bin/env bash
# Shared mode against single-node mode, in one run: CPU per request of the
# proxy processes, p99 latency, and what the shared store costs PostgreSQL
# (its transactions and statements per 1,000 requests).
#
#   loadtest/shared.sh [BIN]                 # default target/release/llm-proxy
#   ROUNDS=5 REQUESTS=20000 loadtest/shared.sh
#
# A throw-away PostgreSQL (initdb in a temporary directory; as root it runs
# as the `postgres` user), the mock upstream, and three setups in front of
# it, each with one worker per node and the nodes pinned to core 0 (load
# generator, mock and PostgreSQL on core 1):
#   single  one node, LMDB only;
#   node    one node of two on one PostgreSQL, all the load on it (its CPU alone);
#   shared  two nodes on one PostgreSQL, the load split between them.
# Two keys each: one unlimited, one with max_requests, a budget, rpm and tpm
# limits high enough never to refuse (what is measured is the cost of
# holding them across nodes). The setups and keys take turns, ROUNDS times;
# each turn sends REQUESTS requests over 4 keep-alive connections per node.
# Prints each turn, then the medians. Loopback only.
set -euo pipefail

BIN=$(realpath "${1:-target/release/llm-proxy}")
ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-20000}
MOCK_PORT=${MOCK_PORT:-19321}
SINGLE_PORT=${SINGLE_PORT:-19322}
NODE1_PORT=${NODE1_PORT:-19323}
NODE2_PORT=${NODE2_PORT:-19324}
PG_PORT=${PG_PORT:-19325}
BODY='{"model":"bench-model","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
TOKEN=mt-loadtest-shared-0123456789

work=$(mktemp -d)
chmod 755 "$work"
pids=()
pg_bin=$(dirname "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | tail -1)")
as_pg=()
if [[ $(id -u) == 0 ]]; then
    as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
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

for port in "$MOCK_PORT" "$SINGLE_PORT" "$NODE1_PORT" "$NODE2_PORT" "$PG_PORT"; do
    if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/"; then
        echo "port $port is taken (a run left behind?): stop what listens there first" >&2
        exit 1
    fi
done

# PostgreSQL, with pg_stat_statements to count what the nodes ask of it.
mkdir -p "$work/pg"
[[ ${#as_pg[@]} == 0 ]] || chown postgres "$work" "$work/pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg" -U llmproxy --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
"${as_pg[@]}" taskset -c 1 "$pg_bin/pg_ctl" -D "$work/pg" -l "$work/pg/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $work/pg -c shared_preload_libraries=pg_stat_statements" \
    start >/dev/null
psql() { command psql -h 127.0.0.1 -p "$PG_PORT" -U llmproxy -X -q -At "$@"; }
psql -d postgres -c 'CREATE DATABASE llmproxy'
psql -d llmproxy -c 'CREATE EXTENSION pg_stat_statements'
url="postgres://llmproxy@127.0.0.1:$PG_PORT/llmproxy"

taskset -c 1 "$BIN" mock-upstream --addr "127.0.0.1:$MOCK_PORT" --api-key sk-mock >/dev/null 2>&1 &
pids+=("$!")

start_node() { # PORT DIR [DATABASE_URL]
    local port=$1 dir=$2 database=${3:-}
    DATABASE_URL=$database NODE_ID=node-$port MANAGEMENT_TOKEN=$TOKEN EVENT_LOG=false WORKERS=1 \
        taskset -c 0 "$BIN" server --addr "127.0.0.1:$port" --db "$dir" >"$dir.log" 2>&1 &
    pids+=("$!")
    echo "$!"
}
single=$(start_node "$SINGLE_PORT" "$work/single")
node1=$(start_node "$NODE1_PORT" "$work/node1" "$url")
node2=$(start_node "$NODE2_PORT" "$work/node2" "$url")
wait_port "$MOCK_PORT"
for port in "$SINGLE_PORT" "$NODE1_PORT" "$NODE2_PORT"; do wait_port "$port"; done

manage() { # PORT PATH BODY
    local answer status
    answer=$(curl -s --max-time 30 -w '\n%{http_code}' "http://127.0.0.1:$1$2" \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -H 'X-Wait-For-Nodes: 5' -d "$3")
    status=${answer##*$'\n'}
    if [[ $status != 2* ]]; then
        echo "POST $2 on port $1 answered $status: ${answer%$'\n'*}" >&2
        tail -n 5 "$work"/*.log "$work/pg/log" >&2
        exit 1
    fi
    echo "${answer%$'\n'*}"
}
key_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])'; }
model="{\"model_name\":\"bench-model\",\"litellm_params\":{\"model\":\"openai/gpt-4o-mini\",\"api_base\":\"http://127.0.0.1:$MOCK_PORT/v1\",\"api_key\":\"sk-mock\"},\"model_info\":{\"input_cost_per_token\":0.00000015,\"output_cost_per_token\":0.0000006}}"
limits='{"max_requests":1000000000,"max_budget":1000000,"rpm_limit":1000000000,"tpm_limit":1000000000000}'
declare -A keys
for setup in single shared; do
    port=$SINGLE_PORT
    [[ $setup == shared ]] && port=$NODE1_PORT
    manage "$port" /model/new "$model" >/dev/null
    keys[$setup/unlimited]=$(manage "$port" /key/generate '{}' | key_of)
    keys[$setup/limited]=$(manage "$port" /key/generate "$limits" | key_of)
done
keys[node/unlimited]=${keys[shared/unlimited]}
keys[node/limited]=${keys[shared/limited]}

ticks() { # PIDS...: utime+stime, summed
    local total=0 pid
    for pid in "$@"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat"))); done
    echo "$total"
}
pg_counts() {
    psql -d llmproxy -c "SELECT (SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'llmproxy'), (SELECT coalesce(sum(calls), 0) FROM pg_stat_statements)"
}
hz=$(getconf CLK_TCK)
bench() { # PORT KEY N OUT
    taskset -c 1 "$BIN" benchmark --base-url "http://127.0.0.1:$1" --endpoint /v1/chat/completions \
        --token "$2" -r "$3" -c 4 --json "$BODY" --output json >"$4"
}
# One turn: prints "cpu_us_per_request p99_ms pg_xacts_per_1000 pg_statements_per_1000".
turn() { # SETUP KIND
    local setup=$1 key=${keys[$1/$2]} before after pg_before pg_after
    local procs=("$single")
    [[ $setup == node ]] && procs=("$node1")
    [[ $setup == shared ]] && procs=("$node1" "$node2")
    before=$(ticks "${procs[@]}")
    pg_before=$(pg_counts)
    if [[ $setup == shared ]]; then
        bench "$NODE1_PORT" "$key" $((REQUESTS / 2)) "$work/a.json" &
        local a=$!
        bench "$NODE2_PORT" "$key" $((REQUESTS / 2)) "$work/b.json"
        wait "$a"
    else
        local port=$SINGLE_PORT
        [[ $setup == node ]] && port=$NODE1_PORT
        bench "$port" "$key" "$REQUESTS" "$work/a.json"
        echo '{"status":{"200":0},"latency_us":{"p99":0}}' >"$work/b.json"
    fi
    after=$(ticks "${procs[@]}")
    pg_after=$(pg_counts)
    python3 - "$work/a.json" "$work/b.json" "$REQUESTS" "$before" "$after" "$hz" "$pg_before" "$pg_after" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
requests, before, after, hz = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
ok = a["status"].get("200", 0) + b["status"].get("200", 0)
if ok != requests:
    sys.exit(f"only {ok} of {requests} answered 200")
def p99(run):
    latency = run.get("latency_us") or {}
    return float(latency.get("p99", 0)) / 1000
pg0 = [int(x) for x in sys.argv[7].split("|")]
pg1 = [int(x) for x in sys.argv[8].split("|")]
cpu = (after - before) * 1e6 / hz / requests
print(f"{cpu:.1f} {max(p99(a), p99(b)):.2f} {(pg1[0] - pg0[0]) * 1000 / requests:.2f} {(pg1[1] - pg0[1]) * 1000 / requests:.2f}")
PY
}

# A warm-up turn each, not counted.
for setup in single node shared; do for kind in unlimited limited; do turn "$setup" "$kind" >/dev/null; done; done
declare -A results
for round in $(seq 1 "$ROUNDS"); do
    for setup in single node shared; do
        for kind in unlimited limited; do
            line=$(turn "$setup" "$kind")
            results[$setup/$kind]+="$line;"
            echo "round $round $setup $kind: cpu µs/req, p99 ms, pg xacts/1000, pg statements/1000 = $line"
        done
    done
done
echo
python3 - "${results[single/unlimited]}" "${results[single/limited]}" "${results[node/unlimited]}" "${results[node/limited]}" "${results[shared/unlimited]}" "${results[shared/limited]}" <<'PY'
import statistics, sys
names = ["single unlimited", "single limited", "node unlimited", "node limited", "shared unlimited", "shared limited"]
medians = {}
for name, text in zip(names, sys.argv[1:]):
    rows = [[float(x) for x in line.split()] for line in text.strip(";").split(";")]
    medians[name] = [statistics.median(col) for col in zip(*rows)]
    cpu, p99, xacts, statements = medians[name]
    print(f"{name:17} cpu {cpu:6.1f} µs/req  p99 {p99:6.2f} ms  pg {xacts:6.2f} xacts, {statements:6.2f} statements per 1000 requests")
for kind in ["unlimited", "limited"]:
    s = medians[f"single {kind}"]
    for setup in ["node", "shared"]:
        d = medians[f"{setup} {kind}"]
        print(f"{kind}: {setup}/single cpu {d[0] / s[0]:.3f}x, p99 {d[1] / s[1] if s[1] else float('nan'):.2f}x")
PY
echo "idle: PostgreSQL statements per second of the two nodes (heartbeats, catch-up, reclaim):"
b=$(pg_counts); sleep 10; a=$(pg_counts)
python3 -c "import sys; b=[int(x) for x in sys.argv[1].split('|')]; a=[int(x) for x in sys.argv[2].split('|')]; print(f'{(a[1]-b[1])/10:.1f} statements/s, {(a[0]-b[0])/10:.1f} transactions/s')" "$b" "$a"
