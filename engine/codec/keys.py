"""The keys of an encrypted volume: the data key, the keys derived from it,
and how the data key is kept in the volume record (wrapped).

A volume has one random 256-bit data key, made by `create --encrypt` and
never changed.  It is stored in the record only wrapped (AES-256-GCM) by a
key-encryption key (KEK) that comes from the owner's secret:

- a passphrase: Argon2id (RFC 9106) with a random 16-byte salt and the
  parameters kept beside the wrapped key; the default is RFC 9106's second
  recommended option, 64 MiB, 3 passes, 4 lanes (0.16 s here);
- or a key file of at least 32 bytes (`head -c 32 /dev/urandom`): its
  contents are already high in entropy, so BLAKE3's key derivation of
  salt + contents is the KEK, with no stretching.

`passwd` rewraps the same data key under a new secret: nothing else changes.

Every other key is derived from the data key with BLAKE3's derive_key mode
(a distinct context string each), so one never says anything of another:
the block and page name keys (keyed BLAKE3 of the content names objects),
the object key (each object's AEAD key derives from it, see sealing.py) and
the record key (authenticates the volume record's fields).
"""
import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from ..errors import UserError

KEY_SIZE = 32
SALT_SIZE = 16
WRAP_IV_SIZE = 12
CIPHER = "aes-256-gcm"
PASSPHRASE_KDF = "argon2id"
KEY_FILE_KDF = "key-file"
# RFC 9106 section 4, the second recommended option (for when 2 GiB per
# derivation is too much): 64 MiB, 3 passes, 4 lanes.
ARGON2_MEMORY_KIB = 64 << 10
ARGON2_PASSES = 3
ARGON2_LANES = 4
# What a record may ask of a machine: 16 times the memory bucketdisk writes
# (1 GiB) and 4 times the passes (about 10 s here); more is a damaged or
# hostile record, refused before any work.
MAX_ARGON2_MEMORY_KIB = 16 * ARGON2_MEMORY_KIB
MAX_ARGON2_PASSES = 4 * ARGON2_PASSES
MIN_KEY_FILE = KEY_SIZE
MAX_KEY_FILE = 1 << 20
MIN_PASSPHRASE = 1

_CONTEXT = "bucketdisk 2026-11-30 "  # BLAKE3 derive_key contexts: globally unique, fixed forever


class WrongSecret(UserError):
    """The passphrase or key file does not unwrap the volume's data key."""


@dataclass(frozen=True)
class Secret:
    """What the owner gives to open an encrypted volume: a passphrase or
    the contents of a key file (bytes).  Kept out of repr, so a log line or
    traceback that shows one shows nothing."""

    kind: str  # PASSPHRASE_KDF or KEY_FILE_KDF
    value: bytes

    def __repr__(self) -> str:
        return f"Secret({self.kind})"


@dataclass(frozen=True)
class KeySource:
    """How a command gets the key of an encrypted volume, asked only when
    the volume turns out to be encrypted: `secret()` gives the owner's
    Secret (a prompt, a file, the environment); a mount daemon is given
    the unwrapped `data_key` by the command that started it instead."""

    secret: Callable[[], Secret] | None = None
    data_key: bytes | None = None
    offered: bool = False  # the owner named a secret (an option, the environment): the volume must be encrypted


class VolumeKeys:
    """The keys derived from a volume's 32-byte data key."""

    def __init__(self, data_key: bytes) -> None:
        if len(data_key) != KEY_SIZE:
            raise ValueError("a data key is 32 bytes")
        self.data_key = data_key
        self.block_names = _derive("block names", data_key)
        self.page_names = _derive("page names", data_key)
        self.objects = _derive("object keys", data_key)
        self.record = _derive("record authentication", data_key)

    def __repr__(self) -> str:
        return "VolumeKeys(...)"

    @classmethod
    def generate(cls) -> "VolumeKeys":
        return cls(os.urandom(KEY_SIZE))

    def record_mac(self, fields: bytes) -> str:
        """Hex MAC (keyed BLAKE3-256) of a record's canonical fields."""
        return blake3.blake3(fields, key=self.record).hexdigest()

    def check_record_mac(self, fields: bytes, mac: str) -> bool:
        return hmac.compare_digest(self.record_mac(fields), mac)


def _derive(purpose: str, material: bytes) -> bytes:
    return blake3.blake3(material, derive_key_context=_CONTEXT + purpose).digest()


# -- wrapping the data key --------------------------------------------------------------


