"""A private Samba server for the tests: Debian's smbd on loopback only.

Everything it keeps (smb.conf, passdb, locks, state, pid files, logs) lives
in one directory of the test's own, so the machine's samba (if any) is never
read or touched: `interfaces = lo` with `bind interfaces only`, a free
unprivileged port (`smb ports`), no NetBIOS.  smbd runs in the foreground
(`--foreground --no-process-group`) in a session of its own and is stopped
by its PID; the samba-dcerpcd that smbd starts on demand for RPC (listing
shares) is stopped by the PID it records in our pid directory.

Sources: smb.conf(5), smbd(8), smbpasswd(8), smbclient(1) and vfs_fruit(8)
of Samba 4.17 (Debian 12).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

START_TIMEOUT = 30  # seconds for smbd to listen
STOP_TIMEOUT = 15  # seconds for a TERM before a KILL


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def samba_tool(name: str) -> str:
    """Path of a Samba program (smbd lives in /usr/sbin); AssertionError naming
    the Debian package when it is missing (ci/install.sh installs it)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    assert found, f"{name} not found: install Debian's samba and smbclient (ci/install.sh does)"
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Smbd:
    """One smbd serving `shares` ({name: (path, extra smb.conf lines)}) to one
    user of this machine (`user`, an existing Unix account) with `password`.

    Layout under `home`: smb.conf, auth (smbclient's -A file, mode 0600),
    private/ (passdb.tdb, secrets.tdb), lock/, state/, cache/, pid/, ncalrpc/,
    log.* (smbd's logs) and smbd.out (its stdout and stderr)."""

    def __init__(self, home: Path, shares: dict[str, tuple[Path, list[str]]], global_lines: list[str],
                 user: str, password: str) -> None:
        self.home = Path(home)
        self.shares = shares
        self.global_lines = global_lines
        self.user = user
        self.password = password
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def conf(self) -> Path:
        return self.home / "smb.conf"

    @property
    def auth(self) -> Path:
        return self.home / "auth"

    # -- setup ------------------------------------------------------------------
    def write_conf(self) -> None:
        """smb.conf and the directories it names, all under `home`."""
        for d in ("private", "lock", "state", "cache", "pid", "ncalrpc"):
            (self.home / d).mkdir(parents=True, exist_ok=True)
        h = self.home
        lines = [
            "[global]",
            "server role = standalone server",
            "netbios name = BDTEST",
            "workgroup = WORKGROUP",
            "interfaces = lo",
            "bind interfaces only = yes",
            f"smb ports = {self.port}",
            "disable netbios = yes",
            f"private dir = {h}/private",
            f"lock directory = {h}/lock",
            f"state directory = {h}/state",
            f"cache directory = {h}/cache",
            f"pid directory = {h}/pid",
            f"ncalrpc dir = {h}/ncalrpc",
            f"log file = {h}/log.%m",
            f"passdb backend = tdbsam:{h}/private/passdb.tdb",
            "load printers = no",
            "printcap name = /dev/null",
            "disable spoolss = yes",
            *self.global_lines,
        ]
        for name, (path, extra) in self.shares.items():
            lines += ["", f"[{name}]", f"path = {path}", *extra]
        self.conf.write_text("\n".join(lines) + "\n")

    def add_user(self) -> None:
        """The user in our passdb (smbpasswd -a -s: the password twice on stdin,
        never in an argument), and smbclient's authentication file."""
        proc = subprocess.run([samba_tool("smbpasswd"), "-c", str(self.conf), "-a", "-s", self.user],
                              input=f"{self.password}\n{self.password}\n", capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"smbpasswd -a failed: {proc.stdout}{proc.stderr}"
        fd = os.open(self.auth, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"username = {self.user}\npassword = {self.password}\ndomain = WORKGROUP\n")

    def testparm(self) -> str:
        """`testparm -s` of our smb.conf: the settings smbd will use."""
        proc = subprocess.run([samba_tool("testparm"), "-s", str(self.conf)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"testparm refused {self.conf}: {proc.stderr}"
        return proc.stdout

    # -- run --------------------------------------------------------------------
    def start(self) -> None:
        """Start smbd and wait until it accepts connections on the port."""
        out = open(self.home / "smbd.out", "wb")
        try:
            self.proc = subprocess.Popen(
                [samba_tool("smbd"), f"--configfile={self.conf}", "--foreground", "--no-process-group",
                 "--debug-stdout", "--debuglevel=1"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            out.close()
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            assert self.proc.poll() is None, f"smbd exited ({self.proc.returncode}):\n{self.log_tail()}"
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise AssertionError(f"smbd not listening on 127.0.0.1:{self.port} after {START_TIMEOUT} s:\n"
                             f"{self.log_tail()}")

    def listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop smbd (its session: smbd-notifyd, cleanupd and the per-client
        smbd processes are in it) and then the samba-dcerpcd it started, each
        by PID; a no-op for what is already gone."""
        if self.proc is not None:
            self._stop_group(self.proc.pid)
            self.proc.wait(timeout=STOP_TIMEOUT)
        dcerpcd = self.home / "pid" / "samba-dcerpcd.pid"
        if dcerpcd.exists():
            pid = int(dcerpcd.read_text().split()[0])
            # samba-dcerpcd leads a process group of its own and its rpcd_* workers;
            # the pid file may be stale, so the PID must still be ours (our smb.conf)
            if _alive(pid) and str(self.conf) in _cmdline(pid) and os.getpgid(pid) == pid:
                self._stop_group(pid)

    @staticmethod
    def _stop_group(leader: int) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(leader, sig)
            except ProcessLookupError:
                return
            end = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < end and _alive(leader):
                time.sleep(0.05)
            if not _alive(leader):
                return

    def log_tail(self, n: int = 3000) -> str:
        texts = []
        for p in sorted(self.home.glob("log.*")) + [self.home / "smbd.out"]:
            try:
                texts.append(f"--- {p.name} ---\n" + p.read_text(errors="replace")[-n:])
            except OSError:
                pass
        return "\n".join(texts)

    # -- client -----------------------------------------------------------------
    def client(self, *args: str, timeout: float = 300) -> str:
        """smbclient against this server with our smb.conf and auth file; its
        output.  AssertionError when it fails or reports an NT_STATUS error
        (smbclient -c goes on after a failed command)."""
        argv = [samba_tool("smbclient"), "-s", str(self.conf), "-p", str(self.port), "-A", str(self.auth), *args]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0 and "NT_STATUS_" not in output, (
            f"smbclient failed ({proc.returncode}): {' '.join(argv)}\n{output[-3000:]}\n{self.log_tail()}")
        return output

    def share_command(self, share: str, commands: list[str], timeout: float = 300) -> str:
        """Run smbclient commands (`put`, `get`, `mkdir`, `du`...) on one share."""
        return self.client(f"//127.0.0.1/{share}", "-c", "; ".join(commands), timeout=timeout)

    def disk_free(self, share: str) -> tuple[int, int]:
        """(total, available) bytes the server reports for a share (smbclient `du`)."""
        out = self.share_command(share, ["du"])
        m = re.search(r"(\d+) blocks of size (\d+)\. (\d+) blocks available", out)
        assert m, f"no disk size in smbclient du output:\n{out}"
        return int(m.group(1)) * int(m.group(2)), int(m.group(3)) * int(m.group(2))


# SMB2 CREATE values (MS-SMB2 2.2.13): what a Mac's client asks for a new file
_GENERIC_WRITE = 0x40000000
_FILE_SHARE_READ = 0x1
_FILE_OVERWRITE_IF = 0x5
_FILE_NON_DIRECTORY_FILE = 0x40
_FILE_ATTRIBUTE_NORMAL = 0x80
_IMPERSONATION = 2  # SecurityImpersonation


def smb_write_files(server: Smbd, share: str, files: dict[str, bytes], flush: bool,
                    chunk: int = 1 << 20) -> None:
    """Write files (share-relative path with `\\` or `/` -> content) over
    SMB2 as one client (smbprotocol), each created or overwritten, written
    in `chunk`-byte WRITEs, then, with `flush`, an SMB2 FLUSH (MS-SMB2
    3.3.5.11: the server makes the file's data stable) before its CLOSE.
    The password is handed over in-process, never in an argument."""
    import uuid

    from smbprotocol.connection import Connection
    from smbprotocol.open import Open
    from smbprotocol.session import Session
    from smbprotocol.tree import TreeConnect

    conn = Connection(uuid.uuid4(), "127.0.0.1", server.port)
    conn.connect(timeout=30)
    try:
        session = Session(conn, server.user, server.password, require_encryption=False, auth_protocol="ntlm")
        session.connect()
        tree = TreeConnect(session, rf"\\127.0.0.1\{share}")
        tree.connect()
        for name, data in files.items():
            handle = Open(tree, name.replace("/", "\\"))
            handle.create(_IMPERSONATION, _GENERIC_WRITE, _FILE_ATTRIBUTE_NORMAL, _FILE_SHARE_READ,
                          _FILE_OVERWRITE_IF, _FILE_NON_DIRECTORY_FILE)
            for at in range(0, len(data), chunk):
                handle.write(data[at:at + chunk], at)
            if flush:
                handle.flush()
            handle.close()
        tree.disconnect()
        session.disconnect()
    finally:
        conn.disconnect()
