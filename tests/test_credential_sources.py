"""Credentials that expire and are refreshed under a real mount, and the
sources that hand them out: real SeaweedFS (SigV4 on), the real CLI, real
FUSE mounts, a real instance metadata service on loopback
(metadataserver.py: IMDSv2 with its session tokens) and a real
credential_process (a script written here).

What is proved:
- an EC2 instance role: a mount keeps writing and reading while the
  metadata service rotates the role's keys from one SeaweedFS identity to
  another; the daemon asked again before the first keys expired, always
  with a session token, and every request after that is signed with the
  new keys (seen by a recording proxy);
- a profile's credential_process, rotating the same way; a run that fails
  while the old keys still hold is one line in the daemon's log (the
  helper's own stderr passed through beside it) and the mount goes on;
  keys without Expiration are never asked for again;
- keys that expired and cannot be refreshed make the store's requests
  fail (fsync: EIO) with one clear line in the log; once the metadata
  service answers again the mount recovers and keeps every write;
- 32 threads asking at once: one refresh at a time, the others going on
  with the keys at hand while those hold, and all waiting for the one
  refresh once they do not;
- bad input (a world-readable or malformed ~/.s3backer_passwd, a process
  that fails or prints bad JSON or the wrong version, a metadata service
  that answers 404 or garbage or gives no session token, --ec2-role
  without one): one line, non-zero exit, nothing written, and the secret
  in the files or answers never shows on stdout, stderr or in a log.
"""
from __future__ import annotations

import json
import os
import random
import re
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_cli_error, assert_file_matches, fsync_path
from metadataserver import Answer, MetadataServer
from test_s3_options import proxy_factory, write_random  # noqa: F401 - proxy_factory is a fixture

STORES = ("s3",)
SIZE, BLOCK = "32M", "64K"
CREDENTIAL_RE = re.compile(r"Credential=([^/]+)/")


def role_env(bd, home: Path, **extra) -> dict[str, str]:
    """The store's environment without its keys (region and endpoint kept),
    HOME moved, the metadata service off unless `extra` turns it on."""
    env = {k: v for k, v in bd.store.env.items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    return env | extra


def imds_env(imds: MetadataServer) -> dict[str, str]:
    return {"AWS_EC2_METADATA_DISABLED": "false", "AWS_EC2_METADATA_SERVICE_ENDPOINT": imds.endpoint}


@pytest.fixture
def imds(janitor):
    """A started MetadataServer, stopped after the test's mounts are gone."""
    server = MetadataServer().start()
    janitor.push("stop the metadata server", server.stop)
    return server


def signers(proxy, since: int = 0) -> list[str]:
    """The access key of every request the proxy saw (from index `since`)."""
    keys = []
    for _, _, headers in proxy.requests[since:]:
        found = CREDENTIAL_RE.search(headers.get("authorization", ""))
        if found:
            keys.append(found.group(1))
    return keys


class Exercise:
    """Writes, fsyncs and reads back a mount's file against a model."""

    def __init__(self, m, size: int, seed: int) -> None:
        self.m, self.model, self.rng = m, bytearray(size), random.Random(seed)

    def __call__(self) -> None:
        write_random(self.m.file, self.model, self.rng, 4)
        fsync_path(self.m.file)
        assert_file_matches(self.m.file, self.model)


def keep_busy_until(exercise: Exercise, done, bound: float, what: str) -> None:
    """Run `exercise` until `done()` holds; fail after `bound` seconds."""
    end = time.monotonic() + bound
    while not done():
        assert time.monotonic() < end, f"{what} did not happen within {bound:.0f} s"
        exercise()
        time.sleep(0.5)


def log_text(m) -> str:
    return m.log.read_text(errors="replace") if m.log.exists() else ""


def assert_no_secret_in(text: str, *secrets: str) -> None:
    for s in secrets:
        assert s not in text, "a secret key appears in the output or the log"


# --------------------------------------------------------------------------
# an EC2 instance role that rotates under a mount
# --------------------------------------------------------------------------

def test_instance_role_keys_rotate_under_a_mount(bd, tmp_path, imds, proxy_factory):  # noqa: F811
    server = bd.store.server
    first, second = (server.access_key, server.secret_key), server.identities["second-owner"]
    vol = bd.create(size=SIZE, block_size=BLOCK)
    imds.answer = imds.keys(*first, expires_in=80)
    bd.env_override = role_env(bd, tmp_path / "home", **imds_env(imds))
    proxy = proxy_factory()
    m = bd.mount(vol, cache_size="4M", extra=["--endpoint", proxy.endpoint])
    exercise = Exercise(m, vol.size, 51)
    exercise()
    assert set(signers(proxy)) == {first[0]}, "the mount signed with keys the metadata service did not hand out"

    imds.answer = imds.keys(*second, expires_in=3600)
    rotated = time.time()
    keep_busy_until(exercise, lambda: any(when > rotated for when, key in imds.handed() if key == second[0]),
                    60, "a refresh of the role's keys")
    expiry_of_first = rotated - 1 + 80  # at the latest
    assert time.time() < expiry_of_first, "the keys were refreshed only after they had expired"
    since = len(proxy.requests)
    exercise()
    exercise()
    after = signers(proxy, since)
    assert after and set(after) == {second[0]}, f"requests after the refresh were signed with {set(after)}"
    bd.unmount(m)
    assert imds.untokened_gets() == 0, "the daemon asked the metadata service without an IMDSv2 session token"
    assert_no_secret_in(log_text(m), first[1], second[1])

    # the data written across the rotation reads back with other credentials, on a fresh mount
    bd.env_override = None
    m = bd.mount(vol, cache_size="4M")
    assert_file_matches(m.file, exercise.model)
    bd.unmount(m)


# --------------------------------------------------------------------------
# a credential_process that rotates, fails once, then hands out keys that never expire
# --------------------------------------------------------------------------

HELPER = """#!{python}
import json, sys, time
state = json.load(open({state!r}))
with open({runs!r}, "a") as f:
    f.write("run\\n")
if state["mode"] == "fail":
    print("helper: the vault is sealed", file=sys.stderr)
    print(json.dumps({{"SecretAccessKey": state["secret"]}}))
    sys.exit(3)
if state["mode"] == "garbage":
    print("not json " + state["secret"])
    sys.exit(0)
doc = {{"Version": state.get("version", 1), "AccessKeyId": state["key"], "SecretAccessKey": state["secret"]}}
if state.get("expires_in") is not None:
    doc["Expiration"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + state["expires_in"]))
print(json.dumps(doc))
"""


class Helper:
    """A credential_process script (mode 700) whose answer the test sets."""

    def __init__(self, directory: Path) -> None:
        self.state, self.runs_file = directory / "helper-state.json", directory / "helper-runs"
        self.path = directory / "credential helper"  # a space: the profile's line quotes it
        self.path.write_text(HELPER.format(python=sys.executable, state=str(self.state), runs=str(self.runs_file)))
        self.path.chmod(0o700)

    def set(self, **state) -> None:
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.state)

    def runs(self) -> int:
        return len(self.runs_file.read_text().splitlines()) if self.runs_file.exists() else 0

    def profile(self, home: Path, name: str = "rot") -> None:
        aws = home / ".aws"
        aws.mkdir(parents=True, exist_ok=True)
        (aws / "config").write_text(f'[profile {name}]\ncredential_process = "{self.path}" --ignored-argument\n')


