"""`bucketdisk mount`: checks, then the daemon (started in the background,
or served in the foreground)."""
import argparse
import errno
import json
import os
import subprocess
import sys

from bucketdisk.errors import UserError
from bucketdisk.fs.mountpoints import FSTYPE, fstype_at

from .commands import s3_options, store_argv
from .failures import failure_line
from .sdnotify import notify_ready
from .secrets import daemon_environment, key_source, receive_key, send_key

STATS_EVERY = 15.0  # seconds between rewrites of --stats-file

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
    _check_filename(args.filename)
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
    _check_cache_dir_options(args)
    _check_stats_file_options(args)
    # The daemon runs from /, so files named relative to here must travel absolute.
    for name in ("credentials_file", "ca_bundle"):
        if getattr(args, name):
            setattr(args, name, os.path.abspath(getattr(args, name)))
    _check_mountpoint(args.mountpoint)
    from bucketdisk.fs.adapters import check_adapter

    args.fuse = check_adapter(args.fuse)  # before forking: a missing libfuse is said here, in one line
    if args.foreground:
        return _serve(args)
    return _spawn_daemon(args, _data_key(args))


def _check_filename(name: str) -> None:
    from bucketdisk.fs.operations import check_disk_name

    try:
        check_disk_name(name)
    except ValueError as e:
        raise UserError(f"--filename: {e}") from None


def _check_cache_dir_options(args: argparse.Namespace) -> None:
    if args.cache_dir_size is not None and args.cache_dir is None:
        raise UserError("--cache-dir-size goes with --cache-dir")
    if args.cache_dir is None:
        return
    if not args.cache_dir.strip():
        raise UserError("--cache-dir: an empty path")
    if args.cache_dir_size is not None and args.cache_dir_size < 2 * args.cache_size:
        raise UserError("--cache-dir-size must be at least twice --cache-size: the cache dir holds every dirty "
                        "block the memory cache holds, and more while their journal is written")
    args.cache_dir = os.path.abspath(args.cache_dir)  # the daemon runs from /
    if os.path.exists(args.cache_dir) and not os.path.isdir(args.cache_dir):
        raise UserError(f"--cache-dir: not a directory: {args.cache_dir}")
    from bucketdisk.store import parse_url

    scheme, place = parse_url(args.url)
    holders = [("the mountpoint", getattr(args, "mountpoint", None))]
    holders += [("the volume's directory", place[0])] if scheme == "file" else []
    for what, path in holders:
        if path is not None and _inside(args.cache_dir, os.path.realpath(path)):
            raise UserError(f"--cache-dir {args.cache_dir} is inside {what} ({path}); put it elsewhere")


def _inside(path: str, top: str) -> bool:
    """Whether `path` (or where its existing part leads) is `top` or under it."""
    real = os.path.realpath(path)
    return os.path.commonpath([real, top]) == top


def _check_stats_file_options(args: argparse.Namespace) -> None:
    if args.stats_every is not None and args.stats_file is None:
        raise UserError("--stats-every goes with --stats-file")
    if args.stats_file is not None:
        from bucketdisk.fs.statsfile import check_stats_file

        args.stats_file = check_stats_file(args.stats_file)  # absolute: the daemon runs from /
        if _inside(args.stats_file, os.path.realpath(args.mountpoint)):
            raise UserError(f"--stats-file {args.stats_file} is inside the mountpoint; put it elsewhere")


def recover(args: argparse.Namespace) -> int:
    """`bucketdisk recover`: store (or with --discard drop) what a crashed
    mount left in its cache dir."""
    if args.threads < 1 or args.threads > 256:
        raise UserError("--threads must be from 1 to 256")
    args.cache_dir_size = None
    _check_cache_dir_options(args)
    from bucketdisk.device.recovery import recover_cache_dir

    from .progress import Bars

    with Bars() as bars:
        found, how, counters = recover_cache_dir(args.url, args.cache_dir, s3=s3_options(args, args.threads),
                                                 keys=key_source(args, args.url), cache_size=args.cache_size,
                                                 threads=args.threads, discard=args.discard, force=args.force,
                                                 progress=bars)
    damaged, torn = counters.get("cache_dir_damaged", 0), counters.get("recovered_torn_pages", 0)
    status = 2 if damaged or torn else 0  # writes lost: exit 2, as verify and fsck say damage
    if args.json:
        print(json.dumps({"url": args.url, "cache_dir": args.cache_dir, "blocks": found, "done": how,
                          "damaged_files": damaged, "torn_pages": torn, "exit": status}, indent=2))
        return status
    if not found:
        print(f"{args.cache_dir}: no blocks left unsaved")
    else:
        print(f"{args.cache_dir}: {found} blocks a mount left unsaved were {how}")
    if status:
        print(f"{args.cache_dir}: {damaged} dirty files could not be used (moved to "
              f"{os.path.join(args.cache_dir, 'damaged')}) and {torn} pages were cut by a crash; "
              "those blocks keep what the store holds", file=sys.stderr)
        return 2
    return 0


