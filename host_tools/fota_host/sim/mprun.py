"""Run device code on the MicroPython unix port, as deployed: compiled .mpy on the path."""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import paths
from ..boards import build as devicebuild


def micropath(extra: Sequence[Path | str] = ()) -> str:
    """MICROPYPATH for simulated devices: the hardware stand-ins first, then the device build."""
    parts = [str(p) for p in extra] + [str(paths.sim_dir()), str(paths.device_dir()), ".frozen"]
    return ":".join(parts)


def device_env(flash: Path | None = None, extra_path: Sequence[Path | str] = (),
               env: dict[str, str] | None = None) -> dict[str, str]:
    out = dict(os.environ)
    out["MICROPYPATH"] = micropath(extra_path)
    if flash is not None:
        out["FOTA_FLASH"] = str(Path(flash).resolve())
    if env:
        out.update(env)
    return out


# The wheel's `micropython` command is a Python script around an extension module; its
# Python start-up (site-packages, .pth files) costs more than MicroPython's own. Started
# this way (isolated, no site) a simulated board boots in ~2/3 of the time.
_FAST_START = ("import sys; sys.path.insert(0, sys.argv.pop(1)); import micropython_run; "
               "sys.exit(micropython_run.run_main(['micropython'] + sys.argv[1:]))")


def _interpreter() -> list[str]:
    return _start_command(paths.micropython_bin())   # $MICROPYTHON may change


@functools.cache
def _start_command(exe: str) -> list[str]:
    """How to start the unix port: the wheel's extension module directly when `exe` is
    the wheel's own `micropython` script, else `exe` as it is."""
    spec = importlib.util.find_spec("micropython_run")
    try:
        with open(exe, "rb") as f:
            head = f.read(512)
    except OSError:
        return [exe]
    if spec is None or not spec.origin or b"from micropython_unix import" not in head:
        return [exe]
    return [sys.executable, "-I", "-S", "-c", _FAST_START, str(Path(spec.origin).parent)]


def command(args: Sequence[str], heap: str | None = None) -> list[str]:
    cmd = list(_interpreter())
    if heap:
        cmd += ["-X", f"heapsize={heap}"]
    return cmd + list(args)


def run(args: Sequence[str], heap: str | None = None, flash: Path | None = None,
        extra_path: Sequence[Path | str] = (), env: dict[str, str] | None = None,
        timeout: float | None = 120, build: bool = True, cwd: Path | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """Run `micropython [-X heapsize=H] ARGS` with the device build on its path."""
    if build:
        devicebuild.ensure_built()
    return subprocess.run(
        command(args, heap), env=device_env(flash, extra_path, env), cwd=cwd,
        capture_output=True, text=True, timeout=timeout,
    )


def popen(args: Sequence[str], heap: str | None = None, flash: Path | None = None,
          extra_path: Sequence[Path | str] = (), env: dict[str, str] | None = None,
          build: bool = True, cwd: Path | None = None, **kwargs) -> subprocess.Popen:
    if build:
        devicebuild.ensure_built()
    return subprocess.Popen(command(args, heap), env=device_env(flash, extra_path, env),
                            cwd=cwd, **kwargs)
