"""One function per command (mount, unmount, verify and history have
modules of their own).  Each validates, calls the engine, prints."""
import argparse
import json
import math
import os

from bucketdisk.errors import StoreError, UserError
from bucketdisk.fs.mountpoints import FSTYPE, fstype_at

from .secrets import key_source, new_secret
from .units import format_size

# The storage layers (requests, zstd, ...) are imported by the commands that
# use them: `unmount` and `stats` then start in a third of the time, and
# scripts run them after every job.


def s3_options(args: argparse.Namespace, threads: int = 8) -> "S3Options":
    from bucketdisk.store import S3Options

    for name in ("connect_timeout", "read_timeout", "retry_time"):
        seconds = getattr(args, name)
        if not 0 < seconds < math.inf:  # (nan too)
            raise UserError(f"--{name.replace('_', '-')} must be positive and finite (seconds), not {seconds:g}")
    return S3Options(
        endpoint=args.endpoint, addressing=args.addressing, region=args.region, profile=args.profile,
        ec2_role=args.ec2_role,
        credentials_file=args.credentials_file, ca_bundle=args.ca_bundle, insecure=args.insecure,
        storage_class=args.storage_class, sse=args.sse, connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout, retry_time=args.retry_time, pool_size=2 * threads + 8,
        bwlimit=args.bwlimit, bwlimit_down=args.bwlimit_down,
    )


# Options a background mount passes on to its daemon: never secrets, only where to find them.
STORE_FLAGS = ("endpoint", "addressing", "region", "profile", "ec2_role", "credentials_file", "ca_bundle",
               "storage_class", "sse", "connect_timeout", "read_timeout", "retry_time", "bwlimit", "bwlimit_down")


def store_argv(args: argparse.Namespace) -> list[str]:
    argv = []
    for name in STORE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv + (["--insecure"] if args.insecure else [])


def create(args: argparse.Namespace) -> int:
    from bucketdisk.store import open_store
    from bucketdisk.volume.create import create_volume
    from bucketdisk.volume.record import check_map_fits, validate_geometry

    # before the store is opened: a refused geometry costs no request
    validate_geometry(args.size, args.block_size)
    check_map_fits(args.size, args.block_size)
    if not args.encrypt and (args.passphrase_file or args.key_file):
        raise UserError("--passphrase-file and --key-file of create go with --encrypt")
    from .progress import Bars

    store = open_store(args.url, create=True, s3=s3_options(args))
    try:
        compression, level = args.compress
        secret = (lambda: new_secret(args.passphrase_file, args.key_file, "create")) if args.encrypt else None
        with Bars() as bars:  # (only --force has a long part: deleting the old volume)
            record = create_volume(store, args.size, args.block_size, force=args.force, compression=compression,
                                   level=level, secret=secret, progress=bars)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"url": args.url, "uuid": record.uuid, "size": record.size, "block_size": record.block_size,
                          "block_count": record.block_count, "compression": record.compression,
                          "compression_level": record.compression_level, "encrypted": record.encrypted,
                          "replaced": record.replaced}, indent=2))
        return 0
    stored = "stored as they are" if record.compression == "none" else f"zstd level {record.compression_level}"
    sealed = ", encrypted (AES-256-GCM)" if record.encrypted else ""
    print(f"created {args.url}: {format_size(record.size)} in {record.block_count} blocks "
          f"of {format_size(record.block_size)}, {stored}{sealed} (uuid {record.uuid})")
    return 0


def passwd(args: argparse.Namespace) -> int:
    from bucketdisk.store import open_store
    from bucketdisk.volume.passwd import change_secret

    if args.new_passphrase_file and args.new_key_file:
        raise UserError("give --new-passphrase-file or --new-key-file, not both")
    store = open_store(args.url, s3=s3_options(args))
    try:
        record = change_secret(store, key_source(args, args.url),
                               lambda: new_secret(args.new_passphrase_file, args.new_key_file, "passwd"))
    finally:
        store.close()
    kind = "a key file" if record.encryption["kdf"]["name"] == "key-file" else "a passphrase"
    print(f"{args.url} now opens with {kind}; its data key and blocks are unchanged")
    return 0


# -- info and stats -----------------------------------------------------------------


