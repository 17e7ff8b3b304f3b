"""The control channel of a mount: a Unix socket the daemon listens on,
through which `bucketdisk snapshot … MOUNTPOINT` asks it for history.

Where: CONTROL_DIR (/run/bucketdisk when it can be made, else
$XDG_RUNTIME_DIR/bucketdisk, else the temp dir), named `<pid>.sock`, mode
0600; the daemon's `stats` file names it (`control_socket`).  Only the
user who mounted it (and root) may talk to it: the peer's uid is checked
(SO_PEERCRED, unix(7)).  One request per connection, one JSON object per
line each way:

  {"op": "snapshot", "name": NAME|null, "type": "manual"}  -> {"ok": true, "snapshot": {...}}
  {"op": "list"}                                           -> {"ok": true, "snapshots": [...]}
  {"op": "delete", "name": NAME}                           -> {"ok": true, "snapshot": {...}}
  {"op": "diff", "a": A, "b": B}                           -> {"ok": true, "diff": {...}}
  {"op": "prune", "policy": {...}, "named_too", "dry_run"} -> {"ok": true, "decisions": [...]}
  {"op": "gc", "dry_run": BOOL}                            -> {"ok": true, "gc": {...}}
  any failure                                              -> {"ok": false, "error": ONE LINE}
"""
from __future__ import annotations

import json
import logging
import os
import socket
import struct
import tempfile
import threading
from collections.abc import Callable

from ..errors import StoreError, UserError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 << 10
REPLY_TIMEOUT = 24 * 3600.0  # a snapshot waits for its flush, which waits for the store


def control_dir() -> str:
    """The directory control sockets live in (made 0700 if missing)."""
    candidates = ["/run/bucketdisk"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        candidates.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "bucketdisk"))
    candidates.append(os.path.join(tempfile.gettempdir(), f"bucketdisk-{os.getuid()}"))
    for path in candidates:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            if os.access(path, os.W_OK):
                return path
        except OSError:
            continue
    raise UserError("no directory for the mount's control socket (/run, $XDG_RUNTIME_DIR, temp)")


class ControlServer:
    """Answers control requests with `handle(request) -> reply fields`
    (raising UserError or StoreError for a one-line failure)."""

    def __init__(self, handle: Callable[[dict], dict]) -> None:
        self.handle = handle
        self._busy = threading.Lock()  # held while a request is handled
        self._closed = False
        where = control_dir()
        self.path = os.path.join(where, f"{os.getpid()}.sock")
        _tidy_dead_sockets(where)  # left by daemons that were killed (kill -9 runs no cleanup)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self._socket.bind(self.path)
        finally:
            os.umask(old)
        self._socket.listen(4)
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop answering, once a request being handled is answered."""
        with self._busy:
            self._closed = True
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        try:
            self._socket.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        except OSError:
            pass
        self._socket.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    self._answer(conn)
                except OSError as e:
                    log.warning("control request failed: %s", e)

    def _answer(self, conn: socket.socket) -> None:
        uid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
        if uid not in (0, os.getuid()):
            _send(conn, {"ok": False, "error": "only the user who mounted it may control this mount"})
            return
        line = _read_line(conn)
        if not line:
            return  # a connect and no request: another daemon checking this socket is alive
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            _send(conn, {"ok": False, "error": "not a control request"})
            return
        try:
            with self._busy:
                if self._closed:
                    raise UserError("the mount is being unmounted")
                reply = {"ok": True, **self.handle(request)}
        except UserError as e:
            reply = {"ok": False, "error": str(e)}
        except StoreError as e:
            reply = {"ok": False, "error": f"storage error: {e}"}
        _send(conn, reply)


def _tidy_dead_sockets(where: str) -> None:
    """Delete the control sockets in `where` that no process listens on:
    a connect is refused at once.  (A live daemon's answers, whatever PID
    namespace it runs in.)"""
    for name in os.listdir(where):
        if not name.endswith(".sock"):
            continue
        path = os.path.join(where, name)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                try:
                    os.unlink(path)
                except OSError:
                    pass
            except OSError:
                pass


def request(path: str, fields: dict) -> dict:
    """Send one request to the control socket at `path`; returns the
    reply's fields.  Raises UserError with the daemon's line on failure."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(REPLY_TIMEOUT)
        try:
            conn.connect(path)
        except OSError as e:
            raise UserError(f"cannot reach the mount's daemon at {path}: {e.strerror}") from None
        try:
            _send(conn, fields)
            reply = json.loads(_read_line(conn) or "{}")
        except (OSError, ValueError):  # died, or answered nonsense: not the caller's pipe closing
            reply = {}
    if not reply.get("ok"):
        raise UserError(reply.get("error")
                        or "the mount's daemon gave no answer (has it died? see 'bucketdisk unmount')")
    return reply


def _send(conn: socket.socket, fields: dict) -> None:
    conn.sendall(json.dumps(fields).encode() + b"\n")


def _read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError("request too long")
    return data.decode("utf-8", "replace")
