"""Where the secret of an encrypted volume comes from: never the command line.

A passphrase comes from --passphrase-file FILE (its first line), else
BUCKETDISK_PASSPHRASE, else a prompt on the terminal, and is used in
Unicode's NFC form; a key file from --key-file FILE (random bytes: it is
not stretched).  A new one
(create --encrypt, passwd) from --new-passphrase-file, --new-key-file,
BUCKETDISK_NEW_PASSPHRASE or a prompt asked twice.  Each is read only
when the volume turns out to need it, and a mount's daemon is given the
unwrapped data key through a pipe, never the secret (mount_key_pipe).
"""
import argparse
import getpass
import os
import sys
import unicodedata

from bucketdisk.errors import UserError

PASSPHRASE_ENV = "BUCKETDISK_PASSPHRASE"
NEW_PASSPHRASE_ENV = "BUCKETDISK_NEW_PASSPHRASE"
SECRET_ENV = (PASSPHRASE_ENV, NEW_PASSPHRASE_ENV)


def add_key_options(parent: argparse.ArgumentParser) -> None:
    """The options that name an encrypted volume's secret."""
    group = parent.add_argument_group(f"encrypted volumes (the passphrase: a prompt, --passphrase-file or "
                                      f"{PASSPHRASE_ENV}; never on the command line)")
    group.add_argument("--passphrase-file", metavar="FILE", help="read the passphrase from FILE (its first line)")
    group.add_argument("--key-file", metavar="FILE", help="the volume opens with a key file instead: FILE holds "
                       "at least 32 random bytes, e.g. from 'head -c 32 /dev/urandom'")


def key_source(args: argparse.Namespace, url: str):
    """A KeySource asking for `url`'s secret by the options in `args`."""
    from bucketdisk.codec.keys import KeySource

    _one_of(args.passphrase_file, args.key_file, "--passphrase-file", "--key-file")
    return KeySource(secret=lambda: _secret(args.passphrase_file, args.key_file, PASSPHRASE_ENV,
                                            f"passphrase for {url}: ", confirm=False, url=url),
                     offered=bool(args.passphrase_file or args.key_file or os.environ.get(PASSPHRASE_ENV)))


def _one_of(passphrase_file: str | None, key_file: str | None, first: str, second: str) -> None:
    if passphrase_file is not None and key_file is not None:
        raise UserError(f"give {first} or {second}, not both")


def new_secret(passphrase_file: str | None, key_file: str | None, what: str):
    """The Secret for a new wrapping (create --encrypt, passwd)."""
    passwd = what == "passwd"
    if passwd:
        _one_of(passphrase_file, key_file, "--new-passphrase-file", "--new-key-file")
    else:
        _one_of(passphrase_file, key_file, "--passphrase-file", "--key-file")
    return _secret(passphrase_file, key_file, NEW_PASSPHRASE_ENV if passwd else PASSPHRASE_ENV,
                   "new passphrase: ", confirm=True, option="--new-passphrase-file" if passwd else None)


def _secret(passphrase_file: str | None, key_file: str | None, env: str, prompt: str, *, confirm: bool,
            url: str | None = None, option: str | None = None):
    from bucketdisk.codec.keys import KEY_FILE_KDF, PASSPHRASE_KDF, Secret

    if key_file is not None:
        return Secret(KEY_FILE_KDF, _read_key_file(key_file))
    if passphrase_file is not None:
        text = _read_passphrase_file(passphrase_file)
        if not text:
            raise UserError(f"the first line of the passphrase file {passphrase_file} is empty")
    elif os.environ.get(env):
        text = os.environ[env].rstrip("\r\n")  # a trailing newline is no part of it, as in a file
    elif sys.stdin.isatty():
        text = _prompt(prompt, confirm)
    else:
        what = f"{url} is encrypted and no passphrase was given" if url else "no new passphrase was given"
        raise UserError(f"{what} ({option or '--passphrase-file'}, {env}, or run on a terminal to be asked)")
    if not text:
        raise UserError("the passphrase is empty")
    # One passphrase, one key: the same text typed on another system (composed
    # or decomposed accents) is the same bytes once in Unicode's NFC form.
    return Secret(PASSPHRASE_KDF, unicodedata.normalize("NFC", text).encode())


def _prompt(prompt: str, confirm: bool) -> str:
    try:
        text = getpass.getpass(prompt.capitalize())
        if confirm and getpass.getpass("Again: ") != text:
            raise UserError("the two passphrases differ; nothing was changed")
    except EOFError:
        raise UserError("no passphrase was given") from None
    return text


def _read_passphrase_file(path: str) -> str:
    from bucketdisk.store.userfiles import read_text_file

    text = read_text_file(path, "passphrase file")
    return text.splitlines()[0] if text.strip("\r\n") else ""


def _read_key_file(path: str) -> bytes:
    from bucketdisk.codec.keys import MAX_KEY_FILE, MIN_KEY_FILE
    from bucketdisk.store.userfiles import read_small_file

    data = read_small_file(path, "key file", MAX_KEY_FILE)
    if len(data) < MIN_KEY_FILE:
        raise UserError(f"the key file {path} holds {len(data)} bytes; a key file needs at least {MIN_KEY_FILE} "
                        "random bytes (head -c 32 /dev/urandom > FILE)")
    return data


def daemon_environment() -> dict:
    """The environment a mount daemon starts with: this one, without secrets."""
    return {name: value for name, value in os.environ.items() if name not in SECRET_ENV}


def send_key(data_key: bytes) -> int:
    """A pipe's read end holding `data_key`, for the daemon to read once
    (--key-fd): the key never appears in its arguments or environment."""
    read_end, write_end = os.pipe()
    os.write(write_end, data_key)  # 32 bytes: far below a pipe's buffer
    os.close(write_end)
    return read_end


def receive_key(fd: int) -> bytes:
    """The data key the parent sent on `fd` (send_key); closes it."""
    from bucketdisk.codec.keys import KEY_SIZE

    with os.fdopen(fd, "rb") as pipe:
        key = pipe.read(KEY_SIZE + 1)
    if len(key) != KEY_SIZE:
        raise UserError("the mount daemon was not given the volume's key")
    return key
