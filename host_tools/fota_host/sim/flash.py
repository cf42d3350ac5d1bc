"""Simulated flash folders for the unix port, and the simulated bootloader.

An ESP32 flash folder holds `ota_0` and `ota_1` (1.5 MiB each, erased = 0xFF),
`otadata.json` (boot selection and per-slot OTA state), `running` (the slot the
last simulated boot started) and `board`. A Pico W flash folder is the board's
filesystem: `slots/a|b/`, `fota_boot.json`, `board`.

`boot()` is a simulated hard reset. On ESP32 it applies ESP-IDF's bootloader
rules with app rollback enabled: a slot in state `new` boots once as
`pending_verify`; a slot still `pending_verify` at the next reset is `aborted`
and the other slot boots; a slot whose image fails validation is never booted.
On Pico W it runs the device's own launcher (fota.fileslot.launch) on the unix port.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..boards import chips
from ..images import bundle, esp_image
from . import mprun

BOARDS = ("esp32", "pico_w")     # families; every board of chips.BOARDS is one of them
ESP32_SLOTS = ("ota_0", "ota_1")
SEED_IMAGE_SIZE = 64 * 1024


class SimError(RuntimeError):
    pass


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def board_of(flash: Path) -> str:
    try:
        board = (Path(flash) / "board").read_text().strip()
    except OSError:
        raise SimError(f"{flash} is not a simulated flash folder (no 'board' file)") from None
    if board not in BOARDS:
        raise SimError(f"{flash}/board names an unknown board {board!r}")
    return board


def model_of(flash: Path) -> str:
    """The board a flash folder simulates (esp32s3, pico2_w, ...): its `model` file, else
    its family (folders made before there were models)."""
    try:
        return (Path(flash) / "model").read_text().strip()
    except OSError:
        return board_of(flash)


def init_flash(flash: Path, board: str) -> bool:
    """Create an erased flash folder for `board` (any of chips.BOARDS: its `board` file
    says the family, `model` the board); False if it already exists."""
    flash = Path(flash)
    if board not in chips.BOARDS:
        raise SimError(f"unknown board {board!r}; one of {', '.join(chips.BOARDS)}")
    spec = chips.BOARDS[board]
    if (flash / "board").exists():
        existing = model_of(flash)
        if existing != board and existing != spec.family:
            raise SimError(f"{flash} holds a simulated {existing}, not a {board}")
        return False
    flash.mkdir(parents=True, exist_ok=True)
    (flash / "model").write_text(board)
    board = spec.family
    if board == "esp32":
        # The slot of MicroPython's OTA table for the board's usual flash (0x180000 on
        # 4 MiB, 0x270000 on the S3's 8 MiB): what `fota board prepare` writes too.
        erased = b"\xff" * (spec.ota_slot or esp_image.OTA_SLOT_SIZE)
        for label in ESP32_SLOTS:
            (flash / label).write_bytes(erased)
        _write_otadata(flash, {"boot": "ota_0",
                               "states": {"ota_0": "valid", "ota_1": "undefined"}})
        (flash / "running").write_text("ota_0")
    else:
        (flash / "slots").mkdir(exist_ok=True)
    (flash / "board").write_text(board)
    return True


def _read_otadata(flash: Path) -> dict[str, Any]:
    try:
        return json.loads((flash / "otadata.json").read_text())
    except (OSError, ValueError) as exc:
        raise SimError(f"{flash}/otadata.json is unreadable: {exc}") from None


def _write_otadata(flash: Path, data: dict[str, Any]) -> None:
    _write_atomic(flash / "otadata.json", json.dumps(data))


def seed(flash: Path, version: str, fail_health: bool = False) -> None:
    """Put a confirmed image of `version` in the first slot, as a factory flash would."""
    flash = Path(flash)
    board = board_of(flash)
    if board == "esp32":
        chip = chips.BOARDS.get(model_of(flash), chips.BOARDS["esp32"]).chip or "esp32"
        image = esp_image.build_sim_image(version, SEED_IMAGE_SIZE, chip=chip,
                                          fail_health=fail_health)
        with open(flash / "ota_0", "r+b") as f:
            f.write(image)
        _write_otadata(flash, {"boot": "ota_0",
                               "states": {"ota_0": "valid", "ota_1": "undefined"}})
        (flash / "running").write_text("ota_0")
    else:
        slot = flash / "slots" / "a"
        slot.mkdir(parents=True, exist_ok=True)
        for name, data in bundle.sim_app(version, fail_health).items():
            (slot / name).write_bytes(data)
        (slot / "manifest.json").write_text(json.dumps({"version": version}))
        _write_atomic(flash / "fota_boot.json", json.dumps(
            {"active": "a", "previous": None, "confirmed": True, "trial": 0}))


def _esp32_image(flash: Path, label: str) -> esp_image.AppImage | None:
    data = (flash / label).read_bytes()
    if data[:1] == b"\xff":
        return None
    try:
        return esp_image.parse_app_image(data)
    except esp_image.ImageError:
        return None


def boot(flash: Path, full_status: bool = True) -> dict[str, Any]:
    """A simulated hard reset; returns the status after it. With `full_status=False`
    (the supervisor, at every simulated reboot) only running/version/pending, from the
    validation the bootloader just did, instead of validating both slots again."""
    flash = Path(flash)
    if board_of(flash) == "esp32":
        data = _read_otadata(flash)
        states = data["states"]
        sel = data["boot"]
        other = ESP32_SLOTS[1 - ESP32_SLOTS.index(sel)]
        if states.get(sel) == "new":
            states[sel] = "pending_verify"
        elif states.get(sel) == "pending_verify":
            states[sel] = "aborted"          # reset before confirming: roll back
            sel = other
        img = None if states.get(sel) in ("aborted", "invalid") else _esp32_image(flash, sel)
        if img is None:
            sel = ESP32_SLOTS[1 - ESP32_SLOTS.index(sel)]
            img = _esp32_image(flash, sel)
            if img is None:
                raise SimError(f"{flash}: no bootable image in either slot")
        data["boot"] = sel
        _write_otadata(flash, data)
        _write_atomic(flash / "running", sel)
        if not full_status:
            return {"running": sel, "version": img.version,
                    "pending": states.get(sel) == "pending_verify"}
    else:
        proc = mprun.run(["-m", "fota_sim", "launch"], flash=flash, cwd=flash, timeout=60)
        if proc.returncode != 0:
            raise SimError(f"launcher failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return status(flash)


def confirm(flash: Path) -> dict[str, Any]:
    """What the agent does once the new image is healthy (mark_app_valid_cancel_rollback)."""
    flash = Path(flash)
    if board_of(flash) == "esp32":
        data = _read_otadata(flash)
        running = (flash / "running").read_text().strip()
        data["states"][running] = "valid"
        _write_otadata(flash, data)
        (flash / "fota_trial.json").unlink(missing_ok=True)
    else:
        pointer = _pico_pointer(flash)
        pointer.update(confirmed=True, trial=0)
        pointer.pop("task", None)
        pointer.pop("crc", None)        # the device's checksum covered the old content
        _write_atomic(flash / "fota_boot.json", json.dumps(pointer))
    return status(flash)


def _pico_pointer(flash: Path) -> dict[str, Any]:
    try:
        return json.loads((flash / "fota_boot.json").read_text())
    except FileNotFoundError:
        return {"active": "a", "previous": None, "confirmed": True, "trial": 0}
    except (OSError, ValueError) as exc:
        raise SimError(f"{flash}/fota_boot.json is unreadable: {exc}") from None


def status(flash: Path) -> dict[str, Any]:
    flash = Path(flash)
    board = board_of(flash)
    if board == "esp32":
        data = _read_otadata(flash)
        running = (flash / "running").read_text().strip()
        versions: dict[str, str | None] = {}
        for label in ESP32_SLOTS:
            img = _esp32_image(flash, label)
            versions[label] = img.version if img else None
        return {"board": board, "model": model_of(flash), "running": running,
                "boot": data["boot"],
                "pending": data["states"].get(running) == "pending_verify",
                "states": data["states"], "versions": versions,
                "version": versions.get(running)}
    pointer = _pico_pointer(flash)
    versions = {}
    for slot in ("a", "b"):
        try:
            versions[slot] = json.loads(
                (flash / "slots" / slot / "manifest.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            versions[slot] = None
    active = pointer.get("active", "a")
    unconfirmed = not pointer.get("confirmed", True)
    trial = pointer.get("trial", 0)
    # Switched but not rebooted yet (trial 0): the previous slot still runs.
    running = pointer.get("previous") or active if unconfirmed and not trial else active
    return {"board": board, "model": model_of(flash), "running": running, "boot": active,
            "pending": unconfirmed and trial > 0 and running == active, "trial": trial,
            "versions": versions, "version": versions.get(running)}
