"""`bucketdisk snapshot create|list|delete` on a volume URL (issue 14),
through real mounts, on both stores: a snapshot keeps the disk as it was
while the live disk changes, counts only what changed, survives gc, and
deleting it frees what only it kept."""
from __future__ import annotations

import json
import os

from conftest import MiB, assert_cli_error, pwrite_fsync
from bucketdisk.store import open_store
from bucketdisk.volume.snapshots import SnapshotRecords
from bucketdisk.volume.volume import Volume


def snapshot_disk(vol, name: str) -> bytes:
    """The disk as snapshot `name` keeps it, read through the engine."""
    store = open_store(vol.url, s3=None) if vol.kind == "file" else None
    if store is None:
        from bucketdisk.store.credentials import Credentials
        from bucketdisk.store.s3 import S3Options, S3Store
        server = vol.place.server
        store = S3Store(vol.place.bucket, vol.place.prefix,
                        S3Options(endpoint=server.endpoint, addressing="path", region=server.region),
                        credentials=Credentials(server.access_key, server.secret_key))
    volume = Volume(store, writable=False)
    try:
        kept = SnapshotRecords.of(store, volume.record).find(name)
        disk = bytearray()
        for number, page_hash in enumerate(kept.page_hashes):
            page = volume.maps.read_page(page_hash, number) if any(page_hash) else \
                bytes(volume.maps.page_bytes(number))
            for at in range(0, len(page), 32):
                h = page[at:at + 32]
                disk += volume.read_block(h) if any(h) else bytes(volume.block_size)
        return bytes(disk)
    finally:
        volume.close()


def snap(bd, vol, *args) -> str:
    return bd.ok("snapshot", *args[:1], vol.url, *args[1:], *vol.store_args).stdout


def test_a_snapshot_keeps_the_disk_as_it_was(bd):
    vol = bd.create(size="8M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, os.urandom(2 * MiB))
    bd.unmount(m)
    assert "snapshot 1 'first'" in snap(bd, vol, "create", "--name", "first")
    first = bytes(model)

    m = bd.mount(vol)
    pwrite_fsync(m.file, model, MiB, os.urandom(256 << 10))  # 4 blocks of 64K change
    bd.unmount(m)
    snap(bd, vol, "create", "--name", "second")
    listed = json.loads(snap(bd, vol, "list", "--json"))
    assert [(s["number"], s["name"], s["type"]) for s in listed] == [(1, "first", "manual"), (2, "second", "manual")]
    assert listed[0]["changed_blocks"] == 32 and listed[1]["changed_blocks"] == 4
    assert 0 < listed[1]["new_bytes"] <= 4 * 64 * 1024 + 4096

    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, os.urandom(4 * MiB))  # the live disk moves on
    bd.unmount(m)
    bd.ok("gc", vol.url, *vol.store_args)
    assert snapshot_disk(vol, "first") == first
    info = bd.info(vol)
    assert info["snapshots"] == 2 and info["live_mapped_bytes"] == 4 * MiB
    assert info["snapshots_mapped_bytes"] == 2 * 2 * MiB  # two snapshots of 2 MiB written
    assert info["sharing_ratio"] == round((4 + 4) * MiB / info["stored_bytes"], 2)
    # Only each snapshot names the 4 blocks where they differ: the live disk replaced all.
    unique = [(s["unique_blocks"], s["unique_bytes"]) for s in json.loads(snap(bd, vol, "list", "--json"))]
    assert [blocks for blocks, _ in unique] == [4, 4]
    assert all(4 * 64 * 1024 <= size <= 4 * (64 * 1024 + 4096) for _, size in unique), unique
    before = vol.object_bytes()
    assert "deleted snapshot 1 'first'" in snap(bd, vol, "delete", "first")
    assert before - vol.object_bytes() >= unique[0][1]  # what only it kept is gone
    left = json.loads(bd.ok("gc", vol.url, "--dry-run", "--json", *vol.store_args).stdout)
    assert (left["found_blocks"], left["found_map_pages"]) == (0, 0), left  # its pages too
    assert [s["name"] for s in json.loads(snap(bd, vol, "list", "--json"))] == ["second"]
    m = bd.mount(vol, read_only=True)
    with open(m.file, "rb") as f:
        assert f.read() == bytes(model)
    bd.unmount(m)


def test_bad_snapshot_commands_say_so_in_one_line_and_change_nothing(bd):
    vol = bd.create(size="4M", block_size="64K")
    snap(bd, vol, "create", "--name", "a")
    before = vol.snapshot()
    for args in (["create", "--name", "a"], ["create", "--name", "Latest"], ["create", "--name", "a/b"],
                 ["delete", "nope"]):
        line = assert_cli_error(bd.run("snapshot", args[0], vol.url, *args[1:], *vol.store_args))
        assert "snapshot" in line or "reserved" in line, line
    m = bd.mount(vol)
    line = assert_cli_error(bd.run("snapshot", "create", vol.url, *vol.store_args))
    assert "mounted writable" in line, line
    line = assert_cli_error(bd.run("snapshot", "create", str(m.path), "--name", "a/b"))
    assert "bad snapshot name" in line, line
    line = assert_cli_error(bd.run("snapshot", "list", str(m.path / "stats")))
    assert "neither a volume URL nor a bucketdisk mount" in line, line
    bd.unmount(m)
    after = vol.snapshot()
    assert {k: v for k, v in after.items() if k.startswith("snapshots/")} == \
        {k: v for k, v in before.items() if k.startswith("snapshots/")}


