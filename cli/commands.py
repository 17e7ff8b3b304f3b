"""One function per command.  Each validates, calls the engine, prints."""
import argparse
import errno
import json
import os
import subprocess
import sys
import time

from bucketdisk.errors import UserError
from bucketdisk.fs.mountpoints import FSTYPE, fstype_at

from .units import format_size, human_size

# The storage layers (requests, zstd, ...) are imported by the commands that
# use them: `unmount` and `stats` then start in a third of the time, and
# scripts run them after every job.

UNMOUNT_WAIT_SECONDS = 3600


def s3_options(args: argparse.Namespace, threads: int = 8) -> "S3Options":
    from bucketdisk.store import S3Options

    for name in ("connect_timeout", "read_timeout", "retry_time"):
        if getattr(args, name) <= 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive")
    return S3Options(
        endpoint=args.endpoint, addressing=args.addressing, region=args.region, profile=args.profile,
        credentials_file=args.credentials_file, ca_bundle=args.ca_bundle, insecure=args.insecure,
        storage_class=args.storage_class, sse=args.sse, connect_timeout=args.connect_timeout,
        read_timeout=args.read_timeout, retry_time=args.retry_time, pool_size=2 * threads + 8,
    )


# Options a background mount passes on to its daemon: never secrets, only where to find them.
STORE_FLAGS = ("endpoint", "addressing", "region", "profile", "credentials_file", "ca_bundle",
               "storage_class", "sse", "connect_timeout", "read_timeout", "retry_time")


def _store_argv(args: argparse.Namespace) -> list[str]:
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
    store = open_store(args.url, create=True, s3=s3_options(args))
    try:
        compression, level = args.compress
        record = create_volume(store, args.size, args.block_size, force=args.force, compression=compression,
                               level=level)
    finally:
        store.close()
    stored = "stored as they are" if record.compression == "none" else f"zstd level {record.compression_level}"
    print(f"created {args.url}: {format_size(record.size)} in {record.block_count} blocks "
          f"of {format_size(record.block_size)}, {stored} (uuid {record.uuid})")
    return 0


# -- mount ------------------------------------------------------------------------


def _check_mountpoint(path: str) -> None:
    kind = fstype_at(path)
    if kind == FSTYPE:
        try:
            os.stat(path)
        except OSError as e:
            if e.errno in (errno.ENOTCONN, errno.ECONNABORTED):
                raise UserError(f"{path} holds a dead bucketdisk mount; run 'bucketdisk unmount {path}'") from None
        raise UserError(f"{path} is already a bucketdisk mount")
    if kind is not None:
        raise UserError(f"{path} is already mounted ({kind})")
    if not os.path.exists(path):
        raise UserError(f"mountpoint does not exist: {path}")
    if not os.path.isdir(path):
        raise UserError(f"mountpoint is not a directory: {path}")


def mount(args: argparse.Namespace) -> int:
    if args.threads < 1 or args.threads > 256:
        raise UserError("--threads must be from 1 to 256")
    if args.readahead < 0:
        raise UserError("--readahead cannot be negative")
    from .history import keep_options

    keep = keep_options(args)
    if keep and not args.snapshot_every:
        raise UserError("--keep-* options of a mount go with --snapshot-every")
    if args.snapshot_every and (args.read_only or args.snapshot is not None):
        raise UserError("--snapshot-every needs a writable mount")
    if args.snapshot is not None:
        from bucketdisk.volume.snapshots import check_name
        if args.force:
            raise UserError("--force takes a writable volume; a snapshot mount is read-only and takes no lease")
        if args.snapshot not in ("Latest",) and not args.snapshot.isdigit():
            check_name(args.snapshot)
    from bucketdisk.store import parse_url

    scheme, _ = parse_url(args.url)  # refuse a bad URL before forking (the daemon opens the store)
    s3_options(args, args.threads)  # refuse bad store options before forking
    if scheme == "s3" and not args.endpoint and os.environ.get("AWS_ENDPOINT_URL"):
        from bucketdisk.store.s3args import check_endpoint

        check_endpoint(os.environ["AWS_ENDPOINT_URL"], "AWS_ENDPOINT_URL")
    if args.insecure and args.url.startswith("s3:"):
        print("bucketdisk: warning: TLS certificate checks are off (--insecure)", file=sys.stderr)
    args.mountpoint = os.path.abspath(args.mountpoint)
    # The daemon runs from /, so files named relative to here must travel absolute.
    for name in ("credentials_file", "ca_bundle"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    _check_mountpoint(args.mountpoint)
    if args.foreground:
        return _serve(args)
    return _spawn_daemon(args)


def _serve(args: argparse.Namespace) -> int:
    from bucketdisk.fs.mount import MountOptions, serve

    from .history import keep_options

    ready = args.ready_fd

    def on_ready() -> None:
        if ready is not None:
            os.write(ready, b"ok\n")
            os.close(ready)

    options = MountOptions(cache_size=args.cache_size, threads=args.threads, readahead=args.readahead,
                           read_only=args.read_only or args.snapshot is not None, force=args.force,
                           snapshot=args.snapshot, snapshot_every=args.snapshot_every,
                           compress_level=args.compress_level,
                           keep=keep_options(args), s3=s3_options(args, args.threads))
    try:
        serve(args.url, args.mountpoint, options, on_ready)
    except BaseException as e:
        if ready is not None:
            try:  # tell the waiting parent why, in one line
                os.write(ready, f"{_one_line(e)}\n".encode())
            except OSError:
                pass
        raise
    return 0


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f": {e.filename}" if e.filename else "")
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _default_log(mountpoint: str) -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    name = mountpoint.strip("/").replace("/", "_") or "root"
    return os.path.join(state, "bucketdisk", f"{name}.log")