def _data_key(args: argparse.Namespace) -> bytes | None:
    """An encrypted volume's data key, unwrapped here so that a wrong
    passphrase is said before the daemon starts, and so that the daemon
    never sees the passphrase; None for a volume that is not encrypted
    (or none at all: the daemon says so).  A plain volume is checked here
    too: given a secret, or known here as encrypted, it is refused (unlock.py)."""
    from bucketdisk.store import open_store
    from bucketdisk.volume.record import open_record

    store = open_store(args.url, s3=s3_options(args, args.threads))
    try:
        record = open_record(store, key_source(args, args.url))
    finally:
        store.close()
    return record.keys.data_key if record is not None and record.encrypted else None


def _serve(args: argparse.Namespace) -> int:
    from bucketdisk.fs.mount import MountOptions, serve

    from .history import keep_options

    ready = args.ready_fd

    def on_ready() -> None:
        if ready is None:  # the process systemd started (not a daemon `mount` spawned): Type=notify
            notify_ready()
        if ready is not None:
            os.write(ready, b"ok\n")
            os.close(ready)

    def on_warning(line: str) -> None:
        if ready is not None:  # the waiting parent prints it
            os.write(ready, f"warning: {line}\n".encode())
        else:
            print(f"bucketdisk: warning: {line}", file=sys.stderr)

    options = MountOptions(cache_size=args.cache_size, threads=args.threads, readahead=args.readahead,
                           read_only=args.read_only or args.snapshot is not None, force=args.force,
                           snapshot=args.snapshot, snapshot_every=args.snapshot_every,
                           compress_level=args.compress_level, keys=_serve_keys(args),
                           cache_dir=args.cache_dir, cache_dir_size=args.cache_dir_size,
                           keep=keep_options(args), s3=s3_options(args, args.threads), log=args.log,
                           stats_file=args.stats_file, stats_every=args.stats_every or STATS_EVERY,
                           fuse=args.fuse, filename=args.filename)
    try:
        serve(args.url, args.mountpoint, options, on_ready, on_warning)
    except BaseException as e:
        if ready is not None:
            try:  # tell the waiting parent why, in one line
                os.write(ready, f"{_one_line(e)}\n".encode())
            except OSError:
                pass
        raise
    return 0


def _serve_keys(args: argparse.Namespace):
    """The daemon's: the data key its parent sent; in the foreground: the secret's options."""
    if args.key_fd is None:
        return key_source(args, args.url)
    from bucketdisk.codec.keys import KeySource

    return KeySource(data_key=receive_key(args.key_fd), offered=True)


def _one_line(e: BaseException) -> str:
    if isinstance(e, Exception):
        return failure_line(e).splitlines()[0]
    return type(e).__name__  # SystemExit, KeyboardInterrupt


def _default_log(mountpoint: str) -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    name = mountpoint.strip("/").replace("/", "_") or "root"
    return os.path.join(state, "bucketdisk", f"{name}.log")


def _spawn_daemon(args: argparse.Namespace, data_key: bytes | None) -> int:
    from .history import keep_options

    log_path = os.path.abspath(args.log or _default_log(args.mountpoint))
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "bucketdisk.cli.main"] + (["--debug"] if args.debug else [])
    command += ["mount", args.url, args.mountpoint, "--foreground", "--ready-fd", str(write_end),
                "--log", log_path, "--cache-size", str(args.cache_size), "--threads", str(args.threads),
                "--readahead", str(args.readahead), "--fuse", args.fuse, f"--filename={args.filename}"]
    command += store_argv(args)
    command += ["--read-only"] if args.read_only else []
    command += [f"--snapshot={args.snapshot}"] if args.snapshot is not None else []  # a name may start with -
    command += ["--snapshot-every", f"{int(args.snapshot_every)}s"] if args.snapshot_every else []
    for name, value in keep_options(args).items():
        command += [f"--keep-{name}={value}"]
    command += ["--force"] if args.force else []
    command += ["--cache-dir", args.cache_dir] if args.cache_dir else []
    command += ["--cache-dir-size", str(args.cache_dir_size)] if args.cache_dir_size else []
    command += ["--compress-level", str(args.compress_level)] if args.compress_level is not None else []
    command += ["--stats-file", args.stats_file] if args.stats_file else []
    command += ["--stats-every", f"{int(args.stats_every)}s"] if args.stats_every else []
    passed = (write_end,)
    if data_key is not None:
        key_end = send_key(data_key)
        command += ["--key-fd", str(key_end)]
        passed += (key_end,)
    with open(log_path, "ab") as log_file:
        child = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file,
                                 pass_fds=passed, start_new_session=True, cwd="/", env=daemon_environment())
    for fd in passed:
        os.close(fd)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.readline().decode(errors="replace").strip()
        while answer.startswith("warning: "):
            print(f"bucketdisk: {answer}", file=sys.stderr)
            answer = pipe.readline().decode(errors="replace").strip()
    if answer == "ok":
        return 0
    child.wait()
    raise UserError(answer or f"the mount daemon exited with status {child.returncode}; see {log_path}")
