"""A fault-injecting HTTP/1.1 reverse proxy for the S3 tests.

Listens on 127.0.0.1 (a free port) and forwards every request byte for byte,
Host header included (SigV4 signs it and the server checks what it receives),
to one upstream host:port, keeping a client's connection alive across
requests.  Faults, switchable at any time from the test (attribute writes
are atomic; the random draw is under a lock, from a seeded random.Random):

- error_rate: answer 500 InternalError or 503 SlowDown, S3-style XML, without
  forwarding;
- drop_rate: forward, then send the headers and half the body (only part of
  the status line when there is no body) and close the connection;
- stall_rate / stall_seconds: forward, then hold the answer for stall_seconds
  and close without sending anything;
- reset_rate: send the server the request's head and half its body (a cut
  upload; just the head when there is no body), then reset both connections
  (RST, not FIN): the client sees ECONNRESET where it waits for the answer;
- down: close every connection as soon as it is accepted or sends a request;
- put_latency: seconds every PUT waits before it is forwarded (as a distant
  S3 would make it wait);
- bucket_region: a HeadBucket (HEAD of /BUCKET, no key) is answered 301
  with `x-amz-bucket-region: <it>`, without forwarding, as AWS S3 answers
  one sent to another region than the bucket's.

`signed` holds (method, target, Authorization header) of every request
received, in order.

`counts` holds requests, forwarded, errors, drops, stalls, resets and refused
(connections closed because the proxy is down or the server could not be
reached), and per method the faults injected ("drops GET", "errors PUT",
"resets PUT", ...).
"""
from __future__ import annotations

import os
import random
import socket
import struct
import threading
import time

