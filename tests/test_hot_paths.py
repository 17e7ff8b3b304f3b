"""The Cython hot paths against simple pure-Python references.

The ref_* functions are deliberately plain so they are obviously right, and
Bitmap is checked against a Python set.  PyBitmap is the same word-level
algorithm as Bitmap in plain Python (itself checked against the set model);
bench/bench_hot_paths.py imports these references to measure the speed-up.
"""
import array
import random
import struct

import pytest
import xxhash

from bucketdisk.codec import _hot
from bucketdisk.codec._hot import (
    FORMAT_VERSION, HEADER_SIZE, MAGIC, CorruptObject, frame, frame_header, is_zero, unframe, xxh3_64,
)
from bucketdisk.device._bitmap import Bitmap

MIB = 1 << 20


# -- pure-Python references -------------------------------------------------------

def ref_is_zero(buf):
    return all(b == 0 for b in bytes(buf))


def ref_xxh3_64(buf):
    # The xxhash package on a bytes copy: checks the codec's buffer handling,
    # lengths and offsets (tests/test_xxh3.py checks the values themselves
    # against constants from the libxxhash build).
    return xxhash.xxh3_64_intdigest(bytes(buf))


_HEADER = struct.Struct("<4sBBHIIQ")
assert _HEADER.size == 24


def ref_frame(payload, flags, raw_len, hasher=None):
    payload = bytes(payload)
    checksum = (hasher or ref_xxh3_64)(payload)
    return _HEADER.pack(b"BDKB", 1, flags, 0, raw_len, len(payload), checksum) + payload


def ref_unframe(obj, hasher=None):
    data = bytes(obj)
    if len(data) < 24:
        raise CorruptObject("too short")
    magic, version, flags, reserved, raw_len, payload_len, checksum = _HEADER.unpack_from(data)
    payload = data[24:]
    if (magic != b"BDKB" or version != 1 or reserved != 0 or payload_len != len(payload)
            or (hasher or ref_xxh3_64)(payload) != checksum):
        raise CorruptObject("bad frame")
    return flags, raw_len, payload


_ALL = (1 << 64) - 1


