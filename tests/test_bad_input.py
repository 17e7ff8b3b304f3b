"""Issue 16: bad input, every command and option, in one table.

Each row is (id, argv template, words): the real CLI runs it, and it must
exit non-zero with exactly one line on stderr (`bucketdisk CMD: error:
... (see '... --help')` for usage errors, exit 2; `bucketdisk: error: ...`
otherwise, exit 1; fsck's could-not-check exit is 8) holding every one of
the words, and no traceback.  A row marked `report` is verify or fsck
finding damage: exit 2, nothing on stderr, the report naming it.  After
every row the store (every object, with its bytes; for s3 the whole bucket,
and the missing bucket still missing), the local mountpoints and cache dirs
and what is mounted are as they were before it.

Placeholders (tests/badinput.py builds them, once per store): {url} a plain
volume with a snapshot `first`; {enc} an encrypted one (passphrase file
{pp}); {crashed} one whose mount was killed, leaving a dead lease and
dirty blocks in {crashed_cache}; {new} a place with nothing; {nobucket} a
bucket that does not exist; {mp} an empty directory, {missing} nothing,
{file} a regular file, {busy} a tmpfs, {ro} a read-only tmpfs, {dir} a
plain directory; {key} a key file, {short_key} one too short, {wrong_pp} a
wrong passphrase.  Store flags (s3) go before the first volume.

Ordinary refusals already tested at length elsewhere keep one row each
here (URLs: test_input_checks.py; --sse, endpoints: test_option_checks.py;
hand-edited records: test_damaged_volumes.py; cache dirs in use:
test_cache_dir.py).
"""
from __future__ import annotations

import json
import re
import time

import pytest

from badinput import BOTH, FILE, S3, build_world, row

# --------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------

def opt(id: str, argv: str, *words: str, **kw):
    """OPTIONS: refused before the store is reached (one store is enough)."""
    return row(id, argv, *words, stores=FILE, **kw)


def looked_up(id: str, argv: str, *words: str, **kw):
    """LOOKUPS: refused once the store is read (both stores)."""
    return row(id, argv, *words, stores=BOTH, **kw)


def s3_opt(id: str, argv: str, *words: str, **kw):
    """STORE_OPTIONS: the s3:// store's own options."""
    return row(id, argv, *words, stores=S3, **kw)


