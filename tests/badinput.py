"""The machinery of test_bad_input.py: one world per store (the volumes,
places and mounts its table's rows name), and the walk that runs each row
through the real CLI and checks what it left.

A world holds, in one store (a directory, or a bucket of the session's
SeaweedFS):
  url      a plain volume of 1M in 64K blocks: blocks 0-2 written, a
           snapshot `first`, then block 5 (so its newest root names a live
           map page the snapshot does not);
  enc      an encrypted volume (passphrase file `pp`);
  crashed  a volume whose mount was killed: a dead lease, and dirty blocks
           in its cache dir `crashed_cache`;
and, on this machine, the mountpoints and cache dirs the rows name:
`mp` (empty), `missing`, `file` (a regular file), `busy` (a tmpfs),
`ro` (a read-only tmpfs), `dir` (a plain directory).
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from conftest import (
    CLI,
    MOUNT_TIMEOUT,
    BD,
    FilePlace,
    FileStoreSpace,
    Janitor,
    Mount,
    S3StoreSpace,
    Volume,
    mounts_at,
    run,
    s3_list,
    s3_request,
    tree_snapshot,
    umount_path,
    wait_pid_gone,
)

BOTH, FILE, S3 = ("file", "s3"), ("file",), ("s3",)
# placeholders that name a volume: store flags go just before the first one
VOLUMES = ("{url}", "{new}", "{enc}", "{crashed}", "{nobucket}")
USAGE_TAIL = re.compile(r"\(see 'bucketdisk( [a-z]+){0,2} --help'\)$")
BLOCK = 64 * 1024
MOUNTPOINTS = ("mp", "dir", "busy", "ro")  # where a mount row could (wrongly) mount


@dataclass(frozen=True)
class Row:
    id: str
    argv: str                 # a template: {url}, {mp}... (World.values)
    words: tuple[str, ...]    # what the error line must hold (templates too)
    stores: tuple = BOTH      # the stores it runs on
    who: str | None = None    # s3: the identity whose keys it uses (None: the owner's)
    report: bool = False      # verify/fsck finding damage: exit 2, the report on stdout


def row(id: str, argv: str, *words: str, stores=BOTH, who=None, report=False) -> Row:
    return Row(id, argv, words, stores, who, report)


# --------------------------------------------------------------------------
# the world
# --------------------------------------------------------------------------

@dataclass
class World:
    kind: str
    bd: BD
    local: Path                 # mountpoints, cache dirs, files: checked after every row too
    logs: Path                  # daemon logs of mount rows (not checked)
    values: dict[str, str] = field(default_factory=dict)
    damaged: dict[str, str] = field(default_factory=dict)  # URLs the damage rows name: record, root, page
    keys: dict[str, str] = field(default_factory=dict)     # their keys in the volume
    volume: Volume | None = None                           # the one at {url}

    # ---- the store as a whole
    def store_state(self) -> dict:
        """Everything the store holds, with contents: the world's directory
        (file), or its bucket and the bucket that must stay missing (s3)."""
        if self.kind == "file":
            return FilePlace(self.bd.store.root).snapshot()
        server, bucket = self.bd.store.server, self.bd.store.bucket
        listed = s3_list(server, bucket) or {}
        return {"bucket": {k: s3_request(server, "GET", bucket, k).content for k in sorted(listed)},
                "missing bucket": s3_list(server, self.values["nobucket"].split("/")[2])}

    def state(self) -> dict:
        return {"store": self.store_state(), "local": tree_snapshot(self.local),
                "mounts": {p: mounts_at(self.local / p) for p in MOUNTPOINTS}}

    def env(self, who: str | None) -> dict | None:
        if self.kind == "file":
            return None
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        server = self.bd.store.server
        return base | (server.env(who) if who else server.env())

    # ---- a row
    def argv(self, r: Row) -> list[str]:
        tokens = shlex.split(r.argv)
        at = next((i for i, t in enumerate(tokens) if t in VOLUMES), None)
        if at is not None and self.kind == "s3":
            tokens[at:at] = ["--endpoint", self.bd.store.server.endpoint, "--addressing", "path"]
        argv = [t.format(**self.values) for t in tokens]
        if argv[0] == "mount" and "--log" not in argv:
            argv += ["--log", str(self.logs / f"{r.id}.log")]
        return argv

    def run_row(self, r: Row) -> list[str]:
        """Run one row; the problems found (none: it passed)."""
        argv = self.argv(r)
        started = time.monotonic()
        proc = subprocess.run([str(CLI), *argv], capture_output=True, text=True, timeout=MOUNT_TIMEOUT,
                              env=self.env(r.who))
        took = time.monotonic() - started
        problems = self._judge(r, argv, proc)
        if argv[0] == "mount" and proc.returncode == 0:  # wrongly mounted: undo it
            for path in (self.local / name for name in MOUNTPOINTS):
                if mounts_at(path) and mounts_at(path)[-1].startswith("fuse"):
                    try:
                        self.bd.cleanup_mount(Mount(None, path, False, path))
                    except AssertionError as e:
                        problems.append(f"its mount at {path} would not go: {e}")
        return [f"{r.id} ({took:.1f} s): {p}\n    argv: {shlex.join(argv)}\n    exit {proc.returncode}, "
                f"stderr: {proc.stderr.strip()[-600:]!r}, stdout: {proc.stdout.strip()[-300:]!r}"
                for p in problems]

    def _judge(self, r: Row, argv: list[str], proc: subprocess.CompletedProcess) -> list[str]:
        words = [w.format(**self.values, **self.damaged) for w in r.words]
        lines = proc.stderr.splitlines()
        command = argv[0]
        if "Traceback" in proc.stderr + proc.stdout:
            return ["a traceback"]
        if r.report:  # the check ran and found damage: its report's first line names it
            first = (proc.stdout.splitlines() or [""])[0]
            problems = [] if proc.returncode == 2 else ["exit status is not 2"]
            problems += [] if not lines else ["stderr is not empty"]
            return problems + [f"{w!r} not in the report's first line" for w in words if w not in first]
        if proc.returncode == 0:
            return ["exit status 0"]
        if len(lines) != 1:
            return [f"{len(lines)} lines on stderr"]
        line, problems = lines[0], []
        usage = bool(USAGE_TAIL.search(line))
        want = 8 if command == "fsck" else 2 if usage else 1
        if proc.returncode != want:
            problems.append(f"exit status {proc.returncode}, not {want}")
        if not (re.match(r"^bucketdisk( [a-z]+){0,2}: error: \S", line) if usage
                else line.startswith("bucketdisk: error: ")):
            problems.append("not an error line of its kind")
        if "internal error" in line:
            problems.append("an internal error")
        return problems + [f"{w!r} not in the line" for w in words if w not in line]

    def walk(self, rows: list[Row]) -> list[str]:
        """Run the rows of this world's store; after each one the store,
        the local places and the mounts must be as before it."""
        problems, before = [], self.state()
        for r in rows:
            if self.kind not in r.stores:
                continue
            problems += self.run_row(r)
            after = self.state()
            if after != before:
                problems.append(f"{r.id}: changed {', '.join(_differences(before, after))}")
                before = after
        return problems


def _differences(before: dict, after: dict, path: str = "") -> list[str]:
    """Where two states differ, at most a few names."""
    found = []
    for key in sorted(set(before) | set(after), key=str):
        a, b = before.get(key), after.get(key)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                found += _differences(a, b, f"{path}{key}/")
            else:
                found.append(f"{path}{key}")
    return found[:6]


# --------------------------------------------------------------------------
# building it
# --------------------------------------------------------------------------

def engine_store(place):
    """The engine's store for a place (in this process)."""
    from bucketdisk.store import open_store

    if place.kind == "file":
        return open_store(place.url)
    from bucketdisk.store.credentials import Credentials
    from bucketdisk.store.s3 import S3Options, S3Store

    server = place.server
    return S3Store(place.bucket, place.prefix, S3Options(endpoint=server.endpoint, addressing="path",
                                                         region=server.region),
                   credentials=Credentials(server.access_key, server.secret_key))


