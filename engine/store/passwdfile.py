"""s3backer's access file: `accessID:accessKey` lines (~/.s3backer_passwd).

s3backer(1), --accessFile=FILE: a file of `accessID:accessKey` pairs, one
per line; blank lines and lines beginning with `#` are ignored; without
--accessId the first entry is used; the default is $HOME/.s3backer_passwd.
(s3backer itself reads the file whatever its mode, and skips any line
without a colon.)  bucketdisk reads it the same way, first entry first,
and is stricter where a mistake would otherwise pass in silence:

- a file that group or others may read is refused (chmod 600), as an AWS
  credentials file handed to --credentials-file is;
- a line that is neither blank, a comment nor `ID:KEY` with both parts
  non-empty is refused, naming its line number (never its content).

The key is what follows the first colon, trailing white space (the line
end, a stray \\r) removed.
"""
import os
import stat

from ..errors import UserError
from .credentials import Credentials
from .names import shown
from .userfiles import check_regular_file, read_text_file

DEFAULT_NAME = ".s3backer_passwd"


def default_path() -> str:
    """$HOME/.s3backer_passwd."""
    return os.path.join(os.path.expanduser("~"), DEFAULT_NAME)


def looks_like_passwd(text: str) -> bool:
    """Whether `text` is in s3backer's format rather than an INI file: its
    first line that is neither blank nor a comment is no [section] header."""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return not stripped.startswith("[")
    return False


def check_private(path: str, what: str) -> None:
    """Refuse (UserError) a file group or others may read or write."""
    mode = check_regular_file(path, what).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(f"{what} {shown(path)} is readable by others; run chmod 600 {shown(path)}")


def parse_passwd(text: str, path: str, what: str) -> Credentials:
    """The first entry of an access file's `text` (read from `path`).

    Raises UserError naming the file and a line number for a line that is
    not `ID:KEY`, or when no entry is found."""
    for number, line in enumerate(text.splitlines(), 1):
        line = line.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        access_id, colon, key = line.partition(":")
        if not colon or not access_id.strip() or not key.strip() or access_id != access_id.strip():
            raise UserError(f"{what} {shown(path)}: line {number} is not accessID:accessKey")
        return Credentials(access_id, key, None, path)
    raise UserError(f"{what} {shown(path)} holds no accessID:accessKey line")


def load_passwd_file(path: str, what: str = "s3backer access file") -> Credentials:
    """The first entry of the private access file at `path`; UserError otherwise."""
    check_private(path, what)
    return parse_passwd(read_text_file(path, what), path, what)
