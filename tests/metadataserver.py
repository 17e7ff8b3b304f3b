"""A small EC2 instance metadata service on loopback, for the tests.

It speaks IMDSv2 as the EC2 User Guide describes it: PUT /latest/api/token
(with X-aws-ec2-metadata-token-ttl-seconds) hands out a session token;
every GET must carry it in X-aws-ec2-metadata-token (else 401);
GET /latest/meta-data/iam/security-credentials/ lists the role and
GET .../ROLE answers the credentials JSON.  What it answers for the role
is set by the test (`answer`): keys with an expiry, an HTTP error, or any
body at all; every request is recorded.  It can also serve container
credentials (GET /container/creds, checking the Authorization header).

Use::

    with MetadataServer(role="r") as imds:
        imds.answer = imds.keys("AKID", "SECRET", expires_in=90)
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = imds.endpoint
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CREDS_PATH = "/latest/meta-data/iam/security-credentials/"
CONTAINER_PATH = "/container/creds"


@dataclass
class Answer:
    status: int
    body: bytes
    access_key: str | None = None  # the keys handed out, if any


@dataclass
class Seen:
    method: str
    path: str
    when: float
    token_ok: bool
    handed: str | None = None  # the access key handed out


def rfc3339(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


class MetadataServer:
    def __init__(self, role: str = "bucketdisk-test-role", *, require_token: bool = True,
                 container_token: str | None = None) -> None:
        self.role = role
        self.require_token = require_token
        self.container_token = container_token
        self.answer: Answer = Answer(404, b"")
        self.delay = 0.0          # seconds each credentials answer is held back
        self.in_flight = 0        # credentials answers being prepared now...
        self.most_in_flight = 0   # ...and the most at once
        self.seen: list[Seen] = []
        self.tokens: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_PUT(self) -> None:
                ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
                if self.path != "/latest/api/token" or not ttl.isdigit() or not server.require_token:
                    return self._send(403 if self.path == "/latest/api/token" else 404, b"")
                token = uuid.uuid4().hex
                with server._lock:
                    server.tokens.add(token)
                self._send(200, token.encode())

            def do_GET(self) -> None:
                token_ok = self.headers.get("X-aws-ec2-metadata-token", "") in server.tokens
                record = Seen("GET", self.path, time.time(), token_ok)
                with server._lock:
                    server.seen.append(record)
                if self.path == CONTAINER_PATH:
                    if self.headers.get("Authorization") != server.container_token:
                        return self._send(403, b"")
                    return self._answer(record)
                if server.require_token and not token_ok:
                    return self._send(401, b"")
                if self.path == CREDS_PATH:
                    return self._send(200, server.role.encode())
                if self.path == CREDS_PATH + server.role:
                    return self._answer(record)
                self._send(404, b"")

            def _answer(self, record: Seen) -> None:
                with server._lock:
                    server.in_flight += 1
                    server.most_in_flight = max(server.most_in_flight, server.in_flight)
                try:
                    time.sleep(server.delay)
                    answer = server.answer
                    record.handed = answer.access_key
                finally:
                    with server._lock:
                        server.in_flight -= 1
                self._send(answer.status, answer.body)

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def keys(access_key: str, secret_key: str, expires_in: float | None = 3600, token: str | None = None,
             container: bool = False) -> Answer:
        """An answer handing out these keys, expiring `expires_in` seconds from when it is set."""
        doc = {"AccessKeyId": access_key, "SecretAccessKey": secret_key}
        if not container:
            doc = {"Code": "Success", "LastUpdated": rfc3339(time.time()), "Type": "AWS-HMAC"} | doc
        doc["Token"] = token or ""
        if expires_in is not None:
            doc["Expiration"] = rfc3339(time.time() + expires_in)
        return Answer(200, json.dumps(doc).encode(), access_key)

    def handed(self) -> list[tuple[float, str]]:
        """(when, access key) of every set of credentials handed out."""
        with self._lock:
            return [(s.when, s.handed) for s in self.seen if s.handed]

    def untokened_gets(self) -> int:
        with self._lock:
            return sum(1 for s in self.seen if not s.token_ok and s.path != CONTAINER_PATH)

    def start(self) -> "MetadataServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> "MetadataServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
