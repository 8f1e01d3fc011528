#!/usr/bin/env python3
"""Open N keep-alive connections, complete one request on each, hold them open.

Used by loadtest/compare_nginx.sh (phase 5, memory).  Standard library only.

    hold_connections.py --port 19002 --key sk-bench [-n 10000] [--batch 256]

Every connection sends one `POST /v1/chat/completions` (non-streaming) and
reads the whole response (Content-Length or chunked); connections are opened
`--batch` at a time so the server's listen backlog never overflows.  When all
are done it prints

    READY opened=N ok=N failed=N

on stdout and keeps every connection open until SIGTERM/SIGINT; then it checks each
with a non-blocking peek (EOF = closed by the server), prints

    FINAL open=N closed_by_peer=N

and exits (0 if every connection completed its request and none was closed by
the server, 1 otherwise).  Progress and errors go to stderr.
"""

import argparse
import errno
import selectors
import signal
import socket
import sys
import time

BODY = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


def request_bytes(host, port, path, key):
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


class Conn:
    __slots__ = ("sock", "out", "buf", "state", "status")

    def __init__(self, sock, out):
        self.sock = sock
        self.out = out  # bytes still to send
        self.buf = b""
        self.state = "connect"  # connect -> send -> recv -> done | failed
        self.status = 0

    def response_complete(self):
        """True once buf holds a whole response (head + body)."""
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = self.buf[:end].decode("latin-1").split("\r\n")
        body = self.buf[end + 4:]
        try:
            self.status = int(head[0].split()[1])
        except (IndexError, ValueError):
            raise ValueError("bad status line %r" % head[0])
        length = None
        chunked = False
        for line in head[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            return body.endswith(b"0\r\n\r\n")
        return len(body) >= (length or 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/chat/completions")
    ap.add_argument("--key", required=True)
    ap.add_argument("-n", "--connections", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=256, help="connections in progress at once")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds for opening all")
    args = ap.parse_args()

    stop = False

    def on_signal(_sig, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    req = request_bytes(args.host, args.port, args.path, args.key)
    sel = selectors.DefaultSelector()
    held = []  # connections that completed their request
    failed = 0
    first_error = ""
    started = 0
    in_progress = 0
    deadline = time.monotonic() + args.timeout

    def fail(c, why):
        nonlocal failed, in_progress, first_error
        failed += 1
        in_progress -= 1
        if not first_error:
            first_error = why
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()
        c.state = "failed"

    while (started < args.connections or in_progress > 0) and not stop:
        if time.monotonic() > deadline:
            print(f"timeout after {args.timeout}s: {len(held)} done, {in_progress} in progress",
                  file=sys.stderr)
            break
        while started < args.connections and in_progress < args.batch:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c = Conn(s, req)
            started += 1
            in_progress += 1
            rc = s.connect_ex((args.host, args.port))
            if rc not in (0, errno.EINPROGRESS):
                fail(c, "connect: " + errno.errorcode.get(rc, str(rc)))
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=0.5):
            c = key.data
            try:
                if c.state == "connect":
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(c, "connect: " + errno.errorcode.get(err, str(err)))
                        continue
                    c.state = "send"
                if c.state == "send":
                    n = c.sock.send(c.out)
                    c.out = c.out[n:]
                    if not c.out:
                        c.state = "recv"
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                if c.state == "recv":
                    data = c.sock.recv(65536)
                    if not data:
                        fail(c, "closed before the response was complete")
                        continue
                    c.buf += data
                    if c.response_complete():
                        if c.status != 200:
                            fail(c, f"status {c.status}")
                            continue
                        c.state = "done"
                        c.buf = b""
                        in_progress -= 1
                        held.append(c)
                        # Held from now on; whether the server closed it is
                        # checked with a non-blocking peek at the end.
                        sel.unregister(c.sock)
                    continue
            except (OSError, ValueError) as e:
                fail(c, f"{type(e).__name__}: {e}")

    def count_open():
        open_n = 0
        for c in held:
            if c.state != "done":
                continue
            try:
                data = c.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                if data:
                    open_n += 1  # unexpected data, but the connection is open
                else:
                    c.state = "closed"
            except BlockingIOError:
                open_n += 1
            except OSError:
                c.state = "closed"
        return open_n

    ok = len(held)
    print(f"READY opened={started} ok={ok} failed={failed}", flush=True)
    if first_error:
        print(f"first error: {first_error}", file=sys.stderr, flush=True)

    while not stop:
        time.sleep(0.2)

    open_n = count_open()
    closed = ok - open_n
    print(f"FINAL open={open_n} closed_by_peer={closed}", flush=True)
    for c in held:
        c.sock.close()
    sys.exit(0 if failed == 0 and closed == 0 and ok == args.connections else 1)


if __name__ == "__main__":
    main()
