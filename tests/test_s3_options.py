"""The s3:// store's options, end to end: real SeaweedFS (SigV4 on), the real
CLI, real FUSE mounts.

What is proved:
- credentials are found in the documented order: an explicit
  --credentials-file (refused when others may read it; AWS's format or
  s3backer's accessID:accessKey lines), then the
  AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment, then the profile
  (--profile, else AWS_PROFILE, else "default") in ~/.aws/credentials, then
  in ~/.aws/config's `[profile P]`, then container credentials, then the EC2
  instance role (a loopback IMDSv2 server; --ec2-role uses it alone), then
  ~/.s3backer_passwd (also when the metadata service does not answer);
  nothing found is one clear line; the secret never shows on stdout or
  stderr;
- HTTPS: a self-signed server is trusted with --ca-bundle, refused without it
  in one line about TLS/certificates, and accepted with --insecure (mount
  warns on stderr and still mounts);
- the single-writer lock holds on a server that ignores `If-None-Match: *`
  (a proxy strips the header): a second writable mount is refused naming the
  holder, and the first mount's data survives;
- --storage-class and --sse reach the server on every object PUT (recorded
  by a proxy), and a volume made and written with them reads back;
- HTTP_PROXY from the environment carries every request, NO_PROXY bypasses it.
"""
from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import threading
import uuid
from pathlib import Path

import pytest
import requests

from conftest import (
    CLI,
    MOUNT_TIMEOUT,
    MiB,
    Mount,
    assert_cli_error,
    assert_file_matches,
    fsync_path,
    is_mounted,
    wait_until_clean,
)
from faultproxy import _close, _header, _read_body, _read_head
from metadataserver import CONTAINER_PATH, Answer, MetadataServer

STORES = ("s3",)  # every test here runs against the session's SeaweedFS only
SIZE, BLOCK = "32M", "64K"


# --------------------------------------------------------------------------
# a recording, header-rewriting (optionally TLS-terminating) proxy
# --------------------------------------------------------------------------