OPTIONS = [
    # create
    opt("create-no-size", "create {new}", "--size"),
    opt("create-size-word", "create {new} --size abc", "--size", "not a size: 'abc'"),
    opt("create-size-zero", "create {new} --size 0", "--size", "must be positive"),
    opt("create-size-negative", "create {new} --size -1", "--size", "must be positive: '-1'"),
    opt("create-size-unit", "create {new} --size 12Q", "--size", "'12Q'"),
    opt("create-size-too-big", "create {new} --size 1P", "1024T volume", "memory"),
    opt("create-block-size-zero", "create {new} --size 1M --block-size 0", "--block-size", "must be positive"),
    opt("create-block-size-negative", "create {new} --size 1M --block-size -64K", "--block-size", "'-64K'"),
    opt("create-block-size-odd", "create {new} --size 1M --block-size 48K", "power of two"),
    opt("create-block-size-large", "create {new} --size 128M --block-size 128M", "block size"),
    opt("create-size-not-multiple", "create {new} --size 100K --block-size 64K", "multiple"),
    opt("create-compress-zero", "create {new} --size 1M --compress zstd:0", "--compress", "'zstd:0'", "1 to 19"),
    opt("create-compress-high", "create {new} --size 1M --compress zstd:20", "--compress", "'zstd:20'"),
    opt("create-compress-lz4", "create {new} --size 1M --compress lz4", "--compress", "'lz4'"),
    opt("create-compress-empty-level", "create {new} --size 1M --compress zstd:", "--compress", "'zstd:'"),
    opt("create-key-without-encrypt", "create {new} --size 1M --key-file {key}", "go with --encrypt"),
    opt("create-key-file-short", "create {new} --size 1M --encrypt --key-file {short_key}", "holds 10 bytes"),
    opt("create-two-secrets", "create {new} --size 1M --encrypt --key-file {key} --passphrase-file {pp}",
        "not both"),
    # mount
    opt("mount-no-mountpoint", "mount {url}", "MOUNTPOINT"),
    opt("mount-threads-zero", "mount {url} {mp} --threads 0", "--threads must be from 1 to 256"),
    opt("mount-threads-257", "mount {url} {mp} --threads 257", "--threads must be from 1 to 256"),
    opt("mount-threads-negative", "mount {url} {mp} --threads -1", "--threads must be from 1 to 256"),
    opt("mount-threads-word", "mount {url} {mp} --threads x", "--threads", "'x'"),
    opt("mount-threads-fraction", "mount {url} {mp} --threads 1.5", "--threads", "'1.5'"),
    opt("mount-readahead-negative", "mount {url} {mp} --readahead -1", "--readahead cannot be negative"),
    opt("mount-readahead-word", "mount {url} {mp} --readahead x", "--readahead", "'x'"),
    opt("mount-cache-size-zero", "mount {url} {mp} --cache-size 0", "--cache-size", "must be positive"),
    opt("mount-cache-size-negative", "mount {url} {mp} --cache-size -1M", "--cache-size", "'-1M'"),
    opt("mount-cache-size-word", "mount {url} {mp} --cache-size abc", "--cache-size", "'abc'"),
    opt("mount-cache-size-memory", "mount {url} {mp} --cache-size 1P", "--cache-size 1024T", "memory"),
    opt("mount-cache-dir-size-small", "mount {url} {mp} --cache-dir {dir} --cache-size 2M --cache-dir-size 3M",
        "--cache-dir-size must be at least twice --cache-size"),
    opt("mount-cache-dir-size-negative", "mount {url} {mp} --cache-dir {dir} --cache-dir-size -1M",
        "--cache-dir-size", "'-1M'"),
    opt("mount-cache-dir-size-alone", "mount {url} {mp} --cache-dir-size 1G", "goes with --cache-dir"),
    opt("mount-compress-level-zero", "mount {url} {mp} --compress-level 0", "--compress-level", "1 to 19"),
    opt("mount-compress-level-high", "mount {url} {mp} --compress-level 20", "--compress-level", "1 to 19"),
    opt("mount-compress-level-word", "mount {url} {mp} --compress-level fast", "--compress-level"),
    opt("mount-snapshot-every-zero", "mount {url} {mp} --snapshot-every 0s", "--snapshot-every", "'0s'"),
    opt("mount-snapshot-every-unit", "mount {url} {mp} --snapshot-every 1x", "--snapshot-every", "'1x'"),
    opt("mount-snapshot-every-negative", "mount {url} {mp} --snapshot-every -1h", "--snapshot-every", "'-1h'"),
    opt("mount-snapshot-every-long", "mount {url} {mp} --snapshot-every 999d", "longer than a year"),
    opt("mount-snapshot-every-read-only", "mount {url} {mp} --snapshot-every 1h --read-only",
        "--snapshot-every needs a writable mount"),
    opt("mount-keep-without-schedule", "mount {url} {mp} --keep-last 3", "go with --snapshot-every"),
    opt("mount-keep-last-negative", "mount {url} {mp} --snapshot-every 1h --keep-last -2", "--keep-last", "'-2'"),
    opt("mount-keep-daily-word", "mount {url} {mp} --snapshot-every 1h --keep-daily x", "--keep-daily", "'x'"),
    opt("mount-keep-within-word", "mount {url} {mp} --snapshot-every 1h --keep-within x", "'x' is not a span"),
    opt("mount-keep-within-negative", "mount {url} {mp} --snapshot-every 1h --keep-within -1d",
        "'-1d' is not a span"),
    opt("mount-snapshot-bad-name", "mount {url} {mp} --snapshot a/b", "bad snapshot name 'a/b'"),
    opt("mount-snapshot-empty", "mount {url} {mp} --snapshot ''", "bad snapshot name ''"),
    opt("mount-snapshot-live", "mount {url} {mp} --snapshot live", "'live' is reserved"),
    opt("mount-snapshot-force", "mount {url} {mp} --snapshot first --force", "--force takes a writable volume"),
    opt("mount-log-directory", "mount {url} {mp} --log {dir}", "{dir}"),
    # recover
    opt("recover-no-cache-dir", "recover {url}", "--cache-dir"),
    opt("recover-discard-force", "recover {url} --cache-dir {dir} --discard --force", "--force", "--discard"),
    opt("recover-threads-zero", "recover {url} --cache-dir {dir} --threads 0", "--threads must be from 1 to 256"),
    opt("recover-threads-257", "recover {url} --cache-dir {dir} --threads 257", "--threads must be from 1 to 256"),
    opt("recover-threads-word", "recover {url} --cache-dir {dir} --threads x", "--threads", "'x'"),
    opt("recover-cache-size-word", "recover {url} --cache-dir {dir} --cache-size x", "--cache-size", "'x'"),
    opt("recover-cache-size-memory", "recover {url} --cache-dir {dir} --cache-size 1P", "memory"),
    # unmount
    opt("unmount-nothing", "unmount", "MOUNTPOINT"),
    opt("unmount-option", "unmount {mp} --bogus", "--bogus", "bucketdisk unmount: error:"),
    # stats
    opt("stats-nothing", "stats", "MOUNTPOINT"),
    # passwd
    opt("passwd-short-key", "passwd {enc} --passphrase-file {pp} --new-key-file {short_key}", "holds 10 bytes"),
    opt("passwd-two-new-secrets", "passwd {enc} --new-passphrase-file {pp} --new-key-file {key}", "not both"),
    opt("passwd-no-url", "passwd", "URL"),
    # unlock
    opt("unlock-option", "unlock {url} --threads 2", "--threads"),
    # info
    opt("info-option", "info {url} --bogus", "--bogus", "bucketdisk info: error:"),
    opt("info-two-secrets", "info {enc} --passphrase-file {pp} --key-file {key}", "not both"),
    # gc
    opt("gc-option", "gc {url} --threads 3", "--threads"),
    opt("gc-not-a-mount", "gc {dir}", "neither a volume URL nor a bucketdisk mount"),
    # verify
    opt("verify-threads-zero", "verify {url} --threads 0", "--threads must be from 1 to 256"),
    opt("verify-threads-257", "verify {url} --threads 257", "--threads must be from 1 to 256"),
    opt("verify-threads-word", "verify {url} --threads many", "--threads", "'many'"),
    opt("verify-snapshot-and-all", "verify {url} --snapshot first --all", "--all", "--snapshot"),
    # fsck
    opt("fsck-threads-zero", "fsck {url} --threads 0", "--threads must be from 1 to 256"),
    opt("fsck-threads-257", "fsck {url} --threads 257", "--threads must be from 1 to 256"),
    opt("fsck-threads-word", "fsck {url} --threads x", "--threads", "'x'"),
    opt("fsck-option", "fsck {url} --all", "--all"),
    opt("fsck-repair-threads", "fsck {url} --repair --threads 0", "--threads must be from 1 to 256"),
    # snapshot
    opt("snapshot-no-verb", "snapshot", "VERB"),
    opt("snapshot-bad-verb", "snapshot rename {url}", "'rename'"),
    opt("snapshot-create-slash", "snapshot create {url} --name a/b", "bad snapshot name 'a/b'"),
    opt("snapshot-create-dot", "snapshot create {url} --name .hidden", "bad snapshot name '.hidden'"),
    opt("snapshot-create-empty", "snapshot create {url} --name ''", "bad snapshot name ''"),
    opt("snapshot-create-long", "snapshot create {url} --name " + "a" * 65, "bad snapshot name", "1 to 64"),
    opt("snapshot-create-latest", "snapshot create {url} --name Latest", "'Latest' is reserved"),
    opt("snapshot-create-digits", "snapshot create {url} --name 12", "bad snapshot name '12'", "snapshot's number"),
    opt("snapshot-create-live", "snapshot create {url} --name live", "'live' is reserved"),
    opt("snapshot-create-time-word", "snapshot create {url} --time yesterday", "--time", "'yesterday'"),
    opt("snapshot-create-time-range", "snapshot create {url} --time 2026-13-40T00:00:00Z", "--time"),
    opt("snapshot-create-freeze-url", "snapshot create {url} --freeze {dir}", "--freeze needs the volume mounted"),
    opt("snapshot-create-not-a-mount", "snapshot create {dir}", "neither a volume URL nor a bucketdisk mount"),
    opt("snapshot-list-nothing", "snapshot list", "URL|MOUNTPOINT"),
    opt("snapshot-list-option", "snapshot list {url} --threads 3", "--threads"),
    opt("snapshot-delete-no-name", "snapshot delete {url}", "NAME"),
    opt("snapshot-diff-one-name", "snapshot diff {url} first", "B"),
    # restore
    opt("restore-no-snapshot", "restore {url}", "--snapshot"),
    opt("restore-a-path", "restore {dir} --snapshot first", "restore works on a volume's URL"),
    # prune
    opt("prune-keep-last-negative", "prune {url} --keep-last -2", "--keep-last", "'-2'"),
    opt("prune-keep-last-word", "prune {url} --keep-last x", "--keep-last", "'x'"),
    opt("prune-keep-last-missing", "prune {url} --keep-last", "--keep-last"),
    opt("prune-keep-hourly-word", "prune {url} --keep-hourly x", "--keep-hourly", "'x'"),
    opt("prune-keep-daily-negative", "prune {url} --keep-daily -5", "--keep-daily", "'-5'"),
    opt("prune-keep-weekly-fraction", "prune {url} --keep-weekly 1.5", "--keep-weekly", "'1.5'"),
    opt("prune-keep-monthly-empty", "prune {url} --keep-monthly ''", "--keep-monthly", "''"),
    opt("prune-keep-yearly-word", "prune {url} --keep-yearly all", "--keep-yearly", "'all'"),
    opt("prune-keep-within-word", "prune {url} --keep-within x", "'x' is not a span"),
    opt("prune-keep-within-number", "prune {url} --keep-within 5", "'5' is not a span"),
    opt("prune-keep-within-negative", "prune {url} --keep-within -1d", "'-1d' is not a span"),
    opt("prune-keep-within-long", "prune {url} --keep-within 99999999y", "longer than 1000 years"),
    opt("prune-not-a-mount", "prune {dir}", "neither a volume URL nor a bucketdisk mount"),
]

