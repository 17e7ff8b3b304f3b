#!/usr/bin/env python3
"""Generate a deterministic file tree for the benchmarks (W3/W4 of bench/run.py).

    python bench/gentree.py DIR [--files 20000] [--bytes 200000000] [--seed 1]

The same arguments give the same tree, byte for byte (names, sizes, contents,
modes and times), on any machine and Python >= 3.9: everything comes from one
`random.Random(seed)`. The tree looks like a home directory of mixed work:

* about one directory per 20 files, nested up to 6 deep;
* file sizes drawn from a log-normal distribution, then scaled so the total is
  exactly --bytes; about 1% of the files are empty. With the defaults: median
  1.4 KB, 90th percentile 18 KB, 99th 150 KB, a few files of 1-3 MB;
* contents: "text" files (60% of those up to 64 KiB, 25% of larger ones) are
  lines of pseudo-words, which zstd compresses about 2.5x; the rest is random
  bytes, which does not compress. By bytes the tree is about 44% text.

It prints one line: files, directories, bytes and a SHA-256 digest of the whole
tree (paths and contents), so two machines can check they made the same tree.
"""
from __future__ import annotations

import argparse
import hashlib
import math
import os
import random
import sys
from pathlib import Path

MTIME = 1_700_000_000  # a fixed time for every file and directory (cp -a keeps it)
MAX_FILE = 32 << 20
TEXT_POOL = 4 << 20


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _words(rng: random.Random, n: int) -> list[str]:
    syllables = [c + v for c in "bcdfghklmnprstvwz" for v in "aeiou"] + ["th", "st", "qu", "er", "an"]
    return ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(n)]


def _text_pool(rng: random.Random) -> bytes:
    words = _words(rng, 3000)
    lines, size = [], 0
    while size < TEXT_POOL:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:TEXT_POOL]


def plan(files: int, total: int, seed: int):
    """The tree as (dirs, [(path, size, is_text)]), without touching the disk."""
    rng = random.Random(seed)
    names = _words(rng, 500)
    dirs: list[tuple[str, int]] = [("", 0)]  # (relative path, depth)
    for i in range(max(1, files // 20)):
        parent, depth = rng.choice(dirs)
        if depth >= 6:
            parent, depth = "", 0
        name = f"{rng.choice(names)}{i}"
        dirs.append((f"{parent}/{name}" if parent else name, depth + 1))

    sigma = 2.0
    mu = math.log(10_000) - sigma * sigma / 2
    sizes = [0 if rng.random() < 0.01 else min(MAX_FILE, int(rng.lognormvariate(mu, sigma)))
             for _ in range(files)]
    scale = total / max(1, sum(sizes))
    sizes = [min(MAX_FILE, int(s * scale)) for s in sizes]
    sizes[max(range(files), key=sizes.__getitem__)] += total - sum(sizes)  # exact total

    exts_text = [".txt", ".md", ".c", ".py", ".json", ".csv", ".log", ".html"]
    exts_bin = [".jpg", ".png", ".bin", ".gz", ".mp3", ".pdf", ".zip", ".o"]
    entries = []
    for i, size in enumerate(sizes):
        is_text = rng.random() < (0.6 if size <= 64 << 10 else 0.25)
        d = rng.choice(dirs)[0]
        ext = rng.choice(exts_text if is_text else exts_bin)
        name = f"{rng.choice(names)}-{i}{ext}"
        entries.append((f"{d}/{name}" if d else name, size, is_text))
    return [d for d, _ in dirs[1:]], entries, rng


def generate(root: Path, files: int = 20_000, total: int = 200_000_000, seed: int = 1) -> dict:
    """Write the tree under root (which must not exist or be empty)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise SystemExit(f"gentree: {root} is not empty")
    dirs, entries, rng = plan(files, total, seed)
    pool = _text_pool(rng)
    digest = hashlib.sha256()
    for d in dirs:
        (root / d).mkdir()
    for path, size, is_text in entries:
        if is_text:
            start = rng.randrange(TEXT_POOL)
            if start + size <= TEXT_POOL:
                data = pool[start:start + size]
            else:
                data = (pool[start:] + pool * (1 + size // TEXT_POOL))[:size]
        else:
            data = rng.randbytes(size)
        digest.update(path.encode() + b"\0" + size.to_bytes(8, "little"))
        digest.update(data)
        with open(root / path, "wb") as f:
            f.write(data)
        os.chmod(root / path, 0o644)
        os.utime(root / path, (MTIME, MTIME))
    for d in reversed(dirs):
        os.utime(root / d, (MTIME, MTIME))
    return {"files": len(entries), "dirs": len(dirs), "bytes": sum(e[1] for e in entries),
            "text_bytes": sum(e[1] for e in entries if e[2]), "sha256": digest.hexdigest(),
            "seed": seed}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--bytes", type=parse_size, default=200_000_000,
                        help="total bytes of file data (K/M/G suffixes; default 200000000)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    info = generate(args.dir, args.files, args.bytes, args.seed)
    print(f"{info['files']} files in {info['dirs']} directories, {info['bytes']} bytes "
          f"({info['text_bytes'] * 100 // max(1, info['bytes'])}% text), seed {info['seed']}, "
          f"sha256 {info['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
