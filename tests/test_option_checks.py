"""Options refused before anything is touched, and the first contact with
an S3 server that is not there.  The real CLI, the session's SeaweedFS.

1. Usage errors (a missing argument, an unknown option, a value argparse
   cannot read) are one line, `bucketdisk CMD: error: ...` with a pointer
   to --help, and exit 2: no usage block.
2. --sse takes only what S3 takes (AES256, aws:kms[:KEYID],
   aws:kms:dsse[:KEYID]); anything else is refused at parse time by every
   command, leaving the bucket as it was.  (SeaweedFS stores `bogus`
   happily: only our check stands between a typo and unencrypted data.)
3. An endpoint is scheme://host[:port]: a path (which the store would
   drop), a user or password (never echoed), a query or a bad port is
   refused, from --endpoint or AWS_ENDPOINT_URL, by every command.
4. Nothing listening, or no such host: create, info, gc and mount fail
   within a few seconds with one line naming the endpoint.
"""
from __future__ import annotations

import socket
import subprocess
import time
import uuid

import pytest

from conftest import CLI, ERROR_LINE_RE, MOUNT_TIMEOUT, Mount, assert_cli_error, is_mounted, s3_list
from test_s3_options import proxy_factory  # noqa: F401  (a fixture)

STORES = ("s3",)
SIZE, BLOCK = "16M", "64K"
FAST = 5.0  # seconds a first contact with nothing listening may take, process start included

once = pytest.mark.stores("file")  # no store involved


def commands(url: str, new_url: str, mountpoint) -> list[tuple]:
    """Every command that opens a volume, as argv: create at `new_url` (a
    place without a volume), the others on the volume at `url`."""
    return [("create", new_url, "--size", SIZE, "--block-size", BLOCK), ("info", url), ("gc", url),
            ("gc", url, "--dry-run"), ("mount", url, mountpoint)]


def run_refused(bd, argv, env=None, timeout: float = MOUNT_TIMEOUT) -> tuple[str, float]:
    """Run the CLI expecting a refusal; (its one error line, seconds taken).
    A mount that wrongly succeeds is cleaned up."""
    started = time.monotonic()
    proc = subprocess.run([str(CLI), *map(str, argv)], capture_output=True, text=True, timeout=timeout,
                          env=env if env is not None else bd.env)
    took = time.monotonic() - started
    if argv[0] == "mount" and proc.returncode == 0:
        bd.janitor.push("unexpected mount", lambda: bd.cleanup_mount(Mount(None, argv[2], False, argv[2])))
    line = assert_cli_error(proc)
    if argv[0] == "mount":
        assert not is_mounted(argv[2])
    return line, took


def bucket_listing(bd) -> dict:
    return s3_list(bd.store.server, bd.store.bucket)


# --------------------------------------------------------------------------
# 1. usage errors
# --------------------------------------------------------------------------

USAGE_ERRORS = [
    (("mount", "s3://b/p"), "bucketdisk mount", "MOUNTPOINT"),
    ((), "bucketdisk", "COMMAND"),
    (("frobnicate",), "bucketdisk", "frobnicate"),
    (("create", "file:///srv/x"), "bucketdisk create", "--size"),
    (("create", "file:///srv/x", "--size", "12Q"), "bucketdisk create", "12Q"),
    (("info", "file:///srv/x", "--bogus"), "bucketdisk info", "--bogus"),
    (("mount", "file:///srv/x", "/mnt", "--threads", "many"), "bucketdisk mount", "many"),
    (("gc", "file:///srv/x", "--addressing", "sideways"), "bucketdisk gc", "sideways"),
    (("unmount",), "bucketdisk unmount", "MOUNTPOINT"),
    (("stats",), "bucketdisk stats", "MOUNTPOINT"),
]


@once
@pytest.mark.parametrize("argv,prog,named", USAGE_ERRORS, ids=[" ".join(a[0]) or "none" for a in USAGE_ERRORS])
def test_usage_errors_are_one_line(bd, argv, prog, named):
    proc = bd.run(*argv)
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, f"expected one line, got:\n{proc.stderr}"
    assert ERROR_LINE_RE.match(lines[0]) and lines[0].startswith(f"{prog}: error: "), lines[0]
    assert named in lines[0] and f"{prog} --help" in lines[0], lines[0]
    assert proc.stdout == ""


@once
def test_help_still_shows_the_usage(bd):
    proc = bd.run("mount", "--help")
    assert proc.returncode == 0 and proc.stdout.startswith("usage: bucketdisk mount")
    assert "URL MOUNTPOINT" in proc.stdout.split("\n\n")[0]


# --------------------------------------------------------------------------
# 2. --sse
# --------------------------------------------------------------------------

BAD_SSE = ["bogus", "aes256", "AES-256", "aws:kms:", "aws:kms:dsse:", "aws:kms:a b", "aws:kms:key\nx",
           "aws:fsx", "SSE-C", ""]


def test_sse_values_s3_would_refuse_are_refused_at_parse(bd, tmp_path):
    vol = bd.create(size=SIZE, block_size=BLOCK)
    place = bd.new_place()
    mp = tmp_path / "mp"
    mp.mkdir()
    before = bucket_listing(bd)
    for value in BAD_SSE:
        for argv in commands(vol.url, place.url, mp):
            line, _ = run_refused(bd, [*argv, *vol.store_args, f"--sse={value}"])
            assert line.startswith(f"bucketdisk {argv[0]}: error: argument --sse: "), line
            assert "AES256" in line or "KMS key" in line, line
        assert bucket_listing(bd) == before, f"--sse {value!r}: a refused command changed the bucket"


