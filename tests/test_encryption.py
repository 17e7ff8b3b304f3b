"""Encrypted volumes (issue 15): what the store holds says nothing of the
disk, the right secret alone opens it, and changing it rewrites no block.

1. Round trips through the engine on both stores, for plain, zstd,
   encrypted and encrypted+zstd volumes, at 4K, 64K, 1M and 8M blocks,
   with incompressible and highly compressible blocks: every block reads
   back; compression shrinks what it should; an encrypted volume's names
   are no plaintext BLAKE3 and its bytes hold no marker.
2. Through a mount: nothing written (a marker in a block, in a snapshot's
   name) appears in any key or object; the passphrase appears in no
   process's arguments or environment, log, stats or error.
3. A wrong or missing passphrase, at mount, info, verify, gc and snapshot
   list: one line, nothing changed in the store.
4. passwd: the old passphrase stops working, the new one (or a key file)
   opens the same blocks; no block object changes.
"""
from __future__ import annotations

import json
import os
import random
import uuid

import blake3
import pytest

from conftest import CLI, KiB, MiB, assert_cli_error, assert_file_matches, pwrite_fsync, run
from test_crash_points import places  # noqa: F401 - the fixture
from bucketdisk.codec.keys import KEY_FILE_KDF, KeySource, Secret
from bucketdisk.errors import UserError
from bucketdisk.volume.create import create_volume
from bucketdisk.volume.volume import Volume

KINDS = {"plain": ("none", False), "zstd": ("zstd", False), "encrypted": ("none", True),
         "encrypted+zstd": ("zstd", True)}
BLOCK_SIZES = (4 * KiB, 64 * KiB, MiB, 8 * MiB)
MARKER = b"PLAINTEXT-MARKER-7f3a"
PASSPHRASE = "correct horse 7"


def sample_blocks(block_size: int, seed: int) -> list[bytes]:
    """An incompressible block (with the marker inside), a highly
    compressible one, and a second compressible one."""
    rnd = random.Random(seed)
    noise = bytearray(rnd.randbytes(block_size))
    noise[100 : 100 + len(MARKER)] = MARKER
    text = lambda n: ((MARKER + f" line {n} of text that compresses well; ".encode()) * block_size)[:block_size]
    return [bytes(noise), text(1), text(2)]


