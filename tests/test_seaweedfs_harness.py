"""The SeaweedFS harness (ci/seaweedfs.py) against a real `weed mini` server.

No mocks: every test talks SigV4 over HTTP to a server this file starts.
"""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

CI = Path(__file__).resolve().parent.parent / "ci"
sys.path.insert(0, str(CI))

import seaweedfs  # noqa: E402
from seaweedfs import SeaweedFS  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def pid_gone(pid: int) -> bool:
    """No such process (a zombie waiting for its reaper counts as gone)."""
    return not seaweedfs._pid_alive(pid)


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not pid_gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def listening_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(table, hex address, port) of every listening TCP socket / bound UDP socket of pid."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = os.readlink(fd)
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6", "udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            listening = f[3] == "0A" if table.startswith("tcp") else True
            if listening and f[9] in inodes:
                addr, port = f[1].rsplit(":", 1)
                found.append((table, addr, int(port, 16)))
    return found


def put_many(server: SeaweedFS, bucket: str, keys: list[str], threads: int = 8) -> None:
    """PUT small objects in parallel, one session and signer per thread."""
    local = threading.local()

    def put(key: str) -> int:
        if not hasattr(local, "session"):
            local.session, local.auth = requests.Session(), server.auth()
        r = local.session.put(server.url(bucket, key), data=key.encode(),
                              auth=local.auth, timeout=(5, 30))
        return r.status_code

    with ThreadPoolExecutor(threads) as pool:
        codes = list(pool.map(put, keys))
    assert codes == [200] * len(keys)


@pytest.fixture(scope="module")
def server():
    with SeaweedFS() as s:
        yield s


def test_start_is_ready_loopback_only_and_authenticated(server):
    assert server.endpoint == f"http://127.0.0.1:{server.ports['s3']}"
    assert server.region == "us-east-1"
    assert server.access_key and server.secret_key
    assert server.pid and not pid_gone(server.pid)
    assert server.start_seconds is not None and server.start_seconds < 60
    assert server.log_path.is_file() and server.log_path.parent == server.data_dir

    socks = listening_sockets(server.pid)
    ports = {port for _, _, port in socks}
    assert server.ports["s3"] in ports and server.ports["master"] in ports
    loopback = "0100007F"  # 127.0.0.1 as /proc/net/tcp prints it
    assert all(table == "tcp" and addr == loopback for table, addr, _ in socks), socks
    # nothing on SeaweedFS's fixed defaults (Iceberg, Lance, S3, master, filer)
    assert not ports & {8181, 9101, 8333, 9333, 8888, 7333}, ports


def test_env_for_subprocesses(server):
    env = server.env()
    assert env["AWS_ACCESS_KEY_ID"] == server.access_key
    assert env["AWS_SECRET_ACCESS_KEY"] == server.secret_key
    assert env["AWS_REGION"] == "us-east-1"
    assert env["AWS_ENDPOINT_URL"] == server.endpoint


def test_bucket_put_get_delete(server):
    server.create_bucket("harness-basic")
    body = os.urandom(100_000)
    r = server.request("PUT", "harness-basic", "dir/obj-1", data=body)
    assert r.status_code == 200, r.text
    r = server.request("GET", "harness-basic", "dir/obj-1")
    assert r.status_code == 200 and r.content == body
    r = server.request("HEAD", "harness-basic", "dir/obj-1")
    assert r.status_code == 200 and int(r.headers["Content-Length"]) == len(body)
    assert server.request("GET", "harness-basic", "missing").status_code == 404
    # AWS-like: no implicit bucket creation, no deleting a non-empty bucket
    assert server.request("PUT", "harness-nobucket", "k", data=b"x").status_code == 404
    assert server.request("DELETE", "harness-basic").status_code == 409
    server.delete_bucket("harness-basic")
    assert server.request("HEAD", "harness-basic").status_code == 404
    server.delete_bucket("harness-basic")  # a missing bucket is fine