def test_a_live_mount_takes_a_clean_snapshot_of_its_frozen_filesystem(bd, tmp_path):
    from conftest import run
    vol = bd.create(size="64M", block_size="64K")
    m = bd.mount(vol)
    run("mkfs.ext4", "-q", "-F", m.file, timeout=180, check=True)
    ext = bd.loop_mount(m.file, tmp_path / "ext")
    (ext / "a").write_text("before")
    out = bd.ok("snapshot", "create", str(m.path), "--freeze", str(ext), "--name", "one").stdout
    assert "snapshot 1 'one'" in out
    (ext / "a").write_text("after")  # thawed: the filesystem takes writes again
    line = assert_cli_error(bd.run("snapshot", "create", str(m.path), "--freeze", str(ext), "--name", "one"))
    assert "exists already" in line
    (ext / "b").write_text("still thawed after a refusal")
    # --freeze takes only a filesystem loop-mounted from this mount's disk:
    # a plain directory (it lies on another filesystem, / say), a filesystem
    # of another image, the bucketdisk mount itself
    other = tmp_path / "other.img"
    with open(other, "wb") as f:
        f.truncate(16 * MiB)
    run("mkfs.ext4", "-q", "-F", other, timeout=180, check=True)
    unrelated = bd.loop_mount(other, tmp_path / "unrelated")
    for path, said in ((ext / "sub-dir-not-a-mount", "no filesystem is loop-mounted exactly there"),
                       (unrelated, f"is on {other}, not on the disk of {m.path}"),
                       (m.path, "no filesystem is loop-mounted exactly there")):
        if path.name == "sub-dir-not-a-mount":
            path.mkdir()
        line = assert_cli_error(bd.run("snapshot", "create", str(m.path), "--freeze", str(path), "--name", "two"))
        assert said in line, line
    (unrelated / "x").write_text("never frozen")
    bd.loop_umount(unrelated, other)
    os.sync()
    listed = json.loads(bd.ok("snapshot", "list", str(m.path), "--json").stdout)
    assert [s["name"] for s in listed] == ["one"]
    # The snapshot alone, mounted beside the live writable mount, without its lease.
    for name in ("one", "Latest", "1"):
        kept = bd.mount(vol, tmp_path / f"kept-{name}", extra=["--snapshot", name])
        old = bd.loop_mount(kept.file, tmp_path / f"old-{name}", read_only=True)
        assert (old / "a").read_text() == "before" and not (old / "b").exists()
        bd.loop_umount(old, kept.file)
        line = assert_cli_error(bd.run("snapshot", "create", str(kept.path)))
        assert "read-only" in line, line
        bd.unmount(kept)
    (ext / "c").write_text("the live disk stayed writable")
    (tmp_path / "nope").mkdir()
    line = assert_cli_error(bd.run("mount", vol.url, str(tmp_path / "nope"), "--snapshot", "nope",
                                   *vol.store_args))
    assert "no snapshot named 'nope'" in line, line
    bd.loop_umount(ext, m.file)
    bd.unmount(m)

    image = tmp_path / "one.img"
    image.write_bytes(snapshot_disk(vol, "one"))
    assert run("e2fsck", "-fn", image, timeout=180).returncode == 0, "the snapshot's filesystem is not clean"
    old = bd.loop_mount(image, tmp_path / "old", read_only=True)
    assert (old / "a").read_text() == "before" and not (old / "b").exists()
    bd.loop_umount(old, image)


def expected_ranges(old: bytes, new: bytes, block_size: int) -> list[list[int]]:
    """Changed blocks of two disk images, joined into [offset, length] ranges."""
    ranges: list[list[int]] = []
    for at in range(0, len(old), block_size):
        if old[at:at + block_size] != new[at:at + block_size]:
            if ranges and sum(ranges[-1]) == at:
                ranges[-1][1] += block_size
            else:
                ranges.append([at, block_size])
    return ranges


