"""A private Samba server for the tests: Debian's smbd on loopback only.

Everything it keeps (smb.conf, passdb, locks, state, pid files, logs) lives
in one directory of the test's own, so the machine's samba (if any) is never
read or touched: `interfaces = lo` with `bind interfaces only`, a free
unprivileged port (`smb ports`), no NetBIOS.  smbd and samba-dcerpcd (the
RPC server, which answers share listings) run in the foreground
(`--foreground --no-process-group`), each in a session of its own, and
are stopped by their PIDs.  We start samba-dcerpcd ourselves (`rpc start
on demand helpers = no`) to hand it `--log-basename`: the rpcd_* workers
it starts log their first lines before they read smb.conf, and would
otherwise write them under /var/log/samba.

Sources: smb.conf(5), smbd(8), smbpasswd(8), smbclient(1) and vfs_fruit(8)
of Samba 4.17 (Debian 12).
"""
from __future__ import annotations

import os
import re
import select
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


class Smbd:
    """One smbd serving `shares` ({name: (path, extra smb.conf lines)}) to one
    user of this machine (`user`, an existing Unix account) with `password`.

    Layout under `home`: smb.conf, auth (smbclient's -A file, mode 0600),
    private/ (passdb.tdb, secrets.tdb), lock/, state/, cache/, pid/, ncalrpc/,
    logs/ (log.*), smbd.out and samba-dcerpcd.out (their stdout and stderr)."""

    def __init__(self, home: Path, shares: dict[str, tuple[Path, list[str]]], global_lines: list[str],
                 user: str, password: str) -> None:
        self.home = Path(home)
        self.shares = shares
        self.global_lines = global_lines
        self.user = user
        self.password = password
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    @property
    def conf(self) -> Path:
        return self.home / "smb.conf"

    @property
    def auth(self) -> Path:
        return self.home / "auth"

    # -- setup ------------------------------------------------------------------
    def write_conf(self) -> None:
        """smb.conf and the directories it names, all under `home`."""
        for d in ("private", "lock", "state", "cache", "pid", "ncalrpc", "logs"):
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
            f"log file = {h}/logs/log.%m",
            "rpc start on demand helpers = no",
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
        """Start samba-dcerpcd and smbd, and wait until smbd accepts connections."""
        # samba-dcerpcd writes to or closes --ready-signal-fd once it serves; smbd lists no share before
        ready_read, ready_write = os.pipe()
        try:
            self._spawn("samba-dcerpcd", ["/usr/libexec/samba/samba-dcerpcd", "--libexec-rpcds",
                                          f"--ready-signal-fd={ready_write}"], pass_fds=(ready_write,))
            os.close(ready_write)
            ready_write = -1
            readable, _, _ = select.select([ready_read], [], [], START_TIMEOUT)
            assert readable, \
                f"samba-dcerpcd not ready after {START_TIMEOUT} s:\n{self.log_tail()}"
        finally:
            os.close(ready_read)
            if ready_write >= 0:
                os.close(ready_write)
        smbd = self._spawn("smbd", [samba_tool("smbd")])
        end = time.monotonic() + START_TIMEOUT
        while time.monotonic() < end:
            for proc in self.procs:
                assert proc.poll() is None, f"{proc.args[0]} exited ({proc.returncode}):\n{self.log_tail()}"
            if self.listening():
                return
            time.sleep(0.05)
        raise AssertionError(f"smbd (pid {smbd.pid}) not listening on 127.0.0.1:{self.port} after "
                             f"{START_TIMEOUT} s:\n{self.log_tail()}")

    def _spawn(self, name: str, argv: list[str], pass_fds=()) -> subprocess.Popen:
        assert os.access(argv[0], os.X_OK), f"{argv[0]} not found: install Debian's samba (ci/install.sh does)"
        out = open(self.home / f"{name}.out", "wb")
        try:
            proc = subprocess.Popen(
                [*argv, f"--configfile={self.conf}", f"--log-basename={self.home / 'logs'}", "--foreground",
                 "--no-process-group", "--debug-stdout", "--debuglevel=1"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=pass_fds)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop smbd, then samba-dcerpcd, each with its session (smbd-notifyd,
        cleanupd and the per-client smbd; the rpcd_* workers), by PID; a
        no-op for what is already gone."""
        while self.procs:
            proc = self.procs.pop()
            self._stop_group(proc.pid)
            proc.wait(timeout=STOP_TIMEOUT)

    @staticmethod
    def _stop_group(leader: int) -> None:
        """TERM, then KILL, to the process group `leader` leads (one we started
        with a session of its own), until the leader is gone."""
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
        for p in sorted(self.home.glob("logs/log.*")) + sorted(self.home.glob("*.out")):
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
