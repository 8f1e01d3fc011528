#!/usr/bin/env python3
"""The varied half of loadtest/soak.sh, and its sampler.

seed:  a project, KEYS client keys (sk-soak-0 ...), one registered model
       (soak-routed) served by the mock upstream.
drive: for DURATION seconds, as fast as one keep-alive connection goes,
       requests that differ in everything a client chooses: valid keys
       (round robin over KEYS), invalid keys, request ids, unknown paths,
       model names, and cache opt-in POSTs of distinct bodies.  Every
       SAMPLE seconds: the server's memory from /proc/PID/status and the
       size of one /metrics scrape, printed and written as CSV.
"""

import argparse
import http.client
import json
import sys
import time
import urllib.parse


class Client:
    def __init__(self, base):
        url = urllib.parse.urlparse(base)
        self.host, self.port = url.hostname, url.port
        self.conn = None

    def call(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                return response.status, payload
            except (OSError, http.client.HTTPException):
                if self.conn is not None:
                    self.conn.close()
                self.conn = None
                if attempt == 1:
                    return 0, b""
        return 0, b""


def seed(args):
    client = Client(args.base)
    auth = {"Authorization": f"Bearer {args.management_token}"}
    status, body = client.call(
        "POST", "/manage/projects", {"name": "soak", "openai_api_key": "sk-mock"}, auth
    )
    if status != 201:
        sys.exit(f"create project: {status} {body!r}")
    project = json.loads(body)["id"]
    for i in range(args.keys):
        status, body = client.call(
            "POST", "/manage/tokens", {"project_id": project, "token": f"sk-soak-{i}"}, auth
        )
        if status != 201:
            sys.exit(f"create key {i}: {status} {body!r}")
    model = {
        "model_name": "soak-routed",
        "litellm_params": {
            "model": "openai/gpt-4o-mini",
            "api_base": f"{args.mock}/v1",
            "api_key": "sk-mock",
        },
        "model_info": {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002},
    }
    status, body = client.call("POST", "/model/new", model, auth)
    if status != 200:
        sys.exit(f"register model: {status} {body!r}")
    print(f"seeded: project {project}, {args.keys} keys, model soak-routed", file=sys.stderr)


def memory(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[name] = int(value.split()[0])
    return fields


def drive(args):
    client = Client(args.base)
    scraper = Client(args.base)
    start = time.monotonic()
    next_sample = start
    out = open(args.out, "w")
    header = (
        "seconds,requests,rss_kib,anon_kib,file_kib,hwm_kib,metrics_bytes,metrics_lines,"
        "events_dropped"
    )
    print(header)
    out.write(header + "\n")
    i = 0
    counts = {}
    while True:
        now = time.monotonic()
        if now >= next_sample:
            _, text = scraper.call("GET", "/metrics")
            mem = memory(args.pid)
            samples = [line for line in text.splitlines() if line and not line.startswith(b"#")]
            dropped = sum(
                float(line.rsplit(b" ", 1)[1])
                for line in samples
                if line.startswith(b"llm_proxy_events_dropped_total")
            )
            row = (
                f"{now - start:.0f},{i},{mem['VmRSS']},{mem['RssAnon']},{mem['RssFile']},"
                f"{mem['VmHWM']},{len(text)},{len(samples)},{dropped:.0f}"
            )
            print(row, flush=True)
            out.write(row + "\n")
            out.flush()
            next_sample += args.sample
            if now - start >= args.duration:
                break
        key = f"sk-soak-{i % args.keys}"
        auth = {"Authorization": f"Bearer {key}", "X-Request-ID": f"soak-{i}-{time.time_ns()}"}
        chat = {"model": "soak-routed", "messages": [{"role": "user", "content": f"hi {i}"}]}
        kind = i % 6
        if kind == 0:
            status, _ = client.call("POST", "/v1/chat/completions", chat, auth)
        elif kind == 1:
            bad = {"Authorization": f"Bearer sk-bad-{i}", "X-Request-ID": f"bad-{i}"}
            status, _ = client.call("POST", "/v1/chat/completions", chat, bad)
        elif kind == 2:
            status, _ = client.call("GET", f"/v1/unknown/{i}?q={i}", None, auth)
        elif kind == 3:
            other = dict(chat, model=f"model-{i}")
            status, _ = client.call("POST", "/v1/chat/completions", other, auth)
        elif kind == 4:
            cached = dict(auth, **{"Cache-Control": "public, max-age=600"})
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"c{i}"}]}
            status, _ = client.call("POST", "/v1/chat/completions", body, cached)
        else:
            stream = dict(chat, stream=True)
            status, _ = client.call("POST", "/v1/chat/completions", stream, auth)
        counts[status] = counts.get(status, 0) + 1
        i += 1
    print(f"driver statuses: {dict(sorted(counts.items()))}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--base", required=True)
    s.add_argument("--management-token", required=True)
    s.add_argument("--mock", required=True)
    s.add_argument("--keys", type=int, default=2000)
    d = sub.add_parser("drive")
    d.add_argument("--base", required=True)
    d.add_argument("--keys", type=int, default=2000)
    d.add_argument("--duration", type=float, default=300)
    d.add_argument("--sample", type=float, default=10)
    d.add_argument("--pid", type=int, required=True)
    d.add_argument("--out", default="soak.csv")
    args = parser.parse_args()
    seed(args) if args.command == "seed" else drive(args)


if __name__ == "__main__":
    main()