def fill_volume(place) -> tuple[str, str]:
    """Blocks 0-2, the snapshot `first`, then block 5, written through the
    engine; (the newest root's key, its map page's key)."""
    from bucketdisk.volume import history, layout
    from bucketdisk.volume.volume import Volume

    volume = Volume(engine_store(place), writable=True)
    volume.commit([(i, volume.store_block(os.urandom(BLOCK), i), 0) for i in range(3)])
    history.take(volume, name="first")
    volume.commit([(5, volume.store_block(os.urandom(BLOCK), 5), 0)])
    volume.close()
    volume = Volume(engine_store(place), writable=False)
    root = volume.durable_root()
    volume.close()
    assert len(root.page_hashes) == 1
    return layout.root_key(root.epoch, root.seq), layout.page_key(root.page_hashes[0])


def crash_with_cache_dir(bd: BD, volume, cache: Path) -> None:
    """Mount with `cache` as cache dir, write without fsync, kill the
    daemon: a dead lease, and dirty blocks in the cache dir."""
    m = bd.mount(volume, cache_size="1M", extra=["--cache-dir", cache])
    fd = os.open(m.file, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(3 * BLOCK), 0)
    finally:
        os.close(fd)
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid)
    assert bd.run("unmount", m.path).returncode == 0
    assert os.listdir(cache / "dirty"), "the killed mount left no dirty block"


