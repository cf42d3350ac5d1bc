"""Deploy the device side to a board over USB with mpremote: a plan of exact commands.

What a board gets:
- `lib/fota/*.mpy`: the fota package compiled with mpy-cross, only the modules the board
  runs (no fileslot on ESP32, no esp32slot/esp32trial on Pico W). Any older `lib/fota`
  is removed first, so a stale `.py` (e.g. from `mip install`) cannot shadow the `.mpy`.
- the MQTT library where the firmware lacks it: official ESP32 builds freeze
  umqtt.simple, Pico W builds have no umqtt, so Pico W gets `lib/umqtt/simple.mpy`.
- the board's entry files `boot.py` and `main.py` (firmware/boards/<board>/).
- the device config as `fota_config.json`, and the CA certificate files it names
  (broker.ca, download.ca), looked up next to the config file and copied to the path the
  config names.
Then a hard reset. `plan()` only computes; `run()` executes the plan.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import paths
from . import build as devicebuild
from . import chips
from .fields import FieldError, check_board
from .typecheck import BOARD_PORT, PORT_ONLY

CONFIG_NAME = "fota_config.json"
# Libraries the official firmware does not freeze: device path -> file in build/device.
MISSING_LIBS = {"esp32": {}, "pico_w": {"lib/umqtt/simple.mpy": "umqtt/simple.mpy"}}
for _b in chips.BOARDS.values():     # the newer boards need what their family needs
    MISSING_LIBS.setdefault(_b.name, MISSING_LIBS[_b.family])


class DeployError(RuntimeError):
    pass


@dataclass
class Plan:
    board: str
    port: str
    commands: list[list[str]]
    files: dict[str, str]        # device path -> local file

    def lines(self) -> list[str]:
        return [shlex.join(c) for c in self.commands]


def mpremote_bin() -> str:
    venv = Path(sys.prefix) / "bin" / "mpremote"
    return str(venv) if venv.exists() else "mpremote"


def _device_config_check(cfg: Any) -> dict[str, Any]:
    """The device's own validation (firmware/fota/config.py runs under CPython too)."""
    src = paths.firmware_dir() / "fota" / "config.py"
    spec = importlib.util.spec_from_file_location("_fota_device_config", src)
    if spec is None or spec.loader is None:
        raise DeployError(f"cannot load {src}")
    module = importlib.util.module_from_spec(spec)
    # Device modules may `from micropython import const`: under CPython const() is the
    # identity, as MicroPython's own docs suggest for code shared with CPython.
    shim = "micropython" not in sys.modules
    if shim:
        import types

        stand_in = types.ModuleType("micropython")
        stand_in.const = lambda value: value  # type: ignore[attr-defined]
        sys.modules["micropython"] = stand_in
    try:
        spec.loader.exec_module(module)
    finally:
        if shim:
            del sys.modules["micropython"]
    try:
        return module.validate(cfg)
    except module.ConfigError as exc:
        raise DeployError(f"bad device config: {exc}") from None


def load_config(path: Path) -> dict[str, Any]:
    try:
        cfg = json.loads(Path(path).read_text())
    except OSError as exc:
        raise DeployError(f"cannot read the device config {path}: {exc}") from None
    except ValueError as exc:
        raise DeployError(f"{path} is not valid JSON: {exc}") from None
    return _device_config_check(cfg)


def ca_files(cfg: dict[str, Any], config_path: Path) -> dict[str, str]:
    """Device path -> local file for every CA certificate the config names."""
    out: dict[str, str] = {}
    for section in ("broker", "download"):
        name = (cfg.get(section) or {}).get("ca")
        if not name:
            continue
        device_path = name.lstrip("/")
        local = (Path(config_path).resolve().parent / device_path)
        if not local.is_file():
            raise DeployError(
                f"{section}.ca names {name!r}, but {local} does not exist: put the CA "
                "certificate next to the config, under the name the config gives it"
            )
        out[device_path] = str(local)
    return out