def new_wrapping(secret: Secret) -> dict:
    """Fresh KDF parameters (a new salt) for `secret`, as the record keeps them."""
    params = {"name": secret.kind, "salt": os.urandom(SALT_SIZE).hex()}
    if secret.kind == PASSPHRASE_KDF:
        params.update(memory_kib=ARGON2_MEMORY_KIB, passes=ARGON2_PASSES, lanes=ARGON2_LANES)
    return params


def wrap(keys: VolumeKeys, secret: Secret, kdf: dict, volume_uuid: str) -> str:
    """The data key encrypted under the KEK of `secret` and `kdf`, hex
    (IV, then ciphertext and tag); the volume's UUID is its associated data."""
    iv = os.urandom(WRAP_IV_SIZE)
    return (iv + AESGCM(derive_kek(secret, kdf)).encrypt(iv, keys.data_key, _wrap_ad(volume_uuid))).hex()


def unwrap(wrapped: str, secret: Secret, kdf: dict, volume_uuid: str) -> VolumeKeys:
    """The volume's keys; raises WrongSecret when `secret` is not the one
    the data key was wrapped with (or the wrapped key was altered)."""
    if secret.kind != kdf["name"]:
        raise WrongSecret(_secret_words(kdf["name"], secret.kind))
    blob = bytes.fromhex(wrapped)
    try:
        data_key = AESGCM(derive_kek(secret, kdf)).decrypt(blob[:WRAP_IV_SIZE], blob[WRAP_IV_SIZE:],
                                                           _wrap_ad(volume_uuid))
    except InvalidTag:
        raise WrongSecret("wrong passphrase" if secret.kind == PASSPHRASE_KDF else "wrong key file") from None
    return VolumeKeys(data_key)


def _secret_words(wanted: str, given: str) -> str:
    if wanted == KEY_FILE_KDF:
        return "a key file (--key-file), not a passphrase, opens the volume"
    return "a passphrase, not a key file, opens the volume"


def _wrap_ad(volume_uuid: str) -> bytes:
    return b"bucketdisk data key\0" + volume_uuid.encode()


# One Argon2id derivation at a time in a process: two at once in threads were
# seen to hang (a reviewer's test script), and nothing here needs two.
_DERIVING = threading.Lock()


def derive_kek(secret: Secret, kdf: dict) -> bytes:
    """The 32-byte key-encryption key of `secret` under the record's `kdf`."""
    salt = bytes.fromhex(kdf["salt"])
    if kdf["name"] == KEY_FILE_KDF:
        return _derive("key file", salt + secret.value)
    with _DERIVING:
        return Argon2id(salt=salt, length=KEY_SIZE, iterations=kdf["passes"], lanes=kdf["lanes"],
                        memory_cost=kdf["memory_kib"]).derive(secret.value)


def kdf_problem(kdf) -> str | None:
    """What is wrong with a record's KDF parameters, or None (never asks
    a machine for more than MAX_ARGON2_MEMORY_KIB or MAX_ARGON2_PASSES)."""
    if not isinstance(kdf, dict) or kdf.get("name") not in (PASSPHRASE_KDF, KEY_FILE_KDF):
        return f"\"kdf\" must name {PASSPHRASE_KDF} or {KEY_FILE_KDF}"
    if not _is_hex(kdf.get("salt"), SALT_SIZE):
        return f"\"kdf\" needs a salt of {SALT_SIZE} bytes in hex"
    expected = {"name", "salt"}
    if kdf["name"] == PASSPHRASE_KDF:
        expected |= {"memory_kib", "passes", "lanes"}
        limits = {"memory_kib": (8, MAX_ARGON2_MEMORY_KIB), "passes": (1, MAX_ARGON2_PASSES), "lanes": (1, 64)}
        for name, (low, high) in limits.items():
            value = kdf.get(name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                return f"\"kdf\" \"{name}\" must be a whole number from {low} to {high}"
        if kdf["memory_kib"] < 8 * kdf["lanes"]:
            return "\"kdf\" \"memory_kib\" must be at least 8 per lane"
    if set(kdf) != expected:
        return f"\"kdf\" must have exactly the fields {', '.join(sorted(expected))}"
    return None


def wrapped_problem(wrapped) -> str | None:
    if not _is_hex(wrapped, WRAP_IV_SIZE + KEY_SIZE + 16):
        return "\"wrapped_key\" must be the wrapped data key in hex"
    return None


def _is_hex(value, size: int) -> bool:
    if not isinstance(value, str) or len(value) != 2 * size:
        return False
    try:
        bytes.fromhex(value)
    except ValueError:
        return False
    return True