def build_world(kind: str, tmp: Path, seaweed=None) -> tuple[World, Janitor]:
    janitor = Janitor()
    (tmp / "store").mkdir()
    if kind == "file":
        space = FileStoreSpace(tmp / "store")
    else:
        bucket = f"bd-bad-{uuid.uuid4().hex[:10]}"
        seaweed.create_bucket(bucket)
        janitor.push(f"delete bucket {bucket}", lambda: seaweed.delete_bucket(bucket, force=True))
        space = S3StoreSpace(seaweed, bucket)
    bd = BD(tmp / "setup", janitor, space)
    bd.tmp.mkdir()
    local, logs = tmp / "local", tmp / "logs"
    for d in (local, logs, local / "mp", local / "dir", local / "busy", local / "ro", local / "caches"):
        d.mkdir()
    world = World(kind, bd, local, logs)
    try:
        vol = bd.create(size="1M", block_size="64K")
        root, page = fill_volume(vol.place)
        enc = bd.create_encrypted(size="1M", block_size="64K")
        crashed = bd.create(size="1M", block_size="64K")
        crash_with_cache_dir(bd, crashed, local / "caches" / "crashed")
        (local / "file").write_bytes(b"a regular file\n")
        (local / "pp").write_text("correct horse 7\n")  # (create_encrypted's)
        (local / "wrong_pp").write_text("not the passphrase\n")
        (local / "key").write_bytes(os.urandom(32))
        (local / "short_key").write_bytes(os.urandom(10))
        janitor.push("tmpfs busy", lambda: umount_path(local / "busy"))
        run("mount", "-t", "tmpfs", "-o", "size=1m", "bdtest-busy", local / "busy", timeout=60, check=True)
        janitor.push("tmpfs ro", lambda: umount_path(local / "ro"))
        run("mount", "-t", "tmpfs", "-o", "size=1m,ro", "bdtest-ro", local / "ro", timeout=60, check=True)
        new = bd.new_place()
        world.values = {
            "url": vol.url, "enc": enc.url, "crashed": crashed.url, "new": new.url,
            "nobucket": f"s3://no-such-{uuid.uuid4().hex[:12]}/vol" if kind == "s3" else "",
            "crashed_cache": str(local / "caches" / "crashed"),
            **{name: str(local / name) for name in (*MOUNTPOINTS, "file", "missing", "pp", "wrong_pp", "key",
                                                    "short_key")},
        }
        world.damaged = {"record": f"{vol.url}/volume", "root": f"{vol.url}/{root}", "page": f"{vol.url}/{page}"}
        world.volume = vol
        world.keys = {"record": "volume", "root": root, "page": page}
    except BaseException:
        janitor.run_all()
        raise
    return world, janitor
