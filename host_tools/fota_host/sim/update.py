"""Simulated devices on the MicroPython unix port (the device code runs as .mpy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import flash as simflash
from . import mprun

DEFAULT_HEAP = "64K"


def prepare(flash: Path, board: str, version: str | None = None) -> dict[str, Any]:
    """Create the flash folder on first use (seeded with `version`, default 0.0.0)."""
    created = simflash.init_flash(flash, board)
    if created or (version and simflash.status(flash)["version"] is None):
        simflash.seed(flash, version or "0.0.0")
    return simflash.status(flash)


def update(flash: Path, board: str, source: str, md5: str, size: int,
           sha256: str | None = None, heap: str = DEFAULT_HEAP, task: int = 0,
           lock_heap: bool = False, readback: bool = True, ca: Path | None = None,
           insecure: bool = False, timeout: float = 600, trust: list[str] | None = None,
           allow_unsigned: bool = False, journal: bool = True) -> dict[str, Any]:
    """One update on the unix port into the simulated flash; returns the device's report.
    `trust`: key digests (64 hex) the image must be signed by (none: no signature check)."""
    flash = Path(flash).resolve()
    prepare(flash, board)
    family = simflash.chips.BOARDS[board].family     # the device code of esp32s3 is esp32's
    if simflash.board_of(flash) != family:
        raise simflash.SimError(f"{flash} holds a {simflash.model_of(flash)}, not a {board}")
    board = family
    if "://" not in source:
        source = str(Path(source).resolve())
    args = ["-m", "fota_sim", "update", board, source, md5, str(size)]
    if sha256:
        args.append(sha256)
    args += ["--task", str(task)]
    if lock_heap:
        args.append("--lock-heap")
    if not readback:
        args.append("--no-readback")
    if ca:
        args += ["--ca", str(Path(ca).resolve())]
    if insecure:
        args.append("--insecure")
    for digest in trust or ():
        args += ["--trust", digest]
    if allow_unsigned:
        args.append("--allow-unsigned")
    if not journal:
        args.append("--no-journal")
    proc = mprun.run(args, heap=heap, flash=flash, cwd=flash, timeout=timeout)
    return parse_report(proc.stdout, proc.stderr, proc.returncode)


def parse_report(stdout: str, stderr: str, returncode: int) -> dict[str, Any]:
    for line in reversed(stdout.strip().splitlines()):
        try:
            report = json.loads(line)
        except ValueError:
            continue
        if isinstance(report, dict) and "step" in report:
            return report
    tail = (stderr.strip() or stdout.strip()).splitlines()[-3:]
    return {"ok": False, "step": -1,
            "reason": f"device crashed (exit {returncode}): {' | '.join(tail)}",
            "bytes": 0}
