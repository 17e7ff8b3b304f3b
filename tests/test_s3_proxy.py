"""The s3:// store through a real forward proxy (Debian's tinyproxy, on
loopback, started and stopped by its PID here).

What is proved:
- HTTP_PROXY, its lower-case http_proxy and ALL_PROXY from the environment
  carry a volume's requests: create, mount, write, fsync, unmount and a
  read-back all work through the proxy, and the proxy's own log shows the
  block requests;
- NO_PROXY naming the server bypasses it (the proxy's log does not grow);
- a dead proxy is one line naming it (host:port, never a password given
  in its URL), not the S3 endpoint, and nothing is made;
- a proxy setting that cannot work (socks, another scheme, unparseable, no
  host) is refused at once in one line naming the variable, never the
  password, before any request, and nothing is made.
"""
from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import MiB, assert_cli_error, assert_file_matches, fsync_path, wait_until

STORES = ("s3",)
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                   "NO_PROXY", "no_proxy")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TinyProxy:
    """tinyproxy in the foreground on 127.0.0.1:`port`, logging every
    request to `log`."""

    def __init__(self, work: Path) -> None:
        binary = shutil.which("tinyproxy")
        assert binary, "tinyproxy is missing: ci/install.sh installs it"
        self.port = free_port()
        self.log = work / "tinyproxy.log"
        conf = work / "tinyproxy.conf"
        conf.write_text(f'Port {self.port}\nListen 127.0.0.1\nTimeout 120\nLogFile "{self.log}"\n'
                        "LogLevel Info\nMaxClients 200\nAllow 127.0.0.1\n")
        self.proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        assert wait_until(self._listening, 10), "tinyproxy did not start listening"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def requests(self) -> list[str]:
        """The request lines tinyproxy logged ("PUT http://host:port/bucket/key HTTP/1.1")."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line.split("): ", 1)[1] for line in text.splitlines() if "Request (file descriptor" in line]

    def stop(self) -> None:
        """Stop it by its PID (TERM, then KILL), once."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def tinyproxy(tmp_path, monkeypatch):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    proxy = TinyProxy(tmp_path)
    yield proxy
    proxy.stop()


def write_random(path, size: int, seed: int) -> bytearray:
    model = bytearray(random.Random(seed).randbytes(size))
    with open(path, "r+b") as f:
        f.write(model)
    fsync_path(path)
    return model


@pytest.mark.parametrize("variable", ["HTTP_PROXY", "http_proxy", "ALL_PROXY"])
def test_a_volume_works_through_the_proxy_and_no_proxy_bypasses_it(bd, tinyproxy, monkeypatch, variable):
    monkeypatch.setenv(variable, tinyproxy.url)
    vol = bd.create(size="8M", block_size="64K")
    m = bd.mount(vol)
    model = write_random(m.file, 4 * MiB, 7)
    bd.unmount(m)
    m = bd.mount(vol, read_only=True, cache_size="4M")
    assert_file_matches(m.file, model + bytearray(vol.size - len(model)))
    bd.unmount(m)
    seen = tinyproxy.requests()
    server = bd.store.server.endpoint
    assert any(line.startswith("PUT ") and "/blocks/" in line for line in seen), seen[:5]
    assert any(line.startswith("GET ") and "/blocks/" in line for line in seen), seen[:5]
    assert all(f" {server}/" in line for line in seen), [line for line in seen if server not in line][:3]

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    m = bd.mount(vol, read_only=True, cache_size="4M")
    assert_file_matches(m.file, model + bytearray(vol.size - len(model)))
    bd.unmount(m)
    time.sleep(0.5)  # (tinyproxy writes its log as requests come)
    assert len(tinyproxy.requests()) == len(seen), "NO_PROXY was not honoured"


def test_a_dead_proxy_is_one_line_naming_it(bd, tinyproxy, monkeypatch):
    port = tinyproxy.port
    tinyproxy.stop()  # nothing listens there now
    monkeypatch.setenv("HTTP_PROXY", f"http://someone:pr0xy-secret@127.0.0.1:{port}")
    place = bd.new_place()
    started = time.monotonic()
    proc = bd.run("create", place.url, "--size", "8M", *place.args)
    line = assert_cli_error(proc)
    assert f"proxy 127.0.0.1:{port}" in line, line
    assert "pr0xy-secret" not in proc.stderr + proc.stdout and "someone" not in line, line
    assert bd.store.server.endpoint not in line, line
    assert time.monotonic() - started < 30, "a dead proxy took the whole retry time to report"
    monkeypatch.delenv("HTTP_PROXY")
    assert bd.run("info", place.url, *place.args).returncode != 0, "the refused create made a volume"


@pytest.mark.parametrize("variable, value, says", [
    ("ALL_PROXY", "socks5://someone:pr0xy-secret@127.0.0.1:1", "socks proxies are not supported"),
    ("http_proxy", "socks5h://someone:pr0xy-secret@127.0.0.1:1", "socks proxies are not supported"),
    ("HTTP_PROXY", "http://someone:pr0xy-secret@[::1", "cannot be parsed"),
    ("HTTP_PROXY", "::::", "cannot be parsed"),
    ("HTTP_PROXY", "http://someone:pr0xy-secret@127.0.0.1:99999", "cannot be parsed"),
    ("all_proxy", "ftp://someone:pr0xy-secret@127.0.0.1:21", "scheme 'ftp'"),
    ("HTTP_PROXY", "http://someone:pr0xy-secret@:3128", "without a host"),
])
def test_a_proxy_that_cannot_work_is_refused_at_once(bd, monkeypatch, variable, value, says):
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, value)
    place = bd.new_place()
    started = time.monotonic()
    proc = bd.run("create", place.url, "--size", "8M", *place.args)
    line = assert_cli_error(proc)
    assert line.startswith(f"bucketdisk: error: {variable} ") and says in line, line
    if "socks" in says:
        assert "127.0.0.1:1" in line, line
    assert "pr0xy-secret" not in proc.stderr + proc.stdout and "someone" not in line, line
    assert bd.store.server.endpoint not in line, line
    assert time.monotonic() - started < 10, "a proxy that cannot work was retried"
    monkeypatch.delenv(variable)
    assert bd.run("info", place.url, *place.args).returncode != 0, "the refused create made a volume"
