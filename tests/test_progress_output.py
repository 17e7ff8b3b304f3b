"""Long commands draw progress bars on a terminal and nothing in scripts;
reporting commands print JSON with --json (issue 17).  gc's and fsck's
bars are tested in test_gc.py and test_fsck.py; here: prune, snapshot
create and delete, restore, recover and create --force, and the --json of
create, snapshot create, snapshot delete, restore and recover.

Each command runs twice alike, once with stdout and stderr piped (stderr
must stay empty) and once with stderr on a pty (the phases must be drawn);
the JSON on stdout is the same document either way.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from conftest import CLI, MiB, assert_file_matches, run_with_terminal_stderr
from test_cache_dir import cache_args, dirty_files, kill9, opened
from test_mount import write_model

pytestmark = pytest.mark.stores("file")  # what is drawn does not depend on the store


def on_terminal(bd, *args) -> tuple[dict | list, bytes]:
    """Run `bucketdisk ARGS --json` with stderr on a terminal: (its JSON, what it drew)."""
    proc, drawn = run_with_terminal_stderr([CLI, *args, "--json"], env=bd.env)
    assert proc.returncode == 0, drawn[-2000:]
    return json.loads(proc.stdout), drawn


def piped(bd, *args, status: int = 0) -> dict | list:
    """Run `bucketdisk ARGS --json` in a script: its JSON; nothing on stderr."""
    proc = bd.run(*args, "--json")
    assert (proc.returncode, proc.stderr) == (status, ""), proc.stderr
    return json.loads(proc.stdout)


def with_snapshots(bd, names: list[str]):
    """A volume with a different 1 MiB written before each snapshot, an
    hour apart (so that their order is that of `names`)."""
    vol = bd.create(size="8M", block_size="64K")
    m = bd.mount(vol)
    rng = random.Random(17)
    for hour, name in enumerate(names):
        with opened(m) as fd:
            os.pwrite(fd, rng.randbytes(MiB), rng.randrange(7) * MiB)
            os.fsync(fd)
        bd.ok("snapshot", "create", m.path, "--name", name, "--time", f"2026-11-30T{hour:02}:00:00Z")
    bd.unmount(m)
    return vol


def test_prune_and_snapshot_delete_draw_their_phases_on_a_terminal_only(bd):
    vol = with_snapshots(bd, ["a", "b", "c", "d"])
    rows = piped(bd, "prune", vol.url, "--keep-last", "3", "--named-too", *vol.store_args)
    assert [(r["name"], r["keep"]) for r in rows] == [("d", True), ("c", True), ("b", True), ("a", False)]
    rows, drawn = on_terminal(bd, "prune", vol.url, "--keep-last", "2", "--named-too", *vol.store_args)
    assert [(r["name"], r["keep"]) for r in rows] == [("d", True), ("c", True), ("b", False)]
    assert b"reading map pages" in drawn and b"deleting" in drawn, drawn[-500:]

    gone, drawn = on_terminal(bd, "snapshot", "delete", vol.url, "c", *vol.store_args)
    assert (gone["name"], gone["number"], gone["damaged"]) == ("c", 3, False)
    assert {"type", "started", "completed", "changed_blocks", "new_bytes", "named"} <= gone.keys()
    assert b"reading map pages" in drawn and b"deleting" in drawn, drawn[-500:]
    listed = json.loads(bd.ok("snapshot", "list", vol.url, "--json", *vol.store_args).stdout)
    assert [s["name"] for s in listed] == ["d"]


def test_snapshot_create_and_restore_report_json_and_restore_draws_its_steps(bd):
    vol = bd.create(size="4M", block_size="64K")
    made = piped(bd, "snapshot", "create", vol.url, "--name", "empty", *vol.store_args)
    assert (made["number"], made["name"], made["type"], made["changed_blocks"]) == (1, "empty", "manual", 0)
    m = bd.mount(vol)
    with opened(m) as fd:
        os.pwrite(fd, b"x" * 70000, 0)
        os.fsync(fd)
    bd.unmount(m)

    done = piped(bd, "restore", vol.url, "--snapshot", "empty", *vol.store_args)
    assert done["url"] == vol.url
    assert (done["restored"]["name"], done["pre_restore"]["type"]) == ("empty", "pre-restore")
    assert done["pre_restore"]["changed_blocks"] == 2  # the 70000 bytes' two 64K blocks
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, bytes(vol.size))
    bd.unmount(m)

    undo = str(done["pre_restore"]["number"])
    done, drawn = on_terminal(bd, "restore", vol.url, "--snapshot", undo, *vol.store_args)
    assert done["restored"]["number"] == int(undo)
    assert b"comparing changed map pages" in drawn and b"sizing new blocks" in drawn, drawn[-500:]
    assert b"restoring snapshot " + undo.encode() in drawn, drawn[-500:]
    made, drawn = on_terminal(bd, "snapshot", "create", vol.url, "--name", "after", *vol.store_args)
    # against the newest snapshot, the second restore's pre-restore one (the empty disk): the two blocks back
    assert (made["name"], made["changed_blocks"]) == ("after", 2)
    assert b"comparing changed map pages" in drawn, drawn[-500:]


def test_create_force_draws_the_wipe_and_reports_json(bd):
    vol = with_snapshots(bd, ["a"])
    made = piped(bd, "create", vol.url, "--size", "4M", "--block-size", "64K", "--force", *vol.store_args)
    assert (made["url"], made["size"], made["block_size"], made["block_count"]) == (vol.url, 4 * MiB, 64 << 10, 64)
    assert (made["compression"], made["encrypted"], made["replaced"]) == ("zstd", False, True)
    assert made["uuid"] == bd.info(vol)["uuid"]
    m = bd.mount(vol)  # objects for the next --force to wipe
    with opened(m) as fd:
        os.pwrite(fd, random.Random(2).randbytes(MiB), 0)
        os.fsync(fd)
    bd.unmount(m)
    made2, drawn = on_terminal(bd, "create", vol.url, "--size", "4M", "--force", *vol.store_args)
    assert made2["replaced"] is True and made2["uuid"] != made["uuid"]
    assert b"deleting the old volume" in drawn, drawn[-500:]
    assert bd.info(vol)["objects"] == 0
    # A first create has nothing to wipe: no bar, and not replaced.
    place = bd.new_place()
    fresh, drawn = on_terminal(bd, "create", place.url, "--size", "4M", *place.args)
    assert fresh["replaced"] is False and b"deleting" not in drawn


def test_recover_draws_its_phases_and_reports_json(bd, tmp_path):
    vol = bd.create(size="8M", block_size="64K")
    model = bytearray(vol.size)
    for attempt, where in enumerate(("piped", "terminal")):
        cache = tmp_path / f"cache-{where}"
        m = bd.mount(vol, extra=cache_args(cache))
        with opened(m) as fd:
            rng = random.Random(attempt)
            for _ in range(50):
                write_model(fd, model, rng.randrange(vol.size - 3000), rng.randbytes(3000))
        kill9(bd, m)
        left = len(dirty_files(cache))
        assert left
        if where == "piped":
            done = piped(bd, "recover", vol.url, *vol.store_args, *cache_args(cache))
        else:
            done, drawn = on_terminal(bd, "recover", vol.url, *vol.store_args, *cache_args(cache))
            assert b"reading the cache dir" in drawn and b"storing blocks" in drawn, drawn[-500:]
        assert done == {"url": vol.url, "cache_dir": str(cache), "blocks": left, "done": "stored",
                        "damaged_files": 0, "torn_pages": 0, "exit": 0}
        assert dirty_files(cache) == []
        m = bd.mount(vol)
        assert_file_matches(m.file, model)
        bd.unmount(m)
    again = piped(bd, "recover", vol.url, *vol.store_args, *cache_args(cache))
    assert (again["blocks"], again["exit"]) == (0, 0)


def _commands(parser, prefix=()):
    """(command words, its parser) for every leaf command of `parser`."""
    import argparse
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, (*prefix, name))


def test_every_reporting_command_has_json_and_a_line_in_the_readme():
    """Every command but those that report only success or one error line
    has --json, and the README's table shows its shape (a command added
    later must take a side here)."""
    from bucketdisk.cli.main import build_parser

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    silent = {("mount",), ("unmount",), ("passwd",)}
    for words, parser in _commands(build_parser()):
        options = {o for a in parser._actions for o in a.option_strings}
        assert ("--json" in options) == (words not in silent), words
        if words not in silent:
            assert f"| `{' '.join(words)}` |" in readme, words
