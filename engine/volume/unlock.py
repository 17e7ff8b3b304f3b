"""Opening an encrypted volume's record, and sealing one.

The record's "encryption" field holds the cipher, the KDF parameters and
the wrapped data key (codec/keys.py); its "mac" field authenticates every
other field under a key derived from the data key.  A record is unlocked
(its keys attached) only when the owner's secret unwraps the data key and
the MAC holds, so neither a wrong passphrase nor an edited record opens a
volume, and neither changes anything in the store.
"""
import dataclasses

from ..codec import keys as keyring
from ..codec.keys import CIPHER, KeySource, Secret, VolumeKeys, WrongSecret
from ..errors import DamagedRecord, UserError
from .rollback import SeenState, encrypted_place, remember_place

# The record version of an encrypted volume: a bucketdisk that knows only
# version 2 refuses it by its version.
ENCRYPTED_VERSION = 3
SECRET_SOURCES = "a prompt, --passphrase-file or BUCKETDISK_PASSPHRASE; or --key-file"


def encryption_problem(value) -> str | None:
    """What is wrong with a record's "encryption" field, or None."""
    if not isinstance(value, dict) or set(value) != {"cipher", "kdf", "wrapped_key"}:
        return "must hold exactly \"cipher\", \"kdf\" and \"wrapped_key\""
    if value["cipher"] != CIPHER:
        return f"names the cipher {str(value['cipher'])[:40]!r}; this bucketdisk knows {CIPHER}"
    return keyring.kdf_problem(value["kdf"]) or keyring.wrapped_problem(value["wrapped_key"])


def unlock(record, source: KeySource | None, where: str):
    """`record` (a VolumeRecord) with its keys, when it is encrypted; as it
    is when not.  `where`: the volume's URL, for messages.  Raises
    UserError (WrongSecret for a wrong passphrase or key file) in one line;
    reads and writes nothing."""
    if not record.encrypted:
        marker = SeenState(record.uuid).path if SeenState.knows(record.uuid) else encrypted_place(where)
        if marker is not None:
            raise UserError(f"{where} held an encrypted volume when this machine last opened it, and now holds "
                            f"a plain one: someone with access to the store may have replaced it; refusing to "
                            f"open it (if you replaced it yourself, remove {marker})")
        if source is not None and source.offered:
            raise UserError(f"{where} is not encrypted, yet a passphrase or key file was given: refusing, "
                            "in case its encrypted record was replaced (drop the passphrase to open it)")
        return record
    if source is None or (source.secret is None and source.data_key is None):
        raise UserError(f"{where} is encrypted: give its passphrase ({SECRET_SOURCES})")
    if source.data_key is not None:
        keys = VolumeKeys(source.data_key)
    else:
        try:
            keys = keyring.unwrap(record.encryption["wrapped_key"], source.secret(), record.encryption["kdf"],
                                  record.uuid)
        except WrongSecret as e:
            raise WrongSecret(f"{e} for {where} (or the record's key fields were altered); nothing was done") \
                from None
        except MemoryError:
            raise UserError(f"not enough memory for the key derivation {where}'s record asks for") from None
    if not keys.check_record_mac(record.authenticated_bytes(), record.mac):
        raise DamagedRecord(f"the volume record of {where} fails its authentication: it was changed by someone "
                        "without the volume's key; nothing was done")
    remember_place(where, True)
    return dataclasses.replace(record, keys=keys)


def sealed(record, keys: VolumeKeys, secret: Secret):
    """`record` encrypted with `keys`, their data key wrapped for `secret`
    (a fresh salt), and its MAC made: a new volume's, or a new passphrase's."""
    kdf = keyring.new_wrapping(secret)
    encryption = {"cipher": CIPHER, "kdf": kdf, "wrapped_key": keyring.wrap(keys, secret, kdf, record.uuid)}
    record = dataclasses.replace(record, format_version=ENCRYPTED_VERSION, encryption=encryption, mac=None,
                                 keys=keys)
    return dataclasses.replace(record, mac=keys.record_mac(record.authenticated_bytes()))