def test_list_paging_1100_objects(server):
    server.create_bucket("harness-list")
    keys = [f"blocks/{i:05d}" for i in range(1100)]
    put_many(server, "harness-list", keys)
    put_many(server, "harness-list", ["other/a", "other/b"])

    # the raw first page: exactly max-keys entries and a continuation token
    r = server.request("GET", "harness-list",
                       params={"list-type": "2", "prefix": "blocks/", "max-keys": "1000"})
    assert r.status_code == 200
    root = seaweedfs._strip_ns(ET.fromstring(r.content))
    assert len(root.findall("Contents")) == 1000
    assert root.findtext("IsTruncated") == "true" and root.findtext("NextContinuationToken")

    assert server.list_keys("harness-list", prefix="blocks/") == keys
    assert server.list_keys("harness-list", prefix="other/") == ["other/a", "other/b"]
    assert len(server.list_keys("harness-list", page_size=300)) == 1102

    server.delete_bucket("harness-list", force=True)  # DeleteObjects in 1000-key batches
    assert server.request("HEAD", "harness-list").status_code == 404


def test_wrong_secret_is_403(server):
    server.create_bucket("harness-auth")
    try:
        r = server.request("PUT", "harness-auth", "k", data=b"x", auth=server.auth("wrong-secret"))
        assert r.status_code == 403, r.text
        assert b"SignatureDoesNotMatch" in r.content
        r = server.request("GET", "harness-auth", auth=server.auth("wrong-secret"),
                           params={"list-type": "2"})
        assert r.status_code == 403
        r = requests.get(server.url("harness-auth"), timeout=(5, 30))  # unsigned
        assert r.status_code == 403
        assert server.request("PUT", "harness-auth", "k", data=b"x").status_code == 200
    finally:
        server.delete_bucket("harness-auth")


def test_restart_keeps_data_and_stop_leaves_no_process(tmp_path):
    data_dir = tmp_path / "sw"
    s = SeaweedFS(data_dir).start()
    try:
        endpoint, first_pid = s.endpoint, s.pid
        s.create_bucket("harness-restart")
        put_many(s, "harness-restart", [f"k{i}" for i in range(20)])

        s.restart()  # graceful: SIGTERM
        assert wait_gone(first_pid)
        assert s.endpoint == endpoint and s.pid != first_pid
        assert s.list_keys("harness-restart") == sorted(f"k{i}" for i in range(20))
        assert s.request("GET", "harness-restart", "k7").content == b"k7"

        s.stop_server(kill=True)  # a crash: SIGKILL, then the server comes back
        r = requests.Session()
        with pytest.raises(requests.ConnectionError):
            r.get(s.url("harness-restart", "k7"), auth=s.auth(), timeout=(2, 5))
        s.start_server()
        assert s.request("GET", "harness-restart", "k7").content == b"k7"
        assert len(s.list_keys("harness-restart")) == 20
    finally:
        pid = s.pid
        s.stop()
    assert pid is not None and pid_gone(pid)
    assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    assert s.pid is None
    assert data_dir.is_dir()  # a caller's data dir is kept; only temp dirs are removed


def test_two_servers_side_by_side(server):
    with SeaweedFS() as other:
        assert set(other.ports.values()).isdisjoint(server.ports.values())
        other.create_bucket("harness-two")
        assert other.request("PUT", "harness-two", "k", data=b"x").status_code == 200
        # each server has its own identity
        r = server.request("PUT", "harness-two", "k", data=b"x", auth=other.auth())
        assert r.status_code == 403
        temp_dir, pid = other.data_dir, other.pid
    assert pid_gone(pid) and not temp_dir.exists()


