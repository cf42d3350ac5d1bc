"""Hardware in the loop: one real update of a connected board through the local platform.

Preconditions (docs/boards.md, "Hardware in the loop"):
- the board runs an OTA-capable MicroPython and was deployed (`make deploy`) with a config
  whose broker is the local platform's (or a mosquitto the platform uses);
- `fota platform serve --data DIR --public-url http://<this host's LAN address>:8080`
  runs, reachable from the board;
- IMAGE is a newer image for that board: an ESP32 app image (micropython.bin) or a Pico W
  app bundle (`fota pack bundle`). An ESP32 image must fit the board's OTA slots: the
  layout is read from the board's partition table (`table="board"`, through esptool), from
  the firmware file flashed on it or a table dump (`table=FILE`), or taken from chips.py
  for `flash_size` or the board's usual flash (boards/layout.py).

`run()` checks all of that it can, registers the image as a package, creates and starts a
task for the device, follows it until it succeeds, fails or times out, and returns a
result dict. It never touches the board itself, so it works with boards on any port.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..platform.validate import PlatformError
from . import chips, deploy, layout

FINAL = ("succeeded", "failed", "timed_out", "cancelled")


class HilError(RuntimeError):
    pass


def check_port(port: str | None) -> str:
    if not port:
        raise HilError("no serial port given: make hil PORT=/dev/ttyUSB0 BOARD=esp32 ...")
    if not os.path.exists(port):
        raise HilError(
            f"no board at {port}: this test needs a real ESP32 or Pico W connected over USB "
            "(ls /dev/ttyUSB* /dev/ttyACM*), or a simulated one (`fota sim board --link "
            "PATH`, docs/boards.md, 'Rehearse without a board'); see docs/boards.md."
        )
    return port


def _service(data_dir: Path) -> Any:
    from ..platform.client import ApiClient, connect

    try:
        client = connect(data_dir)
    except PlatformError as exc:
        raise HilError(str(exc)) from None
    if not isinstance(client, ApiClient):
        client.close()
        raise HilError(f"no platform service runs on {data_dir}: start "
                       f"`fota platform serve --data {data_dir} --public-url http://<LAN IP>:8080`")
    return client


def run(board: str, port: str | None, config: Path, data_dir: Path, image: Path,
        version: str, timeout: float = 600.0, poll: float = 2.0,
        echo: Callable[[str], None] = print, online_wait: float = 60.0,
        table: str | None = None, flash_size: str | None = None) -> dict[str, Any]:
    check_port(port)
    if board not in deploy.MISSING_LIBS:
        raise HilError(f"unknown board {board!r}; one of {', '.join(deploy.MISSING_LIBS)}")
    chip = chips.BOARDS[board].chip
    try:
        cfg = deploy.load_config(config)
    except deploy.DeployError as exc:
        raise HilError(str(exc)) from None
    if not image.is_file():
        raise HilError(f"no image at {image}")
    slots = _check_esp32(board, port, image, version, table, flash_size) if chip else None
    if not chip and (table or flash_size):
        raise HilError(f"--table/--flash-size are for ESP32 boards: a {board}'s slots are "
                       "folders on its filesystem")
    device = cfg["device_id"]
    client = _service(data_dir)
    try:
        _wait_online(client, device, online_wait, poll, echo)
        result = _follow(client, board, device, cfg, image, version, timeout, poll, echo)
        return {**result, "layout": slots.as_json() if slots else None}
    except PlatformError as exc:
        raise HilError(f"the platform refused: {exc}") from None
    finally:
        client.close()


def _check_esp32(board: str, port: str | None, image: Path, version: str,
                 table: str | None, flash_size: str | None) -> layout.Layout:
    """The image against the board's chip and OTA slots; the layout it was checked against."""
    from ..images import esp32check, esp_image
    from ..images.esp_image import ImageError

    try:
        slots = layout.resolve(board, port, table, flash_size)
    except layout.LayoutError as exc:
        raise HilError(str(exc)) from None
    data = image.read_bytes()
    if len(data) > slots.slot_size:
        raise HilError(
            f"{image}: {len(data)} bytes does not fit the {slots.slot_size:#x} byte OTA slot "
            f"of {slots.source} (over by {len(data) - slots.slot_size} bytes)")
    # the layout name of that slot size, else the largest (the size is checked above)
    names = {v: k for k, v in esp_image.PARTITION_LAYOUTS.items()}
    name = names.get(slots.slot_size, max(esp_image.PARTITION_LAYOUTS,
                                          key=esp_image.PARTITION_LAYOUTS.__getitem__))
    try:
        esp32check.check_image(data, version, chips.BOARDS[board].chip or "esp32", name)
    except ImageError as exc:
        raise HilError(f"{image}: {exc}") from None
    return slots


def _wait_online(client: Any, device: str, wait: float, poll: float,
                 echo: Callable[[str], None]) -> None:
    """The board must have informed the platform (it is deployed and reaches the broker)
    before a task for it means anything; `wait` seconds for a board that is booting."""
    deadline = time.monotonic() + wait
    said = False
    while True:
        seen = next((d for d in client.list_devices() if d["id"] == device), None)
        if seen and seen.get("online"):
            return
        if time.monotonic() > deadline:
            raise HilError(
                f"device {device} {'is offline' if seen else 'never informed the platform'}"
                f" (waited {wait:.0f}s): is the board deployed with this config (make deploy "
                "... CONFIG=...), and can it reach the broker the config names?")
        if not said:
            echo(f"hil: waiting for {device} to come online")
            said = True
        time.sleep(poll)


def _follow(client: Any, board: str, device: str, cfg: dict[str, Any], image: Path,
            version: str, timeout: float, poll: float,
            echo: Callable[[str], None]) -> dict[str, Any]:
    pkg = client.create_package(file=str(image), version=version, module=cfg["module"])
    task = client.create_task(package=pkg["id"], name=f"hil {device} {version}")
    added = client.add_devices(task["id"], [device])
    if not added or not added[0].get("ok"):
        raise HilError(f"the platform refused device {device}: {added}")
    client.start_task(task["id"])
    echo(f"hil: task {task['id']} started: {device} -> {version}")
    started = time.monotonic()
    last = None
    while True:
        state = client.get_task(task["id"])
        sub = next(d for d in state["devices"] if d["device"] == device)
        now = (sub["state"], sub["step"], sub["desc"])
        if now != last:
            echo(f"hil: {sub['state']} step {sub['step']} {sub['desc'] or ''}".rstrip())
            last = now
        if sub["state"] in FINAL:
            break
        if time.monotonic() - started > timeout:
            client.cancel(task["id"], [device])
            sub = {**sub, "state": "timed_out", "desc": f"no result in {timeout:.0f}s"}
            break
        time.sleep(poll)
    return {"ok": sub["state"] == "succeeded", "device": device, "board": board,
            "version": version, "task": task["id"], "state": sub["state"],
            "step": sub["step"], "desc": sub["desc"],
            "seconds": round(time.monotonic() - started, 1)}
