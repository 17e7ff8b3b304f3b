"""`passwd`: a new passphrase or key file for an encrypted volume.

Only the record changes: the same data key is wrapped for the new secret
(a fresh salt) and the record's MAC made again; no block, page or root is
rewritten, and mounts that hold the key go on.  The record is replaced in
one PUT, so a crash leaves the old secret or the new one working, never
neither.
"""
from collections.abc import Callable

from ..codec.keys import KeySource, Secret
from ..errors import UserError
from ..store.base import ObjectStore
from . import layout
from .create import missing_volume
from .record import VolumeRecord, read_record
from .unlock import sealed, unlock


def change_secret(store: ObjectStore, current: KeySource, new_secret: Callable[[], Secret]) -> VolumeRecord:
    """Rewrap the data key of the volume in `store`, opened with `current`,
    for `new_secret()`.  Returns the new record.  Raises UserError, having
    changed nothing, for a volume that is missing or not encrypted, a
    wrong current secret, or a record that changed meanwhile."""
    record = read_record(store)
    if record is None:
        raise missing_volume(store)
    if not record.encrypted:
        raise UserError(f"{store.url()} is not encrypted: it has no passphrase to change")
    opened = unlock(record, current, store.url())
    renewed = sealed(opened, opened.keys, new_secret())
    if read_record(store) != record:  # (keys are not compared: the stored fields are)
        raise UserError(f"the volume record of {store.url()} changed while this ran (another passwd, or the "
                        "volume was replaced); nothing was changed: run it again")
    store.put(layout.RECORD, renewed.to_bytes())
    return renewed
