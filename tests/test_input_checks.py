"""Input the user hands in that bucketdisk must refuse before it loses data
(issue 13, "nothing acknowledged is ever lost").  Every refusal is one
`bucketdisk: error:` line and a non-zero exit, and changes nothing.

1. `create` never deletes beyond its own volume: not a volume nested in
   the place (mounted or not), not files or objects of anyone else, not a
   whole bucket; a volume inside or around another is refused in either
   order, with --force too.
2. URLs whose keys a server, HTTP library or proxy could rewrite (`//`,
   `.`/`..`, a trailing dot, backslashes, `%`, control characters), bad
   bucket names and relative or foreign file:// paths are refused by
   create, mount, info and gc; a good prefix (one trailing slash allowed)
   still works end to end.
3. Credentials, AWS config and CA bundle files that cannot be read or
   parsed are refused in one line naming the file, with no secret in it.
4. A volume whose block map would not fit in this machine's memory is
   refused by create (suggesting a block size that fits) and by mount,
   info and gc (before allocating it).
"""
from __future__ import annotations

import json
import os
import random
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import (
    CLI,
    MOUNT_TIMEOUT,
    FilePlace,
    MiB,
    Mount,
    S3Place,
    assert_cli_error,
    assert_file_matches,
    is_mounted,
    parse_size,
    s3_list,
    tree_snapshot,
)

SIZE, BLOCK = "16M", "64K"


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def child(place, name: str):
    """The place `name` below `place` (a subdirectory, a longer prefix)."""
    if place.kind == "file":
        return FilePlace(place.path / name)
    return S3Place(place.server, place.bucket, f"{place.prefix}/{name}")


PLACE_NAME = re.compile(r"^(vol|empty|missing)\d+$")  # FileStoreSpace's places in the tmp dir


def everything(bd):
    """All the test's store holds: every place in its tmp dir (file; not
    the mountpoints and logs beside them) or its whole bucket (s3)."""
    if bd.store.kind == "s3":
        return s3_list(bd.store.server, bd.store.bucket)
    snap = {}
    for entry in sorted(bd.store.root.iterdir()):
        if PLACE_NAME.match(entry.name):
            snap[entry.name] = tree_snapshot(entry)
    return snap


def write_random(path, model: bytearray, rng: random.Random, offset: int, length: int) -> None:
    data = rng.randbytes(length)
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, offset) == length
        os.fsync(fd)
    finally:
        os.close(fd)
    model[offset:offset + length] = data


def stub_mount(path) -> Mount:
    return Mount(volume=None, path=path, read_only=False, log=path)


def refused_mount(bd, url: str, args, tmp_path, *extra, env=None) -> str:
    """Try to mount `url`; assert it is refused in one line and nothing is mounted."""
    mp = tmp_path / f"mp-{uuid.uuid4().hex[:8]}"
    mp.mkdir()
    argv = [CLI, "mount", url, mp, *args, "--log", tmp_path / f"{mp.name}.log", *extra]
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=MOUNT_TIMEOUT,
                          env=env if env is not None else bd.env)
    if proc.returncode == 0:
        bd.janitor.push("unexpected mount", lambda: bd.cleanup_mount(stub_mount(mp)))
    line = assert_cli_error(proc)
    assert not is_mounted(mp)
    return line


# --------------------------------------------------------------------------
# 1. create deletes nothing beyond its own volume
# --------------------------------------------------------------------------

def test_force_around_a_mounted_volume_deletes_nothing(bd, tmp_path):
    """The issue's repro: volumes at P and P/c, P/c mounted and written;
    `create P --force` must leave P/c whole and its mount working."""
    outer = bd.new_place()
    inner = bd.create(size=SIZE, block_size=BLOCK, place=child(outer, "c"))
    m = bd.mount(inner)
    rng, model = random.Random(13), bytearray(inner.size)
    write_random(m.file, model, rng, 0, 300_000)
    record, blocks = inner.record_bytes(), inner.object_keys()
    assert blocks and inner.has_lock()

    for force in ((), ("--force",)):
        err = assert_cli_error(bd.run("create", outer.url, "--size", SIZE, "--block-size", BLOCK, *force,
                                      *outer.args))
        assert inner.url in err and "volume" in err, err
        # the live mount may write journals meanwhile; nothing of the volume is gone
        assert inner.record_bytes() == record and inner.has_lock()
        assert blocks <= inner.object_keys()
        assert "volume" not in outer.keys(), "a refused create wrote a record around the volume"

    # the mount still works, and what it acknowledged reads back after a remount
    assert bd.stats(m.path)["pid"] == m.pid
    write_random(m.file, model, rng, 5 * MiB, 1 * MiB)
    assert_file_matches(m.file, model)
    m = bd.remount(m)
    assert_file_matches(m.file, model)
    bd.unmount(m)

    before = everything(bd)
    err = assert_cli_error(bd.run("create", outer.url, "--size", SIZE, "--force", *outer.args))
    assert inner.url in err, err
    assert everything(bd) == before


