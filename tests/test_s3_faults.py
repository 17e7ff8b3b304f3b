"""The s3:// store under faults: real FUSE mounts on a real, authenticated
SeaweedFS, reached through a fault-injecting proxy (tests/faultproxy.py).

What is proved, test by test (expectations come from an in-memory model of
the disk, never from the engine):
- 500/503 answers, responses cut mid-body, and responses stalled past
  --read-timeout are retried: every byte written is read back right while the
  faults go on and after a remount, and no read ever returns wrong data;
- the server going away in the middle of writing loses no acknowledged write:
  fsync waits for it to come back, then succeeds;
- when the retry budget runs out the application gets EIO (fsync, cold read),
  `unmount` refuses in one line and keeps the mount, and nothing is dropped:
  once the store is back, fsync succeeds and the data is all there;
- wrong secret, unknown bucket, unreachable server: one error line, no
  traceback, nothing written, nothing mounted; the secret never shows in
  stderr, stats, the daemon's command line or its log.
"""
from __future__ import annotations

import errno
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import (
    CLI,
    MOUNT_TIMEOUT,
    KiB,
    MiB,
    Mount,
    assert_cli_error,
    assert_file_matches,
    cold_read,
    fsync_path,
    is_mounted,
    parse_size,
    pid_alive,
)
from faultproxy import FaultProxy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ci"))
from seaweedfs import SeaweedFS  # noqa: E402

SIZE, BLOCK = "64M", "64K"
FSYNC_JOIN = 240  # hang guard for an fsync expected to succeed (not a timing assertion)


# --------------------------------------------------------------------------
# fixtures and helpers
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def seaweed():
    """One authenticated SeaweedFS for the module; stopped by its PID at the end."""
    server = SeaweedFS()
    server.start()
    pid = server.pid
    try:
        yield server
    finally:
        server.stop()
        if pid is not None:
            assert not pid_alive(pid), f"SeaweedFS pid {pid} still running after stop"


@dataclass
class S3Volume:
    """What conftest's BD.mount needs of a volume (url), plus the S3 location."""
    bucket: str
    prefix: str
    size: int
    block_size: int

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