class PyBitmap:
    """The Bitmap algorithm, word for word, in plain Python (64-bit words in a list)."""

    def __init__(self, nbits):
        self.nbits = nbits
        self.words = [0] * ((nbits + 63) // 64)

    def set(self, i):
        self.words[i >> 6] |= 1 << (i & 63)

    def clear(self, i):
        self.words[i >> 6] &= _ALL ^ (1 << (i & 63))

    def test(self, i):
        return bool(self.words[i >> 6] >> (i & 63) & 1)

    def _fill(self, start, stop, value):
        if start >= stop:
            return
        first, last = start >> 6, (stop - 1) >> 6
        head = (_ALL << (start & 63)) & _ALL
        tail = _ALL >> (63 - ((stop - 1) & 63))
        if first == last:
            head &= tail
        w = self.words
        w[first] = w[first] | head if value else w[first] & ~head
        if first != last:
            w[first + 1:last] = [_ALL if value else 0] * (last - first - 1)
            w[last] = w[last] | tail if value else w[last] & ~tail

    def set_range(self, start, stop):
        self._fill(start, stop, True)

    def clear_range(self, start, stop):
        self._fill(start, stop, False)

    def clear_all(self):
        self.words = [0] * len(self.words)

    def count(self):
        return sum(w.bit_count() for w in self.words)

    def any(self):
        return any(self.words)

    def next_set(self, start=0):
        if start >= self.nbits:
            return -1
        k = start >> 6
        w = self.words[k] & (_ALL << (start & 63))
        while not w:
            k += 1
            if k >= len(self.words):
                return -1
            w = self.words[k]
        return (k << 6) + (w & -w).bit_length() - 1

    def iter_set(self, start=0):
        i = self.next_set(start)
        while i >= 0:
            yield i
            i = self.next_set(i + 1)

    def to_bytes(self):
        return b"".join(w.to_bytes(8, "little") for w in self.words)


def rand_bytes(rng, n):
    return rng.randbytes(n)


# -- is_zero -------------------------------------------------------------------------

SIZES = [0, 1, 2, 7, 8, 9, 15, 16, 63, 64, 65, 127, 128, 129, 1000, 4096, 4097, 65536 + 3]


@pytest.mark.parametrize("n", SIZES)
def test_is_zero_all_zero_and_each_single_nonzero_position(n):
    assert is_zero(bytes(n)) is True
    buf = bytearray(n)
    # Every position for small sizes; the edges and a sample for larger ones.
    positions = range(n) if n <= 200 else sorted({0, 1, 7, 8, 63, 64, n // 2, n - 9, n - 8, n - 1})
    for pos in positions:
        buf[pos] = 0x80
        assert is_zero(buf) is False, pos
        buf[pos] = 0
    assert is_zero(buf) is True


@pytest.mark.parametrize("offset", range(8))
@pytest.mark.parametrize("length", [0, 1, 5, 8, 13, 64, 100, 1000, 20000])
def test_is_zero_unaligned_memoryview_slices(offset, length):
    base = bytearray(offset + length + 8)
    view = memoryview(base)[offset:offset + length]
    assert is_zero(view) is True
    # A nonzero byte just outside the slice on either side must not count.
    base[offset + length] = 1
    if offset:
        base[offset - 1] = 1
    assert is_zero(view) is True
    if length:
        base[offset] = 1  # very start of the slice
        assert is_zero(view) is False
        base[offset] = 0
        base[offset + length - 1] = 1  # very end of the slice
        assert is_zero(view) is False


def test_is_zero_random_against_reference():
    rng = random.Random(1)
    for _ in range(500):
        n = rng.randrange(0, 300)
        buf = bytearray(n)
        # Mostly-zero buffers with 0-2 nonzero bytes exercise every branch.
        for _ in range(rng.choice([0, 0, 1, 2])):
            if n:
                buf[rng.randrange(n)] = rng.randrange(256)
        off = rng.randrange(0, 8) if n else 0
        view = memoryview(buf)[off:]
        assert is_zero(view) == ref_is_zero(view)


def test_is_zero_one_mib():
    buf = bytearray(MIB)
    assert is_zero(buf) is True
    assert is_zero(bytes(buf)) is True
    buf[-1] = 1
    assert is_zero(buf) is False
    buf[-1] = 0
    buf[0] = 1
    assert is_zero(buf) is False
    buf[0] = 0
    buf[MIB // 2 + 5] = 2
    assert is_zero(buf) == ref_is_zero(buf) == False  # noqa: E712


def test_is_zero_accepts_any_buffer_and_rejects_non_buffers():
    assert is_zero(memoryview(bytes(16)).toreadonly()) is True
    assert is_zero(array.array("I", [0, 0, 0])) is True
    assert is_zero(array.array("I", [0, 1 << 24, 0])) is False
    with pytest.raises(TypeError):
        is_zero("not bytes")
    with pytest.raises(TypeError):
        is_zero(None)


# -- count_zero_entries / differing_entries ------------------------------------------

def ref_zero_entries(buf, width):
    return sum(1 for at in range(0, len(buf), width) if not any(buf[at : at + width]))


def ref_differing_entries(a, b, width):
    return [at // width for at in range(0, len(a), width) if a[at : at + width] != b[at : at + width]]


@pytest.mark.parametrize("entries", [0, 1, 31, 4096, 4097, 3 * 4096 + 5])
def test_map_entries_against_reference(entries):
    rng = random.Random(entries)
    width = 32
    old = bytearray(entries * width)
    for i in rng.sample(range(entries), entries // 2):
        old[i * width : (i + 1) * width] = rng.randbytes(width)
    new = bytearray(old)
    for i in rng.sample(range(entries), min(entries, 40)):  # some changed, some zeroed, one byte each
        at = i * width + rng.randrange(width)
        new[at] ^= 1 + rng.randrange(255)
    assert _hot.count_zero_entries(old, width) == ref_zero_entries(old, width)
    assert _hot.count_zero_entries(memoryview(new)[width:], width) == ref_zero_entries(new[width:], width)
    assert _hot.differing_entries(old, new, width) == ref_differing_entries(old, new, width)
    assert _hot.differing_entries(bytes(old), old, width) == []


def test_map_entries_argument_checks():
    with pytest.raises(ValueError):
        _hot.count_zero_entries(bytes(33), 32)
    with pytest.raises(ValueError):
        _hot.count_zero_entries(bytes(32), 0)
    with pytest.raises(ValueError):
        _hot.differing_entries(bytes(32), bytes(64), 32)
    with pytest.raises(ValueError):
        _hot.differing_entries(bytes(40), bytes(40), 32)


# -- xxh3_64 ---------------------------------------------------------------------------

def test_xxh3_known_vector_empty():
    assert xxh3_64(b"") == 0x2D06800538D394C2
    assert xxh3_64(bytearray()) == 0x2D06800538D394C2
    assert xxh3_64(memoryview(b"abc")[3:]) == 0x2D06800538D394C2


def test_xxh3_deterministic_and_sensitive():
    rng = random.Random(2)
    data = rand_bytes(rng, 5000)
    h = xxh3_64(data)
    assert 0 <= h < 1 << 64
    assert xxh3_64(bytearray(data)) == h
    assert xxh3_64(memoryview(data)) == h
    # Flipping any single bit changes the hash, including the first and last.
    for pos in (0, 1, 2499, 4998, 4999):
        flipped = bytearray(data)
        flipped[pos] ^= 1
        assert xxh3_64(flipped) != h
    # Length matters: a trailing zero byte is not ignored.
    assert xxh3_64(data + b"\0") != h
    assert xxh3_64(b"\0") != xxh3_64(b"")


def test_xxh3_matches_the_package_on_copies():
    rng = random.Random(3)
    # Cover XXH3's internal size classes: 0-3, 4-8, 9-16, 17-128, 129-240, long.
    sizes = [0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 1024, 16383, 16384, 100001, MIB]
    for n in sizes:
        data = rand_bytes(rng, n + 7)
        for off in (0, 1, 7):
            view = memoryview(data)[off:off + n]
            assert xxh3_64(view) == ref_xxh3_64(view), (n, off)


# -- frame / unframe --------------------------------------------------------------------

def test_constants():
    assert HEADER_SIZE == 24
    assert FORMAT_VERSION == 1
    assert MAGIC == b"BDKB"
    assert issubclass(CorruptObject, ValueError)
    assert {"CorruptObject", "frame", "unframe", "is_zero", "xxh3_64"} <= set(_hot.__all__)


@pytest.mark.parametrize("n", [0, 1, 23, 24, 25, 4096, 16383, 16384, MIB])
def test_frame_layout_matches_reference(n):
    rng = random.Random(n)
    payload = rand_bytes(rng, n)
    flags, raw_len = rng.randrange(256), rng.randrange(1 << 32)
    out = frame(payload, flags, raw_len)
    assert type(out) is bytes
    assert len(out) == HEADER_SIZE + n
    # The checksum field is checked against the package's hash separately;
    # here the layout is compared using the module's own hash.
    assert out == ref_frame(payload, flags, raw_len, hasher=xxh3_64)
    assert out[:4] == b"BDKB" and out[4] == 1 and out[5] == flags and out[6:8] == b"\0\0"
    assert struct.unpack_from("<IIQ", out, 8) == (raw_len, n, xxh3_64(payload))


@pytest.mark.parametrize("n", [0, 1, 16383, 16384, MIB])
def test_frame_header_frames_the_payload_without_copying_it(n):
    """An upload sends frame_header(p) and then p itself: together they are frame(p)."""
    rng = random.Random(200 + n)
    payload = bytearray(rand_bytes(rng, n))
    flags, raw_len = rng.randrange(256), rng.randrange(1 << 32)
    header = frame_header(memoryview(payload), flags, raw_len)
    assert type(header) is bytes and len(header) == HEADER_SIZE
    assert header + payload == frame(payload, flags, raw_len)
    with pytest.raises(ValueError):
        frame_header(payload, 256, 1)


def test_frame_checksum_matches_the_package():
    payload = random.Random(9).randbytes(70000)
    assert frame(payload, 1, 123) == ref_frame(payload, 1, 123)


@pytest.mark.parametrize("n", [0, 1, 100, 16384, MIB])
def test_round_trip(n):
    rng = random.Random(100 + n)
    payload = rand_bytes(rng, n)
    flags, raw_len = rng.randrange(256), rng.randrange(1 << 32)
    framed = frame(payload, flags, raw_len)
    got_flags, got_raw, view = unframe(framed)
    assert (got_flags, got_raw) == (flags, raw_len)
    assert isinstance(view, memoryview)
    assert view.format == "B" and view.ndim == 1
    assert view == payload
    assert ref_unframe(framed, hasher=xxh3_64) == (flags, raw_len, payload)


def test_frame_accepts_buffers_and_unaligned_views():
    data = bytearray(random.Random(4).randbytes(1000))
    for off in range(8):
        view = memoryview(data)[off:]
        assert frame(view, 0, 7) == frame(bytes(view), 0, 7)
        assert frame(view.toreadonly(), 0, 7) == frame(bytes(view), 0, 7)


def test_unframe_is_zero_copy():
    framed = bytearray(frame(b"hello world", 0, 11))
    _, _, view = unframe(framed)
    framed[HEADER_SIZE] = ord("j")  # the view sees later writes: no copy was made
    assert bytes(view) == b"jello world"


def test_unframe_accepts_various_buffers():
    framed = frame(b"payload!", 3, 99)
    for obj in (framed, bytearray(framed), memoryview(framed),
                memoryview(b"xx" + framed)[2:], memoryview(framed).toreadonly(),
                memoryview(framed).cast("c")):
        flags, raw_len, view = unframe(obj)
        assert (flags, raw_len, bytes(view)) == (3, 99, b"payload!")


def test_frame_argument_checks():
    with pytest.raises(ValueError):
        frame(b"x", 256, 1)
    with pytest.raises(ValueError):
        frame(b"x", -1, 1)
    with pytest.raises(ValueError):
        frame(b"x", 0, 1 << 32)
    with pytest.raises(ValueError):
        frame(b"x", 0, -1)
    with pytest.raises(TypeError):
        frame("text", 0, 1)
    assert unframe(frame(b"x", 255, (1 << 32) - 1))[:2] == (255, (1 << 32) - 1)


def _corruptions():
    good = frame(b"some payload bytes", 1, 18)
    cases = {
        "empty": b"",
        "one byte": b"B",
        "header only minus one": good[:HEADER_SIZE - 1],
        "bad magic": b"XDKB" + good[4:],
        "magic case": b"bdkb" + good[4:],
        "version 0": good[:4] + b"\x00" + good[5:],
        "version 2": good[:4] + b"\x02" + good[5:],
        "reserved nonzero": good[:6] + b"\x01\x00" + good[8:],
        "truncated payload": good[:-1],
        "extra trailing byte": good + b"\0",
        "payload_len too big": good[:12] + struct.pack("<I", 19) + good[16:],
        "payload_len huge": good[:12] + b"\xff\xff\xff\xff" + good[16:],
        "payload bit flip": good[:30] + bytes([good[30] ^ 1]) + good[31:],
        "last byte flip": good[:-1] + bytes([good[-1] ^ 0x80]),
        "checksum flip": good[:16] + bytes([good[16] ^ 1]) + good[17:],
        "header only, nonzero len": good[:HEADER_SIZE],
    }
    empty = frame(b"", 0, 0)
    cases["empty payload, bad checksum"] = empty[:16] + b"\0" * 8
    return cases


@pytest.mark.parametrize("name,obj", sorted(_corruptions().items()))
def test_unframe_rejects_corruption(name, obj):
    with pytest.raises(CorruptObject) as info:
        unframe(obj)
    assert str(info.value)  # a message, not a bare exception
    with pytest.raises(CorruptObject):
        ref_unframe(obj, hasher=xxh3_64)  # the reference agrees it is corrupt


def test_unframe_random_damage_is_caught():
    rng = random.Random(5)
    for _ in range(300):
        payload = rand_bytes(rng, rng.randrange(0, 200))
        framed = bytearray(frame(payload, 0, len(payload)))
        pos = rng.randrange(len(framed))
        if 5 <= pos < 6 or 8 <= pos < 12:
            continue  # flags and raw_len are opaque here (checked by the codec)
        framed[pos] ^= 1 << rng.randrange(8)
        with pytest.raises(CorruptObject):
            unframe(framed)


def test_corrupt_messages_are_specific():
    good = frame(b"abc", 0, 3)
    for obj, word in [
        (good[:10], "short"),
        (b"NOPE" + good[4:], "magic"),
        (good[:4] + b"\x07" + good[5:], "version"),
        (good[:-1], "length"),
        (good[:-1] + b"x", "checksum"),
    ]:
        with pytest.raises(CorruptObject, match=word):
            unframe(obj)


# -- Bitmap --------------------------------------------------------------------------------

NBITS = [0, 1, 63, 64, 65, 127, 128, 129, 1000, 4096, 200000]


def model_bytes(model, nbits):
    words = [0] * ((nbits + 63) // 64)
    for i in model:
        words[i >> 6] |= 1 << (i & 63)
    return b"".join(w.to_bytes(8, "little") for w in words)


def check_against_model(bm, model, nbits, rng):
    assert len(bm) == nbits
    assert bm.count() == len(model)
    assert bm.any() == bool(model)
    assert list(bm.iter_set()) == sorted(model)
    assert bm.to_bytes() == model_bytes(model, nbits)
    for _ in range(20):
        start = rng.randrange(nbits + 2)
        expected = min((i for i in model if i >= start), default=-1)
        assert bm.next_set(start) == expected
        assert list(bm.iter_set(start)) == sorted(i for i in model if i >= start)
    if nbits:
        for i in {0, nbits - 1, rng.randrange(nbits)}:
            assert bm.test(i) == (i in model)


@pytest.mark.parametrize("nbits", NBITS)
def test_bitmap_random_operations_against_set_model(nbits):
    rng = random.Random(nbits)
    bm, model = Bitmap(nbits), set()
    check_against_model(bm, model, nbits, rng)
    for step in range(300):
        op = rng.choice(["set", "clear", "set_range", "clear_range", "set_range", "clear_all"]
                        if step % 50 == 49 else ["set", "clear", "set_range", "clear_range"])
        if op == "clear_all":
            bm.clear_all()
            model.clear()
        elif not nbits:
            bm.set_range(0, 0)
        elif op in ("set", "clear"):
            i = rng.randrange(nbits)
            getattr(bm, op)(i)
            (model.add if op == "set" else model.discard)(i)
            assert bm.test(i) == (op == "set")
        else:
            a = rng.randrange(nbits + 1)
            # Mostly short ranges, sometimes long ones crossing many words.
            b = min(nbits, a + (rng.randrange(200) if rng.random() < 0.8 else rng.randrange(nbits + 1)))
            getattr(bm, op)(a, b)
            if op == "set_range":
                model.update(range(a, b))
            else:
                model.difference_update(range(a, b))
        if step % 10 == 0:
            check_against_model(bm, model, nbits, rng)
    check_against_model(bm, model, nbits, rng)


@pytest.mark.parametrize("nbits", NBITS)
def test_bitmap_ranges_at_word_edges(nbits):
    edges = sorted({e for e in (0, 1, 62, 63, 64, 65, 127, 128, 129, nbits - 1, nbits) if 0 <= e <= nbits})
    for a in edges:
        for b in edges:
            if a > b:
                continue
            bm = Bitmap(nbits)
            bm.set_range(a, b)
            assert list(bm.iter_set()) == list(range(a, b)), (a, b)
            assert bm.count() == b - a
            bm.set_range(0, nbits)
            bm.clear_range(a, b)
            assert list(bm.iter_set()) == [i for i in range(nbits) if not a <= i < b]


@pytest.mark.parametrize("nbits", NBITS)
def test_bitmap_full_and_last_bit(nbits):
    bm = Bitmap(nbits)
    bm.set_range(0, nbits)
    assert bm.count() == nbits
    # The unused bits of the last word stay clear in the serialised form.
    assert bm.to_bytes() == model_bytes(range(nbits), nbits)
    if nbits:
        bm.clear_all()
        bm.set(nbits - 1)
        assert bm.next_set(0) == nbits - 1
        assert bm.next_set(nbits - 1) == nbits - 1
        assert bm.next_set(nbits) == -1
        assert list(bm.iter_set()) == [nbits - 1]
        bm.clear(nbits - 1)
        bm.set(0)
        assert list(bm.iter_set()) == [0]
        assert bm.next_set(1) == -1


def test_bitmap_matches_python_reference_bitmap():
    rng = random.Random(6)
    nbits = 5000
    bm, ref = Bitmap(nbits), PyBitmap(nbits)
    for _ in range(400):
        a = rng.randrange(nbits)
        b = min(nbits, a + rng.randrange(300))
        op = rng.choice(["set", "clear", "set_range", "clear_range"])
        args = (a,) if op in ("set", "clear") else (a, b)
        getattr(bm, op)(*args)
        getattr(ref, op)(*args)
        assert bm.count() == ref.count()
        assert bm.next_set(a) == ref.next_set(a)
    assert bm.to_bytes() == ref.to_bytes()
    assert list(bm.iter_set(17)) == list(ref.iter_set(17))
    ref.clear_all()
    assert ref.count() == 0 and not ref.any()


@pytest.mark.parametrize("nbits", NBITS)
def test_python_reference_bitmap_at_word_edges(nbits):
    # The benchmark compares Bitmap with PyBitmap, so PyBitmap must be right too.
    edges = sorted({e for e in (0, 1, 63, 64, 65, 128, nbits - 1, nbits) if 0 <= e <= nbits})
    for a in edges:
        for b in edges:
            if a <= b:
                ref = PyBitmap(nbits)
                ref.set_range(a, b)
                assert list(ref.iter_set()) == list(range(a, b))
                ref.set_range(0, nbits)
                ref.clear_range(a, b)
                assert ref.count() == nbits - (b - a)
                assert ref.to_bytes() == model_bytes(set(range(nbits)) - set(range(a, b)), nbits)


@pytest.mark.parametrize("nbits", NBITS)
def test_bitmap_bytes_round_trip(nbits):
    rng = random.Random(7 + nbits)
    bm = Bitmap(nbits)
    for _ in range(nbits // 3):
        bm.set(rng.randrange(nbits))
    data = bm.to_bytes()
    assert type(data) is bytes and len(data) == (nbits + 63) // 64 * 8
    back = Bitmap.from_bytes(nbits, data)
    assert isinstance(back, Bitmap)
    assert back.to_bytes() == data
    assert list(back.iter_set()) == list(bm.iter_set())
    assert Bitmap.from_bytes(nbits, bytearray(data)).to_bytes() == data
    assert Bitmap.from_bytes(nbits, memoryview(b"?" + data)[1:]).to_bytes() == data


def test_bitmap_from_bytes_little_endian_layout():
    bm = Bitmap.from_bytes(65, b"\x01\x00\x00\x00\x00\x00\x00\x80" + b"\x01" + b"\0" * 7)
    assert list(bm.iter_set()) == [0, 63, 64]


def test_bitmap_from_bytes_rejects_bad_input():
    with pytest.raises(ValueError):
        Bitmap.from_bytes(64, bytes(7))
    with pytest.raises(ValueError):
        Bitmap.from_bytes(64, bytes(16))
    with pytest.raises(ValueError):
        Bitmap.from_bytes(0, bytes(8))
    with pytest.raises(ValueError):  # bit 65 set in a 65-bit map (only 0..64 exist)
        Bitmap.from_bytes(65, bytes(8) + b"\x02" + bytes(7))
    assert list(Bitmap.from_bytes(65, bytes(8) + b"\x01" + bytes(7)).iter_set()) == [64]


def test_bitmap_from_bytes_keeps_subclass():
    class Sub(Bitmap):
        pass
    assert type(Sub.from_bytes(10, bytes(8))) is Sub


@pytest.mark.parametrize("nbits", [0, 1, 64, 65])
def test_bitmap_index_errors(nbits):
    bm = Bitmap(nbits)
    for bad in (-1, nbits, nbits + 1, 1 << 70, -(1 << 70)):
        for op in (bm.set, bm.clear, bm.test):
            with pytest.raises(IndexError):
                op(bad)
    with pytest.raises(IndexError):
        bm.set_range(-1, 0)
    with pytest.raises(IndexError):
        bm.set_range(0, nbits + 1)
    with pytest.raises(IndexError):
        bm.clear_range(0, 1 << 70)
    with pytest.raises(ValueError):
        bm.set_range(1, 0)  # start > stop
    with pytest.raises(ValueError):
        bm.clear_range(nbits + 1, nbits)
    with pytest.raises(IndexError):
        bm.next_set(-1)
    with pytest.raises(IndexError):
        bm.iter_set(-1)  # checked when called, not on first next()
    assert bm.next_set(nbits) == -1
    assert bm.next_set(1 << 70) == -1
    assert list(bm.iter_set(nbits + 5)) == []
    with pytest.raises(TypeError):
        bm.set(1.5)
    assert bm.count() == 0  # nothing was written by the failed calls


def test_bitmap_constructor():
    assert len(Bitmap(0)) == 0
    assert Bitmap(0).to_bytes() == b""
    assert not Bitmap(0).any()
    assert Bitmap(0).count() == 0
    with pytest.raises(ValueError):
        Bitmap(-1)
    with pytest.raises(TypeError):
        Bitmap("10")
    big = Bitmap(1 << 23)  # 1 MiB of words: the nogil paths
    big.set_range(5, (1 << 23) - 5)
    assert big.count() == (1 << 23) - 10
    assert big.next_set(0) == 5
    big.clear_range(0, 1 << 23)
    assert not big.any()
    big.set((1 << 23) - 1)
    assert big.next_set(0) == (1 << 23) - 1
    assert Bitmap.from_bytes(1 << 23, big.to_bytes()).next_set(0) == (1 << 23) - 1
    big.clear_all()
    assert big.count() == 0


def test_bitmap_iterator_sees_changes_ahead_of_it():
    bm = Bitmap(300)
    bm.set(10)
    bm.set(200)
    it = bm.iter_set()
    assert next(it) == 10
    bm.set(100)  # ahead of the iterator: seen
    bm.set(5)  # behind it: not seen
    assert list(it) == [100, 200]
    assert list(it) == []


# -- BlockTable (device/_table.pyx) against a dict ------------------------------------

def ref_table_read(blocks: dict, block_size: int, offset: int, size: int) -> bytes | None:
    """Plain reference: the bytes at offset if every touched block is present."""
    first, last = offset // block_size, (offset + size - 1) // block_size
    if size == 0 or any(i not in blocks for i in range(first, last + 1)):
        return None
    parts = []
    for i in range(first, last + 1):
        base = i * block_size
        parts.append(blocks[i][max(offset, base) - base : min(offset + size, base + block_size) - base])
    return b"".join(parts)


@pytest.mark.parametrize("capacity", [1, 6, 40])
def test_block_table_random_operations_against_dict(capacity):
    """Publish/withdraw/read at random over many more indexes than slots, so
    probe runs collide, wrap around the table and are shifted back on
    deletion; every read must match the dict (or miss exactly when it does)."""
    from bucketdisk.device._table import BlockTable

    block_size = 64
    table = BlockTable(capacity, block_size)
    rng = random.Random(capacity)
    model: dict[int, bytes] = {}
    served = 0
    for step in range(20_000):
        index = rng.randrange(4 * capacity + 8) * rng.choice((1, 1, 97, 1 << 33))
        action = rng.random()
        if action < 0.35:
            data = rng.randbytes(block_size)
            if table.publish(index, data):
                model[index] = data
            else:
                assert index not in model and len(model) >= capacity, "refused while there was room"
        elif action < 0.6:
            table.withdraw(index)
            model.pop(index, None)
        else:
            size = rng.choice((1, 7, block_size, block_size + 5, 3 * block_size))
            offset = index * block_size + rng.randrange(block_size)
            out = bytearray(size)
            want = ref_table_read(model, block_size, offset, size)
            assert table.read_into(out, offset) == (want is not None), f"step {step}"
            if want is not None:
                assert bytes(out) == want, f"step {step}: wrong bytes"
                served += 1
    assert served > 100
    for index in list(model):
        out = bytearray(block_size)
        assert table.read_into(out, index * block_size) and bytes(out) == model[index]


def test_block_table_keeps_data_alive_and_counts_hits():
    from bucketdisk.device._table import BlockTable

    table = BlockTable(4, 8)
    table.publish(3, bytearray(b"abcdefgh"))  # the table holds the only reference
    out = bytearray(4)
    assert table.read_into(out, 3 * 8 + 2) and out == b"cdef"
    assert table.referenced(3) and not table.referenced(3)
    assert table.hits == 1
    with pytest.raises(ValueError):
        table.publish(1, b"short")
    table.withdraw(3)
    assert not table.read_into(out, 3 * 8)


def test_a_stopped_block_table_serves_and_publishes_nothing():
    """A read-only mount whose volume went away stops its table: FUSE
    threads must then send every read to Python (which refuses it)."""
    from bucketdisk.device._table import BlockTable

    table = BlockTable(4, 8)
    assert table.publish(1, b"abcdefgh") and table.publish(2, b"ijklmnop")
    out = bytearray(16)
    assert table.read_into(out, 8) and out == b"abcdefghijklmnop"
    table.stop()
    assert not table.read_into(out, 8) and not table.read_into(bytearray(1), 8)
    assert not table.publish(3, b"qrstuvwx"), "a stopped table took a block"
    assert not table.read_into(out, 3 * 8)
    table.withdraw(1)  # the device may still withdraw what it had published
    assert table.hits == 2