LOOKUPS = [  # an existing volume, snapshot names, secrets
    looked_up("create-over-a-volume", "create {url} --size 1M", "already holds a volume", "--force"),
    looked_up("mount-cache-size-one-block", "mount {url} {mp} --cache-size 64K",
                    "--cache-size 64K cannot hold 2 blocks", "--cache-size 128K"),
    looked_up("mount-snapshot-unknown", "mount {url} {mp} --snapshot nosuch", "no snapshot named 'nosuch'"),
    looked_up("mount-snapshot-number", "mount {url} {mp} --snapshot 99", "no snapshot named '99'"),
    looked_up("mount-passphrase-plain", "mount {url} {mp} --passphrase-file {pp}", "not encrypted"),
    looked_up("mount-no-passphrase", "mount {enc} {mp}", "is encrypted and no passphrase was given"),
    looked_up("mount-wrong-passphrase", "mount {enc} {mp} --passphrase-file {wrong_pp}", "wrong passphrase"),
    looked_up("recover-cache-size-one-block", "recover {url} --cache-dir {dir} --cache-size 64K",
              "cannot hold 2 blocks"),
    looked_up("passwd-plain", "passwd {url}", "is not encrypted"),
    looked_up("passwd-wrong-passphrase", "passwd {enc} --passphrase-file {wrong_pp} --new-key-file {key}",
              "wrong passphrase"),
    looked_up("unlock-passphrase-plain", "unlock {url} --passphrase-file {pp}", "not encrypted"),
    looked_up("info-no-passphrase", "info {enc}", "is encrypted and no passphrase was given"),
    looked_up("gc-dry-run-wrong-passphrase", "gc {enc} --dry-run --passphrase-file {wrong_pp}", "wrong passphrase"),
    looked_up("verify-snapshot-unknown", "verify {url} --snapshot nosuch", "no snapshot named 'nosuch'"),
    looked_up("verify-snapshot-number", "verify {url} --snapshot 99", "no snapshot named '99'"),
    looked_up("fsck-no-passphrase", "fsck {enc}", "is encrypted and no passphrase was given"),
    looked_up("snapshot-create-taken", "snapshot create {url} --name first",
              "a snapshot named 'first' exists already"),
    looked_up("snapshot-delete-unknown", "snapshot delete {url} nosuch", "no snapshot named 'nosuch'"),
    looked_up("snapshot-delete-number", "snapshot delete {url} 99", "no snapshot named '99'"),
    looked_up("snapshot-delete-live", "snapshot delete {url} live", "no snapshot named 'live'"),
    looked_up("snapshot-diff-unknown-a", "snapshot diff {url} nosuch live", "no snapshot named 'nosuch'"),
    looked_up("snapshot-diff-unknown-b", "snapshot diff {url} first nosuch", "no snapshot named 'nosuch'"),
    looked_up("snapshot-diff-number", "snapshot diff {url} 99 first", "no snapshot named '99'"),
    looked_up("restore-unknown", "restore {url} --snapshot nosuch", "no snapshot named 'nosuch'"),
    looked_up("restore-number", "restore {url} --snapshot 99", "no snapshot named '99'"),
    looked_up("restore-live", "restore {url} --snapshot live", "no snapshot named 'live'"),
    looked_up("restore-empty", "restore {url} --snapshot ''", "no snapshot named ''"),
]

