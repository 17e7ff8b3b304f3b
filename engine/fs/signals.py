"""A mount daemon's signals.

SIGTERM and SIGINT end the FUSE session: libfuse's own handlers
(fuse_set_signal_handlers, in _fuse.Session.run; fuse_main_real sets the
same for the mfusepy adapter) make the session loop return; the requests
being served are answered first, the mountpoint is unmounted, and the
device's final flush stores every acknowledged write before the process
exits (status 0).

SIGHUP reopens the log file (after logrotate renamed it) and never
unmounts.  libfuse claims only signals left at their default, so a
Python-level handler installed first keeps SIGHUP from it.  That handler
itself would run only when the main thread next executes Python, which it
does not while it sits in fuse_session_loop_mt (C, without the GIL): so
CPython's C-level handler, which writes the signal's number to the
set_wakeup_fd pipe at once, wakes a small thread of ours instead, which
reopens the file and points stdout and stderr at it (dup2: libfuse's and
Python's writes to them land in the new file).
"""
import errno
import logging
import os
import signal
import stat
import sys
import threading

log = logging.getLogger(__name__)
_STOP = 0  # the byte close() writes to end the thread (no signal has number 0)


def log_file_of_stderr(named: str | None) -> str | None:
    """The path to reopen on SIGHUP: `named` (the --log file) when stderr
    is that file, else the path stderr was opened as when it is a regular
    file (systemd's StandardError=append:PATH), else None (a terminal, a
    pipe, journald: nothing to reopen)."""
    try:
        err = os.fstat(2)
    except OSError:
        return None
    if not stat.S_ISREG(err.st_mode):
        return None
    if named is not None:
        try:
            same = os.stat(named)
            if (same.st_dev, same.st_ino) == (err.st_dev, err.st_ino):
                return os.path.abspath(named)
        except OSError:
            pass
    try:
        path = os.readlink("/proc/self/fd/2")
    except OSError:
        return None
    return path if path.startswith("/") and not path.endswith(" (deleted)") else None


class HangupReopensLog:
    """While open, SIGHUP reopens `path` (None: nothing to reopen; SIGHUP
    then only logs that) as stderr, and as stdout when stdout was the same
    file.  Install from the main thread, before the FUSE session claims
    the signals; elsewhere (a test calling serve() from a thread) it does
    nothing.  Use as a context manager."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.reopened = 0  # how many times the log was reopened
        self._installed = False
        self._thread: threading.Thread | None = None
        self._pipe: tuple[int, int] | None = None
        self._old_handler = None
        self._old_wakeup = -1
        self._stdout_too = False

    def __enter__(self) -> "HangupReopensLog":
        if threading.current_thread() is not threading.main_thread():
            return self
        if log.getEffectiveLevel() > logging.INFO:  # its lines show at the daemon's usual level (warnings)
            log.setLevel(logging.INFO)
        self._stdout_too = self.path is not None and _same_file(1, 2)
        read_end, write_end = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        os.set_blocking(read_end, True)
        self._pipe = (read_end, write_end)
        self._old_wakeup = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
        self._old_handler = signal.signal(signal.SIGHUP, _ignore)
        self._thread = threading.Thread(target=self._serve, name="sighup", daemon=True)
        self._thread.start()
        self._installed = True
        return self

    def __exit__(self, *exc) -> None:
        if not self._installed:
            return
        self._installed = False
        # SIGHUP stays with a handler that does nothing: a hangup during
        # what is left of the exit must not kill the process.
        signal.set_wakeup_fd(self._old_wakeup)
        read_end, write_end = self._pipe
        os.set_blocking(write_end, True)
        os.write(write_end, bytes([_STOP]))
        self._thread.join()
        os.close(read_end)
        os.close(write_end)

    def _serve(self) -> None:
        read_end = self._pipe[0]
        while True:
            try:
                numbers = os.read(read_end, 64)
            except InterruptedError:
                continue
            if not numbers or _STOP in numbers:
                return
            if signal.SIGHUP in numbers:
                self._reopen()

    def _reopen(self) -> None:
        if self.path is None:
            log.info("SIGHUP: the log goes to stderr, which is not a file; nothing to reopen (SIGTERM or "
                        "'bucketdisk unmount' ends the mount)")
            return
        log.info("SIGHUP: reopening the log %s", self.path)
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            log.error("SIGHUP: could not reopen the log %s (%s); logging on to the old file",
                      self.path, e.strerror or e)
            return
        try:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except (OSError, ValueError):
                    pass
            os.dup2(fd, 2)
            if self._stdout_too:
                os.dup2(fd, 1)
        finally:
            os.close(fd)
        self.reopened += 1
        log.info("SIGHUP: reopened the log %s (pid %d); the mount goes on", self.path, os.getpid())


def _ignore(signum, frame) -> None:
    """SIGHUP's Python-level handler: the thread of HangupReopensLog acts."""


def _same_file(a: int, b: int) -> bool:
    try:
        x, y = os.fstat(a), os.fstat(b)
    except OSError as e:
        if e.errno == errno.EBADF:
            return False
        raise
    return (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