def test_credential_process_rotates_and_survives_a_failed_run(bd, tmp_path, proxy_factory):  # noqa: F811
    server = bd.store.server
    first, second = (server.access_key, server.secret_key), server.identities["second-owner"]
    vol = bd.create(size=SIZE, block_size=BLOCK)
    home = tmp_path / "home"
    helper = Helper(tmp_path)
    helper.profile(home)
    helper.set(mode="keys", key=first[0], secret=first[1], expires_in=80)
    bd.env_override = role_env(bd, home, AWS_PROFILE="rot")
    proxy = proxy_factory()
    m = bd.mount(vol, cache_size="4M", extra=["--endpoint", proxy.endpoint])
    exercise = Exercise(m, vol.size, 52)
    exercise()
    assert set(signers(proxy)) == {first[0]}

    # a run that fails while the keys hold: one line in the log, the mount goes on with them
    runs = helper.runs()
    helper.set(mode="fail", secret=first[1])
    keep_busy_until(exercise, lambda: "could not refresh" in log_text(m), 60, "a failed refresh")
    log = log_text(m)
    refresh_lines = [ln for ln in log.splitlines() if "could not refresh" in ln]
    assert len(refresh_lines) >= 1 and helper.runs() > runs
    assert "credential_process of profile 'rot'" in refresh_lines[0] and "exited with status 3" in refresh_lines[0]
    assert "helper: the vault is sealed" in log, "the helper's stderr did not pass through to the daemon's log"
    assert_no_secret_in(log, first[1])
    exercise()

    # then keys without Expiration: used from the next run on, and never asked for again
    helper.set(mode="keys", key=second[0], secret=second[1], expires_in=None)
    since = len(proxy.requests)
    keep_busy_until(exercise, lambda: second[0] in signers(proxy, since), 60, "the switch to the second keys")
    since = len(proxy.requests)
    runs = helper.runs()
    for _ in range(4):
        exercise()
    assert set(signers(proxy, since)) == {second[0]}
    assert helper.runs() == runs, "keys without Expiration were asked for again"
    bd.unmount(m)
    assert_no_secret_in(log_text(m), first[1], second[1])


