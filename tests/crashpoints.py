"""Deterministic crash points for the volume layer.

`CrashStore` wraps a real store (file:// or s3:// on the test SeaweedFS)
and numbers every call that changes it (each PUT, each DELETE batch).  At a
chosen call, before or after it reaches the real store, it can stop the
process on the spot (`os._exit`, in a forked child: nothing is flushed,
nothing cleaned up), raise an injected failure once, or start a "flush
thread" that uploads and commits a block while the call is in progress,
as a flush thread of the device would at that moment of a checkpoint or a
collection.

`Workload` is a fixed script of block writes, fsync-style syncs, logged
pages, checkpoints, overwrites, content reused after it was collected,
punches and a clean close, on a small volume (16 blocks of 16 KiB, map
pages of 4 entries, so checkpoints rewrite several pages).  The child
reports through a pipe which step it starts and which it acknowledged
(a sync or close that returned).  `allowed_contents` says, per block, what
may be read after a stop: the content at the last acknowledged step or at
any later step the child had started.
"""
from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bucketdisk.errors import StoreError
from bucketdisk.store.base import ObjectStore
from bucketdisk.volume.mapstore import LOG_PAGE, Run
from bucketdisk.volume.sweep import sweep
from bucketdisk.volume.volume import Volume

BLOCK_SIZE = 16 * 1024
BLOCKS = 16
PAGE_ENTRIES = 4
CRASH_EXIT = 77
HOOK_BLOCK = 11          # the block the "flush thread" hook writes
HOOK_PATIENCE = 1.0      # seconds a store call waits for the hook before going on


class InjectedFailure(StoreError):
    """The failure a CrashStore raises at its chosen call."""


@dataclass
class Plan:
    """What to do at mutating call number `at` (1-based), `when` before or after it."""
    at: int = 0
    when: str = "before"
    action: str = "none"   # exit | fail | hook
    hook: Callable[[], None] | None = None
    hook_content: bytes | None = None
    hook_threads: list[threading.Thread] = field(default_factory=list)


class CrashStore(ObjectStore):
    """A store that counts its mutating calls and acts at the planned one."""

    def __init__(self, inner: ObjectStore, plan: Plan) -> None:
        super().__init__(inner.stats)
        self.inner = inner
        self.plan = plan
        self.calls = 0
        self.log: list[str] = []
        self._lock = threading.Lock()

    def _mutating(self, what: str, call: Callable):
        with self._lock:
            self.calls += 1
            number = self.calls
            self.log.append(what)
        hit = number == self.plan.at
        if hit and self.plan.when == "before":
            self._act()
        result = call()
        if hit and self.plan.when == "after":
            self._act()
        return result

    def _act(self) -> None:
        plan = self.plan
        if plan.action == "exit":
            os._exit(CRASH_EXIT)
        if plan.action == "fail":
            raise InjectedFailure(f"injected failure at call {plan.at} ({plan.when})")
        if plan.action == "hook" and plan.hook is not None:
            thread = threading.Thread(target=plan.hook, name="hook-flush")
            plan.hook_threads.append(thread)
            thread.start()
            thread.join(HOOK_PATIENCE)  # it may wait on this very call (a delete of its content)

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        return self._mutating(f"PUT {key}", lambda: self.inner.put(key, data, if_absent=if_absent))

    def delete(self, keys: Iterable[str], *, guard=None) -> None:
        keys = list(keys)
        if not keys:
            return self.inner.delete(keys, guard=guard)
        return self._mutating(f"DELETE {len(keys)}", lambda: self.inner.delete(keys, guard=guard))

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def head(self, key: str) -> int | None:
        return self.inner.head(key)

    def age(self, key: str) -> float | None:
        return self.inner.age(key)

    def list(self, prefix: str = ""):
        return self.inner.list(prefix)

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()


# --------------------------------------------------------------------------
# the workload
# --------------------------------------------------------------------------