def test_create_inside_a_volume_is_refused(bd):
    outer = bd.create(size=SIZE, block_size=BLOCK)
    before = everything(bd)
    for name in ("c", "c/d/e"):
        for force in ((), ("--force",)):
            place = child(outer.place, name)
            err = assert_cli_error(bd.run("create", place.url, "--size", SIZE, *force, *place.args))
            assert outer.url in err and "inside" in err, err
            assert everything(bd) == before, f"a refused create inside {outer.url} changed the store"


def test_create_around_a_volume_is_refused(bd):
    """The other order: an unmounted volume (only its record) below the place."""
    outer = bd.new_place()
    inner = bd.create(size=SIZE, block_size=BLOCK, place=child(child(outer, "disks"), "a"))
    assert sorted(inner.keys()) == ["volume"]
    before = everything(bd)
    for force in ((), ("--force",)):
        err = assert_cli_error(bd.run("create", outer.url, "--size", SIZE, *force, *outer.args))
        assert inner.url in err, err
        assert everything(bd) == before


def test_force_never_deletes_other_data(bd):
    """--force replaces a volume; a place holding anything else is refused,
    alone or beside a volume."""
    place = bd.empty_place()
    place.write("notes/readme", b"not a volume\n")
    before = everything(bd)
    err = assert_cli_error(bd.run("create", place.url, "--size", SIZE, "--force", *place.args))
    assert "notes/readme" in err and "not part of a bucketdisk volume" in err, err
    assert everything(bd) == before

    vol = bd.create(size=SIZE, block_size=BLOCK)
    vol.place.write("photo.jpg", b"\xff\xd8 someone's photo")
    before = everything(bd)
    err = assert_cli_error(bd.run("create", vol.url, "--size", SIZE, "--force", *vol.store_args))
    assert "photo.jpg" in err, err
    assert everything(bd) == before


@pytest.mark.stores("s3")
def test_force_at_a_bucket_root_deletes_nothing(bd):
    """An empty prefix is the whole bucket: the volumes in it and anything
    else there are not create's to delete."""
    vol = bd.create(size=SIZE, block_size=BLOCK)
    bucket_url = f"s3://{bd.store.bucket}"
    before = everything(bd)
    for url in (bucket_url, bucket_url + "/"):
        err = assert_cli_error(bd.run("create", url, "--size", SIZE, "--force", *vol.store_args))
        assert vol.url in err, err
        assert everything(bd) == before


# --------------------------------------------------------------------------
# 2. places a server could rewrite
# --------------------------------------------------------------------------

BAD_SEGMENTS = ["repro//a", "/lead", "a//", "a/./b", "a/../b", "..", "a.", "a/b.", "a\\b", "a%2Fb", "a%41",
                "a b", "a\tb", "a\x01b", "caf\u00e9", "a?b", "a#b"]


@pytest.mark.stores("s3")
def test_s3_prefixes_a_server_could_rewrite_are_refused(bd, tmp_path):
    bucket, args = bd.store.bucket, bd.new_place().args
    before = everything(bd)
    for prefix in BAD_SEGMENTS:
        url = f"s3://{bucket}/{prefix}"
        for command in (("create", url, "--size", SIZE), ("info", url), ("gc", url), ("gc", url, "--dry-run")):
            err = assert_cli_error(bd.run(*command, *args))
            assert "URL" in err or "s3://BUCKET/PREFIX" in err, err
        refused_mount(bd, url, args, tmp_path)
        assert everything(bd) == before, f"{prefix!r}: a refused command wrote to the bucket"


