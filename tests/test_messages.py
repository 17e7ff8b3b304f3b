"""What bucketdisk says when something went wrong: true, one line, and
naming what the user needs (real mounts, real stores).

4. After a `create --force` killed partway, the next command's hint is the
   `create` that works there (with --force), and it does.
"""
from __future__ import annotations

import random
import re
import signal
import subprocess
import time

from conftest import CLI, MiB, Mount, assert_cli_error, pwrite_fsync
from faultproxy import FaultProxy


def wait_until(predicate, bound: float, interval: float = 0.05) -> bool:
    end = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > end:
            return bool(predicate())
        time.sleep(interval)
    return True


# --------------------------------------------------------------------------
# 4. after a killed `create --force`
# --------------------------------------------------------------------------

def kill_create_force_midway(bd, vol, extra=()) -> None:
    """Run `create --force` over `vol` and SIGKILL it once the old record
    is gone and before the new one is written."""
    creating = subprocess.Popen([str(CLI), "create", vol.url, "--size", "16M", "--force", *vol.store_args,
                                 *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=bd.env)
    try:
        assert wait_until(lambda: vol.place.read("volume") is None, 60, interval=0.0005), "record never deleted"
        creating.kill()
    finally:
        creating.kill()
        creating.wait()
    assert creating.returncode == -signal.SIGKILL, "create --force finished before it could be killed"
    keys = vol.keys()
    assert "volume" not in keys and keys, f"not a create cut short: {sorted(keys)[:5]}"


def hinted_create(line: str) -> list[str]:
    found = re.findall(r"'(bucketdisk create [^']+)'", line)
    assert len(found) == 1, line
    return found[0].split()[1:]


def test_after_a_killed_create_force_the_hint_is_the_create_that_works(bd, janitor):
    vol = bd.create(size="16M", block_size="4K")
    m = bd.mount(vol)
    pwrite_fsync(m.file, bytearray(vol.size), 0, random.randbytes(8 * MiB))  # 2048 objects to delete
    bd.unmount(m)
    extra = ()
    if vol.kind == "s3":  # the record's PUT waits, so the kill lands before it
        host, port = bd.store.server.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
        slow = FaultProxy(host, int(port)).start()
        janitor.push("stop slow proxy", slow.stop)
        slow.put_latency = 2.0
        extra = ("--endpoint", slow.endpoint)
    kill_create_force_midway(bd, vol, extra)

    mp = bd.tmp / "mp-after"
    mp.mkdir()
    for argv in (("info", vol.url), ("gc", vol.url), ("mount", vol.url, mp)):
        proc = bd.run(*argv, *vol.store_args)
        if argv[0] == "mount" and proc.returncode == 0:
            janitor.push("unexpected mount", lambda: bd.cleanup_mount(Mount(None, mp, False, mp)))
        line = assert_cli_error(proc)
        assert f"'bucketdisk create {vol.url} --size SIZE --force'" in line, line
    create = hinted_create(line)
    assert_cli_error(bd.run(*[a for a in create if a != "--force"], *vol.store_args))  # why --force is needed
    made = bd.run(*[("16M" if a == "SIZE" else a) for a in create], *vol.store_args)
    assert made.returncode == 0, made.stderr
    assert bd.info(vol)["size"] == 16 * MiB

    empty = bd.empty_place()
    line = assert_cli_error(bd.run("info", empty.url, *empty.args))
    assert f"'bucketdisk create {empty.url} --size SIZE'" in line, line
    made = bd.run(*[("16M" if a == "SIZE" else a) for a in hinted_create(line)], *empty.args)
    assert made.returncode == 0, made.stderr
