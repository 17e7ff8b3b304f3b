"""Creating a volume: writing its record into an empty place.

What `create` may touch, and what it refuses (one line, nothing changed):

* a place inside another volume (a directory or prefix above it holds a
  volume record) or around one (a volume record somewhere below it):
  refused with or without --force, naming the other volume.  One volume's
  keys never share a place with another's, so deleting one never reaches
  into the other.
* a place holding anything that is not a key of the volume layout
  (layout.is_volume_key): refused with or without --force, naming the
  first such key.  --force replaces a bucketdisk volume; it never deletes
  files or objects bucketdisk did not write.
* a place holding a volume (or what is left of one): refused unless
  --force, and with --force while that volume is mounted writable.

Cost: one listing of the place (it is wiped from that listing anyway), one
HEAD of `volume` per enclosing directory or prefix, and a GET of each
candidate record below the place until one proves to be a volume.
"""
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..codec.keys import Secret, VolumeKeys
from ..errors import Forbidden, NotFound, StoreError, UserError
from ..store.base import DeleteGuard, ObjectStore
from ..store.names import is_plain_key, shown
from . import layout
from .latedeletes import LATE_DELETE_SECONDS
from .lock import Lease, current_holder
from .record import VolumeRecord, check_map_fits, validate_geometry
from .rollback import SeenState, remember_place
from .unlock import sealed

if TYPE_CHECKING:
    from .sweep import Progress  # (not imported at run time: it brings in the whole Volume)

RECORD_SUFFIX = "/" + layout.RECORD
DELETE_CHUNK = 1000  # keys per progress step of a replacement's wipe (S3 DeleteObjects takes 1000)
MAX_RECORD_BYTES = 64 << 10  # a volume record is a few hundred bytes; a larger `volume` is something else


def create_volume(store: ObjectStore, size: int, block_size: int, *, force: bool = False,
                  compression: str = "zstd", level: int = 1,
                  secret: Callable[[], Secret] | None = None, progress: "Progress | None" = None) -> VolumeRecord:
    """Write a new, empty volume into `store`'s place; with `force`, replace
    the volume there (`progress`, sweep.py's, sees its objects deleted).  `compression` ("zstd" or "none") and zstd's `level`
    go into its record.  With `secret`, the volume is encrypted (a new data
    key, wrapped for what `secret()` gives, asked once the place is known
    to be usable).  Raises UserError (having changed nothing) for the
    refusals in the module docstring.  Returns the record, unlocked."""
    chosen = {"compression": compression, "compression_level": level}
    validate_geometry(size, block_size)
    check_map_fits(size, block_size)
    outer = enclosing_volume(store)
    if outer is not None:
        raise UserError(f"{outer} is a bucketdisk volume and {store.url()} lies inside it; "
                        "a volume cannot hold another: choose a place outside it")
    keys = [k for k in store.list() if k != ""]  # "": an S3 console's folder marker of the place itself
    inner = nested_volume(store, keys)
    if inner is not None:
        raise UserError(f"{store.url()} holds another bucketdisk volume, {store.url().rstrip('/')}/{inner}; "
                        "a volume cannot hold another: choose a place outside it")
    foreign = [k for k in keys if not layout.is_volume_key(k)]
    if layout.RECORD in keys and not _holds_record(store, layout.RECORD):
        foreign.insert(0, layout.RECORD)  # a file named `volume` that is not our record
    if foreign:
        raise UserError(f"{store.url()} holds data that is not part of a bucketdisk volume "
                        f"({_count(len(foreign), 'object')}, first {shown(foreign[0])}); bucketdisk creates volumes "
                        "only in an empty place, even with --force: choose another place")
    if keys and not force:
        what = "a volume" if layout.RECORD in keys else "what is left of a volume (no record)"
        raise UserError(f"{store.url()} already holds {what}; use --force to replace it (its data is lost)")
    sealing = (VolumeKeys.generate(), secret()) if secret is not None else None
    if keys:
        holder = current_holder(store)
        if holder is not None and holder.state() in ("live-here", "held"):
            raise UserError(f"that volume is mounted by {holder.describe()}; unmount it before replacing it")
        # Hold the lease while wiping, so no mount starts in between; its
        # epoch fences a writer whose lease had only expired.
        lease = Lease.acquire(store, min_epoch=_max_epoch(keys))
        try:
            _delete_volume_keys(store, [k for k in keys if k != layout.lease_key(lease.epoch)],
                                lambda keys, attempt: lease.check(), progress or _no_progress)
            # Its lease object stays (released), so the new volume's epochs
            # go on above the old one's; the record says that the old one's
            # deletes may still land (latedeletes.py).
            return _write_record(store, VolumeRecord(size, block_size, replaced=True, **chosen), sealing)
        finally:
            lease.release()
    return _write_record(store, VolumeRecord(size, block_size, **chosen), sealing)