@pytest.mark.stores("s3")
def test_s3_bad_bucket_names_are_refused(bd):
    args = bd.new_place().args
    for bucket in ("ab", "Bad-Bucket", "bad_bucket", "a" * 64, "a..b", "-ab", "ab-", "192.168.1.1",
                   "key:secret@bucket"):
        proc = bd.run("create", f"s3://{bucket}/p", "--size", SIZE, *args)
        err = assert_cli_error(proc)
        assert "secret" not in err, err
        assert "bucket" in err.lower() or "BUCKET" in err, err


@pytest.mark.stores("s3")
def test_s3_good_prefix_round_trip(bd):
    """The repro's steps on a prefix that is fine: create (with one trailing
    slash, the same place), write and fsync 2 MiB, unmount, remount, read."""
    place = child(bd.new_place(), "a")
    bd.ok("create", place.url + "/", "--size", SIZE, "--block-size", BLOCK, *place.args)
    vol = bd.create(size=SIZE, block_size=BLOCK, place=child(bd.new_place(), "b"))
    assert sorted(place.keys()) == ["volume"]
    info = json.loads(bd.ok("info", place.url, "--json", *place.args).stdout)
    assert info["uuid"] == json.loads(place.read("volume"))["uuid"]
    m = bd.mount(vol)
    rng, model = random.Random(2), bytearray(vol.size)
    write_random(m.file, model, rng, 1 * MiB, 2 * MiB)
    m = bd.remount(m)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    vol.assert_clean_layout()


@pytest.mark.stores("file")
def test_file_paths_that_could_be_rewritten_are_refused(bd, tmp_path):
    base = tmp_path / "places"
    base.mkdir()
    # a local path only has to mean one directory: spaces, accents, '%' are fine
    urls = [f"file://{base}/{segment}" for segment in ("repro//a", "a//b", "a/./b", "a/../b", "..", "a\tb",
                                                      "a\x01b", "a?b", "a#b")]
    urls += [f"file://{base}//lead", "file:relative/disk", "file://otherhost/srv/disk", "file:///",
             f"file://user:pw@localhost{base}/disk"]
    before = tree_snapshot(tmp_path)
    for url in urls:
        for command in (("create", url, "--size", SIZE), ("info", url), ("gc", url)):
            err = assert_cli_error(bd.run(*command))
            assert "pw" not in err, err
        refused_mount(bd, url, [], tmp_path)
    # refused_mount made its own mountpoints and logs; nothing else appeared
    after = {k: v for k, v in tree_snapshot(tmp_path).items() if not k.startswith("mp-")}
    assert after == before


@pytest.mark.stores("file")
def test_file_paths_with_spaces_and_accents_work(bd, tmp_path):
    target = tmp_path / "My Backup" / "caf\u00e9 a.b"
    bd.ok("create", f"file://{target}", "--size", SIZE)
    info = json.loads(bd.ok("info", f"file://{target}", "--json").stdout)
    assert info["size"] == parse_size(SIZE)
    assert FilePlace(target).keys().keys() == {"volume"}


@pytest.mark.stores("file")
def test_file_trailing_slash_is_the_same_place(bd, tmp_path):
    target = tmp_path / "disk"
    bd.ok("create", f"file://{target}/", "--size", SIZE)
    assert FilePlace(target).keys().keys() == {"volume"}
    info = json.loads(bd.ok("info", f"file://{target}", "--json").stdout)
    assert info["size"] == parse_size(SIZE)


# --------------------------------------------------------------------------
# 3. files the user hands in
# --------------------------------------------------------------------------

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"

BAD_FILES = {
    "not-utf8": b"[default]\naws_access_key_id = AKIA\xff\xfe\naws_secret_access_key = x\n",
    "binary": bytes(range(256)) * 4,
    "nul-bytes": b"[default]\x00\x00\x00\n",
    "empty": b"",
    "duplicate-section": f"[default]\naws_secret_access_key = {SECRET}\n[default]\nregion = x\n".encode(),
    "duplicate-key": f"[default]\naws_secret_access_key = {SECRET}\naws_secret_access_key = {SECRET}\n".encode(),
    "no-section": f"aws_secret_access_key = {SECRET}\n".encode(),
    "not-ini": f"[default]\n{SECRET}\n".encode(),
}
SPECIAL = ["directory", "fifo", "missing-link", "unreadable"]