STORE_OPTIONS = [
    s3_opt("create-addressing", "create {new} --size 1M --addressing bogus", "--addressing", "'bogus'"),
    s3_opt("create-sse", "create {new} --size 1M --sse bogus", "--sse", "'bogus'"),
    s3_opt("create-endpoint-path", "create {new} --size 1M --endpoint http://127.0.0.1:1/path", "--endpoint",
           "has a path"),
    s3_opt("create-connect-timeout-negative", "create {new} --size 1M --connect-timeout -1", "--connect-timeout"),
    s3_opt("create-connect-timeout-nan", "create {new} --size 1M --connect-timeout nan", "--connect-timeout", "nan"),
    s3_opt("create-read-timeout-word", "create {new} --size 1M --read-timeout soon", "--read-timeout", "'soon'"),
    s3_opt("create-read-timeout-inf", "create {new} --size 1M --read-timeout inf", "--read-timeout", "inf"),
    s3_opt("create-retry-time-zero", "create {new} --size 1M --retry-time 0", "--retry-time"),
    s3_opt("mount-sse", "mount {url} {mp} --sse aes256", "--sse", "'aes256'"),
    s3_opt("mount-addressing", "mount {url} {mp} --addressing sideways", "--addressing", "'sideways'"),
    s3_opt("mount-endpoint-path", "mount {url} {mp} --endpoint http://127.0.0.1:1/p", "has a path"),
    s3_opt("mount-retry-time-negative", "mount {url} {mp} --retry-time -5", "--retry-time"),
    s3_opt("mount-read-timeout-word", "mount {url} {mp} --read-timeout word", "--read-timeout", "'word'"),
    s3_opt("recover-connect-timeout", "recover {url} --cache-dir {dir} --connect-timeout 0", "--connect-timeout"),
    s3_opt("unlock-connect-timeout", "unlock {url} --connect-timeout -1", "--connect-timeout"),
    s3_opt("info-retry-time-nan", "info {url} --retry-time nan", "--retry-time", "nan"),
    s3_opt("info-sse", "info {url} --sse aws:kms:", "--sse"),
    s3_opt("gc-read-timeout", "gc {url} --read-timeout -1", "--read-timeout"),
    s3_opt("fsck-connect-timeout", "fsck {url} --connect-timeout -1", "--connect-timeout"),
]

