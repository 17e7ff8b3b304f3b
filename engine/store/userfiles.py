"""Reading files the user hands in (credentials, AWS config, CA bundles,
an encrypted volume's passphrase and key files).

Every failure is one UserError line that names the file and says what is
wrong with it: missing, not a regular file (a directory, a FIFO that would
block), unreadable, too large to be what it claims, not UTF-8 text.
Contents never appear in a message: a credentials file is full of secrets.
"""
import os
import stat

from ..errors import UserError
from .names import shown

MAX_TEXT_FILE = 1 << 20  # bytes: no credentials or config file is this large


def check_regular_file(path: str, what: str) -> os.stat_result:
    """stat() of `path`, which must be an existing regular file.

    `what` names the file's role ("credentials file", "CA bundle") in the
    message of the UserError raised otherwise."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise UserError(f"cannot read {what} {shown(path)}: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {shown(path)} is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise UserError(f"{what} {shown(path)} is not a regular file")
    return st


def read_small_file(path: str, what: str, limit: int = MAX_TEXT_FILE) -> bytes:
    """The bytes of a file the user named, at most `limit` of them.

    Raises UserError naming the file when it is missing, not a regular
    file, unreadable, or over `limit` bytes."""
    check_regular_file(path, what)
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as e:
        raise UserError(f"cannot read {what} {shown(path)}: {e.strerror}") from None
    if len(data) > limit:
        raise UserError(f"{what} {shown(path)} is larger than {_size(limit)}: not a {what}")
    return data


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"


def read_text_file(path: str, what: str) -> str:
    """The text of a small UTF-8 file the user named.

    Raises UserError naming the file when it is missing, not a regular
    file, unreadable, over MAX_TEXT_FILE bytes, not UTF-8, or holds NUL
    bytes (a binary file).  An empty file is returned as ''."""
    data = read_small_file(path, what)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {shown(path)} is not UTF-8 text (byte {e.start} is not); "
                        "is it the right file?") from None
    if "\0" in text:
        raise UserError(f"{what} {shown(path)} holds NUL bytes: it is a binary file, not a {what}")
    return text.removeprefix("\ufeff")  # a byte-order mark some editors write
