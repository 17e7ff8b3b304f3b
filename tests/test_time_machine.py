"""A Time Machine destination served from a bucketdisk disk (README, "Time
Machine for Macs"): the disk is formatted ext4 and loop-mounted, and Debian's
smbd shares a directory of it with vfs_fruit's Time Machine support
(`fruit:time machine = yes`), on loopback only.

smbclient then writes what Time Machine writes over SMB: a sparse bundle
(NAME.sparsebundle/ holding Info.plist, Info.bckup, token and bands/ of
8 MiB band files named in hex, written under a temporary name and renamed
when the first backup is done) and an extended attribute of the Mac's, which
reaches the server as a named stream and is kept by vfs_streams_xattr as a
user xattr of ext4.  A snapshot is taken with the filesystem frozen, a
second backup changes some bands, and after smbd is stopped and everything
is unmounted and the volume mounted again, both the live disk and the
snapshot (under `snapshots/`) hold exactly their backup, band by band
(SHA-256).  And bands written over SMB2 and FLUSHed (smbprotocol: a Mac's
sync; smbclient sends no FLUSH) are in the volume after the mount daemon
is killed right after the FLUSH returned.  On both stores.

No Mac here: the bundle is written the way Time Machine lays it out, and
vfs_fruit shows it read it as one (the disk size it reports for the share
is `fruit:time machine max size` less the bands counted from the bundle's
Info.plist, vfs_fruit(8)).
"""
from __future__ import annotations

import hashlib
import os
import plistlib
import pwd
import random
import signal
import tempfile
from pathlib import Path

from conftest import MiB, is_mounted, run, tree_snapshot, wait_loop_released, wait_pid_gone
from sambaserver import Smbd, smb_write_files

BAND_SIZE = 8 * MiB  # hdiutil's default for a sparse bundle; vfs_fruit reads it from Info.plist
BANDS = 32  # 256 MiB
BUNDLE = "mac-mini.sparsebundle"
INCOMPLETE = "mac-mini 2026-11-30-130000.incomplete"  # the name it has until its first backup is done
SHARE = "TimeMachine"
MAX_SIZE = 900 * MiB  # fruit:time machine max size, below the 1 GiB disk
USER = "nobody"  # an existing account: the test adds none to this machine
STREAM = "com.example.backup-note"  # a named stream, as the Mac client sends an xattr
STREAM_XATTR = f"user.DosStream.{STREAM}:$DATA"  # where vfs_streams_xattr keeps it

# What README's smb.conf holds (options from vfs_fruit(8))
GLOBAL_LINES = [
    "fruit:aapl = yes",
    "fruit:model = MacSamba",
    "fruit:nfs_aces = no",
]
SHARE_LINES = [
    f"valid users = {USER}",
    "read only = no",
    "vfs objects = catia fruit streams_xattr",
    "fruit:time machine = yes",
    "fruit:time machine max size = 900M",
    "fruit:metadata = stream",
    "fruit:posix_rename = yes",
    "fruit:veto_appledouble = no",
    "fruit:wipe_intentionally_left_blank_rfork = yes",
    "fruit:delete_empty_adfiles = yes",
]


def info_plist() -> bytes:
    """A sparse bundle's Info.plist, with the keys hdiutil writes (band-size
    is what vfs_fruit reads for its Time Machine size)."""
    return plistlib.dumps({
        "CFBundleInfoDictionaryVersion": "6.0",
        "band-size": BAND_SIZE,
        "bundle-backingstore-version": 1,
        "diskimage-bundle-type": "com.apple.diskimage.sparsebundle",
        "size": 2 << 40,
    })


def write_local(root: Path, files: dict[str, bytes]) -> dict[str, bytes]:
    """Write files (relpath -> content) under root; relpath -> SHA-256."""
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return {rel: hashlib.sha256(data).digest() for rel, data in files.items()}


def first_backup(rng: random.Random) -> dict[str, bytes]:
    files = {"Info.plist": info_plist(), "Info.bckup": info_plist(), "token": rng.randbytes(16)}
    files.update({f"bands/{n:x}": rng.randbytes(BAND_SIZE) for n in range(BANDS)})
    return files