# The store (s3): a missing bucket, one this identity may only read, one it may not touch at all.
STORE_COMMANDS = [  # (id, argv, writes: whether a read-only identity is refused too)
    ("create", "create {new} --size 1M", True),
    ("mount", "mount {url} {mp}", True),
    ("info", "info {url}", False),
    ("gc", "gc {url}", True),
    ("verify", "verify {url}", False),
    ("fsck", "fsck {url}", False),
    ("fsck-repair", "fsck {url} --repair", True),
    ("snapshot-create", "snapshot create {url}", True),
    ("snapshot-delete", "snapshot delete {url} first", True),
    ("restore", "restore {url} --snapshot first", True),
    ("prune", "prune {url} --keep-last 1", True),
    ("unlock", "unlock {crashed}", True),  # its lease is a dead process's: unlock clears it, if it may write
    ("passwd", "passwd {enc} --passphrase-file {pp} --new-key-file {key}", True),
    ("recover", "recover {crashed} --cache-dir {crashed_cache}", True),
]
STORE = (
    [row(f"{i}-missing-bucket", re.sub(r"\{(url|new|crashed|enc)\}", "{nobucket}", a), "no such bucket", stores=S3)
     for i, a, _ in STORE_COMMANDS]
    + [row(f"{i}-read-only-bucket", a, "access denied", stores=S3, who="reader") for i, a, writes in STORE_COMMANDS
       if writes]
    + [row(f"{i}-forbidden-bucket", a, "access denied", stores=S3, who="stranger") for i, a, _ in STORE_COMMANDS]
)