class S3Env:
    def __init__(self, server: SeaweedFS, proxy: FaultProxy, bucket: str, bd=None) -> None:
        self.server, self.proxy, self.bucket, self.bd = server, proxy, bucket, bd

    def flags(self, direct: bool = False, *extra) -> list[str]:
        endpoint = self.server.endpoint if direct else self.proxy.endpoint
        return ["--endpoint", endpoint, "--addressing", "path", *map(str, extra)]

    def cli(self, *args, env_update: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        env = dict(os.environ, **(env_update or {}))
        return subprocess.run([str(CLI), *map(str, args)], capture_output=True, text=True,
                              timeout=timeout, env=env)

    def create(self, prefix: str | None = None, direct: bool = False, extra=()) -> S3Volume:
        vol = S3Volume(self.bucket, prefix or f"vol-{uuid.uuid4().hex[:8]}", parse_size(SIZE), parse_size(BLOCK))
        proc = self.cli("create", vol.url, "--size", SIZE, "--block-size", BLOCK, *self.flags(direct, *extra))
        assert proc.returncode == 0, f"create failed: {proc.stderr}"
        assert "volume" in self.keys(vol.prefix)
        return vol

    def mount(self, vol: S3Volume, direct: bool = False, extra=(), mountpoint=None, **kw):
        m = self.bd.mount(vol, mountpoint, extra=self.flags(direct, *extra), **kw)
        # LIFO: runs before the unmount, so a failed test never leaves the cleanup
        # behind a broken proxy or a stopped server.
        self.bd.janitor.push("restore store", self.restore)
        return m

    def restore(self) -> None:
        self.proxy.clear()
        if not self.server.running():
            self.server.start_server()

    def keys(self, prefix: str) -> list[str]:
        return [k[len(prefix) + 1:] for k in self.server.list_keys(self.bucket, prefix + "/")]

    def stats(self, m) -> dict:
        return self.bd.stats(m.path)


@pytest.fixture(autouse=True)
def s3(seaweed, monkeypatch, request):
    """A fresh bucket and proxy per test; credentials in the environment.

    Autouse, so it is set up before `bd` (and torn down after its janitor has
    unmounted everything)."""
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SHARED_CREDENTIALS_FILE",
                 "AWS_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    monkeypatch.setenv("AWS_REGION", seaweed.region)
    if not seaweed.running():  # a previous test failed with the server stopped
        seaweed.start_server()
    bucket = f"faults-{uuid.uuid4().hex[:10]}"
    seaweed.create_bucket(bucket)
    host, port = seaweed.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    proxy = FaultProxy(host, int(port), seed=zlib.crc32(request.node.name.encode())).start()
    env = S3Env(seaweed, proxy, bucket)
    try:
        yield env
    finally:
        proxy.stop()
        if seaweed.running():
            seaweed.delete_bucket(bucket, force=True)


@pytest.fixture
def s3bd(s3, bd) -> S3Env:
    s3.bd = bd
    return s3


def write_pieces(path, model: bytearray, rng: random.Random, total: int, piece_max: int = 384 * KiB,
                 region: tuple[int, int] | None = None) -> None:
    """Random data at random, mostly unaligned offsets (partial blocks included)."""
    lo, hi = region or (0, len(model))
    fd = os.open(path, os.O_WRONLY)
    try:
        written = 0
        while written < total:
            n = min(rng.randrange(1, piece_max), total - written)
            if rng.random() < 0.3:  # some block-aligned whole blocks too
                n = max(parse_size(BLOCK), n - n % parse_size(BLOCK))
            off = rng.randrange(lo, hi - n)
            if rng.random() < 0.3:
                off -= off % parse_size(BLOCK)
            data = rng.randbytes(n)
            assert os.pwrite(fd, data, off) == n
            model[off:off + n] = data
            written += n
    finally:
        os.close(fd)


def assert_blocks_match(path, model, blocks) -> None:
    bs = parse_size(BLOCK)
    for b in blocks:
        got = cold_read(path, b * bs, bs)
        assert got == bytes(model[b * bs:(b + 1) * bs]), f"block {b} read back wrong under faults"


def assert_intact_without_faults(s3: "S3Env", m, vol, model: bytearray) -> None:
    """Faults off, unmount, mount straight to the server: every byte is right."""
    s3.proxy.clear()
    s3.bd.unmount(m)
    m = s3.mount(vol, direct=True)
    assert_file_matches(m.file, model)


def written_blocks(model: bytearray) -> list[int]:
    bs = parse_size(BLOCK)
    zero = bytes(bs)
    return [i for i in range(len(model) // bs) if model[i * bs:(i + 1) * bs] != zero]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# a. 500/503 answers
# --------------------------------------------------------------------------

def assert_all_uploaded(s3, m, bound: float = 60.0) -> None:
    """Every dirty block goes up whole soon after an fsync: the fsync made
    each durable, by upload or, for a block with a few changed pages, by
    logging those pages; a logged block is uploaded LOGGED_DELAY (2 s) later."""
    deadline = time.monotonic() + bound
    while (dirty := s3.stats(m)["dirty_blocks"]) != 0:
        assert time.monotonic() < deadline, f"{dirty} blocks still dirty {bound:.0f} s after fsync"
        time.sleep(0.2)


def test_server_errors_are_retried(s3bd):
    s3 = s3bd
    s3.proxy.set_faults(error_rate=0.2)
    vol = s3.create()  # through the faults too
    m = s3.mount(vol, cache_size="4M")
    model = bytearray(vol.size)
    write_pieces(m.file, model, random.Random(1), 8 * MiB)
    fsync_path(m.file)
    assert_all_uploaded(s3, m)
    # the cache holds 4 MiB of 8+: most of these reads are GETs through the faults
    assert_file_matches(m.file, model)
    st = s3.stats(m)
    assert s3.proxy.counts["errors"] > 0
    assert s3.proxy.counts.get("errors PUT", 0) > 0 and s3.proxy.counts.get("errors GET", 0) > 0, s3.proxy.counts
    assert st["retries"] > 0, st
    assert st["errors"] == 0, st  # every fault was absorbed by a retry
    assert_intact_without_faults(s3, m, vol, model)


# --------------------------------------------------------------------------
# b. responses cut mid-body
# --------------------------------------------------------------------------

def test_dropped_connections_never_give_wrong_data(s3bd):
    s3 = s3bd
    vol = s3.create(direct=True)
    model = bytearray(vol.size)
    rng = random.Random(2)
    m = s3.mount(vol, cache_size="2M")
    write_pieces(m.file, model, rng, 4 * MiB, region=(0, 32 * MiB))
    s3.bd.unmount(m)

    # fresh mount, tiny cache: every block read below is a GET, a fifth of them cut
    m = s3.mount(vol, cache_size="2M")
    s3.proxy.set_faults(drop_rate=0.2)
    assert_blocks_match(m.file, model, written_blocks(model))
    write_pieces(m.file, model, rng, 4 * MiB, region=(16 * MiB, 64 * MiB))
    fsync_path(m.file)
    assert_blocks_match(m.file, model, written_blocks(model))  # mostly evicted by now: GETs again
    counts = dict(s3.proxy.counts)
    assert counts.get("drops GET", 0) > 0 and counts.get("drops PUT", 0) > 0, counts
    st = s3.stats(m)
    assert st["retries"] > 0 and st["errors"] == 0, st
    assert_intact_without_faults(s3, m, vol, model)


# --------------------------------------------------------------------------
# c. responses stalled past --read-timeout
# --------------------------------------------------------------------------

def test_stalled_responses_time_out_and_are_retried(s3bd):
    s3 = s3bd
    vol = s3.create(direct=True)
    model = bytearray(vol.size)
    m = s3.mount(vol, cache_size="2M", extra=("--read-timeout", 2))
    s3.proxy.set_faults(stall_rate=0.15, stall_seconds=5)
    write_pieces(m.file, model, random.Random(3), 2 * MiB)
    fsync_path(m.file)
    assert_blocks_match(m.file, model, written_blocks(model))
    assert s3.proxy.counts["stalls"] > 0, s3.proxy.counts
    st = s3.stats(m)
    assert st["retries"] > 0 and st["errors"] == 0, st
    assert_intact_without_faults(s3, m, vol, model)


def test_straggling_requests_are_sent_again_long_before_the_read_timeout(s3bd):
    """A stall far longer than the usual request, but well inside the
    default 60 s --read-timeout: object GETs and PUTs are sent again at
    once instead of waiting it out (counted as stragglers, not errors)."""
    s3 = s3bd
    vol = s3.create(direct=True)
    model = bytearray(vol.size)
    m = s3.mount(vol, cache_size="2M")
    write_pieces(m.file, model, random.Random(4), 2 * MiB)  # the usual latency is learnt here
    fsync_path(m.file)
    s3.proxy.set_faults(stall_rate=0.2, stall_seconds=10)  # far past the usual latency, within --read-timeout
    write_pieces(m.file, model, random.Random(5), 2 * MiB)
    fsync_path(m.file)
    assert_blocks_match(m.file, model, written_blocks(model))
    assert s3.proxy.counts["stalls"] > 0, s3.proxy.counts
    st = s3.stats(m)
    assert st["stragglers"] > 0 and st["errors"] == 0, st
    assert_intact_without_faults(s3, m, vol, model)


# --------------------------------------------------------------------------
# d. the server goes away in the middle of writing
# --------------------------------------------------------------------------

def test_server_restart_during_writes_loses_nothing(s3bd):
    s3 = s3bd
    vol = s3.create(direct=True)
    model = bytearray(vol.size)
    rng = random.Random(4)
    m = s3.mount(vol, direct=True)
    write_pieces(m.file, model, rng, 2 * MiB)
    fsync_path(m.file)

    s3.server.stop_server()
    write_pieces(m.file, model, rng, 2 * MiB)  # acknowledged into the cache
    outcome = {}

    def do_fsync():
        try:
            fsync_path(m.file)
            outcome["ok"] = True
        except OSError as e:
            outcome["error"] = e

    t = threading.Thread(target=do_fsync, daemon=True)
    t.start()
    t.join(3)
    # the data written since the stop cannot be stored yet: fsync must not have succeeded
    assert "ok" not in outcome, "fsync succeeded while the server was down"
    assert "error" not in outcome, f"fsync failed within the default retry budget: {outcome['error']!r}"
    assert_file_matches(m.file, model)  # served from the cache meanwhile
    s3.server.start_server()
    t.join(FSYNC_JOIN)
    assert not t.is_alive(), "fsync did not return after the server came back"
    assert outcome == {"ok": True}, outcome
    assert_all_uploaded(s3, m)

    # the mount keeps serving after the server is back
    write_pieces(m.file, model, rng, 1 * MiB)
    fsync_path(m.file)
    assert_file_matches(m.file, model)
    s3.bd.unmount(m)
    m = s3.mount(vol, direct=True)
    assert_file_matches(m.file, model)


# --------------------------------------------------------------------------
# e. the retry budget runs out
# --------------------------------------------------------------------------

def test_retry_budget_exhausted_fsync_eio_then_recovers(s3bd):
    s3 = s3bd
    vol = s3.create(direct=True)
    model = bytearray(vol.size)
    rng = random.Random(5)
    m = s3.mount(vol, extra=("--retry-time", 3))
    write_pieces(m.file, model, rng, 1 * MiB, region=(0, 16 * MiB))
    fsync_path(m.file)

    s3.proxy.set_faults(down=True)
    write_pieces(m.file, model, rng, 1 * MiB, region=(32 * MiB, 48 * MiB))  # acknowledged into the cache
    with pytest.raises(OSError) as exc:
        fsync_path(m.file)
    assert exc.value.errno == errno.EIO, exc.value
    st = s3.stats(m)
    assert st["errors"] > 0 and st["dirty_blocks"] > 0, st
    proc = s3.bd.run("unmount", m.path, timeout=120)
    assert_cli_error(proc)
    assert is_mounted(m.path) and pid_alive(m.pid), "unmount gave up on the data but took the mount away"
    assert_file_matches(m.file, model)  # nothing dropped from the cache

    s3.proxy.clear()  # the store is back: the application's retry of fsync must succeed
    try:
        fsync_path(m.file)
    except OSError as e:
        pytest.fail(f"fsync after the store came back failed: {e!r}; daemon log tail:\n"
                    f"{m.log.read_text(errors='replace')[-1500:]}")
    assert_all_uploaded(s3, m)
    s3.bd.unmount(m)
    m = s3.mount(vol, direct=True)
    assert_file_matches(m.file, model)


def test_retry_budget_exhausted_cold_read_eio_then_recovers(s3bd):
    s3 = s3bd
    vol = s3.create(direct=True)
    model = bytearray(vol.size)
    m = s3.mount(vol, direct=True)
    write_pieces(m.file, model, random.Random(7), 1 * MiB)
    s3.bd.unmount(m)

    m = s3.mount(vol, extra=("--retry-time", 3))  # fresh mount: nothing cached
    bs = parse_size(BLOCK)
    block = written_blocks(model)[0]
    s3.proxy.set_faults(down=True)
    with pytest.raises(OSError) as exc:
        cold_read(m.file, block * bs, bs)
    assert exc.value.errno == errno.EIO, exc.value
    assert s3.stats(m)["errors"] > 0
    s3.proxy.clear()
    assert cold_read(m.file, block * bs, bs) == bytes(model[block * bs:(block + 1) * bs])
    assert_file_matches(m.file, model)
    s3.bd.unmount(m)


# --------------------------------------------------------------------------
# f. refusals: one line, nothing left behind, no secret shown
# --------------------------------------------------------------------------

def assert_refused(proc, *secrets) -> str:
    line = assert_cli_error(proc)
    assert line.startswith("bucketdisk: error:"), line
    for secret in secrets:
        assert secret not in proc.stderr and secret not in proc.stdout, "secret shown in the output"
    return line


def try_mount(s3, bd, url, flags, env_update=None):
    """A mount expected to fail: cleaned up by path whatever happens."""
    mp = bd._name("mnt")
    mp.mkdir()
    log = bd._name("daemon-log-").with_suffix(".txt")
    m = Mount(volume=None, path=mp, read_only=False, log=log)
    bd.janitor.push(f"failed mount {mp}", lambda: bd.cleanup_mount(m))
    proc = s3.cli("mount", url, mp, "--log", log, *flags, env_update=env_update, timeout=MOUNT_TIMEOUT)
    return proc, m


def test_refusals_are_one_line_and_leave_nothing(s3bd):
    s3, bd = s3bd, s3bd.bd
    secret = s3.server.secret_key
    wrong = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    bad_env = {"AWS_SECRET_ACCESS_KEY": wrong}

    # wrong secret: create
    prefix = "wrong-secret"
    proc = s3.cli("create", f"s3://{s3.bucket}/{prefix}", "--size", SIZE, "--block-size", BLOCK,
                  *s3.flags(direct=True), env_update=bad_env)
    line = assert_refused(proc, secret, wrong)
    assert "secret" in line.lower() or "signature" in line.lower(), line
    assert s3.keys(prefix) == []

    # wrong secret: mount of a real volume; nothing written (no lock), nothing mounted
    vol = s3.create(direct=True)
    before = sorted(s3.keys(vol.prefix))
    proc, m = try_mount(s3, bd, vol.url, s3.flags(direct=True), bad_env)
    assert_refused(proc, secret, wrong)
    assert not is_mounted(m.path)
    assert sorted(s3.keys(vol.prefix)) == before
    if m.log.exists():
        text = m.log.read_text(errors="replace")
        assert secret not in text and wrong not in text

    # unknown bucket: create and mount; the bucket is not made
    missing = f"no-such-{uuid.uuid4().hex[:10]}"
    proc = s3.cli("create", f"s3://{missing}/v", "--size", SIZE, "--block-size", BLOCK, *s3.flags(direct=True))
    assert "bucket" in assert_refused(proc, secret).lower()
    proc, m = try_mount(s3, bd, f"s3://{missing}/v", s3.flags(direct=True))
    assert "bucket" in assert_refused(proc, secret).lower()
    assert not is_mounted(m.path)
    assert s3.server.request("HEAD", missing).status_code == 404

    # server unreachable: mount (default budget) and create fail; the subprocess
    # timeouts only guard against a hang
    dead = ["--endpoint", f"http://127.0.0.1:{closed_port()}", "--addressing", "path"]
    proc, m = try_mount(s3, bd, vol.url, dead)
    assert_refused(proc, secret)
    assert not is_mounted(m.path)
    proc = s3.cli("create", f"s3://{s3.bucket}/unreachable", "--size", SIZE, *dead, "--retry-time", 3, timeout=90)
    assert_refused(proc, secret)
    assert s3.keys("unreachable") == []
    assert sorted(s3.keys(vol.prefix)) == before

    # a working mount, with retries logged: no secret in stats, command lines or the log
    s3.proxy.set_faults(error_rate=0.3)
    m = s3.mount(vol)
    model = bytearray(vol.size)
    write_pieces(m.file, model, random.Random(6), 1 * MiB)
    fsync_path(m.file)
    s3.proxy.clear()
    st_json = bd.run("stats", m.path, "--json").stdout
    st_text = (m.path / "stats").read_text()
    assert json.loads(st_json)["retries"] > 0
    cmdline = Path(f"/proc/{m.pid}/cmdline").read_bytes().decode(errors="replace")
    log_text = m.log.read_text(errors="replace")
    assert "retry" in log_text.lower() or "500" in log_text or "503" in log_text, log_text[-2000:]
    for where, text in (("stats --json", st_json), ("stats file", st_text), ("daemon command line", cmdline),
                        ("daemon log", log_text)):
        assert secret not in text, f"the secret appears in the {where}"
    s3.bd.unmount(m)
    m = s3.mount(vol, direct=True)
    assert_file_matches(m.file, model)


def test_each_delete_request_is_guarded_retries_included(s3):
    """The writer's check runs before every delete request the store sends,
    a retry too (attempt 1, ...): a retried delete may land twice, and a
    superseded writer must not send one at all (latedeletes.py)."""
    from bucketdisk.store.credentials import Credentials
    from bucketdisk.store.s3 import S3Options, S3Store

    options = S3Options(endpoint=s3.proxy.endpoint, addressing="path", region=s3.server.region, retry_time=20)
    store = S3Store(s3.bucket, "guarded", options,
                    credentials=Credentials(s3.server.access_key, s3.server.secret_key))
    store.put("blocks/aa/x", b"x")
    store.put("blocks/aa/y", b"y")
    attempts = []

    def guard(keys, attempt):
        attempts.append((keys, attempt))
        if attempt:
            s3.proxy.set_faults()  # the first request failed (503 from the proxy): the retry goes through

    s3.proxy.set_faults(error_rate=1.0, methods=("POST",))
    store.delete(["blocks/aa/x"], guard=guard)
    assert [a for _, a in attempts[:2]] == [0, 1] and attempts[0][0] == ["blocks/aa/x"]
    assert store.head("blocks/aa/x") is None

    class Superseded(Exception):
        pass

    def refuse(keys, attempt):
        raise Superseded
    with pytest.raises(Superseded):
        store.delete(["blocks/aa/y"], guard=refuse)
    assert store.head("blocks/aa/y") == 1  # nothing was sent
    store.close()


def test_a_delete_is_signed_with_the_servers_time_not_this_machines(s3, monkeypatch):
    """A writer whose clock runs 14 minutes ahead signs requests that S3
    still accepts up to 29 minutes later, past a successor's quarantine of
    17 (latedeletes.py).  Deletes are signed with the server's time of a
    look taken before the lease check, so a held-up one lands within 15
    minutes of that check; the server refuses one signed earlier."""
    import calendar

    from bucketdisk.store import s3http
    from bucketdisk.store.credentials import Credentials
    from bucketdisk.store.s3 import S3Options, S3Store

    options = S3Options(endpoint=s3.server.endpoint, addressing="path", region=s3.server.region, retry_time=20)
    store = S3Store(s3.bucket, "dated", options, credentials=Credentials(s3.server.access_key, s3.server.secret_key))
    ahead = 14 * 60
    monkeypatch.setattr(s3http, "wall_clock", lambda: time.time() + ahead)
    sent = []
    send = store._http._send

    def recording_send(method, url, data, headers, *args, **kwargs):
        reply = send(method, url, data, headers, *args, **kwargs)
        signed = calendar.timegm(time.strptime(headers["x-amz-date"], "%Y%m%dT%H%M%SZ"))
        sent.append((method, signed - time.time(), reply.status))
        return reply
    monkeypatch.setattr(store._http, "_send", recording_send)

    store.put("blocks/aa/x", b"x")
    assert sent[-1][0] == "PUT" and abs(sent[-1][1] - ahead) < 5  # this machine's clock, as skewed
    store.delete(["blocks/aa/x"], guard=lambda keys, attempt: None)
    method, skew, status = sent[-1]
    assert (method, status) == ("POST", 200) and -3 < skew <= 0  # the server's clock (whole seconds)
    assert store.head("blocks/aa/x") is None

    del sent[:]
    stale = lambda attempt: time.time() - 16 * 60 if attempt == 0 else None  # noqa: E731
    store._request("GET", None, params={"list-type": "2", "prefix": "dated/"}, before_attempt=stale)
    assert [s for _, _, s in sent] == [403, 200]  # refused past the window, sent again with a fresh date
    store.close()


def test_a_full_server_is_named_as_a_full_store(s3):
    """507 Insufficient Storage (MinIO: XMinioStorageFull) is a full store,
    as a full disk is for file://: StoreFull, one line that says so."""
    from bucketdisk.errors import StoreFull
    from bucketdisk.store.credentials import Credentials
    from bucketdisk.store.s3 import S3Options, S3Store

    options = S3Options(endpoint=s3.proxy.endpoint, addressing="path", region=s3.server.region, retry_time=5)
    store = S3Store(s3.bucket, "full", options, credentials=Credentials(s3.server.access_key, s3.server.secret_key))
    s3.proxy.set_faults(error_rate=1.0, methods=("PUT",), error=(
        507, "Insufficient Storage", "XMinioStorageFull", "Storage backend has reached its minimum free drive threshold."))
    with pytest.raises(StoreFull, match=r"^the store is full \(507 XMinioStorageFull\) for s3://"):
        store.put("blocks/aa/x", b"x")
    s3.proxy.set_faults()
    assert store.put("blocks/aa/x", b"x")
    store.close()
