"""Creating a volume: writing its record into an empty place."""
from ..errors import UserError
from ..store.base import ObjectStore
from . import layout
from .lock import current_holder
from .record import VolumeRecord, validate_geometry


def create_volume(store: ObjectStore, size: int, block_size: int, *, force: bool = False) -> VolumeRecord:
    """Write a new, empty volume.  With `force`, an old one is wiped first."""
    validate_geometry(size, block_size)
    existing = list(store.list())
    if existing:
        if not force:
            what = "a volume" if layout.RECORD in existing else "other data"
            raise UserError(f"{store.describe()} already holds {what}; use --force to replace it")
        holder = current_holder(store)
        if holder is not None and holder.state() in ("live-here", "held"):
            raise UserError(f"that volume is mounted by {holder.describe()}; unmount it before replacing it")
        _delete_all(store, existing)
    record = VolumeRecord(size=size, block_size=block_size)
    store.put(layout.RECORD, record.to_bytes())
    return record


def _delete_all(store: ObjectStore, keys: list[str]) -> None:
    # The record goes first so a half-wiped volume is never mistaken for one.
    store.delete(sorted(keys, key=lambda k: k != layout.RECORD))
