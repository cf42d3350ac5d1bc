"""The claim "each board runs the engine and agent suites in simulation" (#18), checked on
what pytest collects: every test of tests/firmware/engine and tests/firmware/agent runs on
every board of a family (esp32, esp32s3, esp32c3, esp32c6 / pico_w, pico2_w), or is named
board-independent, with its reason, in tests/firmware/conftest.py."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from fota_host.boards import chips

FIRMWARE = Path(__file__).resolve().parents[2] / "firmware"
SUITES = ("engine", "agent")


def board_independent() -> dict[str, str]:
    spec = importlib.util.spec_from_file_location("firmware_conftest",
                                                  FIRMWARE / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.BOARD_INDEPENDENT


def collected() -> dict[str, set[str]]:
    """"suite/file.py::test" -> the boards named in its collected ids."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
         *(str(FIRMWARE / s) for s in SUITES)],
        capture_output=True, text=True, timeout=300, cwd=FIRMWARE.parents[1])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out: dict[str, set[str]] = defaultdict(set)
    for line in proc.stdout.splitlines():
        m = re.match(r"tests/firmware/(\w+/test_\w+\.py::\w+)(?:\[(.*)\])?$", line.strip())
        if m:
            out[m[1]] |= set((m[2] or "").split("-")) & set(chips.BOARDS)
    return out


def test_every_test_runs_per_board_or_says_why_not() -> None:
    tests = collected()
    assert len(tests) > 60, tests                  # both suites were collected
    families = [{b for b, s in chips.BOARDS.items() if s.family == f}
                for f in ("esp32", "pico_w")]
    known = board_independent()
    once = {t for t in tests if any(fnmatch.fnmatchcase(t, pat) for pat in known)}
    unsaid = [t for t, boards in tests.items()
              if t not in once and not any(f <= boards for f in families)]
    assert not unsaid, ("neither run on every board of a family nor named in "
                        f"tests/firmware/conftest.py BOARD_INDEPENDENT: {unsaid}")
    # what is named board-independent exists, runs once, and carries a reason
    for pattern, why in known.items():
        assert why.strip(), pattern
        if "*" not in pattern.split("::")[0]:
            assert any(fnmatch.fnmatchcase(t, pattern) for t in tests), f"stale: {pattern}"
    assert not [t for t in once if len(tests[t]) > 1], "per-board tests named as run-once"
    # and each new board runs as many tests as the first board of its family
    per_board = {b: sum(b in boards for boards in tests.values()) for b in chips.BOARDS}
    assert per_board["esp32s3"] == per_board["esp32c3"] == per_board["esp32c6"] == \
        per_board["esp32"] > 20, per_board
    assert per_board["pico2_w"] == per_board["pico_w"] > 10, per_board
