"""The host side of compressed and delta images: what `fota pack` will print, and the
container's promises the device relies on (independent chunks, exact index)."""

from __future__ import annotations

import hashlib
import os

import pytest
from fota_host.images import delta as D


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    """An old and a new image of a few chunks: the new one shares most of the old."""
    rnd = os.urandom(50_000)
    old = rnd * 3 + bytes(range(256)) * 100
    new = old[:70_000] + b"NEW VERSION 2" + old[70_000:160_000] + os.urandom(3000) + old[160_000:]
    return old, new


def test_describe_reports_size_digests_kind_and_ratio(pair):
    old, new = pair
    data = D.delta(old, new, chunk=16384)
    info = D.describe(data)
    assert info["kind"] == "delta" and info["size"] == len(data)
    assert info["md5"] == hashlib.md5(data).hexdigest()
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["image_sha256"] == hashlib.sha256(new).hexdigest()
    assert info["base_sha256"] == hashlib.sha256(old).hexdigest()
    assert info["ratio"] == round(len(data) / len(new), 4) and info["ratio"] < 0.2
    comp = D.describe(D.compress(new))
    assert comp["kind"] == "compressed" and comp["image_size"] == len(new)
    plain = D.describe(new)
    assert (plain["kind"], plain["ratio"], plain["size"]) == ("full", 1.0, len(new))


def test_every_chunk_inflates_on_its_own_to_the_rest_of_the_stream(pair):
    old, new = pair
    data = D.delta(old, new, chunk=16384)
    head = D.parse_header(data)
    stream = D.chunk_stream(data, 0)
    assert D.apply(old, stream) == new
    assert len(head.index) == -(-len(new) // 16384)
    for i, entry in enumerate(head.index):
        assert entry.out_offset == i * 16384
        tail = D.chunk_stream(data, i)          # a fresh inflater from the chunk's offset
        assert stream.endswith(tail) and tail
    comp = D.compress(new, chunk=8192)
    for i, entry in enumerate(D.parse_header(comp).index):
        assert D.chunk_stream(comp, i) == new[entry.out_offset:]


def test_decode_checks_the_base_and_the_file(pair):
    old, new = pair
    data = D.delta(old, new)
    assert D.decode(data, old) == new
    assert D.decode(D.compress(new)) == new
    with pytest.raises(D.FormatError, match="base mismatch"):
        D.decode(data, new)
    with pytest.raises(D.FormatError):
        D.decode(data[:-10], old)
    with pytest.raises(D.FormatError, match="CRC"):
        D.parse_header(data[:50] + bytes([data[50] ^ 1]) + data[51:])


def test_bad_parameters_are_refused(pair):
    old, new = pair
    with pytest.raises(ValueError):
        D.compress(new, chunk=1000)
    with pytest.raises(ValueError):
        D.delta(old, new, wbits=16)
    with pytest.raises(ValueError):
        D.compress(b"")