def test_a_diff_names_exactly_the_ranges_that_changed(bd):
    import random
    rng = random.Random(7)
    vol = bd.create(size="8M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, os.urandom(3 * MiB))
    bd.ok("snapshot", "create", str(m.path), "--name", "s1")
    for _ in range(12):  # unaligned pieces, some rewriting what is there already
        at = rng.randrange(vol.size - 100_000)
        piece = bytes(model[at:at + 5000]) if rng.random() < 0.3 else os.urandom(rng.randrange(1, 100_000))
        pwrite_fsync(m.file, model, at, piece)
    bd.ok("snapshot", "create", str(m.path), "--name", "s2")
    s2_model = bytes(model)
    pwrite_fsync(m.file, model, 5 * MiB + 123, os.urandom(70_000))
    with open(m.file, "r+b") as f:  # acknowledged, not fsynced: "live" still counts it
        f.seek(7 * MiB)
        f.write(os.urandom(1000))
    live = json.loads(bd.ok("snapshot", "diff", str(m.path), "s2", "live", "--json").stdout)
    bd.unmount(m)
    s1, s2 = snapshot_disk(vol, "s1"), snapshot_disk(vol, "s2")
    assert s2 == s2_model
    found = json.loads(bd.ok("snapshot", "diff", vol.url, "s1", "s2", "--json", *vol.store_args).stdout)
    assert found["ranges"] == expected_ranges(s1, s2, vol.block_size)
    assert found["count"] == len(found["ranges"]) and found["bytes"] == sum(n for _, n in found["ranges"])
    m = bd.mount(vol, read_only=True)
    with open(m.file, "rb") as f:
        now = f.read()
    bd.unmount(m)
    assert live["ranges"] == expected_ranges(s2, now, vol.block_size)
    assert [7 * MiB, 64 << 10] in live["ranges"]
    line = assert_cli_error(bd.run("snapshot", "diff", vol.url, "s1", "nope", *vol.store_args))
    assert "no snapshot named 'nope'" in line


def test_restore_makes_the_disk_a_snapshot_and_can_be_undone(bd):
    vol = bd.create(size="4M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, os.urandom(MiB))
    bd.ok("snapshot", "create", str(m.path), "--name", "s1")
    state_a = bytes(model)
    pwrite_fsync(m.file, model, MiB // 2, os.urandom(2 * MiB))
    bd.ok("snapshot", "create", str(m.path), "--name", "s2")
    pwrite_fsync(m.file, model, 3 * MiB, os.urandom(100_000))  # live, after s2
    state_live = bytes(model)
    line = assert_cli_error(bd.run("restore", vol.url, "--snapshot", "s1", *vol.store_args))
    assert "mounted writable" in line, line
    bd.unmount(m)

    def disk() -> bytes:
        r = bd.mount(vol, read_only=True)
        with open(r.file, "rb") as f:
            data = f.read()
        bd.unmount(r)
        return data

    out = bd.ok("restore", vol.url, "--snapshot", "s1", *vol.store_args).stdout
    assert "the disk is now snapshot 1 's1'" in out and "pre-restore" in out
    assert disk() == state_a
    listed = json.loads(snap(bd, vol, "list", "--json"))
    undo = [s for s in listed if s["type"] == "pre-restore"]
    assert len(undo) == 1 and undo[0]["number"] == 3
    bd.ok("restore", vol.url, "--snapshot", "3", *vol.store_args)
    assert disk() == state_live
    bd.ok("gc", vol.url, *vol.store_args)
    assert snapshot_disk(vol, "s2") != state_a and snapshot_disk(vol, "s1") == state_a
    line = assert_cli_error(bd.run("restore", vol.url, "--snapshot", "nope", *vol.store_args))
    assert "no snapshot named 'nope'" in line, line


def test_gc_beside_a_writer_frees_only_what_nothing_needs(bd, tmp_path):
    import subprocess
    vol = bd.create(size="16M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, os.urandom(8 * MiB))
    bd.ok("snapshot", "create", str(m.path), "--name", "s1")
    pwrite_fsync(m.file, model, 0, os.urandom(4 * MiB))
    bd.ok("snapshot", "create", str(m.path), "--name", "s2")
    s2 = bytes(model)
    before = vol.object_bytes()
    bd.ok("snapshot", "delete", str(m.path), "s1")  # and sweeps what only s1 kept
    assert vol.object_bytes() < before, "deleting s1 freed nothing"
    # fio writes and verifies the upper half while gc sweeps through the mount's daemon
    fio = subprocess.Popen(["fio", "--name=gc-beside", f"--filename={m.file}", "--rw=randwrite", "--bs=4k",
                            "--offset=8M", "--size=8M", "--io_size=24M", "--verify=crc32c", "--do_verify=1",
                            "--fsync=64", "--output-format=json"], cwd=tmp_path,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sweeps = 0
    try:
        while fio.poll() is None or sweeps == 0:
            json.loads(bd.ok("gc", str(m.path), "--json").stdout)
            sweeps += 1
    finally:
        out, err = fio.communicate(timeout=600)
    assert fio.returncode == 0, f"fio failed: {err}\n{out[-2000:]}"
    assert json.loads(out[out.index("{"):])["jobs"][0]["error"] == 0
    bd.unmount(m)
    assert snapshot_disk(vol, "s2") == s2
    m = bd.mount(vol, read_only=True)
    with open(m.file, "rb") as f:
        assert f.read(8 * MiB) == s2[:8 * MiB]  # fio wrote only the upper half
    bd.unmount(m)
    bd.ok("gc", vol.url, *vol.store_args)
    m = bd.mount(vol, read_only=True)  # every object the live map names is still there
    with open(m.file, "rb") as f:
        assert len(f.read()) == vol.size
    bd.unmount(m)
    assert snapshot_disk(vol, "s2") == s2
