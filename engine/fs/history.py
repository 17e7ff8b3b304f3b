"""A mount's history service: snapshot requests from the control channel
(control.py), and scheduled snapshots (`mount --snapshot-every`) each
followed by a prune.  One request at a time."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from ..device.device import BlockDevice
from ..errors import StoreError, UserError
from ..volume import history
from ..volume.history import decision_summary
from ..volume.retention import policy_of
from ..volume.snapshots import check_new_name
from ..volume.sweep import collect
from ..volume.volume import Volume

log = logging.getLogger(__name__)


class HistoryService:
    """Answers history requests for one mount (see control.py for their
    shapes); `schedule` adds a thread that takes one every so often."""

    def __init__(self, device: BlockDevice, volume: Volume,
                 on_change: Callable[[], None] | None = None) -> None:
        """`on_change` is called after snapshots were taken or deleted here."""
        self.device, self.volume, self.on_change = device, volume, on_change
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, request: dict) -> dict:
        """One request's reply fields; raises UserError or StoreError."""
        with self._lock:
            try:
                return self._handle(request)
            finally:
                if self.on_change is not None and request.get("op") in ("snapshot", "delete", "prune"):
                    self.on_change()

    def schedule(self, every: float, keep: dict) -> None:
        """Take a scheduled snapshot every `every` seconds and prune by
        `keep` (prune's options; empty: Time Machine's rule) after each."""
        policy_of(keep)  # refused before the mount goes on
        self._thread = threading.Thread(target=self._scheduled, args=(every, keep), name="snapshots",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the schedule (after a snapshot under way)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _scheduled(self, every: float, keep: dict) -> None:
        while not self._stop.wait(every):
            try:
                made = self.handle({"op": "snapshot", "type": "scheduled"})["snapshot"]
                decided = self.handle({"op": "prune", "policy": keep})["decisions"]
                log.info("scheduled snapshot %s; pruned %d", made["name"],
                         sum(not d["keep"] for d in decided))
            except (StoreError, UserError) as e:
                log.error("scheduled snapshot failed (tried again in %.0f s): %s", every, e)

    def _handle(self, request: dict) -> dict:
        op = request.get("op")
        volume = self.volume
        if op == "list":
            return {"snapshots": history.listed(volume)}
        if op == "diff":
            a, b = str(request.get("a")), str(request.get("b"))
            if "live" in (a, b) and volume.snapshot is not None:
                raise UserError(f"this mount shows snapshot {volume.snapshot!r} alone, not the live disk: diff "
                                "against live on the volume's URL or its writable mount")
            if "live" in (a, b) and not self.device.read_only:
                with self.device.quiesced():  # every acknowledged write in the map compared
                    return {"diff": history.diff(volume, a, b).summary()}
            return {"diff": history.diff(volume, a, b).summary()}
        if op == "gc" and request.get("dry_run"):
            return {"gc": collect(volume, delete=False)}
        if self.device.read_only:
            what = "deletes nothing" if op == "gc" else "takes and deletes no snapshots"
            raise UserError(f"a read-only mount {what}; ask the writable one, or use the volume's URL")
        if op == "gc":
            return {"gc": collect(volume, delete=True)}
        if op == "snapshot":
            return {"snapshot": self._take(request).summary()}
        if op == "delete":
            return {"snapshot": history.delete(volume, str(request.get("name"))).summary()}
        if op == "prune":
            try:
                policy = policy_of(request.get("policy") or {})
            except ValueError as e:
                raise UserError(str(e)) from None
            decided = history.prune(volume, policy, named_too=bool(request.get("named_too")),
                                    dry_run=bool(request.get("dry_run")))
            return {"decisions": [decision_summary(s, d) for s, d in decided]}
        raise UserError(f"unknown control request {op!r}")

    def _take(self, request: dict):
        name = request.get("name")
        if name is not None:
            check_new_name(str(name))  # before the flush
        started = request.get("started")
        with self.device.quiesced():
            snapshot = history.take(self.volume, name=name, type=str(request.get("type", "manual")),
                                    started=float(started) if started is not None else None)
        log.info("snapshot %d '%s': %d blocks changed", snapshot.number, snapshot.name, snapshot.changed_blocks)
        return snapshot