def _spawn_daemon(args: argparse.Namespace) -> int:
    from .history import keep_options

    log_path = os.path.abspath(args.log or _default_log(args.mountpoint))
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "bucketdisk.cli.main"] + (["--debug"] if args.debug else [])
    command += ["mount", args.url, args.mountpoint, "--foreground", "--ready-fd", str(write_end),
                "--cache-size", str(args.cache_size), "--threads", str(args.threads),
                "--readahead", str(args.readahead)]
    command += _store_argv(args)
    command += ["--read-only"] if args.read_only else []
    command += [f"--snapshot={args.snapshot}"] if args.snapshot is not None else []  # a name may start with -
    command += ["--snapshot-every", f"{int(args.snapshot_every)}s"] if args.snapshot_every else []
    for name, value in keep_options(args).items():
        command += [f"--keep-{name}={value}"]
    command += ["--force"] if args.force else []
    command += ["--compress-level", str(args.compress_level)] if args.compress_level is not None else []
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                 pass_fds=(write_end,), start_new_session=True, cwd="/")
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.readline().decode(errors="replace").strip()
    if answer == "ok":
        return 0
    child.wait()
    raise UserError(answer or f"the mount daemon exited with status {child.returncode}; see {log_path}")


# -- unmount ------------------------------------------------------------------------


DEAD = (errno.ENOTCONN, errno.ECONNABORTED)  # what a FUSE mount answers once its daemon is gone


class DaemonDied(Exception):
    """The mount's daemon died while unmount was talking to it."""


def unmount(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.mountpoint)
    kind = fstype_at(path)
    if kind is None:
        raise UserError(f"{path} is not mounted")
    if kind != FSTYPE:
        raise UserError(f"{path} is not a bucketdisk mount (it is {kind})")
    try:
        stats = _read_stats(path)
    except OSError as e:
        if e.errno not in DEAD:
            raise
        return _clean_dead_mount(path)
    if stats.get("fenced"):
        # Nothing it holds can be stored any more: flushing would fail forever.
        _fusermount(path, lazy=False)
        _wait_for_exit(stats.get("pid"))
        raise UserError(_fenced_words(path, stats))
    try:
        _flush(path)
    except DaemonDied:
        return _clean_dead_mount(path, stats)
    _fusermount(path, lazy=False)
    _wait_for_exit(stats.get("pid"))
    return 0


def _flush(path: str) -> None:
    """fsync through the mount, so failures are reported while data is safe;
    raises DaemonDied if the daemon is gone."""
    try:
        fd = os.open(os.path.join(path, "file"), os.O_RDONLY)
    except OSError as e:
        if e.errno in DEAD:
            raise DaemonDied() from None
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in DEAD:
            raise DaemonDied() from None
        raise UserError(_unstored_words(path, e)) from None
    finally:
        try:
            os.close(fd)
        except OSError:  # the daemon died: close cannot reach it either
            pass


def _unstored_words(path: str, failure: OSError) -> str:
    """Why unmount leaves a live mount up, from its stats: what it could
    not store (if anything), why, and what happens to it now."""
    try:
        stats = _read_stats(path)
    except OSError as e:
        if e.errno in DEAD:
            raise DaemonDied() from None
        raise
    reason = stats.get("store_error") or failure.strerror
    again = f"run 'bucketdisk unmount {path}' again"
    if not stats.get("unsaved_blocks"):
        return (f"{path} stays mounted: every write is in the store, but the store did not confirm the last "
                f"step ({reason}); {again} when it answers")
    held = f"{_amount(stats)} not stored yet stay in memory"
    if stats.get("store_full"):
        return (f"{path} stays mounted: {reason}; {held} and are retried until there is space (once they fill "
                f"the cache, reads and writes that need room in it wait up to {stats.get('retry_time_seconds')} s, "
                f"the --retry-time, and then fail); {again} once there is space")
    return (f"{path} stays mounted: could not store all data ({reason}); {held} and are retried until the "
            f"store takes them; {again} when it answers")


def _amount(stats: dict) -> str:
    """How much a mount's stats say it holds unsaved, in words."""
    blocks = stats.get("unsaved_blocks", 0)
    size = human_size(stats.get("unsaved_bytes", 0))
    return f"up to {size} of writes ({blocks} block{'s' if blocks != 1 else ''})"