ERRORS = (
    (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
)


class FaultProxy:
    def __init__(self, upstream_host: str, upstream_port: int, seed: int = 1234) -> None:
        self.upstream = (upstream_host, int(upstream_port))
        self.error_rate = self.drop_rate = self.stall_rate = self.reset_rate = 0.0
        self.stall_seconds = 5.0
        self.put_latency = 0.0
        self.bucket_region: str | None = None
        self.signed: list[tuple[str, str, str]] = []
        self.down = False
        self.methods: frozenset[bytes] | None = None  # None: faults hit every method
        self.errors = ERRORS
        self.counts = {k: 0 for k in ("requests", "forwarded", "errors", "drops", "stalls", "resets", "refused")}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener: socket.socket | None = None
        self.port = 0

    # -- control ---------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_faults(self, *, error_rate=0.0, drop_rate=0.0, stall_rate=0.0, stall_seconds=None, down=False,
                   methods=None, error=None, reset_rate=0.0):
        """Rates of each fault; `methods` (e.g. ("POST",)): only requests of
        these are hit; `error`: the one (status, reason, code, message) to
        answer with instead of 500s and 503s."""
        with self._lock:
            self.errors = ERRORS if error is None else (error,)
            self.error_rate, self.drop_rate, self.stall_rate, self.down = error_rate, drop_rate, stall_rate, down
            self.reset_rate = reset_rate
            self.methods = None if methods is None else frozenset(m.encode() for m in methods)
            if stall_seconds is not None:
                self.stall_seconds = stall_seconds

    def clear(self) -> None:
        self.set_faults()

    def start(self) -> "FaultProxy":
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        self._spawn(self._accept_loop, "faultproxy-accept")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._listener is not None:
            _close(self._listener)  # shutdown() wakes the thread blocked in accept()
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            _close(s)
        end = time.monotonic() + timeout
        for t in list(self._threads):
            t.join(max(0.0, end - time.monotonic()))

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- machinery -------------------------------------------------------------
    def _spawn(self, target, name, *args) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _count(self, key: str, method: bytes = b"") -> None:
        with self._lock:
            self.counts[key] += 1
            if method:  # e.g. "drops GET": which requests a fault hit
                name = f"{key} {method.decode()}"
                self.counts[name] = self.counts.get(name, 0) + 1

    def _track(self, s: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(s)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                self._count("refused")
                _close(client)
                continue
            self._track(client, True)
            self._spawn(self._serve, "faultproxy-conn", client)

    def _draw(self, method: bytes) -> tuple[str, tuple]:
        """The fate of one request (and the error to answer with), from the seeded generator."""
        with self._lock:
            self.counts["requests"] += 1
            if self.down:
                return "down", ()
            if self.methods is not None and method not in self.methods:
                return "forward", ()
            r, error = self._rng.random(), self._rng.choice(self.errors)
            for kind, rate in (("error", self.error_rate), ("drop", self.drop_rate), ("stall", self.stall_rate),
                               ("reset", self.reset_rate)):
                if r < rate:
                    return kind, error
                r -= rate
            return "forward", ()

    def _serve(self, client: socket.socket) -> None:
        upstream = up_file = None
        cfile = client.makefile("rb")
        try:
            while not self._stop.is_set():
                head = _read_head(cfile)
                if head is None:
                    return
                method = head.split(b" ", 1)[0].upper()
                request = head + _read_body(cfile, head, is_response=False)
                target = head.split(b" ", 2)[1].decode(errors="replace")
                with self._lock:
                    self.signed.append((method.decode(), target,
                                        (_header(head, b"authorization") or b"").decode(errors="replace")))
                if self.bucket_region and method == b"HEAD" and "/" not in target.split("?")[0].strip("/"):
                    client.sendall(f"HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: {self.bucket_region}"
                                   "\r\nContent-Length: 0\r\n\r\n".encode())
                    continue
                fault, error = self._draw(method)
                if fault == "down":
                    self._count("refused")
                    return
                if fault == "error":
                    self._count("errors", method)
                    client.sendall(_error_response(*error))
                    continue
                if method == b"PUT" and self.put_latency:
                    self._stop.wait(self.put_latency)
                if upstream is None:
                    try:
                        upstream = socket.create_connection(self.upstream, timeout=120)
                    except OSError:
                        self._count("refused")
                        return
                    self._track(upstream, True)
                    up_file = upstream.makefile("rb")
                if fault == "reset":
                    self._count("resets", method)
                    body_len = len(request) - len(head)
                    upstream.sendall(request[: len(head) + body_len // 2])  # the server sees a cut upload
                    _reset(upstream)
                    _reset(client)
                    return
                upstream.sendall(request)
                rhead = _read_head(up_file)
                if rhead is None:
                    return
                status = int(rhead.split(b" ", 2)[1])
                no_body = method == b"HEAD" or status in (204, 304) or 100 <= status < 200
                body = b"" if no_body else _read_body(up_file, rhead, is_response=True)
                self._count("forwarded")
                if fault == "drop":
                    self._count("drops", method)
                    # no body: cut the status line itself, so the client cannot take it for an answer
                    client.sendall(rhead + body[: len(body) // 2] if body else rhead[:10])
                    return
                if fault == "stall":
                    self._count("stalls", method)
                    self._stop.wait(self.stall_seconds)
                    return
                client.sendall(rhead + body)
                unframed = not no_body and _header(rhead, b"content-length") is None and \
                    _header(rhead, b"transfer-encoding") is None
                if unframed or b"close" in (_header(rhead, b"connection"), _header(head, b"connection")):
                    return
        except OSError:
            return
        finally:
            for s in (client, upstream):
                if s is not None:
                    self._track(s, False)
                    _close(s)


def _reset(s: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER with a zero timeout).
    The descriptor is closed at once, even while a makefile() still refers
    to the socket (socket.close() would wait for that to be closed too)."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    fd = s.detach()
    if fd >= 0:
        os.close(fd)


def _close(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()


def _read_head(f) -> bytes | None:
    """Start line and headers up to the blank line, raw; None at a clean EOF."""
    lines = []
    while True:
        line = f.readline(65537)
        if not line:
            if lines:
                raise OSError("connection closed inside a message head")
            return None
        if not lines and line in (b"\r\n", b"\n"):
            continue  # tolerate stray CRLF between messages
        lines.append(line)
        if line in (b"\r\n", b"\n"):
            return b"".join(lines)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            return value.strip().lower()
    return None


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise OSError("connection closed inside a message body")
    return data


def _read_body(f, head: bytes, *, is_response: bool) -> bytes:
    """The body exactly as framed on the wire (chunked framing kept)."""
    if b"chunked" in (_header(head, b"transfer-encoding") or b""):
        parts = []
        while True:
            size_line = f.readline(65537)
            if not size_line.endswith(b"\n"):
                raise OSError("connection closed inside a chunked body")
            parts.append(size_line)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers up to the blank line
                    line = f.readline(65537)
                    parts.append(line)
                    if line in (b"\r\n", b"\n", b""):
                        return b"".join(parts)
            parts.append(_read_exact(f, size + 2))
    length = _header(head, b"content-length")
    if length is not None:
        return _read_exact(f, int(length))
    return f.read() if is_response else b""  # a response without framing ends at close


def _error_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>faultproxy</RequestId></Error>").encode()
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body