def bad_file(path: Path, kind: str) -> Path:
    """Make at `path` a file of `kind` that cannot serve as a credentials
    or config file; returns `path`."""
    if kind == "unreadable":
        # a regular file, mode 0600, whose read fails (EIO), even for root
        path.symlink_to("/proc/self/mem")
    elif kind == "directory":
        path.mkdir(mode=0o700)
    elif kind == "fifo":
        os.mkfifo(path, 0o600)  # opening it would block: it must be refused before
    elif kind == "missing-link":
        path.symlink_to(path.parent / "no-such-file")
    else:
        path.write_bytes(BAD_FILES[kind])
        path.chmod(0o600)
    return path


def aws_env(bd, home: Path, **extra) -> dict[str, str]:
    """The environment with no AWS credentials at all, HOME moved, the
    instance metadata service off (no test asks this machine's), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["HOME"] = str(home)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env | extra


@pytest.mark.stores("s3")
@pytest.mark.parametrize("kind", list(BAD_FILES) + SPECIAL)
def test_unusable_credentials_and_config_files(bd, tmp_path, kind):
    """Each way of handing in a file, with a file that cannot be used:
    one line naming the file, no secret, nothing written."""
    place = bd.new_place()
    good = bd.env  # the server's keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    empty_home = tmp_path / "empty-home"
    empty_home.mkdir()
    path = bad_file(tmp_path / f"bad-{kind}", kind)
    cases = [
        ("--credentials-file", path, good, ["--credentials-file", path]),
        ("AWS_SHARED_CREDENTIALS_FILE", path, aws_env(bd, empty_home, AWS_SHARED_CREDENTIALS_FILE=str(path)), []),
        ("AWS_CONFIG_FILE", path, aws_env(bd, empty_home, AWS_CONFIG_FILE=str(path)), []),
    ]
    if kind != "empty":  # an empty config file names no region: us-east-1, and the keys work
        # the region is looked up in the config file even with working keys at hand
        no_region = {k: v for k, v in good.items() if k not in ("AWS_REGION", "AWS_DEFAULT_REGION")}
        cases.append(("AWS_CONFIG_FILE (region)", path, no_region | {"AWS_CONFIG_FILE": str(path)}, []))
    for name in ("credentials", "config"):
        home = tmp_path / f"home-{name}"
        (home / ".aws").mkdir(parents=True)
        cases.append((f"~/.aws/{name}", bad_file(home / ".aws" / name, kind), aws_env(bd, home), []))

    before = everything(bd)
    for label, path, env, extra in cases:
        for command in (("create", place.url, "--size", SIZE), ("info", place.url)):
            proc = subprocess.run([str(CLI), *command, *place.args, *map(str, extra)], capture_output=True,
                                  text=True, timeout=90, env=env)
            err = assert_cli_error(proc)
            assert str(path) in err, f"{label}: the line does not name the file: {err}"
            assert SECRET not in proc.stderr + proc.stdout, f"{label}: a secret in the output"
            assert "internal error" not in err, err
        assert everything(bd) == before, f"{label}: a refused command wrote to the store"
    # the mount daemon reads the file too: its refusal comes back as the same one line
    label, path, env, extra = cases[0]
    line = refused_mount(bd, place.url, place.args, tmp_path, *map(str, extra), env=env)
    assert str(path) in line, line


@pytest.mark.stores("s3")
@pytest.mark.parametrize("kind", ["garbage", "empty", "not-utf8", "directory", "missing", "fifo"])
def test_unusable_ca_bundle(bd, tmp_path, kind):
    place = bd.new_place()
    path = tmp_path / f"ca-{kind}.pem"
    if kind == "garbage":
        path.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "not-utf8":
        path.write_bytes(b"\xff\xfe\x00garbage" * 50)
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    before = everything(bd)
    for command in (("create", place.url, "--size", SIZE), ("info", place.url)):
        err = assert_cli_error(bd.run(*command, *place.args, "--ca-bundle", path))
        assert str(path) in err and "CA bundle" in err, err
    line = refused_mount(bd, place.url, place.args, tmp_path, "--ca-bundle", path)
    assert str(path) in line, line
    assert everything(bd) == before


# --------------------------------------------------------------------------
# 4. geometry this machine cannot serve
# --------------------------------------------------------------------------

def _suggested(err: str) -> int:
    m = re.search(r"--block-size (\d+[KMGT]?)", err)
    assert m, f"no block size suggested: {err}"
    return parse_size(m.group(1))


def test_create_refuses_a_map_larger_than_memory(bd):
    place = bd.new_place()
    before = everything(bd)
    proc = bd.run("create", place.url, "--size", "16T", "--block-size", "4K", *place.args)
    if proc.returncode == 0:
        pytest.skip("this machine holds a 4-billion-entry block map: nothing to refuse")
    err = assert_cli_error(proc)
    assert "memory" in err and "block map" in err, err
    assert everything(bd) == before
    fits = _suggested(err)
    # the suggestion is the smallest that fits: half of it is refused, it is accepted
    err = assert_cli_error(bd.run("create", place.url, "--size", "16T", "--block-size", str(fits // 2),
                                  *place.args))
    assert _suggested(err) == fits, err
    assert everything(bd) == before
    bd.ok("create", place.url, "--size", "16T", "--block-size", str(fits), *place.args)
    assert json.loads(place.read("volume"))["block_size"] == fits


def test_mount_info_gc_refuse_a_map_larger_than_memory(bd, tmp_path):
    """A volume made elsewhere (or by an older version) whose map this
    machine cannot hold: refused in one line, before the map is allocated."""
    vol = bd.create(size=SIZE, block_size=BLOCK)
    record = json.loads(vol.record_bytes())
    record.update(size=16 << 40, block_size=4 << 10)
    vol.place.write("volume", json.dumps(record).encode())
    before = everything(bd)
    for command in (("info", vol.url), ("info", vol.url, "--json"), ("gc", vol.url), ("gc", vol.url, "--dry-run")):
        proc = bd.run(*command, *vol.store_args, timeout=60)
        if proc.returncode == 0 and command[0] == "info":
            pytest.skip("this machine holds a 4-billion-entry block map: nothing to refuse")
        err = assert_cli_error(proc)
        assert "memory" in err and "block map" in err and "MemoryError" not in err, err
    line = refused_mount(bd, vol.url, vol.store_args, tmp_path)
    assert "memory" in line and "block map" in line, line
    line = refused_mount(bd, vol.url, vol.store_args, tmp_path, "--foreground")
    assert "memory" in line, line
    assert everything(bd) == before


# --------------------------------------------------------------------------
# the key signed is the key sent (no server needed)
# --------------------------------------------------------------------------

def test_signed_path_is_the_path_sent():
    """Keys are sent without encoding and requests leaves the path alone, so
    SigV4 signs exactly what travels; a key that is not plain is never sent."""
    import requests

    from bucketdisk.errors import StoreError, UserError
    from bucketdisk.store import S3Options
    from bucketdisk.store.credentials import Credentials
    from bucketdisk.store.s3 import S3Store

    options = S3Options(endpoint="http://127.0.0.1:9", region="us-east-1", addressing="path")
    store = S3Store("bucket", "disks/a", options, credentials=Credentials("AKIDEXAMPLE", "not-a-secret"))
    try:
        for key in ("volume", "blocks/ab/" + "ab" * 32, "map/roots/" + "0" * 16 + "-" + "1" * 16, "lock/" + "f" * 16):
            path = store._path(key)
            assert path == f"/bucket/disks/a/{key}"
            prepared = requests.PreparedRequest()
            prepared.prepare_url(store._base + path, None)
            assert prepared.path_url == path, "requests would send another path"
        for key in ("a//b", "./x", "a/../b", "x.", "a b", "a%41", "a\\b", "/abs", ""):
            with pytest.raises(StoreError):
                store._path(key)
        assert store.url() == "s3://bucket/disks/a"
        assert store.parent().url() == "s3://bucket/disks"
        assert store.parent().parent().url() == "s3://bucket"
        assert store.parent().parent().parent() is None
        for prefix in ("a//b", "a/./b", "x.", "a%2F"):
            with pytest.raises(UserError):
                S3Store("bucket", prefix, options, credentials=Credentials("AKIDEXAMPLE", "not-a-secret"))
    finally:
        store.close()


def test_force_never_deletes_a_file_named_volume_that_is_not_a_record(bd):
    place = bd.new_place()
    place.write("volume", b"my settings\n")
    place.write("blocks/ab/" + "ab" * 32, b"data")
    before = place.snapshot()
    for extra in ((), ("--force",)):
        err = assert_cli_error(bd.run("create", place.url, "--size", SIZE, *place.args, *extra))
        assert "not part of a bucketdisk volume" in err, err
    assert place.snapshot() == before
