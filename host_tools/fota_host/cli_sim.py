"""`fota sim`: simulated devices on the MicroPython unix port."""

from __future__ import annotations

from pathlib import Path

import click

from .cli import emit_json, fail

FLASH = click.option("--flash", type=click.Path(file_okay=False, path_type=Path), required=True,
                     help="Simulated flash folder (created on first use).")
BOARD = click.option("--board", type=click.Choice(["esp32", "pico_w"]), default="esp32",
                     show_default=True)


@click.group("sim")
def sim() -> None:
    """Simulated ESP32 and Pico W boards on the MicroPython unix port."""


@sim.command("init")
@FLASH
@BOARD
@click.option("--version", "version", help="Seed an empty flash with an image of this version.")
def init_cmd(flash: Path, board: str, version: str | None) -> None:
    """Create a simulated flash folder."""
    from . import sim as simmod
    from .simflash import SimError

    try:
        emit_json(simmod.prepare(flash, board, version))
    except SimError as exc:
        fail(str(exc))


@sim.command("update")
@FLASH
@BOARD
@click.argument("source")
@click.option("--md5", required=True, help="Expected MD5 (32 hex digits).")
@click.option("--size", required=True, type=click.IntRange(min=1), help="Image size in bytes.")
@click.option("--sha256", help="Expected SHA-256 as well.")
@click.option("--heap", default="64K", show_default=True, help="MicroPython heap (-X heapsize).")
@click.option("--task", default=0, type=int, help="Task id recorded in the resume journal.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CA certificate (PEM) for https sources.")
@click.option("--insecure", is_flag=True, help="Allow https without a CA (not verified).")
@click.option("--no-readback", is_flag=True, help="Skip re-reading the slot after writing.")
def update_cmd(flash: Path, board: str, source: str, md5: str, size: int, sha256: str | None,
               heap: str, task: int, ca: Path | None, insecure: bool, no_readback: bool) -> None:
    """One update from SOURCE (URL or file) into the simulated flash; prints one JSON line."""
    import re
    import sys

    from . import sim as simmod
    from .simflash import SimError

    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        fail("--md5 must be 32 hex digits")
    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        fail("--sha256 must be 64 hex digits")
    try:
        report = simmod.update(flash, board, source, md5, size, sha256, heap, task,
                               readback=not no_readback, ca=ca, insecure=insecure)
    except SimError as exc:
        fail(str(exc))
    emit_json(report)
    sys.exit(0 if report.get("ok") else 1)


@sim.command("status")
@FLASH
def status_cmd(flash: Path) -> None:
    """Board, running and boot slots, pending verify, versions per slot."""
    from .simflash import SimError, status

    try:
        emit_json(status(flash))
    except SimError as exc:
        fail(str(exc))


@sim.command("boot")
@FLASH
def boot_cmd(flash: Path) -> None:
    """A simulated hard reset, applying the bootloader's rollback rules."""
    from .simflash import SimError, boot

    try:
        emit_json(boot(flash))
    except SimError as exc:
        fail(str(exc))


@sim.command("confirm")
@FLASH
def confirm_cmd(flash: Path) -> None:
    """Confirm the running image (as the agent does once healthy)."""
    from .simflash import SimError, confirm

    try:
        emit_json(confirm(flash))
    except SimError as exc:
        fail(str(exc))


@sim.command("device")
@FLASH
@BOARD
@click.option("--id", "device_id", required=True, help="Device id (MQTT client id).")
@click.option("--broker", required=True, help="mqtt://HOST:PORT (mqtts:// for TLS).")
@click.option("--prefix", default=None,
              help="Topic prefix (default devices/<id>; '' for CTWing's literal topics).")
@click.option("--version", "version", help="Seed an empty flash with an image of this version.")
@click.option("--heap", default="96K", show_default=True, help="MicroPython heap.")
def device_cmd(flash: Path, board: str, device_id: str, broker: str, prefix: str | None,
               version: str | None, heap: str) -> None:
    """Run the agent as a simulated device in the foreground (Ctrl-C stops it).

    Hard resets are supervised: the device boots again through the simulated
    bootloader, like a board rebooting into its new image.
    """
    import signal
    import sys

    from .simdevice import SimDevice
    from .simflash import SimError

    try:
        dev = SimDevice(flash, board, device_id, broker, prefix, version, heap, log=sys.stdout)
    except (SimError, ValueError) as exc:
        fail(str(exc))

    def stop(*_: object) -> None:
        dev.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    dev.run()


COMMANDS: list[click.Command] = [sim]