def info(args: argparse.Namespace) -> int:
    from bucketdisk.store import open_store
    from bucketdisk.volume.create import missing_volume
    from bucketdisk.volume.lock import current_holder
    from bucketdisk.volume.mapstore import MapStore
    from bucketdisk.volume.history import mapped_blocks
    from bucketdisk.volume.record import check_record_fits, open_record
    from bucketdisk.volume.snapshots import SnapshotRecords

    store = open_store(args.url, s3=s3_options(args))
    record = open_record(store, key_source(args, args.url))
    if record is None:
        raise missing_volume(store)
    check_record_fits(record)  # a volume no mount here could serve is refused alike
    maps = MapStore.of(store, record)
    # encrypted: the store shows an older map than this machine saw (rollback.py); said before
    # the map is read, which a rolled-back store may have lost the pages of
    rollback = maps.rollback(maps.listing()) if record.encrypted else None
    try:
        mapped, unmerged, _ = maps.count()  # never holds the whole map
    except StoreError as e:
        if rollback:
            raise UserError(f"{rollback}; and its map cannot be read ({e})") from None
        raise
    snapshots = SnapshotRecords.of(store, record).list()
    kept = mapped_blocks(maps, snapshots)
    objects, stored, aliases, alias_bytes, unknown = _survey(store)
    temp_files, abandoned = store.scratch()
    holder = current_holder(store)
    facts = {
        "url": args.url, "uuid": record.uuid, "format_version": record.format_version,
        "size": record.size, "block_size": record.block_size, "block_count": record.block_count,
        "compression": record.compression, "compression_level": record.compression_level,
        **({"encryption": _encryption_facts(record)} if record.encrypted else {}),
        "hash": "blake3-256 keyed" if record.encrypted else record.hash, "created": record.created,
        "mapped_blocks": mapped, "objects": objects, "stored_bytes": stored,
        # second copies kept while a late delete may land (FORMAT.md, "Late deletes")
        "aliases": aliases, "alias_bytes": alias_bytes,
        "unmerged_pages": unmerged,  # fsynced pages not yet in their blocks
        **({"rollback": rollback} if record.encrypted else {}),
        "snapshots": len(snapshots),
        "live_mapped_bytes": mapped * record.block_size,     # what the disk holds, uncompressed
        "snapshots_mapped_bytes": kept * record.block_size,  # the same, summed over every snapshot
        # everything the live disk and the snapshots map, over what is stored for it
        "sharing_ratio": round((mapped + kept) * record.block_size / stored, 2) if stored else None,
        "writer": holder.describe() if holder and holder.state() in ("live-here", "held") else None,
        "unknown_keys": unknown,  # named as nothing of ours: left alone
        "temp_files": temp_files,  # file://: uploads under way, or left by a killed writer...
        "abandoned_temp_files": abandoned,  # ...which gc and the next writable mount remove
    }
    _print_facts(facts, args.json)
    return 0


def _encryption_facts(record) -> str:
    kdf = record.encryption["kdf"]
    opens = ("key file" if kdf["name"] == "key-file" else
             f"passphrase (argon2id, {kdf['memory_kib'] >> 10} MiB, {kdf['passes']} passes, {kdf['lanes']} lanes)")
    return f"{record.encryption['cipher']}, opened by {opens}"


def _survey(store) -> tuple[int, int, int, int, list[str]]:
    """(block objects, their bytes, aliases of blocks and pages, their bytes,
    keys the layout does not name) of the volume in `store`, from one
    listing of everything under its place."""
    from bucketdisk.volume import layout

    objects = stored = aliases = alias_bytes = 0
    unknown = []
    for key, size in store.list_sizes():
        if layout.hash_of_block_key(key) is not None:
            objects, stored = objects + 1, stored + size
        elif layout.alias_of(key) is not None:
            aliases, alias_bytes = aliases + 1, alias_bytes + size
        elif key and not layout.is_volume_key(key):  # "": an S3 console's marker of the place itself
            unknown.append(key)
    return objects, stored, aliases, alias_bytes, unknown


def gc(args: argparse.Namespace) -> int:
    from bucketdisk.store import open_store
    from bucketdisk.volume.record import check_record_fits, read_record
    from bucketdisk.volume.sweep import collect
    from bucketdisk.volume.volume import Volume

    from .history import _ask, _mounted
    from .progress import Bars

    control = _mounted(args)
    if control is not None:  # the mount's daemon sweeps, beside its writes
        _print_facts({"url": args.url, **_ask(control, {"op": "gc", "dry_run": args.dry_run})["gc"]}, args.json)
        return 0
    store = open_store(args.url, s3=s3_options(args))
    record = read_record(store)
    if record is not None:  # (no record: Volume says so)
        check_record_fits(record)  # before Volume allocates the map
    # A dry run reads only; a real one takes the lease (refused while mounted).
    volume = Volume(store, writable=not args.dry_run, keys=key_source(args, args.url))
    try:
        with Bars() as bars:
            facts = {"url": args.url, **collect(volume, delete=not args.dry_run, progress=bars)}
    finally:
        volume.close()
    _print_facts(facts, args.json)
    return 0


def _print_facts(facts: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(facts, indent=2))
    else:
        for name, value in facts.items():
            print(f"{name}: {'-' if value is None else value}")  # (JSON keeps null)


def read_stats(path: str) -> dict:
    from bucketdisk.fs.metrics import parse_stats

    with open(os.path.join(path, "stats")) as f:
        return parse_stats(f.read())


def stats(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.mountpoint)
    if fstype_at(path) != FSTYPE:
        raise UserError(f"{path} is not a bucketdisk mount")
    if args.prometheus:
        from bucketdisk.fs.metrics import prometheus_text

        print(prometheus_text(read_stats(path)), end="")
    else:
        _print_facts(read_stats(path), args.json)
    return 0
