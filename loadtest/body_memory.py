#!/usr/bin/env python3
"""Peak memory of an llm-proxy server while many clients send large request
bodies at once, on the two paths that hold a body whole before it goes
upstream:

- routed: a registered model (the body is read to find `model`);
- cache:  a POST with `Cache-Control: public, max-age=60` (the body is part
  of the cache key), no model registered.

For each path a fresh mock upstream and a fresh server are started; CLIENTS
clients (100) each send one BODY_MB (9) MB chat body at the same moment, on
their own connection, and the server's peak resident memory (VmHWM from
/proc/PID/status) is reported with the answers' statuses. Not a test: a
measurement, printed as a Markdown table for docs/benchmarks.md.

    cargo build --release
    loadtest/body_memory.py                       # target/release/llm-proxy
    LLM_PROXY_BIN=/tmp/llm-proxy-before loadtest/body_memory.py
    CLIENTS=100 BODY_MB=9 WORKERS=2 LATENCY_MS=0 loadtest/body_memory.py

Other server settings (MAX_BUFFERED_BODY_BYTES, ...) are passed on from the
environment when set. Python 3 standard library only.
"""

import http.client
import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("LLM_PROXY_BIN", "target/release/llm-proxy")
CLIENTS = int(os.environ.get("CLIENTS", "100"))
BODY_MB = int(os.environ.get("BODY_MB", "9"))
WORKERS = os.environ.get("WORKERS", str(os.cpu_count() or 1))
LATENCY_MS = os.environ.get("LATENCY_MS", "0")
PASSED_ON = ["MAX_BUFFERED_BODY_BYTES", "MAX_REQUEST_SIZE", "CLIENT_BODY_TIMEOUT"]

MANAGEMENT_TOKEN = "mt-body-memory-%d" % os.getpid()
UPSTREAM_KEY = "sk-upstream-body-memory"
CLIENT_KEY = "sk-client-body-memory"
LISTENING = re.compile(r"listening on http://([0-9.]+:[0-9]+)")


def start(args, cwd, env):
    """Starts `llm-proxy ARGS`; returns the process and its address."""
    proc = subprocess.Popen(
        [os.path.abspath(BIN)] + args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 30
    for line in proc.stderr:
        found = LISTENING.search(line)
        if found:
            # Keep draining stderr so that the process never blocks on it.
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()
            return proc, found.group(1)
        if time.time() > deadline:
            break
    proc.kill()
    sys.exit("%s did not start" % " ".join(args[:1]))


def call(addr, method, path, body=None, token=MANAGEMENT_TOKEN):
    host, port = addr.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
    conn.request(method, path, json.dumps(body) if body is not None else None, headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    if response.status >= 300:
        sys.exit("%s %s answered %d: %s" % (method, path, response.status, data[:300]))
    return json.loads(data) if data else None


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def send_all(addr, path, key, model, extra_headers):
    """CLIENTS requests at once; returns their statuses (or error names)."""
    host, port = addr.split(":")
    filler = b"x" * (BODY_MB * 1000 * 1000 - 120)  # shared: the client stays small
    barrier = threading.Barrier(CLIENTS)
    results = [None] * CLIENTS

    def client(n):
        prefix = ('{"model":"%s","messages":[{"role":"user","content":"%d ' % (model, n)).encode()
        suffix = b'"}]}'
        length = len(prefix) + len(filler) + len(suffix)
        try:
            conn = http.client.HTTPConnection(host, int(port), timeout=120)
            conn.putrequest("POST", path)
            conn.putheader("Authorization", "Bearer " + key)
            conn.putheader("Content-Type", "application/json")
            conn.putheader("Content-Length", str(length))
            for name, value in extra_headers:
                conn.putheader(name, value)
            barrier.wait()
            conn.endheaders()
            conn.send(prefix)
            conn.send(filler)
            conn.send(suffix)
            response = conn.getresponse()
            response.read()
            results[n] = str(response.status)
            conn.close()
        except Exception as error:  # a reset connection is a result too
            results[n] = type(error).__name__

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    return counts


def scenario(name):
    with tempfile.TemporaryDirectory(prefix="body-memory-") as work:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        mock, mock_addr = start(
            ["mock-upstream", "--addr", "127.0.0.1:0", "--workers", "1",
             "--latency-ms", LATENCY_MS],
            work,
            env,
        )
        server_env = dict(env)
        server_env.update(
            MANAGEMENT_TOKEN=MANAGEMENT_TOKEN,
            OPENAI_API_URL="http://%s" % mock_addr,
            EVENT_LOG="false",
        )
        for var in PASSED_ON:
            if var in os.environ:
                server_env[var] = os.environ[var]
        server, addr = start(
            ["server", "--addr", "127.0.0.1:0", "--db", os.path.join(work, "data"),
             "--workers", WORKERS],
            work,
            server_env,
        )
        try:
            project = call(addr, "POST", "/manage/projects",
                           {"name": "bench", "openai_api_key": UPSTREAM_KEY})
            call(addr, "POST", "/manage/tokens",
                 {"project_id": project["id"], "token": CLIENT_KEY})
            if name == "routed":
                call(addr, "POST", "/model/new", {
                    "model_name": "big",
                    "litellm_params": {"model": "openai/big-upstream",
                                       "api_base": "http://%s/v1" % mock_addr,
                                       "api_key": UPSTREAM_KEY},
                })
                key = call(addr, "POST", "/key/generate", {})["key"]
                model, headers = "big", []
            else:
                key, model = CLIENT_KEY, "gpt-4o"
                headers = [("Cache-Control", "public, max-age=60")]
            idle = status_kb(server.pid, "VmHWM")
            started = time.time()
            counts = send_all(addr, "/v1/chat/completions", key, model, headers)
            elapsed = time.time() - started
            peak = status_kb(server.pid, "VmHWM")
            return name, idle, peak, counts, elapsed
        finally:
            server.kill()
            mock.kill()
            server.wait()
            mock.wait()


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main():
    if not os.path.exists(BIN):
        sys.exit("no %s: cargo build --release first (or set LLM_PROXY_BIN)" % BIN)
    settings = ", ".join("%s=%s" % (v, os.environ[v]) for v in PASSED_ON if v in os.environ)
    print("binary: %s; %d clients x %d MB; server --workers %s; mock latency %s ms%s"
          % (BIN, CLIENTS, BODY_MB, WORKERS, LATENCY_MS, "; " + settings if settings else ""))
    print("machine: %s, %d cores, Linux %s" % (cpu_model(), os.cpu_count() or 0, platform.release()))
    print()
    print("| path | peak RSS | RSS before | sent | answers | wall time |")
    print("|---|---|---|---|---|---|")
    for name in ["routed", "cache"]:
        name, idle, peak, counts, elapsed = scenario(name)
        answers = ", ".join("%s × %s" % (n, s) for s, n in sorted(counts.items()))
        print("| %s | %.0f MiB | %.0f MiB | %d MB | %s | %.1f s |"
              % (name, peak / 1024, idle / 1024, CLIENTS * BODY_MB, answers, elapsed))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
