"""`mount -t fuse.bucketdisk` from a fstab file, through the
mount.fuse.bucketdisk helper, by the real mount(8) and umount(8).

mount(8) finds helpers only in /sbin (libmount searches /sbin, /sbin/fs.d
and /sbin/fs, never $PATH), so the tests put the README's link there for
their duration (under a lock, since every clone's suite uses the same
name; a link that was there before is put back).  `mount -T FILE`
(util-linux's --fstab) reads the entry from the test's own fstab file.
"""
import contextlib
import fcntl
import os
import re
from pathlib import Path

import pytest

from conftest import CLI, MiB, Mount, is_mounted, mounts_at, pid_state, run, wait_pid_gone

HELPER = CLI.parent / "mount.fuse.bucketdisk"
LINK = Path("/sbin/mount.fuse.bucketdisk")
UMOUNT_HELPER = CLI.parent / "umount.fuse.bucketdisk"
UMOUNT_LINK = Path("/sbin/umount.fuse.bucketdisk")
LOCK = "/run/lock/bucketdisk-mount-helper-tests.lock"
README = Path(__file__).resolve().parent.parent / "README.md"
README_LINK = 'ln -s "$(command -v {name})" /sbin/{name}'


@pytest.fixture
def helper_in_sbin():
    """/sbin/mount.fuse.bucketdisk -> this venv's helper, while the test runs
    (and no umount helper: umount(8) unmounts by itself)."""
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with linked(LINK, HELPER), linked(UMOUNT_LINK, None):
            yield LINK


@pytest.fixture
def umount_helper_in_sbin(helper_in_sbin):
    """/sbin/umount.fuse.bucketdisk -> this venv's, as well (under the same lock)."""
    with linked(UMOUNT_LINK, UMOUNT_HELPER):
        yield UMOUNT_LINK


@contextlib.contextmanager
def linked(link: Path, target: Path | None):
    """`link` -> `target` (None: no link) for a while; what was there before is put back."""
    assert target is None or target.is_file(), f"{target} missing: pip install . puts it there ([project.scripts])"
    before = os.readlink(link) if link.is_symlink() else None
    assert before is not None or not link.exists(), f"{link} exists and is no link: not ours to replace"
    if before is not None:
        link.unlink()
    if target is not None:  # as the README says it, with this venv's scripts first on PATH
        env = {**os.environ, "PATH": f"{target.parent}:{os.environ['PATH']}"}
        run("bash", "-c", README_LINK.format(name=link.name), env=env, timeout=30, check=True)
        assert link.resolve() == target.resolve()
    try:
        yield
    finally:
        if link.is_symlink():
            link.unlink()
        if before is not None:
            link.symlink_to(before)


def fstab_line(url: str, mountpoint: Path, options: list[str]) -> str:
    # fstab(5): fields split on blanks; a blank inside one is written \040
    return f"{url} {str(mountpoint).replace(' ', chr(92) + '040')} fuse.bucketdisk {','.join(options)} 0 0\n"


def store_options(bd) -> list[str]:
    """The store's flags as fstab options: endpoint=...,addressing=path (s3); credentials stay in the environment."""
    args = bd.store.place(0).args
    return [f"{flag[2:]}={value}" for flag, value in zip(args[::2], args[1::2])]


def mount_from_fstab(bd, tmp_path, volume, options: list[str], mp: Path | None = None):
    """`mount -T FSTAB MOUNTPOINT` for `volume`; (proc, Mount) with the mount registered for cleanup."""
    mp = mp or tmp_path / "disk mnt"
    mp.mkdir(exist_ok=True)
    log = tmp_path / "helper-daemon.log"
    fstab = tmp_path / "fstab"
    fstab.write_text("# a test's own fstab\n" + fstab_line(volume.url, mp, options + [f"log={log}"]))
    m = Mount(volume=volume, path=mp, read_only=False, log=log)
    bd.mounts.append(m)
    bd.janitor.push(f"fstab mount {mp}", lambda: bd.cleanup_mount(m))
    proc = run("mount", "-T", fstab, mp, env=bd.env, timeout=90)
    return proc, m