def fota_modules(board: str) -> list[str]:
    """Module names of the fota package this board needs."""
    port = BOARD_PORT[board]
    return [p.stem for p in sorted((paths.firmware_dir() / "fota").glob("*.py"))
            if PORT_ONLY.get(p.name, port) == port]


# Run on the board first: remove the old package, create the folders the copies need.
_PREPARE = """import os
def rm(p):
    try:
        for e in os.ilistdir(p):
            q = p + "/" + e[0]
            rm(q) if e[1] == 0x4000 else os.remove(q)
        os.rmdir(p)
    except OSError:
        pass
rm("lib/fota")
for d in {dirs}:
    try:
        os.mkdir(d)
    except OSError:
        pass
"""


def _parents(device_paths: list[str]) -> list[str]:
    dirs: list[str] = []
    for p in device_paths:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.append(d)
    return dirs


def plan(board: str, port: str, config: Path, build: bool = True) -> Plan:
    """The exact mpremote commands that deploy `board` on the serial `port`."""
    if board not in BOARD_PORT:
        raise DeployError(f"unknown board {board!r}; one of {', '.join(BOARD_PORT)}")
    if not port:
        raise DeployError("no serial port given (PORT=/dev/ttyUSB0 or /dev/ttyACM0)")
    cfg = load_config(config)
    try:
        check_board(cfg, board, str(config))
    except FieldError as exc:
        raise DeployError(str(exc)) from None
    if build:
        try:
            devicebuild.ensure_built()
        except (devicebuild.BuildError, OSError) as exc:
            raise DeployError(f"building the device code failed: {exc}") from None
    device = paths.device_dir()
    files: dict[str, str] = {}
    for name in fota_modules(board):
        files[f"lib/fota/{name}.mpy"] = str(device / "fota" / f"{name}.mpy")
    for dest, rel in MISSING_LIBS[board].items():
        files[dest] = str(device / rel)
    missing = [f for f in files.values() if not Path(f).is_file()]
    if missing:
        raise DeployError(f"not built: {', '.join(missing)} (run `make setup`)")
    boards = paths.firmware_dir() / "boards" / chips.family(board)   # S3/C3/C6: esp32's
    extra = {"boot.py": str(boards / "boot.py"), "main.py": str(boards / "main.py"),
             CONFIG_NAME: str(Path(config).resolve()), **ca_files(cfg, config)}
    files.update(extra)

    mp = [mpremote_bin(), "connect", port]
    lib_dirs = sorted({"lib/fota", *(_parents(list(files)))}, key=lambda d: (d.count("/"), d))
    dirs = "(" + "".join(f'"{d}", ' for d in lib_dirs) + ")"
    commands = [mp + ["exec", _PREPARE.format(dirs=dirs)]]
    by_dir: dict[str, list[str]] = {}
    for dest, local in files.items():
        if dest in extra:
            continue
        by_dir.setdefault(dest.rsplit("/", 1)[0], []).append(local)
    for folder, locals_ in by_dir.items():
        commands.append(mp + ["fs", "cp", *locals_, f":{folder}/"])
    singles: list[str] = []
    for dest, local in extra.items():
        singles += (["+"] if singles else []) + ["fs", "cp", local, f":{dest}"]
    commands.append(mp + singles)
    commands.append(mp + ["reset"])
    return Plan(board, port, commands, files)


def run(p: Plan, echo: Any = print) -> None:
    """Execute the plan; stops at the first failing command."""
    if not p.port.startswith(("rfc2217://", "socket://")) and not os.path.exists(p.port) \
            and not p.port.startswith(("COM", "id:", "port:")):
        raise DeployError(
            f"no board at {p.port}: connect it over USB (ls /dev/ttyUSB* /dev/ttyACM*) and "
            "pass PORT=..., or use DRY_RUN=1 to see the commands"
        )
    for cmd in p.commands:
        echo(shlex.join(cmd))
        proc = subprocess.run(cmd)
        if proc.returncode != 0:
            raise DeployError(f"mpremote failed (exit {proc.returncode}): {shlex.join(cmd)}")
