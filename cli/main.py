"""`bucketdisk`: the command line.  Parses, validates, prints; the engine
does the work."""
import argparse
import logging
import os
import signal
import sys

from bucketdisk import __version__
from bucketdisk.errors import StoreError, UserError

from . import commands, fsck, history, mount, unlock, unmount, verify
from .failures import failure_line
from .secrets import add_key_options
from .units import join_negative_sizes, parse_compression, parse_duration, parse_level, parse_rate, parse_size

FSCK_FAILED = 8  # fsck(8)'s "operational error": fsck could not check (cli/fsck.py)

EXAMPLES = {
    "create": "bucketdisk create file:///srv/disk1 --size 100G --block-size 1M\n"
              "  bucketdisk create file:///srv/disk2 --size 100G --encrypt      # asks for a passphrase\n"
              "  bucketdisk create s3://my-bucket/disk1 --size 1T --endpoint http://127.0.0.1:8333",
    "mount": "bucketdisk mount file:///srv/disk1 /mnt/disk1 --cache-size 512M --threads 32\n"
             "  bucketdisk mount file:///srv/disk1 /mnt/disk1 --stats-file /var/lib/node_exporter/disk1.prom\n"
             "  bucketdisk mount s3://my-bucket/disk1 /mnt/disk1 --region eu-west-1 --cache-dir /var/cache/disk1",
    "recover": "bucketdisk recover s3://my-bucket/disk1 --cache-dir /var/cache/disk1\n"
               "  bucketdisk recover s3://my-bucket/disk1 --cache-dir /var/cache/disk1 --discard",
    "unmount": "bucketdisk unmount /mnt/disk1",
    "passwd": "bucketdisk passwd file:///srv/disk2                 # asks for the old and the new passphrase\n"
              "  bucketdisk passwd file:///srv/disk2 --new-key-file /root/disk2.key",
    "info": "bucketdisk info file:///srv/disk1 --json",
    "unlock": "bucketdisk unlock s3://my-bucket/disk1             # who holds it; cleared once it expired\n"
              "  bucketdisk unlock s3://my-bucket/disk1 --force     # its holder is gone for sure",
    "stats": "bucketdisk stats /mnt/disk1\n"
             "  bucketdisk stats /mnt/disk1 --prometheus",
    "verify": "bucketdisk verify file:///srv/disk1 --all\n  bucketdisk verify s3://my-bucket/disk1 --json",
    "fsck": "bucketdisk fsck file:///srv/disk1               # reads only; exit 0 clean, 2 damage\n"
            "  bucketdisk fsck s3://my-bucket/disk1 --repair  # exit 1 repaired, 2 damage left, 8 could not check",
    "gc": "bucketdisk gc file:///srv/disk1 --dry-run\n  bucketdisk gc /mnt/disk1",
    "snapshot": "bucketdisk snapshot create file:///srv/disk1 --name before-upgrade\n"
                "  bucketdisk snapshot list file:///srv/disk1",
    "snapshot create": "bucketdisk snapshot create /mnt/disk1 --freeze /mnt/data\n"
                       "  bucketdisk snapshot create file:///srv/disk1 --name before-upgrade",
    "snapshot list": "bucketdisk snapshot list file:///srv/disk1 --json",
    "snapshot delete": "bucketdisk snapshot delete file:///srv/disk1 before-upgrade",
    "snapshot diff": "bucketdisk snapshot diff /mnt/disk1 before-upgrade live --json",
    "restore": "bucketdisk restore file:///srv/disk1 --snapshot before-upgrade",
    "prune": "bucketdisk prune /mnt/disk1 --dry-run            # Time Machine's rule\n"
             "  bucketdisk prune file:///srv/disk1 --keep-hourly 24 --keep-daily 30 --keep-weekly -1",
}


class Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (README: "Errors print one
    line"), pointing at --help for the usage it no longer prints; exit
    `usage_status` (2; fsck's 8, fsck(8)'s operational error)."""

    usage_status = 2

    def error(self, message: str):
        text = " ".join(message.split())  # never more than one line
        self.exit(self.usage_status, f"{self.prog}: error: {text} (see '{self.prog} --help')\n")


class Version(argparse.Action):
    """--version: the version and the FUSE adapter a mount uses by default
    (the adapters are looked up only when asked)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from bucketdisk.fs.adapters import version_words

        print(f"bucketdisk {__version__} ({version_words()})")
        parser.exit(0)


def _command(sub, name: str, help_text: str, parents=(), *, name_in_parent: str | None = None
             ) -> argparse.ArgumentParser:
    """A subcommand `name` (EXAMPLES names its example), added to its parent as `name_in_parent`."""
    p = sub.add_parser(name_in_parent or name, help=help_text, description=help_text,
                       parents=list(parents), epilog=f"example:\n  {EXAMPLES[name]}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(command_parser=p)  # its usage errors name it: "bucketdisk fsck: error: ..."
    return p


def _checked(check: str, lead: str = ""):
    """An argparse type running s3args.`check` (its ValueError says what is
    wrong, after `lead`) and giving back the text; s3args is imported on
    use, so that commands without the option start without the storage
    layers."""
    def parse(text: str) -> str:
        from bucketdisk.store import s3args

        try:
            getattr(s3args, check)(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"{lead}{e}") from None
        return text
    return parse


def _store_options() -> argparse.ArgumentParser:
    """Options of the s3:// store, shared by every command that opens a volume."""
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("s3:// store (credentials: --credentials-file, the environment, "
                                      "the profile in ~/.aws, container credentials, the EC2 instance "
                                      "role, ~/.s3backer_passwd)")
    endpoint_form = "must be scheme://host[:port], the scheme http or https: "
    group.add_argument("--endpoint", type=_checked("endpoint_parts", endpoint_form),
                       help="S3 endpoint, scheme://host[:port] (default AWS_ENDPOINT_URL, else AWS S3)")
    group.add_argument("--addressing", choices=("path", "virtual", "auto"), default="auto",
                       help="bucket in the path or in the host name (default auto)")
    group.add_argument("--region", help="region (default AWS_REGION, AWS_DEFAULT_REGION, the profile's, us-east-1)")
    group.add_argument("--profile", help="profile in ~/.aws/credentials and ~/.aws/config")
    group.add_argument("--credentials-file", help="an AWS credentials file, or s3backer's accessID:accessKey "
                       "lines, readable only by you")
    group.add_argument("--ec2-role", metavar="ROLE", type=_checked("check_role_name"),
                       help="use this EC2 instance role's credentials (instance metadata, IMDSv2) and no others")
    group.add_argument("--ca-bundle", help="CA certificates to trust for HTTPS")
    group.add_argument("--insecure", action="store_true", help="do not check TLS certificates (warns)")
    group.add_argument("--storage-class", help="storage class of new objects, e.g. STANDARD_IA")
    group.add_argument("--sse", type=_checked("sse_parts"),
                       help="server-side encryption: AES256, aws:kms[:KEYID] or aws:kms:dsse[:KEYID]")
    group.add_argument("--connect-timeout", type=float, default=10.0, help="seconds (default 10)")
    group.add_argument("--read-timeout", type=float, default=60.0, help="seconds (default 60)")
    group.add_argument("--retry-time", type=float, default=300.0,
                       help="seconds to keep retrying a failing request before reporting it (default 300)")
    limits = parent.add_argument_group("bandwidth (file:// and s3:// alike)")
    limits.add_argument("--bwlimit", type=parse_rate, metavar="RATE",
                        help="cap uploads at RATE bytes/s, all threads together (K, M, G: 16M is 16 MiB/s)")
    limits.add_argument("--bwlimit-down", type=parse_rate, metavar="RATE",
                        help="cap downloads at RATE bytes/s, all threads together")
    add_key_options(parent)
    return parent


def build_parser() -> argparse.ArgumentParser:
    store = _store_options()
    parser = Parser(
        prog="bucketdisk",
        description="A disk that lives in an object store: mount it, format it, loop-mount it.",
        epilog="example:\n  " + "\n  ".join(EXAMPLES.values()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=Version, nargs=0, help="show the version and the FUSE adapter, and exit")
    parser.add_argument("--debug", action="store_true", help="log in detail (and show tracebacks)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = _command(sub, "create", "create a new volume", [store])
    p.add_argument("url", metavar="URL", help="where the volume lives, e.g. file:///srv/disk1")
    p.add_argument("--size", type=parse_size, required=True, help="volume size, e.g. 100G")
    p.add_argument("--block-size", type=parse_size, default=1 << 20,
                   help="block size, a power of two from 4K to 64M (default 1M)")
    p.add_argument("--force", action="store_true", help="replace an existing volume (its data is lost)")
    p.add_argument("--compress", type=parse_compression, default=("zstd", 1), metavar="zstd[:LEVEL]|none",
                   help="how blocks are stored: zstd at a level from 1 (fast, the default) to 19, or none; "
                        "a block that does not shrink is stored as it is")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt and authenticate every object (AES-256-GCM); the passphrase (asked twice on a "
                        "terminal, or --passphrase-file, BUCKETDISK_PASSPHRASE) or --key-file opens it")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=commands.create)

    p = _command(sub, "mount", "mount a volume; the mountpoint shows `file` and `stats`", [store])
    p.add_argument("url", metavar="URL")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--cache-size", type=parse_size, default=256 << 20,
                   help="memory for every block the mount holds: cached, dirty, being uploaded or read "
                        "(default 256M; at least 2 blocks)")
    p.add_argument("--threads", type=int, default=16,
                   help="parallel uploads and downloads, as many as fit in the cache (default 16)")
    p.add_argument("--readahead", type=int, default=8,
                   help="blocks fetched ahead of sequential reads (default 8)")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="keep blocks on local disk as well: writes that reached it survive a crash of the daemon "
                        "(or, once synced, every second and at fsync, of the machine) and are stored at the next "
                        "mount; clean blocks make a remount start warm.  One volume's, one mount at a time")
    p.add_argument("--cache-dir-size", type=parse_size, metavar="SIZE",
                   help="what the cache dir may hold (default: half the free space there, at most 16G; at least "
                        "twice --cache-size)")
    p.add_argument("--read-only", action="store_true", help="mount read-only")
    p.add_argument("--compress-level", type=parse_level, metavar="LEVEL",
                   help="zstd level for the blocks this mount stores (default: the volume's, from create)")
    p.add_argument("--snapshot", metavar="NAME", help="mount that snapshot alone, read-only, without the "
                   "writer's lease (also while the volume is mounted writable elsewhere)")
    p.add_argument("--force", action="store_true",
                   help="take the volume even if another writable mount seems to hold it")
    p.add_argument("--snapshot-every", type=parse_duration, metavar="INTERVAL",
                   help="take a snapshot every INTERVAL (90s, 15min, 1h, 1d) and prune after each, by the "
                        "--keep-* options given (default: Time Machine's rule)")
    history.add_keep_options(p)
    p.add_argument("--fuse", choices=("lowlevel", "mfusepy"),
                   help="the FUSE adapter: lowlevel (libfuse 3's low-level API, the Linux fast path; the default "
                        "where it was built) or mfusepy (libfuse's path API: macFUSE, FUSE-T, FreeBSD, libfuse 2)")
    p.add_argument("--filename", default="file", metavar="NAME",
                   help="the disk's name in the mount and in each snapshot's folder, e.g. backup.dmg "
                        "(default file)")
    p.add_argument("--log", help="log file of the background daemon "
                                 "(default ~/.local/state/bucketdisk/MOUNTPOINT.log)")
    p.add_argument("--stats-file", metavar="PATH.prom",
                   help="write the mount's stats as Prometheus metrics to PATH.prom (replaced atomically, for "
                        "node_exporter's textfile collector; removed at unmount)")
    p.add_argument("--stats-every", type=parse_duration, metavar="INTERVAL",
                   help="how often --stats-file is rewritten (default 15s)")
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    p.add_argument("--key-fd", type=int, help=argparse.SUPPRESS)  # the data key, from the parent (secrets.py)
    p.set_defaults(run=mount.mount)

    p = _command(sub, "recover", "store the blocks a crashed mount left in its cache dir, without mounting",
                 [store])
    p.add_argument("url", metavar="URL")
    p.add_argument("--cache-dir", metavar="DIR", required=True, help="the cache dir the mount used")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--discard", action="store_true", help="drop those blocks instead (their writes are lost)")
    what.add_argument("--force", action="store_true",
                      help="store them even though another mount has written the volume since (right only if "
                           "that mount changed nothing on the disk: snapshots, gc)")
    p.add_argument("--cache-size", type=parse_size, default=256 << 20, help="memory to use (default 256M)")
    p.add_argument("--threads", type=int, default=16, help="parallel uploads (default 16)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=mount.recover)

    p = _command(sub, "passwd", "change an encrypted volume's passphrase, or move it to a key file "
                                "(rewraps its key; no block is rewritten)", [store])
    p.add_argument("url", metavar="URL")
    p.add_argument("--new-passphrase-file", metavar="FILE",
                   help="the new passphrase from FILE (else BUCKETDISK_NEW_PASSPHRASE, else asked twice)")
    p.add_argument("--new-key-file", metavar="FILE", help="open the volume with this key file from now on")
    p.set_defaults(run=commands.passwd)

    p = _command(sub, "unmount", "flush everything, unmount, and wait for the daemon to exit")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.set_defaults(run=unmount.unmount)

    p = _command(sub, "info", "show a volume's record and what it stores", [store])
    p.add_argument("url", metavar="URL")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=commands.info)

    p = _command(sub, "unlock", "show who holds a volume's lease, and clear it once its holder is gone "
                                "(expired, or a dead process of this machine)", [store])
    p.add_argument("url", metavar="URL")
    p.add_argument("--force", action="store_true",
                   help="also clear a live lease of another host or PID namespace (that mount, if it still "
                        "runs, loses the volume: its writes since its last fsync are not stored), then waits "
                        "25 s")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=unlock.unlock)

    p = _command(sub, "gc", "delete objects nothing refers to: left by a mount that died, or kept by "
                            "snapshots since deleted", [store])
    p.add_argument("url", metavar="URL|MOUNTPOINT", help="a volume not mounted writable, or the mountpoint "
                   "of its writable mount (its daemon sweeps)")
    p.add_argument("--dry-run", action="store_true", help="only count them")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=commands.gc)

    p = _command(sub, "verify", "read every object the volume refers to and check it; exit 2 when anything "
                                "is damaged or missing", [store])
    p.add_argument("url", metavar="URL")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--snapshot", metavar="NAME", help="also check that snapshot's map and blocks")
    which.add_argument("--all", action="store_true", help="also check every snapshot")
    p.add_argument("--threads", type=int, default=16, help="objects read at once (default 16)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=verify.verify)

    p = _command(sub, "fsck", "check the volume record, every root, journal, page, snapshot record and block "
                              "object, and what nothing refers to; --repair makes the map consistent and removes "
                              "leftovers", [store])
    p.epilog += ("\n\nexit status:\n"
                 "  0  clean (leftovers a crash leaves are reported, not counted as damage)\n"
                 "  1  repaired, and no damage left\n"
                 "  2  damage left: something reads as an error or was lost (also after --repair)\n"
                 "  8  could not check: store unreachable, wrong passphrase, no volume there, a format\n"
                 "     version this bucketdisk does not know, bad options")
    p.usage_status = FSCK_FAILED
    p.add_argument("url", metavar="URL")
    p.add_argument("--repair", action="store_true",
                   help="take the volume's lease (refused while it is mounted writable), rebuild the live map from "
                        "what can be read (blocks it cannot know read as errors, never zeros) and remove what "
                        "nothing refers to; never deletes a snapshot record nor an object a map names")
    p.add_argument("--threads", type=int, default=16, help="objects read at once (default 16)")
    p.add_argument("--json", action="store_true", help="print the whole report as JSON")
    p.set_defaults(run=fsck.fsck, failure_status=FSCK_FAILED, usage_status=FSCK_FAILED)

    p = _command(sub, "stats", "show a mounted volume's counters")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--json", action="store_true", help="print JSON")
    how.add_argument("--prometheus", action="store_true", help="print Prometheus' text exposition format")
    p.set_defaults(run=commands.stats)

    history.add_commands(sub, store, _command)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = join_negative_sizes(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # (what parse_args does, from the command's own parser: fsck's status is 8)
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(extra)}")
    # A mount daemon (a foreground mount) logs warnings (retries, slow server)
    # to its log file; a one-shot command, and the command that starts a
    # daemon (it reads an encrypted volume's record first), keeps its stderr
    # to the one line that matters.
    daemon = args.command == "mount" and args.foreground
    quiet = logging.WARNING if daemon else logging.CRITICAL
    logging.basicConfig(level=logging.DEBUG if args.debug else quiet,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    status = getattr(args, "failure_status", 1)  # the exit status of a command that failed
    try:
        return args.run(args) or 0
    except (StoreError, UserError) as e:
        return _fail(failure_line(e), status)
    except BrokenPipeError:  # `bucketdisk ... | head`: the reader has all it wanted, as with any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail
        return 128 + signal.SIGPIPE
    except OSError as e:
        return _fail(failure_line(e), status)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if args.debug:
            raise
        return _fail(failure_line(e), status)


def _fail(message: str, status: int = 1) -> int:
    print(f"bucketdisk: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