# --------------------------------------------------------------------------
# expired, and no refresh possible: one clear line, then recovery
# --------------------------------------------------------------------------

def test_expired_keys_that_cannot_be_refreshed_fail_requests_then_recover(bd, tmp_path, imds):
    server = bd.store.server
    first, second = (server.access_key, server.secret_key), server.identities["second-owner"]
    vol = bd.create(size=SIZE, block_size=BLOCK)
    imds.answer = imds.keys(*first, expires_in=25)
    expires = time.time() + 25
    bd.env_override = role_env(bd, tmp_path / "home", **imds_env(imds))
    m = bd.mount(vol, cache_size="4M")
    exercise = Exercise(m, vol.size, 53)
    exercise()
    imds.answer = Answer(500, b"internal error " + first[1].encode())

    time.sleep(max(0.0, expires - 10 - time.time()) + 1)  # past the keys' last usable second
    write_random(m.file, exercise.model, exercise.rng, 2)
    with pytest.raises(OSError):
        fsync_path(m.file)
    lines = [ln for ln in log_text(m).splitlines() if "could not be refreshed" in ln]
    assert lines, f"no line saying the keys expired:\n{log_text(m)[-3000:]}"
    assert f"the EC2 instance role {imds.role}" in lines[0] and "answered HTTP 500" in lines[0], lines[0]
    assert re.search(r"expired? at \d{4}-\d\d-\d\dT", lines[0]), lines[0]
    assert_no_secret_in(log_text(m), first[1])

    imds.answer = imds.keys(*second, expires_in=3600)
    ok = False
    for _ in range(60):  # the device keeps the failed writes and stores them once requests succeed again
        try:
            fsync_path(m.file)
            ok = True
            break
        except OSError:
            time.sleep(1)
    assert ok, "the mount did not recover once the metadata service answered again"
    exercise()
    bd.unmount(m)
    bd.env_override = None
    m = bd.mount(vol, cache_size="4M")
    assert_file_matches(m.file, exercise.model)
    bd.unmount(m)


# --------------------------------------------------------------------------
# bad input: one line each, no secret anywhere
# --------------------------------------------------------------------------