def test_sse_forms_s3_takes_reach_every_put(bd, proxy_factory):  # noqa: F811
    """aws:kms:dsse (which SeaweedFS stores) end to end; aws:kms with a key
    ARN as far as the server goes (SeaweedFS has no KMS: it answers 500,
    and create gives up after --retry-time, in one line)."""
    proxy = proxy_factory()
    flags = ["--endpoint", proxy.endpoint, "--addressing", "path"]
    vol = bd.create(size=SIZE, block_size=BLOCK, extra=[*flags, "--sse", "aws:kms:dsse"])
    assert bd.run("info", vol.url, *flags, "--sse", "aws:kms:dsse").returncode == 0
    puts = [h for t, h in proxy.puts() if t.count("/") >= 2]
    assert puts and all(h.get("x-amz-server-side-encryption") == "aws:kms:dsse" for h in puts), puts
    assert not any("x-amz-server-side-encryption-aws-kms-key-id" in h for h in puts)

    key = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    seen = len(proxy.puts())
    place = bd.new_place()
    line, _ = run_refused(bd, ["create", place.url, "--size", SIZE, *flags, "--sse", f"aws:kms:{key}",
                               "--retry-time", "1"])
    assert "500" in line, line
    puts = [h for t, h in proxy.puts()[seen:] if t.count("/") >= 2]
    assert puts, "no PUT reached the server"
    for headers in puts:
        assert headers.get("x-amz-server-side-encryption") == "aws:kms", headers
        assert headers.get("x-amz-server-side-encryption-aws-kms-key-id") == key, headers


# --------------------------------------------------------------------------
# 3. endpoints
# --------------------------------------------------------------------------

SECRET_WORD = "hunter2secret"


def bad_endpoints(good: str) -> list[str]:
    """Endpoints that are not scheme://host[:port], built on the real
    server's: each would reach it if a check let it through."""
    host_port = good.split("//", 1)[1]
    return [f"{good}/some/path", f"{good}/some/path/", f"{good}//", f"{good}?x=1", f"{good}#top",
            f"http://user:{SECRET_WORD}@{host_port}", f"http://{SECRET_WORD}@{host_port}",
            f"ftp://{host_port}", host_port, "http://", f"http://{host_port.split(':')[0]}:99999",
            f"http://{host_port.split(':')[0]}:0", f"http://{host_port} "]


def test_endpoints_with_more_than_scheme_host_port_are_refused(bd, tmp_path):
    vol = bd.create(size=SIZE, block_size=BLOCK)
    place = bd.new_place()
    mp = tmp_path / "mp"
    mp.mkdir()
    good = bd.store.server.endpoint
    before = bucket_listing(bd)
    env_without = {k: v for k, v in bd.env.items() if k != "AWS_ENDPOINT_URL"}
    for n, endpoint in enumerate(bad_endpoints(good)):
        for argv in commands(vol.url, place.url, mp):
            line, _ = run_refused(bd, [*argv, "--addressing", "path", f"--endpoint={endpoint}"], env=env_without)
            assert "--endpoint" in line and "scheme://host[:port]" in line, line
            assert SECRET_WORD not in line, line
            if n < 6:  # the variable goes through the same check: its first few cases suffice
                line, _ = run_refused(bd, [*argv, "--addressing", "path"],
                                      env=env_without | {"AWS_ENDPOINT_URL": endpoint})
                assert "AWS_ENDPOINT_URL" in line and "scheme://host[:port]" in line, line
                assert SECRET_WORD not in line, line
        assert bucket_listing(bd) == before, f"{endpoint!r}: a refused command changed the bucket"
    # the good forms still work: a trailing slash, and the variable alone
    assert bd.run("info", vol.url, "--addressing", "path", f"--endpoint={good}/").returncode == 0
    proc = subprocess.run([str(CLI), "info", vol.url, "--addressing", "path"], capture_output=True, text=True,
                          timeout=60, env=env_without | {"AWS_ENDPOINT_URL": good + "/"})
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------
# 4. nothing there
# --------------------------------------------------------------------------

def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_endpoint_fails_fast_in_one_line(bd, tmp_path):
    vol = bd.create(size=SIZE, block_size=BLOCK)
    mp = tmp_path / "mp"
    mp.mkdir()
    before = bucket_listing(bd)
    slowest = 0.0
    for endpoint, reason in ((f"http://127.0.0.1:{closed_port()}", "connection refused"),
                             (f"http://no-such-host-{uuid.uuid4().hex[:8]}.invalid:8333", "name")):
        for argv in commands(vol.url, bd.new_place().url, mp):
            extra = ["--log", tmp_path / "mount.log"] if argv[0] == "mount" else []
            line, took = run_refused(bd, [*argv, "--endpoint", endpoint, "--addressing", "path", *extra])
            assert endpoint in line and reason in line, line
            assert took < FAST, f"{argv[0]} against {endpoint} took {took:.1f} s: {line}"
            slowest = max(slowest, took)
    assert bucket_listing(bd) == before
    print(f"slowest refusal of an unreachable endpoint: {slowest:.2f} s")