def missing_volume(store: ObjectStore) -> UserError:
    """The error for a place with no volume record, its hint the `create`
    that works there: plain for an empty place, with --force for what is
    left of a volume (a `create --force` killed between deleting the
    record and writing the new one), none for a place holding other data
    (create refuses it even with --force).  Reads the listing up to the
    first key that is no part of a volume."""
    url = store.url()
    leftover = False
    for key in store.list():
        if key == "":  # an S3 console's folder marker of the place itself
            continue
        if not layout.is_volume_key(key):
            return UserError(f"no bucketdisk volume at {url}, and it holds other data (first {shown(key)}); "
                             "create volumes in an empty place")
        leftover = True
    if leftover:
        # Also what a lost record leaves (deleted by hand, a lifecycle rule):
        # then the map and blocks are all here, and create --force would
        # delete them, so the hint says both.
        return UserError(f"no bucketdisk volume at {url}, only what is left of one: its record "
                         f"({layout.RECORD}) is gone. If a 'create --force' was cut short, finish it with "
                         f"'bucketdisk create {url} --size SIZE --force'; if not, the volume's data is still "
                         f"there and that would delete it: put {layout.RECORD} back (a backup, the bucket's "
                         "versioning) instead")
    return UserError(f"no bucketdisk volume at {url}; create one with 'bucketdisk create {url} --size SIZE'")


def _write_record(store: ObjectStore, record: VolumeRecord, sealing: tuple | None) -> VolumeRecord:
    if sealing is not None:
        record = sealed(record, *sealing)
        SeenState(record.uuid).saw([], [])  # this machine knows it as encrypted (rollback.py)
    remember_place(store.url(), record.encrypted)
    if not store.put(layout.RECORD, record.to_bytes(), if_absent=True):
        raise UserError(f"another create wrote a volume at {store.url()} at the same moment")
    _check_listed(store)
    return record