@pytest.mark.parametrize("kind", KINDS)
def test_every_codec_round_trips_at_every_block_size(places, kind):  # noqa: F811
    compression, encrypted = KINDS[kind]
    for block_size in BLOCK_SIZES:
        store = places.open(places.new())
        secret = Secret(KEY_FILE_KDF, os.urandom(32))
        record = create_volume(store, 8 * block_size, block_size, compression=compression,
                               secret=(lambda: secret) if encrypted else None)
        keys = KeySource(data_key=record.keys.data_key) if encrypted else None
        blocks = sample_blocks(block_size, block_size)
        volume = Volume(store, writable=True, keys=keys)
        for index, data in enumerate(blocks):  # checkpointed ...
            volume.commit([(index, volume.store_block(data, index), volume.log_number())])
        volume.checkpoint()
        volume.commit([(5, volume.store_block(blocks[0], 5), volume.log_number())])  # ... and journalled
        volume.close()

        reopened = Volume(store, writable=False, keys=keys)
        for index, data in list(enumerate(blocks)) + [(5, blocks[0])]:
            assert reopened.read_block(reopened.lookup(index)) == data, (kind, block_size, index)
        reopened.close()
        stored = {key: size for key, size in store.list_sizes() if key.startswith("blocks/")}
        assert len(stored) == 3, (kind, block_size, stored)  # blocks 0 and 5 share one object
        compressed = [size for size in stored.values() if size < block_size // 4]
        assert len(compressed) == (2 if compression == "zstd" else 0), (kind, block_size, stored)
        plain_names = {blake3.blake3(data).hexdigest() for data in blocks}
        named_plainly = {key.rsplit("/", 1)[1] for key in stored} & plain_names
        assert len(named_plainly) == (0 if encrypted else 3), (kind, block_size)
        if encrypted:
            assert not [key for key, _ in store.list_sizes() if MARKER in store.get(key)], (kind, block_size)
        store.close()


def test_a_wrong_key_or_an_edited_record_opens_nothing(places):  # noqa: F811
    store = places.open(places.new())
    secret = Secret(KEY_FILE_KDF, os.urandom(32))
    record = create_volume(store, 8 * MiB, 64 * KiB, secret=lambda: secret)
    with pytest.raises(UserError, match="fails its authentication"):
        Volume(store, writable=False, keys=KeySource(data_key=os.urandom(32)))
    with pytest.raises(UserError, match="wrong key file"):
        Volume(store, writable=False, keys=KeySource(secret=lambda: Secret(KEY_FILE_KDF, os.urandom(32))))
    fields = json.loads(store.get("volume"))
    fields["size"] *= 2  # a larger disk behind the owner's back
    store.put("volume", json.dumps(fields).encode())
    with pytest.raises(UserError, match="fails its authentication"):
        Volume(store, writable=False, keys=KeySource(data_key=record.keys.data_key))
    store.close()


# -- through the command line and a mount ----------------------------------------------------


def everything(volume) -> dict[str, bytes]:
    return {key: volume.place.read(key) for key in volume.keys()}


def test_nothing_written_through_an_encrypted_mount_shows_in_the_store(bd, tmp_path):
    vol = bd.create_encrypted(size="4M", block_size="64K", passphrase=PASSPHRASE)
    env = {**(bd.env or os.environ), "BUCKETDISK_PASSPHRASE": PASSPHRASE}
    mp = tmp_path / "mnt"
    mp.mkdir()
    log = tmp_path / "daemon.log"
    args = [vol.url, str(mp), "--log", str(log), "--cache-size", "32M", *vol.place.args]
    run(CLI, "mount", *args, check=True, env=env)  # the passphrase from the environment
    bd.janitor.push("unmount", lambda: bd.run("unmount", mp) if os.path.ismount(mp) else None)
    model = bytearray(vol.size)
    for offset, data in enumerate(sample_blocks(64 * KiB, 1)):
        pwrite_fsync(mp / "file", model, offset * 64 * KiB + 7, data)
    pwrite_fsync(mp / "file", model, 2 * MiB, MARKER * 3)
    pid = bd.stats(mp)["pid"]
    shown = run("ps", "-eo", "args", check=True).stdout
    daemon_env = open(f"/proc/{pid}/environ", "rb").read()
    stats = (mp / "stats").read_text()
    bd.ok("snapshot", "create", str(mp), "--name", MARKER.decode())
    bd.unmount(mp)

    secret = PASSPHRASE.encode()
    assert PASSPHRASE not in shown and secret not in daemon_env and PASSPHRASE not in stats
    assert secret not in log.read_bytes()
    objects = everything(vol)
    assert not [key for key in objects if MARKER.decode() in key]
    assert not [key for key, data in objects.items() if MARKER in data or secret in data]
    disk_blocks = {blake3.blake3(bytes(model[at : at + 64 * KiB])).hexdigest()
                   for at in range(0, len(model), 64 * KiB)}
    assert not [key for key in objects if key.rsplit("/", 1)[-1] in disk_blocks]

    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    assert sorted(os.listdir(m.path / "snapshots")) == sorted(["Latest", MARKER.decode()])
    bd.unmount(m)
    assert bd.run("verify", vol.url, "--all", *vol.store_args).returncode == 0


def test_a_wrong_or_missing_passphrase_is_one_line_and_changes_nothing(bd, tmp_path):
    vol = bd.create_encrypted(size="4M", block_size="64K", passphrase=PASSPHRASE)
    m = bd.mount(vol)
    pwrite_fsync(m.file, bytearray(vol.size), 0, MARKER * 100)
    bd.unmount(m)
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("Correct horse 7\n")
    before = vol.place.snapshot()
    mp = tmp_path / "mnt"
    mp.mkdir()
    for command in (["mount", vol.url, str(mp)], ["info", vol.url], ["verify", vol.url], ["gc", vol.url],
                    ["snapshot", "list", vol.url]):
        line = assert_cli_error(bd.run(*command, *vol.place.args, "--passphrase-file", str(wrong)))
        assert f"wrong passphrase for {vol.url}" in line and "orrect horse" not in line, (command, line)
        line = assert_cli_error(bd.run(*command, *vol.place.args))  # none given, no terminal
        assert "is encrypted and no passphrase was given" in line, (command, line)
    line = assert_cli_error(bd.run("info", vol.url, *vol.place.args, "--key-file", str(wrong)))
    assert "holds 16 bytes" in line
    assert not os.path.ismount(mp)
    assert vol.place.snapshot() == before


def test_passwd_changes_the_secret_and_no_block(bd, tmp_path):
    vol = bd.create_encrypted(size="4M", block_size="64K", passphrase=PASSPHRASE)
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, b"".join(sample_blocks(64 * KiB, 3)))
    bd.unmount(m)
    blocks = {key: data for key, data in everything(vol).items() if key.startswith("blocks/")}
    new = tmp_path / "new.txt"
    new.write_text("a new passphrase\n")
    record = vol.place.read("volume")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not it\n")
    assert "wrong passphrase" in assert_cli_error(
        bd.run("passwd", vol.url, *vol.place.args, "--passphrase-file", str(wrong), "--new-passphrase-file", str(new)))
    assert vol.place.read("volume") == record

    def change(new_args: list[str], refusal: str) -> None:
        """passwd to `new_args`' secret: the old one is refused, the new one reads the disk."""
        bd.ok("passwd", vol.url, *vol.store_args, *new_args)
        assert refusal in assert_cli_error(bd.run("info", vol.url, *vol.store_args))
        vol.key_args = [arg.replace("--new-", "--") for arg in new_args]
        m = bd.mount(vol, read_only=True)
        assert_file_matches(m.file, model)
        bd.unmount(m)

    change(["--new-passphrase-file", str(new)], "wrong passphrase")
    key_file = tmp_path / "disk.key"
    key_file.write_bytes(os.urandom(32))
    change(["--new-key-file", str(key_file)], "key file")
    assert {key: data for key, data in everything(vol).items() if key.startswith("blocks/")} == blocks


