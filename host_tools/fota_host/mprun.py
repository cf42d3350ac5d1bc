"""Run device code on the MicroPython unix port, as deployed: compiled .mpy on the path."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

from . import devicebuild, paths


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


def command(args: Sequence[str], heap: str | None = None) -> list[str]:
    cmd = [paths.micropython_bin()]
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
