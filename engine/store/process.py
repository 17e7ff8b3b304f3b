"""Credentials from a profile's `credential_process`.

As the AWS CLI documents it ("Sourcing credentials with an external
process", AWS CLI User Guide): the profile's `credential_process = COMMAND
ARGS...` is run (split as a shell would split it, shlex, but with no shell
in between), its standard input closed and its standard error passed
through (in a mount daemon: its log); it exits 0 and prints on standard
output one JSON object {"Version": 1, "AccessKeyId": ..., "SecretAccessKey":
..., "SessionToken": ... (optional), "Expiration": RFC 3339 (optional)}.
Credentials without Expiration never expire; the others are refreshed by
running the command again (refreshing.py).

Every failure is one line naming the profile: the command cannot be run,
exits non-zero, runs over PROCESS_TIMEOUT seconds, or prints something
that is not version 1 credentials.  No message quotes what the command
printed, nor its arguments (they may carry a secret).
"""
import json
import os
import shlex
import subprocess

from ..errors import UserError
from .credentials import Credentials
from .names import shown
from .refreshing import RefreshingCredentials, credentials_in

PROCESS_TIMEOUT = 60.0     # seconds: a credential helper may ask a remote service, not hang forever
MAX_OUTPUT = 64 * 1024     # bytes of standard output read


class ProcessCredentials(RefreshingCredentials):
    """The credentials `command` (a profile's credential_process) prints.

    `profile` and `where` (the file it is in) name it in messages.  The
    constructor runs the command once; raises UserError as the module
    docstring says."""

    def __init__(self, command: str, profile: str, where: str) -> None:
        self._what = f"credential_process of profile {shown(repr(profile))} in {shown(where)}"
        try:
            self._argv = shlex.split(command)
        except ValueError:
            raise UserError(f"the {self._what} is not a command line (unbalanced quotes)") from None
        if not self._argv:
            raise UserError(f"the {self._what} is empty")
        self.source = f"the {self._what}"
        super().__init__()

    def fetch(self) -> tuple[Credentials, float | None]:
        program = os.path.basename(self._argv[0])
        try:
            proc = subprocess.run(self._argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=None,
                                  timeout=PROCESS_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            raise UserError(f"the {self._what} ({shown(program)}) ran over {PROCESS_TIMEOUT:.0f} s") from None
        except OSError as e:
            raise UserError(f"cannot run the {self._what} ({shown(program)}): {e.strerror or e}") from None
        if proc.returncode != 0:
            how = f"was killed by signal {-proc.returncode}" if proc.returncode < 0 \
                else f"exited with status {proc.returncode}"
            raise UserError(f"the {self._what} ({shown(program)}) {how}")
        return self._parse(proc.stdout)

    def _parse(self, out: bytes) -> tuple[Credentials, float | None]:
        what = f"the {self._what}"
        if len(out) > MAX_OUTPUT:
            raise UserError(f"{what} printed more than {MAX_OUTPUT} bytes")
        try:
            doc = json.loads(out)
        except (ValueError, UnicodeDecodeError):
            raise UserError(f"{what} printed something that is not JSON") from None
        if not isinstance(doc, dict):
            raise UserError(f"{what} printed JSON that is not an object")
        if doc.get("Version") != 1 or isinstance(doc.get("Version"), bool):
            raise UserError(f"{what} printed credentials that are not Version 1")
        return credentials_in(doc, what, "printed", self.source, "SessionToken")
