"""The `snapshot` commands: create, list, delete (history, issue 14).

Given a mountpoint they ask its daemon over the control channel
(engine/fs/control.py); given a volume URL that no mount holds writable,
they open the volume themselves (create and delete take its lease)."""
import argparse
import json
import os
import subprocess

from bucketdisk.errors import UserError
from bucketdisk.fs.mountpoints import is_bucketdisk_mount

from .commands import _read_stats, s3_options
from .units import format_size


def _mounted(args: argparse.Namespace) -> str | None:
    """The control socket of the mount at args.url, or None for a volume URL."""
    if "://" in args.url:
        return None
    path = os.path.abspath(args.url)
    if not is_bucketdisk_mount(path):
        raise UserError(f"{args.url} is neither a volume URL nor a bucketdisk mount")
    try:
        return str(_read_stats(path)["control_socket"])
    except (OSError, KeyError):
        raise UserError(f"{args.url}: its daemon does not answer (has it died? see 'bucketdisk unmount')") from None


def _ask(socket_path: str, fields: dict) -> dict:
    from bucketdisk.fs.control import request
    return request(socket_path, fields)


def _open(args: argparse.Namespace, *, writable: bool):
    from bucketdisk.store import open_store
    from bucketdisk.volume.record import check_record_fits, read_record
    from bucketdisk.volume.volume import Volume

    store = open_store(args.url, s3=s3_options(args))
    record = read_record(store)
    if record is not None:  # (no record: Volume says so)
        check_record_fits(record)
    return Volume(store, writable=writable)


def create(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history
    from bucketdisk.volume.snapshots import check_name

    if args.name is not None:
        check_name(args.name)  # before the lease is taken or anything frozen
    control = _mounted(args)
    if control is None:
        if args.freeze:
            raise UserError("--freeze needs the volume mounted: give its mountpoint instead of its URL")
        volume = _open(args, writable=True)
        try:
            made = history.take(volume, name=args.name).summary()
        finally:
            volume.close()
    else:
        with _frozen(args.freeze):
            made = _ask(control, {"op": "snapshot", "name": args.name, "type": "manual"})["snapshot"]
    print(f"snapshot {made['number']} '{made['name']}': {made['changed_blocks']} blocks changed, "
          f"{format_size(made['new_bytes'])} new")
    return 0


class _frozen:
    """fsfreeze(8) the filesystem mounted at `path` (None: nothing) for the
    block inside, and thaw it on the way out, on errors and Ctrl-C too."""

    def __init__(self, path: str | None) -> None:
        self.path = path

    def __enter__(self) -> None:
        if self.path is not None:
            _fsfreeze("--freeze", self.path)

    def __exit__(self, *exc) -> None:
        if self.path is not None:
            _fsfreeze("--unfreeze", self.path)


def _fsfreeze(flag: str, path: str) -> None:
    try:
        proc = subprocess.run(["fsfreeze", flag, path], capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise UserError("fsfreeze not found (util-linux)") from None
    if proc.returncode != 0:
        raise UserError(f"fsfreeze {flag} {path}: {proc.stderr.strip() or 'failed'}")


def list_(args: argparse.Namespace) -> int:
    from bucketdisk.volume.snapshots import SnapshotRecords

    control = _mounted(args)
    if control is not None:
        rows = _ask(control, {"op": "list"})["snapshots"]
    else:
        volume = _open(args, writable=False)
        try:
            rows = [s.summary() for s in SnapshotRecords.of(volume.store, volume.record).list()]
        finally:
            volume.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['number']:>5}  {row['name']:<24} {row['type']:<11} {row['started']}  "
              f"{row['changed_blocks']:>9} blocks changed  {format_size(row['new_bytes'])} new")
    return 0


def delete(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history

    control = _mounted(args)
    if control is not None:
        gone = _ask(control, {"op": "delete", "name": args.name})["snapshot"]
    else:
        volume = _open(args, writable=True)
        try:
            gone = history.delete(volume, args.name).summary()
        finally:
            volume.close()
    print(f"deleted snapshot {gone['number']} '{gone['name']}'")
    return 0


def diff(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history

    control = _mounted(args)
    if control is not None:
        found = _ask(control, {"op": "diff", "a": args.a, "b": args.b})["diff"]
    else:
        volume = _open(args, writable=False)
        try:
            found = history.diff(volume, args.a, args.b).summary()
        finally:
            volume.close()
    if args.json:
        print(json.dumps(found, indent=2))
        return 0
    for offset, length in found["ranges"]:
        print(f"{offset} {length}")
    print(f"{found['count']} ranges changed, {format_size(found['bytes'])}")
    return 0


def add_commands(sub, store: argparse.ArgumentParser, command) -> None:
    """The `snapshot` command and its subcommands, made with main's `command` helper."""
    p = command(sub, "snapshot", "take, list and delete snapshots of a volume")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = command(verbs, "snapshot create", "keep the volume's current state", [store], name_in_parent="create")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("--name", help="default: the UTC start time, YYYY-MM-DD-HHMMSS")
    c.add_argument("--freeze", metavar="PATH", help="fsfreeze the filesystem mounted at PATH (the one "
                   "loop-mounted from the disk) while the snapshot is taken, so it holds it clean")
    c.set_defaults(run=create)
    c = command(verbs, "snapshot list", "list the volume's snapshots, oldest first", [store], name_in_parent="list")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=list_)
    c = command(verbs, "snapshot delete", "delete a snapshot and what only it kept", [store], name_in_parent="delete")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("name", metavar="NAME", help="its name or number")
    c.set_defaults(run=delete)
    c = command(verbs, "snapshot diff", "the byte ranges of the disk that differ between two snapshots",
                [store], name_in_parent="diff")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("a", metavar="A", help="a snapshot's name or number")
    c.add_argument("b", metavar="B", help="another, or 'live' for the disk as it is now")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=diff)
