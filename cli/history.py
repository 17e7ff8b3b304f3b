"""The `snapshot` commands: create, list, delete (history, issue 14).

They work on a volume URL that no mount holds writable (create and delete
take its lease; list only reads)."""
import argparse
import json
import os

from bucketdisk.errors import UserError
from bucketdisk.fs.mountpoints import is_bucketdisk_mount

from .commands import s3_options
from .units import format_size


def _open(args: argparse.Namespace, *, writable: bool):
    from bucketdisk.store import open_store
    from bucketdisk.volume.record import check_record_fits, read_record
    from bucketdisk.volume.volume import Volume

    if os.path.isabs(args.url) and is_bucketdisk_mount(args.url):
        raise UserError(f"{args.url} is a live mount: snapshots of a live mount are not available yet; "
                        "unmount it and give the volume's URL")
    store = open_store(args.url, s3=s3_options(args))
    record = read_record(store)
    if record is not None:  # (no record: Volume says so)
        check_record_fits(record)
    return Volume(store, writable=writable)


def create(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history
    from bucketdisk.volume.snapshots import check_name

    if args.name is not None:
        check_name(args.name)  # before the lease is taken
    volume = _open(args, writable=True)
    try:
        snapshot = history.take(volume, name=args.name)
    finally:
        volume.close()
    print(f"snapshot {snapshot.number} '{snapshot.name}': {snapshot.changed_blocks} blocks changed, "
          f"{format_size(snapshot.new_bytes)} new")
    return 0


def list_(args: argparse.Namespace) -> int:
    from bucketdisk.volume.snapshots import SnapshotRecords

    volume = _open(args, writable=False)
    try:
        snapshots = SnapshotRecords.of(volume.store, volume.record).list()
    finally:
        volume.close()
    rows = [{"number": s.number, "name": s.name, "type": s.type, "started": s.started,
             "completed": s.completed, "changed_blocks": s.changed_blocks, "new_bytes": s.new_bytes}
            for s in snapshots]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        print(f"{row['number']:>5}  {row['name']:<24} {row['type']:<11} {row['started']}  "
              f"{row['changed_blocks']:>9} blocks changed  {format_size(row['new_bytes'])} new")
    return 0


def delete(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history

    volume = _open(args, writable=True)
    try:
        snapshot = history.delete(volume, args.name)
    finally:
        volume.close()
    print(f"deleted snapshot {snapshot.number} '{snapshot.name}'")
    return 0


def add_commands(sub, store: argparse.ArgumentParser, command) -> None:
    """The `snapshot` command and its subcommands, made with main's `command` helper."""
    p = command(sub, "snapshot", "take, list and delete snapshots of a volume")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = command(verbs, "snapshot create", "keep the volume's current state", [store], name_in_parent="create")
    c.add_argument("url", metavar="URL")
    c.add_argument("--name", help="default: the UTC start time, YYYY-MM-DD-HHMMSS")
    c.set_defaults(run=create)
    c = command(verbs, "snapshot list", "list the volume's snapshots, oldest first", [store], name_in_parent="list")
    c.add_argument("url", metavar="URL")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=list_)
    c = command(verbs, "snapshot delete", "delete a snapshot and what only it kept", [store], name_in_parent="delete")
    c.add_argument("url", metavar="URL")
    c.add_argument("name", metavar="NAME", help="its name or number")
    c.set_defaults(run=delete)
