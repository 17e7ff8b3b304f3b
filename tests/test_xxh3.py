"""The codec's XXH3 (engine/codec/_hot.pyx) now comes from the xxhash
package: its values must stay those of the libxxhash build, bit for bit,
since frames in every store and the cache dir's dirty files hold them.

Two references: constants recorded from the libxxhash build (commit
01d1a3f, Debian libxxhash 0.8.1) before the switch, and the xxhash package
itself called on plain bytes copies (so our buffer handling, offsets and
page cutting are what is checked).
"""
from __future__ import annotations

import array
import hashlib
import mmap
import random
import struct

import pytest
import xxhash

from bucketdisk.codec._hot import Xxh3, frame, frame_header, page_checksums, read_header, unframe, xxh3_64

KIB, MIB, PAGE = 1024, 1 << 20, 4096
SOURCE = random.Random(17).randbytes(MIB + 64)  # the inputs the constants were recorded on

# name -> (input, XXH3_64bits as the libxxhash build gave it)
RECORDED = {
    "empty": (b"", 0x2D06800538D394C2),
    "one zero byte": (b"\0", 0xC44BDFF4074EECDB),
    "one byte a": (b"a", 0xE6C632B61E964E1F),
    "abc": (b"abc", 0x78AF5F94892F3950),
    "4 KiB 0..255": (bytes(range(256)) * 16, 0xEB4B7C3707879151),
    "4 KiB zeros": (bytes(PAGE), 0x93D76FE148C689BA),
    "1 MiB random": (SOURCE[:MIB], 0xBBA766F3EE13949D),
    "4 KiB from offset 1": (SOURCE[1:4097], 0x326E88AB0C1C49F2),
    "200 bytes from offset 3": (SOURCE[3:203], 0xE36AAC403DA7E67E),
    "1 MiB from offset 7": (SOURCE[7:7 + MIB], 0x81FC6DED7E090730),
}
# sha256 of page_checksums' output, as the libxxhash build gave it
RECORDED_PAGES = {
    "1 MiB random": (SOURCE[:MIB], "937ae32c5275e262551a69727e34aeff30bc5973bc46ca5fdd12775039495f8c"),
    "16 KiB from offset 7": (SOURCE[7:7 + 16 * KIB],
                             "f3166dc50373ff488a2259c3911aac75d8af15ad748cc0450f108c9a09f5704d"),
}
RECORDED_HEADERS = {  # (payload, flags, raw_len) -> the frame header the libxxhash build wrote
    "1 MiB random": (SOURCE[:MIB], 1, MIB, "42444b420101000000001000000010009d9413eef366a7bb"),
    "4 KiB 0..255": (bytes(range(256)) * 16, 0, PAGE, "42444b4201000000001000000010000051918707377c4beb"),
}

# Every size class XXH3 treats apart: 0, 1-3, 4-8, 9-16, 17-128, 129-240, long
# (stripes of 64 bytes, blocks of 1 KiB), and the package's GIL threshold (64 KiB).
SIZES = [0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1023, 1024, 1025, PAGE,
         64 * KIB, 64 * KIB + 1, 100001, MIB]


def ref(data) -> int:
    """The package on a plain bytes copy."""
    return xxhash.xxh3_64_intdigest(bytes(data))


def views(data: bytes):
    """`data` as each kind of buffer the codec is handed: bytes, bytearray,
    read-only and writable memoryviews at odd offsets, an array, an mmap."""
    yield "bytes", data
    yield "bytearray", bytearray(data)
    yield "memoryview", memoryview(data)
    for off in (1, 3, 7):
        yield f"unaligned +{off}", memoryview(b"\xa5" * off + data + b"\x5a")[off:off + len(data)]
        yield f"writable unaligned +{off}", memoryview(bytearray(off) + bytearray(data))[off:]
    if len(data) % 8 == 0:
        yield "array of u64", array.array("Q", data)
    if data:
        m = mmap.mmap(-1, len(data))
        m.write(data)
        yield "mmap", m