@pytest.mark.usefixtures("helper_in_sbin")
def test_fstab_mount_write_umount_remount(bd, tmp_path):
    volume = bd.create(size="16M", block_size="64K")
    generic = ["_netdev", "nofail", "noatime", "x-systemd.after=network-online.target", "comment=disk1"]
    proc, m = mount_from_fstab(bd, tmp_path, volume,
                               generic + ["cache-size=32M", "threads=4", "readahead=2"] + store_options(bd))
    assert proc.returncode == 0, f"mount -T failed: {proc.stderr}\n{bd._log_tail(m.log)}"
    assert proc.stderr == ""
    # the helper returned with the mount live, its daemon in the background
    assert mounts_at(m.path)[-1] == "fuse.bucketdisk"
    stats = bd.stats(m.path)
    assert stats["volume"] == volume.url and stats["read_only"] == 0
    assert stats["retry_time_seconds"] == 300
    m.pid = stats["pid"]
    m.pids.add(m.pid)
    data = os.urandom(3 * MiB + 4096)
    with open(m.file, "r+b") as f:
        f.seek(1 * MiB)
        f.write(data)
        os.fsync(f.fileno())
    with open(m.file, "rb") as f:
        f.seek(1 * MiB)
        assert f.read(len(data)) == data
    # umount(8) by path, as for any filesystem: the daemon stores what it holds and exits
    proc = run("umount", m.path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert not is_mounted(m.path)
    assert wait_pid_gone(m.pid, 120), "the daemon outlived umount"
    # everything reached the store: a fresh mount reads it back
    again = bd.mount(volume, m.path)
    with open(again.file, "rb") as f:
        f.seek(1 * MiB)
        assert f.read(len(data)) == data
    bd.unmount(again)


@pytest.mark.stores("file")
@pytest.mark.usefixtures("helper_in_sbin")
def test_fstab_read_only_and_encrypted(bd, tmp_path):
    """`ro` becomes --read-only; an encrypted volume's passphrase comes from
    passphrase-file=FILE (its path is in the options, never the secret)."""
    volume = bd.create_encrypted(size="4M", block_size="64K")
    passphrase_file = volume.key_args[1]
    proc, m = mount_from_fstab(bd, tmp_path, volume, ["ro", f"passphrase-file={passphrase_file}", "cache-size=8M"])
    assert proc.returncode == 0, f"mount -T failed: {proc.stderr}\n{bd._log_tail(m.log)}"
    stats = bd.stats(m.path)
    m.pids.add(stats["pid"])
    assert stats["read_only"] == 1
    with open(m.file, "rb") as f:
        assert f.read(4096) == bytes(4096)
    with pytest.raises(OSError):
        open(m.file, "r+b").close()
    assert run("umount", m.path, timeout=120).returncode == 0
    assert wait_pid_gone(stats["pid"], 120)


@pytest.mark.stores("file")
@pytest.mark.usefixtures("helper_in_sbin")
@pytest.mark.parametrize("option, said", [
    ("bogus=1", "-o bogus: not a bucketdisk mount option"),
    ("foreground", "-o foreground: not a bucketdisk mount option"),
    ("cache-size", "-o cache-size needs a value"),
    ("read-only=yes", "-o read-only takes no value"),
    ("passphrase=hunter2-secret", "-o passphrase: secrets never go in mount options"),
    ("aws_secret_access_key=hunter2-secret", "-o aws_secret_access_key: secrets never go in mount options"),
    ("cache-size=lots", "argument --cache-size: not a size: 'lots'"),
])
def test_bad_option_is_one_line(bd, tmp_path, option, said):
    volume = bd.create(size="4M", block_size="64K")
    proc, m = mount_from_fstab(bd, tmp_path, volume, ["_netdev", option])
    assert proc.returncode != 0
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and said in lines[0], proc.stderr
    assert "hunter2" not in proc.stderr and "Traceback" not in proc.stderr
    assert not is_mounted(m.path)


@pytest.mark.stores("file")
@pytest.mark.usefixtures("helper_in_sbin")
def test_fake_and_verbose(bd, tmp_path):
    """mount -f checks and mounts nothing; -v says the command it runs; -s skips unknown options."""
    volume = bd.create(size="4M", block_size="64K")
    proc, m = mount_from_fstab(bd, tmp_path, volume, ["cache-size=8M"])
    assert proc.returncode == 0, proc.stderr
    pid = bd.stats(m.path)["pid"]
    m.pids.add(pid)
    assert run("umount", m.path, timeout=120).returncode == 0
    assert wait_pid_gone(pid, 120)
    fstab = tmp_path / "fstab"
    proc = run("mount", "-f", "-n", "-v", "-T", fstab, m.path, env=bd.env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"mount.fuse.bucketdisk: bucketdisk mount {volume.url} {m.path} --cache-size=8M" in proc.stderr
    assert not is_mounted(m.path)
    # the helper as mount(8) calls it, directly: -s skips an unknown option with a warning
    proc = run(HELPER, volume.url, m.path, "-s", "-f", "-o", "rw,whatever=1,cache-size=8M", timeout=60)
    assert proc.returncode == 0 and "-o whatever: not a bucketdisk mount option; skipped" in proc.stderr
    proc = run(HELPER, volume.url, m.path, "-N", "1234", timeout=60)
    assert proc.returncode == 1 and "namespace" in proc.stderr
    proc = run(HELPER, volume.url, timeout=60)
    assert proc.returncode == 1 and "expected a volume URL and a mountpoint" in proc.stderr
    assert not is_mounted(m.path)


@pytest.mark.usefixtures("umount_helper_in_sbin")
def test_umount_helper_waits_for_the_store(bd, tmp_path):
    """With umount.fuse.bucketdisk linked too, umount(8) returns once the
    daemon stored everything and exited (as `bucketdisk unmount`), so a
    shutdown's unmount of a fstab entry cannot cut its flush short.
    umount(8) knows the subtype (and so the helper) only from the entry
    mount(8) keeps in /run/mount/utab for userspace options such as
    _netdev (otherwise fstatfs says just `fuse`): the README's line has it."""
    volume = bd.create(size="16M", block_size="64K")
    proc, m = mount_from_fstab(bd, tmp_path, volume, ["_netdev", "cache-size=32M"] + store_options(bd))
    assert proc.returncode == 0, proc.stderr
    pid = bd.stats(m.path)["pid"]
    m.pids.add(pid)
    data = os.urandom(4 * MiB)
    with open(m.file, "r+b") as f:
        f.write(data)  # not fsynced: still in the cache when umount starts
    proc = run("umount", m.path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not is_mounted(m.path)
    # its main thread has exited (a zombie until PID 1 reaps it, its last threads going)
    assert pid_state(pid) in (None, "Z", "X"), "umount returned before the daemon had finished"
    again = bd.mount(volume, m.path)
    with open(again.file, "rb") as f:
        assert f.read(len(data)) == data
    bd.unmount(again)
    # umount -l keeps the kernel's meaning: detached at once
    proc, m = mount_from_fstab(bd, tmp_path, volume, ["_netdev", "cache-size=32M"] + store_options(bd))
    assert proc.returncode == 0, proc.stderr
    pid = bd.stats(m.path)["pid"]
    m.pids.add(pid)
    assert run("umount", "-l", m.path, timeout=60).returncode == 0
    assert not is_mounted(m.path)
    assert wait_pid_gone(pid, 120)
    utab = Path("/run/mount/utab")
    assert not utab.exists() or str(m.path).replace(" ", "\\040") not in utab.read_text(), "a stale utab entry"


def readme_block(language: str) -> list[str]:
    """The lines of the README's one ```LANGUAGE block."""
    (block,) = re.findall(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S)
    return block.splitlines()


def test_readme_links_are_the_ones_tested():
    text = README.read_text()
    for name in ("mount.fuse.bucketdisk", "umount.fuse.bucketdisk"):
        assert README_LINK.format(name=name) in text


@pytest.mark.stores("file")
@pytest.mark.usefixtures("umount_helper_in_sbin")
def test_readme_fstab_lines(bd, tmp_path):
    """The README's fstab lines as written: the file:// one mounted (its
    directory and mountpoint moved into the test's tmp dir), the s3:// one
    checked by `mount -f` (its bucket and credentials are examples)."""
    file_line, s3_line = readme_block("fstab")
    volume = bd.create(size="16M", block_size="64K")
    mp = tmp_path / "mnt disk"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(file_line.replace("file:///srv/disk", volume.url)
                     .replace(" /mnt/disk ", " " + str(mp).replace(" ", "\\040") + " ") + "\n")
    m = Mount(volume=volume, path=mp, read_only=False, log=tmp_path / "none")
    bd.janitor.push(f"fstab mount {mp}", lambda: bd.cleanup_mount(m))
    proc = run("mount", "-T", fstab, mp, timeout=90)
    assert proc.returncode == 0, proc.stderr
    stats = bd.stats(mp)
    m.pids.add(stats["pid"])
    assert stats["cache_limit_bytes"] >= 512 * MiB
    assert run("umount", mp, timeout=120).returncode == 0
    assert pid_state(stats["pid"]) in (None, "Z", "X")
    url, where, kind, options, *_ = s3_line.split()
    assert kind == "fuse.bucketdisk" and url.startswith("s3://")
    fstab.write_text(fstab_line(url, mp, [options]))
    proc = run("mount", "-f", "-n", "-v", "-T", fstab, mp, timeout=60)  # -n: no utab entry for a fake mount
    assert proc.returncode == 0, proc.stderr
    assert f"bucketdisk mount {url} {mp} --cache-size=512M --region=eu-west-1 --credentials-file=" in proc.stderr
    assert str(mp).replace(" ", "\\040") not in Path("/run/mount/utab").read_text()