# The volume: each damage, then each command on it.  (id, key, how)
DAMAGE = [
    ("record-version", "record", lambda data: _edited(data, format_version=99)),
    ("record-truncated", "record", lambda data: data[: len(data) // 2]),
    ("record-flipped", "record", lambda data: _flipped(data, 8)),
    ("record-not-json", "record", lambda data: b"{not json"),
    ("record-field-type", "record", lambda data: _edited(data, block_size="64K")),
    ("root-truncated", "root", lambda data: data[: len(data) // 2]),
    ("root-flipped", "root", lambda data: _flipped(data, 1)),
    ("page-truncated", "page", lambda data: data[: len(data) // 2]),
    ("page-flipped", "page", lambda data: _flipped(data, 1)),
]
ON_DAMAGE = [  # (id, argv, whether only a damaged record stops it)
    ("mount", "mount {url} {mp}", False),
    ("mount-read-only", "mount {url} {mp} --read-only", False),
    ("info", "info {url}", False),
    ("gc", "gc {url}", False),
    ("verify", "verify {url}", False),
    ("fsck", "fsck {url}", False),
    ("snapshot-create", "snapshot create {url}", False),
    ("snapshot-list", "snapshot list {url}", False),
    ("restore", "restore {url} --snapshot first", False),
    ("prune", "prune {url} --keep-last 1", False),
    ("unlock", "unlock {url}", True),  # it reads no map: a damaged root or page is none of its business
]
# Every command reads the record through the same code on both stores: on s3 these few are enough.
RECORD_ON_S3 = ("mount", "info", "fsck", "unlock")


def damage_rows(kind: str, what: str) -> list:
    """The rows for one damage: every command names the damaged object; verify
    and fsck report it (fsck: exit 8 for a record it cannot read at all)."""
    rows = []
    for command, argv, record_only in ON_DAMAGE:
        if record_only and what != "record":
            continue
        named = "{" + what + "}"
        if kind == "record-version":
            words = (named, "format version 99", "upgrade bucketdisk")
        elif what == "record":
            words = (named, "not valid", '"block_size"') if kind == "record-field-type" else (named, "not valid")
        else:
            words = (named, "damaged")
        report = command in ("verify", "fsck") and (what != "record" or command == "fsck") \
            and kind != "record-version"
        stores = BOTH if what != "record" or command in RECORD_ON_S3 else FILE
        rows.append(row(f"{kind}-{command}", argv, *words, stores=stores, report=report))
    return rows


def _edited(data: bytes, **fields) -> bytes:
    return json.dumps({**json.loads(data), **fields}).encode()


def _flipped(data: bytes, count: int) -> bytes:
    bad = bytearray(data)
    for i in range(len(bad) // 2, len(bad) // 2 + count):
        bad[i] ^= 0xFF
    return bytes(bad)


# Mountpoints (missing, a regular file, busy: a tmpfs) and cache dirs (not writable: a read-only
# tmpfs, as root ignores permissions; another volume's; a regular file).  unmount and stats reach
# no store: one is enough.
PLACES = [
    row("mount-mountpoint-missing", "mount {url} {missing}", "mountpoint does not exist: {missing}"),
    row("mount-mountpoint-file", "mount {url} {file}", "mountpoint is not a directory: {file}"),
    row("mount-mountpoint-busy", "mount {url} {busy}", "{busy} is already mounted (tmpfs)"),
    row("unmount-missing", "unmount {missing}", "{missing} is not mounted", stores=FILE),
    row("unmount-file", "unmount {file}", "{file} is not mounted", stores=FILE),
    row("unmount-busy", "unmount {busy}", "{busy}", "tmpfs", stores=FILE),
    row("stats-missing", "stats {missing}", "{missing} is not a bucketdisk mount", stores=FILE),
    row("stats-file", "stats {file}", "{file} is not a bucketdisk mount", stores=FILE),
    row("stats-busy", "stats {busy}", "{busy} is not a bucketdisk mount", stores=FILE),
    row("mount-cache-dir-read-only", "mount {url} {mp} --cache-dir {ro}", "{ro}", "not writable"),
    row("mount-cache-dir-another-volume", "mount {url} {mp} --cache-dir {crashed_cache}",
        "belongs to another volume"),
    row("mount-cache-dir-file", "mount {url} {mp} --cache-dir {file}", "not a directory: {file}"),
    row("recover-cache-dir-read-only", "recover {url} --cache-dir {ro}", "{ro} is not a cache dir"),
    row("recover-cache-dir-empty", "recover {url} --cache-dir {dir}", "{dir} is not a cache dir",
        "nothing to recover"),
    row("recover-cache-dir-another-volume", "recover {url} --cache-dir {crashed_cache}",
        "belongs to another volume"),
    row("recover-cache-dir-file", "recover {url} --cache-dir {file}", "not a directory: {file}"),
    row("recover-cache-dir-missing", "recover {url} --cache-dir {missing}", "no cache dir at {missing}"),
]


# --------------------------------------------------------------------------
# the walks
# --------------------------------------------------------------------------

@pytest.fixture(scope="module", params=BOTH)
def world(request, cli, tmp_path_factory):
    seaweed = request.getfixturevalue("seaweed") if request.param == "s3" else None
    made, janitor = build_world(request.param, tmp_path_factory.mktemp(f"bad-input-{request.param}"), seaweed)
    yield made
    janitor.run_all()


def walked(world, rows) -> None:
    started = time.monotonic()
    problems = world.walk(rows)
    ran = sum(world.kind in r.stores for r in rows)
    print(f"{ran} rows on {world.kind} in {time.monotonic() - started:.1f} s")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def test_options_and_values(world):
    walked(world, OPTIONS + LOOKUPS + STORE_OPTIONS)


def test_mountpoints_and_cache_dirs(world):
    walked(world, PLACES)


@pytest.mark.parametrize("world", ["s3"], indirect=True)
def test_missing_read_only_and_forbidden_buckets(world):
    walked(world, STORE)


def test_damaged_volumes(world):
    """Each damage in turn, on the volume itself, put right after its rows."""
    place, problems, started = world.volume.place, [], time.monotonic()
    whole = world.state()
    for kind, what, how in DAMAGE:
        key = world.keys[what]
        good = place.read(key)
        place.write(key, how(good))
        try:
            problems += world.walk(damage_rows(kind, what))
        finally:
            place.write(key, good)
    print(f"damaged volumes on {world.kind} in {time.monotonic() - started:.1f} s")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)
    assert world.state() == whole
