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

from .commands import read_stats, s3_options
from .progress import Bars
from .units import human_size


def _mounted(args: argparse.Namespace) -> str | None:
    """The control socket of the mount at args.url, or None for a volume URL."""
    if "://" in args.url:
        return None
    path = os.path.abspath(args.url)
    if not is_bucketdisk_mount(path):
        raise UserError(f"{args.url} is neither a volume URL nor a bucketdisk mount")
    try:
        return str(read_stats(path)["control_socket"])
    except (OSError, KeyError):
        raise UserError(f"{args.url}: its daemon does not answer (has it died? see 'bucketdisk unmount')") from None


def _ask(socket_path: str, fields: dict) -> dict:
    from bucketdisk.fs.control import request
    return request(socket_path, fields)


def _open(args: argparse.Namespace, *, writable: bool, damaged_snapshots: bool = False, check=None):
    """The volume at args.url; `check(SnapshotRecords)` first, before a
    writer takes the lease, so that a refused snapshot name writes nothing."""
    from .secrets import key_source

    from bucketdisk.codec.keys import KeySource
    from bucketdisk.store import open_store
    from bucketdisk.volume.record import check_record_fits, open_record, read_record
    from bucketdisk.volume.snapshots import SnapshotRecords
    from bucketdisk.volume.volume import Volume

    store = open_store(args.url, s3=s3_options(args))
    try:
        keys = key_source(args, args.url)
        record = read_record(store)
        if record is not None:  # (no record: Volume says so)
            check_record_fits(record)
            if check is not None:
                record = open_record(store, keys)  # the secret is asked for once: the key goes on
                check(SnapshotRecords.of(store, record))
                keys = KeySource(data_key=record.keys.data_key) if record.encrypted else keys
        return Volume(store, writable=writable, keys=keys, damaged_snapshots=damaged_snapshots)
    except BaseException:
        store.close()
        raise


