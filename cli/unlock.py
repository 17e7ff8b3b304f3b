"""`bucketdisk unlock`: show a volume's lease and clear it when its holder
is gone (engine: volume/leaseclear.py)."""
import argparse
import json
import sys

from bucketdisk.errors import UserError

from .commands import s3_options
from .secrets import key_source

STATE_WORDS = {
    "released": "released",
    "dead": "its process is gone (this machine)",
    "expired": "expired",
    "live-here": "held by a live process of this machine",
    "held": "held (another host or PID namespace: it may still be running)",
}


def unlock(args: argparse.Namespace) -> int:
    """Show the lease of args.url and clear it when allowed (leaseclear.py).
    0: not locked, or cleared; raises UserError (exit 1, one line, the
    store unchanged) when the lease stays."""
    from bucketdisk.store import open_store
    from bucketdisk.volume.create import missing_volume
    from bucketdisk.volume.leaseclear import clear_lease, lease_view
    from bucketdisk.volume.lock import TAKEOVER_WAIT
    from bucketdisk.volume.record import read_record
    from bucketdisk.volume.unlock import unlock as open_locked

    store = open_store(args.url, s3=s3_options(args))
    try:
        record = read_record(store)
        if record is None:
            raise missing_volume(store)
        # The lease needs no key: an encrypted volume's record is read as it
        # is, unless a secret was given (then it must open it, as anywhere).
        source = key_source(args, args.url)
        if not record.encrypted or source.offered:
            open_locked(record, source, args.url)
        view = lease_view(store)
        if view is None or view.state == "released":
            _print_result(args, view, None)
            return 0
        refusal = _refusal(args, view)
        if refusal is not None:  # the facts on stdout, the reason on stderr
            _print_result(args, view, None, refused=True)
            raise UserError(refusal)
        if not args.json:
            _print_lease(args.url, view)
        if view.state == "held":
            print(f"bucketdisk: warning: forcing: if {view.holder.describe()} is still running it loses the "
                  "volume: its writes since its last fsync are refused with EIO and not stored", file=sys.stderr)

        def on_wait(seconds: float) -> None:
            print(f"bucketdisk: waiting {seconds:.0f} s, so that every journal the old holder acknowledged is "
                  "stored before the next mount reads them", file=sys.stderr, flush=True)

        cleared = clear_lease(store, record, view, force=args.force, wait=TAKEOVER_WAIT, on_wait=on_wait)
    finally:
        store.close()
    _print_result(args, view, cleared)
    return 0


def _refusal(args: argparse.Namespace, view) -> str | None:
    """Why this lease is not cleared (one line), or None."""
    pid = view.holder.fields.get("pid")
    if view.state == "live-here":
        return (f"{args.url} is held by pid {pid}, a live process of this machine: {_how_to_stop(pid)}; unlock "
                "never clears a lease whose holder it can see running, even with --force")
    if view.state == "held" and not args.force:
        return (f"{args.url} is held by {view.holder.describe()}, whose lease {_expiry_words(view.expires_in())} "
                "(store's clock); it may still be running: wait for it to expire, or use --force if that mount "
                "is gone")
    return None


def _print_result(args: argparse.Namespace, view, cleared, *, refused: bool = False) -> None:
    """What unlock found and did: JSON, or lines (a lease refused: its facts)."""
    if args.json:
        print(json.dumps({
            "url": args.url, "locked": view is not None and view.state != "released",
            "lease": view.facts() if view is not None else None,
            "action": "refused" if refused else "cleared" if cleared is not None else "none",
            "cleared": None if cleared is None else
            {"key": cleared.key, "epoch": cleared.epoch, "waited_seconds": cleared.waited},
        }, indent=2))
        return
    if refused:
        _print_lease(args.url, view)
        return
    if cleared is not None:
        print(f"cleared: wrote {cleared.key}, a released lease that fences the old holder; the volume can be "
              "mounted now")
        return
    if view is None:
        print(f"{args.url}: not locked (no lease: never mounted writable)")
        return
    if view.holder.unlocked:
        print(f"{args.url}: not locked (cleared by {view.holder.describe()})")
        return
    age = f", released {_ago(view.holder.age)}" if view.holder.age is not None else ""
    print(f"{args.url}: not locked (last held by {view.holder.describe()}{age})")


def _print_lease(url: str, view) -> None:
    """The holder of a lease that is not released, one fact a line."""
    facts = view.facts()
    print(f"{url}: lease {facts['key']}")
    print(f"  holder: pid {facts['pid']} on {facts['host']}"
          + (f" (PID namespace {facts['pid_namespace']}, not this one's)" if facts["pid_namespace"] else ""))
    print(f"  since: {facts['since'] or 'unknown'} (UTC, the holder's clock)")
    if view.holder.age is not None:
        print(f"  last renewed: {_ago(view.holder.age)} (the store's clock)")
    print(f"  lease: {_expiry_words(view.expires_in())}")
    print(f"  state: {STATE_WORDS[view.state]}")


def _expiry_words(expires_in: float | None) -> str:
    if expires_in is None:
        return "expiry unknown (unreadable lease object)"
    if expires_in >= 0:
        return f"expires in {_span(expires_in)}"
    return f"expired {_ago(-expires_in)}"


def _ago(seconds: float) -> str:
    return f"{_span(seconds)} ago"


def _span(seconds: float) -> str:
    """'93 s', '12 min', '5 h', '3 d' (rounded down)."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _how_to_stop(pid) -> str:
    """What to do about a live holder here: its mount's unmount command,
    read from its command line, or to stop it."""
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            argv = f.read().decode(errors="replace").split("\0")
    except (OSError, ValueError, TypeError):
        return "stop it"
    if "mount" in argv and argv.index("mount") + 2 < len(argv):
        return f"unmount it ('bucketdisk unmount {argv[argv.index('mount') + 2]}')"
    return "wait for it to finish or stop it"
