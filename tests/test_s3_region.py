"""Where the s3:// store finds the bucket's region, and what it does with it.

What is proved, against the session's SeaweedFS behind tests/faultproxy.py
(which answers a HeadBucket with 301 and `x-amz-bucket-region:
ap-northeast-1`, as AWS S3 answers one sent to another region, and
records every request's Authorization header):
- with no region given (no --region, AWS_REGION, AWS_DEFAULT_REGION or
  profile region), each command asks the bucket once, first, and signs
  every later request for the region named (the credential scope of
  Authorization), and a volume is created, written and read back so;
- an explicit --region, or AWS_REGION, is used as given, without asking;
- on AWS (no endpoint given), the discovered region picks that region's
  endpoint, virtual-host style where the bucket name allows it (lower
  case, no dots: a TLS wildcard matches), else path style (no server
  needed for this one).
"""
from __future__ import annotations

import random

import pytest
from conftest import MiB, assert_file_matches, fsync_path
from faultproxy import FaultProxy

STORES = ("s3",)
TOKYO = "ap-northeast-1"


REGION_VARIABLES = ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_ENDPOINT_URL")


@pytest.fixture
def no_region(monkeypatch, tmp_path):
    """No region anywhere: not in this process's environment nor in the
    commands' (which otherwise carry the server's AWS_REGION), no config."""
    for name in REGION_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    return str(tmp_path / "no-aws-config")


@pytest.fixture
def tokyo(bd, no_region, monkeypatch):
    env = {k: v for k, v in bd.env.items() if k not in REGION_VARIABLES} | {"AWS_CONFIG_FILE": no_region}
    monkeypatch.setattr(type(bd), "env", property(lambda self: env))
    host, port = bd.store.server.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    proxy = FaultProxy(host, int(port)).start()
    proxy.bucket_region = TOKYO
    bd.janitor.push("stop the region proxy", proxy.stop)
    return proxy


def scopes(proxy: FaultProxy) -> list[tuple[str, str, str]]:
    """(method, target, region of the credential scope) of each request."""
    out = []
    for method, target, auth in proxy.signed:
        auth = auth.lower()  # (faultproxy keeps header values in lower case)
        region = auth.split("credential=", 1)[1].split("/")[2] if "credential=" in auth else ""
        out.append((method, target, region))
    return out


def is_head_bucket(method: str, target: str) -> bool:
    return method == "HEAD" and "/" not in target.split("?")[0].strip("/")


def test_a_bucket_in_tokyo_mounts_without_region(bd, tokyo):
    through = ("--endpoint", tokyo.endpoint)  # (after the volume's own --endpoint: it wins)
    vol = bd.create(size="8M", block_size="64K", extra=through)
    m = bd.mount(vol, extra=through)
    model = bytearray(random.Random(3).randbytes(2 * MiB))
    with open(m.file, "r+b") as f:
        f.write(model)
    fsync_path(m.file)
    bd.unmount(m)
    m = bd.mount(vol, read_only=True, cache_size="4M", extra=through)
    assert_file_matches(m.file, model + bytearray(vol.size - len(model)))
    bd.unmount(m)

    seen = scopes(tokyo)
    asked = [s for s in seen if is_head_bucket(s[0], s[1])]
    rest = [s for s in seen if not is_head_bucket(s[0], s[1])]
    assert asked, "nobody asked the bucket for its region"
    assert any(m == "PUT" and "/blocks/" in t for m, t, _ in rest), rest[:5]
    wrong = [s for s in rest if s[2] != TOKYO]
    assert not wrong, f"requests not signed for {TOKYO}: {wrong[:5]}"
    assert seen[0] == asked[0], "the region was not asked first"


@pytest.mark.parametrize("how", ["--region", "AWS_REGION"])
def test_a_given_region_is_used_without_asking(bd, tokyo, monkeypatch, how):
    vol = bd.create(size="8M", block_size="64K")  # straight to the server
    tokyo.signed.clear()
    extra = ["--endpoint", tokyo.endpoint]
    if how == "--region":
        extra += ["--region", "eu-west-3"]
    else:
        env = bd.env | {"AWS_REGION": "eu-west-3"}
        monkeypatch.setattr(type(bd), "env", property(lambda self: env))
    proc = bd.run("info", vol.url, *vol.store_args, *extra)
    assert proc.returncode == 0, proc.stderr
    seen = scopes(tokyo)
    assert seen and not [s for s in seen if is_head_bucket(s[0], s[1])], "the bucket was asked anyway"
    assert {s[2] for s in seen} == {"eu-west-3"}, seen[:5]


@pytest.mark.parametrize("bucket, base", [
    ("tokyo-disks", f"https://tokyo-disks.s3.{TOKYO}.amazonaws.com"),
    ("tokyo.disks", f"https://s3.{TOKYO}.amazonaws.com"),  # dots: no wildcard certificate covers it
])
def test_on_aws_the_region_picks_the_endpoint_and_addressing(no_region, bucket, base):
    from bucketdisk.store.credentials import Credentials
    from bucketdisk.store.s3 import S3Options, S3Store

    store = S3Store(bucket, "d", S3Options(), credentials=Credentials("AKIDEXAMPLE", "not-a-secret"))
    try:
        assert store.region == "us-east-1" and not store._located  # to be asked at check()
        store._aim(TOKYO)
        assert (store._base, store.endpoint) == (base, f"https://s3.{TOKYO}.amazonaws.com")
        assert store._http.region == TOKYO
    finally:
        store.close()
