"""Late deletes: a delete request may land long after it was sent.

Block and page objects are named by their content, so a name that was
deleted can be written again by the same writer or its successor.  A
delete request that was held up in the network, or sent again by a retry
after the first try timed out, can land after that new write and remove
it.  S3 rejects a request whose signed date is more than 15 minutes away
from its own clock ("the request must reach AWS within 15 minutes of the
time stamp in the request", AWS Signature Version 4 docs; error
RequestTimeTooSkewed), so a request signed at t lands by t + 15 min, give
or take the clocks' skew.  LATE_DELETE_SECONDS bounds that.

The rule (volume.py): a writer records in each root the hashes it may
delete after writing it (`doomed`), and checks its lease before each
delete request it sends, retries included.  A name is *quarantined* for
LATE_DELETE_SECONDS when
  * a mount takes over the volume: every doomed hash of the root it loads
    (its predecessor may have deletes in flight), for what is left of the
    LATE_DELETE_SECONDS after the predecessor's last delete could have
    been sent (`still_late`: the age of its lease object tells), or
  * a delete request of it failed or was sent again (the first may still
    land), or
  * anything at all, on a volume `create --force` made in place of another
    less than LATE_DELETE_SECONDS ago (that volume's deletes may land on
    this one's objects of equal content).
While a hash is quarantined, every upload of that content also writes an
alias (layout.py), a copy under a name used only once, which no earlier
delete can touch; reads fall back to the alias when the plain
object is gone.  Once the quarantine has passed, the plain object is put
back from the alias if it has gone, and the alias is deleted.  Roots carry
the quarantined hashes forward, and those with an alias not settled yet,
so a mount that takes over mid-quarantine quarantines them again, and a
later mount (or gc) looks for their aliases and settles them.
"""
import logging
import threading
from collections.abc import Callable

from ..errors import NotFound
from ..store.base import DeleteGuard, ObjectStore
from . import layout
from .lock import CLOCK_SKEW, EXPIRY_MARGIN, LEASE_SECONDS, Holder, boottime

log = logging.getLogger(__name__)

# 15 minutes of S3's request-date window, both clocks' skew, a minute to spare.
LATE_DELETE_SECONDS = 15 * 60 + 2 * CLOCK_SKEW + 60.0

BLOCK, PAGE = "block", "page"


class Quarantine:
    """The block and page hashes whose plain objects may still be deleted
    by an earlier request, until when (CLOCK_BOOTTIME seconds), and the
    aliases written for them.  Thread-safe."""

    def __init__(self, seconds: float = LATE_DELETE_SECONDS) -> None:
        self.seconds = seconds
        self._everything_until = 0.0  # every hash is quarantined until then (a volume created anew)
        self._lock = threading.Lock()
        self._until: dict[tuple[str, bytes], float] = {}
        self._aliases: dict[tuple[str, bytes], str] = {}
        # Doomed in the root this mount loaded: an earlier mount may have
        # left an alias of them that it did not settle (found by listing).
        self._unchecked: set[tuple[str, bytes]] = set()

    def add(self, kind: str, hashes, seconds: float | None = None) -> None:
        """Quarantine these hashes of `kind` (BLOCK or PAGE) for `seconds`
        (default: the whole quarantine) from now."""
        until = boottime() + (self.seconds if seconds is None else seconds)
        with self._lock:
            for h in hashes:
                self._until[(kind, h)] = max(until, self._until.get((kind, h), 0.0))

    def add_everything(self, seconds: float) -> None:
        """Quarantine every hash for `seconds` from now."""
        with self._lock:
            self._everything_until = max(self._everything_until, boottime() + seconds)

    def holds(self, kind: str, content_hash: bytes) -> bool:
        now = boottime()
        until = self._until.get((kind, content_hash))
        return now < self._everything_until or (until is not None and now < until)

    def active(self, kind: str) -> list[bytes]:
        """The hashes of `kind` still quarantined (forgetting the rest)."""
        now = boottime()
        with self._lock:
            self._until = {k: t for k, t in self._until.items() if t > now or k in self._aliases}
            return [h for (k, h), t in self._until.items() if k == kind and t > now]

    def recorded(self, kind: str) -> list[bytes]:
        """What a root must list of `kind` for the next mount: hashes still
        quarantined, with an alias not settled yet, or not checked yet."""
        with self._lock:
            aliased = [h for k, h in self._aliases if k == kind]
            unchecked = [h for k, h in self._unchecked if k == kind]
        return list(set(self.active(kind)) | set(aliased) | set(unchecked))

    def add_unchecked(self, kind: str, hashes) -> None:
        """Hashes an earlier mount's root listed as doomed: look for
        aliases of them once their quarantine has passed (to_check)."""
        with self._lock:
            self._unchecked.update((kind, h) for h in hashes)

    def to_check(self, limit: int) -> list[tuple[str, bytes]]:
        """Up to `limit` unchecked (kind, hash) whose quarantine has passed."""
        with self._lock:
            pairs = list(self._unchecked)
        return [pair for pair in pairs if not self.holds(*pair)][:limit]

    def checked(self, kind: str, content_hash: bytes) -> None:
        with self._lock:
            self._unchecked.discard((kind, content_hash))

    def needs_alias(self, kind: str, content_hash: bytes) -> bool:
        """Whether an upload of this content must also write an alias: it
        is quarantined and this mount has not written one yet."""
        return self.holds(kind, content_hash) and (kind, content_hash) not in self._aliases

    def wrote_alias(self, kind: str, content_hash: bytes, key: str) -> None:
        with self._lock:
            self._aliases[(kind, content_hash)] = key

    def settled_aliases(self) -> list[tuple[str, bytes, str]]:
        """(kind, hash, alias key) of the aliases this mount wrote whose
        quarantine has passed: their plain object is safe to rely on."""
        with self._lock:
            return [(k, h, key) for (k, h), key in self._aliases.items() if not self.holds(k, h)]

    def forget_alias(self, kind: str, content_hash: bytes) -> str | None:
        """Forget this mount's alias of that content; returns its key."""
        with self._lock:
            return self._aliases.pop((kind, content_hash), None)


