"""contrib/systemd/bucketdisk@.service: checked by systemd-analyze verify,
and its ExecStart/ExecStop run the way systemd runs them (systemd is
installed here but is not PID 1, so the test plays its part: the
EnvironmentFile's variables, ExecStart's `${VAR}` and `$VAR` expansion
of systemd.service(5) "Command lines", NOTIFY_SOCKET of sd_notify(3),
KillSignal to the main process)."""
import os
import re
import shlex
import signal
import socket
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import CLI, MiB, Mount, is_mounted, mounts_at, run, wait_pid_gone

UNIT = Path(__file__).resolve().parent.parent / "contrib" / "systemd" / "bucketdisk@.service"
EXAMPLE = UNIT.parent / "example.conf"
INSTALLED = "/usr/local/bin/bucketdisk"  # where the unit expects the console script


def unit_settings(text: str) -> dict[str, str]:
    """`Section.Key` -> value of a unit file (no key is given twice in ours)."""
    settings, section = {}, None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        assert f"{section}.{key}" not in settings, f"{key} given twice"
        settings[f"{section}.{key}"] = value
    return settings


def environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as systemd.exec(5) EnvironmentFile= reads them (no quoting in ours)."""
    found = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value
    return found


def command_line(line: str, env: dict[str, str]) -> list[str]:
    """systemd.service(5): `${VAR}` is replaced by the value as one argument,
    `$VAR` standing as a word of its own by the value split at whitespace."""
    words = []
    for word in shlex.split(line):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    assert words[0] == INSTALLED, words
    return [str(CLI)] + words[1:]


def test_unit_verifies(tmp_path):
    """systemd-analyze verify says nothing about the unit (it warns, exit 0,
    about unknown keys: so no output at all is the check), with its
    commands pointing at the installed console script."""
    settings = unit_settings(UNIT.read_text())
    for key in ("Service.ExecStart", "Service.ExecStop"):
        assert settings[key].startswith(INSTALLED + " ")
    copy = tmp_path / UNIT.name
    copy.write_text(UNIT.read_text().replace(INSTALLED, str(CLI)))
    proc = run("systemd-analyze", "verify", tmp_path / "bucketdisk@disk1.service", timeout=120)
    assert proc.returncode == 0 and proc.stderr.strip() == "" and proc.stdout.strip() == "", proc.stderr
    # the check is real: a misspelt key is reported
    copy.write_text(copy.read_text().replace("KillMode=", "KillMod="))
    proc = run("systemd-analyze", "verify", tmp_path / "bucketdisk@disk1.service", timeout=120)
    assert "Unknown key 'KillMod'" in proc.stderr
    # what supervision rests on
    assert settings["Service.Type"] == "notify"
    assert "--foreground" in settings["Service.ExecStart"].split()
    assert settings["Service.ExecStop"].split()[1] == "unmount"
    assert settings["Service.KillSignal"] == "SIGTERM" and settings["Service.KillMode"] == "mixed"
    assert settings["Service.Restart"] == "on-failure"
    assert "network-online.target" in settings["Unit.After"] and "network-online.target" in settings["Unit.Wants"]
    # secrets never on its command lines: they come from the EnvironmentFile or a credential
    assert not re.search(r"passphrase|secret|AWS_", settings["Service.ExecStart"], re.I)
    assert set(environment_file(EXAMPLE)) >= {"BUCKETDISK_URL", "BUCKETDISK_MOUNTPOINT", "BUCKETDISK_OPTIONS"}


def start(bd, tmp_path, volume, mp: Path, notify: str, extra_options: str = ""):
    """The unit's ExecStart, as systemd starts it for an instance whose
    .conf names `volume`: (process, conf env, Mount)."""
    conf = tmp_path / "disk1.conf"
    lines = [f"BUCKETDISK_URL={volume.url}", f"BUCKETDISK_MOUNTPOINT={mp}",
             "BUCKETDISK_OPTIONS=" + " ".join(["--cache-size 32M --threads 4", *volume.store_args, extra_options])]
    lines += [f"{k}={v}" for k, v in (bd.env or {}).items() if k.startswith("AWS_")]  # s3: the keys go here
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    env = environment_file(conf)
    argv = command_line(unit_settings(UNIT.read_text())["Service.ExecStart"], env)
    process_env = {"PATH": os.environ["PATH"], "LANG": "C.UTF-8", "NOTIFY_SOCKET": notify, **env}
    m = Mount(volume=volume, path=mp, read_only=False, log=tmp_path / "journal.txt")
    bd.mounts.append(m)
    bd.janitor.push(f"unit's mount {mp}", lambda: bd.cleanup_mount(m))
    with open(m.log, "ab") as journal:  # what journald would collect
        process = subprocess.Popen(argv, env=process_env, stdin=subprocess.DEVNULL, stdout=journal, stderr=journal)
    m.pids.add(process.pid)
    return process, env, m


def wait_ready(sock: socket.socket, process) -> bytes:
    sock.settimeout(90)
    try:
        message = sock.recv(4096)
    except TimeoutError:
        pytest.fail(f"no READY=1 in 90 s; the process's exit status: {process.poll()}")
    return message


@pytest.fixture
def notify_socket():
    """An abstract-namespace datagram socket, as systemd's NOTIFY_SOCKET (`@name`)."""
    name = f"bucketdisk-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        yield sock, "@" + name


def test_unit_runs_notifies_and_stops_cleanly(bd, tmp_path, notify_socket):
    sock, address = notify_socket
    volume = bd.create(size="16M", block_size="64K")
    mp = tmp_path / "mnt"
    mp.mkdir()
    prom = tmp_path / "disk1.prom"
    process, env, m = start(bd, tmp_path, volume, mp, address, f"--stats-file {prom}")
    message = wait_ready(sock, process)
    assert message.split(b"\n")[0] == b"READY=1", message
    # ready means live: units ordered after this one find the disk
    assert mounts_at(mp)[-1] == "fuse.bucketdisk" and prom.is_file()
    assert bd.stats(mp)["pid"] == process.pid  # systemd's main process is the daemon itself
    cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
    assert b"--foreground" in cmdline
    secret = env.get("AWS_SECRET_ACCESS_KEY")  # (s3) in the .conf, in no argument
    assert secret is None or secret.encode() not in cmdline
    # a write that was never fsynced, then systemd's stop: KillSignal to the main process
    data = os.urandom(2 * MiB)
    with open(m.file, "r+b") as f:
        f.write(data)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, bd._log_tail(m.log)
    assert not is_mounted(mp) and not prom.exists()
    again = bd.mount(volume, mp)
    with open(again.file, "rb") as f:
        assert f.read(len(data)) == data
    bd.unmount(again)

    # once more, stopped by ExecStop this time
    process, env, m = start(bd, tmp_path, volume, mp, address)
    assert wait_ready(sock, process).startswith(b"READY=1")
    stop = command_line(unit_settings(UNIT.read_text())["Service.ExecStop"], env)
    proc = run(*stop, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert process.wait(timeout=60) == 0
    assert not is_mounted(mp)
    assert wait_pid_gone(process.pid, 5)