def test_cli_start_status_stop(tmp_path):
    data_dir = tmp_path / "cli"
    script = [sys.executable, str(CI / "seaweedfs.py")]
    out = subprocess.run(script + ["start", "--dir", str(data_dir)],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    exports = dict(line.removeprefix("export ").split("=", 1)
                   for line in out.stdout.splitlines())
    pid = int(exports["SEAWEEDFS_PID"])
    try:
        assert exports["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
        assert not pid_gone(pid)  # detached: outlives the CLI process
        attached = SeaweedFS.attach(data_dir)
        assert attached.pid == pid and attached.endpoint == exports["AWS_ENDPOINT_URL"]
        assert attached.access_key == exports["AWS_ACCESS_KEY_ID"]
        attached.create_bucket("harness-cli")
        assert attached.request("PUT", "harness-cli", "k", data=b"v").status_code == 200

        again = subprocess.run(script + ["start", "--dir", str(data_dir)],
                               capture_output=True, text=True, timeout=30)
        assert again.returncode != 0 and "already running" in again.stderr
        status = subprocess.run(script + ["status", "--dir", str(data_dir)],
                                capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and f"SEAWEEDFS_PID={pid}" in status.stdout
    finally:
        stop = subprocess.run(script + ["stop", "--dir", str(data_dir)],
                              capture_output=True, text=True, timeout=60)
    assert stop.returncode == 0, stop.stderr
    assert wait_gone(pid)
    status = subprocess.run(script + ["status", "--dir", str(data_dir)],
                            capture_output=True, text=True, timeout=30)
    assert status.returncode == 1


def test_cli_make_bucket_as_the_readme_shows(tmp_path):
    """README's S3 section: start a server with a bucket, make another, and
    bucketdisk uses them with nothing but the printed exports."""
    data_dir = tmp_path / "sw"
    script = [sys.executable, str(CI / "seaweedfs.py")]

    def cli(*args, env=None):
        return subprocess.run([*script, *args], capture_output=True, text=True, timeout=90, env=env)

    out = cli("start", "--dir", str(data_dir), "--bucket", "disks")
    assert out.returncode == 0, out.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    pid = int(exports["SEAWEEDFS_PID"])
    try:
        assert "bucket disks created" in out.stderr
        made = cli("make-bucket", "more-disks", "--dir", str(data_dir))
        assert made.returncode == 0 and "bucket more-disks created" in made.stderr, made.stderr
        again = cli("make-bucket", "more-disks", "--dir", str(data_dir))
        assert again.returncode == 0 and "already exists" in again.stderr, again.stderr
        for argv in (("make-bucket", "Bad_Name", "--dir", str(data_dir)),
                     ("make-bucket", "disks", "--dir", str(tmp_path / "no-server")),
                     ("make-bucket", "--dir", str(data_dir))):
            refused = cli(*argv)
            lines = refused.stderr.splitlines()
            assert refused.returncode != 0 and lines and "error:" in lines[-1], refused.stderr
            assert "Traceback" not in refused.stderr
        attached = SeaweedFS.attach(data_dir)
        assert attached.request("HEAD", "disks").status_code == 200
        assert attached.request("HEAD", "more-disks").status_code == 200
        assert attached.request("HEAD", "bad-name").status_code == 404

        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env |= {k: shlex.split(v)[0] for k, v in exports.items()}
        bucketdisk = Path(sys.executable).parent / "bucketdisk"
        for bucket in ("disks", "more-disks"):
            made = subprocess.run([str(bucketdisk), "create", f"s3://{bucket}/vm1", "--size", "64M"],
                                  capture_output=True, text=True, timeout=90, env=env)
            assert made.returncode == 0, made.stderr
            assert attached.list_keys(bucket) == ["vm1/volume"]
    finally:
        stop = cli("stop", "--dir", str(data_dir))
    assert stop.returncode == 0, stop.stderr
    assert wait_gone(pid)


def test_cli_help():
    out = subprocess.run([sys.executable, str(CI / "seaweedfs.py"), "--help"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "start" in out.stdout and "stop" in out.stdout


def _start_cli(script, data_dir, *extra):
    out = subprocess.run(script + ["start", "--dir", str(data_dir), *extra],
                         capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    exports = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    return {k: shlex.split(v)[0] for k, v in exports.items()}, out.stderr


def test_cli_start_after_stop_reuses_the_ports_so_a_live_mount_flushes(tmp_path):
    """`start --dir D` after `stop --dir D` listens where it did before: a
    mount left running against the old endpoint stores what it held."""
    from conftest import is_mounted, stop_pid

    data_dir, mp = tmp_path / "sw", tmp_path / "mp"
    mp.mkdir()
    script = [sys.executable, str(CI / "seaweedfs.py")]
    exports, _ = _start_cli(script, data_dir, "--bucket", "disks")
    pids = [int(exports["SEAWEEDFS_PID"])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | exports
    bucketdisk = [str(Path(sys.executable).parent / "bucketdisk")]

    def bd(*args, timeout=120):
        return subprocess.run(bucketdisk + list(map(str, args)), capture_output=True, text=True,
                              timeout=timeout, env=env)

    daemon = None
    try:
        assert bd("create", "s3://disks/vm1", "--size", "16M", "--block-size", "64K").returncode == 0
        made = bd("mount", "s3://disks/vm1", mp, "--log", tmp_path / "daemon.log", "--retry-time", 15)
        assert made.returncode == 0, made.stderr
        daemon = int(next(line.split()[1] for line in (mp / "stats").read_text().splitlines()
                          if line.startswith("pid:")))
        data = os.urandom(1 << 20)
        fd = os.open(mp / "file", os.O_RDWR)
        try:
            os.pwrite(fd, data[:4096], 0)
            os.fsync(fd)
            stop = subprocess.run(script + ["stop", "--dir", str(data_dir)], capture_output=True, text=True,
                                  timeout=60)
            assert stop.returncode == 0 and wait_gone(pids[0]), stop.stderr
            os.pwrite(fd, data, 0)  # acknowledged into the cache while the server is away
            again, note = _start_cli(script, data_dir)
            pids.append(int(again["SEAWEEDFS_PID"]))
            assert again["AWS_ENDPOINT_URL"] == exports["AWS_ENDPOINT_URL"], note
            assert f"same ports as the last run in {data_dir}" in note, note
            os.fsync(fd)  # the mount reaches the server again at the endpoint it knew
        finally:
            os.close(fd)
        done = bd("unmount", mp)
        assert done.returncode == 0, done.stderr
        attached = SeaweedFS.attach(data_dir)
        assert any(k.startswith("vm1/blocks/") for k in attached.list_keys("disks"))
    finally:  # a mount that cannot reach the server would wait in unmount: not for long here
        if is_mounted(mp):
            try:
                bd("unmount", mp, timeout=20)
            except subprocess.TimeoutExpired:
                pass
            subprocess.run(["fusermount3", "-u", "-z", str(mp)], capture_output=True)
        if daemon is not None:
            stop_pid(daemon)
        subprocess.run(script + ["stop", "--dir", str(data_dir)], capture_output=True, timeout=60)
    assert all(wait_gone(pid) for pid in pids)


def test_cli_start_says_in_one_line_when_the_saved_ports_are_taken(tmp_path):
    data_dir = tmp_path / "sw"
    script = [sys.executable, str(CI / "seaweedfs.py")]
    first, _ = _start_cli(script, data_dir)
    subprocess.run(script + ["stop", "--dir", str(data_dir)], capture_output=True, timeout=60, check=True)
    assert wait_gone(int(first["SEAWEEDFS_PID"]))
    old_port = int(first["AWS_ENDPOINT_URL"].rsplit(":", 1)[1])
    squatter = seaweedfs._bind(old_port, reuse=True)  # someone else listens there now
    assert squatter is not None
    squatter.listen()
    try:
        second, note = _start_cli(script, data_dir)
    finally:
        squatter.close()
    try:
        assert second["AWS_ENDPOINT_URL"] != first["AWS_ENDPOINT_URL"]
        warnings = [line for line in note.splitlines() if "warning" in line]
        assert len(warnings) == 1, note
        assert str(old_port) in warnings[0] and "in use" in warnings[0], warnings[0]
        assert first["AWS_ENDPOINT_URL"] in warnings[0] and second["AWS_ENDPOINT_URL"] in warnings[0]
        assert "Traceback" not in note
    finally:
        subprocess.run(script + ["stop", "--dir", str(data_dir)], capture_output=True, timeout=60)
    assert wait_gone(int(second["SEAWEEDFS_PID"]))


def test_cli_refuses_an_unreadable_state_file_in_one_line(tmp_path):
    data_dir = tmp_path / "sw"
    data_dir.mkdir()
    (data_dir / seaweedfs.STATE_FILE).write_text("{not json")
    for command in ("start", "status", "stop"):
        out = subprocess.run([sys.executable, str(CI / "seaweedfs.py"), command, "--dir", str(data_dir)],
                             capture_output=True, text=True, timeout=30)
        lines = out.stderr.splitlines()
        assert out.returncode != 0 and len(lines) == 1 and "cannot read" in lines[0], out.stderr