def test_bad_credential_sources_are_one_line_without_secrets(bd, tmp_path, imds):
    server, bucket = bd.store.server, bd.store.bucket
    key, secret = server.access_key, server.secret_key
    helper = Helper(tmp_path)
    place = bd.new_place()

    def refused(label: str, env: dict, *extra, helper_says: str | None = None) -> str:
        """The one error line of create and info; `helper_says`: a credential
        helper's own stderr line, passed through before it."""
        for command in (("create", place.url, "--size", SIZE, "--block-size", BLOCK), ("info", place.url)):
            bd.env_override = env
            proc = bd.run(*command, *place.args, *extra)
            assert_no_secret_in(proc.stdout + proc.stderr, secret)
            if helper_says is not None:
                lines = proc.stderr.splitlines()
                assert lines[:-1] == [helper_says], f"{label}: {proc.stderr}"
                proc.stderr = lines[-1] + "\n"
            line = assert_cli_error(proc)
        assert server.list_keys(bucket, place.prefix + "/") == [], f"{label}: a refused command wrote objects"
        return line

    # ~/.s3backer_passwd that others may read, or with a line that is not ID:KEY
    home = tmp_path / "passwd-home"
    env = role_env(bd, home)
    passwd = home / ".s3backer_passwd"
    passwd.write_text(f"{key}:{secret}\n")
    passwd.chmod(0o644)
    line = refused("passwd-0644", env)
    assert str(passwd) in line and "chmod 600" in line, line
    passwd.write_text(f"# keys\n\n{key}{secret}\n")
    passwd.chmod(0o600)
    line = refused("passwd-malformed", env)
    assert str(passwd) in line and "line 3" in line, line
    passwd.write_text(f"# keys\n{key}:{secret}\n")  # then it is used, after the AWS chain
    bd.env_override = env
    bd.ok("create", place.url, "--size", SIZE, "--block-size", BLOCK, *place.args)
    proc = bd.ok("info", place.url, *place.args)
    assert_no_secret_in(proc.stdout + proc.stderr, secret)
    place = bd.new_place()

    # a credential_process that fails, prints no JSON, or the wrong version
    home = tmp_path / "process-home"
    helper.profile(home)
    env = role_env(bd, home, AWS_PROFILE="rot")
    for mode, state, words in (("fail", dict(mode="fail", secret=secret), "exited with status 3"),
                               ("garbage", dict(mode="garbage", secret=secret), "not JSON"),
                               ("version", dict(mode="keys", key=key, secret=secret, version=2), "not Version 1")):
        helper.set(**state)
        line = refused(f"process-{mode}", env, helper_says="helper: the vault is sealed" if mode == "fail" else None)
        assert "credential_process of profile 'rot'" in line and words in line, line

    # the instance metadata service: 404 for the role, garbage, no session token
    env = role_env(bd, tmp_path / "imds-home", **imds_env(imds))
    imds.answer = imds.keys(key, secret)
    line = refused("ec2-role-missing", env, "--ec2-role", "no-such-role")
    assert "no IAM role no-such-role" in line and "404" in line, line
    imds.answer = Answer(200, b'{"Code": "Success", "AccessKeyId": "' + key.encode() + b'", "SecretAcc' +
                         secret.encode())
    line = refused("ec2-role-garbage", env, "--ec2-role", imds.role)
    assert "not JSON" in line, line
    line = refused("chain-imds-garbage", env)  # in the chain: the reason is named in the one line
    assert "no S3 credentials" in line and "not JSON" in line, line
    imds.require_token = False
    line = refused("imds-no-token", env, "--ec2-role", imds.role)
    assert "no IMDSv2 session token" in line, line
    imds.require_token = True
    env = role_env(bd, tmp_path / "imds-home", AWS_EC2_METADATA_DISABLED="true")
    line = refused("ec2-role-disabled", env, "--ec2-role", imds.role)
    assert "AWS_EC2_METADATA_DISABLED" in line, line
    bd.env_override = role_env(bd, tmp_path / "imds-home")
    line = assert_cli_error(bd.run("info", place.url, *place.args, "--ec2-role", "bad/role"))
    assert "--ec2-role" in line and "IAM role name" in line, line

    # a mount's daemon reads the same sources: its refusal comes back as the same one line
    imds.answer = Answer(404, b"")
    bd.env_override = role_env(bd, tmp_path / "imds-home", **imds_env(imds))
    mp = tmp_path / "refused-mount"
    mp.mkdir()
    proc = bd.run("mount", place.url, mp, *place.args, "--ec2-role", imds.role, "--log", tmp_path / "refused.log")
    line = assert_cli_error(proc)
    assert f"no IAM role {imds.role}" in line, line
    assert not os.path.ismount(mp)
    refused_log = tmp_path / "refused.log"
    assert_no_secret_in(refused_log.read_text(errors="replace") if refused_log.exists() else "", secret)
    assert imds.untokened_gets() == 0


# --------------------------------------------------------------------------
# many threads, one refresh at a time
# --------------------------------------------------------------------------

def test_many_threads_share_one_refresh(imds, monkeypatch):
    """32 threads ask an instance role's source for keys, as a mount's
    store threads do: inside the refresh window one of them refreshes
    while the others go on with the keys at hand; once the keys are too
    close to expiry to use, all wait for that one refresh and get the new
    keys.  Either way the metadata service never serves two at once."""
    from concurrent.futures import ThreadPoolExecutor

    from bucketdisk.store.metadata import InstanceRoleCredentials
    from bucketdisk.store.refreshing import EXPIRY_MARGIN, retry_delay

    monkeypatch.setenv("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint)
    imds.answer = imds.keys("AKIDFIRST", "secret-first", expires_in=EXPIRY_MARGIN + 20)
    source = InstanceRoleCredentials()
    assert source.current().access_key == "AKIDFIRST"
    fetched = len(imds.handed())

    def ask(_) -> str:
        return source.current().access_key

    # inside the window (under 15 min left): the next refresh is due after retry_delay()
    time.sleep(retry_delay(EXPIRY_MARGIN + 20) + 0.5)
    imds.delay = 0.3  # well under the 1 s the client waits
    imds.answer = imds.keys("AKIDSECOND", "secret-second", expires_in=EXPIRY_MARGIN + 3)
    with ThreadPoolExecutor(32) as pool:
        keys = list(pool.map(ask, range(320)))
    assert imds.most_in_flight == 1
    assert "AKIDFIRST" in keys, "threads waited for a refresh while their keys still held"
    assert len(imds.handed()) == fetched + 1, "more than one refresh for one window"
    assert source.current().access_key == "AKIDSECOND"

    # too close to expiry to use: every thread waits for the one refresh and gets the new keys
    imds.answer = imds.keys("AKIDTHIRD", "secret-third", expires_in=3600)
    time.sleep(4)
    fetched = len(imds.handed())
    with ThreadPoolExecutor(32) as pool:
        keys = list(pool.map(ask, range(320)))
    assert set(keys) == {"AKIDTHIRD"}
    assert len(imds.handed()) == fetched + 1 and imds.most_in_flight == 1