def create(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history
    from bucketdisk.volume.snapshots import check_new_name

    if args.name is not None:
        check_new_name(args.name)  # before the lease is taken or anything frozen
    control = _mounted(args)
    if control is None:
        if args.freeze:
            raise UserError("--freeze needs the volume mounted: give its mountpoint instead of its URL")
        volume = _open(args, writable=True, check=lambda records: _name_free(records, args.name))
        try:
            with Bars() as bars:
                made = history.take(volume, name=args.name, started=args.time, progress=bars).summary()
        finally:
            volume.close()
    else:
        if args.freeze:
            _check_freeze(args.freeze, args.url)
        with _frozen(args.freeze):
            made = _ask(control, {"op": "snapshot", "name": args.name, "type": "manual",
                                  "started": args.time})["snapshot"]
    if args.json:
        print(json.dumps(made, indent=2))
        return 0
    print(f"snapshot {made['number']} '{made['name']}': {made['changed_blocks']} blocks changed, "
          f"{human_size(made['new_bytes'])} new")
    return 0


def _name_free(records, name: str | None) -> None:
    if name is not None and name in {s.name for s in records.list()}:
        raise UserError(f"a snapshot named {name!r} exists already")


def _check_freeze(path: str, mountpoint: str) -> None:
    """Refuse to freeze anything but a filesystem loop-mounted from a file
    of the bucketdisk mount at `mountpoint`: a path that is not mounted
    would freeze the filesystem it lies on (/, say, after a reboot)."""
    from bucketdisk.fs.mountpoints import loop_backing_file

    backing = loop_backing_file(path)
    if backing is None:
        raise UserError(f"--freeze {path}: no filesystem is loop-mounted exactly there (mount the disk's "
                        "filesystem there first, or leave --freeze out)")
    if not backing.startswith(os.path.realpath(mountpoint) + "/"):
        raise UserError(f"--freeze {path}: the filesystem there is on {backing}, not on the disk of {mountpoint}")


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
    from bucketdisk.volume.history import listed

    control = _mounted(args)
    if control is not None:
        rows = _ask(control, {"op": "list"})["snapshots"]
    else:
        volume = _open(args, writable=False)
        try:
            rows = listed(volume)
        finally:
            volume.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = _name_width(rows)
    for row in rows:
        print(f"{row['number']:>5}  {row['name']:<{width}} {row['type']:<11} {row['started']}  "
              f"{row['changed_blocks']:>9} blocks changed  {human_size(row['new_bytes'])} new, "
              f"{human_size(row['unique_bytes'])} only here")
    return 0


def delete(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history

    control = _mounted(args)
    if control is not None:
        gone = _ask(control, {"op": "delete", "name": args.name})["snapshot"]
    else:
        def known(records) -> None:  # (a damaged record goes by its number)
            if args.name not in map(str, records.read_all()[1]):
                records.find(args.name)

        volume = _open(args, writable=True, damaged_snapshots=True, check=known)
        try:
            if args.name in map(str, volume.damaged_snapshots):
                history.delete_damaged(volume, int(args.name))
                if args.json:
                    print(json.dumps({"number": int(args.name), "damaged": True}, indent=2))
                    return 0
                print(f"deleted the damaged snapshot record {args.name}; what only it kept is left for gc (or "
                      "fsck --repair) to remove once no damaged record is left")
                return 0
            with Bars() as bars:
                gone = history.delete(volume, args.name, progress=bars).summary()
        finally:
            volume.close()
    if args.json:
        print(json.dumps({**gone, "damaged": False}, indent=2))
        return 0
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
    print(f"{found['count']} ranges changed, {human_size(found['bytes'])}")
    return 0


KEEP_OPTIONS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def prune(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history
    from bucketdisk.volume.retention import policy_of

    options = keep_options(args)  # refused before the lease is taken
    policy = policy_of(options)
    control = _mounted(args)
    if control is not None:
        rows = _ask(control, {"op": "prune", "policy": options, "named_too": args.named_too,
                              "dry_run": args.dry_run})["decisions"]
    else:
        volume = _open(args, writable=not args.dry_run)
        try:
            with Bars() as bars:
                decided = history.prune(volume, policy, named_too=args.named_too, dry_run=args.dry_run,
                                        progress=bars)
            rows = [history.decision_summary(s, d) for s, d in decided]
        finally:
            volume.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    width = _name_width(rows)
    for row in rows:
        fate = "keep" if row["keep"] else verb
        print(f"{fate:<12}  {row['number']:>5}  {row['name']:<{width}} {row['started']}  {', '.join(row['reasons'])}")
    return 0


def _name_width(rows: list[dict]) -> int:
    """Characters of the name column: the longest name, at least 24."""
    return max([24] + [len(row["name"]) for row in rows])


def _utc_time(text: str) -> float:
    """argparse type: an ISO 8601 UTC time, YYYY-MM-DDTHH:MM:SSZ."""
    from datetime import datetime, timezone
    try:
        when = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a UTC time like 2026-11-30T09:00:00Z") from None
    if not 1970 <= when.year <= 9999 or len(text) != len("2026-11-30T09:00:00Z"):
        raise argparse.ArgumentTypeError(f"{text!r} is out of range: a time from 1970 on, written "
                                         "like 2026-11-30T09:00:00Z")
    return when.timestamp()


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -2
    if value < -1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (a whole number, -1 for all)")
    return value


def restore(args: argparse.Namespace) -> int:
    from bucketdisk.volume import history

    if "://" not in args.url:
        raise UserError("restore works on a volume's URL, unmounted (unmount it first)")
    # refused while a mount holds it writable; an unknown name before the lease is taken
    volume = _open(args, writable=True, check=lambda records: records.find(args.snapshot))
    try:
        with Bars() as bars:
            kept, undo = history.restore(volume, args.snapshot, progress=bars)
    finally:
        volume.close()
    if args.json:
        print(json.dumps({"url": args.url, "restored": kept.summary(), "pre_restore": undo.summary()}, indent=2))
        return 0
    print(f"the disk is now snapshot {kept.number} '{kept.name}'; what it held before is snapshot "
          f"{undo.number} '{undo.name}' (restore that to undo)")
    return 0


def add_keep_options(p: argparse.ArgumentParser) -> None:
    """prune's keep options (also `mount`'s, for scheduled snapshots)."""
    for name in KEEP_OPTIONS:
        p.add_argument(f"--keep-{name}", type=_count, metavar="N",
                       help=f"keep the {'N newest' if name == 'last' else f'newest of each of the N newest {name} periods'}")
    p.add_argument("--keep-within", metavar="SPAN", help="keep every snapshot within SPAN (24h, 7d, 6m, 1y) "
                   "before the newest")


def keep_options(args: argparse.Namespace) -> dict:
    """The keep options given, checked (UserError with prune's words)."""
    from bucketdisk.volume.retention import policy_of

    options = {name: getattr(args, f"keep_{name}") for name in KEEP_OPTIONS}
    options["within"] = args.keep_within
    options = {k: v for k, v in options.items() if v is not None}
    try:
        policy_of(options)
    except ValueError as e:
        raise UserError(str(e)) from None
    return options


def add_commands(sub, store: argparse.ArgumentParser, command) -> None:
    """The `snapshot` command and its subcommands, made with main's `command` helper."""
    p = command(sub, "snapshot", "take, list and delete snapshots of a volume")
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    c = command(verbs, "snapshot create", "keep the volume's current state", [store], name_in_parent="create")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("--name", help="default: the UTC start time, YYYY-MM-DD-HHMMSS")
    c.add_argument("--freeze", metavar="PATH", help="fsfreeze the filesystem mounted at PATH (the one "
                   "loop-mounted from the disk) while the snapshot is taken, so it holds it clean")
    c.add_argument("--time", type=_utc_time, metavar="UTC", help="date it (its start time, and default "
                   "name) otherwise than now, e.g. 2026-11-30T09:00:00Z: for imports and thinning tests")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=create)
    c = command(verbs, "snapshot list", "list the volume's snapshots, oldest first", [store], name_in_parent="list")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=list_)
    c = command(verbs, "snapshot delete", "delete a snapshot and what only it kept", [store], name_in_parent="delete")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("name", metavar="NAME", help="its name or number")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=delete)
    c = command(verbs, "snapshot diff", "the byte ranges of the disk that differ between two snapshots",
                [store], name_in_parent="diff")
    c.add_argument("url", metavar="URL|MOUNTPOINT")
    c.add_argument("a", metavar="A", help="a snapshot's name or number")
    c.add_argument("b", metavar="B", help="another, or 'live' for the disk as it is now")
    c.add_argument("--json", action="store_true", help="print JSON")
    c.set_defaults(run=diff)

    p = command(sub, "prune", "delete the snapshots no keep rule keeps (default: Time Machine's rule)",
                [store])
    p.add_argument("url", metavar="URL|MOUNTPOINT")
    add_keep_options(p)
    p.add_argument("--named-too", action="store_true", help="apply the rules to snapshots you named too")
    p.add_argument("--dry-run", action="store_true", help="only say what would go, and why the rest stays")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=prune)

    p = command(sub, "restore", "make the disk what a snapshot keeps (after a pre-restore snapshot of it)",
                [store])
    p.add_argument("url", metavar="URL")
    p.add_argument("--snapshot", required=True, metavar="NAME", help="its name, number, or Latest")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=restore)
