"""`mount.fuse.bucketdisk`: the helper mount(8) runs for `fuse.bucketdisk`
entries of /etc/fstab (and `mount -t fuse.bucketdisk URL DIR`).

The calling convention is mount(8)'s, section "EXTERNAL HELPERS":

    mount.fuse.bucketdisk SPEC DIR [-sfnv] [-N NAMESPACE] [-o OPTIONS] [-t TYPE.SUBTYPE]

mount(8) looks for /sbin/mount.fuse.bucketdisk (libmount searches /sbin,
/sbin/fs.d and /sbin/fs, never $PATH), passes the fstab options without
auto/noauto, comment=, x-* and `defaults`, and waits for the helper: so
it returns once the mount is live, its daemon left running in the
background (as `bucketdisk mount` without -f does).  -f (fake) checks
the options and mounts nothing, -v prints the command it runs, -n (no
mtab) changes nothing here, -s (sloppy) skips unknown options instead of
refusing them.

Each option `NAME=VALUE` becomes `bucketdisk mount --NAME VALUE` (`NAME`
alone for a flag such as `read-only`); `ro` is --read-only, and the
generic options of mount(8) and systemd that concern the kernel's mount
or the boot (rw, _netdev, nofail, user, exec, suid, dev, atime...) are
dropped.  A secret is never taken as an option: mount options show in
ps, /proc/PID/cmdline and the logs of mount and systemd.
"""
import argparse
import getopt
import sys

PROG = "mount.fuse.bucketdisk"
FSTYPE = "fuse.bucketdisk"

# Options of mount(8), fstab(5) and systemd.mount(5) that say how or when
# to mount (or what the kernel's VFS enforces), not what bucketdisk does:
# FUSE's own defaults stand, and the mount holds only `file` and `stats`.
GENERIC = frozenset((
    "rw", "defaults", "auto", "noauto", "user", "nouser", "users", "owner", "group", "_netdev", "nofail",
    "exec", "noexec", "suid", "nosuid", "dev", "nodev", "async", "atime", "noatime", "diratime", "nodiratime",
    "relatime", "norelatime", "strictatime", "nostrictatime", "lazytime", "nolazytime",
))
GENERIC_PREFIXES = ("x-", "comment=")

# bucketdisk mount options that make no sense from fstab: the helper must
# return once the mount is live, and the rest is internal.
NOT_OPTIONS = frozenset(("foreground", "help", "ready-fd", "key-fd"))

# Words that name a secret in an option (a file holding one is fine).
SECRET_WORDS = ("pass", "secret", "token", "key")


class Refused(Exception):
    """An argument or option the helper cannot take: its message is the one line said."""


def main(argv: list[str] | None = None) -> int:
    """Run as mount(8) runs a helper; returns the exit status (0 mounted;
    otherwise bucketdisk's status, 1 for a refused argument or option)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        command, fake, verbose = translate(argv)
    except Refused as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 1
    if verbose:
        print(f"{PROG}: bucketdisk {' '.join(command)}", file=sys.stderr)
    from .main import main as bucketdisk

    if fake:  # mount -f: check every option as `bucketdisk mount` parses it, mount nothing
        return _check_only(command)
    return bucketdisk(command)


def translate(argv: list[str]) -> tuple[list[str], bool, bool]:
    """(the `bucketdisk` arguments, fake, verbose) for mount(8)'s `argv`.
    Raises Refused."""
    try:
        flags, positional = getopt.gnu_getopt(argv, "sfnvN:o:t:")
    except getopt.GetoptError as e:
        raise Refused(f"{e} (usage: {PROG} URL MOUNTPOINT [-sfnv] [-o OPTIONS])") from None
    if len(positional) != 2:
        raise Refused(f"expected a volume URL and a mountpoint, got {len(positional)} arguments "
                      f"(usage: {PROG} URL MOUNTPOINT [-sfnv] [-o OPTIONS])")
    given = dict.fromkeys(flag for flag, _ in flags if flag in ("-s", "-f", "-n", "-v"))
    options = ",".join(value for flag, value in flags if flag == "-o")
    for flag, value in flags:
        if flag == "-N":
            raise Refused("mounting in another namespace (-N) is not supported")
        if flag == "-t" and value != FSTYPE:
            raise Refused(f"this helper mounts type {FSTYPE}, not {value}")
    url, mountpoint = positional
    debug, mount_args = _translate_options(options, sloppy="-s" in given)
    command = (["--debug"] if debug else []) + ["mount", url, mountpoint] + mount_args
    return command, "-f" in given, "-v" in given


def _translate_options(options: str, sloppy: bool) -> tuple[bool, list[str]]:
    """(--debug given, `bucketdisk mount` arguments) for a `-o` list."""
    known = mount_options()
    debug, args = False, []
    for item in filter(None, options.split(",")):
        name, equals, value = item.partition("=")
        if item in GENERIC or item.startswith(GENERIC_PREFIXES):
            continue
        if _is_secret(name):
            raise Refused(f"-o {name}: secrets never go in mount options (ps, /proc/mounts and the logs show "
                          "them): use passphrase-file=FILE, key-file=FILE or credentials-file=FILE, or the "
                          "environment")
        if name == "ro":
            name = "read-only"
        if name == "debug" and not equals:
            debug = True
            continue
        if name in NOT_OPTIONS or name not in known:
            if sloppy:
                print(f"{PROG}: warning: -o {name}: not a bucketdisk mount option; skipped (-s)", file=sys.stderr)
                continue
            raise Refused(f"-o {name}: not a bucketdisk mount option (see 'bucketdisk mount --help')")
        takes_value = known[name]
        if takes_value and not equals:
            raise Refused(f"-o {name} needs a value: {name}=VALUE")
        if not takes_value and equals:
            raise Refused(f"-o {name} takes no value")
        args += [f"--{name}={value}"] if takes_value else [f"--{name}"]  # =: a value may start with -
    return debug, args


def _is_secret(name: str) -> bool:
    lowered = name.lower().replace("_", "-")
    return not lowered.endswith("-file") and any(word in lowered for word in SECRET_WORDS)


def mount_options() -> dict[str, bool]:
    """`bucketdisk mount`'s long options, without their dashes: name -> takes a value."""
    from .main import build_parser

    parser = build_parser()
    # (argparse lists a subcommand's options only in these attributes; read
    # from the parser itself, the helper knows every option `mount` has)
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found = {}
    for action in commands.choices["mount"]._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                found[option[2:]] = action.nargs != 0
    return found


def _check_only(command: list[str]) -> int:
    """mount -f: parse `command` as `bucketdisk` would (one line and exit
    2 for a bad value), run nothing."""
    from .main import build_parser

    try:
        build_parser().parse_args(command)
    except SystemExit as e:  # the parser said why, in one line
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
