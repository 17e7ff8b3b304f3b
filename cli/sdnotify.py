"""Telling systemd that a foreground mount is live (a Type=notify unit).

The protocol is sd_notify(3)'s: when systemd starts a Type=notify service
it sets NOTIFY_SOCKET to an AF_UNIX datagram socket (a path, or an
abstract name written with a leading `@`), and the service sends it
newline-separated `NAME=value` assignments; `READY=1` ends the start-up,
so units ordered after ours see a live mount.  Without NOTIFY_SOCKET
(any other way of running) nothing is sent.
"""
import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(state: str) -> bool:
    """Send `state` (e.g. "READY=1") to systemd's NOTIFY_SOCKET, if set.
    Returns whether it was sent; a failure is logged, never raised (the
    mount works either way; systemd then times the start out)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):  # vsock: and others (sd_notify(3)) are for VMs: not ours
        log.warning("NOTIFY_SOCKET %s is not a Unix socket; systemd is not told the mount is ready", address)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), address)
    except OSError as e:
        log.warning("cannot tell systemd the mount is ready: %s", e.strerror or e)
        return False
    return True


def notify_ready() -> bool:
    """READY=1, with a STATUS line for `systemctl status`."""
    return notify("READY=1\nSTATUS=mounted")