@pytest.mark.parametrize("name", RECORDED)
def test_xxh3_gives_the_values_the_libxxhash_build_gave(name):
    data, expected = RECORDED[name]
    for kind, buf in views(data):
        assert xxh3_64(buf) == expected, kind
    assert ref(data) == expected  # the package agrees with the old library too


@pytest.mark.parametrize("name", RECORDED_PAGES)
def test_page_checksums_give_what_the_libxxhash_build_gave(name):
    data, digest = RECORDED_PAGES[name]
    for kind, buf in views(data):
        assert hashlib.sha256(page_checksums(buf, PAGE)).hexdigest() == digest, kind


@pytest.mark.parametrize("name", RECORDED_HEADERS)
def test_frames_carry_the_checksums_the_libxxhash_build_wrote(name):
    payload, flags, raw_len, header = RECORDED_HEADERS[name]
    assert frame(payload, flags, raw_len)[:24].hex() == header
    assert frame_header(memoryview(payload), flags, raw_len).hex() == header
    assert unframe(bytes.fromhex(header) + payload)[2] == payload


@pytest.mark.parametrize("n", SIZES)
def test_xxh3_matches_the_package_on_every_size_class_and_buffer(n):
    data = random.Random(n).randbytes(n)
    expected = ref(data)
    for kind, buf in views(data):
        assert xxh3_64(buf) == expected, kind


@pytest.mark.parametrize("page_size", [512, PAGE, 64 * KIB])
def test_page_checksums_are_the_package_hash_of_each_page(page_size):
    data = random.Random(page_size).randbytes(16 * page_size)
    expected = b"".join(struct.pack("<Q", ref(data[i:i + page_size]) or 1)
                        for i in range(0, len(data), page_size))
    for kind, buf in views(data):
        assert page_checksums(buf, page_size) == expected, kind
    assert page_checksums(b"", page_size) == b""


def test_page_checksums_refuse_a_part_page():
    for bad in (PAGE - 1, PAGE + 1):
        with pytest.raises(ValueError, match="whole number of pages"):
            page_checksums(bytes(bad), PAGE)
    with pytest.raises(ValueError):
        page_checksums(bytes(PAGE), 0)


@pytest.mark.parametrize("n", [0, 1, 1000, PAGE, 64 * KIB + 3, MIB + 5])
def test_streamed_xxh3_equals_the_one_shot_hash(n):
    data = random.Random(n + 1).randbytes(n)
    rng = random.Random(n)
    h = Xxh3()
    at = 0
    while at < n:  # pieces of uneven sizes, each as another kind of buffer
        step = rng.choice([1, 7, 63, 64, 65, 4096, 100000])
        piece = data[at:at + step]
        h.update(rng.choice([piece, bytearray(piece), memoryview(b"#" + piece)[1:]]))
        at += step
    assert h.digest() == ref(data) == xxh3_64(data)
    assert Xxh3().digest() == RECORDED["empty"][1]


def test_a_streamed_read_checks_the_header_checksum():
    """What block.py's streamed read does: read_header, then Xxh3 over the
    payload in pieces, compared with the header's checksum."""
    payload = SOURCE[:3 * PAGE]
    framed = frame(payload, 0, len(payload))
    flags, raw_len, payload_len, checksum = read_header(framed[:24])
    h = Xxh3()
    for at in range(24, len(framed), 1000):
        h.update(memoryview(framed)[at:at + 1000])
    assert (flags, raw_len, payload_len) == (0, len(payload), len(payload))
    assert h.digest() == checksum == ref(payload)


def test_checksums_refuse_what_is_not_a_buffer():
    for bad in ("text", None, 12):
        with pytest.raises(TypeError):
            xxh3_64(bad)
        with pytest.raises(TypeError):
            Xxh3().update(bad)
        with pytest.raises(TypeError):
            page_checksums(bad, PAGE)
    with pytest.raises(BufferError):
        xxh3_64(memoryview(bytes(64))[::2])  # not contiguous
