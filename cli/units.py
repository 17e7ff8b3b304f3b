"""Human sizes: 512, 4K, 1M, 2G, 1T, 1.5G, 64KiB (binary multiples)."""
import argparse
import re

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
# ASCII digits only: int() would also take other scripts' digits ("١G").
_PATTERN = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*([KMGTP]?)(?:I?B)?\s*$", re.IGNORECASE | re.ASCII)
SIZE_OPTIONS = ("--size", "--block-size", "--cache-size", "--cache-dir-size")
# Options whose value may be typed with a minus (a size, an interval, a span): refused as values, not
# taken for options ("expected one argument").
SIGNED_OPTIONS = SIZE_OPTIONS + ("--snapshot-every", "--keep-within", "--bwlimit", "--bwlimit-down")


def parse_size(text: str) -> int:
    """Bytes for a size such as '1G'; argparse turns ValueError into one line."""
    match = _PATTERN.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (use a number with K, M, G or T)")
    number, unit = match.groups()
    value = float(number) * _UNITS[unit.upper()]
    if value != int(value):
        raise argparse.ArgumentTypeError(f"not a whole number of bytes: {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive: {text!r}")
    return int(value)


# Bytes per second: the lowest --bwlimit accepted.  Below it a 1 MiB block
# takes over a minute to send, and a mount with a few MiB to upload stalls
# fsync for many minutes.
MIN_RATE = 16 << 10


def parse_rate(text: str) -> int:
    """Bytes per second for a rate such as '16M' (16 MiB/s) or '500K';
    argparse turns ArgumentTypeError into one line.  Zero, negative, nan,
    fractions of a byte and rates under MIN_RATE are refused."""
    try:
        rate = parse_size(text.removesuffix("/s"))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"not a rate: {text!r} (bytes per second, a positive number with K, M "
                                         "or G, e.g. 16M)") from None
    if rate < MIN_RATE:
        raise argparse.ArgumentTypeError(f"rate too low: {text!r} (at least {format_size(MIN_RATE)}: below that "
                                         "a 1 MiB block would take over a minute to send)")
    return rate


def format_size(n: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    return str(n)


def human_size(n: int) -> str:
    """'512 bytes', '12 KiB', '1.5 MiB': a size for people (one decimal)."""
    for unit in ("T", "G", "M", "K"):
        if n >= _UNITS[unit]:
            value = f"{n / _UNITS[unit]:.1f}".removesuffix(".0")
            return f"{value} {unit}iB"
    return f"{n} byte{'s' if n != 1 else ''}"


def join_negative_sizes(argv: list[str]) -> list[str]:
    """`--size -1G` as `--size=-1G` (and `--keep-within -1d`...), so a
    negative value is refused as one (argparse would take "-1G" for an
    option and say "expected one argument")."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in SIGNED_OPTIONS and re.match(r"-[0-9.]", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


_DURATION = re.compile(r"^([0-9]+)(s|min|h|d)$", re.ASCII)
_SECONDS = {"s": 1, "min": 60, "h": 3600, "d": 86400}


MAX_INTERVAL = 366 * 86400  # seconds: a timer further off than that is a typing slip


def parse_duration(text: str) -> float:
    """Seconds for an interval such as '90s', '15min', '1h', '1d'."""
    match = _DURATION.match(text.strip())
    if not match or int(match.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"not an interval: {text!r} (use 90s, 15min, 1h or 1d)")
    seconds = int(match.group(1)) * _SECONDS[match.group(2)]
    if seconds > MAX_INTERVAL:
        raise argparse.ArgumentTypeError(f"{text!r} is longer than a year")
    return float(seconds)


def parse_compression(text: str) -> tuple[str, int]:
    """(compression, zstd level) for 'zstd', 'zstd:LEVEL' or 'none'."""
    from bucketdisk.codec.block import MAX_LEVEL

    name, colon, level = text.partition(":")
    if text == "none":
        return "none", 1
    if text == "zstd":
        return "zstd", 1
    if name == "zstd" and colon and level.isascii() and level.isdigit() and 1 <= int(level) <= MAX_LEVEL:
        return "zstd", int(level)
    raise argparse.ArgumentTypeError(f"not a compression: {text!r} (use zstd, zstd:LEVEL with a level from 1 "
                                     f"to {MAX_LEVEL}, or none)")


def parse_level(text: str) -> int:
    """A zstd level, 1 to MAX_LEVEL."""
    return parse_compression(f"zstd:{text}")[1]