@pytest.mark.stores("file")  # what the store shows, not how: one store is enough
def test_a_volume_known_as_encrypted_is_never_opened_as_plain(bd, tmp_path):
    vol = bd.create_encrypted(size="4M", block_size="64K", passphrase=PASSPHRASE)
    bd.info(vol)  # this machine has seen it
    record = json.loads(vol.place.read("volume"))
    plain = {k: v for k, v in record.items() if k not in ("encryption", "mac")} | {"format_version": 2}
    vol.place.write("volume", json.dumps(plain).encode())  # the store's doing
    for key in list(vol.keys()):
        if key.startswith(("map/", "snapshots/")):
            (vol.path / key).unlink()
    for args in ([], vol.key_args):
        line = assert_cli_error(bd.run("info", vol.url, *args))
        assert "held an encrypted volume when this machine last opened it" in line, line
    # ... also when the store makes a plain volume of its own there (a new UUID)
    (vol.path / "volume").write_text(json.dumps(plain | {"uuid": uuid.uuid4().hex}))
    for command in (["info", vol.url], ["mount", vol.url, str(tmp_path)]):
        for args in ([], vol.key_args):
            line = assert_cli_error(bd.run(*command, *args))
            assert "held an encrypted volume when this machine last opened it" in line, line
    assert not os.path.ismount(tmp_path)
    other = bd.create(size="4M", block_size="64K")
    line = assert_cli_error(bd.run("info", other.url, *vol.key_args))
    assert "is not encrypted, yet a passphrase" in line, line
    key_file = tmp_path / "k"
    key_file.write_bytes(os.urandom(32))
    line = assert_cli_error(bd.run("info", vol.url, "--passphrase-file", str(key_file), "--key-file", str(key_file)))
    assert "not both" in line


@pytest.mark.stores("file")
def test_a_record_asking_too_much_of_the_key_derivation_is_refused_at_once(bd):
    vol = bd.create_encrypted(size="4M", block_size="64K", passphrase=PASSPHRASE)
    record = json.loads(vol.place.read("volume"))
    record["encryption"]["kdf"]["memory_kib"] = 4 << 20  # 4 GiB
    vol.place.write("volume", json.dumps(record).encode())
    line = assert_cli_error(bd.run("info", vol.url, *vol.store_args))
    assert '"memory_kib" must be a whole number from 8 to 1048576' in line, line