def _no_progress(phase: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


def _max_epoch(keys: list[str]) -> int:
    """The highest epoch any root, journal or lease among `keys` carries."""
    epochs = [layout.epoch_of_lease_key(k) for k in keys]
    epochs += [name[0] for prefix in (layout.ROOTS, layout.JOURNAL) for k in keys
               if (name := layout.name_of(k, prefix)) is not None]
    return max([e for e in epochs if e is not None], default=0)


def enclosing_volume(store: ObjectStore) -> str | None:
    """The URL of the nearest volume whose place encloses `store`'s (a
    directory or prefix above it holding a volume record), or None.
    One HEAD per level; a level these credentials may not read is passed."""
    place = store.parent()
    while place is not None:
        if _holds_record(place, layout.RECORD):
            return place.url()
        place = place.parent()
    return None


def nested_volume(store: ObjectStore, keys: list[str]) -> str | None:
    """The relative prefix (e.g. 'disks/a') of a volume below `store`'s
    place, among `keys` (its listing), or None.

    A candidate is a key ending in `/volume`; it is a volume if other keys
    of the layout sit beside it (no request needed) or if it reads as a
    volume record (one GET).  Stops at the first one found."""
    candidates = sorted(k[: -len(RECORD_SUFFIX)] for k in keys if k.endswith(RECORD_SUFFIX) and is_plain_key(k))
    if not candidates:
        return None
    with_layout = _prefixes_with_layout_keys(keys)
    for prefix in candidates:
        if prefix in with_layout:
            return prefix
    for prefix in candidates:
        if _holds_record(store, f"{prefix}{RECORD_SUFFIX}"):
            return prefix
    return None


def _prefixes_with_layout_keys(keys: list[str]) -> set[str]:
    """Every prefix P such that some key is `P/<a key of the layout other
    than the record>` (blocks, pages, roots, journals, leases)."""
    found = set()
    for key in keys:
        at = key.find("/")
        while at > 0:
            rest = key[at + 1:]
            if rest != layout.RECORD and layout.is_volume_key(rest):
                found.add(key[:at])
            at = key.find("/", at + 1)
    return found


def _holds_record(store: ObjectStore, key: str) -> bool:
    """Whether `key` in `store` is a bucketdisk volume record (by its
    `format` field; any version).  Missing, unreadable to us, too large or
    not JSON: False."""
    try:
        size = store.head(key)
        if size is None or size > MAX_RECORD_BYTES:
            return False
        fields = json.loads(store.get(key))
    except (NotFound, Forbidden, ValueError):
        return False
    return isinstance(fields, dict) and fields.get("format") == "bucketdisk"


def _delete_volume_keys(store: ObjectStore, keys: list[str], guard: DeleteGuard, progress: "Progress") -> None:
    """Delete the volume's keys, the record first so that a half-wiped
    volume is never mistaken for one.  Only layout keys are passed in; the
    filter stays as the last guard.

    The record's name and the highest snapshot number would be used again
    by the new volume, so no late copy of a delete request may name them
    (latedeletes.py): the record's delete is sent once, and if it gets no
    answer the replacement stops (UserError) until such a copy can no
    longer land; the highest snapshot record is overwritten by an empty
    placeholder instead, which keeps the new volume's numbers above it."""
    doomed = [k for k in keys if layout.is_volume_key(k)]
    if layout.RECORD in doomed:
        _delete_record_once(store, guard)
    snapshots = sorted((n, k) for k in doomed if (n := layout.number_of_snapshot_key(k)) is not None)
    if snapshots:
        store.put(snapshots[-1][1], b"")
    rest = [k for k in doomed if k != layout.RECORD and (not snapshots or k != snapshots[-1][1])]
    step = progress("deleting the old volume", len(rest))
    for at in range(0, len(rest), DELETE_CHUNK):
        store.delete(rest[at : at + DELETE_CHUNK], guard=guard)
        step(len(rest[at : at + DELETE_CHUNK]))


def _delete_record_once(store: ObjectStore, guard: DeleteGuard) -> None:
    def once(keys: list[str], attempt: int) -> None:
        if attempt:
            raise StoreError("no answer")
        guard(keys, attempt)

    try:
        store.delete([layout.RECORD], guard=once)
    except StoreError as e:
        until = time.strftime("%H:%M UTC", time.gmtime(time.time() + LATE_DELETE_SECONDS))
        raise UserError(f"replacing the volume stopped before it began: deleting its record failed ({e}); "
                        f"that request may still reach the store until about {until}: run this command "
                        "again after that") from None


def _check_listed(store: ObjectStore) -> None:
    """Raise UserError unless the record just written is listed under the
    very name it was written as: a server or proxy that rewrites keys would
    otherwise give a volume that reads as zeros after the next mount."""
    if layout.RECORD not in store.list(layout.RECORD):
        store.delete([layout.RECORD])
        raise UserError(f"the store at {store.url()} did not list the volume record under the name it was "
                        "written as (a server or proxy rewrites keys); no volume was created")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