class HeaderProxy:
    """HTTP/1.1 reverse proxy on 127.0.0.1 to one upstream host:port.

    Forwards each request byte for byte (Host header as the client sent it,
    so SigV4 still verifies) except for the headers named in `strip`, which
    are removed; records every request's method, target and headers.  With
    `tls=(certfile, keyfile)` it terminates TLS and speaks plain HTTP to the
    upstream.
    """

    def __init__(self, upstream: str, *, strip=(), tls: tuple[Path, Path] | None = None) -> None:
        host, port = upstream.rsplit("//", 1)[1].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.strip = {s.lower().encode() for s in strip}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.stripped: list[tuple[str, str, str]] = []  # (method, target, "Name: value")
        self.handshake_failures = 0
        self._ctx = None
        if tls is not None:
            self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self._listener.getsockname()[1]

    @property
    def endpoint(self) -> str:
        return f"{'https' if self._ctx else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> "HeaderProxy":
        self._spawn(self._accept_loop)
        return self

    def stop(self) -> None:
        self._stop.set()
        _close(self._listener)
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            _close(s)
        for t in self._threads:
            t.join(10)

    def puts(self) -> list[tuple[str, dict[str, str]]]:
        """(target, headers) of every object PUT seen."""
        with self._lock:
            return [(target, h) for method, target, h in self.requests if method == "PUT"]

    def targets(self) -> list[str]:
        """The request target of every request seen."""
        with self._lock:
            return [target for _, target, _ in self.requests]

    # -- machinery ---------------------------------------------------------
    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def _track(self, s, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(s)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self._track(client, True)
            self._spawn(self._serve, client)

    def _rewrite(self, head: bytes) -> bytes:
        lines = head.split(b"\r\n")
        start = lines[0].decode(errors="replace")
        method, target = start.split(" ")[:2]
        kept, headers = [lines[0]], {}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if sep and name.strip().lower() in self.strip:
                with self._lock:
                    self.stripped.append((method, target, line.decode(errors="replace")))
                continue
            if sep:
                headers[name.strip().decode().lower()] = value.strip().decode(errors="replace")
            kept.append(line)
        with self._lock:
            self.requests.append((method, target, headers))
        return b"\r\n".join(kept)

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        conn = client
        try:
            if self._ctx is not None:
                client.settimeout(30)
                try:
                    conn = self._ctx.wrap_socket(client, server_side=True)
                except (ssl.SSLError, OSError):
                    with self._lock:
                        self.handshake_failures += 1
                    return
                conn.settimeout(None)
                self._track(conn, True)
            cfile = conn.makefile("rb")
            upstream = socket.create_connection(self.upstream, timeout=120)
            self._track(upstream, True)
            ufile = upstream.makefile("rb")
            while not self._stop.is_set():
                head = _read_head(cfile)
                if head is None:
                    return
                method = head.split(b" ", 1)[0].upper()
                body = _read_body(cfile, head, is_response=False)
                upstream.sendall(self._rewrite(head) + body)
                rhead = _read_head(ufile)
                if rhead is None:
                    return
                status = int(rhead.split(b" ", 2)[1])
                no_body = method == b"HEAD" or status in (204, 304) or 100 <= status < 200
                rbody = b"" if no_body else _read_body(ufile, rhead, is_response=True)
                conn.sendall(rhead + rbody)
                unframed = not no_body and _header(rhead, b"content-length") is None and \
                    _header(rhead, b"transfer-encoding") is None
                if unframed or b"close" in (_header(rhead, b"connection"), _header(head, b"connection")):
                    return
        except (OSError, ValueError):
            return
        finally:
            for s in {client, conn, upstream} - {None}:
                self._track(s, False)
                _close(s)


@pytest.fixture
def proxy_factory(store):
    """proxy_factory(strip=(), tls=None) -> a started HeaderProxy to the session's SeaweedFS,
    stopped after the test (after its mounts are gone: the janitor runs first)."""
    made: list[HeaderProxy] = []

    def make(**kw) -> HeaderProxy:
        p = HeaderProxy(store.server.endpoint, **kw).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def clean_env(home: Path, **aws) -> dict[str, str]:
    """The test environment without any AWS_* or CA settings, HOME moved, plus `aws`.

    The instance metadata service is off unless `aws` turns it on: no test
    asks the machine it runs on for an EC2 role."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k not in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "CURL_CA_BUNDLE")}
    env["HOME"] = str(home)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(aws)
    return env


def cli(*args, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=env)


def assert_no_secret(proc: subprocess.CompletedProcess, *secrets: str) -> None:
    for s in secrets:
        assert s not in proc.stdout and s not in proc.stderr, "a secret key appears in the command's output"


def wrong(secret: str) -> str:
    return secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")


def write_random(path, model: bytearray, rng: random.Random, pieces: int, piece: int = 200 * 1024) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        for _ in range(pieces):
            off = rng.randrange(0, len(model) - piece)
            data = rng.randbytes(piece)
            assert os.pwrite(fd, data, off) == piece
            model[off:off + piece] = data
    finally:
        os.close(fd)


def try_mount(bd, url: str, flags) -> tuple[subprocess.CompletedProcess, Mount]:
    """A mount expected to fail; cleaned up by its path whatever happens."""
    mp = bd._name("mnt")
    mp.mkdir()
    log = bd._name("daemon-log-").with_suffix(".txt")
    m = Mount(volume=None, path=mp, read_only=False, log=log)
    bd.janitor.push(f"refused mount {mp}", lambda: bd.cleanup_mount(m))
    proc = bd.run("mount", url, mp, "--log", log, "--cache-size", "32M", *flags, timeout=MOUNT_TIMEOUT)
    return proc, m


# --------------------------------------------------------------------------
# 1. credentials order
# --------------------------------------------------------------------------

def test_credentials_are_found_in_the_documented_order(bd, tmp_path):
    server, bucket = bd.store.server, bd.store.bucket
    key, secret = server.access_key, server.secret_key
    bad_key, bad_secret = "AKIDNOTKNOWN" + uuid.uuid4().hex[:8].upper(), wrong(secret)
    home = tmp_path / "home"
    aws = home / ".aws"
    aws.mkdir(parents=True)
    flags = ["--endpoint", server.endpoint, "--addressing", "path"]
    secrets = (secret, bad_secret)

    def creds_ini(path: Path, sections: dict[str, tuple[str, str]], config_style=False) -> None:
        text = ""
        for name, (k, s) in sections.items():
            header = f"profile {name}" if config_style and name != "default" else name
            text += f"[{header}]\naws_access_key_id = {k}\naws_secret_access_key = {s}\n\n"
        path.write_text(text)
        path.chmod(0o600)

    def create_ok(label: str, env: dict, *extra) -> None:
        prefix = f"cred-{label}"
        url = f"s3://{bucket}/{prefix}"
        proc = cli("create", url, "--size", SIZE, "--block-size", BLOCK, *flags, *extra, env=env)
        assert proc.returncode == 0, f"{label}: create failed: {proc.stderr}"
        assert_no_secret(proc, *secrets)
        assert "volume" in [k.split("/", 1)[1] for k in server.list_keys(bucket, prefix + "/")]
        proc = cli("info", url, "--json", *flags, *extra, env=env)
        assert proc.returncode == 0, f"{label}: info failed: {proc.stderr}"
        assert_no_secret(proc, *secrets)

    def refused(label: str, env: dict, *extra) -> str:
        prefix = f"cred-{label}"
        proc = cli("create", f"s3://{bucket}/{prefix}", "--size", SIZE, "--block-size", BLOCK, *flags, *extra,
                   env=env)
        line = assert_cli_error(proc)
        assert line.startswith("bucketdisk: error:"), line
        assert_no_secret(proc, *secrets)
        assert server.list_keys(bucket, prefix + "/") == [], f"{label}: a refused create wrote objects"
        return line

    # control: the wrong keys really are refused by the server
    refused("control", clean_env(home, AWS_ACCESS_KEY_ID=bad_key, AWS_SECRET_ACCESS_KEY=bad_secret))

    # nothing anywhere: one clear line
    line = refused("none", clean_env(home))
    assert "credentials" in line.lower(), line

    # half a key pair in the environment: named, not skipped for the next source
    line = refused("half", clean_env(home, AWS_ACCESS_KEY_ID=key))
    assert "AWS_SECRET_ACCESS_KEY is not set" in line, line

    # the environment's keys win over the default profile and over AWS_PROFILE
    creds_ini(aws / "credentials", {"default": (bad_key, bad_secret), "p": (bad_key, bad_secret)})
    good_env = dict(AWS_ACCESS_KEY_ID=key, AWS_SECRET_ACCESS_KEY=secret)
    create_ok("env", clean_env(home, **good_env))
    create_ok("env-over-profile", clean_env(home, AWS_PROFILE="p", **good_env))

    # AWS_PROFILE=p picks [p] of ~/.aws/credentials (the default profile is wrong)
    creds_ini(aws / "credentials", {"default": (bad_key, bad_secret), "p": (key, secret)})
    create_ok("aws-profile", clean_env(home, AWS_PROFILE="p"))
    refused("default-profile", clean_env(home))  # proves [default] was not the one used above

    # --profile p, also over wrong keys in the environment (as the AWS CLI does)
    create_ok("flag-profile", clean_env(home), "--profile", "p")
    create_ok("flag-profile-over-env", clean_env(home, AWS_ACCESS_KEY_ID=bad_key, AWS_SECRET_ACCESS_KEY=bad_secret),
              "--profile", "p")

    # ~/.aws/config `[profile q]` when ~/.aws/credentials has no q
    creds_ini(aws / "config", {"default": (bad_key, bad_secret), "q": (key, secret)}, config_style=True)
    create_ok("config-profile", clean_env(home, AWS_PROFILE="q"))
    create_ok("config-flag-profile", clean_env(home), "--profile", "q")
    (aws / "credentials").unlink()
    (aws / "config").unlink()

    # --credentials-file F (mode 0600) wins over wrong keys in the environment
    cred_file = tmp_path / "s3-creds"
    creds_ini(cred_file, {"default": (key, secret)})
    bad_env = clean_env(home, AWS_ACCESS_KEY_ID=bad_key, AWS_SECRET_ACCESS_KEY=bad_secret)
    create_ok("cred-file", bad_env, "--credentials-file", cred_file)

    # ... and is refused, before anything is written, when group or others may read it
    cred_file.chmod(0o644)
    good = clean_env(home, **good_env)  # even with working keys at hand
    line = refused("cred-file-0644", good, "--credentials-file", cred_file)
    assert str(cred_file) in line and ("readable" in line or "chmod" in line), line
    proc = cli("info", f"s3://{bucket}/cred-cred-file", *flags, "--credentials-file", cred_file, env=good)
    assert_cli_error(proc)
    assert_no_secret(proc, *secrets)

    # --credentials-file also takes s3backer's accessID:accessKey lines (its --accessFile habit)
    passwd_file = tmp_path / "s3backer-keys"
    passwd_file.write_text(f"# s3backer's format\n{key}:{secret}\n")
    passwd_file.chmod(0o600)
    create_ok("cred-file-passwd", bad_env, "--credentials-file", passwd_file)

    # after the profiles: container credentials, the EC2 instance role, then ~/.s3backer_passwd
    passwd = home / ".s3backer_passwd"

    def write_passwd(k: str, s: str) -> None:
        passwd.write_text(f"{k}:{s}\n")
        passwd.chmod(0o600)

    with MetadataServer(container_token="container-token-1") as imds:
        on = dict(AWS_EC2_METADATA_DISABLED="false", AWS_EC2_METADATA_SERVICE_ENDPOINT=imds.endpoint)
        container = dict(AWS_CONTAINER_CREDENTIALS_FULL_URI=imds.endpoint + CONTAINER_PATH,
                         AWS_CONTAINER_AUTHORIZATION_TOKEN="container-token-1")
        write_passwd(bad_key, bad_secret)
        imds.answer = imds.keys(key, secret)
        create_ok("container", clean_env(home, **container))
        line = refused("container-bad-token", clean_env(home, **container | dict(
            AWS_CONTAINER_AUTHORIZATION_TOKEN="wrong")))
        assert "container credentials" in line and "403" in line, line
        create_ok("imds-over-passwd", clean_env(home, **on))
        assert imds.untokened_gets() == 0 and imds.handed(), "the instance role was not asked with a session token"
        create_ok("ec2-role-over-env", clean_env(home, **on, AWS_ACCESS_KEY_ID=bad_key,
                                                 AWS_SECRET_ACCESS_KEY=bad_secret), "--ec2-role", imds.role)
        imds.answer = imds.keys(bad_key, bad_secret)
        refused("imds-keys-used", clean_env(home, **on))  # proves the role's keys, not the passwd file's, are used
        creds_ini(aws / "credentials", {"default": (key, secret)})
        create_ok("profile-over-imds", clean_env(home, **on))
        (aws / "credentials").unlink()
        # the service answers but gives no keys for its role: on to ~/.s3backer_passwd
        write_passwd(key, secret)
        imds.answer = Answer(404, b"")
        create_ok("passwd-after-imds-404", clean_env(home, **on))
    create_ok("passwd-imds-off", clean_env(home))
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    create_ok("passwd-imds-unreachable", clean_env(home, AWS_EC2_METADATA_DISABLED="false",
                                                   AWS_EC2_METADATA_SERVICE_ENDPOINT=f"http://127.0.0.1:{port}"))
    # ... and the keys in the environment, a profile, or --credentials-file come before it
    write_passwd(bad_key, bad_secret)
    create_ok("env-over-passwd", clean_env(home, **good_env))
    cred_file.chmod(0o600)
    create_ok("cred-file-over-passwd", clean_env(home), "--credentials-file", cred_file)


# --------------------------------------------------------------------------
# 2. TLS
# --------------------------------------------------------------------------

@pytest.fixture
def tls_cert(tmp_path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    proc = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-days", "2", "-keyout", str(key), "-out", str(cert)],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return cert, key


def test_https_ca_bundle_and_insecure(bd, proxy_factory, tls_cert, tmp_path):
    cert, _ = tls_cert
    tls = proxy_factory(tls=tls_cert)
    assert tls.endpoint.startswith("https://127.0.0.1:")
    server, bucket = bd.store.server, bd.store.bucket
    flags = ["--endpoint", tls.endpoint, "--addressing", "path"]
    secret = server.secret_key

    # trusted with --ca-bundle: create and info
    url = f"s3://{bucket}/tls"
    proc = bd.run("create", url, "--size", SIZE, "--block-size", BLOCK, *flags, "--ca-bundle", cert)
    assert proc.returncode == 0, proc.stderr
    proc = bd.run("info", url, "--json", *flags, "--ca-bundle", cert)
    assert proc.returncode == 0, proc.stderr
    assert len(tls.requests) > 0, "nothing went through the TLS endpoint"

    # not trusted without it: one line about TLS / the certificate, nothing created
    for args in (("info", url), ("create", f"s3://{bucket}/tls-untrusted", "--size", SIZE)):
        proc = bd.run(*args, *flags, timeout=90)
        line = assert_cli_error(proc)
        assert "tls" in line.lower() or "certificate" in line.lower(), line
        assert secret not in proc.stderr + proc.stdout
    assert server.list_keys(bucket, "tls-untrusted/") == []
    assert tls.handshake_failures > 0

    # --insecure: info works; mount warns on stderr, and mounts
    proc = bd.run("info", url, *flags, "--insecure")
    assert proc.returncode == 0, proc.stderr
    mp = bd._name("mnt")
    mp.mkdir()
    log = bd._name("daemon-log-").with_suffix(".txt")
    m = Mount(volume=None, path=mp, read_only=False, log=log)
    bd.janitor.push(f"insecure mount {mp}", lambda: bd.cleanup_mount(m))
    proc = bd.run("mount", url, mp, "--log", log, "--cache-size", "32M", *flags, "--insecure",
                  timeout=MOUNT_TIMEOUT)
    assert proc.returncode == 0, f"mount --insecure failed: {proc.stderr}"
    assert "warning" in proc.stderr.lower() and "insecure" in proc.stderr.lower(), proc.stderr
    assert secret not in proc.stderr + proc.stdout
    assert is_mounted(mp)
    m.pid = int(bd.stats(mp)["pid"])
    m.pids.add(m.pid)
    model = bytearray(32 * MiB)
    write_random(m.file, model, random.Random(21), 8)
    fsync_path(m.file)
    bd.unmount(m)

    # the data went through TLS to the server: read back with --ca-bundle on a fresh mount
    mp2 = bd._name("mnt")
    mp2.mkdir()
    m2 = Mount(volume=None, path=mp2, read_only=True, log=bd._name("daemon-log-").with_suffix(".txt"))
    bd.janitor.push(f"ca-bundle mount {mp2}", lambda: bd.cleanup_mount(m2))
    proc = bd.run("mount", url, mp2, "--log", m2.log, "--read-only", *flags, "--ca-bundle", cert,
                  timeout=MOUNT_TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "warning" not in proc.stderr.lower(), proc.stderr
    m2.pid = int(bd.stats(mp2)["pid"])
    m2.pids.add(m2.pid)
    assert_file_matches(m2.file, model)
    bd.unmount(m2)


# --------------------------------------------------------------------------
# 3. the lock on a server that ignores If-None-Match
# --------------------------------------------------------------------------

def assert_only_the_holder_wrote(before: list[str], after: list[str]) -> None:
    """Between the two listings the mount that holds the volume may have
    written a journal or a checkpoint (a root and pages) of its own epoch;
    a refused mount would have written a root of a new epoch."""
    def epochs(keys):
        return {k.rsplit("/", 1)[1].split("-")[0] for k in keys if k.startswith(("map/roots/", "map/journal/"))}
    new = set(after) - set(before)
    assert all(k.startswith(("map/roots/", "map/journal/", "map/pages/")) for k in new), \
        f"the refused mount changed the volume's objects: {sorted(new)}"
    assert epochs(new) <= epochs(before), f"a map object of a new epoch appeared: {sorted(new)}"


def test_lock_holds_when_server_ignores_if_none_match(bd, proxy_factory):
    server, bucket = bd.store.server, bd.store.bucket
    proxy = proxy_factory(strip=("If-None-Match",))

    # the proxy does make the server ignore the condition (SeaweedFS itself honours it)
    probe = f"probe-{uuid.uuid4().hex[:8]}"
    assert server.request("PUT", bucket, probe, data=b"1").status_code == 200
    direct = server.request("PUT", bucket, probe, data=b"2", headers={"If-None-Match": "*"})
    via = requests.put(f"{proxy.endpoint}/{bucket}/{probe}", data=b"3", headers={"If-None-Match": "*"},
                       auth=server.auth(), timeout=30)
    assert direct.status_code == 412, f"SeaweedFS answered {direct.status_code} to a conditional PUT"
    assert via.status_code == 200, via.text
    assert server.request("GET", bucket, probe).content == b"3"
    server.request("DELETE", bucket, probe)

    vol = bd.create(size=SIZE, block_size=BLOCK)
    via_proxy = ["--endpoint", proxy.endpoint]
    m = bd.mount(vol, extra=via_proxy)
    assert any("/lock/" in target and method == "PUT" for method, target, _ in proxy.stripped), \
        f"the lock was not created conditionally: {proxy.stripped}"
    holder = vol.lock_bytes()
    assert holder is not None, "no lock object while mounted writable"
    model = bytearray(vol.size)
    write_random(m.file, model, random.Random(31), 10)
    fsync_path(m.file)
    wait_until_clean(bd, m)  # blocks whose pages the fsync logged go up after it
    before = sorted(vol.keys())

    proc, other = try_mount(bd, vol.url, [*vol.store_args, *via_proxy])
    line = assert_cli_error(proc)
    assert f"pid {m.pid}" in line and socket.gethostname() in line, f"the refusal does not name the holder: {line}"
    assert not is_mounted(other.path)
    assert vol.lock_bytes() == holder, "the refused mount changed the lock"
    assert_only_the_holder_wrote(before, sorted(vol.keys()))
    assert bd.stats(m.path)["pid"] == m.pid, "the first mount no longer answers"
    assert_file_matches(m.file, model)

    bd.unmount(m)
    assert not vol.has_lock(), "lock left behind after a clean unmount"
    m = bd.mount(vol)  # directly, fresh cache
    assert_file_matches(m.file, model)
    bd.unmount(m)


def test_snapshots_keep_their_blocks_when_the_server_ignores_if_none_match(bd, proxy_factory):
    """Once snapshots exist a checkpoint deletes only blocks this mount
    created (a create-only PUT tells): behind a server that ignores the
    condition every PUT says "created", so the mount must trust none."""
    proxy = proxy_factory(strip=("If-None-Match",))
    vol = bd.create(size="1M", block_size=BLOCK)
    m = bd.mount(vol, extra=["--endpoint", proxy.endpoint])
    first, second = os.urandom(vol.size), os.urandom(vol.size)
    for data in (first, second, first, second):  # the snapshot's blocks stored again, then replaced
        with open(m.file, "r+b") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if data is first and not (bd.tmp / "taken").exists():
            bd.ok("snapshot", "create", str(m.path), "--name", "kept")
            (bd.tmp / "taken").touch()
    bd.unmount(m)  # its last checkpoint collects what the live disk no longer names
    view = bd.mount(vol, extra=["--snapshot", "kept"])
    with open(view.file, "rb") as f:
        assert f.read() == first
    bd.unmount(view)


# --------------------------------------------------------------------------
# 4. --storage-class and --sse
# --------------------------------------------------------------------------

def test_storage_class_and_sse_reach_every_put(bd, proxy_factory):
    proxy = proxy_factory()
    options = ["--endpoint", proxy.endpoint, "--storage-class", "STANDARD", "--sse", "AES256"]

    def check_puts(since: int, what: str) -> int:
        puts = proxy.puts()[since:]
        assert puts, f"{what}: no PUT went through the proxy"
        for target, headers in puts:
            if target.count("/") < 2:  # a bucket, not an object (none expected)
                continue
            assert headers.get("x-amz-storage-class") == "STANDARD", f"{what}: PUT {target} without storage class"
            assert headers.get("x-amz-server-side-encryption") == "AES256", f"{what}: PUT {target} without SSE"
            assert "x-amz-storage-class" in headers.get("authorization", "").lower(), \
                f"{what}: PUT {target}: the storage class header is not signed"
        return len(proxy.puts())

    vol = bd.create(size=SIZE, block_size=BLOCK, extra=options)
    seen = check_puts(0, "create")
    proc = bd.run("info", vol.url, *vol.store_args, *options)
    assert proc.returncode == 0, proc.stderr

    m = bd.mount(vol, extra=options)
    model = bytearray(vol.size)
    write_random(m.file, model, random.Random(41), 12)
    fsync_path(m.file)
    bd.unmount(m)
    seen_before = seen
    seen = check_puts(seen, "mount")
    block_puts = [t for t, _ in proxy.puts()[seen_before:] if "/blocks/" in t]
    assert block_puts, "no block object was PUT through the proxy"

    m = bd.mount(vol, extra=options, cache_size="4M")
    assert_file_matches(m.file, model)
    assert any(method == "GET" and "/blocks/" in target for method, target, _ in proxy.requests), \
        "the remount read no block through the store"
    bd.unmount(m)
    check_puts(seen, "remount")


def test_http_proxy_from_the_environment(bd, proxy_factory, monkeypatch):
    """HTTP_PROXY carries every request of create, mount and unmount (in
    absolute form, as to a forward proxy); NO_PROXY naming the server
    sends them straight to it again."""
    proxy = proxy_factory()
    for name in ("http_proxy", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", proxy.endpoint)
    vol = bd.create(size=SIZE, block_size=BLOCK)
    m = bd.mount(vol)
    model = bytearray(vol.size)
    write_random(m.file, model, random.Random(43), 8)
    fsync_path(m.file)
    bd.unmount(m)
    targets = proxy.targets()
    assert any("/blocks/" in t for t in targets), "no block went through the proxy"
    server = bd.store.server.endpoint
    assert all(t.startswith(server + "/") for t in targets), \
        f"a request did not name the server in absolute form: {[t for t in targets if not t.startswith(server)][:3]}"

    monkeypatch.setenv("NO_PROXY", server.split("//", 1)[1].rsplit(":", 1)[0])
    m = bd.mount(vol, cache_size="4M")
    assert_file_matches(m.file, model)
    bd.unmount(m)
    assert len(proxy.targets()) == len(targets), "NO_PROXY was not honoured"