def put_commands(local: Path, rels, bundle: str = BUNDLE) -> list[str]:
    return [f'put {local / rel} "{bundle}/{rel}"' for rel in rels]


def expected_tree(sums: dict[str, bytes]) -> dict[str, bytes | None]:
    """What tree_snapshot() shows of the bundle: its directories and files."""
    tree: dict[str, bytes | None] = {BUNDLE: None, f"{BUNDLE}/bands": None}
    tree.update({f"{BUNDLE}/{rel}": digest for rel, digest in sums.items()})
    return tree


def check_backup(share_dir: Path, sums: dict[str, bytes], note: bytes, what: str) -> None:
    """The share holds exactly this backup, and the stream as an xattr."""
    got = tree_snapshot(share_dir)
    want = expected_tree(sums)
    wrong = sorted(k for k in set(got) | set(want) if got.get(k, "missing") != want.get(k, "missing"))
    assert not wrong, f"{what}: these differ from the backup written: {wrong[:10]}"
    # vfs_streams_xattr stores a stream with one NUL byte after it
    assert os.getxattr(share_dir / BUNDLE / "token", STREAM_XATTR) == note + b"\0", what


def serve(bd, tmp_path, m) -> tuple[Path, Path, Smbd]:
    """ext4 on the mount's disk, loop-mounted, and smbd sharing a directory
    of it as SHARE; (the ext4's mountpoint, the share's directory, smbd).
    Everything is undone by the test's janitor (smbd first)."""
    run("mkfs.ext4", "-q", "-F", m.file, timeout=180, check=True)
    # smbd works as USER, who must reach the share: pytest's tmp dirs are root's alone
    served = Path(tempfile.mkdtemp(prefix="bd-time-machine-"))
    os.chmod(served, 0o711)
    # rmdir, never rmtree: it runs after the loop unmount, and must not reach into a mount left behind
    bd.janitor.push(f"remove {served}", lambda: [os.rmdir(d) for d in (served / "ext", served) if d.exists()])
    ext = bd.loop_mount(m.file, served / "ext", options=("discard",))
    os.chmod(ext, 0o711)
    share_dir = ext / SHARE
    share_dir.mkdir()
    os.chown(share_dir, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)

    samba = Smbd(tmp_path / "samba", {SHARE: (share_dir, SHARE_LINES)}, GLOBAL_LINES, USER, "tm-7-backup")
    samba.write_conf()
    conf = samba.testparm()
    section = conf.split(f"[{SHARE}]", 1)[1]
    for line in ("fruit:time machine = yes", "fruit:time machine max size = 900M",
                 "vfs objects = catia fruit streams_xattr", "fruit:metadata = stream"):
        assert f"\t{line}\n" in section, f"testparm -s does not show '{line}' for [{SHARE}]:\n{conf}"
    samba.add_user()
    bd.janitor.push(f"smbd on port {samba.port}", samba.stop)
    samba.start()
    return ext, share_dir, samba


