"""Signature figures: RSA-3072 Secure Boot V2 verification time and heap on the unix port.

`signature_verify_ms`: median of 40 `sbv2.verify` calls (the whole check of one
block: CRC, key digest, RSA-PSS), the device code compiled to .mpy.
`signature_verify_heap_bytes`: how much larger the smallest `-X heapsize` must be
for the verification to pass than for the same program that only hashes the file
and reads the sector into the block buffer (the 64-bit unix port; a 32-bit board
needs somewhat less).

Run alone: `.venv/bin/python bench/bench_signature.py` prints the JSON object.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from fota_host.images import signing
from fota_host.paths import firmware_dir, micropython_bin, mpy_cross_bin

HERE = Path(__file__).parent
IMAGE_SIZE = 1_468_000


def _prepare(root: Path) -> tuple[Path, str]:
    """A signed pseudo-random image, and sbv2 plus the probe compiled to .mpy in `root`."""
    key = signing.generate_key()
    image = (bytes(range(256)) * (IMAGE_SIZE // 256 + 1))[:IMAGE_SIZE]
    signed = root / "signed.bin"
    signed.write_bytes(signing.sign(image, key))
    (root / "fota").mkdir()
    (root / "fota" / "__init__.py").write_text("")
    subprocess.run([mpy_cross_bin(), "-o", str(root / "fota" / "sbv2.mpy"),
                    str(firmware_dir() / "fota" / "sbv2.py")], check=True)
    subprocess.run([mpy_cross_bin(), "-o", str(root / "signature_probe.mpy"),
                    str(HERE / "signature_probe.py")], check=True)
    return signed, signing.key_digest(key)


def _probe(root: Path, mode: str, signed: Path, digest: str, heap: int | None = None,
           ) -> subprocess.CompletedProcess:
    cmd = [micropython_bin()]
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    cmd += ["-m", "signature_probe", mode, str(signed), digest]
    env = {**os.environ, "MICROPYPATH": str(root)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=120)


def min_heap(root: Path, mode: str, signed: Path, digest: str) -> int:
    """Smallest -X heapsize (bytes, to 16) where the probe prints DONE."""
    lo, hi = 2048, 256 * 1024
    while hi - lo > 16:
        mid = (lo + hi) // 2
        if "DONE" in _probe(root, mode, signed, digest, mid).stdout:
            hi = mid
        else:
            lo = mid
    return hi


def figures(root: Path) -> dict[str, float]:
    signed, digest = _prepare(root)
    proc = _probe(root, "time", signed, digest)
    timing = json.loads(proc.stdout.strip().splitlines()[-1])
    heap = min_heap(root, "verify", signed, digest) - min_heap(root, "base", signed, digest)
    return {"signature_verify_ms": timing["ms_median"], "signature_verify_heap_bytes": heap}


def run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        return figures(Path(tmp))


if __name__ == "__main__":
    print(json.dumps(run()))
    sys.exit(0)
