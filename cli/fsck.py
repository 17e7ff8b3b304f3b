"""`bucketdisk fsck`: check everything a volume holds; `--repair` puts
right what can be (engine: volume/fsck.py and volume/fsckrepair.py).

Exit status, as fsck(8)'s where they meet: 0 nothing wrong (leftovers a
crash leaves are reported, not counted), 1 repaired and no damage left,
2 damage left (something reads as an error or was lost, also after a
repair), 8 fsck could not check (store unreachable, wrong passphrase, no
volume, a format it does not know, bad input: usage errors too).
"""
import argparse
import json

from bucketdisk.errors import UserError

from .commands import s3_options
from .progress import Bars
from .secrets import key_source
from .units import human_size
from .verify import count, print_damage

CLEAN, REPAIRED, DAMAGED, FAILED = 0, 1, 2, 8


def fsck(args: argparse.Namespace) -> int:
    from bucketdisk.store import open_store
    from bucketdisk.volume.fsck import check
    from bucketdisk.volume.fsckrepair import RepairResult, repair
    from bucketdisk.volume.record import check_record_fits

    if not 1 <= args.threads <= 256:
        raise UserError("--threads must be from 1 to 256")
    store = open_store(args.url, s3=s3_options(args, args.threads))
    try:
        record, damaged = _record(store, args)
        if damaged is not None:
            return _record_damaged(args, damaged)
        check_record_fits(record)
        bars = Bars()
        try:
            if args.repair:
                result = repair(store, record, threads=args.threads, progress=bars)
            else:
                report = check(store, record, threads=args.threads, progress=bars)
                result = RepairResult(report)
        finally:
            bars.close()
    finally:
        store.close()
    status = result.exit_status if args.repair else (DAMAGED if result.found.damage else CLEAN)
    if args.json:
        print(json.dumps({**result.found.summary(), "repair": args.repair, "repaired": result.actions,
                          "lost": result.lost, "after": result.after.summary() if result.after else None,
                          "exit": status}, indent=2))
    else:
        _print(args, record.block_size, result, status)
    return status


def _record(store, args):
    """(the unlocked record, None), or (None, the line saying why the
    record is damaged).  Raises UserError when there is no volume, or the
    record is of a newer format, or the secret does not open it (exit 8)."""
    from bucketdisk.errors import DamagedRecord
    from bucketdisk.volume import layout
    from bucketdisk.volume.create import missing_volume
    from bucketdisk.volume.record import open_record

    try:
        record = open_record(store, key_source(args, args.url))
    except DamagedRecord as e:
        return None, str(e)
    if record is not None:
        return record, None
    if any(layout.is_volume_key(k) for k in store.list()):
        return None, f"the volume record {store.key_url(layout.RECORD)} is missing; the rest of a volume is there"
    raise missing_volume(store)


def _record_damaged(args, problem: str) -> int:
    line = "--repair cannot rebuild a volume record: nothing else can be checked or changed without it"
    if args.json:
        print(json.dumps({"url": args.url, "damaged": 1, "problems": [
            {"kind": "record", "object": f"{args.url}/volume", "problem": problem, "ranges": [], "maps": [],
             "severity": "damage", "repair": "cannot"}], "repair": args.repair, "repaired": [], "lost": [],
            "after": None, "exit": DAMAGED}, indent=2))
    else:
        print(f"damaged record: {problem}")
        print(f"  repair: {line}")
        print(f"{args.url}: {count(1, 'problem')} found")
    return DAMAGED


def _print(args, block_size: int, result, status: int) -> None:
    found = result.found
    for damage in found.problems:
        print_damage(damage, block_size)
    _print_leftovers(found)
    for note in found.notes:
        print(f"note: {note}")
    if found.unknown_keys:
        shown = ", ".join(found.unknown_keys[:5]) + (", ..." if len(found.unknown_keys) > 5 else "")
        print(f"not of the volume's layout, left alone: {count(len(found.unknown_keys), 'key')} ({shown})")
    checked = ", ".join(count(found.checked.get(name, 0), noun) for name, noun in (
        ("roots", "root"), ("journals", "journal"), ("snapshot_records", "snapshot record"), ("pages", "map page"),
        ("blocks", "block object")))
    print(f"{args.url}: live map: {found.live}; checked {checked}: {_verdict(found)}")
    if not args.repair:
        if found.to_repair():
            if found.damage or any(d.severity == "repairable" for d in found.problems):
                print("run 'bucketdisk fsck --repair' to put right what can be")
            elif found.leftovers.count():
                print("'bucketdisk fsck --repair' (or gc) removes the leftovers")
            else:  # only fsynced pages a killed mount left in its journals
                print("the next writable mount (or 'bucketdisk fsck --repair') merges the fsynced pages "
                      "a mount left in its journals into their blocks")
        return
    for line in result.actions:
        print(f"repaired: {line}")
    for line in result.lost:
        print(f"lost: {line}")
    if result.after is not None:
        for damage in result.after.damage:
            print_damage(damage, block_size, prefix="left: ")
    verdicts = {CLEAN: "nothing to repair", REPAIRED: "repaired; no damage left",
                DAMAGED: "damage left" if result.left else "repaired, but something was lost"}
    print(f"{args.url}: {verdicts[status]}")


def _verdict(found) -> str:
    damage, repairable = len(found.damage), len(found.problems) - len(found.damage)
    parts = [f"{count(damage, 'problem')} of damage"] if damage else []
    parts += [f"{repairable} repairable"] if repairable else []
    if found.leftovers.count():
        parts.append(f"{count(found.leftovers.count(), 'leftover')}")
    return ", ".join(parts) if parts else "clean"


def _print_leftovers(found) -> None:
    left = found.leftovers
    parts = []
    if left.blocks:
        parts.append(f"{count(len(left.blocks), 'unreferenced block object')} ({human_size(left.block_bytes)})")
    if left.pages:
        parts.append(f"{count(len(left.pages), 'unreferenced map page')} ({human_size(left.page_bytes)})")
    for items, noun, plural in ((left.roots, "superseded root", None), (left.journals, "superseded journal", None),
                                (left.aliases, "alias past its quarantine", "aliases past their quarantine"),
                                (left.leases, "stale lease object", None),
                                (left.placeholders, "placeholder of a deleted snapshot",
                                 "placeholders of deleted snapshots")):
        if items:
            parts.append(count(len(items), noun, plural))
    if left.temp_files:
        parts.append(count(left.temp_files, "abandoned temporary file"))
    if parts:
        print(f"leftovers (not damage; left for removal): {', '.join(parts)}")