def test_time_machine_share_on_bucketdisk(bd, tmp_path):
    vol = bd.create(size="1G", block_size=None)  # 1M blocks, the default
    m = bd.mount(vol, cache_size="128M", threads=8)
    ext, share_dir, samba = serve(bd, tmp_path, m)

    shares = samba.client("-L", "127.0.0.1")
    assert any(ln.split()[:2] == [SHARE, "Disk"] for ln in shares.splitlines()), shares
    assert samba.disk_free(SHARE) == (MAX_SIZE, MAX_SIZE)

    # the first backup
    rng = random.Random(17)
    local = tmp_path / "bundle-1"
    files1 = first_backup(rng)
    sums1 = write_local(local, files1)
    note1 = b"backup 1 of mac-mini\n"
    (tmp_path / "note1").write_bytes(note1)
    # a first backup is written as "NAME DATE.incomplete" and renamed when done
    samba.share_command(SHARE, [f'mkdir "{INCOMPLETE}"', f'mkdir "{INCOMPLETE}/bands"',
                                *put_commands(local, files1, INCOMPLETE),
                                f'put {tmp_path / "note1"} "{INCOMPLETE}/token:{STREAM}"',
                                f'rename "{INCOMPLETE}" {BUNDLE}'])
    del files1
    # vfs_fruit found the bundle: the share's size is the max size less its bands
    assert samba.disk_free(SHARE) == (MAX_SIZE, MAX_SIZE - BANDS * BAND_SIZE)
    samba.share_command(SHARE, [f"get {BUNDLE}/token:{STREAM} {tmp_path / 'note1.back'}"])
    assert (tmp_path / "note1.back").read_bytes() == note1
    check_backup(share_dir, sums1, note1, "the share after backup 1")

    # between backups, smbd running: a snapshot of a frozen, clean filesystem
    bd.ok("snapshot", "create", m.path, "--freeze", ext, "--name", "backup-1")

    # the second backup: two bands rewritten, one added, a new token and note
    local2 = tmp_path / "bundle-2"
    files2 = {"bands/3": rng.randbytes(BAND_SIZE), f"bands/{BANDS - 1:x}": rng.randbytes(BAND_SIZE),
              f"bands/{BANDS:x}": rng.randbytes(BAND_SIZE), "token": rng.randbytes(16)}
    sums2 = {**sums1, **write_local(local2, files2)}
    note2 = b"backup 2 of mac-mini\n"
    (tmp_path / "note2").write_bytes(note2)
    samba.share_command(SHARE, [*put_commands(local2, files2), f"put {tmp_path / 'note2'} {BUNDLE}/token:{STREAM}"])
    assert samba.disk_free(SHARE) == (MAX_SIZE, MAX_SIZE - (BANDS + 1) * BAND_SIZE)

    samba.stop()
    assert not samba.listening(), "smbd still answers after it was stopped"
    bd.loop_umount(ext, m.file)
    bd.unmount(m)

    m = bd.mount(vol, m.path, cache_size="128M", threads=8)
    live = bd.loop_mount(m.file, tmp_path / "live", read_only=True)
    check_backup(live / SHARE, sums2, note2, "the live disk after a remount")
    then = bd.loop_mount(m.path / "snapshots" / "backup-1" / "file", tmp_path / "then", read_only=True)
    check_backup(then / SHARE, sums1, note1, "the snapshot backup-1")
    bd.loop_umount(then, m.path / "snapshots" / "backup-1" / "file")
    bd.loop_umount(live, m.file)
    bd.unmount(m)


def test_bands_a_flush_acknowledged_survive_a_crash(bd, tmp_path):
    """What a Mac's sync relies on: bands written over SMB and FLUSHed are
    in the volume after the mount daemon is killed (kill -9) at once, once
    the volume is mounted again and ext4 has replayed its journal (smbd
    fsyncs on FLUSH, ext4 commits and flushes the loop device, which
    fsyncs `file`)."""
    vol = bd.create(size="512M", block_size=None)
    m = bd.mount(vol, cache_size="128M", threads=8)
    ext, share_dir, samba = serve(bd, tmp_path, m)
    bands = share_dir / BUNDLE / "bands"  # made here: only what goes over SMB is under test
    bands.mkdir(parents=True)
    for d in (share_dir / BUNDLE, bands):
        os.chown(d, pwd.getpwnam(USER).pw_uid, pwd.getpwnam(USER).pw_gid)
    rng = random.Random(1130)
    flushed = {f"{BUNDLE}/bands/{n:x}": rng.randbytes(BAND_SIZE) for n in range(4)}
    smb_write_files(samba, SHARE, flushed, flush=True)

    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid), f"daemon {m.pid} did not die after SIGKILL"
    samba.stop()
    if run("umount", ext, timeout=120).returncode != 0:  # its disk died under it
        run("umount", "-l", ext, timeout=60, check=True)
    wait_loop_released(m.file)
    proc = bd.run("unmount", m.path, timeout=120)
    assert proc.returncode == 0 and not is_mounted(m.path), proc.stderr

    m = bd.mount(vol, m.path, cache_size="128M", threads=8)
    again = bd.loop_mount(m.file, tmp_path / "again")  # read-write: ext4 replays its journal
    for rel, data in flushed.items():
        path = again / SHARE / rel
        assert path.is_file(), f"{rel}: FLUSHed, then lost"
        got = hashlib.sha256(path.read_bytes()).digest()
        assert got == hashlib.sha256(data).digest(), f"{rel}: FLUSHed, then changed"
    bd.loop_umount(again, m.file)
    bd.unmount(m)