def _fenced_words(path: str, stats: dict) -> str:
    words = (f"{path} had lost its volume to another writable mount (see its log); it is unmounted: its "
             "fsynced writes are in the volume, later writes may not be")
    if stats.get("unsaved_blocks"):
        words += f", and {_amount(stats)} it had not stored yet are lost"
    return words


def _clean_dead_mount(path: str, before: dict | None = None) -> int:
    """Unmount a mount whose daemon is gone (lazily: nothing answers there)
    and say what that means.  `before`: its stats, when it died during this
    unmount (then this is a failure: the unmount could not store its data)."""
    if before is None:
        facts = f"{path}: its mount daemon had died (killed or crashed)"
    else:
        facts = f"{path}: its mount daemon (pid {before.get('pid')}) died during the unmount"
    facts += (", so nothing is left in memory to store: what it acknowledged with fsync is safe in the store, "
              "writes not fsynced may be lost")
    if before is not None and before.get("unsaved_blocks"):
        facts += f" (when the unmount began it held {_amount(before)} not stored yet)"
    failed = _fusermount_failure(path, lazy=True)
    if failed:
        raise UserError(f"{facts}; unmounting the stale mountpoint failed ({failed}): run "
                        f"'fusermount3 -u -z {path}' as the user who mounted it")
    if before is not None:
        raise UserError(f"{facts}; the stale mountpoint is unmounted")
    print(f"{facts}; the stale mountpoint is unmounted")
    return 0


def _fusermount(path: str, *, lazy: bool) -> None:
    failed = _fusermount_failure(path, lazy=lazy)
    if failed:
        raise UserError(f"cannot unmount {path}: {failed}")


def _fusermount_failure(path: str, *, lazy: bool) -> str | None:
    """Unmount `path` with fusermount3; None when done, else why not (one line)."""
    command = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [path]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["fusermount3 failed"])[-1]


def _wait_for_exit(pid: int | None) -> None:
    if not pid:
        return
    deadline = time.monotonic() + UNMOUNT_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().split(b")")[-1].split()[0] == b"Z":
                    return  # exited, waiting for its parent to reap it
        except FileNotFoundError:
            return  # gone between the two looks
        time.sleep(0.05)
    raise UserError(f"the mount daemon (pid {pid}) is still writing after {UNMOUNT_WAIT_SECONDS} s")


# -- info and stats -----------------------------------------------------------------


def info(args: argparse.Namespace) -> int:
    from bucketdisk.store import open_store
    from bucketdisk.volume.create import missing_volume
    from bucketdisk.volume.lock import current_holder
    from bucketdisk.volume.mapstore import MapStore
    from bucketdisk.volume.history import mapped_blocks
    from bucketdisk.volume.record import check_record_fits, read_record
    from bucketdisk.volume.snapshots import SnapshotRecords

    store = open_store(args.url, s3=s3_options(args))
    record = read_record(store)
    if record is None:
        raise missing_volume(store)
    check_record_fits(record)  # a volume no mount here could serve is refused alike
    maps = MapStore.of(store, record)
    mapped, unmerged, _ = maps.count()  # never holds the whole map
    snapshots = SnapshotRecords.of(store, record).list()
    kept = mapped_blocks(maps, snapshots)
    objects, stored, aliases, alias_bytes, unknown = _survey(store)
    temp_files, abandoned = store.scratch()
    holder = current_holder(store)
    facts = {
        "url": args.url, "uuid": record.uuid, "format_version": record.format_version,
        "size": record.size, "block_size": record.block_size, "block_count": record.block_count,
        "compression": record.compression, "compression_level": record.compression_level,
        "hash": record.hash, "created": record.created,
        "mapped_blocks": mapped, "objects": objects, "stored_bytes": stored,
        # second copies kept while a late delete may land (FORMAT.md, "Late deletes")
        "aliases": aliases, "alias_bytes": alias_bytes,
        "unmerged_pages": unmerged,  # fsynced pages not yet in their blocks
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
    volume = Volume(store, writable=not args.dry_run)
    try:
        bars = Bars()
        try:
            facts = {"url": args.url, **collect(volume, delete=not args.dry_run, progress=bars)}
        finally:
            bars.close()
    finally:
        volume.close()
    _print_facts(facts, args.json)
    return 0


def _print_facts(facts: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(facts, indent=2))
    else:
        for name, value in facts.items():
            print(f"{name}: {value}")


def _read_stats(path: str) -> dict:
    with open(os.path.join(path, "stats")) as f:
        text = f.read()
    values: dict = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        values[name] = int(value) if value.lstrip("-").isdigit() else value
    return values


def stats(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.mountpoint)
    if fstype_at(path) != FSTYPE:
        raise UserError(f"{path} is not a bucketdisk mount")
    _print_facts(_read_stats(path), args.json)
    return 0