def _contents(seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    return {name: rng.randbytes(BLOCK_SIZE) for name in "ABCDEFGHIJKL"}


CONTENT = _contents(13)
ZERO = bytes(BLOCK_SIZE)


def _page_edit(base: bytes, page: int, seed: int) -> bytes:
    data = bytearray(base)
    data[page * LOG_PAGE : (page + 1) * LOG_PAGE] = random.Random(seed).randbytes(LOG_PAGE)
    return bytes(data)


# Steps: ("open",), ("write", {block: content}), ("sync",), ("checkpoint",),
# ("log", block, page, seed), ("gc",), ("close",).  "sync", "log" and "close"
# acknowledge everything before them.
STEPS: list[tuple] = [
    ("open",),
    ("write", {0: CONTENT["A"], 1: CONTENT["B"], 2: CONTENT["C"], 5: CONTENT["D"], HOOK_BLOCK: CONTENT["E"]}),
    ("sync",),
    ("write", {1: CONTENT["F"], 6: CONTENT["G"]}),          # B loses its last reference
    ("checkpoint",),                                         # ... and is collected
    ("sync",),
    ("log", 2, 1, 101),                                      # an fsync that logs one page of block 2
    ("write", {0: CONTENT["H"], 9: CONTENT["I"], 13: CONTENT["J"], HOOK_BLOCK: CONTENT["K"]}),
    ("sync",),
    ("write", {7: CONTENT["B"]}),                            # B again, after it was collected
    ("checkpoint",),
    ("write", {5: ZERO, 6: CONTENT["L"]}),                   # a punch; G collected next
    ("sync",),
    ("log", 9, 3, 102),
    ("log", 13, 2, 103, "checkpoint"),                      # a checkpoint between the log number and its journal
    ("checkpoint",),
    ("close",),
]
ACKING = {"sync", "log", "close"}
DIED_AFTER = 13  # the prepared volume of TAKEOVER_STEPS: STEPS up to here, then the writer died

# A mount taking over from a writer that died (lease, journals and logged
# pages left behind), then gc, more writes, a clean close.
TAKEOVER_STEPS: list[tuple] = [
    ("open",),
    ("gc",),
    ("write", {1: CONTENT["A"], 3: CONTENT["C"], 9: ZERO}),
    ("sync",),
    ("close",),
]


def states(steps: list[tuple] = STEPS, initial: dict[int, bytes] | None = None) -> list[dict[int, bytes]]:
    """The intended content of every block after each step."""
    current = dict(initial) if initial else {i: ZERO for i in range(BLOCKS)}
    out = []
    for step in steps:
        if step[0] == "write":
            current.update(step[1])
        elif step[0] == "log":
            _, block, page, seed, *_ = step
            current[block] = _page_edit(current[block], page, seed)
        out.append(dict(current))
    return out


def run_workload(store: ObjectStore, steps: list[tuple], report: Callable[[str], None], *,
                 retry_failures: bool = False, volume_ref: list | None = None,
                 after_step: Callable[[str], None] | None = None) -> Volume:
    """Run `steps` on the volume in `store`; report("start N") and
    report("ack N").  With `retry_failures`, a step that fails with an
    injected failure is run again (as the device retries), else it raises.
    `volume_ref[0]` is kept pointing at the open volume (for hooks)."""
    volume = None
    for number, step in enumerate(steps):
        report(f"start {number}")
        for attempt in range(3):
            try:
                volume = _step(volume, store, step)
                break
            except InjectedFailure:
                if not retry_failures or attempt == 2:
                    raise
        if volume_ref is not None:
            volume_ref[0] = volume
        if step[0] in ACKING:
            report(f"ack {number}")
        if after_step is not None:
            after_step(step[0])
    return volume


def _step(volume: Volume | None, store: ObjectStore, step: tuple) -> Volume:
    kind = step[0]
    if kind == "die":
        raise RuntimeError("the writer dies here (a prepared volume)")
    if kind == "open":
        return Volume(store, writable=True)
    if kind == "write":
        for index, data in step[1].items():
            if data == ZERO:
                volume.commit([(index, b"\0" * 32, volume.log_number())])
            else:
                mark = volume.log_number()
                volume.commit([(index, volume.store_block(data, index), mark)])
    elif kind == "sync":
        volume.sync()
    elif kind == "checkpoint":
        volume.checkpoint()
    elif kind == "log":
        _, block, page, seed, *between = step
        edited = _page_edit(_current(volume, block), page, seed)
        number = volume.next_log([block])
        if between:  # as a background checkpoint may while fsync waits for its uploads
            volume.checkpoint()
        try:
            volume.sync([Run(number, block, page, edited[page * LOG_PAGE : (page + 1) * LOG_PAGE])], number)
        except BaseException:
            volume.drop_log(number)
            raise
        _logged[block] = edited  # what the device's cache would now hold
    elif kind == "gc":
        sweep(volume, delete=True)
    elif kind == "close":
        for block, data in sorted(_logged.items()):  # the device uploads logged blocks whole first
            mark = volume.log_number()
            volume.commit([(block, volume.store_block(data, block), mark)])
        _logged.clear()
        volume.close()
    return volume


_logged: dict[int, bytes] = {}  # blocks whose newest content is only in a log (per child process)


def _current(volume: Volume, block: int) -> bytes:
    if block in _logged:
        return _logged[block]
    content_hash = volume.lookup(block)
    return ZERO if content_hash == b"\0" * 32 else volume.read_block(content_hash)


def flush_hook(volume_ref: list, content: bytes) -> Callable[[], None]:
    """A 'flush thread' that stores `content` in HOOK_BLOCK and commits it."""
    def flush() -> None:
        volume = volume_ref[0]
        if volume is None:
            return
        mark = volume.log_number()
        volume.commit([(HOOK_BLOCK, volume.store_block(content, HOOK_BLOCK), mark)])
    return flush


def allowed_contents(all_states: list[dict[int, bytes]], started: int, acked: int,
                     before: dict[int, bytes], extra: dict[int, set[bytes]] | None = None) -> list[set[bytes]]:
    """Per block, the contents a read may return after a stop during step
    `started`, the last acknowledged step being `acked` (-1: none, so the
    state `before` the steps is allowed too)."""
    allowed = [set() for _ in range(BLOCKS)]
    for k in range(max(acked, 0), started + 1):
        for i in range(BLOCKS):
            allowed[i].add(all_states[k][i])
    if acked < 0:
        for i in range(BLOCKS):
            allowed[i].add(before[i])
    for i, more in (extra or {}).items():
        allowed[i] |= more
    return allowed