def still_late(predecessor: Holder | None, state: str | None, seconds: float) -> float:
    """How much longer (of a quarantine of `seconds`) a delete sent by the
    mount whose lease object `predecessor` is (Holder.state `state` when
    this mount took over) may still land.  Its holder sent no delete after
    releasing its lease, nor after the lease ran out (LEASE_SECONDS after
    its last renewal): the lease object's age by the store's clock says
    how long ago that was.  Unknown (no such object, no age), or a lease
    taken by force: the whole quarantine."""
    if predecessor is None or predecessor.age is None:
        return seconds
    if state == "released":
        since_last = predecessor.age
    elif state in ("expired", "dead"):
        since_last = predecessor.age - LEASE_SECONDS - EXPIRY_MARGIN
    else:
        since_last = 0.0
    return min(seconds, max(0.0, seconds - since_last))


def plain_key(kind: str, content_hash: bytes) -> str:
    return layout.block_key(content_hash) if kind == BLOCK else layout.page_key(content_hash)


def alias_key(kind: str, content_hash: bytes, number: int) -> str:
    return (layout.block_alias_key if kind == BLOCK else layout.page_alias_key)(content_hash, number)


def find_alias(store: ObjectStore, plain: str) -> str:
    """The key of an alias of the object named `plain`; raises NotFound
    if there is none."""
    for key in aliases_of(store, plain):
        return key
    raise NotFound(plain, store.key_url(plain))


def aliases_of(store: ObjectStore, plain: str) -> list[str]:
    """The keys of every alias of the object named `plain` (one listing)."""
    return [key for key in store.list(plain + "-") if layout.alias_of(key) is not None]


def settle(store: ObjectStore, kind: str, content_hash: bytes, alias: str, guard: DeleteGuard,
           reads: Callable[[str], bool]) -> None:
    """Once its quarantine has passed: put the plain object back from the
    alias if a late delete removed it (or it does not read: a damaged
    copy), then delete the alias.  `reads(key)`: whether that key holds
    the object, intact.  Where neither copy reads, both stay (verify and
    fsck name them)."""
    plain = plain_key(kind, content_hash)
    try:
        if not reads(plain):
            if not reads(alias):
                log.error("neither %s nor its alias %s reads; both are kept", plain, alias)
                return
            store.put(plain, store.get(alias))  # (sealed, an alias is bound to the plain name: the same bytes)
    except NotFound:  # settled or swept meanwhile by another
        return
    store.delete([alias], guard=guard)
