"""`bucketdisk verify`: read and check every object a volume refers to."""
import argparse
import json

from bucketdisk.errors import UserError

from .commands import s3_options
from .progress import Bars
from .secrets import key_source
from .units import human_size

DAMAGED = 2  # the exit status when anything is damaged or missing (1: verify itself failed)


def verify(args: argparse.Namespace) -> int:
    from bucketdisk.store import open_store
    from bucketdisk.volume.create import missing_volume
    from bucketdisk.volume.record import check_record_fits, open_record
    from bucketdisk.volume.verify import verify as check

    if not 1 <= args.threads <= 256:
        raise UserError("--threads must be from 1 to 256")
    store = open_store(args.url, s3=s3_options(args, args.threads))
    try:
        record = open_record(store, key_source(args, args.url))
        if record is None:
            raise missing_volume(store)
        check_record_fits(record)
        bars = Bars()
        try:
            report = check(store, record, snapshots="all" if args.all else args.snapshot, threads=args.threads,
                           progress=bars)
        finally:
            bars.close()
    finally:
        store.close()
    if args.json:
        print(json.dumps({"url": args.url, **report.summary()}, indent=2))
    else:
        _print(args.url, record.block_size, report)
    return DAMAGED if report.damage else 0


def _print(url: str, block_size: int, report) -> None:
    for damage in report.damage:
        print_damage(damage, block_size)
    verdict = f"{count(len(report.damage), 'problem')} found" if report.damage else "all intact"
    print(f"{url}: checked {count(report.blocks_checked, 'block object')} and "
          f"{count(report.pages_checked, 'map page')} of {', '.join(report.maps) or 'no map'}: {verdict}")


def print_damage(damage, block_size: int, prefix: str = "") -> None:
    """A problem (volume/checker.py's Damage) in lines: what and where, then
    the byte ranges of each map it takes, then what fsck --repair does."""
    if damage.kind == "rollback":
        print(prefix + damage.problem)  # ROLLBACK: what the store shows, against what this machine saw
    elif damage.kind == "lost":
        print(f"{prefix}lost blocks (marked by fsck): reads fail until each is written whole")
    else:
        word = "repairable" if damage.severity == "repairable" else "damaged"
        print(f"{prefix}{word} {damage.kind}: {damage.object}: {damage.problem}")
    for r in damage.ranges:
        size = r["last_byte"] - r["first_byte"] + 1
        print(f"  {r['map']}: bytes {r['first_byte']}-{r['last_byte']} ({human_size(size)}, blocks "
              f"{r['first_byte'] // block_size}-{r['last_byte'] // block_size})")
    if damage.repair and not prefix:
        print(f"  repair: {damage.repair}")


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n noun`, the noun in the plural (`plural`, else noun + s) unless n is 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"
